//! The report: one row per secret, as an aligned table or JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    impact::{Assessment, Impact, JudgedTable, Rule},
    inventory::SecretKind,
    postgres::PgScope,
    sensitivity::Coverage,
};

/// One secret and what its leak would open.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The target it belongs to; `None` for host-wide secrets.
    pub target: Option<String>,
    /// What kind of secret.
    pub kind: SecretKind,
    /// Which one, and where it is kept (never its value).
    pub secret: String,
    /// What it opens.
    pub grants_access_to: String,
    /// What it may do there.
    pub scope: String,
    /// How long it (or what it issues) lives.
    pub ttl_rotation: String,
    /// Who may obtain it (or what it issues).
    pub who_may_obtain: String,
    /// How bad a leak would be.
    pub leak_impact: Impact,
    /// The rule that decided it (see `docs/blast-radius.md`).
    pub impact_rule: Rule,
    /// Why the rule applies.
    pub impact_reason: String,
    /// Why the scope could not be read, when it could not.
    pub unknown: Option<String>,
    /// The PostgreSQL scope in detail, when read from the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresDetail>,
}

/// A PostgreSQL login's scope, for `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct PostgresDetail {
    /// Database whose tables were read.
    pub database: String,
    /// Roles reached (starting roles at depth 0).
    pub roles: Vec<super::postgres::ReachedRole>,
    /// Starting roles the server does not have.
    pub missing_roles: Vec<String>,
    /// Privileges per schema.
    pub schemas: Vec<SchemaSummary>,
    /// Tables with some privilege, and their sensitive columns.
    pub tables: Vec<JudgedTable>,
    /// Other databases the roles may connect to.
    pub other_databases: Vec<String>,
}

/// Table privileges in one schema.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchemaSummary {
    /// Schema.
    pub schema: String,
    /// Tables readable.
    pub read: usize,
    /// Tables writable (any of INSERT, UPDATE, DELETE, TRUNCATE).
    pub write: usize,
    /// Readable tables with personal data or secrets.
    pub read_sensitive: usize,
    /// Writable tables with personal data or secrets.
    pub write_sensitive: usize,
    /// Readable tables whose sensitive columns are all masked for everyone.
    pub read_sensitive_masked: usize,
}

impl PostgresDetail {
    /// The detail of `scope` with its `tables` judged.
    pub fn new(scope: PgScope, tables: Vec<JudgedTable>) -> Self {
        let mut schemas: BTreeMap<&str, SchemaSummary> = BTreeMap::new();
        for table in &tables {
            let entry = schemas
                .entry(&table.schema)
                .or_insert_with(|| SchemaSummary { schema: table.schema.clone(), ..SchemaSummary::default() });
            let sensitive = !table.sensitive.is_empty();
            let masked = sensitive && table.sensitive.iter().all(|c| c.coverage == Coverage::MaskedForEveryone);
            if table.privileges.select {
                entry.read += 1;
                entry.read_sensitive += usize::from(sensitive);
                entry.read_sensitive_masked += usize::from(masked);
            }
            if table.privileges.writes() {
                entry.write += 1;
                entry.write_sensitive += usize::from(sensitive);
            }
        }
        let schemas = schemas.into_values().collect();
        Self {
            database: scope.database,
            roles: scope.roles,
            missing_roles: scope.missing_roles,
            schemas,
            tables,
            other_databases: scope.other_databases,
        }
    }

    /// Totals over every schema.
    fn totals(&self) -> SchemaSummary {
        self.schemas.iter().fold(SchemaSummary::default(), |mut sum, s| {
            sum.read += s.read;
            sum.write += s.write;
            sum.read_sensitive += s.read_sensitive;
            sum.write_sensitive += s.write_sensitive;
            sum.read_sensitive_masked += s.read_sensitive_masked;
            sum
        })
    }

    /// `read 12 tables in 2 schemas (3 with personal data), write 4`.
    pub fn privileges_line(&self) -> String {
        let total = self.totals();
        if total.read == 0 && total.write == 0 {
            return "no table privileges".into();
        }
        let schemas = |pick: fn(&SchemaSummary) -> usize| self.schemas.iter().filter(|s| pick(s) > 0).count();
        let mut text = format!("read {} in {}", counted(total.read, "table"), counted(schemas(|s| s.read), "schema"));
        if total.read_sensitive > 0 {
            text.push_str(&format!(" ({} with personal data", total.read_sensitive));
            if total.read_sensitive_masked > 0 {
                text.push_str(&format!(", {} masked for everyone through Airlock", total.read_sensitive_masked));
            }
            text.push(')');
        }
        text.push_str(&format!(", write {}", total.write));
        if total.write_sensitive > 0 {
            text.push_str(&format!(" ({} with personal data)", total.write_sensitive));
        }
        text
    }

    /// The scope column: roles, attributes, privileges by schema.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing_roles.is_empty() {
            parts.push(format!("role(s) {} do not exist: creating the login fails", self.missing_roles.join(", ")));
        }
        let reached: Vec<&str> = self.roles.iter().filter(|r| r.depth > 0).map(|r| r.name.as_str()).collect();
        if !reached.is_empty() {
            parts.push(format!("member of {}", reached.join(", ")));
        }
        let set_role: Vec<&str> = self.roles.iter().filter(|r| !r.inherited).map(|r| r.name.as_str()).collect();
        if !set_role.is_empty() {
            parts.push(format!("by SET ROLE only (NOINHERIT): {}", set_role.join(", ")));
        }
        let mut attributes = Vec::new();
        for role in &self.roles {
            let a = role.attributes;
            for (has, name) in [
                (a.superuser, "SUPERUSER"),
                (a.createrole, "CREATEROLE"),
                (a.bypassrls, "BYPASSRLS"),
                (a.replication, "REPLICATION"),
                (a.createdb, "CREATEDB"),
            ] {
                if has {
                    attributes.push(format!("{name} ({})", role.name));
                }
            }
        }
        if !attributes.is_empty() {
            parts.push(attributes.join(", "));
        }
        parts.push(format!("db {}: {}", self.database, self.privileges_line()));
        for schema in &self.schemas {
            let mut line = format!("{}: read {}", schema.schema, schema.read);
            if schema.read_sensitive > 0 {
                line.push_str(&format!(" ({} personal)", schema.read_sensitive));
            }
            line.push_str(&format!(", write {}", schema.write));
            if schema.write_sensitive > 0 {
                line.push_str(&format!(" ({} personal)", schema.write_sensitive));
            }
            parts.push(line);
        }
        if !self.other_databases.is_empty() {
            parts.push(format!("also connects to {}", self.other_databases.join(", ")));
        }
        parts.join("; ")
    }
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Rows, in policy order, host-wide secrets last.
    pub rows: Vec<Row>,
}

impl Report {
    /// Whether some row's scope could not be read.
    pub fn incomplete(&self) -> bool {
        self.rows.iter().any(|row| row.unknown.is_some())
    }

    /// The aligned table.
    pub fn table(&self) -> String {
        let headers = ["SECRET", "GRANTS ACCESS TO", "SCOPE", "TTL / ROTATION", "WHO MAY OBTAIN", "LEAK IMPACT"];
        let caps = [34, 24, 48, 26, 34, 40];
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                let secret = match &row.target {
                    Some(target) => format!("{} {target}: {}", row.kind.name(), row.secret),
                    None => format!("{}: {}", row.kind.name(), row.secret),
                };
                let scope = match &row.unknown {
                    Some(why) => format!("UNKNOWN: {why}"),
                    None => row.scope.clone(),
                };
                let ttl = row.ttl_rotation.clone();
                let impact = format!(
                    "{} [{}] {}",
                    row.leak_impact.name().to_uppercase(),
                    row.impact_rule.name(),
                    row.impact_reason
                );
                vec![secret, row.grants_access_to.clone(), scope, ttl, row.who_may_obtain.clone(), impact]
            })
            .collect();
        render_table(&headers, &caps, &rows)
    }
}

/// `1 table`, `2 tables`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// A row for `assessment` (the fields the inventory fills are passed in).
pub(super) fn assessed(mut row: Row, assessment: Assessment) -> Row {
    row.leak_impact = assessment.impact;
    row.impact_rule = assessment.rule;
    row.impact_reason = assessment.reason;
    row
}

/// Columns as wide as their widest cell up to their cap, cells word-wrapped
/// to fit, rows separated by a blank line when any cell wraps.
pub fn render_table(headers: &[&str], caps: &[usize], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, header)| {
            let widest = rows.iter().filter_map(|row| row.get(i)).map(|cell| cell.chars().count()).max().unwrap_or(0);
            widest.max(header.chars().count()).min(caps.get(i).copied().unwrap_or(usize::MAX).max(header.len()))
        })
        .collect();
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(headers, &mut out);
    let wrapped: Vec<Vec<Vec<String>>> =
        rows.iter().map(|row| row.iter().zip(&widths).map(|(cell, &width)| wrap(cell, width)).collect()).collect();
    let spaced = wrapped.iter().any(|row| row.iter().any(|cell| cell.len() > 1));
    for row in &wrapped {
        if spaced {
            out.push('\n');
        }
        let height = row.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..height {
            let cells: Vec<&str> = row.iter().map(|cell| cell.get(i).map_or("", String::as_str)).collect();
            line(&cells, &mut out);
        }
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces; a word
/// longer than a line is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let used = current.chars().count();
            let room = if used == 0 { width } else { width.saturating_sub(used + 1) };
            if word.len() <= room {
                if used > 0 {
                    current.push(' ');
                }
                current.extend(word);
                break;
            }
            if used > 0 {
                lines.push(std::mem::take(&mut current));
                continue;
            }
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(current);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_wrap_at_words_and_columns_stay_aligned() {
        let rows =
            vec![vec!["a".to_owned(), "short".to_owned()], vec!["a much longer cell here".to_owned(), "x".to_owned()]];
        let table = render_table(&["ONE", "TWO"], &[10, 10], &rows);
        assert_eq!(table, "ONE         TWO\n\na           short\n\na much      x\nlonger\ncell here\n", "{table}");
        let flat = render_table(&["K", "V"], &[10, 10], &[vec!["ab".into(), "c".into()]]);
        assert_eq!(flat, "K   V\nab  c\n");
    }

    #[test]
    fn words_longer_than_a_line_are_cut() {
        assert_eq!(wrap("abcdefgh ij", 3), ["abc", "def", "gh", "ij"]);
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(wrap("ab cd", 5), ["ab cd"]);
    }

    #[test]
    fn schemas_are_summarised_with_personal_data_and_masking() {
        use crate::blast_radius::{
            postgres::TablePrivileges,
            sensitivity::{DataKind, SensitiveColumn},
        };
        let read = TablePrivileges { select: true, ..TablePrivileges::default() };
        let write = TablePrivileges { select: true, insert: true, ..TablePrivileges::default() };
        let column = |coverage| vec![SensitiveColumn { column: "email".into(), kind: DataKind::Email, coverage }];
        let table = |schema: &str, name: &str, privileges, sensitive| JudgedTable {
            schema: schema.into(),
            table: name.into(),
            privileges,
            sensitive,
        };
        let detail = PostgresDetail::new(
            PgScope { database: "shop".into(), ..PgScope::default() },
            vec![
                table("crm", "customers", read, column(Coverage::MaskedForEveryone)),
                table("crm", "leads", write, column(Coverage::Unmasked)),
                table("shop", "orders", write, vec![]),
            ],
        );
        assert_eq!(
            detail.privileges_line(),
            "read 3 tables in 2 schemas (2 with personal data, 1 masked for everyone through Airlock), write 2 (1 with personal data)"
        );
        assert_eq!(
            detail.summary(),
            "db shop: read 3 tables in 2 schemas (2 with personal data, 1 masked for everyone through Airlock), \
             write 2 (1 with personal data); crm: read 2 (2 personal), write 1 (1 personal); shop: read 1, write 1"
        );
    }
}
