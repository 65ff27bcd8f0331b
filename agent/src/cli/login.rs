//! `airlock login`, `airlock whoami`, `airlock logout`. The agent runs the
//! device flow and keeps the tokens; this side only shows what to do. A CI
//! job's token is read here and handed over once.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use super::failed;
use crate::{
    control::{Request, Response, client},
    identity::oidc::LoginInfo,
    secret::Secret,
};

/// Longest a device login can wait for the person (the agent stops at 15 minutes).
const DEVICE_WAIT: Duration = Duration::from_secs(16 * 60);
/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 32 * 1024;

/// Logs in by device flow, or binds a CI job token.
pub fn login(token_file: Option<PathBuf>, json: bool, socket: &Path) -> anyhow::Result<ExitCode> {
    let request = match token_file {
        Some(path) => Request::LoginJob { token: read_token(&path)? },
        None => Request::Login,
    };
    let mut conversation = client::Conversation::open(socket, &request, DEVICE_WAIT)?;
    loop {
        match conversation.next_answer()? {
            Response::DevicePrompt(prompt) => {
                match &prompt.verification_uri_complete {
                    Some(complete) => eprintln!("To log in, open {complete}"),
                    None => eprintln!("To log in, open {}", prompt.verification_uri),
                }
                eprintln!("and check that it shows the code {}  (valid {} s)", prompt.user_code, prompt.expires_in);
                eprintln!("Waiting for you to approve…");
            }
            Response::Login(info) => return show(&info, json, "logged in as"),
            Response::Error { message } => return failed(&message),
            other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
        }
    }
}

/// Shows who the caller's connections are attributed to.
pub fn whoami(json: bool, socket: &Path) -> anyhow::Result<ExitCode> {
    match client::call(socket, &Request::Whoami)? {
        Response::Login(info) => show(&info, json, ""),
        Response::Error { message } => failed(&message),
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
}

/// Ends the caller's login.
pub fn logout(socket: &Path) -> anyhow::Result<ExitCode> {
    match client::call(socket, &Request::Logout)? {
        Response::Login(info) => {
            println!("logged out {} ({})", info.identity.user, info.bound_to);
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => failed(&message),
        other => anyhow::bail!("unexpected answer from the agent: {other:?}"),
    }
}

fn read_token(path: &Path) -> anyhow::Result<Secret> {
    let mut text = String::new();
    let what = || format!("reading the job token from {}", path.display());
    if path == Path::new("-") {
        std::io::stdin().take(MAX_TOKEN_BYTES).read_to_string(&mut text).with_context(what)?;
    } else {
        std::fs::File::open(path)
            .with_context(what)?
            .take(MAX_TOKEN_BYTES)
            .read_to_string(&mut text)
            .with_context(what)?;
    }
    let token = text.trim();
    anyhow::ensure!(!token.is_empty(), "{}: the token is empty", path.display());
    Ok(Secret::new(token.to_owned()))
}

fn show(info: &LoginInfo, json: bool, lead: &str) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(ExitCode::SUCCESS);
    }
    let identity = &info.identity;
    let lead = if lead.is_empty() { String::new() } else { format!("{lead} ") };
    println!("{lead}{} ({:?}, subject {})", identity.user, identity.source, identity.subject);
    if !identity.groups.is_empty() {
        println!("groups:   {}", identity.groups.join(", "));
    }
    println!("bound to: {}", info.bound_to);
    if let Some(expires_at) = info.expires_at {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let refresh = if info.refreshes { ", refreshed automatically" } else { "" };
        println!("expires:  in {} s{refresh}", expires_at.saturating_sub(now));
    }
    Ok(ExitCode::SUCCESS)
}
