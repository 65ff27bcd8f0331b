//! An HTTP request's target (`/path?query`) as records and approvers see
//! it: the values of secret-named query parameters removed, and a command
//! a query carries (Kubernetes exec's `command=…`, one per argument; the
//! kubelet's `cmd=…`) redacted as a command line is. Names are compared
//! decoded, as servers read them: `%74oken=` is `token=`.

use super::{REDACTED, SECRET_NAME_PARTS, command_line};
use crate::percent::form_decoded as decoded;

/// Parameters whose values are a command's arguments, one per value.
const ARGUMENTS: [&str; 1] = ["command"];
/// Parameters whose value is a whole command line.
const COMMAND_LINES: [&str; 1] = ["cmd"];

/// `target` with its query's secrets removed (see the module).
pub fn request_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else { return target.to_owned() };
    // `&` and `;` both separate parameters for some servers; each pair
    // keeps the separator that ends it, so the query is rebuilt as it was.
    let pairs: Vec<(&str, &str)> = query
        .split_inclusive(['&', ';'])
        .map(|pair| match pair.strip_suffix(['&', ';']) {
            Some(bare) => (bare, &pair[bare.len()..]),
            None => (pair, ""),
        })
        .collect();
    let argv: Vec<String> = pairs
        .iter()
        .map(|(pair, _)| split(pair))
        .filter(|(name, _)| ARGUMENTS.contains(&name.as_str()))
        .map(|(_, value)| decoded(value.unwrap_or_default()))
        .collect();
    let mut arguments = command_line(argv).into_iter();
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (pair, separator) in &pairs {
        let (name, value) = split(pair);
        match value {
            Some(value) => {
                let raw_name = &pair[..pair.len() - value.len() - 1];
                let value = if SECRET_NAME_PARTS.iter().any(|part| name.contains(part)) {
                    REDACTED.to_owned()
                } else if ARGUMENTS.contains(&name.as_str()) {
                    encoded(&arguments.next().unwrap_or_default())
                } else if COMMAND_LINES.contains(&name.as_str()) {
                    encoded(&command_line(vec![decoded(value)]).concat())
                } else {
                    value.to_owned()
                };
                out.push_str(raw_name);
                out.push('=');
                out.push_str(&value);
            }
            None => out.push_str(pair),
        }
        out.push_str(separator);
    }
    out
}

/// A parameter's name, decoded and in lower case, and its value as written
/// (`None`: the parameter has no `=`).
fn split(pair: &str) -> (String, Option<&str>) {
    let (name, value) = pair.split_once('=').map_or((pair, None), |(n, v)| (n, Some(v)));
    (decoded(name).to_ascii_lowercase(), value)
}

/// `text` as a query value: what is not unreserved (or `*`) escaped.
fn encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'*') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_named_parameters_lose_their_values_however_written() {
        assert_eq!(request_target("/v1/x"), "/v1/x");
        assert_eq!(request_target("/x?access_token=abc&page=2"), "/x?access_token=***&page=2");
        assert_eq!(request_target("/a'b?token=s1&%74oken=s2;password=s3"), "/a'b?token=***&%74oken=***;password=***");
        assert_eq!(request_target("/x?flag&api_key&q="), "/x?flag&api_key&q=");
        assert_eq!(request_target("/x?a=1&&b=2"), "/x?a=1&&b=2");
    }

    #[test]
    fn a_command_in_the_query_is_redacted_as_a_command_line() {
        let exec = "/api/v1/namespaces/ns/pods/p/exec?command=mysql&command=-phunter2&stdout=true";
        assert_eq!(request_target(exec), "/api/v1/namespaces/ns/pods/p/exec?command=mysql&command=-p***&stdout=true");
        let env = "/exec?command=env&command=PGPASSWORD%3Dhunter2&command=psql";
        assert_eq!(request_target(env), "/exec?command=env&command=PGPASSWORD%3D***&command=psql");
        let uri = "/exec?command=psql&command=postgresql%3A%2F%2Fapp%3Ahunter2%40db%2Fx";
        assert!(!request_target(uri).contains("hunter2"), "{}", request_target(uri));
        let run = "/api/v1/nodes/n/proxy/run/ns/p/c?cmd=mysql+-u+root+--password%3Dhunter2";
        assert!(!request_target(run).contains("hunter2"), "{}", request_target(run));
    }
}
