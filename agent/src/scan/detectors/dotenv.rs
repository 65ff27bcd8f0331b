//! `.env` files: `NAME=value` lines whose name says secret (judged as
//! command lines' environment assignments are, [`crate::redact::is_secret_variable`]),
//! and passwords inside connection URLs (`DATABASE_URL=postgres://u:pw@h/db`).

use super::{Detection, Link, is_reference, lines, unquoted, url_password};

/// Names that mark a file as a template, whose values are placeholders.
const TEMPLATES: [&str; 5] = ["example", "sample", "template", "dist", "defaults"];

pub(super) fn applies(name: &str) -> bool {
    let is_env = name == ".env" || name.starts_with(".env.") || name.ends_with(".env");
    is_env && !TEMPLATES.iter().any(|t| name.ends_with(t))
}

pub(super) fn detect(content: &[u8], out: &mut Vec<Detection>) {
    for (start, line) in lines(content) {
        let Some(equals) = memchr::memchr(b'=', line) else { continue };
        let name = line[..equals].trim_ascii();
        let name = name.strip_prefix(b"export ").map_or(name, <[u8]>::trim_ascii);
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let Some(value) = unquoted(line, equals + 1) else { continue };
        let text = &line[value.clone()];
        if let Some((password, host, port)) = url_password(text) {
            let is_postgres = text.starts_with(b"postgres");
            out.push(Detection {
                rule: "airlock-url-password",
                description: format!("password in a connection URL ({name})"),
                secret: start + value.start + password.start..start + value.start + password.end,
                encrypted: None,
                link: if is_postgres { Link::Postgres { host, port: port.or(Some(5432)) } } else { Link::None },
            });
            continue;
        }
        if !crate::redact::is_secret_variable(name) || is_reference(text) || placeholder(text) {
            continue;
        }
        out.push(Detection {
            rule: "airlock-env-secret",
            description: format!("secret in an environment file ({name})"),
            secret: start + value.start..start + value.end,
            encrypted: None,
            link: if name.eq_ignore_ascii_case("PGPASSWORD") {
                Link::Postgres { host: "*".into(), port: None }
            } else {
                Link::None
            },
        });
    }
}

/// Values that are settings, not secrets: booleans, numbers (`TOKEN_TTL=3600`).
fn placeholder(value: &[u8]) -> bool {
    value.iter().all(u8::is_ascii_digit)
        || [&b"true"[..], b"false", b"null", b"none", b"yes", b"no"].iter().any(|w| value.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_urls_and_settings() {
        let text = b"# db\nDB_PASSWORD=hunter2\nexport API_TOKEN=\"tok-123\"\nTOKEN_TTL=3600\nAPP_NAME=demo\nSECRET_KEY=${FROM_VAULT}\nDATABASE_URL=postgres://app:pw1@10.20.0.5:5433/app\n";
        let mut out = Vec::new();
        detect(text, &mut out);
        let found: Vec<(&str, &[u8])> = out.iter().map(|d| (d.rule, &text[d.secret.clone()])).collect();
        assert_eq!(
            found,
            vec![
                ("airlock-env-secret", &b"hunter2"[..]),
                ("airlock-env-secret", b"tok-123"),
                ("airlock-url-password", b"pw1")
            ]
        );
        assert_eq!(out[2].link, Link::Postgres { host: "10.20.0.5".into(), port: Some(5433) });
        assert!(applies(".env") && applies(".env.production") && applies("prod.env"));
        assert!(!applies(".env.example") && !applies("environment"));
    }
}
