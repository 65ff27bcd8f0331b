//! `docs/policy.md` documents every key the loaders accept, and no key they
//! do not.
//!
//! The accepted keys are not kept by hand here: every table of the agent
//! configuration, the policy files and the admin login file is read with
//! `deny_unknown_fields`, so a table given one key nobody accepts is refused
//! with serde's list of the keys it does accept ("unknown field `zz`,
//! expected one of `a`, `b`"). For each table the documentation names, this
//! test loads a document with such a key in that table through the public
//! loaders ([`Config::from_str_at`], [`Policy::from_sources`],
//! [`AdminLogin::load`]), reads the accepted keys from the error, and compares
//! them with the rows of the table's markdown table in `docs/policy.md`:
//! each table is a `### `[path]`` (or `### Top level`) heading under the
//! `## airlock.toml`, `## Policy files` or `## Admin login files` section,
//! followed by a table whose first column is the key in backticks.
//!
//! Two tables cannot be checked that way, because the value is either a
//! string or flag or a table (`#[serde(untagged)]`), and serde's error for
//! such a value names no fields: `[target.ssh.ca.openbao]` (`ca = "embedded"`
//! or an OpenBao table) and `[target.https.record_bodies]` (`true` or
//! `{ max_bytes = N }`). For those the example under the heading must load,
//! use every documented key, and land in the loaded policy with the values
//! written; leaving out a key documented as required must fail and leaving
//! out any other must not; and a bogus key must be refused. What this cannot
//! catch is a new optional key in one of those two tables that nobody
//! documented.
//!
//! The structure is checked too: every table heading hangs off a documented
//! key of its parent table, and every key documented as a table has its own
//! heading.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use airlock::{
    config::Config,
    credentials::AdminLogin,
    policy::{Policy, ssh::UserCa},
};

/// A key no loader accepts, put in each table to make it list the ones it does.
const BOGUS: &str = "zz_not_a_key";

/// Which file a table lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum File {
    /// `/etc/airlock/airlock.toml`.
    Config,
    /// A `*.toml` file in the policies directory.
    Policy,
    /// A target's `admin_file`.
    AdminLogin,
}

/// A table as the documentation heads it: its dotted path (empty for the
/// top level) in one of the files.
type TableId = (File, String);

/// One row of a key table.
#[derive(Debug)]
struct DocumentedKey {
    name: String,
    /// The type column, as written.
    kind: String,
    /// The default column, as written (`required` for keys that must be given).
    default: String,
}

/// One documented table.
#[derive(Debug, Default)]
struct DocumentedTable {
    keys: Vec<DocumentedKey>,
    /// The first ```toml block after the heading, if any.
    example: Option<String>,
    /// Line of the heading, for messages.
    line: usize,
    /// Written `[[path]]`: an array of tables.
    array: bool,
}

impl DocumentedTable {
    fn names(&self) -> BTreeSet<String> {
        self.keys.iter().map(|k| k.name.clone()).collect()
    }
}

fn docs_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md")
}

/// Reads the key tables out of docs/policy.md; panics (naming the line) on
/// anything that does not follow the format, so a typo cannot hide a table.
fn documented() -> BTreeMap<TableId, DocumentedTable> {
    let path = docs_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut tables: BTreeMap<TableId, DocumentedTable> = BTreeMap::new();
    let mut file = None;
    let mut current: Option<TableId> = None;
    // Inside a fenced block: whether it is TOML (an example of the table).
    let mut in_code: Option<bool> = None;
    let mut code = String::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if let Some(fence) = line.strip_prefix("```") {
            match in_code.take() {
                Some(toml) => {
                    if let Some(table) = current.as_ref().and_then(|id| tables.get_mut(id))
                        && toml
                        && table.example.is_none()
                    {
                        table.example = Some(std::mem::take(&mut code));
                    }
                    code.clear();
                }
                None => in_code = Some(fence == "toml"),
            }
            continue;
        }
        if let Some(toml) = in_code {
            if toml {
                code.push_str(line);
                code.push('\n');
            }
            continue;
        }
        if let Some(heading) = line.strip_prefix("## ") {
            current = None;
            file = match heading.trim() {
                "airlock.toml" => Some(File::Config),
                "Policy files" => Some(File::Policy),
                "Admin login files" => Some(File::AdminLogin),
                _ => None,
            };
            continue;
        }
        if let Some(heading) = line.strip_prefix("### ") {
            current = None;
            let Some(file) = file else { continue };
            let heading = heading.trim();
            let array = heading.starts_with("`[[");
            let path = if heading == "Top level" {
                String::new()
            } else {
                let inner = heading
                    .strip_prefix('`')
                    .and_then(|h| h.split('`').next())
                    .unwrap_or_else(|| panic!("policy.md:{number}: a key table's heading is `[path]` or Top level"));
                let path = inner.trim_start_matches('[').trim_end_matches(']');
                assert!(
                    inner.starts_with('[') && inner.ends_with(']') && !path.is_empty(),
                    "policy.md:{number}: heading {inner:?} is not a [table] or [[table]] path"
                );
                path.to_owned()
            };
            let id = (file, path);
            assert!(!tables.contains_key(&id), "policy.md:{number}: table {id:?} is documented twice");
            tables.insert(id.clone(), DocumentedTable { line: number, array, ..Default::default() });
            current = Some(id);
            continue;
        }
        let Some(id) = &current else { continue };
        let Some(row) = line.strip_prefix("| `") else { continue };
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 4, "policy.md:{number}: a key row has key, type, default and meaning");
        let name = row.split('`').next().unwrap_or_default().to_owned();
        let table = tables.get_mut(id).expect("the heading was inserted above");
        assert!(!table.keys.iter().any(|k| k.name == name), "policy.md:{number}: key {name:?} is listed twice");
        table.keys.push(DocumentedKey { name, kind: cells[1].to_owned(), default: cells[2].to_owned() });
    }
    assert!(in_code.is_none(), "policy.md: a code block is not closed");
    tables
}

/// The names serde (or the policy loader's top level) lists after
/// "expected" in the message that refuses [`BOGUS`].
fn accepted_in(message: &str) -> Option<BTreeSet<String>> {
    let line = message.lines().find(|line| line.contains(&format!("`{BOGUS}`")))?;
    let (_, expected) = line.split_once("expected")?;
    let names: BTreeSet<String> = expected.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    (!names.is_empty()).then_some(names)
}

/// A target the probes hang their tables on.
const TARGET: &str = "[[target]]\nname = \"t\"\nprotocol = \"postgres\"\nport = 5432\naddresses = [\"10.0.0.1\"]\n";

/// A document with [`BOGUS`] in the table at `path` (written with the
/// brackets the documentation uses: `[[target.access]]`, `[oidc]`).
fn probe_text(file: File, path: &str, array: bool) -> String {
    let bogus = format!("{BOGUS} = 1\n");
    if path.is_empty() {
        return bogus;
    }
    let heading = if array { format!("[[{path}]]\n") } else { format!("[{path}]\n") };
    match (file, path.split('.').next()) {
        (File::Policy, Some("target")) if path == "target" => format!("{TARGET}{bogus}"),
        (File::Policy, Some("target")) => format!("{TARGET}{heading}{bogus}"),
        _ => format!("{heading}{bogus}"),
    }
}

/// Every error message loading `text` as `file` gives.
fn load_errors(file: File, text: &str) -> Vec<String> {
    match file {
        File::Config => match Config::from_str_at(text, Path::new("/etc/airlock/airlock.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.to_string()],
        },
        File::Policy => match Policy::from_sources([(Path::new("probe.toml"), text)]) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        },
        File::AdminLogin => {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().join("admin.toml");
            std::fs::write(&path, text).expect("the probe file is written");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("mode 0600");
            match AdminLogin::load(&path) {
                Ok(_) => Vec::new(),
                Err(e) => vec![e.to_string()],
            }
        }
    }
}

/// Tables whose value may also be a string or flag: checked by their example.
const UNTAGGED: [&str; 2] = ["target.ssh.ca.openbao", "target.https.record_bodies"];

#[test]
fn every_accepted_key_is_documented_and_every_documented_key_accepted() {
    let tables = documented();
    let admin_checkable = nix::unistd::geteuid().is_root();
    let mut problems = Vec::new();
    let mut checked = 0;
    for ((file, path), table) in &tables {
        if *file == File::Policy && UNTAGGED.contains(&path.as_str()) {
            continue;
        }
        if *file == File::AdminLogin && !admin_checkable {
            // The loader refuses an admin file root does not own, before reading it.
            assert!(
                std::env::var_os("CI").is_none(),
                "under CI=true this test runs as root: admin files must be owned by root"
            );
            eprintln!("not root: the admin login file's keys are not checked in this run");
            continue;
        }
        let text = probe_text(*file, path, table.array);
        let errors = load_errors(*file, &text);
        let Some(accepted) = errors.iter().find_map(|e| accepted_in(e)) else {
            problems.push(format!(
                "policy.md:{}: {file:?} [{path}]: a bogus key did not list the accepted ones: {errors:?}",
                table.line
            ));
            continue;
        };
        let documented = table.names();
        for missing in accepted.difference(&documented) {
            problems.push(format!("policy.md:{}: {file:?} [{path}] accepts `{missing}`, not documented", table.line));
        }
        for unknown in documented.difference(&accepted) {
            problems.push(format!("policy.md:{}: {file:?} [{path}] documents `{unknown}`, not accepted", table.line));
        }
        checked += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The sections must all be there: a renamed heading must not empty the check.
    for (file, least) in [(File::Config, 8), (File::Policy, 20), (File::AdminLogin, 1)] {
        let count = tables.keys().filter(|(f, _)| *f == file).count();
        assert!(count >= least, "{file:?}: only {count} tables documented");
    }
    assert!(checked >= 29, "only {checked} tables checked");
}

#[test]
fn every_table_hangs_off_a_documented_key_and_every_table_key_has_a_heading() {
    let tables = documented();
    let mut problems = Vec::new();
    for ((file, path), table) in &tables {
        if path.is_empty() {
            continue;
        }
        // The nearest documented ancestor must list the next segment as a key.
        let segments: Vec<&str> = path.split('.').collect();
        let parent = (0..segments.len())
            .rev()
            .map(|n| segments[..n].join("."))
            .find(|candidate| tables.contains_key(&(*file, candidate.clone())))
            .expect("the top level is documented");
        let key = segments[parent.split('.').filter(|s| !s.is_empty()).count()];
        if !tables[&(*file, parent.clone())].names().contains(key) {
            problems.push(format!("policy.md:{}: [{path}] is not a documented key `{key}` of [{parent}]", table.line));
        }
        for documented in &table.keys {
            let kind = documented.kind.to_ascii_lowercase();
            let nested = format!("{path}.{}", documented.name);
            if kind.contains("table")
                && !tables.keys().any(|(f, p)| f == file && (*p == nested || p.starts_with(&format!("{nested}."))))
            {
                problems.push(format!(
                    "policy.md:{}: `{}` in [{path}] is a table but has no heading of its own",
                    table.line, documented.name
                ));
            }
        }
    }
    for ((file, _), table) in tables.iter().filter(|((_, p), _)| p.is_empty()) {
        for documented in &table.keys {
            let kind = documented.kind.to_ascii_lowercase();
            if kind.contains("table") && !tables.contains_key(&(*file, documented.name.clone())) {
                problems.push(format!("policy.md: top-level `{}` has no heading of its own", documented.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The target an untagged table's example is loaded under.
fn untagged_prefix(path: &str) -> &'static str {
    if path.starts_with("target.ssh") {
        "[[target]]\nname = \"web\"\nprotocol = \"ssh\"\nport = 22\naddresses = [\"10.0.0.7\"]\n"
    } else {
        "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.9\"]\n"
    }
}

/// The example's key/value lines for the table, as `(key, line)`.
fn example_lines(example: &str) -> Vec<(String, String)> {
    example
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty() && !line.starts_with('['))
        .filter_map(|line| line.split_once('=').map(|(key, _)| (key.trim().to_owned(), line.to_owned())))
        .collect()
}

fn load_policy(text: &str) -> Result<Policy, Vec<String>> {
    Policy::from_sources([(Path::new("example.toml"), text)])
        .map_err(|e| e.errors.iter().map(ToString::to_string).collect())
}

#[test]
fn tables_that_may_also_be_a_value_are_checked_by_their_examples() {
    let tables = documented();
    for path in UNTAGGED {
        let table = tables
            .get(&(File::Policy, path.to_owned()))
            .unwrap_or_else(|| panic!("[{path}] is not documented under ## Policy files"));
        let example = table.example.as_deref().unwrap_or_else(|| panic!("[{path}] has no ```toml example"));
        let heading = format!("[{path}]");
        assert!(example.starts_with(&heading), "[{path}]'s example starts with its heading: {example}");
        let lines = example_lines(example);
        let used: BTreeSet<String> = lines.iter().map(|(key, _)| key.clone()).collect();
        assert_eq!(used, table.names(), "[{path}]'s example uses exactly the documented keys");

        let prefix = untagged_prefix(path);
        let whole = format!("{prefix}{example}");
        let policy = load_policy(&whole).unwrap_or_else(|e| panic!("[{path}]'s example does not load: {e:?}"));
        let target = &policy.targets[0];
        match path {
            "target.ssh.ca.openbao" => {
                let ssh = target.ssh.as_ref().expect("an ssh section");
                let UserCa::OpenBao { addr, token_file, mount, role, ca_file } = &ssh.ca else {
                    panic!("[{path}]'s example is not read as an OpenBao CA: {:?}", ssh.ca)
                };
                let read = format!(
                    "addr = {addr:?} token_file = {:?} mount = {mount:?} role = {role:?} ca_file = {:?}",
                    token_file.display().to_string(),
                    ca_file.as_ref().map(|f| f.display().to_string()).unwrap_or_default()
                );
                for (key, line) in &lines {
                    let written = line.split_once('=').map(|(_, value)| value.trim()).unwrap_or_default();
                    assert!(read.contains(&format!("{key} = {written}")), "[{path}] {key}: {written} not read: {read}");
                }
            }
            "target.https.record_bodies" => {
                let https = target.https.as_ref().expect("an https section");
                let written: usize =
                    lines[0].1.split_once('=').and_then(|(_, v)| v.trim().parse().ok()).expect("a number");
                assert_eq!(https.record_bodies, Some(written), "[{path}] max_bytes is read");
            }
            other => panic!("no check for untagged table [{other}]"),
        }

        for documented in &table.keys {
            let without: String = whole
                .lines()
                .filter(|line| line.split('=').next().map(str::trim) != Some(&documented.name))
                .fold(String::new(), |mut text, line| {
                    text.push_str(line);
                    text.push('\n');
                    text
                });
            let required = documented.default == "required";
            assert_eq!(
                load_policy(&without).is_err(),
                required,
                "[{path}] without `{}`: documented default {:?}",
                documented.name,
                documented.default
            );
        }
        let bogus = format!("{whole}{BOGUS} = 1\n");
        assert!(load_policy(&bogus).is_err(), "[{path}] accepts a bogus key");
    }
}
