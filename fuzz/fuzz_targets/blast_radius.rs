//! What `airlock blast-radius` reads from servers it does not control:
//! table and column names (any database user may create them) and OpenBao's
//! lookup-self answers. Naming a column's kind and reading a token's facts
//! never panic; a cell of the report's table wraps to its column's width
//! and loses none of its text.
#![no_main]

use airlock::blast_radius::{report::render_table, sensitivity, token::TokenFacts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&width, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let (name, type_name) = text.split_once('\0').unwrap_or((text, "text"));
    let _ = sensitivity::kind_by_name(name, type_name);
    if let Ok(answer) = serde_json::from_str::<serde_json::Value>(text) {
        let facts = TokenFacts::from_lookup(&answer);
        let _ = (facts.lifetime(), facts.assess(true));
    }
    let cap = usize::from(width % 64).max(1);
    let table = render_table(&["H"], &[cap], &[vec![text.to_owned()]]);
    let body: Vec<&str> = table.lines().skip(1).collect();
    for line in &body {
        assert!(line.chars().count() <= cap, "{line:?} is wider than {cap}");
    }
    let kept: String = body.concat().chars().filter(|c| !c.is_whitespace()).collect();
    let given: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(kept, given, "text lost or changed in wrapping");
});
