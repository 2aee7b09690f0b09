//! Ownership (DESIGN §2.5) and phase classification (DESIGN §2.7 step 2), both pure.
//!
//! # Ownership
//! [`ownership`] is the one place that decides whether a VM is ours. A VM is owned by pool P only if all three
//! marks hold:
//! 1. its VMID is inside P's range (and it is not a template);
//! 2. its name starts with P's `runner_name_prefix` — or the name is still unknown (the cluster listing
//!    lags): then it is "not foreign", counts as supply, but is deletable only when its description marker
//!    names P and the marker's runner name carries this VMID;
//! 3. it carries our mark: the `ghr-managed` tag or a description marker naming P.
//!
//! A marker or a `ghr-pool-…` tag naming another pool makes the marks contradict each other: the VM is left
//! alone. So does a `ghr-inst-…` tag or a marker `instance=` naming another dispatcher instance. An owned VM whose name is a runner name with a different VMID, or whose marker names another
//! runner, is counted but never deleted.
//!
//! # Phases and stale rules
//! The VM's age is measured from its creation time (from its name, else its marker, else its uptime, else 0).
//! In this order:
//! * in flight `Delete` → [`Phase::Deleting`];
//! * registration busy → [`Phase::Busy`] (never stale, never deleted);
//! * in flight `Provision` → [`Phase::Creating`];
//! * power `Stopped` and confirmed by `status/current` → [`Phase::Stopped`];
//! * registration online, not busy → [`Phase::Idle`], or `Stale(MaxLifetime)` once age ≥ `max_lifetime`;
//! * not tagged `ghr-ready`: locked (any lock, e.g. `clone`) → `Creating` until age ≥ `boot_timeout`, then
//!   `Stale(BootTimeout)`; unlocked → `Stale(HalfMade)` after [`HALF_MADE_GRACE_SECS`] (none: a clone
//!   finished after the dispatcher died: it will never get a credential);
//! * ready, registration exists but offline → `Booting` until age ≥ `boot_timeout`, then `Stale(BootTimeout)`;
//! * ready, no registration with its name → `Booting` (a registration-token runner registers itself while
//!   booting), until either age ≥ `boot_timeout`, or the dispatcher's `vanished_since` hint is at least
//!   [`VANISHED_GRACE_SECS`] old: then `Stale(RunnerVanished)`. Without the hint the rule is stateless.

use serde::Serialize;

use crate::config::{Config, Pool};
use crate::fxhash::{self, FxHashMap};
use crate::marks;
use crate::observed::{ObservedVm, Op, Power, RunnerReg};

/// How long an owned, unlocked, not-ready VM outside any in-flight work stays `Creating` (seconds): none.
/// A provision in flight is never half-made (the dispatcher reports its work, and keeps reporting a finished
/// provision until a listing shows it, see [`crate::ledger`]), so only a VM whose provision was cut by a
/// crash or restart reaches this — it will never get a credential, and holds a slot while jobs queue: it is
/// replaced at once. (Consequence: `dispatcher once` must not run beside a running service of the same
/// instance; `plan` and `status` only read.)
pub const HALF_MADE_GRACE_SECS: u64 = 0;
/// Whether an unlocked, not-ready VM outside any work, `age` seconds old, is half-made (see
/// [`HALF_MADE_GRACE_SECS`]; a function so the grace can be raised without touching the rule).
#[allow(clippy::absurd_extreme_comparisons)]
fn half_made(age: u64) -> bool {
    age >= HALF_MADE_GRACE_SECS
}

/// How long after the first sighting of a ready VM without a registration it becomes `RunnerVanished`.
pub const VANISHED_GRACE_SECS: u64 = 120;
/// Minimum age (from the name) of a registration without a VM before it is removed. A clone's VMID is listed
/// by `/cluster/resources` as soon as its config exists (only name/status lag), and provisions in flight
/// are reported, so this only covers the moment between minting and the clone request.
pub const DEREGISTER_GRACE_SECS: u64 = 30;

/// Why a VM is stale (to be deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StaleReason {
    /// Creating or booting for longer than `boot_timeout` since creation.
    BootTimeout,
    /// Older than `max_lifetime` and not busy.
    MaxLifetime,
    /// Ready and running, but its runner registration is gone.
    RunnerVanished,
    /// Not ready, not locked, not in flight, older than the grace: it will never get a credential.
    HalfMade,
}

/// The phase of an owned VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase", content = "reason")]
pub enum Phase {
    /// Being cloned/configured/started (supply).
    Creating,
    /// Started and ready, runner not yet online (supply).
    Booting,
    /// Runner online and idle (supply).
    Idle,
    /// Runner running a job.
    Busy,
    /// Ready JIT runner VM whose registration is gone (its one job is done, or the runner was removed):
    /// it is powering itself off. Not supply (it will never take a job), still counted toward the caps;
    /// `Stale(RunnerVanished)` once [`VANISHED_GRACE_SECS`] passed since the registration vanished.
    Finishing,
    /// Powered off (confirmed): done.
    Stopped,
    /// The dispatcher is deleting it.
    Deleting,
    /// To be deleted.
    Stale(StaleReason),
}

impl Phase {
    /// Whether the phase counts as supply for queued jobs (creating, booting, idle).
    #[must_use]
    pub fn is_supply(self) -> bool {
        matches!(self, Phase::Creating | Phase::Booting | Phase::Idle)
    }

    /// Whether the VM counts toward the caps (every phase but stopped and deleting).
    #[must_use]
    pub fn counts_toward_caps(self) -> bool {
        !matches!(self, Phase::Stopped | Phase::Deleting)
    }
}

/// The result of [`ownership`] for an owned VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owned<'a> {
    /// Index of the owning pool.
    pub pool: usize,
    /// Whether all three marks are confirmed (only then may it be deleted).
    pub deletable: bool,
    /// Its runner name: the VM name, else the marker's runner name.
    pub runner_name: Option<&'a str>,
    /// Creation time from the name, else from the marker.
    pub created_unix: Option<u64>,
}

/// The ownership rule (see the module docs). `None` = not ours: never touched.
#[must_use]
pub fn ownership<'a>(config: &Config, vm: &'a ObservedVm) -> Option<Owned<'a>> {
    if vm.template {
        return None;
    }
    let pool_idx = config.pool_for_vmid(vm.vmid)?;
    let pool = &config.pools()[pool_idx];

    // Another dispatcher instance's VM is never ours, whatever else it carries (VMs marked before instance
    // identities existed carry no instance and stay ours).
    let instance = config.instance();
    if marks::tagged_instance(&vm.tags).is_some_and(|id| Some(id) != instance)
        || vm
            .marker
            .as_ref()
            .and_then(|m| m.instance.as_deref())
            .is_some_and(|id| Some(id) != instance)
    {
        return None;
    }
    let marker_ok = match &vm.marker {
        Some(m) if m.pool == pool.name => true,
        Some(_) => return None,
        None => false,
    };
    let own_tag = pool.tag();
    if vm
        .tags
        .iter()
        .any(|t| t.starts_with(marks::POOL_TAG_PREFIX) && !t.eq_ignore_ascii_case(own_tag))
    {
        return None;
    }
    if !(marker_ok || marks::has_managed_tag(&vm.tags)) {
        return None;
    }
    let prefix = pool.runner_name_prefix.as_str();
    let marker_runner = vm.marker.as_ref().map(|m| m.runner.as_str());
    match vm.name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => {
            if !name.starts_with(prefix) {
                return None;
            }
            let parsed = marks::parse_runner_name(prefix, name);
            let vmid_matches = parsed.is_none_or(|(id, _)| id == vm.vmid);
            let marker_agrees = marker_runner.is_none_or(|r| r == name);
            Some(Owned {
                pool: pool_idx,
                deletable: vmid_matches && marker_agrees,
                runner_name: Some(name),
                created_unix: parsed
                    .map(|(_, c)| c)
                    .or(vm.marker.as_ref().map(|m| m.created)),
            })
        }
        None => {
            let deletable = marker_ok
                && marker_runner
                    .and_then(|r| marks::parse_runner_name(prefix, r))
                    .is_some_and(|(id, _)| id == vm.vmid);
            Some(Owned {
                pool: pool_idx,
                deletable,
                runner_name: marker_runner,
                created_unix: vm.marker.as_ref().map(|m| m.created),
            })
        }
    }
}

/// Runner registrations indexed by name (first one wins on duplicates).
#[derive(Debug, Clone, Default)]
pub struct RunnerIndex<'a> {
    by_name: FxHashMap<&'a str, &'a RunnerReg>,
}

impl<'a> RunnerIndex<'a> {
    /// Indexes `runners` by name.
    #[must_use]
    pub fn new(runners: &'a [RunnerReg]) -> Self {
        let mut by_name = fxhash::map(runners.len());
        for r in runners {
            by_name.entry(r.name.as_str()).or_insert(r);
        }
        Self { by_name }
    }

    /// The registration with this name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'a RunnerReg> {
        self.by_name.get(name).copied()
    }
}

/// Per-VM facts from outside the VM listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmContext {
    /// What the dispatcher is doing to this VM right now.
    pub in_flight: Option<Op>,
    /// The `vanished_since` hint for this VM.
    pub vanished_since: Option<u64>,
}

/// Classifies an owned VM (see the module docs for the rules).
#[must_use]
pub fn classify(
    vm: &ObservedVm,
    owned: &Owned<'_>,
    pool: &Pool,
    runners: &RunnerIndex<'_>,
    ctx: VmContext,
    now_unix: u64,
) -> Phase {
    if ctx.in_flight == Some(Op::Delete) {
        return Phase::Deleting;
    }
    let reg = owned.runner_name.and_then(|n| runners.get(n));
    if reg.is_some_and(|r| r.busy) {
        return Phase::Busy;
    }
    if ctx.in_flight == Some(Op::Provision) {
        return Phase::Creating;
    }
    if vm.power == Power::Stopped && vm.power_confirmed {
        return Phase::Stopped;
    }
    let age = owned
        .created_unix
        .map(|c| now_unix.saturating_sub(c))
        .or(vm.uptime_secs)
        .unwrap_or(0);
    let boot = pool.boot_timeout.as_secs();
    if reg.is_some_and(|r| r.online) {
        return if age >= pool.max_lifetime.as_secs() {
            Phase::Stale(StaleReason::MaxLifetime)
        } else {
            Phase::Idle
        };
    }
    if !marks::has_ready_tag(&vm.tags) {
        return if vm.lock.is_some() {
            if age >= boot {
                Phase::Stale(StaleReason::BootTimeout)
            } else {
                Phase::Creating
            }
        } else if half_made(age) {
            Phase::Stale(StaleReason::HalfMade)
        } else {
            Phase::Creating
        };
    }
    if reg.is_some() {
        return if age >= boot {
            Phase::Stale(StaleReason::BootTimeout)
        } else {
            Phase::Booting
        };
    }
    let hinted = ctx
        .vanished_since
        .is_some_and(|t| now_unix.saturating_sub(t) >= VANISHED_GRACE_SECS);
    if age >= boot || hinted {
        Phase::Stale(StaleReason::RunnerVanished)
    } else if ctx.vanished_since.is_some() {
        Phase::Finishing
    } else {
        Phase::Booting
    }
}
