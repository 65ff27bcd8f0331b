//! Access windows: targets whose policy has `session_access_seconds` open
//! to a person only once an approver says so, for that long. At the end of
//! the window the person's live sessions on the target are ended.
//!
//! Windows live in the agent's memory: a restarted agent has none, and
//! people ask again (fail closed).

use std::{sync::Arc, time::SystemTime};

use serde_json::json;

use super::AgentState;
use crate::{
    approvals::{Decided, NewRequest, SessionAccess},
    audit::{AuditError, Event, TargetRef},
    guardrails::ApprovalPolicy,
    identity::Identity,
};

/// Why a session may not open yet, for the client.
pub struct AwaitingApproval {
    /// The refusal message.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// Whether `identity` may open a session to `target` now; if not, the
/// request that waits (filed now unless one is pending).
pub fn check(
    state: &AgentState,
    session: &str,
    identity: &Identity,
    target: &TargetRef,
    policy: &ApprovalPolicy,
) -> Result<Option<AwaitingApproval>, AuditError> {
    let new = NewRequest {
        session,
        identity,
        target,
        statement: &format!("(a session on {})", target.name),
        reason: "this target opens only with an approval",
        policy,
        blast_radius: None,
    };
    Ok(match state.approvals.session_access(new)? {
        SessionAccess::Granted(_) => None,
        SessionAccess::Waiting(request) => Some(AwaitingApproval {
            message: format!(
                "airlock: access to \"{}\" needs approval: request {} is waiting for {}",
                target.name, request.id, request.approvers
            ),
            hint: format!(
                "An approver can run: {}. Connect again once it is approved (the request expires {}).",
                state.approvals.decide_command(&request),
                request.expires
            ),
        }),
    })
}

/// After an approval that opened an access window: ends the person's live
/// sessions on the target when the window closes, unless a later approval
/// extended it.
pub fn end_when_window_closes(state: &Arc<AgentState>, decided: &Decided) {
    let Some(grant) = decided.access.clone() else { return };
    let state = Arc::clone(state);
    let (subject, target) = (decided.subject.clone(), decided.request.target.clone());
    tokio::spawn(async move {
        tokio::time::sleep(grant.until.duration_since(SystemTime::now()).unwrap_or_default()).await;
        if state.approvals.access_grant(&subject, &target).is_some() {
            return;
        }
        let reason =
            format!("your access to \"{target}\" (request {}, approved by {}) has ended", grant.request, grant.by);
        let ended = state.sessions.end_where(|s| s.identity.subject == subject && s.target.name == target, &reason);
        let recorded = state.audit.append(Event {
            kind: "access.ended",
            session: None,
            identity: None,
            process: None,
            target: None,
            detail: json!({ "request": grant.request, "subject": subject, "target": target, "sessions_ended": ended }),
        });
        if let Err(error) = recorded {
            tracing::error!(%error, "access.ended not recorded");
        }
    });
}
