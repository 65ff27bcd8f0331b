//! `airlock run --actor NAME -- COMMAND…`: the agent moves this process
//! into a cgroup labelled as the actor, then this process becomes the
//! command, so everything it starts is the actor's too. A confined actor's
//! run confines itself first (`super::confine`).

use std::{ffi::OsString, os::unix::process::CommandExt as _, path::Path, process::ExitCode};

use crate::control::{Request, Response, client};

/// Runs `command` as actor `actor`; returns only if it could not.
pub fn run_as_actor(actor: &str, command: &[OsString], socket: &Path) -> anyhow::Result<ExitCode> {
    let Some((program, args)) = command.split_first() else { anyhow::bail!("no command to run") };
    match client::call(socket, &Request::RunAsActor { actor: actor.to_owned() })? {
        Response::ActorCgroup { confined, hide, .. } => {
            if confined && let Err(error) = super::confine::confine(&hide) {
                eprintln!("airlock run: actor {actor:?} is confined, and confining this command failed: {error}");
                return Ok(ExitCode::from(126));
            }
        }
        Response::Error { message } => {
            eprintln!("airlock run: {message}");
            return Ok(ExitCode::from(126));
        }
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
    let error = std::process::Command::new(program).args(args).exec();
    eprintln!("airlock run: {}: {error}", Path::new(program).display());
    Ok(ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }))
}
