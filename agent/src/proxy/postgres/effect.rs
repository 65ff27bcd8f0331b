//! The guard by effect: a write whose reach a rule limits runs inside a
//! savepoint (in a transaction of its own when the client is in none), the
//! server's CommandComplete says how many rows it changed, and the table's
//! rows are counted when a share of them is limited. Within the limit the
//! write is kept (RELEASE, or COMMIT) and the client gets its replies as if
//! nothing had come in between; over it, the write is rolled back to the
//! savepoint, which leaves the client's own transaction as it was, and the
//! guard holds or refuses it as the rule says. Approved, it runs for real.
//!
//! The server's replies to what Airlock sends here never reach the client:
//! the relay's server side hands them over ([`Diversion`]) while an
//! exchange is under way. Nothing else is in flight then: a measurement
//! starts only once the server has answered all the client sent before.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use tokio::{
    io::{AsyncWrite, AsyncWriteExt as _},
    sync::{oneshot, watch},
};

use super::{
    ProxyError,
    codec::{Backend, Frame, Frontend},
    reading::SessionReading,
};
use crate::{
    credentials::quote_ident,
    guardrails::{Effect, EffectLimit, WriteCommand},
};

/// Replies kept while a write is measured. Beyond this the write's rows
/// are not kept, and it is held as if over its limit: approved, it runs
/// again and its rows reach the client then.
const MAX_HELD_BYTES: usize = 8 << 20;

/// The savepoint a measured write runs under, inside a client's transaction.
const SAVEPOINT: &str = "airlock_effect_guard";

/// Replies the relay's server side hands over instead of relaying them.
#[derive(Default)]
pub struct Diversion {
    /// Read for every frame; the lock is taken only during an exchange.
    active: AtomicBool,
    state: Mutex<Diverting>,
}

#[derive(Default)]
struct Diverting {
    exchange: Option<Divert>,
    /// The server side has stopped: no reply will come.
    ended: bool,
}

struct Divert {
    replies: Replies,
    /// ReadyForQuery messages still to come.
    ready_left: usize,
    done: oneshot::Sender<Replies>,
}

/// The server's replies to an exchange, up to its last ReadyForQuery.
#[derive(Debug, Default)]
struct Replies {
    frames: Vec<Frame>,
    bytes: usize,
    /// Rows were left out (over [`MAX_HELD_BYTES`]).
    overflowed: bool,
}

impl Diversion {
    /// Takes `frame` if an exchange is under way; then it is not for the client.
    #[inline]
    pub fn take(&self, frame: &Frame) -> bool {
        self.active.load(Ordering::Acquire) && self.take_diverted(frame)
    }

    fn take_diverted(&self, frame: &Frame) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(divert) = state.exchange.as_mut() else { return false };
        let replies = &mut divert.replies;
        if frame.tag == b'D' && replies.bytes + frame.body.len() > MAX_HELD_BYTES {
            replies.overflowed = true;
        } else {
            replies.bytes += frame.body.len();
            replies.frames.push(frame.clone());
        }
        if frame.tag == b'Z' {
            divert.ready_left -= 1;
            if divert.ready_left == 0
                && let Some(divert) = state.exchange.take()
            {
                self.active.store(false, Ordering::Release);
                let _ = divert.done.send(divert.replies);
            }
        }
        true
    }
}

/// Ends a diversion when the relay's server side stops: dropped, it drops
/// an exchange still waiting, whose measurement then fails instead of
/// waiting for replies that will never come.
pub struct DiversionEnd<'a>(&'a Diversion);

impl Drop for DiversionEnd<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        self.0.active.store(false, Ordering::Release);
        state.exchange = None;
        state.ended = true;
    }
}

impl Diversion {
    /// For the server side to hold while it reads: see [`DiversionEnd`].
    pub fn end_on_drop(&self) -> DiversionEnd<'_> {
        DiversionEnd(self)
    }
}

/// What the relay's client side needs to measure writes.
pub struct Effects<'a> {
    /// Shared with the server side.
    pub diversion: &'a Diversion,
    /// The session's reading: what is in flight and the transaction status.
    pub reading: &'a Mutex<SessionReading>,
    /// Changes whenever the server side has seen a ReadyForQuery.
    pub answered: watch::Receiver<()>,
}

/// The outcome of measuring a write.
#[derive(Debug)]
pub enum Measured {
    /// It ran and was kept: these replies are the client's.
    Kept(Vec<Frame>),
    /// It was not run: the client's transaction has failed, so the server
    /// will refuse it anyway; forward it as it is.
    NotRun,
    /// Over the limit, or it could not be told: rolled back, and why.
    Over(String),
}

impl Effects<'_> {
    /// Runs `unit` (a Query, or an extended-protocol batch of one Execute
    /// through its Sync) whose write is `effect`, within `limit`.
    pub async fn measure<W: AsyncWrite + Unpin>(
        &mut self,
        upstream: &mut W,
        unit: &[Frame],
        effect: &Effect,
        limit: EffectLimit,
    ) -> Result<Measured, ProxyError> {
        let savepoint = format!("SAVEPOINT {SAVEPOINT}");
        let release = format!("RELEASE SAVEPOINT {SAVEPOINT}");
        let rollback_to = format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}");
        let (open, keep, undo): (&str, &[&str], &[&str]) = match self.idle().await? {
            b'I' => ("BEGIN", &["COMMIT"], &["ROLLBACK"]),
            b'T' => (&savepoint, &[&release], &[&rollback_to, &release]),
            _ => return Ok(Measured::NotRun),
        };
        let in_block = open != "BEGIN";
        let mut sent = commands(&[open]);
        sent.extend_from_slice(unit);
        let mut replies = self.exchange(upstream, &sent).await?;
        let opened = replies.frames.iter().position(|f| f.tag == b'Z').map_or(0, |z| z + 1);
        let mut ran: Vec<Frame> = replies.frames.split_off(opened);
        if let Some(error) = replies.frames.iter().find(|f| f.tag == b'E') {
            // The savepoint failed, so the client's transaction has, and the
            // write with it: the client hears why.
            ran.insert(0, error.clone());
            return Ok(Measured::Kept(ran));
        }
        if ran.iter().any(|f| f.tag == b'E') {
            if in_block {
                return Ok(Measured::Kept(ran));
            }
            let rolled_back = self.exchange(upstream, &commands(undo)).await?;
            return Ok(Measured::Kept(settled(ran, rolled_back.frames)));
        }
        let over = match changed(&ran) {
            _ if replies.overflowed => Some(format!(
                "its result is larger than Airlock holds while it measures a write ({} MiB)",
                MAX_HELD_BYTES >> 20
            )),
            Changed::Untold => Some("the server did not say how many rows it changed".to_owned()),
            // A statement name used again after DEALLOCATE: what ran was no write.
            Changed::NotAWrite => None,
            Changed::Rows(rows) => match over_rows(effect, limit, rows) {
                Some(over) => Some(over),
                None => self.over_share(upstream, effect, limit, rows).await?,
            },
        };
        if let Some(why) = over {
            // A prepared statement outlives a rollback: the unit's own is
            // dropped, so that running the unit again once approved can
            // prepare it again.
            let mut undone: Vec<String> = undo.iter().map(|sql| (*sql).to_owned()).collect();
            undone.extend(prepared_names(unit).map(|name| format!("DEALLOCATE {}", quote_ident(&name))));
            let undone: Vec<&str> = undone.iter().map(String::as_str).collect();
            self.exchange(upstream, &commands(&undone)).await?;
            return Ok(Measured::Over(why));
        }
        let kept = self.exchange(upstream, &commands(keep)).await?;
        Ok(Measured::Kept(settled(ran, kept.frames)))
    }

    /// Whether the rows changed are too large a share of the table.
    async fn over_share<W: AsyncWrite + Unpin>(
        &mut self,
        upstream: &mut W,
        effect: &Effect,
        limit: EffectLimit,
        rows: u64,
    ) -> Result<Option<String>, ProxyError> {
        let Some(fraction) = limit.max_fraction else { return Ok(None) };
        if rows == 0 || effect.command == WriteCommand::Insert {
            return Ok(None);
        }
        // Within the limit, the table had at least rows / fraction rows:
        // counting that many (and the rows the write took away) is enough.
        let enough = (rows as f64 / fraction).ceil() as u64;
        let cap = enough.saturating_add(rows);
        let count = format!("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {cap}) AS airlock_rows", effect.table);
        let counted = self.exchange(upstream, &commands(&[&count])).await?;
        let Some(after) = first_number(&counted.frames) else {
            let reason = counted
                .frames
                .iter()
                .find_map(|f| match Backend::parse(f) {
                    Ok(Backend::Error(error)) => error.get(b'M').map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_else(|| "no count came back".into());
            return Ok(Some(format!("the rows of {} could not be counted: {reason}", effect.table_name)));
        };
        // The table before the write; for MERGE, which may have inserted
        // every row it changed, the fewest it can have had.
        let before = match effect.command {
            WriteCommand::Delete => after.saturating_add(rows),
            WriteCommand::Update => after,
            WriteCommand::Merge | WriteCommand::Insert => after.saturating_sub(rows),
        };
        if (before as f64) * fraction >= rows as f64 {
            return Ok(None);
        }
        let at_least = if after >= cap { "at least " } else { "" };
        Ok(Some(format!(
            "{} changed {rows} of the {at_least}{before} rows of {}, over the limit of {}% of the table",
            effect.command.as_str(),
            effect.table_name,
            fraction * 100.0
        )))
    }

    /// The transaction status once the server has answered all sent to it.
    async fn idle(&mut self) -> Result<u8, ProxyError> {
        loop {
            self.answered.borrow_and_update();
            if let Some(status) = self.reading.lock().unwrap_or_else(|p| p.into_inner()).idle() {
                return Ok(status);
            }
            self.answered.changed().await.map_err(|_| server_gone())?;
        }
    }

    /// Sends `frames` and waits for the server's replies to them all (up
    /// to the ReadyForQuery of the last Query or Sync).
    async fn exchange<W: AsyncWrite + Unpin>(
        &mut self,
        upstream: &mut W,
        frames: &[Frame],
    ) -> Result<Replies, ProxyError> {
        let (done, replies) = oneshot::channel();
        let ready_left = frames.iter().filter(|f| matches!(f.tag, b'Q' | b'S')).count();
        let divert = Divert { replies: Replies::default(), ready_left, done };
        {
            let mut state = self.diversion.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.ended {
                return Err(server_gone());
            }
            state.exchange = Some(divert);
            self.diversion.active.store(true, Ordering::Release);
        }
        let mut wire = Vec::new();
        for frame in frames {
            frame.encode(&mut wire);
            self.reading.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame.tag, false);
        }
        upstream.write_all(&wire).await?;
        upstream.flush().await?;
        replies.await.map_err(|_| server_gone())
    }
}

fn server_gone() -> ProxyError {
    ProxyError::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server closed the session"))
}

/// Rows over `max_rows`, in words; `None` within it.
fn over_rows(effect: &Effect, limit: EffectLimit, rows: u64) -> Option<String> {
    let max = limit.max_rows?;
    (rows > max).then(|| {
        format!(
            "{} changed {rows} rows of {}, over the limit of {max} rows",
            effect.command.as_str(),
            effect.table_name
        )
    })
}

/// Airlock's own statements, as the extended protocol runs them under a
/// name of their own, then one Sync: a simple Query would drop the
/// client's unnamed prepared statement and portal.
fn commands(sqls: &[&str]) -> Vec<Frame> {
    let name = format!("{SAVEPOINT}\0");
    let mut frames = Vec::with_capacity(sqls.len() * 5 + 1);
    for sql in sqls {
        frames.push(frame(b'P', &[name.as_bytes(), sql.as_bytes(), b"\0\0\0"]));
        frames.push(frame(b'B', &[name.as_bytes(), name.as_bytes(), b"\0\0\0\0\0\0"]));
        frames.push(frame(b'E', &[name.as_bytes(), b"\0\0\0\0"]));
        frames.push(frame(b'C', &[b"P", name.as_bytes()]));
        frames.push(frame(b'C', &[b"S", name.as_bytes()]));
    }
    frames.push(frame(b'S', &[]));
    frames
}

fn frame(tag: u8, parts: &[&[u8]]) -> Frame {
    Frame { tag, body: parts.concat().into() }
}

/// Names of statements `unit` prepares (not the unnamed one).
fn prepared_names(unit: &[Frame]) -> impl Iterator<Item = String> + '_ {
    unit.iter().filter_map(|frame| match Frontend::parse(frame) {
        Ok(Frontend::Parse { statement, .. }) if !statement.is_empty() => {
            Some(String::from_utf8_lossy(statement).into_owned())
        }
        _ => None,
    })
}

/// The write's replies with the transaction's end in place of its own
/// ReadyForQuery; of the replies to Airlock's own statements only what the
/// client must hear (errors, notices, notifications, settings) and the
/// last ReadyForQuery. A COMMIT that fails (a deferred constraint) takes
/// the place of the write's completion, as it would have in autocommit.
fn settled(mut ran: Vec<Frame>, ended: Vec<Frame>) -> Vec<Frame> {
    let failed = ended.iter().any(|f| f.tag == b'E');
    ran.retain(|f| f.tag != b'Z' && !(failed && f.tag == b'C'));
    ran.extend(ended.into_iter().filter(|f| matches!(f.tag, b'E' | b'N' | b'A' | b'S' | b'Z')));
    ran
}

/// What the last CommandComplete says a statement changed.
#[derive(Debug, PartialEq, Eq)]
enum Changed {
    /// A write, and its rows (`UPDATE 5`, `INSERT 0 5`).
    Rows(u64),
    /// Another command.
    NotAWrite,
    /// No CommandComplete, or one that does not read.
    Untold,
}

fn changed(replies: &[Frame]) -> Changed {
    let Some(complete) = replies.iter().rev().find(|f| f.tag == b'C') else { return Changed::Untold };
    let Ok(Backend::CommandComplete { tag }) = Backend::parse(complete) else { return Changed::Untold };
    let mut words = tag.split(' ');
    if !matches!(words.next(), Some("INSERT" | "UPDATE" | "DELETE" | "MERGE")) {
        return Changed::NotAWrite;
    }
    words.next_back().and_then(|rows| rows.parse().ok()).map_or(Changed::Untold, Changed::Rows)
}

/// The first column of the first DataRow, as a number.
fn first_number(replies: &[Frame]) -> Option<u64> {
    let row = replies.iter().find(|f| f.tag == b'D')?;
    let body = &row.body[..];
    let len = usize::try_from(i32::from_be_bytes(body.get(2..6)?.try_into().ok()?)).ok()?;
    std::str::from_utf8(body.get(6..6 + len)?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame { tag, body: Bytes::copy_from_slice(body) }
    }

    fn complete(tag: &str) -> Frame {
        frame(b'C', format!("{tag}\0").as_bytes())
    }

    #[test]
    fn counts_come_from_command_tags_and_rows() {
        assert_eq!(changed(&[complete("INSERT 0 7"), frame(b'Z', b"T")]), Changed::Rows(7));
        assert_eq!(changed(&[complete("DELETE 12")]), Changed::Rows(12));
        assert_eq!(changed(&[complete("SELECT 3")]), Changed::NotAWrite);
        assert_eq!(changed(&[complete("UPDATE")]), Changed::Untold);
        assert_eq!(changed(&[frame(b'Z', b"T")]), Changed::Untold);
        let row = frame(b'D', &[0, 1, 0, 0, 0, 3, b'4', b'2', b'0']);
        assert_eq!(first_number(&[frame(b'T', b""), row]), Some(420));
        assert_eq!(first_number(&[frame(b'D', &[0, 1, 255, 255, 255, 255])]), None, "NULL");
        assert_eq!(first_number(&[frame(b'D', &[0, 1, 0, 0])]), None, "truncated");
    }

    #[test]
    fn the_transactions_end_replaces_the_writes_ready_for_query() {
        let ran = vec![frame(b'D', b"x"), complete("UPDATE 1"), frame(b'Z', b"T")];
        let kept = settled(
            ran.clone(),
            vec![frame(b'1', b""), frame(b'2', b""), complete("COMMIT"), frame(b'3', b""), frame(b'Z', b"I")],
        );
        assert_eq!(kept.iter().map(|f| f.tag).collect::<Vec<_>>(), b"DCZ");
        assert_eq!(kept[2].body.as_ref(), b"I");
        let failed = settled(ran, vec![frame(b'E', b"Sx\0"), frame(b'Z', b"I")]);
        assert_eq!(failed.iter().map(|f| f.tag).collect::<Vec<_>>(), b"DEZ");
    }

    #[tokio::test]
    async fn diverted_replies_end_at_the_last_ready_for_query() {
        let diversion = Diversion::default();
        assert!(!diversion.take(&frame(b'D', b"")), "nothing diverted outside an exchange");
        let (done, replies) = oneshot::channel();
        diversion.state.lock().unwrap().exchange = Some(Divert { replies: Replies::default(), ready_left: 2, done });
        diversion.active.store(true, Ordering::Release);
        for tag in [b'C', b'Z', b'D', b'C', b'Z'] {
            assert!(diversion.take(&frame(tag, b"")));
        }
        assert!(!diversion.take(&frame(b'N', b"")), "over once the last ReadyForQuery came");
        let replies = replies.await.unwrap();
        assert_eq!(replies.frames.len(), 5);
        assert!(!replies.overflowed);

        // Once the server side has stopped, a waiting exchange fails.
        let (done, waiting) = oneshot::channel();
        diversion.state.lock().unwrap().exchange = Some(Divert { replies: Replies::default(), ready_left: 1, done });
        drop(diversion.end_on_drop());
        assert!(waiting.await.is_err());
        assert!(diversion.state.lock().unwrap().ended);
    }
}
