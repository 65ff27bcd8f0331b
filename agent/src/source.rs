//! Places in configuration and policy files, so every error names the
//! file:line:column a person has to edit.

use std::{
    fmt,
    path::{Path, PathBuf},
};

/// A position in a file: 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceLocation {
    /// The file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1, in characters (not bytes) as editors count them.
    pub column: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a file or directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where, when the problem is at a place in a file (not, say, an
    /// unreadable directory).
    pub location: Option<SourceLocation>,
    /// What is wrong, for the person editing the file.
    pub message: String,
}

impl Diagnostic {
    /// A problem that is not at a place in a file; `message` names the path.
    pub fn without_location(message: String) -> Self {
        Self { location: None, message }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A file's text, indexed by line so that many byte offsets (TOML spans)
/// become locations without rescanning the file for each.
pub struct SourceFile<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceFile<'a> {
    /// Indexes `text`, which was read from `path`.
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { path, text, line_starts }
    }

    /// The file's path.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// The file's text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// The location of byte `offset`, clamped to the text and moved back to
    /// the start of a character (spans come from outside and are trusted no
    /// further than that).
    pub fn location(&self, offset: usize) -> SourceLocation {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // line_starts[0] == 0 <= offset, so the partition point is at least 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let column = self.text[self.line_starts[line - 1]..offset].chars().count() + 1;
        SourceLocation {
            file: self.path.to_owned(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// A problem at byte `offset`.
    pub fn diagnostic(&self, offset: usize, message: String) -> Diagnostic {
        Diagnostic { location: Some(self.location(offset)), message }
    }

    /// A TOML syntax or type error, at its span (the file's start if it has
    /// none).
    pub fn toml_error(&self, error: &toml::de::Error) -> Diagnostic {
        let offset = error.span().map_or(0, |span| span.start);
        self.diagnostic(offset, error.message().trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = 2\n\nc";
        let file = SourceFile::new(Path::new("f.toml"), text);
        let at = |offset| {
            let l = file.location(offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(4), (1, 5));
        assert_eq!(at(5), (1, 6), "the newline belongs to its line");
        assert_eq!(at(6), (2, 1));
        assert_eq!(at(9), (2, 3), "columns count characters, not bytes");
        assert_eq!(at(8), (2, 2), "inside a multi-byte character: its start");
        assert_eq!(at(14), (3, 1));
        assert_eq!(at(15), (4, 1));
        assert_eq!(at(999), (4, 2), "clamped to the end");
        assert_eq!(SourceFile::new(Path::new("empty"), "").location(3).to_string(), "empty:1:1");
    }

    #[test]
    fn diagnostics_print_location_then_message() {
        let file = SourceFile::new(Path::new("p/f.toml"), "x = 1\ny = 2\n");
        assert_eq!(file.diagnostic(10, "bad".into()).to_string(), "p/f.toml:2:5: bad");
        assert_eq!(Diagnostic::without_location("no file".into()).to_string(), "no file");
        let error = toml::from_str::<toml::Table>("x = 1\ny = \n").unwrap_err();
        let diagnostic = file.toml_error(&error);
        assert_eq!(diagnostic.location.map(|l| (l.line, l.column)), Some((2, 5)), "{}", diagnostic.message);
    }
}
