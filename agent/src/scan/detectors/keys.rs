//! Private key blocks (`-----BEGIN … PRIVATE KEY-----`), and whether each is
//! encrypted: OpenSSH's format says so in its header (cipher and KDF names
//! before any encrypted part), PEM in `Proc-Type: 4,ENCRYPTED`, PKCS #8 in
//! its label (`ENCRYPTED PRIVATE KEY`).

use base64::Engine as _;

use super::{Detection, Link};

/// A block longer than this is not a key (the largest RSA keys are ~7 KB in PEM).
const MAX_BLOCK: usize = 64 << 10;

pub(super) fn detect(content: &[u8], out: &mut Vec<Detection>) {
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(&content[from..], b"-----BEGIN ") {
        let begin = from + at;
        let label_start = begin + b"-----BEGIN ".len();
        from = label_start;
        let Some(label_len) =
            memchr::memmem::find(&content[label_start..(label_start + 64).min(content.len())], b"-----")
        else {
            continue;
        };
        let label = &content[label_start..label_start + label_len];
        if !label.ends_with(b"PRIVATE KEY") {
            continue;
        }
        let mut end_marker = b"-----END ".to_vec();
        end_marker.extend_from_slice(label);
        end_marker.extend_from_slice(b"-----");
        let body_start = label_start + label_len + 5;
        let window = &content[body_start..(body_start + MAX_BLOCK).min(content.len())];
        let Some(body_len) = memchr::memmem::find(window, &end_marker) else { continue };
        let body = &content[body_start..body_start + body_len];
        let end = body_start + body_len + end_marker.len();
        let (format, encrypted) = classify(label, body);
        out.push(Detection {
            rule: "airlock-private-key",
            description: format!(
                "{format} private key, {}",
                match encrypted {
                    Some(true) => "passphrase-protected",
                    Some(false) => "not encrypted",
                    None => "encryption unknown",
                }
            ),
            secret: begin..end,
            encrypted,
            link: Link::SshKey,
        });
        from = end;
    }
}

/// The key's format, and whether it is encrypted.
fn classify(label: &[u8], body: &[u8]) -> (&'static str, Option<bool>) {
    match label {
        b"OPENSSH PRIVATE KEY" => ("OpenSSH", openssh_encrypted(body)),
        b"ENCRYPTED PRIVATE KEY" => ("PKCS #8", Some(true)),
        b"PRIVATE KEY" => ("PKCS #8", Some(false)),
        b"RSA PRIVATE KEY" | b"EC PRIVATE KEY" | b"DSA PRIVATE KEY" => {
            let format = match label[0] {
                b'R' => "RSA (PEM)",
                b'E' => "EC (PEM)",
                _ => "DSA (PEM)",
            };
            (format, Some(memchr::memmem::find(body, b"Proc-Type: 4,ENCRYPTED").is_some()))
        }
        _ => ("other", None),
    }
}

/// OpenSSH's `openssh-key-v1` header: magic, then the cipher name and the
/// KDF name as SSH strings; `none`/`none` is a key anyone can use.
fn openssh_encrypted(body: &[u8]) -> Option<bool> {
    let text: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    // The header is in the first few dozen bytes: decode only that much.
    let prefix = &text[..text.len().min(128) / 4 * 4];
    let decoded = base64::engine::general_purpose::STANDARD.decode(prefix).ok()?;
    let rest = decoded.strip_prefix(b"openssh-key-v1\0")?;
    let (cipher, rest) = ssh_string(rest)?;
    let (kdf, _) = ssh_string(rest)?;
    Some(cipher != b"none" || kdf != b"none")
}

fn ssh_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let length = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let value = data.get(4..4 + length)?;
    Some((value, &data[4 + length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssh(cipher: &str, kdf: &str) -> String {
        let mut raw = b"openssh-key-v1\0".to_vec();
        for field in [cipher, kdf] {
            raw.extend_from_slice(&(field.len() as u32).to_be_bytes());
            raw.extend_from_slice(field.as_bytes());
        }
        raw.extend_from_slice(&[0u8; 80]);
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let wrapped: Vec<&str> = encoded.as_bytes().chunks(70).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n", wrapped.join("\n"))
    }

    fn found(text: &str) -> Vec<(String, Option<bool>, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        detect(text.as_bytes(), &mut out);
        out.into_iter().map(|d| (d.description, d.encrypted, d.secret)).collect()
    }

    #[test]
    fn openssh_keys_plain_and_encrypted() {
        let plain = openssh("none", "none");
        let hits = found(&format!("x\n{plain}"));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].1, Some(false));
        assert_eq!(hits[0].2, 2..2 + plain.trim_end().len());
        assert_eq!(found(&openssh("aes256-ctr", "bcrypt"))[0].1, Some(true));
    }

    #[test]
    fn pem_and_pkcs8_keys() {
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----";
        assert_eq!(found(rsa)[0].1, Some(true));
        let plain = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----";
        assert_eq!(found(plain)[0].0, "EC (PEM) private key, not encrypted");
        let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----";
        assert_eq!(found(pkcs8)[0].1, Some(true));
        assert!(found("-----BEGIN PUBLIC KEY-----\nMII\n-----END PUBLIC KEY-----").is_empty());
        assert!(found("-----BEGIN RSA PRIVATE KEY-----\nno end").is_empty(), "a truncated block is not a key");
        assert!(found("-----BEGIN ").is_empty() && found("-----BEGIN PRIVATE KEY-----").is_empty());
    }
}
