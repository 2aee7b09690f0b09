//! Simulated Proxmox VE and GitHub servers for end-to-end tests, the demo and the benchmark.
//!
//! [`Sim::start`] binds two HTTP servers on 127.0.0.1 (random ports) that share one state:
//! - a **Proxmox VE** cluster (`/api2/json`): requests validated against `pve-apidata-9.1.json`, token auth,
//!   cluster-wide VMIDs over several nodes, clone/start/stop/shutdown/destroy tasks with UPIDs and durations,
//!   `lock: clone`, clone slots with lock timeouts, a lagging `/cluster/resources`, snippets read at start,
//!   a guest agent that answers after boot;
//! - **GitHub** (runs, jobs, runners, registration tokens, JIT configs, App tokens, ETag/304, rate limits,
//!   pagination);
//! - **guests** that boot, find their runner credential, take one job and power their VM off.
//!
//! A background ticker advances everything; the test steers and inspects through [`PveHandle`] and
//! [`GitHubHandle`]. Faults are seeded ([`Faults`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use tests::{JobSpec, Sim, SimConfig};
//!
//! # async fn demo() -> Result<(), tests::Error> {
//! let sim = Sim::start(SimConfig::default()).await?;
//! println!("PROXMOX_URL={} GITHUB_API_URL={}", sim.pve_url(), sim.github_url());
//! sim.github().queue_run("NREL/EnergyPlus", vec![JobSpec::new("build", &["self-hosted", "linux"])]);
//! // ... run the dispatcher against the two URLs ...
//! let done = sim.wait_until(Duration::from_secs(30), |s| s.github().all_jobs_completed()).await;
//! assert!(done);
//! assert!(sim.pve().max_concurrent("gh-runner-") <= 4);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod config;
pub mod dispatcher;
mod github;
mod guest;
mod handles;
mod pve;
pub mod scenario;
mod schema;
mod server;
mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::Value;
use tokio::task::JoinHandle;

pub use config::{
    AppSpec, Faults, GitHubConfig, Os, PveConfig, SimConfig, StorageSpec, TemplateSpec, Timing,
};
pub use github::JobSpec;
pub use handles::{
    CredentialView, GitHubHandle, GuestView, JobView, PveHandle, QueuedRun, RunView, RunnerView,
    TaskView, VmSpec, VmView,
};
pub use schema::{APIDATA_ENV, default_apidata_path};
pub use world::{
    CreatedVm, CredentialKind, GuestPhase, JobStatus, Mutation, RequestKey, Scope, Service,
    Unavailable, VmEvent, VmEventKind,
};

use crate::server::ServerSlot;
use crate::world::{Storage, Vm, World};

/// Guest-contract path of the JIT config on Linux.
pub const LINUX_JIT_PATH: &str = "/var/lib/actions-runner-jit/jitconfig";
/// Guest-contract path of the JIT config on Windows.
pub const WINDOWS_JIT_PATH: &str = r"C:\ProgramData\actions-runner-jit\jitconfig";
/// Private key (PKCS#1 PEM) of [`AppSpec::test_app`]: a throwaway key for tests only.
pub const TEST_APP_PRIVATE_KEY_PEM: &str = include_str!("fixtures/sim-app-private-key.pem");
/// Public key of [`AppSpec::test_app`].
pub const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("fixtures/sim-app-public-key.pem");
/// Environment variable that overrides where `github-actions-runners.openapi.json` is read from.
pub const OPENAPI_ENV: &str = "GITHUB_OPENAPI_JSON";

/// Errors starting a simulation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listener on 127.0.0.1 failed.
    #[error("cannot bind 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// An API data file could not be read or parsed.
    #[error("cannot load API data {path}: {reason}")]
    Schema {
        /// File path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The configuration is inconsistent.
    #[error("invalid SimConfig: {0}")]
    Config(String),
    /// Creating the snippet directory failed.
    #[error("cannot create storage directory {path}: {source}")]
    Storage {
        /// Directory.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// None of these are transient.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Bind(_))
    }
}

/// State shared by both servers, the ticker and the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    schema: schema::Schema,
    examples: BTreeMap<String, Value>,
    github_base: OnceLock<String>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The default location of the GitHub OpenAPI file (or [`OPENAPI_ENV`]).
pub fn default_openapi_path() -> PathBuf {
    if let Ok(p) = std::env::var(OPENAPI_ENV) {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/api/github-actions-runners.openapi.json")
}

fn load_examples(path: &Path) -> Result<BTreeMap<String, Value>, Error> {
    let err = |reason: String| Error::Schema {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let ex = v["rest"]["components"]["examples"]
        .as_object()
        .ok_or_else(|| err("no rest.components.examples".into()))?;
    Ok(ex
        .iter()
        .map(|(k, v)| (k.clone(), v["value"].clone()))
        .collect())
}

/// A running simulation. Dropping it aborts the servers; prefer [`Sim::shutdown`].
#[derive(Debug)]
pub struct Sim {
    shared: Arc<Shared>,
    pve_server: Arc<tokio::sync::Mutex<ServerSlot>>,
    gh_server: Arc<tokio::sync::Mutex<ServerSlot>>,
    ticker: JoinHandle<()>,
    pve_url: String,
    github_url: String,
    snippets_dir: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

impl Sim {
    /// Validates the config, loads the API data, binds both servers and starts the ticker.
    pub async fn start(cfg: SimConfig) -> Result<Self, Error> {
        validate(&cfg)?;
        let schema = schema::Schema::load(
            &cfg.pve
                .apidata_path
                .clone()
                .unwrap_or_else(default_apidata_path),
        )?;
        let examples = load_examples(&default_openapi_path())?;
        let mut world = World::new(cfg.clone());
        let mut tmp = None;
        let mut snippets_dir = None;
        for s in &cfg.pve.storages {
            let root = match &s.path {
                Some(p) => p.clone(),
                None => {
                    if tmp.is_none() {
                        tmp = Some(
                            tempfile::Builder::new()
                                .prefix("pve-sim-")
                                .tempdir()
                                .map_err(|e| Error::Storage {
                                    path: std::env::temp_dir().display().to_string(),
                                    source: e,
                                })?,
                        );
                    }
                    let base = tmp
                        .as_ref()
                        .map_or_else(std::env::temp_dir, |t| t.path().to_path_buf());
                    base.join(&s.id)
                }
            };
            if s.content.iter().any(|c| c == "snippets") {
                let dir = root.join("snippets");
                std::fs::create_dir_all(&dir).map_err(|e| Error::Storage {
                    path: dir.display().to_string(),
                    source: e,
                })?;
                if snippets_dir.is_none() {
                    snippets_dir = Some(dir);
                }
            }
            world.pve.storages.push(Storage {
                id: s.id.clone(),
                content: s.content.clone(),
                root,
                shared: s.shared,
            });
        }
        world.pve.nodes = cfg.pve.nodes.clone();
        for t in &cfg.pve.templates {
            let mut config = BTreeMap::new();
            config.insert("name".to_string(), t.name.clone());
            config.insert("template".to_string(), "1".to_string());
            config.insert("memory".to_string(), "4096".to_string());
            config.insert("cores".to_string(), "2".to_string());
            config.insert(
                "ostype".to_string(),
                if t.os == Os::Linux { "l26" } else { "win11" }.to_string(),
            );
            config.insert(
                "scsi0".to_string(),
                format!("local-lvm:base-{}-disk-0,size=32G", t.vmid),
            );
            config.insert(
                "ide2".to_string(),
                format!("local-lvm:vm-{}-cloudinit,media=cdrom", t.vmid),
            );
            config.insert(
                "net0".to_string(),
                "virtio=BC:24:11:00:00:01,bridge=vmbr0".to_string(),
            );
            if t.agent {
                config.insert("agent".to_string(), "1".to_string());
            }
            world.pve.vms.insert(
                t.vmid,
                Vm {
                    vmid: t.vmid,
                    node: t.node.clone(),
                    config,
                    lock: None,
                    running: false,
                    started_at: None,
                    ever_started: false,
                    linked_from: None,
                    os: t.os,
                    shared_storage: t.shared_storage,
                    registration_labels: t.registration_labels.clone(),
                    guest: None,
                },
            );
        }
        for r in &cfg.github.repos {
            world.gh.repos.insert(r.clone());
            if let Some(o) = r.split('/').next() {
                world.gh.orgs.insert(o.to_string());
            }
        }
        world.gh.orgs.extend(cfg.github.orgs.iter().cloned());
        let now = Instant::now();
        world.take_snapshot(now);
        world.tick_github(now);
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            schema,
            examples,
            github_base: OnceLock::new(),
        });
        let pve_router = Router::new()
            .fallback(pve::handle)
            .with_state(shared.clone());
        let gh_router = Router::new()
            .fallback(github::handle)
            .with_state(shared.clone());
        let pve_slot = ServerSlot::start(pve_router).await?;
        let gh_slot = ServerSlot::start(gh_router).await?;
        let pve_url = format!("http://{}/api2/json", pve_slot.addr);
        let github_url = format!("http://{}", gh_slot.addr);
        let _ = shared.github_base.set(github_url.clone());
        let tick = cfg.tick.max(Duration::from_millis(1));
        let tshared = shared.clone();
        let ticker = tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                iv.tick().await;
                tshared.lock().tick(Instant::now());
            }
        });
        Ok(Self {
            shared,
            pve_server: Arc::new(tokio::sync::Mutex::new(pve_slot)),
            gh_server: Arc::new(tokio::sync::Mutex::new(gh_slot)),
            ticker,
            pve_url,
            github_url,
            snippets_dir,
            _tmp: tmp,
        })
    }

    /// `http://127.0.0.1:PORT/api2/json` (the `PROXMOX_URL`).
    pub fn pve_url(&self) -> String {
        self.pve_url.clone()
    }

    /// `http://127.0.0.1:PORT` (the `GITHUB_API_URL`).
    pub fn github_url(&self) -> String {
        self.github_url.clone()
    }

    /// The directory of the first storage with `snippets` content (the `SNIPPETS_DIR`).
    pub fn snippets_dir(&self) -> Option<PathBuf> {
        self.snippets_dir.clone()
    }

    /// The value of the `Authorization` header the simulated PVE accepts.
    pub fn pve_auth_header(&self) -> String {
        let w = self.shared.lock();
        format!(
            "PVEAPIToken={}={}",
            w.cfg.pve.token_id, w.cfg.pve.token_secret
        )
    }

    /// Steer and inspect the Proxmox side.
    pub fn pve(&self) -> PveHandle {
        PveHandle::new(
            self.shared.clone(),
            self.pve_server.clone(),
            self.pve_url.clone(),
        )
    }

    /// Steer and inspect the GitHub side.
    pub fn github(&self) -> GitHubHandle {
        GitHubHandle::new(self.shared.clone(), self.github_url.clone())
    }

    /// Every request counter (both services).
    pub fn requests(&self) -> BTreeMap<RequestKey, u64> {
        self.shared.lock().counters.clone()
    }

    /// Sum of the counters of one service.
    pub fn total_requests(&self, service: Service) -> u64 {
        self.shared
            .lock()
            .counters
            .iter()
            .filter(|(k, _)| k.service == service)
            .map(|(_, v)| v)
            .sum()
    }

    /// Time since the simulation started (the clock of every `Duration` timestamp in views and events).
    pub fn elapsed(&self) -> Duration {
        self.shared.lock().start.elapsed()
    }

    /// Polls `cond` every 10 ms until it holds (true) or `timeout` passes (false).
    pub async fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the ticker and both servers.
    pub async fn shutdown(self) {
        self.ticker.abort();
        self.pve_server.lock().await.stop().await;
        self.gh_server.lock().await.stop().await;
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

fn validate(cfg: &SimConfig) -> Result<(), Error> {
    if cfg.pve.nodes.is_empty() {
        return Err(Error::Config("pve.nodes is empty".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &cfg.pve.templates {
        if !cfg.pve.nodes.contains(&t.node) {
            return Err(Error::Config(format!(
                "template {} ({}): node '{}' is not in pve.nodes",
                t.vmid, t.name, t.node
            )));
        }
        if !seen.insert(t.vmid) {
            return Err(Error::Config(format!(
                "template vmid {} appears twice",
                t.vmid
            )));
        }
        if t.vmid < 100 {
            return Err(Error::Config(format!(
                "template vmid {} is below 100",
                t.vmid
            )));
        }
    }
    if cfg.pve.clone_slots == 0 {
        return Err(Error::Config("pve.clone_slots must be at least 1".into()));
    }
    for (name, p) in [
        (
            "faults.pve_write_error_rate",
            cfg.faults.pve_write_error_rate,
        ),
        (
            "faults.pve_lost_response_rate",
            cfg.faults.pve_lost_response_rate,
        ),
        (
            "faults.clone_lock_failure_rate",
            cfg.faults.clone_lock_failure_rate,
        ),
        ("faults.github_502_rate", cfg.faults.github_502_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::Config(format!(
                "{name} = {p} is not within 0.0..=1.0"
            )));
        }
    }
    if cfg.pve.token_id.split_once('!').is_none() || !cfg.pve.token_id.contains('@') {
        return Err(Error::Config(format!(
            "pve.token_id '{}' is not USER@REALM!TOKENID",
            cfg.pve.token_id
        )));
    }
    Ok(())
}
