//! Kubeconfigs with credentials in them: a bearer `token:`, an embedded
//! client key (`client-key-data:`) or a basic-auth `password:`. Whoever
//! reads the file is that user to every cluster it names (`server:`).

use super::{Detection, Link, is_reference, lines, unquoted};

/// What a kubeconfig credential field is.
const FIELDS: [(&[u8], &str, &str); 3] = [
    (b"token:", "airlock-kubeconfig-token", "bearer token in a kubeconfig"),
    (b"client-key-data:", "airlock-kubeconfig-client-key", "client private key embedded in a kubeconfig"),
    (b"password:", "airlock-kubeconfig-password", "basic-auth password in a kubeconfig"),
];

pub(super) fn applies(path: &str, name: &str, content: &[u8]) -> bool {
    path.contains("/.kube/")
        || name.ends_with("kubeconfig")
        || (memchr::memmem::find(content, b"kind: Config").is_some()
            && memchr::memmem::find(content, b"clusters:").is_some())
}

pub(super) fn detect(content: &[u8], out: &mut Vec<Detection>) {
    let servers: Vec<String> = lines(content)
        .filter_map(|(_, line)| field_value(line, b"server:").map(|v| String::from_utf8_lossy(&line[v]).into_owned()))
        .collect();
    for (start, line) in lines(content) {
        for (field, rule, description) in FIELDS {
            let Some(value) = field_value(line, field) else { continue };
            if is_reference(&line[value.clone()]) {
                continue;
            }
            out.push(Detection {
                rule,
                description: description.into(),
                secret: start + value.start..start + value.end,
                encrypted: None,
                link: Link::Servers(servers.clone()),
            });
        }
    }
}

/// The value of a YAML `key: value` line (the key may follow `- `).
fn field_value(line: &[u8], key: &[u8]) -> Option<std::ops::Range<usize>> {
    let indent = line.iter().position(|&b| b != b' ' && b != b'\t')?;
    let mut at = indent;
    if line[at..].starts_with(b"- ") {
        at += 2;
    }
    if !line[at..].starts_with(key) {
        return None;
    }
    unquoted(line, at + key.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keys_and_their_servers() {
        let text = b"apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://10.20.0.7:6443\n  name: prod\nusers:\n- name: ci\n  user:\n    token: \"eyJhbGciOi.abc.def\"\n- name: admin\n  user:\n    client-key-data: LS0tLS1CRUdJTi\n    client-certificate-data: LS0t\n- name: empty\n  user:\n    token: \"\"\n";
        assert!(applies("/tmp/x.yaml", "x.yaml", text));
        let mut out = Vec::new();
        detect(text, &mut out);
        let found: Vec<(&str, &[u8])> = out.iter().map(|d| (d.rule, &text[d.secret.clone()])).collect();
        assert_eq!(
            found,
            vec![
                ("airlock-kubeconfig-token", &b"eyJhbGciOi.abc.def"[..]),
                ("airlock-kubeconfig-client-key", b"LS0tLS1CRUdJTi")
            ]
        );
        assert_eq!(out[0].link, Link::Servers(vec!["https://10.20.0.7:6443".into()]));
    }
}
