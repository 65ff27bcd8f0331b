//! Masking end to end: real psql as test users through the eBPF redirect,
//! a just-in-time target with customer data, and what reaches the client.

use std::fs;

use airlock_vm_tests::{CommandOutput, Lab, TargetHost, privileged, set_mode};

const SEED: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text, email text UNIQUE, card text, \
    notes jsonb, contacts text[], ssn_last text);
INSERT INTO customers VALUES
  (1, 'Ann Lee', 'ann.lee@example.com', '4111 1111 1111 1111', '{\"backup\": \"ann.private@example.org\", \"tier\": 2}',
   ARRAY['ann.work@example.net', 'desk 4'], '123-45-6789'),
  (2, 'Bo Chan', 'bo@example.com', '5500-0000-0000-0004', '{\"tier\": 1}', ARRAY['none'], '987-65-4321');";

/// alice is an analyst (everything masked), bob is in the exempt group,
/// carol sees the email column by rule but detectors still apply to her.
fn lab() -> Lab {
    let mut lab = Lab::new(&["alice", "bob", "carol"]);
    let pg_dir = lab.dir.path().join("pg");
    let data = lab.target.start_postgres_auth(&pg_dir, &[], "scram-sha-256");
    let admin_file = TargetHost::jit_admin(&data, lab.dir.path(), "admin-secret-4711");
    TargetHost::superuser_sql(&data, SEED);
    let v4 = lab.target.v4;
    let (bob, carol) = (lab.user("bob").name.clone(), lab.user("carol").name.clone());
    lab.start_agent(&format!(
        r#"
[[target]]
name = "pg"
protocol = "postgres"
port = 5432
addresses = ["{v4}"]

[[target.access]]
action = "allow"
users = ["*"]

[target.credentials]
admin_file = "{admin}"

[[target.credentials.role]]
name = "analyst"
grants = ["pg_read_all_data", "pg_write_all_data"]
users = ["*"]

[target.masking]
detectors = ["card", "email"]
exempt_groups = ["{bob}"]

[[target.masking.detector]]
name = "card"
strategy = "partial"
keep = 4

[[target.masking.rules]]
column = "public.customers.email"
strategy = "token"
exempt_users = ["{carol}"]

[[target.masking.rules]]
column_pattern = "ssn*"
strategy = "null"
exempt_users = ["{carol}"]
"#,
        admin = admin_file.display()
    ));
    lab
}

fn psql(lab: &Lab, user: &str, sql: &str) -> CommandOutput {
    let host = lab.target.v4.to_string();
    lab.run_as(user, "psql", &["-h", &host, "-U", "analyst", "-d", "postgres", "-X", "-At", "-w", "-c", sql])
}

#[test]
fn sensitive_values_are_masked_before_they_reach_the_client() {
    if !privileged() {
        return;
    }
    let lab = lab();
    let out = psql(&lab, "alice", "select id, name, email, card, ssn_last from customers order by id");
    assert!(out.success(), "{out:?}\n{}", lab.agent().log());
    let rows: Vec<&str> = out.stdout.lines().collect();
    let first: Vec<&str> = rows[0].split('|').collect();
    assert_eq!(first[1], "Ann Lee", "unmatched columns pass as they are");
    assert!(!first[2].contains('@') && !first[2].is_empty(), "email column tokenised: {}", first[2]);
    assert!(first[3].ends_with("1111") && !first[3].contains("4111"), "card keeps its last 4: {}", first[3]);
    assert_eq!(first[4], "", "ssn column nulled by pattern");
    assert!(!out.stdout.contains("123-45-6789"), "{}", out.stdout);
    assert!(!out.stdout.contains("5500-0000-0000-0004") && !out.stdout.contains("@example.com"), "{}", out.stdout);

    // The same value gives the same token, and an alias does not unmask.
    let aliased = psql(&lab, "alice", "select email as contact from customers where id = 1");
    assert_eq!(aliased.stdout.trim(), first[2], "{aliased:?}");

    // JSON values, arrays, error details and the extended protocol.
    let nested = psql(&lab, "alice", "select notes::text, contacts::text from customers where id = 1");
    assert!(nested.success(), "{nested:?}");
    assert!(!nested.stdout.contains("example.org") && !nested.stdout.contains("example.net"), "{}", nested.stdout);
    assert!(nested.stdout.contains("\"tier\": 2") && nested.stdout.contains("desk 4"), "{}", nested.stdout);
    let duplicate = psql(&lab, "alice", "insert into customers (id, email) values (3, 'ann.lee@example.com')");
    assert!(!duplicate.success() && duplicate.stderr.contains("already exists"), "{duplicate:?}");
    assert!(!duplicate.stderr.contains("ann.lee@example.com"), "error details are masked: {}", duplicate.stderr);

    // The extended protocol, where a result's columns come from its
    // portal: pgbench keeps the last row's values, so the rows after the
    // first are checked too.
    let script = lab.dir.path().join("last-row.sql");
    fs::write(&script, "select email, card from customers order by id \\aset\n\\shell echo last: :email :card\n")
        .unwrap();
    set_mode(&script, 0o644);
    let host = lab.target.v4.to_string();
    for mode in ["extended", "prepared"] {
        let args =
            ["-h", &host, "-U", "analyst", "-n", "-M", mode, "-t", "2", "-f", script.to_str().unwrap(), "postgres"];
        let out = lab.run_as("alice", "pgbench", &args);
        assert!(out.success(), "pgbench -M {mode}: {out:?}\n{}", lab.agent().log());
        let last = out.stdout.lines().find_map(|l| l.strip_prefix("last: ")).unwrap_or_else(|| panic!("{out:?}"));
        let (email, card) = last.split_once(' ').unwrap_or_else(|| panic!("{last}"));
        assert!(email.starts_with("tok_") && email.len() == 20, "-M {mode}: second row's email tokenised: {last}");
        assert_eq!(card, "****-****-****-0004", "-M {mode}: second row's card keeps its last 4");
    }

    let statements = lab.agent().wait_for_records("postgres.statement", 4);
    let masked = &statements[0]["detail"]["masked"];
    let reasons: Vec<&str> = masked.as_array().unwrap().iter().map(|m| m["by"].as_str().unwrap()).collect();
    assert!(reasons.contains(&"card") && reasons.contains(&"column public.customers.email"), "{masked}");
    // Each e-mail the first query returned was counted once, whatever
    // batches its rows came in.
    let emails = rows.iter().filter(|row| row.split('|').nth(2).is_some_and(|email| !email.is_empty())).count();
    let counted = masked.as_array().unwrap().iter().find(|m| m["by"] == "column public.customers.email").unwrap();
    assert_eq!(counted["count"], emails, "{masked}");
    let log = fs::read_to_string(lab.agent().config.audit_dir.join("audit.jsonl")).unwrap();
    // Values that only ever travelled in results are nowhere in the log.
    assert!(
        !log.contains("4111 1111 1111 1111") && !log.contains("ann.private@example.org"),
        "values in the audit log"
    );
}

#[test]
fn exempt_people_see_values_and_copy_is_masked_or_refused() {
    if !privileged() {
        return;
    }
    let lab = lab();
    let exempt = psql(&lab, "bob", "select email, card from customers where id = 1");
    assert_eq!(exempt.stdout.trim(), "ann.lee@example.com|4111 1111 1111 1111", "{exempt:?}");

    // carol: column rules do not apply to her, detectors do, so COPY works masked.
    let copied = psql(&lab, "carol", "copy (select id, card from customers order by id) to stdout with (format csv)");
    assert!(copied.success(), "{copied:?}\n{}", lab.agent().log());
    assert!(copied.stdout.starts_with("1,") && copied.stdout.contains("1111"), "{}", copied.stdout);
    assert!(!copied.stdout.contains("4111 1111") && !copied.stdout.contains("5500-0000"), "{}", copied.stdout);

    // alice: COPY output cannot be masked by column, so it never reaches her.
    let refused = psql(&lab, "alice", "copy customers to stdout");
    assert!(!refused.success(), "{refused:?}");
    assert!(refused.stderr.contains("COPY TO STDOUT cannot be masked by column"), "{}", refused.stderr);
    assert!(!refused.stdout.contains("4111"), "{}", refused.stdout);
}
