//! Secrets out of SQL text: the literal after a `PASSWORD` keyword, and
//! passwords inside connection strings and URIs held in literals.
//!
//! The text is read by a lexer that knows every literal form PostgreSQL
//! accepts: `'…'` with doubled quotes, `E'…'` with backslash escapes,
//! `U&'…'` with its `UESCAPE` clause, `B''`, `X''`, `N''`, dollar quotes,
//! literals continued on the next line, and comments. Whether backslashes
//! escape in plain `'…'` depends on the session's
//! `standard_conforming_strings`, which a command line or an approval
//! notice does not know: a plain literal is taken to end where the later of
//! the two readings ends it. Redacting too much hides a little text;
//! redacting too little leaks a password.

use std::{borrow::Cow, ops::Range};

use super::{REDACTED, Secrets, uri_passwords};

/// SQL with the literal after every `PASSWORD` keyword replaced
/// (`CREATE ROLE … PASSWORD 'x'`, `ALTER USER … ENCRYPTED PASSWORD $$x$$`,
/// `WHERE password = 'x'`), and passwords in connection strings and URIs
/// inside literals and comments.
pub fn sql(text: &str) -> String {
    sql_with_findings(text).0.into_owned()
}

/// [`sql`], and which kinds of secret it removed; the text itself when it
/// has none, which is every statement but a few.
pub fn sql_with_findings(text: &str) -> (Cow<'_, str>, Secrets) {
    let mut secrets = Secrets::default();
    if !mentions_password(text) && !text.contains("://") {
        return (Cow::Borrowed(text), secrets);
    }
    let tokens: Vec<Token> = Lexer { text, at: 0 }.collect();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if is_password_word(text, token)
            && let Some((first, last)) = password_literal(text, &tokens, i + 1)
        {
            out.push_str(&text[copied..tokens[first].range.start]);
            out.push('\'');
            out.push_str(REDACTED);
            out.push('\'');
            copied = tokens[last].range.end;
            secrets.insert(Secrets::PASSWORD);
            i = last + 1;
            continue;
        }
        if let Kind::Literal { content } | Kind::Comment { content } = &token.kind {
            let inner = &text[content.clone()];
            let uri = uri_passwords(inner);
            let cleaned = conninfo_passwords(&uri);
            if cleaned != inner {
                secrets.insert(if uri != inner { Secrets::URI_PASSWORD } else { Secrets::PASSWORD });
                out.push_str(&text[copied..content.start]);
                out.push_str(&cleaned);
                copied = content.end;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return (Cow::Borrowed(text), secrets);
    }
    out.push_str(&text[copied..]);
    (Cow::Owned(out), secrets)
}

/// The literal a `PASSWORD` keyword at `tokens[from - 1]` introduces, as
/// the range of tokens it spans: after spaces, comments and an optional
/// `=`, a literal, with the literals continuing it on later lines and a
/// `UESCAPE` clause. `None` when no literal follows (`PASSWORD NULL`, a
/// column named password).
fn password_literal(text: &str, tokens: &[Token], from: usize) -> Option<(usize, usize)> {
    let skip = |mut at: usize| {
        while tokens.get(at).is_some_and(|t| matches!(t.kind, Kind::Space | Kind::Comment { .. })) {
            at += 1;
        }
        at
    };
    let mut at = skip(from);
    if tokens.get(at).is_some_and(|t| t.kind == Kind::Other && &text[t.range.clone()] == "=") {
        at = skip(at + 1);
    }
    let first = at;
    // A quoted name is no password to PostgreSQL (a syntax error), but one
    // typed by mistake is one still.
    if !matches!(tokens.get(first)?.kind, Kind::Literal { .. } | Kind::Quoted { .. }) {
        return None;
    }
    let mut last = first;
    loop {
        let next = skip(last + 1);
        let between = &text[tokens[last].range.end..tokens.get(next).map_or(text.len(), |t| t.range.start)];
        match tokens.get(next).map(|t| (&t.kind, &text[t.range.clone()])) {
            // 'a'
            // 'b' is one literal, 'ab'.
            Some((Kind::Literal { .. }, _)) if between.contains(['\n', '\r']) => last = next,
            Some((Kind::Word, word)) if word.eq_ignore_ascii_case("uescape") => {
                let escape = skip(next + 1);
                match tokens.get(escape).map(|t| &t.kind) {
                    Some(Kind::Literal { .. }) => last = escape,
                    _ => return Some((first, last)),
                }
            }
            _ => return Some((first, last)),
        }
    }
}

/// Whether `token` is the word `password`, bare or quoted (`OPTIONS (ADD
/// "password" '…')`).
fn is_password_word(text: &str, token: &Token) -> bool {
    let word = match &token.kind {
        Kind::Word => &text[token.range.clone()],
        Kind::Quoted { content } => &text[content.clone()],
        _ => return false,
    };
    word.eq_ignore_ascii_case("password")
}

/// `password=…` in a libpq connection string held in a literal
/// (`dblink_connect('host=db password=s3cret')`): the value, quoted (with
/// backslash escapes, or quotes doubled by the SQL literal) or up to the
/// next space, becomes `***`.
fn conninfo_passwords(content: &str) -> Cow<'_, str> {
    let lower = content.to_ascii_lowercase();
    if !lower.contains("password") {
        return Cow::Borrowed(content);
    }
    let mut out = String::with_capacity(content.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("password").map(|i| search + i) {
        search = found + "password".len();
        let rest = &content[search..];
        let spaced = rest.trim_start();
        let Some(value) = spaced.strip_prefix('=') else { continue };
        let value = value.trim_start();
        let start = content.len() - value.len();
        let len = if let Some(quote) = ["''", "'"].into_iter().find(|q| value.starts_with(q)) {
            closing_quote(&value[quote.len()..], quote).map_or(value.len(), |end| quote.len() + end)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        out.push_str(&content[copied..start]);
        out.push_str(REDACTED);
        copied = start + len;
        search = copied;
    }
    if copied == 0 {
        return Cow::Borrowed(content);
    }
    out.push_str(&content[copied..]);
    Cow::Owned(out)
}

/// Where `quote` closes in `text` (the index after it), skipping
/// backslash-escaped characters.
fn closing_quote(text: &str, quote: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'\\' {
            at += 2;
        } else if bytes[at..].starts_with(quote.as_bytes()) {
            return Some(at + quote.len());
        } else {
            at += 1;
        }
    }
    None
}

/// Whether `password`, in any case, is in `text`: the scan runs on every
/// statement, so it jumps from one `p` to the next.
pub(super) fn mentions_password(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr2_iter(b'p', b'P', bytes)
        .any(|at| bytes.get(at..at + 8).is_some_and(|word| word.eq_ignore_ascii_case(b"password")))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Spaces, tabs, line breaks.
    Space,
    /// `-- …` or `/* … */`; `content` is inside the markers.
    Comment { content: Range<usize> },
    /// A word: keyword or unquoted name.
    Word,
    /// A string literal of any form; `content` is between its delimiters.
    Literal { content: Range<usize> },
    /// A quoted name (`"x"`); `content` is between its quotes.
    Quoted { content: Range<usize> },
    /// Anything else: a number, an operator character.
    Other,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    range: Range<usize>,
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let first = *bytes.get(start)?;
        let after = |n: usize| bytes.get(start + n).copied();
        let (kind, end) = match first {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                let len =
                    bytes[start..].iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')).count();
                (Kind::Space, start + len)
            }
            b'-' if after(1) == Some(b'-') => {
                let end =
                    bytes[start..].iter().position(|&b| b == b'\n' || b == b'\r').map_or(bytes.len(), |n| start + n);
                (Kind::Comment { content: start + 2..end }, end)
            }
            b'/' if after(1) == Some(b'*') => {
                let end = block_comment_end(bytes, start);
                // An unterminated comment's content runs to the end.
                let closed = end >= start + 4 && bytes[..end].ends_with(b"*/");
                let content_end = if closed { end - 2 } else { end };
                (Kind::Comment { content: start + 2..content_end }, end)
            }
            b'\'' => string(bytes, start + 1, Escapes::Either),
            b'$' if start == 0 || !identifier_part(bytes[start - 1]) => match dollar_quote(self.text, start) {
                Some(found) => found,
                None => (Kind::Other, start + 1),
            },
            b'"' => {
                let mut at = start + 1;
                loop {
                    match bytes.get(at) {
                        None => break (Kind::Quoted { content: start + 1..bytes.len() }, bytes.len()),
                        Some(b'"') if bytes.get(at + 1) == Some(&b'"') => at += 2,
                        Some(b'"') => break (Kind::Quoted { content: start + 1..at }, at + 1),
                        Some(_) => at += 1,
                    }
                }
            }
            _ if identifier_start(first) => {
                let len = bytes[start..].iter().take_while(|&&b| identifier_part(b)).count();
                let word = &bytes[start..start + len];
                match (word, bytes.get(start + len), bytes.get(start + len + 1)) {
                    ([b'e' | b'E'], Some(b'\''), _) => string(bytes, start + 2, Escapes::Backslash),
                    ([b'b' | b'B' | b'x' | b'X' | b'n' | b'N'], Some(b'\''), _) => {
                        string(bytes, start + 2, Escapes::Either)
                    }
                    ([b'u' | b'U'], Some(b'&'), Some(b'\'')) => string(bytes, start + 3, Escapes::Either),
                    _ => (Kind::Word, start + len),
                }
            }
            _ => {
                let len = self.text[start..].chars().next().map_or(1, char::len_utf8);
                (Kind::Other, start + len)
            }
        };
        self.at = end.max(start + 1).min(bytes.len());
        // A range that ended inside a character (a backslash before one):
        // carry on to the next boundary.
        while !self.text.is_char_boundary(self.at) {
            self.at += 1;
        }
        let kind = match kind {
            Kind::Literal { content } => Kind::Literal { content: clamp(self.text, content, self.at) },
            Kind::Comment { content } => Kind::Comment { content: clamp(self.text, content, self.at) },
            Kind::Quoted { content } => Kind::Quoted { content: clamp(self.text, content, self.at) },
            other => other,
        };
        Some(Token { kind, range: start..self.at })
    }
}

/// A content range inside `..end`, on character boundaries.
fn clamp(text: &str, content: Range<usize>, end: usize) -> Range<usize> {
    let mut start = content.start.min(end);
    let mut stop = content.end.clamp(start, end);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    while !text.is_char_boundary(stop) {
        stop += 1;
    }
    start..stop.max(start)
}

#[derive(Clone, Copy)]
enum Escapes {
    /// `E'…'`: a backslash escapes the next character.
    Backslash,
    /// Plain literals: backslashes escape under
    /// `standard_conforming_strings = off` only; the later end is taken.
    Either,
}

/// A literal opening at `start` whose text begins at `body`: its kind and end.
fn string(bytes: &[u8], body: usize, escapes: Escapes) -> (Kind, usize) {
    let end = match escapes {
        Escapes::Backslash => literal_end(bytes, body, true),
        Escapes::Either => literal_end(bytes, body, false).max(literal_end(bytes, body, true)),
    };
    let content_end =
        if end <= bytes.len() && end > body && bytes.get(end - 1) == Some(&b'\'') { end - 1 } else { end };
    (Kind::Literal { content: body..content_end.max(body) }, end)
}

/// Where a literal whose text begins at `body` ends (after its closing
/// quote), or the end of the text when it does not close.
fn literal_end(bytes: &[u8], body: usize, backslash_escapes: bool) -> usize {
    let mut at = body;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if backslash_escapes => at += 2,
            b'\'' if bytes.get(at + 1) == Some(&b'\'') => at += 2,
            b'\'' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// `$tag$…$tag$` at `start`: its kind and end, or `None` when the `$` does
/// not open one (`$1`).
fn dollar_quote(text: &str, start: usize) -> Option<(Kind, usize)> {
    let bytes = text.as_bytes();
    let tag_len = bytes[start + 1..].iter().take_while(|&&b| identifier_part(b) && b != b'$').count();
    if bytes.get(start + 1 + tag_len) != Some(&b'$') || bytes.get(start + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let tag = &text[start..start + tag_len + 2];
    let body = start + tag.len();
    Some(match text[body..].find(tag) {
        Some(len) => (Kind::Literal { content: body..body + len }, body + len + tag.len()),
        None => (Kind::Literal { content: body..text.len() }, text.len()),
    })
}

/// The end of the (nested) block comment at `start`, or of the text.
fn block_comment_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut at = start;
    while at < bytes.len() {
        match (bytes[at], bytes.get(at + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                at += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return at;
                }
            }
            _ => at += 1,
        }
    }
    bytes.len()
}

fn identifier_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

fn identifier_part(byte: u8) -> bool {
    identifier_start(byte) || byte.is_ascii_digit() || byte == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_found_in_any_case_and_place() {
        for text in ["password", "PASSWORD 'x'", "alter role a PaSsWoRd 'x'", "pp password", "ppassword"] {
            assert!(mentions_password(text), "{text}");
        }
        for text in ["", "passwor", "pass word", "SELECT 1", "pppppppp"] {
            assert!(!mentions_password(text), "{text}");
        }
    }

    #[test]
    fn findings_name_what_was_removed() {
        let (text, found) = sql_with_findings("ALTER ROLE app PASSWORD 'hunter2'");
        assert_eq!((&*text, found.names()), ("ALTER ROLE app PASSWORD '***'", vec!["password"]));
        let (_, found) = sql_with_findings("SELECT dblink_connect('postgresql://app:s3cret@db/x')");
        assert_eq!(found.names(), ["uri_password"]);
        let (_, found) = sql_with_findings("SELECT * FROM passwords_reset WHERE id = 1");
        assert!(found.is_empty());
        assert_eq!(serde_json::to_string(&found).unwrap(), "[]");
    }

    #[test]
    fn every_literal_form_is_redacted() {
        let cases = [
            ("CREATE ROLE app LOGIN PASSWORD 'hunter2'", "CREATE ROLE app LOGIN PASSWORD '***'"),
            ("alter user x encrypted password 'it''s'; select 1", "alter user x encrypted password '***'; select 1"),
            ("ALTER ROLE a PASSWORD $$s3c$$ VALID UNTIL 'x'", "ALTER ROLE a PASSWORD '***' VALID UNTIL 'x'"),
            ("alter role a password $t$x$t$", "alter role a password '***'"),
            (r"ALTER ROLE a PASSWORD E'hun\'ter2'", "ALTER ROLE a PASSWORD '***'"),
            (r"ALTER ROLE a PASSWORD e'a\\'", "ALTER ROLE a PASSWORD '***'"),
            (r"CREATE ROLE b PASSWORD U&'\0068unter2'", "CREATE ROLE b PASSWORD '***'"),
            ("CREATE ROLE b PASSWORD U&'!0068unter2' UESCAPE '!' LOGIN", "CREATE ROLE b PASSWORD '***' LOGIN"),
            // standard_conforming_strings = off: the later end is taken.
            (r"ALTER ROLE a PASSWORD 'hun\'ter2' LOGIN", "ALTER ROLE a PASSWORD '***' LOGIN"),
            ("ALTER ROLE a PASSWORD 'hun'\n'ter2' LOGIN", "ALTER ROLE a PASSWORD '***' LOGIN"),
            ("ALTER ROLE a PASSWORD /* c */ N'hunter2'", "ALTER ROLE a PASSWORD /* c */ '***'"),
            ("select 1 from u where password = 'x'", "select 1 from u where password = '***'"),
            ("ALTER ROLE a PASSWORD \"hunter2\"", "ALTER ROLE a PASSWORD '***'"),
            (
                "CREATE SERVER s OPTIONS (ADD \"password\" 'hunter2')",
                "CREATE SERVER s OPTIONS (ADD \"password\" '***')",
            ),
            ("select 1 /* password=hunter2", "select 1 /* password=***"),
            ("select 1 /* postgres://u:hunter2@h", "select 1 /* postgres://u:***@h"),
            ("CREATE ROLE a PASSWORD 'unterminated", "CREATE ROLE a PASSWORD '***'"),
            ("copy t from 'postgres://u:pw@h/db'", "copy t from 'postgres://u:***@h/db'"),
            (
                "select dblink_connect('host=db password=s3cret user=a')",
                "select dblink_connect('host=db password=*** user=a')",
            ),
            (
                "select dblink_connect('password=''two words'' host=db')",
                "select dblink_connect('password=*** host=db')",
            ),
            ("select dblink_connect($$password='a\\' b' x$$)", "select dblink_connect($$password=*** x$$)"),
        ];
        for (text, expected) in cases {
            assert_eq!(sql(text), expected, "{text}");
        }
    }

    #[test]
    fn what_is_not_a_password_literal_stays() {
        for text in [
            "select password from users",
            "select * from t where old_password = 'x'",
            "ALTER ROLE a PASSWORD NULL",
            "SELECT 'PASSWORD' AS p, 'x'",
            "SELECT \"password\" FROM t",
            "-- password 'x' is only a comment\nSELECT 1",
        ] {
            assert_eq!(sql(text), text);
        }
        for odd in [
            "password",
            "PASSWORD $",
            "password $a",
            "é password 'ü'",
            "password''",
            "password E'\\",
            "U&",
            "select 'password=\\é'",
        ] {
            let _ = sql(odd);
        }
        assert!(!sql("é password 'ü'").contains('ü'));
    }
}
