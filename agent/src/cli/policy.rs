//! `airlock policy check`.

use std::{path::PathBuf, process::ExitCode};

use crate::{config::Config, policy::Policy};

pub fn check(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(dir) => dir,
        None => Config::load(super::DEFAULT_CONFIG.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?.policies_dir,
    };
    match Policy::load_dir(&dir) {
        Ok(policy) => {
            for target in &policy.targets {
                let networks: Vec<String> = target.networks.iter().map(ToString::to_string).collect();
                let mut extras = String::new();
                if target.credentials.is_some() {
                    extras.push_str("; just-in-time logins");
                }
                if let Some(ssh) = &target.ssh {
                    extras.push_str(&format!(
                        "; ssh certificates for {} principals, {} s, {} command rules",
                        ssh.principals.len(),
                        ssh.cert_ttl.as_secs(),
                        ssh.commands.rules.len() + usize::from(ssh.commands.only.is_some())
                    ));
                }
                if let Some(masking) = &target.masking {
                    extras.push_str(&format!(
                        "; masking ({} detectors, {} column rules)",
                        masking.detectors.len(),
                        masking.rules.len()
                    ));
                }
                if let Some(guardrails) = &target.guardrails {
                    extras.push_str(&format!("; {} guardrails", guardrails.rules.len()));
                    if let Some(approvals) = &guardrails.approvals {
                        extras.push_str(&format!(", approved by {}", approvals.describe_approvers()));
                    }
                }
                println!(
                    "ok  {} ({} port {}: {}; {} access rules{extras})",
                    target.name,
                    target.protocol,
                    target.port,
                    networks.join(", "),
                    target.access.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}
