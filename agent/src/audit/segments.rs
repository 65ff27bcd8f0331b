//! The audit directory's files: the active segment (`audit.jsonl`), closed
//! segments named by their first record (`audit-00000000000000000001.jsonl`)
//! and, beside each closed one, an index (`….idx`) of what it holds, so a
//! query skips segments that cannot match. Indexes are derived data: they
//! are rebuilt from the segments whenever missing or unreadable.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::LOG_FILE;

/// A segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its path.
    pub path: PathBuf,
    /// Seq of its first record, from its name (closed) or `None` (active).
    pub first_seq: Option<u64>,
}

/// Name of the closed segment whose first record is `first_seq`.
pub fn sealed_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// Index file of a closed segment.
pub fn index_path(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

/// Closed segments in order.
pub fn sealed(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(seq) = name.strip_prefix("audit-").and_then(|n| n.strip_suffix(".jsonl")) else { continue };
        if let Ok(first_seq) = seq.parse::<u64>() {
            found.push(Segment { path, first_seq: Some(first_seq) });
        }
    }
    found.sort_by_key(|s| s.first_seq);
    Ok(found)
}

/// Every segment in order: closed ones, then the active one if present.
pub fn all(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = sealed(dir)?;
    let active = dir.join(LOG_FILE);
    if active.exists() {
        segments.push(Segment { path: active, first_seq: None });
    }
    Ok(segments)
}

/// What a closed segment holds, for skipping it in queries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentIndex {
    /// First and last seq.
    pub first_seq: u64,
    /// Last seq.
    pub last_seq: u64,
    /// Hash of the last record.
    pub last_hash: String,
    /// Timestamp of the first record.
    pub first_ts: String,
    /// Timestamp of the last record.
    pub last_ts: String,
    /// Every user named.
    pub users: BTreeSet<String>,
    /// Every target named.
    pub targets: BTreeSet<String>,
    /// Every kind.
    pub kinds: BTreeSet<String>,
    /// Every session.
    pub sessions: BTreeSet<String>,
}

/// What a segment's index keeps of one record.
#[derive(Clone, Copy, Debug)]
pub struct RecordNames<'a> {
    /// Dotted kind.
    pub kind: &'a str,
    /// Session id.
    pub session: Option<&'a str>,
    /// The person's user name.
    pub user: Option<&'a str>,
    /// The target's name.
    pub target: Option<&'a str>,
}

impl RecordNames<'_> {
    /// Whether both borrow the very same strings (not merely equal ones):
    /// a record of the same session and kind as the one before, whose
    /// names need no second lookup.
    pub fn same_strings(&self, other: &Self) -> bool {
        fn same(a: Option<&str>, b: Option<&str>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => std::ptr::eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        same(Some(self.kind), Some(other.kind))
            && same(self.session, other.session)
            && same(self.user, other.user)
            && same(self.target, other.target)
    }
}

impl SegmentIndex {
    /// Reads a segment and builds its index.
    pub fn build(segment: &Path) -> io::Result<Self> {
        let mut index = Self::default();
        for line in BufReader::new(File::open(segment)?).lines() {
            let line = line?;
            let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let text = |key: &str| record.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            let seq = record.get("seq").and_then(serde_json::Value::as_u64).unwrap_or(0);
            if index.first_seq == 0 {
                index.first_seq = seq;
                index.first_ts = text("ts").unwrap_or_default();
            }
            index.last_seq = seq;
            index.last_ts = text("ts").unwrap_or_default();
            index.last_hash = text("hash").unwrap_or_default();
            index.kinds.extend(text("kind"));
            index.sessions.extend(text("session"));
            if let Some(user) = record.pointer("/identity/user").and_then(|v| v.as_str()) {
                index.users.insert(user.to_owned());
            }
            if let Some(target) = record.pointer("/target/name").and_then(|v| v.as_str()) {
                index.targets.insert(target.to_owned());
            }
        }
        Ok(index)
    }

    /// Notes a record as it is written to the segment.
    pub fn note(&mut self, seq: u64, ts: &str, hash: &str, names: RecordNames<'_>) {
        self.note_position(seq, ts, hash);
        let names = [
            (&mut self.kinds, Some(names.kind)),
            (&mut self.sessions, names.session),
            (&mut self.users, names.user),
            (&mut self.targets, names.target),
        ];
        for (set, name) in names {
            if let Some(name) = name
                && !set.contains(name)
            {
                set.insert(name.to_owned());
            }
        }
    }

    /// Notes a record whose names were noted already.
    pub fn note_position(&mut self, seq: u64, ts: &str, hash: &str) {
        if self.first_seq == 0 {
            self.first_seq = seq;
            self.first_ts = ts.to_owned();
        }
        self.last_seq = seq;
        if self.last_ts != ts {
            ts.clone_into(&mut self.last_ts);
        }
        hash.clone_into(&mut self.last_hash);
    }

    /// The index of a closed segment: from its file, or built again.
    pub fn load(segment: &Path) -> io::Result<Self> {
        match fs::read(index_path(segment)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()) {
            Some(index) => Ok(index),
            None => Self::build(segment),
        }
    }
}

/// Writes the index of a closed segment: `index` as noted while it was
/// written, or else built from the file.
pub fn write_index(segment: &Path, index: Option<SegmentIndex>) -> io::Result<()> {
    let index = match index {
        Some(index) => index,
        None => SegmentIndex::build(segment)?,
    };
    let path = index_path(segment);
    fs::write(&path, serde_json::to_vec(&index)?)?;
    if let Ok(meta) = fs::metadata(segment) {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let _ = std::os::unix::fs::chown(&path, None, Some(meta.gid()));
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode() & 0o777));
    }
    Ok(())
}

/// A closed segment retention removes.
#[derive(Debug)]
pub struct Removed {
    /// The file.
    pub path: PathBuf,
    /// Its first record.
    pub first_seq: u64,
    /// Its last record.
    pub last_seq: u64,
    /// Hash of its last record: the next segment chains to it.
    pub last_hash: String,
}

/// Closed segments past `max_age` (by modification time) or beyond
/// `max_bytes` in all, oldest first.
pub fn expired(dir: &Path, max_age: Option<Duration>, max_bytes: Option<u64>) -> io::Result<Vec<Removed>> {
    let segments = sealed(dir)?;
    let sizes: Vec<u64> = segments.iter().map(|s| fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0)).collect();
    let mut total: u64 = sizes.iter().sum();
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for (segment, size) in segments.iter().zip(sizes) {
        let age = fs::metadata(&segment.path)
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default())
            .unwrap_or_default();
        let too_old = max_age.is_some_and(|max| age > max);
        let too_big = max_bytes.is_some_and(|max| total > max);
        if !(too_old || too_big) {
            break;
        }
        let index = SegmentIndex::load(&segment.path)?;
        total -= size;
        removed.push(Removed {
            path: segment.path.clone(),
            first_seq: index.first_seq,
            last_seq: index.last_seq,
            last_hash: index.last_hash,
        });
    }
    Ok(removed)
}
