//! Which rule names each value of a JSON document as it streams: a JSON
//! path rule matched one level at a time, or a `column_pattern` matching
//! the member name.
//!
//! The place of the value about to be read is worked out as soon as it is
//! known (its member name read, or its array index reached), so no member
//! name is ever kept. A level under which no path can match any more is
//! dead: its member names are not even decoded for the paths, which is
//! most of a large answer when the rules name a few members near the top.

use super::{
    engine::ActiveRule,
    json_path::{AT_ROOT, Progress, Segment},
};

/// The rules' view of where the walk is in a document.
pub(super) struct Places {
    /// Rules with a JSON path, by index into the masker's rules.
    path_rules: Vec<usize>,
    /// Whether any rule matches member names.
    member_rules: bool,
    /// Each path rule's progress at each open level, `path_rules.len()` per level.
    progress: Vec<Progress>,
    /// Each path rule's progress at the value about to be read.
    next: Vec<Progress>,
    /// The rule naming the value about to be read.
    next_rule: Option<usize>,
}

impl Places {
    pub(super) fn new(rules: &[ActiveRule]) -> Self {
        let path_rules: Vec<usize> =
            rules.iter().enumerate().filter(|(_, r)| r.columns.json_path().is_some()).map(|(i, _)| i).collect();
        Self {
            next: vec![AT_ROOT; path_rules.len()],
            path_rules,
            member_rules: rules.iter().any(|r| r.columns.matches_key_possible()),
            progress: Vec::new(),
            next_rule: None,
        }
    }

    /// Whether a member name of a level (`live` or not) is needed.
    pub(super) fn wants_member_name(&self, live: bool) -> bool {
        self.member_rules || live
    }

    /// The value about to be read is the document itself (or the next one
    /// of a sequence).
    pub(super) fn at_root(&mut self) {
        self.next.fill(AT_ROOT);
        self.next_rule = None;
    }

    /// The value about to be read is member `name` of an object, whose
    /// level is `live` or not (then `name` is not needed for the paths).
    pub(super) fn at_member(&mut self, rules: &[ActiveRule], live: bool, name: &[u8]) {
        self.next_rule = if self.member_rules { rules.iter().position(|r| r.columns.matches_key(name)) } else { None };
        self.step(rules, live, Segment::Member(name));
    }

    /// The value about to be read is element `index` of an array whose
    /// level is `live` or not.
    pub(super) fn at_element(&mut self, rules: &[ActiveRule], live: bool, index: usize) {
        self.next_rule = None;
        self.step(rules, live, Segment::Element(index));
    }

    fn step(&mut self, rules: &[ActiveRule], live: bool, segment: Segment<'_>) {
        if self.path_rules.is_empty() {
            return;
        }
        if !live {
            self.next.fill(0);
            return;
        }
        let parent = self.progress.len() - self.path_rules.len();
        for (i, &rule) in self.path_rules.iter().enumerate() {
            let Some(path) = rules[rule].columns.json_path() else { continue };
            self.next[i] = path.step(self.progress[parent + i], segment);
            if self.next_rule.is_none() && path.matched(self.next[i]) {
                self.next_rule = Some(rule);
            }
        }
    }

    /// The rule naming the value about to be read, if one does.
    pub(super) fn rule(&self) -> Option<usize> {
        self.next_rule
    }

    /// The value about to be read opens a level; whether that level is
    /// live (some path may still match under it).
    pub(super) fn open(&mut self) -> bool {
        self.progress.extend_from_slice(&self.next);
        self.next.iter().any(|&progress| progress != 0)
    }

    /// The innermost level closed.
    pub(super) fn close(&mut self) {
        self.progress.truncate(self.progress.len().saturating_sub(self.path_rules.len()));
    }
}
