//! Arbitrary values through the masking detectors: what `find` reports,
//! after the summaries and prefilters that skip scanners, is exactly what
//! every enabled scanner finds on the whole value. A prefilter that ruled
//! out a real match would let a card number or a key through unmasked.
#![no_main]

use std::sync::OnceLock;

use airlock::masking::{Builtin, detect::Detectors};
use libfuzzer_sys::fuzz_target;

/// Every detector, the default set and each alone (which are on decides
/// how short a value may be skipped), each also as built for any x86-64 CPU.
fn sets() -> &'static [Detectors] {
    static SETS: OnceLock<Vec<Detectors>> = OnceLock::new();
    SETS.get_or_init(|| {
        [&Builtin::ALL[..], &Builtin::DEFAULT[..]]
            .into_iter()
            .chain(Builtin::ALL.iter().map(std::slice::from_ref))
            .map(|builtins| Detectors::new(builtins, Vec::new()))
            .flat_map(|detectors| {
                let portable = detectors.portable();
                [detectors, portable]
            })
            .collect()
    })
}

fuzz_target!(|value: &[u8]| {
    let mut found = Vec::new();
    for detectors in sets() {
        found.clear();
        detectors.find(value, &mut found);
        assert_eq!(found, detectors.find_unfiltered(value), "{:?}", String::from_utf8_lossy(value));
    }
});
