//! The approver's side of approvals across hosts: `airlock approvals`
//! lists other hosts' requests from OpenBao beside this host's, and
//! `airlock approve`/`deny` of one of them writes a signed decision there.
//! The requesting host decides whether it counts; what is checked here
//! only spares the approver a decision that would be refused.

use super::Response;
use crate::{
    approvals::{ApprovalRequest, DecideError, exchange::signed::RequestDocument},
    audit::Event,
    daemon::AgentState,
    identity::Identity,
};

/// This host's requests `identity` may see, and, with an exchange, the
/// other hosts' requests they may decide or made.
pub async fn approvals(state: &AgentState, identity: &Identity) -> Response {
    let mut visible = state.approvals.visible_to(identity);
    let Some(exchange) = &state.exchange else { return Response::Approvals(visible) };
    let remote = match exchange.open_requests().await {
        Ok(remote) => remote,
        Err(error) => {
            return Response::Error {
                message: format!(
                    "requests of other hosts cannot be read from OpenBao ({error}); {} request(s) wait on this host",
                    visible.len()
                ),
            };
        }
    };
    let subject = identity.as_subject();
    visible.extend(
        remote
            .into_iter()
            .filter(|d| d.host != exchange.host())
            .filter(|d| {
                crate::policy::matches_subject(&d.approver_users, &d.approver_groups, &subject)
                    || d.request.requester == identity.user
            })
            .map(shown),
    );
    visible.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
    Response::Approvals(visible)
}

fn shown(document: RequestDocument) -> ApprovalRequest {
    ApprovalRequest { host: Some(document.host), ..document.request }
}

/// Decides request `id` (`ID` or `HOST/ID`) of another host as `approver`.
pub async fn decide(
    state: &AgentState,
    approver: &Identity,
    id: &str,
    approve: bool,
    reason: Option<String>,
) -> Response {
    match decide_remote(state, approver, id, approve, reason).await {
        Ok(request) => Response::Decided(request),
        Err(message) => Response::Error { message },
    }
}

async fn decide_remote(
    state: &AgentState,
    approver: &Identity,
    id: &str,
    approve: bool,
    reason: Option<String>,
) -> Result<ApprovalRequest, String> {
    let Some(exchange) = &state.exchange else { return Err(DecideError::NotFound(id.to_owned()).to_string()) };
    // HOST/ID is read directly; a bare ID is looked for on every host.
    let found: Result<Vec<RequestDocument>, String> = match id.split_once('/') {
        Some((host, bare)) => exchange.open_request(host, bare).await.map(|d| d.into_iter().collect()),
        None => exchange.open_requests().await.map(|all| all.into_iter().filter(|d| d.request.id == id).collect()),
    };
    let mut matching = found.map_err(|e| format!("reading requests from OpenBao: {e}"))?;
    matching.retain(|d| d.host != exchange.host());
    let remote = match matching.len() {
        0 => return Err(DecideError::NotFound(id.to_owned()).to_string()),
        1 => matching.remove(0),
        _ => {
            let hosts: Vec<&str> = matching.iter().map(|d| d.host.as_str()).collect();
            return Err(format!("several hosts have a request {id} ({}): name it HOST/{id}", hosts.join(", ")));
        }
    };
    let request = &remote.request;
    if approver.actor.is_some() {
        return Err(DecideError::ByActor(id.to_owned()).to_string());
    }
    if request.requester == approver.user && request.actor.is_none() {
        return Err(DecideError::OwnRequest(id.to_owned()).to_string());
    }
    let token = approver.token.as_ref().ok_or(
        "deciding requests of other hosts needs your OIDC login on this host (`airlock login`): \
         OpenBao checks who you are with it",
    )?;
    exchange.decide(&remote, approver, token, approve, reason.clone()).await?;
    let recorded = state.audit.append(Event {
        kind: "approval.decided_for_host",
        session: None,
        identity: Some(approver),
        process: None,
        target: None,
        detail: serde_json::json!({
            "host": remote.host,
            "request": request.id,
            "requester": request.requester,
            "target": request.target,
            "decision": if approve { "approve" } else { "deny" },
            "reason": reason,
        }),
    });
    if let Err(error) = recorded {
        tracing::error!(%error, "a decision for another host was written but not recorded here");
    }
    Ok(shown(remote))
}
