//! An OIDC issuer as the agent sees it: discovery, and its signing keys,
//! cached and refetched when a token names a key not seen yet (rotation).

use std::{
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Deserialize;

use super::jwt::{self, Claims, Expectations, JwtError, KeySet};
use crate::http::{self, HttpError, Url};

/// How long discovery and key set requests may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest interval between key set fetches an unknown `kid` can cause, so
/// tokens naming made-up keys cannot make the agent hammer the issuer.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Why a token could not be checked or was refused.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// Talking to the issuer failed.
    #[error("issuer {issuer}: {source}")]
    Http {
        /// The issuer URL.
        issuer: String,
        /// What failed.
        source: HttpError,
    },
    /// The issuer answered with something unusable.
    #[error("issuer {issuer}: {message}")]
    Document {
        /// The issuer URL.
        issuer: String,
        /// What is wrong with its answer.
        message: String,
    },
    /// The token was refused.
    #[error(transparent)]
    Token(#[from] JwtError),
}

/// The parts of `.well-known/openid-configuration` Airlock uses.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Discovery {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where the signing keys are published.
    pub jwks_uri: String,
    /// Token endpoint (device flow polling, refresh).
    pub token_endpoint: Option<String>,
    /// RFC 8628 device authorization endpoint.
    pub device_authorization_endpoint: Option<String>,
}

/// A trusted issuer and what a token from it must carry.
#[derive(Debug)]
pub struct Issuer {
    issuer: String,
    audience: String,
    clock_skew: u64,
    jwks_uri: Url,
    keys: Mutex<(KeySet, Option<Instant>)>,
}

impl Issuer {
    /// Reads `issuer`'s discovery document and key set.
    pub async fn discover(issuer: &str, audience: &str, clock_skew: u64) -> Result<(Self, Discovery), IssuerError> {
        let discovery: Discovery = fetch_json(issuer, &discovery_url(issuer)?).await?;
        if discovery.issuer != issuer {
            return Err(document(issuer, format!("discovery names issuer {:?}", discovery.issuer)));
        }
        let jwks_uri =
            Url::parse(&discovery.jwks_uri).map_err(|source| IssuerError::Http { issuer: issuer.into(), source })?;
        let this = Self {
            issuer: issuer.into(),
            audience: audience.into(),
            clock_skew,
            jwks_uri,
            keys: Mutex::new((KeySet::default(), None)),
        };
        this.refresh_keys().await?;
        Ok((this, discovery))
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token`; an unknown `kid` refetches the key set once.
    pub async fn verify(&self, token: &str) -> Result<Claims, IssuerError> {
        match self.verify_cached(token) {
            Err(JwtError::UnknownKey(_)) if self.may_refetch() => {
                self.refresh_keys().await?;
                Ok(self.verify_cached(token)?)
            }
            verified => Ok(verified?),
        }
    }

    fn verify_cached(&self, token: &str) -> Result<Claims, JwtError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let expect = Expectations { issuer: &self.issuer, audience: &self.audience, clock_skew: self.clock_skew, now };
        jwt::verify(token, &self.lock().0, &expect)
    }

    fn may_refetch(&self) -> bool {
        self.lock().1.is_none_or(|at| at.elapsed() >= MIN_REFETCH_INTERVAL)
    }

    async fn refresh_keys(&self) -> Result<(), IssuerError> {
        let response = http::request("GET", &self.jwks_uri, &[("Accept", "application/json")], None, FETCH_TIMEOUT)
            .await
            .map_err(|source| IssuerError::Http { issuer: self.issuer.clone(), source })?;
        if response.status != 200 {
            return Err(document(&self.issuer, format!("key set answered HTTP {}", response.status)));
        }
        let keys = KeySet::from_json(&response.body)?;
        *self.lock() = (keys, Some(Instant::now()));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (KeySet, Option<Instant>)> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn discovery_url(issuer: &str) -> Result<Url, IssuerError> {
    Url::parse(&format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/')))
        .map_err(|source| IssuerError::Http { issuer: issuer.into(), source })
}

fn document(issuer: &str, message: String) -> IssuerError {
    IssuerError::Document { issuer: issuer.into(), message }
}

async fn fetch_json<T: serde::de::DeserializeOwned>(issuer: &str, url: &Url) -> Result<T, IssuerError> {
    let response = http::request("GET", url, &[("Accept", "application/json")], None, FETCH_TIMEOUT)
        .await
        .map_err(|source| IssuerError::Http { issuer: issuer.into(), source })?;
    if response.status != 200 {
        return Err(document(issuer, format!("discovery answered HTTP {}", response.status)));
    }
    serde_json::from_slice(&response.body).map_err(|e| document(issuer, format!("discovery document: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use serde_json::json;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::identity::oidc::jwt::tests::{AUDIENCE, Signer, claims, es256};

    /// A loopback issuer serving discovery and whatever key set `jwks` holds.
    struct FakeIssuer {
        url: String,
        jwks: Arc<Mutex<String>>,
        jwks_fetches: Arc<AtomicUsize>,
    }

    async fn serve(jwks: String) -> FakeIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(jwks));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let discovery =
            json!({"issuer": url, "jwks_uri": format!("{url}/jwks"), "token_endpoint": format!("{url}/token")})
                .to_string();
        let (keys, fetches) = (jwks.clone(), jwks_fetches.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0; 4096];
                let n = stream.read(&mut request).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&request[..n]);
                let body = if request.starts_with("GET /jwks ") {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    keys.lock().unwrap().clone()
                } else {
                    discovery.clone()
                };
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        FakeIssuer { url, jwks, jwks_fetches }
    }

    fn token(signer: &Signer, issuer: &str, header: serde_json::Value) -> String {
        let mut claims = claims();
        claims["iss"] = json!(issuer);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        (claims["iat"], claims["exp"]) = (json!(now), json!(now + 300));
        signer.sign(header, claims)
    }

    #[tokio::test]
    async fn tokens_verify_against_discovered_keys() {
        let signer = Signer::new();
        let fake = serve(signer.jwks_json()).await;
        let (issuer, discovery) = Issuer::discover(&fake.url, AUDIENCE, 30).await.unwrap();
        assert_eq!(discovery.token_endpoint, Some(format!("{}/token", fake.url)));
        let claims = issuer.verify(&token(&signer, &fake.url, es256())).await.unwrap();
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 1, "keys are cached");

        let error = issuer.verify(&token(&signer, "https://elsewhere", es256())).await.unwrap_err();
        assert!(error.to_string().contains("expected"), "{error}");
    }

    #[tokio::test]
    async fn rotated_keys_are_refetched_once_for_an_unknown_kid() {
        let old = Signer::new();
        let fake = serve(old.jwks_json()).await;
        let (issuer, _) = Issuer::discover(&fake.url, AUDIENCE, 30).await.unwrap();
        // The issuer rotates to a new key under a new kid.
        let new = Signer::new();
        *fake.jwks.lock().unwrap() = new.jwks_json().replace("\"ec-1\"", "\"ec-2\"");
        // The first fetch was just now: the refetch waits for the interval.
        let keys = issuer.lock().0.clone();
        *issuer.lock() = (keys, None);
        let rotated = token(&new, &fake.url, json!({"alg": "ES256", "kid": "ec-2"}));
        assert_eq!(issuer.verify(&rotated).await.unwrap()["sub"], "u-1");
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2);
        // A made-up kid right after does not cause another fetch.
        let unknown = token(&new, &fake.url, json!({"alg": "ES256", "kid": "made-up"}));
        let error = issuer.verify(&unknown).await.unwrap_err();
        assert!(matches!(error, IssuerError::Token(JwtError::UnknownKey(_))), "{error}");
        assert_eq!(fake.jwks_fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn discovery_naming_another_issuer_is_refused() {
        let fake = serve(Signer::new().jwks_json()).await;
        let claimed = format!("{}/", fake.url);
        let error = Issuer::discover(&claimed, AUDIENCE, 30).await.unwrap_err();
        assert!(error.to_string().contains("discovery names issuer"), "{error}");
    }
}
