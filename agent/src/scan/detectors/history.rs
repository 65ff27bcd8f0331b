//! Passwords in shell and client histories: each command line is read the
//! way the agent redacts command lines ([`crate::redact`]: secret flags and
//! assignments, known tools' password flags, URIs with passwords, SQL
//! `PASSWORD '…'`), and what redaction would remove is the secret.

use super::{Detection, Link, lines};

/// How a history file's lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// One command line per line (bash, sh, zsh's `: time:0;` prefix taken off).
    Shell,
    /// fish: `- cmd: …`.
    Fish,
    /// psql and mysql: SQL statements.
    Sql,
}

pub(super) fn kind(name: &str) -> Option<Kind> {
    match name {
        ".bash_history" | ".zsh_history" | ".sh_history" | ".history" | ".histfile" | ".ash_history"
        | ".mksh_history" | ".ksh_history" => Some(Kind::Shell),
        "fish_history" => Some(Kind::Fish),
        ".psql_history" | ".mysql_history" | ".sqlite_history" => Some(Kind::Sql),
        _ => None,
    }
}

pub(super) fn detect(kind: Kind, content: &[u8], out: &mut Vec<Detection>) {
    for (start, line) in lines(content) {
        let Ok(line) = std::str::from_utf8(line) else { continue };
        let (offset, command) = match kind {
            Kind::Shell => (zsh_prefix(line), &line[zsh_prefix(line)..]),
            Kind::Fish => match line.find("- cmd: ") {
                Some(at) if line[..at].trim().is_empty() => (at + 7, &line[at + 7..]),
                _ => continue,
            },
            Kind::Sql => (0, line),
        };
        let redacted = match kind {
            Kind::Sql => crate::redact::text(command),
            Kind::Shell | Kind::Fish => crate::redact::shell(command),
        };
        for secret in removed(command, &redacted) {
            out.push(Detection {
                rule: "airlock-history-password",
                description: match kind {
                    Kind::Sql => "password in a SQL client history".into(),
                    _ => "password on a command line in a shell history".into(),
                },
                secret: start + offset + secret.start..start + offset + secret.end,
                encrypted: None,
                link: Link::None,
            });
        }
    }
}

/// zsh's extended history writes `: 1700000000:0;command`.
fn zsh_prefix(line: &str) -> usize {
    let Some(rest) = line.strip_prefix(": ") else { return 0 };
    match rest.find(';') {
        Some(semicolon) if rest[..semicolon].bytes().all(|b| b.is_ascii_digit() || b == b':') => semicolon + 3,
        _ => 0,
    }
}

/// The parts of `original` that `redacted` replaced with
/// [`crate::redact::REDACTED`]: text between replacements is the same in
/// both, so each replaced part ends where the next kept text resumes.
fn removed(original: &str, redacted: &str) -> Vec<std::ops::Range<usize>> {
    let marker = crate::redact::REDACTED;
    let mut found = Vec::new();
    let (mut at, mut rest) = (0, redacted);
    while let Some(star) = rest.find(marker) {
        let kept = &rest[..star];
        // The kept text before this replacement, from where the last one ended.
        let Some(kept_at) = original[at..].find(kept).map(|i| at + i) else { break };
        let secret_start = kept_at + kept.len();
        rest = &rest[star + marker.len()..];
        let next_kept = rest.find(marker).map_or(rest, |n| &rest[..n]);
        let secret_end = if next_kept.is_empty() {
            if rest.is_empty() { original.len() } else { secret_start }
        } else {
            match original.get(secret_start + 1..).and_then(|tail| tail.find(next_kept)) {
                Some(i) => secret_start + 1 + i,
                None => break,
            }
        };
        if secret_end > secret_start && &original[secret_start..secret_end] != marker {
            found.push(secret_start..secret_end);
        }
        at = secret_end;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(kind: Kind, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        detect(kind, text.as_bytes(), &mut out);
        out.iter().map(|d| text[d.secret.clone()].to_owned()).collect()
    }

    #[test]
    fn shell_lines_with_passwords() {
        let history = "ls -l\nmysql -u root -phunter2 app\n: 1700000000:0;PGPASSWORD=s3cret psql -h db\ncurl -u bob:b0bpw https://x\nsshpass -p 'two words' ssh host\necho done\n";
        assert_eq!(secrets(Kind::Shell, history), vec!["hunter2", "s3cret", "b0bpw", "'two words'"]);
        assert_eq!(secrets(Kind::Fish, "- cmd: psql postgresql://app:pw9@db/app\n  when: 1\n"), vec!["pw9"]);
        assert_eq!(secrets(Kind::Sql, "ALTER ROLE app PASSWORD 'rolepw';\nSELECT 1;\n"), vec!["rolepw"]);
        assert!(secrets(Kind::Shell, "git status\nls ***\n").is_empty());
    }

    #[test]
    fn replaced_parts_line_up() {
        assert_eq!(removed("a -p x b", "a -p *** b"), vec![5..6]);
        assert_eq!(removed("--password=x --token=y", "--password=*** --token=***"), vec![11..12, 21..22]);
        assert!(removed("same", "same").is_empty());
    }
}
