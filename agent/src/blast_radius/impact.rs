//! How bad a leak of each secret would be: high, medium or low, by the
//! first of these rules that applies (the row names it).
//!
//! | rule | impact | when |
//! |---|---|---|
//! | `superuser` | high | a reached role is SUPERUSER: everything, files and programs of the server's OS account included |
//! | `createrole` | high | CREATEROLE: may grant itself membership in other roles, and create logins |
//! | `bypassrls` | high | BYPASSRLS: row-level security does not apply |
//! | `replication` | high | REPLICATION: may stream a copy of the whole cluster |
//! | `writes-sensitive` | high | INSERT, UPDATE, DELETE or TRUNCATE on a table with personal data or secrets |
//! | `signing-key` | high | a CA key: signs certificates for any name or login that trusts it |
//! | `impersonation` | high | a Kubernetes token allowed to impersonate anyone |
//! | `root-token` | high | an OpenBao token with the `root` policy |
//! | `scope-unknown` | high | the scope could not be read or is not visible to Airlock (fail closed) |
//! | `reads-sensitive` | medium | SELECT on a table with personal data or secrets |
//! | `writes` | medium | changes data in tables without personal data |
//! | `createdb` | medium | CREATEDB: may create databases (and fill the disk) |
//! | `token-policies` | medium | an OpenBao token limited by named policies |
//! | `reads` | low | reads tables without personal data or secrets |
//! | `nothing` | low | no attribute and no table privilege |
//!
//! Masking does not lower an impact: it happens in Airlock's proxy, and a
//! leaked secret used from anywhere else reads the data as stored. Nor does
//! a short TTL (that column says how long a leak lasts, not how much it
//! opens).

use serde::Serialize;

use super::{
    postgres::PgScope,
    sensitivity::{SensitiveColumn, sensitive_columns},
};
use crate::masking::MaskingPolicy;

/// Leak impact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Little to gain.
    Low,
    /// Data read, or limited changes.
    Medium,
    /// Control of the target, or personal data changed.
    High,
}

impl Impact {
    /// How reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A documented impact rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A reached role is SUPERUSER.
    Superuser,
    /// A reached role has CREATEROLE.
    Createrole,
    /// A reached role has BYPASSRLS.
    Bypassrls,
    /// A reached role has REPLICATION.
    Replication,
    /// Writes a table with sensitive columns.
    WritesSensitive,
    /// A certificate authority's key.
    SigningKey,
    /// A Kubernetes token that impersonates.
    Impersonation,
    /// An OpenBao root token.
    RootToken,
    /// The scope is unknown.
    ScopeUnknown,
    /// Reads a table with sensitive columns.
    ReadsSensitive,
    /// Writes tables without sensitive columns.
    Writes,
    /// A reached role has CREATEDB.
    Createdb,
    /// An OpenBao token with named policies.
    TokenPolicies,
    /// Reads tables without sensitive columns.
    Reads,
    /// Nothing.
    Nothing,
}

impl Rule {
    /// The impact this rule gives.
    pub fn impact(self) -> Impact {
        match self {
            Self::Superuser
            | Self::Createrole
            | Self::Bypassrls
            | Self::Replication
            | Self::WritesSensitive
            | Self::SigningKey
            | Self::Impersonation
            | Self::RootToken
            | Self::ScopeUnknown => Impact::High,
            Self::ReadsSensitive | Self::Writes | Self::Createdb | Self::TokenPolicies => Impact::Medium,
            Self::Reads | Self::Nothing => Impact::Low,
        }
    }

    /// The rule's name, as the docs' table lists it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Superuser => "superuser",
            Self::Createrole => "createrole",
            Self::Bypassrls => "bypassrls",
            Self::Replication => "replication",
            Self::WritesSensitive => "writes-sensitive",
            Self::SigningKey => "signing-key",
            Self::Impersonation => "impersonation",
            Self::RootToken => "root-token",
            Self::ScopeUnknown => "scope-unknown",
            Self::ReadsSensitive => "reads-sensitive",
            Self::Writes => "writes",
            Self::Createdb => "createdb",
            Self::TokenPolicies => "token-policies",
            Self::Reads => "reads",
            Self::Nothing => "nothing",
        }
    }
}

/// An impact, the rule that decided it, and why it applies here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Assessment {
    /// The impact.
    pub impact: Impact,
    /// The deciding rule.
    pub rule: Rule,
    /// What in the scope made the rule apply.
    pub reason: String,
}

impl Assessment {
    /// `rule` applies because of `reason`.
    pub fn new(rule: Rule, reason: impl Into<String>) -> Self {
        Self { impact: rule.impact(), rule, reason: reason.into() }
    }
}

/// A table's access with its sensitive columns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JudgedTable {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Privileges.
    pub privileges: super::postgres::TablePrivileges,
    /// Sensitive columns, if any.
    pub sensitive: Vec<SensitiveColumn>,
}

/// The tables of `scope` with their sensitive columns under `masking`.
pub fn judge_tables(scope: &PgScope, masking: Option<&MaskingPolicy>) -> Vec<JudgedTable> {
    scope
        .tables
        .iter()
        .map(|t| JudgedTable {
            schema: t.schema.clone(),
            table: t.table.clone(),
            privileges: t.privileges,
            sensitive: sensitive_columns(&t.schema, &t.table, &t.columns, masking),
        })
        .collect()
}

/// The impact of a PostgreSQL login whose scope is `scope`, its tables
/// judged as `tables`.
pub fn assess_postgres(scope: &PgScope, tables: &[JudgedTable]) -> Assessment {
    let attribute = |has: fn(&super::postgres::RoleAttributes) -> bool, rule: Rule, what: &str| {
        scope.role_with(has).map(|role| Assessment::new(rule, format!("{what} through role {}", role.name)))
    };
    if !scope.missing_roles.is_empty() {
        // CREATE ROLE … IN ROLE fails on any missing role: no login exists.
        return Assessment::new(
            Rule::Nothing,
            format!("no login can be made: role(s) {} do not exist", scope.missing_roles.join(", ")),
        );
    }
    if let Some(found) = attribute(|a| a.superuser, Rule::Superuser, "SUPERUSER")
        .or_else(|| attribute(|a| a.createrole, Rule::Createrole, "CREATEROLE"))
        .or_else(|| attribute(|a| a.bypassrls, Rule::Bypassrls, "BYPASSRLS"))
        .or_else(|| attribute(|a| a.replication, Rule::Replication, "REPLICATION"))
    {
        return found;
    }
    let names = |pick: &dyn Fn(&JudgedTable) -> bool| {
        let picked: Vec<String> =
            tables.iter().filter(|t| pick(t)).map(|t| format!("{}.{}", t.schema, t.table)).collect();
        (!picked.is_empty()).then(|| list(&picked))
    };
    if let Some(written) = names(&|t| t.privileges.writes() && !t.sensitive.is_empty()) {
        return Assessment::new(Rule::WritesSensitive, format!("writes personal data or secrets in {written}"));
    }
    if let Some(read) = names(&|t| t.privileges.select && !t.sensitive.is_empty()) {
        return Assessment::new(Rule::ReadsSensitive, format!("reads personal data or secrets in {read}"));
    }
    if let Some(written) = names(&|t| t.privileges.writes()) {
        return Assessment::new(Rule::Writes, format!("changes {written}"));
    }
    if let Some(found) = attribute(|a| a.createdb, Rule::Createdb, "CREATEDB") {
        return found;
    }
    if let Some(read) = names(&|t| t.privileges.select) {
        return Assessment::new(Rule::Reads, format!("reads {read}, no personal data found"));
    }
    Assessment::new(Rule::Nothing, "no role attribute and no table privilege")
}

/// `items`, the first few and how many more.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 3;
    match items.len() {
        n if n <= SHOWN => items.join(", "),
        n => format!("{} and {} more", items[..SHOWN].join(", "), n - SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blast_radius::{
        postgres::{ReachedRole, RoleAttributes, TableAccess, TablePrivileges},
        sensitivity::{Coverage, DataKind},
    };

    fn role(name: &str, attributes: RoleAttributes) -> ReachedRole {
        ReachedRole { name: name.into(), depth: 0, inherited: true, attributes }
    }

    fn table(name: &str, privileges: TablePrivileges, columns: &[&str]) -> TableAccess {
        let (schema, table) = name.split_once('.').unwrap();
        TableAccess {
            schema: schema.into(),
            table: table.into(),
            privileges,
            columns: columns.iter().map(|c| (c.to_string(), "text".to_string())).collect(),
        }
    }

    const READ: TablePrivileges =
        TablePrivileges { select: true, insert: false, update: false, delete: false, truncate: false };
    const WRITE: TablePrivileges =
        TablePrivileges { select: true, insert: true, update: true, delete: false, truncate: false };

    fn assess(roles: Vec<ReachedRole>, tables: Vec<TableAccess>) -> Assessment {
        let scope = PgScope { roles, tables, ..PgScope::default() };
        assess_postgres(&scope, &judge_tables(&scope, None))
    }

    #[test]
    fn attributes_outrank_table_privileges_in_the_documented_order() {
        let plain = RoleAttributes { canlogin: true, ..RoleAttributes::default() };
        let tables = vec![table("shop.orders", WRITE, &["id", "email"])];
        let with = |attributes| vec![role("app", plain), role("boss", attributes)];
        let all = RoleAttributes { superuser: true, createrole: true, bypassrls: true, replication: true, ..plain };
        let found = assess(with(all), tables.clone());
        assert_eq!((found.rule, found.impact), (Rule::Superuser, Impact::High));
        assert_eq!(found.reason, "SUPERUSER through role boss");
        let found = assess(with(RoleAttributes { superuser: false, ..all }), tables.clone());
        assert_eq!(found.rule, Rule::Createrole);
        let found = assess(with(RoleAttributes { bypassrls: true, ..plain }), vec![]);
        assert_eq!((found.rule, found.impact), (Rule::Bypassrls, Impact::High));
        let found = assess(with(RoleAttributes { replication: true, ..plain }), vec![]);
        assert_eq!(found.rule, Rule::Replication);
        let found = assess(with(RoleAttributes { createdb: true, ..plain }), vec![]);
        assert_eq!((found.rule, found.impact), (Rule::Createdb, Impact::Medium));
    }

    #[test]
    fn personal_data_decides_between_high_medium_and_low() {
        let app = vec![role("app", RoleAttributes::default())];
        let found = assess(
            app.clone(),
            vec![table("shop.orders", WRITE, &["id", "total"]), table("crm.customers", WRITE, &["id", "email"])],
        );
        assert_eq!((found.rule, found.impact), (Rule::WritesSensitive, Impact::High));
        assert_eq!(found.reason, "writes personal data or secrets in crm.customers");
        let found = assess(
            app.clone(),
            vec![table("shop.orders", WRITE, &["id", "total"]), table("crm.customers", READ, &["card_number"])],
        );
        assert_eq!((found.rule, found.impact), (Rule::ReadsSensitive, Impact::Medium));
        let found = assess(app.clone(), vec![table("shop.orders", WRITE, &["id", "total"])]);
        assert_eq!((found.rule, found.impact), (Rule::Writes, Impact::Medium));
        let many: Vec<_> = (0..5).map(|i| table(&format!("shop.t{i}"), READ, &["id"])).collect();
        let found = assess(app.clone(), many);
        assert_eq!((found.rule, found.impact), (Rule::Reads, Impact::Low));
        assert_eq!(found.reason, "reads shop.t0, shop.t1, shop.t2 and 2 more, no personal data found");
        let found = assess(app, vec![]);
        assert_eq!((found.rule, found.impact), (Rule::Nothing, Impact::Low));
    }

    #[test]
    fn masking_is_reported_but_does_not_lower_the_impact() {
        use crate::masking::policy::{ColumnMatcher, ColumnRule, Exemption};
        let at = crate::source::SourceLocation { file: "policy.toml".into(), line: 1, column: 1 };
        let policy = MaskingPolicy {
            detectors: vec![],
            strategy: Default::default(),
            detector_rules: vec![],
            rules: vec![ColumnRule {
                columns: ColumnMatcher::Column("crm.customers.email".into()),
                strategy: Default::default(),
                exempt: Exemption::default(),
                actors: vec![],
                location: at.clone(),
            }],
            exempt: Exemption::default(),
            location: at,
        };
        let scope = PgScope {
            roles: vec![role("analyst", RoleAttributes::default())],
            tables: vec![table("crm.customers", READ, &["id", "email"])],
            ..PgScope::default()
        };
        let tables = judge_tables(&scope, Some(&policy));
        assert_eq!(tables[0].sensitive[0].kind, DataKind::Email);
        assert_eq!(tables[0].sensitive[0].coverage, Coverage::MaskedForEveryone);
        assert_eq!(assess_postgres(&scope, &tables).impact, Impact::Medium);
    }

    #[test]
    fn roles_that_do_not_exist_grant_nothing() {
        let scope = PgScope { missing_roles: vec!["ghost".into()], ..PgScope::default() };
        let found = assess_postgres(&scope, &[]);
        assert_eq!((found.rule, found.impact), (Rule::Nothing, Impact::Low));
        assert_eq!(found.reason, "no login can be made: role(s) ghost do not exist");
    }
}
