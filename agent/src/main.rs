//! `airlock`: the agent daemon and its command line, in one binary.

use clap::Parser as _;

/// The proxy, the SQL parser and the record writer allocate many small,
/// short-lived buffers per statement; mimalloc serves them with less work
/// than glibc's allocator and keeps threads off each other's locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages: mimalloc asks for them (MADV_HUGEPAGE) on
    // its arenas, and a 2 MiB page is resident whole however little of it
    // is used. The idle agent held 27 MB of anonymous memory with them,
    // 12 MB without; nothing it does gains from huge pages.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    // Before anything runs: a panic's default report may quote a secret.
    airlock::panics::install();
    match airlock::cli::Cli::parse().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("airlock: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
