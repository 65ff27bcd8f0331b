//! `airlock replay SESSION`: a recorded session played back in the
//! terminal. A PostgreSQL session is its statements with their results,
//! at the pace they ran (or at once); an SSH session is its asciicast
//! recording, frames written at their recorded times.

use std::{
    io::{self, BufRead as _, Write},
    path::Path,
    time::{Duration, SystemTime},
};

use super::query::{self, Filter};

/// How to play.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Multiplier on recorded time; `None`: no waiting at all.
    pub speed: Option<f64>,
    /// Longest pause kept, however long the recorded one.
    pub max_pause: Duration,
}

/// Why a session cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the log or a recording failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Nothing recorded under that id.
    #[error("no records of session {0}")]
    Unknown(String),
}

/// Plays session `id` from the log in `dir` to `out`.
pub fn replay(dir: &Path, id: &str, pace: Pace, out: &mut impl Write) -> Result<(), ReplayError> {
    let mut records = Vec::new();
    query::query(dir, &Filter { session: Some(id.to_owned()), ..Filter::default() }, |record| {
        records.push(record);
        true
    })?;
    let Some(first) = records.first() else { return Err(ReplayError::Unknown(id.to_owned())) };
    let user = first.pointer("/identity/user").and_then(|v| v.as_str()).unwrap_or("?");
    // An actor's session says so: `alice's coding-agent (script /opt/…)`.
    let who = match first.pointer("/identity/actor/name").and_then(|v| v.as_str()) {
        Some(actor) => {
            let matched = first.pointer("/identity/actor/matched_by").and_then(|v| v.as_str()).unwrap_or("?");
            format!("{user}'s {actor} ({matched})")
        }
        None => user.to_owned(),
    };
    let target = first.pointer("/target/name").and_then(|v| v.as_str()).unwrap_or("?");
    let started = first["ts"].as_str().unwrap_or("?");
    writeln!(out, "# session {id}: {who} on {target}, started {started}")?;
    let mut last_time: Option<SystemTime> = None;
    for record in &records {
        let at = record["ts"].as_str().and_then(|ts| humantime::parse_rfc3339(ts).ok());
        if let (Some(at), Some(before)) = (at, last_time) {
            wait(pace, at.duration_since(before).unwrap_or_default());
        }
        if at.is_some() {
            last_time = at;
        }
        let detail = &record["detail"];
        match record["kind"].as_str().unwrap_or("") {
            "postgres.statement" => {
                writeln!(out, "=> {}", detail["sql"].as_str().unwrap_or(""))?;
                if let Some(error) = detail.get("error") {
                    writeln!(
                        out,
                        "   ERROR {}: {}",
                        error["sqlstate"].as_str().unwrap_or(""),
                        error["message"].as_str().unwrap_or("")
                    )?;
                } else {
                    let results: Vec<&str> = detail["results"]
                        .as_array()
                        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                        .unwrap_or_default();
                    writeln!(out, "   {} ({} µs)", results.join(", "), detail["duration_us"])?;
                }
                if let Some(masked) = detail.get("masked").and_then(|m| m.as_array()) {
                    for hit in masked {
                        writeln!(
                            out,
                            "   masked {} × {}{}",
                            hit["count"],
                            hit["by"].as_str().unwrap_or(""),
                            hit["column"].as_str().map(|c| format!(" in {c}")).unwrap_or_default()
                        )?;
                    }
                }
            }
            "ssh.recording" | "kubernetes.recording" => {
                if let Some(path) = detail["path"].as_str() {
                    play_cast(Path::new(path), pace, out)?;
                }
            }
            "connection.close" => writeln!(out, "# session ended after {} ms", detail["duration_ms"])?,
            kind => writeln!(out, "# {kind}: {}", query::summary(record))?,
        }
    }
    Ok(())
}

fn wait(pace: Pace, recorded: Duration) {
    if let Some(speed) = pace.speed.filter(|s| *s > 0.0) {
        std::thread::sleep(recorded.div_f64(speed).min(pace.max_pause));
    }
}

/// Writes an asciicast v2 recording's output frames at their times.
fn play_cast(path: &Path, pace: Pace, out: &mut impl Write) -> io::Result<()> {
    let file = io::BufReader::new(std::fs::File::open(path)?);
    let mut last = 0.0f64;
    for line in file.lines().skip(1) {
        let Ok(serde_json::Value::Array(frame)) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
        let (Some(time), Some(kind), Some(data)) = (
            frame.first().and_then(|t| t.as_f64()),
            frame.get(1).and_then(|k| k.as_str()),
            frame.get(2).and_then(|d| d.as_str()),
        ) else {
            continue;
        };
        wait(pace, Duration::from_secs_f64((time - last).max(0.0)));
        last = time;
        if kind == "o" {
            out.write_all(data.as_bytes())?;
            out.flush()?;
        }
    }
    writeln!(out)
}
