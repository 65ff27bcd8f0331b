//! Agent log setup: human-readable lines on stderr (journald keeps them),
//! coloured only on a terminal: journald would show the escapes as text.

use std::io::IsTerminal as _;

/// Libraries that log what they handle at debug level, secrets included,
/// kept off whatever the filter says: brush's parser (command lines,
/// passwords in them), tokio-postgres (each statement it runs: the
/// just-in-time roles' `CREATE ROLE … PASSWORD 'SCRAM-SHA-256$…'`).
const SILENCED: [&str; 7] = [
    "brush_parser=off",
    "expansion=off",
    "parse=off",
    "tokenize=off",
    "arithmetic=off",
    "tokio_postgres=info",
    "postgres_protocol=info",
];

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter.
pub fn init(default_filter: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    for directive in SILENCED {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
