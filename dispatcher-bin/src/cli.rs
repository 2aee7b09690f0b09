//! Command line: subcommands and the non-secret settings, each flag also readable from its environment
//! variable (DESIGN §2.1, §2.2). Secrets (`PROXMOX_TOKEN_SECRET`, `GITHUB_TOKEN`, the App key file's content,
//! `WEBHOOK_SECRET`) are read from the environment only, never from flags, so they never show in `ps`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Ephemeral GitHub Actions runners as Proxmox VE virtual machines.
#[derive(Debug, Parser)]
#[command(name = "dispatcher", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `run` when omitted (seed compatibility).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// The subcommands of DESIGN §2.1.
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// The service loop (what systemd runs).
    Run,
    /// One reconcile pass, then exit (non-zero if the pass failed).
    Once,
    /// Observe Proxmox and GitHub and print what a pass would do; changes nothing.
    Plan,
    /// Doctor: configuration, Proxmox, token privileges, templates, snippet storage, GitHub credential.
    Check,
    /// Print the user-data / agent payload a VM of a pool would get (credential redacted).
    Render {
        /// The pool's name (see the pools file); the only pool when omitted and there is just one.
        #[arg(long)]
        pool: Option<String>,
    },
    /// A table of pools, their VMs, caps and queued demand.
    Status,
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Non-secret settings. Every flag has an environment variable of the same meaning as in the seed.
#[derive(Debug, Clone, Args, Default)]
pub struct SettingsArgs {
    /// Proxmox API base URL, e.g. `https://pve:8006/api2/json`.
    #[arg(long, env = "PROXMOX_URL", global = true)]
    pub proxmox_url: Option<String>,
    /// Default node for pools that name none.
    #[arg(long, env = "PROXMOX_NODE", global = true)]
    pub proxmox_node: Option<String>,
    /// API token id `user@realm!name` (the secret comes from `PROXMOX_TOKEN_SECRET`).
    #[arg(long, env = "PROXMOX_TOKEN_ID", global = true)]
    pub proxmox_token_id: Option<String>,
    /// Storage holding the snippets (and the default storage of pools).
    #[arg(long, env = "PROXMOX_STORAGE", global = true)]
    pub proxmox_storage: Option<String>,
    /// Verify the Proxmox TLS certificate (default true; see `PROXMOX_CA_CERT`, `PROXMOX_TLS_FINGERPRINT`).
    #[arg(long, env = "PROXMOX_VERIFY_SSL", global = true)]
    pub proxmox_verify_ssl: Option<String>,
    /// CA certificate (PEM) to verify Proxmox against, e.g. a copy of `/etc/pve/pve-root-ca.pem`.
    #[arg(long, env = "PROXMOX_CA_CERT", global = true)]
    pub proxmox_ca_cert: Option<String>,
    /// SHA-256 fingerprint of the Proxmox server certificate to pin.
    #[arg(long, env = "PROXMOX_TLS_FINGERPRINT", global = true)]
    pub proxmox_tls_fingerprint: Option<String>,

    /// GitHub API base URL (`https://HOST/api/v3` for GHES).
    #[arg(long, env = "GITHUB_API_URL", global = true)]
    pub github_api_url: Option<String>,
    /// Organisation scope (runners registered at the organisation) instead of one repository.
    #[arg(long, env = "GITHUB_ORG", global = true)]
    pub github_org: Option<String>,
    /// Organisation scope: repositories whose queued jobs are polled (`name` or `owner/name`, comma
    /// separated). GitHub has no organisation-wide jobs listing; without this list (or `REPO_NAME`) only
    /// webhooks bring demand.
    #[arg(long, env = "GITHUB_REPOSITORIES", global = true)]
    pub github_repositories: Option<String>,
    /// GitHub App id (or client id) for App authentication.
    #[arg(long, env = "GITHUB_APP_ID", global = true)]
    pub github_app_id: Option<String>,
    /// GitHub App installation id.
    #[arg(long, env = "GITHUB_APP_INSTALLATION_ID", global = true)]
    pub github_app_installation_id: Option<String>,
    /// Path of the GitHub App private key (PEM).
    #[arg(long, env = "GITHUB_APP_PRIVATE_KEY_FILE", global = true)]
    pub github_app_private_key_file: Option<String>,
    /// Repository owner (repository scope).
    #[arg(long, env = "REPO_OWNER", global = true)]
    pub repo_owner: Option<String>,
    /// Repository name (repository scope).
    #[arg(long, env = "REPO_NAME", global = true)]
    pub repo_name: Option<String>,
    /// URL the runners register against (default derived from the scope).
    #[arg(long, env = "REPO_URL", global = true)]
    pub repo_url: Option<String>,

    /// Seconds between two polls of GitHub and Proxmox.
    #[arg(long, env = "POLL_INTERVAL", global = true)]
    pub poll_interval: Option<String>,
    /// Cap on runner VMs over all pools (0 = unlimited); overrides the pools file.
    #[arg(long, env = "MAX_TOTAL_RUNNERS", global = true)]
    pub max_total_runners: Option<String>,
    /// Never delete VMs or registrations (debugging).
    #[arg(long, env = "DISABLE_CLEANUP", global = true)]
    pub disable_cleanup: Option<String>,
    /// Start nothing while a stopped runner VM exists (debugging, with `DISABLE_CLEANUP`).
    #[arg(long, env = "PAUSE_ON_STOPPED", global = true)]
    pub pause_on_stopped: Option<String>,
    /// Pools file (`runner-pools.json`).
    #[arg(long, env = "RUNNER_POOLS_CONFIG", global = true)]
    pub runner_pools_config: Option<PathBuf>,
    /// Directory where snippets are written (the `snippets/` folder of `PROXMOX_STORAGE`).
    #[arg(long, env = "SNIPPETS_DIR", global = true)]
    pub snippets_dir: Option<PathBuf>,

    /// Default pool: template VM name.
    #[arg(long, env = "TEMPLATE_NAME", global = true)]
    pub template_name: Option<String>,
    /// Default pool: first VMID of the range.
    #[arg(long, env = "RUNNER_ID_START", global = true)]
    pub runner_id_start: Option<String>,
    /// Default pool: last VMID of the range.
    #[arg(long, env = "RUNNER_ID_END", global = true)]
    pub runner_id_end: Option<String>,
    /// Default pool: runner/VM name prefix.
    #[arg(long, env = "RUNNER_NAME_PREFIX", global = true)]
    pub runner_name_prefix: Option<String>,
    /// Default pool: user that runs the runner inside the VM.
    #[arg(long, env = "RUNNER_USER", global = true)]
    pub runner_user: Option<String>,
    /// Default pool: labels (comma separated).
    #[arg(long, env = "RUNNER_LABELS", global = true)]
    pub runner_labels: Option<String>,
    /// Default pool: user-data template file.
    #[arg(long, env = "USER_DATA_TEMPLATE", global = true)]
    pub user_data_template: Option<PathBuf>,
    /// Default pool: runner group id.
    #[arg(long, env = "RUNNER_GROUP_ID", global = true)]
    pub runner_group_id: Option<String>,
    /// Default pool: credential injection, `snippet` or `agent`.
    #[arg(long, env = "RUNNER_INJECTION", global = true)]
    pub runner_injection: Option<String>,

    /// Address for the webhook (and the metrics and health endpoints unless `METRICS_ADDR` is set): an
    /// address of the private network, e.g. `192.0.2.20:8080`.
    #[arg(long, env = "LISTEN_ADDR", global = true)]
    pub listen_addr: Option<SocketAddr>,
    /// Separate address for `/metrics`, `/healthz` and `/readyz` (e.g. `127.0.0.1:9100`); they are then not
    /// served on `LISTEN_ADDR`.
    #[arg(long, env = "METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,
    /// Accept a clear-text `http://` `PROXMOX_URL` / `GITHUB_API_URL` whose host is not loopback (a warning
    /// is logged); refused otherwise.
    #[arg(long, env = "ALLOW_INSECURE_HTTP", global = true)]
    pub allow_insecure_http: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Verbose logs (`RUST_LOG` takes precedence).
    #[arg(long, env = "DEBUG_LOGGING", global = true)]
    pub debug_logging: Option<String>,
    /// This dispatcher's identity (1-32 of `a-z0-9_.-`), written into every VM it makes; VMs of another
    /// identity are never touched. Default: derived from the GitHub scope and the pools file path.
    #[arg(long, env = "DISPATCHER_ID", global = true)]
    pub dispatcher_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run() {
        let cli = Cli::try_parse_from(["dispatcher"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.command, None);
        let cli = Cli::try_parse_from(["dispatcher", "render", "--pool", "u24"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.command,
            Some(Command::Render {
                pool: Some("u24".into())
            })
        );
    }

    #[test]
    fn flags_after_subcommand_are_accepted() {
        let cli = Cli::try_parse_from(["dispatcher", "once", "--poll-interval", "5"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.settings.poll_interval.as_deref(), Some("5"));
    }
}
