//! Prometheus metrics (served on `GET /metrics`) and the readiness record behind `GET /readyz`.
//!
//! One [`Metrics`] is owned by the [`Reconciler`](crate::reconciler::Reconciler) and fed from four places:
//! each pass (per-pool gauges from the plan's `PoolNumbers`, VM lifecycle transitions), the executors
//! (provisions started/succeeded/failed, deletions, clone and start durations), the API clients'
//! `RequestObserver` hooks (requests by service/endpoint/status, conditional hits) and the webhook
//! server (deliveries by result). Names follow ARC's `gha_*` style; counters are registered without the
//! `_total` suffix, which the OpenMetrics encoder appends.
//!
//! Durations and what each measures (all in seconds, labelled by pool):
//! - `gha_job_queued_to_vm_started_seconds`: the job's `created_at` (GitHub, whole seconds) → the start
//!   task of the VM planned for it finished. Warm-pool VMs (`min_idle`, no job) are not counted.
//! - `gha_clone_duration_seconds` / `gha_start_duration_seconds`: the clone request → its task finished
//!   (including lock-timeout re-issues) / the start request → its task finished, for provisions that
//!   reached a started VM.
//! - `gha_boot_to_runner_online_seconds`: the start task finished → the first pass that saw the runner
//!   online (idle or busy). An upper bound: its resolution is the time between passes.
//! - `gha_job_duration_seconds`: the first pass that saw the runner busy → the first pass that saw it
//!   finishing, stopped or gone. Also pass-resolution; VMs started before a restart count from the first
//!   busy sighting after it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pool_scheduler::{DeleteReason, Job, Phase, Plan, Start};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use crate::config::RuntimeConfig;
use crate::error::Error;
use crate::observe::Observation;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A pass older than this many poll intervals makes the service unready.
pub const READY_POLL_INTERVALS: u32 = 3;

/// The phases reported by `gha_runner_vms`, in the order of `PoolNumbers`.
pub const PHASES: [&str; 8] = [
    "creating",
    "booting",
    "idle",
    "busy",
    "finishing",
    "stopped",
    "stale",
    "deleting",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolPhase {
    pool: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolReason {
    pool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    service: &'static str,
    endpoint: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

type Histograms = Family<PoolLabel, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn queued_buckets() -> Histogram {
    Histogram::new([
        1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
    ])
}
fn clone_buckets() -> Histogram {
    Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0])
}
fn start_buckets() -> Histogram {
    Histogram::new([0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0])
}
fn boot_buckets() -> Histogram {
    Histogram::new([
        5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    ])
}
fn job_buckets() -> Histogram {
    Histogram::new([
        10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    ])
}

/// What happened to a webhook delivery (`gha_webhook_deliveries_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// A `workflow_job` for one of our pools triggered a pass.
    Triggered,
    /// A `workflow_job` whose labels no pool serves (or not self-hosted).
    NotOurs,
    /// Another event or action, answered 204.
    Ignored,
    /// A `ping`.
    Ping,
    /// A delivery id seen before.
    Duplicate,
    /// Bad, missing or wrongly prefixed signature.
    Unauthorized,
    /// Signed but unusable (no event header, unparseable payload).
    BadRequest,
}

impl Delivery {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Triggered => "triggered",
            Self::NotOurs => "not_ours",
            Self::Ignored => "ignored",
            Self::Ping => "ping",
            Self::Duplicate => "duplicate",
            Self::Unauthorized => "unauthorized",
            Self::BadRequest => "bad_request",
        }
    }
}

/// Lifecycle of one runner VM, keyed by runner name (unique per VM).
#[derive(Debug)]
struct VmTrack {
    pool: String,
    since: Instant,
    job_created_unix: Option<u64>,
    started_at: Option<Instant>,
    online_seen: bool,
    busy_since: Option<Instant>,
    done: bool,
    listed: bool,
}

#[derive(Debug, Default)]
struct Health {
    last_success: Option<Instant>,
    last_failure: Option<(Instant, String)>,
    held: Vec<crate::pool_gate::HeldPool>,
}

type RateSource = Box<dyn Fn() -> Option<github_runners::RateLimitSnapshot> + Send + Sync>;

/// Name, help and type of a registered family (announced even while it has no series).
#[derive(Debug)]
struct Descriptor {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
}

/// A registry that remembers what it registered.
#[derive(Default)]
struct Families {
    registry: Registry,
    descriptors: Vec<Descriptor>,
}

impl Families {
    fn add<M: Metric>(&mut self, name: &'static str, help: &'static str, metric: M) {
        let kind = match metric.metric_type() {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Info => "info",
            MetricType::Unknown => "unknown",
        };
        self.descriptors.push(Descriptor { name, help, kind });
        self.registry.register(name, help, metric);
    }
}

/// Every metric family, the readiness record and the VM lifecycle tracker.
pub struct Metrics {
    registry: Registry,
    descriptors: Vec<Descriptor>,
    runner_vms: Family<PoolPhase, Gauge>,
    queued_jobs: Family<PoolLabel, Gauge>,
    unmatched_jobs: Gauge,
    pool_cap: Family<PoolLabel, Gauge>,
    pool_min_idle: Family<PoolLabel, Gauge>,
    pool_held: Family<PoolReason, Gauge>,
    provisions_started: Family<PoolLabel, Counter>,
    provisions_succeeded: Family<PoolLabel, Counter>,
    provisions_failed: Family<PoolReason, Counter>,
    deletions: Family<PoolReason, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    conditional_hits: Counter,
    webhook_deliveries: Family<ResultLabel, Counter>,
    passes: Family<ResultLabel, Counter>,
    rate_remaining: Family<ResourceLabel, Gauge>,
    rate_reset: Family<ResourceLabel, FloatGauge>,
    queued_to_started: Histograms,
    clone_duration: Histograms,
    start_duration: Histograms,
    boot_to_online: Histograms,
    job_duration: Histograms,
    rate_source: Mutex<Option<RateSource>>,
    health: Mutex<Health>,
    tracks: Mutex<HashMap<String, VmTrack>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("health", &*lock(&self.health))
            .field("tracked_vms", &lock(&self.tracks).len())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_unix_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The bounded `reason` label of a failed provision.
pub fn failure_reason(e: &Error) -> &'static str {
    match e {
        Error::Proxmox(p) if p.is_lock_timeout() => "proxmox_lock_timeout",
        Error::Proxmox(_) => "proxmox",
        Error::GitHub(_) => "github",
        Error::Render(_) => "render",
        Error::Snippet { .. } => "snippet",
        Error::TemplateNotFound { .. } => "template_not_found",
        Error::VmidTaken { .. } => "vmid_taken",
        Error::AgentTimeout { .. } => "agent_timeout",
        Error::NotOwned { .. } => "not_owned",
        Error::Cancelled => "cancelled",
    }
}

/// The bounded `reason` label of a deletion.
pub fn deletion_reason(r: DeleteReason) -> &'static str {
    match r {
        DeleteReason::Stopped => "stopped",
        DeleteReason::BootTimeout => "boot_timeout",
        DeleteReason::MaxLifetime => "max_lifetime",
        DeleteReason::RunnerVanished => "runner_vanished",
        DeleteReason::HalfMade => "half_made",
        DeleteReason::IdleSurplus => "idle_surplus",
    }
}

impl Metrics {
    /// A registry with every family registered (no series yet).
    pub fn new() -> Self {
        let mut registry = Families::default();
        let runner_vms = Family::<PoolPhase, Gauge>::default();
        registry.add(
            "gha_runner_vms",
            "Runner VMs of a pool by phase, as the last pass classified them",
            runner_vms.clone(),
        );
        let queued_jobs = Family::<PoolLabel, Gauge>::default();
        registry.add(
            "gha_queued_jobs",
            "Queued jobs routed to a pool at the last pass",
            queued_jobs.clone(),
        );
        let unmatched_jobs = Gauge::default();
        registry.add(
            "gha_unmatched_jobs",
            "Queued jobs no pool serves at the last pass",
            unmatched_jobs.clone(),
        );
        let pool_cap = Family::<PoolLabel, Gauge>::default();
        registry.add(
            "gha_pool_cap",
            "A pool's max_runners (0 = unlimited)",
            pool_cap.clone(),
        );
        let pool_min_idle = Family::<PoolLabel, Gauge>::default();
        registry.add(
            "gha_pool_min_idle",
            "A pool's min_idle (warm runners kept ready)",
            pool_min_idle.clone(),
        );
        let pool_held = Family::<PoolReason, Gauge>::default();
        registry.add(
            "gha_pool_held",
            "1 while a pool is held after a failure that repeats on every attempt (reason label)",
            pool_held.clone(),
        );
        let provisions_started = Family::<PoolLabel, Counter>::default();
        registry.add(
            "gha_provisions_started",
            "Provisions started",
            provisions_started.clone(),
        );
        let provisions_succeeded = Family::<PoolLabel, Counter>::default();
        registry.add(
            "gha_provisions_succeeded",
            "Provisions that ended with a started, credentialed runner VM",
            provisions_succeeded.clone(),
        );
        let provisions_failed = Family::<PoolReason, Counter>::default();
        registry.add(
            "gha_provisions_failed",
            "Provisions that failed and were rolled back, by reason",
            provisions_failed.clone(),
        );
        let deletions = Family::<PoolReason, Counter>::default();
        registry.add(
            "gha_deletions",
            "Runner VMs deleted, by reason",
            deletions.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.add(
            "gha_api_requests",
            "HTTP attempts to Proxmox VE and GitHub by templated endpoint and status (error = no response)",
            api_requests.clone(),
        );
        let conditional_hits = Counter::default();
        registry.add(
            "gha_github_conditional_hits",
            "GitHub 304 answers to If-None-Match (free of rate limit)",
            conditional_hits.clone(),
        );
        let webhook_deliveries = Family::<ResultLabel, Counter>::default();
        registry.add(
            "gha_webhook_deliveries",
            "Webhook deliveries by result",
            webhook_deliveries.clone(),
        );
        let passes = Family::<ResultLabel, Counter>::default();
        registry.add(
            "gha_reconcile_passes",
            "Reconcile passes by result (ok, error)",
            passes.clone(),
        );
        let rate_remaining = Family::<ResourceLabel, Gauge>::default();
        registry.add(
            "gha_github_rate_limit_remaining",
            "GitHub requests left in the rate-limit window (last response that carried the headers)",
            rate_remaining.clone(),
        );
        let rate_reset = Family::<ResourceLabel, FloatGauge>::default();
        registry.add(
            "gha_github_rate_limit_reset_seconds",
            "Seconds until the GitHub rate-limit window resets",
            rate_reset.clone(),
        );
        let histogram = |registry: &mut Families,
                         name: &'static str,
                         help: &'static str,
                         f: fn() -> Histogram| {
            let family = Histograms::new_with_constructor(f);
            registry.add(name, help, family.clone());
            family
        };
        let queued_to_started = histogram(
            &mut registry,
            "gha_job_queued_to_vm_started_seconds",
            "Job created_at to the start task of its VM finished",
            queued_buckets,
        );
        let clone_duration = histogram(
            &mut registry,
            "gha_clone_duration_seconds",
            "Clone request to clone task finished",
            clone_buckets,
        );
        let start_duration = histogram(
            &mut registry,
            "gha_start_duration_seconds",
            "Start request to start task finished",
            start_buckets,
        );
        let boot_to_online = histogram(
            &mut registry,
            "gha_boot_to_runner_online_seconds",
            "Start task finished to the first pass that saw the runner online",
            boot_buckets,
        );
        let job_duration = histogram(
            &mut registry,
            "gha_job_duration_seconds",
            "First pass that saw the runner busy to the first pass that saw it finished",
            job_buckets,
        );
        Self {
            registry: registry.registry,
            descriptors: registry.descriptors,
            runner_vms,
            queued_jobs,
            unmatched_jobs,
            pool_cap,
            pool_min_idle,
            pool_held,
            provisions_started,
            provisions_succeeded,
            provisions_failed,
            deletions,
            api_requests,
            conditional_hits,
            webhook_deliveries,
            passes,
            rate_remaining,
            rate_reset,
            queued_to_started,
            clone_duration,
            start_duration,
            boot_to_online,
            job_duration,
            rate_source: Mutex::new(None),
            health: Mutex::new(Health::default()),
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// Where the GitHub rate-limit gauges come from (read at each scrape).
    pub fn set_rate_limit_source(&self, client: Weak<github_runners::GitHubClient>) {
        *lock(&self.rate_source) = Some(Box::new(move || {
            client.upgrade().and_then(|c| c.rate_limit_snapshot())
        }));
    }

    /// A Proxmox client observer feeding `gha_api_requests_total{service="proxmox"}`.
    pub fn proxmox_observer(self: &Arc<Self>) -> Arc<dyn proxmox_api::RequestObserver> {
        Arc::new(ApiObserver(Arc::clone(self)))
    }

    /// A GitHub client observer feeding `gha_api_requests_total{service="github"}` and conditional hits.
    pub fn github_observer(self: &Arc<Self>) -> Arc<dyn github_runners::RequestObserver> {
        Arc::new(ApiObserver(Arc::clone(self)))
    }

    fn api_request(&self, service: &'static str, endpoint: &'static str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.api_requests
            .get_or_create(&ApiLabels {
                service,
                endpoint,
                status,
            })
            .inc();
    }

    /// Counts a webhook delivery.
    pub fn webhook_delivery(&self, result: Delivery) {
        self.webhook_deliveries
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics, ends with `# EOF`).
    pub fn encode(&self) -> String {
        self.refresh_rate_limit();
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        // prometheus-client leaves out families without series; announce them anyway, so every family
        // is discoverable from the first scrape (OpenMetrics allows a family with no samples).
        for d in &self.descriptors {
            if !out.contains(&format!("# TYPE {} ", d.name)) {
                out.push_str(&format!(
                    "# HELP {} {}.\n# TYPE {} {}\n",
                    d.name, d.help, d.name, d.kind
                ));
            }
        }
        out.push_str("# EOF\n");
        out
    }

    fn refresh_rate_limit(&self) {
        let snap = lock(&self.rate_source).as_ref().and_then(|f| f());
        if let Some(s) = snap {
            let label = ResourceLabel {
                resource: if s.resource.is_empty() {
                    "core".to_owned()
                } else {
                    s.resource.clone()
                },
            };
            self.rate_remaining
                .get_or_create(&label)
                .set(gauge_value(s.remaining));
            let reset = (s.reset as f64 - now_unix_f64()).max(0.0);
            self.rate_reset.get_or_create(&label).set(reset);
        }
    }

    /// The pools now held (replaces the previous set): `gha_pool_held` and the `/readyz` detail.
    pub fn set_held(&self, held: Vec<crate::pool_gate::HeldPool>) {
        self.pool_held.clear();
        for h in &held {
            self.pool_held
                .get_or_create(&PoolReason {
                    pool: h.pool.clone(),
                    reason: h.reason.to_owned(),
                })
                .set(1);
        }
        lock(&self.health).held = held;
    }

    /// A pass failed before acting (Proxmox or GitHub unreachable, rate limit…).
    pub fn pass_failed(&self, e: &Error) {
        self.passes
            .get_or_create(&ResultLabel { result: "error" })
            .inc();
        let line = crate::pool_gate::one_line(&e.to_string());
        lock(&self.health).last_failure = Some((Instant::now(), line));
    }

    /// A pass observed and planned: per-pool gauges, readiness, VM lifecycle transitions.
    pub fn pass_observed(
        &self,
        cfg: &RuntimeConfig,
        observation: &Observation,
        plan: &Plan,
        now_unix: u64,
    ) {
        self.passes
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        lock(&self.health).last_success = Some(Instant::now());
        for p in &plan.pools {
            let pool = || p.pool.clone();
            let counts = [
                p.creating,
                p.booting,
                p.idle,
                p.busy,
                p.finishing,
                p.stopped,
                p.stale,
                p.deleting,
            ];
            for (phase, n) in PHASES.iter().zip(counts) {
                self.runner_vms
                    .get_or_create(&PoolPhase {
                        pool: pool(),
                        phase,
                    })
                    .set(i64::from(n));
            }
            let label = PoolLabel { pool: pool() };
            self.queued_jobs
                .get_or_create(&label)
                .set(i64::from(p.demand));
            self.pool_cap.get_or_create(&label).set(i64::from(p.cap));
            self.pool_min_idle
                .get_or_create(&label)
                .set(i64::from(p.min_idle));
            // Zero series for every pool, so rates and quantiles exist before the first event.
            drop(self.provisions_started.get_or_create(&label));
            drop(self.provisions_succeeded.get_or_create(&label));
            for h in [
                &self.queued_to_started,
                &self.clone_duration,
                &self.start_duration,
                &self.boot_to_online,
                &self.job_duration,
            ] {
                drop(h.get_or_create(&label));
            }
        }
        self.unmatched_jobs.set(gauge_value(plan.unmatched.len()));
        self.track_phases(cfg, observation, now_unix);
    }

    fn track_phases(&self, cfg: &RuntimeConfig, observation: &Observation, now_unix: u64) {
        let now = Instant::now();
        let mut tracks = lock(&self.tracks);
        let mut seen: HashSet<String> = HashSet::new();
        for (_, owned, phase) in observation.owned_vms(&cfg.pools, now_unix) {
            let Some(name) = owned.runner_name else {
                continue;
            };
            let pool = &cfg.pools.pools()[owned.pool];
            seen.insert(name.to_owned());
            let track = tracks.entry(name.to_owned()).or_insert_with(|| VmTrack {
                pool: pool.name.clone(),
                since: now,
                job_created_unix: None,
                started_at: None,
                online_seen: false,
                busy_since: None,
                done: false,
                listed: false,
            });
            track.listed = true;
            let label = PoolLabel {
                pool: track.pool.clone(),
            };
            match phase {
                Phase::Idle | Phase::Busy => {
                    if !track.online_seen {
                        track.online_seen = true;
                        if let Some(started) = track.started_at {
                            self.boot_to_online
                                .get_or_create(&label)
                                .observe(now.duration_since(started).as_secs_f64());
                        }
                    }
                    if phase == Phase::Busy && track.busy_since.is_none() && !track.done {
                        track.busy_since = Some(now);
                    }
                }
                Phase::Finishing | Phase::Stopped | Phase::Deleting | Phase::Stale(_) => {
                    if let Some(busy) = track.busy_since.take() {
                        track.done = true;
                        self.job_duration
                            .get_or_create(&label)
                            .observe(now.duration_since(busy).as_secs_f64());
                    }
                }
                _ => {}
            }
        }
        let in_flight: HashSet<&str> = observation
            .observed
            .in_flight
            .iter()
            .map(|f| f.runner_name.as_str())
            .collect();
        tracks.retain(|name, t| {
            if seen.contains(name) {
                return true;
            }
            if let Some(busy) = t.busy_since.take() {
                // The VM is gone: its job ended at the latest now.
                self.job_duration
                    .get_or_create(&PoolLabel {
                        pool: t.pool.clone(),
                    })
                    .observe(now.duration_since(busy).as_secs_f64());
                return false;
            }
            // A provision whose clone is not listed yet stays tracked for a while; a VM that was listed
            // and is gone is forgotten.
            !t.listed
                && (in_flight.contains(name.as_str())
                    || now.duration_since(t.since) < TRACK_UNLISTED)
        });
    }

    /// A provision was started for `start` (the pass's `jobs` give the job's `created_at`).
    pub fn provision_started(&self, start: &Start, jobs: &[Job]) {
        self.provisions_started
            .get_or_create(&PoolLabel {
                pool: start.pool.clone(),
            })
            .inc();
        let job_created_unix = start
            .for_job
            .and_then(|id| jobs.iter().find(|j| j.id == id))
            .map(|j| j.created_at_unix)
            .filter(|c| *c > 0);
        lock(&self.tracks).insert(
            start.runner_name.clone(),
            VmTrack {
                pool: start.pool.clone(),
                since: Instant::now(),
                job_created_unix,
                started_at: None,
                online_seen: false,
                busy_since: None,
                done: false,
                listed: false,
            },
        );
    }

    /// The start task of a provision finished: clone and start durations, queued → started.
    pub fn vm_started(&self, pool: &str, runner_name: &str, clone_ms: u64, start_ms: u64) {
        let label = PoolLabel {
            pool: pool.to_owned(),
        };
        self.clone_duration
            .get_or_create(&label)
            .observe(clone_ms as f64 / 1000.0);
        self.start_duration
            .get_or_create(&label)
            .observe(start_ms as f64 / 1000.0);
        let mut tracks = lock(&self.tracks);
        if let Some(t) = tracks.get_mut(runner_name) {
            t.started_at = Some(Instant::now());
            if let Some(created) = t.job_created_unix.take() {
                let waited = (now_unix_f64() - created as f64).max(0.0);
                self.queued_to_started.get_or_create(&label).observe(waited);
            }
        }
    }

    /// A provision ended (success or rolled back).
    pub fn provision_finished(&self, start: &Start, result: &Result<(), Error>) {
        match result {
            Ok(()) => {
                self.provisions_succeeded
                    .get_or_create(&PoolLabel {
                        pool: start.pool.clone(),
                    })
                    .inc();
            }
            Err(e) => {
                self.provisions_failed
                    .get_or_create(&PoolReason {
                        pool: start.pool.clone(),
                        reason: failure_reason(e).to_owned(),
                    })
                    .inc();
                lock(&self.tracks).remove(&start.runner_name);
            }
        }
    }

    /// A runner VM was deleted.
    pub fn deletion(&self, pool: &str, reason: DeleteReason) {
        self.deletions
            .get_or_create(&PoolReason {
                pool: pool.to_owned(),
                reason: deletion_reason(reason).to_owned(),
            })
            .inc();
    }

    /// `Ok(why)` when the last pass succeeded less than [`READY_POLL_INTERVALS`] poll intervals ago (so
    /// Proxmox and GitHub answered then), else `Err(one-line reason)`.
    pub fn readiness(&self, poll_interval: Duration) -> Result<String, String> {
        let health = lock(&self.health);
        let max_age = poll_interval.saturating_mul(READY_POLL_INTERVALS);
        if let Some((failed_at, why)) = &health.last_failure
            && health.last_success.is_none_or(|ok| *failed_at > ok)
        {
            return Err(format!("last pass failed: {why}"));
        }
        match health.last_success {
            None => Err("no reconcile pass has completed yet".to_owned()),
            Some(ok) if ok.elapsed() > max_age => Err(format!(
                "last successful pass was {} s ago (more than {READY_POLL_INTERVALS} poll intervals of {} s)",
                ok.elapsed().as_secs(),
                poll_interval.as_secs()
            )),
            Some(ok) => {
                let mut why = format!(
                    "last pass {:.1} s ago reached Proxmox and GitHub",
                    ok.elapsed().as_secs_f64()
                );
                for h in &health.held {
                    why.push_str(&format!("; pool {} held ({})", h.pool, h.reason));
                }
                Ok(why)
            }
        }
    }
}

impl Metrics {
    /// [`Metrics::readiness`] in words fit for an unauthenticated client (`GET /readyz`): `Ok(())`, or a
    /// generic reason (`last pass failed`, …), never an error's text (it may name internal URLs; the
    /// reconciler logs it).
    pub fn public_readiness(&self, poll_interval: Duration) -> Result<(), &'static str> {
        let health = lock(&self.health);
        if let Some((failed_at, _)) = &health.last_failure
            && health.last_success.is_none_or(|ok| *failed_at > ok)
        {
            return Err("last pass failed");
        }
        match health.last_success {
            None => Err("no reconcile pass has completed yet"),
            Some(ok) if ok.elapsed() > poll_interval.saturating_mul(READY_POLL_INTERVALS) => {
                Err("last successful pass is too old")
            }
            Some(_) => Ok(()),
        }
    }
}

/// How long a provision's track survives without its VM in the listing (the listing lags new clones).
const TRACK_UNLISTED: Duration = Duration::from_secs(600);

struct ApiObserver(Arc<Metrics>);

impl proxmox_api::RequestObserver for ApiObserver {
    fn on_request(&self, event: &proxmox_api::RequestEvent) {
        self.0.api_request("proxmox", event.endpoint, event.status);
    }
}

impl github_runners::RequestObserver for ApiObserver {
    fn on_request(&self, event: &github_runners::RequestEvent) {
        self.0.api_request("github", event.endpoint, event.status);
        if event.conditional_hit {
            self.0.conditional_hits.inc();
        }
    }
}

/// Every family of issue 10, with its type, as scraped.
#[cfg(test)]
pub(crate) const FAMILIES: [(&str, &str); 20] = [
    ("gha_pool_held", "gauge"),
    ("gha_runner_vms", "gauge"),
    ("gha_queued_jobs", "gauge"),
    ("gha_pool_cap", "gauge"),
    ("gha_pool_min_idle", "gauge"),
    ("gha_provisions_started", "counter"),
    ("gha_provisions_succeeded", "counter"),
    ("gha_provisions_failed", "counter"),
    ("gha_deletions", "counter"),
    ("gha_api_requests", "counter"),
    ("gha_github_conditional_hits", "counter"),
    ("gha_webhook_deliveries", "counter"),
    ("gha_github_rate_limit_remaining", "gauge"),
    ("gha_github_rate_limit_reset_seconds", "gauge"),
    ("gha_job_queued_to_vm_started_seconds", "histogram"),
    ("gha_clone_duration_seconds", "histogram"),
    ("gha_start_duration_seconds", "histogram"),
    ("gha_boot_to_runner_online_seconds", "histogram"),
    ("gha_job_duration_seconds", "histogram"),
    ("gha_reconcile_passes", "counter"),
];

/// Checks `text` is an OpenMetrics/Prometheus text exposition: every sample line is
/// `name[{labels}] value`, every sample belongs to a family announced by `# HELP` and `# TYPE` lines, and
/// the text ends with `# EOF`. Returns the families (name → type).
#[cfg(test)]
pub(crate) fn parse_exposition(
    text: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    use std::collections::BTreeMap;
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut eof = false;
    for line in text.lines() {
        if eof {
            return Err(format!("content after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            helps.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("bad TYPE line {line:?}"));
            };
            if !helps.contains(name) {
                return Err(format!("TYPE before HELP for {name}"));
            }
            if ![
                "counter",
                "gauge",
                "histogram",
                "summary",
                "info",
                "unknown",
            ]
            .contains(&kind)
            {
                return Err(format!("unknown type in {line:?}"));
            }
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("unexpected comment {line:?}"));
        }
        // name{labels} value
        let (series, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => return Err(format!("no value in {line:?}")),
        };
        let value_ok = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
        if !value_ok {
            return Err(format!("bad value in {line:?}"));
        }
        let name = match series.find('{') {
            Some(i) => {
                let labels = &series[i + 1..];
                let Some(labels) = labels.strip_suffix('}') else {
                    return Err(format!("unclosed labels in {line:?}"));
                };
                for pair in split_labels(labels) {
                    let Some((k, v)) = pair.split_once('=') else {
                        return Err(format!("bad label {pair:?} in {line:?}"));
                    };
                    let valid_key = !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !k.starts_with(|c: char| c.is_ascii_digit());
                    if !(valid_key && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')) {
                        return Err(format!("bad label {pair:?} in {line:?}"));
                    }
                }
                &series[..i]
            }
            None => series,
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(format!("bad metric name in {line:?}"));
        }
        let family = ["_total", "_bucket", "_sum", "_count", "_created", "_info"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(format!("sample {name} has no TYPE line"));
        }
    }
    if !eof {
        return Err("no # EOF line".to_owned());
    }
    Ok(types)
}

/// Splits `a="x",b="y,z"` on the commas outside quotes.
#[cfg(test)]
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_registry_announces_every_family() {
        let m = Metrics::new();
        let text = m.encode();
        let types = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (name, kind) in FAMILIES {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
    }

    #[test]
    fn the_parser_rejects_malformed_text() {
        for bad in [
            "gha_x 1\n# EOF\n",
            "# HELP a x\n# TYPE a gauge\na{b=1} 1\n# EOF\n",
            "# HELP a x\n# TYPE a gauge\na one\n# EOF\n",
            "# HELP a x\n# TYPE a gauge\na 1\n",
        ] {
            assert!(parse_exposition(bad).is_err(), "{bad:?}");
        }
        assert!(parse_exposition("# HELP a x\n# TYPE a gauge\na{b=\"1,2\"} 1\n# EOF\n").is_ok());
    }

    #[test]
    fn series_carry_their_labels_and_counters_end_in_total() {
        let m = Metrics::new();
        m.webhook_delivery(Delivery::Triggered);
        m.webhook_delivery(Delivery::Triggered);
        m.api_request("proxmox", "/cluster/resources", Some(200));
        m.api_request("github", "/repos/{owner}/{repo}/actions/runners", None);
        m.deletion("linux", DeleteReason::BootTimeout);
        m.pass_failed(&Error::Cancelled);
        let text = m.encode();
        parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for line in [
            "gha_webhook_deliveries_total{result=\"triggered\"} 2",
            "gha_api_requests_total{service=\"proxmox\",endpoint=\"/cluster/resources\",status=\"200\"} 1",
            "gha_api_requests_total{service=\"github\",endpoint=\"/repos/{owner}/{repo}/actions/runners\",status=\"error\"} 1",
            "gha_deletions_total{pool=\"linux\",reason=\"boot_timeout\"} 1",
            "gha_reconcile_passes_total{result=\"error\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn held_pools_show_in_the_gauge_and_the_readiness_detail() {
        let m = Metrics::new();
        lock(&m.health).last_success = Some(Instant::now());
        m.set_held(vec![crate::pool_gate::HeldPool {
            pool: "linux".into(),
            reason: "template_missing",
            message: "pool \"linux\": template \"t\" not found".into(),
        }]);
        let text = m.encode();
        assert!(
            text.contains("gha_pool_held{pool=\"linux\",reason=\"template_missing\"} 1"),
            "{text}"
        );
        let ready = m
            .readiness(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ready.contains("pool linux held (template_missing)"),
            "{ready}"
        );
        m.set_held(Vec::new());
        assert!(!m.encode().contains("gha_pool_held{"));
        assert!(
            !m.readiness(Duration::from_secs(5))
                .unwrap_or_default()
                .contains("held")
        );
    }

    #[test]
    fn readiness_follows_the_passes() {
        let m = Metrics::new();
        let poll = Duration::from_secs(5);
        assert!(
            m.readiness(poll)
                .is_err_and(|e| e.contains("no reconcile pass"))
        );
        lock(&m.health).last_success = Some(Instant::now());
        assert!(m.readiness(poll).is_ok());
        m.pass_failed(&Error::TemplateNotFound {
            pool: "p".into(),
            template: "t".into(),
        });
        let why = m.readiness(poll).err().unwrap_or_default();
        assert!(why.starts_with("last pass failed: pool \"p\""), "{why}");
        assert!(!why.contains('\n'));
        lock(&m.health).last_success = Some(Instant::now());
        assert!(m.readiness(poll).is_ok());
        lock(&m.health).last_failure = None;
        lock(&m.health).last_success = Instant::now().checked_sub(Duration::from_secs(16));
        let why = m.readiness(poll).err().unwrap_or_default();
        assert!(why.contains("more than 3 poll intervals"), "{why}");
    }

    fn sim_config() -> RuntimeConfig {
        let vars: std::collections::HashMap<&str, &str> = std::collections::HashMap::from([
            ("PROXMOX_URL", "https://pve.example:8006/api2/json"),
            ("PROXMOX_NODE", "pve1"),
            ("PROXMOX_TOKEN_ID", "ghr@pve!dispatcher"),
            ("PROXMOX_TOKEN_SECRET", "pve-secret-value-123"),
            ("GITHUB_TOKEN", "ghp_secretsecretsecret"),
        ]);
        let lookup = |k: &str| vars.get(k).map(|v| (*v).to_owned());
        RuntimeConfig::load(&lookup, &|_| false).unwrap_or_else(|e| panic!("{e}"))
    }

    fn count(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn boot_to_online_and_job_duration_follow_what_passes_see() {
        use pool_scheduler::{ObservedVm, Power, RunnerReg, marks};
        let cfg = sim_config();
        let pool = cfg.pools.pools()[0].clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = marks::runner_name(&pool.runner_name_prefix, pool.vmid_start, now);
        let start = Start {
            pool: pool.name.clone(),
            node: "pve1".into(),
            vmid: pool.vmid_start,
            runner_name: name.clone(),
            created_unix: now,
            for_job: None,
        };
        let m = Metrics::new();
        m.provision_started(&start, &[]);
        m.vm_started(&pool.name, &name, 800, 200);
        let mut tags = marks::managed_tags(&pool.name);
        tags.push(marks::READY_TAG.to_owned());
        let vm = ObservedVm {
            vmid: pool.vmid_start,
            node: "pve1".into(),
            name: Some(name.clone()),
            tags,
            marker: None,
            template: false,
            lock: None,
            power: Power::Running,
            power_confirmed: true,
            uptime_secs: Some(5),
        };
        let pass = |vms: Vec<ObservedVm>, runner: Option<(bool, bool)>| {
            let mut observation = Observation::default();
            observation.observed.vms = vms;
            if let Some((online, busy)) = runner {
                observation.observed.runners = vec![RunnerReg {
                    id: 1,
                    name: name.clone(),
                    online,
                    busy,
                }];
            }
            m.pass_observed(&cfg, &observation, &Plan::default(), now);
            m.encode()
        };
        let label = format!("{{pool=\"{}\"}}", pool.name);
        let boot = format!("gha_boot_to_runner_online_seconds_count{label}");
        let job = format!("gha_job_duration_seconds_count{label}");
        // Booting (registration offline): nothing yet.
        let text = pass(vec![vm.clone()], Some((false, false)));
        assert_eq!((count(&text, &boot), count(&text, &job)), (0, 0), "{text}");
        // Online and idle: boot → online observed once.
        let text = pass(vec![vm.clone()], Some((true, false)));
        assert_eq!(count(&text, &boot), 1, "{text}");
        // Busy, twice: still one boot observation, no job duration yet.
        pass(vec![vm.clone()], Some((true, true)));
        let text = pass(vec![vm.clone()], Some((true, true)));
        assert_eq!((count(&text, &boot), count(&text, &job)), (1, 0), "{text}");
        // Powered off after the job: one job duration.
        let stopped = ObservedVm {
            power: Power::Stopped,
            ..vm.clone()
        };
        let text = pass(vec![stopped.clone()], None);
        assert_eq!(count(&text, &job), 1, "{text}");
        let text = pass(vec![stopped], None);
        assert_eq!(count(&text, &job), 1, "counted once: {text}");
        // A VM seen busy that disappears from the listing: its job ended too.
        let text = pass(vec![vm.clone()], Some((true, true)));
        assert_eq!(count(&text, &job), 1, "{text}");
        let text = pass(Vec::new(), None);
        assert_eq!(
            count(&text, &job),
            1,
            "a finished VM does not count again: {text}"
        );
        assert!(lock(&m.tracks).is_empty(), "tracks of gone VMs are dropped");
        let text = m.encode();
        parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn queued_to_started_uses_the_jobs_created_at() {
        let m = Metrics::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let start = Start {
            pool: "linux".into(),
            node: "pve1".into(),
            vmid: 200,
            runner_name: "gh-runner-200-abc".into(),
            created_unix: now,
            for_job: Some(7),
        };
        let jobs = [Job {
            id: 7,
            run_id: 1,
            labels: vec!["self-hosted".into()],
            created_at_unix: now - 30,
        }];
        m.provision_started(&start, &jobs);
        m.vm_started("linux", "gh-runner-200-abc", 1500, 250);
        m.provision_finished(&start, &Ok(()));
        let text = m.encode();
        parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(text.contains("gha_job_queued_to_vm_started_seconds_count{pool=\"linux\"} 1"));
        assert!(
            text.contains(
                "gha_job_queued_to_vm_started_seconds_bucket{le=\"20.0\",pool=\"linux\"} 0"
            ) || text.contains(
                "gha_job_queued_to_vm_started_seconds_bucket{pool=\"linux\",le=\"20.0\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains("gha_clone_duration_seconds_sum{pool=\"linux\"} 1.5"),
            "{text}"
        );
        assert!(text.contains("gha_provisions_started_total{pool=\"linux\"} 1"));
        assert!(text.contains("gha_provisions_succeeded_total{pool=\"linux\"} 1"));
    }
}
