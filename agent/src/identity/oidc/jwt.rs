//! ID token (JWT) verification against an issuer's JSON Web Key Set.
//!
//! Only RS256 and ES256 are accepted, and the key named by `kid` must be of
//! the algorithm's type: a token cannot pick a weaker algorithm or turn an
//! RSA public key into an HMAC secret. `alg = none` is refused like any other
//! unsupported algorithm.

use std::collections::HashMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Claims of a verified token.
pub type Claims = Map<String, Value>;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256 or ES256 (including `none`).
    #[error("token algorithm {0:?} is not accepted (RS256 and ES256 are)")]
    UnsupportedAlgorithm(String),
    /// No key in the issuer's key set has the token's `kid`; the caller
    /// refetches the key set once before giving up.
    #[error("token signed with key {0:?}, which the issuer does not publish")]
    UnknownKey(Option<String>),
    /// The key named by `kid` is not of the algorithm's type.
    #[error("token algorithm {alg} does not match key {kid:?}")]
    KeyMismatch {
        /// The token's algorithm.
        alg: String,
        /// The key it named.
        kid: Option<String>,
    },
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// `iss` is not the expected issuer.
    #[error("token issued by {found:?}, expected {expected:?}")]
    WrongIssuer {
        /// The token's `iss`.
        found: String,
        /// The configured issuer.
        expected: String,
    },
    /// `aud` does not include the expected audience.
    #[error("token audience does not include {expected:?}")]
    WrongAudience {
        /// The configured audience.
        expected: String,
    },
    /// `exp` has passed.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `nbf` (or `iat`) is in the future.
    #[error("token not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf` or `iat`.
        nbf: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// A required claim is missing or of the wrong type.
    #[error("token claim {0:?} is missing or not of the expected type")]
    Claim(&'static str),
    /// The key set document is not usable.
    #[error("issuer key set: {0}")]
    KeySet(String),
}

/// What a token must satisfy besides its signature.
#[derive(Clone, Debug)]
pub struct Expectations<'a> {
    /// Required `iss`.
    pub issuer: &'a str,
    /// Required member of `aud`.
    pub audience: &'a str,
    /// Tolerated clock difference, in seconds.
    pub clock_skew: u64,
    /// The current time, seconds since the Unix epoch.
    pub now: u64,
}

/// A verification key from a JWKS document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicKey {
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed P-256 point (`04 || x || y`).
    P256(Vec<u8>),
}

/// The keys an issuer publishes at its `jwks_uri`, by `kid`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: HashMap<Option<String>, PublicKey>,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<JwkDocument>,
}

#[derive(Deserialize)]
struct JwkDocument {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl KeySet {
    /// Parses a JWKS document. Keys of other types (or for encryption) are
    /// skipped: issuers publish them, and they can never verify a token here.
    pub fn from_json(json: &[u8]) -> Result<Self, JwtError> {
        let document: JwksDocument = serde_json::from_slice(json).map_err(|e| JwtError::KeySet(e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in document.keys {
            if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                ("RSA", _) => PublicKey::Rsa { n: member(&jwk.n, "n")?, e: member(&jwk.e, "e")? },
                ("EC", Some("P-256")) => {
                    let (x, y) = (member(&jwk.x, "x")?, member(&jwk.y, "y")?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(JwtError::KeySet(format!("P-256 key {:?} has bad coordinates", jwk.kid)));
                    }
                    PublicKey::P256([&[4u8][..], &x, &y].concat())
                }
                _ => continue,
            };
            keys.insert(jwk.kid, key);
        }
        Ok(Self { keys })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn member(value: &Option<String>, name: &str) -> Result<Vec<u8>, JwtError> {
    let text = value.as_deref().ok_or_else(|| JwtError::KeySet(format!("key without {name:?}")))?;
    URL_SAFE_NO_PAD.decode(text).map_err(|_| JwtError::KeySet(format!("key member {name:?} is not base64url")))
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The `kid` and `alg` of a token, read without verifying anything: lets the
/// caller decide whether its cached key set is stale.
pub fn key_id(token: &str) -> Result<Option<String>, JwtError> {
    let header = token.split('.').next().ok_or(JwtError::Malformed("no header"))?;
    Ok(decode_json::<Header>(header, "header is not base64url JSON")?.kid)
}

/// The `iss` claim of a token, read without verifying anything: picks which
/// configured issuer must then verify it.
pub fn unverified_issuer(token: &str) -> Result<String, JwtError> {
    #[derive(Deserialize)]
    struct Issued {
        iss: Option<String>,
    }
    let claims = token.split('.').nth(1).ok_or(JwtError::Malformed("not three dot-separated parts"))?;
    decode_json::<Issued>(claims, "claims are not base64url JSON")?.iss.ok_or(JwtError::Claim("iss"))
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &'static str) -> Result<T, JwtError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))
}

/// Verifies `token`'s signature against `keys` and its claims against
/// `expect`, and returns its claims.
pub fn verify(token: &str, keys: &KeySet, expect: &Expectations<'_>) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let header: Header = decode_json(header_b64, "header is not base64url JSON")?;
    let signature =
        URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];

    // Before the key lookup: an unsigned token must not cause a key set refetch.
    if !matches!(header.alg.as_str(), "RS256" | "ES256") {
        return Err(JwtError::UnsupportedAlgorithm(header.alg));
    }
    let key = keys.keys.get(&header.kid).ok_or_else(|| JwtError::UnknownKey(header.kid.clone()))?;
    let verified = match (header.alg.as_str(), key) {
        ("RS256", PublicKey::Rsa { n, e }) => {
            RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature)
        }
        ("ES256", PublicKey::P256(point)) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed, &signature)
        }
        ("RS256" | "ES256", _) => return Err(JwtError::KeyMismatch { alg: header.alg, kid: header.kid }),
        _ => return Err(JwtError::UnsupportedAlgorithm(header.alg)),
    };
    verified.map_err(|_| JwtError::BadSignature)?;

    let claims: Claims = decode_json(claims_b64, "claims are not base64url JSON")?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

fn check_claims(claims: &Claims, expect: &Expectations<'_>) -> Result<(), JwtError> {
    let issuer = claims.get("iss").and_then(Value::as_str).ok_or(JwtError::Claim("iss"))?;
    if issuer != expect.issuer {
        return Err(JwtError::WrongIssuer { found: issuer.into(), expected: expect.issuer.into() });
    }
    let audience_matches = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expect.audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(expect.audience)),
        _ => return Err(JwtError::Claim("aud")),
    };
    if !audience_matches {
        return Err(JwtError::WrongAudience { expected: expect.audience.into() });
    }
    let now = expect.now;
    let exp = numeric(claims, "exp")?.ok_or(JwtError::Claim("exp"))?;
    if now > exp.saturating_add(expect.clock_skew) {
        return Err(JwtError::Expired { exp, now });
    }
    for name in ["nbf", "iat"] {
        if let Some(nbf) = numeric(claims, name)?
            && nbf > now.saturating_add(expect.clock_skew)
        {
            return Err(JwtError::NotYetValid { nbf, now });
        }
    }
    claims.get("sub").and_then(Value::as_str).ok_or(JwtError::Claim("sub"))?;
    Ok(())
}

/// A NumericDate claim; fractions are truncated.
fn numeric(claims: &Claims, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(JwtError::Claim(name)),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use ring::{
        rand::SystemRandom,
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair},
    };
    use serde_json::json;

    use super::*;

    pub(in crate::identity::oidc) const ISSUER: &str = "http://127.0.0.1:9/issuer";
    pub(in crate::identity::oidc) const AUDIENCE: &str = "airlock";
    const NOW: u64 = 1_800_000_000;
    /// A throwaway RSA key for these tests only (ring cannot generate RSA keys).
    const RSA_TEST_KEY: &[u8] = include_bytes!("testdata/rs256-test-key.der");

    pub(in crate::identity::oidc) struct Signer {
        ec: EcdsaKeyPair,
        rsa: RsaKeyPair,
        rng: SystemRandom,
    }

    impl Signer {
        pub(in crate::identity::oidc) fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
            let rsa = RsaKeyPair::from_der(RSA_TEST_KEY).unwrap();
            Self { ec, rsa, rng }
        }

        pub(in crate::identity::oidc) fn jwks(&self) -> KeySet {
            KeySet::from_json(self.jwks_json().as_bytes()).unwrap()
        }

        pub(in crate::identity::oidc) fn jwks_json(&self) -> String {
            let point = self.ec.public_key().as_ref();
            let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
            let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
            let document = json!({"keys": [
                {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "x": b64(&point[1..33]), "y": b64(&point[33..])},
                {"kty": "RSA", "kid": "rsa-1", "n": b64(&rsa.n),
                 "e": b64(&rsa.e)},
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            ]});
            document.to_string()
        }

        pub(in crate::identity::oidc) fn sign(&self, header: Value, claims: Value) -> String {
            let signed = format!("{}.{}", encode(&header), encode(&claims));
            let signature = match header["alg"].as_str() {
                Some("ES256") => self.ec.sign(&self.rng, signed.as_bytes()).unwrap().as_ref().to_vec(),
                Some("RS256") => {
                    let mut signature = vec![0; self.rsa.public().modulus_len()];
                    self.rsa.sign(&RSA_PKCS1_SHA256, &self.rng, signed.as_bytes(), &mut signature).unwrap();
                    signature
                }
                _ => Vec::new(),
            };
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
        }
    }

    fn encode(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    pub(in crate::identity::oidc) fn claims() -> Value {
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "email": "alice@example.com",
               "groups": ["dba"], "iat": NOW - 10, "exp": NOW + 300})
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn expect() -> Expectations<'static> {
        Expectations { issuer: ISSUER, audience: AUDIENCE, clock_skew: 30, now: NOW }
    }

    fn check(signer: &Signer, header: Value, claims: Value) -> Result<Claims, JwtError> {
        verify(&signer.sign(header, claims), &signer.jwks(), &expect())
    }

    pub(in crate::identity::oidc) fn es256() -> Value {
        json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"})
    }

    #[test]
    fn es256_and_rs256_tokens_verify() {
        let signer = Signer::new();
        assert_eq!(signer.jwks().len(), 2, "the HMAC key is not usable for verification");
        let verified = check(&signer, es256(), claims()).unwrap();
        assert_eq!(verified["email"], "alice@example.com");
        let verified = check(&signer, json!({"alg": "RS256", "kid": "rsa-1"}), claims()).unwrap();
        assert_eq!(verified["sub"], "u-1");
    }

    #[test]
    fn audience_may_be_a_list() {
        let signer = Signer::new();
        let claims = with(claims(), "aud", json!(["other", AUDIENCE]));
        assert!(check(&signer, es256(), claims).is_ok());
    }

    #[test]
    fn expired_tokens_are_refused_beyond_the_clock_skew() {
        let signer = Signer::new();
        assert!(check(&signer, es256(), with(claims(), "exp", json!(NOW - 20))).is_ok(), "within skew");
        let error = check(&signer, es256(), with(claims(), "exp", json!(NOW - 31))).unwrap_err();
        assert_eq!(error, JwtError::Expired { exp: NOW - 31, now: NOW });
        assert_eq!(error.to_string(), format!("token expired at {} (now {NOW})", NOW - 31));
    }

    #[test]
    fn not_yet_valid_tokens_are_refused() {
        let signer = Signer::new();
        let error = check(&signer, es256(), with(claims(), "nbf", json!(NOW + 120))).unwrap_err();
        assert_eq!(error, JwtError::NotYetValid { nbf: NOW + 120, now: NOW });
        let error = check(&signer, es256(), with(claims(), "iat", json!(NOW + 120))).unwrap_err();
        assert_eq!(error, JwtError::NotYetValid { nbf: NOW + 120, now: NOW });
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let signer = Signer::new();
        let error = check(&signer, es256(), with(claims(), "aud", json!("someone-else"))).unwrap_err();
        assert_eq!(error.to_string(), "token audience does not include \"airlock\"");
        let error = check(&signer, es256(), with(claims(), "iss", json!("https://evil.example"))).unwrap_err();
        assert_eq!(error, JwtError::WrongIssuer { found: "https://evil.example".into(), expected: ISSUER.into() });
    }

    #[test]
    fn tampered_tokens_are_refused() {
        let signer = Signer::new();
        let token = signer.sign(es256(), claims());
        let [header, _, signature] = token.split('.').collect::<Vec<_>>()[..] else { panic!("three parts") };
        let forged = format!("{header}.{}.{signature}", encode(&with(claims(), "groups", json!(["admin"]))));
        assert_eq!(verify(&forged, &signer.jwks(), &expect()).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn alg_none_and_hmac_are_refused() {
        let signer = Signer::new();
        for alg in ["none", "HS256"] {
            let header = json!({"alg": alg, "kid": "ec-1"});
            let error = check(&signer, header, claims()).unwrap_err();
            assert_eq!(error, JwtError::UnsupportedAlgorithm(alg.into()));
        }
        let unsigned = format!("{}.{}.", encode(&json!({"alg": "none"})), encode(&claims()));
        assert!(verify(&unsigned, &signer.jwks(), &expect()).is_err());
    }

    #[test]
    fn algorithm_must_match_the_key_type() {
        let signer = Signer::new();
        let error = check(&signer, json!({"alg": "RS256", "kid": "ec-1"}), claims()).unwrap_err();
        assert!(matches!(error, JwtError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn unknown_key_ids_are_reported_for_a_refetch() {
        let signer = Signer::new();
        let token = signer.sign(json!({"alg": "ES256", "kid": "rotated"}), claims());
        assert_eq!(key_id(&token).unwrap().as_deref(), Some("rotated"));
        let error = verify(&token, &signer.jwks(), &expect()).unwrap_err();
        assert_eq!(error, JwtError::UnknownKey(Some("rotated".into())));
        assert!(error.to_string().contains("does not publish"));
    }

    #[test]
    fn tokens_signed_by_another_key_are_refused() {
        let signer = Signer::new();
        let other = Signer::new();
        let token = other.sign(es256(), claims());
        assert_eq!(verify(&token, &signer.jwks(), &expect()).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let keys = Signer::new().jwks();
        for token in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.", "eyJhbGciOiJFUzI1NiJ9.@.AA"] {
            assert!(verify(token, &keys, &expect()).is_err(), "{token:?}");
        }
    }

    #[test]
    fn missing_claims_are_refused() {
        let signer = Signer::new();
        for name in ["exp", "sub", "aud", "iss"] {
            let mut claims = claims();
            claims.as_object_mut().unwrap().remove(name);
            let error = check(&signer, es256(), claims).unwrap_err();
            assert_eq!(
                error,
                JwtError::Claim(match name {
                    "exp" => "exp",
                    "sub" => "sub",
                    "aud" => "aud",
                    _ => "iss",
                })
            );
        }
    }

    #[test]
    fn key_sets_with_bad_members_are_refused() {
        let error = KeySet::from_json(br#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#).unwrap_err();
        assert!(error.to_string().contains("bad coordinates"), "{error}");
        assert!(KeySet::from_json(b"not json").is_err());
    }
}
