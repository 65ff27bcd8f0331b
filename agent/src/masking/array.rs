//! Array values, masked element by element so the array keeps its shape:
//! the text form (`{a,"b c",NULL,{d}}`) and the binary form.

use std::sync::Arc;

use super::{
    MaskError, MaskOutcome,
    engine::{ElementKind, Masker, TextResult},
    strategy::Replacement,
};

/// Most dimensions PostgreSQL allows (MAXDIM).
const MAX_DIMS: i32 = 6;

impl Masker {
    /// Masks one array element's content into `out`.
    #[allow(clippy::too_many_arguments)]
    fn mask_element(
        &self,
        kind: ElementKind,
        binary: bool,
        content: &[u8],
        rule: Option<usize>,
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<TextResult, MaskError> {
        match kind {
            ElementKind::Text => Ok(match rule {
                Some(rule) => match self.apply_rule(rule, content, column, out, outcome) {
                    Replacement::Text => TextResult::Replaced,
                    Replacement::Null => TextResult::Null,
                },
                None => self.mask_text(content, true, column, out, outcome),
            }),
            ElementKind::Jsonb if binary => {
                let Some((&1, json)) = content.split_first() else {
                    return Err(MaskError::Malformed("jsonb array element without version byte 1"));
                };
                out.push(1);
                let result = self.mask_json_value(json, rule, column, out, outcome)?;
                if result != TextResult::Replaced {
                    out.clear();
                }
                Ok(result)
            }
            ElementKind::Json | ElementKind::Jsonb => self.mask_json_value(content, rule, column, out, outcome),
        }
    }

    /// Masks an array in text form; whether anything changed (if not,
    /// nothing was written).
    pub(super) fn mask_array_text(
        &self,
        text: &[u8],
        kind: ElementKind,
        rule: Option<usize>,
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<bool, MaskError> {
        let malformed = MaskError::Malformed;
        let mut rewrite = super::json::Rewrite::new(text, out);
        // Optional bounds decoration: "[1:2][0:1]={...}".
        let mut pos = 0;
        if text.first() == Some(&b'[') {
            pos = memchr::memchr(b'=', text).ok_or(malformed("array bounds without '='"))? + 1;
        }
        if text.get(pos) != Some(&b'{') {
            return Err(malformed("array does not start with '{'"));
        }
        let mut depth = 0usize;
        let mut content = Vec::new();
        let mut masked = Vec::new();
        loop {
            let Some(&b) = text.get(pos) else { return Err(malformed("array is not closed")) };
            let start = pos;
            let element = match b {
                b'{' => {
                    depth += 1;
                    pos += 1;
                    continue;
                }
                b'}' => {
                    depth = depth.checked_sub(1).ok_or(malformed("array closes more than it opens"))?;
                    pos += 1;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                b',' | b' ' => {
                    pos += 1;
                    continue;
                }
                b'"' => {
                    content.clear();
                    pos += 1;
                    loop {
                        match text.get(pos) {
                            None => return Err(malformed("array element quote is not closed")),
                            Some(b'"') => break,
                            Some(b'\\') => {
                                let escaped = *text.get(pos + 1).ok_or(malformed("array ends in an escape"))?;
                                content.push(escaped);
                                pos += 2;
                            }
                            Some(&c) => {
                                content.push(c);
                                pos += 1;
                            }
                        }
                    }
                    pos += 1;
                    Some(&content[..])
                }
                _ => {
                    let len = text[pos..].iter().position(|&c| matches!(c, b',' | b'}')).unwrap_or(text.len() - pos);
                    pos += len;
                    let raw = &text[start..pos];
                    if raw.eq_ignore_ascii_case(b"NULL") { None } else { Some(raw) }
                }
            };
            let Some(element) = element else { continue };
            if depth == 0 {
                return Err(malformed("array element outside braces"));
            }
            masked.clear();
            match self.mask_element(kind, false, element, rule, column, &mut masked, outcome)? {
                TextResult::Unchanged => {}
                TextResult::Null => rewrite.replace(start, pos, |o| o.extend_from_slice(b"NULL")),
                TextResult::Replaced => rewrite.replace(start, pos, |o| write_quoted(&masked, o)),
            }
        }
        if pos != text.len() {
            return Err(malformed("array has bytes after its closing brace"));
        }
        Ok(rewrite.finish())
    }

    /// Masks an array in binary form. Arrays of types other than text and
    /// JSON are not inspected; a column rule makes them NULL.
    pub(super) fn mask_array_binary(
        &self,
        value: &[u8],
        rule: Option<usize>,
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<TextResult, MaskError> {
        let malformed = MaskError::Malformed;
        let mut reader = Reader { bytes: value, pos: 0 };
        let dims = reader.i32()?;
        let flags = reader.i32()?;
        let element_type = reader.i32()? as u32;
        if !(0..=MAX_DIMS).contains(&dims) || !(0..=1).contains(&flags) {
            return Err(malformed("binary array header is invalid"));
        }
        let mut count: usize = usize::from(dims > 0);
        for _ in 0..dims {
            let len = usize::try_from(reader.i32()?).map_err(|_| malformed("binary array dimension is negative"))?;
            reader.i32()?;
            count = count.checked_mul(len).ok_or(malformed("binary array is too large"))?;
        }
        if count > (value.len() - reader.pos) / 4 {
            return Err(malformed("binary array has fewer elements than its dimensions"));
        }
        let header_end = reader.pos;
        let kind = ElementKind::of_type(element_type);
        let mark = out.len();
        out.extend_from_slice(&value[..header_end]);
        let mut changed = false;
        let mut nulled = false;
        let mut masked = Vec::new();
        for _ in 0..count {
            let len = reader.i32()?;
            if len == -1 {
                out.extend_from_slice(&len.to_be_bytes());
                continue;
            }
            let element = reader.take(len)?;
            let Some(kind) = kind else {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(element);
                continue;
            };
            masked.clear();
            match self.mask_element(kind, true, element, rule, column, &mut masked, outcome)? {
                TextResult::Unchanged => {
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(element);
                }
                TextResult::Null => {
                    out.extend_from_slice(&(-1i32).to_be_bytes());
                    changed = true;
                    nulled = true;
                }
                TextResult::Replaced => {
                    let len = i32::try_from(masked.len()).map_err(|_| MaskError::TooLong)?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&masked);
                    changed = true;
                }
            }
        }
        if reader.pos != value.len() {
            return Err(malformed("binary array has bytes after its elements"));
        }
        if kind.is_none() {
            out.truncate(mark);
            if let Some(rule) = rule {
                outcome.record(column, &self.rules[rule].label);
                return Ok(TextResult::Null);
            }
            return Ok(TextResult::Unchanged);
        }
        if !changed {
            out.truncate(mark);
            return Ok(TextResult::Unchanged);
        }
        if nulled {
            out[mark + 4..mark + 8].copy_from_slice(&1i32.to_be_bytes());
        }
        Ok(TextResult::Replaced)
    }
}

/// Appends `text` as a quoted array element.
fn write_quoted(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Big-endian fields of a message body, bounds-checked.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn i32(&mut self) -> Result<i32, MaskError> {
        let bytes = self.bytes.get(self.pos..self.pos + 4).ok_or(MaskError::Malformed("message is truncated"))?;
        self.pos += 4;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(super) fn i16(&mut self) -> Result<i16, MaskError> {
        let bytes = self.bytes.get(self.pos..self.pos + 2).ok_or(MaskError::Malformed("message is truncated"))?;
        self.pos += 2;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// `len` bytes (`len` from a length field: negative is malformed).
    pub(super) fn take(&mut self, len: i32) -> Result<&'a [u8], MaskError> {
        let len = usize::try_from(len).map_err(|_| MaskError::Malformed("negative length"))?;
        let bytes =
            self.bytes.get(self.pos..self.pos + len).ok_or(MaskError::Malformed("value runs past the message"))?;
        self.pos += len;
        Ok(bytes)
    }

    /// A NUL-terminated string, without its NUL.
    pub(super) fn cstr(&mut self) -> Result<&'a [u8], MaskError> {
        let rest = &self.bytes[self.pos..];
        let len = memchr::memchr(0, rest).ok_or(MaskError::Malformed("string is not NUL-terminated"))?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }
}
