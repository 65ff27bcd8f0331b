//! The JSON parse tree libpg_query prints, read into a flat list.
//!
//! PostgreSQL's parse trees can be as deep as a statement is long (`1+1+…`
//! nests one level per operator), so nothing here recurses: the text is
//! read with an explicit stack into [`Item`]s in document order, each
//! knowing its parent and where its subtree ends. A pre-order walk is a loop
//! over the list, a subtree is a range of it, and dropping it frees one
//! `Vec`.

use std::borrow::Cow;

/// A JSON value's kind; strings and numbers borrow their text, still escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `{…}`: its members follow it in the list.
    Object,
    /// `[…]`: its elements follow it in the list.
    Array,
    /// A string's raw text between its quotes (see [`unescape`]).
    Str(&'a str),
    /// A number as written.
    Number(&'a str),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// One value of the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    /// Its key in the enclosing object; empty for array elements and the root.
    pub key: &'a str,
    /// The value.
    pub value: Value<'a>,
    /// Index of the enclosing object or array (the root is its own parent).
    pub parent: u32,
    /// Index one past its last descendant.
    pub end: u32,
}

/// A parse tree, flat.
#[derive(Debug, Default)]
pub struct Tree<'a> {
    items: Vec<Item<'a>>,
}

/// The text is not the JSON libpg_query prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed parse tree at byte {0}")]
pub struct Malformed(pub usize);

impl<'a> Tree<'a> {
    /// Reads `json`. Keys and strings are borrowed as they are written.
    pub fn read(json: &'a str) -> Result<Self, Malformed> {
        Reader { text: json, at: 0, items: Vec::with_capacity(json.len() / 12) }.read()
    }

    /// Every item, in document order.
    pub fn items(&self) -> &[Item<'a>] {
        &self.items
    }

    /// The item at `index`.
    pub fn get(&self, index: usize) -> Option<&Item<'a>> {
        self.items.get(index)
    }

    /// The item at `index` and all below it; empty when there is none.
    pub fn subtree(&self, index: usize) -> &[Item<'a>] {
        self.items.get(index).map_or(&[], |item| &self.items[index..item.end as usize])
    }

    /// Indices of the direct children of the object or array at `index`.
    pub fn children(&self, index: usize) -> Children<'_, 'a> {
        let end = self.items.get(index).map_or(index, |item| item.end as usize);
        Children { tree: self, next: index + 1, end }
    }

    /// The member `key` of the object at `index`.
    pub fn member(&self, index: usize, key: &str) -> Option<usize> {
        self.children(index).find(|&child| self.items[child].key == key)
    }

    /// The string member `key` of the object at `index`, unescaped.
    pub fn string(&self, index: usize, key: &str) -> Option<Cow<'a, str>> {
        match self.items[self.member(index, key)?].value {
            Value::Str(raw) => Some(unescape(raw)),
            _ => None,
        }
    }

    /// The node at `index`: a one-member object whose key names the node
    /// type (`{"A_Const": {…}}`); its type and the index of its fields.
    pub fn node(&self, index: usize) -> Option<(&'a str, usize)> {
        let item = self.items.get(index)?;
        if item.value != Value::Object || item.end as usize != index + 1 + self.subtree_len(index + 1)? {
            return None;
        }
        let inner = &self.items[index + 1];
        (inner.value == Value::Object && is_node_type(inner.key)).then_some((inner.key, index + 1))
    }

    fn subtree_len(&self, index: usize) -> Option<usize> {
        self.items.get(index).map(|item| item.end as usize - index)
    }

    /// Whether the subtrees at `a` and `b` are the same, locations aside
    /// (`id = id` is written twice, at two places).
    pub fn same(&self, a: usize, b: usize) -> bool {
        let (Some((first, below_a)), Some((second, below_b))) =
            (self.subtree(a).split_first(), self.subtree(b).split_first())
        else {
            return false;
        };
        // The roots' own keys (`lexpr`, `rexpr`) are where they hang, not what they are.
        fn significant<'t, 'a>(below: &'t [Item<'a>]) -> impl Iterator<Item = (&'a str, Value<'a>)> + 't {
            below.iter().filter(|item| item.key != "location").map(|item| (item.key, item.value))
        }
        first.value == second.value && significant(below_a).eq(significant(below_b))
    }
}

/// Direct children of an object or array.
pub struct Children<'t, 'a> {
    tree: &'t Tree<'a>,
    next: usize,
    end: usize,
}

impl Iterator for Children<'_, '_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next >= self.end {
            return None;
        }
        let at = self.next;
        self.next = self.tree.items[at].end as usize;
        Some(at)
    }
}

/// Node types are written as CamelCase keys (`SelectStmt`, `A_Const`);
/// fields start lowercase.
pub fn is_node_type(key: &str) -> bool {
    key.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
}

struct Reader<'a> {
    text: &'a str,
    at: usize,
    items: Vec<Item<'a>>,
}

impl<'a> Reader<'a> {
    fn read(mut self) -> Result<Tree<'a>, Malformed> {
        // Open containers, innermost last.
        let mut open: Vec<u32> = Vec::new();
        let mut key = "";
        loop {
            self.skip_space();
            let parent = open.last().copied().unwrap_or(0);
            let in_object = open.last().is_some_and(|&at| self.items[at as usize].value == Value::Object);
            match self.peek() {
                Some(b'}' | b']') => {
                    let closer = self.bump();
                    let at = open.pop().ok_or(Malformed(self.at))? as usize;
                    let expected = if self.items[at].value == Value::Object { b'}' } else { b']' };
                    if closer != expected {
                        return Err(Malformed(self.at));
                    }
                    self.items[at].end = self.items.len() as u32;
                    if open.is_empty() {
                        self.skip_space();
                        return if self.at == self.text.len() {
                            Ok(Tree { items: self.items })
                        } else {
                            Err(Malformed(self.at))
                        };
                    }
                    self.after_value()?;
                    continue;
                }
                None => return Err(Malformed(self.at)),
                _ => {}
            }
            if in_object {
                key = self.string()?;
                self.skip_space();
                if self.bump() != b':' {
                    return Err(Malformed(self.at));
                }
                self.skip_space();
            } else if !open.is_empty() {
                key = "";
            }
            let index = u32::try_from(self.items.len()).map_err(|_| Malformed(self.at))?;
            let value = match self.peek().ok_or(Malformed(self.at))? {
                b'{' | b'[' => {
                    let container = if self.bump() == b'{' { Value::Object } else { Value::Array };
                    self.items.push(Item { key, value: container, parent, end: index + 1 });
                    open.push(index);
                    self.skip_space();
                    // An empty container closes at once, on the next turn.
                    continue;
                }
                b'"' => Value::Str(self.string()?),
                b't' => self.word("true", Value::Bool(true))?,
                b'f' => self.word("false", Value::Bool(false))?,
                b'n' => self.word("null", Value::Null)?,
                b'-' | b'0'..=b'9' => {
                    let start = self.at;
                    while self.peek().is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
                        self.at += 1;
                    }
                    Value::Number(&self.text[start..self.at])
                }
                _ => return Err(Malformed(self.at)),
            };
            if open.is_empty() {
                return Err(Malformed(self.at));
            }
            self.items.push(Item { key, value, parent, end: index + 1 });
            self.after_value()?;
        }
    }

    /// After a member or element: a comma, or the container's end (left for the loop).
    fn after_value(&mut self) -> Result<(), Malformed> {
        self.skip_space();
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                self.skip_space();
                match self.peek() {
                    Some(b'}' | b']') | None => Err(Malformed(self.at)),
                    _ => Ok(()),
                }
            }
            Some(b'}' | b']') => Ok(()),
            _ => Err(Malformed(self.at)),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn bump(&mut self) -> u8 {
        let byte = self.peek().unwrap_or(0);
        self.at += 1;
        byte
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn word(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, Malformed> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(Malformed(self.at))
        }
    }

    /// A string's raw contents; the reader stands after its closing quote.
    fn string(&mut self) -> Result<&'a str, Malformed> {
        if self.bump() != b'"' {
            return Err(Malformed(self.at));
        }
        let start = self.at;
        loop {
            match self.peek().ok_or(Malformed(self.at))? {
                b'"' => break,
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
        let raw = self.text.get(start..self.at).ok_or(Malformed(self.at))?;
        self.at += 1;
        Ok(raw)
    }
}

/// A JSON string's raw text as the string it stands for. Malformed escapes
/// are kept as written: the text came from libpg_query, and a name that
/// reads oddly only matches no pattern.
pub fn unescape(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let unit = u32::from_str_radix(&hex, 16).ok();
                let decoded = match unit {
                    Some(high @ 0xD800..=0xDBFF) => {
                        let rest = chars.as_str();
                        let low = rest
                            .strip_prefix("\\u")
                            .and_then(|r| r.get(..4))
                            .and_then(|h| u32::from_str_radix(h, 16).ok());
                        match low {
                            Some(low @ 0xDC00..=0xDFFF) => {
                                chars = rest[6..].chars();
                                char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
                            }
                            _ => None,
                        }
                    }
                    Some(unit) => char::from_u32(unit),
                    None => None,
                };
                out.push(decoded.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libpg_query_output() {
        let json = r#"{"version":170007,"stmts":[{"stmt":{"DeleteStmt":{"relation":{"relname":"t","inh":true,"location":12},"whereClause":{"A_Const":{"boolval":{"boolval":true},"location":22}}}},"stmt_len":26},{"stmt":{"SelectStmt":{"targetList":[]}},"stmt_location":27}]}"#;
        let tree = Tree::read(json).unwrap();
        let stmts = tree.member(0, "stmts").unwrap();
        let statements: Vec<usize> = tree.children(stmts).collect();
        assert_eq!(statements.len(), 2);
        let (kind, fields) = tree.node(tree.member(statements[0], "stmt").unwrap()).unwrap();
        assert_eq!(kind, "DeleteStmt");
        let relation = tree.member(fields, "relation").unwrap();
        assert_eq!(tree.string(relation, "relname").as_deref(), Some("t"));
        let (kind, _) = tree.node(tree.member(fields, "whereClause").unwrap()).unwrap();
        assert_eq!(kind, "A_Const");
        assert_eq!(tree.items()[0].end as usize, tree.items().len());
    }

    #[test]
    fn subtrees_compare_without_locations() {
        let json = r#"{"a":{"ColumnRef":{"fields":[{"String":{"sval":"id"}}],"location":23}},"b":{"ColumnRef":{"fields":[{"String":{"sval":"id"}}],"location":28}},"c":{"ColumnRef":{"fields":[{"String":{"sval":"ID"}}],"location":28}}}"#;
        let tree = Tree::read(json).unwrap();
        let (a, b, c) = (tree.member(0, "a").unwrap(), tree.member(0, "b").unwrap(), tree.member(0, "c").unwrap());
        assert!(tree.same(a, b));
        assert!(!tree.same(a, c));
    }

    #[test]
    fn deep_trees_need_no_stack() {
        let depth = 200_000;
        let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(Tree::read(&json).unwrap().items().len(), depth + 1);
    }

    #[test]
    fn malformed_text_is_an_error() {
        for json in ["", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "[1]]", "{\"a\":1}x", "\"x\"", "[\"unterminated]", "{]"]
        {
            assert!(Tree::read(json).is_err(), "{json}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape(r#"a\"b\\c\n\u0001\u00e9\ud83d\ude00"#), "a\"b\\c\n\u{1}é😀");
        assert_eq!(unescape("plain"), "plain");
    }
}
