//! Configuration of a simulation: cluster, GitHub, timings and faults.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a [`crate::Sim`] needs. Start from [`SimConfig::default`] (fast timings) or
/// [`SimConfig::realistic`] and change fields.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seed of the deterministic fault generator (`StdRng`).
    pub seed: u64,
    /// Period of the background ticker that completes tasks, boots guests and finishes jobs.
    pub tick: Duration,
    /// Simulated Proxmox VE cluster.
    pub pve: PveConfig,
    /// Simulated GitHub.
    pub github: GitHubConfig,
    /// Durations of everything that takes time.
    pub timing: Timing,
    /// Seeded fault injection.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            tick: Duration::from_millis(5),
            pve: PveConfig::default(),
            github: GitHubConfig::default(),
            timing: Timing::default(),
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// The benchmark's delays: clone 2 s, start 1 s, boot 8 s, job 5 s, pvestatd every 10 s, 401 after 3 s.
    pub fn realistic() -> Self {
        Self {
            timing: Timing::realistic(),
            ..Self::default()
        }
    }
}

/// Durations (real time; pick small ones to run scenarios in seconds).
#[derive(Debug, Clone)]
pub struct Timing {
    /// A linked clone task.
    pub clone: Duration,
    /// A full clone task.
    pub full_clone: Duration,
    /// How long a clone waits for a clone slot before failing with "can't lock file … got timeout".
    pub lock_timeout: Duration,
    /// `status/start` task.
    pub start: Duration,
    /// `status/stop` task.
    pub stop: Duration,
    /// `status/shutdown` task (the guest powers off at its end).
    pub shutdown: Duration,
    /// `DELETE` (destroy) task.
    pub destroy: Duration,
    /// `POST …/config` task.
    pub config_task: Duration,
    /// From a finished start task to the guest being up (agent answers, credential looked for).
    pub boot: Duration,
    /// From finding a credential to the runner being online at GitHub.
    pub runner_online: Duration,
    /// Default duration of a job (a `JobSpec` may override it).
    pub job: Duration,
    /// From the runner exiting to the VM being powered off.
    pub poweroff: Duration,
    /// Period of the "pvestatd" broadcast that `/cluster/resources` status/name/template/uptime come from.
    pub status_interval: Duration,
    /// Delay before a 401 answer (PVE delays auth failures ~3 s).
    pub auth_failure_delay: Duration,
    /// From a task's end to its move from the node's active list to the archive (index) that
    /// `GET /nodes/{node}/tasks` reads.
    pub task_archive: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            clone: Duration::from_millis(200),
            full_clone: Duration::from_millis(600),
            lock_timeout: Duration::from_millis(300),
            start: Duration::from_millis(100),
            stop: Duration::from_millis(50),
            shutdown: Duration::from_millis(100),
            destroy: Duration::from_millis(100),
            config_task: Duration::from_millis(20),
            boot: Duration::from_millis(300),
            runner_online: Duration::from_millis(50),
            job: Duration::from_millis(300),
            poweroff: Duration::from_millis(50),
            status_interval: Duration::from_millis(500),
            auth_failure_delay: Duration::from_millis(100),
            task_archive: Duration::from_millis(500),
        }
    }
}

impl Timing {
    /// Delays close to a real cluster (see [`SimConfig::realistic`]).
    pub fn realistic() -> Self {
        Self {
            clone: Duration::from_secs(2),
            full_clone: Duration::from_secs(20),
            lock_timeout: Duration::from_secs(10),
            start: Duration::from_secs(1),
            stop: Duration::from_millis(500),
            shutdown: Duration::from_secs(3),
            destroy: Duration::from_secs(1),
            config_task: Duration::from_millis(200),
            boot: Duration::from_secs(8),
            runner_online: Duration::from_secs(1),
            job: Duration::from_secs(5),
            poweroff: Duration::from_secs(1),
            status_interval: Duration::from_secs(10),
            auth_failure_delay: Duration::from_secs(3),
            task_archive: Duration::from_secs(2),
        }
    }
}

/// Operating system of a template (decides the JIT file path the guest watches and the runner's OS label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// `/var/lib/actions-runner-jit/jitconfig`, label `Linux`.
    Linux,
    /// `C:\ProgramData\actions-runner-jit\jitconfig`, label `Windows`.
    Windows,
}

impl Os {
    /// The guest-contract path of the JIT config file.
    pub fn jit_path(self) -> &'static str {
        match self {
            Os::Linux => crate::LINUX_JIT_PATH,
            Os::Windows => crate::WINDOWS_JIT_PATH,
        }
    }

    /// GitHub's OS label / `os` field.
    pub fn label(self) -> &'static str {
        match self {
            Os::Linux => "Linux",
            Os::Windows => "Windows",
        }
    }
}

/// A template VM present at start.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    /// VMID (cluster-wide unique).
    pub vmid: u32,
    /// Node holding it.
    pub node: String,
    /// VM name (pools reference templates by name).
    pub name: String,
    /// Guest OS.
    pub os: Os,
    /// `agent: 1` in its config (copied to clones).
    pub agent: bool,
    /// Its disks are on shared storage (clone `target` to another node allowed).
    pub shared_storage: bool,
    /// Labels a runner gets in the seed's registration-token flow (`run-once.sh … <labels>`).
    pub registration_labels: Vec<String>,
}

impl TemplateSpec {
    /// A Linux template with the guest agent enabled on local storage.
    pub fn linux(vmid: u32, node: &str, name: &str) -> Self {
        Self {
            vmid,
            node: node.to_string(),
            name: name.to_string(),
            os: Os::Linux,
            agent: true,
            shared_storage: false,
            registration_labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        }
    }

    /// A Windows template with the guest agent enabled on local storage.
    pub fn windows(vmid: u32, node: &str, name: &str) -> Self {
        Self {
            os: Os::Windows,
            registration_labels: vec!["self-hosted".into(), "windows".into(), "x64".into()],
            ..Self::linux(vmid, node, name)
        }
    }
}

/// A storage (`GET /storage/{storage}`).
#[derive(Debug, Clone)]
pub struct StorageSpec {
    /// Storage id, e.g. `local`.
    pub id: String,
    /// Content types, e.g. `["iso", "vztmpl", "backup", "snippets"]`.
    pub content: Vec<String>,
    /// Root path; snippets live in `<path>/snippets`. `None` = a temporary directory owned by the Sim.
    pub path: Option<PathBuf>,
    /// Shared between nodes.
    pub shared: bool,
}

/// The simulated Proxmox VE cluster.
#[derive(Debug, Clone)]
pub struct PveConfig {
    /// Node names.
    pub nodes: Vec<String>,
    /// Accepted token id `USER@REALM!TOKENID`.
    pub token_id: String,
    /// Accepted token secret.
    pub token_secret: String,
    /// Templates present at start.
    pub templates: Vec<TemplateSpec>,
    /// Storages (the first with `snippets` content serves `cicustom` snippets).
    pub storages: Vec<StorageSpec>,
    /// Parallel clone tasks a node runs; a clone beyond them fails after `lock_timeout`.
    pub clone_slots: usize,
    /// `GET /version` → `version`.
    pub version: String,
    /// Location of `pve-apidata-9.1.json` (default: [`crate::default_apidata_path`]).
    pub apidata_path: Option<PathBuf>,
    /// Privileges reported by `GET /access/permissions` (path → privileges).
    pub privileges: Vec<(String, Vec<String>)>,
}

impl Default for PveConfig {
    fn default() -> Self {
        let vm_privs = [
            "VM.Allocate",
            "VM.Audit",
            "VM.Clone",
            "VM.Config.Cloudinit",
            "VM.Config.Options",
            "VM.PowerMgmt",
            "VM.GuestAgent.Audit",
            "VM.GuestAgent.FileWrite",
        ];
        Self {
            nodes: vec!["pve1".into(), "pve2".into()],
            token_id: "dispatcher@pve!runners".into(),
            token_secret: "00000000-1111-2222-3333-444444444444".into(),
            templates: vec![
                TemplateSpec::linux(9000, "pve1", "ubuntu-2404-runner-template"),
                TemplateSpec::linux(9001, "pve2", "ubuntu-2404-runner-template"),
            ],
            storages: vec![
                // The dedicated snippets storage the bootstrap creates (PROXMOX_STORAGE's default).
                StorageSpec {
                    id: "ghr-snippets".into(),
                    content: vec!["snippets".into()],
                    path: None,
                    shared: false,
                },
                StorageSpec {
                    id: "local".into(),
                    content: vec!["iso".into(), "vztmpl".into(), "backup".into()],
                    path: None,
                    shared: false,
                },
                StorageSpec {
                    id: "local-lvm".into(),
                    content: vec!["images".into(), "rootdir".into()],
                    path: None,
                    shared: false,
                },
            ],
            clone_slots: 4,
            version: "9.1.1".into(),
            apidata_path: None,
            privileges: vec![
                ("/".into(), vec!["Sys.Audit".into()]),
                (
                    "/vms".into(),
                    vm_privs.iter().map(|s| (*s).to_string()).collect(),
                ),
                (
                    "/storage".into(),
                    vec!["Datastore.Audit".into(), "Datastore.AllocateSpace".into()],
                ),
            ],
        }
    }
}

/// A GitHub App the simulator accepts JWTs for.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// App id (the JWT `iss`; the client id is accepted too).
    pub app_id: u64,
    /// Client id (`Iv23…`), also accepted as `iss`.
    pub client_id: String,
    /// Installation id.
    pub installation_id: u64,
    /// RSA public key (PEM) that verifies the App's RS256 JWTs.
    pub public_key_pem: String,
}

impl AppSpec {
    /// A test App (id 123456, installation 7890) whose private key is [`crate::TEST_APP_PRIVATE_KEY_PEM`]
    /// (a throwaway key generated for these tests; never use it anywhere else).
    pub fn test_app() -> Self {
        Self {
            app_id: 123_456,
            client_id: "Iv23liSimulatedApp01".into(),
            installation_id: 7890,
            public_key_pem: crate::TEST_APP_PUBLIC_KEY_PEM.into(),
        }
    }
}

/// The simulated GitHub.
#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// Accepted PAT (`Authorization: Bearer X` or `token X`).
    pub token: String,
    /// Repositories `owner/name` that exist (more are created by `queue_run`).
    pub repos: Vec<String>,
    /// Organisations that exist (owners of `repos` are added).
    pub orgs: Vec<String>,
    /// Primary rate limit per window (`x-ratelimit-limit`).
    pub rate_limit: u32,
    /// Window after which the budget resets.
    pub rate_limit_window: Duration,
    /// Runner groups of every organisation (id, name); id 1 "Default" should stay.
    pub runner_groups: Vec<(u64, String)>,
    /// A GitHub App (installation access tokens), if any.
    pub app: Option<AppSpec>,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            token: "github_pat_sim_0123456789".into(),
            repos: vec!["NREL/EnergyPlus".into()],
            orgs: vec![],
            rate_limit: 5000,
            rate_limit_window: Duration::from_secs(3600),
            runner_groups: vec![(1, "Default".into())],
            app: None,
        }
    }
}

/// Seeded faults (fractions in 0.0..=1.0).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fraction of Proxmox writes (POST/PUT/DELETE, agent calls excluded) answered with a 5xx and not performed.
    pub pve_write_error_rate: f64,
    /// Fraction of Proxmox writes that are performed but whose answer is lost (596 Broken pipe).
    pub pve_lost_response_rate: f64,
    /// Fraction of clone tasks that fail with a lock timeout regardless of free slots.
    pub clone_lock_failure_rate: f64,
    /// Fraction of GitHub requests answered 502 Bad Gateway.
    pub github_502_rate: f64,
}
