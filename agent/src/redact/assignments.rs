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
            None if body.contains(['{', ',']) => {
                out.push_str(&flow_pairs(body));
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// `line` with the value of every secret-named pair in a flow mapping
/// (`{password: x, user: y}`, `{"token":"x"}`, a mapping's later lines)
/// replaced: a name just after `{` or `,`, quoted or not, then `:`; its
/// value runs to the `,` or `}` that ends it, outside quotes and
/// brackets. More is redacted than YAML would read as such a pair
/// (`{a:b}`), never less. Linear: a name is looked for in at most
/// [`MAX_NAME`] bytes.
fn flow_pairs(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let (mut copied, mut at) = (0, 0);
    while at < bytes.len() {
        let opens = matches!(bytes[at], b'{' | b',');
        at += 1;
        if !opens {
            continue;
        }
        let Some((name, value_start)) = pair_name(line, at) else { continue };
        if !SECRET_NAME_PARTS.iter().any(|part| name.contains(part)) {
            continue;
        }
        let value_end = flow_value_end(bytes, value_start);
        out.push_str(&line[copied..value_start]);
        out.push_str(REDACTED);
        (copied, at) = (value_end, value_end);
    }
    out.push_str(&line[copied..]);
    out
}

/// The longest member name looked for.
const MAX_NAME: usize = 64;

/// The name (lower case) of a pair starting at `from` (spaces, the name,
/// quoted or not, spaces, `:`), and where its value starts.
fn pair_name(line: &str, from: usize) -> Option<(String, usize)> {
    let bytes = line.as_bytes();
    let start = from + bytes[from..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    let (name, after) = match bytes.get(start) {
        Some(&quote @ (b'"' | b'\'')) => {
            let len = bytes[start + 1..].iter().take(MAX_NAME).position(|&b| b == quote)?;
            (&line[start + 1..start + 1 + len], start + len + 2)
        }
        _ => {
            let name_byte = |b: &u8| b.is_ascii_alphanumeric() || b"_-. ".contains(b);
            let len = bytes[start..].iter().take(MAX_NAME).take_while(|b| name_byte(b)).count();
            (&line[start..start + len], start + len)
        }
    };
    let colon = after + bytes.get(after..)?.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    if bytes.get(colon) != Some(&b':') || name.trim().is_empty() {
        return None;
    }
    let value = colon + 1 + bytes[colon + 1..].iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    Some((name.trim().to_ascii_lowercase(), value))
}

/// Where a flow value starting at `start` ends: at the first `,` or `}`
/// outside its quotes (`\` escapes in `"`, `''` in `'`) and brackets;
/// the line's end when nothing ends it.
fn flow_value_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut at = start;
    while at < bytes.len() {
        match bytes[at] {
            quote @ (b'"' | b'\'') => at = quoted_end(bytes, at, quote),
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b',' if depth == 0 => return at,
            // A plain scalar may not hold `]`, but one that does is cut
            // no shorter for it.
            b']' if depth == 0 => at += 1,
            b'}' | b']' => {
                depth -= 1;
                at += 1;
            }
            _ => at += 1,
        }
    }
    bytes.len()
}

/// Past the closing quote of the string opening at `open`; the line's end
/// when it has none.
fn quoted_end(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut at = open + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if quote == b'"' => at += 2,
            b'\'' if quote == b'\'' && bytes.get(at + 1) == Some(&b'\'') => at += 2,
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
        for kept in ["{a: b, c: d}", "x: {url: \"https://h/a,b\"}", "{", "text, with: commas", "{,,,:"] {
            assert_eq!(assignments(kept), kept, "{kept}");
        }
        // Values that are lists or mappings, YAML's '' escape, a mapping's
        // later lines.
        let more = "{tokens: [t1, t2], n: 1}\n{credentials: {user: a, pin: 1234}}\n{password: 'it''s, h2'}\n \
                    port: 1, password: x}\n{ \"token\" : \"x\" }\n[{secret: s}]\n{a: {secret: q}}\n";
        assert_eq!(
            assignments(more),
            "{tokens: ***, n: 1}\n{credentials: ***}\n{password: ***}\n port: 1, password: ***}\n\
             { \"token\" : ***}\n[{secret: ***}]\n{a: {secret: ***}}\n"
        );
        // A value no YAML would write is still cut no shorter than it runs
        // (found by fuzzing).
        assert_eq!(assignments("{a: 1, api_token: ]&]x}"), "{a: 1, api_token: ***}");
        assert_eq!(assignments("{password: [x]tail, n: 1}"), "{password: ***, n: 1}");
        // A long line of openers is read once, not once per opener.
        let long = format!("{}:", "{,".repeat(200_000));
        let started = std::time::Instant::now();
        assert_eq!(assignments(&long), long);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn lines_that_only_look_like_assignments_are_kept() {
        for text in ["a password:is not yaml", "key:value", "pass:", "token = # none", "token=\nnext"] {
            assert_eq!(assignments(text), text, "{text}");
        }
    }
}
