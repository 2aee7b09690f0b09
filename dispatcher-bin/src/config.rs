//! The runtime configuration, built from one lookup function `NAME -> value` (DESIGN §2.2).
//!
//! In production the lookup answers from the parsed command line (flags, each of which falls back to its
//! environment variable) and, for secrets, from the environment only. Tests pass a map. Every problem is
//! collected and reported at once, one line each, naming the variable or pools key and its value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use github_runners::GitHubConfig;
use pool_scheduler::{Config as PoolsConfig, Defaults, Flags, Injection};
use proxmox_api::ProxmoxConfig;
use secrecy::SecretString;

use crate::cli::{LogFormat, SettingsArgs};
use crate::env::{parse_bool, parse_u64};
use crate::snippets::SnippetStore;

/// Where the seed's bootstrap installs the pools file; used when `RUNNER_POOLS_CONFIG` is not set and the
/// file exists.
pub const DEFAULT_POOLS_FILE: &str = "/opt/dispatcher/runner-pools.json";
/// Default of `SNIPPETS_DIR`.
pub const DEFAULT_SNIPPETS_DIR: &str = "/opt/dispatcher/snippets";
/// `PROXMOX_STORAGE` when unset: the dedicated snippets storage `bootstrap-dispatcher-lxc.sh` creates.
pub const DEFAULT_SNIPPET_STORAGE: &str = "ghr-snippets";
/// Default of `POLL_INTERVAL` in seconds.
pub const DEFAULT_POLL_INTERVAL: u64 = 15;
/// Largest `POLL_INTERVAL` in seconds (one hour; a larger value is refused rather than overflow the timer
/// arithmetic).
pub const MAX_POLL_INTERVAL: u64 = 3600;

/// A user-data template file of a pool (the pools key `user_data_template`), read at start-up.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text (no secret: placeholders only).
    pub text: String,
    /// Whether it asks for `${registration_token}` (the seed's flow) rather than a JIT config.
    pub uses_registration_token: bool,
}

/// Everything the service needs, validated.
#[derive(Debug)]
pub struct RuntimeConfig {
    /// Proxmox client settings.
    pub proxmox: ProxmoxConfig,
    /// Organisation scope: the repositories polled for queued jobs (`GITHUB_REPOSITORIES`, else
    /// `REPO_OWNER/REPO_NAME` when `REPO_NAME` is set). Empty in repository scope.
    pub org_repositories: Vec<String>,
    /// GitHub client settings.
    pub github: GitHubConfig,
    /// Pools, validated.
    pub pools: PoolsConfig,
    /// Template file per pool name (pools without one use the built-in renderer).
    pub templates: BTreeMap<String, TemplateFile>,
    /// The snippet folder and the storage Proxmox knows it as.
    pub snippets: SnippetStore,
    /// Time between two polls.
    pub poll_interval: Duration,
    /// URL runners register against (repository or organisation).
    pub runner_url: String,
    /// Webhook listener; also metrics and health unless `metrics_addr` is set.
    pub listen_addr: Option<SocketAddr>,
    /// Separate listener for `/metrics`, `/healthz` and `/readyz` (`METRICS_ADDR`).
    pub metrics_addr: Option<SocketAddr>,
    /// Secret of the `workflow_job` webhook.
    pub webhook_secret: Option<SecretString>,
    /// Log format.
    pub log_format: LogFormat,
    /// `DEBUG_LOGGING`.
    pub debug_logging: bool,
    /// Non-fatal remarks (unknown pools keys…), one line each.
    pub warnings: Vec<String>,
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl SettingsArgs {
    /// The value a variable has after flags and environment were merged by clap; secrets are not here.
    pub fn get(&self, var: &str) -> Option<String> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match var {
            "PROXMOX_URL" => self.proxmox_url.clone(),
            "PROXMOX_NODE" => self.proxmox_node.clone(),
            "PROXMOX_TOKEN_ID" => self.proxmox_token_id.clone(),
            "PROXMOX_STORAGE" => self.proxmox_storage.clone(),
            "PROXMOX_VERIFY_SSL" => self.proxmox_verify_ssl.clone(),
            "PROXMOX_CA_CERT" => self.proxmox_ca_cert.clone(),
            "PROXMOX_TLS_FINGERPRINT" => self.proxmox_tls_fingerprint.clone(),
            "GITHUB_API_URL" => self.github_api_url.clone(),
            "GITHUB_ORG" => self.github_org.clone(),
            "GITHUB_REPOSITORIES" => self.github_repositories.clone(),
            "GITHUB_APP_ID" => self.github_app_id.clone(),
            "GITHUB_APP_INSTALLATION_ID" => self.github_app_installation_id.clone(),
            "GITHUB_APP_PRIVATE_KEY_FILE" => self.github_app_private_key_file.clone(),
            "REPO_OWNER" => self.repo_owner.clone(),
            "REPO_NAME" => self.repo_name.clone(),
            "REPO_URL" => self.repo_url.clone(),
            "POLL_INTERVAL" => self.poll_interval.clone(),
            "MAX_TOTAL_RUNNERS" => self.max_total_runners.clone(),
            "DISABLE_CLEANUP" => self.disable_cleanup.clone(),
            "PAUSE_ON_STOPPED" => self.pause_on_stopped.clone(),
            "RUNNER_POOLS_CONFIG" => path(&self.runner_pools_config),
            "SNIPPETS_DIR" => path(&self.snippets_dir),
            "TEMPLATE_NAME" => self.template_name.clone(),
            "RUNNER_ID_START" => self.runner_id_start.clone(),
            "RUNNER_ID_END" => self.runner_id_end.clone(),
            "RUNNER_NAME_PREFIX" => self.runner_name_prefix.clone(),
            "RUNNER_USER" => self.runner_user.clone(),
            "RUNNER_LABELS" => self.runner_labels.clone(),
            "USER_DATA_TEMPLATE" => path(&self.user_data_template),
            "RUNNER_GROUP_ID" => self.runner_group_id.clone(),
            "RUNNER_INJECTION" => self.runner_injection.clone(),
            "LISTEN_ADDR" => self.listen_addr.map(|a| a.to_string()),
            "METRICS_ADDR" => self.metrics_addr.map(|a| a.to_string()),
            "ALLOW_INSECURE_HTTP" => self.allow_insecure_http.clone(),
            "LOG_FORMAT" => self.log_format.map(|f| match f {
                LogFormat::Text => "text".to_owned(),
                LogFormat::Json => "json".to_owned(),
            }),
            "DEBUG_LOGGING" => self.debug_logging.clone(),
            "DISPATCHER_ID" => self.dispatcher_id.clone(),
            _ => None,
        }
    }

    /// The production lookup: flags/env merged by clap, secrets from the process environment.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |var| {
            self.get(var)
                .or_else(|| std::env::var(var).ok())
                .filter(|v| !v.is_empty())
        }
    }
}

impl RuntimeConfig {
    /// Builds and validates the configuration. `pools_file_exists` decides whether the default pools file
    /// location is used when `RUNNER_POOLS_CONFIG` is unset (a parameter so tests are hermetic).
    pub fn load(
        lookup: &dyn Fn(&str) -> Option<String>,
        pools_file_exists: &dyn Fn(&Path) -> bool,
    ) -> Result<Self, ConfigErrors> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut errors: Vec<String> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();

        for required in [
            "PROXMOX_URL",
            "PROXMOX_NODE",
            "PROXMOX_TOKEN_ID",
            "PROXMOX_TOKEN_SECRET",
        ] {
            if get(required).is_none() {
                errors.push(format!("{required} is required but not set"));
            }
        }

        let proxmox = match ProxmoxConfig::from_lookup(|k| get(k)) {
            Ok(c) => Some(c),
            Err(e) => {
                if get("PROXMOX_URL").is_some() && get("PROXMOX_TOKEN_ID").is_some() {
                    errors.push(e.to_string());
                }
                None
            }
        };
        let github = GitHubConfig::from_lookup(|k| get(k))
            .map_err(|e| errors.push(e.to_string()))
            .ok();

        let flag = |name: &str, errors: &mut Vec<String>| -> bool {
            get(name).is_some_and(|v| {
                parse_bool(name, &v).unwrap_or_else(|e| {
                    errors.push(e);
                    false
                })
            })
        };
        let number = |name: &str, default: u64, errors: &mut Vec<String>| -> u64 {
            get(name).map_or(default, |v| {
                parse_u64(name, &v).unwrap_or_else(|e| {
                    errors.push(e);
                    default
                })
            })
        };
        let u32_of = |name: &str, v: u64, errors: &mut Vec<String>| -> u32 {
            u32::try_from(v).unwrap_or_else(|_| {
                errors.push(format!("{name}={v}: too large"));
                0
            })
        };

        let flags = Flags {
            disable_cleanup: flag("DISABLE_CLEANUP", &mut errors),
            pause_on_stopped: flag("PAUSE_ON_STOPPED", &mut errors),
        };
        let poll = number("POLL_INTERVAL", DEFAULT_POLL_INTERVAL, &mut errors);
        if poll == 0 {
            errors.push("POLL_INTERVAL=0: must be at least 1 second".to_owned());
        }
        if poll > MAX_POLL_INTERVAL {
            errors.push(format!(
                "POLL_INTERVAL={poll}: must be at most {MAX_POLL_INTERVAL} seconds"
            ));
        }
        let debug_logging = flag("DEBUG_LOGGING", &mut errors);

        let mut defaults = Defaults {
            node: get("PROXMOX_NODE").unwrap_or_default(),
            flags,
            ..Defaults::default()
        };
        if let Some(v) = get("TEMPLATE_NAME") {
            defaults.template_name = v;
        }
        // The pools' snippet storage defaults to the dedicated one too (see DEFAULT_SNIPPET_STORAGE).
        defaults.storage =
            get("PROXMOX_STORAGE").unwrap_or_else(|| DEFAULT_SNIPPET_STORAGE.to_owned());
        let start = number(
            "RUNNER_ID_START",
            u64::from(defaults.vmid_start),
            &mut errors,
        );
        defaults.vmid_start = u32_of("RUNNER_ID_START", start, &mut errors);
        let end = number("RUNNER_ID_END", u64::from(defaults.vmid_end), &mut errors);
        defaults.vmid_end = u32_of("RUNNER_ID_END", end, &mut errors);
        if let Some(v) = get("RUNNER_NAME_PREFIX") {
            defaults.runner_name_prefix = v;
        }
        if let Some(v) = get("RUNNER_USER") {
            defaults.runner_user = v;
        }
        if let Some(v) = get("RUNNER_LABELS") {
            defaults.labels = pool_scheduler::split_labels(&v);
        }
        defaults.user_data_template = get("USER_DATA_TEMPLATE").map(PathBuf::from);
        if let Some(v) = get("RUNNER_INJECTION") {
            match Injection::parse(&v) {
                Some(i) => defaults.injection = i,
                None => errors.push(format!("RUNNER_INJECTION={v:?}: expected snippet or agent")),
            }
        }
        defaults.runner_group_id = number("RUNNER_GROUP_ID", defaults.runner_group_id, &mut errors);
        if let Some(v) = get("MAX_TOTAL_RUNNERS") {
            match parse_u64("MAX_TOTAL_RUNNERS", &v) {
                Ok(n) => {
                    defaults.max_total_runners = Some(u32_of("MAX_TOTAL_RUNNERS", n, &mut errors))
                }
                Err(e) => errors.push(e),
            }
        }

        let pools_path = match get("RUNNER_POOLS_CONFIG") {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(DEFAULT_POOLS_FILE)).filter(|p| pools_file_exists(p)),
        };
        let loaded = match &pools_path {
            Some(path) => PoolsConfig::load_file(path, &defaults),
            None => PoolsConfig::from_defaults(&defaults),
        };
        let pools = match loaded {
            Ok(l) => {
                warnings.extend(l.warnings.iter().map(ToString::to_string));
                Some(l.config)
            }
            Err(e) => {
                let origin = pools_path.as_ref().map_or_else(
                    || "pool defaults (RUNNER_* variables)".to_owned(),
                    |p| format!("RUNNER_POOLS_CONFIG={}", p.display()),
                );
                if e.problems().is_empty() {
                    errors.push(format!("{origin}: {e}"));
                } else {
                    errors.extend(e.problems().iter().map(|p| format!("{origin}: {p}")));
                }
                None
            }
        };

        let mut templates = BTreeMap::new();
        if let Some(pools) = &pools {
            for pool in pools.pools() {
                let Some(path) = &pool.user_data_template else {
                    continue;
                };
                if pool.injection == Injection::Agent {
                    // The image's path unit reads a JIT config written by the guest agent: the template
                    // (a v0 pools file's, often with `${registration_token}`) has no part in that flow.
                    warnings.push(format!(
                        "pool {:?}: user_data_template {} is not used with agent injection (the VM gets a \
                         JIT config through the guest agent)",
                        pool.name,
                        path.display()
                    ));
                    continue;
                }
                match std::fs::read_to_string(path) {
                    Ok(text) => match cloudinit_render::template_placeholders(&text) {
                        Ok(names) => {
                            let has = |n: &str| names.iter().any(|p| p == n);
                            match (has("registration_token"), has("jit_config")) {
                                (true, true) => errors.push(format!(
                                    "pool {:?}: user_data_template {}: uses both ${{registration_token}} \
                                     and ${{jit_config}}; a VM gets one credential: keep one of them",
                                    pool.name,
                                    path.display()
                                )),
                                (false, false) => errors.push(format!(
                                    "pool {:?}: user_data_template {}: uses neither ${{jit_config}} nor \
                                     ${{registration_token}}: a VM of this pool would never get a runner \
                                     credential",
                                    pool.name,
                                    path.display()
                                )),
                                _ => {}
                            }
                            let uses_registration_token =
                                cloudinit_render::template_uses_registration_token(&text);
                            if uses_registration_token {
                                warnings.push(format!(
                                    "pool {:?}: user_data_template {} hands each VM a registration token \
                                     (the v0 flow), which is weaker than a JIT config: until it expires (1 h) \
                                     it can register any number of runners; use a template with ${{jit_config}} \
                                     or agent injection",
                                    pool.name,
                                    path.display()
                                ));
                            }
                            templates.insert(
                                pool.name.clone(),
                                TemplateFile {
                                    path: path.clone(),
                                    text,
                                    uses_registration_token,
                                },
                            );
                        }
                        Err(e) => errors.push(format!(
                            "pool {:?}: user_data_template {}: {e}",
                            pool.name,
                            path.display()
                        )),
                    },
                    Err(e) => errors.push(format!(
                        "pool {:?}: user_data_template {}: cannot read: {e}",
                        pool.name,
                        path.display()
                    )),
                }
            }
        }

        let mut address = |name: &str| {
            get(name).and_then(|v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| {
                        errors.push(format!(
                            "{name}={v:?}: expected IP:PORT, e.g. 192.0.2.20:8080 (an address of the \
                             private network GitHub's deliveries arrive on)"
                        ))
                    })
                    .ok()
            })
        };
        let listen_addr = address("LISTEN_ADDR");
        let metrics_addr = address("METRICS_ADDR");
        if let (Some(l), Some(m)) = (listen_addr, metrics_addr)
            && l == m
        {
            errors.push(format!(
                "METRICS_ADDR={m}: the same as LISTEN_ADDR; unset it to serve metrics and health on \
                 LISTEN_ADDR, or give another address"
            ));
        }
        let webhook_secret = get("WEBHOOK_SECRET").map(SecretString::from);
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                errors.push(format!("LOG_FORMAT={other:?}: expected text or json"));
                LogFormat::Text
            }
        };
        // Default: the dedicated snippets storage the bootstrap creates (never `local`, whose snippets/ also
        // holds hookscripts and other VMs' cloud-init files).
        let storage = get("PROXMOX_STORAGE").unwrap_or_else(|| DEFAULT_SNIPPET_STORAGE.to_owned());
        let snippets_dir = get("SNIPPETS_DIR").unwrap_or_else(|| DEFAULT_SNIPPETS_DIR.to_owned());

        let org_repositories: Vec<String> = if get("GITHUB_ORG").is_some() {
            match (get("GITHUB_REPOSITORIES"), get("REPO_NAME")) {
                (Some(list), _) => pool_scheduler::split_labels(&list),
                (None, Some(name)) => {
                    vec![get("REPO_OWNER").map_or(name.clone(), |owner| format!("{owner}/{name}"))]
                }
                (None, None) => {
                    warnings.push(
                        "GITHUB_ORG is set without GITHUB_REPOSITORIES or REPO_NAME: queued jobs are not polled; \
                         only webhooks (LISTEN_ADDR + WEBHOOK_SECRET) bring demand"
                            .to_owned(),
                    );
                    Vec::new()
                }
            }
        } else {
            Vec::new()
        };

        match (proxmox, github, pools) {
            (Some(proxmox), Some(github), Some(mut pools)) if errors.is_empty() => {
                let runner_url = get("REPO_URL").unwrap_or_else(|| github.runner_url().to_string());
                let runner_url = runner_url.trim_end_matches('/').to_owned();
                let instance = match get("DISPATCHER_ID") {
                    Some(id) if pool_scheduler::marks::is_valid_instance_id(&id) => id,
                    Some(id) => {
                        return Err(ConfigErrors(vec![format!(
                            "DISPATCHER_ID={id:?}: expected 1-32 characters of a-z 0-9 _ . - starting with \
                             a letter or digit"
                        )]));
                    }
                    None => {
                        default_instance_id(github.runner_url().as_str(), pools_path.as_deref())
                    }
                };
                pools.set_instance(Some(instance));
                Ok(Self {
                    proxmox,
                    org_repositories,
                    github,
                    pools,
                    templates,
                    snippets: SnippetStore::new(snippets_dir, storage),
                    poll_interval: Duration::from_secs(poll.clamp(1, MAX_POLL_INTERVAL)),
                    runner_url,
                    listen_addr,
                    metrics_addr,
                    webhook_secret,
                    log_format,
                    debug_logging,
                    warnings,
                })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// Whether jobs of `repository` (`owner/name`) are ours to serve: the configured repository in repository
    /// scope; in organisation scope a repository of the organisation, and one of `GITHUB_REPOSITORIES` when
    /// that list is set. Compared case-insensitively, as GitHub does.
    pub fn serves_repository(&self, repository: &str) -> bool {
        let Some((owner, name)) = repository.split_once('/') else {
            return false;
        };
        match &self.github.scope {
            github_runners::Scope::Repo { owner: o, name: n } => {
                o.eq_ignore_ascii_case(owner) && n.eq_ignore_ascii_case(name)
            }
            github_runners::Scope::Org { org } => {
                org.eq_ignore_ascii_case(owner)
                    && (self.org_repositories.is_empty()
                        || self.org_repositories.iter().any(|r| {
                            let (ro, rn) = r.split_once('/').unwrap_or((org.as_str(), r.as_str()));
                            ro.eq_ignore_ascii_case(owner) && rn.eq_ignore_ascii_case(name)
                        }))
            }
        }
    }

    /// This dispatcher's instance id (`DISPATCHER_ID`, or derived from the GitHub scope and the pools file).
    pub fn instance(&self) -> &str {
        self.pools.instance().unwrap_or_default()
    }

    /// Whether a pool gets a registration token (its template asks for one) rather than a JIT config.
    pub fn uses_registration_token(&self, pool: &str) -> bool {
        self.templates
            .get(pool)
            .is_some_and(|t| t.uses_registration_token)
    }

    /// Whether any pool injects through snippets (then `SNIPPETS_DIR` must be writable).
    pub fn any_snippet_pool(&self) -> bool {
        self.pools
            .pools()
            .iter()
            .any(|p| p.injection == Injection::Snippet)
    }
}

/// The instance id when `DISPATCHER_ID` is unset: the first 8 hex digits of SHA-256 over the GitHub scope
/// URL and the pools file path, so two dispatchers serving different scopes or pools files never take each
/// other's VMs for theirs, and one dispatcher keeps its id across restarts (set `DISPATCHER_ID` to keep it
/// when either changes).
pub fn default_instance_id(scope_url: &str, pools_file: Option<&Path>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(scope_url.as_bytes());
    h.update(b"\n");
    h.update(
        pools_file
            .map_or_else(String::new, |p| p.display().to_string())
            .as_bytes(),
    );
    hex::encode(&h.finalize()[..4])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            (
                "PROXMOX_URL",
                "https://pve.example:8006/api2/json".to_owned(),
            ),
            ("PROXMOX_NODE", "pve1".to_owned()),
            ("PROXMOX_TOKEN_ID", "ghr@pve!dispatcher".to_owned()),
            ("PROXMOX_TOKEN_SECRET", "pve-secret-value-123".to_owned()),
            ("GITHUB_TOKEN", "ghp_secretsecretsecret".to_owned()),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<RuntimeConfig, ConfigErrors> {
        let lookup = |k: &str| vars.get(k).cloned();
        RuntimeConfig::load(&lookup, &|_| false)
    }

    #[test]
    fn webhook_jobs_are_served_only_for_the_configured_repositories() {
        let cfg = load(&base()).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cfg.serves_repository("NREL/EnergyPlus") && cfg.serves_repository("nrel/energyplus")
        );
        assert!(!cfg.serves_repository("NREL/other") && !cfg.serves_repository("EnergyPlus"));
        let mut vars = base();
        vars.insert("GITHUB_ORG", "acme".to_owned());
        vars.insert("GITHUB_REPOSITORIES", "widgets,other-org/tools".to_owned());
        let cfg = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.serves_repository("acme/widgets"));
        assert!(
            !cfg.serves_repository("acme/secret"),
            "outside GITHUB_REPOSITORIES"
        );
        assert!(
            !cfg.serves_repository("evil/widgets"),
            "outside the organisation"
        );
    }

    #[test]
    fn the_instance_id_is_derived_stable_and_overridable() {
        let a = load(&base()).unwrap_or_else(|e| panic!("{e}"));
        let b = load(&base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.instance(), b.instance());
        assert!(pool_scheduler::marks::is_valid_instance_id(a.instance()));
        let mut vars = base();
        vars.insert("REPO_NAME", "other".to_owned());
        let c = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            a.instance(),
            c.instance(),
            "another scope, another identity"
        );
        vars.insert("DISPATCHER_ID", "site-a".to_owned());
        let d = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.instance(), "site-a");
        vars.insert("DISPATCHER_ID", "Site A".to_owned());
        let e = load(&vars)
            .err()
            .unwrap_or_else(|| panic!("must be refused"));
        assert!(
            e.0.len() == 1 && e.0[0].starts_with("DISPATCHER_ID=\"Site A\""),
            "{e:?}"
        );
    }

    #[test]
    fn minimal_seed_environment_gives_one_default_pool() {
        let cfg = load(&base()).unwrap_or_else(|e| panic!("{e}"));
        let pools = cfg.pools.pools();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].node, "pve1");
        assert_eq!((pools[0].vmid_start, pools[0].vmid_end), (200, 299));
        assert_eq!(cfg.poll_interval, Duration::from_secs(15));
        assert_eq!(cfg.runner_url, "https://github.com/NREL/EnergyPlus");
        assert_eq!(cfg.snippets.default_storage(), DEFAULT_SNIPPET_STORAGE);
        assert!(!cfg.pools.flags().disable_cleanup);
    }

    #[test]
    fn every_seed_variable_is_read() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let tpl = dir.path().join("user-data.tpl");
        std::fs::write(
            &tpl,
            "#cloud-config\nruncmd:\n  - [echo, \"${runner_name}\"]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut vars = base();
        vars.extend([
            ("PROXMOX_STORAGE", "cephfs".to_owned()),
            ("PROXMOX_VERIFY_SSL", "false".to_owned()),
            ("MAX_TOTAL_RUNNERS", "7".to_owned()),
            ("DISABLE_CLEANUP", "true".to_owned()),
            ("PAUSE_ON_STOPPED", "yes".to_owned()),
            ("REPO_OWNER", "acme".to_owned()),
            ("REPO_NAME", "widgets".to_owned()),
            ("REPO_URL", "https://github.com/acme/widgets/".to_owned()),
            ("POLL_INTERVAL", "9".to_owned()),
            ("SNIPPETS_DIR", "/srv/snippets".to_owned()),
            ("TEMPLATE_NAME", "u24-template".to_owned()),
            ("RUNNER_ID_START", "5000".to_owned()),
            ("RUNNER_ID_END", "5009".to_owned()),
            ("RUNNER_NAME_PREFIX", "ci-vm-".to_owned()),
            ("RUNNER_USER", "builder".to_owned()),
            ("RUNNER_LABELS", "self-hosted, linux ,x64".to_owned()),
            ("USER_DATA_TEMPLATE", tpl.display().to_string()),
            ("DEBUG_LOGGING", "1".to_owned()),
            ("RUNNER_GROUP_ID", "3".to_owned()),
            ("RUNNER_INJECTION", "agent".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:9000".to_owned()),
            ("WEBHOOK_SECRET", "whsec".to_owned()),
        ]);
        let cfg = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        let pool = &cfg.pools.pools()[0];
        assert_eq!(pool.storage, "cephfs");
        assert_eq!(pool.template, "u24-template");
        assert_eq!((pool.vmid_start, pool.vmid_end), (5000, 5009));
        assert!(pool.runner_name_prefix.starts_with("ci-vm-"));
        assert_eq!(pool.runner_user, "builder");
        assert_eq!(pool.labels, vec!["self-hosted", "linux", "x64"]);
        assert_eq!(pool.injection, Injection::Agent);
        assert_eq!(pool.runner_group_id, 3);
        assert_eq!(cfg.pools.max_total_runners(), 7);
        assert!(cfg.pools.flags().disable_cleanup && cfg.pools.flags().pause_on_stopped);
        assert_eq!(cfg.runner_url, "https://github.com/acme/widgets");
        assert_eq!(cfg.poll_interval, Duration::from_secs(9));
        assert_eq!(cfg.snippets.dir(), Path::new("/srv/snippets"));
        assert_eq!(cfg.snippets.default_storage(), "cephfs");
        assert!(cfg.debug_logging);
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(
            cfg.listen_addr,
            Some("127.0.0.1:9000".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert!(cfg.webhook_secret.is_some());
        // Agent injection hands over a JIT config: the template is not used (and said so once).
        assert!(!cfg.templates.contains_key(&pool.name));
        assert!(!cfg.uses_registration_token(&pool.name));
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("not used with agent injection")),
            "{:?}",
            cfg.warnings
        );
        assert!(format!("{:?}", cfg.github).contains("acme"));
    }

    #[test]
    fn every_problem_is_reported_once_per_line_without_secrets() {
        let mut vars = base();
        vars.remove("PROXMOX_NODE");
        vars.extend([
            ("POLL_INTERVAL", "soon".to_owned()),
            ("DISABLE_CLEANUP", "perhaps".to_owned()),
            ("RUNNER_INJECTION", "usb-stick".to_owned()),
            ("LOG_FORMAT", "xml".to_owned()),
        ]);
        let err = load(&vars).err().unwrap_or_else(|| panic!("must fail"));
        let text = err.to_string();
        for needle in [
            "PROXMOX_NODE",
            "POLL_INTERVAL=\"soon\"",
            "DISABLE_CLEANUP=\"perhaps\"",
            "usb-stick",
            "xml",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
        assert!(
            !text.contains("pve-secret-value-123") && !text.contains("ghp_secret"),
            "{text}"
        );
    }

    #[test]
    fn huge_poll_interval_is_refused_naming_it() {
        // u64::MAX seconds used to load, then overflowed `Instant + poll_interval` in the service loop.
        for (value, needle) in [
            ("18446744073709551615", "POLL_INTERVAL=18446744073709551615"),
            ("3601", "POLL_INTERVAL=3601"),
            (
                "18446744073709551616",
                "POLL_INTERVAL=\"18446744073709551616\"",
            ),
        ] {
            let mut vars = base();
            vars.insert("POLL_INTERVAL", value.to_owned());
            let err = load(&vars)
                .err()
                .unwrap_or_else(|| panic!("{value} must fail"));
            assert_eq!(err.0.len(), 1, "{err}");
            assert!(err.0[0].contains(needle), "{err}");
        }
        let mut vars = base();
        vars.insert("POLL_INTERVAL", "3600".to_owned());
        let cfg = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.poll_interval, Duration::from_secs(MAX_POLL_INTERVAL));
    }

    #[test]
    fn metrics_addr_is_read_and_must_differ_from_listen_addr() {
        let mut vars = base();
        vars.insert("LISTEN_ADDR", "192.0.2.20:8080".to_owned());
        vars.insert("METRICS_ADDR", "127.0.0.1:9100".to_owned());
        let cfg = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.metrics_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        vars.insert("METRICS_ADDR", "192.0.2.20:8080".to_owned());
        let err = load(&vars).err().unwrap_or_else(|| panic!("must fail"));
        assert!(
            err.to_string().contains("METRICS_ADDR=192.0.2.20:8080"),
            "{err}"
        );
        vars.insert("METRICS_ADDR", "localhost:9100".to_owned());
        let err = load(&vars).err().unwrap_or_else(|| panic!("must fail"));
        assert!(
            err.to_string().contains("METRICS_ADDR=\"localhost:9100\""),
            "{err}"
        );
        // Without METRICS_ADDR everything stays on LISTEN_ADDR.
        let cfg = load(&base()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.metrics_addr, None);
    }

    #[test]
    fn a_bad_listen_addr_suggests_a_private_address() {
        let mut vars = base();
        vars.insert("LISTEN_ADDR", ":8080".to_owned());
        let err = load(&vars).err().unwrap_or_else(|| panic!("must fail"));
        let text = err.to_string();
        assert!(text.contains("LISTEN_ADDR=\":8080\""), "{text}");
        assert!(!text.contains("0.0.0.0"), "{text}");
        assert!(text.contains("private network"), "{text}");
    }

    #[test]
    fn clear_text_urls_outside_loopback_need_allow_insecure_http() {
        let mut vars = base();
        vars.insert(
            "PROXMOX_URL",
            "http://pve.example:8006/api2/json".to_owned(),
        );
        vars.insert("GITHUB_API_URL", "http://ghes.example/api/v3".to_owned());
        let err = load(&vars).err().unwrap_or_else(|| panic!("must fail"));
        assert_eq!(err.0.len(), 2, "{err}");
        assert!(
            err.0.iter().all(|l| l.contains("ALLOW_INSECURE_HTTP")),
            "{err}"
        );
        vars.insert("ALLOW_INSECURE_HTTP", "true".to_owned());
        let cfg = load(&vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.proxmox.base_url.scheme(), "http");
        assert_eq!(cfg.github.api_url.scheme(), "http");
        // The simulator's loopback URLs need nothing.
        let mut vars = base();
        vars.insert("PROXMOX_URL", "http://127.0.0.1:8006/api2/json".to_owned());
        vars.insert("GITHUB_API_URL", "http://127.0.0.1:9000".to_owned());
        load(&vars).unwrap_or_else(|e| panic!("{e}"));
    }

    mod arbitrary {
        //! `RuntimeConfig::load` over arbitrary values of every known variable: never a panic, every
        //! problem on one line, and a loaded configuration within its bounds.

        use proptest::prelude::*;

        use super::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                Just(u64::MAX.to_string()),
                Just("18446744073709551616".to_owned()),
                (0u64..100_000).prop_map(|n| n.to_string()),
                Just("-1".to_owned()),
                Just("true".to_owned()),
                Just("127.0.0.1:0".to_owned()),
                Just("http://127.0.0.1:1/api2/json".to_owned()),
                Just("http://10.0.0.1/api".to_owned()),
                "\\PC{0,24}",
                "[ -~]{0,12}\n[ -~]{0,12}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn any_environment_loads_or_fails_with_one_line_problems(
                values in prop::collection::vec(prop::option::of(value()), crate::env::KNOWN_VARIABLES.len()),
            ) {
                let mut vars = base();
                for (name, value) in crate::env::KNOWN_VARIABLES.iter().zip(values) {
                    // Keep the pools hermetic: no pools file, no template file from the generated values.
                    if matches!(*name, "RUNNER_POOLS_CONFIG" | "USER_DATA_TEMPLATE" | "GITHUB_APP_PRIVATE_KEY_FILE") {
                        continue;
                    }
                    if let Some(v) = value {
                        vars.insert(*name, v);
                    }
                }
                match load(&vars) {
                    Ok(cfg) => {
                        prop_assert!(cfg.poll_interval >= Duration::from_secs(1));
                        prop_assert!(cfg.poll_interval <= Duration::from_secs(MAX_POLL_INTERVAL));
                    }
                    Err(errors) => {
                        prop_assert!(!errors.0.is_empty());
                        for line in &errors.0 {
                            prop_assert!(!line.contains('\n'), "{}", line);
                            prop_assert!(!line.contains("pve-secret-value-123"), "{}", line);
                            prop_assert!(!line.contains("ghp_secretsecretsecret"), "{}", line);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn broken_pools_file_reports_all_its_errors() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("runner-pools.json");
        std::fs::write(
            &file,
            r#"{"pools": [
                {"name": "a", "template": "t", "labels": [], "vmid_start": 300, "vmid_end": 200},
                {"name": "a", "template": "t", "labels": ["x"], "vmid_start": 250, "vmid_end": 260}
            ]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut vars = base();
        vars.insert("RUNNER_POOLS_CONFIG", file.display().to_string());
        let err = load(&vars).err().unwrap_or_else(|| panic!("must fail"));
        assert!(err.0.len() >= 3, "expected every problem, got {:?}", err.0);
        assert!(
            err.0.iter().all(|l| l.contains("RUNNER_POOLS_CONFIG=")),
            "{:?}",
            err.0
        );
    }
}
