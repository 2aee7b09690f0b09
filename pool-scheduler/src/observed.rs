//! What the dispatcher observed: raw facts, no decisions. The dispatcher fills [`Observed`] and passes it to
//! [`crate::plan`].
//!
//! **Observation order matters.** Take the snapshot of [`Observed::in_flight`] first, then list the VMs
//! (`/cluster/resources`), then the runner registrations. A provision that finishes after the in-flight
//! snapshot is then listed with its `ghr-ready` tag, and a VM listed as ready has its JIT registration in the
//! runner list; the other order could make a just-finished VM look half-made or vanished.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::marks::Marker;

/// Power state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Power {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Paused / suspended.
    Paused,
    /// Not known (e.g. `/cluster/resources` says `unknown` right after a clone).
    #[default]
    Unknown,
}

/// One QEMU VM as listed cluster-wide (every VM, ours or not, templates included).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObservedVm {
    /// VMID.
    pub vmid: u32,
    /// The node it lives on.
    pub node: String,
    /// Its name; `None` (or empty) while the cluster listing has not caught up.
    pub name: Option<String>,
    /// Its tags (Proxmox lowercases them).
    pub tags: Vec<String>,
    /// The parsed description marker, `None` when not fetched or absent.
    pub marker: Option<Marker>,
    /// Whether it is a template (templates are never ours).
    pub template: bool,
    /// The config lock (`clone`, `create`, `backup`, …), if any.
    pub lock: Option<String>,
    /// Power state.
    pub power: Power,
    /// `true` when `power` came from `status/current` (the listing lags).
    pub power_confirmed: bool,
    /// Uptime in seconds, when known.
    pub uptime_secs: Option<u64>,
}

/// A queued job (demand).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Job {
    /// Job id (unique; duplicates are counted once).
    pub id: u64,
    /// Its workflow run id.
    pub run_id: u64,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// When it was created, unix seconds (older jobs are served first when capacity is short).
    pub created_at_unix: u64,
}

/// A runner registration on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunnerReg {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// `status == "online"`.
    pub online: bool,
    /// Running a job.
    pub busy: bool,
}

/// What the dispatcher is doing to a VM right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Clone/configure/start/inject in progress.
    Provision,
    /// Stop/destroy in progress.
    Delete,
}

/// Work in flight in the dispatcher: a provision counts as creating supply, its VMID is reserved, its runner
/// registration is never removed, and it is never deleted; a VM being deleted is not deleted again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    /// Pool name.
    pub pool: String,
    /// VMID.
    pub vmid: u32,
    /// Target node (used for spreading).
    pub node: String,
    /// Runner name.
    pub runner_name: String,
    /// What is being done.
    pub op: Op,
    /// `Delete` only: the VM was confirmed stopped when its deletion began, so it no longer holds a slot of
    /// the caps. A deletion of a running VM (stale, idle surplus) keeps counting until it is gone: the VM
    /// runs until the stop task ends.
    #[serde(default)]
    pub stopped: bool,
}

/// A cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Whether it is online.
    pub online: bool,
    /// Free memory in bytes.
    pub mem_free: u64,
}

/// Everything a plan is computed from (besides the configuration and the time).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Observed {
    /// Every QEMU VM in the cluster.
    pub vms: Vec<ObservedVm>,
    /// Every VMID in use cluster-wide (VMs and containers).
    pub used_vmids: BTreeSet<u32>,
    /// Queued jobs (from runs that are `queued` and `in_progress`).
    pub jobs: Vec<Job>,
    /// Runner registrations.
    pub runners: Vec<RunnerReg>,
    /// Work in flight (snapshot taken before listing the VMs).
    pub in_flight: Vec<InFlight>,
    /// Cluster nodes. Empty = unknown: every pool node is assumed online. Otherwise a pool node missing from
    /// the list is treated as offline.
    pub nodes: Vec<NodeInfo>,
    /// Optional hint: VMID → first time (unix secs) the dispatcher saw that VM ready and running without a
    /// runner registration. Fill it only for pools whose registration exists from provisioning on (JIT);
    /// see [`crate::classify`] for how it shortens the wait before `RunnerVanished`.
    pub vanished_since: BTreeMap<u32, u64>,
    /// Hint from the caller: since when (unix seconds) an owned VM's runner has been online and idle, by
    /// VMID. Idle runners beyond demand and `min_idle` are removed once idle for
    /// [`crate::IDLE_SURPLUS_GRACE_SECS`]; without the hint idle runners are never removed.
    #[serde(default)]
    pub idle_since: BTreeMap<u32, u64>,
}
