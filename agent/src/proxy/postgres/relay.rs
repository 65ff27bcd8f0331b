//! The session proper: frames relayed both ways in batches, through the
//! guard, the masker and the statement tracker, with Airlock's own cancel
//! key in place of the server's.

use std::{
    ops::Range,
    sync::{Arc, Mutex, atomic::Ordering},
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt as _},
    sync::{mpsc, watch},
};

use super::{
    ProxyError, Shared,
    cancel::{BackendKey, CancelKeys},
    codec::{self, Frame},
    effect::{self, Effects, Measured},
    guard::{Decision, Guard, Hold, Screened, Screening},
    mask, reading,
    recorder::{SentStatement, StatementLog},
    statements::StatementTracker,
    stream::{Batch, FrameReader, Incoming, Splice},
    tls::{self, Stream},
};
use crate::{audit::SessionContext, daemon::sessions::LiveSession};

/// Relays frames both ways until either side closes, recording statements.
/// Every write is flushed: a TLS stream (the client's, terminated here, or
/// the server's) may keep records its socket would not take yet, and
/// nothing else would push them out (a COPY cancelled under backpressure
/// left its error and ReadyForQuery in rustls's buffer, the client waiting).
pub(super) async fn relay_messages(
    client: &mut Stream,
    upstream: &mut tls::Stream,
    server: std::net::SocketAddr,
    (client_reader, upstream_reader): (FrameReader, FrameReader),
    shared: &Shared<'_>,
    session: &LiveSession,
    mut masking: Option<mask::MaskLayer<'_>>,
) -> Result<(), ProxyError> {
    let client_view = std::sync::Mutex::new(mask::ClientView::default());
    let masks = masking.is_some();
    let recorder = shared.statements;
    let me = Arc::new(SessionContext::new(&session.id, &session.identity, &session.target)?);
    let issued = Mutex::new(Vec::new());
    let tracker = Mutex::new(StatementTracker::default());
    let session_reading = Mutex::new(reading::SessionReading::default());
    let guard = shared.guard.as_ref().map(|context| Guard::new(context, session, shared.audit));
    let (mut client_read, client_write) = tokio::io::split(client);
    // Both directions write to the client: replies, and notices of held statements.
    let client_write = tokio::sync::Mutex::new(client_write);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let diversion = effect::Diversion::default();
    let (answered, answered_seen) = watch::channel(());
    let (replays, mut replayed) = mpsc::unbounded_channel::<Vec<Frame>>();
    let sending = Sending { recorder, me: &me, session };
    // The client has said goodbye (Terminate) or closed its end.
    let client_done = std::sync::atomic::AtomicBool::new(false);
    let to_upstream = async {
        let mut effects = Effects { diversion: &diversion, reading: &session_reading, answered: answered_seen };
        let mut reader = client_reader;
        let mut out = Vec::new();
        // An extended-protocol batch is under way: messages since the last Sync went ahead.
        let mut extended_open = false;
        // Every layer notes a client frame: masking's view, the statement
        // tracker, the guard, and (`in_flight`: unless the frame waits to be
        // sent with a measured write) the session's reading.
        let note = |frame: &Frame, in_flight: bool| {
            if masks {
                client_view.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame)?;
            }
            let mut reading = session_reading.lock().unwrap_or_else(|p| p.into_inner());
            let now = reading.reading();
            let runs = tracker.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame, now.encoding);
            let (screening, may_change) = match &guard {
                Some(guard) => {
                    let (screening, may_change) = guard.screen(frame, now);
                    (Some((guard, screening)), may_change)
                }
                None => (None, false),
            };
            // A measured write is in flight once it is sent, savepoint first.
            if in_flight && !matches!(screening, Some((_, Screening::Measure(_)))) {
                reading.client_sent(frame.tag, may_change);
            }
            Ok::<_, ProxyError>((runs, screening, may_change))
        };
        loop {
            match reader.next(&mut client_read, "client").await? {
                None => {
                    client_done.store(true, Ordering::Relaxed);
                    upstream_write.shutdown().await?;
                    return Ok::<_, ProxyError>(());
                }
                Some(Incoming::Frames(Batch { frames, raw })) => {
                    let mut splice = Splice::new(&raw, &mut out);
                    // On guarded targets, what is about to run is recorded first.
                    let mut sent = Vec::new();
                    // Where the extended-protocol batch at hand began in this
                    // read, while nothing of it has been replaced: a measured
                    // Execute runs with it.
                    let mut unit_start = (!extended_open).then_some(0);
                    // Frames up to here went with a measured unit.
                    let mut skip_until = 0;
                    for (index, frame) in frames.iter().enumerate() {
                        if index < skip_until {
                            splice.replace(frame, |_| {});
                            continue;
                        }
                        if frame.tag == b'X' {
                            client_done.store(true, Ordering::Relaxed);
                        }
                        let (mut runs, screening, may_change) = note(frame, true)?;
                        // A write to measure runs with its unit; one that cannot be
                        // measured where it stands gets its rule's action instead.
                        let (screening, unit) = match screening {
                            Some((guard, Screening::Measure(measure))) => {
                                match measured_unit(&frames, index, unit_start, extended_open) {
                                    Ok(unit) => (Some((guard, Screening::Measure(measure))), unit),
                                    Err(why) => {
                                        // Sent as it stands after all: in flight like any frame.
                                        let mut reading = session_reading.lock().unwrap_or_else(|p| p.into_inner());
                                        reading.client_sent(frame.tag, may_change);
                                        drop(reading);
                                        (Some((guard, guard.unmeasured(frame, *measure, why).into())), 0..0)
                                    }
                                }
                            }
                            other => (other, 0..0),
                        };
                        let screened = match screening {
                            None => Screened::Forward,
                            Some((_, Screening::Done(screened))) => screened,
                            Some((guard, Screening::Held(hold))) => {
                                let before = splice.take_before();
                                send_now(&mut upstream_write, before, std::mem::take(&mut sent), &sending).await?;
                                // What was sent is no longer in the batch's bytes.
                                unit_start = None;
                                wait_for_approval(guard, *hold, &client_write).await?
                            }
                            Some((guard, Screening::Measure(measure))) => {
                                // What came before goes first (the server must have
                                // answered it), but for the unit's own first frames.
                                let mut before = splice.take_before();
                                // Kept as they came since `unit_start`, they end `before`.
                                let unit_bytes = wire_len(&frames[unit.start..index]);
                                debug_assert!(before.len() >= unit_bytes);
                                let mut prefix = before.split_off(before.len().saturating_sub(unit_bytes));
                                send_now(&mut upstream_write, before, std::mem::take(&mut sent), &sending).await?;
                                // It runs now, if only in a savepoint: its record comes first.
                                let mut records: Vec<_> = runs.take().into_iter().collect();
                                for later in &frames[index + 1..unit.end] {
                                    records.extend(note(later, false)?.0);
                                }
                                send_now(&mut upstream_write, Vec::new(), records, &sending).await?;
                                let limit = measure.limited.limit;
                                let measured = effects
                                    .measure(&mut upstream_write, &frames[unit.clone()], &measure.effect, limit)
                                    .await?;
                                skip_until = unit.end;
                                let screened = match measured {
                                    Measured::Kept(replies) => {
                                        // The server side relays them as if they had just come.
                                        let _ = replays.send(replies);
                                        None
                                    }
                                    Measured::NotRun => Some(Screened::Forward),
                                    Measured::Over(why) => Some(match guard.over_limit(frame, *measure, &why) {
                                        Decision::Done(screened) => screened,
                                        Decision::Held(hold) => wait_for_approval(guard, *hold, &client_write).await?,
                                    }),
                                };
                                // Not kept: the unit goes as it came, or with the
                                // refusal's stand-in for its statement.
                                if let Some(screened) = screened {
                                    match screened {
                                        Screened::Forward => frame.encode(&mut prefix),
                                        Screened::Replace(stand_in) => stand_in.encode(&mut prefix),
                                    }
                                    frames[index + 1..unit.end].iter().for_each(|later| later.encode(&mut prefix));
                                    // A unit ends at its one Query or Sync.
                                    let last = frames[unit.end - 1].tag;
                                    session_reading
                                        .lock()
                                        .unwrap_or_else(|p| p.into_inner())
                                        .client_sent(last, may_change);
                                    send_now(&mut upstream_write, prefix, Vec::new(), &sending).await?;
                                }
                                splice.replace(frame, |_| {});
                                let last = unit.end - 1;
                                track_unit(frames[last].tag, last, &mut unit_start, &mut extended_open);
                                continue;
                            }
                        };
                        match screened {
                            Screened::Forward => {
                                if guard.is_some() {
                                    sent.extend(runs);
                                }
                                splice.keep(frame)
                            }
                            Screened::Replace(stand_in) => {
                                splice.replace(frame, |out| stand_in.encode(out));
                                // The batch's bytes no longer hold its frames as they came.
                                unit_start = None;
                            }
                        }
                        track_unit(frame.tag, index, &mut unit_start, &mut extended_open);
                    }
                    if !sent.is_empty() {
                        recorder.record_sent(&me, sent).await?;
                    }
                    let bytes = splice.finish();
                    session.bytes.to_upstream.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    upstream_write.write_all(bytes).await?;
                    upstream_write.flush().await?;
                    out.clear();
                    reader.recycle(frames);
                }
                Some(Incoming::Large { tag, len }) => {
                    let runs = tracker.lock().unwrap_or_else(|p| p.into_inner()).client_sent_large(tag, len);
                    match guard.as_ref().map(|guard| guard.screen_large(tag, len)) {
                        None => reader.forward_large(&mut client_read, &mut upstream_write, tag, len).await?,
                        Some(None) => {
                            if let Some(runs) = runs {
                                recorder.record_sent(&me, vec![runs]).await?;
                            }
                            reader.forward_large(&mut client_read, &mut upstream_write, tag, len).await?
                        }
                        Some(Some(stand_in)) => {
                            reader.forward_large(&mut client_read, &mut tokio::io::sink(), tag, len).await?;
                            stand_in.encode(&mut out);
                            upstream_write.write_all(&out).await?;
                            upstream_write.flush().await?;
                            out.clear();
                        }
                    }
                    session.bytes.to_upstream.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
        }
    };
    let to_client = async {
        // The server's last FATAL or PANIC error, for the record if it ends the session.
        let mut last_fatal: Option<String> = None;
        // Dropped when this side ends, which a waiting measurement then hears.
        let answered = answered;
        let _diverting = diversion.end_on_drop();
        let mut reader = upstream_reader;
        let mut out = Vec::new();
        let ending = session.ending.wait();
        tokio::pin!(ending);
        loop {
            // Replies of a measured write come before anything the server
            // sends after them.
            let (next, replay) = tokio::select! {
                biased;
                Some(replies) = replayed.recv() => (Some(Incoming::Frames(Batch::encoded(&replies))), true),
                next = reader.next(&mut upstream_read, "server") => (next?, false),
                reason = &mut ending => return Err(ProxyError::Ended(reason)),
            };
            match next {
                None => {
                    client_write.lock().await.shutdown().await?;
                    // The client left first (Terminate, or its end of the
                    // connection): an orderly end. Otherwise the server ended
                    // the session, and the record says why.
                    if client_done.load(Ordering::Relaxed) {
                        return Ok::<_, ProxyError>(());
                    }
                    let why = last_fatal.take().unwrap_or_else(|| "it closed the connection".into());
                    return Err(ProxyError::ServerEnded(why));
                }
                Some(Incoming::Frames(Batch { frames, raw })) => {
                    let mut finished = Vec::new();
                    let mut splice = Splice::new(&raw, &mut out);
                    for original in &frames {
                        if original.tag == b'E' {
                            last_fatal = fatal(original).or(last_fatal.take());
                        }
                        // Replayed replies were read (and followed) when they came.
                        if !replay {
                            if reading::SessionReading::follows(original.tag) {
                                session_reading.lock().unwrap_or_else(|p| p.into_inner()).server_sent(original);
                                if original.tag == b'Z' {
                                    answered.send_replace(());
                                }
                            }
                            if diversion.take(original) {
                                splice.replace(original, |_| {});
                                continue;
                            }
                        }
                        let refusal = guard.as_ref().and_then(|guard| guard.rewrite_error(original));
                        let frame = refusal.as_ref().unwrap_or(original);
                        let masked = match masking.as_mut() {
                            Some(layer) => {
                                if let Some(columns) = layer.observe(frame, &client_view)? {
                                    layer.describe(&columns).await?;
                                }
                                layer.mask(frame)?
                            }
                            None => mask::Masked::Unchanged,
                        };
                        let message = match &masked {
                            mask::Masked::Message(message) => Some(message),
                            _ => None,
                        };
                        let frame = message.unwrap_or(frame);
                        if StatementTracker::follows(frame.tag) {
                            let before = finished.len();
                            tracker.lock().unwrap_or_else(|p| p.into_inner()).server_sent(frame, &mut finished);
                            if let (Some(record), Some(layer)) =
                                (finished[before..].iter_mut().rev().find(|r| r.executed), masking.as_mut())
                            {
                                record.masked = layer.take_counts();
                            }
                        }
                        let ours = own_backend_key(frame, server, shared.cancel_keys, session).map(|(ours, key)| {
                            issued.lock().unwrap_or_else(|p| p.into_inner()).push(key);
                            ours
                        });
                        match (ours.as_ref().or(message).or(refusal.as_ref()), &masked, masking.as_mut()) {
                            (Some(replacement), ..) => splice.replace(original, |out| replacement.encode(out)),
                            (None, mask::Masked::Row, Some(layer)) => {
                                splice.rewrite(original, |prefix, out| layer.write_row(original, prefix, out))?
                            }
                            _ => splice.keep(original),
                        }
                    }
                    let bytes = splice.finish();
                    if !bytes.is_empty() {
                        session.bytes.to_client.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        let mut client_write = client_write.lock().await;
                        client_write.write_all(bytes).await?;
                        client_write.flush().await?;
                    }
                    out.clear();
                    reader.recycle(frames);
                    if !finished.is_empty() {
                        recorder.record(&me, finished)?;
                    }
                }
                Some(Incoming::Large { tag, len }) => {
                    if masks && matches!(tag, b'D' | b'd' | b'E' | b'N' | b'A') {
                        return Err(ProxyError::Unmaskable(format!("a {len}-byte message is too large to mask")));
                    }
                    let mut client_write = client_write.lock().await;
                    reader.forward_large(&mut upstream_read, &mut *client_write, tag, len).await?;
                    session.bytes.to_client.fetch_add(len as u64, Ordering::Relaxed);
                }
            }
        }
    };
    let result = tokio::try_join!(to_upstream, to_client).map(|_| ());
    for (pid, key) in issued.into_inner().unwrap_or_else(|p| p.into_inner()) {
        shared.cancel_keys.forget(pid, key);
    }
    let unfinished = tracker.lock().unwrap_or_else(|p| p.into_inner()).unfinished();
    let recorded = match recorder.record(&me, unfinished) {
        Ok(()) => recorder.flush().await,
        Err(error) => Err(error),
    };
    result.and(recorded)
}

/// What sending statements upstream needs: on guarded targets they are
/// recorded before they go.
struct Sending<'a> {
    recorder: &'a StatementLog,
    me: &'a Arc<SessionContext>,
    session: &'a LiveSession,
}

/// A FATAL or PANIC ErrorResponse's severity, SQLSTATE and message.
fn fatal(frame: &Frame) -> Option<String> {
    let Ok(codec::Backend::Error(fields)) = codec::Backend::parse(frame) else { return None };
    let severity = fields.get(b'V').or(fields.get(b'S'))?;
    matches!(severity, "FATAL" | "PANIC").then(|| {
        let message = crate::redact::sql_error(fields.get(b'M').unwrap_or_default());
        format!("{severity} {} {message}", fields.get(b'C').unwrap_or("?????"))
    })
}

/// Waits for the decision on a held statement, its notice told to the client first.
async fn wait_for_approval<W: AsyncWrite + Unpin>(
    guard: &Guard<'_>,
    hold: Hold,
    client: &tokio::sync::Mutex<W>,
) -> Result<Screened, ProxyError> {
    let mut notice = BytesMut::new();
    hold.notice.encode(&mut notice);
    let mut client = client.lock().await;
    client.write_all(&notice).await?;
    client.flush().await?;
    drop(client);
    Ok(guard.settle(hold).await)
}

/// The frames a measured write at `index` runs with: a Query alone, or an
/// Execute from the start of its extended-protocol batch through the Sync
/// right after it, when all of them are in this read as they came
/// (`start`). `open`: an extended-protocol batch is unfinished.
fn measured_unit(
    frames: &[Frame],
    index: usize,
    start: Option<usize>,
    open: bool,
) -> Result<Range<usize>, &'static str> {
    if frames[index].tag == b'Q' {
        // Airlock's own statements end with a Sync, which would close an
        // extended-protocol batch the client left open.
        return if open { Err("it came inside an unfinished extended-protocol batch") } else { Ok(index..index + 1) };
    }
    let start = start.ok_or("what it runs was sent to the server before it arrived, so no savepoint can come first")?;
    if frames.get(index + 1).map(|frame| frame.tag) != Some(b'S') {
        return Err("no Sync follows it at once");
    }
    if frames[start..index].iter().any(|frame| frame.tag == b'E') {
        return Err("another Execute shares its Sync");
    }
    Ok(start..index + 2)
}

/// Where an extended-protocol batch starts: after each Sync or Query.
fn track_unit(tag: u8, index: usize, start: &mut Option<usize>, open: &mut bool) {
    match tag {
        b'S' | b'Q' | b'F' => {
            *start = Some(index + 1);
            *open = false;
        }
        b'P' | b'B' | b'D' | b'E' | b'C' | b'H' => *open = true,
        _ => {}
    }
}

/// Bytes `frames` take on the wire.
fn wire_len(frames: &[Frame]) -> usize {
    frames.iter().map(|frame| 5 + frame.body.len()).sum()
}

/// Records `statements`, then sends `bytes` upstream now.
async fn send_now<W: AsyncWrite + Unpin>(
    upstream: &mut W,
    bytes: Vec<u8>,
    statements: Vec<SentStatement>,
    sending: &Sending<'_>,
) -> Result<(), ProxyError> {
    if !statements.is_empty() {
        sending.recorder.record_sent(sending.me, statements).await?;
    }
    if !bytes.is_empty() {
        sending.session.bytes.to_upstream.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        upstream.write_all(&bytes).await?;
        upstream.flush().await?;
    }
    Ok(())
}

/// Replaces the server's BackendKeyData with one of Airlock's own. Every
/// row of every result passes here: the test of its type is all they cost.
#[inline]
fn own_backend_key(
    frame: &Frame,
    server: std::net::SocketAddr,
    keys: &CancelKeys,
    session: &LiveSession,
) -> Option<(Frame, (u32, u32))> {
    if frame.tag != b'K' {
        return None;
    }
    issue_backend_key(frame, server, keys, session)
}

/// [`own_backend_key`] for a BackendKeyData, once a session.
#[cold]
fn issue_backend_key(
    frame: &Frame,
    server: std::net::SocketAddr,
    keys: &CancelKeys,
    session: &LiveSession,
) -> Option<(Frame, (u32, u32))> {
    let codec::Backend::KeyData { pid, key } = codec::Backend::parse(frame).ok()? else { return None };
    let (our_pid, our_key) = keys.issue(BackendKey { server, pid, key, session: session.id.clone() });
    let mut body = BytesMut::with_capacity(8);
    body.extend_from_slice(&our_pid.to_be_bytes());
    body.extend_from_slice(&our_key.to_be_bytes());
    Some((Frame { tag: b'K', body: body.freeze() }, (our_pid, our_key)))
}
