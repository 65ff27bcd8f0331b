//! Predicates that hold for every row: `WHERE true`, `WHERE 1 = 1`,
//! `WHERE id = id`, `WHERE x OR NOT false`. A DELETE or UPDATE with one
//! reaches the whole table as surely as one without WHERE.
//!
//! Evaluated on PostgreSQL's parse tree with three-valued logic, the way the
//! server would fold constants. What depends on the rows ([`Truth::Varies`])
//! is left to the guard by effect; a parameter standing where a condition
//! is expected counts as true, since the client binds its value.

use std::cell::Cell;

use super::parser::{Tree, Value, tree::unescape};

/// What a condition is for every row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// True whatever the row.
    True,
    /// False whatever the row.
    False,
    /// NULL whatever the row (a row is then not chosen).
    Null,
    /// Depends on the row.
    Varies,
}

impl Truth {
    fn not(self) -> Self {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            other => other,
        }
    }
}

/// Whether the condition at `node` (a node item) holds for every row, and
/// whether a literal's value took part in saying so (then a statement of
/// the same shape with other literals may differ).
pub fn always_true(tree: &Tree<'_>, node: usize) -> (bool, bool) {
    let eval = Eval { tree, consulted: Cell::new(false) };
    (eval.truth(node, 0) == Truth::True, eval.consulted.get())
}

struct Eval<'t, 'a> {
    tree: &'t Tree<'a>,
    /// Set when a constant's value decided something.
    consulted: Cell<bool>,
}

/// Deeper conditions are not folded: they vary, as far as this reading goes.
const MAX_DEPTH: usize = 64;

impl Eval<'_, '_> {
    fn truth(&self, node: usize, depth: usize) -> Truth {
        let tree = self.tree;
        let Some((kind, fields)) = tree.node(node) else { return Truth::Varies };
        if depth > MAX_DEPTH {
            return Truth::Varies;
        }
        let child = |key: &str| tree.member(fields, key);
        let sub = |at: usize| self.truth(at, depth + 1);
        match kind {
            "A_Const" => match self.consult(node) {
                Constant::Bool(value) => bool_truth(value),
                Constant::Text(text) => parse_bool(&text).map_or(Truth::Varies, bool_truth),
                Constant::Int(value) => bool_truth(value != 0),
                Constant::Null => Truth::Null,
                Constant::Other => Truth::Varies,
            },
            "ParamRef" => Truth::True,
            "TypeCast" => child("arg").map_or(Truth::Varies, sub),
            "BoolExpr" => {
                let args: Vec<usize> = child("args").map(|list| tree.children(list).collect()).unwrap_or_default();
                let values = args.iter().map(|&arg| sub(arg));
                match tree.string(fields, "boolop").as_deref() {
                    Some("AND_EXPR") => values.fold(Truth::True, |all, value| match (all, value) {
                        (Truth::False, _) | (_, Truth::False) => Truth::False,
                        (Truth::True, value) => value,
                        (Truth::Null, Truth::True | Truth::Null) => Truth::Null,
                        _ => Truth::Varies,
                    }),
                    Some("OR_EXPR") => values.fold(Truth::False, |any, value| match (any, value) {
                        (Truth::True, _) | (_, Truth::True) => Truth::True,
                        (Truth::False, value) => value,
                        (Truth::Null, Truth::False | Truth::Null) => Truth::Null,
                        _ => Truth::Varies,
                    }),
                    Some("NOT_EXPR") => args.first().map_or(Truth::Varies, |&arg| sub(arg).not()),
                    _ => Truth::Varies,
                }
            }
            "NullTest" => {
                let arg = child("arg").map_or(Truth::Varies, |arg| match self.consult(arg) {
                    Constant::Null => Truth::Null,
                    Constant::Other => Truth::Varies,
                    _ => Truth::True,
                });
                let is_null = tree.string(fields, "nulltesttype").as_deref() == Some("IS_NULL");
                match arg {
                    Truth::Varies => Truth::Varies,
                    Truth::Null => bool_truth(is_null),
                    _ => bool_truth(!is_null),
                }
            }
            "BooleanTest" => {
                let value = child("arg").map_or(Truth::Varies, sub);
                let test = tree.string(fields, "booltesttype");
                let holds = |wanted: Truth| match value {
                    Truth::Varies => Truth::Varies,
                    value => bool_truth(value == wanted),
                };
                match test.as_deref() {
                    Some("IS_TRUE") => holds(Truth::True),
                    Some("IS_NOT_TRUE") => holds(Truth::True).not(),
                    Some("IS_FALSE") => holds(Truth::False),
                    Some("IS_NOT_FALSE") => holds(Truth::False).not(),
                    Some("IS_UNKNOWN") => holds(Truth::Null),
                    Some("IS_NOT_UNKNOWN") => holds(Truth::Null).not(),
                    _ => Truth::Varies,
                }
            }
            "A_Expr" => self.comparison(fields),
            "SubLink" => self.sublink(fields, depth),
            _ => Truth::Varies,
        }
    }

    /// `a = a`, `1 = 1`, `2 > 1`, `a IS NOT DISTINCT FROM a`.
    fn comparison(&self, fields: usize) -> Truth {
        let tree = self.tree;
        let (Some(left), Some(right)) = (tree.member(fields, "lexpr"), tree.member(fields, "rexpr")) else {
            return Truth::Varies;
        };
        let kind = tree.string(fields, "kind");
        let operator = tree.member(fields, "name").and_then(|names| {
            let last = tree.children(names).last()?;
            let (_, string) = tree.node(last)?;
            tree.string(string, "sval")
        });
        // The same operand twice; if it holds a literal (`1 = 1`), that
        // literal decided it: `1 = 2` is another matter.
        let same = tree.same(left, right) && !volatile(tree, left);
        if same && holds_literal(tree, left) {
            self.consulted.set(true);
        }
        match (kind.as_deref(), operator.as_deref()) {
            (Some("AEXPR_NOT_DISTINCT"), _) if same => Truth::True,
            (Some("AEXPR_DISTINCT"), _) if same => Truth::False,
            (Some("AEXPR_OP"), Some(op)) => {
                if same {
                    // NULL rows aside (which a NOT NULL key has none of), the
                    // same value on both sides compares as itself.
                    return match op {
                        "=" | "<=" | ">=" => Truth::True,
                        "<>" | "!=" | "<" | ">" => Truth::False,
                        _ => Truth::Varies,
                    };
                }
                let (left, right) = (self.constant(left), self.constant(right));
                if matches!(left, Constant::Other) || matches!(right, Constant::Other) {
                    return Truth::Varies;
                }
                self.consulted.set(true);
                let ordering = match (left, right) {
                    (Constant::Int(a), Constant::Int(b)) => a.cmp(&b),
                    (Constant::Text(a), Constant::Text(b)) => a.cmp(&b),
                    (Constant::Bool(a), Constant::Bool(b)) => a.cmp(&b),
                    (Constant::Null, _) | (_, Constant::Null) => return Truth::Null,
                    _ => return Truth::Varies,
                };
                match op {
                    "=" => bool_truth(ordering.is_eq()),
                    "<>" | "!=" => bool_truth(ordering.is_ne()),
                    "<" => bool_truth(ordering.is_lt()),
                    "<=" => bool_truth(ordering.is_le()),
                    ">" => bool_truth(ordering.is_gt()),
                    ">=" => bool_truth(ordering.is_ge()),
                    _ => Truth::Varies,
                }
            }
            _ => Truth::Varies,
        }
    }

    /// `EXISTS (SELECT 1)`, `(SELECT true)`: a subquery reading no table.
    fn sublink(&self, fields: usize, depth: usize) -> Truth {
        let tree = self.tree;
        let Some((kind, select)) = tree.member(fields, "subselect").and_then(|at| tree.node(at)) else {
            return Truth::Varies;
        };
        if kind != "SelectStmt" || tree.member(select, "fromClause").is_some() {
            return Truth::Varies;
        }
        let filter = tree.member(select, "whereClause").map_or(Truth::True, |at| self.truth(at, depth + 1));
        let single_target = || {
            let list = tree.member(select, "targetList")?;
            let mut targets = tree.children(list);
            let (target, none_more) = (targets.next()?, targets.next().is_none());
            let (_, target) = tree.node(target)?;
            none_more.then(|| tree.member(target, "val")).flatten()
        };
        match tree.string(fields, "subLinkType").as_deref() {
            Some("EXISTS_SUBLINK") if tree.member(select, "havingClause").is_none() => match filter {
                Truth::True => Truth::True,
                Truth::False | Truth::Null => Truth::False,
                Truth::Varies => Truth::Varies,
            },
            Some("EXPR_SUBLINK") if filter == Truth::True => {
                single_target().map_or(Truth::Varies, |value| self.truth(value, depth + 1))
            }
            _ => Truth::Varies,
        }
    }

    /// The value of a constant node (`A_Const`, or one cast to a type); what
    /// is not one is [`Constant::Other`].
    fn constant(&self, node: usize) -> Constant {
        let tree = self.tree;
        let mut at = node;
        // Casts keep the value as far as truth goes: `'t'::bool`, `1::int8`.
        for _ in 0..MAX_DEPTH {
            match tree.node(at) {
                Some(("TypeCast", fields)) => match tree.member(fields, "arg") {
                    Some(arg) => at = arg,
                    None => return Constant::Other,
                },
                Some(("A_Const", fields)) => return a_const(tree, fields),
                _ => return Constant::Other,
            }
        }
        Constant::Other
    }

    /// [`Self::constant`], where the value decides: noted as a literal consulted.
    fn consult(&self, node: usize) -> Constant {
        let value = self.constant(node);
        if !matches!(value, Constant::Other) {
            self.consulted.set(true);
        }
        value
    }
}

fn bool_truth(value: bool) -> Truth {
    if value { Truth::True } else { Truth::False }
}

/// Whether the subtree holds a constant.
fn holds_literal(tree: &Tree<'_>, at: usize) -> bool {
    tree.subtree(at).iter().any(|item| item.key == "A_Const")
}

/// Whether the subtree calls a function (which may return another value
/// each time: `random() = random()`) or reads a subquery.
fn volatile(tree: &Tree<'_>, at: usize) -> bool {
    tree.subtree(at).iter().any(|item| matches!(item.key, "FuncCall" | "SubLink" | "ParamRef"))
}

enum Constant {
    Bool(bool),
    Int(i64),
    Text(String),
    Null,
    Other,
}

fn a_const(tree: &Tree<'_>, fields: usize) -> Constant {
    if tree.member(fields, "isnull").is_some_and(|at| tree.items()[at].value == Value::Bool(true)) {
        return Constant::Null;
    }
    // `{"ival":{"ival":5}}`; libpg_query leaves out members holding their
    // type's zero value: `{"boolval":{}}` is false, `{"ival":{}}` is 0.
    let value_of =
        |key: &str| tree.member(fields, key).map(|wrapper| tree.member(wrapper, key).map(|at| tree.items()[at].value));
    if let Some(value) = value_of("boolval") {
        return Constant::Bool(value == Some(Value::Bool(true)));
    }
    if let Some(value) = value_of("ival") {
        return match value {
            None => Constant::Int(0),
            Some(Value::Number(number)) => number.parse().map_or(Constant::Other, Constant::Int),
            Some(_) => Constant::Other,
        };
    }
    match value_of("sval") {
        Some(None) => Constant::Text(String::new()),
        Some(Some(Value::Str(raw))) => Constant::Text(unescape(raw).into_owned()),
        _ => Constant::Other,
    }
}

/// How PostgreSQL's `boolin` reads text: `t`, `true`, `yes`, `on`, `1` and
/// unambiguous prefixes, any case, surrounding spaces ignored.
fn parse_bool(text: &str) -> Option<bool> {
    let word = text.trim_matches(|c: char| c.is_ascii_whitespace()).to_ascii_lowercase();
    let prefix_of = |full: &str| !word.is_empty() && full.starts_with(&word);
    match word.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "o" => None,
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ if word.len() >= 2 && prefix_of("on") => Some(true),
        _ if word.len() >= 2 && prefix_of("off") => Some(false),
        _ => None,
    }
}
