//! Statement guardrails: what each class of statement may do on a target.
//!
//! A statement is classified ([`classify`]), then each of its classes is
//! looked up in the target's rules, in file order, the first matching rule
//! deciding for that class; the statement gets the strictest of its
//! classes' actions. A class no rule mentions is allowed, except
//! [`StatementClass::Unparsed`], which is denied: Airlock does not let
//! through what it cannot read unless the policy says so.
//!
//! A rule may instead limit how far a write reaches ([`EffectLimit`]):
//! syntax cannot tell how many rows `WHERE id IS NOT NULL` matches, so the
//! write runs inside a savepoint, the server says how many rows it changed,
//! and only over the limit is it rolled back and given the rule's action.

pub mod classify;
pub mod parser;
pub mod predicate;

use std::time::Duration;

pub use self::classify::{Classification, Classifier, Effect, StatementClass, WriteCommand};
use crate::{
    glob,
    policy::{Subject, guard_binds, matches_subject},
    source::SourceLocation,
};

/// A target's guardrails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guardrails {
    /// Rules in file order.
    pub rules: Vec<GuardRule>,
    /// Who approves held statements, when a rule holds them.
    pub approvals: Option<ApprovalPolicy>,
}

/// What happens to statements of some classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardRule {
    /// Classes the rule is about.
    pub classes: Vec<StatementClass>,
    /// Table patterns (`schema.table`, `table`, `*` wildcards); empty: any table.
    pub tables: Vec<String>,
    /// Who the rule is for: user names; with `groups` both empty, everyone.
    pub users: Vec<String>,
    /// Who the rule is for: group names.
    pub groups: Vec<String>,
    /// Which actors' statements the rule is for (`*`: any actor's). Empty:
    /// a restricting rule is for everyone's, people's and their actors';
    /// an allowing one for people's own only (what policy allows an actor
    /// it says by name).
    pub actors: Vec<String>,
    /// What happens.
    pub action: GuardAction,
    /// Told to the client and recorded.
    pub reason: Option<String>,
    /// With a limit, the action is for writes over it only; those within run.
    pub limit: Option<EffectLimit>,
    /// Where the rule is written.
    pub location: SourceLocation,
}

/// How far a write may reach and still run without the rule's action.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EffectLimit {
    /// Rows the write may change.
    pub max_rows: Option<u64>,
    /// Share of its table's rows (as the session sees them) it may change,
    /// in (0, 1]. Counted for UPDATE, DELETE and MERGE; an INSERT is held
    /// to `max_rows` only.
    pub max_fraction: Option<f64>,
}

// The loader admits only finite fractions.
impl Eq for EffectLimit {}

impl EffectLimit {
    /// The stricter of two limits, bound by bound.
    fn tightest(self, other: Self) -> Self {
        fn min<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (a, b) => a.or(b),
            }
        }
        Self { max_rows: min(self.max_rows, other.max_rows), max_fraction: min(self.max_fraction, other.max_fraction) }
    }
}

/// A statement allowed within an effect limit, and what happens over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// The limit (the tightest, when several classes have one).
    pub limit: EffectLimit,
    /// What happens over the limit, or when the effect cannot be measured.
    pub over: GuardAction,
    /// The class whose rule set the action.
    pub class: StatementClass,
    /// The rule's reason, or one naming the rule.
    pub reason: String,
}

/// What a guardrail does with a statement; ordered from least to most strict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Sent to the server.
    Allow,
    /// Held until an approver lets it through.
    Approve,
    /// Refused with an error.
    Deny,
}

impl GuardAction {
    /// The name policies use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }

    /// The action a policy file names (`allow`, `approve`, `deny`), or the
    /// message for one it does not know; `what` says whose action it is.
    pub fn from_policy(text: &str, what: &str) -> Result<Self, String> {
        match text {
            "allow" => Ok(Self::Allow),
            "approve" => Ok(Self::Approve),
            "deny" => Ok(Self::Deny),
            other => Err(format!("unknown {what} action {other:?}, expected \"allow\", \"approve\" or \"deny\"")),
        }
    }
}

/// Who decides on held statements, and how long they wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// Approvers by user name.
    pub users: Vec<String>,
    /// Approvers by group.
    pub groups: Vec<String>,
    /// A request not decided within this time is denied.
    pub timeout: Duration,
    /// Where request and decision notices are POSTed (JSON, Slack-compatible `text`).
    pub webhook: Option<String>,
    /// When set, opening a session needs approval too, and an approval
    /// opens the target to that person for this long.
    pub session_access: Option<Duration>,
    /// The person an actor (an AI agent, a bot) runs as may decide that
    /// actor's requests, approver or not (their own never).
    pub launcher_approves: bool,
}

impl ApprovalPolicy {
    /// Whether `subject` may decide requests.
    pub fn is_approver(&self, subject: &Subject<'_>) -> bool {
        matches_subject(&self.users, &self.groups, subject)
    }

    /// Who may approve, for messages: `group dba, user alice`.
    pub fn describe_approvers(&self) -> String {
        let groups = self.groups.iter().map(|g| format!("group {g}"));
        let users = self.users.iter().map(|u| format!("user {u}"));
        groups.chain(users).collect::<Vec<_>>().join(", ")
    }
}

impl Limited {
    /// The verdict for a write over the limit: `why` says by how much.
    pub fn exceeded(&self, why: &str) -> Verdict {
        Verdict::new(self.over, self.class, format!("{why}; it was rolled back. {}", self.reason))
    }

    /// The verdict for a write that cannot be measured where it was sent.
    pub fn cannot_measure(&self, why: &str) -> Verdict {
        Verdict::new(
            self.over,
            self.class,
            format!(
                "Airlock cannot measure the rows this write changes ({why}), so it is {}. {}",
                self.over.verb(),
                self.reason
            ),
        )
    }

    /// The verdict for a statement whose effect cannot be measured.
    pub fn unmeasurable(&self) -> Verdict {
        Verdict::new(
            self.over,
            self.class,
            format!(
                "Airlock measures the rows a write changes only for one INSERT, UPDATE, DELETE or MERGE alone in its \
                 text (not inside WITH, EXPLAIN, PREPARE or a function), so this one is {}. {}",
                self.over.verb(),
                self.reason
            ),
        )
    }
}

/// The outcome for one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What happens.
    pub action: GuardAction,
    /// The class that decided it.
    pub class: StatementClass,
    /// Why, in words for the person who sent it.
    pub reason: String,
    /// An allowed statement that runs only within an effect limit.
    pub limited: Option<Limited>,
}

impl Verdict {
    /// A verdict that is only `action`, for `class`.
    pub fn new(action: GuardAction, class: StatementClass, reason: String) -> Self {
        Self { action, class, reason, limited: None }
    }
}

impl Guardrails {
    /// The verdict for a classified statement sent by `subject`.
    pub fn decide(&self, classification: &Classification, subject: &Subject<'_>) -> Verdict {
        let mut verdict = Verdict::new(GuardAction::Allow, StatementClass::Read, "no guardrail applies".into());
        let mut limited: Option<Limited> = None;
        for &class in &classification.classes {
            let candidate = match self.rules.iter().find(|rule| rule.matches(class, classification, subject)) {
                Some(rule) => match rule.limit {
                    Some(limit) => {
                        let reason = rule.reason_for(class);
                        limited = Some(match limited.take() {
                            Some(other) if other.over >= rule.action => {
                                Limited { limit: other.limit.tightest(limit), ..other }
                            }
                            Some(other) => {
                                Limited { limit: other.limit.tightest(limit), over: rule.action, class, reason }
                            }
                            None => Limited { limit, over: rule.action, class, reason },
                        });
                        continue;
                    }
                    None => Verdict::new(rule.action, class, rule.reason_for(class)),
                },
                None if class == StatementClass::Unparsed => Verdict::new(
                    GuardAction::Deny,
                    class,
                    format!(
                        "Airlock could not parse this statement ({}), and statements it cannot read are refused",
                        classification
                            .parse_error
                            .as_deref()
                            .map_or_else(|| "no detail".into(), crate::redact::sql_error)
                    ),
                ),
                None => continue,
            };
            if candidate.action > verdict.action {
                verdict = candidate;
            }
        }
        // A stricter class decides outright; an allowed one runs within the limit.
        if verdict.action == GuardAction::Allow {
            verdict.limited = limited;
        }
        verdict
    }
}

impl GuardRule {
    fn matches(&self, class: StatementClass, classification: &Classification, subject: &Subject<'_>) -> bool {
        let for_subject =
            (self.users.is_empty() && self.groups.is_empty()) || matches_subject(&self.users, &self.groups, subject);
        let for_actor = guard_binds(&self.actors, self.action, subject.actor);
        for_subject && for_actor && self.classes.contains(&class) && self.matches_tables(classification)
    }

    /// With table patterns, the rule applies when a named table matches.
    /// Unparsed text names no tables Airlock can trust: a restricting rule
    /// applies to it, an allowing one does not.
    fn matches_tables(&self, classification: &Classification) -> bool {
        if self.tables.is_empty() {
            return true;
        }
        if classification.parse_error.is_some() {
            return self.action != GuardAction::Allow;
        }
        classification.tables.iter().any(|table| self.tables.iter().any(|pattern| table_matches(pattern, table)))
    }

    fn reason_for(&self, class: StatementClass) -> String {
        match (&self.reason, &self.limit) {
            (Some(reason), _) => reason.clone(),
            (None, None) => {
                format!("{} statements are {} by policy ({})", class.as_str(), self.action.verb(), self.location)
            }
            (None, Some(_)) => format!(
                "{} statements over the limit of rule {} are {}",
                class.as_str(),
                self.location,
                self.action.verb()
            ),
        }
    }
}

impl GuardAction {
    /// What the action does to a statement, as a past participle.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Allow => "allowed",
            Self::Approve => "held for approval",
            Self::Deny => "refused",
        }
    }
}

/// Whether a table name as written matches a policy pattern. An
/// unqualified name matches on its table part alone: which schema it is in
/// depends on the session's search_path, so Airlock assumes any.
pub fn table_matches(pattern: &str, table: &str) -> bool {
    match (pattern.rsplit_once('.'), table.rsplit_once('.')) {
        (Some(_), Some(_)) | (None, None) => glob::matches(pattern, table),
        (Some((_, pattern_table)), None) => glob::matches(pattern_table, table),
        (None, Some((_, table_part))) => glob::matches(pattern, table_part),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{StatementClass as C, *};

    fn rule(classes: &[C], tables: &[&str], groups: &[&str], action: GuardAction) -> GuardRule {
        GuardRule {
            classes: classes.to_vec(),
            tables: tables.iter().map(|t| (*t).to_owned()).collect(),
            users: Vec::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            actors: Vec::new(),
            action,
            reason: None,
            limit: None,
            location: SourceLocation { file: PathBuf::from("p.toml"), line: 1, column: 1 },
        }
    }

    fn decide(guardrails: &Guardrails, sql: &str, groups: &[&str]) -> Verdict {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        guardrails.decide(&Classification::of(sql), &Subject::new("alice", &groups))
    }

    fn policy() -> Guardrails {
        Guardrails {
            rules: vec![
                rule(&[C::Drop, C::Truncate], &[], &["dba"], GuardAction::Allow),
                rule(&[C::Drop, C::Truncate, C::DeleteWithoutWhere], &[], &[], GuardAction::Approve),
                rule(&[C::Write], &["audit.*"], &[], GuardAction::Deny),
                rule(&[C::Privilege, C::CopyProgram], &[], &[], GuardAction::Deny),
            ],
            approvals: None,
        }
    }

    #[test]
    fn first_matching_rule_per_class_and_strictest_class_wins() {
        let p = policy();
        assert_eq!(decide(&p, "SELECT 1", &[]).action, GuardAction::Allow);
        assert_eq!(decide(&p, "DROP TABLE t", &[]).action, GuardAction::Approve);
        assert_eq!(decide(&p, "DROP TABLE t", &["dba"]).action, GuardAction::Allow);
        let verdict = decide(&p, "DROP TABLE t; GRANT ALL ON t TO bob", &["dba"]);
        assert_eq!((verdict.action, verdict.class), (GuardAction::Deny, C::Privilege));
        assert!(verdict.reason.contains("privilege statements are refused by policy (p.toml:1:1)"), "{verdict:?}");
    }

    #[test]
    fn table_patterns_limit_a_rule() {
        let p = policy();
        assert_eq!(decide(&p, "INSERT INTO audit.events VALUES (1)", &[]).action, GuardAction::Deny);
        assert_eq!(decide(&p, "INSERT INTO public.orders VALUES (1)", &[]).action, GuardAction::Allow);
        // Unqualified: search_path decides the schema, so any schema's pattern applies.
        assert_eq!(decide(&p, "UPDATE events SET a = 1 WHERE b = 2", &[]).action, GuardAction::Deny);
    }

    #[test]
    fn unparsed_is_refused_unless_a_rule_says_otherwise() {
        let p = policy();
        let verdict = decide(&p, "SELEKT 1", &[]);
        assert_eq!((verdict.action, verdict.class), (GuardAction::Deny, C::Unparsed));
        assert!(verdict.reason.contains("could not parse"), "{verdict:?}");
        let lenient = Guardrails { rules: vec![rule(&[C::Unparsed], &[], &[], GuardAction::Approve)], approvals: None };
        assert_eq!(decide(&lenient, "SELEKT 1", &[]).action, GuardAction::Approve);
    }

    #[test]
    fn restricting_table_rules_apply_to_unparsed_text() {
        let deny_audit = Guardrails {
            rules: vec![
                rule(&[C::Unparsed], &["audit.*"], &[], GuardAction::Approve),
                rule(&[C::Unparsed], &["public.*"], &[], GuardAction::Allow),
            ],
            approvals: None,
        };
        assert_eq!(decide(&deny_audit, "SELEKT * FROM audit.x", &[]).action, GuardAction::Approve);
    }

    #[test]
    fn effect_limits_allow_within_and_stricter_classes_still_decide() {
        let mut limited = rule(&[C::Write, C::DeleteWithoutWhere], &[], &[], GuardAction::Approve);
        limited.limit = Some(EffectLimit { max_rows: Some(100), max_fraction: None });
        let mut tighter = rule(&[C::UpdateWithoutWhere], &[], &[], GuardAction::Deny);
        tighter.limit = Some(EffectLimit { max_rows: Some(10), max_fraction: Some(0.5) });
        let p = Guardrails {
            rules: vec![limited, tighter, rule(&[C::Drop], &[], &[], GuardAction::Deny)],
            approvals: None,
        };
        let verdict = decide(&p, "DELETE FROM t WHERE id > 5", &[]);
        assert_eq!(verdict.action, GuardAction::Allow);
        let within = verdict.limited.expect("limited");
        assert_eq!((within.limit.max_rows, within.over), (Some(100), GuardAction::Approve));
        assert!(within.reason.contains("over the limit of rule p.toml:1:1 are held for approval"), "{within:?}");
        // Two limited classes: the tightest bounds, the strictest action.
        let both = decide(&p, "UPDATE t SET a = 1; DELETE FROM t WHERE id > 5", &[]).limited.expect("limited");
        assert_eq!((both.limit.max_rows, both.limit.max_fraction, both.over), (Some(10), Some(0.5), GuardAction::Deny));
        // A class refused outright is refused, limit or not.
        let verdict = decide(&p, "DELETE FROM t WHERE id > 5; DROP TABLE t", &[]);
        assert_eq!((verdict.action, verdict.limited), (GuardAction::Deny, None));
        assert_eq!(decide(&p, "SELECT 1", &[]).limited, None);
    }

    #[test]
    fn globs() {
        assert!(table_matches("public.customers", "customers"));
        assert!(table_matches("customers", "crm.customers"));
        assert!(!table_matches("crm.customers", "sales.customers"));
    }
}
