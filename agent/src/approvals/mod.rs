//! Requests for a human's approval, and their decisions.
//!
//! A session whose statement is held files a request here and waits on it;
//! approvers list and decide requests through the control socket, where the
//! kernel (SO_PEERCRED) says who they are. Every request, decision and
//! expiry is audited before anyone acts on it: a decision that cannot be
//! recorded is not made.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use crate::{
    audit::{AuditError, AuditLog, Event, TargetRef},
    guardrails::ApprovalPolicy,
    identity::Identity,
};

/// Longest SQL text shown in a request.
const MAX_SHOWN_SQL: usize = 4096;

/// What a request asks for.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// One held statement, whose session waits.
    #[default]
    Statement,
    /// Access to a target for a while; nobody waits, the person connects again.
    Session,
}

/// A request as approvers see it (`airlock approvals`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// Short id approvers type.
    pub id: String,
    /// What it asks for.
    #[serde(default)]
    pub kind: RequestKind,
    /// Session that waits.
    pub session: String,
    /// Target name.
    pub target: String,
    /// Who asks (policy user name).
    pub requester: String,
    /// Unix uid of the requesting process.
    pub requester_uid: u32,
    /// The actor (an AI agent, a bot) that asks on the requester's behalf,
    /// if one does: approvers see that it is not the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Box<crate::actors::Actor>>,
    /// The host it waits on, for requests of other hosts (approvals
    /// across hosts); `None`: this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What waits: the statement, secrets redacted, truncated.
    pub statement: String,
    /// Why it is held.
    pub reason: String,
    /// Who may decide, in words.
    pub approvers: String,
    /// When it was made (RFC 3339).
    pub created: String,
    /// When it is denied if nobody decides (RFC 3339).
    pub expires: String,
    /// For a statement on a PostgreSQL target with just-in-time logins:
    /// what the requester's login can do, one line (added when approvers
    /// list requests; not part of the request as filed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast_radius: Option<String>,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let through.
    Approved {
        /// Approver's user name.
        by: String,
        /// Their reason, if they gave one.
        reason: Option<String>,
    },
    /// Refused by an approver.
    Denied {
        /// Approver's user name.
        by: String,
        /// Their reason, if they gave one.
        reason: Option<String>,
    },
    /// Nobody decided in time.
    Expired,
    /// The decision could not be recorded, so it does not count.
    Unrecorded,
}

impl Decision {
    /// What the waiting client is told when its statement does not run.
    pub fn refusal(&self, request: &ApprovalRequest) -> Option<String> {
        let because = |reason: &Option<String>| reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
        match self {
            Self::Approved { .. } => None,
            Self::Denied { by, reason } => Some(format!(
                "request {} was denied by {by}{}; talk to them before asking again",
                request.id,
                because(reason)
            )),
            Self::Expired => Some(format!(
                "request {} was not decided before {}; run it again to ask anew, and tell an approver \
                 ({}): they see waiting requests with `airlock approvals`",
                request.id, request.expires, request.approvers
            )),
            Self::Unrecorded => Some(format!(
                "request {}: the audit log cannot be written; tell this host's administrators",
                request.id
            )),
        }
    }
}

/// Why an approver's decision was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// No pending request has that id (decided, expired, or never made).
    #[error("no pending request {0} (it may have been decided or have expired)")]
    NotFound(String),
    /// People do not approve their own requests.
    #[error("you cannot decide your own request {0}")]
    OwnRequest(String),
    /// Actors (AI agents, bots) decide nothing.
    #[error(
        "request {0} cannot be decided by an actor (an AI agent, a bot): a person must, from a process of their own"
    )]
    ByActor(String),
    /// The caller is not among the target's approvers.
    #[error("you are not an approver for request {id}: {approvers} may decide it")]
    NotApprover {
        /// Request id.
        id: String,
        /// Who may.
        approvers: String,
    },
    /// The decision could not be recorded.
    #[error("the decision was not taken: {0}")]
    Audit(String),
}

struct Pending {
    request: ApprovalRequest,
    policy: ApprovalPolicy,
    target: TargetRef,
    /// Who asked, as identities name them.
    subject: String,
    /// The waiting session, for statements.
    decide: Option<oneshot::Sender<Decision>>,
    /// When an undecided request expires.
    deadline: SystemTime,
    /// Which blast-radius summary its listing shows.
    blast_key: Option<crate::blast_radius::summary::Key>,
}

/// Access to a target granted for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessGrant {
    /// Until when.
    pub until: SystemTime,
    /// Who approved it.
    pub by: String,
    /// The request that was approved.
    pub request: String,
}

/// Whether a person may open a session to a target that needs approval.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionAccess {
    /// Yes, within this grant.
    Granted(AccessGrant),
    /// Not yet: this request waits for an approver.
    Waiting(Box<ApprovalRequest>),
}

/// A decision as taken, for the approver and for whoever ends sessions at
/// the end of a granted access window.
#[derive(Debug, PartialEq, Eq)]
pub struct Decided {
    /// The request.
    pub request: ApprovalRequest,
    /// For an approved session request: the access window.
    pub access: Option<AccessGrant>,
    /// Subject of the requester.
    pub subject: String,
}

/// What a session needs to file a request.
pub struct NewRequest<'a> {
    /// Waiting session id.
    pub session: &'a str,
    /// Who asks.
    pub identity: &'a Identity,
    /// Which target.
    pub target: &'a TargetRef,
    /// The statement, already redacted.
    pub statement: &'a str,
    /// Why it is held.
    pub reason: &'a str,
    /// The target's approval rules.
    pub policy: &'a ApprovalPolicy,
    /// The requester's just-in-time login, whose blast radius approvers see.
    pub blast_radius: Option<&'a crate::blast_radius::summary::Query>,
}

/// A filed request the session waits on.
pub struct Waiter {
    /// The request as filed.
    pub request: ApprovalRequest,
    decision: oneshot::Receiver<Decision>,
    timeout: Duration,
}

/// Every pending request of the agent, and the access windows granted.
pub struct Approvals {
    audit: Arc<AuditLog>,
    pending: Mutex<HashMap<String, Pending>>,
    /// (subject, target name) → grant.
    access: Mutex<HashMap<(String, String), AccessGrant>>,
    /// With approvals across hosts: where filed and ended requests are
    /// told, and this host's name.
    exchange: std::sync::OnceLock<ExchangeLink>,
    /// Blast-radius lines of requesters' logins, read in the background.
    summaries: crate::blast_radius::summary::Summaries,
}

/// How [`Approvals`] reaches the exchange of approvals across hosts.
struct ExchangeLink {
    events: tokio::sync::mpsc::UnboundedSender<ExchangeEvent>,
    host: String,
    health: Arc<Mutex<exchange::ExchangeHealth>>,
}

pub mod exchange;
pub mod webhook;

use exchange::{ExchangeEvent, signed::RequestDocument};

impl Approvals {
    /// An empty set of requests recording to `audit`.
    pub fn new(audit: Arc<AuditLog>) -> Self {
        Self {
            audit,
            pending: Mutex::new(HashMap::new()),
            access: Mutex::new(HashMap::new()),
            exchange: std::sync::OnceLock::new(),
            summaries: crate::blast_radius::summary::Summaries::default(),
        }
    }

    /// Tells filed and ended requests to the exchange of approvals across
    /// hosts, where this host is `host`.
    pub fn connect_exchange(
        &self,
        events: tokio::sync::mpsc::UnboundedSender<ExchangeEvent>,
        host: String,
        health: Arc<Mutex<exchange::ExchangeHealth>>,
    ) {
        let _ = self.exchange.set(ExchangeLink { events, host, health });
    }

    fn tell_exchange(&self, event: impl FnOnce(&str) -> ExchangeEvent) {
        if let Some(link) = self.exchange.get() {
            let _ = link.events.send(event(&link.host));
        }
    }

    /// How commands name `request`: `ID`, or with approvals across hosts
    /// `HOST/ID`, which works from any of them.
    pub fn command_id(&self, request: &ApprovalRequest) -> String {
        match self.exchange.get() {
            Some(link) => format!("{}/{}", link.host, request.id),
            None => request.id.clone(),
        }
    }

    /// The command that approves `request`, for notices; said with why
    /// other hosts' approvers cannot see it yet, if OpenBao is away.
    pub fn decide_command(&self, request: &ApprovalRequest) -> String {
        let Some(link) = self.exchange.get() else { return format!("airlock approve {}", request.id) };
        let mut command = format!("airlock approve {} (from any host)", self.command_id(request));
        if let Some((error, since)) = &link.health.lock().unwrap_or_else(|p| p.into_inner()).unreachable {
            command.push_str(&format!(
                "; OpenBao is unreachable since {since} ({error}): approvers on other hosts see the request once it answers"
            ));
        }
        command
    }

    /// `HOST/ID` of this host's own request `id`, as `ID`; else `id` as is.
    pub fn local_id<'a>(&self, id: &'a str) -> &'a str {
        match (self.exchange.get(), id.split_once('/')) {
            (Some(link), Some((host, bare))) if host == link.host => bare,
            _ => id,
        }
    }

    /// Whether request `id` waits here.
    pub fn is_pending(&self, id: &str) -> bool {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    /// How many requests wait here.
    pub fn pending_count(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The requests waiting here (session requests past their time
    /// expire first, so the exchange takes them down promptly).
    pub fn pending_requests(&self) -> Vec<ApprovalRequest> {
        self.expire_session_requests();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).values().map(|p| p.request.clone()).collect()
    }

    /// Records that a decision from another host was not taken, and why
    /// (a forged or mistaken one): the request keeps waiting.
    pub fn refuse_remote(&self, request: &ApprovalRequest, claimed_approver: &str, why: &str) {
        tracing::warn!(request = %request.id, claimed_approver, why, "a decision from OpenBao was refused");
        let target = self.pending.lock().unwrap_or_else(|p| p.into_inner()).get(&request.id).map(|p| p.target.clone());
        let recorded = self.audit.append(Event {
            kind: "approval.decision_refused",
            session: Some(&request.session),
            identity: None,
            process: None,
            target: target.as_ref(),
            detail: json!({ "request": request.id, "claimed_approver": claimed_approver, "why": why }),
        });
        if let Err(error) = recorded {
            tracing::error!(%error, "a refused decision was not recorded");
        }
    }

    /// Files a request for a held statement; the caller then
    /// [`Approvals::wait`]s on it.
    pub fn request(&self, new: NewRequest<'_>) -> Result<Waiter, AuditError> {
        let (decide, decision) = oneshot::channel();
        let request = self.file(&new, RequestKind::Statement, Some(decide))?;
        Ok(Waiter { request, decision, timeout: new.policy.timeout })
    }

    /// Whether `new.identity` may open a session to a target whose policy
    /// grants access windows: an open grant, or the request that waits
    /// (filed now unless one is pending already).
    pub fn session_access(&self, new: NewRequest<'_>) -> Result<SessionAccess, AuditError> {
        self.expire_session_requests();
        let key = (new.identity.subject.clone(), new.target.name.clone());
        if let Some(grant) = self.access.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && grant.until > SystemTime::now()
        {
            return Ok(SessionAccess::Granted(grant.clone()));
        }
        let waiting = self.pending.lock().unwrap_or_else(|p| p.into_inner()).values().find_map(|p| {
            (p.request.kind == RequestKind::Session && p.subject == key.0 && p.request.target == key.1)
                .then(|| p.request.clone())
        });
        match waiting {
            Some(request) => Ok(SessionAccess::Waiting(Box::new(request))),
            None => Ok(SessionAccess::Waiting(Box::new(self.file(&new, RequestKind::Session, None)?))),
        }
    }

    fn file(
        &self,
        new: &NewRequest<'_>,
        kind: RequestKind,
        decide: Option<oneshot::Sender<Decision>>,
    ) -> Result<ApprovalRequest, AuditError> {
        let created = SystemTime::now();
        let mut statement: String = new.statement.chars().take(MAX_SHOWN_SQL).collect();
        if statement.len() < new.statement.len() {
            statement.push('…');
        }
        let request = ApprovalRequest {
            id: request_id(),
            kind,
            session: new.session.to_owned(),
            target: new.target.name.clone(),
            requester: new.identity.user.clone(),
            requester_uid: new.identity.uid,
            actor: new.identity.actor.clone().map(Box::new),
            host: None,
            statement,
            reason: new.reason.to_owned(),
            approvers: new.policy.describe_approvers(),
            created: humantime::format_rfc3339_seconds(created).to_string(),
            expires: humantime::format_rfc3339_seconds(created + new.policy.timeout).to_string(),
            blast_radius: None,
        };
        if let Some(query) = new.blast_radius {
            self.summaries.ensure(query);
        }
        self.audit.append(Event {
            kind: "approval.requested",
            session: Some(new.session),
            identity: Some(new.identity),
            process: None,
            target: Some(new.target),
            detail: json!({
                "request": request.id,
                "kind": request.kind,
                "statement": request.statement,
                "reason": request.reason,
                "approvers": request.approvers,
                "expires": request.expires,
            }),
        })?;
        let pending = Pending {
            request: request.clone(),
            policy: new.policy.clone(),
            target: new.target.clone(),
            subject: new.identity.subject.clone(),
            decide,
            deadline: created + new.policy.timeout,
            blast_key: new.blast_radius.map(crate::blast_radius::summary::Query::key),
        };
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(request.id.clone(), pending);
        if let Some(url) = &new.policy.webhook {
            webhook::requested(url, &request, &self.command_id(&request));
        }
        self.tell_exchange(|host| {
            ExchangeEvent::Filed(Box::new(RequestDocument {
                version: 1,
                host: host.to_owned(),
                request_sha256: exchange::signed::request_digest(&request),
                request: request.clone(),
                approver_users: new.policy.users.clone(),
                approver_groups: new.policy.groups.clone(),
            }))
        });
        Ok(request)
    }

    /// Session requests have nobody waiting on them: they expire here, when
    /// the requests are next looked at.
    fn expire_session_requests(&self) {
        let now = SystemTime::now();
        let expired: Vec<Pending> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<String> = pending
                .values()
                .filter(|p| p.request.kind == RequestKind::Session && p.deadline <= now)
                .map(|p| p.request.id.clone())
                .collect();
            ids.iter().filter_map(|id| pending.remove(id)).collect()
        };
        for pending in expired {
            self.tell_exchange(|_| ExchangeEvent::Ended(pending.request.id.clone()));
            if let Err(error) = self.record_decision(&pending, "approval.expired", None, None) {
                tracing::error!(%error, request = %pending.request.id, "expiry not recorded");
            }
            if let Some(url) = &pending.policy.webhook {
                webhook::decided(url, &pending.request, "expired", None, None);
            }
        }
    }

    /// The access window `subject` holds on `target`, if still open.
    pub fn access_grant(&self, subject: &str, target: &str) -> Option<AccessGrant> {
        let access = self.access.lock().unwrap_or_else(|p| p.into_inner());
        access.get(&(subject.to_owned(), target.to_owned())).filter(|g| g.until > SystemTime::now()).cloned()
    }

    /// Waits for the decision on `waiter`'s request: `None` when it may go
    /// ahead, else why not (denied, expired, unrecorded).
    pub async fn refusal(&self, waiter: Waiter) -> Option<String> {
        let request = waiter.request.clone();
        self.wait(waiter).await.refusal(&request)
    }

    /// Waits for the decision on `waiter`'s request; when its time runs out
    /// the request expires, recorded as such.
    pub async fn wait(&self, waiter: Waiter) -> Decision {
        let Waiter { request, mut decision, timeout } = waiter;
        match tokio::time::timeout(timeout, &mut decision).await {
            Ok(Ok(decision)) => decision,
            // Sender gone without a decision: only by expiry racing a decision below.
            Ok(Err(_)) => Decision::Expired,
            Err(_) => {
                let Some(pending) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&request.id) else {
                    // Decided at the very last moment: take that decision.
                    return decision.await.unwrap_or(Decision::Expired);
                };
                self.tell_exchange(|_| ExchangeEvent::Ended(request.id.clone()));
                let recorded = self.record_decision(&pending, "approval.expired", None, None);
                if let Some(url) = &pending.policy.webhook {
                    webhook::decided(url, &pending.request, "expired", None, None);
                }
                if recorded.is_err() { Decision::Unrecorded } else { Decision::Expired }
            }
        }
    }

    /// Withdraws a request whose session went away before a decision.
    pub fn withdraw(&self, id: &str) {
        if let Some(pending) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            self.tell_exchange(|_| ExchangeEvent::Ended(id.to_owned()));
            let _ = self.record_decision(&pending, "approval.withdrawn", None, None);
        }
    }

    /// Pending requests `caller` may decide, and the caller's own.
    pub fn visible_to(&self, caller: &Identity) -> Vec<ApprovalRequest> {
        self.expire_session_requests();
        let subject = caller.as_subject();
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut visible: Vec<ApprovalRequest> = pending
            .values()
            .filter(|p| p.policy.is_approver(&subject) || p.request.requester_uid == caller.uid)
            .map(|p| {
                let blast_radius = p.blast_key.as_ref().map(|key| self.summaries.line(key));
                ApprovalRequest { blast_radius, ..p.request.clone() }
            })
            .collect();
        visible.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        visible
    }

    /// Approves or denies request `id` as `approver`.
    pub fn decide(
        &self,
        id: &str,
        approver: &Identity,
        approve: bool,
        reason: Option<String>,
    ) -> Result<Decided, DecideError> {
        self.decide_as(id, approver, approve, reason, false)
    }

    /// As [`Approvals::decide`]; `remote` when the decision came from
    /// another host through the exchange (verified there), as its record says.
    pub fn decide_as(
        &self,
        id: &str,
        approver: &Identity,
        approve: bool,
        reason: Option<String>,
        remote: bool,
    ) -> Result<Decided, DecideError> {
        self.expire_session_requests();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.get(id).ok_or_else(|| DecideError::NotFound(id.to_owned()))?;
        if approver.actor.is_some() {
            return Err(DecideError::ByActor(id.to_owned()));
        }
        let requester = entry.request.requester_uid == approver.uid || entry.request.requester == approver.user;
        // What an actor asked for, the person it runs as may decide if policy says so.
        let launcher = requester && entry.request.actor.is_some() && entry.policy.launcher_approves;
        if requester && !launcher {
            return Err(DecideError::OwnRequest(id.to_owned()));
        }
        if !launcher && !entry.policy.is_approver(&approver.as_subject()) {
            return Err(DecideError::NotApprover { id: id.to_owned(), approvers: entry.request.approvers.clone() });
        }
        let kind = if approve { "approval.approved" } else { "approval.denied" };
        let via = if remote { "openbao" } else { "control socket" };
        self.record_decision_via(entry, kind, Some(approver), reason.as_deref(), Some(via))
            .map_err(|e| DecideError::Audit(e.to_string()))?;
        let Some(entry) = pending.remove(id) else { return Err(DecideError::NotFound(id.to_owned())) };
        drop(pending);
        self.tell_exchange(|_| ExchangeEvent::Ended(id.to_owned()));
        let by = approver.user.clone();
        if let Some(url) = &entry.policy.webhook {
            let verdict = if approve { "approved" } else { "denied" };
            webhook::decided(url, &entry.request, verdict, Some(&by), reason.as_deref());
        }
        let access = match (approve, entry.request.kind, entry.policy.session_access) {
            (true, RequestKind::Session, Some(window)) => {
                let grant = AccessGrant {
                    until: SystemTime::now() + window,
                    by: by.clone(),
                    request: entry.request.id.clone(),
                };
                let key = (entry.subject.clone(), entry.request.target.clone());
                self.access.lock().unwrap_or_else(|p| p.into_inner()).insert(key, grant.clone());
                Some(grant)
            }
            _ => None,
        };
        let decision = if approve { Decision::Approved { by, reason } } else { Decision::Denied { by, reason } };
        if let Some(decide) = entry.decide {
            // The session may have gone meanwhile; the decision stands recorded.
            let _ = decide.send(decision);
        }
        Ok(Decided { request: entry.request, access, subject: entry.subject })
    }

    fn record_decision(
        &self,
        pending: &Pending,
        kind: &str,
        approver: Option<&Identity>,
        reason: Option<&str>,
    ) -> Result<u64, AuditError> {
        self.record_decision_via(pending, kind, approver, reason, None)
    }

    /// Records a decision; `via` says how a person's decision arrived.
    fn record_decision_via(
        &self,
        pending: &Pending,
        kind: &str,
        approver: Option<&Identity>,
        reason: Option<&str>,
        via: Option<&str>,
    ) -> Result<u64, AuditError> {
        crate::metrics::global().approval_decided(kind.trim_start_matches("approval."));
        let mut detail = json!({
            "request": pending.request.id,
            "requester": pending.request.requester,
            "reason": reason,
        });
        if let Some(via) = via {
            detail["via"] = json!(via);
        }
        self.audit.append(Event {
            kind,
            session: Some(&pending.request.session),
            identity: approver,
            process: None,
            target: Some(&pending.target),
            detail,
        })
    }
}

/// Eight hex digits: short to type, random so ids do not repeat across restarts.
fn request_id() -> String {
    let mut bytes = [0u8; 4];
    // getrandom only fails without an entropy source; a time-based id is still unique enough here.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        bytes = nanos.to_be_bytes();
    }
    crate::hex::encode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(user: &str, uid: u32, groups: &[&str]) -> Identity {
        Identity::unix(user, uid, groups.iter().map(|g| (*g).to_owned()).collect())
    }

    fn target() -> TargetRef {
        TargetRef { name: "prod-db".into(), protocol: "postgres".into(), addr: "10.0.0.5".into(), port: 5432 }
    }

    fn policy(timeout: Duration) -> ApprovalPolicy {
        ApprovalPolicy {
            users: vec![],
            groups: vec!["dba".into()],
            timeout,
            webhook: None,
            session_access: None,
            launcher_approves: false,
        }
    }

    fn file(approvals: &Approvals, who: &Identity, policy: &ApprovalPolicy) -> Waiter {
        approvals
            .request(NewRequest {
                session: "s1",
                identity: who,
                target: &target(),
                statement: "DROP TABLE customers",
                reason: "drop statements are held for approval",
                policy,
                blast_radius: None,
            })
            .unwrap()
    }

    fn kinds(dir: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(crate::audit::LOG_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn an_approver_lets_the_statement_through() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(Arc::new(AuditLog::open(dir.path()).unwrap()));
        let (alice, bob) = (person("alice", 1001, &["dev"]), person("bob", 1002, &["dba"]));
        let policy = policy(Duration::from_secs(60));
        let waiter = file(&approvals, &alice, &policy);
        let id = waiter.request.id.clone();
        assert_eq!(approvals.visible_to(&bob).len(), 1, "approvers see it");
        assert_eq!(approvals.visible_to(&alice).len(), 1, "the requester sees it");
        assert!(approvals.visible_to(&person("carol", 1003, &["dev"])).is_empty());
        approvals.decide(&id, &bob, true, Some("checked with the owner".into())).unwrap();
        let decision = approvals.wait(waiter).await;
        assert_eq!(decision, Decision::Approved { by: "bob".into(), reason: Some("checked with the owner".into()) });
        assert!(approvals.visible_to(&bob).is_empty());
        assert_eq!(kinds(dir.path()), ["approval.requested", "approval.approved"]);
    }

    #[tokio::test]
    async fn nobody_approves_their_own_request_and_outsiders_cannot_decide() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(Arc::new(AuditLog::open(dir.path()).unwrap()));
        let dba = person("dana", 1004, &["dba"]);
        let policy = policy(Duration::from_secs(60));
        let waiter = file(&approvals, &dba, &policy);
        let id = waiter.request.id.clone();
        assert_eq!(approvals.decide(&id, &dba, true, None), Err(DecideError::OwnRequest(id.clone())));
        let outsider = approvals.decide(&id, &person("eve", 1005, &["dev"]), true, None).unwrap_err();
        assert!(outsider.to_string().contains("group dba may decide it"), "{outsider}");
        approvals.decide(&id, &person("bob", 1002, &["dba"]), false, None).unwrap();
        assert!(matches!(approvals.wait(waiter).await, Decision::Denied { .. }));
        assert_eq!(
            approvals.decide(&id, &person("bob", 1002, &["dba"]), true, None),
            Err(DecideError::NotFound(id.clone()))
        );
    }

    #[tokio::test]
    async fn a_person_decides_their_agents_requests_only_where_policy_says_and_agents_decide_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(Arc::new(AuditLog::open(dir.path()).unwrap()));
        let actor = crate::actors::Actor { name: "coding-agent".into(), matched_by: "test".into(), chain: vec![] };
        let alice = person("alice", 1001, &["dev"]);
        let agent = Identity { actor: Some(actor), ..alice.clone() };
        let strict = policy(Duration::from_secs(60));
        let waiter = file(&approvals, &agent, &strict);
        let id = waiter.request.id.clone();
        assert_eq!(waiter.request.actor.as_ref().map(|a| a.name.as_str()), Some("coding-agent"));
        assert_eq!(approvals.decide(&id, &alice, true, None), Err(DecideError::OwnRequest(id.clone())), "by default");
        approvals.decide(&id, &person("bob", 1002, &["dba"]), false, None).unwrap();
        assert!(matches!(approvals.wait(waiter).await, Decision::Denied { .. }));

        let lenient = ApprovalPolicy { launcher_approves: true, ..strict };
        let waiter = file(&approvals, &agent, &lenient);
        let id = waiter.request.id.clone();
        let bobs_agent = Identity { actor: agent.actor.clone(), ..person("bob", 1002, &["dba"]) };
        assert_eq!(approvals.decide(&id, &bobs_agent, true, None), Err(DecideError::ByActor(id.clone())));
        assert_eq!(approvals.decide(&id, &agent, true, None), Err(DecideError::ByActor(id.clone())), "not itself");
        approvals.decide(&id, &alice, true, None).unwrap();
        assert_eq!(approvals.wait(waiter).await, Decision::Approved { by: "alice".into(), reason: None });
        let own = file(&approvals, &alice, &lenient);
        let own_id = own.request.id.clone();
        assert_eq!(approvals.decide(&own_id, &alice, true, None), Err(DecideError::OwnRequest(own_id)), "hers: never");
    }

    #[tokio::test]
    async fn session_requests_open_an_access_window() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(Arc::new(AuditLog::open(dir.path()).unwrap()));
        let (alice, bob) = (person("alice", 1001, &["dev"]), person("bob", 1002, &["dba"]));
        let policy =
            ApprovalPolicy { session_access: Some(Duration::from_secs(60)), ..policy(Duration::from_secs(60)) };
        let ask = |approvals: &Approvals| {
            approvals
                .session_access(NewRequest {
                    session: "s1",
                    identity: &alice,
                    target: &target(),
                    statement: "(a session)",
                    reason: "needs approval",
                    policy: &policy,
                    blast_radius: None,
                })
                .unwrap()
        };
        let SessionAccess::Waiting(first) = ask(&approvals) else { panic!("granted without approval") };
        let SessionAccess::Waiting(again) = ask(&approvals) else { panic!("granted without approval") };
        assert_eq!(first.id, again.id, "one pending request per person and target");
        assert_eq!(first.kind, RequestKind::Session);
        let decided = approvals.decide(&first.id, &bob, true, None).unwrap();
        let window = decided.access.expect("an access window");
        assert_eq!((window.by.as_str(), decided.subject.as_str()), ("bob", "unix:alice"));
        assert!(matches!(ask(&approvals), SessionAccess::Granted(grant) if grant == window));
        assert!(approvals.access_grant("unix:alice", "prod-db").is_some());
        assert!(approvals.access_grant("unix:carol", "prod-db").is_none());
    }

    #[tokio::test]
    async fn webhooks_hear_of_requests_and_decisions() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (bodies_tx, mut bodies) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then exactly Content-Length bytes of body.
                let body = loop {
                    let n = socket.read(&mut chunk).await.unwrap();
                    seen.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&seen).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                            .and_then(|v| v.parse().ok())
                            .unwrap();
                        if body.len() >= len {
                            break body.to_owned();
                        }
                    }
                };
                socket.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
                bodies_tx.send(serde_json::from_str(&body).unwrap()).unwrap();
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(Arc::new(AuditLog::open(dir.path()).unwrap()));
        let policy = ApprovalPolicy {
            webhook: Some(format!("http://127.0.0.1:{port}/hooks/T0/B0/secret")),
            ..policy(Duration::from_secs(60))
        };
        let waiter = file(&approvals, &person("alice", 1001, &[]), &policy);
        let id = waiter.request.id.clone();
        let requested = tokio::time::timeout(Duration::from_secs(10), bodies.recv()).await.unwrap().unwrap();
        let text = requested["text"].as_str().unwrap();
        assert!(text.contains(&format!("airlock approve {id}")) && text.contains("DROP TABLE customers"), "{text}");
        assert_eq!(requested["airlock"]["event"], "approval.requested");
        approvals.decide(&id, &person("bob", 1002, &["dba"]), false, Some("not today".into())).unwrap();
        let decided = tokio::time::timeout(Duration::from_secs(10), bodies.recv()).await.unwrap().unwrap();
        assert_eq!(decided["airlock"]["event"], "approval.denied");
        assert!(decided["text"].as_str().unwrap().contains("denied by bob: not today"), "{decided}");
    }

    #[tokio::test]
    async fn undecided_requests_expire() {
        let dir = tempfile::tempdir().unwrap();
        let approvals = Approvals::new(Arc::new(AuditLog::open(dir.path()).unwrap()));
        let policy = policy(Duration::from_millis(50));
        let waiter = file(&approvals, &person("alice", 1001, &[]), &policy);
        let request = waiter.request.clone();
        let decision = approvals.wait(waiter).await;
        assert_eq!(decision, Decision::Expired);
        assert!(decision.refusal(&request).unwrap().contains("was not decided before"));
        assert_eq!(kinds(dir.path()), ["approval.requested", "approval.expired"]);
    }
}
