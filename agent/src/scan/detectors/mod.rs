//! Airlock's own detectors, for what the gitleaks rules do not know or
//! cannot tell: private key blocks and whether they are encrypted,
//! `.pgpass` entries, `PGPASSWORD` in shell start-up files, kubeconfig
//! credentials, `.env` secrets and passwords in shell histories. Each
//! reports where the secret is and, where it can tell, which server it
//! opens ([`Link`]), so a finding can say it bypasses just-in-time access.

mod dotenv;
mod history;
mod keys;
mod kubeconfig;
mod pgpass;
mod shell_rc;

use std::ops::Range;

/// One secret an Airlock detector found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detection {
    /// Rule id (`airlock-…`).
    pub rule: &'static str,
    /// What was found, in words (never the secret).
    pub description: String,
    /// The secret's bytes in the file.
    pub secret: Range<usize>,
    /// For private keys: whether a passphrase protects it (`None`: not a key, or cannot tell).
    pub encrypted: Option<bool>,
    /// What the secret gives access to, as far as the file says.
    pub link: Link,
}

/// What a found secret opens, as far as its file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Nothing the file names.
    None,
    /// A PostgreSQL server: host as written (name or address; `*`: any),
    /// port (`None`: any, or the default).
    Postgres {
        /// Host name or address.
        host: String,
        /// Port; `None` when the entry says `*` or leaves it out.
        port: Option<u16>,
    },
    /// HTTPS servers (a kubeconfig's clusters), as URLs.
    Servers(Vec<String>),
    /// A private key usable for SSH logins.
    SshKey,
}

/// Every Airlock detection in `content`, the file at `path`.
pub fn detect(path: &str, content: &[u8], out: &mut Vec<Detection>) {
    let name = file_name(path);
    keys::detect(content, out);
    if pgpass::applies(name) {
        pgpass::detect(content, out);
    }
    if shell_rc::applies(path, name) {
        shell_rc::detect(content, out);
    }
    if kubeconfig::applies(path, name, content) {
        kubeconfig::detect(content, out);
    }
    if dotenv::applies(name) {
        dotenv::detect(content, out);
    }
    if let Some(kind) = history::kind(name) {
        history::detect(kind, content, out);
    }
}

/// The last component of `path`.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Lines of `content` with the offset each starts at (without `\n`, `\r`).
fn lines(content: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= content.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &content[start..]).map_or(content.len(), |i| start + i);
        let mut line = &content[start..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let item = (start, line);
        start = end + 1;
        Some(item)
    })
}

/// A value as written after `=` or `:`, quotes taken off: its range within
/// `line` (offsets relative to the line), or `None` if it is empty.
fn unquoted(line: &[u8], from: usize) -> Option<Range<usize>> {
    let mut start = from;
    while start < line.len() && (line[start] == b' ' || line[start] == b'\t') {
        start += 1;
    }
    let mut end = line.len();
    match line.get(start) {
        Some(&quote @ (b'"' | b'\'')) => {
            let close = memchr::memchr(quote, &line[start + 1..])? + start + 1;
            start += 1;
            end = close;
        }
        Some(_) => {
            // Unquoted: up to whitespace or a trailing comment.
            if let Some(stop) = line[start..].iter().position(|&b| b == b' ' || b == b'\t' || b == b'#') {
                end = start + stop;
            }
        }
        None => return None,
    }
    (end > start).then_some(start..end)
}

/// Whether `value` is a reference to something else rather than a secret:
/// `$VAR`, `${VAR}`, `$(cmd)`, a backquoted command, `<placeholder>`.
fn is_reference(value: &[u8]) -> bool {
    matches!(value.first(), Some(b'$' | b'`' | b'<')) || value.starts_with(b"%(") || value.starts_with(b"{{")
}

/// `scheme://user:password@host:port/…`: the password's range within
/// `text` and the host and port, when `text` is such a URL.
fn url_password(text: &[u8]) -> Option<(Range<usize>, String, Option<u16>)> {
    let scheme_end = memchr::memmem::find(text, b"://")?;
    if !text[..scheme_end].iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-')) {
        return None;
    }
    let authority_start = scheme_end + 3;
    let authority_end = text[authority_start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#' | b' ' | b'"' | b'\''))
        .map_or(text.len(), |i| authority_start + i);
    let authority = &text[authority_start..authority_end];
    let at = memchr::memrchr(b'@', authority)?;
    let colon = memchr::memchr(b':', &authority[..at])?;
    let password = authority_start + colon + 1..authority_start + at;
    if password.is_empty() || is_reference(&text[password.clone()]) {
        return None;
    }
    let host_port = String::from_utf8_lossy(&authority[at + 1..]).into_owned();
    let (host, port) = split_host_port(&host_port);
    Some((password, host, port))
}

/// `host:port`, `[v6]:port` or a bare host.
fn split_host_port(text: &str) -> (String, Option<u16>) {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host.to_owned(), after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().ok()),
        _ => (text.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_urls() {
        let line = b"KEY = \"a b\" # c";
        assert_eq!(unquoted(line, 5), Some(7..10));
        assert_eq!(unquoted(b"K=abc # x", 2), Some(2..5));
        assert_eq!(unquoted(b"K=", 2), None);
        assert_eq!(unquoted(b"K='unterminated", 2), None);
        let url = b"postgres://app:s3cr%40t@db.internal:6432/app";
        let (password, host, port) = url_password(url).unwrap();
        assert_eq!((&url[password], host.as_str(), port), (&b"s3cr%40t"[..], "db.internal", Some(6432)));
        assert_eq!(url_password(b"https://example.com/a@b"), None);
        assert_eq!(url_password(b"postgres://app:${PASS}@db/app"), None);
        assert_eq!(split_host_port("[::1]:5432"), ("::1".into(), Some(5432)));
        assert!(is_reference(b"$HOME") && is_reference(b"<your token>") && !is_reference(b"hunter2"));
        let found: Vec<_> = lines(b"a\r\nbc\n\nd").collect();
        assert_eq!(found, vec![(0, &b"a"[..]), (3, &b"bc"[..]), (6, &b""[..]), (7, &b"d"[..])]);
    }
}
