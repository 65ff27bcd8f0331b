//! JSON values (`json`, `jsonb`): string and number leaves are masked by
//! the detectors, values under keys that match a column pattern by that
//! rule. The document is scanned once and copied only from the first change
//! on; its formatting and key order stay as the server sent them.

use std::sync::Arc;

use super::{MaskError, MaskOutcome, engine::Masker, engine::TextResult, strategy::Replacement};

/// Nesting deeper than this is refused rather than tracked without bound.
const MAX_DEPTH: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Clone, Copy)]
enum Expect {
    Value,
    Key { first: bool },
    CommaOrEnd,
}

/// Copies `src` to `out` lazily: nothing until the first replacement, and
/// nothing left in `out` when nothing was replaced.
pub(super) struct Rewrite<'a> {
    /// Written before the first byte of `src` (see [`Rewrite::after`]).
    prefix: &'a [u8],
    src: &'a [u8],
    out: &'a mut Vec<u8>,
    /// Length of `out` before the rewrite.
    base: usize,
    copied: usize,
    started: bool,
    changed: bool,
}

impl<'a> Rewrite<'a> {
    pub(super) fn new(src: &'a [u8], out: &'a mut Vec<u8>) -> Self {
        Self::after(&[], src, out)
    }

    /// As [`new`](Self::new), with `prefix` written before the rewritten
    /// `src` when there is one: the proxy's bytes before a frame's body.
    pub(super) fn after(prefix: &'a [u8], src: &'a [u8], out: &'a mut Vec<u8>) -> Self {
        let base = out.len();
        Self { prefix, src, out, base, copied: 0, started: false, changed: false }
    }

    /// Replaces `src[start..end]` by what `write` appends.
    pub(super) fn replace(&mut self, start: usize, end: usize, write: impl FnOnce(&mut Vec<u8>)) {
        write(self.copy_to(start));
        self.replaced_to(end);
    }

    /// Copies `src` up to `start`, and gives `out` for a replacement to be
    /// written in place; [`replaced_to`](Self::replaced_to) then says where
    /// it ends in `src`. What is written without that call must be removed
    /// by the caller.
    pub(super) fn copy_to(&mut self, start: usize) -> &mut Vec<u8> {
        if !self.started {
            self.started = true;
            self.out.extend_from_slice(self.prefix);
        }
        self.out.extend_from_slice(&self.src[self.copied..start]);
        self.copied = start;
        self.out
    }

    /// What was written since [`copy_to`](Self::copy_to) replaces `src` up to `end`.
    pub(super) fn replaced_to(&mut self, end: usize) {
        self.copied = end;
        self.changed = true;
    }

    /// Appends the rest if anything changed; whether it did.
    pub(super) fn finish(self) -> bool {
        if self.changed {
            self.out.extend_from_slice(&self.src[self.copied..]);
        } else {
            self.out.truncate(self.base);
        }
        self.changed
    }
}

/// Checks that `json` is one JSON value.
pub(super) fn validate(json: &[u8]) -> Result<(), MaskError> {
    let mut sink = Vec::new();
    scan(None, json, None, &mut sink, &mut MaskOutcome::default()).map(|_| ())
}

/// Masks `json` into `out`; whether anything changed (if not, nothing was
/// written).
pub(super) fn mask(
    masker: &Masker,
    json: &[u8],
    column: Option<&Arc<str>>,
    out: &mut Vec<u8>,
    outcome: &mut MaskOutcome,
) -> Result<bool, MaskError> {
    scan(Some(masker), json, column, out, outcome)
}

fn malformed(what: &'static str) -> MaskError {
    MaskError::Malformed(what)
}

fn scan(
    masker: Option<&Masker>,
    json: &[u8],
    column: Option<&Arc<str>>,
    out: &mut Vec<u8>,
    outcome: &mut MaskOutcome,
) -> Result<bool, MaskError> {
    let detecting = masker.is_some_and(Masker::has_detectors);
    let key_rules = masker.is_some_and(|m| !m.rules.is_empty());
    let mut rewrite = Rewrite::new(json, out);
    let mut stack: Vec<Container> = Vec::new();
    // A value under a key matching a rule: (rule, value start, depth).
    let mut pending: Option<(usize, usize, usize)> = None;
    let mut expect = Expect::Value;
    let mut pos = 0;
    let mut scratch = Vec::new();
    loop {
        pos = skip_ws(json, pos);
        // The value that just ended, if any: (end, is a string).
        let mut completed: Option<(usize, bool)> = None;
        match expect {
            Expect::Value => {
                let start = pos;
                match json.get(pos) {
                    None => return Err(malformed("JSON value ends early")),
                    Some(b'{') => {
                        push(&mut stack, Container::Object)?;
                        pos += 1;
                        expect = Expect::Key { first: true };
                    }
                    Some(b'[') => {
                        push(&mut stack, Container::Array)?;
                        pos = skip_ws(json, pos + 1);
                        if json.get(pos) == Some(&b']') {
                            stack.pop();
                            pos += 1;
                            completed = Some((pos, false));
                            expect = Expect::CommaOrEnd;
                        }
                    }
                    Some(b'"') => {
                        let (end, escaped) = string_end(json, pos)?;
                        pos = end;
                        if let (Some(masker), true, None) = (masker, detecting, pending) {
                            let content = string_content(json, start, end, escaped, &mut scratch);
                            let mut masked = Vec::new();
                            match masker.mask_text(content, true, column, &mut masked, outcome) {
                                TextResult::Unchanged => {}
                                TextResult::Replaced => rewrite.replace(start, end, |o| write_string(&masked, o)),
                                TextResult::Null => rewrite.replace(start, end, |o| o.extend_from_slice(b"null")),
                            }
                        }
                        completed = Some((end, true));
                        expect = Expect::CommaOrEnd;
                    }
                    Some(b'-' | b'0'..=b'9') => {
                        let end = number_end(json, pos)?;
                        pos = end;
                        // A card number stored as a JSON number is still one.
                        if let (Some(masker), true, None) = (masker, detecting, pending) {
                            let mut masked = Vec::new();
                            match masker.mask_text(&json[start..end], true, column, &mut masked, outcome) {
                                TextResult::Unchanged => {}
                                TextResult::Replaced => rewrite.replace(start, end, |o| write_string(&masked, o)),
                                TextResult::Null => rewrite.replace(start, end, |o| o.extend_from_slice(b"null")),
                            }
                        }
                        completed = Some((end, false));
                        expect = Expect::CommaOrEnd;
                    }
                    Some(_) => {
                        let literal =
                            [&b"true"[..], b"false", b"null"].into_iter().find(|l| json[pos..].starts_with(l));
                        let literal = literal.ok_or(malformed("JSON has an unexpected character"))?;
                        pos += literal.len();
                        completed = Some((pos, false));
                        expect = Expect::CommaOrEnd;
                    }
                }
            }
            Expect::Key { first } => {
                if first && json.get(pos) == Some(&b'}') {
                    stack.pop();
                    pos += 1;
                    completed = Some((pos, false));
                    expect = Expect::CommaOrEnd;
                } else {
                    if json.get(pos) != Some(&b'"') {
                        return Err(malformed("JSON object key is not a string"));
                    }
                    let (end, escaped) = string_end(json, pos)?;
                    if key_rules && pending.is_none() {
                        let key = string_content(json, pos, end, escaped, &mut scratch);
                        let rule = masker.and_then(|m| m.rules.iter().position(|r| r.columns.matches_key(key)));
                        if let Some(rule) = rule {
                            pending = Some((rule, usize::MAX, stack.len()));
                        }
                    }
                    pos = skip_ws(json, end);
                    if json.get(pos) != Some(&b':') {
                        return Err(malformed("JSON object key without ':'"));
                    }
                    pos = skip_ws(json, pos + 1);
                    if let Some((_, start @ usize::MAX, _)) = &mut pending {
                        *start = pos;
                    }
                    expect = Expect::Value;
                }
            }
            Expect::CommaOrEnd => match (stack.last(), json.get(pos)) {
                (None, None) => break,
                (None, Some(_)) => return Err(malformed("JSON has bytes after its value")),
                (Some(Container::Object), Some(b',')) => {
                    pos += 1;
                    expect = Expect::Key { first: false };
                }
                (Some(Container::Array), Some(b',')) => {
                    pos += 1;
                    expect = Expect::Value;
                }
                (Some(Container::Object), Some(b'}')) | (Some(Container::Array), Some(b']')) => {
                    stack.pop();
                    pos += 1;
                    completed = Some((pos, false));
                }
                _ => return Err(malformed("JSON container is not closed properly")),
            },
        }
        // The value under a matching key ends when the stack is back at
        // the depth it started at.
        if let (Some((end, is_string)), Some((rule, start, depth))) = (completed, pending)
            && stack.len() == depth
            && start != usize::MAX
        {
            pending = None;
            if let Some(masker) = masker {
                let content =
                    if is_string { string_content(json, start, end, true, &mut scratch) } else { &json[start..end] };
                let mut masked = Vec::new();
                match masker.apply_rule(rule, content, column, &mut masked, outcome) {
                    Replacement::Text => rewrite.replace(start, end, |o| write_string(&masked, o)),
                    Replacement::Null => rewrite.replace(start, end, |o| o.extend_from_slice(b"null")),
                }
            }
        }
    }
    Ok(rewrite.finish())
}

fn push(stack: &mut Vec<Container>, container: Container) -> Result<(), MaskError> {
    if stack.len() >= MAX_DEPTH {
        return Err(malformed("JSON nests too deep"));
    }
    stack.push(container);
    Ok(())
}

pub(super) fn skip_ws(json: &[u8], mut pos: usize) -> usize {
    while matches!(json.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// End (past the closing quote) of the string starting at `start`, and
/// whether it has escapes.
fn string_end(json: &[u8], start: usize) -> Result<(usize, bool), MaskError> {
    // The whole value is here: a cut string is an unterminated one.
    super::json_stream::string_end(json, start, true)?.ok_or(malformed("JSON string is not terminated"))
}

/// Whether `b` may stand in a JSON number (its grammar is checked no further:
/// a masker only needs where the number ends).
pub(super) fn is_number_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

fn number_end(json: &[u8], start: usize) -> Result<usize, MaskError> {
    let len = json[start..].iter().position(|b| !is_number_byte(*b)).unwrap_or(json.len() - start);
    if !json[start..start + len].iter().any(u8::is_ascii_digit) {
        return Err(malformed("JSON number without digits"));
    }
    Ok(start + len)
}

/// The text of the string `json[start..end]` (quotes included), decoded
/// into `scratch` when it has escapes.
pub(super) fn string_content<'a>(
    json: &'a [u8],
    start: usize,
    end: usize,
    escaped: bool,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    let inner = &json[start + 1..end - 1];
    if !escaped || memchr::memchr(b'\\', inner).is_none() {
        return inner;
    }
    scratch.clear();
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' {
            scratch.push(b);
            i += 1;
            continue;
        }
        let next = inner.get(i + 1).copied().unwrap_or(b'\\');
        i += 2;
        let simple = match next {
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            other => Some(other),
        };
        if let Some(c) = simple {
            scratch.push(c);
            continue;
        }
        let unit = hex4(inner.get(i..i + 4));
        i += 4;
        let c = match unit {
            Some(high @ 0xD800..=0xDBFF) if inner.get(i..i + 2) == Some(b"\\u") => {
                match hex4(inner.get(i + 2..i + 6)) {
                    Some(low @ 0xDC00..=0xDFFF) => {
                        i += 6;
                        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                    }
                    _ => None,
                }
            }
            Some(unit) => char::from_u32(unit),
            None => None,
        };
        let mut buf = [0u8; 4];
        scratch.extend_from_slice(c.unwrap_or(char::REPLACEMENT_CHARACTER).encode_utf8(&mut buf).as_bytes());
    }
    scratch
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = std::str::from_utf8(digits?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// Appends `text` as a JSON string.
pub(super) fn write_string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..0x20 => {
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&crate::hex::pair(b));
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}
