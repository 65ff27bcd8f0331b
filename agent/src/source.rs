//! Places in configuration and policy files, for errors a person can act on.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// A 1-based line and column in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl SourceLocation {
    /// The location of byte `offset` in `text` (clamped to the text).
    pub fn at(file: &Path, text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { file: file.to_owned(), line: line as u32, column: column as u32 }
    }

    /// The start of a span, if there is one; else the start of the file.
    pub fn of_span(file: &Path, text: &str, span: Option<Range<usize>>) -> Self {
        Self::at(file, text, span.map_or(0, |s| s.start))
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where.
    pub location: SourceLocation,
    /// What is wrong, for the person editing the file.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic for a TOML syntax or type error.
    pub fn from_toml(file: &Path, text: &str, error: &toml::de::Error) -> Self {
        Self {
            location: SourceLocation::of_span(file, text, error.span()),
            message: error.message().trim_end().to_owned(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "a = 1\nbé = 2\n\nc";
        let at = |offset| {
            let l = SourceLocation::at(Path::new("f.toml"), text, offset);
            (l.line, l.column)
        };
        assert_eq!(at(0), (1, 1));
        assert_eq!(at(4), (1, 5));
        assert_eq!(at(6), (2, 1));
        assert_eq!(at(9), (2, 3), "columns count characters, not bytes");
        assert_eq!(at(8), (2, 2), "inside a multi-byte character: its start");
        assert_eq!(at(14), (3, 1));
        assert_eq!(at(15), (4, 1));
        assert_eq!(at(999), (4, 2), "clamped to the end");
        assert_eq!(SourceLocation::at(Path::new("p/f.toml"), text, 6).to_string(), "p/f.toml:2:1");
    }
}
