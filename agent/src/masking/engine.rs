//! The masker of one session: the target's masking policy with the
//! person's exemptions applied, and how one value is masked.

use std::sync::Arc;

use super::{
    MaskError, MaskOutcome,
    detect::{Builtin, CustomDetector, DetectorId, Detectors, Match},
    policy::{ColumnMatcher, DetectorSpec, MaskingPolicy, rule_applies},
    strategy::{Replacement, Strategy, TokenKey},
};

/// Masks values for one person on one target. Built once per session
/// ([`Masker::new`]); cheap to share behind an `Arc`.
#[derive(Clone, Debug)]
pub struct Masker {
    detectors: Detectors,
    builtin_strategies: [Strategy; Builtin::ALL.len()],
    custom_strategies: Vec<Strategy>,
    /// Audit names of detectors: built-ins by `Builtin as usize`, then custom.
    detector_labels: Vec<Arc<str>>,
    pub(super) rules: Vec<ActiveRule>,
    key: Arc<TokenKey>,
}

/// A column rule that applies to the session's person.
#[derive(Clone, Debug)]
pub(super) struct ActiveRule {
    pub(super) columns: ColumnMatcher,
    pub(super) strategy: Strategy,
    /// `column public.customers.email`, for audit records.
    pub(super) label: Arc<str>,
}

/// What a value's type makes of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Text types (`text`, `varchar`, `bpchar`, `name`, `unknown`): the
    /// same bytes in text and binary format.
    Text,
    /// `json`: JSON text in both formats.
    Json,
    /// `jsonb`: JSON text; in binary format after a version byte (1).
    Jsonb,
    /// An array of one of the above.
    Array(ElementKind),
    /// Any other type. In text format detectors still run on it (a card
    /// number kept in a `bigint` is still a card number) and a hit makes
    /// the value NULL, the only replacement valid for every type; in
    /// binary format its bytes are not inspected. A column rule makes it
    /// NULL whatever the rule's strategy.
    Other,
    /// Types whose values cannot hold what detectors look for: booleans,
    /// dates and times, intervals, UUIDs, floats, `smallint`, `oid`.
    /// Detectors skip them (a timestamp has many digits and no card
    /// number); a column rule makes them NULL.
    Scalar,
}

/// Element type of an array column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementKind {
    /// Text types.
    Text,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
}

impl ValueKind {
    /// The kind of PostgreSQL type `oid` (built-in types; anything else,
    /// such as a domain or an extension type, is [`ValueKind::Other`]).
    pub fn of_type(oid: u32) -> Self {
        match oid {
            25 | 1043 | 1042 | 19 | 705 => Self::Text,
            114 => Self::Json,
            3802 => Self::Jsonb,
            1009 | 1015 | 1014 | 1003 => Self::Array(ElementKind::Text),
            199 => Self::Array(ElementKind::Json),
            3807 => Self::Array(ElementKind::Jsonb),
            16 | 1082 | 1083 | 1266 | 1114 | 1184 | 1186 | 2950 | 700 | 701 | 21 | 26 => Self::Scalar,
            _ => Self::Other,
        }
    }
}

impl ElementKind {
    /// The kind of array element type `oid`, if its elements are masked
    /// one by one.
    pub fn of_type(oid: u32) -> Option<Self> {
        match oid {
            25 | 1043 | 1042 | 19 | 705 => Some(Self::Text),
            114 => Some(Self::Json),
            3802 => Some(Self::Jsonb),
            _ => None,
        }
    }
}

/// A result column, as the proxy learns it from RowDescription and the
/// catalog.
#[derive(Clone, Copy, Debug)]
pub struct ColumnDesc<'a> {
    /// The field name RowDescription gives (the column name or an alias).
    pub field_name: &'a str,
    /// `schema.table.column`, resolved from the field's table OID and
    /// attribute number; `None` for expressions (table OID 0) or when the
    /// catalog could not tell.
    pub qualified: Option<&'a str>,
    /// Type OID from RowDescription.
    pub type_oid: u32,
    /// Format code from RowDescription (or Bind): 0 text, 1 binary.
    pub format: i16,
}

/// How each column of one result is masked: made by [`Masker::plan`] from
/// its RowDescription, then used for every DataRow of that result.
#[derive(Clone, Debug, Default)]
pub struct ColumnPlan {
    pub(super) columns: Vec<PlannedColumn>,
    active: bool,
}

#[derive(Clone, Debug)]
pub(super) struct PlannedColumn {
    pub(super) kind: ValueKind,
    pub(super) binary: bool,
    /// Index in [`Masker::rules`] of the rule masking the whole column.
    pub(super) rule: Option<usize>,
    /// What a DataRow's value of this column goes through.
    pub(super) action: Action,
    /// Values of this column masked by its rule in DataRows since the last
    /// [`Masker::count_rule_hits`]: counted here, not in a
    /// [`MaskOutcome`], because every row has them.
    pub(super) rule_hits: u64,
    /// Name in audit records: `schema.table.column` or the field name.
    pub(super) label: Arc<str>,
}

/// What a DataRow's value of a column goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// Nothing: no rule names the column, and detectors cannot see into its
    /// type (or none run).
    Pass,
    /// Detectors alone decide, on the value as it is: text format of a
    /// text or other non-JSON type, and no rule.
    Detect,
    /// The whole value is rewritten by the rule's strategy (text types).
    Rule(usize),
    /// A rule makes the value NULL: a marker is not a valid value of the
    /// column's type.
    NullByRule,
    /// [`Masker::mask_value`]: JSON, arrays, and rules on them.
    Value,
}

impl ColumnPlan {
    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Whether the result has no columns.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Whether any column may be masked; when not, rows can be forwarded
    /// without calling [`Masker::mask_data_row`].
    pub fn is_active(&self) -> bool {
        self.active
    }
}

/// The outcome of masking one text.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TextResult {
    /// Nothing found; nothing written.
    Unchanged,
    /// The masked text was appended.
    Replaced,
    /// The whole value becomes NULL; nothing written.
    Null,
}

impl Masker {
    /// The masker for the person `user`, member of `groups`, on a target
    /// with masking `policy`; `key` makes deterministic tokens.
    pub fn new(policy: &MaskingPolicy, user: &str, groups: &[String], key: Arc<TokenKey>) -> Self {
        Self::exempting(policy, |exemption| exemption.exempts(user, groups), None, key)
    }

    /// The masker for the connection `subject` made: as [`Masker::new`]
    /// for a person, and with no exemption at all for an actor (an AI
    /// agent, a bot): exemptions are for people, not for what they run.
    /// Rules naming actors apply to those actors' connections only.
    pub fn for_subject(policy: &MaskingPolicy, subject: &crate::policy::Subject<'_>, key: Arc<TokenKey>) -> Self {
        match subject.actor {
            Some(actor) => Self::exempting(policy, |_| false, Some(actor), key),
            None => Self::new(policy, subject.user, subject.groups, key),
        }
    }

    fn exempting(
        policy: &MaskingPolicy,
        exempts: impl Fn(&super::policy::Exemption) -> bool,
        actor: Option<&str>,
        key: Arc<TokenKey>,
    ) -> Self {
        let exempt_all = exempts(&policy.exempt);
        let mut builtins: Vec<Builtin> = if exempt_all { Vec::new() } else { policy.detectors.clone() };
        let mut builtin_strategies: [Strategy; Builtin::ALL.len()] = std::array::from_fn(|_| policy.strategy.clone());
        let mut custom = Vec::new();
        let mut custom_strategies = Vec::new();
        for rule in policy.detector_rules.iter().filter(|rule| rule_applies(&rule.actors, actor)) {
            let exempt = exempt_all || exempts(&rule.exempt);
            match &rule.detector {
                DetectorSpec::Builtin(builtin) => {
                    builtin_strategies[*builtin as usize] = rule.strategy.clone();
                    if exempt {
                        builtins.retain(|b| b != builtin);
                    } else if !builtins.contains(builtin) {
                        builtins.push(*builtin);
                    }
                }
                DetectorSpec::Custom { name, regex } if !exempt => {
                    custom.push(CustomDetector { name: name.clone(), regex: regex.clone() });
                    custom_strategies.push(rule.strategy.clone());
                }
                DetectorSpec::Custom { .. } => {}
            }
        }
        let detector_labels = Builtin::ALL
            .iter()
            .map(|b| Arc::from(b.name()))
            .chain(custom.iter().map(|c| Arc::from(c.name.as_str())))
            .collect();
        let rules = policy
            .rules
            .iter()
            .filter(|rule| !exempt_all && !exempts(&rule.exempt) && rule_applies(&rule.actors, actor))
            .map(|rule| ActiveRule {
                columns: rule.columns.clone(),
                strategy: rule.strategy.clone(),
                label: Arc::from(rule.columns.describe()),
            })
            .collect();
        Self {
            detectors: Detectors::new(&builtins, custom),
            builtin_strategies,
            custom_strategies,
            detector_labels,
            rules,
            key,
        }
    }

    /// Whether nothing is ever masked for this person (all exempt, or an
    /// empty policy): the proxy may skip masking altogether.
    pub fn is_noop(&self) -> bool {
        self.detectors.is_empty() && self.rules.is_empty()
    }

    /// Whether any column rule applies to this person. The proxy must
    /// refuse results it cannot name the columns of (e.g. `COPY (SELECT …)
    /// TO STDOUT` it did not resolve) when this is true.
    pub fn has_column_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The plan for a result with these columns, in order.
    pub fn plan(&self, columns: &[ColumnDesc<'_>]) -> ColumnPlan {
        let detecting = !self.detectors.is_empty();
        // Column patterns also match keys inside JSON values.
        let key_rules = self.rules.iter().any(|r| r.columns.matches_key_possible());
        let mut active = false;
        let columns = columns
            .iter()
            .map(|column| {
                let rule = self.rules.iter().position(|r| r.columns.matches(column.qualified, column.field_name));
                let kind = ValueKind::of_type(column.type_oid);
                let binary = column.format == 1;
                // Binary values of other types are opaque to detectors.
                let json = matches!(
                    kind,
                    ValueKind::Json | ValueKind::Jsonb | ValueKind::Array(ElementKind::Json | ElementKind::Jsonb)
                );
                let opaque = kind == ValueKind::Scalar || (binary && kind == ValueKind::Other);
                let action = match (rule, kind) {
                    (Some(rule), ValueKind::Text) => Action::Rule(rule),
                    (Some(_), ValueKind::Scalar | ValueKind::Other) => Action::NullByRule,
                    (Some(_), _) => Action::Value,
                    (None, ValueKind::Text | ValueKind::Other) if detecting && !opaque => Action::Detect,
                    (None, _) if (detecting && !opaque) || (key_rules && json) => Action::Value,
                    (None, _) => Action::Pass,
                };
                active |= action != Action::Pass;
                let label = Arc::from(column.qualified.unwrap_or(column.field_name));
                PlannedColumn { kind, binary, rule, action, rule_hits: 0, label }
            })
            .collect();
        ColumnPlan { columns, active }
    }

    /// A plan for `count` text-format columns of unknown names and types
    /// (detectors only), e.g. COPY output the proxy could not resolve.
    pub fn anonymous_text_plan(&self, count: usize) -> ColumnPlan {
        let columns = (0..count)
            .map(|i| PlannedColumn {
                kind: ValueKind::Text,
                binary: false,
                rule: None,
                action: Action::Detect,
                rule_hits: 0,
                label: Arc::from(format!("#{}", i + 1)),
            })
            .collect();
        ColumnPlan { columns, active: !self.detectors.is_empty() }
    }

    pub(super) fn key(&self) -> &TokenKey {
        &self.key
    }

    pub(super) fn has_detectors(&self) -> bool {
        !self.detectors.is_empty()
    }

    pub(super) fn rule_strategy(&self, rule: usize) -> &Strategy {
        &self.rules[rule].strategy
    }

    /// Moves the rule hits `plan` counted into `outcome`: at the end of a
    /// result, or for its statement's record.
    pub fn count_rule_hits(&self, plan: &mut ColumnPlan, outcome: &mut MaskOutcome) {
        for column in plan.columns.iter_mut().filter(|c| c.rule_hits > 0) {
            if let Some(rule) = column.rule.and_then(|rule| self.rules.get(rule)) {
                outcome.add(Some(&column.label), &rule.label, column.rule_hits);
            }
            column.rule_hits = 0;
        }
    }

    fn strategy(&self, id: DetectorId) -> &Strategy {
        match id {
            DetectorId::Builtin(builtin) => &self.builtin_strategies[builtin as usize],
            DetectorId::Custom(index) => self.custom_strategies.get(usize::from(index)).unwrap_or(&Strategy::Null),
        }
    }

    fn label(&self, id: DetectorId) -> &Arc<str> {
        let index = match id {
            DetectorId::Builtin(builtin) => builtin as usize,
            DetectorId::Custom(index) => Builtin::ALL.len() + usize::from(index),
        };
        &self.detector_labels[index.min(self.detector_labels.len() - 1)]
    }

    /// Runs the detectors on `text`. Unchanged: nothing written. Replaced:
    /// the masked text appended to `out`. Null: a hit's strategy is
    /// `null` and `nullable` (else it is redacted).
    pub(super) fn mask_text(
        &self,
        text: &[u8],
        nullable: bool,
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> TextResult {
        let mut found = Vec::new();
        self.find(text, &mut found);
        self.replace_found(text, &found, nullable, column, out, outcome)
    }

    /// What the detectors find in `text`, into `found` (empty; it
    /// allocates only on a hit). Not inlined: the rewriters' loops stay
    /// small, which column rules feel, and a short value still leaves
    /// after one small call.
    #[inline(never)]
    pub(super) fn find(&self, text: &[u8], found: &mut Vec<Match>) {
        self.detectors.find(text, found);
    }

    /// [`mask_text`](Self::mask_text) with the detectors already run.
    pub(super) fn replace_found(
        &self,
        text: &[u8],
        found: &[Match],
        nullable: bool,
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> TextResult {
        if found.is_empty() {
            return TextResult::Unchanged;
        }
        for m in found {
            outcome.record(column, self.label(m.detector));
        }
        if nullable && found.iter().any(|m| *self.strategy(m.detector) == Strategy::Null) {
            return TextResult::Null;
        }
        let mut at = 0;
        for m in found {
            out.extend_from_slice(&text[at..m.start]);
            let label = self.detectors.name(m.detector);
            self.strategy(m.detector).apply_in_text(&text[m.start..m.end], label, &self.key, out);
            at = m.end;
        }
        out.extend_from_slice(&text[at..]);
        TextResult::Replaced
    }

    /// Masks a value of a column detectors alone decide
    /// ([`Action::Detect`]), where they found `found`.
    pub(super) fn mask_found(
        &self,
        column: &PlannedColumn,
        value: &[u8],
        found: &[Match],
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> TextResult {
        let mark = out.len();
        match self.replace_found(value, found, true, Some(&column.label), out, outcome) {
            // A marker is not a valid value of other types: NULL is.
            TextResult::Replaced if column.kind == ValueKind::Other => {
                out.truncate(mark);
                TextResult::Null
            }
            result => result,
        }
    }

    /// Applies column rule `rule` to a whole value of kind `kind`.
    pub(super) fn apply_rule(
        &self,
        rule: usize,
        text: &[u8],
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Replacement {
        let rule = &self.rules[rule];
        outcome.record(column, &rule.label);
        rule.strategy.apply(text, "column", &self.key, out)
    }

    /// Masks one non-NULL value of `column`. Unchanged: nothing written.
    pub(super) fn mask_value(
        &self,
        column: &PlannedColumn,
        value: &[u8],
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<TextResult, MaskError> {
        let label = Some(&column.label);
        match (column.kind, column.binary) {
            (ValueKind::Scalar, _) => Ok(match column.rule {
                Some(rule) => {
                    outcome.record(label, &self.rules[rule].label);
                    TextResult::Null
                }
                None => TextResult::Unchanged,
            }),
            (ValueKind::Other, binary) => {
                if let Some(rule) = column.rule {
                    outcome.record(label, &self.rules[rule].label);
                    return Ok(TextResult::Null);
                }
                if binary {
                    return Ok(TextResult::Unchanged);
                }
                let mut found = Vec::new();
                self.find(value, &mut found);
                Ok(self.mask_found(column, value, &found, out, outcome))
            }
            (ValueKind::Text, _) => Ok(match column.rule {
                Some(rule) => match self.apply_rule(rule, value, label, out, outcome) {
                    Replacement::Text => TextResult::Replaced,
                    Replacement::Null => TextResult::Null,
                },
                None => self.mask_text(value, true, label, out, outcome),
            }),
            (ValueKind::Json, _) => self.mask_json_value(value, column.rule, label, out, outcome),
            (ValueKind::Jsonb, false) => self.mask_json_value(value, column.rule, label, out, outcome),
            (ValueKind::Jsonb, true) => {
                let Some((&version, json)) = value.split_first() else {
                    return Err(MaskError::Malformed("jsonb value without a version byte"));
                };
                if version != 1 {
                    return Err(MaskError::Malformed("jsonb value of an unknown version"));
                }
                let mark = out.len();
                out.push(version);
                let result = self.mask_json_value(json, column.rule, label, out, outcome)?;
                if result != TextResult::Replaced {
                    out.truncate(mark);
                }
                Ok(result)
            }
            (ValueKind::Array(element), false) => {
                Ok(self.mask_array_text(value, element, column.rule, label, out, outcome)?.into())
            }
            (ValueKind::Array(_), true) => self.mask_array_binary(value, column.rule, label, out, outcome),
        }
    }

    /// Masks a JSON document: string leaves by detectors, values under
    /// keys matching column patterns by their rule; with a column `rule`,
    /// the whole document becomes a JSON string (or NULL).
    pub(super) fn mask_json_value(
        &self,
        json: &[u8],
        rule: Option<usize>,
        column: Option<&Arc<str>>,
        out: &mut Vec<u8>,
        outcome: &mut MaskOutcome,
    ) -> Result<TextResult, MaskError> {
        if let Some(rule) = rule {
            super::json::validate(json)?;
            let mut masked = Vec::new();
            return Ok(match self.apply_rule(rule, json, column, &mut masked, outcome) {
                Replacement::Null => TextResult::Null,
                Replacement::Text => {
                    super::json::write_string(&masked, out);
                    TextResult::Replaced
                }
            });
        }
        Ok(if super::json::mask(self, json, column, out, outcome)? {
            TextResult::Replaced
        } else {
            TextResult::Unchanged
        })
    }
}

impl From<Replacement> for TextResult {
    fn from(replacement: Replacement) -> Self {
        match replacement {
            Replacement::Text => Self::Replaced,
            Replacement::Null => Self::Null,
        }
    }
}

impl From<bool> for TextResult {
    fn from(changed: bool) -> Self {
        if changed { Self::Replaced } else { Self::Unchanged }
    }
}
