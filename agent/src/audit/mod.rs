//! The host-local audit log: one JSON object per line, hash-chained.
//!
//! Each record carries `prev` (the previous record's hash) and `hash`
//! (SHA-256 of the record's own JSON up to, not including, the `hash` field),
//! so editing, removing or reordering a line breaks the chain. A record is
//! written with a single `write(2)` on an `O_APPEND` file, so a crash loses
//! at most the record being written; a torn last line is detected at the
//! next start and the chain resumes from the last whole record.

pub mod query;
pub mod replay;
pub mod segments;
pub mod signing;
pub mod verify;

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{identity::Identity, process::ProcessInfo};

/// The active segment, inside the audit directory; closed segments are
/// renamed to `audit-<first seq>.jsonl`.
pub const LOG_FILE: &str = "audit.jsonl";
/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
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
///
/// The detail is anything that serializes to a JSON object: a
/// `serde_json::Value` for the occasional event, a typed record for the
/// hot ones (statements), so those are written without building a `Value`.
#[derive(Debug)]
pub struct Event<'a, D = serde_json::Value> {
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
    pub detail: D,
}

impl<'a, D> Event<'a, D> {
    fn context(&self) -> Context<'a> {
        Context { session: self.session, identity: self.identity, process: self.process, target: self.target }
    }

    fn names(&self) -> segments::RecordNames<'a> {
        segments::RecordNames {
            kind: self.kind,
            session: self.session,
            user: self.identity.map(|identity| identity.user.as_str()),
            target: self.target.map(|target| target.name.as_str()),
        }
    }

    /// An event within a session: who and where; the process is in the
    /// session's `connection.open` record.
    pub fn in_session(
        kind: &'a str,
        session: &'a str,
        identity: &'a Identity,
        target: &'a TargetRef,
        detail: D,
    ) -> Self {
        Self { kind, session: Some(session), identity: Some(identity), process: None, target: Some(target), detail }
    }
}

/// The fields of a record that say whom and what it is about, between
/// `kind` and `detail`.
#[derive(Serialize)]
struct Context<'a> {
    session: Option<&'a str>,
    identity: Option<&'a Identity>,
    process: Option<&'a ProcessInfo>,
    target: Option<&'a TargetRef>,
}

/// A session's id, person and target, encoded once for all the records
/// written about it: the statement writer writes one per statement, and
/// encoding who and where each time was a good part of its work.
#[derive(Debug)]
pub struct SessionContext {
    session: String,
    user: String,
    target: String,
    /// [`Context`] as JSON, without its braces.
    fields: String,
}

impl SessionContext {
    /// The context of records about `session`, by `identity`, to `target`.
    pub fn new(session: &str, identity: &Identity, target: &TargetRef) -> Result<Self, AuditError> {
        let context = Context { session: Some(session), identity: Some(identity), process: None, target: Some(target) };
        Ok(Self {
            session: session.to_owned(),
            user: identity.user.clone(),
            target: target.name.clone(),
            fields: context_fields(&context)?,
        })
    }

    fn names<'a>(&'a self, kind: &'a str) -> segments::RecordNames<'a> {
        segments::RecordNames { kind, session: Some(&self.session), user: Some(&self.user), target: Some(&self.target) }
    }
}

struct Chain {
    file: File,
    next_seq: u64,
    prev: String,
    /// Seq of the active segment's first record.
    segment_first_seq: u64,
    segment_bytes: u64,
    segment_opened: Instant,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// What the active segment holds, noted as records are written, so
    /// closing it does not read it back. `None` when the agent resumed a
    /// segment it did not start, or a write failed: the index is then built
    /// from the file at rotation.
    index: Option<segments::SegmentIndex>,
}

/// How the log is kept: segments, checkpoints, durability, retention, access.
#[derive(Debug)]
pub struct AuditSettings {
    /// A segment is closed once it holds this many bytes.
    pub segment_max_bytes: u64,
    /// A segment is closed once it is this old.
    pub segment_max_age: Duration,
    /// A signed checkpoint follows at least every this many records…
    pub checkpoint_records: u64,
    /// …and at least this often while records are written.
    pub checkpoint_interval: Duration,
    /// When records reach the disk.
    pub fsync: Fsync,
    /// Closed segments older than this are removed.
    pub retain_age: Option<Duration>,
    /// Closed segments beyond this many bytes in all are removed, oldest first.
    pub retain_bytes: Option<u64>,
    /// Group that may read the log (through the CLI); none: root only.
    pub group: Option<u32>,
    /// Signs checkpoints; none: checkpoints are not written.
    pub signer: Option<signing::Signer>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(24 * 3600),
            checkpoint_records: 1000,
            checkpoint_interval: Duration::from_secs(60),
            fsync: Fsync::Checkpoint,
            retain_age: None,
            retain_bytes: None,
            group: None,
            signer: None,
        }
    }
}

/// When the log is flushed to stable storage. Every record is written to
/// the file (one `write(2)`) before the call that adds it returns, so an
/// agent crash loses nothing acknowledged; this decides what a power loss can.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// After every write: nothing acknowledged is lost, at a cost per record.
    Always,
    /// At each checkpoint and when a segment closes.
    #[default]
    Checkpoint,
    /// Left to the kernel.
    Never,
}

/// An open audit log, safe to share between tasks.
pub struct AuditLog {
    dir: PathBuf,
    path: PathBuf,
    settings: AuditSettings,
    chain: Mutex<Chain>,
    /// Whether the last append reached the file.
    last_append_failed: std::sync::atomic::AtomicBool,
}

impl AuditLog {
    /// Opens (creating if needed, root-only) the log in `dir` with default
    /// settings and no signing key, and resumes its chain.
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        Self::open_with(dir, AuditSettings::default())
    }

    /// Opens the log in `dir` with `settings` and resumes its chain.
    pub fn open_with(dir: &Path, settings: AuditSettings) -> Result<Self, AuditError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| AuditError::Io { path, source }
        };
        let (dir_mode, file_mode) = if settings.group.is_some() { (0o750, 0o640) } else { (0o700, 0o600) };
        fs::DirBuilder::new().recursive(true).mode(dir_mode).create(dir).map_err(io_err(dir))?;
        restrict(dir, dir_mode, settings.group).map_err(io_err(dir))?;
        if let Some(signer) = &settings.signer {
            let public = dir.join(signing::PUBLIC_KEY_FILE);
            fs::write(&public, format!("{}\n", signer.public_key_hex())).map_err(io_err(&public))?;
            restrict(&public, 0o644, None).map_err(io_err(&public))?;
        }
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(file_mode)
            .open(&path)
            .map_err(io_err(&path))?;
        restrict(&path, file_mode, settings.group).map_err(io_err(&path))?;
        let tail = read_tail(&mut file).map_err(io_err(&path))?;
        let (mut next_seq, mut prev, torn) = resume(&tail);
        if next_seq == 1 {
            // An empty active segment continues the last closed one.
            if let Some(last) = segments::sealed(dir).map_err(io_err(dir))?.last() {
                let mut sealed = File::open(&last.path).map_err(io_err(&last.path))?;
                let tail = read_tail(&mut sealed).map_err(io_err(&last.path))?;
                (next_seq, prev, _) = resume(&tail);
            }
        }
        if torn {
            // Terminate the torn line so the next record starts on its own line.
            file.write_all(b"\n").map_err(io_err(&path))?;
        }
        let segment_first_seq = first_seq(&path).unwrap_or(next_seq);
        let segment_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let chain = Chain {
            file,
            next_seq,
            prev,
            segment_first_seq,
            segment_bytes,
            segment_opened: Instant::now(),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            index: (segment_bytes == 0).then(segments::SegmentIndex::default),
        };
        let log = Self {
            dir: dir.to_owned(),
            path,
            settings,
            chain: Mutex::new(chain),
            last_append_failed: std::sync::atomic::AtomicBool::new(false),
        };
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

    /// Path of the active segment.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records can be written now: the last append succeeded and
    /// the active segment still opens for appending (a read-only or full
    /// file system, an immutable file, a removed directory say no).
    pub fn writable(&self) -> Result<(), AuditError> {
        if self.last_append_failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(AuditError::Io { path: self.path.clone(), source: io::Error::other("the last append failed") });
        }
        OpenOptions::new().append(true).open(&self.path).map(drop).map_err(|source| self.io(source))
    }

    /// Appends one record; returns its sequence number.
    pub fn append(&self, event: Event<'_>) -> Result<u64, AuditError> {
        self.append_batch(std::iter::once(event))
    }

    /// Appends records in order with a single `write(2)`; returns the
    /// sequence number of the last. Either all of them are written or the
    /// chain does not advance (a torn tail is repaired at the next start).
    pub fn append_batch<'a, D: Serialize + 'a>(
        &self,
        events: impl IntoIterator<Item = Event<'a, D>>,
    ) -> Result<u64, AuditError> {
        self.append_lines(
            events.into_iter().map(|event| (event.names(), context_fields(&event.context()), event.detail)),
        )
    }

    /// Appends records about sessions, each its session, kind and detail,
    /// as [`AuditLog::append_batch`] does.
    pub fn append_in_sessions<'a, D: Serialize + 'a>(
        &self,
        events: impl IntoIterator<Item = (&'a SessionContext, &'a str, D)>,
    ) -> Result<u64, AuditError> {
        self.append_lines(
            events
                .into_iter()
                .map(|(context, kind, detail)| (context.names(kind), Ok(context.fields.as_str()), detail)),
        )
    }

    /// Signs everything written since the last checkpoint, now: a clean
    /// stop leaves no record unproven. Nothing to do when every record is
    /// signed already or checkpoints are off.
    pub fn checkpoint_now(&self) -> Result<(), AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        if chain.since_checkpoint == 0 || self.settings.signer.is_none() {
            return Ok(());
        }
        let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        self.checkpoint(&mut chain, &ts, false)
    }

    fn append_lines<'a, D: Serialize, F: AsRef<str>>(
        &self,
        records: impl Iterator<Item = (segments::RecordNames<'a>, Result<F, AuditError>, D)>,
    ) -> Result<u64, AuditError> {
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines = Vec::new();
        let ts = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let (mut seq, mut prev) = (chain.next_seq, chain.prev.clone());
        // Names every record borrows from `records`' items, alive for the
        // whole call: the same addresses are the same names.
        let mut last_names: Option<segments::RecordNames<'a>> = None;
        for (names, context, detail) in records {
            encode(&mut lines, seq, &ts, names.kind, context?.as_ref(), &detail, &mut prev)?;
            if let Some(index) = chain.index.as_mut() {
                if last_names.is_some_and(|last| last.same_strings(&names)) {
                    index.note_position(seq, &ts, &prev);
                } else {
                    index.note(seq, &ts, &prev, names);
                }
            }
            last_names = Some(names);
            seq += 1;
        }
        if lines.is_empty() {
            return Ok(chain.next_seq.saturating_sub(1));
        }
        let last = seq - 1;
        let records = seq - chain.next_seq;
        let started = Instant::now();
        let written = self.write(&mut chain, &lines, seq, prev);
        self.last_append_failed.store(written.is_err(), std::sync::atomic::Ordering::Relaxed);
        crate::metrics::global().audit_appended(records, lines.len() as u64, started.elapsed(), written.is_ok());
        written?;
        chain.since_checkpoint += records;
        if self.settings.fsync == Fsync::Always {
            chain.file.sync_data().map_err(|source| self.io(source))?;
        }
        let rotate = chain.segment_bytes >= self.settings.segment_max_bytes
            || chain.segment_opened.elapsed() >= self.settings.segment_max_age;
        let checkpoint = chain.since_checkpoint >= self.settings.checkpoint_records
            || chain.last_checkpoint.elapsed() >= self.settings.checkpoint_interval;
        if rotate {
            self.rotate(&mut chain, &ts)?;
        } else if checkpoint && self.settings.signer.is_some() {
            self.checkpoint(&mut chain, &ts, false)?;
        }
        Ok(last)
    }

    fn io(&self, source: io::Error) -> AuditError {
        AuditError::Io { path: self.path.clone(), source }
    }

    fn write(&self, chain: &mut Chain, lines: &[u8], next_seq: u64, prev: String) -> Result<(), AuditError> {
        if let Err(source) = chain.file.write_all(lines) {
            // A partial write (a full disk) must not leave half a record
            // for the next one to follow: cut the file back to where it was.
            let _ = chain.file.set_len(chain.segment_bytes);
            // The index noted records that are not there.
            chain.index = None;
            return Err(self.io(source));
        }
        chain.segment_bytes += lines.len() as u64;
        chain.next_seq = next_seq;
        chain.prev = prev;
        Ok(())
    }

    /// Appends one record of the log's own under the held lock.
    fn write_one(&self, chain: &mut Chain, ts: &str, event: &Event<'_>) -> Result<(), AuditError> {
        let mut line = Vec::new();
        let context = context_fields(&event.context())?;
        let mut hash = chain.prev.clone();
        encode(&mut line, chain.next_seq, ts, event.kind, &context, &event.detail, &mut hash)?;
        if let Some(index) = chain.index.as_mut() {
            index.note(chain.next_seq, ts, &hash, event.names());
        }
        let next = chain.next_seq + 1;
        self.write(chain, &line, next, hash)
    }

    /// Appends a signed checkpoint over everything so far, and syncs.
    fn checkpoint(&self, chain: &mut Chain, ts: &str, closes_segment: bool) -> Result<(), AuditError> {
        let Some(signer) = &self.settings.signer else { return Ok(()) };
        let signed_seq = chain.next_seq - 1;
        let detail = serde_json::json!({
            "signed_seq": signed_seq,
            "signed_hash": chain.prev,
            "key": signer.key_id(),
            "signature": signer.sign(signed_seq, &chain.prev),
            "closes_segment": closes_segment,
        });
        let event =
            Event { kind: "audit.checkpoint", session: None, identity: None, process: None, target: None, detail };
        self.write_one(chain, ts, &event)?;
        chain.since_checkpoint = 0;
        chain.last_checkpoint = Instant::now();
        if self.settings.fsync != Fsync::Never {
            chain.file.sync_data().map_err(|source| self.io(source))?;
        }
        Ok(())
    }

    /// Closes the active segment (a checkpoint ends it) under its first
    /// seq, opens a new one that continues the chain, and applies retention.
    fn rotate(&self, chain: &mut Chain, ts: &str) -> Result<(), AuditError> {
        self.checkpoint(chain, ts, true)?;
        if self.settings.fsync != Fsync::Never {
            chain.file.sync_all().map_err(|source| self.io(source))?;
        }
        let sealed = self.dir.join(segments::sealed_name(chain.segment_first_seq));
        fs::rename(&self.path, &sealed).map_err(|source| AuditError::Io { path: sealed.clone(), source })?;
        let file_mode = if self.settings.group.is_some() { 0o640 } else { 0o600 };
        chain.file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(file_mode)
            .open(&self.path)
            .map_err(|source| self.io(source))?;
        restrict(&self.path, file_mode, self.settings.group).map_err(|source| self.io(source))?;
        chain.segment_first_seq = chain.next_seq;
        chain.segment_bytes = 0;
        chain.segment_opened = Instant::now();
        let index = chain.index.replace(segments::SegmentIndex::default());
        if let Err(error) = segments::write_index(&sealed, index) {
            tracing::warn!(%error, segment = %sealed.display(), "segment index not written (queries scan it instead)");
        }
        for removed in segments::expired(&self.dir, self.settings.retain_age, self.settings.retain_bytes)
            .map_err(|source| AuditError::Io { path: self.dir.clone(), source })?
        {
            // The removal is recorded before the file goes, so verify can
            // tell a retention gap from a deleted segment.
            let detail = serde_json::json!({
                "file": removed.path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "first_seq": removed.first_seq,
                "last_seq": removed.last_seq,
                "last_hash": removed.last_hash,
                "reason": "retention",
            });
            let event = Event {
                kind: "audit.segment_removed",
                session: None,
                identity: None,
                process: None,
                target: None,
                detail,
            };
            self.write_one(chain, ts, &event)?;
            let _ = fs::remove_file(segments::index_path(&removed.path));
            fs::remove_file(&removed.path).map_err(|source| AuditError::Io { path: removed.path.clone(), source })?;
        }
        Ok(())
    }
}

/// Sets mode and (when given) group of a file the agent owns.
fn restrict(path: &Path, mode: u32, group: Option<u32>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Seq of a segment's first record.
fn first_seq(path: &Path) -> Option<u64> {
    use std::io::BufRead as _;
    let mut line = String::new();
    io::BufReader::new(File::open(path).ok()?).read_line(&mut line).ok()?;
    serde_json::from_str::<serde_json::Value>(&line).ok()?.get("seq")?.as_u64()
}

/// [`Context`] as JSON object fields, without the braces.
fn context_fields(context: &Context<'_>) -> Result<String, AuditError> {
    let mut json = serde_json::to_string(context)?;
    json.pop();
    json.remove(0);
    Ok(json)
}

/// Appends one record's line to `out`, chained to the hash in `prev`,
/// which becomes the record's own. A record is `{"seq":…,"ts":…,"kind":…,`
/// the context fields `,"detail":…,"prev":…`, then `"hash"`, computed over
/// everything before it with the object closed.
fn encode<D: Serialize>(
    out: &mut Vec<u8>,
    seq: u64,
    ts: &str,
    kind: &str,
    context: &str,
    detail: &D,
    prev: &mut String,
) -> Result<(), AuditError> {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    serde_json::to_writer(&mut *out, &seq)?;
    out.extend_from_slice(b",\"ts\":");
    json_string(out, ts)?;
    out.extend_from_slice(b",\"kind\":");
    json_string(out, kind)?;
    out.push(b',');
    out.extend_from_slice(context.as_bytes());
    out.extend_from_slice(b",\"detail\":");
    serde_json::to_writer(&mut *out, detail)?;
    out.extend_from_slice(b",\"prev\":");
    json_string(out, prev)?;
    out.push(b'}');
    let hash = Sha256::digest(&out[start..]);
    out.pop(); // the closing brace; the hash goes inside the object
    prev.clear();
    crate::hex::encode_into(&hash, prev);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(prev.as_bytes());
    out.extend_from_slice(b"\"}\n");
    Ok(())
}

/// `text` as a JSON string. Timestamps, kinds and hashes, in every record,
/// need no escaping: they are copied as they are, the same bytes serde
/// would write.
fn json_string(out: &mut Vec<u8>, text: &str) -> Result<(), AuditError> {
    if text.bytes().any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\') {
        serde_json::to_writer(&mut *out, text)?;
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
    Ok(())
}

/// Splits a written line into the hashed part (re-closed as JSON) and its hash.
pub fn split_hash(line: &str) -> Option<(String, &str)> {
    let (body, hash) = hashed_part(line)?;
    Some((format!("{body}}}"), hash))
}

/// The hashed part of a line without its closing brace (which the hash
/// also covers), and the stated hash, without copying.
pub(crate) fn hashed_part(line: &str) -> Option<(&str, &str)> {
    const SUFFIX_LEN: usize = ",\"hash\":\"\"}".len() + 64;
    let cut = line.len().checked_sub(SUFFIX_LEN)?;
    let hash = line.get(cut..)?.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| (&line[..cut], hash))
}

pub(crate) fn read_tail(file: &mut File) -> io::Result<String> {
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
pub(crate) fn resume(tail: &str) -> (u64, String, bool) {
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
            assert_eq!(crate::hex::encode(&Sha256::digest(body.as_bytes())), hash);
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
    fn session_records_read_as_any_other_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        let identity = Identity {
            source: crate::identity::IdentitySource::Unix,
            subject: "unix:al\"ice".into(),
            user: "al\"ice".into(),
            email: Some("alice@example.com".into()),
            token: None,
            uid: 1000,
            groups: vec!["dev".into(), "dba".into()],
            actor: None,
        };
        let target = TargetRef { name: "pg".into(), protocol: "postgres".into(), addr: "10.0.0.1".into(), port: 5432 };
        let detail = serde_json::json!({"sql": "SELECT 1", "n": [1, 2]});
        log.append(Event::in_session("postgres.statement", "s-1", &identity, &target, detail.clone())).unwrap();
        let context = SessionContext::new("s-1", &identity, &target).unwrap();
        log.append_in_sessions([(&context, "postgres.statement", &detail), (&context, "secret.detected", &detail)])
            .unwrap();
        let lines = lines(&log);
        let fields = |line: &str| {
            let mut value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            for volatile in ["seq", "ts", "prev", "hash", "kind"] {
                value.remove(volatile);
            }
            value
        };
        assert_eq!(fields(&lines[0]), fields(&lines[1]));
        assert_eq!(fields(&lines[0]), fields(&lines[2]));
        // The same bytes but for what changes from record to record.
        let cut = |line: &str| line[line.find(",\"session\"").unwrap()..line.find(",\"prev\"").unwrap()].to_owned();
        assert_eq!(cut(&lines[0]), cut(&lines[1]));
        let report = verify::verify(dir.path(), None).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
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
        assert_eq!(log.append_batch(std::iter::empty::<Event<'_>>()).unwrap(), 3, "an empty batch writes nothing");
        let lines = lines(&log);
        assert_eq!(lines.len(), 3);
        for pair in lines.windows(2) {
            let (a, b): (serde_json::Value, serde_json::Value) =
                (serde_json::from_str(&pair[0]).unwrap(), serde_json::from_str(&pair[1]).unwrap());
            assert_eq!(b["prev"], a["hash"]);
            assert_eq!(b["seq"].as_u64(), a["seq"].as_u64().map(|s| s + 1));
        }
    }

    #[test]
    fn a_closed_segment_is_indexed_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AuditSettings { segment_max_bytes: 4096, ..AuditSettings::default() };
        let log = AuditLog::open_with(dir.path(), settings).unwrap();
        let identity = Identity::unix("alice", 1000, vec![]);
        let target = TargetRef { name: "db".into(), protocol: "postgres".into(), addr: "10.0.0.1".into(), port: 5432 };
        for n in 0..60 {
            let session = format!("s{}", n % 7);
            log.append(Event {
                kind: if n % 2 == 0 { "a" } else { "b" },
                session: Some(&session),
                identity: (n % 3 == 0).then_some(&identity),
                process: None,
                target: (n % 5 == 0).then_some(&target),
                detail: serde_json::json!({ "n": n }),
            })
            .unwrap();
        }
        // Batches where a session's records follow one another (their
        // names noted once) and where sessions alternate.
        let contexts: Vec<SessionContext> =
            (0..3).map(|n| SessionContext::new(&format!("t{n}"), &identity, &target).unwrap()).collect();
        for round in 0..20 {
            let kind = |i: usize| if i.is_multiple_of(4) { "c" } else { "d" };
            let events = (0..6).map(|i| (&contexts[(round + i / 2) % 3], kind(i), serde_json::json!({ "i": i })));
            log.append_in_sessions(events).unwrap();
        }
        let sealed = segments::sealed(dir.path()).unwrap();
        assert!(sealed.len() >= 2, "the log rotated");
        for segment in sealed {
            let noted = segments::SegmentIndex::load(&segment.path).unwrap();
            assert_eq!(noted, segments::SegmentIndex::build(&segment.path).unwrap());
            assert!(noted.first_seq > 0 && noted.last_seq > noted.first_seq);
        }
    }

    #[test]
    fn strings_are_written_as_serde_writes_them() {
        for text in [
            "",
            "2026-11-30T14:05:43.123456Z",
            "postgres.statement",
            "quote \" and \\",
            "tab\tnew\nline\u{1}",
            "é ✓ \u{7f}",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, text).unwrap();
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    #[test]
    fn split_hash_rejects_lines_without_a_hash() {
        assert!(split_hash("{}").is_none());
        assert!(split_hash(&format!("{{\"a\":1,\"hash\":\"{}\"}}", "z".repeat(64))).is_none());
    }
}
