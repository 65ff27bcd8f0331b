//! What a panic leaves in the log: where it happened, never what it was
//! handling.
//!
//! Rust's default report quotes the panic's message, and a message built
//! at run time may quote the data at hand: slicing a string at a bad index
//! prints the string; `expect` prints the error, which may hold a value.
//! The agent handles command lines, SQL, headers and tokens, and its
//! stderr goes to journald, where anyone in the `adm` or
//! `systemd-journal` group reads it. So only messages written into the
//! code (`panic!("literal")`) are printed; the rest are withheld, and the
//! place (file, line, thread) says what to look at. A panic in a session
//! ends that session only: tokio runs each in a task of its own.

use std::{any::Any, panic::PanicHookInfo};

/// Said in place of a message built at run time.
pub const WITHHELD: &str = "message withheld: it may quote the data being handled";

/// Replaces the default panic report with [`report`] for the whole
/// process (the agent and the CLI alike).
pub fn install() {
    std::panic::set_hook(Box::new(|info| eprintln!("{}", report(info))));
}

/// The report of one panic: thread, place and the message if it is one
/// written into the code, and a backtrace where `RUST_BACKTRACE` asks for
/// one (it names code, not data).
pub fn report(info: &PanicHookInfo<'_>) -> String {
    let thread = std::thread::current();
    let place = info.location().map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
    let mut report = format!(
        "airlock: internal error in thread '{}' at {place}: {}",
        thread.name().unwrap_or("unnamed"),
        shown_message(info.payload())
    );
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        report.push_str(&format!("\n{backtrace}"));
    }
    report
}

/// A panic's message if it was written into the code, else [`WITHHELD`].
/// `panic!("text")` carries a `&'static str`; a message formatted at run
/// time (`panic!("{x}")`, `expect`, a failed slice) carries a `String`.
pub fn shown_message(payload: &(dyn Any + Send)) -> &'static str {
    payload.downcast_ref::<&'static str>().copied().unwrap_or(WITHHELD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_written_into_the_code_are_shown() {
        let literal: Box<dyn Any + Send> = Box::new("queue closed");
        assert_eq!(shown_message(literal.as_ref()), "queue closed");
        let formatted: Box<dyn Any + Send> = Box::new(format!("index 6 inside `{}`", "s3cret"));
        assert_eq!(shown_message(formatted.as_ref()), WITHHELD);
        let other: Box<dyn Any + Send> = Box::new(42_u32);
        assert_eq!(shown_message(other.as_ref()), WITHHELD);
    }
}
