//! Content detectors: find sensitive values (card numbers, e-mail addresses,
//! keys…) inside any text value, whatever column it came from.
//!
//! Built-in detectors are hand-written byte scanners rather than regexes:
//! every value leaving the server passes through them, so the common case (a
//! value with nothing sensitive in it) must cost one pass over its bytes, or
//! less. A value shorter than every enabled detector's shortest match, with
//! no `@`, is left at once. Otherwise a `Summary` of the value (digit
//! count, which character classes occur) is taken first and decides which
//! scanners can possibly match; a card needs 13 digits, an e-mail address an
//! `@`, and so on. Values of 13 to 64 bytes also get a bit mask per class
//! (`ByteClasses`), from which shapes are ruled out (no run of 13 digits
//! and separators, no two capitals before two digits…) and in which
//! e-mail addresses and card numbers are found (`bitscan`). Each such test
//! is a condition every match meets; a unit test checks `find` against the
//! scanners run unconditionally. Checksums (Luhn for cards, mod-97 for
//! IBANs) keep arbitrary numbers from being masked.
//!
//! Scanners work on bytes, not `str`: client encodings other than UTF-8 reach
//! the proxy too, and every pattern here is ASCII.

use memchr::memmem;
use regex::bytes::Regex;

use super::{
    bitscan,
    classes::ByteClasses,
    swar::{self, has_run, run_starts},
};

/// A built-in detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    /// Payment card numbers, 13–19 digits with spaces or dashes, Luhn-checked.
    Card,
    /// E-mail addresses.
    Email,
    /// US social security numbers (`123-45-6789`, `123 45 6789` or nine bare
    /// digits) outside the never-issued ranges. Opt-in: nine-digit business
    /// ids look the same.
    Ssn,
    /// International bank account numbers, mod-97-checked, upper case, bare
    /// or in groups of four.
    Iban,
    /// Phone numbers: `+` and 8–15 digits, or North American
    /// `(555) 123-4567` / `555-123-4567` / `555.123.4567`.
    Phone,
    /// IPv4 addresses.
    Ipv4,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsKey,
    /// JSON Web Tokens: three base64url parts, the first a JSON header.
    Jwt,
    /// PEM private key blocks, from `-----BEGIN … PRIVATE KEY-----` to the
    /// matching END line (or the end of the value).
    PrivateKey,
    /// Generic API keys and secrets: long high-entropy tokens mixing upper
    /// case, lower case and digits.
    ApiKey,
}

impl Builtin {
    /// Every built-in detector.
    pub const ALL: [Builtin; 10] = [
        Self::Card,
        Self::Email,
        Self::Ssn,
        Self::Iban,
        Self::Phone,
        Self::Ipv4,
        Self::AwsKey,
        Self::Jwt,
        Self::PrivateKey,
        Self::ApiKey,
    ];

    /// Detectors a masking section runs when it does not list any: those
    /// precise enough not to mask ordinary business data.
    pub const DEFAULT: [Builtin; 7] =
        [Self::Card, Self::Email, Self::Iban, Self::AwsKey, Self::Jwt, Self::PrivateKey, Self::ApiKey];

    /// The name policies use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Email => "email",
            Self::Ssn => "ssn",
            Self::Iban => "iban",
            Self::Phone => "phone",
            Self::Ipv4 => "ipv4",
            Self::AwsKey => "aws_key",
            Self::Jwt => "jwt",
            Self::PrivateKey => "private_key",
            Self::ApiKey => "api_key",
        }
    }

    /// The detector named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Fewest bytes a match of this detector has, but for e-mail addresses
    /// (which need an `@`, a stronger test). Values shorter than every
    /// enabled detector's, with no `@`, skip the scanners altogether: most
    /// values in a row are short names, codes and amounts. `find` checks
    /// the lengths here before the scanners that go by length; the number
    /// detectors go by their digit counts, as many.
    fn shortest_match(self) -> usize {
        match self {
            Self::Card => 13,
            Self::Ssn => 9,
            Self::Iban => 15,
            Self::Phone => 8,
            Self::Ipv4 => "1.2.3.4".len(),
            Self::AwsKey | Self::Jwt => 20,
            Self::PrivateKey => PEM_HEADER_MIN_LEN,
            Self::ApiKey => API_KEY_MIN_LEN,
            Self::Email => usize::MAX,
        }
    }
}

/// Which detector found a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DetectorId {
    /// A built-in detector.
    Builtin(Builtin),
    /// A custom regex detector: index in [`Detectors::custom_names`].
    Custom(u16),
}

/// A sensitive span of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// What found it.
    pub detector: DetectorId,
}

/// A named regex from the policy.
#[derive(Clone, Debug)]
pub struct CustomDetector {
    /// Name for audit records and `[masked:NAME]` markers.
    pub name: String,
    /// What it matches.
    pub regex: Regex,
}

/// A set of enabled detectors, ready to scan values.
#[derive(Clone, Debug)]
pub struct Detectors {
    enabled: u16,
    /// Values shorter than this, with no `@`, hold nothing any enabled
    /// detector finds (see [`Builtin::shortest_match`]).
    shortest_without_at: usize,
    custom: Vec<CustomDetector>,
    jwt: memmem::Finder<'static>,
    pem_begin: memmem::Finder<'static>,
    /// Whether this CPU has POPCNT and SSSE3 (every x86-64 CPU since
    /// 2008–2011, but not the baseline this is built for): scanning then
    /// runs a build of itself that uses them.
    x86_v2: bool,
}

/// Whether the CPU has what [`Detectors::scan_x86_v2`] is built with.
fn has_x86_v2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("popcnt") && std::arch::is_x86_feature_detected!("ssse3");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Shortest text a built-in detector matches (`a@b.io`, `1.2.3.4`).
const MIN_BUILTIN_MATCH: usize = 6;

/// Shortest PEM private key header, `-----BEGIN PRIVATE KEY-----`: a block
/// cut short after it is still masked.
const PEM_HEADER_MIN_LEN: usize = "-----BEGIN ".len() + "PRIVATE KEY-----".len();

/// Character classes of a value, taken in one pass before any scanner runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Summary {
    digits: usize,
    dots: usize,
    dashes: usize,
    classes: u8,
}

const DIGIT: u8 = 1;
const AT: u8 = 2;
const DOT: u8 = 4;
const UPPER: u8 = 8;
const LOWER: u8 = 16;
const DASH: u8 = 32;

impl Summary {
    /// Written so the compiler vectorizes it: byte-wide counters over
    /// chunks short enough not to overflow them, no table lookups.
    fn of(text: &[u8]) -> Self {
        let mut summary = Self::default();
        for chunk in text.chunks(255) {
            let (mut digits, mut dots, mut dashes, mut flags) = (0u8, 0u8, 0u8, 0u8);
            for &b in chunk {
                digits += u8::from(b.wrapping_sub(b'0') < 10);
                dots += u8::from(b == b'.');
                dashes += u8::from(b == b'-');
                flags |= (u8::from(b.wrapping_sub(b'A') < 26) * UPPER)
                    | (u8::from(b.wrapping_sub(b'a') < 26) * LOWER)
                    | (u8::from(b == b'@') * AT);
            }
            summary.digits += usize::from(digits);
            summary.dots += usize::from(dots);
            summary.dashes += usize::from(dashes);
            summary.classes |= flags;
        }
        if summary.digits > 0 {
            summary.classes |= DIGIT;
        }
        if summary.dots > 0 {
            summary.classes |= DOT;
        }
        if summary.dashes > 0 {
            summary.classes |= DASH;
        }
        summary
    }

    /// The same, from a short value's masks.
    #[inline(always)]
    fn from_classes(classes: &ByteClasses) -> Self {
        let count = |mask: u64| mask.count_ones() as usize;
        let flag = |mask: u64, class: u8| if mask == 0 { 0 } else { class };
        Self {
            digits: count(classes.digit),
            dots: count(classes.dot),
            dashes: count(classes.dash),
            classes: flag(classes.digit, DIGIT)
                | flag(classes.at, AT)
                | flag(classes.dot, DOT)
                | flag(classes.upper, UPPER)
                | flag(classes.lower, LOWER)
                | flag(classes.dash, DASH),
        }
    }

    fn has(&self, class: u8) -> bool {
        self.classes & class == class
    }
}

/// The longest run of digits joined by bytes `joiner` accepts, measured in
/// digits (or in dots, with `count_dots`, for IPv4): the number detectors
/// run only on values with a long enough run, so a timestamp or an amount
/// (many digits, wrong shape) costs one tight pass instead of a scanner.
fn longest_run(text: &[u8], joiner: impl Fn(u8) -> bool, count_dots: bool) -> u32 {
    let (mut run, mut longest) = (0u32, 0u32);
    for &b in text {
        let digit = b.wrapping_sub(b'0') < 10;
        // A closure, not `[u8]::contains`: that is a memchr call per byte.
        let joined = u32::from(digit) | u32::from(joiner(b));
        let counted = if count_dots { b == b'.' } else { digit };
        // Masked, neither branched (hex digests would mispredict every few
        // bytes) nor multiplied (three cycles a byte on the dependency chain).
        run = (run + u32::from(counted)) & joined.wrapping_neg();
        longest = longest.max(run);
    }
    longest
}

/// What joins the digit groups of card numbers and SSNs.
fn is_group_joiner(b: u8) -> bool {
    (b == b' ') | (b == b'-')
}

/// What joins the digits of a phone number.
fn is_phone_joiner(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')' | b'+')
}

/// What a short value's [`ByteClasses`] rule out before any scanner runs:
/// each test is a condition every match of its detector meets, so a value
/// that fails it cannot hold one. Longer values pass the tests on classes
/// and go to the scanners as they are.
struct Prefilter<'a> {
    text: &'a [u8],
    classes: Option<ByteClasses>,
}

impl Prefilter<'_> {
    fn may(&self, test: impl FnOnce(&ByteClasses) -> bool) -> bool {
        self.classes.as_ref().is_none_or(test)
    }

    /// Phone numbers: 8 digits at least. In a short value, a shape every
    /// accepted number has: `+` (or `(`) then 8 digits and joiners, or, for
    /// a North American one, its last two groups: 3 digits, one or two
    /// joiners (`)`, a separator, `(`), 4 digits. Timestamps and amounts,
    /// digits and joiners aplenty, have neither.
    fn may_phone(&self) -> bool {
        match &self.classes {
            Some(c) => {
                let (digit, joiner) = (c.digit, c.space | c.dash | c.dot | c.punct);
                let (three, four) = (run_starts(digit, 3), run_starts(digit, 4));
                let last_groups = three & (joiner >> 3) & ((four >> 4) | ((joiner >> 4) & (four >> 5)));
                let international = c.punct & (run_starts(digit | joiner, 8) >> 1);
                last_groups | international != 0
            }
            None => longest_run(self.text, is_phone_joiner, false) >= 8,
        }
    }

    /// SSNs: nine digits in a row, or 3, 2 and 4 joined by a space or a dash.
    fn may_ssn(&self) -> bool {
        match &self.classes {
            Some(c) => {
                let (digit, joiner) = (c.digit, c.space | c.dash);
                let (two, three, four) = (run_starts(digit, 2), run_starts(digit, 3), run_starts(digit, 4));
                let grouped = three & (joiner >> 3) & (two >> 4) & (joiner >> 6) & (four >> 7);
                grouped != 0 || has_run(digit, 9)
            }
            None => longest_run(self.text, is_group_joiner, false) >= 9,
        }
    }

    /// AWS key ids: 20 capitals and digits.
    fn may_aws_key(&self) -> bool {
        self.may(|c| has_run(c.upper | c.digit, 20))
    }

    /// JWTs: a header of 10 base64url characters at least.
    fn may_jwt(&self) -> bool {
        self.may(|c| has_run(c.alphanumeric() | c.dash | c.punct, 10))
    }

    /// API keys: a token of [`API_KEY_MIN_LEN`] characters at least.
    fn may_api_key(&self) -> bool {
        self.may(|c| has_run(c.alphanumeric() | c.dash | c.punct, API_KEY_MIN_LEN as u32))
    }
}

impl Detectors {
    /// Built-in detectors `builtins` and the custom ones.
    pub fn new(builtins: &[Builtin], custom: Vec<CustomDetector>) -> Self {
        // A custom regex may match anything, however short.
        let shortest_without_at =
            if custom.is_empty() { builtins.iter().map(|b| b.shortest_match()).min().unwrap_or(usize::MAX) } else { 0 };
        Self {
            enabled: builtins.iter().fold(0, |bits, b| bits | b.bit()),
            shortest_without_at,
            custom,
            jwt: memmem::Finder::new(b"eyJ").into_owned(),
            pem_begin: memmem::Finder::new(b"-----BEGIN ").into_owned(),
            x86_v2: has_x86_v2(),
        }
    }

    /// Whether no detector is enabled.
    pub fn is_empty(&self) -> bool {
        self.enabled == 0 && self.custom.is_empty()
    }

    /// Whether `builtin` is enabled.
    pub fn is_enabled(&self, builtin: Builtin) -> bool {
        self.enabled & builtin.bit() != 0
    }

    /// Names of the custom detectors, indexed by [`DetectorId::Custom`].
    pub fn custom_names(&self) -> impl Iterator<Item = &str> {
        self.custom.iter().map(|c| c.name.as_str())
    }

    /// The name of `id`.
    pub fn name(&self, id: DetectorId) -> &str {
        match id {
            DetectorId::Builtin(builtin) => builtin.name(),
            DetectorId::Custom(index) => self.custom.get(usize::from(index)).map_or("custom", |c| c.name.as_str()),
        }
    }

    /// Appends the sensitive spans of `text` to `out`, in order and not
    /// overlapping (where two detectors overlap, the earlier start wins,
    /// then the longer span). `out` must be empty; it is left empty, and
    /// never allocates, when nothing matches.
    ///
    /// Inlined where it is called: most values are short, and leave here
    /// without the scanners' call.
    #[inline]
    pub fn find(&self, text: &[u8], out: &mut Vec<Match>) {
        debug_assert!(out.is_empty());
        // Shorter than any enabled detector's shortest match: nothing to
        // find, unless an `@` makes an e-mail address possible, which
        // takes `a@b.io` at least. (With custom detectors, the shortest is
        // 0.)
        if self.is_empty()
            || text.len() < self.shortest_without_at && (text.len() < MIN_BUILTIN_MATCH || !swar::contains(text, b'@'))
        {
            return;
        }
        self.scan(text, out);
    }

    /// [`find`](Self::find) past its short-value exit.
    fn scan(&self, text: &[u8], out: &mut Vec<Match>) {
        #[cfg(target_arch = "x86_64")]
        if self.x86_v2 {
            // SAFETY: `x86_v2` is true only where the CPU has POPCNT and
            // SSSE3, the features `scan_x86_v2` is built with.
            return unsafe { self.scan_x86_v2(text, out) };
        }
        self.scan_with(text, out, ByteClasses::of);
    }

    /// [`scan`](Self::scan) built with POPCNT (a bit count is one
    /// instruction, not a dozen) and the SSSE3 class pass.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt,ssse3")]
    fn scan_x86_v2(&self, text: &[u8], out: &mut Vec<Match>) {
        self.scan_with(text, out, |text| ByteClasses::of_with_ssse3(text));
    }

    /// The scan itself, inlined into each build of it.
    #[inline(always)]
    fn scan_with(&self, text: &[u8], out: &mut Vec<Match>, classify: impl Fn(&[u8]) -> Option<ByteClasses>) {
        let long_enough = |b: Builtin| text.len() >= b.shortest_match();
        let classes = classify(text);
        let summary = classes.as_ref().map_or_else(|| Summary::of(text), Summary::from_classes);
        let filter = Prefilter { text, classes };
        let on = |b: Builtin| self.enabled & b.bit() != 0;
        // "-----BEGIN " and "PRIVATE KEY-----".
        if on(Builtin::PrivateKey) && summary.dashes >= 10 && summary.has(UPPER) && long_enough(Builtin::PrivateKey) {
            self.find_private_keys(text, out);
        }
        // Runs of digits with the separators each kind of number uses.
        if on(Builtin::Card) && summary.digits >= 13 {
            match &filter.classes {
                Some(classes) => bitscan::cards(text, classes, out),
                None if longest_run(text, is_group_joiner, false) >= 13 => find_cards(text, out),
                None => {}
            }
        }
        if on(Builtin::Email) && summary.has(AT | DOT) {
            match &filter.classes {
                Some(classes) => bitscan::emails(text, classes, out),
                None => find_emails(text, out),
            }
        }
        if on(Builtin::Ssn) && summary.digits >= 9 && filter.may_ssn() {
            find_ssns(text, out);
        }
        if on(Builtin::Iban)
            && summary.has(UPPER)
            && summary.digits >= 2
            && long_enough(Builtin::Iban)
            && filter.may(ByteClasses::has_iban_head)
        {
            find_ibans(text, out);
        }
        if on(Builtin::Phone) && summary.digits >= 8 && filter.may_phone() {
            find_phones(text, out);
        }
        if on(Builtin::Ipv4) && summary.digits >= 4 && summary.dots >= 3 && longest_run(text, |b| b == b'.', true) >= 3
        {
            find_ipv4s(text, out);
        }
        if on(Builtin::AwsKey) && summary.has(UPPER) && long_enough(Builtin::AwsKey) && filter.may_aws_key() {
            find_aws_keys(text, out);
        }
        if on(Builtin::Jwt) && summary.dots >= 2 && summary.has(LOWER) && long_enough(Builtin::Jwt) && filter.may_jwt()
        {
            self.find_jwts(text, out);
        }
        if on(Builtin::ApiKey)
            && summary.has(UPPER | LOWER)
            && summary.digits >= 2
            && long_enough(Builtin::ApiKey)
            && filter.may_api_key()
        {
            find_api_keys(text, out);
        }
        for (index, custom) in self.custom.iter().enumerate() {
            let detector = DetectorId::Custom(u16::try_from(index).unwrap_or(u16::MAX));
            for found in custom.regex.find_iter(text).filter(|m| !m.is_empty()) {
                out.push(Match { start: found.start(), end: found.end(), detector });
            }
        }
        resolve_overlaps(out);
    }

    /// What every enabled scanner finds in the whole value, nothing ruled
    /// out first: what [`find`](Self::find) must find, for the tests and
    /// the `detectors` fuzz target that hold its prefilters to that.
    #[cfg(any(test, fuzzing))]
    pub fn find_unfiltered(&self, text: &[u8]) -> Vec<Match> {
        let mut out = Vec::new();
        for builtin in Builtin::ALL.into_iter().filter(|&b| self.is_enabled(b)) {
            match builtin {
                Builtin::PrivateKey => self.find_private_keys(text, &mut out),
                Builtin::Card => find_cards(text, &mut out),
                Builtin::Email => find_emails(text, &mut out),
                Builtin::Ssn => find_ssns(text, &mut out),
                Builtin::Iban => find_ibans(text, &mut out),
                Builtin::Phone => find_phones(text, &mut out),
                Builtin::Ipv4 => find_ipv4s(text, &mut out),
                Builtin::AwsKey => find_aws_keys(text, &mut out),
                Builtin::Jwt => self.find_jwts(text, &mut out),
                Builtin::ApiKey => find_api_keys(text, &mut out),
            }
        }
        resolve_overlaps(&mut out);
        out
    }

    /// The sets [`find_unfiltered`](Self::find_unfiltered) checks `find`
    /// on: every detector, the default set, and each alone (which are on
    /// decides how short a value may be skipped), each also as built for
    /// any x86-64 CPU (no SSSE3 pass), where this one may have more.
    #[cfg(any(test, fuzzing))]
    pub fn every_set() -> Vec<Self> {
        [&Builtin::ALL[..], &Builtin::DEFAULT[..]]
            .into_iter()
            .chain(Builtin::ALL.iter().map(std::slice::from_ref))
            .map(|builtins| Self::new(builtins, Vec::new()))
            .flat_map(|detectors| {
                let portable = Self { x86_v2: false, ..detectors.clone() };
                [detectors, portable]
            })
            .collect()
    }

    fn find_private_keys(&self, text: &[u8], out: &mut Vec<Match>) {
        let mut from = 0;
        while let Some(at) = self.pem_begin.find(&text[from..]) {
            let start = from + at;
            let header_end = start + b"-----BEGIN ".len();
            // The label is short and on one line: "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"…
            let label_window = &text[header_end..text.len().min(header_end + 40)];
            let line_len = memchr::memchr2(b'\n', b'\r', label_window).unwrap_or(label_window.len());
            let Some(label_len) = memmem::find(&label_window[..line_len], b"PRIVATE KEY-----") else {
                from = header_end;
                continue;
            };
            let body = header_end + label_len + b"PRIVATE KEY-----".len();
            // An unterminated block (a truncated value) is masked to the end.
            let end = match memmem::find(&text[body..], b"-----END ") {
                Some(end_at) => {
                    let after = body + end_at + b"-----END ".len();
                    match memmem::find(&text[after..], b"-----") {
                        Some(close) => after + close + 5,
                        None => text.len(),
                    }
                }
                None => text.len(),
            };
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::PrivateKey) });
            from = end;
        }
    }

    fn find_jwts(&self, text: &[u8], out: &mut Vec<Match>) {
        let mut from = 0;
        while let Some(at) = self.jwt.find(&text[from..]) {
            let start = from + at;
            if start > 0 && is_base64url(text[start - 1]) {
                from = start + 3;
                continue;
            }
            let header_end = start + run_len(&text[start..], is_base64url);
            let payload_start = header_end + 1;
            let parts_ok = header_end - start >= 10 && text.get(header_end) == Some(&b'.');
            let payload_end = if parts_ok { payload_start + run_len(&text[payload_start..], is_base64url) } else { 0 };
            if !parts_ok || payload_end - payload_start < 2 || text.get(payload_end) != Some(&b'.') {
                from = header_end.max(start + 3);
                continue;
            }
            // The signature is empty for unsigned ("alg": "none") tokens.
            let signature_start = payload_end + 1;
            let end = signature_start + run_len(&text[signature_start..], is_base64url);
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::Jwt) });
            from = end;
        }
    }
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// How many bytes at the front of `text` satisfy `pred`.
fn run_len(text: &[u8], pred: impl Fn(u8) -> bool) -> usize {
    text.iter().position(|&b| !pred(b)).unwrap_or(text.len())
}

/// Whether a match may start at `start`: no letter or digit glued before it.
fn starts_word(text: &[u8], start: usize) -> bool {
    start == 0 || !text[start - 1].is_ascii_alphanumeric()
}

/// Whether a match may end at `end`: no letter or digit glued after it.
fn ends_word(text: &[u8], end: usize) -> bool {
    end >= text.len() || !text[end].is_ascii_alphanumeric()
}

/// Sorts matches and keeps, of overlapping ones, the earliest (then longest).
fn resolve_overlaps(out: &mut Vec<Match>) {
    if out.len() < 2 {
        return;
    }
    out.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut last_end = 0;
    let mut first = true;
    out.retain(|m| {
        let keep = first || m.start >= last_end;
        if keep {
            last_end = m.end;
            first = false;
        }
        keep
    });
}

/// A run of digits with single separators between groups: the shape of card
/// numbers, SSNs and phone numbers.
struct DigitGroups {
    /// End of the last digit.
    end: usize,
    /// Digits, up to 32 (more are counted in `count` only).
    digits: [u8; 32],
    /// Number of digits.
    count: usize,
    /// Group lengths, up to 8.
    groups: [u8; 8],
    /// Number of groups (more than 8 are counted only).
    group_count: usize,
    /// Separators used (bit per byte kind) between groups.
    separators: u8,
}

/// Reads digit groups from `start` (a digit), joined by one of `separators`.
fn digit_groups(text: &[u8], start: usize, separators: &[u8]) -> DigitGroups {
    let mut groups =
        DigitGroups { end: start, digits: [0; 32], count: 0, groups: [0; 8], group_count: 0, separators: 0 };
    let mut i = start;
    loop {
        let run = run_len(&text[i..], |b| b.is_ascii_digit());
        for &d in &text[i..i + run] {
            if groups.count < groups.digits.len() {
                groups.digits[groups.count] = d - b'0';
            }
            groups.count += 1;
        }
        if groups.group_count < groups.groups.len() {
            groups.groups[groups.group_count] = u8::try_from(run).unwrap_or(u8::MAX);
        }
        groups.group_count += 1;
        i += run;
        groups.end = i;
        match (text.get(i), text.get(i + 1)) {
            (Some(&sep), Some(next)) if next.is_ascii_digit() && separators.contains(&sep) => {
                groups.separators |= if sep == b' ' {
                    1
                } else if sep == b'-' {
                    2
                } else {
                    4
                };
                i += 1;
            }
            _ => return groups,
        }
    }
}

impl DigitGroups {
    fn group_lens(&self) -> &[u8] {
        &self.groups[..self.group_count.min(self.groups.len())]
    }
}

/// Calls `each` at every digit that starts a word, with the groups read
/// from it; skips past what `each` consumed.
fn for_each_number(text: &[u8], separators: &[u8], mut each: impl FnMut(usize, &DigitGroups)) {
    let mut i = 0;
    while i < text.len() {
        let Some(at) = text[i..].iter().position(u8::is_ascii_digit) else { return };
        let start = i + at;
        if !starts_word(text, start) {
            i = start + run_len(&text[start..], |b| b.is_ascii_alphanumeric());
            continue;
        }
        let groups = digit_groups(text, start, separators);
        each(start, &groups);
        i = groups.end.max(start + 1);
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits.iter().rev().enumerate().map(|(i, &d)| LUHN_TERMS[i % 2][usize::from(d)]).sum();
    sum.is_multiple_of(10)
}

/// What each digit adds to a Luhn sum, as it is and doubled (every second
/// digit from the right is doubled, less 9 when that is above 9).
pub(super) const LUHN_TERMS: [[u32; 10]; 2] = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]];

fn find_cards(text: &[u8], out: &mut Vec<Match>) {
    for_each_number(text, b" -", |start, groups| {
        // Cards print in groups of 4 (or 4-6-5): shorter groups are lists
        // of small numbers, not one card.
        let grouped_ok = groups.group_count == 1 || groups.group_lens().iter().all(|&len| len >= 3);
        let n = groups.count;
        if (13..=19).contains(&n)
            && grouped_ok
            && groups.group_count <= 8
            && ends_word(text, groups.end)
            && luhn(&groups.digits[..n])
        {
            out.push(Match { start, end: groups.end, detector: DetectorId::Builtin(Builtin::Card) });
        }
    });
}

fn find_ssns(text: &[u8], out: &mut Vec<Match>) {
    for_each_number(text, b" -", |start, groups| {
        let lens = groups.group_lens();
        let shape_ok = (groups.group_count == 3 && lens == [3, 2, 4] && groups.separators.count_ones() == 1)
            || (groups.group_count == 1 && lens == [9]);
        if !shape_ok || !ends_word(text, groups.end) {
            return;
        }
        let d = &groups.digits;
        let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
        let group = u32::from(d[3]) * 10 + u32::from(d[4]);
        let serial = d[5..9].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
        // Never issued: area 000, 666 and 900-999; group 00; serial 0000.
        if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
            return;
        }
        out.push(Match { start, end: groups.end, detector: DetectorId::Builtin(Builtin::Ssn) });
    });
}

fn find_phones(text: &[u8], out: &mut Vec<Match>) {
    let mut i = 0;
    while i < text.len() {
        let Some(at) = text[i..].iter().position(|&b| b.is_ascii_digit() || b == b'+' || b == b'(') else { return };
        let start = i + at;
        i = start + 1;
        if !starts_word(text, start) || (start > 0 && matches!(text[start - 1], b'+' | b'.' | b'-')) {
            if text[start].is_ascii_digit() {
                i = start + run_len(&text[start..], |b| b.is_ascii_alphanumeric());
            }
            continue;
        }
        let international = text[start] == b'+';
        // Groups of digits; separators are one of " -." or parentheses
        // around the area code.
        let mut j = start + usize::from(international);
        let mut groups: [u8; 8] = [0; 8];
        let mut group_count = 0;
        let mut digits = 0;
        let mut parenthesised = false;
        loop {
            if text.get(j) == Some(&b'(') && !parenthesised {
                parenthesised = true;
                j += 1;
            }
            let run = run_len(&text[j..], |b| b.is_ascii_digit());
            if run == 0 || group_count == groups.len() {
                break;
            }
            groups[group_count] = u8::try_from(run).unwrap_or(u8::MAX);
            group_count += 1;
            digits += run;
            j += run;
            let mut k = j;
            if parenthesised && text.get(k) == Some(&b')') && group_count <= 2 {
                k += 1;
            }
            if matches!(text.get(k), Some(b' ' | b'-' | b'.')) {
                k += 1;
            }
            if k == j || !text.get(k).is_some_and(|b| b.is_ascii_digit() || *b == b'(') {
                if k > j && text.get(j) == Some(&b')') {
                    j += 1;
                }
                break;
            }
            j = k;
        }
        if digits == 0 {
            continue;
        }
        let end = j;
        let lens = &groups[..group_count];
        let accepted =
            if international { (8..=15).contains(&digits) } else { lens == [3, 3, 4] || lens == [1, 3, 3, 4] };
        if accepted && ends_word(text, end) && !(end < text.len() && text[end] == b'.' && ends_digit_after(text, end)) {
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::Phone) });
            i = end;
        } else {
            i = i.max(start + run_len(&text[start..], |b| b.is_ascii_digit() || b == b'+').max(1));
        }
    }
}

/// Whether a digit follows `text[at]` (so `at` is inside a longer dotted number).
fn ends_digit_after(text: &[u8], at: usize) -> bool {
    text.get(at + 1).is_some_and(u8::is_ascii_digit)
}

fn find_ipv4s(text: &[u8], out: &mut Vec<Match>) {
    let mut i = 0;
    while i < text.len() {
        let Some(at) = text[i..].iter().position(u8::is_ascii_digit) else { return };
        let start = i + at;
        if !starts_word(text, start) || (start > 0 && text[start - 1] == b'.') {
            i = start + run_len(&text[start..], |b| b.is_ascii_alphanumeric() || b == b'.');
            continue;
        }
        let mut j = start;
        let mut octets = 0;
        let mut valid = true;
        while octets < 4 {
            let run = run_len(&text[j..], |b| b.is_ascii_digit());
            if run == 0 || run > 3 {
                valid = false;
                break;
            }
            let value = text[j..j + run].iter().fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
            if value > 255 {
                valid = false;
                break;
            }
            j += run;
            octets += 1;
            if octets < 4 {
                if text.get(j) != Some(&b'.') {
                    valid = false;
                    break;
                }
                j += 1;
            }
        }
        // "1.2.3.4.5" is a version, not an address.
        let dotted_on = text.get(j) == Some(&b'.') && ends_digit_after(text, j);
        if valid && ends_word(text, j) && !dotted_on {
            out.push(Match { start, end: j, detector: DetectorId::Builtin(Builtin::Ipv4) });
            i = j;
        } else {
            i = start + run_len(&text[start..], |b| b.is_ascii_alphanumeric() || b == b'.').max(1);
        }
    }
}

/// Whether `b` may be in the local part of an e-mail address (before the `@`).
pub(super) fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// E-mail addresses around each `@`.
fn find_emails(text: &[u8], out: &mut Vec<Match>) {
    let is_domain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-');
    let mut last_end = 0;
    for at in memchr::memchr_iter(b'@', text) {
        if at < last_end {
            continue;
        }
        let mut start = at;
        while start > last_end && is_email_local(text[start - 1]) {
            start -= 1;
        }
        while start < at && text[start] == b'.' {
            start += 1;
        }
        let mut end = at + 1 + run_len(&text[at + 1..], is_domain);
        while end > at + 1 && matches!(text[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &text[at + 1..end];
        let Some(last_dot) = domain.iter().rposition(|&b| b == b'.') else { continue };
        let tld = &domain[last_dot + 1..];
        // Domains are short: a loop beats building a searcher.
        let labels_ok = !domain.starts_with(b".") && !domain.windows(2).any(|pair| pair[0] == b'.' && pair[1] == b'.');
        if start < at && labels_ok && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) {
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::Email) });
            last_end = end;
        }
    }
}

fn find_ibans(text: &[u8], out: &mut Vec<Match>) {
    let is_iban_char = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit();
    let mut i = 0;
    while i + 4 <= text.len() {
        let Some(at) = text[i..].iter().position(u8::is_ascii_uppercase) else { return };
        let start = i + at;
        i = start + 1;
        let head = &text[start..];
        if head.len() < 15
            || !starts_word(text, start)
            || !(head[1].is_ascii_uppercase() && head[2].is_ascii_digit() && head[3].is_ascii_digit())
        {
            continue;
        }
        // Bare, or printed in groups of four separated by single spaces.
        let mut chars = [0u8; 34];
        let mut count = 0;
        let mut j = start;
        let mut fits = true;
        loop {
            let run = run_len(&text[j..], is_iban_char);
            if count + run > chars.len() {
                fits = false;
                break;
            }
            chars[count..count + run].copy_from_slice(&text[j..j + run]);
            count += run;
            j += run;
            if run == 4 && text.get(j) == Some(&b' ') && text.get(j + 1).is_some_and(|&b| is_iban_char(b)) {
                j += 1;
                continue;
            }
            break;
        }
        if fits && (15..=34).contains(&count) && ends_word(text, j) && iban_checksum_ok(&chars[..count]) {
            out.push(Match { start, end: j, detector: DetectorId::Builtin(Builtin::Iban) });
            i = j;
        }
    }
}

/// ISO 13616: move the first four characters to the end, letters become
/// 10..35, and the number is 1 modulo 97.
fn iban_checksum_ok(iban: &[u8]) -> bool {
    let rearranged = iban[4..].iter().chain(&iban[..4]);
    let mut remainder = 0u32;
    for &c in rearranged {
        remainder = if c.is_ascii_digit() {
            (remainder * 10 + u32::from(c - b'0')) % 97
        } else {
            (remainder * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    remainder == 1
}

fn find_aws_keys(text: &[u8], out: &mut Vec<Match>) {
    let mut from = 0;
    for start in memchr::memchr_iter(b'A', text) {
        let end = start + 20;
        if start < from || !matches!(text.get(start + 1..start + 4), Some(b"KIA" | b"SIA")) {
            continue;
        }
        let body_ok = text
            .get(start + 4..end)
            .is_some_and(|rest| rest.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        if body_ok && starts_word(text, start) && ends_word(text, end) {
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::AwsKey) });
            from = end;
        }
    }
}

/// Shortest token the API key detector considers.
const API_KEY_MIN_LEN: usize = 20;
/// Longest: longer runs are data blobs (base64 images…), not keys.
const API_KEY_MAX_LEN: usize = 512;
/// Bits of Shannon entropy per character a token needs. Random base62 keys
/// of 20+ characters score 4.0 and more; words, identifiers in camelCase,
/// UUIDs and hex hashes stay below it or lack a character class.
const API_KEY_MIN_ENTROPY: f64 = 3.7;

fn find_api_keys(text: &[u8], out: &mut Vec<Match>) {
    let is_token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+' | b'/' | b'=');
    let mut i = 0;
    while i < text.len() {
        let Some(at) = text[i..].iter().position(|&b| is_token(b)) else { return };
        let start = i + at;
        let end = start + run_len(&text[start..], is_token);
        i = end;
        if !(API_KEY_MIN_LEN..=API_KEY_MAX_LEN).contains(&(end - start)) {
            continue;
        }
        let token = &text[start..end];
        let summary = Summary::of(token);
        let uppers = token.iter().filter(|b| b.is_ascii_uppercase()).count();
        let lowers = token.iter().filter(|b| b.is_ascii_lowercase()).count();
        if summary.digits >= 2 && uppers >= 2 && lowers >= 2 && entropy(token) >= API_KEY_MIN_ENTROPY {
            out.push(Match { start, end, detector: DetectorId::Builtin(Builtin::ApiKey) });
        }
    }
}

/// Shannon entropy in bits per byte.
fn entropy(token: &[u8]) -> f64 {
    let mut counts = [0u16; 256];
    for &b in token {
        counts[usize::from(b)] = counts[usize::from(b)].saturating_add(1);
    }
    let len = token.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / len).map(|p| -p * p.log2()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(builtins: &[Builtin], text: &str) -> Vec<(String, &'static str)> {
        let detectors = Detectors::new(builtins, Vec::new());
        let mut out = Vec::new();
        detectors.find(text.as_bytes(), &mut out);
        out.iter()
            .map(|m| {
                let DetectorId::Builtin(b) = m.detector else { unreachable!("no custom detectors here") };
                (text[m.start..m.end].to_owned(), b.name())
            })
            .collect()
    }

    fn spans(builtin: Builtin, text: &str) -> Vec<String> {
        found(&[builtin], text).into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn cards_are_luhn_checked_with_spaces_or_dashes() {
        assert_eq!(spans(Builtin::Card, "card 4111111111111111 ok"), ["4111111111111111"]);
        assert_eq!(spans(Builtin::Card, "4111 1111 1111 1111"), ["4111 1111 1111 1111"]);
        assert_eq!(spans(Builtin::Card, "x:5500-0000-0000-0004;"), ["5500-0000-0000-0004"]);
        assert_eq!(spans(Builtin::Card, "amex 3782 822463 10005."), ["3782 822463 10005"]);
        assert!(spans(Builtin::Card, "4111111111111112").is_empty(), "Luhn fails");
        assert!(spans(Builtin::Card, "id A4111111111111111").is_empty(), "glued to a letter");
        assert!(spans(Builtin::Card, "41111111111111110000000").is_empty(), "too long");
        assert!(spans(Builtin::Card, "1 2 3 4 5 6 7 8 9 0 1 2 8").is_empty(), "a list of small numbers");
        assert!(spans(Builtin::Card, "no digits here at all, nothing").is_empty());
        assert_eq!(
            spans(Builtin::Card, "a 4111111111111111 b 5500000000000004"),
            ["4111111111111111", "5500000000000004"]
        );
    }

    #[test]
    fn emails_need_a_domain_with_a_tld() {
        assert_eq!(spans(Builtin::Email, "mail alice.smith+x@example.co.uk."), ["alice.smith+x@example.co.uk"]);
        assert_eq!(spans(Builtin::Email, "<bob@mail.example.com>, carol@x.io"), ["bob@mail.example.com", "carol@x.io"]);
        assert!(spans(Builtin::Email, "user@localhost").is_empty());
        assert!(spans(Builtin::Email, "@example.com and a@b.c1").is_empty());
        assert!(spans(Builtin::Email, "price @ 3.50").is_empty());
        assert!(spans(Builtin::Email, "a@example..com b@.example.com").is_empty(), "empty labels");
    }

    #[test]
    fn ssns_only_in_issued_ranges() {
        assert_eq!(spans(Builtin::Ssn, "ssn 123-45-6789"), ["123-45-6789"]);
        assert_eq!(spans(Builtin::Ssn, "123 45 6789 and 123456789"), ["123 45 6789", "123456789"]);
        assert!(spans(Builtin::Ssn, "666-45-6789 000-12-3456 912-34-5678 123-00-4567 123-45-0000").is_empty());
        assert!(spans(Builtin::Ssn, "123-45 6789 1234567890 12-345-6789").is_empty());
        assert!(found(&Builtin::DEFAULT, "123-45-6789").is_empty(), "opt-in: not a default detector");
    }

    #[test]
    fn ibans_are_mod97_checked() {
        assert_eq!(spans(Builtin::Iban, "iban DE89370400440532013000."), ["DE89370400440532013000"]);
        assert_eq!(spans(Builtin::Iban, "GB82 WEST 1234 5698 7654 32 paid"), ["GB82 WEST 1234 5698 7654 32"]);
        assert!(spans(Builtin::Iban, "DE89370400440532013001").is_empty(), "checksum fails");
        assert!(spans(Builtin::Iban, "SKU AB12CDEFGHIJKLMNOP").is_empty());
    }

    #[test]
    fn phones_international_or_north_american() {
        assert_eq!(spans(Builtin::Phone, "call +44 20 7946 0958 now"), ["+44 20 7946 0958"]);
        assert_eq!(spans(Builtin::Phone, "(555) 123-4567"), ["(555) 123-4567"]);
        assert_eq!(spans(Builtin::Phone, "tel 555.123.4567, 1-555-123-4567"), ["555.123.4567", "1-555-123-4567"]);
        assert!(spans(Builtin::Phone, "2024-01-15 12345678 10.1.2.3").is_empty(), "dates, ids, addresses");
    }

    #[test]
    fn ipv4_addresses_not_versions() {
        assert_eq!(spans(Builtin::Ipv4, "from 10.20.0.5:5432 and 192.168.1.255/24"), ["10.20.0.5", "192.168.1.255"]);
        assert!(spans(Builtin::Ipv4, "v1.2.3.4 1.2.3.4.5 256.1.1.1 1.2.3 99999999999.1.1.1").is_empty());
    }

    #[test]
    fn aws_keys_jwts_and_private_keys() {
        assert_eq!(spans(Builtin::AwsKey, "key=AKIAIOSFODNN7EXAMPLE;"), ["AKIAIOSFODNN7EXAMPLE"]);
        assert_eq!(spans(Builtin::AwsKey, "ASIAY34FZKBOKMUTVV7A"), ["ASIAY34FZKBOKMUTVV7A"]);
        assert!(spans(Builtin::AwsKey, "AKIAIOSFODNN7EXAMPLEX ASIA is a continent").is_empty());
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(spans(Builtin::Jwt, &format!("Bearer {jwt}")), [jwt]);
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        assert_eq!(spans(Builtin::Jwt, unsigned), [unsigned]);
        assert!(spans(Builtin::Jwt, "eyJhbGciOiJIUzI1NiJ9 only one part. eyJ.x.y").is_empty());
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        assert_eq!(spans(Builtin::PrivateKey, &format!("key: {pem}\ntrailer")), [pem]);
        let truncated = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0";
        assert_eq!(spans(Builtin::PrivateKey, truncated), [truncated]);
        assert!(spans(Builtin::PrivateKey, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_empty());
    }

    #[test]
    fn api_keys_by_entropy_not_words_uuids_or_hashes() {
        assert_eq!(
            spans(Builtin::ApiKey, "token sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            ["sk_live_4eC39HqLyjWDarjtT1zdp7dc"]
        );
        assert_eq!(
            spans(Builtin::ApiKey, "ghp_R8a2Kd93LmQx7ZpW4nVb1Tc6Ye0Hs5Jf"),
            ["ghp_R8a2Kd93LmQx7ZpW4nVb1Tc6Ye0Hs5Jf"]
        );
        for ordinary in [
            "550e8400-e29b-41d4-a716-446655440000",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "Internationalization of the AccountsReceivable module",
            "getUserAccountsByIdV2",
            "ORDER-2024-000123-XYZ-ABC",
            "/usr/local/share/airlock/policies/examples",
        ] {
            assert!(spans(Builtin::ApiKey, ordinary).is_empty(), "{ordinary}");
        }
    }

    #[test]
    fn overlaps_keep_the_earliest_longest_and_custom_regexes_run() {
        let custom = CustomDetector { name: "order".into(), regex: Regex::new("ORD-[0-9]{6}").unwrap() };
        let detectors = Detectors::new(&Builtin::ALL, vec![custom]);
        let text = b"alice@example.com paid 4111 1111 1111 1111 for ORD-123456";
        let mut out = Vec::new();
        detectors.find(text, &mut out);
        let names: Vec<&str> = out.iter().map(|m| detectors.name(m.detector)).collect();
        assert_eq!(names, ["email", "card", "order"]);
        assert!(out.windows(2).all(|w| w[0].end <= w[1].start));
        let mut none = Vec::new();
        detectors.find(b"Jane Doe, 12 Main Street, Springfield", &mut none);
        assert!(none.is_empty() && none.capacity() == 0, "nothing matched, nothing allocated");
    }

    #[test]
    fn summaries_and_prefilters_never_rule_out_a_match() {
        // Values built from pieces of what the detectors look for, and
        // bytes that break them up, short (classes) and long (bytes).
        let pieces: [&[u8]; 41] = [
            b"4111 1111 1111 1111",
            b"4111-1111-1111-1111",
            b"3714 496353 98431",
            b"5500 000 0000 00004",
            b"371449635398431",
            b"first_last+tag%x@mail.example.co.uk",
            b"a@b..io",
            b"-x.@-y.io.-",
            b"(a)=b/c@d.io",
            b"%",
            b"078-05-1120",
            b"a.b@example.com",
            b"DE89 3704 0044 0532 0130 00",
            b"GB82WEST12345698765432",
            b"+44 20 7946 0958",
            b"(555) 123-4567",
            b"1-(555)123.4567",
            b"555-(123)-4567",
            b"555-123-(4567",
            b"1 555 123.4567",
            b"+1 (555) 123 4567",
            b"+4420794609",
            b"078 05 1120",
            b"078051120",
            b"2024-05-12 12:34:56.123456+00",
            b"10.0.0.1",
            b"AKIAIOSFODNN7EXAMPLE",
            b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            b"sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            b"Xk9fQ2pL7vR4tY8wZ3mN6bH1",
            b"-----BEGIN PRIVATE KEY-----MIIB-----END PRIVATE KEY-----",
            b"7",
            b" ",
            b"-",
            b".",
            b"@",
            b"A",
            b"z",
            b"_",
            b"/+=",
            b"\xc3\xa9",
        ];
        let sets = Detectors::every_set();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 16) as usize % below
        };
        for _ in 0..20_000 {
            let mut text = Vec::new();
            for _ in 0..1 + next(6) {
                let piece = pieces[next(pieces.len())];
                // Cut pieces short or keep them whole.
                let cut = if next(3) == 0 { next(piece.len() + 1) } else { piece.len() };
                text.extend_from_slice(&piece[..cut]);
            }
            text.truncate(next(100));
            for detectors in &sets {
                let mut found = Vec::new();
                detectors.find(&text, &mut found);
                let shown = String::from_utf8_lossy(&text);
                assert_eq!(found, detectors.find_unfiltered(&text), "{shown:?} with {:#x}", detectors.enabled);
            }
            if let Some(classes) = ByteClasses::of(&text) {
                assert_eq!(Summary::from_classes(&classes), Summary::of(&text));
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for builtin in Builtin::ALL {
            assert_eq!(Builtin::from_name(builtin.name()), Some(builtin));
        }
        assert_eq!(Builtin::from_name("credit_card"), None);
    }
}
