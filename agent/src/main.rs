//! `airlock`: the agent daemon and its command line, in one binary.

use clap::Parser as _;

/// The proxy, the SQL parser and the record writer allocate many small,
/// short-lived buffers per statement; mimalloc serves them with less work
/// than glibc's allocator and keeps threads off each other's locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match airlock::cli::Cli::parse().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("airlock: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
