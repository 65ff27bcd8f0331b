//! `airlock approvals`, `airlock approve`, `airlock deny`: the approver's
//! side of held statements. The agent knows who calls from the socket
//! (SO_PEERCRED); nothing typed here can claim another identity.

use std::{path::PathBuf, process::ExitCode};

use super::{failed, status::socket_path};
use crate::control::{Request, Response, client};

/// Lists pending requests the caller may decide, and the caller's own.
pub fn list(json: bool, socket: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match client::call(&socket_path(socket, config)?, &Request::Approvals)? {
        Response::Approvals(requests) if json => println!("{}", serde_json::to_string_pretty(&requests)?),
        Response::Approvals(requests) if requests.is_empty() => println!("no pending requests"),
        Response::Approvals(requests) => {
            println!("{:<10} {:<12} {:<16} {:<22} {:<22} STATEMENT", "ID", "REQUESTER", "TARGET", "CREATED", "EXPIRES");
            for r in &requests {
                let statement: String = r.statement.split_whitespace().collect::<Vec<_>>().join(" ");
                // Another host's request is decided by HOST/ID.
                let id = match &r.host {
                    Some(host) => format!("{host}/{}", r.id),
                    None => r.id.clone(),
                };
                println!(
                    "{:<10} {:<12} {:<16} {:<22} {:<22} {}",
                    id, r.requester, r.target, r.created, r.expires, statement
                );
                if let Some(actor) = &r.actor {
                    println!("{:<10} asked by actor {} ({}) for {}", "", actor.name, actor.matched_by, r.requester);
                }
                println!("{:<10} why: {} · approvers: {}", "", r.reason, r.approvers);
                if let Some(blast_radius) = &r.blast_radius {
                    println!("{:<10} login {blast_radius}", "");
                }
            }
        }
        Response::Error { message } => return failed(&message),
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Approves or denies one request.
pub fn decide(
    id: String,
    approve: bool,
    reason: Option<String>,
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match client::call(&socket_path(socket, config)?, &Request::Decide { id, approve, reason })? {
        Response::Decided(request) => {
            let verdict = if approve { "approved" } else { "denied" };
            let on = request
                .host
                .as_ref()
                .map(|host| format!(", on host {host}, where it takes effect within a poll"))
                .unwrap_or_default();
            println!(
                "{verdict} request {} ({} on {}{on}): {}",
                request.id, request.requester, request.target, request.statement
            );
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => failed(&message),
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
}
