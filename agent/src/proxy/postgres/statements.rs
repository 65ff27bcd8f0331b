//! Pairs statements with their outcome, for one audit record per statement.
//!
//! PostgreSQL answers in order, so a FIFO of statements in flight is enough,
//! whether the client pipelines or not: a simple Query stays open until
//! ReadyForQuery (it may hold several statements), an extended-protocol
//! Execute ends at its CommandComplete, EmptyQueryResponse, PortalSuspended
//! or ErrorResponse; after an error the server skips to Sync, so Executes
//! still queued at ReadyForQuery never ran.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use serde::Serialize;

use super::{
    codec::{Backend, ErrorFields, Frame, Frontend},
    encoding::ClientEncoding,
    recorder::SentStatement,
};
use crate::redact;

/// Longest SQL text kept in a record.
const MAX_SQL_CHARS: usize = 64 * 1024;
/// How many prepared statements and portals are remembered per session.
const MAX_REMEMBERED: usize = 10_000;

/// Which sub-protocol carried a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryProtocol {
    /// Query message.
    Simple,
    /// Parse/Bind/Execute.
    Extended,
}

/// A finished statement, ready for the audit log.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct StatementRecord {
    /// Sub-protocol.
    pub protocol: QueryProtocol,
    /// SQL text, secrets redacted, truncated; shared with the prepared
    /// statement it came from, so executing it again copies nothing.
    pub sql: Arc<str>,
    /// Kinds of secret removed from `sql`.
    #[serde(skip_serializing_if = "redact::Secrets::is_empty")]
    pub secrets: redact::Secrets,
    /// Command tags, e.g. `["SELECT 3"]` (several for a multi-statement Query).
    pub results: Vec<String>,
    /// The error, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatementError>,
    /// What masking rewrote in its results: counts, never values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<super::mask::MaskedCount>,
    /// False when an earlier error in the pipeline made the server skip it.
    pub executed: bool,
    /// From send to outcome.
    pub duration_us: u64,
}

/// What an ErrorResponse said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementError {
    /// SQLSTATE.
    pub sqlstate: String,
    /// Severity.
    pub severity: String,
    /// Primary message.
    pub message: String,
}

impl From<&ErrorFields> for StatementError {
    fn from(fields: &ErrorFields) -> Self {
        Self {
            sqlstate: fields.get(b'C').unwrap_or("").to_owned(),
            severity: fields.get(b'V').or_else(|| fields.get(b'S')).unwrap_or("").to_owned(),
            // A server may quote what it was sent (a connection string, a literal).
            message: redact::sql_error(fields.get(b'M').unwrap_or("")),
        }
    }
}

/// Statement text as recorded, and what was removed from it.
#[derive(Clone)]
struct Sql {
    text: Arc<str>,
    secrets: redact::Secrets,
}

impl From<String> for Sql {
    /// A placeholder Airlock wrote itself: no secrets.
    fn from(text: String) -> Self {
        Self { text: text.into(), secrets: redact::Secrets::default() }
    }
}

struct Pending {
    protocol: QueryProtocol,
    sql: Sql,
    results: Vec<String>,
    error: Option<StatementError>,
    sent: Instant,
}

/// Statement tracking for one session.
#[derive(Default)]
pub struct StatementTracker {
    prepared: HashMap<String, Sql>,
    portals: HashMap<String, Sql>,
    pending: VecDeque<Pending>,
}

impl StatementTracker {
    /// Notes a frame the client sent; its text decodes per `encoding`.
    /// Returns the statement it runs, for a Query, an Execute or a
    /// FunctionCall.
    pub fn client_sent(&mut self, frame: &Frame, encoding: ClientEncoding) -> Option<SentStatement> {
        // Text the guard could not decode is refused there; recorded here
        // as near as it reads.
        let decode = |sql: &[u8]| clean(&encoding.decode(sql).unwrap_or_else(|_| String::from_utf8_lossy(sql)));
        match Frontend::parse(frame) {
            Ok(Frontend::Query { sql }) => return Some(self.push(QueryProtocol::Simple, decode(sql))),
            Ok(Frontend::Parse { statement, sql }) => {
                remember(&mut self.prepared, &String::from_utf8_lossy(statement), decode(sql));
            }
            Ok(Frontend::Bind { portal, statement }) => {
                let (portal, statement) = (String::from_utf8_lossy(portal), String::from_utf8_lossy(statement));
                let sql = self
                    .prepared
                    .get(statement.as_ref())
                    .cloned()
                    .unwrap_or_else(|| Sql::from(format!("<prepared statement {statement:?}>")));
                remember(&mut self.portals, &portal, sql);
            }
            Ok(Frontend::Execute { portal }) => {
                let portal = String::from_utf8_lossy(portal);
                let sql = self
                    .portals
                    .get(portal.as_ref())
                    .cloned()
                    .unwrap_or_else(|| Sql::from(format!("<portal {portal:?}>")));
                return Some(self.push(QueryProtocol::Extended, sql));
            }
            Ok(Frontend::FunctionCall) => {
                return Some(self.push(QueryProtocol::Simple, Sql::from("<FunctionCall message>".to_owned())));
            }
            Ok(Frontend::Terminate | Frontend::Other) => {}
            // The server will reject it too; the error comes back and is recorded.
            Err(error) => tracing::debug!(%error, "uninspectable client message"),
        }
        None
    }

    /// Notes a message too large to inspect; a Query's placeholder is returned.
    pub fn client_sent_large(&mut self, tag: u8, len: usize) -> Option<SentStatement> {
        (tag == b'Q')
            .then(|| self.push(QueryProtocol::Simple, Sql::from(format!("<{len}-byte query, too large to inspect>"))))
    }

    /// Whether [`server_sent`](Self::server_sent) has anything to do with a
    /// server frame of this type. Rows, by the thousand, skip the tracker.
    pub fn follows(tag: u8) -> bool {
        matches!(tag, b'C' | b'E' | b'Z' | b'I' | b's')
    }

    /// Notes a frame the server sent; the statements it finished go to the
    /// end of `done` (a session's list, handed to the record writer).
    pub fn server_sent(&mut self, frame: &Frame, done: &mut Vec<StatementRecord>) {
        let message = match frame.tag {
            // EmptyQueryResponse and PortalSuspended end an Execute like a CommandComplete.
            b'I' => Backend::CommandComplete { tag: "" },
            b's' => Backend::CommandComplete { tag: "(portal suspended)" },
            _ => match Backend::parse(frame) {
                Ok(message) => message,
                Err(error) => {
                    tracing::debug!(%error, "uninspectable server message");
                    return;
                }
            },
        };
        match message {
            Backend::CommandComplete { tag } => match self.pending.front_mut() {
                Some(front) if front.protocol == QueryProtocol::Simple => front.results.push(tag.to_owned()),
                Some(_) => {
                    if let Some(mut front) = self.pending.pop_front() {
                        front.results.push(tag.to_owned());
                        done.push(finish(front, true));
                    }
                }
                None => {}
            },
            Backend::Error(fields) => match self.pending.front_mut() {
                Some(front) if front.protocol == QueryProtocol::Simple => front.error = Some((&fields).into()),
                Some(_) => {
                    if let Some(mut front) = self.pending.pop_front() {
                        front.error = Some((&fields).into());
                        done.push(finish(front, true));
                    }
                }
                None => {}
            },
            Backend::ReadyForQuery { .. } => {
                if self.pending.front().is_some_and(|p| p.protocol == QueryProtocol::Simple) {
                    if let Some(front) = self.pending.pop_front() {
                        done.push(finish(front, true));
                    }
                } else {
                    // Executes queued before the Sync that an error made the server skip.
                    while self.pending.front().is_some_and(|p| p.protocol == QueryProtocol::Extended) {
                        if let Some(skipped) = self.pending.pop_front() {
                            done.push(finish(skipped, false));
                        }
                    }
                }
            }
            Backend::KeyData { .. } | Backend::ParameterStatus { .. } | Backend::Other => {}
        }
    }

    /// Statements still open when the session ends.
    pub fn unfinished(&mut self) -> Vec<StatementRecord> {
        self.pending.drain(..).map(|p| finish(p, false)).collect()
    }

    fn push(&mut self, protocol: QueryProtocol, sql: Sql) -> SentStatement {
        let sent = SentStatement { protocol, sql: Arc::clone(&sql.text) };
        self.pending.push_back(Pending { protocol, sql, results: Vec::new(), error: None, sent: Instant::now() });
        sent
    }
}

fn remember(map: &mut HashMap<String, Sql>, name: &str, sql: Sql) {
    // Most clients reuse a few names (the unnamed portal above all): replace in place.
    if let Some(known) = map.get_mut(name) {
        *known = sql;
        return;
    }
    if map.len() >= MAX_REMEMBERED {
        // A client that never closes statements must not grow us without bound.
        map.clear();
    }
    map.insert(name.to_owned(), sql);
}

fn clean(sql: &str) -> Sql {
    let (redacted, secrets) = redact::sql_with_findings(sql.trim());
    // Bytes are at least as many as characters: only long text can need a cut.
    let cut = if redacted.len() > MAX_SQL_CHARS { redacted.char_indices().nth(MAX_SQL_CHARS) } else { None };
    let text = match cut {
        Some((cut, _)) => format!("{}… ({} bytes)", &redacted[..cut], redacted.len()).into(),
        None => Arc::from(&*redacted),
    };
    Sql { text, secrets }
}

fn finish(pending: Pending, executed: bool) -> StatementRecord {
    StatementRecord {
        protocol: pending.protocol,
        sql: pending.sql.text,
        secrets: pending.sql.secrets,
        masked: Vec::new(),
        results: pending.results,
        error: pending.error,
        executed,
        duration_us: pending.sent.elapsed().as_micros() as u64,
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut as _, Bytes, BytesMut};

    use super::*;

    fn frame(tag: u8, parts: &[&[u8]]) -> Frame {
        let mut body = BytesMut::new();
        for part in parts {
            body.put_slice(part);
        }
        Frame { tag, body: body.freeze() }
    }

    /// What `server_sent` finished with this frame.
    fn sent(t: &mut StatementTracker, frame: &Frame) -> Vec<StatementRecord> {
        let mut done = Vec::new();
        t.server_sent(frame, &mut done);
        done
    }

    fn query(sql: &str) -> Frame {
        frame(b'Q', &[sql.as_bytes(), b"\0"])
    }
    fn complete(tag: &str) -> Frame {
        frame(b'C', &[tag.as_bytes(), b"\0"])
    }
    fn ready() -> Frame {
        frame(b'Z', &[b"I"])
    }
    fn error(code: &str) -> Frame {
        ErrorFields::fatal(code, "boom", None).to_error_frame()
    }

    #[test]
    fn simple_query_with_two_statements_is_one_record() {
        let mut t = StatementTracker::default();
        t.client_sent(&query("insert into t values (1); select * from t"), ClientEncoding::Utf8);
        assert!(sent(&mut t, &complete("INSERT 0 1")).is_empty());
        assert!(sent(&mut t, &complete("SELECT 1")).is_empty());
        let done = sent(&mut t, &ready());
        assert_eq!(done.len(), 1);
        assert_eq!(&*done[0].sql, "insert into t values (1); select * from t");
        assert_eq!(done[0].results, ["INSERT 0 1", "SELECT 1"]);
        assert_eq!((done[0].protocol, done[0].executed, done[0].error.as_ref()), (QueryProtocol::Simple, true, None));
    }

    #[test]
    fn pipelined_extended_protocol_pairs_in_order_and_marks_skipped() {
        let mut t = StatementTracker::default();
        t.client_sent(&frame(b'P', &[b"s1\0select $1\0", &[0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'B', &[b"\0s1\0", &[0, 0, 0, 0, 0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'E', &[b"\0", &[0, 0, 0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'P', &[b"\0delete from t\0", &[0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'B', &[b"p2\0\0", &[0, 0, 0, 0, 0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'E', &[b"p2\0", &[0, 0, 0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'E', &[b"p2\0", &[0, 0, 0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'S', &[]), ClientEncoding::Utf8);
        let first = sent(&mut t, &complete("SELECT 1"));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].sql.as_ref(), first[0].protocol), ("select $1", QueryProtocol::Extended));
        let failed = sent(&mut t, &error("42501"));
        assert_eq!(&*failed[0].sql, "delete from t");
        assert_eq!(failed[0].error.as_ref().unwrap().sqlstate, "42501");
        let skipped = sent(&mut t, &ready());
        assert_eq!(skipped.len(), 1);
        assert!(!skipped[0].executed);
        assert!(t.unfinished().is_empty());
    }

    #[test]
    fn frames_it_does_not_follow_change_nothing() {
        for tag in (0..=u8::MAX).filter(|tag| !StatementTracker::follows(*tag)) {
            let mut t = StatementTracker::default();
            t.client_sent(&query("select 1"), ClientEncoding::Utf8);
            // A body each followed type would take for its own.
            for body in [&b"SELECT 1\0"[..], b"I", b"SCODE\0C42501\0Mboom\0\0", b""] {
                assert!(sent(&mut t, &frame(tag, &[body])).is_empty(), "tag {tag}");
            }
            sent(&mut t, &complete("SELECT 1"));
            let done = sent(&mut t, &ready());
            assert_eq!((done[0].results.as_slice(), done[0].error.as_ref()), (&["SELECT 1".to_owned()][..], None));
        }
    }

    #[test]
    fn secrets_in_statements_are_redacted() {
        let mut t = StatementTracker::default();
        t.client_sent(&query("ALTER ROLE app PASSWORD 'hunter2'"), ClientEncoding::Utf8);
        sent(&mut t, &complete("ALTER ROLE"));
        let done = sent(&mut t, &ready());
        assert!(!done[0].sql.contains("hunter2"), "{}", done[0].sql);
    }

    #[test]
    fn unknown_names_and_garbage_do_not_panic() {
        let mut t = StatementTracker::default();
        t.client_sent(&frame(b'E', &[b"nope\0", &[0, 0, 0, 0]]), ClientEncoding::Utf8);
        t.client_sent(&frame(b'Q', &[b"unterminated"]), ClientEncoding::Utf8);
        t.client_sent(&Frame { tag: b'B', body: Bytes::from_static(b"\0") }, ClientEncoding::Utf8);
        sent(&mut t, &Frame { tag: b'C', body: Bytes::new() });
        let done = sent(&mut t, &complete("SELECT 0"));
        assert_eq!(&*done[0].sql, "<portal \"nope\">");
        t.client_sent_large(b'Q', 100_000_000);
        assert_eq!(&*t.unfinished()[0].sql, "<100000000-byte query, too large to inspect>");
    }
}
