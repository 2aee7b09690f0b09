//! The pure planner (DESIGN §2.7 step 3): what to start, delete and deregister.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;

use crate::classify::{
    DEREGISTER_GRACE_SECS, Phase, RunnerIndex, StaleReason, VmContext, classify, ownership,
};
use crate::config::{Config, Pool};
use crate::fxhash::{self, FxHashMap, FxHashSet};
use crate::marks;
use crate::matching::{MatchResult, match_job};
use crate::observed::{InFlight, Job, NodeInfo, Observed, Op};

/// A VM to clone and start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Start {
    /// Pool name.
    pub pool: String,
    /// Node to clone onto.
    pub node: String,
    /// The VMID to use (lowest free in the pool's range, unused cluster-wide).
    pub vmid: u32,
    /// VM and runner name (`<prefix><vmid>-<base36(created_unix)>`).
    pub runner_name: String,
    /// Creation time written into the name and marker (the plan's `now`).
    pub created_unix: u64,
    /// The queued job this VM is started for (`None` for `min_idle` warm-pool VMs).
    pub for_job: Option<u64>,
}

/// Why a VM is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// Powered off (its job is done).
    Stopped,
    /// Creating/booting longer than `boot_timeout`.
    BootTimeout,
    /// Older than `max_lifetime` and not busy.
    MaxLifetime,
    /// Its runner registration is gone while the VM runs.
    RunnerVanished,
    /// Never got its credential (e.g. the dispatcher died mid-provision).
    HalfMade,
    /// An idle runner beyond demand and `min_idle` for longer than [`IDLE_SURPLUS_GRACE_SECS`] (another
    /// runner took the job it was made for). The dispatcher removes its registration first and stops only
    /// if that succeeded (GitHub refuses while a job runs).
    IdleSurplus,
}

/// How long an idle runner beyond demand and `min_idle` is kept warm before it is removed.
pub const IDLE_SURPLUS_GRACE_SECS: u64 = 60;

impl From<StaleReason> for DeleteReason {
    fn from(r: StaleReason) -> Self {
        match r {
            StaleReason::BootTimeout => Self::BootTimeout,
            StaleReason::MaxLifetime => Self::MaxLifetime,
            StaleReason::RunnerVanished => Self::RunnerVanished,
            StaleReason::HalfMade => Self::HalfMade,
        }
    }
}

impl std::fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stopped => "stopped",
            Self::BootTimeout => "boot timeout",
            Self::MaxLifetime => "max lifetime",
            Self::RunnerVanished => "runner vanished",
            Self::HalfMade => "half-made",
            Self::IdleSurplus => "idle surplus",
        })
    }
}

/// A VM to stop (if running) and destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delete {
    /// Pool name.
    pub pool: String,
    /// The VM's node.
    pub node: String,
    /// VMID.
    pub vmid: u32,
    /// Its runner/VM name (the registration to remove too, if still present).
    pub name: String,
    /// Why.
    pub reason: DeleteReason,
}

/// Why a registration is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeregisterReason {
    /// A registration of ours with no VM in the cluster (older than the grace).
    NoVm,
}

/// A runner registration to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deregister {
    /// Runner id.
    pub runner_id: u64,
    /// Runner name.
    pub name: String,
    /// Why.
    pub reason: DeregisterReason,
}

/// Why a job gets no VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnmatchedReason {
    /// Not a self-hosted job.
    NotOurs,
    /// No pool has all its labels.
    NoPool {
        /// The pool lacking the fewest labels.
        nearest_pool: String,
        /// The labels it lacks.
        missing_labels: Vec<String>,
    },
}

impl std::fmt::Display for UnmatchedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotOurs => f.write_str("not a self-hosted job (GitHub-hosted labels only)"),
            Self::NoPool {
                nearest_pool,
                missing_labels,
            } => write!(
                f,
                "no pool has all its labels; nearest pool {nearest_pool:?} lacks [{}]",
                missing_labels.join(", ")
            ),
        }
    }
}

/// A job that matches no pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    /// Job id.
    pub job_id: u64,
    /// Why.
    pub reason: UnmatchedReason,
}

/// What kept a pool from starting all the VMs it wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockedBy {
    /// `PAUSE_ON_STOPPED` and the pool has a stopped VM.
    PausedOnStopped,
    /// The pool's `max_runners`.
    PoolCap,
    /// `max_total_runners` (slots went to older jobs of other pools first).
    TotalCap,
    /// No free VMID left in the pool's range.
    RangeExhausted,
    /// None of the pool's nodes is online.
    NoOnlineNode,
}

/// The numbers behind one pool's decision.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PoolNumbers {
    /// Pool name.
    pub pool: String,
    /// Queued jobs routed to the pool.
    pub demand: u32,
    /// Owned VMs being created, plus in-flight provisions not yet listed.
    pub creating: u32,
    /// Ready VMs whose runner is not online yet.
    pub booting: u32,
    /// Idle runners.
    pub idle: u32,
    /// Busy runners.
    pub busy: u32,
    /// Stopped VMs.
    pub stopped: u32,
    /// Runner VMs whose job is done and that are powering off (not supply, counted toward the caps).
    pub finishing: u32,
    /// Stale VMs (deleted unless `DISABLE_CLEANUP`, locked, or not fully confirmed as ours).
    pub stale: u32,
    /// VMs the dispatcher is deleting.
    pub deleting: u32,
    /// VMs counted toward the caps: every owned VM but stopped ones and deletions of stopped VMs, plus
    /// provisions not listed yet.
    pub active: u32,
    /// `max_runners` (0 = unlimited).
    pub cap: u32,
    /// `min_idle`.
    pub min_idle: u32,
    /// `max(demand, min_idle) − (creating + booting + idle)`, at least 0.
    pub wanted: u32,
    /// VMs this plan starts.
    pub to_start: u32,
    /// Set when `to_start < wanted`.
    pub blocked_by: Option<BlockedBy>,
}

/// The actions of one reconcile pass.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Plan {
    /// VMs to start, oldest job first.
    pub starts: Vec<Start>,
    /// VMs to delete, by VMID.
    pub deletes: Vec<Delete>,
    /// Registrations to remove, by name.
    pub deregister: Vec<Deregister>,
    /// Jobs no pool takes, oldest first.
    pub unmatched: Vec<Unmatched>,
    /// Per-pool numbers, in file order.
    pub pools: Vec<PoolNumbers>,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    creating: u32,
    booting: u32,
    idle: u32,
    busy: u32,
    finishing: u32,
    stopped: u32,
    stale: u32,
    deleting: u32,
    active: u32,
}

impl Tally {
    fn add(&mut self, phase: Phase) {
        match phase {
            Phase::Creating => self.creating += 1,
            Phase::Booting => self.booting += 1,
            Phase::Idle => self.idle += 1,
            Phase::Busy => self.busy += 1,
            Phase::Finishing => self.finishing += 1,
            Phase::Stopped => self.stopped += 1,
            Phase::Deleting => self.deleting += 1,
            Phase::Stale(_) => self.stale += 1,
        }
        if phase.counts_toward_caps() {
            self.active += 1;
        }
    }

    fn supply(&self) -> u32 {
        self.creating + self.booting + self.idle
    }
}

/// The lowest `n` free VMIDs of the pool's range (not in `taken`).
fn free_vmids(pool: &Pool, n: u32, taken: &FxHashSet<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(n as usize);
    if n == 0 {
        return out;
    }
    for id in pool.vmid_start..=pool.vmid_end {
        if !taken.contains(&id) {
            out.push(id);
            if count(out.len()) >= n {
                break;
            }
        }
    }
    out
}

struct Nodes<'a> {
    info: FxHashMap<&'a str, &'a NodeInfo>,
    known: bool,
}

impl<'a> Nodes<'a> {
    fn new(list: &'a [NodeInfo]) -> Self {
        Self {
            info: list.iter().map(|n| (n.name.as_str(), n)).collect(),
            known: !list.is_empty(),
        }
    }

    fn online(&self, name: &str) -> bool {
        !self.known || self.info.get(name).is_some_and(|n| n.online)
    }

    fn mem_free(&self, name: &str) -> u64 {
        self.info.get(name).map_or(0, |n| n.mem_free)
    }

    /// Fewest runner VMs of ours, then most free memory, then name; offline nodes skipped.
    fn choose<'p>(&self, pool: &'p Pool, load: &FxHashMap<&str, u32>) -> Option<&'p str> {
        pool.nodes
            .iter()
            .map(String::as_str)
            .filter(|n| self.online(n))
            .min_by_key(|n| {
                (
                    load.get(n).copied().unwrap_or(0),
                    Reverse(self.mem_free(n)),
                    *n,
                )
            })
    }
}

/// Computes the plan for one pass. Pure and deterministic: the same input gives the same plan.
///
/// ```no_run
/// # fn demo(config: &pool_scheduler::Config, observed: &pool_scheduler::Observed, now: u64) {
/// let plan = pool_scheduler::plan(config, observed, now);
/// for s in &plan.starts {
///     println!("start {} on {} as {}", s.vmid, s.node, s.runner_name);
/// }
/// # }
/// ```
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn plan(config: &Config, observed: &Observed, now_unix: u64) -> Plan {
    let pools = config.pools();
    let flags = config.flags();
    let runners = RunnerIndex::new(&observed.runners);
    let pool_by_name: FxHashMap<&str, usize> = pools
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();

    // In-flight work, by VMID (a delete wins over a provision of the same VMID).
    let mut in_flight: FxHashMap<u32, &InFlight> = fxhash::map(observed.in_flight.len());
    let mut in_flight_names: FxHashSet<&str> = fxhash::set(observed.in_flight.len());
    for f in &observed.in_flight {
        in_flight_names.insert(f.runner_name.as_str());
        let e = in_flight.entry(f.vmid).or_insert(f);
        if f.op == Op::Delete {
            *e = f;
        }
    }

    let mut taken: FxHashSet<u32> =
        fxhash::set(observed.used_vmids.len() + observed.vms.len() + observed.in_flight.len());
    taken.extend(observed.used_vmids.iter().copied());
    taken.extend(observed.in_flight.iter().map(|f| f.vmid));

    let mut tally = vec![Tally::default(); pools.len()];
    let mut node_load: FxHashMap<&str, u32> = fxhash::map(16);
    let mut vm_names: FxHashSet<&str> = fxhash::set(observed.vms.len());
    let mut nameless: FxHashSet<u32> = fxhash::set(16);
    let mut counted_in_flight: FxHashSet<u32> = fxhash::set(observed.in_flight.len());
    let mut deletes = Vec::new();
    // Idle runners of each pool that have been idle past the grace: (idle since, vmid, node, name).
    let mut idle_candidates: Vec<Vec<(u64, u32, &str, &str)>> = vec![Vec::new(); pools.len()];

    for vm in &observed.vms {
        taken.insert(vm.vmid);
        let name = vm.name.as_deref().filter(|n| !n.is_empty());
        if let Some(n) = name {
            vm_names.insert(n);
        }
        if let Some(m) = &vm.marker {
            vm_names.insert(m.runner.as_str());
        } else if name.is_none() {
            nameless.insert(vm.vmid);
        }
        let Some(owned) = ownership(config, vm) else {
            continue;
        };
        let pool = &pools[owned.pool];
        let flight = in_flight.get(&vm.vmid);
        if flight.is_some() {
            counted_in_flight.insert(vm.vmid);
        }
        let ctx = VmContext {
            in_flight: flight.map(|f| f.op),
            vanished_since: observed.vanished_since.get(&vm.vmid).copied(),
        };
        let phase = classify(vm, &owned, pool, &runners, ctx, now_unix);
        tally[owned.pool].add(phase);
        // A VM being deleted runs until its stop task ends: it keeps its slot unless it was stopped already.
        let deleting_running = phase == Phase::Deleting && flight.is_some_and(|f| !f.stopped);
        if deleting_running {
            tally[owned.pool].active += 1;
        }
        if phase.counts_toward_caps() || deleting_running {
            *node_load.entry(vm.node.as_str()).or_default() += 1;
        }
        if phase == Phase::Idle
            && owned.deletable
            && vm.lock.is_none()
            && !flags.disable_cleanup
            && let (Some(since), Some(name)) =
                (observed.idle_since.get(&vm.vmid), owned.runner_name)
            && now_unix.saturating_sub(*since) >= IDLE_SURPLUS_GRACE_SECS
        {
            idle_candidates[owned.pool].push((*since, vm.vmid, vm.node.as_str(), name));
        }
        let reason = match phase {
            Phase::Stopped => Some(DeleteReason::Stopped),
            Phase::Stale(r) => Some(DeleteReason::from(r)),
            _ => None,
        };
        if let Some(reason) = reason
            && owned.deletable
            && vm.lock.is_none()
            && !flags.disable_cleanup
        {
            deletes.push(Delete {
                pool: pool.name.clone(),
                node: vm.node.clone(),
                vmid: vm.vmid,
                name: owned.runner_name.unwrap_or_default().to_owned(),
                reason,
            });
        }
    }
    for f in &observed.in_flight {
        if f.op != Op::Provision || counted_in_flight.contains(&f.vmid) {
            continue;
        }
        if let Some(&i) = pool_by_name.get(f.pool.as_str()) {
            counted_in_flight.insert(f.vmid);
            tally[i].creating += 1;
            tally[i].active += 1;
            *node_load.entry(f.node.as_str()).or_default() += 1;
        }
    }
    deletes.sort_unstable_by_key(|d| d.vmid);

    // Demand: oldest job first, duplicates dropped, identical label lists matched once.
    let mut jobs: Vec<&Job> = observed.jobs.iter().collect();
    jobs.sort_unstable_by_key(|j| (j.created_at_unix, j.id));
    let mut seen: FxHashSet<u64> = fxhash::set(jobs.len());
    jobs.retain(|j| seen.insert(j.id));
    let mut cache: FxHashMap<&[String], MatchResult> = fxhash::map(64);
    let mut pool_jobs: Vec<Vec<&Job>> = vec![Vec::new(); pools.len()];
    let mut unmatched = Vec::new();
    for j in jobs {
        let m = cache
            .entry(j.labels.as_slice())
            .or_insert_with(|| match_job(config, &j.labels));
        match m {
            MatchResult::Matched { pool } => pool_jobs[*pool].push(j),
            MatchResult::NotOurs => unmatched.push(Unmatched {
                job_id: j.id,
                reason: UnmatchedReason::NotOurs,
            }),
            MatchResult::NoPool {
                nearest_pool,
                missing_labels,
            } => unmatched.push(Unmatched {
                job_id: j.id,
                reason: UnmatchedReason::NoPool {
                    nearest_pool: pools
                        .get(*nearest_pool)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    missing_labels: missing_labels.clone(),
                },
            }),
        }
    }

    // Idle runners beyond what demand and min_idle need, idle the longest first.
    for (i, pool) in pools.iter().enumerate() {
        let t = &mut tally[i];
        let keep = count(pool_jobs[i].len())
            .max(pool.min_idle)
            .saturating_sub(t.creating + t.booting);
        let surplus = t.idle.saturating_sub(keep) as usize;
        let candidates = &mut idle_candidates[i];
        candidates.sort_unstable();
        for &(_, vmid, node, name) in candidates.iter().take(surplus) {
            deletes.push(Delete {
                pool: pool.name.clone(),
                node: node.to_owned(),
                vmid,
                name: name.to_owned(),
                reason: DeleteReason::IdleSurplus,
            });
            // Still running until stopped: it keeps counting toward the caps in this plan.
            t.idle -= 1;
            t.deleting += 1;
        }
    }
    deletes.sort_unstable_by_key(|d| d.vmid);

    // Per-pool wants, limited by PAUSE_ON_STOPPED, the pool cap, nodes and free VMIDs.
    let nodes = Nodes::new(&observed.nodes);
    let mut numbers: Vec<PoolNumbers> = Vec::with_capacity(pools.len());
    let mut ids: Vec<Vec<u32>> = Vec::with_capacity(pools.len());
    for (i, pool) in pools.iter().enumerate() {
        let t = tally[i];
        let demand = count(pool_jobs[i].len());
        let wanted = demand.max(pool.min_idle).saturating_sub(t.supply());
        let mut allowed = wanted;
        let mut blocked_by = None;
        if allowed > 0 && flags.pause_on_stopped && t.stopped > 0 {
            allowed = 0;
            blocked_by = Some(BlockedBy::PausedOnStopped);
        }
        if let Some(cap) = pool.cap() {
            let room = cap.saturating_sub(t.active);
            if allowed > room {
                allowed = room;
                blocked_by = Some(BlockedBy::PoolCap);
            }
        }
        if allowed > 0 && !pool.nodes.iter().any(|n| nodes.online(n)) {
            allowed = 0;
            blocked_by = Some(BlockedBy::NoOnlineNode);
        }
        let free = free_vmids(pool, allowed, &taken);
        if count(free.len()) < allowed {
            allowed = count(free.len());
            blocked_by = Some(BlockedBy::RangeExhausted);
        }
        ids.push(free);
        numbers.push(PoolNumbers {
            pool: pool.name.clone(),
            demand,
            creating: t.creating,
            booting: t.booting,
            idle: t.idle,
            busy: t.busy,
            stopped: t.stopped,
            finishing: t.finishing,
            stale: t.stale,
            deleting: t.deleting,
            active: t.active,
            cap: pool.max_runners,
            min_idle: pool.min_idle,
            wanted,
            to_start: allowed,
            blocked_by,
        });
    }

    // The total cap: hand out the remaining slots oldest job first across pools; warm-pool (min_idle)
    // slots come after every job, in file order.
    let total_active: u64 = tally.iter().map(|t| u64::from(t.active)).sum();
    let mut room_total = match config.max_total_runners() {
        0 => u64::MAX,
        cap => u64::from(cap).saturating_sub(total_active),
    };
    let key = |i: usize, k: u32| -> (u8, u64, u64) {
        let supply = tally[i].supply() as usize;
        match pool_jobs[i].get(supply + k as usize) {
            Some(j) => (0, j.created_at_unix, j.id),
            None => (1, i as u64, u64::from(k)),
        }
    };
    let mut heap = BinaryHeap::new();
    for (i, n) in numbers.iter().enumerate() {
        if n.to_start > 0 {
            heap.push(Reverse((key(i, 0), i, 0u32)));
        }
    }
    let mut granted = vec![0u32; pools.len()];
    let mut starts = Vec::new();
    while room_total > 0 {
        let Some(Reverse((k, i, n))) = heap.pop() else {
            break;
        };
        let pool = &pools[i];
        // A node exists: pools without an online node were given nothing to start above.
        let Some(node) = nodes.choose(pool, &node_load) else {
            continue;
        };
        room_total -= 1;
        granted[i] += 1;
        if n + 1 < numbers[i].to_start {
            heap.push(Reverse((key(i, n + 1), i, n + 1)));
        }
        *node_load.entry(node).or_default() += 1;
        let vmid = ids[i][n as usize];
        starts.push(Start {
            pool: pool.name.clone(),
            node: node.to_owned(),
            vmid,
            runner_name: marks::runner_name(&pool.runner_name_prefix, vmid, now_unix),
            created_unix: now_unix,
            for_job: (k.0 == 0).then_some(k.2),
        });
    }
    for (n, g) in numbers.iter_mut().zip(&granted) {
        if *g < n.to_start {
            n.to_start = *g;
            n.blocked_by = Some(BlockedBy::TotalCap);
        }
    }

    // Registrations of ours without a VM.
    let mut deregister = Vec::new();
    if !flags.disable_cleanup {
        for r in &observed.runners {
            if r.busy
                || in_flight_names.contains(r.name.as_str())
                || vm_names.contains(r.name.as_str())
            {
                continue;
            }
            let Some((_, vmid, created)) = config.parse_runner_name(&r.name) else {
                continue;
            };
            if nameless.contains(&vmid) || in_flight.contains_key(&vmid) {
                continue;
            }
            if now_unix.saturating_sub(created) < DEREGISTER_GRACE_SECS {
                continue;
            }
            deregister.push(Deregister {
                runner_id: r.id,
                name: r.name.clone(),
                reason: DeregisterReason::NoVm,
            });
        }
        deregister.sort_unstable_by(|a, b| a.name.cmp(&b.name).then(a.runner_id.cmp(&b.runner_id)));
    }

    Plan {
        starts,
        deletes,
        deregister,
        unmatched,
        pools: numbers,
    }
}
