//! Arbitrary text through the statement classifier: no panic, and
//! whatever does not parse is always classified as unparsed (fail closed),
//! so a guardrail that refuses unparsed text refuses it. Two texts (split
//! at the first 0xff byte) through one cache: whatever the cache answers
//! for the second, from its shape or not, is what parsing it says.
#![no_main]

use airlock::guardrails::{Classification, Classifier, StatementClass};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(split) = data.iter().position(|b| *b == 0xff)
        && let (Ok(first), Ok(second)) = (std::str::from_utf8(&data[..split]), std::str::from_utf8(&data[split + 1..]))
    {
        let classifier = Classifier::default();
        classifier.classify(first);
        let (cached, parsed) = (classifier.classify(second), Classification::of(second));
        assert_eq!(
            (&cached.classes, &cached.tables, &cached.functions, cached.statements),
            (&parsed.classes, &parsed.tables, &parsed.functions, parsed.statements),
            "{first:?} then {second:?}"
        );
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let classification = Classification::of(text);
    if classification.parse_error.is_some() {
        assert!(classification.classes.contains(&StatementClass::Unparsed), "{text:?}: {classification:?}");
    }
    if classification.statements > 1 {
        assert!(classification.classes.contains(&StatementClass::MultiStatement), "{text:?}");
    }
    // A statement hidden after a comment or string is still seen.
    let hidden = format!("{text}\n;DROP TABLE zq9");
    let c = Classification::of(&hidden);
    assert!(
        c.classes.contains(&StatementClass::Drop) || c.classes.contains(&StatementClass::Unparsed),
        "{hidden:?}: {c:?}"
    );
});
