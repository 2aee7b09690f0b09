//! Step 1 of a pass: one cluster listing, the runner registrations and the queued jobs, fetched
//! concurrently and turned into the planner's [`Observed`].
//!
//! Extra calls are made only where the listing cannot be trusted for a decision: the description marker of
//! a VM inside a pool's range that carries no `ghr-managed` tag (fetched once per VM and cached), and
//! `status/current` of a VM of ours the listing shows as stopped (the listing lags by ~10 s).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::join_all;
use pool_scheduler::{InFlight, Job, Marker, NodeInfo, Observed, ObservedVm, Power, RunnerReg};
use proxmox_api::{ClusterVm, NodeName, VmId};

use crate::error::Error;
use crate::reconciler::Reconciler;

/// A template VM found in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// Its node.
    pub node: String,
    /// Its VMID.
    pub vmid: u32,
}

/// The planner's input plus what the executors need from the same observation.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// What the planner sees.
    pub observed: Observed,
    /// Template VMs by name (a name may exist on several nodes).
    pub templates: BTreeMap<String, Vec<TemplateRef>>,
}

impl Observation {
    /// Every VM a pool owns (the ownership rule), with its phase as the planner classifies it.
    pub fn owned_vms<'a>(
        &'a self,
        pools: &'a pool_scheduler::Config,
        now_unix: u64,
    ) -> Vec<(
        &'a ObservedVm,
        pool_scheduler::Owned<'a>,
        pool_scheduler::Phase,
    )> {
        let observed = &self.observed;
        let index = pool_scheduler::RunnerIndex::new(&observed.runners);
        observed
            .vms
            .iter()
            .filter_map(|vm| {
                let owned = pool_scheduler::ownership(pools, vm)?;
                let ctx = pool_scheduler::VmContext {
                    in_flight: observed
                        .in_flight
                        .iter()
                        .find(|f| f.vmid == vm.vmid)
                        .map(|f| f.op),
                    vanished_since: observed.vanished_since.get(&vm.vmid).copied(),
                };
                let pool = &pools.pools()[owned.pool];
                let phase = pool_scheduler::classify(vm, &owned, pool, &index, ctx, now_unix);
                Some((vm, owned, phase))
            })
            .collect()
    }

    /// What a pool depends on in the cluster: the template VMs listed under its template name (node and
    /// VMID). A held pool is tried again when this changes (e.g. the template was re-created).
    pub fn template_fingerprint(&self, name: &str) -> String {
        self.templates.get(name).map_or_else(String::new, |all| {
            all.iter()
                .map(|t| format!("{}/{}", t.node, t.vmid))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The template of that name on `node`, else the first one elsewhere (cloned with `target`).
    pub fn template_for(&self, name: &str, node: &str) -> Option<TemplateRef> {
        let all = self.templates.get(name)?;
        all.iter()
            .find(|t| t.node == node)
            .or_else(|| all.first())
            .cloned()
    }
}

/// The description marker read for a VMID, with the VM name it was read under (a renamed VM is re-read).
type MarkerCache = HashMap<u32, (Option<String>, Option<Marker>)>;

/// A `status/current` answer kept for a short while: power, name and lock as Proxmox said then.
#[derive(Debug, Clone)]
struct Confirmed {
    power: Power,
    name: Option<String>,
    lock: Option<String>,
    at: Instant,
}

/// How long a `status/current` answer is reused instead of asking again (passes come every few hundred
/// milliseconds in a burst; the listing catches up within ~10 s).
const CONFIRM_TTL: Duration = Duration::from_secs(2);

/// How long the node list is reused (node state changes rarely; offline nodes are also seen in the listing).
const NODES_TTL: Duration = Duration::from_secs(10);

/// Caches across passes: description markers (by VMID and name), recent `status/current` answers, the node
/// list, and when a ready VM lost its runner.
#[derive(Debug, Default)]
pub struct Observer {
    markers: Mutex<MarkerCache>,
    confirmed: Mutex<HashMap<u32, Confirmed>>,
    nodes: Mutex<Option<(Instant, Vec<proxmox_api::NodeInfo>)>>,
    vanished_since: Mutex<BTreeMap<u32, u64>>,
    idle_since: Mutex<BTreeMap<u32, (String, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn power_of(status: Option<&str>) -> Power {
    match status {
        Some("running") => Power::Running,
        Some("stopped") => Power::Stopped,
        Some("paused" | "suspended" | "prelaunch") => Power::Paused,
        _ => Power::Unknown,
    }
}

impl Observer {
    /// Fetches everything a pass needs. `in_flight` is the work the dispatcher is doing; `taken` are ids
    /// found held by someone else (treated as used).
    pub(crate) async fn observe(
        &self,
        rec: &Reconciler,
        in_flight: Vec<InFlight>,
        taken: &BTreeSet<u32>,
    ) -> Result<Observation, Error> {
        let cached_nodes = lock(&self.nodes)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < NODES_TTL)
            .map(|(_, n)| n.clone());
        let (guests, nodes, runners, jobs) = tokio::join!(
            rec.pve.cluster_guests(),
            async {
                match cached_nodes {
                    Some(n) => Ok(n),
                    None => rec.pve.nodes().await,
                }
            },
            rec.gh.list_runners(),
            rec.gh.queued_jobs(),
        );
        let guests = guests?;
        let nodes = nodes?;
        *lock(&self.nodes) = Some((Instant::now(), nodes.clone()));
        let runners = runners?;
        let jobs = match jobs {
            Ok(jobs) => jobs,
            // Organisation scope without repositories to poll: demand comes from webhooks only.
            Err(github_runners::Error::Unsupported(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let now = rec.clock.now_unix();
        let pools = &rec.cfg.pools;

        let mut used_vmids: BTreeSet<u32> = guests.iter().map(|g| g.vmid.get()).collect();
        used_vmids.extend(taken.iter().copied());
        let qemu: Vec<&ClusterVm> = guests
            .iter()
            .filter(|g| g.resource_type == "qemu")
            .collect();

        let mut templates: BTreeMap<String, Vec<TemplateRef>> = BTreeMap::new();
        for vm in qemu.iter().filter(|v| v.template) {
            if let Some(name) = &vm.name {
                templates
                    .entry(name.clone())
                    .or_default()
                    .push(TemplateRef {
                        node: vm.node.as_str().to_owned(),
                        vmid: vm.vmid.get(),
                    });
            }
        }

        // Description markers for VMs in a pool range without our tag (e.g. a clone that finished after a
        // crash, before the tags were set): one config read per VM, cached while the VM keeps its name.
        let present: HashSet<u32> = qemu.iter().map(|v| v.vmid.get()).collect();
        lock(&self.markers).retain(|id, _| present.contains(id));
        // A VM the dispatcher is making is known without a read (it is untagged only until its first PUT).
        let working: HashSet<u32> = in_flight.iter().map(|f| f.vmid).collect();
        let to_fetch: Vec<&ClusterVm> = qemu
            .iter()
            .copied()
            .filter(|v| !v.template && pools.pool_for_vmid(v.vmid.get()).is_some())
            .filter(|v| !working.contains(&v.vmid.get()))
            .filter(|v| !v.tags.contains(pool_scheduler::marks::MANAGED_TAG))
            .filter(|v| {
                let cache = lock(&self.markers);
                !matches!(cache.get(&v.vmid.get()), Some((name, _)) if *name == v.name)
            })
            .collect();
        let fetched = join_all(to_fetch.iter().map(|v| async move {
            let cfg = rec.pve.vm_config(&v.node, v.vmid).await;
            (v.vmid.get(), v.name.clone(), cfg)
        }))
        .await;
        for (vmid, name, cfg) in fetched {
            match cfg {
                Ok(cfg) => {
                    let marker = cfg
                        .description
                        .as_deref()
                        .and_then(pool_scheduler::marks::parse_description_marker);
                    lock(&self.markers).insert(vmid, (name, marker));
                }
                // The VM vanished or is mid-creation: decide next pass.
                Err(e) => {
                    tracing::debug!(vmid, error = %e, "config read for the ownership marker failed")
                }
            }
        }

        let mut vms: Vec<ObservedVm> = qemu
            .iter()
            .map(|v| {
                let marker = lock(&self.markers)
                    .get(&v.vmid.get())
                    .and_then(|(_, m)| m.clone());
                ObservedVm {
                    vmid: v.vmid.get(),
                    node: v.node.as_str().to_owned(),
                    name: v.name.clone().filter(|n| !n.is_empty()),
                    tags: v.tags.iter().map(str::to_owned).collect(),
                    marker,
                    template: v.template,
                    lock: v.lock.clone().filter(|l| !l.is_empty()),
                    power: power_of(v.status.as_deref()),
                    power_confirmed: false,
                    uptime_secs: v.uptime,
                }
            })
            .collect();

        // Confirm "stopped" (and "unknown") with status/current before the planner may delete on it — but only
        // where a decision depends on it: a VM whose runner is online or busy is certainly running.
        let busy_in_flight: HashSet<u32> = in_flight.iter().map(|f| f.vmid).collect();
        // Also confirm a ready JIT runner VM whose registration is gone: its one job is done and it is
        // powering itself off, while the listing may say "running" for another ~10 s.
        let registered: HashMap<&str, bool> = runners
            .iter()
            .map(|r| (r.name.as_str(), r.is_online() || r.busy))
            .collect();
        let finishing = |v: &ObservedVm| {
            v.power == Power::Running
                && pool_scheduler::marks::has_ready_tag(&v.tags)
                && v.name
                    .as_deref()
                    .is_some_and(|n| !registered.contains_key(n))
                && pool_scheduler::ownership(pools, v)
                    .is_some_and(|o| !rec.cfg.uses_registration_token(&pools.pools()[o.pool].name))
        };
        let runner_up = |v: &ObservedVm| {
            v.name
                .as_deref()
                .is_some_and(|n| registered.get(n).copied().unwrap_or(false))
        };
        let confirm: Vec<usize> = vms
            .iter()
            .enumerate()
            .filter(|(_, v)| {
                ((matches!(v.power, Power::Stopped | Power::Unknown) && !runner_up(v))
                    || finishing(v))
                    && v.lock.is_none()
            })
            .filter(|(_, v)| !busy_in_flight.contains(&v.vmid))
            .filter(|(_, v)| pool_scheduler::ownership(pools, v).is_some_and(|o| o.deletable))
            .map(|(i, _)| i)
            .collect();
        {
            let present: HashSet<u32> = vms.iter().map(|v| v.vmid).collect();
            // A VMID being provisioned again is a new VM: what was confirmed of the old one is forgotten.
            lock(&self.confirmed).retain(|id, c| {
                present.contains(id) && !working.contains(id) && c.at.elapsed() < CONFIRM_TTL
            });
        }
        let confirmed = join_all(confirm.iter().map(|&i| {
            let v = &vms[i];
            let cached = lock(&self.confirmed).get(&v.vmid).cloned();
            async move {
                if let Some(c) = cached {
                    return Some(Ok(c));
                }
                let node = NodeName::new(v.node.clone());
                let vmid = VmId::new(v.vmid);
                match (node, vmid) {
                    (Ok(node), Ok(vmid)) => {
                        Some(rec.pve.vm_status(&node, vmid).await.map(|s| Confirmed {
                            power: power_of(Some(s.status.as_str())),
                            name: s.name,
                            lock: s.lock.filter(|l| !l.is_empty()),
                            at: Instant::now(),
                        }))
                    }
                    _ => None,
                }
            }
        }))
        .await;
        for (i, status) in confirm.into_iter().zip(confirmed) {
            match status {
                Some(Ok(c)) => {
                    let vm = &mut vms[i];
                    vm.power = c.power;
                    vm.power_confirmed = true;
                    vm.lock.clone_from(&c.lock);
                    // status/current is current; the listing's name may still be a previous VM's with this id.
                    if c.name.is_some() {
                        vm.name.clone_from(&c.name);
                    }
                    lock(&self.confirmed).entry(vm.vmid).or_insert(c);
                }
                Some(Err(e)) => {
                    tracing::debug!(vmid = vms[i].vmid, error = %e, "status/current failed")
                }
                None => {}
            }
        }

        let runners: Vec<RunnerReg> = runners
            .iter()
            .map(|r| RunnerReg {
                id: r.id,
                name: r.name.clone(),
                online: r.is_online(),
                busy: r.busy,
            })
            .collect();

        // A ready, running VM of ours whose registration is gone: remember since when (grace before cleanup).
        let names: HashSet<&str> = runners.iter().map(|r| r.name.as_str()).collect();
        {
            let mut vanished = lock(&self.vanished_since);
            let mut keep = BTreeSet::new();
            for vm in &vms {
                // Only JIT pools: their registration exists from the moment the credential is minted, so
                // its absence means the runner is gone (registration-token runners appear only later).
                let ours = pool_scheduler::ownership(pools, vm)
                    .is_some_and(|o| !rec.cfg.uses_registration_token(&pools.pools()[o.pool].name));
                let ready = pool_scheduler::marks::has_ready_tag(&vm.tags);
                let lost = vm.name.as_deref().is_some_and(|n| !names.contains(n));
                if ours && ready && vm.power == Power::Running && lost {
                    vanished.entry(vm.vmid).or_insert(now);
                    keep.insert(vm.vmid);
                }
            }
            vanished.retain(|id, _| keep.contains(id));
        }
        let vanished_since = lock(&self.vanished_since).clone();

        // Since when each owned runner has been online and idle (by VMID, reset when the name changes): the
        // planner removes idle runners beyond demand after a grace.
        let idle_since: BTreeMap<u32, u64> = {
            let idle_now: HashSet<&str> = runners
                .iter()
                .filter(|r| r.online && !r.busy)
                .map(|r| r.name.as_str())
                .collect();
            let mut idle = lock(&self.idle_since);
            let mut keep = BTreeSet::new();
            for vm in &vms {
                let Some(name) = vm.name.as_deref() else {
                    continue;
                };
                if idle_now.contains(name) && pool_scheduler::ownership(pools, vm).is_some() {
                    let entry = idle
                        .entry(vm.vmid)
                        .or_insert_with(|| (name.to_owned(), now));
                    if entry.0 != name {
                        *entry = (name.to_owned(), now);
                    }
                    keep.insert(vm.vmid);
                }
            }
            idle.retain(|id, _| keep.contains(id));
            idle.iter().map(|(id, (_, since))| (*id, *since)).collect()
        };

        let mut jobs: Vec<Job> = jobs
            .iter()
            .map(|j| Job {
                id: j.id,
                run_id: j.run_id,
                labels: j.labels.clone(),
                created_at_unix: u64::try_from(j.created_at.unix_timestamp()).unwrap_or(0),
            })
            .collect();
        jobs.extend(webhook_jobs(rec, &jobs).await);
        let nodes: Vec<NodeInfo> = nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.node.as_str().to_owned(),
                online: n.is_online(),
                mem_free: n.maxmem.unwrap_or(0).saturating_sub(n.mem.unwrap_or(0)),
            })
            .collect();

        Ok(Observation {
            observed: Observed {
                vms,
                used_vmids,
                jobs,
                runners,
                in_flight,
                nodes,
                vanished_since,
                idle_since,
            },
            templates,
        })
    }
}

/// Most `GET …/actions/jobs/{id}` confirmations of webhook-announced jobs at once.
const WEBHOOK_JOB_CONCURRENCY: usize = 4;

/// Jobs announced by webhook that the polls did not list, still `queued` according to GitHub (one
/// conditional `GET …/actions/jobs/{id}` each); the others are forgotten.
async fn webhook_jobs(rec: &Reconciler, polled: &[Job]) -> Vec<Job> {
    let polled: HashSet<u64> = polled.iter().map(|j| j.id).collect();
    let announced: Vec<(u64, String)> = {
        let mut st = rec.state();
        st.webhook_jobs.retain(|id, _| !polled.contains(id));
        st.webhook_jobs
            .iter()
            .map(|(id, repo)| (*id, repo.clone()))
            .collect()
    };
    if announced.is_empty() {
        return Vec::new();
    }
    // Bounded: a burst of deliveries must not turn into hundreds of concurrent GETs (GitHub's secondary
    // rate limit answers those).
    let answers: Vec<_> = futures::stream::iter(announced.clone())
        .map(|(id, repo)| async move { rec.gh.job_in(&repo, id).await })
        .buffered(WEBHOOK_JOB_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    let mut forget = Vec::new();
    for ((id, _), answer) in announced.iter().zip(answers) {
        match answer {
            Ok(job) if job.status == "queued" => out.push(Job {
                id: job.id,
                run_id: job.run_id,
                labels: job.labels,
                created_at_unix: job
                    .created_at
                    .or(job.started_at)
                    .map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0)),
            }),
            Ok(_) | Err(github_runners::Error::NotFound { .. }) => forget.push(*id),
            Err(e) => {
                tracing::debug!(job = id, error = %e, "could not confirm a webhook-announced job")
            }
        }
    }
    let mut st = rec.state();
    for id in forget {
        st.webhook_jobs.remove(&id);
    }
    out
}
