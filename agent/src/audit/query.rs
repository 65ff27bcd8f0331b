//! `airlock audit query`: records by person, target, kind, session, time
//! and text. Closed segments whose index rules them out are not read; in
//! the others, a byte search picks candidate lines before any JSON is
//! parsed, so a query over millions of records reads mostly at disk speed.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    path::Path,
    time::SystemTime,
};

use super::segments::{self, SegmentIndex};

/// What records to find. Every field given must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Identity user name.
    pub user: Option<String>,
    /// Actor name (`identity.actor.name`): what ran on the person's behalf.
    pub actor: Option<String>,
    /// Target name.
    pub target: Option<String>,
    /// Kind, or a kind prefix ending in `.` (`postgres.`).
    pub kind: Option<String>,
    /// Session id.
    pub session: Option<String>,
    /// Records at or after.
    pub since: Option<SystemTime>,
    /// Records before.
    pub until: Option<SystemTime>,
    /// Text anywhere in the record.
    pub text: Option<String>,
}

/// How much a query read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segments read.
    pub segments_read: usize,
    /// Segments their index ruled out.
    pub segments_skipped: usize,
    /// Records matched.
    pub matched: u64,
}

struct Compiled {
    needles: Vec<Vec<u8>>,
    since: Option<String>,
    until: Option<String>,
}

impl Filter {
    fn compile(&self) -> Compiled {
        let mut needles = Vec::new();
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        if let Some(user) = &self.user {
            needles.push(format!("\"user\":{}", quoted(user)).into_bytes());
        }
        if let Some(target) = &self.target {
            needles.push(format!("\"target\":{{\"name\":{}", quoted(target)).into_bytes());
        }
        if let Some(actor) = &self.actor {
            needles.push(format!("\"actor\":{{\"name\":{}", quoted(actor)).into_bytes());
        }
        if let Some(session) = &self.session {
            needles.push(format!("\"session\":{}", quoted(session)).into_bytes());
        }
        if let Some(kind) = &self.kind {
            let mut needle = format!("\"kind\":{}", quoted(kind)).into_bytes();
            if kind.ends_with('.') {
                needle.pop(); // a prefix: no closing quote
            }
            needles.push(needle);
        }
        if let Some(text) = &self.text {
            // As it appears inside JSON strings.
            let escaped = quoted(text);
            needles.push(escaped.as_bytes()[1..escaped.len() - 1].to_vec());
        }
        let ts = |t: &SystemTime| humantime::format_rfc3339_micros(*t).to_string();
        Compiled { needles, since: self.since.as_ref().map(ts), until: self.until.as_ref().map(ts) }
    }

    /// Whether a closed segment may hold matches.
    fn may_match(&self, index: &SegmentIndex, compiled: &Compiled) -> bool {
        let has = |set: &std::collections::BTreeSet<String>, value: &Option<String>| {
            value.as_ref().is_none_or(|v| set.contains(v))
        };
        let kind_ok = self.kind.as_ref().is_none_or(|kind| {
            if kind.ends_with('.') {
                index.kinds.iter().any(|k| k.starts_with(kind.as_str()))
            } else {
                index.kinds.contains(kind)
            }
        });
        has(&index.users, &self.user)
            && has(&index.targets, &self.target)
            && has(&index.sessions, &self.session)
            && kind_ok
            && compiled.since.as_ref().is_none_or(|since| index.last_ts >= *since)
            && compiled.until.as_ref().is_none_or(|until| index.first_ts < *until)
    }
}

/// Calls `each` with every matching record, oldest first, until it returns false.
pub fn query(dir: &Path, filter: &Filter, mut each: impl FnMut(serde_json::Value) -> bool) -> io::Result<Stats> {
    let compiled = filter.compile();
    let finders: Vec<memchr::memmem::Finder<'_>> = compiled.needles.iter().map(memchr::memmem::Finder::new).collect();
    let mut stats = Stats::default();
    for segment in segments::all(dir)? {
        if segment.first_seq.is_some() && !filter.may_match(&SegmentIndex::load(&segment.path)?, &compiled) {
            stats.segments_skipped += 1;
            continue;
        }
        stats.segments_read += 1;
        let reader = BufReader::with_capacity(1 << 20, File::open(&segment.path)?);
        for line in reader.split(b'\n') {
            let line = line?;
            if !finders.iter().all(|f| f.find(&line).is_some()) {
                continue;
            }
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            if !matches(filter, &compiled, &record) {
                continue;
            }
            stats.matched += 1;
            if !each(record) {
                return Ok(stats);
            }
        }
    }
    Ok(stats)
}

/// The exact test, after the byte search found a candidate.
fn matches(filter: &Filter, compiled: &Compiled, record: &serde_json::Value) -> bool {
    let text = |pointer: &str| record.pointer(pointer).and_then(|v| v.as_str());
    let equal = |want: &Option<String>, pointer: &str| want.as_ref().is_none_or(|w| text(pointer) == Some(w.as_str()));
    let kind_ok = filter.kind.as_ref().is_none_or(|kind| {
        let actual = text("/kind").unwrap_or("");
        if kind.ends_with('.') { actual.starts_with(kind.as_str()) } else { actual == kind }
    });
    let ts = text("/ts").unwrap_or("");
    equal(&filter.user, "/identity/user")
        && equal(&filter.actor, "/identity/actor/name")
        && equal(&filter.target, "/target/name")
        && equal(&filter.session, "/session")
        && kind_ok
        && compiled.since.as_ref().is_none_or(|since| ts >= since.as_str())
        && compiled.until.as_ref().is_none_or(|until| ts < until.as_str())
}

/// A one-line summary of a record for tables: what happened, in short.
pub fn summary(record: &serde_json::Value) -> String {
    let detail = &record["detail"];
    let pick = |key: &str| detail.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let summary = pick("sql")
        .or_else(|| pick("reason"))
        .or_else(|| pick("statement"))
        .or_else(|| pick("command"))
        .or_else(|| pick("error"))
        .or_else(|| pick("decision"))
        .unwrap_or_else(|| if detail.is_null() { String::new() } else { detail.to_string() });
    let flat: String = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}
