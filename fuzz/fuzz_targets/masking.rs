//! Arbitrary message bodies through the masking rewriters: no panic, and
//! whatever a rewriter writes is again a well-formed body of its kind (it
//! goes through the same rewriter without error and with the same shape).
#![no_main]

use std::{path::Path, sync::{Arc, OnceLock}};

use airlock::{
    masking::{ColumnDesc, ColumnPlan, CopyFormat, Masker, TokenKey},
    policy::Policy,
};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[[target]]
name = "fuzz"
protocol = "postgres"
port = 5432
addresses = ["10.0.0.1"]
# Column rules need just-in-time logins (column names come from the catalog as the session's role).
[target.credentials]
admin_file = "/nonexistent/admin.toml"
[[target.credentials.role]]
name = "r"
users = ["*"]
[target.masking]
detectors = ["card", "email", "ssn", "iban", "phone", "ipv4", "aws_key", "jwt", "private_key", "api_key"]
[[target.masking.detector]]
name = "ref"
regex = "R[0-9]{3}"
strategy = "null"
[[target.masking.detector]]
name = "email"
strategy = "token"
[[target.masking.rules]]
column_pattern = "s*"
strategy = "partial"
keep = 2
[[target.masking.rules]]
column_pattern = "n*"
strategy = "null"
"#;

fn masker() -> &'static Masker {
    static MASKER: OnceLock<Masker> = OnceLock::new();
    MASKER.get_or_init(|| {
        let policy = Policy::from_sources([(Path::new("fuzz.toml"), POLICY)]).expect("fuzz policy");
        let masking = policy.targets[0].masking.as_ref().expect("masking section");
        Masker::new(masking, "fuzz", &[], Arc::new(TokenKey::from_bytes(b"fuzz")))
    })
}

/// Column types and formats the plan draws from: text, json, jsonb, arrays,
/// an opaque type, text and binary.
const TYPES: [(u32, i16); 10] =
    [(25, 0), (25, 1), (114, 0), (3802, 0), (3802, 1), (1009, 0), (1009, 1), (3807, 1), (23, 0), (23, 1)];
const NAMES: [&str; 3] = ["plain", "secret", "nulled"];

fn plan(masker: &Masker, selector: &[u8]) -> ColumnPlan {
    let columns: Vec<ColumnDesc<'_>> = selector
        .iter()
        .map(|b| {
            let (type_oid, format) = TYPES[usize::from(b % 10)];
            ColumnDesc { field_name: NAMES[usize::from(b / 10 % 3)], qualified: None, type_oid, format }
        })
        .collect();
    masker.plan(&columns)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let masker = masker();
    let mut out = Vec::new();
    match mode % 5 {
        0 => {
            // Column kinds first (count from the row's own header), then the body.
            let Some((&columns, rest)) = rest.split_first() else { return };
            let columns = usize::from(columns % 8);
            let Some((selector, body)) = rest.split_at_checked(columns) else { return };
            let mut plan = plan(masker, selector);
            if let Ok(outcome) = masker.mask_data_row(body, &mut plan, &mut out) {
                assert_eq!(outcome.changed(), !out.is_empty());
                if outcome.changed() {
                    assert_eq!(&out[..2], &body[..2], "column count kept");
                    masker.mask_data_row(&out, &mut plan, &mut Vec::new()).expect("masked row re-parses");
                }
            }
        }
        mode @ (1 | 2) => {
            let format = if mode == 1 { CopyFormat::text() } else { CopyFormat::csv() };
            if let Ok(outcome) = masker.mask_copy_data(rest, &format, None, &[], &mut out) {
                assert_eq!(outcome.changed(), !out.is_empty());
                if outcome.changed() {
                    let rows = |b: &[u8]| masker.mask_copy_data(b, &format, None, &[], &mut Vec::new()).map(|_| ());
                    rows(&out).expect("masked COPY data re-parses");
                }
            }
        }
        3 => {
            if let Ok(outcome) = masker.mask_error_fields(rest, &mut out) {
                if outcome.changed() {
                    let codes = |b: &[u8]| b.split(|&c| c == 0).filter_map(|f| f.first().copied()).collect::<Vec<_>>();
                    masker.mask_error_fields(&out, &mut Vec::new()).expect("masked fields re-parse");
                    assert_eq!(codes(&out), codes(rest), "same fields in the same order");
                }
            }
        }
        _ => {
            if let Ok(outcome) = masker.mask_notification(rest, &mut out) {
                if outcome.changed() {
                    masker.mask_notification(&out, &mut Vec::new()).expect("masked notification re-parses");
                    assert_eq!(&out[..4], &rest[..4]);
                }
            }
        }
    }
});
