//! The `[target.masking]` section of a policy file: its model, parsing and
//! validation. Every mistake is reported at its file:line:column and the
//! policy is refused (masking that silently does less than written would
//! leak data).
//!
//! ```toml
//! [target.masking]
//! detectors = ["card", "email", "iban"]   # default: card email iban aws_key jwt private_key api_key
//! strategy = "redact"                     # for detector hits: redact | partial | token | null
//! exempt_groups = ["dba"]                 # masking does not apply to these people at all
//!
//! [[target.masking.detector]]             # a built-in's strategy, or a custom regex
//! name = "order_ref"
//! regex = "ORD-[0-9]{8}"
//! strategy = "token"
//!
//! [[target.masking.rules]]                # whole columns, whatever their content
//! column = "public.customers.email"       # schema.table.column, or:
//! # actors = ["coding-agent"]             # only for these actors' connections ("*": any actor)
//! # column_pattern = "*ssn*"              # glob on the column name (schema.table.column if it has dots)
//! # json_path = "$.items[*].token"        # HTTP targets: values in JSON answers (and all under them)
//! strategy = "partial"
//! keep = 4
//! exempt_groups = ["support"]
//! ```

use regex::bytes::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::{detect::Builtin, json_path::JsonPath, strategy::Strategy};
use crate::{
    glob,
    policy::Protocol,
    source::{Diagnostic, SourceFile, SourceLocation},
};

/// A target's masking configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskingPolicy {
    /// Built-in detectors run on every text value.
    pub detectors: Vec<Builtin>,
    /// What detector hits become, unless a [`DetectorRule`] says otherwise.
    pub strategy: Strategy,
    /// Strategies of single built-ins, and custom regex detectors.
    pub detector_rules: Vec<DetectorRule>,
    /// Whole-column rules, in file order: the first that matches a column
    /// and applies to the person decides.
    pub rules: Vec<ColumnRule>,
    /// People masking does not apply to at all.
    pub exempt: Exemption,
    /// Where the section starts.
    pub location: SourceLocation,
}

/// People a masking rule does not apply to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exemption {
    /// User names.
    pub users: Vec<String>,
    /// Group names.
    pub groups: Vec<String>,
}

impl Exemption {
    /// Whether the person `user`, member of `groups`, is exempt.
    pub fn exempts(&self, user: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == user) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// A detector's strategy and exemptions.
#[derive(Clone, Debug)]
pub struct DetectorRule {
    /// Which detector.
    pub detector: DetectorSpec,
    /// What its hits become.
    pub strategy: Strategy,
    /// Who sees its hits unmasked.
    pub exempt: Exemption,
    /// The actors it is for (`*`: any); empty: every connection.
    pub actors: Vec<String>,
}

impl PartialEq for DetectorRule {
    fn eq(&self, other: &Self) -> bool {
        self.detector == other.detector
            && self.strategy == other.strategy
            && self.exempt == other.exempt
            && self.actors == other.actors
    }
}

/// Whether a rule for `actors` (empty: for everyone) applies to a
/// connection by `actor` (`None`: the person's own).
pub fn rule_applies(actors: &[String], actor: Option<&str>) -> bool {
    actors.is_empty() || actor.is_some_and(|actor| actors.iter().any(|a| a == "*" || a == actor))
}

impl Eq for DetectorRule {}

/// A built-in or custom detector.
#[derive(Clone, Debug)]
pub enum DetectorSpec {
    /// A built-in (listed in `detectors` or not: naming it enables it).
    Builtin(Builtin),
    /// A regex from the policy.
    Custom {
        /// Name for audit records and markers.
        name: String,
        /// What it matches.
        regex: Regex,
    },
}

impl PartialEq for DetectorSpec {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Builtin(a), Self::Builtin(b)) => a == b,
            (Self::Custom { name: a, regex: ra }, Self::Custom { name: b, regex: rb }) => {
                a == b && ra.as_str() == rb.as_str()
            }
            _ => false,
        }
    }
}

/// A rule masking whole columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnRule {
    /// Which columns.
    pub columns: ColumnMatcher,
    /// What their values become.
    pub strategy: Strategy,
    /// Who sees them unmasked.
    pub exempt: Exemption,
    /// The actors it is for (`*`: any); empty: every connection.
    pub actors: Vec<String>,
    /// Where the rule starts.
    pub location: SourceLocation,
}

/// Columns a [`ColumnRule`] applies to. Names compare ASCII
/// case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ColumnMatcher {
    /// One column: `schema.table.column`.
    Column(String),
    /// A glob (`*`, `?`) on the column name; on `schema.table.column` when
    /// the pattern has dots. Also tried on JSON object keys.
    Pattern(String),
    /// Values a JSON path names in JSON answers of HTTP targets.
    JsonPath(JsonPath),
}

impl ColumnMatcher {
    /// Whether a result column matches. `qualified` is `schema.table.column`
    /// when the column comes straight from a table; `field_name` is the
    /// name the result gives it (an alias, or the column name). Both are
    /// tried, so an alias neither hides nor reveals a column.
    pub fn matches(&self, qualified: Option<&str>, field_name: &str) -> bool {
        match self {
            Self::Column(column) => qualified.is_some_and(|q| q.eq_ignore_ascii_case(column)),
            Self::Pattern(pattern) if pattern.contains('.') => {
                qualified.is_some_and(|q| glob::matches_name(pattern, q))
            }
            Self::Pattern(pattern) => {
                let bare = qualified.and_then(|q| q.rsplit('.').next());
                bare.is_some_and(|name| glob::matches_name(pattern, name)) || glob::matches_name(pattern, field_name)
            }
            Self::JsonPath(_) => false,
        }
    }

    /// The JSON path, for a rule that has one.
    pub fn json_path(&self) -> Option<&JsonPath> {
        match self {
            Self::JsonPath(path) => Some(path),
            _ => None,
        }
    }

    /// Whether a JSON object key matches (patterns without dots only).
    pub fn matches_key(&self, key: &[u8]) -> bool {
        match self {
            Self::Pattern(pattern) if !pattern.contains('.') => {
                std::str::from_utf8(key).is_ok_and(|key| glob::matches_name(pattern, key))
            }
            _ => false,
        }
    }

    /// Whether some JSON key could match (a pattern without dots).
    pub fn matches_key_possible(&self) -> bool {
        matches!(self, Self::Pattern(pattern) if !pattern.contains('.'))
    }

    /// As written in the policy, for audit records.
    pub fn describe(&self) -> String {
        match self {
            Self::Column(column) => format!("column {column}"),
            Self::Pattern(pattern) => format!("column_pattern {pattern}"),
            Self::JsonPath(path) => format!("json_path {}", path.as_str()),
        }
    }
}

impl MaskingPolicy {
    /// `base` (a target's own masking, if it has some) with rules masking
    /// every value `paths` name, for the people `base` does not exempt: what
    /// Airlock itself masks (Kubernetes Secrets' data), beside what the
    /// policy asks.
    pub fn with_paths(base: Option<&MaskingPolicy>, paths: &[JsonPath], location: SourceLocation) -> Self {
        let mut policy = base.cloned().unwrap_or_else(|| Self {
            detectors: Vec::new(),
            strategy: Strategy::default(),
            detector_rules: Vec::new(),
            rules: Vec::new(),
            exempt: Exemption::default(),
            location: location.clone(),
        });
        let marker = Strategy::Redact { marker: Some("[masked]".into()) };
        // First: they decide before a member-name rule of the target's.
        let added = paths.iter().map(|path| ColumnRule {
            columns: ColumnMatcher::JsonPath(path.clone()),
            strategy: marker.clone(),
            exempt: Exemption::default(),
            actors: Vec::new(),
            location: location.clone(),
        });
        policy.rules.splice(0..0, added);
        policy
    }

    /// What bodies kept for audit records (`record_bodies`) go through
    /// before they are written, for everyone: the default detectors, and
    /// the values of JSON members whose names suggest a secret
    /// ([`crate::redact::SECRET_NAME_PARTS`]), whatever the target masks
    /// for its clients.
    pub fn for_recorded_bodies() -> Self {
        let location = SourceLocation { file: "built-in redaction of recorded bodies".into(), line: 0, column: 0 };
        let rules = crate::redact::SECRET_NAME_PARTS.iter().map(|part| ColumnRule {
            columns: ColumnMatcher::Pattern(format!("*{part}*")),
            strategy: Strategy::Redact { marker: Some(crate::redact::REDACTED.into()) },
            exempt: Exemption::default(),
            actors: Vec::new(),
            location: location.clone(),
        });
        Self {
            detectors: Builtin::DEFAULT.to_vec(),
            strategy: Strategy::default(),
            detector_rules: Vec::new(),
            rules: rules.collect(),
            exempt: Exemption::default(),
            location,
        }
    }

    /// Whether any of the masking applies to the person `user`, member of
    /// `groups` (when not, the proxy can skip masking for the session).
    pub fn applies_to(&self, user: &str, groups: &[String]) -> bool {
        !self.exempt.exempts(user, groups)
            && (!self.detectors.is_empty()
                || self.detector_rules.iter().any(|r| !r.exempt.exempts(user, groups))
                || self.rules.iter().any(|r| !r.exempt.exempts(user, groups)))
    }
}

/// `[target.masking]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMasking {
    detectors: Option<Vec<Spanned<String>>>,
    strategy: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
    marker: Option<Spanned<String>>,
    #[serde(default)]
    exempt_users: Vec<String>,
    #[serde(default)]
    exempt_groups: Vec<String>,
    #[serde(default)]
    detector: Vec<Spanned<RawDetector>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    name: Spanned<String>,
    regex: Option<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
    marker: Option<Spanned<String>>,
    #[serde(default)]
    exempt_users: Vec<String>,
    #[serde(default)]
    exempt_groups: Vec<String>,
    actors: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    column: Option<Spanned<String>>,
    column_pattern: Option<Spanned<String>>,
    json_path: Option<Spanned<String>>,
    strategy: Option<Spanned<String>>,
    keep: Option<Spanned<i64>>,
    marker: Option<Spanned<String>>,
    #[serde(default)]
    exempt_users: Vec<String>,
    #[serde(default)]
    exempt_groups: Vec<String>,
    actors: Option<Spanned<Vec<String>>>,
}

/// A rule's `actors`; an empty list is a mistake (it would match nothing).
fn rule_actors(actors: Option<Spanned<Vec<String>>>, error: &mut impl FnMut(usize, String)) -> Vec<String> {
    let Some(actors) = actors else { return Vec::new() };
    if actors.get_ref().is_empty() {
        error(actors.span().start, "actors = [] matches no connection: name actors, or \"*\" for any".into());
    }
    actors.into_inner()
}

/// Longest custom regex accepted, compiled size: a policy must not be able
/// to make the proxy slow or large.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Checks a `[target.masking]` section; problems go to `errors`.
pub(crate) fn load(
    source: &SourceFile<'_>,
    raw: Spanned<RawMasking>,
    protocol: Option<Protocol>,
    errors: &mut Vec<Diagnostic>,
) -> MaskingPolicy {
    let start = raw.span().start;
    let raw = raw.into_inner();
    let mut error = |offset: usize, message: String| errors.push(source.diagnostic(offset, message));
    let http = matches!(protocol, Some(Protocol::Https | Protocol::Http));
    if protocol.is_some_and(|p| p != Protocol::Postgres) && !http {
        error(
            start,
            format!(
                "masking is supported for postgres, https and http targets, not {}",
                protocol.unwrap_or(Protocol::Tcp)
            ),
        );
    }
    let mut detectors = Vec::new();
    match &raw.detectors {
        None => detectors.extend(Builtin::DEFAULT),
        Some(names) => {
            for name in names {
                match Builtin::from_name(name.get_ref()) {
                    Some(builtin) if detectors.contains(&builtin) => {
                        error(name.span().start, format!("detector {:?} is listed twice", name.get_ref()))
                    }
                    Some(builtin) => detectors.push(builtin),
                    None => error(name.span().start, unknown_detector(name.get_ref())),
                }
            }
        }
    }
    let strategy = strategy(&mut error, start, raw.strategy.as_ref(), raw.keep.as_ref(), raw.marker.as_ref());

    let mut detector_rules: Vec<DetectorRule> = Vec::new();
    for detector in raw.detector {
        let start = detector.span().start;
        let detector = detector.into_inner();
        let name = detector.name.get_ref();
        let name_at = detector.name.span().start;
        let spec = match (&detector.regex, Builtin::from_name(name)) {
            (None, Some(builtin)) => Some(DetectorSpec::Builtin(builtin)),
            (None, None) => {
                error(name_at, format!("{}; a custom detector needs a `regex`", unknown_detector(name)));
                None
            }
            (Some(_), Some(_)) => {
                error(name_at, format!("{name:?} is a built-in detector: give a custom detector another name"));
                None
            }
            (Some(regex), None) => {
                if !valid_label(name) {
                    let message = format!(
                        "invalid detector name {name:?}: use lowercase letters, digits and '_', at most 32 characters"
                    );
                    error(name_at, message);
                }
                match regex::bytes::RegexBuilder::new(regex.get_ref()).size_limit(REGEX_SIZE_LIMIT).build() {
                    Ok(compiled) if compiled.is_match(b"") => {
                        error(regex.span().start, format!("regex of detector {name:?} matches empty text"));
                        None
                    }
                    Ok(compiled) => Some(DetectorSpec::Custom { name: name.clone(), regex: compiled }),
                    Err(e) => {
                        // The regex crate's message spans lines (it draws the pattern).
                        let reason = e.to_string().lines().last().unwrap_or("invalid").trim().to_owned();
                        error(regex.span().start, format!("invalid regex of detector {name:?}: {reason}"));
                        None
                    }
                }
            }
        };
        if detector_rules.iter().any(|r| detector_name(&r.detector) == name) {
            error(name_at, format!("detector {name:?} is configured twice"));
        }
        let strategy = strategy_or(
            &mut error,
            start,
            detector.strategy.as_ref(),
            detector.keep.as_ref(),
            detector.marker.as_ref(),
            &strategy,
        );
        let exempt = Exemption { users: detector.exempt_users, groups: detector.exempt_groups };
        let actors = rule_actors(detector.actors, &mut error);
        if let Some(detector) = spec {
            detector_rules.push(DetectorRule { detector, strategy, exempt, actors });
        }
    }

    let mut rules = Vec::new();
    for rule in raw.rules {
        let start = rule.span().start;
        let rule = rule.into_inner();
        let columns = match (rule.column, rule.column_pattern, rule.json_path) {
            (Some(column), None, None) if http => {
                error(
                    column.span().start,
                    "`column` names a table column: use json_path or column_pattern on HTTP targets".into(),
                );
                continue;
            }
            (None, None, Some(path)) if !http => {
                error(
                    path.span().start,
                    "json_path is for https and http targets; use column or column_pattern".into(),
                );
                continue;
            }
            (None, None, Some(path)) => match JsonPath::parse(path.get_ref()) {
                Ok(parsed) => ColumnMatcher::JsonPath(parsed),
                Err(message) => {
                    error(path.span().start, message);
                    continue;
                }
            },
            (Some(column), None, None) => {
                let text = column.get_ref();
                let parts: Vec<&str> = text.split('.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
                    let message = format!("column {text:?} must be schema.table.column (use column_pattern for globs)");
                    error(column.span().start, message);
                }
                ColumnMatcher::Column(column.into_inner())
            }
            (None, Some(pattern), None) => {
                let text = pattern.get_ref();
                if text.is_empty() || text.split('.').count() > 3 || text.chars().all(|c| c == '*') {
                    let message = format!(
                        "column_pattern {text:?} must name columns: a glob on the column name or schema.table.column, not only `*`"
                    );
                    error(pattern.span().start, message);
                }
                ColumnMatcher::Pattern(pattern.into_inner())
            }
            _ => {
                error(start, "a masking rule needs one of `column`, `column_pattern` or `json_path`".into());
                continue;
            }
        };
        // Column rules default to a plain marker: the column name is known
        // to whoever wrote the query.
        let default = Strategy::Redact { marker: Some("[masked]".into()) };
        let strategy =
            strategy_or(&mut error, start, rule.strategy.as_ref(), rule.keep.as_ref(), rule.marker.as_ref(), &default);
        let exempt = Exemption { users: rule.exempt_users, groups: rule.exempt_groups };
        let actors = rule_actors(rule.actors, &mut error);
        rules.push(ColumnRule { columns, strategy, exempt, actors, location: source.location(start) });
    }

    MaskingPolicy {
        detectors,
        strategy,
        detector_rules,
        rules,
        exempt: Exemption { users: raw.exempt_users, groups: raw.exempt_groups },
        location: source.location(start),
    }
}

fn detector_name(spec: &DetectorSpec) -> &str {
    match spec {
        DetectorSpec::Builtin(builtin) => builtin.name(),
        DetectorSpec::Custom { name, .. } => name,
    }
}

fn unknown_detector(name: &str) -> String {
    let known: Vec<&str> = Builtin::ALL.iter().map(|b| b.name()).collect();
    format!("unknown detector {name:?} (built-in: {})", known.join(", "))
}

fn valid_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn strategy_or(
    error: &mut impl FnMut(usize, String),
    start: usize,
    name: Option<&Spanned<String>>,
    keep: Option<&Spanned<i64>>,
    marker: Option<&Spanned<String>>,
    default: &Strategy,
) -> Strategy {
    if name.is_none() && keep.is_none() && marker.is_none() {
        return default.clone();
    }
    strategy(error, start, name, keep, marker)
}

fn strategy(
    error: &mut impl FnMut(usize, String),
    start: usize,
    name: Option<&Spanned<String>>,
    keep: Option<&Spanned<i64>>,
    marker: Option<&Spanned<String>>,
) -> Strategy {
    let chosen = name.map_or("redact", |n| n.get_ref().as_str());
    let at = name.map_or(start, |n| n.span().start);
    if let Some(keep) = keep.filter(|_| chosen != "partial") {
        error(keep.span().start, "`keep` is for strategy = \"partial\" only".into());
    }
    if let Some(marker) = marker.filter(|_| chosen != "redact") {
        error(marker.span().start, "`marker` is for strategy = \"redact\" only".into());
    }
    match chosen {
        "redact" => {
            let marker = marker.map(|m| m.get_ref().clone());
            if let Some(text) = &marker
                && (text.is_empty() || text.len() > 64 || text.contains('\0'))
            {
                error(at, "marker must be 1-64 bytes without NUL".into());
            }
            Strategy::Redact { marker }
        }
        "partial" => match keep {
            None => {
                error(at, "strategy = \"partial\" needs `keep`: how many trailing characters stay visible".into());
                Strategy::Partial { keep: 0 }
            }
            Some(keep) => match usize::try_from(*keep.get_ref()) {
                Ok(n @ 0..=16) => Strategy::Partial { keep: n },
                _ => {
                    error(keep.span().start, format!("keep = {} must be between 0 and 16", keep.get_ref()));
                    Strategy::Partial { keep: 0 }
                }
            },
        },
        "token" => Strategy::Token,
        "null" => Strategy::Null,
        other => {
            error(at, format!("unknown strategy {other:?}, expected \"redact\", \"partial\", \"token\" or \"null\""));
            Strategy::default()
        }
    }
}
