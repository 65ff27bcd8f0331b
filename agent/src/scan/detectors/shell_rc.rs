//! `PGPASSWORD` set in shell start-up files (`.bashrc`, `.profile`, fish's
//! `config.fish`…): every shell the person opens carries the password. A
//! `PGHOST`/`PGPORT` in the same file says which server it is for.

use super::{Detection, Link, is_reference, lines, unquoted};

const RC_FILES: [&str; 14] = [
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_aliases",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".kshrc",
    ".mkshrc",
    ".cshrc",
    ".tcshrc",
    ".envrc",
];

pub(super) fn applies(path: &str, name: &str) -> bool {
    RC_FILES.contains(&name)
        || (name == "config.fish" && path.ends_with("/fish/config.fish"))
        || path.starts_with("/etc/profile.d/")
        || matches!(path, "/etc/profile" | "/etc/bash.bashrc" | "/etc/environment" | "/etc/zsh/zshenv")
}

pub(super) fn detect(content: &[u8], out: &mut Vec<Detection>) {
    let setting = |name: &[u8]| {
        lines(content)
            .find_map(|(_, line)| value_of(line, name).map(|v| String::from_utf8_lossy(&line[v]).into_owned()))
    };
    let host = setting(b"PGHOST");
    let port = setting(b"PGPORT").and_then(|p| p.parse().ok());
    for (start, line) in lines(content) {
        let Some(value) = value_of(line, b"PGPASSWORD") else { continue };
        if is_reference(&line[value.clone()]) {
            continue;
        }
        out.push(Detection {
            rule: "airlock-pgpassword-rc",
            description: "PGPASSWORD set in a shell start-up file".into(),
            secret: start + value.start..start + value.end,
            encrypted: None,
            link: host.clone().map_or(Link::None, |host| Link::Postgres { host, port }),
        });
    }
}

/// `[export ]NAME=value`, `setenv NAME value`, `set -x NAME value` (fish).
fn value_of(line: &[u8], name: &[u8]) -> Option<std::ops::Range<usize>> {
    let trimmed = line.iter().position(|b| !b.is_ascii_whitespace())?;
    let mut rest = &line[trimmed..];
    let mut at = trimmed;
    for prefix in [&b"export "[..], b"declare -x ", b"typeset -x ", b"setenv ", b"set -gx ", b"set -x ", b"set -Ux "] {
        if let Some(after) = rest.strip_prefix(prefix) {
            at += prefix.len();
            rest = after;
            break;
        }
    }
    let after_name = rest.strip_prefix(name)?;
    let separator = match after_name.first() {
        Some(b'=') => 1,
        Some(b' ' | b'\t') if line[trimmed..].starts_with(b"set") => 1,
        _ => return None,
    };
    let from = at + name.len() + separator;
    unquoted(line, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_in_each_shell_syntax() {
        let text = b"export PGHOST=10.20.0.5\nexport PGPASSWORD='hunter2 x'\nPGPASSWORD=$(pass db)\nsetenv PGPASSWORD tcsh1\nset -gx PGPASSWORD fish1\n";
        let mut out = Vec::new();
        detect(text, &mut out);
        let secrets: Vec<&[u8]> = out.iter().map(|d| &text[d.secret.clone()]).collect();
        assert_eq!(secrets, vec![&b"hunter2 x"[..], b"tcsh1", b"fish1"]);
        assert_eq!(out[0].link, Link::Postgres { host: "10.20.0.5".into(), port: None });
        assert!(applies("/home/a/.bashrc", ".bashrc") && applies("/home/a/.config/fish/config.fish", "config.fish"));
        assert!(!applies("/home/a/notes", "notes"));
    }
}
