//! The guardrail section of a postgres target: `[[target.guardrail]]`
//! rules and `[target.approvals]` (which SSH targets use for held commands too).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Loader;
use crate::{
    guardrails::{ApprovalPolicy, EffectLimit, GuardAction, GuardRule, Guardrails, StatementClass},
    policy::model::Protocol,
    source::SourceFile,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuardRule {
    classes: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    actors: Option<Spanned<Vec<String>>>,
    action: Spanned<String>,
    reason: Option<String>,
    max_rows: Option<Spanned<i64>>,
    max_fraction: Option<Spanned<f64>>,
}

/// Classes whose statements are writes the server counts rows of.
const LIMITABLE: [StatementClass; 3] =
    [StatementClass::Write, StatementClass::UpdateWithoutWhere, StatementClass::DeleteWithoutWhere];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovals {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    timeout_seconds: Option<Spanned<i64>>,
    webhook: Option<Spanned<String>>,
    session_access_seconds: Option<Spanned<i64>>,
    #[serde(default)]
    launcher_approves: bool,
}

/// A held statement waits this long for a decision unless the policy says otherwise.
const DEFAULT_APPROVAL_TIMEOUT_SECONDS: u64 = 300;

impl Loader {
    pub(super) fn guardrails(
        &mut self,
        source: &SourceFile<'_>,
        target_start: usize,
        raw_rules: Vec<Spanned<RawGuardRule>>,
        raw_approvals: Option<Spanned<RawApprovals>>,
        protocol: Option<Protocol>,
    ) -> Option<Guardrails> {
        if raw_rules.is_empty() && raw_approvals.is_none() {
            return None;
        }
        // SSH and HTTP targets take [target.approvals] for held commands
        // ([[target.ssh.command]]) and requests ([[target.https.rule]]).
        let ssh_approvals =
            matches!(protocol, Some(Protocol::Ssh | Protocol::Https | Protocol::Http)) && raw_rules.is_empty();
        if protocol.is_some_and(|p| p != Protocol::Postgres) && !ssh_approvals {
            let at = raw_rules.first().map_or(target_start, |r| r.span().start);
            self.error(source, at, "guardrails and approvals are supported for postgres targets only".into());
        }
        let mut rules = Vec::with_capacity(raw_rules.len());
        let mut holds = None;
        for rule in raw_rules {
            let start = rule.span().start;
            let rule = rule.into_inner();
            let action = match GuardAction::from_policy(rule.action.get_ref(), "guardrail") {
                Ok(action) => action,
                Err(message) => {
                    self.error(source, rule.action.span().start, message);
                    continue;
                }
            };
            if action == GuardAction::Approve {
                holds.get_or_insert(start);
            }
            let classes_at = rule.classes.span().start;
            if rule.classes.get_ref().is_empty() {
                self.error(
                    source,
                    rule.classes.span().start,
                    "classes is empty: name the statement classes this rule is about".into(),
                );
            }
            let mut classes = Vec::new();
            for class in rule.classes.into_inner() {
                match StatementClass::from_name(class.get_ref()) {
                    Some(known) => classes.push(known),
                    None => {
                        let names: Vec<&str> = StatementClass::ALL.iter().map(|c| c.as_str()).collect();
                        let message = format!(
                            "unknown statement class {:?}, expected one of: {}",
                            class.get_ref(),
                            names.join(", ")
                        );
                        self.error(source, class.span().start, message);
                    }
                }
            }
            let limit = self.effect_limit(
                source,
                &rule.max_rows,
                rule.max_fraction.as_ref(),
                (&rule.action, classes_at),
                &classes,
            );
            let actors = rule.actors.map(|actors| self.actor_names(source, actors)).unwrap_or_default();
            rules.push(GuardRule {
                classes,
                tables: rule.tables,
                users: rule.users,
                groups: rule.groups,
                actors,
                action,
                reason: rule.reason,
                limit,
                location: source.location(start),
            });
        }
        let approvals = raw_approvals.map(|raw| {
            let start = raw.span().start;
            let raw = raw.into_inner();
            if raw.users.is_empty() && raw.groups.is_empty() {
                self.error(source, start, "approvals has no approvers: give users, groups or both".into());
            }
            let timeout = match raw.timeout_seconds {
                None => DEFAULT_APPROVAL_TIMEOUT_SECONDS,
                Some(t) => match u64::try_from(*t.get_ref()) {
                    Ok(seconds @ 1..=86_400) => seconds,
                    _ => {
                        let message = format!("timeout_seconds {} must be between 1 and 86400", t.get_ref());
                        self.error(source, t.span().start, message);
                        DEFAULT_APPROVAL_TIMEOUT_SECONDS
                    }
                },
            };
            if let Some(webhook) = &raw.webhook
                && let Err(error) = crate::http::Url::parse(webhook.get_ref())
            {
                self.error(source, webhook.span().start, format!("webhook: {error}"));
            }
            let session_access = raw.session_access_seconds.map(|window| match u64::try_from(*window.get_ref()) {
                Ok(seconds @ 1..=604_800) => Duration::from_secs(seconds),
                _ => {
                    let message =
                        format!("session_access_seconds {} must be between 1 and 604800 (a week)", window.get_ref());
                    self.error(source, window.span().start, message);
                    Duration::from_secs(1)
                }
            });
            ApprovalPolicy {
                users: raw.users,
                groups: raw.groups,
                timeout: Duration::from_secs(timeout),
                webhook: raw.webhook.map(Spanned::into_inner),
                session_access,
                launcher_approves: raw.launcher_approves,
            }
        });
        if let (Some(at), None) = (holds, &approvals) {
            let message = "this rule holds statements for approval, but the target has no [target.approvals] table saying who approves".into();
            self.error(source, at, message);
        }
        Some(Guardrails { rules, approvals })
    }

    /// `max_rows` and `max_fraction`: for write classes, with an action
    /// that stops what goes over them.
    fn effect_limit(
        &mut self,
        source: &SourceFile<'_>,
        max_rows: &Option<Spanned<i64>>,
        max_fraction: Option<&Spanned<f64>>,
        (action, classes_at): (&Spanned<String>, usize),
        classes: &[StatementClass],
    ) -> Option<EffectLimit> {
        if max_rows.is_none() && max_fraction.is_none() {
            return None;
        }
        let max_rows = max_rows.as_ref().and_then(|rows| match u64::try_from(*rows.get_ref()) {
            Ok(rows) => Some(rows),
            Err(_) => {
                self.error(source, rows.span().start, format!("max_rows {} must be 0 or more", rows.get_ref()));
                None
            }
        });
        let max_fraction = max_fraction.and_then(|fraction| match *fraction.get_ref() {
            f if f > 0.0 && f <= 1.0 => Some(f),
            f => {
                let message = format!("max_fraction {f} must be above 0 and at most 1 (0.1 is a tenth of the table)");
                self.error(source, fraction.span().start, message);
                None
            }
        });
        if action.get_ref() == "allow" {
            let message = "a rule with max_rows or max_fraction says what happens over the limit: action must be \
                           \"approve\" or \"deny\""
                .into();
            self.error(source, action.span().start, message);
        }
        if let Some(other) = classes.iter().find(|class| !LIMITABLE.contains(class)) {
            let names: Vec<&str> = LIMITABLE.iter().map(|c| c.as_str()).collect();
            let message = format!(
                "max_rows and max_fraction limit writes; class {:?} is not one (limitable: {})",
                other.as_str(),
                names.join(", ")
            );
            self.error(source, classes_at, message);
        }
        Some(EffectLimit { max_rows, max_fraction })
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::tests::{errors, load, target},
        *,
    };

    #[test]
    fn guardrails_load_and_are_checked() {
        let base = target("db", 5432, "[\"10.0.0.5\"]").replace("\"tcp\"", "\"postgres\"");
        let good = format!(
            "{base}[[target.guardrail]]\nclasses = [\"drop\", \"truncate\"]\ngroups = [\"dba\"]\naction = \"allow\"\n\n[[target.guardrail]]\nclasses = [\"drop\", \"truncate\", \"delete_without_where\"]\ntables = [\"public.*\"]\naction = \"approve\"\nreason = \"ask a DBA\"\n\n[target.approvals]\ngroups = [\"dba\"]\ntimeout_seconds = 120\nwebhook = \"https://hooks.example.com/T/B/x\"\n"
        );
        let policy = load(&[("g.toml", &good)]).unwrap();
        let guardrails = policy.targets[0].guardrails.as_ref().unwrap();
        assert_eq!(guardrails.rules.len(), 2);
        assert_eq!(
            guardrails.rules[1].classes,
            [StatementClass::Drop, StatementClass::Truncate, StatementClass::DeleteWithoutWhere]
        );
        assert_eq!(guardrails.rules[1].action, GuardAction::Approve);
        assert_eq!(guardrails.rules[1].location.line, 11);
        let approvals = guardrails.approvals.as_ref().unwrap();
        assert_eq!(
            (approvals.timeout, approvals.groups.as_slice()),
            (Duration::from_secs(120), &["dba".to_owned()][..])
        );
        assert!(load(&[("g.toml", &base)]).unwrap().targets[0].guardrails.is_none());

        let bad = format!(
            "{}[[target.guardrail]]\nclasses = [\"drop\", \"dorp\"]\naction = \"approve\"\n\n[[target.guardrail]]\nclasses = []\naction = \"maybe\"\n",
            base.replace("\"postgres\"", "\"ssh\"")
        );
        assert_eq!(
            errors(&[("g.toml", &bad)]),
            [
                "g.toml:6:1: guardrails and approvals are supported for postgres targets only",
                "g.toml:6:1: this rule holds statements for approval, but the target has no [target.approvals] table saying who approves",
                "g.toml:7:20: unknown statement class \"dorp\", expected one of: read, session, write, update_without_where, delete_without_where, ddl, drop, truncate, privilege, copy_program, copy_file, procedural, risky_function, multi_statement, unparsed",
                "g.toml:12:10: unknown guardrail action \"maybe\", expected \"allow\", \"approve\" or \"deny\"",
            ]
        );
        let no_approvers = format!("{base}[target.approvals]\ntimeout_seconds = 0\nwebhook = \"ftp://x\"\n");
        assert_eq!(
            errors(&[("g.toml", &no_approvers)]),
            [
                "g.toml:6:1: approvals has no approvers: give users, groups or both",
                "g.toml:7:19: timeout_seconds 0 must be between 1 and 86400",
                "g.toml:8:11: webhook: unsupported URL: only http:// and https:// are spoken",
            ]
        );
    }

    #[test]
    fn effect_limits_load_and_are_checked() {
        let base = target("db", 5432, "[\"10.0.0.5\"]").replace("\"tcp\"", "\"postgres\"");
        let good = format!(
            "{base}[[target.guardrail]]\nclasses = [\"write\", \"delete_without_where\"]\nmax_rows = 1000\nmax_fraction = 0.1\naction = \"deny\"\n"
        );
        let policy = load(&[("l.toml", &good)]).unwrap();
        let rule = &policy.targets[0].guardrails.as_ref().unwrap().rules[0];
        assert_eq!(rule.limit, Some(EffectLimit { max_rows: Some(1000), max_fraction: Some(0.1) }));
        let bad = format!(
            "{base}[[target.guardrail]]\nclasses = [\"write\", \"drop\"]\nmax_rows = -1\nmax_fraction = 1.5\naction = \"allow\"\n"
        );
        assert_eq!(
            errors(&[("l.toml", &bad)]),
            [
                "l.toml:7:11: max_rows and max_fraction limit writes; class \"drop\" is not one (limitable: write, update_without_where, delete_without_where)",
                "l.toml:8:12: max_rows -1 must be 0 or more",
                "l.toml:9:16: max_fraction 1.5 must be above 0 and at most 1 (0.1 is a tenth of the table)",
                "l.toml:10:10: a rule with max_rows or max_fraction says what happens over the limit: action must be \"approve\" or \"deny\"",
            ]
        );
    }
}
