//! The classifier's quick tokenizer against sqlparser's: whatever text the
//! quick one reads, sqlparser's reads too, into the same tokens. A
//! difference would have the classifier parse something other than what
//! sqlparser (and the fallback path) sees.
#![no_main]

use airlock::guardrails::lex::plain_tokens;
use libfuzzer_sys::fuzz_target;
use sqlparser::{dialect::PostgreSqlDialect, tokenizer::Tokenizer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(plain) = plain_tokens(text) else { return };
    let plain: Vec<_> = plain.into_iter().map(|token| token.token).collect();
    match Tokenizer::new(&PostgreSqlDialect {}, text).tokenize() {
        Ok(tokens) => assert_eq!(plain, tokens, "{text:?}"),
        Err(error) => panic!("{text:?}: read here, but sqlparser says {error}"),
    }
});
