//! What a set of PostgreSQL roles can do on a live server, read through
//! the target's admin login in a read-only connection.
//!
//! An attacker holding a login can `SET ROLE` to every role it is a member
//! of, directly or through other roles, whether or not the membership
//! inherits privileges (NOINHERIT only stops their automatic use). So the
//! scope is the union over the whole membership closure: role attributes
//! (which are never inherited, only reached by `SET ROLE`) and per-table
//! privileges. Roles reached only through a NOINHERIT membership are named
//! as such, since a session uses their rights only after `SET ROLE`.
//!
//! Tables are those of the admin login's database (other databases the
//! roles may connect to are listed by name); system schemas are left out.

use std::{collections::BTreeSet, net::SocketAddr};

use serde::Serialize;

use crate::{
    credentials::{AdminLogin, CredentialError, ReadOnlyAdminSession},
    policy::UpstreamTls,
};

/// Memberships deeper than this are not followed (PostgreSQL forbids
/// cycles; the bound only keeps a corrupt catalog from looping).
const MAX_DEPTH: i32 = 64;

/// A role reached from the starting roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReachedRole {
    /// Role name.
    pub name: String,
    /// Memberships from the nearest starting role (0: a starting role).
    pub depth: i32,
    /// Whether its privileges are used without `SET ROLE` (every
    /// membership on some path inherits).
    pub inherited: bool,
    /// Its attributes.
    pub attributes: RoleAttributes,
}

/// A role's attributes from `pg_roles`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RoleAttributes {
    /// SUPERUSER: every check passes.
    pub superuser: bool,
    /// CREATEROLE: may create roles and grant membership in others.
    pub createrole: bool,
    /// CREATEDB.
    pub createdb: bool,
    /// BYPASSRLS: row-level security does not apply.
    pub bypassrls: bool,
    /// REPLICATION: may stream the whole cluster.
    pub replication: bool,
    /// LOGIN.
    pub canlogin: bool,
}

/// A table (or view) some reached role has privileges on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableAccess {
    /// Schema.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// What may be done with it.
    pub privileges: TablePrivileges,
    /// Its columns: (name, type).
    #[serde(skip)]
    pub columns: Vec<(String, String)>,
}

/// Privileges on one table, unioned over the reached roles; each needs
/// USAGE on the schema by the same role to count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TablePrivileges {
    /// SELECT on the table or any of its columns.
    pub select: bool,
    /// INSERT on the table or any of its columns.
    pub insert: bool,
    /// UPDATE on the table or any of its columns.
    pub update: bool,
    /// DELETE.
    pub delete: bool,
    /// TRUNCATE.
    pub truncate: bool,
}

impl TablePrivileges {
    /// Whether any privilege changes data.
    pub fn writes(&self) -> bool {
        self.insert || self.update || self.delete || self.truncate
    }
}

/// What the starting roles reach on one server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PgScope {
    /// The database whose tables were read.
    pub database: String,
    /// Starting roles that do not exist on the server.
    pub missing_roles: Vec<String>,
    /// Every role reached, starting roles included, nearest first.
    pub roles: Vec<ReachedRole>,
    /// Tables with some privilege.
    pub tables: Vec<TableAccess>,
    /// Other databases the roles may connect to.
    pub other_databases: Vec<String>,
}

impl PgScope {
    /// The reached role that has attribute `has` (nearest first), if any.
    pub fn role_with(&self, has: impl Fn(&RoleAttributes) -> bool) -> Option<&ReachedRole> {
        self.roles.iter().find(|role| has(&role.attributes))
    }

    /// Roles reached only through a NOINHERIT membership.
    pub fn set_role_only(&self) -> impl Iterator<Item = &ReachedRole> {
        self.roles.iter().filter(|role| !role.inherited)
    }
}

/// Whose scope to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder<'a> {
    /// The admin login itself.
    Admin,
    /// A just-in-time login made a member of these roles (it inherits).
    MemberOf(&'a [String]),
}

/// Logs in with the admin login in `admin_file` to `server` on a
/// connection that cannot change anything.
pub async fn connect(
    admin_file: &std::path::Path,
    server: SocketAddr,
    tls: &UpstreamTls,
) -> Result<ReadOnlyAdminSession, CredentialError> {
    AdminLogin::load(admin_file)?.connect(server, tls).await?.read_only().await
}

/// Reads the scope of `holder` on the server `session` is logged in to.
pub async fn read(session: &ReadOnlyAdminSession, holder: Holder<'_>) -> Result<PgScope, CredentialError> {
    let starting = match holder {
        Holder::Admin => {
            let rows = session.query("SELECT current_user::text", &[]).await?;
            rows.iter().map(|row| row.get(0)).collect()
        }
        Holder::MemberOf(roles) => roles.to_vec(),
    };
    read_scope(session, &starting).await
}

const ROLES_SQL: &str = "
WITH RECURSIVE reach(oid, inherited, depth) AS (
    SELECT r.oid, true, 0 FROM pg_roles r WHERE r.rolname = ANY($1::text[])
  UNION
    SELECT m.roleid,
           reach.inherited AND COALESCE((to_jsonb(m) ->> 'inherit_option')::boolean, member.rolinherit),
           reach.depth + 1
    FROM reach
    JOIN pg_auth_members m ON m.member = reach.oid
    JOIN pg_roles member ON member.oid = reach.oid
    WHERE reach.depth < $2
)
SELECT r.oid, r.rolname::text, min(reach.depth), bool_or(reach.inherited),
       r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication, r.rolcanlogin
FROM reach JOIN pg_roles r ON r.oid = reach.oid
GROUP BY r.oid, r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication, r.rolcanlogin
ORDER BY 3, 2";

/// Privileges per table, unioned over the roles; columns read only for
/// tables with some privilege.
const TABLES_SQL: &str = "
SELECT p.nspname, p.relname, p.s, p.i, p.u, p.d, p.t,
       (SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
          FROM pg_attribute a WHERE a.attrelid = p.oid AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT coalesce(array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum), '{}')
          FROM pg_attribute a WHERE a.attrelid = p.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM (
    SELECT n.nspname::text AS nspname, c.relname::text AS relname, c.oid,
           bool_or(has_schema_privilege(r.name, n.oid, 'USAGE') AND has_any_column_privilege(r.name, c.oid, 'SELECT')) AS s,
           bool_or(has_schema_privilege(r.name, n.oid, 'USAGE') AND has_any_column_privilege(r.name, c.oid, 'INSERT')) AS i,
           bool_or(has_schema_privilege(r.name, n.oid, 'USAGE') AND has_any_column_privilege(r.name, c.oid, 'UPDATE')) AS u,
           bool_or(has_schema_privilege(r.name, n.oid, 'USAGE') AND has_table_privilege(r.name, c.oid, 'DELETE')) AS d,
           bool_or(has_schema_privilege(r.name, n.oid, 'USAGE') AND has_table_privilege(r.name, c.oid, 'TRUNCATE')) AS t
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN unnest($1::text[]) AS r(name)
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
      AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
    GROUP BY n.nspname, c.relname, c.oid
) p
WHERE p.s OR p.i OR p.u OR p.d OR p.t
ORDER BY 1, 2";

const DATABASES_SQL: &str = "
SELECT d.datname::text FROM pg_database d
WHERE d.datallowconn AND NOT d.datistemplate AND d.datname <> current_database()
  AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS r(name) WHERE has_database_privilege(r.name, d.oid, 'CONNECT'))
ORDER BY 1";

async fn read_scope(session: &ReadOnlyAdminSession, starting: &[String]) -> Result<PgScope, CredentialError> {
    let database: String =
        session.query("SELECT current_database()::text", &[]).await?.first().map(|row| row.get(0)).unwrap_or_default();
    let mut roles = Vec::new();
    for row in session.query(ROLES_SQL, &[&starting, &MAX_DEPTH]).await? {
        roles.push(ReachedRole {
            name: row.get(1),
            depth: row.get(2),
            inherited: row.get(3),
            attributes: RoleAttributes {
                superuser: row.get(4),
                createrole: row.get(5),
                createdb: row.get(6),
                bypassrls: row.get(7),
                replication: row.get(8),
                canlogin: row.get(9),
            },
        });
    }
    let present: BTreeSet<&str> = roles.iter().filter(|r| r.depth == 0).map(|r| r.name.as_str()).collect();
    let missing_roles = starting.iter().filter(|name| !present.contains(name.as_str())).cloned().collect();
    // PUBLIC's privileges are every login's, even one granted no role.
    let holders: Vec<&str> = roles.iter().map(|r| r.name.as_str()).chain(["public"]).collect();
    let mut tables = Vec::new();
    for row in session.query(TABLES_SQL, &[&holders]).await? {
        let privileges = TablePrivileges {
            select: row.get(2),
            insert: row.get(3),
            update: row.get(4),
            delete: row.get(5),
            truncate: row.get(6),
        };
        if privileges == TablePrivileges::default() {
            continue;
        }
        let names: Vec<String> = row.get(7);
        let types: Vec<String> = row.get(8);
        tables.push(TableAccess {
            schema: row.get(0),
            table: row.get(1),
            privileges,
            columns: names.into_iter().zip(types).collect(),
        });
    }
    let other_databases = session.query(DATABASES_SQL, &[&holders]).await?.iter().map(|row| row.get(0)).collect();
    Ok(PgScope { database, missing_roles, roles, tables, other_databases })
}
