//! JSON bodies of any size masked as they stream (HTTP answers): a
//! document, or a sequence of them (a Kubernetes watch, NDJSON), arrives in
//! chunks cut anywhere; each chunk's complete tokens are masked and passed
//! on, and only a token cut by the chunk's end waits for the next one.
//!
//! What is masked, in order: everything under a value a rule names (a JSON
//! path rule, or a `column_pattern` matching its member name), every
//! scalar of it by the rule's strategy; else string and number leaves by
//! the detectors. Formatting, member order and everything not masked stay
//! as the server sent them.

use std::sync::Arc;

use super::{
    MaskError, MaskOutcome,
    engine::{Masker, TextResult},
    json::{is_number_byte, skip_ws, string_content, write_string},
    json_places::Places,
    strategy::Replacement,
    swar,
};

/// Nesting deeper than this is refused rather than tracked without bound.
const MAX_DEPTH: usize = 10_000;
/// Longest single token (a string, a number) held while it arrives: a
/// value longer than this cannot be inspected, so the body is refused.
pub const MAX_TOKEN: usize = 16 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

/// One open object or array.
struct Level {
    container: Container,
    /// The index of the element that comes next (arrays).
    next_element: usize,
    /// Whether some JSON path rule may still match under this level.
    live: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (or, right after `[`, the `]` of an empty array).
    Value {
        array_start: bool,
    },
    /// A member name (or, right after `{`, the `}` of an empty object).
    Member {
        first: bool,
    },
    Colon,
    CommaOrEnd,
}

/// Why a value was not read.
enum Stop {
    /// It is cut by the chunk's end: it waits for the next chunk.
    Cut,
    /// It is not JSON.
    Bad(MaskError),
}

impl From<MaskError> for Stop {
    fn from(error: MaskError) -> Self {
        Self::Bad(error)
    }
}

/// Masks one JSON body, chunk by chunk.
pub struct JsonStream {
    masker: Arc<Masker>,
    places: Places,
    levels: Vec<Level>,
    /// The rule masking the subtree being read, and the depth it began at.
    masking_subtree: Option<(usize, usize)>,
    expect: Expect,
    /// Bytes of a cut token, waiting for the rest.
    carry: Vec<u8>,
    scratch: Vec<u8>,
    masked: Vec<u8>,
    outcome: MaskOutcome,
}

impl JsonStream {
    /// A masker for one body, for the person `masker` was built for.
    pub fn new(masker: Arc<Masker>) -> Self {
        Self {
            places: Places::new(&masker.rules),
            masker,
            levels: Vec::new(),
            masking_subtree: None,
            expect: Expect::Value { array_start: false },
            carry: Vec::new(),
            scratch: Vec::new(),
            masked: Vec::new(),
            outcome: MaskOutcome::default(),
        }
    }

    /// Masks what `chunk` completes into `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let mut chunk = chunk;
        if !self.carry.is_empty() {
            // Only the cut token is joined with the bytes that complete it;
            // the rest of the chunk is read where it lies.
            let Some(end) = token_end(&self.carry, chunk) else {
                self.carry.extend_from_slice(chunk);
                return self.check_carry();
            };
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(&chunk[..end]);
            let done = self.run(&joined, false, out)?;
            chunk = &chunk[end..];
            if done < joined.len() {
                joined.drain(..done);
                joined.extend_from_slice(chunk);
                self.carry = joined;
                return self.check_carry();
            }
            joined.clear();
            self.carry = joined;
        }
        let done = self.run(chunk, false, out)?;
        self.carry.extend_from_slice(&chunk[done..]);
        self.check_carry()
    }

    fn check_carry(&self) -> Result<(), MaskError> {
        if self.carry.len() > MAX_TOKEN {
            return Err(MaskError::Malformed("JSON value longer than 16 MiB cannot be inspected"));
        }
        Ok(())
    }

    /// The body ended: masks what is left; an error if the JSON is cut.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        let input = std::mem::take(&mut self.carry);
        self.run(&input, true, out)?;
        if !self.levels.is_empty() || matches!(self.expect, Expect::Member { .. } | Expect::Colon) {
            return Err(MaskError::Malformed("JSON body ends inside a value"));
        }
        Ok(())
    }

    /// What was masked so far.
    pub fn outcome(&self) -> &MaskOutcome {
        &self.outcome
    }

    /// Masks the complete tokens of `input` into `out`; how many bytes
    /// were consumed (the rest is a cut token, unless `last`).
    fn run(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) -> Result<usize, MaskError> {
        let mut copied = 0;
        let mut pos = 0;
        loop {
            pos = skip_ws(input, pos);
            let Some(&byte) = input.get(pos) else { break };
            let step = match self.expect {
                Expect::Value { array_start: true } if byte == b']' => {
                    pos += 1;
                    self.close(Container::Array)
                }
                Expect::Value { .. } => match self.value(input, pos, last, &mut copied, out) {
                    Ok(end) => {
                        pos = end;
                        Ok(())
                    }
                    Err(Stop::Bad(error)) => Err(error),
                    Err(Stop::Cut) => break,
                },
                Expect::Member { first: true } if byte == b'}' => {
                    pos += 1;
                    self.close(Container::Object)
                }
                Expect::Member { .. } => {
                    if byte != b'"' {
                        return Err(MaskError::Malformed("JSON object member name is not a string"));
                    }
                    let Some((end, escaped)) = string_end(input, pos, last)? else { break };
                    let live = self.levels.last().is_some_and(|level| level.live);
                    let name = match self.places.wants_member_name(live) {
                        true => string_content(input, pos, end, escaped, &mut self.scratch),
                        false => &[],
                    };
                    self.places.at_member(&self.masker.rules, live, name);
                    pos = end;
                    self.expect = Expect::Colon;
                    Ok(())
                }
                Expect::Colon if byte == b':' => {
                    pos += 1;
                    self.expect = Expect::Value { array_start: false };
                    Ok(())
                }
                Expect::Colon => Err(MaskError::Malformed("JSON object member name without ':'")),
                // A sequence of documents (a watch, NDJSON): the next one.
                Expect::CommaOrEnd if self.levels.is_empty() => {
                    self.expect = Expect::Value { array_start: false };
                    Ok(())
                }
                Expect::CommaOrEnd => {
                    pos += 1;
                    match (self.levels.last().map(|l| l.container), byte) {
                        (Some(Container::Object), b',') => {
                            self.expect = Expect::Member { first: false };
                            Ok(())
                        }
                        (Some(Container::Array), b',') => {
                            self.expect = Expect::Value { array_start: false };
                            Ok(())
                        }
                        (_, b'}') => self.close(Container::Object),
                        (_, b']') => self.close(Container::Array),
                        _ => Err(MaskError::Malformed("JSON container is not closed properly")),
                    }
                }
            };
            step?;
        }
        // `pos` is where a cut token starts, or the input's end.
        out.extend_from_slice(&input[copied..pos]);
        Ok(pos)
    }

    /// Reads the value at `pos`; where it ends.
    fn value(
        &mut self,
        input: &[u8],
        pos: usize,
        last: bool,
        copied: &mut usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, Stop> {
        let rule = match self.masking_subtree {
            Some((rule, _)) => Some(rule),
            None => {
                match self.levels.last() {
                    None => self.places.at_root(),
                    Some(level) if level.container == Container::Array => {
                        self.places.at_element(&self.masker.rules, level.live, level.next_element);
                    }
                    // An object's member was placed when its name was read.
                    Some(_) => {}
                }
                self.places.rule()
            }
        };
        match input[pos] {
            open @ (b'{' | b'[') => {
                let container = if open == b'{' { Container::Object } else { Container::Array };
                self.open(container, rule)?;
                Ok(pos + 1)
            }
            b'"' => {
                let Some((end, escaped)) = string_end(input, pos, last)? else { return Err(Stop::Cut) };
                let content = string_content(input, pos, end, escaped, &mut self.scratch);
                self.masked.clear();
                let replacement = mask_leaf(&self.masker, rule, content, &mut self.masked, &mut self.outcome);
                self.replace(input, (pos, end), replacement, copied, out);
                self.value_done();
                Ok(end)
            }
            b'-' | b'0'..=b'9' => {
                let end = match input[pos..].iter().position(|b| !is_number_byte(*b)) {
                    Some(len) => pos + len,
                    None if last => input.len(),
                    None => return Err(Stop::Cut),
                };
                if !input[pos..end].iter().any(u8::is_ascii_digit) {
                    return Err(MaskError::Malformed("JSON number without digits").into());
                }
                self.masked.clear();
                // A card number sent as a JSON number is still one.
                let number = &input[pos..end];
                let replacement = mask_leaf(&self.masker, rule, number, &mut self.masked, &mut self.outcome);
                self.replace(input, (pos, end), replacement, copied, out);
                self.value_done();
                Ok(end)
            }
            _ => {
                let rest = &input[pos..];
                for literal in [&b"true"[..], b"false", b"null"] {
                    if rest.starts_with(literal) {
                        self.value_done();
                        return Ok(pos + literal.len());
                    }
                    if !last && literal.starts_with(rest) {
                        return Err(Stop::Cut);
                    }
                }
                Err(MaskError::Malformed("JSON has an unexpected character").into())
            }
        }
    }

    /// Writes what stands before `span` and its replacement, if any.
    fn replace(
        &self,
        input: &[u8],
        (start, end): (usize, usize),
        replacement: Option<Replacement>,
        copied: &mut usize,
        out: &mut Vec<u8>,
    ) {
        let Some(replacement) = replacement else { return };
        out.extend_from_slice(&input[*copied..start]);
        match replacement {
            Replacement::Text => write_string(&self.masked, out),
            Replacement::Null => out.extend_from_slice(b"null"),
        }
        *copied = end;
    }

    fn open(&mut self, container: Container, rule: Option<usize>) -> Result<(), MaskError> {
        if self.levels.len() >= MAX_DEPTH {
            return Err(MaskError::Malformed("JSON nests too deep"));
        }
        if self.masking_subtree.is_none()
            && let Some(rule) = rule
        {
            self.masking_subtree = Some((rule, self.levels.len()));
        }
        let live = self.places.open();
        self.levels.push(Level { container, next_element: 0, live });
        self.expect = match container {
            Container::Object => Expect::Member { first: true },
            Container::Array => Expect::Value { array_start: true },
        };
        Ok(())
    }

    fn close(&mut self, container: Container) -> Result<(), MaskError> {
        match self.levels.pop() {
            Some(level) if level.container == container => {}
            _ => return Err(MaskError::Malformed("JSON container is not closed properly")),
        }
        self.places.close();
        if self.masking_subtree.is_some_and(|(_, depth)| depth == self.levels.len()) {
            self.masking_subtree = None;
        }
        self.value_done();
        Ok(())
    }

    /// A value ended: the next comes after a comma (or ends its container).
    fn value_done(&mut self) {
        if let Some(level) = self.levels.last_mut()
            && level.container == Container::Array
        {
            level.next_element += 1;
        }
        self.expect = Expect::CommaOrEnd;
    }
}

/// How many bytes of `next` complete the token `cut` begins (a string, a
/// number or a literal); `None` if `next` does not complete it either.
fn token_end(cut: &[u8], next: &[u8]) -> Option<usize> {
    match cut.first()? {
        b'"' => {
            // An odd run of backslashes at the cut escapes `next`'s first byte.
            let backslashes = cut[1..].iter().rev().take_while(|&&b| b == b'\\').count();
            let mut at = backslashes % 2;
            loop {
                let found = at + quote_or_backslash(next.get(at..)?)?;
                if next[found] == b'"' {
                    return Some(found + 1);
                }
                at = found + 2;
            }
        }
        b'-' | b'0'..=b'9' => next.iter().position(|b| !is_number_byte(*b)),
        // A literal: at most five bytes in all.
        _ => (cut.len() + next.len() >= 5).then(|| 5usize.saturating_sub(cut.len()).min(next.len())),
    }
}

/// Where the first `"` or `\\` in `text` is. Most strings in answers are
/// short (names, ids, timestamps): a word at a time finds their end before
/// a vector search would have started; longer ones go to memchr.
#[inline]
fn quote_or_backslash(text: &[u8]) -> Option<usize> {
    const SHORT: usize = 32;
    let mut at = 0;
    while at + 8 <= text.len().min(SHORT) {
        let word = swar::load(&text[at..at + 8]);
        let hits = swar::equal(word, b'"') | swar::equal(word, b'\\');
        if hits != 0 {
            return Some(at + hits.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    if text.len() <= SHORT {
        return text[at..].iter().position(|&b| b == b'"' || b == b'\\').map(|n| at + n);
    }
    memchr::memchr2(b'"', b'\\', &text[at..]).map(|n| at + n)
}

/// End (past the closing quote) of the string at `start` and whether it
/// has escapes; `None` when the input ends first (and is not `last`).
pub(super) fn string_end(json: &[u8], start: usize, last: bool) -> Result<Option<(usize, bool)>, MaskError> {
    let cut = || if last { Err(MaskError::Malformed("JSON string is not terminated")) } else { Ok(None) };
    let mut pos = start + 1;
    let mut escaped = false;
    loop {
        let Some(at) = quote_or_backslash(&json[pos..]) else { return cut() };
        pos += at;
        if json[pos] == b'"' {
            return Ok(Some((pos + 1, escaped)));
        }
        escaped = true;
        match json.get(pos + 1) {
            None => return cut(),
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => pos += 2,
            Some(b'u') => match json.get(pos + 2..pos + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => pos += 6,
                None if json[pos + 2..].iter().all(u8::is_ascii_hexdigit) => return cut(),
                _ => return Err(MaskError::Malformed("JSON string has an invalid escape")),
            },
            _ => return Err(MaskError::Malformed("JSON string has an invalid escape")),
        }
    }
}

/// Masks one string or number leaf into `masked`: by `rule` when one
/// names it, else by the detectors; `None` when it stays as it is.
fn mask_leaf(
    masker: &Masker,
    rule: Option<usize>,
    text: &[u8],
    masked: &mut Vec<u8>,
    outcome: &mut MaskOutcome,
) -> Option<Replacement> {
    if let Some(rule) = rule {
        return Some(masker.apply_rule(rule, text, None, masked, outcome));
    }
    if !masker.has_detectors() {
        return None;
    }
    match masker.mask_text(text, true, None, masked, outcome) {
        TextResult::Unchanged => None,
        TextResult::Replaced => Some(Replacement::Text),
        TextResult::Null => Some(Replacement::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::masking::https_masker as masker;

    /// `body` masked in chunks of `size` bytes.
    fn masked_in_chunks(masker: &Arc<Masker>, body: &[u8], size: usize) -> Result<(String, MaskOutcome), MaskError> {
        let mut stream = JsonStream::new(Arc::clone(masker));
        let mut out = Vec::new();
        for chunk in body.chunks(size.max(1)) {
            stream.feed(chunk, &mut out)?;
        }
        stream.finish(&mut out)?;
        Ok((String::from_utf8(out).unwrap(), stream.outcome.clone()))
    }

    fn masked(masker: &Arc<Masker>, body: &str) -> String {
        masked_in_chunks(masker, body.as_bytes(), body.len()).unwrap().0
    }

    const SECRET: &str = r#"{"kind": "Secret", "metadata": {"name": "db", "annotations": {"note": "x"}},
        "data": {"password": "aHVudGVyMg==", "port": 5432, "nested": {"k": ["a", true, null]}}, "type": "Opaque"}"#;

    #[test]
    fn a_path_rule_masks_every_leaf_under_it_and_nothing_else() {
        let masker = masker("detectors = []\n[[target.masking.rules]]\njson_path = \"$.data\"\n");
        assert_eq!(
            masked(&masker, SECRET),
            r#"{"kind": "Secret", "metadata": {"name": "db", "annotations": {"note": "x"}},
        "data": {"password": "[masked]", "port": "[masked]", "nested": {"k": ["[masked]", true, null]}}, "type": "Opaque"}"#
        );
    }

    #[test]
    fn any_chunking_gives_the_same_answer() {
        let masker = masker(
            "detectors = [\"email\", \"card\"]\n[[target.masking.rules]]\njson_path = \"$..data\"\n\
             [[target.masking.rules]]\ncolumn_pattern = \"*token*\"\n",
        );
        let body = format!(
            "{SECRET}\n{{\"type\": \"ADDED\", \"object\": {{\"data\": {{\"a\": \"b\"}}, \"contact\": \"Mail bob@example.com\\u0021\", \
             \"card\": 4111111111111111, \"api_token\": {{\"v\": \"t0k3n\"}}, \"escaped\\\"key\": -1.5e3, \"list\": [], \"o\": {{}}}}}}\n"
        );
        let whole = masked_in_chunks(&masker, body.as_bytes(), body.len()).unwrap();
        assert!(!whole.0.contains("aHVudGVyMg") && !whole.0.contains("bob@example.com") && !whole.0.contains("t0k3n"));
        assert!(!whole.0.contains("4111111111111111"), "{}", whole.0);
        assert!(whole.0.contains(r#""escaped\"key": -1.5e3"#), "{}", whole.0);
        for size in 1..40 {
            assert_eq!(masked_in_chunks(&masker, body.as_bytes(), size).unwrap(), whole, "chunks of {size}");
        }
        let reasons: Vec<_> = whole.1.hits.iter().map(|h| (h.reason.to_string(), h.count)).collect();
        assert!(reasons.contains(&("json_path $..data".into(), 4)), "{reasons:?}");
        assert!(reasons.contains(&("column_pattern *token*".into(), 1)), "{reasons:?}");
    }

    #[test]
    fn paths_follow_indexes_and_stop_where_they_can_no_longer_match() {
        let masker = masker(
            "detectors = []\n[[target.masking.rules]]\njson_path = \"$.items[1].secret\"\n\
             [[target.masking.rules]]\njson_path = \"$.meta.*\"\n",
        );
        let document = r#"{"meta": {"a": "x", "b": {"c": "y"}}, "items": [{"secret": "s0"}, {"secret": "s1", "deep": {"secret": "s2"}}], "other": {"items": [0, {"secret": "s3"}]}}"#;
        let masked_document = r#"{"meta": {"a": "[masked]", "b": {"c": "[masked]"}}, "items": [{"secret": "s0"}, {"secret": "[masked]", "deep": {"secret": "s2"}}], "other": {"items": [0, {"secret": "s3"}]}}"#;
        // The second document of a sequence is matched from its own root.
        let body = format!("{document}\n{document}\n");
        for size in [1, 7, body.len()] {
            let (out, _) = masked_in_chunks(&masker, body.as_bytes(), size).unwrap();
            assert_eq!(out, format!("{masked_document}\n{masked_document}\n"), "chunks of {size}");
        }
    }

    #[test]
    fn unchanged_documents_pass_byte_for_byte() {
        let masker = masker("detectors = [\"email\"]\n");
        let body = " [1, 2.5, \"plain\", {\"a\": [true, false, null]}, \"\\u00e9\"] \n";
        assert_eq!(masked(&masker, body), body);
    }

    #[test]
    fn what_is_not_json_is_refused() {
        let masker = masker("detectors = [\"email\"]\n");
        for (body, says) in [
            ("{\"a\": 1", "ends inside a value"),
            ("{\"a\" 1}", "without ':'"),
            ("[1, 2}", "not closed properly"),
            ("{\"a\": tru}", "unexpected character"),
            ("{\"a\": \"x", "not terminated"),
            ("{\"a\": \"\\q\"}", "invalid escape"),
            ("{1: 2}", "member name is not a string"),
            ("[-]", "number without digits"),
        ] {
            for size in [1, 3, body.len()] {
                let error = masked_in_chunks(&masker, body.as_bytes(), size).unwrap_err();
                assert!(error.to_string().contains(says), "{body:?} in chunks of {size}: {error}");
            }
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert!(masked_in_chunks(&masker, deep.as_bytes(), 4096).unwrap_err().to_string().contains("too deep"));
    }

    #[test]
    fn a_value_too_long_to_inspect_is_refused() {
        let masker = masker("detectors = [\"email\"]\n");
        let mut stream = JsonStream::new(masker);
        let mut out = Vec::new();
        stream.feed(b"[\"", &mut out).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        let refused = (0..17).map(|_| stream.feed(&chunk, &mut out)).find_map(Result::err);
        assert!(refused.is_some_and(|e| e.to_string().contains("longer than 16 MiB")));
    }
}
