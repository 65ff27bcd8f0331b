//! Shannon entropy of a candidate secret, computed the way gitleaks
//! computes it, so that the shipped rules' `entropy` thresholds mean what
//! their authors measured: symbol counts per character (Unicode scalar),
//! frequencies over the length in bytes, logarithm base 2.

/// Bits per byte of `secret` as gitleaks reckons them (0 for empty input).
/// Bytes that are not UTF-8 count as U+FFFD, as Go's range loop reads them.
pub fn shannon(secret: &[u8]) -> f64 {
    if secret.is_empty() {
        return 0.0;
    }
    let inverse_length = 1.0 / secret.len() as f64;
    let entropy_of = |counts: &mut dyn Iterator<Item = usize>| -> f64 {
        counts.filter(|&count| count > 0).fold(0.0, |entropy, count| {
            let frequency = count as f64 * inverse_length;
            entropy - frequency * frequency.log2()
        })
    };
    if secret.is_ascii() {
        let mut counts = [0usize; 128];
        for &byte in secret {
            counts[usize::from(byte)] += 1;
        }
        return entropy_of(&mut counts.into_iter());
    }
    let mut counts = std::collections::HashMap::<char, usize>::new();
    for c in String::from_utf8_lossy(secret).chars() {
        *counts.entry(c).or_default() += 1;
    }
    entropy_of(&mut counts.into_values())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_gitleaks_reference_values() {
        assert_eq!(shannon(b""), 0.0);
        assert_eq!(shannon(b"aaaa"), 0.0);
        assert!((shannon(b"ab") - 1.0).abs() < 1e-12);
        assert!((shannon(b"abcd") - 2.0).abs() < 1e-12);
        // Sixteen distinct symbols once each: four bits.
        assert!((shannon(b"0123456789abcdef") - 4.0).abs() < 1e-12);
        let token = b"ghp_R8d2mN5qT1vX7zK3pL9wY4bC6fH0jA2sE8uI";
        assert!(shannon(token) > 4.5, "{}", shannon(token));
    }

    #[test]
    fn non_ascii_counts_characters_over_bytes() {
        // Two characters, four bytes: each frequency is 2/4, as in Go.
        assert!((shannon("éé".as_bytes()) - 0.5).abs() < 1e-12);
        assert!(shannon(&[0xff, 0xfe, b'a']) > 0.0);
    }
}
