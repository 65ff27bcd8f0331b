//! A quick reading of the plain text most statements are, into the tokens
//! sqlparser's own tokenizer would produce for it.
//!
//! sqlparser's tokenizer walks the text a `char` at a time, tracks lines
//! and columns, and looks each word up among a thousand keywords by binary
//! search: about a third of classifying a statement never seen before.
//! [`plain_tokens`] reads whitespace, comments, words, quoted names,
//! integers and decimals, `$n` parameters, standard strings and the common
//! punctuation and operators in one pass over the bytes, with a keyword
//! table indexed by length and first letter. Anything else (non-ASCII text,
//! prefixed or dollar-quoted strings, exponents, operators that may combine
//! into longer ones) gets `None`, and sqlparser's tokenizer reads the text
//! instead.
//!
//! The tokens carry no positions. They are only used for text that parses:
//! a parse error, which names positions, comes from a second reading by
//! sqlparser's tokenizer. The `lex` fuzz target checks that every token
//! list produced here equals sqlparser's for the same text.

use std::sync::LazyLock;

use sqlparser::{
    keywords::{ALL_KEYWORDS, ALL_KEYWORDS_INDEX, Keyword},
    tokenizer::{Span, Token, TokenWithSpan, Whitespace, Word},
};

/// The tokens of `sql` as sqlparser's PostgreSQL tokenizer reads them (with
/// empty spans), or `None` when the text holds anything this reading leaves
/// to that tokenizer.
pub fn plain_tokens(sql: &str) -> Option<Vec<TokenWithSpan>> {
    if !sql.is_ascii() {
        return None;
    }
    let bytes = sql.as_bytes();
    // About a token per three bytes; a long text grows the list as it is
    // read, rather than reserving for all of it before the first byte that
    // sends it to sqlparser.
    let mut tokens = Vec::with_capacity((bytes.len() / 3 + 1).min(256));
    let mut at = 0;
    while at < bytes.len() {
        let (token, len) = next(sql, at)?;
        tokens.push(TokenWithSpan { token, span: Span::empty() });
        at += len;
    }
    Some(tokens)
}

/// The token at `at` and its length in bytes.
fn next(sql: &str, at: usize) -> Option<(Token, usize)> {
    let rest = &sql.as_bytes()[at..];
    let after = |n: usize| rest.get(n).copied();
    // Operators sqlparser would extend with the characters that follow
    // (`<=>`, `->>`, custom operators) stand alone only before a character
    // that cannot extend them.
    let alone = |token: Token, len: usize| (!after(len).is_some_and(operator_part)).then_some((token, len));
    let single = |token: Token| Some((token, 1));
    match rest[0] {
        b' ' => single(Token::Whitespace(Whitespace::Space)),
        b'\t' => single(Token::Whitespace(Whitespace::Tab)),
        b'\n' => single(Token::Whitespace(Whitespace::Newline)),
        b'\r' => Some((Token::Whitespace(Whitespace::Newline), if after(1) == Some(b'\n') { 2 } else { 1 })),
        b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
            let len = rest.iter().take_while(|&&b| identifier_part(b)).count();
            // `E'…'`, `B'…'`, `U&'…'`, `N'…'` and the like are strings of
            // their own kinds.
            if matches!(after(len), Some(b'\'' | b'"' | b'&')) {
                return None;
            }
            let value = &sql[at..at + len];
            Some((Token::Word(Word { value: value.to_owned(), quote_style: None, keyword: keyword(value) }), len))
        }
        b'0'..=b'9' => {
            let digits = |from: usize| rest[from..].iter().take_while(|b| b.is_ascii_digit()).count();
            let mut len = digits(0);
            if after(len) == Some(b'.') {
                len += 1 + digits(len + 1);
            }
            // Exponents, `0x…`, `1_000`, `10L`, `1abc`, `1.2.3`.
            if after(len).is_some_and(|b| identifier_part(b) || b == b'.') {
                return None;
            }
            Some((Token::Number(sql[at..at + len].to_owned(), false), len))
        }
        b'$' => {
            let len = 1 + rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            // `$$…$$` and `$tag$…$tag$` are strings; `$name` is left to sqlparser.
            if len == 1 || after(len).is_some_and(identifier_part) {
                return None;
            }
            Some((Token::Placeholder(sql[at..at + len].to_owned()), len))
        }
        b'\'' => {
            let (value, len) = quoted(rest, b'\'')?;
            Some((Token::SingleQuotedString(value), len))
        }
        b'"' => {
            let (value, len) = quoted(rest, b'"')?;
            Some((Token::Word(Word { value, quote_style: Some('"'), keyword: Keyword::NoKeyword }), len))
        }
        b'(' => single(Token::LParen),
        b')' => single(Token::RParen),
        b',' => single(Token::Comma),
        b';' => single(Token::SemiColon),
        b'[' => single(Token::LBracket),
        b']' => single(Token::RBracket),
        b'+' => single(Token::Plus),
        b'*' => single(Token::Mul),
        // `t.col`, `t."Col"`, `t.*`; a point before a digit starts a number.
        b'.' if after(1).is_some_and(|b| b.is_ascii_alphabetic() || b == b'"' || b == b'*') => single(Token::Period),
        b'-' if after(1) == Some(b'-') => {
            // To the end of the line; the line break is a token of its own.
            let len = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
            let comment = sql[at + 2..at + len].to_owned();
            Some((Token::Whitespace(Whitespace::SingleLineComment { comment, prefix: "--".to_owned() }), len))
        }
        b'/' if after(1) == Some(b'*') => {
            let len = block_comment(rest)?;
            Some((Token::Whitespace(Whitespace::MultiLineComment(sql[at + 2..at + len - 2].to_owned())), len))
        }
        b'-' => alone(Token::Minus, 1),
        b'/' => alone(Token::Div, 1),
        b'%' => alone(Token::Mod, 1),
        b'=' if !matches!(after(1), Some(b'>' | b'=')) => single(Token::Eq),
        b'!' if after(1) == Some(b'=') => Some((Token::Neq, 2)),
        b'<' => match after(1) {
            Some(b'=') => alone(Token::LtEq, 2),
            Some(b'>') => alone(Token::Neq, 2),
            _ => alone(Token::Lt, 1),
        },
        b'>' => match after(1) {
            Some(b'=') => alone(Token::GtEq, 2),
            _ => alone(Token::Gt, 1),
        },
        b':' => match after(1) {
            Some(b':') => Some((Token::DoubleColon, 2)),
            Some(b'=') => None,
            _ => single(Token::Colon),
        },
        b'|' if after(1) == Some(b'|') => alone(Token::StringConcat, 2),
        _ => None,
    }
}

/// The length of the `/* … */` comment at the start of `rest`, comments
/// nested in it included (as PostgreSQL reads them); `None` when it does
/// not end.
fn block_comment(rest: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = 0;
    loop {
        match (rest.get(at)?, rest.get(at + 1)) {
            (b'/', Some(b'*')) => {
                depth += 1;
                at += 2;
            }
            (b'*', Some(b'/')) => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => at += 1,
        }
    }
}

/// A string or quoted name starting at `rest[0]`: its value (doubled
/// quotes read as one) and its length; `None` when it does not end.
fn quoted(rest: &[u8], quote: u8) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut at = 1;
    loop {
        let byte = *rest.get(at)?;
        at += 1;
        if byte == quote {
            if rest.get(at) != Some(&quote) {
                return Some((value, at));
            }
            at += 1;
        }
        // ASCII throughout (`plain_tokens` checked): a byte is a character.
        value.push(char::from(byte));
    }
}

/// Continues a word (PostgreSQL dialect, ASCII).
fn identifier_part(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$'
}

/// Characters sqlparser's PostgreSQL dialect reads as part of an operator.
fn operator_part(byte: u8) -> bool {
    matches!(
        byte,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

/// Longest keyword sqlparser knows, in bytes.
const MAX_KEYWORD: usize = 40;

/// sqlparser's keywords by length and first letter: a word is compared
/// with the few keywords of its length and initial.
struct Keywords {
    buckets: Vec<Vec<(&'static [u8], Keyword)>>,
}

impl Keywords {
    fn bucket(len: usize, first: u8) -> usize {
        len * 32 + usize::from(first.to_ascii_uppercase() & 31)
    }
}

static KEYWORDS: LazyLock<Keywords> = LazyLock::new(|| {
    let mut buckets = vec![Vec::new(); (MAX_KEYWORD + 1) * 32];
    for (spelling, &keyword) in ALL_KEYWORDS.iter().zip(ALL_KEYWORDS_INDEX) {
        let spelling = spelling.as_bytes();
        assert!(spelling.len() <= MAX_KEYWORD && !spelling.is_empty(), "sqlparser keyword {spelling:?}");
        buckets[Keywords::bucket(spelling.len(), spelling[0])].push((spelling, keyword));
    }
    Keywords { buckets }
});

/// The keyword an unquoted word is, as sqlparser looks it up (ASCII case
/// folded).
fn keyword(word: &str) -> Keyword {
    let word = word.as_bytes();
    if word.len() > MAX_KEYWORD {
        return Keyword::NoKeyword;
    }
    KEYWORDS.buckets[Keywords::bucket(word.len(), word[0])]
        .iter()
        .find(|(spelling, _)| spelling.eq_ignore_ascii_case(word))
        .map_or(Keyword::NoKeyword, |&(_, keyword)| keyword)
}

#[cfg(test)]
mod tests {
    use sqlparser::{dialect::PostgreSqlDialect, tokenizer::Tokenizer};

    use super::*;

    fn sqlparser_tokens(sql: &str) -> Option<Vec<Token>> {
        Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()
    }

    fn plain(sql: &str) -> Option<Vec<Token>> {
        plain_tokens(sql).map(|tokens| tokens.into_iter().map(|t| t.token).collect())
    }

    #[test]
    fn reads_plain_statements_as_sqlparser_does() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            "INSERT INTO t (a, b) VALUES ('it''s', 42), (NULL, -7)",
            "SELECT c.id, c.\"Name\", sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id \
             WHERE o.placed > now() - interval '30 days' GROUP BY 1 ORDER BY 4 DESC LIMIT 20",
            "select t.* from \"odd \"\"name\"\"\" t where a <> b and c != d and e <= f and g >= h and i < j and k > l",
            "SELECT a::text || b, x[1], y % 2, z / 3, w * 4;\n\tBEGIN; COMMIT",
            "DELETE FROM sessions WHERE expires < now()",
            "SELECT current_timestamp, CURRENT_TIMESTAMP, Current_Timestamp, _x, x$1, \"select\"",
            "SELECT 1.5, 2., 10 -- the end\n/* a /* nested */ comment */ FROM t --",
            "/*sqlcommenter: app='web'*/ SELECT 1--x\r\nFROM t\rWHERE\r\r\n",
            "",
            "   ",
        ] {
            let plain = plain(sql).unwrap_or_else(|| panic!("read here: {sql}"));
            assert_eq!(Some(plain), sqlparser_tokens(sql), "{sql}");
        }
    }

    #[test]
    fn leaves_everything_else_to_sqlparser() {
        for sql in [
            "SELECT /* unterminated",
            "SELECT /* /* nested, unterminated */",
            "SELECT E'a\\nb'",
            "SELECT U&'d\\0061t'",
            "SELECT B'101', X'1F', N'x'",
            "SELECT $$dollar$$",
            "SELECT $tag$x$tag$",
            "SELECT .5",
            "SELECT 1e3",
            "SELECT 1.5e3",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1.2.3",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT 'é'",
            "SELECT a->>'b', a#>'{c}', a @> b, a ~ b, a <-> b, a >>= b, a ||/ b",
            "SELECT a::int, :x := 1",
        ] {
            assert_eq!(plain(sql), None, "{sql}");
        }
    }

    #[test]
    fn looks_keywords_up_like_sqlparser() {
        for (spelling, &expected) in ALL_KEYWORDS.iter().zip(ALL_KEYWORDS_INDEX) {
            assert_eq!(keyword(spelling), expected);
            assert_eq!(keyword(&spelling.to_ascii_lowercase()), expected);
        }
        assert_eq!(keyword("pgbench_accounts"), Keyword::NoKeyword);
        assert_eq!(keyword(&"x".repeat(MAX_KEYWORD + 1)), Keyword::NoKeyword);
    }
}
