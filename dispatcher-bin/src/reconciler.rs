//! The reconcile loop (DESIGN §2.7): observe → `pool_scheduler::plan` → act.
//!
//! A pass is idempotent and stateless apart from the work in flight: every decision comes from what Proxmox
//! and GitHub say now. Actions run as tasks with bounded parallelism (overall and per node); each finished
//! task wakes the loop so a freed slot is refilled at once instead of a poll later.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use github_runners::GitHubRunners;
use pool_scheduler::{DeleteReason, InFlight, Ledger, Observed, Op, Outcome, Plan};
use proxmox_api::ProxmoxApi;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RuntimeConfig;
use crate::error::Error;
use crate::observe::{Observation, Observer};
use crate::pool_gate::{Admission, HeldPool, PoolGates};

/// Source of the current time (a seam for tests).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Limits and deadlines of the executors. The defaults suit a real cluster; tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Clones and deletions running at once, over all nodes.
    pub max_parallel: usize,
    /// Clones (counted on the template's node) and deletions running at once on one node.
    pub max_parallel_per_node: usize,
    /// Deadline of a clone task.
    pub clone_deadline: Duration,
    /// Deadline of start/stop/delete tasks.
    pub task_deadline: Duration,
    /// First and longest pause between two `agent/ping`s.
    pub agent_poll: (Duration, Duration),
    /// Least time between two passes triggered by events (a burst of finishing tasks makes one pass).
    pub min_pass_gap: Duration,
    /// How long a shutdown waits for in-flight work to finish or roll back.
    pub shutdown_grace: Duration,
    /// First back-off after a failed provision in a pool (doubles up to `max_backoff`).
    pub pool_backoff: Duration,
    /// Longest back-off (pool provisions and failed passes).
    pub max_backoff: Duration,
    /// How long a VMID found taken by someone else is avoided.
    pub taken_vmid_ttl: Duration,
    /// How long a pool held after a failure that repeats on every attempt waits before one more attempt
    /// (when its template did not change meanwhile).
    pub hold_retry: Duration,
    /// How tasks are watched (one `GET /nodes/{node}/tasks` per node and interval for every waiter).
    pub task_watch: proxmox_api::TaskWatcherOptions,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_parallel: 16,
            max_parallel_per_node: 4,
            clone_deadline: Duration::from_secs(600),
            task_deadline: Duration::from_secs(300),
            agent_poll: (Duration::from_millis(250), Duration::from_secs(2)),
            min_pass_gap: Duration::from_millis(300),
            shutdown_grace: Duration::from_secs(90),
            pool_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            taken_vmid_ttl: Duration::from_secs(600),
            hold_retry: crate::pool_gate::HOLD_RETRY,
            // One task-list poll per node and second while tasks run: a clone (seconds) or a start is seen
            // at most a second late, and a burst costs pveproxy ~2 requests per job instead of ~20 polls.
            task_watch: proxmox_api::TaskWatcherOptions {
                interval: Duration::from_secs(1),
                ..proxmox_api::TaskWatcherOptions::default()
            },
        }
    }
}

/// What a pass did, for `once`, logs and health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Provisions started.
    pub started: usize,
    /// Deletions started.
    pub deleting: usize,
    /// Registrations being removed.
    pub deregistering: usize,
    /// Starts the plan wanted but a pool back-off or a missing template held.
    pub held: usize,
    /// Queued jobs seen.
    pub queued_jobs: usize,
    /// Runner VMs whose job is done and that are powering themselves off.
    pub finishing: usize,
}

/// While runner VMs are powering themselves off, the next pass comes this soon (there is no event for a
/// VM stopping; the poll would otherwise keep its slot for up to a whole interval).
const FINISHING_RECHECK: Duration = Duration::from_secs(2);

/// Mutable state of the loop: only what is in flight and what must not be repeated. Never held across an
/// `.await`.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Work in flight, and provisions that finished but are not listed yet (they stay supply).
    pub(crate) in_flight: Ledger,
    pub(crate) deregistering: HashSet<u64>,
    pub(crate) taken: BTreeMap<u32, Instant>,
    gates: PoolGates,
    /// The fastest guest-agent answer after a start seen per pool (the first ping waits for most of it).
    pub(crate) agent_boot: HashMap<String, Duration>,
    /// The numbers last logged per pool (the plan is logged when they change).
    last_plan: HashMap<String, pool_scheduler::PoolNumbers>,
    logged_unmatched: HashSet<u64>,
    /// Queued jobs announced by webhook deliveries (job id → repository `owner/name`), confirmed with
    /// `GET …/actions/jobs/{id}` by the next passes: demand the polls may not see (organisation scope without
    /// repositories to poll, or a repository outside that list).
    pub(crate) webhook_jobs: BTreeMap<u64, String>,
}

/// Most webhook-announced jobs remembered at once (the oldest is forgotten beyond it).
const MAX_WEBHOOK_JOBS: usize = 1000;

/// The reconciler: owns the clients, the configuration and the work in flight.
pub struct Reconciler {
    pub(crate) pve: Arc<dyn ProxmoxApi>,
    /// Waits for Proxmox tasks: one task-list poll per node shared by every waiter.
    pub(crate) tasks: proxmox_api::TaskWatcher,
    pub(crate) gh: Arc<dyn GitHubRunners>,
    pub(crate) cfg: Arc<RuntimeConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tuning: Tuning,
    pub(crate) observer: Observer,
    state: Mutex<State>,
    wake: Notify,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    global_limit: Arc<Semaphore>,
    node_limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    failed: AtomicU64,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("pools", &self.cfg.pools.pools().len())
            .field("in_flight", &self.state().in_flight.len())
            .field("tuning", &self.tuning)
            .finish_non_exhaustive()
    }
}

impl Reconciler {
    /// A reconciler over the given clients, recording into a fresh [`crate::metrics::Metrics`] (use
    /// [`Reconciler::with_metrics`] to share one with the clients' request observers).
    pub fn new(
        pve: Arc<dyn ProxmoxApi>,
        gh: Arc<dyn GitHubRunners>,
        cfg: Arc<RuntimeConfig>,
        clock: Arc<dyn Clock>,
        tuning: Tuning,
    ) -> Arc<Self> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        Self::with_metrics(pve, gh, cfg, clock, tuning, metrics)
    }

    /// A reconciler recording into `metrics` (shared with the clients' request observers).
    pub fn with_metrics(
        pve: Arc<dyn ProxmoxApi>,
        gh: Arc<dyn GitHubRunners>,
        cfg: Arc<RuntimeConfig>,
        clock: Arc<dyn Clock>,
        tuning: Tuning,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let global_limit = Arc::new(Semaphore::new(tuning.max_parallel.max(1)));
        let tasks = proxmox_api::TaskWatcher::new(Arc::clone(&pve), tuning.task_watch.clone());
        Arc::new(Self {
            observer: Observer::default(),
            tasks,
            pve,
            gh,
            cfg,
            clock,
            tuning,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            global_limit,
            node_limits: Mutex::new(HashMap::new()),
            failed: AtomicU64::new(0),
            metrics,
        })
    }

    /// The metrics and readiness record of this reconciler.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that matters more than
        // stopping the service would; keep going with the data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The token that stops the loop and makes in-flight provisions roll back.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Asks for a pass as soon as possible (webhook deliveries, finished tasks).
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// A `workflow_job` `queued` delivery for one of our pools: remember the job so the passes see it even
    /// when no poll lists it, then ask for a pass.
    pub fn note_queued_job(&self, job_id: u64, repository: &str) {
        if !self.cfg.serves_repository(repository) {
            tracing::debug!(
                job = job_id,
                "webhook job of a repository outside the configured scope ignored"
            );
            return;
        }
        {
            let mut st = self.state();
            st.webhook_jobs.insert(job_id, repository.to_owned());
            while st.webhook_jobs.len() > MAX_WEBHOOK_JOBS {
                st.webhook_jobs.pop_first();
            }
        }
        self.trigger();
    }

    /// Work in flight, as the planner sees it.
    pub fn in_flight(&self) -> Vec<InFlight> {
        self.state().in_flight.snapshot()
    }

    /// Provisions and deletions that failed since start (rolled back or left for a later pass).
    pub fn failed_tasks(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until every spawned task has finished.
    pub async fn wait_idle(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    /// Observes and plans without acting (`dispatcher plan`, `status`).
    pub async fn observe_and_plan(&self) -> Result<(Observation, Plan), Error> {
        // The in-flight snapshot is taken before the VMs are listed (see `pool_scheduler::ledger`).
        let (epoch, in_flight) = {
            let mut st = self.state();
            (st.in_flight.observation_started(), st.in_flight.snapshot())
        };
        let taken: BTreeSet<u32> = self.live_taken_ids();
        let observation = self.observer.observe(self, in_flight, &taken).await?;
        let listed: HashSet<u32> = observation.observed.vms.iter().map(|v| v.vmid).collect();
        self.state()
            .in_flight
            .settle(epoch, |vmid| listed.contains(&vmid));
        let plan = pool_scheduler::plan(
            &self.cfg.pools,
            &observation.observed,
            self.clock.now_unix(),
        );
        Ok((observation, plan))
    }

    fn live_taken_ids(&self) -> BTreeSet<u32> {
        let mut st = self.state();
        let now = Instant::now();
        st.taken.retain(|_, until| *until > now);
        st.taken.keys().copied().collect()
    }

    /// One reconcile pass: observe, plan, start the actions. Returns once the actions are started.
    pub async fn pass(self: &Arc<Self>) -> Result<PassReport, Error> {
        let (observation, plan) = self
            .observe_and_plan()
            .await
            .inspect_err(|e| self.metrics.pass_failed(e))?;
        self.metrics
            .pass_observed(&self.cfg, &observation, &plan, self.clock.now_unix());
        self.log_plan(&plan, &observation.observed);
        self.sweep_snippets(&observation);
        Ok(self.act(plan, observation))
    }

    /// Deletes snippet files of ours that no VM and no work in flight needs any more (a crash, a failed
    /// delete or a rollback left them), in the background.
    fn sweep_snippets(self: &Arc<Self>, observation: &Observation) {
        if !self.cfg.any_snippet_pool() {
            return;
        }
        let mut keep: HashSet<String> = observation
            .observed
            .vms
            .iter()
            .flat_map(|v| {
                v.name
                    .iter()
                    .cloned()
                    .chain(v.marker.iter().map(|m| m.runner.clone()))
            })
            .collect();
        keep.extend(self.in_flight().into_iter().map(|f| f.runner_name));
        let cfg = Arc::clone(&self.cfg);
        let this = Arc::clone(self);
        self.tracker.spawn(async move {
            // Work begun after this pass's snapshot keeps its files too.
            let busy: HashSet<String> = this
                .in_flight()
                .into_iter()
                .map(|f| f.runner_name)
                .collect();
            let swept = cfg
                .snippets
                .sweep(
                    {
                        let cfg = Arc::clone(&cfg);
                        move |runner| cfg.pools.parse_runner_name(runner).is_some()
                    },
                    move |runner| keep.contains(runner) || busy.contains(runner),
                )
                .await;
            match swept {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "left-over snippets of ours deleted"),
                Err(e) => tracing::warn!(error = %e, "could not sweep the snippet directory"),
            }
        });
    }

    fn log_plan(&self, plan: &Plan, observed: &Observed) {
        let mut st = self.state();
        let queued: HashSet<u64> = observed.jobs.iter().map(|j| j.id).collect();
        st.logged_unmatched.retain(|id| queued.contains(id));
        for u in &plan.unmatched {
            if st.logged_unmatched.insert(u.job_id) {
                tracing::info!(job = u.job_id, reason = %u.reason, "queued job not served by any pool");
            }
        }
        // INFO only when a pool's decision or counts changed: a steady state (even one held by a back-off)
        // logs nothing; the starts themselves are logged by the executors.
        for p in &plan.pools {
            if st.last_plan.get(&p.pool) != Some(p) {
                tracing::info!(
                    pool = %p.pool, demand = p.demand, creating = p.creating, booting = p.booting,
                    idle = p.idle, busy = p.busy, finishing = p.finishing, stopped = p.stopped,
                    stale = p.stale, deleting = p.deleting, cap = p.cap, to_start = p.to_start,
                    blocked_by = ?p.blocked_by, "plan"
                );
                st.last_plan.insert(p.pool.clone(), p.clone());
            } else {
                tracing::debug!(pool = %p.pool, demand = p.demand, to_start = p.to_start, "plan unchanged");
            }
        }
    }

    fn act(self: &Arc<Self>, plan: Plan, observation: Observation) -> PassReport {
        let mut report = PassReport {
            queued_jobs: observation.observed.jobs.len(),
            finishing: plan.pools.iter().map(|p| p.finishing as usize).sum(),
            ..PassReport::default()
        };
        let runners_by_name: HashMap<&str, u64> = observation
            .observed
            .runners
            .iter()
            .map(|r| (r.name.as_str(), r.id))
            .collect();

        if !self.cfg.pools.flags().disable_cleanup {
            for del in plan.deletes {
                let registration = runners_by_name.get(del.name.as_str()).copied();
                let recorded = self.state().in_flight.begin(InFlight {
                    pool: del.pool.clone(),
                    vmid: del.vmid,
                    node: del.node.clone(),
                    runner_name: del.name.clone(),
                    op: Op::Delete,
                    stopped: del.reason == DeleteReason::Stopped,
                });
                if !recorded {
                    continue;
                }
                report.deleting += 1;
                let this = Arc::clone(self);
                self.tracker.spawn(async move {
                    let vmid = del.vmid;
                    let guard = WorkGuard::new(&this, vmid);
                    let node = del.node.clone();
                    let _permits = this.permits(&node).await;
                    if !crate::deprovision::delete_vm(&this, &del, registration).await {
                        this.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    this.state().in_flight.finish(vmid, Outcome::Gone);
                    guard.disarm();
                    this.trigger();
                });
            }
            for dereg in plan.deregister {
                if !self.state().deregistering.insert(dereg.runner_id) {
                    continue;
                }
                report.deregistering += 1;
                let this = Arc::clone(self);
                self.tracker.spawn(async move {
                    crate::deprovision::deregister(&this, &dereg).await;
                    this.state().deregistering.remove(&dereg.runner_id);
                });
            }
        }

        if self.shutdown.is_cancelled() {
            return report;
        }
        for start in plan.starts {
            let Some(pool) = self.cfg.pools.pool(&start.pool).cloned() else {
                continue;
            };
            let fingerprint = observation.template_fingerprint(&pool.template);
            let admission = self
                .state()
                .gates
                .admit(&pool.name, &fingerprint, Instant::now());
            if admission != Admission::Open {
                report.held += 1;
                continue;
            }
            let Some(template) = observation.template_for(&pool.template, &start.node) else {
                report.held += 1;
                let e = Error::TemplateNotFound {
                    pool: pool.name.clone(),
                    template: pool.template.clone(),
                };
                self.record_failure(&pool.name, &e, &fingerprint);
                continue;
            };
            let recorded = self.state().in_flight.begin(InFlight {
                pool: start.pool.clone(),
                vmid: start.vmid,
                node: start.node.clone(),
                runner_name: start.runner_name.clone(),
                op: Op::Provision,
                stopped: false,
            });
            if !recorded {
                continue;
            }
            report.started += 1;
            self.metrics
                .provision_started(&start, &observation.observed.jobs);
            let this = Arc::clone(self);
            self.tracker.spawn(async move {
                let vmid = start.vmid;
                let guard = WorkGuard::new(&this, vmid);
                let pool_name = pool.name.clone();
                // Parallelism is bounded inside: only the clone (the heavy, lock-taking step) holds a slot;
                // waiting for a guest to boot must not keep other VMs from being cloned.
                let result = crate::provision::provision(&this, &pool, &start, template).await;
                this.metrics.provision_finished(&start, &result);
                let outcome = if result.is_ok() { Outcome::Provisioned } else { Outcome::Gone };
                match result {
                    Ok(()) => this.record_success(&pool_name),
                    Err(Error::VmidTaken { vmid, message }) => {
                        tracing::warn!(pool = %pool_name, vmid, "VMID taken ({message}); the next pass takes another id");
                        let mut st = this.state();
                        st.taken.insert(vmid, Instant::now() + this.tuning.taken_vmid_ttl);
                        st.gates.inconclusive(&pool_name);
                    }
                    Err(Error::Cancelled) => this.state().gates.inconclusive(&pool_name),
                    Err(e) => {
                        tracing::error!(pool = %pool_name, vmid, error = %e, "provision failed and was rolled back");
                        this.record_failure(&pool_name, &e, &fingerprint);
                    }
                }
                this.state().in_flight.finish(vmid, outcome);
                guard.disarm();
                this.trigger();
            });
        }
        report
    }

    /// A slot of the overall limit and one of `node`'s (clones count against their source node).
    pub(crate) async fn permits(
        &self,
        node: &str,
    ) -> (
        Option<tokio::sync::OwnedSemaphorePermit>,
        Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let node_sem = {
            let mut limits = self
                .node_limits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(limits.entry(node.to_owned()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.tuning.max_parallel_per_node.max(1)))
            }))
        };
        let global = Arc::clone(&self.global_limit).acquire_owned().await.ok();
        let per_node = node_sem.acquire_owned().await.ok();
        (global, per_node)
    }

    fn record_success(&self, pool: &str) {
        let mut st = self.state();
        st.gates.success(pool);
        self.metrics.set_held(st.gates.held());
    }

    /// The pools held after a failure that repeats on every attempt.
    pub fn held_pools(&self) -> Vec<HeldPool> {
        self.state().gates.held()
    }

    fn record_failure(&self, pool: &str, error: &Error, fingerprint: &str) {
        // A missing template made no attempt (nothing was cloned); anything else is a failed provision.
        if !matches!(error, Error::TemplateNotFound { .. }) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let mut st = self.state();
        st.gates.failure(
            pool,
            error,
            fingerprint,
            Instant::now(),
            crate::pool_gate::GateTiming {
                base: self.tuning.pool_backoff,
                max: self.tuning.max_backoff,
                hold_retry: self.tuning.hold_retry,
            },
        );
        self.metrics.set_held(st.gates.held());
    }

    /// The service loop: a pass at every poll interval and whenever something finished or a webhook
    /// arrived; failed passes retry with back-off; returns after shutdown once in-flight work is done or
    /// the grace period ran out.
    pub async fn run(self: &Arc<Self>) {
        let mut failures: u32 = 0;
        let mut next_poll = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(next_poll) => {},
                () = self.wake.notified() => {},
            }
            let began = tokio::time::Instant::now();
            // A shutdown does not wait for a pass's slow upstream calls: the observation is dropped (it
            // changed nothing), and work already started rolls back below.
            let result = tokio::select! {
                () = self.shutdown.cancelled() => break,
                r = self.pass() => r,
            };
            match result {
                Ok(report) => {
                    failures = 0;
                    next_poll = began + self.cfg.poll_interval;
                    if report.finishing > 0 {
                        next_poll = next_poll.min(began + FINISHING_RECHECK);
                    }
                    if report.started + report.deleting + report.deregistering > 0 {
                        tracing::info!(
                            started = report.started,
                            deleting = report.deleting,
                            deregistering = report.deregistering,
                            held = report.held,
                            queued = report.queued_jobs,
                            elapsed_ms = began.elapsed().as_millis() as u64,
                            "pass"
                        );
                    } else {
                        tracing::debug!(
                            queued = report.queued_jobs,
                            elapsed_ms = began.elapsed().as_millis() as u64,
                            "pass: nothing to do"
                        );
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let mut delay =
                        backoff_delay(Duration::from_secs(1), self.tuning.max_backoff, failures)
                            .min(self.cfg.poll_interval.max(Duration::from_secs(1)));
                    if let Some(until) = rate_limited_until(&e) {
                        delay = until.duration_since(SystemTime::now()).unwrap_or_default();
                        tracing::warn!(
                            resume_in_s = delay.as_secs(),
                            "GitHub rate limit: pausing passes until the reset"
                        );
                    } else {
                        tracing::error!(error = %e, failures, retry_in_s = delay.as_secs_f32(), "pass failed");
                    }
                    // GitHub's pause is bounded by the client; bound it here too (never an overflow).
                    let delay = delay.min(Duration::from_secs(3600));
                    next_poll = began
                        .checked_add(delay)
                        .unwrap_or(began + self.cfg.poll_interval);
                }
            }
            // A burst of finished tasks makes one pass, not one each.
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(self.tuning.min_pass_gap) => {},
            }
        }
        tracing::info!(
            in_flight = self.state().in_flight.len(),
            "shutting down: finishing or rolling back in-flight work"
        );
        self.tracker.close();
        if tokio::time::timeout(self.tuning.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.state().in_flight.len(),
                "shutdown grace period over; exiting with work in flight"
            );
        }
    }
}

/// Clears a VM's in-flight record when the task working on it ends without saying how (a panic unwinds
/// through the task): the record must not keep the VM "creating" forever. A VM left half-made that way is not
/// in flight any more, so the next pass deletes it (and its registration and snippet) like any half-made VM.
struct WorkGuard {
    rec: Arc<Reconciler>,
    vmid: u32,
    armed: bool,
}

impl WorkGuard {
    fn new(rec: &Arc<Reconciler>, vmid: u32) -> Self {
        Self {
            rec: Arc::clone(rec),
            vmid,
            armed: true,
        }
    }

    /// The task ended normally and recorded its outcome itself.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::error!(
                vmid = self.vmid,
                "work on the VM ended abnormally; its record is cleared and the next pass cleans it up"
            );
            self.rec.failed.fetch_add(1, Ordering::Relaxed);
            self.rec.state().in_flight.finish(self.vmid, Outcome::Gone);
            self.rec.trigger();
        }
    }
}

/// GitHub's "pause until" of an error, if it is a rate limit.
pub(crate) fn rate_limited_until(e: &Error) -> Option<SystemTime> {
    match e {
        Error::GitHub(g) => g.retry_at(),
        _ => None,
    }
}

/// `base · 2^(n−1)` capped at `max`, with ±20 % jitter.
pub(crate) fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(max);
    let jitter = rand::random_range(0.8..1.2);
    capped.mul_f64(jitter).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        let first = backoff_delay(base, max, 1);
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        let fourth = backoff_delay(base, max, 4);
        assert!(
            fourth >= Duration::from_millis(6400) && fourth <= Duration::from_millis(9600),
            "{fourth:?}"
        );
        assert!(backoff_delay(base, max, 40) <= max);
    }
}
