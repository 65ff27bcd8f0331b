//! Removing secrets from text before it is recorded: command lines, SQL,
//! connection strings. What is removed is replaced by `***`; the shape of
//! the text stays, so a reader still sees what was done.

mod assignments;
mod request;
mod shell;
mod sql;
mod words;

pub use self::{
    assignments::assignments,
    request::request_target,
    shell::shell,
    sql::{sql, sql_with_findings},
};

/// What replaces a secret.
pub const REDACTED: &str = "***";

/// Whether an environment variable of this name holds a secret
/// (`PGPASSWORD`, `MYSQL_PWD`, `GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`…), as
/// command lines are judged; also how `.env` files are read.
pub fn is_secret_variable(name: &str) -> bool {
    words::secret_variable(name)
}
/// Removes secrets people put on command lines: the values of secret
/// flags and assignments and of known tools' password flags (see
/// [`words`]), and in each argument what [`shell`] removes (an argument
/// may be a whole command: `sh -c '…'`).
pub fn command_line(args: Vec<String>) -> Vec<String> {
    let found = words::secrets(args.iter().map(String::as_str));
    args.iter()
        .zip(found)
        .map(|(arg, secret)| match secret {
            // An argument with spaces may be several words
            // (`password='a b' dbname=x`): the shell's reading keeps the rest.
            Some(words::Secret::After(_)) if arg.contains(char::is_whitespace) => shell(arg),
            Some(secret) => words::redacted(arg, secret),
            None => json_secrets(&shell(arg)),
        })
        .collect()
}

/// Free text that may hold SQL, connection strings or URIs (a command-line
/// argument, a server's error message): SQL first, read from the original
/// text, then what lies outside its literals.
pub fn text(text: &str) -> String {
    json_secrets(&keyword_password(&url_query_secrets(&uri_passwords(&sql(text)))))
}

/// A PostgreSQL error message (the server's, or the parser's Airlock runs)
/// as records keep it: [`text`], and the token a syntax error quotes (`…
/// at or near "TOKEN"`) replaced unless it is a keyword or punctuation: it
/// is what the person typed, and may be a password (`PASSWORD hunter2`, an
/// unterminated `'hunter2`).
pub fn sql_error(message: &str) -> String {
    const NEAR: &str = " at or near \"";
    let message = text(message);
    let Some(token_start) = message.find(NEAR).map(|at| at + NEAR.len()) else { return message };
    // The token ends at the message's last `"`: a quoted token holds `"`s.
    let Some(end) = message.rfind('"').filter(|&end| end >= token_start) else { return message };
    let token = &message[token_start..end];
    let punctuation = token.len() <= 2 && token.bytes().all(|b| b.is_ascii_punctuation());
    if punctuation || SQL_KEYWORDS.iter().any(|keyword| keyword.eq_ignore_ascii_case(token)) {
        return message;
    }
    format!("{}{REDACTED}{}", &message[..token_start], &message[end..])
}

/// Words a syntax error may quote that are no one's secret.
const SQL_KEYWORDS: [&str; 48] = [
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT",
    "INTO",
    "UPDATE",
    "DELETE",
    "SET",
    "VALUES",
    "CREATE",
    "ALTER",
    "DROP",
    "TABLE",
    "ROLE",
    "USER",
    "WITH",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "AS",
    "ON",
    "JOIN",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "HAVING",
    "UNION",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "GRANT",
    "REVOKE",
    "TO",
    "IS",
    "IN",
    "LIKE",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "RETURNING",
    "PASSWORD",
    "TRUNCATE",
    "COPY",
];

/// `{"user": "a", "password": "x"}` → `{"user": "a", "password": "***"}`:
/// JSON members (or JSON-like text: a `curl -d` argument, a log line)
/// whose names suggest a secret, wherever they stand in the text.
pub fn json_secrets(text: &str) -> String {
    static MEMBER: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""((?:[^"\\]|\\.)*)"\s*:\s*("(?:[^"\\]|\\.)*"|[^\s,{}\[\]"]+)"#).expect("valid regex")
    });
    if !text.contains('"') {
        return text.to_owned();
    }
    MEMBER
        .replace_all(text, |found: &regex::Captures<'_>| {
            let name = found[1].to_ascii_lowercase();
            if SECRET_NAME_PARTS.iter().any(|part| name.contains(part)) {
                let value_at = found.get(2).map_or(0, |v| v.start() - found.get(0).map_or(0, |m| m.start()));
                format!("{}\"{REDACTED}\"", &found[0][..value_at])
            } else {
                found[0].to_owned()
            }
        })
        .into_owned()
}

/// Parts of names (query parameters, form fields, JSON members) that
/// suggest their value is a secret.
pub const SECRET_NAME_PARTS: [&str; 11] =
    ["token", "key", "secret", "pass", "pwd", "sig", "auth", "code", "session", "credential", "jwt"];

/// `https://x/api?access_token=abc&page=2` → `…?access_token=***&page=2`,
/// for every URL in the text (and a bare `/path?query`).
pub fn url_query_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(question) = rest.find('?') {
        // Only a query of a URL or a path: `?` right after a word of one.
        let before = &rest[..question];
        // Past the separator, whose width may be more than a byte (U+0085
        // is whitespace).
        let word_start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| c.is_whitespace() || matches!(c, '\'' | '"'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let word = &before[word_start..];
        out.push_str(&rest[..=question]);
        rest = &rest[question + 1..];
        if !(word.contains("://") || word.starts_with('/')) {
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || matches!(c, '#' | '\'' | '"')).unwrap_or(rest.len());
        out.push_str(&form_secrets(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `user=alice&password=x` → `user=alice&password=***`: a query string or
/// an `application/x-www-form-urlencoded` body, values of secret-named
/// fields removed.
pub fn form_secrets(form: &str) -> String {
    let masked: Vec<String> = form
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_NAME_PARTS.iter().any(|k| name.to_ascii_lowercase().contains(k)) => {
                format!("{name}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect();
    masked.join("&")
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

#[cfg(test)]
mod sql_error_tests {
    use super::*;

    #[test]
    fn the_token_a_syntax_error_quotes_is_kept_only_if_no_secret() {
        assert_eq!(
            sql_error("unterminated quoted string at or near \"'hunter2\""),
            "unterminated quoted string at or near \"***\""
        );
        assert_eq!(sql_error("syntax error at or near \"\"hunter2\"\""), "syntax error at or near \"***\"");
        assert_eq!(
            sql_error("syntax error at or near \"hunter2\" (at character 27)"),
            "syntax error at or near \"***\" (at character 27)"
        );
        assert_eq!(sql_error("syntax error at or near \"FROM\""), "syntax error at or near \"FROM\"");
        assert_eq!(sql_error("syntax error at or near \")\""), "syntax error at or near \")\"");
        assert_eq!(sql_error("syntax error at end of input"), "syntax error at end of input");
        assert_eq!(sql_error("relation \"t\" does not exist"), "relation \"t\" does not exist");
    }
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn secret_query_values_are_masked_in_urls_and_paths() {
        assert_eq!(url_query_secrets("/v1/x"), "/v1/x");
        assert_eq!(
            url_query_secrets("curl 'https://api/x?access_token=abc&page=2&X-Amz-Signature=f00' -o f"),
            "curl 'https://api/x?access_token=***&page=2&X-Amz-Signature=***' -o f"
        );
        assert_eq!(url_query_secrets("/watch?v=1&&flag#frag"), "/watch?v=1&&flag#frag");
        assert_eq!(url_query_secrets("is it? key=1"), "is it? key=1");
        // A separator wider than a byte before the URL (found by the
        // secret_scan fuzz target: it panicked slicing inside U+0085).
        assert_eq!(url_query_secrets("a\u{85}https://x/y?token=t \u{85}=s?"), "a\u{85}https://x/y?token=*** \u{85}=s?");
        assert_eq!(text("!$J=:\n_://=s!$J=:\u{85}_://=s?"), "!$J=:\n_://=s!$J=:\u{85}_://=s?");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn json_members_named_like_secrets_lose_their_values_wherever_they_stand() {
        assert_eq!(
            json_secrets(r#"POST {"user": "a", "Password" : "p\"w", "apiKey":12, "nested":{"token":null}}"#),
            r#"POST {"user": "a", "Password" : "***", "apiKey":"***", "nested":{"token":"***"}}"#
        );
        assert_eq!(json_secrets(r#"{"a":"password"}"#), r#"{"a":"password"}"#, "a value named like a secret is kept");
        assert_eq!(json_secrets("no json here"), "no json here");
        let argv = command_line(strings(&["tool", r#"{"client_secret":"s3"}"#]));
        assert_eq!(argv[1], r#"{"client_secret":"***"}"#);
        let yaml = command_line(strings(&["curl", "--data-binary", "db: {user: app, password: s3, port: 5432}\n"]));
        assert_eq!(yaml[2], "db: {user: app, password: ***, port: 5432}\n");
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
}
