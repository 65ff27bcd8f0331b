//! Arbitrary text through the statement classifier, read both ways a
//! session may lex strings (the first byte picks): no panic; whatever does
//! not parse is unparsed (fail closed); a statement appended after the text
//! is seen or the whole is unparsed. Two texts (split at the first 0xff
//! byte) through one cache: whatever the cache answers for the second, from
//! its shape or not, is what parsing it says.
#![no_main]

use airlock::guardrails::{Classification, Classifier, StatementClass, parser::Lexing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first_byte, data)) = data.split_first() else { return };
    let lexing = Lexing { backslash_escapes: first_byte & 1 == 1 };
    if let Some(split) = data.iter().position(|b| *b == 0xff)
        && let (Ok(first), Ok(second)) = (std::str::from_utf8(&data[..split]), std::str::from_utf8(&data[split + 1..]))
    {
        let classifier = Classifier::default();
        classifier.classify(first, lexing);
        let (cached, parsed) = (classifier.classify(second, lexing), Classification::read(second, lexing));
        assert_eq!(
            (&cached.classes, &cached.tables, &cached.functions, cached.statements),
            (&parsed.classes, &parsed.tables, &parsed.functions, parsed.statements),
            "{first:?} then {second:?} ({lexing:?})"
        );
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let classification = Classification::read(text, lexing);
    if classification.parse_error.is_some() {
        assert!(classification.classes.contains(&StatementClass::Unparsed), "{text:?}: {classification:?}");
    }
    if classification.statements > 1 {
        assert!(classification.classes.contains(&StatementClass::MultiStatement), "{text:?}");
    }
    let hidden = format!("{text}\n;DROP TABLE zq9");
    let c = Classification::read(&hidden, lexing);
    assert!(
        c.classes.contains(&StatementClass::Drop) || c.classes.contains(&StatementClass::Unparsed),
        "{hidden:?}: {c:?}"
    );
});
