//! Session recordings in asciicast v2, the format asciinema plays.
//!
//! Only what the terminal shows is recorded (output and window sizes); typed
//! input stays out unless policy asks for it, since it carries passwords
//! typed at prompts that do not echo. Output passes through [`mask`] first.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use sha2::{Digest as _, Sha256};

/// Masks secrets in recorded output. The hook where the masking engine
/// plugs in; today it applies Airlock's redactors for URI and keyword passwords.
pub fn mask(text: &str) -> String {
    crate::redact::keyword_password(&crate::redact::uri_passwords(text))
}

/// An asciicast v2 file being written.
pub struct Recording {
    file: fs::File,
    path: PathBuf,
    hash: Sha256,
    started: Instant,
    /// Bytes of a UTF-8 sequence cut by a packet boundary, completed by the next packet.
    partial: Vec<u8>,
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
        let mut recording = Self { file, path, hash: Sha256::new(), started: Instant::now(), partial: Vec::new() };
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
        let event = serde_json::json!([(at * 1e6).round() / 1e6, code, data]);
        self.line(&event.to_string())
    }

    /// Records terminal output (masked).
    pub fn output(&mut self, data: &[u8]) -> std::io::Result<()> {
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
        self.event("o", &mask(&text))
    }

    /// Records typed input (only when policy asks for it).
    pub fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.event("i", &mask(&String::from_utf8_lossy(data)))
    }

    /// Records a window size change.
    pub fn resize(&mut self, width: u32, height: u32) -> std::io::Result<()> {
        self.event("r", &format!("{width}x{height}"))
    }

    /// Flushes and returns the file's path and SHA-256 (hex).
    pub fn finish(mut self) -> std::io::Result<(PathBuf, String)> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.event("o", &mask(&String::from_utf8_lossy(&rest)))?;
        }
        self.file.sync_data()?;
        Ok((self.path, crate::hex::encode(&self.hash.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_have_a_header_events_and_a_matching_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut recording = Recording::create(dir.path(), "s1", 80, 24, "xterm").unwrap();
        recording.output("héllo ".as_bytes()).unwrap();
        // A two-byte character split across packets is written whole.
        let split = "é".as_bytes();
        recording.output(&split[..1]).unwrap();
        recording.output(&split[1..]).unwrap();
        recording.resize(100, 30).unwrap();
        recording.output(b"psql postgres://app:hunter2@db/x\r\n").unwrap();
        let (path, sha) = recording.finish().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(crate::hex::encode(&Sha256::digest(text.as_bytes())), sha);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "héllo ");
        assert_eq!(lines[2][2], "é");
        assert_eq!(lines[3][1], "r");
        assert_eq!(lines[3][2], "100x30");
        assert!(!text.contains("hunter2"), "secrets masked: {text}");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
