//! Values that must never reach a log, a record or an error message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A password, token or key: printed as `***` by `Debug`, and without
/// `Display`, so it can only leave through [`Secret::expose`] — or through
/// serde, which exists for the one message that carries it (a CI job's
/// token on the control socket); never put one in an audit record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
