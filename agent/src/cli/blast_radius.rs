//! `airlock blast-radius`: what each secret Airlock holds or issues opens.
//!
//! Exit status: 0 when every row's scope was read; 3 when the report is
//! printed but some scope could not be read (those rows say why and count
//! as high); 1 when no report could be made (not root, configuration or
//! policy unreadable, unknown `--target`).

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;

use crate::{config::Config, policy::Policy};

/// Exit status of a report with rows whose scope could not be read.
pub const INCOMPLETE: u8 = 3;

pub fn run(config: &Path, target: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        return super::failed(
            "blast-radius reads root-only credential files (admin logins, tokens, CA keys): run it as root",
        );
    }
    let config = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = Policy::load_dir(&config.policies_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let report = match runtime.block_on(crate::blast_radius::report(&config, &policy, target)) {
        Ok(report) => report,
        Err(error) => return super::failed(&error.to_string()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if report.rows.is_empty() {
        println!("no secrets: no target has just-in-time credentials, an injected credential or SSH certificates");
    } else {
        print!("{}", report.table());
    }
    if report.incomplete() {
        eprintln!("airlock: some scopes could not be read (rows marked UNKNOWN, counted as high)");
        return Ok(ExitCode::from(INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}
