//! A stateful fake of a Proxmox VE cluster (`ProxmoxApi`) and of a GitHub repository (`GitHubRunners`).
//!
//! It keeps the facts the dispatcher depends on the way the real servers do (shared/api/README.md):
//! VMIDs are cluster-wide (VMs and containers), a clone exists locked until its task finished, a locked VM
//! refuses config changes, start and destroy; a running VM refuses destroy; tasks are polled by UPID on the
//! node the UPID names; the guest agent answers only some pings after a start; runners registered by
//! `generate-jitconfig` are offline until the VM boots. Every call is logged (method and arguments, never
//! a secret) and fault switches make single calls or tasks fail.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use github_runners::{
    GitHubRunners, JitConfig, JitRequest, Job, QueuedJob, RateLimitSnapshot, RateLimitStatus,
    RegistrationToken, Runner, RunnerLabel,
};
use proxmox_api::{
    CloneRequest, ClusterVm, ConfigUpdate, NodeInfo, NodeName, NodeVm, Permissions, ProxmoxApi,
    StorageConfig, Tags, TaskStatus, Upid, Version, VmConfig, VmId, VmStatus,
};
use secrecy::{ExposeSecret, SecretString};

/// Which API a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Proxmox VE.
    Pve,
    /// GitHub.
    Gh,
}

/// One logged call.
#[derive(Debug, Clone)]
pub struct Call {
    pub api: Api,
    pub method: &'static str,
    /// Arguments, secrets left out.
    pub args: String,
    /// The VMID the call is about, if any.
    pub vmid: Option<u32>,
}

/// A QEMU VM of the fake cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeVm {
    pub node: String,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub description: Option<String>,
    pub lock: Option<String>,
    /// Real power state: `running` or `stopped`.
    pub status: String,
    /// What `/cluster/resources` shows instead of `status` (listing lag), if set.
    pub listed_status: Option<String>,
    /// Whether `/cluster/resources` already shows the name (false = listing lag).
    pub name_listed: bool,
    /// Not in `/cluster/resources` at all (e.g. created a moment ago by someone else).
    pub hidden: bool,
    pub template: bool,
    pub cicustom: Option<String>,
    /// After how many pings (since the last start) the guest agent answers; `None` = never.
    pub agent_after_pings: Option<u32>,
    pub pings: u32,
    pub agent_up: bool,
    /// Files written through the guest agent.
    pub files: BTreeMap<String, String>,
    pub uptime: Option<u64>,
}

impl FakeVm {
    /// A stopped, unmarked VM.
    pub fn new(node: &str, name: Option<&str>) -> Self {
        Self {
            node: node.to_owned(),
            name: name.map(str::to_owned),
            tags: Vec::new(),
            description: None,
            lock: None,
            status: "stopped".to_owned(),
            listed_status: None,
            name_listed: true,
            hidden: false,
            template: false,
            cicustom: None,
            agent_after_pings: Some(1),
            pings: 0,
            agent_up: false,
            files: BTreeMap::new(),
            uptime: None,
        }
    }

    /// A template VM.
    pub fn template(node: &str, name: &str) -> Self {
        Self {
            template: true,
            ..Self::new(node, Some(name))
        }
    }

    pub fn with_tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    pub fn with_description(mut self, d: &str) -> Self {
        self.description = Some(d.to_owned());
        self
    }

    pub fn running(mut self) -> Self {
        self.status = "running".to_owned();
        self.uptime = Some(60);
        self
    }

    pub fn locked(mut self, lock: &str) -> Self {
        self.lock = Some(lock.to_owned());
        self
    }
}

/// What a start call found: the `cicustom` and the snippet file it points at (PVE builds the cloud-init
/// drive from it during the start).
#[derive(Debug, Clone, PartialEq)]
pub struct StartRecord {
    pub vmid: u32,
    pub cicustom: Option<String>,
    /// The snippet's content at start; `None` when there was no `cicustom` or the file did not exist.
    pub snippet: Option<String>,
}

#[derive(Debug, Clone)]
enum Effect {
    None,
    CloneDone(u32),
    Started(u32),
    Stopped(u32),
    Deleted(u32),
}

#[derive(Debug, Clone)]
struct Task {
    node: String,
    polls_left: u32,
    exitstatus: String,
    effect: Effect,
    done: bool,
}

/// Fault switches; each queued fault is used once, by the next matching call.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next start call panics (a bug in an executor, simulated).
    pub panic_on_start: bool,
    /// The next clone calls fail with these errors (before anything is created).
    pub clone_errors: VecDeque<proxmox_api::Error>,
    /// The next clone tasks end with these exit statuses (nothing is created).
    pub clone_task_failures: VecDeque<String>,
    /// The next start calls fail with these errors.
    pub start_errors: VecDeque<proxmox_api::Error>,
    /// The next start tasks end with these exit statuses (the VM stays stopped).
    pub start_task_failures: VecDeque<String>,
    /// The next `update_config` calls fail with these errors.
    pub update_config_errors: VecDeque<proxmox_api::Error>,
    /// The next `agent_file_write` calls fail with these errors.
    pub agent_write_errors: VecDeque<proxmox_api::Error>,
    /// Polls before any new task stops.
    pub task_polls: u32,
    /// Agent behaviour of VMs cloned from now on (`None` = the agent never answers).
    pub agent_after_pings: Option<u32>,
    /// The next `list_runners` calls fail with these errors.
    pub list_runners_errors: VecDeque<github_runners::Error>,
    /// The next clone calls are performed (the clone finishes at once) but answered 596, as when a
    /// proxied request's answer is lost.
    pub clone_lost_answers: u32,
    /// Runners that take a job just before their DELETE arrives (the listing showed them idle): the
    /// delete is refused with 422 and the runner is busy from then on.
    pub busy_on_delete: std::collections::BTreeSet<u64>,
}

/// The whole fake world.
#[derive(Debug)]
pub struct World {
    pub nodes: Vec<String>,
    pub vms: BTreeMap<u32, FakeVm>,
    /// LXC containers: vmid → (node, hidden from the listing).
    pub containers: BTreeMap<u32, (String, bool)>,
    tasks: BTreeMap<String, Task>,
    next_pid: u32,
    pub runners: BTreeMap<u64, Runner>,
    next_runner_id: u64,
    pub jobs: Vec<QueuedJob>,
    /// Every JIT config issued: (runner name, encoded config).
    pub jit_issued: Vec<(String, String)>,
    /// Every JIT request received.
    pub jit_requests: Vec<JitRequest>,
    /// Every registration token issued.
    pub reg_tokens: Vec<String>,
    pub calls: Vec<Call>,
    pub faults: Faults,
    pub starts: Vec<StartRecord>,
    /// Every destroy request: (vmid, purge, destroy-unreferenced-disks).
    pub deletes: Vec<(u32, bool, bool)>,
    /// Where `local:snippets/` lives.
    pub snippets_dir: Option<PathBuf>,
    pub now: u64,
}

/// The fake; share it as `Arc<Fake>` for both traits.
#[derive(Debug)]
pub struct Fake {
    w: Mutex<World>,
}

pub const TEMPLATE: &str = "ubuntu-2404-runner-template";

/// A `proxmox_api::Error::Api` as the client builds it.
pub fn api_error(
    method: &'static str,
    endpoint: &'static str,
    status: u16,
    message: impl Into<String>,
) -> proxmox_api::Error {
    proxmox_api::Error::Api {
        method,
        endpoint,
        status,
        message: message.into(),
        errors: BTreeMap::new(),
    }
}

const EP_VM: &str = "/nodes/{node}/qemu/{vmid}";
const EP_CONFIG: &str = "/nodes/{node}/qemu/{vmid}/config";
const EP_CLONE: &str = "/nodes/{node}/qemu/{vmid}/clone";

fn missing_config(
    method: &'static str,
    endpoint: &'static str,
    node: &str,
    vmid: u32,
) -> proxmox_api::Error {
    api_error(
        method,
        endpoint,
        500,
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

/// A `github_runners::Job` decoded from JSON (the only way to get an `OffsetDateTime` without the
/// `time` crate in this package).
pub fn gh_job(id: u64, run_id: u64, labels: &[&str], created_unix: u64, status: &str) -> Job {
    let created = rfc3339(created_unix);
    let value = serde_json::json!({
        "id": id, "run_id": run_id, "name": format!("job-{id}"), "status": status,
        "labels": labels, "created_at": created,
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("job json: {e}"))
}

/// Unix seconds → RFC 3339 (UTC), civil-from-days.
fn rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(0);
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn random_secret(prefix: &str) -> String {
    format!(
        "{prefix}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    /// Two online nodes `pve1`, `pve2`, the runner template on both (9000 on pve1, 9001 on pve2).
    pub fn new() -> Self {
        let mut vms = BTreeMap::new();
        vms.insert(9000, FakeVm::template("pve1", TEMPLATE));
        vms.insert(9001, FakeVm::template("pve2", TEMPLATE));
        Self {
            w: Mutex::new(World {
                nodes: vec!["pve1".to_owned(), "pve2".to_owned()],
                vms,
                containers: BTreeMap::new(),
                tasks: BTreeMap::new(),
                next_pid: 0x1000,
                runners: BTreeMap::new(),
                next_runner_id: 1,
                jobs: Vec::new(),
                jit_issued: Vec::new(),
                jit_requests: Vec::new(),
                reg_tokens: Vec::new(),
                calls: Vec::new(),
                faults: Faults {
                    agent_after_pings: Some(1),
                    ..Faults::default()
                },
                starts: Vec::new(),
                deletes: Vec::new(),
                snippets_dir: None,
                now: 1_760_000_000,
            }),
        }
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.w
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log(
        &self,
        api: Api,
        method: &'static str,
        vmid: Option<u32>,
        args: String,
    ) -> MutexGuard<'_, World> {
        let mut w = self.world();
        w.calls.push(Call {
            api,
            method,
            args,
            vmid,
        });
        w
    }

    /// Adds a queued job.
    pub fn queue_job(&self, id: u64, labels: &[&str]) {
        let job = gh_job(id, id + 10_000, labels, 1_759_999_000 + id, "queued");
        let queued = QueuedJob {
            id: job.id,
            run_id: job.run_id,
            name: job.name.clone(),
            workflow_name: None,
            labels: job.labels.clone(),
            created_at: job
                .created_at
                .unwrap_or_else(|| panic!("created_at set above")),
            repository: "acme/widgets".to_owned(),
            status: "queued".to_owned(),
        };
        self.world().jobs.push(queued);
    }

    /// Adds a runner registration (as if minted earlier); returns its id.
    pub fn add_runner(&self, name: &str, online: bool, busy: bool) -> u64 {
        let mut w = self.world();
        let id = w.next_runner_id;
        w.next_runner_id += 1;
        w.runners.insert(
            id,
            Runner {
                id,
                name: name.to_owned(),
                os: "linux".to_owned(),
                status: if online { "online" } else { "offline" }.to_owned(),
                busy,
                ephemeral: Some(true),
                runner_group_id: Some(1),
                labels: Vec::new(),
            },
        );
        id
    }

    /// The runner comes online and GitHub assigns it the job (the job leaves the queue).
    pub fn runner_takes_job(&self, runner_name: &str, job_id: u64) {
        let mut w = self.world();
        for r in w.runners.values_mut().filter(|r| r.name == runner_name) {
            r.status = "online".to_owned();
            r.busy = true;
        }
        w.jobs.retain(|j| j.id != job_id);
    }

    /// The job finished: the ephemeral runner unregisters itself and the guest powers off.
    pub fn runner_finishes(&self, runner_name: &str) {
        let mut w = self.world();
        w.runners.retain(|_, r| r.name != runner_name);
        for vm in w
            .vms
            .values_mut()
            .filter(|v| v.name.as_deref() == Some(runner_name))
        {
            vm.status = "stopped".to_owned();
            vm.uptime = None;
            vm.agent_up = false;
        }
    }

    /// VMIDs of non-template VMs.
    pub fn runner_vmids(&self) -> Vec<u32> {
        self.world()
            .vms
            .iter()
            .filter(|(_, v)| !v.template)
            .map(|(id, _)| *id)
            .collect()
    }
}

impl World {
    /// Calls of one method.
    pub fn count(&self, method: &str) -> usize {
        self.calls.iter().filter(|c| c.method == method).count()
    }

    /// Calls of one method about one VM.
    pub fn count_for(&self, method: &str, vmid: u32) -> usize {
        self.calls
            .iter()
            .filter(|c| c.method == method && c.vmid == Some(vmid))
            .count()
    }

    /// Calls that change a VM (stop, shutdown, destroy, config, start, agent writes) about `vmid`.
    pub fn mutations_of(&self, vmid: u32) -> Vec<Call> {
        const MUTATING: &[&str] = &[
            "stop",
            "shutdown",
            "delete_vm",
            "update_config",
            "update_config_async",
            "start",
            "agent_file_write",
        ];
        self.calls
            .iter()
            .filter(|c| c.vmid == Some(vmid) && MUTATING.contains(&c.method))
            .cloned()
            .collect()
    }

    /// Every secret the fake issued (JIT configs and registration tokens).
    pub fn issued_secrets(&self) -> Vec<String> {
        self.jit_issued
            .iter()
            .map(|(_, s)| s.clone())
            .chain(self.reg_tokens.iter().cloned())
            .collect()
    }

    fn new_task(
        &mut self,
        node: &str,
        kind: &str,
        vmid: u32,
        exitstatus: &str,
        effect: Effect,
    ) -> Upid {
        self.next_pid += 1;
        let raw = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{kind}:{vmid}:root@pam:",
            self.next_pid,
            0x00AB_0000 + self.next_pid,
            self.now
        );
        let upid: Upid = raw
            .parse()
            .unwrap_or_else(|e| panic!("fake made an invalid UPID {raw}: {e}"));
        let polls = self.faults.task_polls;
        self.tasks.insert(
            raw,
            Task {
                node: node.to_owned(),
                polls_left: polls,
                exitstatus: exitstatus.to_owned(),
                effect,
                done: false,
            },
        );
        upid
    }

    fn vm_on(
        &self,
        method: &'static str,
        endpoint: &'static str,
        node: &NodeName,
        vmid: VmId,
    ) -> Result<&FakeVm, proxmox_api::Error> {
        match self.vms.get(&vmid.get()) {
            Some(vm) if vm.node == node.as_str() => Ok(vm),
            _ => Err(missing_config(method, endpoint, node.as_str(), vmid.get())),
        }
    }

    fn id_in_use(&self, vmid: u32) -> Option<String> {
        self.vms
            .get(&vmid)
            .map(|v| v.node.clone())
            .or_else(|| self.containers.get(&vmid).map(|(n, _)| n.clone()))
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::CloneDone(id) => {
                if let Some(vm) = self.vms.get_mut(&id) {
                    vm.lock = None;
                }
            }
            Effect::Started(id) => {
                if let Some(vm) = self.vms.get_mut(&id) {
                    vm.status = "running".to_owned();
                    vm.uptime = Some(1);
                    vm.pings = 0;
                    vm.agent_up = false;
                }
            }
            Effect::Stopped(id) => {
                if let Some(vm) = self.vms.get_mut(&id) {
                    vm.status = "stopped".to_owned();
                    vm.uptime = None;
                    vm.agent_up = false;
                }
            }
            Effect::Deleted(id) => {
                self.vms.remove(&id);
            }
        }
    }

    fn apply_update(
        &mut self,
        method: &'static str,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<(), proxmox_api::Error> {
        if update.is_empty() {
            return Err(api_error(method, EP_CONFIG, 400, "no options specified"));
        }
        self.vm_on(method, EP_CONFIG, node, vmid)?;
        let Some(vm) = self.vms.get_mut(&vmid.get()) else {
            return Err(missing_config(method, EP_CONFIG, node.as_str(), vmid.get()));
        };
        if let Some(lock) = &vm.lock {
            return Err(api_error(
                method,
                EP_CONFIG,
                500,
                format!("VM {vmid} is locked ({lock})"),
            ));
        }
        if let Some(tags) = &update.tags {
            vm.tags = tags.iter().map(str::to_owned).collect();
        }
        if let Some(c) = &update.cicustom {
            vm.cicustom = Some(c.clone());
        }
        if let Some(d) = &update.description {
            vm.description = Some(d.clone());
        }
        if let Some(n) = &update.name {
            vm.name = Some(n.clone());
        }
        for key in &update.delete {
            match key.as_str() {
                "cicustom" => vm.cicustom = None,
                "tags" => vm.tags.clear(),
                "description" => vm.description = None,
                _ => {}
            }
        }
        Ok(())
    }

    fn snippet_content(&self, cicustom: &str) -> Option<String> {
        let file = cicustom.strip_prefix("user=")?.split_once(":snippets/")?.1;
        let dir = self.snippets_dir.as_ref()?;
        std::fs::read_to_string(dir.join(file)).ok()
    }
}

fn cluster_entry(vmid: u32, vm: &FakeVm) -> ClusterVm {
    ClusterVm {
        resource_type: "qemu".to_owned(),
        vmid: VmId(vmid),
        node: NodeName::new(vm.node.clone()).unwrap_or_else(|e| panic!("{e}")),
        name: vm.name.clone().filter(|_| vm.name_listed),
        status: Some(
            vm.listed_status
                .clone()
                .unwrap_or_else(|| vm.status.clone()),
        ),
        template: vm.template,
        tags: Tags::from_tags(vm.tags.iter().map(String::as_str)).unwrap_or_default(),
        lock: vm.lock.clone(),
        uptime: vm.uptime,
        mem: None,
        maxmem: Some(4 << 30),
        pool: None,
        hastate: None,
    }
}

fn tags_of(vm: &FakeVm) -> Tags {
    Tags::from_tags(vm.tags.iter().map(String::as_str)).unwrap_or_default()
}

#[async_trait]
impl ProxmoxApi for Fake {
    async fn version(&self) -> Result<Version, proxmox_api::Error> {
        let _w = self.log(Api::Pve, "version", None, String::new());
        Ok(Version {
            version: "9.1.1".to_owned(),
            release: "9.1".to_owned(),
            repoid: "fake".to_owned(),
        })
    }

    async fn cluster_vms(&self) -> Result<Vec<ClusterVm>, proxmox_api::Error> {
        let w = self.log(Api::Pve, "cluster_vms", None, String::new());
        Ok(w.vms
            .iter()
            .filter(|(_, v)| !v.hidden)
            .map(|(id, v)| cluster_entry(*id, v))
            .collect())
    }

    async fn cluster_guests(&self) -> Result<Vec<ClusterVm>, proxmox_api::Error> {
        let w = self.log(Api::Pve, "cluster_guests", None, String::new());
        let mut out: Vec<ClusterVm> = w
            .vms
            .iter()
            .filter(|(_, v)| !v.hidden)
            .map(|(id, v)| cluster_entry(*id, v))
            .collect();
        for (id, (node, hidden)) in &w.containers {
            if *hidden {
                continue;
            }
            out.push(ClusterVm {
                resource_type: "lxc".to_owned(),
                vmid: VmId(*id),
                node: NodeName::new(node.clone()).unwrap_or_else(|e| panic!("{e}")),
                name: Some(format!("ct{id}")),
                status: Some("running".to_owned()),
                template: false,
                tags: Tags::new(),
                lock: None,
                uptime: Some(1000),
                mem: None,
                maxmem: None,
                pool: None,
                hastate: None,
            });
        }
        out.sort_by_key(|g| g.vmid);
        Ok(out)
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, proxmox_api::Error> {
        let w = self.log(Api::Pve, "nodes", None, String::new());
        Ok(w.nodes
            .iter()
            .map(|n| NodeInfo {
                node: NodeName::new(n.clone()).unwrap_or_else(|e| panic!("{e}")),
                status: "online".to_owned(),
                mem: Some(8 << 30),
                maxmem: Some(64 << 30),
                cpu: Some(0.1),
                maxcpu: Some(16),
                uptime: Some(100_000),
            })
            .collect())
    }

    async fn next_id(&self) -> Result<VmId, proxmox_api::Error> {
        let w = self.log(Api::Pve, "next_id", None, String::new());
        let id = (100..).find(|id| w.id_in_use(*id).is_none()).unwrap_or(100);
        Ok(VmId(id))
    }

    async fn node_vms(&self, node: &NodeName) -> Result<Vec<NodeVm>, proxmox_api::Error> {
        let w = self.log(Api::Pve, "node_vms", None, format!("node={node}"));
        Ok(w.vms
            .iter()
            .filter(|(_, v)| v.node == node.as_str())
            .map(|(id, v)| NodeVm {
                vmid: VmId(*id),
                status: v.status.clone(),
                name: v.name.clone(),
                template: v.template,
                tags: tags_of(v),
                lock: v.lock.clone(),
                qmpstatus: Some(v.status.clone()),
                uptime: v.uptime,
                mem: None,
                maxmem: None,
            })
            .collect())
    }

    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<VmConfig, proxmox_api::Error> {
        let w = self.log(
            Api::Pve,
            "vm_config",
            Some(vmid.get()),
            format!("node={node} vmid={vmid}"),
        );
        let vm = w.vm_on("GET", EP_CONFIG, node, vmid)?;
        Ok(VmConfig {
            name: vm.name.clone(),
            description: vm.description.clone(),
            tags: tags_of(vm),
            cicustom: vm.cicustom.clone(),
            template: vm.template,
            lock: vm.lock.clone(),
            agent: Some("1".to_owned()),
            ..VmConfig::default()
        })
    }

    async fn update_config(
        &self,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<(), proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "update_config",
            Some(vmid.get()),
            format!(
                "node={node} vmid={vmid} tags={:?} cicustom={:?} description={}",
                update.tags.as_ref().map(ToString::to_string),
                update.cicustom,
                update.description.is_some()
            ),
        );
        if let Some(e) = w.faults.update_config_errors.pop_front() {
            return Err(e);
        }
        w.apply_update("PUT", node, vmid, update)
    }

    async fn update_config_async(
        &self,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<Option<Upid>, proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "update_config_async",
            Some(vmid.get()),
            format!("node={node} vmid={vmid}"),
        );
        w.apply_update("POST", node, vmid, update)?;
        Ok(None)
    }

    async fn clone_vm(
        &self,
        node: &NodeName,
        template: VmId,
        request: &CloneRequest,
    ) -> Result<Upid, proxmox_api::Error> {
        let newid = request.newid.get();
        let mut w = self.log(
            Api::Pve,
            "clone_vm",
            Some(newid),
            format!(
                "node={node} template={template} newid={newid} name={:?} full={:?} target={:?} storage={:?}",
                request.name,
                request.full,
                request.target.as_ref().map(NodeName::as_str),
                request.storage
            ),
        );
        if let Some(e) = w.faults.clone_errors.pop_front() {
            return Err(e);
        }
        let tpl = w.vm_on("POST", EP_CLONE, node, template)?.clone();
        if !tpl.template && tpl.status == "running" {
            return Err(api_error("POST", EP_CLONE, 500, "source VM is running"));
        }
        let target = request
            .target
            .as_ref()
            .map_or_else(|| node.as_str().to_owned(), |t| t.as_str().to_owned());
        if let Some(holder) = w.id_in_use(newid) {
            if holder == node.as_str() {
                // The early check only sees the node's own config directory.
                return Err(api_error(
                    "POST",
                    EP_CLONE,
                    500,
                    format!("unable to create VM {newid}: config file already exists"),
                ));
            }
            let status = format!("unable to create VM {newid}: config file already exists");
            return Ok(w.new_task(
                node.as_str(),
                "qmclone",
                template.get(),
                &status,
                Effect::None,
            ));
        }
        if let Some(status) = w.faults.clone_task_failures.pop_front() {
            return Ok(w.new_task(
                node.as_str(),
                "qmclone",
                template.get(),
                &status,
                Effect::None,
            ));
        }
        let agent = w.faults.agent_after_pings;
        let lost = w.faults.clone_lost_answers > 0;
        w.faults.clone_lost_answers = w.faults.clone_lost_answers.saturating_sub(1);
        w.vms.insert(
            newid,
            FakeVm {
                node: target,
                name: request.name.clone(),
                description: request.description.clone(),
                lock: (!lost).then(|| "clone".to_owned()),
                status: "stopped".to_owned(),
                agent_after_pings: agent,
                ..FakeVm::new(node.as_str(), None)
            },
        );
        if lost {
            return Err(api_error("POST", EP_CLONE, 596, "Broken pipe"));
        }
        Ok(w.new_task(
            node.as_str(),
            "qmclone",
            template.get(),
            "OK",
            Effect::CloneDone(newid),
        ))
    }

    async fn start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "start",
            Some(vmid.get()),
            format!("node={node} vmid={vmid}"),
        );
        let ep = "/nodes/{node}/qemu/{vmid}/status/start";
        if std::mem::take(&mut w.faults.panic_on_start) {
            drop(w);
            panic!("injected panic in start");
        }
        if let Some(e) = w.faults.start_errors.pop_front() {
            return Err(e);
        }
        let vm = w.vm_on("POST", ep, node, vmid)?.clone();
        if let Some(lock) = &vm.lock {
            return Err(api_error(
                "POST",
                ep,
                500,
                format!("VM {vmid} is locked ({lock})"),
            ));
        }
        if vm.template {
            return Err(api_error(
                "POST",
                ep,
                500,
                "you can't start a vm if it's a template",
            ));
        }
        if vm.status == "running" {
            return Err(api_error(
                "POST",
                ep,
                500,
                format!("VM {vmid} already running"),
            ));
        }
        let snippet = vm.cicustom.as_deref().and_then(|c| w.snippet_content(c));
        w.starts.push(StartRecord {
            vmid: vmid.get(),
            cicustom: vm.cicustom.clone(),
            snippet,
        });
        if let Some(status) = w.faults.start_task_failures.pop_front() {
            return Ok(w.new_task(node.as_str(), "qmstart", vmid.get(), &status, Effect::None));
        }
        Ok(w.new_task(
            node.as_str(),
            "qmstart",
            vmid.get(),
            "OK",
            Effect::Started(vmid.get()),
        ))
    }

    async fn stop(&self, node: &NodeName, vmid: VmId) -> Result<Upid, proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "stop",
            Some(vmid.get()),
            format!("node={node} vmid={vmid}"),
        );
        let ep = "/nodes/{node}/qemu/{vmid}/status/stop";
        let vm = w.vm_on("POST", ep, node, vmid)?.clone();
        if vm.status != "running" {
            return Err(api_error("POST", ep, 500, format!("VM {vmid} not running")));
        }
        Ok(w.new_task(
            node.as_str(),
            "qmstop",
            vmid.get(),
            "OK",
            Effect::Stopped(vmid.get()),
        ))
    }

    async fn shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout: Option<Duration>,
    ) -> Result<Upid, proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "shutdown",
            Some(vmid.get()),
            format!("node={node} vmid={vmid} timeout={timeout:?}"),
        );
        let ep = "/nodes/{node}/qemu/{vmid}/status/shutdown";
        let vm = w.vm_on("POST", ep, node, vmid)?.clone();
        if vm.status != "running" {
            return Err(api_error("POST", ep, 500, format!("VM {vmid} not running")));
        }
        Ok(w.new_task(
            node.as_str(),
            "qmshutdown",
            vmid.get(),
            "OK",
            Effect::Stopped(vmid.get()),
        ))
    }

    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, proxmox_api::Error> {
        let w = self.log(
            Api::Pve,
            "vm_status",
            Some(vmid.get()),
            format!("node={node} vmid={vmid}"),
        );
        let vm = w.vm_on(
            "GET",
            "/nodes/{node}/qemu/{vmid}/status/current",
            node,
            vmid,
        )?;
        Ok(VmStatus {
            status: vm.status.clone(),
            qmpstatus: Some(vm.status.clone()),
            lock: vm.lock.clone(),
            uptime: vm.uptime,
            agent: true,
            name: vm.name.clone(),
            tags: tags_of(vm),
            template: vm.template,
            vmid: Some(vmid),
            pid: None,
        })
    }

    async fn delete_vm(
        &self,
        node: &NodeName,
        vmid: VmId,
        purge: bool,
        destroy_unreferenced_disks: bool,
    ) -> Result<Upid, proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "delete_vm",
            Some(vmid.get()),
            format!("node={node} vmid={vmid} purge={purge} destroy_unreferenced_disks={destroy_unreferenced_disks}"),
        );
        let vm = w.vm_on("DELETE", EP_VM, node, vmid)?.clone();
        if let Some(lock) = &vm.lock {
            return Err(api_error(
                "DELETE",
                EP_VM,
                500,
                format!("VM {vmid} is locked ({lock})"),
            ));
        }
        if vm.status == "running" {
            return Err(api_error(
                "DELETE",
                EP_VM,
                500,
                format!("VM {vmid} is running - destroy failed"),
            ));
        }
        w.deletes
            .push((vmid.get(), purge, destroy_unreferenced_disks));
        Ok(w.new_task(
            node.as_str(),
            "qmdestroy",
            vmid.get(),
            "OK",
            Effect::Deleted(vmid.get()),
        ))
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "task_status",
            upid.id().parse().ok(),
            format!("upid={upid}"),
        );
        let ep = "/nodes/{node}/tasks/{upid}/status";
        let Some(task) = w.tasks.get_mut(upid.as_str()) else {
            return Err(api_error(
                "GET",
                ep,
                500,
                format!("unable to parse worker upid '{upid}'"),
            ));
        };
        if task.node != upid.node().as_str() {
            return Err(api_error("GET", ep, 500, "task not found on this node"));
        }
        let status = |running: bool, exit: Option<String>| TaskStatus {
            status: if running { "running" } else { "stopped" }.to_owned(),
            exitstatus: exit,
            upid: Some(upid.as_str().to_owned()),
            node: Some(upid.node().as_str().to_owned()),
            task_type: Some(upid.task_type().to_owned()),
            id: Some(upid.id().to_owned()),
            user: Some(upid.user().to_owned()),
            starttime: Some(upid.starttime()),
        };
        if task.polls_left > 0 {
            task.polls_left -= 1;
            return Ok(status(true, None));
        }
        let exit = task.exitstatus.clone();
        if !task.done {
            task.done = true;
            let effect = task.effect.clone();
            if exit == "OK" {
                w.apply(effect);
            }
        }
        Ok(status(false, Some(exit)))
    }

    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "agent_ping",
            Some(vmid.get()),
            format!("node={node} vmid={vmid}"),
        );
        let ep = "/nodes/{node}/qemu/{vmid}/agent/ping";
        w.vm_on("POST", ep, node, vmid)?;
        let vm = w
            .vms
            .get_mut(&vmid.get())
            .unwrap_or_else(|| panic!("checked above"));
        if vm.status != "running" {
            return Err(api_error(
                "POST",
                ep,
                500,
                format!("VM {vmid} is not running"),
            ));
        }
        vm.pings += 1;
        if vm.agent_after_pings.is_some_and(|n| vm.pings >= n) {
            vm.agent_up = true;
        }
        if vm.agent_up {
            Ok(())
        } else {
            Err(api_error(
                "POST",
                ep,
                500,
                "QEMU guest agent is not running",
            ))
        }
    }

    async fn agent_file_write(
        &self,
        node: &NodeName,
        vmid: VmId,
        path: &str,
        content: &SecretString,
    ) -> Result<(), proxmox_api::Error> {
        let mut w = self.log(
            Api::Pve,
            "agent_file_write",
            Some(vmid.get()),
            format!(
                "node={node} vmid={vmid} file={path} content=<{} chars>",
                content.expose_secret().len()
            ),
        );
        let ep = "/nodes/{node}/qemu/{vmid}/agent/file-write";
        if let Some(e) = w.faults.agent_write_errors.pop_front() {
            return Err(e);
        }
        w.vm_on("POST", ep, node, vmid)?;
        let vm = w
            .vms
            .get_mut(&vmid.get())
            .unwrap_or_else(|| panic!("checked above"));
        if !vm.agent_up {
            return Err(api_error(
                "POST",
                ep,
                500,
                "QEMU guest agent is not running",
            ));
        }
        vm.files
            .insert(path.to_owned(), content.expose_secret().to_owned());
        Ok(())
    }

    async fn storage(&self, storage: &str) -> Result<StorageConfig, proxmox_api::Error> {
        let _w = self.log(Api::Pve, "storage", None, format!("storage={storage}"));
        Ok(StorageConfig {
            storage: storage.to_owned(),
            storage_type: "dir".to_owned(),
            content: vec!["images".to_owned(), "snippets".to_owned()],
            path: Some("/var/lib/vz".to_owned()),
            shared: false,
            disable: false,
            nodes: None,
        })
    }

    async fn permissions<'a>(
        &self,
        path: Option<&'a str>,
    ) -> Result<Permissions, proxmox_api::Error> {
        let _w = self.log(Api::Pve, "permissions", None, format!("path={path:?}"));
        Ok(Permissions::default())
    }
}

#[async_trait]
impl GitHubRunners for Fake {
    async fn queued_jobs(&self) -> github_runners::Result<Vec<QueuedJob>> {
        let w = self.log(Api::Gh, "queued_jobs", None, String::new());
        Ok(w.jobs.clone())
    }

    async fn job(&self, id: u64) -> github_runners::Result<Job> {
        let _w = self.log(Api::Gh, "job", None, format!("id={id}"));
        Err(github_runners::Error::NotFound {
            endpoint: "/repos/{owner}/{repo}/actions/jobs/{job_id}",
        })
    }

    async fn job_in(&self, repository: &str, id: u64) -> github_runners::Result<Job> {
        let _w = self.log(
            Api::Gh,
            "job_in",
            None,
            format!("repo={repository} id={id}"),
        );
        Err(github_runners::Error::NotFound {
            endpoint: "/repos/{owner}/{repo}/actions/jobs/{job_id}",
        })
    }

    async fn registration_token(&self) -> github_runners::Result<RegistrationToken> {
        let mut w = self.log(Api::Gh, "registration_token", None, String::new());
        let token = random_secret("AREGTOKEN");
        w.reg_tokens.push(token.clone());
        let expires = gh_job(1, 1, &[], w.now + 3600, "queued")
            .created_at
            .unwrap_or_else(|| panic!("set above"));
        Ok(RegistrationToken {
            token: SecretString::from(token),
            expires_at: expires,
        })
    }

    async fn generate_jit_config(&self, request: &JitRequest) -> github_runners::Result<JitConfig> {
        let mut w = self.log(
            Api::Gh,
            "generate_jit_config",
            None,
            format!(
                "name={} labels={:?} group={}",
                request.name, request.labels, request.runner_group_id
            ),
        );
        w.jit_requests.push(request.clone());
        if w.runners.values().any(|r| r.name == request.name) {
            return Err(github_runners::Error::JitNameConflict {
                name: request.name.clone(),
            });
        }
        let id = w.next_runner_id;
        w.next_runner_id += 1;
        let runner = Runner {
            id,
            name: request.name.clone(),
            os: "linux".to_owned(),
            status: "offline".to_owned(),
            busy: false,
            ephemeral: Some(true),
            runner_group_id: Some(request.runner_group_id),
            labels: request
                .labels
                .iter()
                .map(|l| RunnerLabel {
                    id: None,
                    name: l.clone(),
                    kind: Some("custom".to_owned()),
                })
                .collect(),
        };
        w.runners.insert(id, runner.clone());
        let secret = random_secret("eyJKSVRDT05GSUci");
        w.jit_issued.push((request.name.clone(), secret.clone()));
        Ok(JitConfig {
            runner,
            encoded_jit_config: SecretString::from(secret),
        })
    }

    async fn list_runners(&self) -> github_runners::Result<Vec<Runner>> {
        let mut w = self.log(Api::Gh, "list_runners", None, String::new());
        if let Some(e) = w.faults.list_runners_errors.pop_front() {
            return Err(e);
        }
        Ok(w.runners.values().cloned().collect())
    }

    async fn runner(&self, id: u64) -> github_runners::Result<Runner> {
        let w = self.log(Api::Gh, "runner", None, format!("id={id}"));
        w.runners
            .get(&id)
            .cloned()
            .ok_or(github_runners::Error::NotFound {
                endpoint: "/repos/{owner}/{repo}/actions/runners/{runner_id}",
            })
    }

    async fn delete_runner(&self, id: u64) -> github_runners::Result<()> {
        let mut w = self.log(Api::Gh, "delete_runner", None, format!("id={id}"));
        if w.faults.busy_on_delete.remove(&id)
            && let Some(r) = w.runners.get_mut(&id)
        {
            r.busy = true;
        }
        match w.runners.get(&id) {
            None => Err(github_runners::Error::NotFound {
                endpoint: "/repos/{owner}/{repo}/actions/runners/{runner_id}",
            }),
            Some(r) if r.busy => Err(github_runners::Error::RunnerBusy { id }),
            Some(_) => {
                w.runners.remove(&id);
                Ok(())
            }
        }
    }

    async fn rate_limit(&self) -> github_runners::Result<RateLimitStatus> {
        let w = self.log(Api::Gh, "rate_limit", None, String::new());
        let core = RateLimitSnapshot {
            limit: 5000,
            remaining: 4999,
            used: 1,
            reset: w.now + 3600,
            resource: "core".to_owned(),
        };
        Ok(RateLimitStatus {
            core: core.clone(),
            resources: vec![core],
        })
    }
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[tokio::test]
    async fn clone_task_lifecycle_and_vmid_checks() {
        let fake = Fake::new();
        let pve1 = NodeName::new("pve1").unwrap();
        let mut req = CloneRequest::new(VmId(200));
        req.name = Some("gh-runner-200-x".into());
        let upid = fake.clone_vm(&pve1, VmId(9000), &req).await.unwrap();
        assert_eq!(upid.node().as_str(), "pve1");
        assert_eq!(upid.task_type(), "qmclone");
        assert_eq!(fake.world().vms[&200].lock.as_deref(), Some("clone"));
        let again = fake.clone_vm(&pve1, VmId(9000), &req).await.unwrap_err();
        assert!(again.is_vmid_taken(), "{again}");
        let st = fake.wait_task(&upid, Duration::from_secs(1)).await.unwrap();
        assert!(st.is_success());
        assert_eq!(fake.world().vms[&200].lock, None);
        // an id held on another node fails inside the task
        fake.world().containers.insert(201, ("pve2".into(), true));
        let upid = fake
            .clone_vm(&pve1, VmId(9000), &CloneRequest::new(VmId(201)))
            .await
            .unwrap();
        let err = fake
            .wait_task(&upid, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.is_vmid_taken(), "{err}");
        assert!(!fake.world().vms.contains_key(&201));
    }
}
