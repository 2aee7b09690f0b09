//! The shared state of one simulation: the Proxmox cluster, GitHub, the guests, counters and metrics.
//! Everything lives in one `World` behind one mutex so that cross-service effects (a guest taking a job,
//! a VM stopping under a busy runner) are atomic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;

use crate::config::{Os, SimConfig};

/// How the simulated Proxmox is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The port is closed: connections are refused.
    Refused,
    /// Every request gets `503 Service Unavailable`.
    ServiceUnavailable,
}

/// Which simulated service a counter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// The Proxmox VE API.
    Pve,
    /// The GitHub REST API.
    GitHub,
}

/// One request counter: service, method, templated endpoint (e.g. `/nodes/{node}/qemu/{vmid}/clone`), status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// Service.
    pub service: Service,
    /// HTTP method.
    pub method: String,
    /// Templated endpoint (the raw path when it matched nothing).
    pub endpoint: String,
    /// HTTP status answered.
    pub status: u16,
}

/// Guest phase of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestPhase {
    /// Started, not booted yet (agent does not answer).
    Booting,
    /// Booted, looking for a credential (none found yet).
    WaitingForCredential,
    /// A credential was found but rejected (unknown/used JIT config, runner deleted); the guest idles.
    CredentialRejected(String),
    /// Runner connecting to GitHub (online at the given time).
    Connecting {
        /// GitHub runner id.
        runner_id: u64,
    },
    /// Runner online (idle or busy).
    Online {
        /// GitHub runner id.
        runner_id: u64,
    },
    /// Runner exited; the VM powers off soon.
    PoweringOff,
    /// Powered off by itself.
    Off,
}

#[derive(Debug, Clone)]
pub(crate) struct Guest {
    pub boot_at: Instant,
    pub user_data: Option<String>,
    pub files: BTreeMap<String, String>,
    pub phase: GuestPhase,
    pub next_at: Option<Instant>,
    pub runner_name: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Vm {
    pub vmid: u32,
    pub node: String,
    pub config: BTreeMap<String, String>,
    pub lock: Option<String>,
    pub running: bool,
    pub started_at: Option<Instant>,
    pub ever_started: bool,
    pub linked_from: Option<u32>,
    pub os: Os,
    pub shared_storage: bool,
    pub registration_labels: Vec<String>,
    pub guest: Option<Guest>,
}

impl Vm {
    pub fn name(&self) -> Option<&str> {
        self.config.get("name").map(String::as_str)
    }
    pub fn is_template(&self) -> bool {
        self.config.get("template").is_some_and(|t| t == "1")
    }
    pub fn agent_enabled(&self) -> bool {
        self.config
            .get("agent")
            .is_some_and(|a| a.split(',').any(|p| p == "1" || p == "enabled=1"))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub vmid: u32,
    pub node: String,
    pub name: String,
    pub running: bool,
}

#[derive(Debug, Clone)]
pub(crate) enum TaskEffect {
    Nothing,
    Fail(String),
    CloneDone {
        newid: u32,
    },
    Start {
        vmid: u32,
        user_data: Option<String>,
    },
    Stop {
        vmid: u32,
    },
    Shutdown {
        vmid: u32,
    },
    Destroy {
        vmid: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub upid: String,
    pub node: String,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub done_at: Instant,
    pub exitstatus: Option<String>,
    /// Set when the task ended: Unix seconds and the instant (archived `task_archive` later).
    pub ended: Option<(i64, Instant)>,
    pub effect: TaskEffect,
}

/// The "pvestatd" view of one VM.
#[derive(Debug, Clone)]
pub(crate) struct SnapEntry {
    pub name: Option<String>,
    pub running: bool,
    pub template: bool,
    pub uptime: u64,
}

/// What happened to a VM, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEventKind {
    /// Created (clone accepted, or added by the test).
    Created,
    /// Powered on.
    Started,
    /// Powered off (stop, shutdown, or the guest powered itself off).
    Stopped,
    /// Config changed (name may have changed).
    Changed,
    /// Destroyed.
    Destroyed,
}

/// One VM state change.
#[derive(Debug, Clone)]
pub struct VmEvent {
    /// Time since the simulation started.
    pub at: Duration,
    /// VMID.
    pub vmid: u32,
    /// VM name after the event.
    pub name: Option<String>,
    /// What happened.
    pub kind: VmEventKind,
}

/// A VM created by a clone (or added by the test).
#[derive(Debug, Clone)]
pub struct CreatedVm {
    /// Time since the simulation started.
    pub at: Duration,
    /// VMID.
    pub vmid: u32,
    /// Node.
    pub node: String,
    /// Name given at creation.
    pub name: Option<String>,
    /// `description` given at creation.
    pub description: Option<String>,
    /// Source VMID of a clone.
    pub cloned_from: Option<u32>,
}

/// A request that stops, changes or deletes an existing VM (whatever its answer was).
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Time since the simulation started.
    pub at: Duration,
    /// HTTP method.
    pub method: String,
    /// Templated endpoint.
    pub endpoint: String,
    /// Target VMID.
    pub vmid: u32,
    /// Node of the URL.
    pub node: String,
    /// HTTP status answered.
    pub status: u16,
}

#[derive(Debug)]
pub(crate) struct Storage {
    pub id: String,
    pub content: Vec<String>,
    pub root: PathBuf,
    pub shared: bool,
}

#[derive(Debug, Default)]
pub(crate) struct PveState {
    pub nodes: Vec<String>,
    pub vms: BTreeMap<u32, Vm>,
    pub cts: BTreeMap<u32, Container>,
    pub tasks: BTreeMap<String, Task>,
    pub snapshot: BTreeMap<u32, SnapEntry>,
    pub last_snapshot: Option<Instant>,
    pub next_pid: u32,
    pub storages: Vec<Storage>,
    pub created: Vec<CreatedVm>,
    pub mutations: Vec<Mutation>,
    pub events: Vec<VmEvent>,
    pub unavailable: Option<Unavailable>,
}

/// Scope of a runner registration or a token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `owner/name`.
    Repo(String),
    /// Organisation login.
    Org(String),
}

impl Scope {
    /// Whether a runner of this scope can run jobs of `repo` (`owner/name`).
    pub fn serves(&self, repo: &str) -> bool {
        match self {
            Scope::Repo(r) => r.eq_ignore_ascii_case(repo),
            Scope::Org(o) => repo
                .split('/')
                .next()
                .is_some_and(|owner| owner.eq_ignore_ascii_case(o)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub id: u64,
    pub name: String,
    pub scope: Scope,
    pub labels: Vec<(u64, String, &'static str)>,
    pub online: bool,
    pub busy: bool,
    pub ephemeral: bool,
    pub group_id: u64,
    pub os: Option<Os>,
    pub job: Option<u64>,
    pub jit: bool,
}

/// Status of a simulated job (GitHub's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for the jobs it `needs` (listed as `pending`).
    Pending,
    /// Queued: waiting for a runner.
    Queued,
    /// Running on a runner.
    InProgress,
    /// Done (see the conclusion).
    Completed,
}

impl JobStatus {
    /// GitHub's string.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: u64,
    pub run_id: u64,
    pub repo: String,
    pub name: String,
    pub labels: Vec<String>,
    pub needs: Vec<u64>,
    pub status: JobStatus,
    pub conclusion: Option<String>,
    pub duration: Duration,
    pub created: Instant,
    pub created_at: OffsetDateTime,
    pub queued: Option<Instant>,
    pub started: Option<Instant>,
    pub started_at: Option<OffsetDateTime>,
    pub completed: Option<Instant>,
    pub completed_at: Option<OffsetDateTime>,
    pub finish_at: Option<Instant>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub id: u64,
    pub repo: String,
    pub run_number: u64,
    pub jobs: Vec<u64>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub status: &'static str,
    pub conclusion: Option<&'static str>,
}

/// Kind of credential GitHub issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// `registration-token`.
    RegistrationToken,
    /// `remove-token`.
    RemoveToken,
    /// `generate-jitconfig`.
    JitConfig,
}

#[derive(Debug, Clone)]
pub(crate) struct Credential {
    pub kind: CredentialKind,
    pub scope: Scope,
    pub secret: String,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub issued: Instant,
    pub expires: Instant,
    pub used: bool,
}

#[derive(Debug, Default)]
pub(crate) struct GhState {
    pub repos: BTreeSet<String>,
    pub orgs: BTreeSet<String>,
    pub runs: BTreeMap<u64, Run>,
    pub jobs: BTreeMap<u64, Job>,
    pub runners: BTreeMap<u64, Runner>,
    pub credentials: Vec<Credential>,
    pub install_tokens: BTreeSet<String>,
    pub next_id: u64,
    pub next_label_id: u64,
    pub label_ids: BTreeMap<String, u64>,
    pub rate_used: u32,
    pub rate_reset: Option<Instant>,
    pub rate_reset_epoch: i64,
    pub secondary_until: Option<Instant>,
    pub removed_runners: Vec<(u64, String)>,
}

/// The whole simulation.
#[derive(Debug)]
pub(crate) struct World {
    pub cfg: SimConfig,
    pub start: Instant,
    pub fault_rng: StdRng,
    pub id_rng: StdRng,
    pub pve: PveState,
    pub gh: GhState,
    pub counters: BTreeMap<RequestKey, u64>,
    pub github_budgeted: u64,
}

impl World {
    pub fn new(cfg: SimConfig) -> Self {
        let fault_rng = StdRng::seed_from_u64(cfg.seed);
        let id_rng = StdRng::seed_from_u64(cfg.seed ^ 0x05ee_d1d5);
        Self {
            cfg,
            start: Instant::now(),
            fault_rng,
            id_rng,
            pve: PveState {
                next_pid: 4000,
                ..PveState::default()
            },
            gh: GhState {
                next_id: 1000,
                next_label_id: 100,
                ..GhState::default()
            },
            counters: BTreeMap::new(),
            github_budgeted: 0,
        }
    }

    pub fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    /// A fault draw with probability `p` (clamped to 0..=1).
    pub fn fault(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.fault_rng.random_bool(p.clamp(0.0, 1.0))
    }

    /// Random alphanumeric string from the id generator.
    pub fn random_string(&mut self, len: usize, alphabet: &[u8]) -> String {
        (0..len)
            .map(|_| {
                let i = self.id_rng.random_range(0..alphabet.len());
                char::from(alphabet[i])
            })
            .collect()
    }

    pub fn count(&mut self, service: Service, method: &str, endpoint: &str, status: u16) {
        let key = RequestKey {
            service,
            method: method.to_string(),
            endpoint: endpoint.to_string(),
            status,
        };
        *self.counters.entry(key).or_insert(0) += 1;
    }

    pub fn vm_event(&mut self, vmid: u32, kind: VmEventKind) {
        let name = self
            .pve
            .vms
            .get(&vmid)
            .and_then(|v| v.name().map(str::to_string));
        let at = self.since_start();
        self.pve.events.push(VmEvent {
            at,
            vmid,
            name,
            kind,
        });
    }

    /// Advances time: tasks, guests, jobs, pvestatd snapshots.
    pub fn tick(&mut self, now: Instant) {
        self.complete_tasks(now);
        self.tick_guests(now);
        self.tick_github(now);
        self.tick_guests(now);
        let due = self
            .pve
            .last_snapshot
            .is_none_or(|last| now.duration_since(last) >= self.cfg.timing.status_interval);
        if due {
            self.take_snapshot(now);
        }
    }
}

pub(crate) const ALNUM_UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
pub(crate) const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
