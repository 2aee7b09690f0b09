//! Test-facing handles: steer the simulation and inspect its state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::github::JobSpec;
use crate::server::ServerSlot;
use crate::world::{
    Container, CreatedVm, CredentialKind, GuestPhase, JobStatus, Mutation, Runner, Scope, Service,
    TaskEffect, Unavailable, Vm, VmEvent, VmEventKind,
};
use crate::{Error, Os, Shared};

fn since(start: Instant, t: Instant) -> Duration {
    t.saturating_duration_since(start)
}

/// A VM as the test sees it (current, not lagging).
#[derive(Debug, Clone)]
pub struct VmView {
    /// VMID.
    pub vmid: u32,
    /// Node.
    pub node: String,
    /// Name.
    pub name: Option<String>,
    /// Powered on.
    pub running: bool,
    /// `lock` (e.g. `clone`, `destroyed`).
    pub lock: Option<String>,
    /// Normalised tags (`a;b`).
    pub tags: Option<String>,
    /// Is a template.
    pub template: bool,
    /// `description`.
    pub description: Option<String>,
    /// Full config.
    pub config: BTreeMap<String, String>,
    /// Source template of a linked clone.
    pub linked_from: Option<u32>,
    /// The guest, once started.
    pub guest: Option<GuestView>,
}

/// A guest as the test sees it.
#[derive(Debug, Clone)]
pub struct GuestView {
    /// Phase.
    pub phase: GuestPhase,
    /// User-data read from the snippet at start.
    pub user_data: Option<String>,
    /// Files written by the agent and not consumed yet.
    pub files: BTreeMap<String, String>,
    /// Name of the runner it registered as.
    pub runner_name: Option<String>,
}

/// A PVE task.
#[derive(Debug, Clone)]
pub struct TaskView {
    /// UPID.
    pub upid: String,
    /// Node it runs on.
    pub node: String,
    /// Type (`qmclone`, `qmstart`, …).
    pub kind: String,
    /// Object id (a VMID).
    pub id: String,
    /// `None` while running.
    pub exitstatus: Option<String>,
}

/// A VM added by the test (a "foreign" VM, not created by the dispatcher).
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// VMID.
    pub vmid: u32,
    /// Node.
    pub node: String,
    /// Name.
    pub name: String,
    /// Powered on.
    pub running: bool,
    /// Template.
    pub template: bool,
    /// Tags (normalised).
    pub tags: Option<String>,
    /// Description.
    pub description: Option<String>,
}

impl VmSpec {
    /// A stopped non-template VM.
    pub fn new(vmid: u32, node: &str, name: &str) -> Self {
        Self {
            vmid,
            node: node.to_string(),
            name: name.to_string(),
            running: false,
            template: false,
            tags: None,
            description: None,
        }
    }
}

/// Steer and inspect the simulated Proxmox VE.
#[derive(Debug, Clone)]
pub struct PveHandle {
    shared: Arc<Shared>,
    server: Arc<tokio::sync::Mutex<ServerSlot>>,
    url: String,
}

fn vm_view(vm: &Vm) -> VmView {
    VmView {
        vmid: vm.vmid,
        node: vm.node.clone(),
        name: vm.name().map(str::to_string),
        running: vm.running,
        lock: vm.lock.clone(),
        tags: vm.config.get("tags").cloned(),
        template: vm.is_template(),
        description: vm.config.get("description").cloned(),
        config: vm.config.clone(),
        linked_from: vm.linked_from,
        guest: vm.guest.as_ref().map(|g| GuestView {
            phase: g.phase.clone(),
            user_data: g.user_data.clone(),
            files: g.files.clone(),
            runner_name: g.runner_name.clone(),
        }),
    }
}

impl PveHandle {
    pub(crate) fn new(
        shared: Arc<Shared>,
        server: Arc<tokio::sync::Mutex<ServerSlot>>,
        url: String,
    ) -> Self {
        Self {
            shared,
            server,
            url,
        }
    }

    /// `http://127.0.0.1:PORT/api2/json`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One VM (current state).
    pub fn vm(&self, vmid: u32) -> Option<VmView> {
        self.shared.lock().pve.vms.get(&vmid).map(vm_view)
    }

    /// Every VM, templates included.
    pub fn vms(&self) -> Vec<VmView> {
        self.shared.lock().pve.vms.values().map(vm_view).collect()
    }

    /// VMs whose name starts with `prefix`.
    pub fn vms_with_prefix(&self, prefix: &str) -> Vec<VmView> {
        self.vms()
            .into_iter()
            .filter(|v| v.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
            .collect()
    }

    /// Adds a foreign VM (any VMID, any node). Fails if the VMID is taken.
    pub fn add_vm(&self, spec: VmSpec) -> Result<(), Error> {
        let mut w = self.shared.lock();
        if !w.pve.nodes.contains(&spec.node) {
            return Err(Error::Config(format!(
                "add_vm {}: unknown node '{}'",
                spec.vmid, spec.node
            )));
        }
        if w.pve.vms.contains_key(&spec.vmid) || w.pve.cts.contains_key(&spec.vmid) {
            return Err(Error::Config(format!(
                "add_vm: vmid {} is taken",
                spec.vmid
            )));
        }
        let mut config = BTreeMap::from([
            ("name".to_string(), spec.name.clone()),
            ("memory".to_string(), "2048".to_string()),
            ("cores".to_string(), "1".to_string()),
        ]);
        if spec.template {
            config.insert("template".into(), "1".into());
        }
        if let Some(t) = &spec.tags {
            let t = crate::pve::normalize_tags(t)
                .map_err(|e| Error::Config(format!("add_vm {} tags: {e}", spec.vmid)))?;
            config.insert("tags".into(), t);
        }
        if let Some(d) = &spec.description {
            config.insert("description".into(), d.clone());
        }
        let now = Instant::now();
        w.pve.vms.insert(
            spec.vmid,
            Vm {
                vmid: spec.vmid,
                node: spec.node.clone(),
                config,
                lock: None,
                running: spec.running,
                started_at: spec.running.then_some(now),
                ever_started: spec.running,
                linked_from: None,
                os: Os::Linux,
                shared_storage: false,
                registration_labels: Vec::new(),
                guest: None,
            },
        );
        let at = w.since_start();
        w.pve.created.push(CreatedVm {
            at,
            vmid: spec.vmid,
            node: spec.node,
            name: Some(spec.name),
            description: spec.description,
            cloned_from: None,
        });
        w.vm_event(spec.vmid, VmEventKind::Created);
        if spec.running {
            w.vm_event(spec.vmid, VmEventKind::Started);
        }
        Ok(())
    }

    /// Adds an LXC container (it holds its VMID cluster-wide and shows up in `/cluster/resources`).
    pub fn add_container(
        &self,
        vmid: u32,
        node: &str,
        name: &str,
        running: bool,
    ) -> Result<(), Error> {
        let mut w = self.shared.lock();
        if w.pve.vms.contains_key(&vmid) || w.pve.cts.contains_key(&vmid) {
            return Err(Error::Config(format!(
                "add_container: vmid {vmid} is taken"
            )));
        }
        w.pve.cts.insert(
            vmid,
            Container {
                vmid,
                node: node.to_string(),
                name: name.to_string(),
                running,
            },
        );
        Ok(())
    }

    /// Powers a VM off at once (as if it crashed or someone stopped it by hand).
    pub fn power_off(&self, vmid: u32) {
        let mut w = self.shared.lock();
        if w.pve.vms.get(&vmid).is_some_and(|v| v.running) {
            w.power_off(vmid);
        }
    }

    /// Starts a task as `user` (say `root@pam` from the web UI, or a token `user@realm!name`)
    /// on `node`: it runs for `duration`, changes nothing and ends with `exitstatus` (`OK`,
    /// `WARNINGS: n` or an error text). Returns its UPID.
    pub fn add_task(
        &self,
        node: &str,
        kind: &str,
        id: &str,
        user: &str,
        duration: Duration,
        exitstatus: &str,
    ) -> String {
        let effect = if exitstatus == "OK" {
            TaskEffect::Nothing
        } else {
            TaskEffect::Fail(exitstatus.to_string())
        };
        self.shared
            .lock()
            .new_task_by(node, kind, id, user, duration, effect)
    }

    /// Every task so far.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.shared
            .lock()
            .pve
            .tasks
            .values()
            .map(|t| TaskView {
                upid: t.upid.clone(),
                node: t.node.clone(),
                kind: t.kind.clone(),
                id: t.id.clone(),
                exitstatus: t.exitstatus.clone(),
            })
            .collect()
    }

    /// Forces a "pvestatd" broadcast now (`/cluster/resources` catches up).
    pub fn refresh_status(&self) {
        self.shared.lock().take_snapshot(Instant::now());
    }

    /// Makes the API unavailable (`Some`) or available again (`None`).
    /// `Refused` closes the port; the same port is listened on again afterwards.
    pub async fn set_unavailable(&self, mode: Option<Unavailable>) -> Result<(), Error> {
        self.shared.lock().pve.unavailable = mode;
        let mut server = self.server.lock().await;
        if mode == Some(Unavailable::Refused) {
            server.stop().await;
            Ok(())
        } else {
            server.restart().await
        }
    }

    /// Every VM ever created (clones and test-added VMs), in order.
    pub fn created_vms(&self) -> Vec<CreatedVm> {
        self.shared.lock().pve.created.clone()
    }

    /// Every request that stopped, changed or deleted a VM (config PUT/POST, start/stop/shutdown, DELETE).
    pub fn mutations(&self) -> Vec<Mutation> {
        self.shared.lock().pve.mutations.clone()
    }

    /// Mutating requests on one VMID.
    pub fn mutations_on(&self, vmid: u32) -> Vec<Mutation> {
        self.mutations()
            .into_iter()
            .filter(|m| m.vmid == vmid)
            .collect()
    }

    /// Every VM state change, in order.
    pub fn events(&self) -> Vec<VmEvent> {
        self.shared.lock().pve.events.clone()
    }

    /// Peak number of "active" VMs whose name starts with `prefix`: created and not yet powered off after
    /// having run (cloning, stopped-before-first-start, running). Computed over every state change.
    pub fn max_concurrent(&self, prefix: &str) -> usize {
        self.max_concurrent_by(|n| n.starts_with(prefix), false)
    }

    /// Peak number of existing VMs (any power state) whose name starts with `prefix`.
    pub fn max_existing(&self, prefix: &str) -> usize {
        self.max_concurrent_by(|n| n.starts_with(prefix), true)
    }

    /// Peak concurrency of VMs whose name satisfies `pred`; `count_stopped` also counts VMs that ran and stopped.
    pub fn max_concurrent_by(&self, pred: impl Fn(&str) -> bool, count_stopped: bool) -> usize {
        self.concurrency_timeline(pred, count_stopped)
            .into_iter()
            .map(|(_, n)| n)
            .max()
            .unwrap_or(0)
    }

    /// `(time since start, count)` after every VM event, for VMs whose name satisfies `pred`.
    pub fn concurrency_timeline(
        &self,
        pred: impl Fn(&str) -> bool,
        count_stopped: bool,
    ) -> Vec<(Duration, usize)> {
        let events = self.events();
        let mut alive: BTreeMap<u32, (Option<String>, bool, bool)> = BTreeMap::new();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            match e.kind {
                VmEventKind::Created => {
                    alive.insert(e.vmid, (e.name.clone(), false, false));
                }
                VmEventKind::Started => {
                    if let Some(a) = alive.get_mut(&e.vmid) {
                        a.1 = true;
                        a.2 = true;
                    }
                }
                VmEventKind::Stopped => {
                    if let Some(a) = alive.get_mut(&e.vmid) {
                        a.2 = false;
                    }
                }
                VmEventKind::Changed => {
                    if let Some(a) = alive.get_mut(&e.vmid) {
                        a.0 = e.name.clone();
                    }
                }
                VmEventKind::Destroyed => {
                    alive.remove(&e.vmid);
                }
            }
            let n = alive
                .values()
                .filter(|(name, started, running)| {
                    name.as_deref().is_some_and(&pred) && (count_stopped || !*started || *running)
                })
                .count();
            out.push((e.at, n));
        }
        out
    }

    /// Request counters of the PVE server: `(method, endpoint, status) -> count`.
    pub fn requests(&self) -> BTreeMap<(String, String, u16), u64> {
        self.shared
            .lock()
            .counters
            .iter()
            .filter(|(k, _)| k.service == Service::Pve)
            .map(|(k, v)| ((k.method.clone(), k.endpoint.clone(), k.status), *v))
            .collect()
    }

    /// Requests to one templated endpoint (all statuses), e.g. `("POST", "/nodes/{node}/qemu/{vmid}/clone")`.
    pub fn request_count(&self, method: &str, endpoint: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|((m, e, _), _)| m == method && e == endpoint)
            .map(|(_, v)| v)
            .sum()
    }
}

/// A run queued by [`GitHubHandle::queue_run`].
#[derive(Debug, Clone)]
pub struct QueuedRun {
    /// Run id.
    pub run_id: u64,
    /// Job ids in the order of the specs.
    pub job_ids: Vec<u64>,
}

/// A job as the test sees it. Times are since the simulation started.
#[derive(Debug, Clone)]
pub struct JobView {
    /// Job id.
    pub id: u64,
    /// Run id.
    pub run_id: u64,
    /// `owner/name`.
    pub repo: String,
    /// Name.
    pub name: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// Status.
    pub status: JobStatus,
    /// Conclusion once completed (`success`, `failure`, `skipped`).
    pub conclusion: Option<String>,
    /// Created.
    pub created: Duration,
    /// Became queued.
    pub queued: Option<Duration>,
    /// Taken by a runner.
    pub started: Option<Duration>,
    /// Completed.
    pub completed: Option<Duration>,
    /// Runner that took it.
    pub runner_name: Option<String>,
}

/// A workflow run.
#[derive(Debug, Clone)]
pub struct RunView {
    /// Run id.
    pub id: u64,
    /// `owner/name`.
    pub repo: String,
    /// `queued`, `in_progress`, `completed`.
    pub status: String,
    /// Conclusion.
    pub conclusion: Option<String>,
    /// Job ids.
    pub jobs: Vec<u64>,
}

/// A runner registration.
#[derive(Debug, Clone)]
pub struct RunnerView {
    /// Runner id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Repo or org.
    pub scope: Scope,
    /// Label names.
    pub labels: Vec<String>,
    /// Online.
    pub online: bool,
    /// Busy.
    pub busy: bool,
    /// Ephemeral.
    pub ephemeral: bool,
    /// Created by `generate-jitconfig`.
    pub jit: bool,
    /// Runner group.
    pub group_id: u64,
}

/// A credential GitHub issued (the secret itself is not exposed).
#[derive(Debug, Clone)]
pub struct CredentialView {
    /// Kind.
    pub kind: CredentialKind,
    /// Scope.
    pub scope: Scope,
    /// Runner name (JIT).
    pub runner_name: Option<String>,
    /// Issued (since start).
    pub issued: Duration,
    /// Used by a guest.
    pub used: bool,
}

/// Steer and inspect the simulated GitHub.
#[derive(Debug, Clone)]
pub struct GitHubHandle {
    shared: Arc<Shared>,
    url: String,
}

fn runner_view(r: &Runner) -> RunnerView {
    RunnerView {
        id: r.id,
        name: r.name.clone(),
        scope: r.scope.clone(),
        labels: r.labels.iter().map(|(_, n, _)| n.clone()).collect(),
        online: r.online,
        busy: r.busy,
        ephemeral: r.ephemeral,
        jit: r.jit,
        group_id: r.group_id,
    }
}

impl GitHubHandle {
    pub(crate) fn new(shared: Arc<Shared>, url: String) -> Self {
        Self { shared, url }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Queues a workflow run in `repo` (`owner/name`; created if unknown). Jobs without `needs` are queued
    /// at once; the others are `pending` until the jobs they need completed successfully.
    pub fn queue_run(&self, repo: &str, jobs: Vec<JobSpec>) -> QueuedRun {
        let (run_id, job_ids) = self.shared.lock().queue_run(repo, &jobs);
        QueuedRun { run_id, job_ids }
    }

    /// Adds a repository.
    pub fn add_repo(&self, repo: &str) {
        let mut w = self.shared.lock();
        w.gh.repos.insert(repo.to_string());
        if let Some(o) = repo.split('/').next() {
            w.gh.orgs.insert(o.to_string());
        }
    }

    /// Adds an organisation.
    pub fn add_org(&self, org: &str) {
        self.shared.lock().gh.orgs.insert(org.to_string());
    }

    /// Every job.
    pub fn jobs(&self) -> Vec<JobView> {
        let w = self.shared.lock();
        let start = w.start;
        w.gh.jobs
            .values()
            .map(|j| JobView {
                id: j.id,
                run_id: j.run_id,
                repo: j.repo.clone(),
                name: j.name.clone(),
                labels: j.labels.clone(),
                status: j.status,
                conclusion: j.conclusion.clone(),
                created: since(start, j.created),
                queued: j.queued.map(|t| since(start, t)),
                started: j.started.map(|t| since(start, t)),
                completed: j.completed.map(|t| since(start, t)),
                runner_name: j.runner_name.clone(),
            })
            .collect()
    }

    /// One job.
    pub fn job(&self, id: u64) -> Option<JobView> {
        self.jobs().into_iter().find(|j| j.id == id)
    }

    /// Jobs with a status.
    pub fn jobs_with_status(&self, status: JobStatus) -> Vec<JobView> {
        self.jobs()
            .into_iter()
            .filter(|j| j.status == status)
            .collect()
    }

    /// Whether every job completed.
    pub fn all_jobs_completed(&self) -> bool {
        self.shared
            .lock()
            .gh
            .jobs
            .values()
            .all(|j| j.status == JobStatus::Completed)
    }

    /// Every run.
    pub fn runs(&self) -> Vec<RunView> {
        self.shared
            .lock()
            .gh
            .runs
            .values()
            .map(|r| RunView {
                id: r.id,
                repo: r.repo.clone(),
                status: r.status.to_string(),
                conclusion: r.conclusion.map(str::to_string),
                jobs: r.jobs.clone(),
            })
            .collect()
    }

    /// Current runner registrations.
    pub fn runners(&self) -> Vec<RunnerView> {
        self.shared
            .lock()
            .gh
            .runners
            .values()
            .map(runner_view)
            .collect()
    }

    /// Runners removed so far (ephemeral after their job, or deleted through the API): `(id, name)`.
    pub fn removed_runners(&self) -> Vec<(u64, String)> {
        self.shared.lock().gh.removed_runners.clone()
    }

    /// Every credential issued.
    pub fn credentials(&self) -> Vec<CredentialView> {
        let w = self.shared.lock();
        w.gh.credentials
            .iter()
            .map(|c| CredentialView {
                kind: c.kind,
                scope: c.scope.clone(),
                runner_name: c.runner_name.clone(),
                issued: since(w.start, c.issued),
                used: c.used,
            })
            .collect()
    }

    /// The secrets issued so far (JIT configs, registration/remove tokens, installation tokens): a test
    /// asserts none of them appears in the dispatcher's output.
    pub fn issued_secrets(&self) -> Vec<String> {
        let w = self.shared.lock();
        w.gh.credentials
            .iter()
            .map(|c| c.secret.clone())
            .chain(w.gh.install_tokens.iter().cloned())
            .collect()
    }

    /// Registers a runner directly (a runner not made by the dispatcher). Returns its id.
    pub fn add_runner(
        &self,
        scope: Scope,
        name: &str,
        labels: &[&str],
        online: bool,
        ephemeral: bool,
    ) -> u64 {
        let mut w = self.shared.lock();
        let id = w.next_gh_id();
        let mut ls = vec![(
            w.label_id("self-hosted"),
            "self-hosted".to_string(),
            "read-only",
        )];
        for l in labels {
            if !ls.iter().any(|(_, n, _)| n.eq_ignore_ascii_case(l)) {
                ls.push((w.label_id(l), (*l).to_string(), "custom"));
            }
        }
        w.gh.runners.insert(
            id,
            Runner {
                id,
                name: name.to_string(),
                scope,
                labels: ls,
                online,
                busy: false,
                ephemeral,
                group_id: 1,
                os: Some(Os::Linux),
                job: None,
                jit: false,
            },
        );
        id
    }

    /// Sets a runner online or offline (offline while busy fails its job).
    pub fn set_runner_online(&self, id: u64, online: bool) {
        let mut w = self.shared.lock();
        if online {
            if let Some(r) = w.gh.runners.get_mut(&id) {
                r.online = true;
            }
        } else {
            w.runner_lost(id);
        }
    }

    /// Every request gets a 403 secondary-rate-limit answer with `retry-after` for `window` from now.
    pub fn set_secondary_rate_limit(&self, window: Duration) {
        self.shared.lock().gh.secondary_until = Some(Instant::now() + window);
    }

    /// Sets how much of the primary budget is used (e.g. the limit, to exhaust it).
    pub fn set_rate_limit_used(&self, used: u32) {
        self.shared.lock().gh.rate_used = used;
    }

    /// Remaining primary budget.
    pub fn rate_limit_remaining(&self) -> u32 {
        let w = self.shared.lock();
        w.cfg.github.rate_limit.saturating_sub(w.gh.rate_used)
    }

    /// Requests that consumed primary budget since the start (304s and `/rate_limit` excluded).
    pub fn budgeted_requests(&self) -> u64 {
        self.shared.lock().github_budgeted
    }

    /// Request counters of the GitHub server: `(method, endpoint, status) -> count`.
    pub fn requests(&self) -> BTreeMap<(String, String, u16), u64> {
        self.shared
            .lock()
            .counters
            .iter()
            .filter(|(k, _)| k.service == Service::GitHub)
            .map(|(k, v)| ((k.method.clone(), k.endpoint.clone(), k.status), *v))
            .collect()
    }

    /// Requests to one templated endpoint (all statuses), e.g. `("GET", "/repos/{owner}/{repo}/actions/runs")`.
    pub fn request_count(&self, method: &str, endpoint: &str) -> u64 {
        self.requests()
            .iter()
            .filter(|((m, e, _), _)| m == method && e == endpoint)
            .map(|(_, v)| v)
            .sum()
    }
}
