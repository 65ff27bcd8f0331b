//! `airlock status`.

use std::{path::PathBuf, process::ExitCode};

use crate::{
    config::Config,
    control::{Request, Response, Status, client},
};

const DEFAULT_SOCKET: &str = "/run/airlock/airlock.sock";

/// The control socket: given, named in a config file, or the default.
pub(super) fn socket_path(socket: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match (socket, config) {
        (Some(socket), _) => socket,
        (None, Some(config)) => Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?.control_socket,
        (None, None) => PathBuf::from(DEFAULT_SOCKET),
    })
}

pub fn run(json: bool, metrics: bool, socket: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let socket = socket_path(socket, config)?;
    if metrics {
        return print_metrics(&socket);
    }
    match client::call(&socket, &Request::Status)? {
        Response::Status(status) if json => println!("{}", serde_json::to_string_pretty(&status)?),
        Response::Status(status) => print_table(&status),
        Response::Error { message } => {
            eprintln!("airlock: {message}");
            return Ok(ExitCode::FAILURE);
        }
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The OpenMetrics text; fails (exit 1) when the agent is unhealthy,
/// saying why on stderr, so a script can use it as a health check.
fn print_metrics(socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    match client::call(socket, &Request::Metrics)? {
        Response::Metrics { text, health } => {
            print!("{text}");
            for problem in &health.problems {
                eprintln!("airlock: unhealthy: {problem}");
            }
            Ok(if health.healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Response::Error { message } => {
            eprintln!("airlock: {message}");
            Ok(ExitCode::FAILURE)
        }
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
}

fn print_table(status: &Status) {
    println!("agent      pid {} · version {} · up {}s", status.pid, status.version, status.uptime_s);
    println!("cgroup     {}", status.cgroup);
    let names: Vec<&str> = status.programs.iter().map(|p| p.name.as_str()).collect();
    println!("programs   {} attached: {}", names.len(), names.join(", "));
    let c = &status.counters;
    println!(
        "counters   {} connects to protected ports · {} redirected · {} exempt (agent) · {} refused (no record)",
        c.protected_port_connects, c.redirected, c.exempt, c.record_failed
    );
    println!("confined   {} connects of confined runs to the host's own services refused", c.confined_refused);
    if let Some(exchange) = &status.approvals_exchange {
        let state = match &exchange.unreachable {
            None => "reachable".to_owned(),
            Some((error, since)) => format!("UNREACHABLE since {since}: {error}"),
        };
        println!(
            "approvals  across hosts as {} through OpenBao at {}: {state} · {} request(s) not yet published",
            exchange.host, exchange.address, exchange.unpublished
        );
    }
    println!("\nTARGET               PROTOCOL  PORT   REDIRECTED  NETWORKS");
    for t in &status.targets {
        println!("{:<20} {:<9} {:<6} {:<11} {}", t.name, t.protocol, t.port, t.redirected, t.networks.join(", "));
    }
    if !status.rotations.is_empty() {
        println!("\nROTATION             SCHEDULE                   STEP      LAST ROTATED          NEXT DUE");
        for r in &status.rotations {
            let at = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
            println!(
                "{:<20} {:<26} {:<9} {:<21} {}",
                r.target,
                r.schedule,
                r.step,
                at(&r.last_rotated),
                at(&r.next_due)
            );
            if let Some(at) = &r.retire_at {
                println!("{:<20} the old login works until {at}", "");
            }
            if let Some(error) = &r.last_error {
                println!("{:<20} FAILED: {error}", "");
            }
        }
    }
    let scope = if status.all_sessions { "all users" } else { "yours" };
    println!("\nSESSIONS ({}, {scope})", status.sessions.len());
    if !status.sessions.is_empty() {
        println!(
            "{:<18} {:<12} {:<8} {:<12} {:<16} {:<24} {:>6} {:>12} {:>12}",
            "ID", "USER", "PID", "COMMAND", "TARGET", "DESTINATION", "AGE", "BYTES OUT", "BYTES IN"
        );
    }
    for s in &status.sessions {
        // An actor's session reads `alice/coding-agent`.
        let who = match &s.actor {
            Some(actor) => format!("{}/{actor}", s.user),
            None => s.user.clone(),
        };
        println!(
            "{:<18} {:<12} {:<8} {:<12} {:<16} {:<24} {:>5}s {:>12} {:>12}",
            s.id, who, s.pid, s.comm, s.target, s.destination, s.age_s, s.bytes_to_upstream, s.bytes_to_client
        );
    }
}
