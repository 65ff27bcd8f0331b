//! A request's query read as Go's `url.ParseQuery` reads it (the API
//! server's and the kubelet's reading, and near enough every framework's):
//! pairs split on `&`, `+` a space, `%XX` a byte; a pair holding `;` or an
//! escape that does not decode is skipped. Rules and Kubernetes readings
//! take what a server would act on from here, never from the raw text, so
//! `wat%63h=1` is `watch=1`.

/// The values of every `name` parameter in `query`, in order, as bytes (a
/// value need not be UTF-8).
pub fn values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = Vec<u8>> + 'q {
    query.unwrap_or_default().split('&').filter_map(move |pair| {
        if pair.is_empty() || pair.contains(';') {
            return None;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (crate::percent::query_unescaped(key)?, crate::percent::query_unescaped(value)?);
        (key == name.as_bytes()).then_some(value)
    })
}

/// A boolean parameter as the API server (and the kubelet) reads it: its
/// first value, true unless it is `0` or `false` in any case (`watch`,
/// `watch=yes` and `wat%63h=T` are all true); `None` if absent.
pub fn flag(query: Option<&str>, name: &str) -> Option<bool> {
    let value = values(query, name).next()?;
    Some(!(value == b"0" || value.eq_ignore_ascii_case(b"false")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_split_and_decoded_as_go_does() {
        let all = |query: &str, name: &str| values(Some(query), name).collect::<Vec<_>>();
        assert_eq!(all("_method=DELETE&a=1&_m%65thod=put", "_method"), [b"DELETE".to_vec(), b"put".to_vec()]);
        assert_eq!(all("a=x+y%2Bz", "a"), [b"x y+z".to_vec()]);
        assert_eq!(all("a;b=1&a=%zz&a", "a"), [Vec::<u8>::new()], "skipped: a `;` pair, a bad escape");
        assert!(values(None, "a").next().is_none());
    }

    #[test]
    fn flags_are_true_unless_zero_or_false() {
        for (query, expected) in [
            ("watch", Some(true)),
            ("watch=", Some(true)),
            ("watch=yes", Some(true)),
            ("wat%63h=T", Some(true)),
            ("watch=0", Some(false)),
            ("watch=FALSE&watch=1", Some(false)),
            ("x;watch=1", None),
            ("watchx=1", None),
        ] {
            assert_eq!(flag(Some(query), "watch"), expected, "{query}");
        }
    }
}
