//! The guard's reading of PostgreSQL's parse tree against the same parser's
//! other output: libpg_query prints the tree as JSON, which the guard reads
//! with its own flat reader; the `pg_query` crate decodes it from protobuf.
//! For any text, both must agree on whether it parses, how many statements
//! it holds, and what kind each one is; and where the crate finds a
//! DELETE or UPDATE without WHERE, the guard must class it as one.
#![no_main]

use airlock::guardrails::{
    Classification, StatementClass,
    parser::{self, Lexing},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains('\0') {
        return;
    }
    let ours = parser::parse(text, Lexing::default()).map(|parsed| {
        let tree = parsed.tree().expect("libpg_query's JSON reads");
        parser::statement_kinds(&tree).into_iter().map(str::to_owned).collect::<Vec<_>>()
    });
    let theirs = pg_query::parse(text).map(|result| {
        result
            .protobuf
            .stmts
            .iter()
            .map(|raw| {
                let node = raw.stmt.as_ref().and_then(|stmt| stmt.node.as_ref()).expect("a statement");
                format!("{node:?}").split('(').next().unwrap_or_default().to_owned()
            })
            .collect::<Vec<_>>()
    });
    match (&ours, &theirs) {
        (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{text:?}"),
        (Err(_), Err(_)) => {}
        _ => panic!("{text:?}: guard {:?}, pg_query {:?}", ours.is_ok(), theirs.is_ok()),
    }
    let Ok(theirs) = pg_query::parse(text) else { return };
    let classification = Classification::of(text);
    for raw in &theirs.protobuf.stmts {
        use pg_query::NodeEnum;
        let Some(node) = raw.stmt.as_ref().and_then(|stmt| stmt.node.as_ref()) else { continue };
        let whole = match node {
            NodeEnum::DeleteStmt(delete) if delete.where_clause.is_none() => StatementClass::DeleteWithoutWhere,
            NodeEnum::UpdateStmt(update) if update.where_clause.is_none() => StatementClass::UpdateWithoutWhere,
            _ => continue,
        };
        assert!(classification.classes.contains(&whole), "{text:?}: {classification:?}");
    }
});
