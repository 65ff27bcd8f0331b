//! Data masking: sensitive values in results are rewritten before they
//! leave the proxy.
//!
//! Two kinds of rules, from a target's `[target.masking]` policy section
//! ([`policy`]): column rules mask whole columns named in the policy
//! (`public.customers.email`, or a glob such as `*ssn*`), and content
//! [`detect`]ors find card numbers, e-mail addresses, keys… in any text
//! value. A hit is rewritten by a [`Strategy`]: a marker, the last few
//! characters, a keyed deterministic token, or NULL.
//!
//! The proxy builds one [`Masker`] per session (the policy with the
//! person's exemptions applied), one [`ColumnPlan`] per result from its
//! RowDescription, and passes each backend message body through the
//! matching rewriter ([`Masker::mask_data_row`], [`Masker::mask_copy_data`],
//! [`Masker::mask_error_fields`], [`Masker::mask_notification`]). Rewriters
//! work one message at a time, never a whole result; they append a new body
//! only when something was masked, and report what was masked (column,
//! detector or rule, count: never the value) for the audit log.

mod array;
mod bitscan;
mod body;
mod classes;
pub mod detect;
mod engine;
mod json;
pub mod json_path;
mod json_places;
mod json_stream;
pub mod policy;
pub mod strategy;
mod swar;
mod wire;

use std::sync::Arc;

pub use body::{BodyKind, BodyMasker};
pub use detect::Builtin;
pub use engine::{ColumnDesc, ColumnPlan, ElementKind, Masker, ValueKind};
pub use policy::MaskingPolicy;
pub use strategy::{Strategy, TokenKey, TokenKeyError};
pub use wire::CopyFormat;

/// Why a message body could not be masked. The proxy must not forward
/// such a message: it ends the session (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The body does not follow the protocol (or the value its type).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A row has a different number of columns than its description.
    #[error("row has {found} columns, its description {expected}")]
    ColumnCount {
        /// Columns in the plan.
        expected: usize,
        /// Columns in the row (so far).
        found: i64,
    },
    /// A masked value does not fit a length field.
    #[error("masked value is too long for the protocol")]
    TooLong,
    /// COPY data does not end at a row boundary.
    #[error("COPY data does not end with a complete row")]
    PartialCopyRow,
    /// Binary COPY output cannot be inspected.
    #[error("binary COPY output cannot be masked")]
    CopyBinary,
}

/// What one rewrite masked: counts per column and detector or rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskOutcome {
    /// One entry per (column, reason).
    pub hits: Vec<MaskHit>,
}

/// Values masked in one column for one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskHit {
    /// `schema.table.column` or the result's field name; `None` for
    /// messages (errors, notifications) and unresolved COPY fields.
    pub column: Option<Arc<str>>,
    /// The detector (`card`, a custom name) or rule (`column_pattern *ssn*`).
    pub reason: Arc<str>,
    /// How many values or spans.
    pub count: u64,
}

impl MaskOutcome {
    /// Whether anything was masked (and so a new body written).
    pub fn changed(&self) -> bool {
        !self.hits.is_empty()
    }

    /// Adds `other`'s counts to these (e.g. per statement for the audit log).
    pub fn merge(&mut self, other: &MaskOutcome) {
        for hit in &other.hits {
            self.add(hit.column.as_ref(), &hit.reason, hit.count);
        }
    }

    pub(crate) fn record(&mut self, column: Option<&Arc<str>>, reason: &Arc<str>) {
        self.add(column, reason, 1);
    }

    fn add(&mut self, column: Option<&Arc<str>>, reason: &Arc<str>, count: u64) {
        // Labels are shared Arcs: pointer equality settles almost every comparison.
        let same_text = |a: &Arc<str>, b: &Arc<str>| Arc::ptr_eq(a, b) || a == b;
        let same = |hit: &&mut MaskHit| {
            same_text(&hit.reason, reason)
                && match (hit.column.as_ref(), column) {
                    (Some(a), Some(b)) => same_text(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                }
        };
        match self.hits.iter_mut().find(same) {
            Some(hit) => hit.count += count,
            None => self.hits.push(MaskHit { column: column.cloned(), reason: reason.clone(), count }),
        }
    }
}

#[cfg(test)]
mod tests;

/// For tests: the masker of an HTTPS target whose `[target.masking]`
/// section is `masking`, for `alice`.
#[cfg(test)]
pub(crate) fn https_masker(masking: &str) -> Arc<Masker> {
    let text = format!(
        "[[target]]\nname = \"api\"\nprotocol = \"https\"\nport = 443\naddresses = [\"10.0.0.1\"]\n\n\
         [[target.access]]\naction = \"allow\"\nusers = [\"*\"]\n\n[target.masking]\n{masking}"
    );
    let sources = [(std::path::Path::new("api.toml"), text.as_str())];
    let policy = crate::policy::Policy::from_sources(sources).unwrap_or_else(|e| panic!("{e}"));
    let masking = policy.targets[0].masking.clone().expect("a masking section");
    Arc::new(Masker::new(&masking, "alice", &[], Arc::new(TokenKey::from_bytes(&[7; 32]))))
}
