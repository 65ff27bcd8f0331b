//! `airlock agent`: start-up, the accept loop and shutdown.
//!
//! Start-up order matters. Everything that needs privilege happens first, on
//! the main thread, before the async runtime starts any thread: move into the
//! agent's own cgroup (whose id exempts its upstream connections), open the
//! audit log (no session may run unrecorded), bind the listeners and the
//! control socket, attach the programs. Then capabilities are dropped for
//! good (they are per thread, so this must precede the runtime's threads),
//! and only then is systemd told the agent is ready.

pub mod access;
mod connection;
mod notify;
pub mod observe;
pub mod priority;
mod privileges;
pub mod sessions;

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use std::os::unix::fs::DirBuilderExt as _;

use airlock_ebpf::TargetValue;
use anyhow::Context as _;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{
    audit::{AuditLog, Event},
    config::Config,
    control,
    identity::{
        IdentityProvider, UnixIdentityProvider,
        oidc::{Logins, OidcIdentityProvider},
    },
    intercept::{Interceptor, TargetEntry, cgroup},
    policy::Policy,
};
use sessions::Sessions;

/// Everything a connection handler or a control request needs.
pub struct AgentState {
    /// The agent's configuration.
    pub config: Config,
    /// The policy in force; replaced whole on reload (SIGHUP).
    policy: RwLock<Arc<Policy>>,
    /// The audit log.
    pub audit: Arc<AuditLog>,
    /// PostgreSQL statement records, written in batches by one task.
    pub statements: crate::proxy::postgres::recorder::StatementLog,
    /// The eBPF programs and maps.
    pub interceptor: Interceptor,
    /// Attributes processes to people.
    pub identity: Box<dyn IdentityProvider>,
    /// OIDC logins, when an issuer is configured.
    pub logins: Option<Arc<Logins>>,
    /// Where the cgroup2 hierarchy is mounted.
    pub cgroup_root: PathBuf,
    /// Live sessions.
    pub sessions: Arc<Sessions>,
    /// PostgreSQL cancel keys handed to clients.
    pub cancel_keys: crate::proxy::postgres::cancel::CancelKeys,
    /// Just-in-time database logins.
    pub credentials: Arc<crate::credentials::Engine>,
    /// Rotation of the long-lived secrets behind them.
    pub rotations: Arc<crate::credentials::rotation::Rotations>,
    /// Signs the certificates Airlock shows clients when it terminates TLS.
    pub ca: Arc<crate::proxy::ca::HostCa>,
    /// Key of deterministic masking tokens (root-only file in the state directory).
    pub masking_key: Arc<crate::masking::TokenKey>,
    /// Redacts HTTP bodies kept for records (`record_bodies`), built once.
    pub body_redactor: Arc<crate::proxy::https::BodyRedactors>,
    /// Names of result columns, cached for all sessions.
    pub catalog: crate::proxy::postgres::catalog::Catalog,
    /// Statement classifications, cached by text for all sessions.
    pub classifier: crate::guardrails::Classifier,
    /// Statements and commands waiting for a person's approval.
    pub approvals: Arc<crate::approvals::Approvals>,
    /// Signs SSH host certificates shown to clients and sessions' user certificates.
    pub ssh_ca: Arc<crate::proxy::ssh::ca::SshCa>,
    /// Recognises the actors behind connections.
    pub actors: crate::actors::Recogniser,
    /// Where `airlock run --actor` puts commands; `None` if the agent could
    /// not make its cgroup directory (then `airlock run` is refused).
    pub actor_cgroups: Option<crate::actors::launch::ActorCgroups>,
    /// Approvals across hosts through OpenBao, when configured.
    pub exchange: Option<Arc<crate::approvals::exchange::Exchange>>,
    /// When the agent started.
    pub started: Instant,
    /// Set once the agent serves (what `/readyz` reports).
    pub ready: std::sync::atomic::AtomicBool,
}

impl AgentState {
    /// The policy in force now. Each connection decides under one snapshot.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Runs the agent until SIGTERM or SIGINT; SIGHUP reloads the policy.
pub fn run(config: Config) -> anyhow::Result<()> {
    // First: every thread the agent starts inherits it.
    priority::set(config.nice);
    let policy = Policy::load_dir(&config.policies_dir)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading policies from {}", config.policies_dir.display()))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.state_dir)
        .with_context(|| format!("creating {}", config.state_dir.display()))?;
    let cgroup_root = cgroup::cgroup2_root()?;
    let (agent_cgroup, agent_dir) = place_agent(&config, &cgroup_root)?;
    let attach_cgroup = config.cgroup.clone().unwrap_or_else(|| cgroup_root.clone());
    let audit = Arc::new(AuditLog::open_with(&config.audit_dir, audit_settings(&config)?)?);
    let listeners = bind_listeners(&config)?;
    let control = control::server::bind(&config.control_socket)?;
    let metrics_listener = config.metrics.listen.map(observe::bind).transpose()?;
    let targets = target_entries(&policy, config.listener.port);
    let interceptor = Interceptor::install(&config.bpffs_dir, &attach_cgroup, agent_cgroup, &targets)?;
    // Under systemd, in the service's own (delegated) cgroup; else where
    // the programs are attached.
    let under_systemd = config.agent_cgroup.is_none() && std::env::var_os("INVOCATION_ID").is_some();
    let actor_parent = if under_systemd { &agent_dir } else { &attach_cgroup };
    let actor_cgroups = crate::actors::launch::ActorCgroups::open(&cgroup_root, actor_parent)
        .inspect_err(|error| tracing::warn!(%error, "no cgroup for `airlock run --actor`; it will be refused"))
        .ok();
    let actor_base = actor_cgroups
        .as_ref()
        .map_or_else(|| format!("/{}", crate::actors::launch::BASE_DIR), |cgroups| cgroups.base().to_owned());
    crate::actors::confine::refresh_host_addresses(&interceptor);
    let credentials = Arc::new(crate::credentials::Engine::open(&config.state_dir, Arc::clone(&audit))?);
    let ca = Arc::new(crate::proxy::ca::HostCa::load_or_create(&config.state_dir.join("tls"))?);
    let ssh_ca = Arc::new(crate::proxy::ssh::ca::SshCa::load_or_create(&config.state_dir.join("ssh"))?);
    let sweep_start = start_secret_sweep(&config, &audit)?;
    privileges::drop_all_but_runtime_needs()?;

    // /proc read once, whatever the number of saved sessions; unreadable,
    // every saved taint is kept (fail closed).
    let live = crate::actors::taints::live_sessions(std::path::Path::new("/proc"));
    let tainted = crate::actors::taints::Taints::load(config.state_dir.join("actor-taints.json"), |session| {
        live.as_ref().is_none_or(|live| live.contains(&session))
    });
    let masking_key = Arc::new(crate::masking::TokenKey::load_or_create(&config.state_dir.join("masking.key"))?);
    let approvals = Arc::new(crate::approvals::Approvals::new(Arc::clone(&audit)));
    let exchange = match config.approvals.backend {
        crate::approvals::exchange::Backend::Local => None,
        crate::approvals::exchange::Backend::Openbao => Some(Arc::new(
            crate::approvals::exchange::Exchange::new(&config.approvals)
                .map_err(|e| anyhow::anyhow!("[approvals]: {e}"))?,
        )),
    };
    let (statements, statement_writer) = crate::proxy::postgres::recorder::StatementLog::new(Arc::clone(&audit));
    let logins = config.oidc.clone().map(|oidc| Arc::new(Logins::new(oidc, cgroup_root.clone(), Arc::clone(&audit))));
    let identity: Box<dyn IdentityProvider> = match &logins {
        Some(logins) => Box::new(OidcIdentityProvider::new(logins.bindings())),
        None => Box::new(UnixIdentityProvider::default()),
    };
    let ssh_ca_rotation = crate::credentials::rotation::SshCaRotation {
        ca: Arc::clone(&ssh_ca),
        rotation: crate::policy::Rotation {
            scheduled: config.ssh_ca.rotate,
            every: config.ssh_ca.rotate_every,
            grace: config.ssh_ca.rotation_grace,
            server: None,
            openbao_connection: None,
        },
    };
    let rotations = Arc::new(crate::credentials::rotation::Rotations::new(
        Arc::clone(&credentials),
        ssh_ca_rotation,
        Arc::clone(&audit),
        &config.state_dir,
    ));
    let state = Arc::new(AgentState {
        config,
        policy: RwLock::new(Arc::new(policy)),
        audit,
        statements,
        interceptor,
        identity,
        logins: logins.clone(),
        cgroup_root,
        sessions: Arc::new(Sessions::default()),
        cancel_keys: Default::default(),
        rotations,
        credentials,
        ca,
        body_redactor: Arc::new(crate::proxy::https::BodyRedactors::new(&masking_key)),
        masking_key,
        catalog: Default::default(),
        classifier: Default::default(),
        approvals,
        ssh_ca,
        actors: crate::actors::Recogniser::with_taints(actor_base, tainted),
        actor_cgroups,
        exchange: exchange.clone(),
        started: Instant::now(),
        ready: std::sync::atomic::AtomicBool::new(false),
    });
    // One thread runs every session, as an event loop: beside a database
    // and its clients on a small host, a second worker only adds wake-ups
    // between threads. Statement records are written on a thread of their own.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        statement_writer.spawn().context("starting the statement record writer")?;
        if let Some(exchange) = exchange {
            let (events, received) = tokio::sync::mpsc::unbounded_channel();
            state.approvals.connect_exchange(events, exchange.host().to_owned(), exchange.health_handle());
            let ending = Arc::clone(&state);
            let on_decided = Box::new(move |decided: &crate::approvals::Decided| {
                crate::daemon::access::end_when_window_closes(&ending, decided)
            });
            tokio::spawn(exchange.run(Arc::clone(&state.approvals), received, on_decided));
        }
        if let Some(logins) = logins {
            tokio::spawn(logins.maintain());
        }
        serve(state, listeners, control, metrics_listener, sweep_start).await
    })
}

/// Starts the secret sweep's thread (`[scan]`), before capabilities are
/// dropped: it keeps CAP_DAC_READ_SEARCH for itself. It begins once the
/// returned sender is told the agent has started; `None`: sweeps are off.
fn start_secret_sweep(config: &Config, audit: &Arc<AuditLog>) -> anyhow::Result<Option<std::sync::mpsc::Sender<()>>> {
    let sweeper =
        crate::scan::sweep::Sweeper::new(config, Arc::clone(audit)).map_err(|e| anyhow::anyhow!("[scan] {e}"))?;
    let (start, started) = std::sync::mpsc::channel();
    let thread = sweeper.spawn(started).context("starting the secret sweep")?;
    Ok(thread.map(|_| start))
}

/// The audit log's settings from `[audit]`, with the host signing key.
fn audit_settings(config: &Config) -> anyhow::Result<crate::audit::AuditSettings> {
    let audit = &config.audit;
    let group = match &audit.group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .context("looking up [audit] group")?
                .with_context(|| format!("[audit] group {name:?} does not exist"))?
                .gid
                .as_raw(),
        ),
        None => None,
    };
    let signer = crate::audit::signing::Signer::load_or_create(&config.state_dir.join("audit-signing.key"))?;
    Ok(crate::audit::AuditSettings {
        segment_max_bytes: audit.segment_max_mb.max(1) << 20,
        segment_max_age: std::time::Duration::from_secs(audit.segment_max_hours.max(1) * 3600),
        checkpoint_records: audit.checkpoint_records.max(1),
        checkpoint_interval: std::time::Duration::from_secs(audit.checkpoint_seconds.max(1)),
        fsync: audit.fsync,
        retain_age: audit.retain_days.map(|days| std::time::Duration::from_secs(days * 86_400)),
        retain_bytes: audit.retain_max_mb.map(|mb| mb << 20),
        group,
        signer: Some(signer),
    })
}

/// Moves the agent into the cgroup whose connections are exempt from
/// redirection, and returns that cgroup's id and directory.
fn place_agent(config: &Config, root: &std::path::Path) -> anyhow::Result<(u64, PathBuf)> {
    let dir: PathBuf = match &config.agent_cgroup {
        Some(dir) => {
            cgroup::join(dir)?;
            dir.clone()
        }
        // systemd already gave the service a cgroup of its own.
        None if std::env::var_os("INVOCATION_ID").is_some() => {
            root.join(cgroup::cgroup_of("self")?.trim_start_matches('/'))
        }
        None => {
            let dir = root.join("airlock.agent");
            cgroup::join(&dir)?;
            dir
        }
    };
    let id = cgroup::cgroup_id(&dir)?;
    tracing::info!(cgroup = %dir.display(), id, "agent cgroup (exempt from redirection)");
    Ok((id, dir))
}

async fn serve(
    state: Arc<AgentState>,
    listeners: Vec<std::net::TcpListener>,
    control: std::os::unix::net::UnixListener,
    metrics: Option<std::net::TcpListener>,
    sweep_start: Option<std::sync::mpsc::Sender<()>>,
) -> anyhow::Result<()> {
    let control = tokio::net::UnixListener::from_std(control)?;
    tokio::spawn(control::server::serve(control, Arc::clone(&state)));
    if let Some(metrics) = metrics {
        tokio::spawn(observe::serve(TcpListener::from_std(metrics)?, Arc::clone(&state)));
    }
    // Commands `airlock run` started leave their cgroups empty when done.
    let sweeping = Arc::clone(&state);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            sweep_actor_runs(&sweeping);
            crate::actors::confine::refresh_host_addresses(&sweeping.interceptor);
        }
    });
    let listeners = listeners.into_iter().map(TcpListener::from_std).collect::<Result<Vec<_>, _>>()?;

    let recovered = state.credentials.recover().await;
    if !recovered.is_empty() {
        tracing::warn!(roles = ?recovered, "dropped just-in-time roles an earlier run left behind");
        state.audit.append(Event {
            kind: "credential.recovered",
            session: None,
            identity: None,
            process: None,
            target: None,
            detail: json!({ "dropped_roles": recovered }),
        })?;
    }
    // After recovery: a rotation cut short resumes with the ledger clean.
    let policy_of = Arc::clone(&state);
    tokio::spawn(Arc::clone(&state.rotations).run(move || policy_of.policy()));
    state.audit.append(Event {
        kind: "agent.start",
        session: None,
        identity: None,
        process: None,
        target: None,
        detail: json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "cgroup": state.interceptor.cgroup(),
            "targets": target_names(&state.policy()),
        }),
    })?;
    if let Some(start) = sweep_start {
        // The sweep's thread may have ended (it logged why): nothing to start then.
        let _ = start.send(());
    }
    let addresses: Vec<_> = listeners.iter().map(|l| l.local_addr().ok()).collect();
    // Each loop takes its reserve descriptor before readiness is announced:
    // a ready agent can always refuse a connection in words.
    for listener in listeners {
        tokio::spawn(accept_loop(listener, spare_descriptor(), Arc::clone(&state)));
    }
    state.ready.store(true, std::sync::atomic::Ordering::Release);
    notify::ready(&ready_status(&state.policy()));
    tracing::info!(listeners = ?addresses, audit = %state.audit.path().display(), "agent ready");
    tokio::spawn(release_memory_when_idle(Arc::clone(&state)));
    handle_signals(&state).await?;
    // Statement records still queued go in before the last checkpoint.
    if tokio::time::timeout(Duration::from_secs(2), state.statements.flush()).await.is_err() {
        tracing::error!("statement records still queued at shutdown were not written within 2 s");
    }
    shutdown(&state);
    Ok(())
}

fn target_names(policy: &Policy) -> Vec<&str> {
    policy.targets.iter().map(|t| t.name.as_str()).collect()
}

fn ready_status(policy: &Policy) -> String {
    format!("intercepting {} targets", policy.targets.len())
}

/// Serves SIGHUP (reload) until SIGTERM or SIGINT.
async fn handle_signals(state: &AgentState) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => reload(state),
        }
    }
}

/// Removes the cgroups of `airlock run`s that ended, and forgets the
/// confinement of those that are gone.
fn sweep_actor_runs(state: &AgentState) {
    if let Some(cgroups) = &state.actor_cgroups {
        cgroups.sweep(|alive| {
            if let Err(error) = state.interceptor.release_confined_except(alive) {
                tracing::warn!(%error, "confinement of ended runs not released");
            }
        });
    }
}

/// Loads the policy directory again. A policy that does not load, or whose
/// targets cannot be published, changes nothing: the old one stays in force
/// and the failure is recorded with its reasons.
fn reload(state: &AgentState) {
    notify::reloading();
    let result = Policy::load_dir(&state.config.policies_dir).map_err(|e| e.to_string()).and_then(|policy| {
        let entries = target_entries(&policy, state.config.listener.port);
        match state.interceptor.sync_targets(&entries) {
            Ok(()) => Ok(policy),
            Err(error) => {
                // Put the previous targets back; a half-applied set must not stay.
                let previous = target_entries(&state.policy(), state.config.listener.port);
                if let Err(restore) = state.interceptor.sync_targets(&previous) {
                    tracing::error!(%restore, "could not restore the previous protected targets");
                }
                Err(error.to_string())
            }
        }
    });
    let (kind, detail) = match result {
        Ok(policy) => {
            let detail = json!({ "targets": target_names(&policy) });
            tracing::info!(targets = policy.targets.len(), "policy reloaded");
            *state.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
            ("policy.reload", detail)
        }
        Err(errors) => {
            tracing::error!("policy reload failed, previous policy stays in force:\n{errors}");
            ("policy.reload_failed", json!({ "errors": errors }))
        }
    };
    if let Err(error) =
        state.audit.append(Event { kind, session: None, identity: None, process: None, target: None, detail })
    {
        tracing::error!(%error, kind, "audit record lost");
    }
    notify::ready(&ready_status(&state.policy()));
}

async fn accept_loop(listener: TcpListener, mut spare: Option<std::fs::File>, state: Arc<AgentState>) {
    // A descriptor held in reserve. Out of descriptors (RLIMIT_NOFILE),
    // accept fails and the connection would wait in the backlog, its client
    // hanging without a word until some session ends; instead the reserve
    // is given up to take the connection, tell its client why in its own
    // protocol, record the refusal and close it, and is then taken again.
    let mut exhausted = false;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                exhausted = false;
                tokio::spawn(connection::handle(Arc::clone(&state), stream, peer));
            }
            Err(error) if out_of_descriptors(&error) => {
                if !exhausted {
                    tracing::error!(%error, "out of file descriptors: refusing new connections until sessions end");
                    exhausted = true;
                }
                // Nothing is awaited between giving the reserve up and taking
                // the connection: no other task can take the descriptor. (The
                // kernel reports EMFILE before it looks for a connection:
                // there may be none.)
                drop(spare.take());
                let waiting = socket2::SockRef::from(&listener).accept().ok().and_then(|(socket, peer)| {
                    let stream = std::net::TcpStream::from(socket);
                    stream.set_nonblocking(true).ok()?;
                    Some((tokio::net::TcpStream::from_std(stream).ok()?, peer.as_socket()?))
                });
                let refused = waiting.is_some();
                if let Some((stream, peer)) = waiting {
                    // Bounded: a client that does not read cannot hold the reserve.
                    let refusal = connection::refuse_out_of_descriptors(&state, stream, peer);
                    if tokio::time::timeout(Duration::from_secs(2), refusal).await.is_err() {
                        tracing::info!(%peer, "refusal not delivered within 2 s");
                    }
                }
                spare = spare_descriptor();
                // Still out: look again shortly (accept would fail at once).
                if !refused || spare.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(error) => {
                // Other failures (ENOBUFS, ENOMEM…): back off instead of spinning.
                tracing::error!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Gives the memory sessions used back to the system once the agent is
/// idle again: at the first three checks (every 5 s) that find no live
/// session after connections came in (what follows the last session, such
/// as dropping a just-in-time role after its grace, is released too), and
/// after start-up. mimalloc keeps freed pages for reuse; without this the
/// idle agent's RSS stayed near its peak's after a load (the soak: 56, 72,
/// 74 MB idle after three cycles peaking at 85 MB).
async fn release_memory_when_idle(state: Arc<AgentState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut releases) = (None, 0);
    loop {
        tick.tick().await;
        let opened = state.sessions.opened();
        if seen != Some(opened) {
            (seen, releases) = (Some(opened), 0);
        }
        if releases < 3 && state.sessions.is_empty() {
            release_free_memory();
            releases += 1;
        }
    }
}

/// mimalloc's collection: frees what the calling thread's heap and
/// abandoned segments hold and returns free pages to the system (each
/// thread that allocates much calls it for its own heap).
pub(crate) fn release_free_memory() {
    unsafe extern "C" {
        /// mimalloc's `mi_collect` (the agent's allocator, linked through
        /// the mimalloc crate; declared here, as that crate only exposes it
        /// with its `extended` feature).
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes a flag and may be called at any time.
    unsafe { mi_collect(true) };
}

/// The descriptor [`accept_loop`] keeps in reserve.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// EMFILE (the process's RLIMIT_NOFILE) or ENFILE (the system's file-max).
pub(crate) fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Binds the loopback listeners (non-blocking, for the runtime to adopt).
/// IPv6 may be missing on a host; then IPv6 connections to protected targets
/// are refused (fail closed), not bypassed.
fn bind_listeners(config: &Config) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        // A restarted agent must rebind while old connections sit in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        Ok(socket.into())
    };
    let port = config.listener.port;
    let mut listeners = Vec::new();
    if config.listener.ipv4 {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        listeners.push(bind(addr).with_context(|| format!("binding {addr}"))?);
    }
    if config.listener.ipv6 {
        let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        match bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                tracing::warn!(%addr, %error, "no IPv6 listener; IPv6 connections to protected targets will fail")
            }
        }
    }
    anyhow::ensure!(!listeners.is_empty(), "no listener configured (listener.ipv4 and listener.ipv6 are both off)");
    Ok(listeners)
}

/// The trie entries for a policy: one per (target, network).
pub fn target_entries(policy: &Policy, redirect_port: u16) -> Vec<TargetEntry> {
    policy
        .targets
        .iter()
        .flat_map(|target| {
            target.networks.iter().map(move |network| TargetEntry {
                port: target.port,
                addr: network.addr.octets(),
                prefix_len: network.prefix_len,
                value: TargetValue { target_id: target.id, redirect_port, _pad: 0 },
            })
        })
        .collect()
}

/// Records the end of every live session and of the agent. The pinned
/// programs stay: until an agent runs again, protected connections fail.
fn shutdown(state: &AgentState) {
    notify::stopping();
    for session in state.sessions.live() {
        let age = std::time::SystemTime::now().duration_since(session.started).unwrap_or_default();
        connection::close_record(state, &session, age, Some("agent shutting down"));
    }
    if let Err(error) = state.audit.append(Event {
        kind: "agent.stop",
        session: None,
        identity: None,
        process: None,
        target: None,
        detail: json!({ "pid": std::process::id() }),
    }) {
        tracing::error!(%error, "could not record agent stop");
    }
    if let Err(error) = state.audit.checkpoint_now() {
        tracing::error!(%error, "could not sign the audit log's last records");
    }
    tracing::info!("agent stopped; interception stays pinned (protected connections fail until restart)");
}
