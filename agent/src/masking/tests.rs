//! Masking end to end: policy text → masker → rewritten message bodies.

use std::{path::Path, sync::Arc};

use super::*;
use crate::policy::Policy;

const POLICY: &str = r#"
[[target]]
name = "prod-db"
protocol = "postgres"
port = 5432
addresses = ["10.20.0.5"]

[[target.access]]
action = "allow"
groups = ["dba", "analytics", "support"]

# Column rules read real column names from the catalog as the session's role.
[target.credentials]
admin_file = "/etc/airlock/credentials/prod-db.toml"

[[target.credentials.role]]
name = "analyst"
groups = ["analytics"]

[target.masking]
detectors = ["card", "email", "iban", "aws_key", "jwt", "private_key", "api_key"]
exempt_groups = ["dba"]

[[target.masking.detector]]
name = "card"
strategy = "partial"
keep = 4

[[target.masking.detector]]
name = "order_ref"
regex = "ORD-[0-9]{6}"
strategy = "token"

[[target.masking.rules]]
column = "public.customers.email"
strategy = "token"
exempt_groups = ["support"]

[[target.masking.rules]]
column_pattern = "*ssn*"
strategy = "null"

[[target.masking.rules]]
column_pattern = "secret_*"
"#;

fn policy() -> MaskingPolicy {
    let policy = Policy::from_sources([(Path::new("prod.toml"), POLICY)]).unwrap_or_else(|e| panic!("{e}"));
    policy.targets[0].masking.clone().unwrap_or_else(|| panic!("no masking section"))
}

fn masker_for(groups: &[&str]) -> Masker {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    Masker::new(&policy(), "ann", &groups, Arc::new(TokenKey::from_bytes(b"test key")))
}

fn masker() -> Masker {
    masker_for(&["analytics"])
}

fn token(value: &str) -> String {
    let mut out = Vec::new();
    TokenKey::from_bytes(b"test key").token(value.as_bytes(), &mut out);
    String::from_utf8(out).unwrap()
}

fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
    let mut body = (values.len() as i16).to_be_bytes().to_vec();
    for value in values {
        match value {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    body
}

fn parse_row(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let count = i16::from_be_bytes([body[0], body[1]]);
    let mut pos = 2;
    let mut values = Vec::new();
    for _ in 0..count {
        let len = i32::from_be_bytes(body[pos..pos + 4].try_into().unwrap());
        pos += 4;
        if len < 0 {
            values.push(None);
        } else {
            values.push(Some(body[pos..pos + len as usize].to_vec()));
            pos += len as usize;
        }
    }
    assert_eq!(pos, body.len(), "lengths add up");
    values
}

fn text(value: &Option<Vec<u8>>) -> Option<&str> {
    value.as_deref().map(|v| std::str::from_utf8(v).unwrap())
}

fn col<'a>(field: &'a str, qualified: Option<&'a str>, type_oid: u32, format: i16) -> ColumnDesc<'a> {
    ColumnDesc { field_name: field, qualified, type_oid, format }
}

fn counts(outcome: &MaskOutcome) -> Vec<(Option<&str>, &str, u64)> {
    outcome.hits.iter().map(|h| (h.column.as_deref(), &*h.reason, h.count)).collect()
}

#[test]
fn data_row_masks_columns_and_content_and_rebuilds_lengths() {
    let masker = masker();
    let mut plan = masker.plan(&[
        col("id", Some("public.customers.id"), 23, 0),
        col("email", Some("public.customers.email"), 25, 0),
        col("ssn", Some("public.customers.ssn"), 1043, 0),
        col("note", Some("public.customers.note"), 25, 0),
        col("nothing", None, 25, 0),
        col("card_no", None, 20, 0),
    ]);
    assert!(plan.is_active());
    let body = data_row(&[
        Some(b"42"),
        Some(b"alice@example.com"),
        Some(b"123-45-6789"),
        Some(b"paid with 4111 1111 1111 1111, ref ORD-123456"),
        None,
        Some(b"4111111111111111"),
    ]);
    let mut out = Vec::new();
    let outcome = masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    assert_eq!(text(&row[0]), Some("42"));
    assert_eq!(text(&row[1]), Some(token("alice@example.com").as_str()));
    assert_eq!(row[2], None, "null strategy");
    assert_eq!(text(&row[3]), Some(format!("paid with **** **** **** 1111, ref {}", token("ORD-123456")).as_str()));
    assert_eq!(row[4], None);
    assert_eq!(row[5], None, "a card in a bigint column can only become NULL");
    assert_eq!(
        counts(&outcome),
        [
            // Detector hits as found, then rule hits (counted per column).
            (Some("public.customers.note"), "card", 1),
            (Some("public.customers.note"), "order_ref", 1),
            (Some("card_no"), "card", 1),
            (Some("public.customers.email"), "column public.customers.email", 1),
            (Some("public.customers.ssn"), "column_pattern *ssn*", 1),
        ]
    );

    // Nothing to mask: nothing written, the caller forwards the original.
    let clean = data_row(&[Some(b"7"), None, None, Some(b"Jane Doe, 12 Main St"), None, Some(b"12")]);
    let mut untouched = Vec::new();
    let outcome = masker.mask_data_row(&clean, &mut plan, &mut untouched).unwrap();
    assert!(!outcome.changed() && untouched.is_empty());
}

#[test]
fn exemptions_per_person_and_rule() {
    let dba = masker_for(&["dba", "analytics"]);
    assert!(dba.is_noop(), "exempt from the whole section");
    assert!(!policy().applies_to("ann", &["dba".into()]));
    assert!(policy().applies_to("ann", &["support".into()]));
    let support = masker_for(&["support"]);
    let mut plan = support.plan(&[col("email", Some("public.customers.email"), 25, 0), col("ssn", None, 25, 0)]);
    let body = data_row(&[Some(b"bob@example.org"), Some(b"123456789")]);
    let mut out = Vec::new();
    let outcome = support.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    assert_eq!(text(&row[0]), Some("[masked:email]"), "the column rule is lifted, detectors still run");
    assert_eq!(row[1], None);
    assert_eq!(outcome.hits.len(), 2);
}

#[test]
fn aliases_and_patterns_match_columns() {
    let masker = masker();
    let mut plan = masker.plan(&[
        col("x", Some("hr.people.ssn_last"), 25, 0),
        col("customer_ssn", None, 25, 0),
        col("SECRET_sauce", None, 25, 1),
        col("email", Some("public.staff.email"), 25, 0),
    ]);
    let rules: Vec<Option<usize>> = plan.columns.iter().map(|c| c.rule).collect();
    assert_eq!(rules, [Some(1), Some(1), Some(2), None], "alias, field name, case, other table");
    let body = data_row(&[Some(b"x"), Some(b"y"), Some(b"z"), Some(b"ok")]);
    let mut out = Vec::new();
    masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    assert_eq!((text(&row[2]), text(&row[3])), (Some("[masked]"), None::<&str>.or(Some("ok"))));
    let quiet = masker.plan(&[col("id", None, 23, 1), col("blob", None, 17, 1), col("at", None, 1184, 0)]);
    assert!(!quiet.is_active(), "binary non-text columns and timestamps are not inspected");
    let mut stamped = masker.plan(&[col("ssn_at", None, 1184, 0), col("at", None, 1114, 0)]);
    let body = data_row(&[Some(b"2024-01-01 00:00:00+00"), Some(b"2024-01-01 00:00:00")]);
    let mut out = Vec::new();
    masker.mask_data_row(&body, &mut stamped, &mut out).unwrap();
    assert_eq!(parse_row(&out), [None, Some(b"2024-01-01 00:00:00".to_vec())], "a rule still nulls them");
}

#[test]
fn json_leaves_and_pattern_keys_are_masked_in_place() {
    let masker = masker();
    let mut plan = masker.plan(&[col("doc", None, 114, 0), col("docb", None, 3802, 1)]);
    let json = br#"{"name": "Ann", "contact": {"email": "ann@example.com", "tags": ["a", "x\u0040y.io"]},
 "ssn_hash": {"v": [1, 2]}, "n": 4111111111111111, "ok": true, "e": "\"q\""}"#;
    let mut binary = vec![1u8];
    binary.extend_from_slice(json);
    let body = data_row(&[Some(json), Some(&binary)]);
    let mut out = Vec::new();
    let outcome = masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    let expected = r#"{"name": "Ann", "contact": {"email": "[masked:email]", "tags": ["a", "[masked:email]"]},
 "ssn_hash": null, "n": "************1111", "ok": true, "e": "\"q\""}"#;
    assert_eq!(text(&row[0]), Some(expected));
    assert_eq!(row[1].as_deref().map(|v| (v[0], &v[1..])), Some((1, expected.as_bytes())));
    serde_json::from_str::<serde_json::Value>(expected).unwrap();
    assert_eq!(outcome.hits.iter().map(|h| h.count).sum::<u64>(), 8);

    for bad in [&b"{\"a\": }"[..], b"[1, 2", b"{\"a\" 1}", b"\"open", b"{} x", b"tru"] {
        let body = data_row(&[Some(bad), None]);
        assert!(matches!(masker.mask_data_row(&body, &mut plan, &mut Vec::new()), Err(MaskError::Malformed(_))));
    }
}

#[test]
fn text_arrays_keep_their_shape_and_quoting() {
    let masker = masker();
    let mut plan = masker.plan(&[col("emails", None, 1009, 0), col("ssns", None, 1009, 0)]);
    let emails = br#"{plain,"a b@example.com x","quote\"d c@d.io",NULL,{nested@x.org,"NULL"}}"#;
    let body = data_row(&[Some(emails), Some(b"{111-22-3333,NULL}")]);
    let mut out = Vec::new();
    masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    assert_eq!(
        text(&row[0]),
        Some(r#"{plain,"a [masked:email] x","quote\"d [masked:email]",NULL,{"[masked:email]","NULL"}}"#)
    );
    assert_eq!(text(&row[1]), Some("{NULL,NULL}"), "a rule with strategy null nulls each element");
    for bad in [&b"{a,\"b}"[..], b"a,b", b"{a}}", b"{a"] {
        let body = data_row(&[Some(bad), None]);
        assert!(masker.mask_data_row(&body, &mut plan, &mut Vec::new()).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

fn binary_text_array(elements: &[Option<&[u8]>]) -> Vec<u8> {
    let mut a = Vec::new();
    for field in [1i32, 0, 25, elements.len() as i32, 1] {
        a.extend_from_slice(&field.to_be_bytes());
    }
    for e in elements {
        match e {
            None => a.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                a.extend_from_slice(&(v.len() as i32).to_be_bytes());
                a.extend_from_slice(v);
            }
        }
    }
    a
}

#[test]
fn binary_text_arrays_are_masked_element_wise() {
    let masker = masker();
    let mut plan = masker.plan(&[col("emails", None, 1009, 1), col("ssn_list", None, 1009, 1)]);
    let array = binary_text_array(&[Some(b"x@example.com"), None, Some(b"hello")]);
    let body = data_row(&[Some(&array), Some(&binary_text_array(&[Some(b"1")]))]);
    let mut out = Vec::new();
    masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    let mut nulled = binary_text_array(&[None]);
    nulled[4..8].copy_from_slice(&1i32.to_be_bytes());
    assert_eq!(row[0].as_deref(), Some(&binary_text_array(&[Some(b"[masked:email]"), None, Some(b"hello")])[..]));
    assert_eq!(row[1].as_deref(), Some(&nulled[..]), "has-nulls flag set");
    let mut short = array.clone();
    short.truncate(array.len() - 1);
    let body = data_row(&[Some(&short), None]);
    assert!(masker.mask_data_row(&body, &mut plan, &mut Vec::new()).is_err());
}

#[test]
fn malformed_data_rows_are_errors() {
    let masker = masker();
    let mut plan = masker.plan(&[col("a", None, 25, 0)]);
    let cases: [&[u8]; 6] = [
        b"",
        b"\x00",
        b"\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00",
        b"\x00\x01\x00\x00\x00\x05abc",
        b"\x00\x01\xff\xff\xff\xfe",
        b"\x00\x01\x00\x00\x00\x01ab",
    ];
    for body in cases {
        assert!(masker.mask_data_row(body, &mut plan, &mut Vec::new()).is_err(), "{body:?}");
    }
    let mut jsonb = masker.plan(&[col("j", None, 3802, 1)]);
    assert!(masker.mask_data_row(&data_row(&[Some(b"\x02{}")]), &mut jsonb, &mut Vec::new()).is_err(), "jsonb version");
}

#[test]
fn copy_text_rows_with_escapes() {
    let masker = masker();
    let body = b"1\tann@example.com\t\\N\tline\\nbreak c\\\\d@x.io\n2\tnone\t\\N\tok\n";
    let mut out = Vec::new();
    let outcome = masker.mask_copy_data(body, &CopyFormat::text(), None, &[], &mut out).unwrap();
    assert_eq!(out, b"1\t[masked:email]\t\\N\tline\\nbreak c\\\\[masked:email]\n2\tnone\t\\N\tok\n");
    assert_eq!(counts(&outcome), [(None, "email", 2)]);

    let plan = masker.plan(&[
        col("id", None, 23, 0),
        col("email", Some("public.customers.email"), 25, 0),
        col("ssn", None, 25, 0),
    ]);
    let mut out = Vec::new();
    masker.mask_copy_data(b"7\tb\\tob@x.io\t123\n", &CopyFormat::text(), Some(&plan), &[], &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("7\t{}\t\\N\n", token("b\tob@x.io")));
    for bad in [&b"1\t2\n"[..], b"1\t2\t3\t4\n", b"1\t2\t3"] {
        assert!(masker.mask_copy_data(bad, &CopyFormat::text(), Some(&plan), &[], &mut Vec::new()).is_err());
    }
    let mut untouched = Vec::new();
    assert!(!masker.mask_copy_data(b"a\tb\n", &CopyFormat::text(), None, &[], &mut untouched).unwrap().changed());
    assert!(untouched.is_empty());
    assert_eq!(
        masker.mask_copy_data(b"x\n", &CopyFormat::Binary, None, &[], &mut untouched),
        Err(MaskError::CopyBinary)
    );
}

#[test]
fn copy_csv_rows_with_quotes() {
    let masker = masker();
    let body = b"1,\"ann@example.com\",,\"say \"\"hi\"\" to b@c.io\nnow\"\n2,plain@x.org,\"\",x\n";
    let mut out = Vec::new();
    masker.mask_copy_data(body, &CopyFormat::csv(), None, &[], &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "1,\"[masked:email]\",,\"say \"\"hi\"\" to [masked:email]\nnow\"\n2,\"[masked:email]\",\"\",x\n"
    );
    let custom = CopyFormat::Csv { delimiter: b';', quote: b'\'', escape: b'\\', null: b"NULL".to_vec() };
    let plan = masker.plan(&[col("ssn", None, 25, 0), col("e", None, 25, 0)]);
    let mut out = Vec::new();
    masker.mask_copy_data(b"'12\\'3';'q\\\\a@b.io'\n", &custom, Some(&plan), &[], &mut out).unwrap();
    assert_eq!(out, b"NULL;'q\\\\[masked:email]'\n");
    for bad in [&b"\"open,1\n"[..], b"\"a\"b,1\n"] {
        assert!(masker.mask_copy_data(bad, &CopyFormat::csv(), None, &[], &mut Vec::new()).is_err());
    }
}

fn error_body(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (code, value) in fields {
        body.push(*code);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    body
}

#[test]
fn error_and_notice_fields_are_masked() {
    let masker = masker();
    let body = error_body(&[
        (b'S', "ERROR"),
        (b'C', "23505"),
        (b'M', "duplicate key value violates unique constraint \"customers_email_key\""),
        (b'D', "Key (email)=(ann@example.com) already exists."),
        (b'n', "customers_email_key"),
    ]);
    let mut out = Vec::new();
    let outcome = masker.mask_error_fields(&body, &mut out).unwrap();
    let expected = error_body(&[
        (b'S', "ERROR"),
        (b'C', "23505"),
        (b'M', "duplicate key value violates unique constraint \"customers_email_key\""),
        (b'D', &format!("Key (email)=({}) already exists.", token("ann@example.com"))),
        (b'n', "customers_email_key"),
    ]);
    assert_eq!(out, expected, "the column rule decides, by column name");
    assert_eq!(counts(&outcome), [(None, "column public.customers.email", 1)]);

    let body = error_body(&[(b'D', "Failing row contains (1, Ann, 123-45-6789)."), (b'W', "SQL: x@y.io")]);
    let mut out = Vec::new();
    masker.mask_error_fields(&body, &mut out).unwrap();
    assert_eq!(out, error_body(&[(b'D', "Failing row contains ([masked])."), (b'W', "SQL: [masked:email]")]));

    let body = error_body(&[(b'M', "invalid input syntax: \"4111111111111111\""), (b'H', "a@b.io stays")]);
    let mut out = Vec::new();
    masker.mask_error_fields(&body, &mut out).unwrap();
    assert_eq!(out, error_body(&[(b'M', "invalid input syntax: \"************1111\""), (b'H', "a@b.io stays")]));

    for bad in [&b"Mabc"[..], b"Mabc\0", b"\0x", b""] {
        assert!(masker.mask_error_fields(bad, &mut Vec::new()).is_err(), "{bad:?}");
    }
}

#[test]
fn notification_payloads_are_masked() {
    let masker = masker();
    let mut body = 77i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"orders\0{\"to\": \"ann@example.com\"}\0");
    let mut out = Vec::new();
    let outcome = masker.mask_notification(&body, &mut out).unwrap();
    let mut expected = 77i32.to_be_bytes().to_vec();
    expected.extend_from_slice(b"orders\0{\"to\": \"[masked:email]\"}\0");
    assert_eq!((out, outcome.hits.len()), (expected, 1));
    assert!(masker.mask_notification(b"\0\0\0\x01chan\0payload", &mut Vec::new()).is_err());
}

#[test]
fn outcomes_merge_per_column_and_reason() {
    let masker = masker();
    let mut plan = masker.plan(&[col("note", None, 25, 0)]);
    let mut total = MaskOutcome::default();
    for _ in 0..3 {
        let mut out = Vec::new();
        total.merge(&masker.mask_data_row(&data_row(&[Some(b"a@b.io c@d.io")]), &mut plan, &mut out).unwrap());
    }
    assert_eq!(counts(&total), [(Some("note"), "email", 6)]);
}

fn policy_errors(masking: &str) -> Vec<String> {
    let text = format!(
        "[[target]]\nname = \"t\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1\"]\n[target.masking]\n{masking}\n[target.credentials]\nadmin_file = \"/etc/a.toml\"\n"
    );
    match Policy::from_sources([(Path::new("p.toml"), text.as_str())]) {
        Ok(_) => panic!("accepted: {masking}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn invalid_masking_policies_are_refused_with_locations() {
    assert_eq!(
        policy_errors("detectors = [\"card\", \"cc\"]\n"),
        [
            "p.toml:7:22: unknown detector \"cc\" (built-in: card, email, ssn, iban, phone, ipv4, aws_key, jwt, private_key, api_key)"
        ]
    );
    assert_eq!(
        policy_errors("[[target.masking.detector]]\nname = \"ref\"\nregex = \"ORD-[0-9\"\n"),
        ["p.toml:9:9: invalid regex of detector \"ref\": error: unclosed character class"]
    );
    assert_eq!(
        policy_errors("[[target.masking.detector]]\nname = \"any\"\nregex = \"x*\"\n"),
        ["p.toml:9:9: regex of detector \"any\" matches empty text"]
    );
    assert_eq!(
        policy_errors("[[target.masking.rules]]\ncolumn = \"customers.email\"\n"),
        ["p.toml:8:10: column \"customers.email\" must be schema.table.column (use column_pattern for globs)"]
    );
    assert_eq!(
        policy_errors("[[target.masking.rules]]\ncolumn_pattern = \"*ssn*\"\nstrategy = \"partial\"\n"),
        ["p.toml:9:12: strategy = \"partial\" needs `keep`: how many trailing characters stay visible"]
    );
    assert_eq!(
        policy_errors("strategy = \"hash\"\n"),
        ["p.toml:7:12: unknown strategy \"hash\", expected \"redact\", \"partial\", \"token\" or \"null\""]
    );
    assert_eq!(policy_errors("[[target.masking.rules]]\nstrategy = \"null\"\n").len(), 1);
    assert_eq!(policy_errors("[[target.masking.rules]]\ncolumn_pattern = \"*\"\n").len(), 1);
    assert_eq!(policy_errors("detectors = [\"card\", \"card\"]\n").len(), 1);
    assert_eq!(policy_errors("strategy = \"token\"\nkeep = 2\n").len(), 1);
    assert_eq!(policy_errors("colour = \"red\"\n").len(), 1, "unknown keys");
    assert_eq!(
        policy_errors("[[target.masking.rules]]\njson_path = \"$.data\"\n"),
        ["p.toml:8:13: json_path is for https and http targets; use column or column_pattern"]
    );
}

#[test]
fn http_targets_take_json_paths_not_table_columns() {
    let target =
        "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.1\"]\n[target.masking]\n";
    let errors = |rules: &str| match Policy::from_sources([(Path::new("h.toml"), format!("{target}{rules}").as_str())])
    {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(errors("[[target.masking.rules]]\njson_path = \"$.items[*].token\"\n"), Vec::<String>::new());
    assert_eq!(
        errors("[[target.masking.rules]]\ncolumn = \"public.t.c\"\n"),
        ["h.toml:8:10: `column` names a table column: use json_path or column_pattern on HTTP targets"]
    );
    assert_eq!(
        errors("[[target.masking.rules]]\njson_path = \"items\"\n"),
        ["h.toml:8:13: JSON path \"items\" must start with `$`"]
    );
    assert_eq!(errors("[[target.masking.rules]]\njson_path = \"$.a\"\ncolumn_pattern = \"*a*\"\n").len(), 1);
}

#[test]
fn detectors_default_when_not_listed() {
    let source = "[[target]]\nname = \"t\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1\"]\n[target.masking]\n";
    let policy = Policy::from_sources([(Path::new("p.toml"), source)]).unwrap_or_else(|e| panic!("{e}"));
    let masking = policy.targets[0].masking.as_ref().unwrap();
    assert_eq!(masking.detectors, Builtin::DEFAULT);
    let ssh = "[[target]]\nname = \"s\"\nprotocol = \"ssh\"\nport = 22\naddresses = [\"10.0.0.1\"]\n[target.masking]\n";
    assert!(Policy::from_sources([(Path::new("p.toml"), ssh)]).is_err(), "postgres and http only");
}

#[test]
fn shipped_example_masks_analysts_not_dbas() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/examples"));
    let policy = Policy::load_dir(dir).unwrap_or_else(|e| panic!("{e}"));
    let replicas = policy.targets.iter().find(|t| t.name == "prod-db-replicas").unwrap();
    let masking = replicas.masking.as_ref().unwrap_or_else(|| panic!("the example masks the replicas"));
    let key = Arc::new(TokenKey::from_bytes(b"example"));
    let analyst = Masker::new(masking, "ann", &["analytics".into()], key.clone());
    let dba = Masker::new(masking, "dave", &["dba".into()], key);
    assert!(dba.is_noop());
    let columns = [col("email", Some("public.customers.email"), 25, 0), col("note", None, 25, 0)];
    let mut plan = analyst.plan(&columns);
    let body = data_row(&[Some(b"ann@example.com"), Some(b"card 4111-1111-1111-1111, LOY-0123456789")]);
    let mut out = Vec::new();
    analyst.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    assert!(text(&row[0]).is_some_and(|t| t.starts_with("tok_")));
    let note = text(&row[1]).unwrap();
    assert!(note.starts_with("card ****-****-****-1111, tok_"), "{note}");
}

#[test]
fn json_keys_are_masked_without_detectors() {
    let source = "[[target]]\nname = \"t\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1\"]\n\
                [target.credentials]\nadmin_file = \"/etc/a.toml\"\n\
                [target.masking]\ndetectors = []\n[[target.masking.rules]]\ncolumn_pattern = \"*email*\"\n";
    let policy = Policy::from_sources([(Path::new("p.toml"), source)]).unwrap_or_else(|e| panic!("{e}"));
    let masker =
        Masker::new(policy.targets[0].masking.as_ref().unwrap(), "u", &[], Arc::new(TokenKey::from_bytes(b"k")));
    let mut plan = masker.plan(&[col("doc", None, 3802, 0), col("note", None, 25, 0)]);
    assert!(plan.is_active());
    let body = data_row(&[Some(br#"{"work_email": "a@b.io", "n": 1}"#), Some(b"a@b.io")]);
    let mut out = Vec::new();
    masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
    let row = parse_row(&out);
    assert_eq!(text(&row[0]), Some(r#"{"work_email": "[masked]", "n": 1}"#));
    assert_eq!(text(&row[1]), Some("a@b.io"), "no detectors: free text passes");
}

#[test]
fn rules_naming_actors_mask_only_for_those_actors() {
    let text_policy = format!(
        "[[actor]]\nname = \"coding-agent\"\nmodules = [\"aider\"]\n[[actor]]\nname = \"bot\"\nmodules = [\"bot\"]\n{}\n\
         [[target.masking.rules]]\ncolumn = \"public.customers.name\"\nactors = [\"coding-agent\"]\n\n\
         [[target.masking.detector]]\nname = \"extension\"\nregex = \"555-[0-9]{{4}}\"\nactors = [\"*\"]\n",
        POLICY
    );
    let policy =
        Policy::from_sources([(Path::new("prod.toml"), text_policy.as_str())]).unwrap_or_else(|e| panic!("{e}"));
    let masking = policy.targets[0].masking.clone().unwrap();
    let groups = vec!["dba".to_owned()];
    let row = |actor: Option<&str>| {
        let subject = crate::policy::Subject { actor, ..crate::policy::Subject::new("ann", &groups) };
        let masker = Masker::for_subject(&masking, &subject, Arc::new(TokenKey::from_bytes(b"test key")));
        let mut plan = masker.plan(&[col("name", Some("public.customers.name"), 25, 0), col("note", None, 25, 0)]);
        let body = data_row(&[Some(b"Ann Lee"), Some(b"call 555-0101")]);
        let mut out = Vec::new();
        if plan.is_active() {
            masker.mask_data_row(&body, &mut plan, &mut out).unwrap();
        } else {
            out = body;
        }
        parse_row(&out).iter().map(|v| text(v).map(str::to_owned)).collect::<Vec<_>>()
    };
    let person = row(None);
    assert_eq!(person, [Some("Ann Lee".to_owned()), Some("call 555-0101".to_owned())], "a DBA herself: exempt");
    let agent = row(Some("coding-agent"));
    assert_eq!(agent[0].as_deref(), Some("[masked]"), "the rule is for the agent");
    assert!(!agent[1].as_deref().unwrap().contains("555-0101"), "the detector is for any actor: {agent:?}");
    let bot = row(Some("bot"));
    assert_eq!(bot[0].as_deref(), Some("Ann Lee"), "the column rule names another actor");
    assert!(!bot[1].as_deref().unwrap().contains("555-0101"), "{bot:?}");

    let ghost = POLICY.to_owned() + "\n[[target.masking.rules]]\ncolumn_pattern = \"x\"\nactors = [\"ghost\"]\n";
    let errors = Policy::from_sources([(Path::new("prod.toml"), ghost.as_str())]).unwrap_err().to_string();
    assert!(errors.contains("names actor \"ghost\", which no [[actor]] defines"), "{errors}");
    let empty = POLICY.to_owned() + "\n[[target.masking.rules]]\ncolumn_pattern = \"x\"\nactors = []\n";
    let errors = Policy::from_sources([(Path::new("prod.toml"), empty.as_str())]).unwrap_err().to_string();
    assert!(errors.contains("actors = [] matches no connection"), "{errors}");
}
