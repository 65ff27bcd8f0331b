//! JSON paths naming values to mask in HTTP answers: the subset of RFC 9535
//! that names places rather than filters them.
//!
//! `$` is the document; `.name` and `["name"]` a member; `[3]` an array
//! element; `.*` and `[*]` any member or element; `..` before a step lets
//! any number of levels come first (`$..password`: a `password` member at
//! any depth). A path is matched as the document streams, one level at a
//! time ([`JsonPath::step`]), so a masker never holds a document to find
//! out where it is.

use std::fmt;

/// Most steps a path may have: its progress is a 64-bit set.
const MAX_STEPS: usize = 63;

/// A parsed JSON path.
#[derive(Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    selector: Selector,
    /// Written after `..`: levels before it are skipped.
    descendant: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Selector {
    Member(Box<[u8]>),
    Element(usize),
    Any,
}

/// Where a value sits in its parent.
#[derive(Clone, Copy, Debug)]
pub enum Segment<'a> {
    /// Under this member name (as decoded).
    Member(&'a [u8]),
    /// At this index.
    Element(usize),
}

/// How far a path has matched at some level: bit `i` set when its first
/// `i` steps match the levels so far.
pub type Progress = u64;

/// The progress of every path at the document itself.
pub const AT_ROOT: Progress = 1;

impl JsonPath {
    /// Parses `text`; the error says what is wrong, for a policy diagnostic.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = text.as_bytes();
        if bytes.first() != Some(&b'$') {
            return Err(format!("JSON path {text:?} must start with `$`"));
        }
        let mut steps = Vec::new();
        let mut at = 1;
        while at < bytes.len() {
            let descendant = bytes[at..].starts_with(b"..");
            if descendant {
                at += 1;
            }
            let selector = match bytes[at] {
                b'.' => {
                    at += 1;
                    let end = bytes[at..].iter().position(|&b| b == b'.' || b == b'[').map_or(bytes.len(), |n| at + n);
                    let name = &text[at..end];
                    at = end;
                    match name {
                        "" => return Err(format!("JSON path {text:?} has a `.` without a name")),
                        "*" => Selector::Any,
                        name => Selector::Member(name.as_bytes().into()),
                    }
                }
                b'[' => {
                    let close =
                        bracket_end(bytes, at).ok_or_else(|| format!("JSON path {text:?} has an unclosed `[`"))?;
                    let inside = text[at + 1..close].trim();
                    at = close + 1;
                    if inside == "*" {
                        Selector::Any
                    } else if let Some(name) = quoted(inside) {
                        Selector::Member(name.into_bytes().into())
                    } else if let Ok(index) = inside.parse::<usize>() {
                        Selector::Element(index)
                    } else {
                        return Err(format!(
                            "JSON path {text:?}: `[{inside}]` is not a quoted name, an index or `*` (filters are not supported)"
                        ));
                    }
                }
                _ => return Err(format!("JSON path {text:?}: expected `.` or `[` at byte {at}")),
            };
            steps.push(Step { selector, descendant });
            if steps.len() > MAX_STEPS {
                return Err(format!("JSON path {text:?} has more than {MAX_STEPS} steps"));
            }
        }
        if steps.is_empty() {
            return Err("JSON path `$` names the whole document: name the members to mask".into());
        }
        Ok(Self { text: text.to_owned(), steps })
    }

    /// The progress one level down, at `segment`, from `parent`'s.
    pub fn step(&self, parent: Progress, segment: Segment<'_>) -> Progress {
        let mut next = 0;
        let mut states = parent;
        while states != 0 {
            let i = states.trailing_zeros() as usize;
            states &= states - 1;
            let Some(step) = self.steps.get(i) else { continue };
            if step.descendant {
                next |= 1 << i;
            }
            let hit = match (&step.selector, segment) {
                (Selector::Any, _) => true,
                (Selector::Member(name), Segment::Member(key)) => **name == *key,
                (Selector::Element(index), Segment::Element(at)) => *index == at,
                _ => false,
            };
            if hit {
                next |= 1 << (i + 1);
            }
        }
        next
    }

    /// Whether `progress` is a match of the whole path.
    pub fn matched(&self, progress: Progress) -> bool {
        progress & (1 << self.steps.len()) != 0
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The `]` closing the bracket at `open`, skipping quoted names.
fn bracket_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut quote = None;
    let mut at = open + 1;
    while at < bytes.len() {
        match (quote, bytes[at]) {
            (Some(q), b'\\') if bytes.get(at + 1) == Some(&q) || bytes.get(at + 1) == Some(&b'\\') => at += 1,
            (Some(q), b) if b == q => quote = None,
            (None, b @ (b'"' | b'\'')) => quote = Some(b),
            (None, b']') => return Some(at),
            _ => {}
        }
        at += 1;
    }
    None
}

/// The name in `"name"` or `'name'`, with `\"`, `\'` and `\\` unescaped.
fn quoted(inside: &str) -> Option<String> {
    let quote = inside.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = inside.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut name = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            name.push(chars.next()?);
        } else if c == quote {
            return None;
        } else {
            name.push(c);
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(path: &str, at: &[Segment<'_>]) -> bool {
        let path = JsonPath::parse(path).unwrap();
        let progress = at.iter().fold(AT_ROOT, |progress, segment| path.step(progress, *segment));
        path.matched(progress)
    }

    use Segment::{Element as E, Member as M};

    #[test]
    fn members_elements_and_wildcards() {
        assert!(matches("$.data", &[M(b"data")]));
        assert!(!matches("$.data", &[M(b"metadata")]));
        assert!(!matches("$.data", &[M(b"items"), M(b"data")]));
        assert!(matches("$.items[*].data", &[M(b"items"), E(7), M(b"data")]));
        assert!(matches("$.items[2].data", &[M(b"items"), E(2), M(b"data")]));
        assert!(!matches("$.items[2].data", &[M(b"items"), E(3), M(b"data")]));
        assert!(matches("$.data.*", &[M(b"data"), M(b"password")]));
        assert!(matches("$['a.b'][\"c\"]", &[M(b"a.b"), M(b"c")]));
    }

    #[test]
    fn descendant_steps_match_at_any_depth() {
        assert!(matches("$..password", &[M(b"password")]));
        assert!(matches("$..password", &[M(b"a"), E(0), M(b"b"), M(b"password")]));
        assert!(!matches("$..password", &[M(b"password"), M(b"x")]));
        assert!(matches(
            "$..annotations['kubectl.kubernetes.io/last-applied-configuration']",
            &[
                M(b"rows"),
                E(0),
                M(b"object"),
                M(b"metadata"),
                M(b"annotations"),
                M(b"kubectl.kubernetes.io/last-applied-configuration"),
            ]
        ));
        assert!(matches("$..a..b", &[M(b"a"), M(b"x"), M(b"a"), M(b"b")]));
    }

    #[test]
    fn what_is_not_a_path_is_refused_with_a_reason() {
        for (text, says) in [
            ("data", "must start with `$`"),
            ("$", "whole document"),
            ("$.", "without a name"),
            ("$[?(@.x)]", "filters are not supported"),
            ("$['open", "unclosed"),
            ("$x", "expected `.` or `[`"),
        ] {
            let error = JsonPath::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        let long = format!("${}", ".a".repeat(64));
        assert!(JsonPath::parse(&long).unwrap_err().contains("more than 63"));
    }
}
