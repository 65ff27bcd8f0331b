//! `airlock audit verify|query|pubkey` and `airlock replay`: the security
//! team's side of the audit log. They read the files directly, so they work
//! while the agent is down; the directory's permissions (root, or the
//! `[audit] group`) decide who may.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;

use crate::{
    audit::{query, replay, signing, verify},
    config::Config,
};

/// The audit directory: given, or the one the config names.
pub(super) fn audit_dir(dir: Option<PathBuf>, config: &Path) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir,
        None => Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?.audit_dir,
    };
    std::fs::read_dir(&dir).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (reading the audit log needs root or membership in the [audit] group of the agent's config)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot read the audit log in {}: {e}{hint}", dir.display())
    })?;
    Ok(dir)
}

/// `airlock audit verify`.
pub fn verify(dir: &Path, pubkey: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let key_file = pubkey.unwrap_or_else(|| dir.join(signing::PUBLIC_KEY_FILE));
    let key = std::fs::read_to_string(&key_file).ok();
    let report = verify::verify(dir, key.as_deref().map(str::trim)).context("reading the audit log")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for problem in &report.problems {
            let seq = problem.seq.map(|s| format!(" (seq {s})")).unwrap_or_default();
            println!("TAMPERED {}:{}{seq}: {}", problem.file, problem.line, problem.what);
        }
        for note in &report.notes {
            println!("note     {note}");
        }
        let signed = match report.signed_through {
            Some(seq) if seq < report.last_seq => {
                format!("; signed through seq {seq} (records after it are covered by the next checkpoint)")
            }
            Some(seq) => format!("; signed through seq {seq}"),
            None => "; no verified checkpoint yet".into(),
        };
        let verdict = if report.problems.is_empty() { "ok" } else { "FAILED" };
        println!(
            "{verdict}: {} records in {} segments, last seq {}, {} checkpoints verified{signed}",
            report.records, report.segments, report.last_seq, report.checkpoints
        );
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A time filter: RFC 3339, or a duration back from now (`2h`, `30m`).
pub(super) fn parse_time(text: &str) -> anyhow::Result<SystemTime> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    let ago: Duration = humantime::parse_duration(text)
        .map_err(|_| anyhow::anyhow!("{text:?} is neither a time (2026-11-22T10:00:00Z) nor a duration back (2h)"))?;
    Ok(SystemTime::now() - ago)
}

/// `airlock audit query`.
pub fn query(dir: &Path, filter: &query::Filter, json: bool, limit: Option<usize>) -> anyhow::Result<ExitCode> {
    let mut shown = 0usize;
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    if !json {
        writeln!(
            out,
            "{:<8} {:<27} {:<24} {:<20} {:<12} {:<14} WHAT",
            "SEQ", "TIME", "KIND", "SESSION", "USER", "TARGET"
        )?;
    }
    let mut failed = None;
    query::query(dir, filter, |record| {
        let written = if json {
            writeln!(out, "{record}")
        } else {
            let text = |p: &str| record.pointer(p).and_then(|v| v.as_str()).unwrap_or("-").to_owned();
            writeln!(
                out,
                "{:<8} {:<27} {:<24} {:<20} {:<12} {:<14} {}",
                record["seq"].to_string(),
                text("/ts"),
                text("/kind"),
                text("/session"),
                text("/identity/user"),
                text("/target/name"),
                query::summary(&record)
            )
        };
        if let Err(error) = written {
            failed = Some(error);
            return false;
        }
        shown += 1;
        limit.is_none_or(|limit| shown < limit)
    })
    .context("reading the audit log")?;
    match failed {
        // A closed pipe (`| head`) is not an error.
        Some(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `airlock replay`.
pub fn replay(dir: &Path, session: &str, speed: f64, no_wait: bool) -> anyhow::Result<ExitCode> {
    let pace = replay::Pace { speed: (!no_wait).then_some(speed), max_pause: Duration::from_secs(2) };
    let mut out = std::io::stdout().lock();
    match replay::replay(dir, session, pace, &mut out) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(replay::ReplayError::Unknown(id)) => {
            eprintln!(
                "airlock: no records of session {id} (`airlock audit query --kind connection.open` lists sessions)"
            );
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}
