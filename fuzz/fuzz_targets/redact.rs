//! Secrets through the redactors, judged by PostgreSQL's own parser: for
//! any text the parser reads (either way backslashes may be read), every
//! `PASSWORD` option it finds in the redacted text holds `***`, and none of
//! the original passwords is left in it. The first byte picks raw text or
//! a password written in one of PostgreSQL's literal forms; the command
//! line, shell, URI, URL query, request target, error message and
//! `key: value` redactors must not panic on anything, and a secret flag's,
//! query parameter's or YAML key's plain value never survives them.
#![no_main]

use airlock::{
    guardrails::parser::{self, Lexing, Tree, Value},
    redact,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(input) = std::str::from_utf8(rest) else { return };
    let _ = redact::command_line(input.split(' ').map(str::to_owned).collect());
    let _ = redact::uri_passwords(input);
    let _ = redact::url_query_secrets(input);
    // A secret query value never survives, whatever surrounds it.
    if !input.contains(['&', '#', '\'', '"', '?', '=']) && !input.contains(char::is_whitespace) && input.len() >= 4 {
        let url = format!("https://api/x?page=1&access_token={input}&b=2");
        assert_eq!(redact::url_query_secrets(&url), "https://api/x?page=1&access_token=***&b=2", "{input:?}");
    }
    let _ = redact::sql_error(input);
    let _ = redact::request_target(input);
    // A request's secret query value never survives, however the rest of
    // the query is written.
    if !input.contains(['&', ';', '#', '%', '+', '=']) && input.len() >= 4 {
        let target = format!("/x?{input}&api_key={input}z;b=2");
        assert!(!redact::request_target(&target).contains(&format!("{input}z")), "{input:?}");
    }
    let _ = redact::keyword_password(input);
    let _ = redact::assignments(input);
    // A secret key's value never survives a YAML document, whatever lines surround it.
    if !input.contains(['\n', '\r', '#']) && input.trim().len() >= 4 {
        let yaml = format!("{input}\ndata:\n  api_token: {input}z\n{input}\n");
        assert!(!redact::assignments(&yaml).contains(&format!("{}z", input.trim())), "{input:?}");
    }
    // Nor a flow mapping's, whatever stands before it on the line.
    if !input.contains(['\n', '\r', '#', ',', '{', '}', '"', '\'']) && input.trim().len() >= 4 {
        let flow = format!("{input} {{a: 1, api_token: {input}z}}\n");
        assert!(!redact::assignments(&flow).contains(&format!("{}z", input.trim())), "{input:?}");
    }
    // A secret flag's value never survives a shell command line.
    if !input.contains(['\'', '"', '\\', '\n', ';', '&', '|', '(', ')', '#', ' ', '\t', '=']) && input.len() >= 4 {
        let redacted = redact::shell(&format!("tool --password {input} -v"));
        assert_eq!(redacted, "tool --password *** -v", "{input:?}");
    }
    let text = match mode % 8 {
        0 | 1 => input.to_owned(),
        form => {
            let (secret, tail) = input.split_once('\u{1}').unwrap_or((input, ""));
            format!("ALTER ROLE a {} {}", literal(form, secret), tail)
        }
    };
    if text.contains('\0') {
        return;
    }
    let redacted = redact::sql(&text);
    for lexing in [Lexing { backslash_escapes: false }, Lexing { backslash_escapes: true }] {
        let Some(before) = passwords(&text, lexing) else { continue };
        match passwords(&redacted, lexing) {
            Some(after) => assert!(after.iter().all(|p| p == "***"), "{text:?} → {redacted:?}: {after:?}"),
            None => {
                for secret in before.iter().filter(|p| p.len() >= 4) {
                    assert!(!redacted.contains(secret.as_str()), "{text:?} → {redacted:?} keeps {secret:?}");
                }
            }
        }
    }
});

/// `secret` as a `PASSWORD` literal of the form `form` picks.
fn literal(form: u8, secret: &str) -> String {
    match form {
        2 => format!("PASSWORD '{}'", secret.replace('\'', "''")),
        3 => format!("PASSWORD E'{}'", secret.replace('\\', "\\\\").replace('\'', "\\'")),
        4 => {
            let escaped: String = secret.chars().map(|c| format!("\\+{:06X}", u32::from(c))).collect();
            format!("PASSWORD U&'{escaped}'")
        }
        5 => format!("PASSWORD U&'{}' UESCAPE '!'", secret.replace('\'', "''").replace('!', "!!")),
        6 => format!("PASSWORD $q${}$q$", secret.replace("$q$", "")),
        _ => format!("ENCRYPTED PASSWORD '{}'\n'{}'", secret.replace('\'', "''"), secret.replace('\'', "''")),
    }
}

/// The values of every `password` option PostgreSQL's parser finds in
/// `text`, or `None` when it does not parse.
fn passwords(text: &str, lexing: Lexing) -> Option<Vec<String>> {
    let parsed = parser::parse(text, lexing).ok()?;
    let tree: Tree<'_> = parsed.tree().ok()?;
    let mut found = Vec::new();
    for at in 0..tree.items().len() {
        let Some(("DefElem", fields)) = tree.node(at) else { continue };
        if tree.string(fields, "defname").as_deref() != Some("password") {
            continue;
        }
        let Some(arg) = tree.member(fields, "arg") else { continue };
        if let Some(("String", string)) = tree.node(arg)
            && let Some(member) = tree.member(string, "sval")
            && let Value::Str(_) = tree.items()[member].value
        {
            found.push(tree.string(string, "sval").unwrap_or_default().into_owned());
        }
    }
    Some(found)
}
