//! Secrets in the words of a command: a process's argv, or a shell command
//! line (an SSH exec request, a typed line) split as the shell splits it.
//!
//! What counts: the value of a secret flag (`--password X`,
//! `--password=X`), a secret environment assignment (`PGPASSWORD=X`,
//! `env MYSQL_PWD=X …`), and the short flags of tools known to take a
//! password on the command line (`mysql -pX`, `sshpass -p X`, `redis-cli -a
//! X`, `curl -u user:X`), and a word that is an HTTP credential by itself
//! (`Bearer X`, as a client's `--authorization` value). Over-redaction (a database name after `mysql -p`)
//! is the accepted cost: the shape of the command stays readable.

use super::REDACTED;

/// Flags whose value is a secret, as `--flag value` or `--flag=value`.
const SECRET_FLAGS: [&str; 12] = [
    "--authorization",
    "--password",
    "--pass",
    "--passwd",
    "--pwd",
    "--token",
    "--secret",
    "--api-key",
    "--access-token",
    "--auth-token",
    "--client-secret",
    "--db-password",
];

/// What of a word is secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Secret {
    /// All of it.
    Whole,
    /// All after its first `n` bytes (`--password=`, `-p`, `user:`).
    After(usize),
    /// All after its first `n` bytes, spaces included: one value (a header's).
    Rest(usize),
    /// The values of its secret-named fields, after its first `n` bytes (a
    /// form, JSON or YAML request body).
    Fields(usize),
}

/// Tools whose short flag (`-p`, `-a`) takes a password.
fn password_flag(tool: &str) -> Option<&'static str> {
    match tool {
        "mysql" | "mysqldump" | "mysqladmin" | "mysqlimport" | "mysqlshow" | "mysqlcheck" | "mariadb"
        | "mariadb-dump" | "mariadb-admin" | "sshpass" => Some("-p"),
        "redis-cli" => Some("-a"),
        _ => None,
    }
}

/// Tools whose `-u`/`--user` value is `user:password`.
fn user_colon_password(tool: &str) -> bool {
    matches!(tool, "curl" | "wget")
}

/// Whether `NAME=value` names a secret: `PGPASSWORD`, `MYSQL_PWD`,
/// `GITHUB_TOKEN`, `AWS_SECRET_ACCESS_KEY`, `api_key`….
pub(super) fn secret_variable(name: &str) -> bool {
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    let upper = name.to_ascii_uppercase();
    valid
        && (upper.ends_with("_PWD")
            || ["PASSWORD", "PASSWD", "TOKEN", "SECRET", "API_KEY", "APIKEY", "ACCESS_KEY"]
                .iter()
                .any(|part| upper.contains(part)))
}

/// Flags whose value is an HTTP header (`-H 'Authorization: Bearer X'`).
const HEADER_FLAGS: [&str; 2] = ["-H", "--header"];

/// Flags whose value is a request body (`curl -d 'user=a&password=X'`,
/// `wget --post-data …`): its secret-named fields are secrets.
const DATA_FLAGS: [&str; 11] = [
    "-d",
    "--data",
    "--data-raw",
    "--data-binary",
    "--data-urlencode",
    "--json",
    "-F",
    "--form",
    "--form-string",
    "--post-data",
    "--body-data",
];

/// Flags whose value is cookies (`curl -b 'session=X'`).
const COOKIE_FLAGS: [&str; 2] = ["-b", "--cookie"];

/// Where the secret of a header `Name: value` starts, if its name says it
/// carries one (Authorization, Cookie, X-Api-Key, anything with token, key,
/// secret, session or password in its name).
fn header_secret(header: &str) -> Option<usize> {
    let (name, _) = header.split_once(':')?;
    let lower = name.trim().to_ascii_lowercase();
    let secret = ["authorization", "cookie", "token", "key", "secret", "session", "password", "auth"]
        .iter()
        .any(|part| lower.contains(part));
    secret.then_some(name.len() + 1)
}

/// Where the secret of a word that is an HTTP credential by itself
/// (`Bearer X`, `Basic X`: an Authorization value handed to a program as
/// one argument, whatever its flag) starts.
fn credential_value(word: &str) -> Option<usize> {
    let (scheme, value) = word.split_once(' ')?;
    let known = ["bearer", "basic"].iter().any(|s| scheme.eq_ignore_ascii_case(s));
    (known && !value.trim().is_empty() && !value.contains(' ')).then_some(scheme.len() + 1)
}

/// What the next word is, after a flag that takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    Plain,
    Secret,
    UserColonPassword,
    Header,
    Data,
}

/// Each word of one command (no separators) with what of it is secret.
pub(super) fn secrets<'w>(words: impl IntoIterator<Item = &'w str>) -> Vec<Option<Secret>> {
    let mut found = Vec::new();
    let mut tool = "";
    let mut next = Next::Plain;
    for word in words {
        let secret = match std::mem::replace(&mut next, Next::Plain) {
            Next::Secret => Some(Secret::Whole),
            Next::UserColonPassword => word.find(':').map(|colon| Secret::After(colon + 1)),
            Next::Header => header_secret(word).map(Secret::Rest),
            Next::Data => Some(Secret::Fields(0)),
            Next::Plain => word_secret(word, tool, &mut next),
        };
        // The tool is the first word that is no assignment and no option,
        // or a later one known to take a password (`sudo mysql`, `sshpass`).
        if secret.is_none() && !word.starts_with('-') && !word.contains('=') {
            let base = word.rsplit('/').next().unwrap_or(word);
            if tool.is_empty() || password_flag(base).is_some() || user_colon_password(base) {
                tool = base;
            }
        }
        found.push(secret);
    }
    found
}

fn word_secret(word: &str, tool: &str, next: &mut Next) -> Option<Secret> {
    if SECRET_FLAGS.iter().any(|flag| word.eq_ignore_ascii_case(flag)) {
        *next = Next::Secret;
        return None;
    }
    if let Some((name, _)) = word.split_once('=') {
        let flag = SECRET_FLAGS.iter().any(|flag| name.eq_ignore_ascii_case(flag));
        if flag || secret_variable(name) || (user_colon_password(tool) && name == "--user") {
            let value = &word[name.len() + 1..];
            return Some(match value.find(':') {
                Some(colon) if name == "--user" => Secret::After(name.len() + 1 + colon + 1),
                _ => Secret::After(name.len() + 1),
            });
        }
    }
    if let Some(short) = password_flag(tool) {
        if word == short {
            *next = Next::Secret;
            return None;
        }
        if word.len() > short.len() && word.starts_with(short) {
            return Some(Secret::After(short.len()));
        }
    }
    if user_colon_password(tool) && (word == "-u" || word == "--user") {
        *next = Next::UserColonPassword;
    }
    if HEADER_FLAGS.contains(&word) {
        *next = Next::Header;
    } else if let Some(header) = word.strip_prefix("--header=") {
        return header_secret(header).map(|at| Secret::Rest("--header=".len() + at));
    } else if let Some(header) = word.strip_prefix("-H") {
        return header_secret(header).map(|at| Secret::Rest(2 + at));
    }
    if let Some(at) = credential_value(word) {
        return Some(Secret::After(at));
    }
    if user_colon_password(tool) && COOKIE_FLAGS.contains(&word) {
        *next = Next::Secret;
    }
    if user_colon_password(tool) {
        if DATA_FLAGS.contains(&word) {
            *next = Next::Data;
        } else if let Some(flag) = DATA_FLAGS.iter().find(|f| f.len() == 2 && word.len() > 2 && word.starts_with(*f)) {
            return Some(Secret::Fields(flag.len()));
        } else if let Some((name, _)) = word.split_once('=')
            && DATA_FLAGS.contains(&name)
        {
            return Some(Secret::Fields(name.len() + 1));
        }
    }
    None
}

/// `word` with its secret part replaced.
pub(super) fn redacted(word: &str, secret: Secret) -> String {
    match secret {
        Secret::Whole => REDACTED.to_owned(),
        Secret::After(n) | Secret::Rest(n) => format!("{}{REDACTED}", word.get(..n).unwrap_or_default()),
        Secret::Fields(n) => {
            let (flag, body) = word.split_at_checked(n).unwrap_or(("", word));
            // JSON, YAML (`key: value`, which a form URL-encodes) or a form,
            // each read its own way: a JSON body is also YAML's flow mapping,
            // but read as JSON, its quotes kept.
            let json = serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok();
            let yaml = [": ", ":\t", ":\n"].iter().any(|colon| body.contains(colon));
            let body = match (json, yaml) {
                (true, _) => super::json_secrets(body),
                (false, true) => super::json_secrets(&super::assignments(body)),
                (false, false) => super::json_secrets(&super::form_secrets(body)),
            };
            format!("{flag}{body}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(words: &[&str]) -> Vec<String> {
        let found = secrets(words.iter().copied());
        words.iter().zip(found).map(|(w, s)| s.map_or_else(|| (*w).to_owned(), |s| redacted(w, s))).collect()
    }

    #[test]
    fn flags_assignments_and_known_tools() {
        assert_eq!(apply(&["tool", "--password", "s3cret", "-v"]), ["tool", "--password", "***", "-v"]);
        assert_eq!(apply(&["tool", "--Password=s3cret"]), ["tool", "--Password=***"]);
        assert_eq!(apply(&["env", "PGPASSWORD=s3cret", "psql"]), ["env", "PGPASSWORD=***", "psql"]);
        assert_eq!(
            apply(&["MYSQL_PWD=x", "GITHUB_TOKEN=y", "PWD=/home"]),
            ["MYSQL_PWD=***", "GITHUB_TOKEN=***", "PWD=/home"]
        );
        assert_eq!(apply(&["/usr/bin/mysql", "-uroot", "-ps3cret", "db"]), ["/usr/bin/mysql", "-uroot", "-p***", "db"]);
        assert_eq!(apply(&["mysql", "-p", "s3cret"]), ["mysql", "-p", "***"]);
        assert_eq!(apply(&["sshpass", "-p", "s3cret", "ssh", "host"]), ["sshpass", "-p", "***", "ssh", "host"]);
        assert_eq!(apply(&["redis-cli", "-a", "s3cret", "ping"]), ["redis-cli", "-a", "***", "ping"]);
        assert_eq!(apply(&["curl", "-u", "bob:s3cret", "https://x"]), ["curl", "-u", "bob:***", "https://x"]);
        assert_eq!(
            apply(&["curl", "-H", "Authorization: Bearer t0k", "-H", "Accept: */*", "-b", "sid=1", "-HX-Api-Key: k"]),
            ["curl", "-H", "Authorization:***", "-H", "Accept: */*", "-b", "***", "-HX-Api-Key:***"]
        );
        let argv = ["curl", "-H", "Authorization: Bearer t0k"].map(String::from).to_vec();
        assert_eq!(super::super::command_line(argv), ["curl", "-H", "Authorization:***"]);
        assert_eq!(
            apply(&["curl", "-d", "user=a&password=x", "-d{\"token\": \"t\", \"n\": 1}", "--json", "[1]"]),
            ["curl", "-d", "user=a&password=***", "-d{\"token\": \"***\", \"n\": 1}", "--json", "[1]"]
        );
        assert_eq!(apply(&["wget", "--post-data=pass=x&u=1"]), ["wget", "--post-data=pass=***&u=1"]);
        assert_eq!(
            apply(&["client", "--authorization", "Bearer t0k", "--auth", "Basic YTpi", "Bearer of news"]),
            ["client", "--authorization", "***", "--auth", "Basic ***", "Bearer of news"]
        );
        // Other tools' -p is a port or a path.
        assert_eq!(apply(&["psql", "-p", "5433"]), ["psql", "-p", "5433"]);
        assert_eq!(apply(&["ssh", "-p2222", "host"]), ["ssh", "-p2222", "host"]);
    }
}
