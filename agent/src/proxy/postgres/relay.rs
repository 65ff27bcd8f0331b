//! The session proper: frames relayed both ways in batches, through the
//! guard, the masker and the statement tracker, with Airlock's own cancel
//! key in place of the server's.

use std::sync::{Arc, Mutex, atomic::Ordering};

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
    guard::{Decision, Guard, Screened, Screening},
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
    let to_upstream = async {
        let mut effects = Effects { diversion: &diversion, reading: &session_reading, answered: answered_seen };
        let mut reader = client_reader;
        let mut out = Vec::new();
        loop {
            match reader.next(&mut client_read, "client").await? {
                None => {
                    upstream_write.shutdown().await?;
                    return Ok::<_, ProxyError>(());
                }
                Some(Incoming::Frames(Batch { frames, raw })) => {
                    let mut splice = Splice::new(&raw, &mut out);
                    // On guarded targets, what is about to run is recorded first.
                    let mut sent = Vec::new();
                    for frame in &frames {
                        if masks {
                            client_view.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame)?;
                        }
                        let (mut runs, screening, may_change) = {
                            let mut reading = session_reading.lock().unwrap_or_else(|p| p.into_inner());
                            let now = reading.reading();
                            let runs =
                                tracker.lock().unwrap_or_else(|p| p.into_inner()).client_sent(frame, now.encoding);
                            let (screening, may_change) = match &guard {
                                Some(guard) => {
                                    let (screening, may_change) = guard.screen(frame, now);
                                    (Some((guard, screening)), may_change)
                                }
                                None => (None, false),
                            };
                            // A measured write is in flight once it is sent, savepoint first.
                            if !matches!(screening, Some((_, Screening::Measure(_)))) {
                                reading.client_sent(frame.tag, may_change);
                            }
                            (runs, screening, may_change)
                        };
                        let screened = match screening {
                            None => Screened::Forward,
                            Some((guard, screening)) => {
                                let decision = match screening {
                                    Screening::Done(screened) => Decision::Done(screened),
                                    Screening::Held(hold) => Decision::Held(hold),
                                    Screening::Measure(measure) => {
                                        // What came before goes first: the server must have answered it.
                                        let before = splice.take_before();
                                        send_now(&mut upstream_write, before, std::mem::take(&mut sent), &sending)
                                            .await?;
                                        // It runs now, if only in a savepoint: its record comes first.
                                        let this = runs.take().into_iter().collect();
                                        send_now(&mut upstream_write, Vec::new(), this, &sending).await?;
                                        let limit = measure.limited.limit;
                                        let measured =
                                            effects.measure(&mut upstream_write, frame, &measure.effect, limit).await?;
                                        if !matches!(measured, Measured::Kept(_)) {
                                            let mut reading = session_reading.lock().unwrap_or_else(|p| p.into_inner());
                                            reading.client_sent(frame.tag, may_change);
                                        }
                                        match measured {
                                            Measured::Kept(replies) => {
                                                // The server side relays them as if they had just come.
                                                let _ = replays.send(replies);
                                                splice.replace(frame, |_| {});
                                                continue;
                                            }
                                            Measured::NotRun => Decision::Done(Screened::Forward),
                                            Measured::Over(why) => guard.over_limit(frame, *measure, &why),
                                        }
                                    }
                                };
                                match decision {
                                    Decision::Done(screened) => screened,
                                    Decision::Held(hold) => {
                                        // What came before goes now; the held statement waits.
                                        let before = splice.take_before();
                                        send_now(&mut upstream_write, before, std::mem::take(&mut sent), &sending)
                                            .await?;
                                        let mut notice = BytesMut::new();
                                        hold.notice.encode(&mut notice);
                                        let mut client_write = client_write.lock().await;
                                        client_write.write_all(&notice).await?;
                                        client_write.flush().await?;
                                        drop(client_write);
                                        guard.settle(*hold).await
                                    }
                                }
                            }
                        };
                        match screened {
                            Screened::Forward => {
                                if guard.is_some() {
                                    sent.extend(runs);
                                }
                                splice.keep(frame)
                            }
                            Screened::Replace(stand_in) => splice.replace(frame, |out| stand_in.encode(out)),
                        }
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
                    return Ok::<_, ProxyError>(());
                }
                Some(Incoming::Frames(Batch { frames, raw })) => {
                    let mut finished = Vec::new();
                    let mut splice = Splice::new(&raw, &mut out);
                    for original in &frames {
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
