//! Rewriting PostgreSQL backend message bodies (as in
//! [`Frame::body`](crate::proxy::postgres::codec::Frame)): DataRow, CopyData,
//! ErrorResponse/NoticeResponse and NotificationResponse. Each rewriter
//! appends the new body to `out` only when something was masked; when the
//! outcome reports no change, `out` is untouched and the original frame
//! is forwarded as it came. Malformed bodies are errors, never panics: the
//! proxy ends the session rather than forward what it could not check.

use std::{cell::Cell, sync::Arc};

use super::{
    MaskError, MaskOutcome,
    array::Reader,
    detect::Match,
    engine::{Action, ColumnPlan, Masker, TextResult},
    json::Rewrite,
};

/// The format of COPY … TO STDOUT output, from the COPY statement's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyFormat {
    /// `FORMAT text` (the default): tab-separated, `\N` for NULL,
    /// backslash escapes.
    Text {
        /// Field delimiter (`DELIMITER`).
        delimiter: u8,
        /// The NULL string (`NULL`), as sent.
        null: Vec<u8>,
    },
    /// `FORMAT csv`.
    Csv {
        /// Field delimiter (`DELIMITER`).
        delimiter: u8,
        /// Quote character (`QUOTE`).
        quote: u8,
        /// Escape character inside quotes (`ESCAPE`, default the quote).
        escape: u8,
        /// The NULL string (`NULL`), written unquoted.
        null: Vec<u8>,
    },
    /// `FORMAT binary`: not inspected; refused whenever masking applies.
    Binary,
}

impl CopyFormat {
    /// PostgreSQL's text format defaults.
    pub fn text() -> Self {
        Self::Text { delimiter: b'\t', null: b"\\N".to_vec() }
    }

    /// PostgreSQL's CSV defaults.
    pub fn csv() -> Self {
        Self::Csv { delimiter: b',', quote: b'"', escape: b'"', null: Vec::new() }
    }
}

thread_local! {
    /// Detector hits in one value at a time, kept between rows so that a
    /// hit costs no allocation (rows are masked on the relay's threads).
    static FOUND: Cell<Vec<Match>> = const { Cell::new(Vec::new()) };
}

/// Error and notice fields that can carry data: message, detail, where.
const DATA_FIELDS: [u8; 3] = [b'M', b'D', b'W'];

impl Masker {
    /// Masks a DataRow body under `plan` (made from the result's
    /// RowDescription).
    pub fn mask_data_row(
        &self,
        body: &[u8],
        plan: &mut ColumnPlan,
        out: &mut Vec<u8>,
    ) -> Result<MaskOutcome, MaskError> {
        let mut outcome = MaskOutcome::default();
        self.mask_data_row_into(body, plan, &[], out, &mut outcome)?;
        self.count_rule_hits(plan, &mut outcome);
        Ok(outcome)
    }

    /// As [`Self::mask_data_row`], for the rows of a whole result: values
    /// masked by a column rule are counted in `plan` (see
    /// [`count_rule_hits`](Self::count_rule_hits)), the rest in `outcome`,
    /// with no allocation per row. When the row changes, `prefix` then the
    /// new body are appended to `out` (the proxy passes what precedes the
    /// body on the wire, so the row is written once, where it goes);
    /// whether it changed.
    pub fn mask_data_row_into(
        &self,
        body: &[u8],
        plan: &mut ColumnPlan,
        prefix: &[u8],
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<bool, MaskError> {
        let mut reader = Reader { bytes: body, pos: 0 };
        let count = reader.i16()?;
        if usize::try_from(count).ok() != Some(plan.len()) {
            return Err(MaskError::ColumnCount { expected: plan.len(), found: i64::from(count) });
        }
        // Masked values are written in place, after the bytes before
        // them, their length patched in after.
        let mut rewrite = Rewrite::after(prefix, body, out);
        // The thread-local costs a quarter of a row's time under column
        // rules alone: only detectors take it.
        let detecting = self.has_detectors();
        let mut found = if detecting { FOUND.take() } else { Vec::new() };
        for column in &mut plan.columns {
            let field_start = reader.pos;
            let len = reader.i32()?;
            if len == -1 {
                continue;
            }
            let value = reader.take(len)?;
            match column.action {
                Action::Pass => continue,
                // Most values have nothing in them: those cost no copy.
                Action::Detect => {
                    found.clear();
                    self.find(value, &mut found);
                    if found.is_empty() {
                        continue;
                    }
                }
                Action::Rule(_) | Action::NullByRule | Action::Value => {}
            }
            let out = rewrite.copy_to(field_start);
            let len_at = out.len();
            out.extend_from_slice(&[0; 4]);
            let result = match column.action {
                // (Pass went on above.)
                Action::Pass | Action::Detect => self.mask_found(column, value, &found, out, outcome),
                // The bulk of a masked result: a whole value by its rule.
                Action::Rule(rule) => {
                    column.rule_hits += 1;
                    self.rule_strategy(rule).apply(value, "column", self.key(), out).into()
                }
                Action::NullByRule => {
                    column.rule_hits += 1;
                    TextResult::Null
                }
                Action::Value => self.mask_value(column, value, out, outcome)?,
            };
            match result {
                TextResult::Unchanged => out.truncate(len_at),
                TextResult::Null => {
                    out.truncate(len_at);
                    out.extend_from_slice(&(-1i32).to_be_bytes());
                    rewrite.replaced_to(reader.pos);
                }
                TextResult::Replaced => {
                    let len = i32::try_from(out.len() - len_at - 4).map_err(|_| MaskError::TooLong)?;
                    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
                    rewrite.replaced_to(reader.pos);
                }
            }
        }
        if detecting {
            FOUND.set(found);
        }
        if reader.pos != body.len() {
            return Err(MaskError::Malformed("DataRow has bytes after its last column"));
        }
        Ok(rewrite.finish())
    }

    /// Masks a CopyData body of COPY … TO STDOUT: whole rows, each ending
    /// in a newline (the server sends one row per message). `plan` gives
    /// the columns when the proxy resolved them (its formats are ignored:
    /// COPY output is text); without it every field is text and only
    /// detectors run.
    pub fn mask_copy_data(
        &self,
        body: &[u8],
        format: &CopyFormat,
        plan: Option<&ColumnPlan>,
        prefix: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<MaskOutcome, MaskError> {
        let mut outcome = MaskOutcome::default();
        if self.is_noop() {
            return Ok(outcome);
        }
        if body.last() != Some(&b'\n') {
            return Err(MaskError::PartialCopyRow);
        }
        let mut rewrite = Rewrite::after(prefix, body, out);
        let mut pos = 0;
        while pos < body.len() {
            let row_end = match format {
                CopyFormat::Text { delimiter, null } => {
                    self.copy_text_row(body, pos, *delimiter, null, plan, &mut rewrite, &mut outcome)?
                }
                CopyFormat::Csv { delimiter, quote, escape, null } => {
                    let syntax = Csv { delimiter: *delimiter, quote: *quote, escape: *escape, null };
                    self.copy_csv_row(body, pos, &syntax, plan, &mut rewrite, &mut outcome)?
                }
                CopyFormat::Binary => return Err(MaskError::CopyBinary),
            };
            pos = row_end;
        }
        rewrite.finish();
        Ok(outcome)
    }

    /// The plan column for field `index`, checking the count at the end.
    fn copy_column<'p>(
        &self,
        plan: Option<&'p ColumnPlan>,
        index: usize,
    ) -> Result<Option<&'p super::engine::PlannedColumn>, MaskError> {
        match plan {
            None => Ok(None),
            Some(plan) => plan
                .columns
                .get(index)
                .map(Some)
                .ok_or(MaskError::ColumnCount { expected: plan.len(), found: index as i64 + 1 }),
        }
    }

    /// Masks one field's decoded text; the new text in `masked`.
    fn copy_field(
        &self,
        plan_column: Option<&super::engine::PlannedColumn>,
        text: &[u8],
        masked: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<TextResult, MaskError> {
        masked.clear();
        match plan_column {
            Some(column) => {
                let mut column = column.clone();
                column.binary = false;
                self.mask_value(&column, text, masked, outcome)
            }
            None => Ok(self.mask_text(text, true, None, masked, outcome)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_text_row(
        &self,
        body: &[u8],
        start: usize,
        delimiter: u8,
        null: &[u8],
        plan: Option<&ColumnPlan>,
        rewrite: &mut Rewrite<'_>,
        outcome: &mut MaskOutcome,
    ) -> Result<usize, MaskError> {
        let mut pos = start;
        let mut index = 0;
        let mut decoded = Vec::new();
        let mut masked = Vec::new();
        loop {
            let field_start = pos;
            let mut escaped = false;
            while let Some(&b) = body.get(pos) {
                if b == b'\\' {
                    escaped = true;
                    pos += 2;
                } else if b == delimiter || b == b'\n' {
                    break;
                } else {
                    pos += 1;
                }
            }
            let field_end = pos.min(body.len());
            let end_byte = *body.get(field_end).ok_or(MaskError::Malformed("COPY row ends inside an escape"))?;
            let raw = &body[field_start..field_end];
            let column = self.copy_column(plan, index)?;
            if raw != null {
                let text = if escaped { decode_copy_text(raw, &mut decoded) } else { raw };
                match self.copy_field(column, text, &mut masked, outcome)? {
                    TextResult::Unchanged => {}
                    TextResult::Null => rewrite.replace(field_start, field_end, |o| o.extend_from_slice(null)),
                    TextResult::Replaced => {
                        rewrite.replace(field_start, field_end, |o| encode_copy_text(&masked, delimiter, o))
                    }
                }
            }
            index += 1;
            pos = field_end + 1;
            if end_byte == b'\n' {
                break;
            }
        }
        if let Some(plan) = plan.filter(|p| p.len() != index) {
            return Err(MaskError::ColumnCount { expected: plan.len(), found: index as i64 });
        }
        Ok(pos)
    }

    fn copy_csv_row(
        &self,
        body: &[u8],
        start: usize,
        csv: &Csv<'_>,
        plan: Option<&ColumnPlan>,
        rewrite: &mut Rewrite<'_>,
        outcome: &mut MaskOutcome,
    ) -> Result<usize, MaskError> {
        let mut pos = start;
        let mut index = 0;
        let mut decoded = Vec::new();
        let mut masked = Vec::new();
        loop {
            let field_start = pos;
            let quoted = body.get(pos) == Some(&csv.quote);
            if quoted {
                decoded.clear();
                pos += 1;
                loop {
                    let b = *body.get(pos).ok_or(MaskError::Malformed("CSV quote is not closed"))?;
                    let next = body.get(pos + 1).copied();
                    let escapes_next = if csv.escape == csv.quote {
                        b == csv.quote && next == Some(csv.quote)
                    } else {
                        b == csv.escape && next.is_some_and(|n| n == csv.quote || n == csv.escape)
                    };
                    if escapes_next {
                        decoded.push(body[pos + 1]);
                        pos += 2;
                    } else if b == csv.quote {
                        pos += 1;
                        break;
                    } else {
                        decoded.push(b);
                        pos += 1;
                    }
                }
            } else {
                pos += body[pos..].iter().position(|&b| b == csv.delimiter || b == b'\n').unwrap_or(body.len() - pos);
            }
            let field_end = pos;
            let end_byte = *body.get(field_end).ok_or(MaskError::Malformed("CSV row is not terminated"))?;
            if end_byte != csv.delimiter && end_byte != b'\n' {
                return Err(MaskError::Malformed("CSV quoted field is followed by text"));
            }
            let column = self.copy_column(plan, index)?;
            let raw = &body[field_start..field_end];
            let is_null = !quoted && raw == csv.null;
            if !is_null {
                let text = if quoted { &decoded[..] } else { raw };
                match self.copy_field(column, text, &mut masked, outcome)? {
                    TextResult::Unchanged => {}
                    TextResult::Null => rewrite.replace(field_start, field_end, |o| o.extend_from_slice(csv.null)),
                    TextResult::Replaced => rewrite.replace(field_start, field_end, |o| csv.write_quoted(&masked, o)),
                }
            }
            index += 1;
            pos = field_end + 1;
            if end_byte == b'\n' {
                break;
            }
        }
        if let Some(plan) = plan.filter(|p| p.len() != index) {
            return Err(MaskError::ColumnCount { expected: plan.len(), found: index as i64 });
        }
        Ok(pos)
    }

    /// Masks the data-bearing fields (message, detail, where) of an
    /// ErrorResponse or NoticeResponse body. A unique or foreign key
    /// violation's `Key (col)=(value)` detail is masked whole when a column
    /// rule names the column; a `Failing row contains (…)` detail (the
    /// whole row, columns unnamed) whenever any column rule applies.
    pub fn mask_error_fields(&self, body: &[u8], out: &mut Vec<u8>) -> Result<MaskOutcome, MaskError> {
        let mut outcome = MaskOutcome::default();
        let mut reader = Reader { bytes: body, pos: 0 };
        let mut rewrite = Rewrite::new(body, out);
        let mut masked = Vec::new();
        loop {
            let code = *body.get(reader.pos).ok_or(MaskError::Malformed("error fields are not terminated"))?;
            reader.pos += 1;
            if code == 0 {
                break;
            }
            let start = reader.pos;
            let text = reader.cstr()?;
            if self.is_noop() || !DATA_FIELDS.contains(&code) {
                continue;
            }
            masked.clear();
            let changed = (code == b'D' && self.mask_detail_tuple(text, &mut masked, &mut outcome))
                || self.mask_text(text, false, None, &mut masked, &mut outcome) == TextResult::Replaced;
            if changed {
                rewrite.replace(start, start + text.len(), |o| o.extend_from_slice(&masked));
            }
        }
        if reader.pos != body.len() {
            return Err(MaskError::Malformed("error fields have bytes after their terminator"));
        }
        rewrite.finish();
        Ok(outcome)
    }

    /// The `(…)` value tuples of constraint violation details.
    fn mask_detail_tuple(&self, text: &[u8], out: &mut Vec<u8>, outcome: &mut MaskOutcome) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let (values_start, values_end, rule) = if let Some(rest) = text.strip_prefix(b"Key (") {
            let Some(close) = memchr::memmem::find(rest, b")=(") else { return false };
            let columns = String::from_utf8_lossy(&rest[..close]);
            let names = columns.split(',').map(|c| c.trim().trim_matches('"'));
            let rule = names.into_iter().find_map(|name| {
                self.rules.iter().position(|r| match &r.columns {
                    // Only the column name is in the message: any table's
                    // column of that name is taken to be the one.
                    super::policy::ColumnMatcher::Column(column) => {
                        column.rsplit('.').next().is_some_and(|c| c.eq_ignore_ascii_case(name))
                    }
                    pattern => pattern.matches(None, name),
                })
            });
            let Some(rule) = rule else { return false };
            let start = 5 + close + 3;
            let Some(end) = memchr::memrchr(b')', text).filter(|&end| end >= start) else { return false };
            (start, end, rule)
        } else if let Some(rest) = text.strip_prefix(b"Failing row contains (") {
            // The whole row, columns unnamed: any column rule may be in it.
            let Some(end) = memchr::memrchr(b')', rest) else { return false };
            outcome.record(None, &Arc::from("failing row"));
            out.extend_from_slice(&text[..22]);
            out.extend_from_slice(b"[masked]");
            out.extend_from_slice(&text[22 + end..]);
            return true;
        } else {
            return false;
        };
        let rule = &self.rules[rule];
        outcome.record(None, &rule.label);
        out.extend_from_slice(&text[..values_start]);
        rule.strategy.apply_in_text(&text[values_start..values_end], "column", self.key(), out);
        out.extend_from_slice(&text[values_end..]);
        true
    }

    /// Masks the payload of a NotificationResponse body.
    pub fn mask_notification(&self, body: &[u8], out: &mut Vec<u8>) -> Result<MaskOutcome, MaskError> {
        let mut outcome = MaskOutcome::default();
        let mut reader = Reader { bytes: body, pos: 0 };
        reader.i32()?;
        reader.cstr()?;
        let start = reader.pos;
        let payload = reader.cstr()?;
        if reader.pos != body.len() {
            return Err(MaskError::Malformed("NotificationResponse has bytes after its payload"));
        }
        let mut masked = Vec::new();
        if self.mask_text(payload, false, None, &mut masked, &mut outcome) == TextResult::Replaced {
            let mut rewrite = Rewrite::new(body, out);
            rewrite.replace(start, start + payload.len(), |o| o.extend_from_slice(&masked));
            rewrite.finish();
        }
        Ok(outcome)
    }
}

/// CSV syntax of one COPY.
struct Csv<'a> {
    delimiter: u8,
    quote: u8,
    escape: u8,
    null: &'a [u8],
}

impl Csv<'_> {
    fn write_quoted(&self, text: &[u8], out: &mut Vec<u8>) {
        out.push(self.quote);
        for &b in text {
            if b == self.quote || b == self.escape {
                out.push(self.escape);
            }
            out.push(b);
        }
        out.push(self.quote);
    }
}

/// Decodes COPY text escapes (`\n`, `\t`, `\\`, octal `\123`, hex `\x41`…).
fn decode_copy_text<'a>(raw: &[u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' || i + 1 >= raw.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = raw[i + 1];
        i += 2;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(value as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut value = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(value);
            }
            other => out.push(other),
        }
    }
    out
}

/// Encodes text for a COPY text field.
fn encode_copy_text(text: &[u8], delimiter: u8, out: &mut Vec<u8>) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ if b == delimiter => out.extend_from_slice(&[b'\\', b]),
            _ => out.push(b),
        }
    }
}
