//! Session recordings in asciicast v2, the format asciinema plays: SSH
//! terminals and Kubernetes exec sessions.
//!
//! Only what the terminal shows is recorded (output and window sizes); typed
//! input stays out unless policy asks for it, and even then only lines the
//! terminal echoed: a password typed at a prompt is not echoed, so it is
//! never recorded. Output passes through [`mask`] first,
//! a line at a time: a secret typed a key at a time is echoed a key at a
//! time, so output is held until its line ends (and a private key block
//! until it closes), within bounds, and judged whole. The recording lags
//! the live terminal by that much; the terminal itself is never held.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest as _, Sha256};

/// Output held for one judgement at most: past it, what is held is
/// written masked as it stands (a value cut at the end is masked to the end).
const MAX_HELD_LINE: usize = 16 << 10;
/// A private key block printed in full is held up to this size.
const MAX_HELD_KEY: usize = 256 << 10;
/// Typed input held until its line ends; a longer line is not recorded.
const MAX_TYPED_LINE: usize = 4 << 10;
/// Output kept to find the echo of the line being typed.
const MAX_SHOWN: usize = 64 << 10;

/// Masks secrets in recorded output: URI and keyword passwords, SQL
/// `PASSWORD '…'` literals, and private key blocks.
pub fn mask(text: &str) -> String {
    use crate::masking::detect::{Builtin, Detectors};
    static DETECTORS: std::sync::OnceLock<Detectors> = std::sync::OnceLock::new();
    let text = crate::redact::text(text);
    let detectors = DETECTORS.get_or_init(|| Detectors::new(&[Builtin::PrivateKey], Vec::new()));
    let mut found = Vec::new();
    detectors.find(text.as_bytes(), &mut found);
    if found.is_empty() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for span in found {
        // Spans are byte ranges of ASCII markers: character boundaries.
        out.push_str(text.get(copied..span.start).unwrap_or_default());
        out.push_str("[private key masked by airlock]");
        copied = span.end;
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    out
}

/// How much of `held` can be judged now: through its last line end, but
/// not into a private key block still open.
fn judgeable(held: &str) -> usize {
    let through_line = held.rfind(['\n', '\r']).map_or(0, |at| at + 1);
    let open_key = held.rfind("-----BEGIN ").filter(|&begin| {
        let after = &held[begin..];
        after.lines().next().is_some_and(|line| line.contains("PRIVATE KEY-----")) && !after.contains("-----END ")
    });
    match open_key {
        Some(begin) if held.len() - begin <= MAX_HELD_KEY => through_line.min(begin),
        Some(_) => held.len(),
        None if held.len() - through_line > MAX_HELD_LINE => held.len(),
        None => through_line,
    }
}

/// An asciicast v2 file being written.
pub struct Recording {
    file: fs::File,
    path: PathBuf,
    hash: Sha256,
    started: Instant,
    /// Bytes of a UTF-8 sequence cut by a packet boundary, completed by the next packet.
    partial: Vec<u8>,
    /// Output not judged yet (see [`judgeable`]), and when its first byte came.
    held: String,
    held_since: Option<f64>,
    /// Input typed since the last Enter, with when its first key came.
    typed: Vec<u8>,
    typed_since: f64,
    /// Output since then, where its echo would be.
    shown: Vec<u8>,
    /// A line whose Enter came before its echo (pasted, or typed fast).
    unechoed: Option<Vec<u8>>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Recording {
    /// Creates `dir/name.cast` (root-only) with its header.
    pub fn create(dir: &Path, name: &str, width: u32, height: u32, term: &str) -> std::io::Result<Self> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let path = dir.join(format!("{name}.cast"));
        let file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let header = serde_json::json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": timestamp,
            "env": { "TERM": term },
        });
        let mut recording = Self {
            file,
            path,
            hash: Sha256::new(),
            started: Instant::now(),
            partial: Vec::new(),
            held: String::new(),
            held_since: None,
            typed: Vec::new(),
            typed_since: 0.0,
            shown: Vec::new(),
            unechoed: None,
        };
        recording.line(&header.to_string())?;
        Ok(recording)
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.hash.update(&bytes);
        self.file.write_all(&bytes)
    }

    fn event(&mut self, code: &str, data: &str) -> std::io::Result<()> {
        let at = self.started.elapsed().as_secs_f64();
        self.event_at(at, code, data)
    }

    fn event_at(&mut self, at: f64, code: &str, data: &str) -> std::io::Result<()> {
        let event = serde_json::json!([(at * 1e6).round() / 1e6, code, data]);
        self.line(&event.to_string())
    }

    /// Writes what of the held output can be judged (`all`: everything),
    /// masked, at the time its first byte came.
    fn release(&mut self, all: bool) -> std::io::Result<()> {
        let cut = if all { self.held.len() } else { judgeable(&self.held) };
        if cut == 0 {
            return Ok(());
        }
        let rest = self.held.split_off(cut);
        let judged = std::mem::replace(&mut self.held, rest);
        let at = self.held_since.take().unwrap_or_else(|| self.started.elapsed().as_secs_f64());
        if !self.held.is_empty() {
            self.held_since = Some(self.started.elapsed().as_secs_f64());
        }
        self.event_at(at, "o", &mask(&judged))
    }

    /// Records terminal output (masked).
    pub fn output(&mut self, data: &[u8]) -> std::io::Result<()> {
        let watching = !self.typed.is_empty() || self.unechoed.is_some();
        if watching && self.shown.len() + data.len() <= MAX_SHOWN {
            self.shown.extend_from_slice(data);
        }
        if let Some(line) = self.unechoed.take_if(|line| echoed(line, &self.shown)) {
            self.shown.clear();
            self.event("i", &mask(&String::from_utf8_lossy(&line)))?;
        }
        self.partial.extend_from_slice(data);
        let complete = match std::str::from_utf8(&self.partial) {
            Ok(_) => self.partial.len(),
            // An incomplete sequence at the end waits for the next packet;
            // invalid bytes elsewhere are replaced.
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            Err(_) => self.partial.len(),
        };
        if complete == 0 {
            return Ok(());
        }
        let rest = self.partial.split_off(complete);
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial = rest;
        if self.held.is_empty() {
            self.held_since = Some(self.started.elapsed().as_secs_f64());
        }
        self.held.push_str(&text);
        self.release(false)
    }

    /// Records typed input (only when policy asks for it): a line at its
    /// Enter, and only when the terminal echoed it.
    pub fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        for &byte in data {
            if self.typed.is_empty() {
                // A line still not echoed when the next is typed never was.
                self.unechoed = None;
                self.typed_since = self.started.elapsed().as_secs_f64();
                self.shown.clear();
            }
            if self.typed.len() < MAX_TYPED_LINE {
                self.typed.push(byte);
            }
            if byte == b'\r' || byte == b'\n' {
                let line = std::mem::take(&mut self.typed);
                if echoed(&line, &self.shown) {
                    let at = self.typed_since;
                    self.event_at(at, "i", &mask(&String::from_utf8_lossy(&line)))?;
                    self.shown.clear();
                } else {
                    // Its echo may be on the way: judged with the output to come.
                    self.unechoed = Some(line);
                }
            }
        }
        Ok(())
    }

    /// Records input that is data, not a terminal's keys (a command's stdin
    /// without a terminal: nothing echoes it), masked, as it comes.
    pub fn stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.event("i", &mask(&String::from_utf8_lossy(data)))
    }

    /// Records a window size change.
    pub fn resize(&mut self, width: u32, height: u32) -> std::io::Result<()> {
        self.event("r", &format!("{width}x{height}"))
    }

    /// Flushes and returns the file's path and SHA-256 (hex).
    pub fn finish(mut self) -> std::io::Result<(PathBuf, String)> {
        let rest = std::mem::take(&mut self.partial);
        self.held.push_str(&String::from_utf8_lossy(&rest));
        self.release(true)?;
        self.file.sync_data()?;
        Ok((self.path, crate::hex::encode(&self.hash.finalize())))
    }
}

/// Whether the printable part of a typed line shows in the output since
/// it was typed: echoed as typed. Lines edited as they were typed may not
/// be found, and stay out of the recording; that errs on the side of a
/// password.
fn echoed(line: &[u8], shown: &[u8]) -> bool {
    let printable: Vec<u8> = line.iter().copied().filter(|&b| b >= 0x20 && b != 0x7f).collect();
    if printable.is_empty() {
        return true;
    }
    memchr::memmem::find(shown, &printable).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(text: &str) -> Vec<String> {
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        lines.iter().filter(|l| l[1] == "o").map(|l| l[2].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn typed_input_is_recorded_only_where_the_terminal_echoed_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut recording = Recording::create(dir.path(), "typed", 80, 24, "xterm").unwrap();
        // Key by key, echoed as typed.
        for key in [b"l", b"s", b"\r"] {
            recording.input(key).unwrap();
            recording.output(key).unwrap();
        }
        // A password prompt: keys not echoed.
        recording.output(b"Password: ").unwrap();
        for key in [b"h", b"u", b"n", b"t", b"e", b"r", b"2", b"\r"] {
            recording.input(key).unwrap();
        }
        recording.output(b"\r\nwelcome\r\n").unwrap();
        // Pasted whole: the echo comes after the Enter.
        recording.input(b"echo pasted\r").unwrap();
        recording.output(b"echo pasted\r\npasted\r\n").unwrap();
        let (path, _) = recording.finish().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let inputs: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e[1] == "i")
            .map(|e| e[2].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(inputs, ["ls\r", "echo pasted\r"]);
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn casts_have_a_header_events_and_a_matching_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut recording = Recording::create(dir.path(), "s1", 80, 24, "xterm").unwrap();
        recording.output("héllo ".as_bytes()).unwrap();
        // A two-byte character split across packets is written whole.
        let split = "é".as_bytes();
        recording.output(&split[..1]).unwrap();
        recording.output(&split[1..]).unwrap();
        recording.output(b"\r\n").unwrap();
        recording.resize(100, 30).unwrap();
        recording.output(b"psql postgres://app:hunter2@db/x\r\n").unwrap();
        let (path, sha) = recording.finish().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(crate::hex::encode(&Sha256::digest(text.as_bytes())), sha);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "héllo é\r\n");
        assert_eq!(lines[2][1], "r");
        assert_eq!(lines[2][2], "100x30");
        assert!(!text.contains("hunter2"), "secrets masked: {text}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn secrets_echoed_a_key_at_a_time_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let mut recording = Recording::create(dir.path(), "s2", 80, 24, "xterm").unwrap();
        for key in "$ psql 'host=db password=hunter2' -c 'select 1'\r\n".bytes() {
            recording.output(&[key]).unwrap();
        }
        for key in "$ psql postgres://app:s3cr3t@db/x\r\n".bytes() {
            recording.output(&[key]).unwrap();
        }
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\r\nb3BlbnNzaC1rZXktdjEAAAAA\r\nQyNTUxOQAAACDx\r\n-----END OPENSSH PRIVATE KEY-----\r\n";
        for chunk in pem.as_bytes().chunks(7) {
            recording.output(chunk).unwrap();
        }
        recording.output(b"$ ").unwrap();
        let (path, _) = recording.finish().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        for secret in ["hunter2", "s3cr3t", "b3BlbnNzaC1rZXktdjEAAAAA", "QyNTUxOQAAACDx"] {
            assert!(!text.contains(secret), "{secret} recorded: {text}");
        }
        let outputs = outputs(&text);
        // The value runs to the next space, its closing quote with it.
        assert_eq!(outputs[0], "$ psql 'host=db password=*** -c 'select 1'\r");
        assert!(outputs.iter().any(|o| o.contains("[private key masked by airlock]")), "{outputs:?}");
        assert_eq!(outputs.last().unwrap(), "$ ", "what is held is written at the end");
    }

    #[test]
    fn held_output_is_bounded() {
        assert_eq!(judgeable("a\r\nb"), 3);
        assert_eq!(judgeable(&"x".repeat(MAX_HELD_LINE + 1)), MAX_HELD_LINE + 1);
        let open = "ok\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n";
        assert_eq!(judgeable(open), 3, "an open key block waits");
        assert_eq!(judgeable(&format!("{open}-----END RSA PRIVATE KEY-----\n")), open.len() + 30);
    }
}
