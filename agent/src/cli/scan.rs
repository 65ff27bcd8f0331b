//! `airlock scan [PATH…]`: finds secrets left on this host (see
//! `docs/scan.md`). It runs with the caller's privileges, needs no agent,
//! reads and never writes the files it scans, and prints fingerprints,
//! never secrets. Exit status: 0 nothing found, 1 findings, 2 error.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    config::Config,
    scan::{
        ScanContext, Scanner,
        finding::{Finding, FingerprintKey},
        priority::lower_this_thread,
        rules::RuleSet,
        targets::ProtectedTargets,
    },
};

/// What the command line asked for.
#[derive(Debug)]
pub struct ScanRequest {
    /// Roots (empty: the configuration's, or the defaults).
    pub paths: Vec<PathBuf>,
    /// One JSON finding per line.
    pub json: bool,
    /// Agent configuration (`None`: the default one if readable).
    pub config: Option<PathBuf>,
    /// A gitleaks-format rule file.
    pub rules: Option<PathBuf>,
    /// More exclusions.
    pub exclude: Vec<String>,
    /// Size limit per file.
    pub max_file_bytes: Option<u64>,
}

/// Runs a scan; errors are told on stderr and give status 2.
pub fn run(request: ScanRequest) -> ExitCode {
    match scan(request) {
        Ok(found) if found => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("airlock: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn scan(request: ScanRequest) -> anyhow::Result<bool> {
    let config = match &request.config {
        Some(path) => Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        // No configuration installed (or not readable by this user): the defaults.
        None => match Config::load(Path::new(super::DEFAULT_CONFIG)) {
            Ok(config) => config,
            Err(crate::config::ConfigError::Read { .. }) => Config::default(),
            Err(invalid) => anyhow::bail!("{invalid}"),
        },
    };
    let mut settings = config.scan.clone();
    if let Some(rules) = request.rules {
        settings.rules = Some(rules);
    }
    if let Some(bytes) = request.max_file_bytes {
        anyhow::ensure!(
            (1..=crate::scan::settings::MAX_FILE_BYTES_LIMIT).contains(&bytes),
            "--max-file-bytes must be 1 to {}",
            crate::scan::settings::MAX_FILE_BYTES_LIMIT
        );
        settings.max_file_bytes = bytes;
    }
    settings.exclude.extend(request.exclude);
    let rules: RuleSet = settings.rule_set().map_err(|e| anyhow::anyhow!("{e}"))?;
    for skipped in rules.skipped() {
        eprintln!("airlock: rule {} not used: {}", skipped.id, skipped.reason);
    }
    let key = fingerprint_key(&config)?;
    let targets = match crate::policy::Policy::load_dir(&config.policies_dir) {
        Ok(policy) => ProtectedTargets::new(policy),
        Err(_) => ProtectedTargets::none(),
    };
    if let Err(e) = lower_this_thread() {
        eprintln!("airlock: scanning at normal priority: {e}");
    }
    let roots = if request.paths.is_empty() { settings.roots() } else { absolute(request.paths)? };
    let scanner = Scanner::new(rules);
    let limits = settings.limits();
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut nothing = |_: usize| {};
    let context =
        ScanContext { scanner: &scanner, limits: &limits, key: &key, targets: &targets, after_file: &mut nothing };
    let report = crate::scan::scan(&roots, context, &now);
    let mut out = std::io::stdout().lock();
    if request.json {
        for finding in &report.findings {
            serde_json::to_writer(&mut out, finding)?;
            out.write_all(b"\n")?;
        }
    } else {
        out.write_all(table(&report.findings).as_bytes())?;
    }
    out.flush()?;
    let stats = &report.stats;
    eprintln!(
        "{} finding(s) in {} file(s), {} bytes read; not read: {} symlink(s), {} special file(s), {} over {} bytes, {} excluded, {} unreadable{}",
        report.findings.len(),
        stats.files,
        stats.bytes,
        stats.symlinks,
        stats.special,
        stats.too_large,
        settings.max_file_bytes,
        stats.excluded,
        report.unreadable.len(),
        if stats.truncated { " (entry limit reached: walk stopped)" } else { "" },
    );
    Ok(!report.findings.is_empty())
}

/// Root uses the host's key (the sweep's, so fingerprints compare with
/// the audit log's); anyone else cannot read it and gets a key for this
/// run only — their fingerprints compare within one run's output.
fn fingerprint_key(config: &Config) -> anyhow::Result<FingerprintKey> {
    if nix::unistd::geteuid().is_root() {
        return FingerprintKey::load_or_create(&config.state_dir.join("scan")).map_err(|e| anyhow::anyhow!("{e}"));
    }
    eprintln!("airlock: not root: fingerprints are keyed for this run only");
    Ok(FingerprintKey::ephemeral())
}

/// Relative paths against the working directory, so findings name files fully.
fn absolute(paths: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    let here = std::env::current_dir()?;
    Ok(paths.into_iter().map(|p| if p.is_absolute() { p } else { here.join(p) }).collect())
}

/// Aligned columns: where, whose, which rule, fingerprint, and what it means.
fn table(findings: &[Finding]) -> String {
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            let mut note = f.description.clone();
            if let Some(bypass) = f.bypass_note() {
                note = format!("{note}; {bypass}");
            }
            [
                if f.line > 0 { format!("{}:{}", f.path, f.line) } else { f.path.clone() },
                f.owner.clone().unwrap_or_else(|| f.uid.to_string()),
                f.rule.clone(),
                f.fingerprint.clone(),
                note,
            ]
        })
        .collect();
    let header = ["PATH", "OWNER", "RULE", "FINGERPRINT", "WHAT"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    if rows.is_empty() {
        return text;
    }
    for row in std::iter::once(&header).chain(&rows) {
        for (i, cell) in row.iter().enumerate() {
            if i < 4 {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                text.push_str(cell);
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_and_notes_bypass() {
        let finding = Finding {
            fingerprint: "0123456789abcdef0123456789abcdef".into(),
            path: "/home/alice/.pgpass".into(),
            uid: 1000,
            owner: Some("alice".into()),
            rule: "airlock-pgpass".into(),
            description: "PostgreSQL password".into(),
            line: 3,
            encrypted: None,
            protected_targets: vec!["orders-db".into()],
            first_seen: "t".into(),
            last_seen: "t".into(),
        };
        let text = table(&[finding.clone(), Finding { owner: None, line: 0, protected_targets: vec![], ..finding }]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let column = lines[0].find("OWNER").unwrap();
        assert!(lines.iter().all(|l| l.len() > column), "{text}");
        assert_eq!(&lines[1][column..column + 5], "alice");
        assert_eq!(&lines[2][column..column + 4], "1000");
        assert!(lines[1].ends_with("bypasses just-in-time access to orders-db: remove it"), "{text}");
        assert!(table(&[]).is_empty());
    }
}
