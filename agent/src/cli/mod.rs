//! The `airlock` command line.

mod approvals;
pub mod assets;
mod audit;
mod blast_radius;
mod confine;
mod kubeconfig;
mod login;
mod policy;
mod rotate;
mod run;
mod scan;
mod status;
mod trust;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// Default agent configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/airlock/airlock.toml";

/// Airlock: just-in-time access, masking, approvals and audit for database and
/// server connections, enforced on this host.
#[derive(Debug, Parser)]
#[command(name = "airlock", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground (systemd's ExecStart).
    Agent {
        /// Agent configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show attached programs, protected targets, live sessions and counters.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The agent's metrics in OpenMetrics text (what Prometheus scrapes);
        /// exits 1 when the agent is unhealthy.
        #[arg(long, conflicts_with = "json")]
        metrics: bool,
        /// Control socket (default: the one named in --config, or /run/airlock/airlock.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Agent configuration file to take the control socket path from.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List statements waiting for approval that you may decide (and your own).
    Approvals {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Let a held statement run.
    Approve {
        /// Request id, as `airlock approvals` lists it.
        id: String,
        /// Why: recorded, and shown to the requester.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Refuse a held statement.
    Deny {
        /// Request id, as `airlock approvals` lists it.
        id: String,
        /// Why: recorded, and shown to the requester.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Log in to Airlock: with the OIDC issuer's device flow (open the URL it
    /// prints), or, on a CI runner, with the job's OIDC token. Connections
    /// from this login session (or this job's cgroup) are then yours.
    Login {
        /// A CI job's OIDC token, from this file (`-`: standard input); it is
        /// bound to this job's cgroup.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Who your connections are attributed to.
    Whoami {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// End your login in this session (or this job).
    Logout {
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Run a command as an actor (an AI agent, a bot): it and everything it
    /// starts are held to the rules policy gives that actor, whatever they
    /// are called.
    Run {
        /// The `[[actor]]` name from policy.
        #[arg(long)]
        actor: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Verify, search and export the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        /// Audit directory (default: the one named in --config).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        /// Agent configuration file (for the audit directory).
        #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Play a recorded session back: PostgreSQL statements with their
    /// results, an SSH terminal, or a Kubernetes exec session.
    Replay {
        /// Session id (as `airlock audit query` shows it).
        session: String,
        /// Faster (2) or slower (0.5) than it happened.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Print everything at once.
        #[arg(long)]
        no_wait: bool,
        /// Audit directory (default: the one named in --config).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Agent configuration file (for the audit directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// What an attacker would gain with each secret Airlock holds or issues:
    /// admin logins, just-in-time role templates, OpenBao tokens, injected
    /// credentials and CA keys, with scope read from the live targets and a
    /// leak impact (high, medium, low) by documented rules. Needs root.
    /// Exit status 3: some scope could not be read (those rows say why).
    BlastRadius {
        /// Only this target's secrets.
        #[arg(long)]
        target: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Agent configuration file (for the policy and state directories).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the host CA certificate (PEM) that signs what Airlock shows
    /// TLS clients; install it where clients look for trusted roots.
    Ca {
        /// Agent configuration file (for the state directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Put it in the system trust store (Debian/Ubuntu, Fedora/RHEL conventions) instead of printing it.
        #[arg(long, conflicts_with = "uninstall")]
        install: bool,
        /// Take it out of the system trust store.
        #[arg(long)]
        uninstall: bool,
    },
    /// Print a kubeconfig for this host's Kubernetes targets: the real server
    /// URLs, trusting the host CA, with no credential (Airlock adds it).
    Kubeconfig {
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Write it to this file (mode 0600) instead of printing it.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Agent configuration file (for the policy and the state directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the `@cert-authority` line for /etc/ssh/ssh_known_hosts that makes
    /// SSH clients trust the host certificates Airlock shows; with --user, the
    /// user CA public keys for targets' TrustedUserCAKeys (two while a
    /// rotation publishes the next key: install both).
    SshCa {
        /// Print the user CA (for targets) instead of the known_hosts line (for clients).
        #[arg(long)]
        user: bool,
        /// Agent configuration file (for the state directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Rotate a target's long-lived secret now (the embedded engine's admin
    /// login, or OpenBao's root credential for the database): after a leak,
    /// or when someone who knew it leaves. Root or the admin group only.
    Rotate {
        /// Target name from policy.
        target: String,
        /// No grace period: the old login stops working at once and its
        /// sessions end.
        #[arg(long)]
        now: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        agent: AgentSocket,
    },
    /// Find secrets left on this host: private keys, cloud keys, API tokens,
    /// JWTs, .pgpass, PGPASSWORD in shell rc files, kubeconfig credentials,
    /// .env secrets, passwords in shell histories. Prints fingerprints, never
    /// secrets. Exit status: 0 nothing found, 1 findings, 2 error.
    Scan {
        /// Files or directories (default: [scan] paths of the configuration, or
        /// home directories, /tmp, /var/tmp and CI workspaces).
        paths: Vec<PathBuf>,
        /// One JSON finding per line.
        #[arg(long)]
        json: bool,
        /// Agent configuration ([scan] settings, policy, state directory;
        /// default: /etc/airlock/airlock.toml if readable).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A gitleaks-format rule file instead of the shipped gitleaks rules.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Leave out paths matching this glob (`*` matches any run, `/` too); repeatable.
        #[arg(long)]
        exclude: Vec<String>,
        /// Do not read files larger than this.
        #[arg(long)]
        max_file_bytes: Option<u64>,
    },
    /// Detach the programs and remove every pinned object. Interception stops
    /// until the agent starts again.
    Uninstall {
        /// Agent configuration file (for the bpffs directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write man pages and shell completions for this command line into a
    /// directory (for packagers: `cargo xtask package` runs it).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory: man pages go to DIR/man, completions to DIR/completions.
        dir: PathBuf,
    },
}

/// Where the agent's control socket is.
#[derive(Debug, clap::Args)]
struct AgentSocket {
    /// Control socket (default: the one named in --config, or /run/airlock/airlock.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Agent configuration file to take the control socket path from.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check that no record or segment was edited, removed, inserted,
    /// reordered or truncated; name what was, where.
    Verify {
        /// Public key (hex) to check checkpoints against; keep a copy away
        /// from the host (default: the one beside the log).
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
    },
    /// Find records.
    Query {
        /// Person (identity user name).
        #[arg(long)]
        user: Option<String>,
        /// Actor (an AI agent, a bot) that ran on a person's behalf.
        #[arg(long)]
        actor: Option<String>,
        /// Target name.
        #[arg(long)]
        target: Option<String>,
        /// Record kind, or a prefix ending in `.` (`approval.`).
        #[arg(long)]
        kind: Option<String>,
        /// Session id.
        #[arg(long)]
        session: Option<String>,
        /// From this time (RFC 3339) or this long ago (`2h`).
        #[arg(long)]
        since: Option<String>,
        /// Until this time or this long ago.
        #[arg(long)]
        until: Option<String>,
        /// Text anywhere in the record.
        #[arg(long)]
        text: Option<String>,
        /// At most this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON record per line.
        #[arg(long)]
        json: bool,
    },
    /// Print the public key that checkpoints are signed with (hex).
    Pubkey,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate policy files; errors are reported as file:line:column.
    Check {
        /// Policy directory (default: the one named in the default config).
        dir: Option<PathBuf>,
    },
}

/// Tells the person what went wrong (the agent's words) and fails.
fn failed(message: &str) -> anyhow::Result<std::process::ExitCode> {
    eprintln!("airlock: {message}");
    Ok(std::process::ExitCode::FAILURE)
}

impl Cli {
    /// Runs the command; the returned code is the process exit status.
    pub fn run(self) -> anyhow::Result<std::process::ExitCode> {
        match self.command {
            Command::Agent { config } => {
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                crate::logging::init(&config.log);
                crate::daemon::run(config)?;
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Status { json, metrics, socket, config } => status::run(json, metrics, socket, config),
            Command::Approvals { json, agent } => approvals::list(json, agent.socket, agent.config),
            Command::Approve { id, reason, agent } => approvals::decide(id, true, reason, agent.socket, agent.config),
            Command::Deny { id, reason, agent } => approvals::decide(id, false, reason, agent.socket, agent.config),
            Command::Rotate { target, now, json, agent } => {
                rotate::rotate(target, now, json, agent.socket, agent.config)
            }
            Command::Login { token_file, json, agent } => {
                login::login(token_file, json, &status::socket_path(agent.socket, agent.config)?)
            }
            Command::Whoami { json, agent } => login::whoami(json, &status::socket_path(agent.socket, agent.config)?),
            Command::Logout { agent } => login::logout(&status::socket_path(agent.socket, agent.config)?),
            Command::Run { actor, command, agent } => {
                run::run_as_actor(&actor, &command, &status::socket_path(agent.socket, agent.config)?)
            }
            Command::Audit { command, dir, config } => {
                let dir = audit::audit_dir(dir, &config)?;
                match command {
                    AuditCommand::Verify { pubkey, json } => audit::verify(&dir, pubkey, json),
                    AuditCommand::Query { user, actor, target, kind, session, since, until, text, limit, json } => {
                        let filter = crate::audit::query::Filter {
                            user,
                            actor,
                            target,
                            kind,
                            session,
                            since: since.as_deref().map(audit::parse_time).transpose()?,
                            until: until.as_deref().map(audit::parse_time).transpose()?,
                            text,
                        };
                        audit::query(&dir, &filter, json, limit)
                    }
                    AuditCommand::Pubkey => {
                        let path = dir.join(crate::audit::signing::PUBLIC_KEY_FILE);
                        print!(
                            "{}",
                            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
                        );
                        Ok(std::process::ExitCode::SUCCESS)
                    }
                }
            }
            Command::Replay { session, speed, no_wait, dir, config } => {
                audit::replay(&audit::audit_dir(dir, &config)?, &session, speed, no_wait)
            }
            Command::Policy { command: PolicyCommand::Check { dir } } => policy::check(dir),
            Command::BlastRadius { target, json, config } => blast_radius::run(&config, target.as_deref(), json),
            Command::Ca { uninstall: true, .. } => trust::uninstall().map(|()| std::process::ExitCode::SUCCESS),
            Command::Ca { config, install, .. } => {
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                let path = config.state_dir.join("tls").join(crate::proxy::ca::CA_CERT_FILE);
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (the agent makes the CA when it first starts)", path.display())
                })?;
                if install {
                    return trust::install(&pem).map(|()| std::process::ExitCode::SUCCESS);
                }
                eprintln!("# {}", path.display());
                print!("{pem}");
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Kubeconfig { target, output, config } => {
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                let path = config.state_dir.join("tls").join(crate::proxy::ca::CA_CERT_FILE);
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (the agent makes the CA when it first starts)", path.display())
                })?;
                let policy =
                    crate::policy::Policy::load_dir(&config.policies_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
                let text = kubeconfig::kubeconfig(&policy, &pem, target.as_deref())?;
                match output {
                    Some(path) => kubeconfig::write(&path, &text)?,
                    None => print!("{text}"),
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::SshCa { user, config } => {
                use crate::proxy::ssh::ca::{HOST_CA_PUB_FILE, USER_CA_PUB_FILE};
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                let path = config.state_dir.join("ssh").join(if user { USER_CA_PUB_FILE } else { HOST_CA_PUB_FILE });
                let key = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (the agent makes the SSH CAs when it first starts)", path.display())
                })?;
                let key = key.trim();
                if user {
                    println!("{key}")
                } else {
                    println!("@cert-authority * {key}")
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::GenerateAssets { dir } => {
                for path in assets::generate(&dir)? {
                    println!("{}", path.display());
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Scan { paths, json, config, rules, exclude, max_file_bytes } => {
                Ok(scan::run(scan::ScanRequest { paths, json, config, rules, exclude, max_file_bytes }))
            }
            Command::Uninstall { config } => {
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                for path in crate::intercept::uninstall(&config.bpffs_dir)? {
                    println!("removed {}", path.display());
                }
                // Under systemd the actors' cgroups live in the service's
                // own, which systemd removes; else under the attach cgroup.
                let attach = match config.cgroup {
                    Some(cgroup) => cgroup,
                    None => crate::intercept::cgroup::cgroup2_root()?,
                };
                if let Some(base) = crate::actors::launch::remove_base(&attach)? {
                    println!("removed {}", base.display());
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
        }
    }
}
