//! The `airlock` command line.

mod approvals;
mod policy;
mod status;

use std::path::PathBuf;

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
    },
    /// Print the `@cert-authority` line for /etc/ssh/ssh_known_hosts that makes
    /// SSH clients trust the host certificates Airlock shows; with --user, the
    /// user CA public key for targets' TrustedUserCAKeys.
    SshCa {
        /// Print the user CA (for targets) instead of the known_hosts line (for clients).
        #[arg(long)]
        user: bool,
        /// Agent configuration file (for the state directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Detach the programs and remove every pinned object. Interception stops
    /// until the agent starts again.
    Uninstall {
        /// Agent configuration file (for the bpffs directory).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
enum PolicyCommand {
    /// Validate policy files; errors are reported as file:line:column.
    Check {
        /// Policy directory (default: the one named in the default config).
        dir: Option<PathBuf>,
    },
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
            Command::Status { json, socket, config } => status::run(json, socket, config),
            Command::Approvals { json, agent } => approvals::list(json, agent.socket, agent.config),
            Command::Approve { id, reason, agent } => approvals::decide(id, true, reason, agent.socket, agent.config),
            Command::Deny { id, reason, agent } => approvals::decide(id, false, reason, agent.socket, agent.config),
            Command::Policy { command: PolicyCommand::Check { dir } } => policy::check(dir),
            Command::Ca { config } => {
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                let path = config.state_dir.join("tls").join(crate::proxy::ca::CA_CERT_FILE);
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!("{}: {e} (the agent makes the CA when it first starts)", path.display())
                })?;
                eprintln!("# {}", path.display());
                print!("{pem}");
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
            Command::Uninstall { config } => {
                let config = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
                for path in crate::intercept::uninstall(&config.bpffs_dir)? {
                    println!("removed {}", path.display());
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
        }
    }
}
