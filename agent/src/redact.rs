//! Removing secrets from text before it is recorded: command lines, SQL,
//! connection strings. What is removed is replaced by `***`; the shape of
//! the text stays, so a reader still sees what was done.

use std::borrow::Cow;

/// What replaces a secret.
pub const REDACTED: &str = "***";
/// Flags whose value is a secret, as `--flag value` or `--flag=value`.
const SECRET_FLAGS: [&str; 6] = ["--password", "--pass", "--token", "--secret", "--api-key", "--access-token"];

/// Removes secrets people put on command lines: `scheme://user:PASSWORD@host`,
/// libpq-style `password=…`, SQL `PASSWORD '…'`, and the values of `SECRET_FLAGS`.
pub fn command_line(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut next_is_secret = false;
    for arg in args {
        if std::mem::take(&mut next_is_secret) {
            out.push(REDACTED.to_owned());
            continue;
        }
        if let Some(flag) = SECRET_FLAGS.iter().find(|f| arg.eq_ignore_ascii_case(f)) {
            next_is_secret = true;
            out.push((*flag).to_owned());
            continue;
        }
        if let Some((flag, _)) =
            arg.split_once('=').filter(|(f, _)| SECRET_FLAGS.iter().any(|s| f.eq_ignore_ascii_case(s)))
        {
            out.push(format!("{flag}={REDACTED}"));
            continue;
        }
        // `psql -c "ALTER ROLE … PASSWORD '…'"` puts SQL on the command line.
        out.push(sql(&keyword_password(&arg)));
    }
    out
}

/// `postgresql://alice:s3cret@db/x` → `postgresql://alice:***@db/x`, for
/// every URI in the argument.
pub fn uri_passwords(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_len = rest.find(['/', '?', '#', ' ']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &rest[authority_len..];
    }
    out.push_str(rest);
    out
}

/// `host=db password=s3cret user=a` → `host=db password=*** user=a`.
pub fn keyword_password(arg: &str) -> String {
    let lower = arg.to_ascii_lowercase();
    let Some(start) = lower.find("password=").map(|i| i + "password=".len()) else { return arg.to_owned() };
    let value_len = if arg[start..].starts_with('\'') {
        arg[start + 1..].find('\'').map_or(arg.len() - start, |end| end + 2)
    } else {
        arg[start..].find(char::is_whitespace).unwrap_or(arg.len() - start)
    };
    format!("{}{REDACTED}{}", &arg[..start], keyword_password(&arg[start + value_len..]))
}

/// Kinds of secret found in text, as a small set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Secrets(u8);

impl Secrets {
    /// A `PASSWORD '…'` literal (or `password = '…'`).
    pub const PASSWORD: Self = Self(1);
    /// A password inside a `scheme://user:password@host` URI.
    pub const URI_PASSWORD: Self = Self(2);
    const NAMES: [(Self, &'static str); 2] = [(Self::PASSWORD, "password"), (Self::URI_PASSWORD, "uri_password")];

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Adds `other`'s kinds.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Names of the kinds found, for records.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES.iter().filter(|(kind, _)| self.0 & kind.0 != 0).map(|(_, name)| *name).collect()
    }
}

impl serde::Serialize for Secrets {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.names())
    }
}

/// SQL with the literal after every `PASSWORD` keyword replaced
/// (`CREATE ROLE … PASSWORD 'x'`, `ALTER USER … ENCRYPTED PASSWORD $$x$$`),
/// and passwords in URIs inside it.
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
    let original = text;
    let text = uri_passwords(text);
    if text != original {
        secrets.insert(Secrets::URI_PASSWORD);
    }
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("password").map(|i| search + i) {
        search = found + "password".len();
        let word_start =
            found == 0 || !lower.as_bytes()[found - 1].is_ascii_alphanumeric() && lower.as_bytes()[found - 1] != b'_';
        // `PASSWORD 'x'` in DDL, or `password = 'x'` in a comparison.
        let rest = text[search..].trim_start();
        let rest = rest.strip_prefix('=').map_or(rest, str::trim_start);
        let literal_at = text.len() - rest.len();
        if !word_start {
            continue;
        }
        let Some(literal_len) = literal_len(&text[literal_at..]) else { continue };
        out.push_str(&text[copied..literal_at]);
        out.push('\'');
        out.push_str(REDACTED);
        out.push('\'');
        secrets.insert(Secrets::PASSWORD);
        copied = literal_at + literal_len;
        search = copied;
    }
    out.push_str(&text[copied..]);
    (Cow::Owned(out), secrets)
}

/// Whether `password`, in any case, is in `text`: the scan runs on every
/// statement, so it jumps from one `p` to the next.
fn mentions_password(text: &str) -> bool {
    let bytes = text.as_bytes();
    memchr::memchr2_iter(b'p', b'P', bytes)
        .any(|at| bytes.get(at..at + 8).is_some_and(|word| word.eq_ignore_ascii_case(b"password")))
}

/// Length of the SQL string literal at the start of `text`: `'…'` (with `''`
/// escapes) or `$tag$…$tag$`. An unterminated literal runs to the end.
fn literal_len(text: &str) -> Option<usize> {
    if let Some(body) = text.strip_prefix('\'') {
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'\'' {
                if bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                return Some(i + 2);
            }
            i += 1;
        }
        return Some(text.len());
    }
    let body = text.strip_prefix('$')?;
    let tag_len = body.find('$')?;
    let tag = &text[..tag_len + 2];
    if !tag[1..tag.len() - 1].chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    Some(text[tag.len()..].find(tag).map_or(text.len(), |end| tag.len() + end + tag.len()))
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

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn secrets_on_command_lines_are_redacted() {
        let redacted = command_line(strings(&[
            "psql",
            "postgresql://alice:s3cret@db:5432/app?sslmode=require",
            "host=db password=hunter2 user=a",
            "password='two words' dbname=x",
            "--password",
            "p@ss",
            "--token=abc123",
            "-h",
            "db",
            "ssh://bob@host",
            "alter role app password 'pw2'",
        ]));
        assert_eq!(
            redacted,
            strings(&[
                "psql",
                "postgresql://alice:***@db:5432/app?sslmode=require",
                "host=db password=*** user=a",
                "password=*** dbname=x",
                "--password",
                "***",
                "--token=***",
                "-h",
                "db",
                "ssh://bob@host",
                "alter role app password '***'",
            ])
        );
        let joined = redacted.join(" ");
        for secret in ["s3cret", "hunter2", "two words", "p@ss", "abc123", "pw2"] {
            assert!(!joined.contains(secret), "{secret} leaked: {joined}");
        }
    }

    #[test]
    fn redaction_handles_odd_input_without_panicking() {
        for arg in ["://", "a://@", "x://u:@", "password=", "password='", "PASSWORD=x", "é://ü:ö@ä", "--password"] {
            let out = command_line(strings(&[arg]));
            assert_eq!(out.len(), 1);
        }
        assert_eq!(command_line(strings(&["PASSWORD=x"])), strings(&["PASSWORD=***"]));
    }

    #[test]
    fn sql_password_literals_are_redacted() {
        assert_eq!(sql("CREATE ROLE app LOGIN PASSWORD 'hunter2'"), "CREATE ROLE app LOGIN PASSWORD '***'");
        assert_eq!(
            sql("alter user x encrypted password 'it''s'; select 1"),
            "alter user x encrypted password '***'; select 1"
        );
        assert_eq!(sql("ALTER ROLE a PASSWORD $$s3c$$ VALID UNTIL 'x'"), "ALTER ROLE a PASSWORD '***' VALID UNTIL 'x'");
        assert_eq!(sql("alter role a password $t$x$t$"), "alter role a password '***'");
        assert_eq!(sql("select password from users"), "select password from users", "a column, not a literal");
        assert_eq!(sql("select * from t where old_password = 'x'"), "select * from t where old_password = 'x'");
        assert_eq!(sql("select 1 from u where password = 'x'"), "select 1 from u where password = '***'");
        assert_eq!(sql("CREATE ROLE a PASSWORD 'unterminated"), "CREATE ROLE a PASSWORD '***'");
        assert_eq!(sql("copy t from 'postgres://u:pw@h/db'"), "copy t from 'postgres://u:***@h/db'");
        for odd in ["password", "PASSWORD $", "password $a", "é password 'ü'", "password''"] {
            let _ = sql(odd);
        }
        assert!(!sql("é password 'ü'").contains('ü'));
    }
}
