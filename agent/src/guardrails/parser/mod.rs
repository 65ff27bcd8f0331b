//! PostgreSQL's own parser (libpg_query, from the `pg_query` crate), read
//! as the server would read the text: with the session's
//! `standard_conforming_strings`.
//!
//! The guard classifies what this parser makes of a statement, so where a
//! statement ends and what each one is are decided by the server's grammar
//! and lexer, not by a reading of ours that could differ.
//!
//! Two properties of libpg_query shape this module:
//! - its tree printer recurses once per level of the tree, and a statement
//!   is as deep as it is long (`1+1+…`): long texts are parsed on a thread
//!   of our own whose stack fits the deepest tree [`MAX_TEXT`] can make;
//! - built without `DEBUG`, every parse swaps the process's fd 2 for a pipe
//!   to capture warnings, which would swallow other threads' logs:
//!   `.cargo/config.toml` builds it with `-DDEBUG`, and parses here ask for
//!   no escape-string warning, the one warning the raw parser gives.

pub mod tree;

use std::{
    ffi::{CStr, CString, c_char, c_int},
    sync::{Mutex, mpsc},
};

pub use self::tree::{Item, Tree, Value};

// Linked for its static libpg_query; its Rust API (protobuf trees) is
// several times slower than the JSON printer used here.
use pg_query as _;

/// Longest text handed to the parser.
pub const MAX_TEXT: usize = 1 << 20;

/// Texts up to this long are parsed on the caller's stack: a tree level
/// costs the printer about 130 bytes of stack, a byte of text makes at most
/// half a level, so 8 KiB needs well under the 2 MiB of a runtime thread.
const INLINE_TEXT: usize = 8 << 10;

/// Stack of the thread that parses longer texts: [`MAX_TEXT`] / 2 levels,
/// with room to spare. Only the pages a parse touches are ever backed.
const DEEP_STACK: usize = 256 << 20;

/// How the server's lexer reads string literals in a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lexing {
    /// `standard_conforming_strings = off`: backslashes escape in `'…'`.
    pub backslash_escapes: bool,
}

/// Why the parser did not give a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// PostgreSQL's parser rejected the text, as the server would.
    #[error("{message} (at character {position})")]
    Syntax {
        /// The server's message, e.g. `syntax error at or near "SELEKT"`.
        message: String,
        /// 1-based character position, 0 when none.
        position: i32,
    },
    /// The text holds a NUL byte, which no protocol message can carry.
    #[error("the statement holds a NUL byte")]
    Nul,
    /// Longer than [`MAX_TEXT`].
    #[error("{0}-byte statement is too large to inspect")]
    TooLarge(usize),
    /// libpg_query's output did not read (a bug; fail closed).
    #[error("{0}")]
    Tree(#[from] tree::Malformed),
    /// The thread for long texts is gone.
    #[error("the parser thread is not running")]
    Unavailable,
}

/// The parse tree's JSON, as libpg_query printed it.
pub struct Parsed {
    json: String,
}

impl Parsed {
    /// The tree, read.
    pub fn tree(&self) -> Result<Tree<'_>, tree::Malformed> {
        Tree::read(&self.json)
    }
}

/// The node type of each top-level statement (`SelectStmt`, `DropStmt`…),
/// in order.
pub fn statement_kinds<'a>(tree: &Tree<'a>) -> Vec<&'a str> {
    let Some(stmts) = tree.member(0, "stmts") else { return Vec::new() };
    tree.children(stmts)
        .filter_map(|raw| tree.member(raw, "stmt").and_then(|stmt| tree.node(stmt)).map(|(kind, _)| kind))
        .collect()
}

/// Parses `sql` as the server would under `lexing`.
pub fn parse(sql: &str, lexing: Lexing) -> Result<Parsed, ParseError> {
    if sql.len() > MAX_TEXT {
        return Err(ParseError::TooLarge(sql.len()));
    }
    let text = CString::new(sql).map_err(|_| ParseError::Nul)?;
    if sql.len() <= INLINE_TEXT {
        return parse_here(&text, lexing);
    }
    DeepParser::get().parse(text, lexing)
}

const PG_QUERY_DISABLE_STANDARD_CONFORMING_STRINGS: c_int = 32;
const PG_QUERY_DISABLE_ESCAPE_STRING_WARNING: c_int = 64;

#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

unsafe extern "C" {
    fn pg_query_parse_opts(input: *const c_char, parser_options: c_int) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

fn parse_here(text: &CStr, lexing: Lexing) -> Result<Parsed, ParseError> {
    let mut options = PG_QUERY_DISABLE_ESCAPE_STRING_WARNING;
    if lexing.backslash_escapes {
        options |= PG_QUERY_DISABLE_STANDARD_CONFORMING_STRINGS;
    }
    // SAFETY: `text` is NUL-terminated and outlives the call. libpg_query
    // keeps its state per thread. The result's strings are valid until
    // freed, and are copied out before `pg_query_free_parse_result`, which
    // is called exactly once.
    unsafe {
        let result = pg_query_parse_opts(text.as_ptr(), options);
        let outcome = if !result.error.is_null() {
            let error = &*result.error;
            let message = if error.message.is_null() {
                "unknown parse error".to_owned()
            } else {
                CStr::from_ptr(error.message).to_string_lossy().into_owned()
            };
            Err(ParseError::Syntax { message, position: error.cursorpos })
        } else if result.parse_tree.is_null() {
            Err(ParseError::Tree(tree::Malformed(0)))
        } else {
            Ok(Parsed { json: CStr::from_ptr(result.parse_tree).to_string_lossy().into_owned() })
        };
        pg_query_free_parse_result(result);
        outcome
    }
}

type Job = (CString, Lexing, mpsc::SyncSender<Result<Parsed, ParseError>>);

/// The thread that parses long texts, started on first use.
struct DeepParser {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl DeepParser {
    fn get() -> &'static Self {
        static PARSER: std::sync::OnceLock<DeepParser> = std::sync::OnceLock::new();
        PARSER.get_or_init(|| {
            let (jobs, queue) = mpsc::channel::<Job>();
            let spawned =
                std::thread::Builder::new().name("sql-parser".into()).stack_size(DEEP_STACK).spawn(move || {
                    for (text, lexing, reply) in queue {
                        let _ = reply.send(parse_here(&text, lexing));
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "could not start the thread that parses long statements");
            }
            Self { jobs: Mutex::new(jobs) }
        })
    }

    fn parse(&self, text: CString, lexing: Lexing) -> Result<Parsed, ParseError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((text, lexing, reply))
            .map_err(|_| ParseError::Unavailable)?;
        answer.recv().map_err(|_| ParseError::Unavailable)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str, lexing: Lexing) -> Vec<String> {
        let parsed = parse(sql, lexing).unwrap();
        statement_kinds(&parsed.tree().unwrap()).into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn reads_strings_as_the_session_does() {
        let sql = r"SELECT 'x\''; DROP TABLE t; -- '";
        assert_eq!(kinds(sql, Lexing::default()), ["SelectStmt"]);
        assert_eq!(kinds(sql, Lexing { backslash_escapes: true }), ["SelectStmt", "DropStmt"]);
    }

    #[test]
    fn syntax_errors_are_the_servers() {
        let Err(ParseError::Syntax { message, position }) = parse("SELEKT 1", Lexing::default()) else {
            panic!("parsed")
        };
        assert_eq!((message.as_str(), position), ("syntax error at or near \"SELEKT\"", 1));
        assert_eq!(parse("SELECT \0", Lexing::default()).err(), Some(ParseError::Nul));
        assert!(matches!(parse(&" ".repeat(MAX_TEXT + 1), Lexing::default()), Err(ParseError::TooLarge(_))));
    }

    #[test]
    fn deep_statements_do_not_overflow_the_stack() {
        // 200,000 levels: far past what a runtime thread's stack holds.
        let sql = format!("SELECT {}1", "1+".repeat(200_000));
        let parsed = parse(&sql, Lexing::default()).unwrap();
        assert!(parsed.tree().unwrap().items().len() > 200_000);
    }
}
