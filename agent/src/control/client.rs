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
    let mut answers = Conversation::open(socket, request, TIMEOUT)?;
    answers.next_answer()
}

/// A request whose answer comes in several lines (a login: first what to
/// do, then the outcome).
pub struct Conversation {
    reader: BufReader<UnixStream>,
}

impl Conversation {
    /// Sends `request`; each answer may take up to `wait`.
    pub fn open(socket: &Path, request: &Request, wait: Duration) -> anyhow::Result<Self> {
        let mut stream = UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot reach the airlock agent at {} (is it running? `systemctl status airlock`)",
                socket.display()
            )
        })?;
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line)?;
        Ok(Self { reader: BufReader::new(stream) })
    }

    /// The agent's next answer.
    pub fn next_answer(&mut self) -> anyhow::Result<Response> {
        let mut answer = String::new();
        self.reader.read_line(&mut answer).context("reading the agent's answer")?;
        serde_json::from_str(&answer).with_context(|| format!("unreadable answer from the agent: {answer:?}"))
    }
}
