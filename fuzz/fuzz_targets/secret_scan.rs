//! What users leave in their files, read by the secret scanner as root: no
//! panic on any bytes under any file name the detectors know, every
//! finding's secret lies inside the file, and a fingerprint never spells
//! the secret it stands for.
#![no_main]

use std::sync::LazyLock;

use airlock::scan::{Scanner, finding::FingerprintKey, rules::RuleSet};
use libfuzzer_sys::fuzz_target;

static SCANNER: LazyLock<Scanner> =
    LazyLock::new(|| Scanner::new(RuleSet::gitleaks_default().expect("the shipped rules load")));
static KEY: LazyLock<FingerprintKey> = LazyLock::new(FingerprintKey::ephemeral);

/// Names that switch on each Airlock detector (and gitleaks' path rules).
const PATHS: [&str; 10] = [
    "/home/a/notes.txt",
    "/home/a/.pgpass",
    "/home/a/.bashrc",
    "/home/a/.kube/config",
    "/home/a/app/.env",
    "/home/a/.bash_history",
    "/home/a/.local/share/fish/fish_history",
    "/home/a/.psql_history",
    "/home/a/.config/fish/config.fish",
    "/home/a/cert.p12",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else { return };
    let path = PATHS[usize::from(selector) % PATHS.len()];
    for hit in SCANNER.hits(path, content) {
        assert!(hit.secret.start <= hit.secret.end && hit.secret.end <= content.len(), "{hit:?}");
        let secret = &content[hit.secret.clone()];
        let fingerprint = KEY.fingerprint(secret);
        assert_eq!(fingerprint.len(), 32);
        // A 32-digit fingerprint may contain a short secret by chance: only
        // secrets of 8 bytes and more are held to it.
        if secret.len() >= 8 {
            assert!(memchr_find(fingerprint.as_bytes(), secret).is_none(), "{hit:?}");
        }
    }
});

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
