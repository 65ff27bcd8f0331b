//! Shell text → the simple commands it would run, as far as text can tell.
//!
//! brush-parser (a bash-compatible parser) reads the text; this module walks
//! every list, pipeline, compound command, function body, command and
//! process substitution, and gives each simple command's words with their
//! quoting removed, the way the shell would pass them, marking words whose
//! value only the run can tell (`$x`, `$(…)`, brace expansions).
//!
//! The parser is a PEG parser that recurses with nesting and backtracks
//! badly on some unterminated input, and it may panic on input it does not
//! expect. So text is screened first (length, nesting, `((`), and parsed
//! on a thread of its own with a large stack and a deadline; whatever goes
//! wrong there is [`Unparsed`], which the guard refuses.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed},
        mpsc,
    },
    time::Duration,
};

use brush_parser::{
    Parser, ParserOptions, ast,
    word::{self, WordPiece, WordPieceWithSource},
};

/// Longest command text judged.
pub(crate) const MAX_TEXT: usize = 64 * 1024;
/// Most openers (`(`, `{`, `` ` ``, `if`, `for`, …) a text may hold; they
/// bound how deep the parser recurses.
const MAX_OPENERS: usize = 512;
/// Most `((` a text may hold: unterminated, each doubles the parser's work.
const MAX_DOUBLE_PARENS: usize = 8;
/// Parses left running past their deadline that stop new ones (each
/// holds a core); commands are refused until one ends.
const MAX_ABANDONED: usize = 2;
/// Stack of a parse thread: recursion over 512 openers fits with room.
const PARSE_STACK: usize = 32 << 20;
/// A parse taking longer is abandoned (and its command refused).
const PARSE_DEADLINE: Duration = Duration::from_secs(1);

/// Why text could not be judged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unparsed {
    /// Not valid shell syntax.
    #[error("it is not valid shell syntax ({0})")]
    Syntax(String),
    /// Valid so far, but unfinished (an open quote, `do` without `done`, …).
    #[error("it is unfinished shell syntax (an open quote, bracket or block)")]
    Incomplete,
    /// Longer or more deeply nested than the guard reads.
    #[error("it is longer or more deeply nested than the command guard reads ({0})")]
    TooComplex(&'static str),
    /// The parser ran out of time or failed.
    #[error("the command guard could not finish reading it ({0})")]
    Failed(&'static str),
}

/// A word as the program receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Arg {
    /// The value, quotes removed; for a [`Kind::Dynamic`] word, as written.
    text: String,
    kind: Kind,
    /// First character when the word starts with literal text.
    leading: Option<char>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Known: quoted or plain text.
    Literal,
    /// Known text with unquoted `*`, `?` or `[`: pathname expansion may
    /// replace it with file names.
    Glob,
    /// Known only when it runs: expansions, substitutions, brace expansion.
    Dynamic,
    /// `<(…)` or `>(…)`: a pipe's file name.
    ProcessSubstitution,
}

impl Arg {
    /// A plain word.
    pub(crate) fn plain(text: &str) -> Self {
        Self { text: text.to_owned(), kind: Kind::Literal, leading: text.chars().next() }
    }

    /// A word known only at run time, shown as `written`.
    pub(crate) fn dynamic(written: &str) -> Self {
        Self { text: written.to_owned(), kind: Kind::Dynamic, leading: None }
    }

    /// The value, when the text alone tells it (globs included: as an
    /// option or program name a glob is read as written).
    pub(crate) fn literal(&self) -> Option<&str> {
        matches!(self.kind, Kind::Literal | Kind::Glob).then_some(self.text.as_str())
    }

    /// The value when it is exactly this text, with no expansion at all.
    pub(crate) fn exact(&self) -> Option<&str> {
        (self.kind == Kind::Literal).then_some(self.text.as_str())
    }

    /// Whether it is a pipe from a process substitution.
    pub(crate) fn is_process_substitution(&self) -> bool {
        self.kind == Kind::ProcessSubstitution
    }

    /// Whether, known only at run time, it may turn out to be an option.
    pub(crate) fn may_be_option(&self) -> bool {
        self.kind == Kind::Dynamic && self.leading.is_none_or(|c| c == '-')
    }

    /// The word for messages and patterns.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// Where a simple command's standard input comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stdin {
    /// The session's or a file: not a program's output.
    Inherited,
    /// Another program's output (a pipeline, `< <(…)`).
    Pipe,
    /// A here-document or here-string the text spells out.
    Text(String),
    /// A here-document or here-string with expansions.
    DynamicText,
}

/// A simple command: its words and its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Simple {
    /// argv, assignments and redirections left out.
    pub words: Vec<Arg>,
    /// Where its standard input comes from.
    pub stdin: Stdin,
}

/// Every simple command in `text`, in order, those inside substitutions
/// first; `stdin` is what the text's first commands read.
pub(crate) fn parse(text: &str, stdin: &Stdin) -> Result<Vec<Simple>, Unparsed> {
    screen(text)?;
    if ABANDONED.load(Relaxed) >= MAX_ABANDONED {
        return Err(Unparsed::Failed("the command guard is still reading earlier commands it gave up on"));
    }
    let state = Arc::new(AtomicU8::new(RUNNING));
    let (sender, receiver) = mpsc::sync_channel(1);
    let owned = text.to_owned();
    let stdin = stdin.clone();
    let thread_state = Arc::clone(&state);
    let spawned = std::thread::Builder::new().name("airlock-shell".into()).stack_size(PARSE_STACK).spawn(move || {
        let _ = sender.send(parse_here(&owned, &stdin));
        if thread_state.compare_exchange(RUNNING, DONE, Relaxed, Relaxed).is_err() {
            ABANDONED.fetch_sub(1, Relaxed);
        }
    });
    let Ok(thread) = spawned else {
        return Err(Unparsed::Failed("no thread to read it on"));
    };
    match receiver.recv_timeout(PARSE_DEADLINE) {
        Ok(result) => {
            // It is past its work: joined, its memory is back before the caller goes on.
            let _ = thread.join();
            result
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            if state.compare_exchange(RUNNING, GIVEN_UP, Relaxed, Relaxed).is_ok() {
                ABANDONED.fetch_add(1, Relaxed);
                return Err(Unparsed::Failed("reading it took too long"));
            }
            // Finished as the deadline passed.
            receiver.try_recv().unwrap_or(Err(Unparsed::Failed("the parser failed on it")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Unparsed::Failed("the parser failed on it")),
    }
}

/// States of a parse thread.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const GIVEN_UP: u8 = 2;

/// Parse threads still running past their deadline.
static ABANDONED: AtomicUsize = AtomicUsize::new(0);

/// Refuses text the parser may take too deep or too long over. Counts
/// openers outside single quotes (closers never cancel them, so quoting
/// cannot hide depth).
fn screen(text: &str) -> Result<(), Unparsed> {
    if text.len() > MAX_TEXT {
        return Err(Unparsed::TooComplex("over 64 KiB"));
    }
    let bytes = text.as_bytes();
    let (mut openers, mut double_parens) = (0, 0);
    let mut i = 0;
    let mut word_start = true;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'\\' => i += 1,
            b'\'' if i > 0 && bytes[i - 1] == b'$' => {
                // $'…': backslash escapes a quote inside.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'(' | b'{' | b'`' => {
                openers += 1;
                if byte == b'(' && bytes.get(i + 1) == Some(&b'(') {
                    double_parens += 1;
                }
            }
            b'0'..=b'9' if i == 0 || !bytes[i - 1].is_ascii_digit() => {
                // File descriptors (`9>`) and directory-stack entries (`~+9`)
                // past i32: the parser would fail on them (it panics).
                let end = bytes[i..].iter().position(|b| !b.is_ascii_digit()).map_or(bytes.len(), |n| i + n);
                let tilde = bytes[..i].ends_with(b"~") || bytes[..i].ends_with(b"~+") || bytes[..i].ends_with(b"~-");
                let redirect = matches!(bytes.get(end), Some(b'<' | b'>'));
                if end - i > 9 && (tilde || redirect) {
                    return Err(Unparsed::TooComplex("a file descriptor or directory-stack number over 9 digits"));
                }
                i = end - 1;
            }
            _ if word_start && byte.is_ascii_lowercase() => {
                let end = bytes[i..].iter().position(|b| !b.is_ascii_lowercase()).map_or(bytes.len(), |n| i + n);
                if matches!(&bytes[i..end], b"if" | b"for" | b"while" | b"until" | b"case" | b"select") {
                    openers += 1;
                }
                i = end - 1;
            }
            _ => {}
        }
        word_start = matches!(byte, b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b'{' | b'`');
        i += 1;
    }
    if openers > MAX_OPENERS {
        return Err(Unparsed::TooComplex("over 512 brackets and blocks"));
    }
    if double_parens > MAX_DOUBLE_PARENS {
        return Err(Unparsed::TooComplex("over 8 `((`"));
    }
    Ok(())
}

fn options() -> ParserOptions {
    ParserOptions::default()
}

/// Parses and walks `text` on this thread.
fn parse_here(text: &str, stdin: &Stdin) -> Result<Vec<Simple>, Unparsed> {
    let mut parser = Parser::new(std::io::Cursor::new(text.as_bytes()), &options());
    let program = parser.parse_program().map_err(|error| match error {
        brush_parser::ParseError::ParsingAtEndOfInput => Unparsed::Incomplete,
        brush_parser::ParseError::Tokenizing { inner, .. } if inner.is_incomplete() => Unparsed::Incomplete,
        brush_parser::ParseError::ParsingNear(at) => {
            Unparsed::Syntax(format!("near line {} column {}", at.line, at.column))
        }
        brush_parser::ParseError::Tokenizing { inner, .. } => Unparsed::Syntax(inner.to_string()),
    })?;
    let mut walk = Walk { commands: Vec::new(), source: text };
    for list in &program.complete_commands {
        walk.list(list, stdin)?;
    }
    Ok(walk.commands)
}

/// Collects simple commands from an AST.
struct Walk<'a> {
    commands: Vec<Simple>,
    /// The text parsed, which source locations index.
    source: &'a str,
}

impl Walk<'_> {
    fn list(&mut self, list: &ast::CompoundList, stdin: &Stdin) -> Result<(), Unparsed> {
        for ast::CompoundListItem(and_or, _) in &list.0 {
            self.pipeline(&and_or.first, stdin)?;
            for next in &and_or.additional {
                let (ast::AndOr::And(pipeline) | ast::AndOr::Or(pipeline)) = next;
                self.pipeline(pipeline, stdin)?;
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, pipeline: &ast::Pipeline, stdin: &Stdin) -> Result<(), Unparsed> {
        for (stage, command) in pipeline.seq.iter().enumerate() {
            let stdin = if stage == 0 { stdin.clone() } else { Stdin::Pipe };
            self.command(command, &stdin)?;
        }
        Ok(())
    }

    fn command(&mut self, command: &ast::Command, stdin: &Stdin) -> Result<(), Unparsed> {
        match command {
            ast::Command::Simple(simple) => self.simple(simple, stdin),
            ast::Command::Compound(compound, redirects) => {
                let stdin = match redirects {
                    Some(list) => self.redirects(&list.0, stdin.clone())?,
                    None => stdin.clone(),
                };
                self.compound(compound, &stdin)
            }
            ast::Command::Function(function) => {
                // Judged where it is defined: whatever it runs is in its body.
                let ast::FunctionBody(body, redirects) = &function.body;
                let stdin = match redirects {
                    Some(list) => self.redirects(&list.0, stdin.clone())?,
                    None => stdin.clone(),
                };
                self.compound(body, &stdin)
            }
            ast::Command::ExtendedTest(test, _) => self.extended_test(&test.expr),
        }
    }

    fn compound(&mut self, compound: &ast::CompoundCommand, stdin: &Stdin) -> Result<(), Unparsed> {
        use ast::CompoundCommand as C;
        match compound {
            C::Arithmetic(arithmetic) if self.is_arithmetic(&arithmetic.loc) => {
                self.expansions_in(&arithmetic.expr.value).map(drop)
            }
            C::Arithmetic(arithmetic) => {
                // `( (cmd) )` or `((cmd) )`: bash runs subshells where the
                // parser read arithmetic.
                let nested = parse_here(&arithmetic.expr.value, stdin)?;
                self.commands.extend(nested);
                Ok(())
            }
            C::ArithmeticForClause(clause) => {
                for expr in [&clause.initializer, &clause.condition, &clause.updater].into_iter().flatten() {
                    self.expansions_in(&expr.value)?;
                }
                self.list(&clause.body.list, stdin)
            }
            C::BraceGroup(group) => self.list(&group.list, stdin),
            C::Subshell(subshell) => self.list(&subshell.list, stdin),
            C::ForClause(clause) => {
                for value in clause.values.iter().flatten() {
                    self.word(value)?;
                }
                self.list(&clause.body.list, stdin)
            }
            C::CaseClause(clause) => {
                self.word(&clause.value)?;
                for item in &clause.cases {
                    for pattern in &item.patterns {
                        self.word(pattern)?;
                    }
                    if let Some(list) = &item.cmd {
                        self.list(list, stdin)?;
                    }
                }
                Ok(())
            }
            C::IfClause(clause) => {
                self.list(&clause.condition, stdin)?;
                self.list(&clause.then, stdin)?;
                for branch in clause.elses.iter().flatten() {
                    if let Some(condition) = &branch.condition {
                        self.list(condition, stdin)?;
                    }
                    self.list(&branch.body, stdin)?;
                }
                Ok(())
            }
            C::WhileClause(clause) | C::UntilClause(clause) => {
                self.list(&clause.0, stdin)?;
                self.list(&clause.1.list, stdin)
            }
            C::Coprocess(coprocess) => self.command(&coprocess.body, stdin),
        }
    }

    /// Whether the text at `loc` opens with `((` and closes with `))`, as
    /// bash's arithmetic command does.
    fn is_arithmetic(&self, loc: &brush_parser::SourceSpan) -> bool {
        let spanned: String =
            self.source.chars().skip(loc.start.index).take(loc.end.index.saturating_sub(loc.start.index)).collect();
        spanned.starts_with("((") && spanned.ends_with("))")
    }

    fn extended_test(&mut self, expr: &ast::ExtendedTestExpr) -> Result<(), Unparsed> {
        use ast::ExtendedTestExpr as E;
        match expr {
            E::And(a, b) | E::Or(a, b) => {
                self.extended_test(a)?;
                self.extended_test(b)
            }
            E::Not(inner) | E::Parenthesized(inner) => self.extended_test(inner),
            E::UnaryTest(_, word) => self.word(word).map(drop),
            E::BinaryTest(_, left, right) => {
                self.word(left)?;
                self.word(right).map(drop)
            }
        }
    }

    fn simple(&mut self, simple: &ast::SimpleCommand, stdin: &Stdin) -> Result<(), Unparsed> {
        let mut words = Vec::new();
        let mut stdin = stdin.clone();
        let prefix = simple.prefix.iter().flat_map(|p| &p.0);
        // Owned name item so the three can be walked in order.
        let name: Vec<_> = simple.word_or_name.iter().cloned().map(ast::CommandPrefixOrSuffixItem::Word).collect();
        let suffix = simple.suffix.iter().flat_map(|s| &s.0);
        for item in prefix.chain(name.iter()).chain(suffix) {
            use ast::CommandPrefixOrSuffixItem as I;
            match item {
                I::Word(word) => words.push(self.word(word)?),
                I::AssignmentWord(assignment, _) => match &assignment.value {
                    ast::AssignmentValue::Scalar(word) => drop(self.word(word)?),
                    ast::AssignmentValue::Array(items) => {
                        for (key, value) in items {
                            if let Some(key) = key {
                                self.word(key)?;
                            }
                            self.word(value)?;
                        }
                    }
                },
                I::IoRedirect(redirect) => stdin = self.redirects(std::slice::from_ref(redirect), stdin)?,
                I::ProcessSubstitution(kind, subshell) => {
                    let inner = match kind {
                        ast::ProcessSubstitutionKind::Read => Stdin::Inherited,
                        ast::ProcessSubstitutionKind::Write => Stdin::Pipe,
                    };
                    self.list(&subshell.list, &inner)?;
                    words.push(Arg { text: format!("{kind}(…)"), kind: Kind::ProcessSubstitution, leading: None });
                }
            }
        }
        if !words.is_empty() {
            self.commands.push(Simple { words, stdin });
        }
        Ok(())
    }

    /// Walks redirections; gives the standard input they leave.
    fn redirects(&mut self, redirects: &[ast::IoRedirect], mut stdin: Stdin) -> Result<Stdin, Unparsed> {
        for redirect in redirects {
            use ast::IoRedirect as R;
            let to_stdin = |fd: &Option<ast::IoFd>| fd.is_none_or(|fd| fd == 0);
            match redirect {
                R::File(fd, kind, target) => match target {
                    ast::IoFileRedirectTarget::Filename(word) | ast::IoFileRedirectTarget::Duplicate(word) => {
                        self.word(word)?;
                        if to_stdin(fd) && matches!(kind, ast::IoFileRedirectKind::Read) {
                            stdin = Stdin::Inherited;
                        }
                    }
                    ast::IoFileRedirectTarget::Fd(_) => {}
                    ast::IoFileRedirectTarget::ProcessSubstitution(_, subshell) => {
                        self.list(&subshell.list, &Stdin::Inherited)?;
                        if to_stdin(fd) && matches!(kind, ast::IoFileRedirectKind::Read) {
                            stdin = Stdin::Pipe;
                        }
                    }
                },
                R::HereDocument(fd, here) => {
                    let literal = if here.requires_expansion {
                        self.heredoc(&here.doc.value)?
                    } else {
                        Some(here.doc.value.clone())
                    };
                    if to_stdin(fd) {
                        stdin = literal.map_or(Stdin::DynamicText, Stdin::Text);
                    }
                }
                R::HereString(fd, word) => {
                    let arg = self.word(word)?;
                    if to_stdin(fd) {
                        stdin = match arg.exact() {
                            Some(text) => Stdin::Text(format!("{text}\n")),
                            None => Stdin::DynamicText,
                        };
                    }
                }
                R::OutputAndError(word, _) => drop(self.word(word)?),
            }
        }
        Ok(stdin)
    }

    /// A here-document body with expansions: its commands are walked; its
    /// text, when no expansion changes it.
    fn heredoc(&mut self, body: &str) -> Result<Option<String>, Unparsed> {
        let pieces = word::parse_heredoc(body, &options()).map_err(|e| Unparsed::Syntax(e.to_string()))?;
        let mut text = String::new();
        let mut literal = true;
        for piece in &pieces {
            match &piece.piece {
                WordPiece::Text(part) => text.push_str(part),
                WordPiece::EscapeSequence(escape) => text.push_str(&escape[1..]),
                other => {
                    literal = false;
                    self.piece_expansions(other)?;
                }
            }
        }
        Ok(literal.then_some(text))
    }

    /// Walks the commands inside text that may hold substitutions
    /// (arithmetic); gives whether it held any.
    fn expansions_in(&mut self, text: &str) -> Result<bool, Unparsed> {
        if !text.contains("$(") && !text.contains('`') {
            return Ok(false);
        }
        let word = ast::Word { value: text.to_owned(), loc: None };
        self.word(&word).map(|_| true)
    }

    /// A word's value; commands in its substitutions are walked.
    fn word(&mut self, word: &ast::Word) -> Result<Arg, Unparsed> {
        let pieces = word::parse(&word.value, &options()).map_err(|e| Unparsed::Syntax(e.to_string()))?;
        let mut value = Value::default();
        for piece in &pieces {
            self.piece(&piece.piece, false, &word.value, &mut value)?;
        }
        let kind = if value.dynamic || brace_expansion(&pieces) {
            Kind::Dynamic
        } else if value.glob {
            Kind::Glob
        } else {
            Kind::Literal
        };
        let text = if kind == Kind::Dynamic { word.value.clone() } else { value.text };
        Ok(Arg { text, kind, leading: value.leading })
    }

    /// Adds a piece of `raw` (the word as written) to its value.
    fn piece(&mut self, piece: &WordPiece, quoted: bool, raw: &str, value: &mut Value) -> Result<(), Unparsed> {
        match piece {
            WordPiece::Text(text) => {
                if !quoted && text.contains(['*', '?', '[']) {
                    value.glob = true;
                }
                value.push(text);
            }
            WordPiece::SingleQuotedText(text) => value.push(text),
            WordPiece::AnsiCQuotedText(text) => match ansi_c(text) {
                Some(decoded) => value.push(&decoded),
                None => value.dynamic = true,
            },
            WordPiece::DoubleQuotedSequence(pieces) | WordPiece::GettextDoubleQuotedSequence(pieces) => {
                for piece in pieces {
                    self.piece(&piece.piece, true, raw, value)?;
                }
            }
            WordPiece::EscapeSequence(escape) => {
                let escaped = &escape[1..];
                // In double quotes only \$ \` \" \\ and newline lose their backslash.
                if quoted && !matches!(escaped, "$" | "`" | "\"" | "\\" | "\n") {
                    value.push(escape);
                } else {
                    value.push(escaped);
                }
            }
            WordPiece::TildeExpansion(_) => {
                // A home directory: a path prefix, never an option.
                value.push("~");
            }
            WordPiece::ParameterExpansion(_) if raw.contains("${") && (raw.contains("$(") || raw.contains('`')) => {
                // `${x:-$(cmd)}`: what runs depends on the variable.
                return Err(Unparsed::TooComplex("a command substitution inside a parameter expansion"));
            }
            other => {
                value.dynamic = true;
                value.started();
                self.piece_expansions(other)?;
            }
        }
        Ok(())
    }

    /// Walks the commands an expansion runs.
    fn piece_expansions(&mut self, piece: &WordPiece) -> Result<(), Unparsed> {
        match piece {
            WordPiece::CommandSubstitution(text) | WordPiece::BackquotedCommandSubstitution(text) => {
                screen(text)?;
                let nested = parse_here(text, &Stdin::Inherited)?;
                self.commands.extend(nested);
                Ok(())
            }
            WordPiece::ArithmeticExpression(expr) => self.expansions_in(&expr.value).map(drop),
            _ => Ok(()),
        }
    }
}

/// A word's value being built.
#[derive(Default)]
struct Value {
    text: String,
    dynamic: bool,
    glob: bool,
    leading: Option<char>,
    started: bool,
}

impl Value {
    fn push(&mut self, text: &str) {
        if !self.started {
            self.leading = text.chars().next();
            self.started = !text.is_empty();
        }
        self.text.push_str(text);
    }

    /// Something other than literal text comes first.
    fn started(&mut self) {
        self.started = true;
    }
}

/// Whether unquoted text has a brace expansion (`{a,b}`, `{1..3}`), which
/// turns one word into several.
fn brace_expansion(pieces: &[WordPieceWithSource]) -> bool {
    let unquoted: String = pieces
        .iter()
        .map(|p| match &p.piece {
            WordPiece::Text(text) => text.as_str(),
            _ => "\0",
        })
        .collect();
    let Some(open) = unquoted.find('{') else { return false };
    let rest = &unquoted[open..];
    rest.find('}').is_some_and(|close| rest[..close].contains(',') || rest[..close].contains(".."))
}

/// Decodes `$'…'`; `None` for escapes it does not know.
fn ansi_c(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escape = chars.next()?;
        let mut number = |radix: u32, max: usize, first: Option<char>| {
            let mut digits: String = first.into_iter().collect();
            while digits.len() < max && chars.peek().is_some_and(|d| d.is_digit(radix)) {
                digits.extend(chars.next());
            }
            u32::from_str_radix(&digits, radix).ok().and_then(char::from_u32)
        };
        out.push(match escape {
            'a' => '\x07',
            'b' => '\x08',
            'e' | 'E' => '\x1b',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' | '\'' | '"' | '?' => escape,
            '0'..='7' => number(8, 3, Some(escape))?,
            'x' => number(16, 2, None)?,
            'u' => number(16, 4, None)?,
            'U' => number(16, 8, None)?,
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(text: &str) -> Vec<Vec<String>> {
        parse(text, &Stdin::Inherited)
            .unwrap()
            .into_iter()
            .map(|s| s.words.iter().map(|w| w.text().to_owned()).collect())
            .collect()
    }

    #[test]
    fn quoting_is_removed_as_the_shell_removes_it() {
        assert_eq!(argv(r#"\rm -rf "/tmp/x"/*"#), [["rm", "-rf", "/tmp/x/*"]]);
        assert_eq!(argv("r''m  -r\t-f /x"), [["rm", "-r", "-f", "/x"]]);
        assert_eq!(argv(r"$'\x72\155' -rf /x"), [["rm", "-rf", "/x"]]);
        assert_eq!(argv(r#""r\m" "\$x""#), [[r"r\m", "$x"]]);
    }

    #[test]
    fn every_list_pipeline_and_block_is_walked() {
        assert_eq!(
            argv("true; rm -rf /x\nls && cd /tmp || exit"),
            [vec!["true"], vec!["rm", "-rf", "/x"], vec!["ls"], vec!["cd", "/tmp"], vec!["exit"]]
        );
        let nested = argv("for f in $(find /x); do if test -d $f; then (rm -rf $f); fi; done");
        assert_eq!(nested[0], ["find", "/x"]);
        assert_eq!(nested[2], ["rm", "-rf", "$f"]);
        assert_eq!(argv("f() { rm -rf /x; }"), [["rm", "-rf", "/x"]]);
        assert_eq!(
            argv("echo `rm -rf /x` $(( $(id -u) + 1 ))"),
            [vec!["rm", "-rf", "/x"], vec!["id", "-u"], vec!["echo", "`rm -rf /x`", "$(( $(id -u) + 1 ))"]]
        );
    }

    #[test]
    fn pipes_and_documents_are_told_apart() {
        let commands =
            parse("curl x | sh; bash < <(curl y); sh <<'EOF'\nrm -rf /x\nEOF\nbash <<< \"$x\"", &Stdin::Inherited)
                .unwrap();
        let stdin: Vec<_> = commands.iter().map(|c| c.stdin.clone()).collect();
        assert_eq!(
            stdin,
            [
                Stdin::Inherited,
                Stdin::Pipe,
                Stdin::Inherited,
                Stdin::Pipe,
                Stdin::Text("rm -rf /x\n".into()),
                Stdin::DynamicText
            ]
        );
    }

    #[test]
    fn words_known_only_at_run_time_are_marked() {
        let commands = parse("$c -rf /tmp/$x {rm,-rf} /bin/r? \"$opts\"", &Stdin::Inherited).unwrap();
        let words = &commands[0].words;
        assert_eq!(words[0].literal(), None);
        assert!(words[0].may_be_option());
        assert_eq!(words[2].literal(), None);
        assert!(!words[2].may_be_option(), "starts with /");
        assert_eq!(words[3].literal(), None, "brace expansion");
        assert_eq!(words[4].literal(), Some("/bin/r?"));
        assert_eq!(words[4].exact(), None);
        assert!(words[5].may_be_option());
    }

    #[test]
    fn what_cannot_be_read_says_why() {
        assert_eq!(parse("for f in x; do", &Stdin::Inherited).unwrap_err(), Unparsed::Incomplete);
        assert_eq!(parse("echo 'open", &Stdin::Inherited).unwrap_err(), Unparsed::Incomplete);
        assert!(matches!(parse("echo )", &Stdin::Inherited).unwrap_err(), Unparsed::Syntax(_)));
        assert!(matches!(parse(&"((".repeat(12), &Stdin::Inherited).unwrap_err(), Unparsed::TooComplex(_)));
        assert!(matches!(parse(&"{ ".repeat(600), &Stdin::Inherited).unwrap_err(), Unparsed::TooComplex(_)));
        assert!(matches!(parse(&"x".repeat(MAX_TEXT + 1), &Stdin::Inherited).unwrap_err(), Unparsed::TooComplex(_)));
        // Numbers the parser cannot hold are refused before it sees them.
        for huge in ["echo 66666666666>x", "cd ~+99999999999", "ls ~-12345678901/x"] {
            assert!(matches!(parse(huge, &Stdin::Inherited).unwrap_err(), Unparsed::TooComplex(_)), "{huge}");
        }
        assert_eq!(argv("sleep 12345678901 2>/dev/null"), [["sleep", "12345678901"]]);
        // Deep but within bounds: parsed, on the parse thread's stack.
        let deep = format!("{}true{}", "( ".repeat(200), " )".repeat(200));
        assert_eq!(argv(&deep), [["true"]]);
        // Quoted openers are not counted.
        let quoted = format!("python3 -c '{}'", "(".repeat(2000));
        assert_eq!(argv(&quoted).len(), 1);
    }
}
