//! Arbitrary text through the statement classifier: no panic, and
//! whatever does not parse is always classified as unparsed (fail closed),
//! so a guardrail that refuses unparsed text refuses it.
#![no_main]

use airlock::guardrails::{Classification, StatementClass};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
