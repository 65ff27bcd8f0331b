//! `airlock`: the agent daemon and its command line, in one binary.

mod audit;
mod cli;
mod config;
mod control;
mod daemon;
mod identity;
mod intercept;
mod logging;
mod policy;
mod process;
mod proxy;
mod redact;
mod source;

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    match cli::Cli::parse().run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("airlock: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
