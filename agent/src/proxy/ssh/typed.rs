//! Command lines typed in interactive shells, reconstructed from keystrokes.
//!
//! Best effort: keystrokes go to the target as they are typed (the shell
//! echoes and edits them), and Airlock keeps its own copy of the line with
//! the simple edits applied (backspace, Ctrl-U, Ctrl-C; escape sequences such
//! as arrow keys are skipped). Only the Enter that would run a line is held
//! back for screening. Tab completion, history and cursor movement make the
//! copy differ from what the shell runs; exec requests are the reliable path.

use std::ops::Range;

/// Longest line kept; the Enter of a longer one is [`Piece::TooLong`].
const MAX_LINE: usize = 16 * 1024;

/// A piece of a chunk of typed input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Bytes to forward as they are.
    Bytes(Range<usize>),
    /// Enter (`byte`) that would run `line`.
    Enter {
        /// The line as reconstructed.
        line: String,
        /// The byte that ends it (CR or LF), forwarded if the line may run.
        byte: u8,
    },
    /// Enter of a line longer than [`MAX_LINE`], which is not judged by a part.
    TooLong,
}

/// Where in an escape sequence the input is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [ …` or `ESC O …`, until the final byte.
    Sequence,
}

/// The line being typed.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    line: Vec<u8>,
    /// Whether the line went past [`MAX_LINE`].
    overflowed: bool,
    escape: Escape,
    /// Earlier lines of an unfinished command (`for f in *; do` …), which
    /// the next Enter's line continues.
    pending: String,
}

impl LineBuffer {
    /// Splits `data` into bytes to forward and the Enters to screen.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut start = 0;
        for (i, &byte) in data.iter().enumerate() {
            match (self.escape, byte) {
                (Escape::Start, b'[' | b'O') => self.escape = Escape::Sequence,
                (Escape::Start, _) => self.escape = Escape::None,
                (Escape::Sequence, 0x40..=0x7e) => self.escape = Escape::None,
                (Escape::Sequence, _) => {}
                (Escape::None, b'\r' | b'\n') => {
                    if start < i {
                        pieces.push(Piece::Bytes(start..i));
                    }
                    if std::mem::take(&mut self.overflowed) {
                        self.line.clear();
                        self.pending.clear();
                        pieces.push(Piece::TooLong);
                        start = i + 1;
                        continue;
                    }
                    let typed = String::from_utf8_lossy(&std::mem::take(&mut self.line)).trim().to_owned();
                    let line = match std::mem::take(&mut self.pending) {
                        pending if pending.is_empty() => typed,
                        pending => format!("{pending}\n{typed}"),
                    };
                    pieces.push(Piece::Enter { line, byte });
                    start = i + 1;
                }
                (Escape::None, 0x1b) => self.escape = Escape::Start,
                (Escape::None, 0x7f | 0x08) => {
                    // One character, not one byte: drop UTF-8 continuation bytes with it.
                    while let Some(last) = self.line.pop() {
                        if last & 0xc0 != 0x80 {
                            break;
                        }
                    }
                }
                (Escape::None, 0x03) => {
                    self.line.clear();
                    self.pending.clear();
                    self.overflowed = false;
                }
                (Escape::None, 0x15) => {
                    self.line.clear();
                    self.overflowed = false;
                }
                (Escape::None, 0x17) => {
                    // Ctrl-W: the last word.
                    while self.line.last() == Some(&b' ') {
                        self.line.pop();
                    }
                    while self.line.last().is_some_and(|&c| c != b' ') {
                        self.line.pop();
                    }
                }
                (Escape::None, byte) if byte >= 0x20 || byte == b'\t' => {
                    if self.line.len() < MAX_LINE {
                        self.line.push(byte);
                    } else {
                        self.overflowed = true;
                    }
                }
                (Escape::None, _) => {}
            }
        }
        if start < data.len() {
            pieces.push(Piece::Bytes(start..data.len()));
        }
        pieces
    }

    /// `line` is unfinished: the next line continues it. Past the longest
    /// line kept it is dropped, the way a line too long to judge is: what
    /// reads it is not a shell Airlock follows.
    pub(crate) fn continues(&mut self, line: String) {
        if line.len() < 4 * MAX_LINE {
            self.pending = line;
        }
    }
}

/// A shell's input without a terminal (`ssh -T host < script`), read as
/// the shell reads it: by line, no editing. A line is held until its
/// newline arrives, so no part of it reaches the shell before it is judged
/// (a shell runs a last line without a newline at end of input).
#[derive(Debug, Default)]
pub(crate) struct ScriptLines {
    held: Vec<u8>,
    /// Earlier lines of an unfinished command.
    pending: String,
}

/// A line too long to judge.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLong;

impl ScriptLines {
    /// The complete lines in `data`, each with its newline; the rest is held.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, TooLong> {
        let mut lines = Vec::new();
        let mut rest = data;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            let mut line = std::mem::take(&mut self.held);
            line.extend_from_slice(&rest[..=end]);
            lines.push(line);
            rest = &rest[end + 1..];
        }
        self.held.extend_from_slice(rest);
        if self.held.len() > MAX_LINE * 4 {
            return Err(TooLong);
        }
        Ok(lines)
    }

    /// What is held at the end of input: a last line without its newline.
    pub(crate) fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// The text to judge for `line`: the unfinished lines before it and it.
    pub(crate) fn text(&mut self, line: &[u8]) -> String {
        let line = String::from_utf8_lossy(line);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        match std::mem::take(&mut self.pending) {
            pending if pending.is_empty() => line.to_owned(),
            pending => format!("{pending}\n{line}"),
        }
    }

    /// `text` is unfinished: the next line continues it.
    pub(crate) fn continues(&mut self, text: String) {
        self.pending = text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut buffer = LineBuffer::default();
        chunks.iter().flat_map(|chunk| lines_of(&mut buffer, chunk)).collect()
    }

    #[test]
    fn keystrokes_make_lines_with_simple_edits_applied() {
        assert_eq!(lines(&[b"r", b"m -rf /tmp/x", b"\r"]), ["rm -rf /tmp/x"]);
        assert_eq!(lines(&[b"rmx\x7f -rf /\r"]), ["rm -rf /"]);
        assert_eq!(lines(&[b"echo no\x15ls\r"]), ["ls"]);
        assert_eq!(lines(&[b"ls \x1b[A\x1b[D-l\r"]), ["ls -l"]);
        assert_eq!(lines(&[b"rm -rf foo\x17bar\r"]), ["rm -rf bar"]);
        assert_eq!(lines(&["caf\u{e9}\x7fe\r".as_bytes()]), ["cafe"]);
        assert_eq!(lines(&[b"a\rb\n"]), ["a", "b"]);
    }

    #[test]
    fn an_unfinished_line_is_continued_until_ctrl_c() {
        let mut buffer = LineBuffer::default();
        buffer.feed(b"for f in *; do\r");
        buffer.continues("for f in *; do".into());
        let pieces = buffer.feed(b"rm $f\r");
        assert_eq!(pieces, [Piece::Bytes(0..5), Piece::Enter { line: "for f in *; do\nrm $f".into(), byte: b'\r' }]);
        buffer.continues("for f in *; do\nrm $f".into());
        assert_eq!(lines_of(&mut buffer, b"\x03ls\r"), ["ls"]);
    }

    fn lines_of(buffer: &mut LineBuffer, chunk: &[u8]) -> Vec<String> {
        buffer
            .feed(chunk)
            .into_iter()
            .filter_map(|piece| match piece {
                Piece::Enter { line, .. } => Some(line),
                Piece::Bytes(_) | Piece::TooLong => None,
            })
            .collect()
    }

    #[test]
    fn a_line_too_long_to_keep_is_not_judged_by_its_start() {
        let mut buffer = LineBuffer::default();
        let mut long = vec![b' '; MAX_LINE + 10];
        long.extend_from_slice(b"rm -rf /\r");
        assert!(buffer.feed(&long).contains(&Piece::TooLong));
        assert_eq!(lines_of(&mut buffer, b"ls\r"), ["ls"]);
    }

    #[test]
    fn script_lines_are_held_whole_and_read_without_editing() {
        let mut script = ScriptLines::default();
        assert_eq!(script.feed(b"true\nrm -rf /x \x15ls").unwrap(), [b"true\n".to_vec()]);
        let lines = script.feed(b"\nfor d in x; do\n").unwrap();
        assert_eq!(script.text(&lines[0]), "rm -rf /x \u{15}ls");
        assert_eq!(script.text(&lines[1]), "for d in x; do");
        script.continues("for d in x; do".into());
        let last = script.feed(b"rm -rf $d").unwrap();
        assert!(last.is_empty());
        let rest = script.rest();
        assert_eq!(script.text(&rest), "for d in x; do\nrm -rf $d");
        assert_eq!(script.feed(&vec![b'x'; MAX_LINE * 4 + 1]), Err(TooLong));
    }

    #[test]
    fn bytes_around_enters_are_forwarded_in_order() {
        let mut buffer = LineBuffer::default();
        let pieces = buffer.feed(b"ls\rpwd");
        assert_eq!(pieces, [Piece::Bytes(0..2), Piece::Enter { line: "ls".into(), byte: b'\r' }, Piece::Bytes(3..6)]);
    }
}
