//! One writer of statement records for every PostgreSQL session, and of
//! request records for every HTTP session ([`StatementLog::record_event`]).
//!
//! On guarded targets a statement is recorded before it is sent: the
//! relay hands [`SentStatement`]s over, wakes the writer, and forwards the
//! statement only once they are written (`write(2)` done, so a crash of the
//! agent cannot lose them; `fsync` per the audit log's setting).
//!
//! Sessions hand finished statements over and go on relaying; the writer
//! takes whatever has queued up, from all sessions, and appends it to the
//! audit log in one write. Under load that is one write for many
//! statements instead of one each, and the relay never waits for the disk
//! between queries. The writer has a thread of its own: encoding, hashing
//! and writing records run beside the relay rather than between its
//! polls. Each session's records stay in its own order. If the
//! log cannot be written, every session's next hand-over fails and the
//! session ends: nothing runs on unrecorded.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::{mpsc, oneshot};

use super::{
    ProxyError,
    statements::{QueryProtocol, StatementRecord},
};
use crate::{
    audit::{AuditLog, SessionContext},
    proxy::https::RequestRecord,
};

/// The writer's thread name (what `ps -L` and `/proc/PID/task/*/comm` show).
pub const THREAD_NAME: &str = "airlock-records";

/// Most hand-overs taken in one write.
const BATCH: usize = 512;
/// After the first record of a batch, the writer waits this long for more.
/// Every batch costs a write and a sleep, whatever its size. With one
/// pgbench client, batches of 1 ms (about 12 statements) cost the writer
/// 1.3 µs of kernel time per statement; batches of 5 ms cost 0.5 µs. A
/// record reaches the disk this much later; a session's end still waits
/// for its records.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// A statement about to be sent to the server, recorded first.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub struct SentStatement {
    /// Sub-protocol.
    pub protocol: QueryProtocol,
    /// SQL text, secrets redacted.
    pub sql: Arc<str>,
}

enum Item {
    Records(Arc<SessionContext>, Vec<StatementRecord>),
    /// An HTTP request's record, written like finished statements.
    Request(Arc<SessionContext>, Box<RequestRecord>),
    /// One record of another kind (an exec recording), written like finished statements.
    Event(Arc<SessionContext>, &'static str, serde_json::Value),
    /// Written at once; answered once written.
    Sent(Arc<SessionContext>, Vec<SentStatement>, oneshot::Sender<()>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The sessions' end of the statement log.
#[derive(Clone)]
pub struct StatementLog {
    queue: mpsc::UnboundedSender<Item>,
    failed: Arc<AtomicBool>,
    /// The writer's thread, to wake it from its linger for statements
    /// waiting to be sent.
    writer: Arc<OnceLock<std::thread::Thread>>,
}

/// The writing end; start it with [`StatementWriter::spawn`].
pub struct StatementWriter {
    audit: Arc<AuditLog>,
    items: mpsc::UnboundedReceiver<Item>,
    failed: Arc<AtomicBool>,
    thread: Arc<OnceLock<std::thread::Thread>>,
}

impl StatementLog {
    /// A log writing to `audit`, and the writer to run.
    pub fn new(audit: Arc<AuditLog>) -> (Self, StatementWriter) {
        let (queue, items) = mpsc::unbounded_channel();
        let failed = Arc::new(AtomicBool::new(false));
        let thread = Arc::new(OnceLock::new());
        let log = Self { queue, failed: Arc::clone(&failed), writer: Arc::clone(&thread) };
        (log, StatementWriter { audit, items, failed, thread })
    }

    /// Records statements about to be sent, and waits until they are
    /// written: the caller sends them only then.
    pub async fn record_sent(
        &self,
        session: &Arc<SessionContext>,
        statements: Vec<SentStatement>,
    ) -> Result<(), ProxyError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(ProxyError::AuditLost);
        }
        let (done, written) = oneshot::channel();
        self.queue.send(Item::Sent(Arc::clone(session), statements, done)).map_err(|_| ProxyError::AuditLost)?;
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
        written.await.map_err(|_| ProxyError::AuditLost)?;
        if self.failed.load(Ordering::SeqCst) { Err(ProxyError::AuditLost) } else { Ok(()) }
    }

    /// Hands finished statements over for writing.
    pub fn record(&self, session: &Arc<SessionContext>, batch: Vec<StatementRecord>) -> Result<(), ProxyError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(ProxyError::AuditLost);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let metrics = crate::metrics::global();
        for masked in batch.iter().flat_map(|record| &record.masked) {
            metrics.masked(&masked.by, masked.count);
        }
        self.queue.send(Item::Records(Arc::clone(session), batch)).map_err(|_| ProxyError::AuditLost)
    }

    /// Hands an HTTP request's record over for writing.
    pub(crate) fn record_request(
        &self,
        session: &Arc<SessionContext>,
        record: RequestRecord,
    ) -> Result<(), ProxyError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(ProxyError::AuditLost);
        }
        let item = Item::Request(Arc::clone(session), Box::new(record));
        self.queue.send(item).map_err(|_| ProxyError::AuditLost)
    }

    /// Hands one record of `kind` over for writing (an exec recording's).
    pub fn record_event(
        &self,
        session: &Arc<SessionContext>,
        kind: &'static str,
        detail: serde_json::Value,
    ) -> Result<(), ProxyError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(ProxyError::AuditLost);
        }
        self.queue.send(Item::Event(Arc::clone(session), kind, detail)).map_err(|_| ProxyError::AuditLost)
    }

    /// Whether records can no longer be written (sessions must end).
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until everything handed over so far is written.
    pub async fn flush(&self) -> Result<(), ProxyError> {
        let (done, written) = oneshot::channel();
        self.queue.send(Item::Flush(done)).map_err(|_| ProxyError::AuditLost)?;
        written.await.map_err(|_| ProxyError::AuditLost)?;
        if self.failed.load(Ordering::SeqCst) { Err(ProxyError::AuditLost) } else { Ok(()) }
    }
}

impl StatementWriter {
    /// Starts the writer on a thread of its own; it writes until every
    /// [`StatementLog`] is dropped.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
            let _ = self.thread.set(std::thread::current());
            self.run()
        })
    }

    fn run(mut self) {
        let mut items = Vec::with_capacity(BATCH);
        // While records keep coming, the writer wakes on its own every
        // LINGER and takes what queued up; it waits on the queue (where
        // each hand-over would wake it, a system call in the relay) only
        // once the queue ran dry.
        // Statements waiting to be sent unpark it at once.
        let mut busy = false;
        // Records written since this thread last gave its free memory back,
        // and when it last did (at most once a second: a quiet session's
        // statements each leave the queue dry).
        let mut wrote = false;
        let mut collected = std::time::Instant::now();
        loop {
            if busy {
                std::thread::park_timeout(LINGER);
            } else {
                // Going idle after writing: this thread's heap (records are
                // built and encoded here) gives its free pages back, as the
                // event loop's does when sessions end.
                if wrote && collected.elapsed() >= std::time::Duration::from_secs(1) {
                    crate::daemon::release_free_memory();
                    (wrote, collected) = (false, std::time::Instant::now());
                }
                let Some(first) = self.items.blocking_recv() else { return };
                if matches!(first, Item::Records(..) | Item::Request(..) | Item::Event(..)) {
                    std::thread::park_timeout(LINGER);
                }
                items.push(first);
            }
            while items.len() < BATCH {
                match self.items.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            busy = !items.is_empty();
            let mut flushes = Vec::new();
            let mut records = Vec::new();
            for item in items.drain(..) {
                match item {
                    Item::Records(session, batch) => records.push((session, Batch::Finished(batch))),
                    Item::Request(session, record) => records.push((session, Batch::Request(record))),
                    Item::Event(session, kind, detail) => records.push((session, Batch::Event(kind, detail))),
                    Item::Sent(session, batch, done) => {
                        records.push((session, Batch::Sent(batch)));
                        flushes.push(done);
                    }
                    Item::Flush(done) => flushes.push(done),
                }
            }
            wrote |= !records.is_empty();
            if !records.is_empty()
                && !self.failed.load(Ordering::SeqCst)
                && let Err(error) = self.write(&records)
            {
                tracing::error!(%error, "statement records could not be written; sessions will end");
                self.failed.store(true, Ordering::SeqCst);
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    fn write(&self, records: &[(Arc<SessionContext>, Batch)]) -> Result<(), crate::audit::AuditError> {
        let events = records.iter().flat_map(|(session, batch)| {
            let (finished, sent, event) = match batch {
                Batch::Finished(finished) => (&finished[..], &[][..], None),
                Batch::Sent(sent) => (&[][..], &sent[..], None),
                Batch::Request(record) => (&[][..], &[][..], Some(("http.request", Detail::Request(record)))),
                Batch::Event(kind, detail) => (&[][..], &[][..], Some((*kind, Detail::Event(detail)))),
            };
            let sent = sent.iter().map(|statement| ("postgres.statement_sent", Detail::Sent(statement)));
            let finished = finished.iter().flat_map(|statement| {
                // The statement itself is stored redacted; `secret.detected` says a secret travelled.
                let secret = (!statement.secrets.is_empty()).then_some((
                    "secret.detected",
                    Detail::Secret { kinds: &statement.secrets, sql: &statement.sql, r#where: "statement" },
                ));
                std::iter::once(("postgres.statement", Detail::Statement(statement))).chain(secret)
            });
            sent.chain(finished).chain(event).map(move |(kind, detail)| (&**session, kind, detail))
        });
        self.audit.append_in_sessions(events).map(drop)
    }
}

/// One hand-over's records.
enum Batch {
    Finished(Vec<StatementRecord>),
    Sent(Vec<SentStatement>),
    Request(Box<RequestRecord>),
    Event(&'static str, serde_json::Value),
}

/// A record's detail, serialized straight from the statement: no
/// intermediate `serde_json::Value` per statement.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Detail<'a> {
    Statement(&'a StatementRecord),
    Sent(&'a SentStatement),
    Secret { kinds: &'a crate::redact::Secrets, sql: &'a str, r#where: &'static str },
    Request(&'a RequestRecord),
    Event(&'a serde_json::Value),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{audit::TargetRef, identity::Identity, proxy::postgres::statements::QueryProtocol};

    /// Alice's session `id` on a PostgreSQL target.
    fn session(id: &str) -> Arc<SessionContext> {
        let identity = Identity::unix("alice", 1000, vec![]);
        let target = TargetRef { name: "db".into(), protocol: "postgres".into(), addr: "10.0.0.1".into(), port: 5432 };
        Arc::new(SessionContext::new(id, &identity, &target).unwrap())
    }

    fn statement(n: usize) -> StatementRecord {
        StatementRecord {
            protocol: QueryProtocol::Simple,
            sql: format!("SELECT {n}").into(),
            secrets: Default::default(),
            results: vec!["SELECT 1".into()],
            error: None,
            masked: Vec::new(),
            executed: true,
            duration_us: 1,
        }
    }

    #[test]
    fn records_reach_the_log_in_order_through_busy_and_idle_spells() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(AuditLog::open(dir.path()).unwrap());
        let (log, writer) = StatementLog::new(Arc::clone(&audit));
        let thread = writer.spawn().unwrap();
        let sessions: Vec<Arc<SessionContext>> = (0..2).map(|n| session(&format!("s{n}"))).collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut sent = 0;
        // Bursts closer together than LINGER (the writer stays awake), and
        // gaps longer (it waits on the queue again).
        for pause_ms in [0, 1, 20, 0, 30, 2] {
            for _ in 0..5 {
                log.record(&sessions[(sent / 2) % 2], vec![statement(sent), statement(sent + 1)]).unwrap();
                sent += 2;
            }
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        }
        runtime.block_on(log.flush()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(crate::audit::LOG_FILE)).unwrap();
        let written: Vec<(String, String)> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|record| record["kind"] == "postgres.statement")
            .map(|record| {
                (record["session"].as_str().unwrap().to_owned(), record["detail"]["sql"].as_str().unwrap().to_owned())
            })
            .collect();
        let expected: Vec<(String, String)> =
            (0..sent).map(|n| (format!("s{}", (n / 2) % 2), format!("SELECT {n}"))).collect();
        assert_eq!(written, expected);
        drop(log);
        thread.join().unwrap();
    }

    #[test]
    fn statements_to_be_sent_are_written_before_the_call_returns() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Arc::new(AuditLog::open(dir.path()).unwrap());
        let (log, writer) = StatementLog::new(Arc::clone(&audit));
        let thread = writer.spawn().unwrap();
        let session = session("s1");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Finished records keep the writer lingering; one to be sent wakes it.
        log.record(&session, vec![statement(0)]).unwrap();
        let started = std::time::Instant::now();
        let sent = SentStatement { protocol: QueryProtocol::Simple, sql: "DELETE FROM t WHERE id = 1".into() };
        runtime.block_on(log.record_sent(&session, vec![sent])).unwrap();
        let waited = started.elapsed();
        let text = std::fs::read_to_string(dir.path().join(crate::audit::LOG_FILE)).unwrap();
        let kinds: Vec<String> = text
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["postgres.statement", "postgres.statement_sent"], "in order, before the call returned");
        assert!(waited < LINGER * 20, "woken, not lingering: {waited:?}");
        drop(log);
        thread.join().unwrap();
    }
}
