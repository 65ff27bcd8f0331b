//! The CLI end of the control socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::Context as _;

use super::{Request, Response};

/// How long the CLI waits for the agent.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request and returns the agent's answer.
pub fn call(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("cannot reach the airlock agent at {} (is it running? `systemctl status airlock`)", socket.display())
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).context("reading the agent's answer")?;
    serde_json::from_str(&answer).with_context(|| format!("unreadable answer from the agent: {answer:?}"))
}
