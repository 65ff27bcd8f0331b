//! SSH proxy for targets with `[target.ssh]`.
//!
//! Airlock ends the client's SSH session itself (russh server) with a host
//! certificate for the host the client dialled, signed by its host CA, and
//! authenticates the client by who opened the connection (the client needs
//! no key: any method is accepted for a login name policy grants that
//! person). It then logs in to the target (russh client) with a fresh key
//! and a user certificate for that login name that lives minutes, and
//! relays each channel: shells with pty and window changes, exec,
//! subsystems (sftp), env, exit status and signals. Exec commands pass the
//! target's command rules (deny, or hold for approval), and terminal output
//! is recorded as asciicast.

pub mod ca;
mod channel;
mod typed;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use russh::{
    Channel, ChannelId, MethodKind, MethodSet,
    client::{self, AuthResult},
    keys::{PublicKey, ssh_key::HashAlg},
    server::{self, Auth, ChannelOpenHandle, Msg, Session},
};
use serde_json::json;
use tokio::net::TcpStream;

use crate::{
    approvals::Approvals,
    audit::{AuditLog, Event},
    credentials::openbao::{BaoToken, OpenBao},
    daemon::sessions::LiveSession,
    guardrails::ApprovalPolicy,
    policy::ssh::{SshOptions, UserCa},
};

/// Why an SSH session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The SSH protocol failed on either side.
    #[error("ssh: {0}")]
    Protocol(#[from] russh::Error),
    /// Ended from outside (the person's access ended), for this reason.
    #[error("{0}")]
    Ended(String),
    /// No certificate could be made.
    #[error(transparent)]
    Ca(#[from] ca::SshCaError),
}

/// What every SSH session of the agent shares.
#[derive(Clone)]
pub struct Shared {
    /// Audit log.
    pub audit: Arc<AuditLog>,
    /// The SSH CAs.
    pub ca: Arc<ca::SshCa>,
    /// Pending approvals, for held commands.
    pub approvals: Arc<Approvals>,
    /// Where recordings go (`audit_dir/recordings`).
    pub recordings: PathBuf,
}

/// The policy of one session's target.
#[derive(Clone)]
pub struct TargetPolicy {
    /// `[target.ssh]`.
    pub options: SshOptions,
    /// Who approves held commands, if the target has `[target.approvals]`.
    pub approvals: Option<ApprovalPolicy>,
}

/// Everything a session's handler and channels need, owned.
pub(crate) struct Context {
    shared: Shared,
    policy: TargetPolicy,
    session: Arc<LiveSession>,
    /// Channels recorded so far, to name the second and later recordings.
    recordings: AtomicU32,
    /// The address the client dialled, which Airlock logs in to.
    destination: SocketAddr,
}

impl Context {
    fn audit(&self, kind: &str, detail: serde_json::Value) -> bool {
        let s = &self.session;
        let event = Event {
            kind,
            session: Some(&s.id),
            identity: Some(&s.identity),
            process: Some(&s.process),
            target: Some(&s.target),
            detail,
        };
        match self.shared.audit.append(event) {
            Ok(_) => true,
            Err(error) => {
                tracing::error!(%error, kind, session = %s.id, "audit record lost");
                false
            }
        }
    }
}

/// Runs an SSH session: `client` is the redirected connection, `upstream`
/// the TCP connection to the target at `destination`.
pub async fn proxy(
    client: TcpStream,
    upstream: TcpStream,
    shared: &Shared,
    policy: TargetPolicy,
    session: Arc<LiveSession>,
    destination: SocketAddr,
) -> Result<(), SshError> {
    let names = host_names(destination.ip(), &policy.options);
    let config = server_config(&shared.ca, &names)?;
    let context =
        Arc::new(Context { shared: shared.clone(), policy, session, recordings: AtomicU32::new(0), destination });
    let handler = ClientSide { context: Arc::clone(&context), upstream: Some(upstream), state: State::Unauthenticated };
    let running = server::run_stream(Arc::new(config), client, handler).await?;
    let handle = running.handle();
    tokio::select! {
        ended = running => Ok(ended?),
        reason = context.session.ending.wait() => {
            let message = format!("airlock: {reason}");
            let _ = handle.disconnect(russh::Disconnect::ByApplication, message, "en".into()).await;
            Err(SshError::Ended(reason))
        }
    }
}

/// The names the host certificate carries: the dialled address, then the policy's host names.
pub fn host_names(destination: IpAddr, options: &SshOptions) -> Vec<String> {
    let mut names = vec![destination.to_string()];
    names.extend(options.host_names.iter().cloned());
    names
}

/// The longest a refused client may take to read why.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns a client away in SSH: it verifies the host certificate as usual,
/// is let in, and each session channel gets `message` on stderr and exit status 1.
pub async fn refuse(client: TcpStream, ca: &ca::SshCa, names: &[String], message: &str) -> Result<(), SshError> {
    let config = server_config(ca, names)?;
    let handler = Refusing { message: format!("{message}\r\n") };
    let running = server::run_stream(Arc::new(config), client, handler).await?;
    match tokio::time::timeout(REFUSAL_TIMEOUT, running).await {
        Ok(ended) => Ok(ended?),
        Err(_) => Ok(()),
    }
}

/// Algorithms asked of the target. With AES-NI and carry-less multiply,
/// AES-GCM costs a fraction of ChaCha20-Poly1305 (whose Poly1305 has no
/// vector code here), and the agent pays for the cipher twice per byte:
/// once towards the client, once towards the target.
fn upstream_algorithms() -> russh::Preferred {
    use russh::cipher::{AES_128_CTR, AES_192_CTR, AES_256_CTR, AES_256_GCM, CHACHA20_POLY1305};
    static AES_FIRST: &[russh::cipher::Name] = &[AES_256_GCM, CHACHA20_POLY1305, AES_256_CTR, AES_192_CTR, AES_128_CTR];
    #[cfg(target_arch = "x86_64")]
    let hardware_aes = std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let hardware_aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let hardware_aes = false;
    if hardware_aes {
        russh::Preferred { cipher: std::borrow::Cow::Borrowed(AES_FIRST), ..Default::default() }
    } else {
        russh::Preferred::default()
    }
}

fn server_config(ca: &ca::SshCa, names: &[String]) -> Result<server::Config, SshError> {
    let host = ca.host_certificate(names)?;
    Ok(server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-Airlock".into()),
        methods: MethodSet::from(&[MethodKind::None, MethodKind::PublicKey, MethodKind::KeyboardInteractive][..]),
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host.key.clone()],
        certificates: vec![host.certificate.clone()],
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    })
}

/// The server side of a refused connection.
struct Refusing {
    message: String,
}

impl server::Handler for Refusing {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(&mut self, _user: &str, _key: server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        tokio::spawn(channel::refuse(channel, self.message.clone()));
        Ok(())
    }
}

enum State {
    Unauthenticated,
    /// Logged in upstream as `principal`.
    Ready {
        upstream: client::Handle<UpstreamSide>,
        principal: String,
    },
    /// The login was refused; channels tell the client why and close.
    Refused(String),
}

struct ClientSide {
    context: Arc<Context>,
    upstream: Option<TcpStream>,
    state: State,
}

impl ClientSide {
    /// Any method the client offers lets it in as the person the connection
    /// belongs to; what the login name may do is decided here.
    async fn login(&mut self, login: &str) -> Auth {
        if !matches!(self.state, State::Unauthenticated) {
            return Auth::Accept;
        }
        self.state = match self.upstream_login(login).await {
            Ok((upstream, detail)) => {
                self.context.audit("ssh.login", detail);
                State::Ready { upstream, principal: login.to_owned() }
            }
            Err(reason) => {
                self.context.audit("ssh.login_refused", json!({ "principal": login, "reason": reason }));
                State::Refused(reason)
            }
        };
        Auth::Accept
    }

    async fn upstream_login(
        &mut self,
        login: &str,
    ) -> Result<(client::Handle<UpstreamSide>, serde_json::Value), String> {
        let context = &self.context;
        let identity = &context.session.identity;
        let subject = identity.as_subject();
        let principal = context.policy.options.principal_for(login, &subject)?;
        let ttl = context.policy.options.cert_ttl;
        let key_id = format!("airlock {} session {}", identity.subject, context.session.id);
        let certified = match &context.policy.options.ca {
            UserCa::Embedded => context
                .shared
                .ca
                .user_certificate(&principal.name, ttl, &key_id)
                .map_err(|e| format!("no certificate: {e}"))?,
            UserCa::OpenBao { addr, token_file, mount, role, ca_file } => {
                let client = OpenBao {
                    addr: addr.clone(),
                    token: BaoToken::File(token_file.clone()),
                    mount: mount.clone(),
                    ca_file: ca_file.clone(),
                };
                let key = ca::new_key("airlock-session").map_err(|e| format!("no key: {e}"))?;
                let public = key.public_key().to_openssh().map_err(|e| format!("no key: {e}"))?;
                let signed = client
                    .sign_ssh(role, &public, &principal.name, ttl)
                    .await
                    .map_err(|e| format!("no certificate: {e}"))?;
                let certificate = russh::keys::Certificate::from_openssh(&signed)
                    .map_err(|e| format!("OpenBao's certificate does not parse: {e}"))?;
                ca::CertifiedKey { key, certificate }
            }
        };
        let stream = self.upstream.take().ok_or("the target connection is already used")?;
        let config = client::Config {
            nodelay: true,
            inactivity_timeout: None,
            preferred: upstream_algorithms(),
            ..Default::default()
        };
        let known_hosts = match &context.policy.options.known_hosts {
            Some(path) => KnownHosts::Policy(path.clone()),
            None => KnownHosts::Pinned(context.shared.ca.pinned_host_keys()),
        };
        let upstream_side = UpstreamSide { seen: Arc::default(), known_hosts, destination: context.destination };
        let seen = Arc::clone(&upstream_side.seen);
        let connected = client::connect_stream(Arc::new(config), stream, upstream_side).await;
        let mut upstream = connected.map_err(|e| {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            match (e, &seen.verdict) {
                (russh::Error::UnknownKey, Some(HostKeyVerdict::Refused(why))) => why.clone(),
                (e, _) => format!("the target's SSH server: {e}"),
            }
        })?;
        let serial = certified.certificate.serial();
        let valid_before = certified.certificate.valid_before();
        let result = upstream
            .authenticate_openssh_cert(principal.name.clone(), Arc::new(certified.key), certified.certificate)
            .await
            .map_err(|e| format!("logging in to the target: {e}"))?;
        if !matches!(result, AuthResult::Success) {
            return Err(format!(
                "the target refused Airlock's certificate for \"{}\" (is Airlock's user CA in its TrustedUserCAKeys?)",
                principal.name
            ));
        }
        let (fingerprint, learned) = {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            (seen.fingerprint.clone(), matches!(seen.verdict, Some(HostKeyVerdict::Learned)))
        };
        let ca_name = match context.policy.options.ca {
            UserCa::Embedded => "embedded",
            UserCa::OpenBao { .. } => "openbao",
        };
        let detail = json!({
            "principal": principal.name,
            "ca": ca_name,
            "cert_serial": serial,
            "cert_valid_before": valid_before,
            "target_host_key": fingerprint,
            "target_host_key_learned": learned,
        });
        Ok((upstream, detail))
    }
}

impl server::Handler for ClientSide {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        Ok(self.login(user).await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        _offer: server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.login(user).await)
    }

    async fn auth_publickey(&mut self, user: &str, _key: server::VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        Ok(self.login(user).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        _response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(self.login(user).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match &self.state {
            State::Ready { upstream, principal } => match upstream.channel_open_session().await {
                Ok(upstream_channel) => {
                    reply.accept().await;
                    let bridge = channel::SessionBridge::new(
                        Arc::clone(&self.context),
                        session.handle(),
                        channel,
                        upstream_channel,
                        principal.clone(),
                    );
                    tokio::spawn(bridge.run());
                }
                Err(error) => {
                    tracing::info!(%error, "target refused a session channel");
                    reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                }
            },
            State::Refused(reason) => {
                reply.accept().await;
                tokio::spawn(channel::refuse(channel, format!("airlock: {reason}\r\n")));
            }
            State::Unauthenticated => reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await,
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let State::Ready { upstream, .. } = &self.state else {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        let allowed = self.context.policy.options.allow_port_forwarding;
        self.context
            .audit("ssh.port_forward", json!({ "host": host_to_connect, "port": port_to_connect, "allowed": allowed }));
        if !allowed {
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        let opened = upstream
            .channel_open_direct_tcpip(host_to_connect, port_to_connect, originator_address, originator_port)
            .await;
        match opened {
            Ok(upstream_channel) => {
                reply.accept().await;
                tokio::spawn(channel::forward(channel, upstream_channel, Arc::clone(&self.context)));
            }
            Err(error) => {
                tracing::info!(%error, "target refused a forwarded channel");
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    async fn channel_eof(&mut self, _channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The target side: checks the target's host key and records what it saw.
struct UpstreamSide {
    seen: Arc<std::sync::Mutex<SeenHostKey>>,
    known_hosts: KnownHosts,
    destination: SocketAddr,
}

/// Where a target's host key must be found.
enum KnownHosts {
    /// The policy's known_hosts file: a key not in it is refused.
    Policy(PathBuf),
    /// Airlock's own file of keys as first seen (as `ssh` with
    /// `StrictHostKeyChecking=accept-new`): a target's first key is
    /// learned, a later different one refused.
    Pinned(PathBuf),
}

/// The target's host key, for the audit record and the client's error.
#[derive(Default)]
struct SeenHostKey {
    fingerprint: Option<String>,
    verdict: Option<HostKeyVerdict>,
}

/// What became of the target's host key.
enum HostKeyVerdict {
    /// Found where it must be.
    Known,
    /// Pinned at this connection, the first to the target.
    Learned,
    /// Refused; why, for the client.
    Refused(String),
}

impl client::Handler for UpstreamSide {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &russh::keys::PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key: PublicKey = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => PublicKey::new(cert.public_key().clone(), ""),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let (host, port) = (self.destination.ip().to_string(), self.destination.port());
        let verdict = match &self.known_hosts {
            // A changed key, an unreadable file or no entry: not this target.
            KnownHosts::Policy(path) => match russh::keys::check_known_hosts_path(&host, port, &key, path) {
                Ok(true) => HostKeyVerdict::Known,
                _ => {
                    HostKeyVerdict::Refused(format!("the target's host key {fingerprint} is not in {}", path.display()))
                }
            },
            KnownHosts::Pinned(path) => match russh::keys::check_known_hosts_path(&host, port, &key, path) {
                Ok(true) => HostKeyVerdict::Known,
                Ok(false) => match russh::keys::known_hosts::learn_known_hosts_path(&host, port, &key, path) {
                    Ok(()) => HostKeyVerdict::Learned,
                    Err(error) => HostKeyVerdict::Refused(format!(
                        "recording the target's host key in {}: {error}",
                        path.display()
                    )),
                },
                Err(russh::keys::Error::KeyChanged { line }) => HostKeyVerdict::Refused(format!(
                    "the target's host key {fingerprint} differs from the one Airlock recorded at its first \
                     connection (line {line} of {}); if the target's key was changed on purpose, an administrator \
                     removes that line",
                    path.display()
                )),
                Err(error) => HostKeyVerdict::Refused(format!("reading {}: {error}", path.display())),
            },
        };
        let accepted = !matches!(verdict, HostKeyVerdict::Refused(_));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) =
            SeenHostKey { fingerprint: Some(fingerprint), verdict: Some(verdict) };
        Ok(accepted)
    }
}
