//! Arbitrary values through the masking detectors: what `find` reports,
//! after the summaries and prefilters that skip scanners, is exactly what
//! every enabled scanner finds on the whole value. A prefilter that ruled
//! out a real match would let a card number or a key through unmasked.
#![no_main]

use std::sync::OnceLock;

use airlock::masking::detect::Detectors;
use libfuzzer_sys::fuzz_target;

fn sets() -> &'static [Detectors] {
    static SETS: OnceLock<Vec<Detectors>> = OnceLock::new();
    SETS.get_or_init(Detectors::every_set)
}

fuzz_target!(|value: &[u8]| {
    let mut found = Vec::new();
    for detectors in sets() {
        found.clear();
        detectors.find(value, &mut found);
        assert_eq!(found, detectors.find_unfiltered(value), "{:?}", String::from_utf8_lossy(value));
    }
});
