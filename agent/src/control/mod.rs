//! The CLI ↔ agent control channel: a Unix socket, one JSON request line and
//! one JSON response line per connection (a login answers twice: what to
//! do, then the outcome). The caller is identified by the
//! kernel (SO_PEERCRED), never by anything it sends.

mod caller;
pub mod client;
mod remote;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::{daemon::sessions::SessionSummary, intercept::AttachedProgram, intercept::Counters};

/// What the CLI asks.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Agent state, for `airlock status`.
    Status,
    /// Pending approval requests the caller may decide, and the caller's own.
    Approvals,
    /// Approve or deny a pending request.
    Decide {
        /// Request id.
        id: String,
        /// True to approve, false to deny.
        approve: bool,
        /// Why, for the record and the requester.
        reason: Option<String>,
    },
    /// Log the caller in by the issuer's device flow (`airlock login`). The
    /// agent answers [`Response::DevicePrompt`] first, then
    /// [`Response::Login`] once the person approved (or an error).
    Login,
    /// Bind a CI job's token to the caller's cgroup (`airlock login
    /// --token-file`).
    LoginJob {
        /// The job's OIDC token.
        token: crate::secret::Secret,
    },
    /// Who the caller is attributed to (`airlock whoami`).
    Whoami,
    /// End the caller's login (`airlock logout`).
    Logout,
    /// The agent's metrics (OpenMetrics text) and health
    /// (`airlock status --metrics`).
    Metrics,
    /// Rotate a target's long-lived secret now (`airlock rotate`); root or
    /// the admin group only.
    Rotate {
        /// Target name.
        target: String,
        /// No grace period: the old secret stops working at once.
        now: bool,
    },
    /// Move the caller into a new cgroup labelled as `actor`, before it
    /// runs a command there (`airlock run --actor`).
    RunAsActor {
        /// The `[[actor]]` name.
        actor: String,
    },
}

/// What the agent answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status(Box<Status>),
    /// Answer to [`Request::Approvals`].
    Approvals(Vec<crate::approvals::ApprovalRequest>),
    /// Answer to [`Request::Decide`]: the request as decided.
    Decided(crate::approvals::ApprovalRequest),
    /// First answer to [`Request::Login`]: what the person must do.
    DevicePrompt(crate::identity::oidc::DevicePrompt),
    /// Answer to [`Request::Login`], [`Request::LoginJob`],
    /// [`Request::Whoami`] and [`Request::Logout`]: the login concerned.
    Login(Box<crate::identity::oidc::LoginInfo>),
    /// Answer to [`Request::RunAsActor`]: the caller is now in this cgroup.
    ActorCgroup {
        /// The cgroup's path from the hierarchy root.
        cgroup: String,
        /// The actor is confined: the CLI confines itself (`cli::confine`)
        /// before it becomes the command.
        #[serde(default)]
        confined: bool,
        /// With `confined`, the actor's own paths to hide (`hide`).
        #[serde(default)]
        hide: Vec<String>,
    },
    /// Answer to [`Request::Metrics`].
    Metrics {
        /// OpenMetrics text.
        text: String,
        /// Whether the agent is healthy and ready, and what is wrong.
        health: crate::daemon::observe::Health,
    },
    /// Answer to [`Request::Rotate`].
    Rotated(crate::credentials::rotation::RotationReport),
    /// The request failed or was not allowed.
    Error {
        /// Why, for the person at the terminal.
        message: String,
    },
}

/// The agent's state as `airlock status` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// Agent version.
    pub version: String,
    /// Agent pid.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: u64,
    /// cgroup the programs are attached at.
    pub cgroup: String,
    /// Attached programs.
    pub programs: Vec<AttachedProgram>,
    /// Protected targets.
    pub targets: Vec<TargetStatus>,
    /// Live sessions (only the caller's own unless the caller is an admin).
    pub sessions: Vec<SessionSummary>,
    /// Whether `sessions` lists everyone's sessions.
    pub all_sessions: bool,
    /// eBPF counters.
    pub counters: Counters,
    /// Approvals across hosts: whether OpenBao answers.
    #[serde(default)]
    pub approvals_exchange: Option<crate::approvals::exchange::ExchangeHealth>,
    /// Rotation of each target's long-lived secret.
    #[serde(default)]
    pub rotations: Vec<crate::credentials::rotation::RotationStatus>,
}

/// One protected target.
#[derive(Debug, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Target id.
    pub id: u32,
    /// Name from policy.
    pub name: String,
    /// Protocol from policy.
    pub protocol: String,
    /// Protected port.
    pub port: u16,
    /// Protected networks.
    pub networks: Vec<String>,
    /// Free text from policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Connections redirected since the maps were created.
    pub redirected: u64,
}
