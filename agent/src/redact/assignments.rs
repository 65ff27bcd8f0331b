//! Values given to secret-named keys, line by line: YAML's `password: x`
//! (and the block a `key: |` opens), its flow mappings (`{password: x}`,
//! and JSON written as text), `.env`'s and INI's `API_KEY=x`. What kept
//! text bodies (a YAML manifest, a config file) hold where JSON's member
//! names would tell.

use super::{REDACTED, SECRET_NAME_PARTS};

/// `text` with the value of every `name: value` / `name = value` line whose
/// name suggests a secret replaced, and every line below such a name that
/// is deeper than it (a block scalar, `key: |`; a value or mapping on the
/// next lines).
pub fn assignments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Below a secret key: the indentation its value's lines go deeper than,
    // and whether `- ` items at that same indentation are its list (after
    // `key:` alone, as Go's YAML writes a list).
    let mut below: Option<(usize, bool)> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start().len();
        if let Some((depth, list)) = below {
            let item = list && indent == depth && body.trim_start().starts_with('-');
            if body.trim().is_empty() || indent > depth || item {
                out.push_str(&line[..indent.min(body.len())]);
                if !body.trim().is_empty() {
                    out.push_str(REDACTED);
                }
                out.push_str(&line[body.len()..]);
                continue;
            }
            below = None;
        }
        match secret_value(body) {
            // `password:` with its value on the lines below.
            Some(value_at) if value_at == body.len() => {
                out.push_str(line);
                below = Some((indent, true));
            }
            Some(value_at) => {
                out.push_str(&body[..value_at]);
                out.push_str(REDACTED);
                out.push_str(&line[body.len()..]);
                // A block scalar, or a quoted or plain value going on below.
                below = Some((indent, false));
            }
            None if body.contains('{') => {
                out.push_str(&flow_pairs(body));
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// `line` with the value of every secret-named pair in a flow mapping
/// (`{password: x, user: y}`, `{"token":"x"}`) replaced: a name just after
/// `{` or `,`, quoted or not, then `:`; its value runs to the `,` or `}`
/// that ends it (or its closing quote). More is redacted than YAML would
/// read as such a pair (`{a:b}`), never less.
fn flow_pairs(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find(['{', ',']) {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let Some(colon) = rest.find(':') else { continue };
        let name = rest[..colon].trim().trim_matches(['"', '\'']).to_ascii_lowercase();
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-. ".contains(&b));
        if !plain || !SECRET_NAME_PARTS.iter().any(|part| name.contains(part)) {
            continue;
        }
        let after = &rest[colon + 1..];
        let value = after.trim_start();
        let end = match value.as_bytes().first() {
            Some(&quote @ (b'"' | b'\'')) => quoted_end(value, quote),
            _ => value.find([',', '}']).unwrap_or(value.len()),
        };
        out.push_str(&rest[..colon + 1 + after.len() - value.len()]);
        out.push_str(REDACTED);
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Where the string `value` opens with `quote` ends (past its closing
/// quote; the line's end when it has none). A `\` escapes within `"`.
fn quoted_end(value: &str, quote: u8) -> usize {
    let bytes = value.as_bytes();
    let mut at = 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if quote == b'"' => at += 2,
            byte if byte == quote => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// Where the value of a secret-named `name: value` / `name=value` line
/// begins (the line's end: YAML's value is on the lines below); `None`
/// when the line is none or its name no secret's.
fn secret_value(line: &str) -> Option<usize> {
    let start = line.len() - line.trim_start().len();
    let rest = &line[start..];
    // A YAML list item (`- password: x`) or a shell's `export NAME=x`.
    let skipped = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("export ")).map_or(0, |r| rest.len() - r.len());
    let name_start = start + skipped;
    let sep = line[name_start..].find([':', '='])? + name_start;
    let name = line[name_start..sep].trim().trim_matches(['"', '\'']);
    let plain_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-. ".contains(&b));
    let lower = name.to_ascii_lowercase();
    if !plain_name || !SECRET_NAME_PARTS.iter().any(|part| lower.contains(part)) {
        return None;
    }
    // YAML's `:` must be followed by a space (or end the line): `a:b` is a scalar.
    let after = &line[sep + 1..];
    if line.as_bytes()[sep] == b':' && !after.is_empty() && !after.starts_with([' ', '\t']) {
        return None;
    }
    let value = after.trim_start();
    if value.starts_with('#') || (value.is_empty() && line.as_bytes()[sep] == b'=') {
        return None;
    }
    Some(line.len() - value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_of_secret_keys_are_redacted_with_their_blocks() {
        let yaml = "apiVersion: v1\nkind: Secret\nstringData:\n  password: hunter2\n  \"api_key\": 'k-123'\n  \
                    user: alice\n  tls_key: |\n    -----BEGIN KEY-----\n    abc\n\n    def\n  note: ok\n\
                    users:\n- name: bob\n  token: t-456\n- auth_token: t-789  # comment\n";
        let out = assignments(yaml);
        for secret in ["hunter2", "k-123", "BEGIN KEY", "abc", "def", "t-456", "t-789"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        for kept in ["kind: Secret", "user: alice", "note: ok", "- name: bob", "stringData:\n"] {
            assert!(out.contains(kept), "{kept} lost from {out}");
        }
        assert!(out.contains("  password: ***\n  \"api_key\": ***\n"), "{out}");
        assert!(out.contains("  tls_key: ***\n    ***\n    ***\n\n    ***\n  note: ok"), "{out}");
    }

    #[test]
    fn values_on_the_lines_below_a_secret_key_are_redacted() {
        let yaml = "password:\n  hunter2\ncredentials:\n  user: a\n  pin: 1234\nname: x\n";
        assert_eq!(assignments(yaml), "password:\n  ***\ncredentials:\n  ***\n  ***\nname: x\n");
        let more = "tokens:\n- t1\n- t2\nkey: \"abc\n  def\"\napi_key: !!binary |\n  QUJD\nname: y\n";
        assert_eq!(assignments(more), "tokens:\n***\n***\nkey: ***\n  ***\napi_key: ***\n  ***\nname: y\n");
    }

    #[test]
    fn env_and_ini_assignments_of_secret_names_are_redacted() {
        let text = "export GITHUB_TOKEN=ghp_x\r\nDB_PASSWORD = s3cret\nHOST=db\nurl: https://x/a:b\n[auth]\n";
        assert_eq!(
            assignments(text),
            "export GITHUB_TOKEN=***\r\nDB_PASSWORD = ***\nHOST=db\nurl: https://x/a:b\n[auth]\n"
        );
    }

    #[test]
    fn secret_values_in_flow_mappings_and_json_text_are_redacted() {
        let text = "stringData: {password: hunter2, user: alice}\n- {token: \"t-1, x\", name: a}\n\
                    {\"api_key\":\"k-2\\\"y\",\"id\":3} {'secret': 's-3'}\noidc: {client_secret: s-4}\n";
        let out = assignments(text);
        assert_eq!(
            out,
            "stringData: {password: ***, user: alice}\n- {token: ***, name: a}\n\
             {\"api_key\":***,\"id\":3} {'secret': ***}\noidc: {client_secret: ***}\n"
        );
        for kept in ["{a: b, c: d}", "x: {url: \"https://h/a,b\"}", "{", "text, with: commas"] {
            assert_eq!(assignments(kept), kept, "{kept}");
        }
    }

    #[test]
    fn lines_that_only_look_like_assignments_are_kept() {
        for text in ["a password:is not yaml", "key:value", "pass:", "token = # none", "token=\nnext"] {
            assert_eq!(assignments(text), text, "{text}");
        }
    }
}
