//! Whole message bodies (HTTP answers) masked as they stream: JSON by
//! [`JsonStream`], text line by line by the detectors.

use std::sync::Arc;

use super::{
    MaskError, MaskOutcome,
    engine::{Masker, TextResult},
    json_stream::JsonStream,
};

/// Longest text line held while it arrives; a longer one is masked in
/// pieces of this size (a value cut at such a boundary can escape the
/// detectors, so the cap is far above any real line).
const MAX_LINE: usize = 1 << 20;

/// What a body is, for masking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON: one document or a sequence (a watch stream, NDJSON).
    Json,
    /// Text of any kind: masked line by line.
    Text,
}

/// Masks one body, chunk by chunk.
pub struct BodyMasker(Kind);

enum Kind {
    Json(Box<JsonStream>),
    Text(TextStream),
}

impl BodyMasker {
    /// A masker for one body of `kind`, for the person `masker` was built for.
    pub fn new(masker: Arc<Masker>, kind: BodyKind) -> Self {
        Self(match kind {
            BodyKind::Json => Kind::Json(Box::new(JsonStream::new(masker))),
            BodyKind::Text => Kind::Text(TextStream { masker, line: Vec::new(), outcome: MaskOutcome::default() }),
        })
    }

    /// Appends to `out` what of `chunk` can be passed on, masked.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        match &mut self.0 {
            Kind::Json(json) => json.feed(chunk, out),
            Kind::Text(text) => {
                text.feed(chunk, out);
                Ok(())
            }
        }
    }

    /// The body ended: appends the rest; an error if it was cut (JSON).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        match &mut self.0 {
            Kind::Json(json) => json.finish(out),
            Kind::Text(text) => {
                let line = std::mem::take(&mut text.line);
                text.mask_line(&line, out);
                Ok(())
            }
        }
    }

    /// What was masked so far (counts per detector or rule).
    pub fn outcome(&self) -> &MaskOutcome {
        match &self.0 {
            Kind::Json(json) => json.outcome(),
            Kind::Text(text) => &text.outcome,
        }
    }
}

/// Text masked by the detectors a line at a time.
struct TextStream {
    masker: Arc<Masker>,
    /// The start of a line whose end has not arrived.
    line: Vec<u8>,
    outcome: MaskOutcome,
}

impl TextStream {
    fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while let Some(newline) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = chunk.split_at(newline + 1);
            if self.line.is_empty() {
                self.mask_line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.line);
                whole.extend_from_slice(line);
                self.mask_line(&whole, out);
            }
            chunk = rest;
        }
        self.line.extend_from_slice(chunk);
        if self.line.len() >= MAX_LINE {
            let line = std::mem::take(&mut self.line);
            self.mask_line(&line, out);
        }
    }

    fn mask_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line.is_empty() {
            return;
        }
        match self.masker.mask_text(line, false, None, out, &mut self.outcome) {
            TextResult::Replaced => {}
            // Null is not asked for (`nullable` is false).
            TextResult::Unchanged | TextResult::Null => out.extend_from_slice(line),
        }
    }
}
