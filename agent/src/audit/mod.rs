//! The host-local audit log: one JSON object per line, hash-chained.
//!
//! Each record carries `prev` (the previous record's hash) and `hash`
//! (SHA-256 of the record's own JSON up to, not including, the `hash` field),
//! so editing, removing or reordering a line breaks the chain. A record is
//! written with a single `write(2)` on an `O_APPEND` file, so a crash loses
//! at most the record being written; a torn last line is detected at the
//! next start and the chain resumes from the last whole record.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{identity::Identity, process::ProcessInfo};

/// File the records go to, inside the audit directory.
pub const LOG_FILE: &str = "audit.jsonl";
/// `prev` of the very first record.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How far back from the end to look for the last whole record at start.
const TAIL_WINDOW: u64 = 1 << 20;

/// Errors writing the audit log. The agent refuses new sessions rather than
/// run unrecorded, so these reach the user as a refusal reason.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// File system error on the log.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record could not be serialised.
    #[error("audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The target a record is about.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TargetRef {
    /// Target name from policy.
    pub name: String,
    /// Protocol from policy.
    pub protocol: String,
    /// Destination address the client asked for.
    pub addr: String,
    /// Destination port the client asked for.
    pub port: u16,
}

/// What happened, before sequencing and hashing.
#[derive(Debug)]
pub struct Event<'a> {
    /// Dotted kind, e.g. `connection.open`.
    pub kind: &'a str,
    /// Session id, when the event belongs to a session.
    pub session: Option<&'a str>,
    /// Who.
    pub identity: Option<&'a Identity>,
    /// Which process.
    pub process: Option<&'a ProcessInfo>,
    /// Which target.
    pub target: Option<&'a TargetRef>,
    /// Kind-specific fields.
    pub detail: serde_json::Value,
}

#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    ts: &'a str,
    kind: &'a str,
    session: Option<&'a str>,
    identity: Option<&'a Identity>,
    process: Option<&'a ProcessInfo>,
    target: Option<&'a TargetRef>,
    detail: &'a serde_json::Value,
    prev: &'a str,
}

struct Chain {
    file: File,
    next_seq: u64,
    prev: String,
}

/// An open audit log, safe to share between tasks.
pub struct AuditLog {
    path: PathBuf,
    chain: Mutex<Chain>,
}

impl AuditLog {
    /// Opens (creating if needed, root-only) the log in `dir` and resumes its chain.
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Io { path, source }
        };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err(dir))?;
        let path = dir.join(LOG_FILE);
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(&path).map_err(io_err(&path))?;
        let tail = read_tail(&mut file).map_err(io_err(&path))?;
        let (next_seq, prev, torn) = resume(&tail);
        if torn {
            // Terminate the torn line so the next record starts on its own line.
            file.write_all(b"\n").map_err(io_err(&path))?;
        }
        let log = Self { path, chain: Mutex::new(Chain { file, next_seq, prev }) };
        if torn {
            tracing::warn!(log = %log.path.display(), "audit log ended in a partial record (crash mid-write)");
            log.append(Event {
                kind: "audit.torn_record",
                session: None,
                identity: None,
                process: None,
                target: None,
                detail: serde_json::json!({ "resumed_after_seq": next_seq.saturating_sub(1) }),
            })?;
        }
        Ok(log)
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record; returns its sequence number.
    pub fn append(&self, event: Event<'_>) -> Result<u64, AuditError> {
        self.append_batch(std::iter::once(event))
    }

    /// Appends records in order with a single `write(2)`; returns the
    /// sequence number of the last. Either all of them are written or the
    /// chain does not advance (a torn tail is repaired at the next start).
    pub fn append_batch<'a>(&self, events: impl IntoIterator<Item = Event<'a>>) -> Result<u64, AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let (mut seq, mut prev) = (chain.next_seq, chain.prev.clone());
        let mut lines = Vec::new();
        let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        for event in events {
            prev = encode(&mut lines, seq, &ts, &event, &prev)?;
            seq += 1;
        }
        if lines.is_empty() {
            return Ok(chain.next_seq.saturating_sub(1));
        }
        chain.file.write_all(&lines).map_err(|source| AuditError::Io { path: self.path.clone(), source })?;
        chain.next_seq = seq;
        chain.prev = prev;
        Ok(seq - 1)
    }
}

/// Appends one record's line to `out`; returns its hash.
fn encode(out: &mut Vec<u8>, seq: u64, ts: &str, event: &Event<'_>, prev: &str) -> Result<String, AuditError> {
    {
        let body = Body {
            seq,
            ts,
            kind: event.kind,
            session: event.session,
            identity: event.identity,
            process: event.process,
            target: event.target,
            detail: &event.detail,
            prev,
        };
        let start = out.len();
        serde_json::to_writer(&mut *out, &body)?;
        let hash = hex(&Sha256::digest(&out[start..]));
        out.pop(); // the closing brace; the hash goes inside the object
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        Ok(hash)
    }
}

/// Splits a written line into the hashed part (re-closed as JSON) and its hash.
pub fn split_hash(line: &str) -> Option<(String, &str)> {
    const SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;
    let cut = line.len().checked_sub(SUFFIX_LEN)?;
    let (body, suffix) = (line.get(..cut)?, line.get(cut..)?);
    let hash = suffix.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| (format!("{body}}}"), hash))
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn read_tail(file: &mut File) -> io::Result<String> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if start > 0 {
        // The window may begin mid-line: skip to the first whole line.
        let first = bytes.iter().position(|b| *b == b'\n').map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first);
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// From the end of the log: next seq, the hash to chain to, and whether the
/// file ends in a torn (unterminated) line.
fn resume(tail: &str) -> (u64, String, bool) {
    let torn = !tail.is_empty() && !tail.ends_with('\n');
    let mut last_whole = tail.split_inclusive('\n').filter(|l| l.ends_with('\n')).filter_map(|l| {
        let line = l.trim_end_matches('\n');
        let (_, hash) = split_hash(line)?;
        let seq = serde_json::from_str::<serde_json::Value>(line).ok()?.get("seq")?.as_u64()?;
        Some((seq, hash.to_owned()))
    });
    match last_whole.next_back() {
        Some((seq, hash)) => (seq + 1, hash, torn),
        None => (1, GENESIS.to_owned(), torn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> Event<'_> {
        Event {
            kind,
            session: Some("s1"),
            identity: None,
            process: None,
            target: None,
            detail: serde_json::json!({"n": 1}),
        }
    }

    fn lines(log: &AuditLog) -> Vec<String> {
        fs::read_to_string(log.path()).unwrap().lines().map(str::to_owned).collect()
    }

    #[test]
    fn records_chain_and_hash_their_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.append(event("a")).unwrap(), 1);
        assert_eq!(log.append(event("b")).unwrap(), 2);
        let lines = lines(&log);
        let mut prev = GENESIS.to_owned();
        for line in &lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["prev"], prev.as_str());
            let (body, hash) = split_hash(line).unwrap();
            assert_eq!(hex(&Sha256::digest(body.as_bytes())), hash);
            assert_eq!(value["hash"], hash);
            prev = hash.to_owned();
        }
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&lines[0])
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for key in ["seq", "ts", "kind", "session", "identity", "process", "target", "detail", "prev", "hash"] {
            assert!(keys.contains(&key.to_owned()), "{key} missing");
        }
    }

    #[test]
    fn reopening_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        AuditLog::open(dir.path()).unwrap().append(event("a")).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.append(event("b")).unwrap(), 2);
        let lines = lines(&log);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["prev"], first["hash"]);
    }

    #[test]
    fn torn_last_line_is_terminated_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        AuditLog::open(dir.path()).unwrap().append(event("a")).unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"seq":2,"ts":"2026"#).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let lines = lines(&log);
        assert_eq!(lines.len(), 3);
        let recovered: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(recovered["kind"], "audit.torn_record");
        assert_eq!(recovered["seq"], 2);
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(recovered["prev"], first["hash"]);
    }

    #[test]
    fn log_is_private_to_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let audit_dir = dir.path().join("audit");
        let log = AuditLog::open(&audit_dir).unwrap();
        assert_eq!(fs::metadata(&audit_dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(log.path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_batch_is_one_run_of_chained_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.append(event("a")).unwrap();
        assert_eq!(log.append_batch([event("b"), event("c")]).unwrap(), 3);
        assert_eq!(log.append_batch(std::iter::empty()).unwrap(), 3, "an empty batch writes nothing");
        let lines = lines(&log);
        assert_eq!(lines.len(), 3);
        for pair in lines.windows(2) {
            let (a, b): (serde_json::Value, serde_json::Value) =
                (serde_json::from_str(&pair[0]).unwrap(), serde_json::from_str(&pair[1]).unwrap());
            assert_eq!(b["prev"], a["hash"]);
            assert_eq!(b["seq"].as_u64(), a["seq"].as_u64().map(|s| s + 1));
        }
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }

    #[test]
    fn split_hash_rejects_lines_without_a_hash() {
        assert!(split_hash("{}").is_none());
        assert!(split_hash(&format!("{{\"a\":1,\"hash\":\"{}\"}}", "z".repeat(64))).is_none());
    }
}
