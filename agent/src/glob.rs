//! Shell-style wildcards in policies: `*` matches any run of characters.
//! Matching backtracks only to the last `*`, so it is linear-ish and never
//! recurses, whatever a policy writes.

/// Exact glob: `*` is the only wildcard (command lines, table names).
pub fn matches(pattern: &str, text: &str) -> bool {
    glob(pattern.as_bytes(), text.as_bytes(), |p, t| p == t)
}

/// Name glob: ASCII case-insensitive, `?` also matches any one character
/// (column names and JSON keys).
pub fn matches_name(pattern: &str, text: &str) -> bool {
    glob(pattern.as_bytes(), text.as_bytes(), |p, t| p == b'?' || p.eq_ignore_ascii_case(&t))
}

fn glob(pattern: &[u8], text: &[u8], same: impl Fn(u8, u8) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if same(c, text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_globs() {
        assert!(matches("*", ""));
        assert!(matches("audit.*", "audit.events"));
        assert!(matches("card_*_num*", "card_x_number"));
        assert!(matches("rm -rf *", "rm -rf /var/lib"));
        assert!(!matches("audit.*", "public.audit"));
        assert!(!matches("ls", "ls -l"));
        assert!(!matches("a?c", "abc"), "? is literal in exact globs");
        assert!(!matches("Audit.*", "audit.x"));
    }

    #[test]
    fn name_globs() {
        assert!(matches_name("*ssn*", "customer_SSN_hash") && matches_name("card_*", "card_"));
        assert!(matches_name("a?c", "abc") && !matches_name("a?c", "ac") && !matches_name("*x", "xy"));
        assert!(matches_name("public.*.email", "public.staff.email") && matches_name("**a*", "ba"));
    }
}
