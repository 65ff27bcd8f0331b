//! Notices of approval requests and decisions, POSTed as JSON to a webhook.
//!
//! The body carries `text` (what Slack-compatible incoming webhooks show)
//! and the structured request under `airlock`. Delivery is best effort and
//! off the session's path: the decision itself is made through
//! `airlock approve`, never through the webhook.

use std::time::Duration;

use serde_json::json;

use super::ApprovalRequest;
use crate::http::{self, Url};

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Notice of a filed request, sent on a task of its own; commands name it
/// `command_id` (`ID`, or `HOST/ID` with approvals across hosts).
pub fn requested(url: &str, request: &ApprovalRequest, command_id: &str) {
    let who = match &request.actor {
        Some(actor) => format!("{}'s {} (an actor: {})", request.requester, actor.name, actor.matched_by),
        None => request.requester.clone(),
    };
    let text = format!(
        "Airlock: {who} asks to run on {}: `{}` ({}). Approve: `airlock approve {command_id}` — deny: `airlock deny {command_id}`. Expires {}.",
        request.target, request.statement, request.reason, request.expires
    );
    send(url, json!({ "text": text, "airlock": { "event": "approval.requested", "request": request } }));
}

/// Notice of a decision or expiry, sent on a task of its own.
pub fn decided(url: &str, request: &ApprovalRequest, verdict: &str, by: Option<&str>, reason: Option<&str>) {
    let who = by.map(|by| format!(" by {by}")).unwrap_or_default();
    let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
    let text =
        format!("Airlock: request {} ({} on {}) {verdict}{who}{why}", request.id, request.requester, request.target);
    send(
        url,
        json!({
            "text": text,
            "airlock": { "event": format!("approval.{verdict}"), "request": request, "by": by, "reason": reason },
        }),
    );
}

/// POSTs `body` to `url` on a task of its own (best effort, logged when it
/// fails): approvals' notices, and other alerts for the same people.
pub fn send(url: &str, body: serde_json::Value) {
    let url = match Url::parse(url) {
        Ok(url) => url,
        Err(error) => return tracing::warn!(%error, "approval webhook not sent"),
    };
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    handle.spawn(async move {
        let body = body.to_string();
        let headers = [("Content-Type", "application/json")];
        match http::request("POST", &url, &headers, Some(body.as_bytes()), TIMEOUT).await {
            Ok(response) if (200..300).contains(&response.status) => {}
            Ok(response) => {
                tracing::warn!(host = %url.authority(), status = response.status, "approval webhook refused")
            }
            Err(error) => tracing::warn!(%error, "approval webhook not delivered"),
        }
    });
}
