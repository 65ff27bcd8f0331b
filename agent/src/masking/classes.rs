//! Where each class of byte a detector cares about sits in a short value,
//! as one bit mask per class, taken in one pass before any scanner runs.
//!
//! Most values in result rows are short (names, addresses, ids, notes): up
//! to 64 bytes, one bit per byte in a `u64`. With the masks, the questions
//! the detectors ask before scanning ("is there a run of 13 digits and
//! separators?", "two capitals then two digits?", "20 key characters in a
//! row?") are a few shifts and ANDs instead of walks over the bytes, and a
//! value with nothing sensitive in it (the common case) costs little more
//! than this pass. On x86-64 the pass uses SSE2 (every x86-64 CPU has it),
//! sixteen bytes per instruction; elsewhere eight bytes per word
//! ([`swar`](super::swar)).

/// Longest value described: one bit per byte of a `u64`.
pub(super) const MAX_LEN: usize = 64;
/// Shortest value described: shorter ones get their counts from a plain
/// byte loop sooner, and the shapes the masks rule out need at least this
/// much (13 digits for a card, 15 characters for an IBAN, 20 for keys and
/// tokens).
pub(super) const MIN_LEN: usize = 13;

/// Bit `i` of each mask is set when byte `i` of the value is in its class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ByteClasses {
    pub(super) digit: u64,
    pub(super) upper: u64,
    pub(super) lower: u64,
    pub(super) at: u64,
    pub(super) dot: u64,
    pub(super) dash: u64,
    pub(super) space: u64,
    /// `_`, `+`, `/`, `=`, `(`, `)` and `%`: what keys and tokens (base64,
    /// base64url), phone numbers and e-mail local parts are made of besides
    /// letters, digits, dots, dashes and spaces. One mask for them all: each
    /// detector's test then admits a few bytes more than its scanner, never
    /// fewer.
    pub(super) punct: u64,
}

impl ByteClasses {
    /// The classes of `text`, if it is [`MIN_LEN`] to [`MAX_LEN`] bytes long.
    pub(super) fn of(text: &[u8]) -> Option<Self> {
        (MIN_LEN..=MAX_LEN).contains(&text.len()).then(|| classify(text))
    }

    /// The positions of `mask`'s bits, lowest first.
    pub(super) fn positions(mut mask: u64) -> impl Iterator<Item = usize> {
        std::iter::from_fn(move || {
            let position = (mask != 0).then(|| mask.trailing_zeros() as usize);
            mask &= mask.wrapping_sub(1);
            position
        })
    }

    /// Letters and digits.
    pub(super) fn alphanumeric(&self) -> u64 {
        self.digit | self.upper | self.lower
    }

    /// Whether two capitals followed by two digits occur: how every IBAN
    /// starts (country code, check digits).
    pub(super) fn has_iban_head(&self) -> bool {
        self.upper & (self.upper >> 1) & (self.digit >> 2) & (self.digit >> 3) != 0
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn classify(text: &[u8]) -> ByteClasses {
    // SAFETY: SSE2 is part of x86-64 itself, and the cfg above checks the
    // build targets it; the function reads `text` through safe slices only.
    unsafe { classify_sse2(text) }
}

/// The SSE2 pass: each 16-byte block is compared against every class at
/// once. Blocks are built from the value's own bytes (the last one padded
/// with NUL, in no class), not from a padded copy: loading sixteen bytes
/// just written by a copy stalls the CPU longer than the comparisons take.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn classify_sse2(text: &[u8]) -> ByteClasses {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set_epi64x, _mm_set1_epi8,
    };

    use super::swar::load;

    let mut classes = ByteClasses::default();
    for (index, block) in text.chunks(16).enumerate() {
        let (first, second) = block.split_at(block.len().min(8));
        let bytes = _mm_set_epi64x(load(second) as i64, load(first) as i64);
        let bits = |flags: __m128i| u64::from(_mm_movemask_epi8(flags) as u16) << (16 * index);
        let equal = |byte: u8| _mm_cmpeq_epi8(bytes, _mm_set1_epi8(byte as i8));
        // Signed comparisons: bytes above 0x7f are negative, below every
        // ASCII bound, so they fall in no range.
        let range = |low: u8, high: u8| {
            _mm_and_si128(
                _mm_cmpgt_epi8(bytes, _mm_set1_epi8(low as i8 - 1)),
                _mm_cmplt_epi8(bytes, _mm_set1_epi8(high as i8 + 1)),
            )
        };
        classes.digit |= bits(range(b'0', b'9'));
        classes.upper |= bits(range(b'A', b'Z'));
        classes.lower |= bits(range(b'a', b'z'));
        classes.at |= bits(equal(b'@'));
        classes.dot |= bits(equal(b'.'));
        classes.dash |= bits(equal(b'-'));
        classes.space |= bits(equal(b' '));
        let base64 = _mm_or_si128(_mm_or_si128(equal(b'+'), equal(b'/')), equal(b'='));
        let others = _mm_or_si128(_mm_or_si128(equal(b'_'), equal(b'%')), range(b'(', b')'));
        classes.punct |= bits(_mm_or_si128(others, base64));
    }
    classes
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn classify(text: &[u8]) -> ByteClasses {
    portable(text)
}

/// The same pass a word at a time, for CPUs without SSE2 (and to check
/// the SSE2 pass against).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn portable(text: &[u8]) -> ByteClasses {
    use super::swar::{class_mask, equal, in_range};
    let mask = |class: fn(u64) -> u64| class_mask(text, class);
    ByteClasses {
        digit: mask(|w| in_range(w, b'0', b'9')),
        upper: mask(|w| in_range(w, b'A', b'Z')),
        lower: mask(|w| in_range(w, b'a', b'z')),
        at: mask(|w| equal(w, b'@')),
        dot: mask(|w| equal(w, b'.')),
        dash: mask(|w| equal(w, b'-')),
        space: mask(|w| equal(w, b' ')),
        punct: mask(|w| {
            equal(w, b'_') | equal(w, b'%') | equal(w, b'+') | equal(w, b'/') | equal(w, b'=') | in_range(w, b'(', b')')
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classes byte by byte, the way the scanners test them.
    fn reference(text: &[u8]) -> ByteClasses {
        let mask =
            |class: fn(&u8) -> bool| text.iter().enumerate().filter(|(_, b)| class(b)).fold(0, |m, (i, _)| m | 1 << i);
        ByteClasses {
            digit: mask(u8::is_ascii_digit),
            upper: mask(u8::is_ascii_uppercase),
            lower: mask(u8::is_ascii_lowercase),
            at: mask(|b| *b == b'@'),
            dot: mask(|b| *b == b'.'),
            dash: mask(|b| *b == b'-'),
            space: mask(|b| *b == b' '),
            punct: mask(|b| matches!(b, b'_' | b'%' | b'+' | b'/' | b'=' | b'(' | b')')),
        }
    }

    #[test]
    fn every_byte_value_at_every_position_is_classed_as_byte_tests_do() {
        for byte in 0..=u8::MAX {
            for len in [1, 7, 8, 15, 16, 17, 33, 63, 64] {
                // The byte between neighbours that are in no class, and in a run of itself.
                let mut text = vec![0x80; len];
                text[len / 2] = byte;
                assert_eq!(classify(&text), reference(&text), "{byte:#04x} in {len} bytes");
                assert_eq!(portable(&text), reference(&text), "{byte:#04x} in {len} bytes, word at a time");
                let run = vec![byte; len];
                assert_eq!(classify(&run), reference(&run), "{len} × {byte:#04x}");
                assert_eq!(portable(&run), reference(&run), "{len} × {byte:#04x}, word at a time");
            }
        }
        assert_eq!(classify(b""), ByteClasses::default());
        assert_eq!(ByteClasses::of(&[b'1'; MAX_LEN]), Some(reference(&[b'1'; MAX_LEN])));
        assert_eq!(ByteClasses::of(&[b'1'; MAX_LEN + 1]), None, "longer values are scanned as they are");
        assert_eq!(ByteClasses::of(&[b'1'; MIN_LEN - 1]), None, "so are shorter ones");
    }

    #[test]
    fn positions_are_the_set_bits_in_order() {
        assert_eq!(ByteClasses::positions(0).count(), 0);
        assert_eq!(ByteClasses::positions(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(ByteClasses::positions(1 << 63).collect::<Vec<_>>(), [63]);
    }

    #[test]
    fn iban_heads_are_two_capitals_then_two_digits() {
        let head = |text: &str| classify(text.as_bytes()).has_iban_head();
        assert!(head("DE89 3704 0044 0532 0130 00"));
        assert!(head("iban: GB82WEST12345698765432"));
        assert!(!head("Customer since 2005, prefers e-mail"));
        assert!(!head("D E89"));
        assert!(!head("DE8"));
    }
}
