//! The e-mail and card scanners again, for values of 13 to 64 bytes, read
//! off the byte-class masks instead of the bytes.
//!
//! E-mail addresses and card numbers are what detectors find most, and a
//! value holding one used to cost a byte walk on top of the masks: back
//! over the local part, on over the domain, through every digit group.
//! With the masks, where a span starts and ends is a count of leading or
//! trailing ones, and the shape tests (groups of three digits or more, no
//! `..` in a domain, a top-level domain of letters) are shifts and ANDs.
//! Each function finds exactly what its byte scanner in [`detect`]
//! (`find_emails`, `find_cards`) finds: a unit test there runs both on the
//! same values.
//!
//! [`detect`]: super::detect

use super::{
    classes::ByteClasses,
    detect::{Builtin, DetectorId, Match},
};

/// Bits `from..to` (`to` at most 64).
fn span(from: usize, to: usize) -> u64 {
    if from >= to {
        return 0;
    }
    let below_to = if to >= 64 { u64::MAX } else { (1 << to) - 1 };
    below_to & (u64::MAX << from)
}

/// Whether bit `at` of `mask` is set (`false` past the 64th).
fn bit(mask: u64, at: usize) -> bool {
    at < 64 && mask >> at & 1 == 1
}

/// How many bits of `mask` are set in a row from `from` up.
fn ones_from(mask: u64, from: usize) -> usize {
    if from >= 64 { 0 } else { (mask >> from).trailing_ones() as usize }
}

/// Appends the e-mail addresses of `text`; `classes` are its masks.
/// (Inlined, as [`cards`], into each build of the scan.)
#[inline(always)]
pub(super) fn emails(text: &[u8], classes: &ByteClasses, out: &mut Vec<Match>) {
    let domain_chars = classes.alphanumeric() | classes.dot | classes.dash;
    // Local parts may also hold `_`, `%` and `+`. They are in the punct
    // class with `/`, `=`, `(` and `)`, which they may not hold: a local
    // part with any punct byte is walked byte by byte.
    let local_or_punct = domain_chars | classes.punct;
    let mut last_end = 0;
    for at in ByteClasses::positions(classes.at) {
        if at < last_end {
            continue;
        }
        // Back from the `@` to the nearest byte that cannot be in a local part.
        let outside = !local_or_punct & span(0, at);
        let mut start = if outside == 0 { 0 } else { 64 - outside.leading_zeros() as usize }.max(last_end);
        if classes.punct & span(start, at) != 0 {
            start = local_start(text, at, last_end);
        }
        start = (start + ones_from(classes.dot, start)).min(at);
        // On to the end of the domain, less trailing dots and dashes.
        let mut end = at + 1 + ones_from(domain_chars, at + 1);
        let kept = !(classes.dot | classes.dash) & span(at + 1, end);
        end = if kept == 0 { at + 1 } else { 64 - kept.leading_zeros() as usize };
        let dots = classes.dot & span(at + 1, end);
        if dots == 0 {
            continue;
        }
        let last_dot = 63 - dots.leading_zeros() as usize;
        let labels_ok = !bit(classes.dot, at + 1) && dots & (dots >> 1) == 0;
        let letters = classes.upper | classes.lower;
        let tld = span(last_dot + 1, end);
        if start < at && labels_ok && end - last_dot > 2 && letters & tld == tld {
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::Email) });
            last_end = end;
        }
    }
}

/// Where the local part before the `@` at `at` starts, byte by byte.
fn local_start(text: &[u8], at: usize, last_end: usize) -> usize {
    let mut start = at;
    while start > last_end && super::detect::is_email_local(text[start - 1]) {
        start -= 1;
    }
    start
}

/// Appends the card numbers of `text`; `classes` are its masks.
#[inline(always)]
pub(super) fn cards(text: &[u8], classes: &ByteClasses, out: &mut Vec<Match>) {
    let digits = classes.digit;
    let alphanumeric = classes.alphanumeric();
    // A space or dash joins two groups when a digit follows it (one
    // precedes it whenever a number reaches it).
    let joiners = (classes.space | classes.dash) & (digits >> 1);
    let number = digits | joiners;
    let mut from = 0;
    loop {
        let ahead = if from >= 64 { 0 } else { digits & (u64::MAX << from) };
        if ahead == 0 {
            return;
        }
        let start = ahead.trailing_zeros() as usize;
        // A number glued to letters before it is part of a word: skip the word.
        if start > 0 && bit(alphanumeric, start - 1) {
            from = start + ones_from(alphanumeric, start);
            continue;
        }
        let end = start + ones_from(number, start);
        from = end;
        let numerals = digits & span(start, end);
        if !(13..=19).contains(&numerals.count_ones()) || bit(alphanumeric, end) {
            continue;
        }
        let separators = joiners & span(start, end);
        // Group boundaries, one place up so the one before `start` fits:
        // groups of three digits or more put boundaries four places apart.
        let bounds = (u128::from(separators) << 1) | (1 << start) | (1 << (end + 1));
        // (19 digits then make six groups at most: the byte scanner's cap
        // of eight groups never binds.)
        let grouped_ok = separators == 0 || (bounds & (bounds >> 1 | bounds >> 2 | bounds >> 3)) == 0;
        if grouped_ok && luhn(text, numerals) {
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::Card) });
        }
    }
}

/// The Luhn check over the digits of `text` at the set bits of `numerals`,
/// first to last: the last digit is not doubled, so the first is when the
/// count is even.
#[inline(always)]
fn luhn(text: &[u8], mut numerals: u64) -> bool {
    let terms = super::detect::LUHN_TERMS;
    let (mut sum, mut doubled) = (0, numerals.count_ones().is_multiple_of(2));
    while numerals != 0 {
        let digit = text[numerals.trailing_zeros() as usize] - b'0';
        sum += terms[usize::from(doubled)][usize::from(digit)];
        doubled = !doubled;
        numerals &= numerals - 1;
    }
    sum.is_multiple_of(10)
}
