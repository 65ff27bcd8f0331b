//! Bytes eight at a time, in plain 64-bit arithmetic ("SIMD within a
//! register"): `partial` hides letters and digits with it, byte-class masks
//! are made with it where SSSE3 is missing, and runs are found in the masks.
//! Values in result rows are mostly shorter than the compiler's vector
//! loops start at; a word at a time still beats a byte at a time there,
//! with no `unsafe` and no CPU feature checks.

/// `byte` in every byte of a word.
pub(super) const fn splat(byte: u8) -> u64 {
    u64::from_le_bytes([byte; 8])
}

/// Up to eight bytes as a little-endian word, padded with NUL bytes.
pub(super) fn load(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(word) => u64::from_le_bytes(word),
        Err(_) => {
            debug_assert!(bytes.len() < 8);
            bytes.iter().rev().fold(0, |word, &byte| (word << 8) | u64::from(byte))
        }
    }
}

/// The eight bytes of `text` from `at`, padded with NUL past its end. A
/// word that runs past the end of a value of eight bytes or more is loaded
/// as the value's last eight bytes, shifted down: one load, no byte loop,
/// and no padded copy (loading a word just written byte by byte stalls the
/// CPU longer than the work on it takes).
#[inline]
pub(super) fn word_at(text: &[u8], at: usize) -> u64 {
    match text.get(at..at + 8) {
        Some(word) => load(word),
        None if at >= text.len() => 0,
        None if text.len() >= 8 => load(&text[text.len() - 8..]) >> (8 * (at + 8 - text.len())),
        None => load(&text[at..]),
    }
}

/// 0x80 in each byte of `word` within `low..=high`, for a word of ASCII
/// bytes only: adding `0x80 - low` sets a byte's top bit when it is at
/// least `low`, adding `0x7f - high` when it is above `high`; neither
/// carries into the next byte, as every byte is below 0x80.
pub(super) const fn ascii_in_range(word: u64, low: u8, high: u8) -> u64 {
    (word.wrapping_add(splat(0x80 - low)) & !word.wrapping_add(splat(0x7f - high))) & splat(0x80)
}

/// As [`ascii_in_range`], for any bytes: those above 0x7f (UTF-8 and
/// other encodings' multi-byte characters) are in no range.
pub(super) const fn in_range(word: u64, low: u8, high: u8) -> u64 {
    ascii_in_range(word & splat(0x7f), low, high) & !word
}

/// 0x80 in each byte of `word` equal to `byte` (an ASCII byte).
pub(super) const fn equal(word: u64, byte: u8) -> u64 {
    in_range(word, byte, byte)
}

/// Whether `byte` (ASCII) occurs in `text`: for 4 to 16 bytes, two
/// overlapping loads and one test, no loop.
#[inline]
pub(super) fn contains(text: &[u8], byte: u8) -> bool {
    let word = |at: usize, len: usize| load(&text[at..at + len]);
    let (first, last) = match text.len() {
        len @ 8..=16 => (word(0, 8), word(len - 8, 8)),
        len @ 4..8 => (word(0, 4) | word(len - 4, 4) << 32, 0),
        _ => return text.contains(&byte),
    };
    equal(first, byte) | equal(last, byte) != 0
}

/// The top bits of the eight bytes of `flags` (only 0x00 or 0x80 in each
/// byte) as one byte, bit `i` from byte `i`. Each byte's bit lands in the
/// top byte at its own position; no two partial products meet, so nothing
/// carries into it.
const fn gather(flags: u64) -> u64 {
    ((flags >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Bit `i` set where byte `i` of `text` (at most 64 bytes) is in the class
/// `class` marks with 0x80, one word at a time. The last word is padded
/// with NUL bytes, which no caller's class holds.
pub(super) fn class_mask(text: &[u8], class: impl Fn(u64) -> u64) -> u64 {
    debug_assert!(text.len() <= 64);
    let mut mask = 0;
    for index in 0..text.len().div_ceil(8) {
        mask |= gather(class(word_at(text, 8 * index))) << (8 * index);
    }
    mask
}

/// Whether `mask` has at least `len` (≥ 1) consecutive bits set.
pub(super) fn has_run(mask: u64, len: u32) -> bool {
    run_starts(mask, len) != 0
}

/// The bits of `mask` that start a run of at least `len` (≥ 1) set bits.
/// Each step keeps the bits that start a run as long as the two runs it
/// joins, so a run of 13 takes four shifts.
pub(super) fn run_starts(mut mask: u64, len: u32) -> u64 {
    let mut have = 1;
    while have < len && mask != 0 {
        let step = have.min(len - have);
        mask &= mask >> step;
        have += step;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_match_the_byte_at_a_time_answer_for_every_byte() {
        for byte in 0..=u8::MAX {
            let word = u64::from_le_bytes([byte, b'5', 0xff, byte, 0x80, byte, b'-', byte]);
            let digits = class_mask(&word.to_le_bytes(), |w| in_range(w, b'0', b'9'));
            let dashes = class_mask(&word.to_le_bytes(), |w| equal(w, b'-'));
            for (i, b) in word.to_le_bytes().into_iter().enumerate() {
                assert_eq!(digits >> i & 1 == 1, b.is_ascii_digit(), "byte {b:#04x} at {i}");
                assert_eq!(dashes >> i & 1 == 1, b == b'-', "byte {b:#04x} at {i}");
            }
        }
    }

    #[test]
    fn masks_cover_values_up_to_64_bytes_in_order() {
        let text: Vec<u8> = (0..64).map(|i| if i % 3 == 0 { b'7' } else { b'x' }).collect();
        for len in 0..=64 {
            let mask = class_mask(&text[..len], |w| in_range(w, b'0', b'9'));
            let expected = (0..len).filter(|i| i % 3 == 0).fold(0u64, |m, i| m | 1 << i);
            assert_eq!(mask, expected, "{len} bytes");
        }
    }

    #[test]
    fn contains_finds_the_byte_at_every_position_of_every_length() {
        for len in 0..=24 {
            assert!(!contains(&vec![b'a'; len], b'@'));
            assert!(!contains(&vec![0xc0; len], b'@'), "0xc0 is not '@' with its top bit set");
            for at in 0..len {
                let mut text = vec![0xff; len];
                text[at] = b'@';
                assert!(contains(&text, b'@'), "'@' at {at} of {len}");
            }
        }
    }

    #[test]
    fn runs_are_found_at_their_exact_length() {
        for len in 1..=64u32 {
            for start in 0..=64 - len {
                let run = if len == 64 { u64::MAX } else { ((1u64 << len) - 1) << start };
                assert!(has_run(run, len), "run of {len} at {start}");
                assert!(!has_run(run, len + 1) || len == 64, "run of {len} at {start} is not {}", len + 1);
            }
        }
        assert!(!has_run(0, 1));
        // Two runs of 6 with a gap are not a run of 12 (or 7).
        let two_runs = 0x3f << 7 | 0x3f;
        assert!(!has_run(two_runs, 12) && !has_run(two_runs, 7));
        assert!(has_run(two_runs, 6));
    }
}
