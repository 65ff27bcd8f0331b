//! Where each class of byte a detector cares about sits in a short value,
//! as one bit mask per class, taken in one pass before any scanner runs.
//!
//! Most values in result rows are short (names, addresses, ids, notes): up
//! to 64 bytes, one bit per byte in a `u64`. With the masks, the questions
//! the detectors ask before scanning ("is there a run of 13 digits and
//! separators?", "two capitals then two digits?", "20 key characters in a
//! row?") are a few shifts and ANDs instead of walks over the bytes, and a
//! value with nothing sensitive in it (the common case) costs little more
//! than this pass. On x86-64 CPUs with SSSE3 (nearly all) the pass takes
//! sixteen bytes at a time through two nibble tables; elsewhere eight bytes
//! per word ([`swar`]).

use super::swar;

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

    /// [`of`](Self::of), one table lookup per nibble instead of a
    /// comparison per class: for CPUs with SSSE3.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3")]
    #[inline]
    pub(super) fn of_with_ssse3(text: &[u8]) -> Option<Self> {
        (MIN_LEN..=MAX_LEN).contains(&text.len()).then(|| classify_ssse3(text))
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

/// The SSSE3 pass. Each byte's high and low nibbles index two 16-entry
/// tables; the AND of the two entries has one bit per class the byte is in
/// (a class made of a few nibble rows and columns). Dashes and spaces are
/// compared directly: the table has no bits left for them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
fn classify_ssse3(text: &[u8]) -> ByteClasses {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi8, _mm_setr_epi8,
        _mm_setzero_si128, _mm_shuffle_epi8, _mm_slli_epi16, _mm_srli_epi16,
    };

    // Bits of a byte's entry: digit (row 3, columns 0–9); letter A (rows 4
    // and 6, columns 1–f) and letter B (rows 5 and 7, columns 0–a), so
    // A-Z and a-z; `@`; `.`; and the punct class in three bits: `%`, `(`,
    // `)`, `+`, `/` in row 2, `=` in row 3, `_` in row 5.
    const DIGIT: i8 = 1;
    const LETTER_A: i8 = 2;
    const LETTER_B: i8 = 4;
    const AT: i8 = 8;
    const DOT: i8 = 16;
    const PUNCT_2: i8 = 32;
    const PUNCT_3: i8 = 64;
    const PUNCT_5: i8 = i8::MIN;
    const PUNCT: i8 = PUNCT_2 | PUNCT_3 | PUNCT_5;
    const LETTERS: i8 = LETTER_A | LETTER_B;
    let by_high = _mm_setr_epi8(
        0,
        0,
        DOT | PUNCT_2,
        DIGIT | PUNCT_3,
        LETTER_A | AT,
        LETTER_B | PUNCT_5,
        LETTER_A,
        LETTER_B,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    );
    let (a, b, d) = (LETTER_A, LETTER_B, DIGIT);
    let by_low = _mm_setr_epi8(
        b | d | AT,
        a | b | d,
        a | b | d,
        a | b | d,
        a | b | d,
        a | b | d | PUNCT_2,
        a | b | d,
        a | b | d,
        a | b | d | PUNCT_2,
        a | b | d | PUNCT_2,
        a | b,
        a | PUNCT_2,
        a,
        a | PUNCT_3,
        a | DOT,
        a | PUNCT_2 | PUNCT_5,
    );
    let low_nibbles = _mm_set1_epi8(0x0f);
    let zero = _mm_setzero_si128();
    let mut classes = ByteClasses::default();
    for index in 0..text.len().div_ceil(16) {
        let bytes = _mm_set_epi64x(swar::word_at(text, 16 * index + 8) as i64, swar::word_at(text, 16 * index) as i64);
        let bits = |flags: __m128i| u64::from(_mm_movemask_epi8(flags) as u16) << (16 * index);
        let high = _mm_and_si128(_mm_srli_epi16::<4>(bytes), low_nibbles);
        let entry =
            _mm_and_si128(_mm_shuffle_epi8(by_high, high), _mm_shuffle_epi8(by_low, _mm_and_si128(bytes, low_nibbles)));
        let none_of = |class: i8| bits(_mm_cmpeq_epi8(_mm_and_si128(entry, _mm_set1_epi8(class)), zero));
        let block = if text.len() - 16 * index >= 16 { u64::from(u16::MAX) } else { (1 << (text.len() % 16)) - 1 };
        let in_block = block << (16 * index);
        let letters = !none_of(LETTERS) & in_block;
        // Bit 5 (0x20) of a letter is set in lower case only.
        let lower_case = bits(_mm_slli_epi16::<2>(bytes));
        classes.digit |= !none_of(DIGIT) & in_block;
        classes.upper |= letters & !lower_case;
        classes.lower |= letters & lower_case;
        classes.at |= !none_of(AT) & in_block;
        classes.dot |= !none_of(DOT) & in_block;
        classes.punct |= !none_of(PUNCT) & in_block;
        classes.dash |= bits(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'-' as i8)));
        classes.space |= bits(_mm_cmpeq_epi8(bytes, _mm_set1_epi8(b' ' as i8)));
    }
    classes
}

/// The pass a word at a time, on any CPU.
fn classify(text: &[u8]) -> ByteClasses {
    use swar::{class_mask, equal, in_range};
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

    /// The SSSE3 pass, where the CPU has it (else the reference itself).
    fn with_ssse3(text: &[u8]) -> ByteClasses {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("ssse3") {
            // SAFETY: the CPU has SSSE3, checked just above.
            return unsafe { classify_ssse3(text) };
        }
        reference(text)
    }

    #[test]
    fn every_byte_value_at_every_position_is_classed_as_byte_tests_do() {
        for byte in 0..=u8::MAX {
            for len in [1, 7, 8, 15, 16, 17, 33, 63, 64] {
                // The byte between neighbours that are in no class, and in a run of itself.
                let mut text = vec![0x80; len];
                text[len / 2] = byte;
                assert_eq!(classify(&text), reference(&text), "{byte:#04x} in {len} bytes");
                assert_eq!(with_ssse3(&text), reference(&text), "{byte:#04x} in {len} bytes, SSSE3");
                let run = vec![byte; len];
                assert_eq!(classify(&run), reference(&run), "{len} × {byte:#04x}");
                assert_eq!(with_ssse3(&run), reference(&run), "{len} × {byte:#04x}, SSSE3");
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
