//! `airlock`: the agent daemon and its command line, in one binary.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    match airlock::cli::Cli::parse().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("airlock: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
