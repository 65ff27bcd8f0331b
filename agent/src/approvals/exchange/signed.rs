//! The documents hosts exchange through OpenBao, and the signature that
//! makes a decision a person's.
//!
//! A decision names the request it decides by host, id and the SHA-256 of
//! the request as the approver read it, and is signed with the approver's
//! own key in OpenBao's transit engine (`airlock-approver-ENTITY`, which
//! OpenBao's policy lets only that entity use). Writing to the decisions
//! path proves nothing; the signature does.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::approvals::ApprovalRequest;

/// What is signed, so a signature for one thing never passes for another.
const DOMAIN: &str = "airlock approval decision v1";

/// A request as published for approvers on other hosts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestDocument {
    /// Format version (1).
    pub version: u32,
    /// The host the request waits on.
    pub host: String,
    /// The request.
    pub request: ApprovalRequest,
    /// Its digest as the requesting host computes it ([`request_digest`]);
    /// an approver signs the digest of what they read, never this one.
    pub request_sha256: String,
    /// Who may decide it under that host's policy, for approvers' lists
    /// (the requesting host checks again; this is not trusted).
    pub approver_users: Vec<String>,
    /// … by group.
    pub approver_groups: Vec<String>,
}

/// An approver's decision, as written to OpenBao.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecisionDocument {
    /// Format version (1).
    pub version: u32,
    /// The host the request waits on.
    pub host: String,
    /// Request id.
    pub request: String,
    /// SHA-256 (hex) of the request as the approver read it ([`request_digest`]).
    pub request_sha256: String,
    /// Approved or denied.
    pub approve: bool,
    /// The approver's reason.
    pub reason: Option<String>,
    /// The approver as policies name them (their user claim).
    pub approver: String,
    /// The approver's OpenBao entity, whose transit key signed and whose
    /// alias and groups say who they are.
    pub entity_id: String,
    /// When it was decided (RFC 3339).
    pub decided_at: String,
    /// Transit signature (`vault:vN:BASE64`) of [`DecisionDocument::message`].
    pub signature: String,
}

/// The digest a decision names its request by.
pub fn request_digest(request: &ApprovalRequest) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    crate::hex::encode(&Sha256::digest(bytes))
}

/// The transit key of an OpenBao entity.
pub fn key_name(entity_id: &str) -> String {
    format!("airlock-approver-{entity_id}")
}

impl DecisionDocument {
    /// The bytes signed: every field that decides anything, as one JSON
    /// array (unambiguous whatever the fields hold).
    pub fn message(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([
            DOMAIN,
            self.host,
            self.request,
            self.request_sha256,
            if self.approve { "approve" } else { "deny" },
            self.reason,
            self.approver,
            self.entity_id,
            self.decided_at,
        ]))
        .unwrap_or_default()
    }
}

/// Why a signature does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `vault:vN:BASE64`.
    #[error("the signature is not in transit's vault:vN:BASE64 form")]
    Malformed,
    /// The key has no such version (or it is not ed25519).
    #[error("the approver's key has no ed25519 version {0}")]
    NoKey(u64),
    /// It does not verify.
    #[error("the signature does not verify with the approver's key")]
    Invalid,
}

/// The key version a transit signature names.
pub fn signature_version(signature: &str) -> Result<u64, SignatureError> {
    let mut parts = signature.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("vault"), Some(version), Some(_)) => {
            version.strip_prefix('v').and_then(|v| v.parse().ok()).ok_or(SignatureError::Malformed)
        }
        _ => Err(SignatureError::Malformed),
    }
}

/// Verifies transit signature `signature` of `message` with `public_key`
/// (base64 of a raw ed25519 key, as transit shows it).
pub fn verify(public_key: &str, signature: &str, message: &[u8]) -> Result<(), SignatureError> {
    let encoded = signature.splitn(3, ':').nth(2).ok_or(SignatureError::Malformed)?;
    let signature = STANDARD.decode(encoded).map_err(|_| SignatureError::Malformed)?;
    let key = STANDARD.decode(public_key).map_err(|_| SignatureError::Malformed)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
        .verify(message, &signature)
        .map_err(|_| SignatureError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    fn decision() -> DecisionDocument {
        DecisionDocument {
            version: 1,
            host: "runner-7".into(),
            request: "a1b2c3".into(),
            request_sha256: "00".repeat(32),
            approve: true,
            reason: Some("ticket OPS-1".into()),
            approver: "bob@example.com".into(),
            entity_id: "5e0c".into(),
            decided_at: "2026-12-06T18:00:00Z".into(),
            signature: String::new(),
        }
    }

    fn sign(pair: &Ed25519KeyPair, message: &[u8]) -> String {
        format!("vault:v1:{}", STANDARD.encode(pair.sign(message).as_ref()))
    }

    #[test]
    fn a_signed_decision_verifies_and_any_change_breaks_it() {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
        let public = STANDARD.encode(pair.public_key().as_ref());
        let mut signed = decision();
        signed.signature = sign(&pair, &signed.message());
        assert_eq!(signature_version(&signed.signature), Ok(1));
        assert_eq!(verify(&public, &signed.signature, &signed.message()), Ok(()));

        let changes: [fn(&mut DecisionDocument); 7] = [
            |d| d.approve = false,
            |d| d.request = "other".into(),
            |d| d.host = "runner-8".into(),
            |d| d.reason = None,
            |d| d.approver = "mallory@example.com".into(),
            |d| d.request_sha256 = "11".repeat(32),
            |d| d.decided_at = "2026-12-06T18:00:01Z".into(),
        ];
        for change in changes {
            let mut forged = signed.clone();
            change(&mut forged);
            assert_eq!(verify(&public, &forged.signature, &forged.message()), Err(SignatureError::Invalid));
        }
        let other = Ed25519KeyPair::from_seed_unchecked(&[8; 32]).unwrap();
        let other_public = STANDARD.encode(other.public_key().as_ref());
        assert_eq!(verify(&other_public, &signed.signature, &signed.message()), Err(SignatureError::Invalid));
    }

    #[test]
    fn malformed_signatures_are_refused_without_panicking() {
        for bad in ["", "vault", "vault:v1", "vault:vx:AAAA", "gcp:v1:AAAA", "vault:v1:***"] {
            assert!(verify("AAAA", bad, b"m").is_err(), "{bad}");
        }
        assert_eq!(signature_version("vault:v3:AAAA"), Ok(3));
        assert_eq!(signature_version("vault:3:AAAA"), Err(SignatureError::Malformed));
    }

    #[test]
    fn a_request_digest_changes_with_any_field() {
        let request = ApprovalRequest {
            id: "a1b2c3".into(),
            kind: crate::approvals::RequestKind::Statement,
            session: "s-1".into(),
            target: "prod-db".into(),
            requester: "alice@example.com".into(),
            requester_uid: 1001,
            actor: None,
            host: None,
            statement: "DROP TABLE t".into(),
            reason: "drop needs approval".into(),
            approvers: "group dba".into(),
            created: "2026-12-06T18:00:00Z".into(),
            expires: "2026-12-06T18:05:00Z".into(),
            blast_radius: None,
        };
        let mut changed = request.clone();
        changed.statement.push(' ');
        assert_ne!(request_digest(&request), request_digest(&changed));
        assert_eq!(request_digest(&request).len(), 64);
    }
}
