//! Model-based property test of the caps under a lagging cluster listing.
//!
//! A small model cluster (one pool, cap 1–4) evolves by random events in random order: passes of the
//! dispatcher (observe → plan → act, the executors recorded in a [`Ledger`]), single steps of provisions and
//! deletions, pvestatd broadcasts (the listing's names and power states lag until one), runners coming online,
//! taking and finishing jobs, jobs queued and cancelled, and time passing. The listing shows a VM's tags and
//! lock as they are, and its name and power only as of the last broadcast, as Proxmox does; a VM cloned to
//! another node may even be missing from the listing for a moment (the cluster's VM list propagates through
//! the cluster file system), until a `Propagate` event.
//!
//! Invariant after every event: the pool's VMs that run, plus its provisions in progress, never exceed the
//! cap.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{NOW, config, job};
use pool_scheduler::{
    DeleteReason, InFlight, Ledger, Observed, ObservedVm, Op, Outcome, Power, RunnerReg, marks,
    plan,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Vm {
    name: String,
    tags: Vec<String>,
    lock: Option<String>,
    running: bool,
}

#[derive(Debug, Clone)]
struct Reg {
    online: bool,
    busy: bool,
}

#[derive(Debug, Clone)]
enum Work {
    /// Provision: 0 = not cloned yet, 1 = cloned (locked), 2 = configured (tags), then started → done.
    Provision { vmid: u32, name: String, step: u8 },
    /// Deletion: 0 = stop pending, 1 = stopped, then destroyed → done.
    Delete { vmid: u32, step: u8 },
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Pass,
    Provision(usize),
    Delete(usize),
    Broadcast,
    Propagate,
    Online(usize),
    TakeJob(usize),
    JobDone(usize),
    NewJob,
    CancelJob,
    Tick(u64),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => Just(Event::Pass),
        4 => (0..8usize).prop_map(Event::Provision),
        3 => (0..8usize).prop_map(Event::Delete),
        2 => Just(Event::Broadcast),
        2 => Just(Event::Propagate),
        2 => (0..8usize).prop_map(Event::Online),
        2 => (0..8usize).prop_map(Event::TakeJob),
        2 => (0..8usize).prop_map(Event::JobDone),
        2 => Just(Event::NewJob),
        1 => Just(Event::CancelJob),
        1 => (1..90u64).prop_map(Event::Tick),
    ]
}

struct Model {
    cfg: pool_scheduler::Config,
    cap: usize,
    now: u64,
    vms: BTreeMap<u32, Vm>,
    /// What the listing shows of name and power (as of the last broadcast), by VMID.
    snapshot: BTreeMap<u32, (String, bool)>,
    /// VMs the listing includes (a new VM joins at the next `Propagate`).
    visible: BTreeSet<u32>,
    regs: BTreeMap<String, Reg>,
    jobs: Vec<u64>,
    next_job: u64,
    ledger: Ledger,
    work: Vec<Work>,
    idle_since: BTreeMap<u32, u64>,
}

impl Model {
    fn new(cap: usize) -> Self {
        let cfg = config(&serde_json::json!({
            "pools": [{ "name": "p", "labels": ["linux"], "vmid_start": 200, "vmid_end": 230,
                        "runner_name_prefix": "p-", "max_runners": cap }]
        }));
        Self {
            cfg,
            cap,
            now: NOW,
            vms: BTreeMap::new(),
            snapshot: BTreeMap::new(),
            visible: BTreeSet::new(),
            regs: BTreeMap::new(),
            jobs: Vec::new(),
            next_job: 1,
            ledger: Ledger::new(),
            work: Vec::new(),
            idle_since: BTreeMap::new(),
        }
    }

    /// VMs that run, plus provisions that have not finished.
    fn load(&self) -> usize {
        let running = self.vms.values().filter(|v| v.running).count();
        let starting = self
            .work
            .iter()
            .filter(|w| {
                matches!(w, Work::Provision { vmid, .. }
                    if !self.vms.get(vmid).is_some_and(|v| v.running))
            })
            .count();
        running + starting
    }

    fn listing(&self) -> Vec<ObservedVm> {
        self.vms
            .iter()
            .filter(|(id, _)| self.visible.contains(id))
            .map(|(id, v)| {
                let snap = self.snapshot.get(id);
                ObservedVm {
                    vmid: *id,
                    node: "pve1".into(),
                    name: snap.map(|(n, _)| n.clone()),
                    tags: v.tags.clone(),
                    marker: None,
                    template: false,
                    lock: v.lock.clone(),
                    power: match snap {
                        Some((_, true)) => Power::Running,
                        Some((_, false)) => Power::Stopped,
                        None => Power::Unknown,
                    },
                    power_confirmed: false,
                    uptime_secs: None,
                }
            })
            .collect()
    }

    fn pass(&mut self) {
        let epoch = self.ledger.observation_started();
        let in_flight = self.ledger.snapshot();
        let busy: BTreeSet<u32> = in_flight.iter().map(|f| f.vmid).collect();
        let mut vms = self.listing();
        // As the dispatcher does: "stopped"/"unknown" of an owned VM outside any work is confirmed with
        // status/current (current power and name) before the planner may act on it.
        for v in &mut vms {
            if matches!(v.power, Power::Stopped | Power::Unknown)
                && v.lock.is_none()
                && !busy.contains(&v.vmid)
                && let Some(truth) = self.vms.get(&v.vmid)
            {
                v.power = if truth.running {
                    Power::Running
                } else {
                    Power::Stopped
                };
                v.power_confirmed = true;
                v.name = Some(truth.name.clone());
            }
        }
        let runners: Vec<RunnerReg> = self
            .regs
            .iter()
            .enumerate()
            .map(|(i, (name, r))| RunnerReg {
                id: i as u64 + 1,
                name: name.clone(),
                online: r.online,
                busy: r.busy,
            })
            .collect();
        // The idle hint, as the dispatcher keeps it (by VMID, for listed names whose runner is idle).
        let idle: BTreeSet<u32> = vms
            .iter()
            .filter(|v| {
                v.name
                    .as_ref()
                    .and_then(|n| self.regs.get(n))
                    .is_some_and(|r| r.online && !r.busy)
            })
            .map(|v| v.vmid)
            .collect();
        self.idle_since.retain(|id, _| idle.contains(id));
        for id in idle {
            self.idle_since.entry(id).or_insert(self.now);
        }
        let observed = Observed {
            used_vmids: self.visible.clone(),
            vms,
            jobs: self
                .jobs
                .iter()
                .map(|id| job(*id, &["linux"], NOW))
                .collect(),
            runners,
            in_flight,
            idle_since: self.idle_since.clone(),
            ..Observed::default()
        };
        let listed: BTreeSet<u32> = observed.vms.iter().map(|v| v.vmid).collect();
        let p = plan(&self.cfg, &observed, self.now);
        self.ledger.settle(epoch, |id| listed.contains(&id));
        for d in p.deletes {
            if self.ledger.begin(InFlight {
                pool: d.pool,
                vmid: d.vmid,
                node: d.node,
                runner_name: d.name.clone(),
                op: Op::Delete,
                stopped: d.reason == DeleteReason::Stopped,
            }) {
                if d.reason == DeleteReason::IdleSurplus {
                    // Deregistered first; kept (and the deletion dropped) if the runner took a job.
                    if self.regs.get(&d.name).is_some_and(|r| r.busy) {
                        self.ledger.finish(d.vmid, Outcome::Gone);
                        continue;
                    }
                    self.regs.remove(&d.name);
                }
                self.work.push(Work::Delete {
                    vmid: d.vmid,
                    step: 0,
                });
            }
        }
        for s in p.starts {
            if self.ledger.begin(InFlight {
                pool: s.pool,
                vmid: s.vmid,
                node: s.node,
                runner_name: s.runner_name.clone(),
                op: Op::Provision,
                stopped: false,
            }) {
                // The JIT registration exists from the mint on (offline).
                self.regs.insert(
                    s.runner_name.clone(),
                    Reg {
                        online: false,
                        busy: false,
                    },
                );
                self.work.push(Work::Provision {
                    vmid: s.vmid,
                    name: s.runner_name,
                    step: 0,
                });
            }
        }
    }

    fn provision_step(&mut self, i: usize) {
        let Some(idx) = nth(&self.work, i, |w| matches!(w, Work::Provision { .. })) else {
            return;
        };
        let Work::Provision { vmid, name, step } = self.work[idx].clone() else {
            return;
        };
        match step {
            0 => {
                self.vms.insert(
                    vmid,
                    Vm {
                        name,
                        tags: Vec::new(),
                        lock: Some("clone".into()),
                        running: false,
                    },
                );
            }
            1 => {
                if let Some(v) = self.vms.get_mut(&vmid) {
                    v.lock = None;
                    v.tags = marks::managed_tags("p");
                    v.tags.push(marks::READY_TAG.into());
                }
            }
            _ => {
                if let Some(v) = self.vms.get_mut(&vmid) {
                    v.running = true;
                }
                self.work.remove(idx);
                self.ledger.finish(vmid, Outcome::Provisioned);
                return;
            }
        }
        if let Work::Provision { step, .. } = &mut self.work[idx] {
            *step += 1;
        }
    }

    fn delete_step(&mut self, i: usize) {
        let Some(idx) = nth(&self.work, i, |w| matches!(w, Work::Delete { .. })) else {
            return;
        };
        let Work::Delete { vmid, step } = self.work[idx].clone() else {
            return;
        };
        if step == 0 {
            if let Some(v) = self.vms.get_mut(&vmid) {
                v.running = false;
            }
            self.work[idx] = Work::Delete { vmid, step: 1 };
        } else {
            if let Some(v) = self.vms.remove(&vmid) {
                self.regs.remove(&v.name);
            }
            self.visible.remove(&vmid);
            self.work.remove(idx);
            self.ledger.finish(vmid, Outcome::Gone);
        }
    }

    /// The name of the `i`-th running VM (modulo), if any.
    fn running_name(&self, i: usize) -> Option<String> {
        let names: Vec<&Vm> = self.vms.values().filter(|v| v.running).collect();
        (!names.is_empty()).then(|| names[i % names.len()].name.clone())
    }

    fn apply(&mut self, e: Event) {
        match e {
            Event::Pass => self.pass(),
            Event::Provision(i) => self.provision_step(i),
            Event::Delete(i) => self.delete_step(i),
            Event::Broadcast => {
                self.snapshot = self
                    .vms
                    .iter()
                    .map(|(id, v)| (*id, (v.name.clone(), v.running)))
                    .collect();
            }
            Event::Propagate => self.visible = self.vms.keys().copied().collect(),
            Event::Online(i) => {
                if let Some(name) = self.running_name(i)
                    && let Some(r) = self.regs.get_mut(&name)
                {
                    r.online = true;
                }
            }
            Event::TakeJob(i) => {
                if let Some(name) = self.running_name(i)
                    && let Some(r) = self.regs.get_mut(&name)
                    && r.online
                    && !r.busy
                    && !self.jobs.is_empty()
                {
                    self.jobs.remove(0);
                    r.busy = true;
                }
            }
            Event::JobDone(i) => {
                if let Some(name) = self.running_name(i)
                    && self.regs.get(&name).is_some_and(|r| r.busy)
                {
                    // An ephemeral runner: its registration goes, the VM powers itself off.
                    self.regs.remove(&name);
                    if let Some(v) = self.vms.values_mut().find(|v| v.name == name) {
                        v.running = false;
                    }
                }
            }
            Event::NewJob => {
                self.jobs.push(self.next_job);
                self.next_job += 1;
            }
            Event::CancelJob => {
                if !self.jobs.is_empty() {
                    self.jobs.remove(0);
                }
            }
            Event::Tick(s) => self.now += s,
        }
    }
}

fn nth(work: &[Work], i: usize, pred: impl Fn(&Work) -> bool) -> Option<usize> {
    let idx: Vec<usize> = (0..work.len()).filter(|k| pred(&work[*k])).collect();
    (!idx.is_empty()).then(|| idx[i % idx.len()])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn running_plus_starting_vms_never_exceed_the_cap(
        cap in 1usize..=4,
        events in prop::collection::vec(event(), 1..160),
    ) {
        let mut m = Model::new(cap);
        for (k, e) in events.iter().enumerate() {
            m.apply(*e);
            prop_assert!(
                m.load() <= m.cap,
                "after event {k} ({e:?}): {} VMs running or starting, cap {}; vms {:?}; work {:?}",
                m.load(), m.cap, m.vms, m.work
            );
        }
    }
}

#[test]
fn the_model_serves_jobs_when_events_flow() {
    // A sanity run of the model itself: with passes, broadcasts and progress the queue drains.
    let mut m = Model::new(2);
    for _ in 0..3 {
        m.apply(Event::NewJob);
    }
    for round in 0..40 {
        m.apply(Event::Pass);
        for i in 0..4 {
            m.apply(Event::Provision(i));
            m.apply(Event::Delete(i));
            m.apply(Event::Online(i));
            m.apply(Event::TakeJob(i));
        }
        if round % 3 == 2 {
            for i in 0..4 {
                m.apply(Event::JobDone(i));
            }
            m.apply(Event::Broadcast);
        }
        m.apply(Event::Propagate);
        assert!(m.load() <= 2);
    }
    assert!(m.jobs.is_empty(), "jobs left: {:?}", m.jobs);
}
