//! Percent-escapes (`%XX`, RFC 3986 §2.1) read back, in the two ways
//! requests are read here: leniently where text is shown or matched (a
//! path, a record's query: an escape that is none stays as written), and
//! strictly as Go's `url.QueryUnescape` reads a query (the API server's
//! and the kubelet's reading: `+` a space, a bad escape voids the value).

/// `text` with its escapes decoded; an escape that is none stays as it is,
/// bytes that are not UTF-8 are replaced.
pub fn decoded(text: &str) -> String {
    let bytes = unescape(text, Escapes::Lenient).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A form's or query's name or value as shown or compared: [`decoded`],
/// with `+` a space (a bad escape still stays as it is).
pub fn form_decoded(text: &str) -> String {
    let bytes = unescape(text, Escapes::LenientForm).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Go's `url.QueryUnescape`: `+` is a space; `None` for a `%` not followed
/// by two hex digits.
pub fn query_unescaped(text: &str) -> Option<Vec<u8>> {
    unescape(text, Escapes::Query)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Escapes {
    /// Paths and shown text: a bad escape kept, `+` a plus.
    Lenient,
    /// Form and query text shown or compared: a bad escape kept, `+` a space.
    LenientForm,
    /// A query as Go reads it: a bad escape fails, `+` a space.
    Query,
}

fn unescape(text: &str, escapes: Escapes) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        let hex = |i: usize| bytes.get(i).and_then(|b| char::from(*b).to_digit(16));
        match (byte, escapes) {
            (b'%', _) => match (hex(at + 1), hex(at + 2)) {
                (Some(high), Some(low)) => {
                    out.push(u8::try_from(high * 16 + low).ok()?);
                    at += 3;
                    continue;
                }
                _ if escapes == Escapes::Query => return None,
                _ => out.push(b'%'),
            },
            (b'+', Escapes::Query | Escapes::LenientForm) => out.push(b' '),
            (byte, _) => out.push(byte),
        }
        at += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_leniently() {
        assert_eq!(decoded("/%66iles/a%2Fb+c"), "/files/a/b+c");
        assert_eq!(decoded("/100%/x%4"), "/100%/x%4");
        assert_eq!(decoded("%ff%C3%A9"), "\u{fffd}é");
        assert_eq!(form_decoded("a+b%2B100%"), "a b+100%");
    }

    #[test]
    fn queries_decode_as_go_does() {
        assert_eq!(query_unescaped("wat%63h+1").unwrap(), b"watch 1");
        assert_eq!(query_unescaped("%ff").unwrap(), [0xff]);
        assert!(query_unescaped("100%").is_none() && query_unescaped("%g1").is_none());
    }
}
