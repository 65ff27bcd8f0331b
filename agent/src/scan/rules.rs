//! Rules in the gitleaks configuration format, and the shipped gitleaks
//! default set (`gitleaks/`, MIT, see its README): `[[rules]]` with `id`,
//! `description`, `regex`, `secretGroup`, `entropy`, `keywords`, `path`,
//! `[[rules.allowlists]]`, and the global `[allowlist]`/`[[allowlists]]`.
//!
//! Go's RE2 syntax is compiled with the `regex` crate in byte mode with
//! Unicode off: RE2's `\w`, `\d`, `\s` and `\b` are ASCII too, and files
//! need not be UTF-8. A rule that does not compile, or that needs what a
//! file scan cannot give (composite `[[rules.required]]` rules), is
//! skipped and listed in [`RuleSet::skipped`], never silently dropped.
//!
//! Matching follows gitleaks: a rule runs on a file only if one of its
//! keywords occurs in it (ASCII case-insensitive; one Aho-Corasick
//! automaton over every rule's keywords), its `path` must match if set, the
//! secret is the `secretGroup` capture (else the first non-empty one), a
//! secret whose entropy is not above the rule's threshold is dropped, then
//! allowlists and stopwords; a `generic…` finding inside a more specific
//! rule's secret on the same line is dropped.

use std::{ops::Range, path::Path};

use aho_corasick::AhoCorasick;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde::Deserialize;

use crate::source::{Diagnostic, SourceFile};

/// The gitleaks default configuration, as shipped.
pub const GITLEAKS_DEFAULT: &str = include_str!("gitleaks/gitleaks.toml");

/// Which gitleaks release the shipped rules come from.
pub const GITLEAKS_VERSION: &str = "v8.30.0-27-gb58d3f10";

/// A line with this in it is never reported by a gitleaks rule (gitleaks' own convention).
const ALLOW_SIGNATURE: &[u8] = b"gitleaks:allow";

/// Compiled-program budget per rule: generous for the shipped set, bounded
/// for a rule file someone else wrote.
const REGEX_SIZE_LIMIT: usize = 32 << 20;

/// Why a rule file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not the gitleaks format, or a value out of range.
    #[error("{0}")]
    Invalid(Diagnostic),
    /// `[extend] path = …`: rule files are not chained.
    #[error("{file}: [extend] path is not supported; use `useDefault = true` or copy the rules")]
    ExtendPath {
        /// The rule file.
        file: String,
    },
    /// The keyword automaton could not be built.
    #[error("keyword prefilter: {0}")]
    Keywords(#[from] aho_corasick::BuildError),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    #[allow(dead_code)]
    title: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    min_version: Option<String>,
    #[serde(default)]
    extend: Option<ExtendEntry>,
    #[serde(default)]
    rules: Vec<RuleEntry>,
    #[serde(default)]
    allowlist: Option<AllowlistEntry>,
    #[serde(default)]
    allowlists: Vec<AllowlistEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExtendEntry {
    #[serde(default)]
    use_default: bool,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleEntry {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    secret_group: usize,
    #[serde(default)]
    entropy: f64,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    tags: Vec<String>,
    #[serde(default)]
    allowlist: Option<AllowlistEntry>,
    #[serde(default)]
    allowlists: Vec<AllowlistEntry>,
    #[serde(default)]
    required: Vec<toml::Value>,
    #[serde(default)]
    skip_report: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AllowlistEntry {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    // Git commits: a file scan has none, so they never allow anything here.
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
}

/// A rule or allowlist left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Rule id (allowlists: the rule they belong to, or `[allowlist]`).
    pub id: String,
    /// What could not be used.
    pub reason: String,
}

/// What an allowlist's regexes are matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegexTarget {
    Secret,
    Match,
    Line,
}

/// One allowlist, compiled.
#[derive(Debug)]
struct Allowlist {
    /// `condition = "AND"`: every check it has must hold.
    all: bool,
    target: RegexTarget,
    regexes: Option<RegexSet>,
    paths: Option<RegexSet>,
    /// Lowercase.
    stopwords: Vec<String>,
    has_commits: bool,
    /// Global allowlists: only these rules (empty: all).
    target_rules: Vec<String>,
}

impl Allowlist {
    fn compile(entry: AllowlistEntry, owner: &str, skipped: &mut Vec<Skipped>) -> Result<Self, String> {
        let all = match entry.condition.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("OR") | Some("") => false,
            Some("AND") => true,
            Some(other) => return Err(format!("condition {other:?} is neither OR nor AND")),
        };
        let target = match entry.regex_target.as_deref() {
            None | Some("") | Some("secret") => RegexTarget::Secret,
            Some("match") => RegexTarget::Match,
            Some("line") => RegexTarget::Line,
            Some(other) => return Err(format!("regexTarget {other:?} is not secret, match or line")),
        };
        let set = |patterns: &[String], what: &str, skipped: &mut Vec<Skipped>| -> Option<RegexSet> {
            if patterns.is_empty() {
                return None;
            }
            let patterns: Vec<String> = patterns.iter().map(|p| from_go(p)).collect();
            match RegexSetBuilder::new(&patterns).unicode(false).size_limit(REGEX_SIZE_LIMIT).build() {
                Ok(set) => Some(set),
                Err(_) => {
                    // One bad pattern must not lose the others: keep those that compile.
                    let good: Vec<&String> = patterns
                        .iter()
                        .filter(|p| match compile(p) {
                            Ok(_) => true,
                            Err(reason) => {
                                skipped.push(Skipped {
                                    id: owner.to_owned(),
                                    reason: format!("allowlist {what} {p:?}: {reason}"),
                                });
                                false
                            }
                        })
                        .collect();
                    let good: Vec<String> = good.iter().map(|p| from_go(p)).collect();
                    RegexSetBuilder::new(good).unicode(false).size_limit(REGEX_SIZE_LIMIT).build().ok()
                }
            }
        };
        let allowlist = Self {
            all,
            target,
            regexes: set(&entry.regexes, "regex", skipped),
            paths: set(&entry.paths, "path", skipped),
            stopwords: entry.stopwords.iter().map(|w| w.to_lowercase()).collect(),
            has_commits: !entry.commits.is_empty(),
            target_rules: entry.target_rules,
        };
        Ok(allowlist)
    }

    fn applies_to(&self, rule: &str) -> bool {
        self.target_rules.is_empty() || self.target_rules.iter().any(|r| r == rule)
    }

    /// Whether this allowlist exempts the whole file (gitleaks' commit-or-path check).
    fn allows_path(&self, path: &[u8]) -> bool {
        let Some(paths) = &self.paths else { return false };
        if self.all {
            // AND: only an allowlist of paths alone (no commits here) decides by path.
            self.regexes.is_none() && self.stopwords.is_empty() && !self.has_commits && paths.is_match(path)
        } else {
            paths.is_match(path)
        }
    }

    /// Whether this allowlist exempts one finding.
    fn allows_finding(&self, path: &[u8], secret: &[u8], matched: &[u8], line: &[u8]) -> bool {
        let target = match self.target {
            RegexTarget::Secret => secret,
            RegexTarget::Match => matched,
            RegexTarget::Line => line,
        };
        let regex_allowed = !target.is_empty() && self.regexes.as_ref().is_some_and(|set| set.is_match(target));
        let stopword = !secret.is_empty() && !self.stopwords.is_empty() && {
            let lower = String::from_utf8_lossy(secret).to_lowercase();
            self.stopwords.iter().any(|w| lower.contains(w.as_str()))
        };
        if !self.all {
            return regex_allowed || stopword;
        }
        let mut checks = Vec::with_capacity(4);
        if self.has_commits {
            checks.push(false);
        }
        if let Some(paths) = &self.paths {
            checks.push(paths.is_match(path));
        }
        if self.regexes.is_some() {
            checks.push(regex_allowed);
        }
        if !self.stopwords.is_empty() {
            checks.push(stopword);
        }
        checks.iter().all(|&c| c)
    }
}

fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&from_go(pattern)).unicode(false).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| match e {
        regex::Error::Syntax(text) => text.lines().last().unwrap_or("syntax error").trim().to_owned(),
        other => other.to_string(),
    })
}

/// Go's RE2 reads a `{` that does not start a repetition (`{2}`, `{2,}`,
/// `{2,5}`) as a literal brace; Rust's `regex` rejects it. Such braces
/// are escaped, outside character classes; everything else is kept.
fn from_go(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' => {
                let next = pattern[i + 1..].chars().next().map_or(0, char::len_utf8);
                let end = i + 1 + next;
                out.push_str(&pattern[i..end]);
                i = end;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` right after `[` or `[^` is a member, not the end.
                let mut j = i + 1;
                if bytes.get(j) == Some(&b'^') {
                    out.push('^');
                    j += 1;
                }
                if bytes.get(j) == Some(&b']') {
                    out.push(']');
                    j += 1;
                }
                i = j;
                continue;
            }
            b']' if in_class => in_class = false,
            b'{' if !in_class && !is_repetition(&bytes[i..]) => {
                out.push_str("\\{");
                i += 1;
                continue;
            }
            _ => {}
        }
        let width = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + width]);
        i += width;
    }
    out
}

/// Whether `text` (starting at `{`) is `{n}`, `{n,}` or `{n,m}`.
fn is_repetition(text: &[u8]) -> bool {
    let Some(close) = text.iter().position(|&b| b == b'}') else { return false };
    let inside = &text[1..close];
    let (low, high) = match inside.iter().position(|&b| b == b',') {
        Some(comma) => (&inside[..comma], Some(&inside[comma + 1..])),
        None => (inside, None),
    };
    !low.is_empty() && low.iter().all(u8::is_ascii_digit) && high.is_none_or(|h| h.iter().all(u8::is_ascii_digit))
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// gitleaks' rule id (`aws-access-token`).
    pub id: String,
    /// What a match means.
    pub description: String,
    regex: Option<Regex>,
    path: Option<Regex>,
    secret_group: usize,
    entropy: f64,
    has_keywords: bool,
    allowlists: Vec<Allowlist>,
    generic: bool,
}

/// A rule's match in a file: where the secret is, and the whole match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHit {
    /// Index of the rule in the set ([`RuleSet::rule`]).
    pub rule: usize,
    /// The secret's bytes in the file; empty for a rule that matches a file by path alone.
    pub secret: Range<usize>,
    /// The whole match.
    pub matched: Range<usize>,
}

/// A set of compiled rules with their keyword prefilter.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    global: Vec<Allowlist>,
    keywords: Option<AhoCorasick>,
    /// Keyword pattern index → rules that have it.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules with no keywords: they run on every file.
    unfiltered: Vec<usize>,
    skipped: Vec<Skipped>,
}

impl RuleSet {
    /// The shipped gitleaks default rules.
    pub fn gitleaks_default() -> Result<Self, RulesError> {
        Self::parse(GITLEAKS_DEFAULT, Path::new("gitleaks.toml (shipped)"))
    }

    /// Reads a gitleaks-format rule file. `[extend] useDefault = true`
    /// adds the shipped defaults (less `disabledRules`) to its rules.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RulesError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses rule file `text`, as if read from `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, RulesError> {
        let source = SourceFile::new(path, text);
        let file: RuleFile = toml::from_str(text).map_err(|e| RulesError::Invalid(source.toml_error(&e)))?;
        let mut entries = Vec::new();
        let mut allowlists: Vec<AllowlistEntry> = Vec::new();
        if let Some(extend) = &file.extend {
            if extend.path.is_some() {
                return Err(RulesError::ExtendPath { file: path.display().to_string() });
            }
            if extend.use_default {
                let default: RuleFile = toml::from_str(GITLEAKS_DEFAULT).map_err(|e| {
                    RulesError::Invalid(SourceFile::new(Path::new("gitleaks.toml"), GITLEAKS_DEFAULT).toml_error(&e))
                })?;
                entries.extend(default.rules.into_iter().filter(|r| !extend.disabled_rules.contains(&r.id)));
                allowlists.extend(default.allowlist);
                allowlists.extend(default.allowlists);
            }
        }
        // A rule of the file replaces a default rule of the same id.
        for rule in file.rules {
            entries.retain(|existing: &RuleEntry| existing.id != rule.id);
            entries.push(rule);
        }
        allowlists.extend(file.allowlist);
        allowlists.extend(file.allowlists);
        Self::compile(entries, allowlists, &source)
    }

    fn compile(
        entries: Vec<RuleEntry>,
        allowlists: Vec<AllowlistEntry>,
        source: &SourceFile<'_>,
    ) -> Result<Self, RulesError> {
        let invalid = |message: String| RulesError::Invalid(source.diagnostic(0, message));
        let mut skipped = Vec::new();
        let mut global = Vec::new();
        for entry in allowlists {
            global.push(
                Allowlist::compile(entry, "[allowlist]", &mut skipped)
                    .map_err(|e| invalid(format!("[allowlist]: {e}")))?,
            );
        }
        let mut rules = Vec::with_capacity(entries.len());
        let mut keyword_list: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut unfiltered = Vec::new();
        for entry in entries {
            if entry.regex.is_none() && entry.path.is_none() {
                return Err(invalid(format!("rule {:?}: needs regex or path", entry.id)));
            }
            if !entry.required.is_empty() {
                skipped.push(Skipped {
                    id: entry.id,
                    reason: "composite rule ([[rules.required]]) needs other rules' findings nearby".into(),
                });
                continue;
            }
            if entry.skip_report {
                skipped.push(Skipped { id: entry.id, reason: "skipReport: only a part of composite rules".into() });
                continue;
            }
            if !entry.entropy.is_finite() || entry.entropy < 0.0 {
                return Err(invalid(format!("rule {:?}: entropy must be a number ≥ 0", entry.id)));
            }
            let regex = match entry.regex.as_deref().map(compile).transpose() {
                Ok(regex) => regex,
                Err(reason) => {
                    skipped.push(Skipped { id: entry.id, reason: format!("regex does not compile: {reason}") });
                    continue;
                }
            };
            if let Some(regex) = &regex
                && entry.secret_group >= regex.captures_len()
                && entry.secret_group > 0
            {
                skipped.push(Skipped {
                    id: entry.id,
                    reason: format!("secretGroup {} but the regex has fewer groups", entry.secret_group),
                });
                continue;
            }
            let path = match entry.path.as_deref().map(compile).transpose() {
                Ok(path) => path,
                Err(reason) => {
                    skipped.push(Skipped { id: entry.id, reason: format!("path does not compile: {reason}") });
                    continue;
                }
            };
            let mut rule_allowlists = Vec::new();
            for allowlist in entry.allowlist.into_iter().chain(entry.allowlists) {
                rule_allowlists.push(
                    Allowlist::compile(allowlist, &entry.id, &mut skipped)
                        .map_err(|e| invalid(format!("rule {:?}: allowlist: {e}", entry.id)))?,
                );
            }
            let index = rules.len();
            let keywords: Vec<String> =
                entry.keywords.iter().map(|k| k.to_ascii_lowercase()).filter(|k| !k.is_empty()).collect();
            if keywords.is_empty() {
                unfiltered.push(index);
            }
            for keyword in &keywords {
                match keyword_list.iter().position(|k| k == keyword) {
                    Some(at) => keyword_rules[at].push(index),
                    None => {
                        keyword_list.push(keyword.clone());
                        keyword_rules.push(vec![index]);
                    }
                }
            }
            rules.push(Rule {
                generic: entry.id.to_ascii_lowercase().contains("generic"),
                id: entry.id,
                description: entry.description,
                regex,
                path,
                secret_group: entry.secret_group,
                entropy: entry.entropy,
                has_keywords: !keywords.is_empty(),
                allowlists: rule_allowlists,
            });
        }
        let keywords = if keyword_list.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                    .build(&keyword_list)?,
            )
        };
        Ok(Self { rules, global, keywords, keyword_rules, unfiltered, skipped })
    }

    /// Rules left out, and why.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// How many rules are in force.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule is in force.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Rule number `index` (from a [`RuleHit`]).
    pub fn rule(&self, index: usize) -> &Rule {
        &self.rules[index]
    }

    /// Rules with no keywords, which run on every file (keep them few and cheap).
    pub fn unfiltered(&self) -> impl Iterator<Item = &Rule> {
        self.unfiltered.iter().map(|&i| &self.rules[i])
    }

    /// Every rule's findings in `content`, the file at `path`, appended to `hits`.
    pub fn scan(&self, path: &str, content: &[u8], hits: &mut Vec<RuleHit>) {
        let path_bytes = path.as_bytes();
        let mut selected = vec![false; self.rules.len()];
        for &index in &self.unfiltered {
            selected[index] = true;
        }
        if let Some(keywords) = &self.keywords {
            let mut wanted = self.keyword_rules.len();
            let mut seen = vec![false; self.keyword_rules.len()];
            for found in keywords.find_overlapping_iter(content) {
                let pattern = found.pattern().as_usize();
                if !std::mem::replace(&mut seen[pattern], true) {
                    for &rule in &self.keyword_rules[pattern] {
                        selected[rule] = true;
                    }
                    wanted -= 1;
                    if wanted == 0 {
                        break;
                    }
                }
            }
        }
        let first = hits.len();
        for (index, rule) in self.rules.iter().enumerate() {
            if selected[index] || (rule.regex.is_none() && !rule.has_keywords) {
                self.run_rule(index, rule, path_bytes, content, hits);
            }
        }
        drop_generic_duplicates(&self.rules, content, hits, first);
    }

    fn run_rule(&self, index: usize, rule: &Rule, path: &[u8], content: &[u8], hits: &mut Vec<RuleHit>) {
        let global = || self.global.iter().filter(|a| a.applies_to(&rule.id));
        if rule.allowlists.iter().chain(global()).any(|a| a.allows_path(path)) {
            return;
        }
        if let Some(wanted) = &rule.path
            && !wanted.is_match(path)
        {
            return;
        }
        let Some(regex) = &rule.regex else {
            hits.push(RuleHit { rule: index, secret: 0..0, matched: 0..0 });
            return;
        };
        for found in regex.find_iter(content) {
            let mut matched = found.range();
            while matched.start < matched.end && content[matched.start] == b'\n' {
                matched.start += 1;
            }
            while matched.end > matched.start && content[matched.end - 1] == b'\n' {
                matched.end -= 1;
            }
            let line = line_around(content, matched.clone());
            if memchr::memmem::find(&content[line.clone()], ALLOW_SIGNATURE).is_some() {
                continue;
            }
            let mut secret = matched.clone();
            if let Some(groups) = regex.captures(&content[matched.clone()])
                && groups.len() >= 2
            {
                let group = if rule.secret_group > 0 {
                    groups.get(rule.secret_group)
                } else {
                    groups.iter().skip(1).flatten().find(|g| !g.is_empty())
                };
                if let Some(group) = group {
                    secret = matched.start + group.start()..matched.start + group.end();
                }
            }
            let secret_bytes = &content[secret.clone()];
            if rule.entropy > 0.0 && super::entropy::shannon(secret_bytes) <= rule.entropy {
                continue;
            }
            let allowed = global()
                .chain(&rule.allowlists)
                .any(|a| a.allows_finding(path, secret_bytes, &content[matched.clone()], &content[line.clone()]));
            if !allowed {
                hits.push(RuleHit { rule: index, secret, matched });
            }
        }
    }
}

/// gitleaks' dedup: a `generic…` rule's secret found inside another rule's
/// secret on the same line is the same secret, reported by the better rule.
fn drop_generic_duplicates(rules: &[Rule], content: &[u8], hits: &mut Vec<RuleHit>, first: usize) {
    let line_of = |at: usize| memchr::memchr_iter(b'\n', &content[..at]).count();
    let found = hits[first..].to_vec();
    let mut kept = Vec::with_capacity(found.len());
    for hit in &found {
        let duplicate = rules[hit.rule].generic
            && found.iter().any(|other| {
                !rules[other.rule].generic
                    && line_of(other.matched.start) == line_of(hit.matched.start)
                    && memchr::memmem::find(&content[other.secret.clone()], &content[hit.secret.clone()]).is_some()
            });
        if !duplicate {
            kept.push(hit.clone());
        }
    }
    hits.truncate(first);
    hits.extend(kept);
}

/// The lines `range` spans, without their newlines.
pub fn line_around(content: &[u8], range: Range<usize>) -> Range<usize> {
    let start = memchr::memrchr(b'\n', &content[..range.start]).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', &content[range.end..]).map_or(content.len(), |i| range.end + i);
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> RuleSet {
        RuleSet::parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn found(set: &RuleSet, path: &str, content: &str) -> Vec<(String, String)> {
        let mut hits = Vec::new();
        set.scan(path, content.as_bytes(), &mut hits);
        hits.iter().map(|h| (set.rule(h.rule).id.clone(), content[h.secret.clone()].to_owned())).collect()
    }

    /// Every rule of the shipped set that Rust's `regex` cannot take, with
    /// the reason: a change to this list is a change in coverage.
    #[test]
    fn shipped_gitleaks_rules_compile_or_their_skip_is_documented() {
        let set = RuleSet::gitleaks_default().unwrap();
        let skipped: Vec<(&str, &str)> = set.skipped().iter().map(|s| (s.id.as_str(), s.reason.as_str())).collect();
        let documented: &[&str] = &[];
        let ids: Vec<&str> = skipped.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, documented, "skipped: {skipped:#?}");
        assert!(set.len() >= 200, "{} rules", set.len());
        assert!(set.unfiltered().count() <= 3, "rules without keywords run on every file");
    }

    #[test]
    fn shipped_rules_find_well_known_token_shapes() {
        let set = RuleSet::gitleaks_default().unwrap();
        let aws = found(&set, "/home/a/notes.txt", "aws_access_key_id = AKIAZ7QRSTUVWXYZ2345\n");
        assert!(aws.iter().any(|(id, s)| id == "aws-access-token" && s == "AKIAZ7QRSTUVWXYZ2345"), "{aws:?}");
        let github = found(&set, "/x", "token: ghp_R8d2mN5qT1vX7zK3pL9wY4bC6fH0jA2sE8uI\n");
        assert!(github.iter().any(|(id, _)| id == "github-pat"), "{github:?}");
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let hits = found(&set, "/x", &format!("Authorization: Bearer {jwt}\n"));
        assert!(hits.iter().any(|(id, _)| id == "jwt"), "{hits:?}");
    }

    #[test]
    fn entropy_keywords_allowlists_and_signature_as_gitleaks() {
        let set = rules(
            r#"
[allowlist]
regexes = ['''^EXAMPLE''']
stopwords = ["notreal"]
paths = ['''(?:^|/)fixtures/''']

[[rules]]
id = "demo-token"
description = "demo"
regex = '''demo_([a-z0-9]{12})'''
entropy = 3.0
keywords = ["demo_"]

[[rules]]
id = "pem-file"
path = '''\.pem$'''
"#,
        );
        assert_eq!(found(&set, "/a", "x DEMO_ab12cd34ef56"), vec![], "regexes are case-sensitive unless (?i)");
        assert_eq!(found(&set, "/a", "x demo_ab12cd34ef56 y"), vec![("demo-token".into(), "ab12cd34ef56".into())]);
        assert_eq!(found(&set, "/a", "demo_aaaaaaaaaaaa"), vec![], "entropy too low");
        assert_eq!(found(&set, "/a", "demo_notreal12345"), vec![], "stopword");
        assert_eq!(found(&set, "/a", "demo_ab12cd34ef56 # gitleaks:allow"), vec![]);
        assert_eq!(found(&set, "/r/fixtures/t", "demo_ab12cd34ef56"), vec![], "global path allowlist");
        assert_eq!(found(&set, "/k/server.pem", "anything"), vec![("pem-file".into(), String::new())]);
    }

    #[test]
    fn go_literal_braces_are_escaped() {
        assert_eq!(from_go(r"^\$(?:\d+|{\d+})$"), r"^\$(?:\d+|\{\d+})$");
        assert_eq!(from_go(r"a{2,3}b{4}c{5,}"), r"a{2,3}b{4}c{5,}");
        assert_eq!(from_go(r"[{}]\{x{"), r"[{}]\{x\{");
        assert_eq!(from_go(r"[]{]é{"), r"[]{]é\{");
        assert!(compile(r"import[ \t]+{[ \t\w,]+}[ \t]+from").is_ok());
    }

    #[test]
    fn extend_default_and_bad_files() {
        let set = rules("[extend]\nuseDefault = true\ndisabledRules = [\"jwt\"]\n");
        assert!(set.len() >= 200 && !(0..set.len()).any(|i| set.rule(i).id == "jwt"));
        let err = RuleSet::parse("[[rules]]\nid = \"x\"\nregex = 1\n", Path::new("r.toml")).unwrap_err();
        assert!(err.to_string().starts_with("r.toml:3:9: "), "{err}");
        let err = RuleSet::parse("[[rules]]\nid = \"x\"\n", Path::new("r.toml")).unwrap_err();
        assert!(err.to_string().contains("needs regex or path"), "{err}");
        let set = rules("[[rules]]\nid = \"bad\"\nregex = '''(?<=x)y'''\n");
        assert_eq!(set.skipped().len(), 1);
        assert!(set.skipped()[0].reason.contains("does not compile"), "{:?}", set.skipped());
    }

    #[test]
    fn generic_findings_inside_specific_ones_are_dropped() {
        let set = rules(
            r#"
[[rules]]
id = "generic-api-key"
regex = '''key=([a-z0-9]+)'''
keywords = ["key="]
[[rules]]
id = "specific"
regex = '''key=(sk[a-z0-9]+)'''
keywords = ["key="]
"#,
        );
        assert_eq!(found(&set, "/a", "key=sk12345"), vec![("specific".into(), "sk12345".into())]);
        assert_eq!(found(&set, "/a", "key=ab12345"), vec![("generic-api-key".into(), "ab12345".into())]);
    }
}
