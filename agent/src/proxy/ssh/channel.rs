//! Relaying one channel between the client and the target.
//!
//! Each direction runs on its own task, so a full window one way never
//! stalls the other. Requests the client wants answered are forwarded with
//! a reply wanted and the target's answers go back in order; an exec the
//! command rules refuse is answered by Airlock itself.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use russh::{
    Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client,
    server::{self, Msg},
};
use serde_json::json;

use super::{
    Context,
    typed::{LineBuffer, Piece, ScriptLines, TooLong},
};
use crate::{
    approvals::NewRequest,
    command_guard::{Source, Verdict},
    guardrails::GuardAction,
    recording::Recording,
};

/// Who answers the client's next outstanding request.
enum Reply {
    /// The target's next Success/Failure.
    Upstream,
    /// Airlock, with this answer, once earlier answers went out.
    Local(bool),
}

/// Answers to the client's requests, kept in request order.
#[derive(Default)]
struct Replies(Mutex<VecDeque<Reply>>);

impl Replies {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Reply>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answers that can go out now, once the target answered (`Some`) or not.
    fn ready(&self, upstream: Option<bool>) -> Vec<bool> {
        let mut queue = self.lock();
        let mut out = Vec::new();
        if let Some(answer) = upstream
            && let Some(Reply::Upstream) = queue.front()
        {
            queue.pop_front();
            out.push(answer);
        }
        while let Some(Reply::Local(answer)) = queue.front() {
            out.push(*answer);
            queue.pop_front();
        }
        out
    }
}

/// What is known of a session channel's terminal.
#[derive(Default)]
struct Terminal {
    recording: Option<Recording>,
    /// Exec commands and their exit status, for the audit record at the end.
    command: Option<String>,
}

/// A session channel (shell, exec, subsystem) between client and target.
pub(crate) struct SessionBridge {
    context: Arc<Context>,
    handle: server::Handle,
    client: Channel<Msg>,
    upstream: Channel<client::Msg>,
    principal: String,
}

impl SessionBridge {
    pub(crate) fn new(
        context: Arc<Context>,
        handle: server::Handle,
        client: Channel<Msg>,
        upstream: Channel<client::Msg>,
        principal: String,
    ) -> Self {
        Self { context, handle, client, upstream, principal }
    }

    pub(crate) async fn run(self) {
        let Self { context, handle, client, upstream, principal } = self;
        let id = client.id();
        let (client_read, client_write) = client.split();
        let (upstream_read, upstream_write) = upstream.split();
        let replies = Arc::new(Replies::default());
        let terminal = Arc::new(Mutex::new(Terminal::default()));
        let exit = Arc::new(Mutex::new(None::<serde_json::Value>));
        let to_target = to_upstream(
            Arc::clone(&context),
            client_read,
            upstream_write,
            &client_write,
            handle.clone(),
            id,
            Arc::clone(&replies),
            Arc::clone(&terminal),
            &principal,
        );
        let to_client = to_client(
            Arc::clone(&context),
            upstream_read,
            &client_write,
            handle,
            id,
            replies,
            Arc::clone(&terminal),
            Arc::clone(&exit),
        );
        tokio::join!(to_target, to_client);

        let terminal = std::mem::take(&mut *terminal.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(command) = terminal.command {
            let exit = exit.lock().unwrap_or_else(|p| p.into_inner()).take();
            context.audit("ssh.exec_end", json!({ "command": command, "exit": exit }));
        }
        if let Some(recording) = terminal.recording {
            match recording.finish() {
                Ok((path, sha256)) => {
                    context.audit("ssh.recording", json!({ "path": path, "sha256": sha256 }));
                }
                Err(error) => {
                    context.audit("ssh.recording_failed", json!({ "error": error.to_string() }));
                }
            }
        }
    }
}

fn redacted(command: &str) -> String {
    crate::redact::shell(command)
}

/// Client → target: data and requests, with exec commands screened.
#[allow(clippy::too_many_arguments)]
async fn to_upstream(
    context: Arc<Context>,
    mut client: ChannelReadHalf,
    upstream: ChannelWriteHalf<client::Msg>,
    client_write: &ChannelWriteHalf<Msg>,
    handle: server::Handle,
    id: russh::ChannelId,
    replies: Arc<Replies>,
    terminal: Arc<Mutex<Terminal>>,
    principal: &str,
) {
    let bytes = &context.session.bytes.to_upstream;
    // Set for shells of targets with command rules: their input is judged line by line.
    let mut shell_input: Option<ShellInput> = None;
    let mut has_pty = false;
    while let Some(message) = client.wait().await {
        let sent = match message {
            ChannelMsg::Data { data } => {
                bytes.fetch_add(data.len() as u64, Relaxed);
                if context.policy.options.record_input
                    && let Some(recording) = &mut terminal.lock().unwrap_or_else(|p| p.into_inner()).recording
                {
                    let _ = recording.input(&data);
                }
                let input = match &mut shell_input {
                    None => upstream.data_bytes(data).await.map(|()| Input::Forwarded),
                    Some(ShellInput::Terminal(buffer)) => {
                        typed_input(&context, buffer, data, &upstream, client_write, principal).await
                    }
                    Some(ShellInput::Script(lines)) => match lines.feed(&data) {
                        Ok(complete) => {
                            script_input(&context, lines, complete, &upstream, client_write, principal).await
                        }
                        Err(TooLong) => refuse_script_line(&context, client_write, principal, None).await,
                    },
                };
                match input {
                    Ok(Input::Forwarded) => Ok(()),
                    Ok(Input::Refused) => break,
                    Err(error) => Err(error),
                }
            }
            ChannelMsg::ExtendedData { data, ext } => upstream.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => {
                // A script's last line without a newline is judged before the shell runs it.
                if let Some(ShellInput::Script(lines)) = &mut shell_input {
                    let rest = lines.rest();
                    if !rest.is_empty() {
                        match script_input(&context, lines, vec![rest], &upstream, client_write, principal).await {
                            Ok(Input::Forwarded) => {}
                            Ok(Input::Refused) | Err(_) => break,
                        }
                    }
                }
                upstream.eof().await
            }
            ChannelMsg::Close => break,
            ChannelMsg::RequestPty {
                want_reply,
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
            } => {
                let name = match context.recordings.fetch_add(1, Relaxed) {
                    0 => context.session.id.clone(),
                    n => format!("{}-{n}", context.session.id),
                };
                match Recording::create(&context.shared.recordings, &name, col_width, row_height, &term) {
                    Ok(recording) => terminal.lock().unwrap_or_else(|p| p.into_inner()).recording = Some(recording),
                    Err(error) => {
                        // An interactive session is not run unrecorded.
                        context.audit("ssh.recording_failed", json!({ "error": error.to_string() }));
                        let message = "airlock: the session cannot be recorded, and interactive sessions do not run \
                                       unrecorded; tell this host's administrators (audit directory full or unwritable)\r\n";
                        let _ = refuse_on(client_write, message).await;
                        break;
                    }
                }
                has_pty = true;
                expect(&replies, want_reply);
                upstream
                    .request_pty(want_reply, &term, col_width, row_height, pix_width, pix_height, &terminal_modes)
                    .await
            }
            ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height } => {
                if let Some(recording) = &mut terminal.lock().unwrap_or_else(|p| p.into_inner()).recording {
                    let _ = recording.resize(col_width, row_height);
                }
                upstream.window_change(col_width, row_height, pix_width, pix_height).await
            }
            ChannelMsg::SetEnv { variable_name, variable_value, .. } => {
                // OpenSSH never wants a reply to env; none is queued.
                upstream.set_env(false, variable_name, variable_value).await
            }
            ChannelMsg::RequestShell { want_reply } => {
                let guard = &context.policy.options.commands;
                if guard.only.is_some() {
                    // What is typed cannot be held to a list (completion,
                    // history, editors); such targets run exec requests only.
                    context.audit("ssh.shell_refused", json!({ "principal": principal, "reason": "allowlist" }));
                    if want_reply {
                        replies.lock().push_back(Reply::Local(true));
                        for answer in replies.ready(None) {
                            answer_client(&handle, id, answer).await;
                        }
                    }
                    let message = "airlock: this target runs only listed commands, given on the ssh command line \
                                   (ssh host COMMAND); it offers no interactive shell\r\n";
                    let _ = refuse_on(client_write, message).await;
                    break;
                }
                context.audit("ssh.shell", json!({ "principal": principal }));
                if guard.is_active() {
                    shell_input = Some(match has_pty {
                        true => ShellInput::Terminal(LineBuffer::default()),
                        false => ShellInput::Script(ScriptLines::default()),
                    });
                }
                expect(&replies, want_reply);
                upstream.request_shell(want_reply).await
            }
            ChannelMsg::RequestSubsystem { want_reply, name } => {
                context.audit("ssh.subsystem", json!({ "principal": principal, "name": name }));
                expect(&replies, want_reply);
                upstream.request_subsystem(want_reply, name).await
            }
            ChannelMsg::Exec { want_reply, command } => {
                let line = String::from_utf8_lossy(&command);
                let text = redacted(&line);
                let judged = match context.policy.options.commands.is_active() {
                    true => screen(&context, &line, Source::Exec, client_write).await.map(drop),
                    false => Ok(()),
                };
                match judged {
                    Ok(()) => {
                        context.audit("ssh.exec", json!({ "principal": principal, "command": text }));
                        terminal.lock().unwrap_or_else(|p| p.into_inner()).command = Some(text);
                        expect(&replies, want_reply);
                        upstream.exec(want_reply, command).await
                    }
                    Err(refusal) => {
                        context.audit(
                            "ssh.exec_refused",
                            json!({ "principal": principal, "command": text, "reason": refusal }),
                        );
                        if want_reply {
                            replies.lock().push_back(Reply::Local(true));
                            for answer in replies.ready(None) {
                                answer_client(&handle, id, answer).await;
                            }
                        }
                        let _ = refuse_on(client_write, &format!("airlock: {refusal}\r\n")).await;
                        break;
                    }
                }
            }
            ChannelMsg::Signal { signal } => upstream.signal(signal).await,
            ChannelMsg::AgentForward { want_reply } => {
                refuse_forwarding(&context, principal, "agent", want_reply, &replies, &handle, id).await;
                Ok(())
            }
            ChannelMsg::RequestX11 { want_reply, .. } => {
                refuse_forwarding(&context, principal, "x11", want_reply, &replies, &handle, id).await;
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = upstream.close().await;
}

/// Agent and X11 forwarding stay off: recorded, and refused to a client
/// that asked for a reply; the session goes on either way.
async fn refuse_forwarding(
    context: &Context,
    principal: &str,
    kind: &str,
    want_reply: bool,
    replies: &Replies,
    handle: &server::Handle,
    id: russh::ChannelId,
) {
    context.audit("ssh.forwarding_refused", json!({ "principal": principal, "kind": kind }));
    if want_reply {
        replies.lock().push_back(Reply::Local(false));
        for answer in replies.ready(None) {
            answer_client(handle, id, answer).await;
        }
    }
}

fn expect(replies: &Replies, want_reply: bool) {
    if want_reply {
        replies.lock().push_back(Reply::Upstream);
    }
}

async fn answer_client(handle: &server::Handle, id: russh::ChannelId, answer: bool) {
    let _ = if answer { handle.channel_success(id).await } else { handle.channel_failure(id).await };
}

/// Target → client: output, exit status and answers.
#[allow(clippy::too_many_arguments)]
async fn to_client(
    context: Arc<Context>,
    mut upstream: ChannelReadHalf,
    client: &ChannelWriteHalf<Msg>,
    handle: server::Handle,
    id: russh::ChannelId,
    replies: Arc<Replies>,
    terminal: Arc<Mutex<Terminal>>,
    exit: Arc<Mutex<Option<serde_json::Value>>>,
) {
    let bytes: &AtomicU64 = &context.session.bytes.to_client;
    while let Some(message) = upstream.wait().await {
        let sent = match message {
            ChannelMsg::Data { data } => {
                bytes.fetch_add(data.len() as u64, Relaxed);
                if let Some(recording) = &mut terminal.lock().unwrap_or_else(|p| p.into_inner()).recording {
                    let _ = recording.output(&data);
                }
                client.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                bytes.fetch_add(data.len() as u64, Relaxed);
                client.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => client.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => {
                *exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(json!({ "status": exit_status }));
                client.exit_status(exit_status).await
            }
            ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag } => {
                let name = format!("{signal_name:?}");
                *exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(json!({ "signal": name }));
                handle
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .map_err(|()| russh::Error::SendError)
            }
            ChannelMsg::Success | ChannelMsg::Failure => {
                let answer = matches!(message, ChannelMsg::Success);
                for answer in replies.ready(Some(answer)) {
                    answer_client(&handle, id, answer).await;
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    // The target closed the channel: so does Airlock toward the client, whose
    // own close then ends the other direction.
    let _ = client.close().await;
}

/// How a shell's input is judged.
enum ShellInput {
    /// Typed at a terminal: keystrokes forwarded as typed, lines rebuilt.
    Terminal(LineBuffer),
    /// Fed without a terminal: whole lines held until judged.
    Script(ScriptLines),
}

/// What became of a chunk of a shell's input.
enum Input {
    /// Forwarded (a refused typed line as Ctrl-C).
    Forwarded,
    /// A line of a script was refused, and the channel closed.
    Refused,
}

/// Typed input: forwarded as typed, except the Enter of a line the command
/// rules refuse, which becomes Ctrl-C (the shell drops the line) and a notice.
async fn typed_input(
    context: &Arc<Context>,
    buffer: &mut LineBuffer,
    data: bytes::Bytes,
    upstream: &ChannelWriteHalf<client::Msg>,
    client: &ChannelWriteHalf<Msg>,
    principal: &str,
) -> Result<Input, russh::Error> {
    for piece in buffer.feed(&data) {
        let (line, refusal) = match piece {
            Piece::Bytes(range) => {
                upstream.data_bytes(data.slice(range)).await?;
                continue;
            }
            Piece::Enter { line, byte } => match screen(context, &line, Source::Typed, client).await {
                Ok(complete) => {
                    if !complete {
                        buffer.continues(line);
                    }
                    upstream.data_bytes(vec![byte]).await?;
                    continue;
                }
                Err(refusal) => (redacted(&line), refusal),
            },
            Piece::TooLong => (String::new(), TOO_LONG.to_owned()),
        };
        let detail = json!({ "principal": principal, "command": line, "reason": refusal });
        context.audit("ssh.command_line_refused", detail);
        upstream.data_bytes(&b"\x03"[..]).await?;
        client.data_bytes(format!("\r\nairlock: {refusal}\r\n").into_bytes()).await?;
    }
    Ok(Input::Forwarded)
}

const TOO_LONG: &str = "command refused: the line is longer than the command guard reads (16 KiB)";

/// Complete lines of a script: each forwarded once judged; at a refused
/// one the channel is closed, as the lines after it may depend on it.
async fn script_input(
    context: &Arc<Context>,
    lines: &mut ScriptLines,
    complete: Vec<Vec<u8>>,
    upstream: &ChannelWriteHalf<client::Msg>,
    client: &ChannelWriteHalf<Msg>,
    principal: &str,
) -> Result<Input, russh::Error> {
    for line in complete {
        let text = lines.text(&line);
        match screen(context, &text, Source::Script, client).await {
            Ok(complete) => {
                if !complete {
                    lines.continues(text);
                }
                upstream.data_bytes(line).await?;
            }
            Err(refusal) => return refuse_script_line(context, client, principal, Some((&text, refusal))).await,
        }
    }
    Ok(Input::Forwarded)
}

/// Records a refused script line (`None`: one too long) and ends the channel.
async fn refuse_script_line(
    context: &Context,
    client: &ChannelWriteHalf<Msg>,
    principal: &str,
    refused: Option<(&str, String)>,
) -> Result<Input, russh::Error> {
    let (line, refusal) = refused.map_or((String::new(), TOO_LONG.to_owned()), |(line, r)| (redacted(line), r));
    let detail = json!({ "principal": principal, "command": line, "reason": refusal });
    context.audit("ssh.command_line_refused", detail);
    let _ = refuse_on(client, &format!("airlock: {refusal}\n")).await;
    Ok(Input::Refused)
}

/// Judges a command line by the target's command rules: `Ok(true)` when
/// it may run, `Ok(false)` when it is unfinished (the shell asks for more),
/// `Err` with the reason when it may not run. Held commands wait here for
/// a decision.
async fn screen(
    context: &Arc<Context>,
    line: &str,
    source: Source,
    client: &ChannelWriteHalf<Msg>,
) -> Result<bool, String> {
    let judged = {
        let context = Arc::clone(context);
        let line = line.to_owned();
        // Parsing may take a while on odd input: off the session's thread.
        tokio::task::spawn_blocking(move || context.policy.options.commands.judge(&line, source)).await
    };
    let (action, reason) = match judged {
        Ok(Verdict::Allow) => return Ok(true),
        Ok(Verdict::Incomplete) => return Ok(false),
        // Reasons quote the command: secrets in it stay out of the audit.
        Ok(Verdict::Refuse { action, reason }) => (action, redacted(&reason)),
        Err(_) => (GuardAction::Deny, "the command guard failed on this command".to_owned()),
    };
    match action {
        GuardAction::Allow => Ok(true),
        GuardAction::Deny => Err(format!("command refused: {reason}")),
        GuardAction::Approve => {
            let Some(policy) = &context.policy.approvals else {
                return Err(format!("command needs approval, but the target names no approvers: {reason}"));
            };
            let s = &context.session;
            let statement = redacted(line);
            let filed = context.shared.approvals.request(NewRequest {
                session: &s.id,
                identity: &s.identity,
                target: &s.target,
                statement: &statement,
                reason: &reason,
                policy,
                blast_radius: None,
            });
            let waiter = filed.map_err(|e| format!("the approval request cannot be recorded: {e}"))?;
            let notice = format!(
                "airlock: waiting for approval of request {id} ({reason}); {approvers} can approve it with: {command}\r\n",
                id = waiter.request.id,
                approvers = waiter.request.approvers,
                command = context.shared.approvals.decide_command(&waiter.request),
            );
            let _ = client.extended_data_bytes(1, notice.into_bytes()).await;
            context.shared.approvals.refusal(waiter).await.map_or(Ok(true), Err)
        }
    }
}

/// Tells the client why on stderr, with exit status 1, and closes.
async fn refuse_on(client: &ChannelWriteHalf<Msg>, message: &str) -> Result<(), russh::Error> {
    client.extended_data_bytes(1, message.as_bytes().to_vec()).await?;
    client.exit_status(1).await?;
    client.eof().await?;
    client.close().await
}

/// A session channel of a refused login: the reason, then the end.
pub(crate) async fn refuse(mut channel: Channel<Msg>, message: String) {
    // Answer the requests the client makes before it reads stderr.
    loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestShell { .. } | ChannelMsg::Exec { .. } | ChannelMsg::RequestSubsystem { .. }) => {
                break;
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    }
    let (_, write) = channel.split();
    let _ = refuse_on(&write, &message).await;
}

/// A forwarded TCP channel: bytes both ways.
pub(crate) async fn forward(client: Channel<Msg>, upstream: Channel<client::Msg>, context: Arc<Context>) {
    let (mut client_read, client_write) = client.split();
    let (mut upstream_read, upstream_write) = upstream.split();
    let up = async {
        while let Some(message) = client_read.wait().await {
            let sent = match message {
                ChannelMsg::Data { data } => {
                    context.session.bytes.to_upstream.fetch_add(data.len() as u64, Relaxed);
                    upstream_write.data_bytes(data).await
                }
                ChannelMsg::Eof => upstream_write.eof().await,
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = upstream_write.close().await;
    };
    let down = async {
        while let Some(message) = upstream_read.wait().await {
            let sent = match message {
                ChannelMsg::Data { data } => {
                    context.session.bytes.to_client.fetch_add(data.len() as u64, Relaxed);
                    client_write.data_bytes(data).await
                }
                ChannelMsg::Eof => client_write.eof().await,
                ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        let _ = client_write.close().await;
    };
    tokio::join!(up, down);
}
