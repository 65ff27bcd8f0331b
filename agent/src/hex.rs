//! Lowercase hexadecimal: how Airlock spells digests, signatures, tokens
//! and random ids.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The digits of every byte value: one load per byte where masking tokens
/// spell thousands of digests per result.
static PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

/// The two digits of `byte`.
#[inline]
pub fn pair(byte: u8) -> [u8; 2] {
    PAIRS[usize::from(byte)]
}

/// `bytes` in hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    encode_into(bytes, &mut text);
    text
}

/// Appends `bytes` in hex to `text`.
pub fn encode_into(bytes: &[u8], text: &mut String) {
    text.reserve(bytes.len() * 2);
    for &byte in bytes {
        let [high, low] = pair(byte);
        text.push(char::from(high));
        text.push(char::from(low));
    }
}

/// The bytes hex `text` spells (surrounding whitespace ignored), either case;
/// `None` unless it is whole pairs of hex digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    // `from_str_radix` alone would take a sign: `+f` is not hex.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(pair(0x5c), *b"5c");
        assert!((0..=255u8).all(|b| pair(b) == *format!("{b:02x}").as_bytes()));
        assert_eq!(decode(" 00ABff\n"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
        assert_eq!(decode("+1"), None, "a sign is not a digit");
    }
}
