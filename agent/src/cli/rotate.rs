//! `airlock rotate TARGET [--now]`: rotate a target's long-lived secret
//! now, after a leak or before someone leaves. The agent does it (it holds
//! the secret); only root or the agent's admin group may ask.

use std::{path::PathBuf, process::ExitCode};

use super::{failed, status::socket_path};
use crate::control::{Request, Response, client};

/// Asks the agent to rotate `target`'s secret and prints what changed.
pub fn rotate(
    target: String,
    now: bool,
    json: bool,
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match client::call(&socket_path(socket, config)?, &Request::Rotate { target, now })? {
        Response::Rotated(report) if json => println!("{}", serde_json::to_string_pretty(&report)?),
        Response::Rotated(report) => {
            match (&report.from, &report.to) {
                (Some(from), Some(to)) => println!("rotated the {} of {}: {from} → {to}", report.secret, report.target),
                _ => println!("rotated the {} of {}", report.secret, report.target),
            }
            match (&report.retire_at, &report.from) {
                (Some(at), Some(from)) => println!("{from} keeps working until {at} (the grace period), then stops"),
                (None, Some(from)) => {
                    println!("{from} no longer logs in; {} of its sessions ended", report.sessions_ended)
                }
                _ => {}
            }
        }
        Response::Error { message } => return failed(&message),
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}
