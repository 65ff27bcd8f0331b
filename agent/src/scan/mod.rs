//! Secrets left on the host: `airlock scan` and the agent's periodic sweep.
//!
//! - `rules`: the gitleaks rule format and its shipped default set, with a
//!   keyword prefilter; `entropy`: Shannon entropy as gitleaks computes it
//! - `detectors`: Airlock's own (private keys and whether encrypted,
//!   `.pgpass`, `PGPASSWORD` in shell rc files, kubeconfigs, `.env`, histories)
//! - `walk`: a no-symlink, one-filesystem, bounded walk that never writes
//! - `finding`: findings and their keyed fingerprints (never the secret)
//! - `targets`: which protected targets a secret opens without Airlock
//! - `settings`: the `[scan]` section of the agent configuration
//! - `priority`: nice, idle I/O class and a bounded CPU share
//! - `sweep`: the agent's periodic sweep, its state and audit records

pub mod detectors;
pub mod entropy;
pub mod finding;
pub mod priority;
pub mod rules;
pub mod settings;
pub mod sweep;
pub mod targets;
pub mod walk;

use std::{collections::HashMap, ops::Range, path::PathBuf};

use self::{
    detectors::{Detection, Link},
    finding::{Finding, FingerprintKey},
    rules::{RuleHit, RuleSet},
    targets::ProtectedTargets,
    walk::{Limits, Unreadable, WalkStats},
};

/// A file whose first this many bytes hold a NUL is binary: only rules
/// that match by file name apply to it.
const BINARY_PROBE: usize = 8 << 10;

/// One secret in one file, before it is fingerprinted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Rule id.
    pub rule: String,
    /// What the rule finds.
    pub description: String,
    /// The secret's bytes in the file (empty: the file itself, by name).
    pub secret: Range<usize>,
    /// Private keys: whether encrypted.
    pub encrypted: Option<bool>,
    /// What it opens, as far as the file says.
    pub link: Link,
}

/// Rules and detectors together.
#[derive(Debug)]
pub struct Scanner {
    rules: RuleSet,
}

impl Scanner {
    /// A scanner with `rules` (usually [`RuleSet::gitleaks_default`]) and every Airlock detector.
    pub fn new(rules: RuleSet) -> Self {
        Self { rules }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Every secret in `content`, the file at `path`, in file order. A
    /// rule's match inside what a detector found is the same secret, told
    /// better by the detector (it knows whether a key is encrypted, which
    /// server a password is for): only the detector's is kept.
    pub fn hits(&self, path: &str, content: &[u8]) -> Vec<Hit> {
        let binary = memchr::memchr(0, &content[..content.len().min(BINARY_PROBE)]).is_some();
        let text = if binary { &[][..] } else { content };
        let mut detections: Vec<Detection> = Vec::new();
        if !binary {
            detectors::detect(path, text, &mut detections);
        }
        let mut rule_hits: Vec<RuleHit> = Vec::new();
        self.rules.scan(path, text, &mut rule_hits);
        let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
        let mut hits: Vec<Hit> = rule_hits
            .into_iter()
            .filter(|hit| {
                !detections.iter().any(|d| overlaps(&d.secret, &hit.secret) || overlaps(&d.secret, &hit.matched))
            })
            .map(|hit| {
                let rule = self.rules.rule(hit.rule);
                Hit {
                    rule: rule.id.clone(),
                    description: rule.description.clone(),
                    secret: hit.secret,
                    encrypted: None,
                    link: Link::None,
                }
            })
            .collect();
        hits.extend(detections.into_iter().map(|d| Hit {
            rule: d.rule.to_owned(),
            description: d.description,
            secret: d.secret,
            encrypted: d.encrypted,
            link: d.link,
        }));
        hits.sort_by_key(|h| (h.secret.start, h.secret.end));
        hits
    }
}

/// What a scan found and did.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings, in walk order.
    pub findings: Vec<Finding>,
    /// What the walk read and skipped.
    pub stats: WalkStats,
    /// Paths that could not be read.
    pub unreadable: Vec<Unreadable>,
}

/// Everything a scan needs besides the paths.
pub struct ScanContext<'a> {
    /// Rules and detectors.
    pub scanner: &'a Scanner,
    /// How far the walk goes.
    pub limits: &'a Limits,
    /// Fingerprints' key.
    pub key: &'a FingerprintKey,
    /// Protected targets, for the bypass note.
    pub targets: &'a ProtectedTargets,
    /// Called after each file with the bytes it had (a sweep's CPU budget).
    pub after_file: &'a mut dyn FnMut(usize),
}

/// Scans `roots`; every finding's first and last seen are `now`.
pub fn scan(roots: &[PathBuf], context: ScanContext<'_>, now: &str) -> Report {
    let mut report = Report::default();
    let mut owners: HashMap<u32, Option<String>> = HashMap::new();
    let ScanContext { scanner, limits, key, targets, after_file } = context;
    report.stats = walk::walk(roots, limits, &mut report.unreadable, |file| {
        let path = file.path.to_string_lossy();
        let hits = scanner.hits(&path, file.content);
        let mut line = 1;
        let mut counted = 0;
        for hit in hits {
            line += memchr::memchr_iter(b'\n', &file.content[counted..hit.secret.start.max(counted)]).count();
            counted = counted.max(hit.secret.start);
            let owner = owners
                .entry(file.uid)
                .or_insert_with(|| {
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(file.uid)).ok().flatten().map(|u| u.name)
                })
                .clone();
            let secret = &file.content[hit.secret.clone()];
            let fingerprint =
                if secret.is_empty() { key.fingerprint(path.as_bytes()) } else { key.fingerprint(secret) };
            report.findings.push(Finding {
                fingerprint,
                path: path.clone().into_owned(),
                uid: file.uid,
                owner,
                rule: hit.rule,
                description: hit.description,
                line: if hit.secret.is_empty() && hit.secret.start == 0 { 0 } else { line },
                encrypted: hit.encrypted,
                protected_targets: targets.reached_by(&hit.link),
                first_seen: now.to_owned(),
                last_seen: now.to_owned(),
            });
        }
        after_file(file.content.len());
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors_take_precedence_over_rules_for_the_same_secret() {
        let scanner = Scanner::new(RuleSet::gitleaks_default().unwrap());
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4Mm3kTb9VxZn3y5e8Q2hRkYpYtE3ZbR0fV7rWqHj2n3aP4L\nk9sT6u1vWx2yZ3A4b5C6d7E8f9G0h1I2j3K4l5M6n7O8p9Q0r1S2t3U4v5W6x7Y8\n-----END RSA PRIVATE KEY-----\n";
        let hits = scanner.hits("/home/a/id_rsa", key.as_bytes());
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!((hits[0].rule.as_str(), hits[0].encrypted), ("airlock-private-key", Some(false)));
        let binary = scanner.hits("/home/a/blob", b"\0AKIAZ7QRSTUVWXYZ2345");
        assert!(binary.is_empty(), "binary files are not read as text");
    }

    #[test]
    fn scan_reports_lines_owners_and_fingerprints_never_secrets() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".pgpass"), "# c\n\ndb:5432:app:alice:Sup3rS3cretPw\n").unwrap();
        std::fs::write(dir.path().join("plain.txt"), "nothing to see\n").unwrap();
        let scanner = Scanner::new(RuleSet::gitleaks_default().unwrap());
        let key = FingerprintKey::ephemeral();
        let targets = ProtectedTargets::none();
        let mut files = 0;
        let mut after = |_: usize| files += 1;
        let context = ScanContext {
            scanner: &scanner,
            limits: &Limits::default(),
            key: &key,
            targets: &targets,
            after_file: &mut after,
        };
        let report = scan(&[dir.path().to_owned()], context, "2026-01-01T00:00:00Z");
        assert_eq!(files, 2);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        let finding = &report.findings[0];
        assert_eq!((finding.rule.as_str(), finding.line), ("airlock-pgpass", 3));
        assert_eq!(finding.fingerprint, key.fingerprint(b"Sup3rS3cretPw"));
        assert_eq!(finding.uid, nix::unistd::geteuid().as_raw());
        let json = serde_json::to_string(&report.findings).unwrap();
        assert!(!json.contains("Sup3rS3cretPw"));
    }
}
