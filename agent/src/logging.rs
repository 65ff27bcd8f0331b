//! Agent log setup: human-readable lines on stderr (journald keeps them),
//! coloured only on a terminal: journald would show the escapes as text.

use std::io::IsTerminal as _;

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
