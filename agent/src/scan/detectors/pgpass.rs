//! `.pgpass`: `hostname:port:database:username:password` lines, `\:` and
//! `\\` escaped, as libpq reads them; the password is the secret and the
//! host and port say which server it opens.

use super::{Detection, Link, lines};

pub(super) fn applies(name: &str) -> bool {
    name == ".pgpass" || name == "pgpass" || name.ends_with(".pgpass") || name == "pgpass.conf"
}

pub(super) fn detect(content: &[u8], out: &mut Vec<Detection>) {
    for (start, line) in lines(content) {
        if line.first() == Some(&b'#') {
            continue;
        }
        let Some(fields) = split(line) else { continue };
        let password = fields[4].clone();
        if password.is_empty() {
            continue;
        }
        let field = |i: usize| unescape(&line[fields[i].clone()]);
        let port = field(1);
        out.push(Detection {
            rule: "airlock-pgpass",
            description: format!("PostgreSQL password in a password file (user {})", field(3)),
            secret: start + password.start..start + password.end,
            encrypted: None,
            link: Link::Postgres { host: field(0), port: port.parse().ok() },
        });
    }
}

/// The five fields' ranges; the last runs to the end of the line.
fn split(line: &[u8]) -> Option<[std::ops::Range<usize>; 5]> {
    let mut fields: [std::ops::Range<usize>; 5] = Default::default();
    let (mut field, mut start, mut i) = (0, 0, 0);
    while i < line.len() && field < 4 {
        match line[i] {
            b'\\' => i += 1,
            b':' => {
                fields[field] = start..i;
                field += 1;
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if field < 4 {
        return None;
    }
    fields[4] = start.min(line.len())..line.len();
    Some(fields)
}

fn unescape(field: &[u8]) -> String {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        out.push(if b == b'\\' { bytes.next().copied().unwrap_or(b'\\') } else { b });
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_escapes_comments_and_wildcards() {
        let text = b"# comment\ndb.internal:5432:app:alice:s3cr\\:et\n*:*:*:bob:pw\nshort:line\n10.0.0.1:5432:x:y:\n";
        let mut out = Vec::new();
        detect(text, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&text[out[0].secret.clone()], b"s3cr\\:et");
        assert_eq!(out[0].link, Link::Postgres { host: "db.internal".into(), port: Some(5432) });
        assert!(out[0].description.contains("alice"));
        assert_eq!(out[1].link, Link::Postgres { host: "*".into(), port: None });
        assert!(applies(".pgpass") && !applies("pgpass.txt.bak"));
    }
}
