//! The agent end of the control socket.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        UnixListener, UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use super::{Request, Response, Status, TargetStatus};
use crate::{
    daemon::AgentState,
    identity::oidc::{LoginError, LoginInfo, Logins},
    process::ProcessInfo,
};

/// Longest request accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// A client gets this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket. It is world-connectable on purpose: every user may ask
/// about their own sessions; what they get is decided per request from
/// their kernel-verified uid.
pub fn bind(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        std::os::unix::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    listener.set_nonblocking(true)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// Serves control requests until the agent exits.
pub async fn serve(listener: UnixListener, state: Arc<AgentState>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Err(error) = handle(stream, &state).await {
                        tracing::debug!(%error, "control request failed");
                    }
                });
            }
            Err(error) => {
                tracing::error!(%error, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, state: &Arc<AgentState>) -> anyhow::Result<()> {
    let caller = super::caller::identify(&stream, &state.cgroup_root);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await??;
    let request = serde_json::from_str::<Request>(&line);
    let response = match (request, caller) {
        (Err(error), _) => Response::Error { message: format!("bad request: {error}") },
        (Ok(_), Err(error)) => Response::Error { message: format!("who are you? {error}") },
        (Ok(Request::Status), Ok(caller)) => status(state, caller.uid),
        (Ok(Request::Approvals), Ok(caller)) => match caller_identity(state, &caller) {
            Ok(identity) => super::remote::approvals(state, &identity).await,
            Err(message) => Response::Error { message },
        },
        (Ok(Request::Decide { id, approve, reason }), Ok(caller)) => match caller_identity(state, &caller) {
            Ok(identity) if state.exchange.is_some() && !state.approvals.is_pending(state.approvals.local_id(&id)) => {
                super::remote::decide(state, &identity, &id, approve, reason).await
            }
            Ok(identity) => match state.approvals.decide(state.approvals.local_id(&id), &identity, approve, reason) {
                Ok(decided) => {
                    crate::daemon::access::end_when_window_closes(state, &decided);
                    Response::Decided(decided.request)
                }
                Err(error) => Response::Error { message: error.to_string() },
            },
            Err(message) => Response::Error { message },
        },
        (Ok(Request::Login), Ok(caller)) => match &state.logins {
            Some(logins) => login(logins, &caller, reader.get_mut(), &mut write).await?,
            None => no_issuer(),
        },
        (Ok(Request::LoginJob { token }), Ok(caller)) => match &state.logins {
            Some(logins) => answer(logins.login_job(&caller, &token).await),
            None => no_issuer(),
        },
        (Ok(Request::Whoami), Ok(caller)) => whoami(state, &caller),
        (Ok(Request::Logout), Ok(caller)) => match &state.logins {
            Some(logins) => answer(logins.logout(&caller)),
            None => no_issuer(),
        },
        (Ok(Request::Metrics), Ok(_)) => Response::Metrics {
            text: crate::daemon::observe::render(state),
            health: crate::daemon::observe::health(state),
        },
        (Ok(Request::Rotate { target, now }), Ok(caller)) => {
            if is_admin(caller.uid, state.config.admin_group.as_deref()) {
                let trigger = crate::credentials::rotation::Trigger::Manual { uid: caller.uid, now };
                match state.rotations.rotate(&state.policy(), &target, trigger).await {
                    Ok(report) => Response::Rotated(report),
                    Err(error) => Response::Error { message: error.to_string() },
                }
            } else {
                Response::Error { message: "only root or the agent's admin group may rotate secrets".into() }
            }
        }
        (Ok(Request::RunAsActor { actor }), Ok(caller)) => match run_as_actor(state, &caller, &actor) {
            Ok((cgroup, hide)) => {
                Response::ActorCgroup { cgroup, confined: hide.is_some(), hide: hide.unwrap_or_default() }
            }
            Err(message) => Response::Error { message },
        },
    };
    send(&mut write, &response).await
}

async fn send(write: &mut OwnedWriteHalf, response: &Response) -> anyhow::Result<()> {
    let mut out = serde_json::to_vec(response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Runs a device login, sending the prompt as soon as the issuer gave it;
/// stops waiting when the CLI goes away (Ctrl-C).
async fn login(
    logins: &Logins,
    caller: &ProcessInfo,
    read: &mut tokio::io::Take<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> anyhow::Result<Response> {
    let (prompt_tx, mut prompt_rx) = tokio::sync::mpsc::unbounded_channel();
    let login = logins.login(caller, move |prompt| drop(prompt_tx.send(prompt)));
    tokio::pin!(login);
    let mut hung_up = [0u8; 1];
    loop {
        tokio::select! {
            result = &mut login => return Ok(answer(result)),
            Some(prompt) = prompt_rx.recv() => send(write, &Response::DevicePrompt(prompt)).await?,
            _ = read.read(&mut hung_up) => anyhow::bail!("the CLI left before the login finished"),
        }
    }
}

fn whoami(state: &AgentState, caller: &ProcessInfo) -> Response {
    if let Some(logins) = &state.logins {
        return match logins.whoami(caller) {
            Some(info) => Response::Login(Box::new(info)),
            None => Response::Error { message: "not logged in to Airlock here; run: airlock login".into() },
        };
    }
    match state.identity.identify(caller) {
        Ok(identity) => Response::Login(Box::new(LoginInfo {
            identity,
            expires_at: None,
            bound_to: "local Unix account (no OIDC issuer configured)".into(),
            refreshes: false,
        })),
        Err(error) => Response::Error { message: error.to_string() },
    }
}

fn answer(result: Result<LoginInfo, LoginError>) -> Response {
    match result {
        Ok(info) => Response::Login(Box::new(info)),
        Err(error) => Response::Error { message: error.to_string() },
    }
}

fn no_issuer() -> Response {
    Response::Error {
        message: "this agent has no OIDC issuer configured ([oidc] in its config): connections are attributed \
                  to local Unix accounts and need no login"
            .into(),
    }
}

fn status(state: &AgentState, caller_uid: u32) -> Response {
    let counters = match state.interceptor.counters() {
        Ok(counters) => counters,
        Err(error) => return Response::Error { message: error.to_string() },
    };
    let all_sessions = is_admin(caller_uid, state.config.admin_group.as_deref());
    let targets = state
        .policy()
        .targets
        .iter()
        .map(|t| TargetStatus {
            id: t.id,
            name: t.name.clone(),
            protocol: t.protocol.to_string(),
            port: t.port,
            networks: t.networks.iter().map(ToString::to_string).collect(),
            description: t.description.clone(),
            redirected: counters.per_target.get(&t.id).copied().unwrap_or(0),
        })
        .collect();
    Response::Status(Box::new(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_s: state.started.elapsed().as_secs(),
        cgroup: state.interceptor.cgroup().display().to_string(),
        programs: state.interceptor.attached().to_vec(),
        targets,
        sessions: state.sessions.summaries((!all_sessions).then_some(caller_uid)),
        all_sessions,
        counters,
        approvals_exchange: state.exchange.as_ref().map(|exchange| exchange.health()),
        rotations: if all_sessions { state.rotations.status(&state.policy()) } else { Vec::new() },
    }))
}

/// Moves the caller into a new cgroup of actor `name`, if policy lets the
/// caller start it and the caller is no actor itself (what an actor runs
/// stays its own, never relabelled); records it either way.
fn run_as_actor(state: &AgentState, caller: &ProcessInfo, name: &str) -> Result<(String, Option<Vec<String>>), String> {
    let policy = state.policy();
    let identity = caller_identity(state, caller)?;
    let outcome = (|| {
        let definition = policy
            .actors
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| format!("no actor {name:?} in this host's policy"))?;
        if !crate::policy::matches_subject(&definition.run_by_users, &definition.run_by_groups, &identity.as_subject())
        {
            return Err(format!(
                "policy does not let {} start commands as actor {name:?} (run_by_users, run_by_groups)",
                identity.user
            ));
        }
        // Starting the same actor again is no relabelling.
        if let Some(actor) = identity.actor.as_ref().filter(|actor| actor.name != name) {
            return Err(format!(
                "this command already runs as actor {:?} ({}): what an actor runs stays its own",
                actor.name, actor.matched_by
            ));
        }
        let cgroups = state
            .actor_cgroups
            .as_ref()
            .ok_or("this agent has no cgroup for actors (see its log): `airlock run` is unavailable")?;
        let confine = |cgroup_id| {
            if !definition.confine {
                return Ok(());
            }
            crate::actors::confine::refresh_host_addresses(&state.interceptor);
            state.interceptor.confine(cgroup_id).map_err(std::io::Error::other)
        };
        let dir = cgroups
            .launch(name, caller.uid, caller.pid, confine)
            .map_err(|e| format!("moving you into a cgroup: {e}"))?;
        if let (true, Some(session)) = (definition.taint_session, caller.audit_session) {
            state.actors.taint(session, name);
        }
        let relative = dir.strip_prefix(&state.cgroup_root).map(|p| format!("/{}", p.display()));
        let relative = relative.map_err(|_| "the actor cgroup is outside the hierarchy".to_owned())?;
        Ok((relative, definition.confine.then(|| definition.hide.clone())))
    })();
    let detail = match &outcome {
        Ok((cgroup, hide)) => serde_json::json!({ "actor": name, "cgroup": cgroup, "confined": hide.is_some() }),
        Err(error) => serde_json::json!({ "actor": name, "refused": error }),
    };
    let event = crate::audit::Event {
        kind: "actor.run",
        session: None,
        identity: Some(&identity),
        process: Some(caller),
        target: None,
        detail,
    };
    if let Err(error) = state.audit.append(event) {
        return Err(format!("the audit log cannot be written: {error}"));
    }
    outcome
}

/// Who is calling, as the kernel and the identity provider say, and what:
/// an actor (an AI agent, a bot) calling is marked as one, so it decides
/// no approvals, not even as the person it runs as.
fn caller_identity(state: &AgentState, caller: &ProcessInfo) -> Result<crate::identity::Identity, String> {
    let mut identity = state.identity.identify(caller).map_err(|error| format!("who are you? {error}"))?;
    identity.actor = state.actors.recognise(&state.policy().actors, caller, std::path::Path::new("/proc"));
    Ok(identity)
}

/// Root, or a member of the configured admin group.
fn is_admin(uid: u32, admin_group: Option<&str>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) = admin_group else { return false };
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else { return false };
    let Ok(name) = std::ffi::CString::new(user.name) else { return false };
    nix::unistd::getgrouplist(&name, user.gid)
        .unwrap_or_default()
        .into_iter()
        .any(|gid| matches!(nix::unistd::Group::from_gid(gid), Ok(Some(g)) if g.name == group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_and_unknown_uid_is_not() {
        assert!(is_admin(0, None));
        assert!(!is_admin(3_999_999_999, Some("root")));
        assert!(!is_admin(65534, None));
    }
}
