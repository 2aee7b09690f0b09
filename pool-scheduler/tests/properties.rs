//! Property tests over random configurations and observations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{NOW, reg};
use pool_scheduler::marks;
use pool_scheduler::{
    Config, Flags, InFlight, Job, MatchResult, NodeInfo, Observed, ObservedVm, Op, Plan, Power,
    match_job, plan,
};
use proptest::prelude::*;

const VOCAB: [&str; 4] = ["linux", "x64", "gpu", "arm64"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Creating,
    Booting,
    Idle,
    Busy,
    Stopped,
    Vanished,
    HalfMade,
    ForeignNoMark,
    ForeignName,
    Template,
    NamelessTagged,
}

impl Kind {
    /// Owned and not stopped: counts toward the caps.
    fn active(self) -> bool {
        matches!(
            self,
            Kind::Creating
                | Kind::Booting
                | Kind::Idle
                | Kind::Busy
                | Kind::Vanished
                | Kind::HalfMade
        )
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Creating),
        Just(Kind::Booting),
        Just(Kind::Idle),
        Just(Kind::Busy),
        Just(Kind::Stopped),
        Just(Kind::Vanished),
        Just(Kind::HalfMade),
        Just(Kind::ForeignNoMark),
        Just(Kind::ForeignName),
        Just(Kind::Template),
        Just(Kind::NamelessTagged),
    ]
}

#[derive(Debug, Clone)]
struct PoolSpec {
    size: u32,
    labels: u8,
    max_runners: u32,
    min_idle: u32,
    nodes: u8,
    vms: Vec<Kind>,
}

fn pool_spec() -> impl Strategy<Value = PoolSpec> {
    (
        1u32..12,
        0u8..16,
        0u32..6,
        0u32..3,
        1u8..8,
        prop::collection::vec(kind(), 0..8),
    )
        .prop_map(
            |(size, labels, max_runners, min_idle, nodes, vms)| PoolSpec {
                size,
                labels,
                max_runners,
                min_idle,
                nodes,
                vms,
            },
        )
}

#[derive(Debug, Clone)]
struct World {
    pools: Vec<PoolSpec>,
    max_total: u32,
    used: Vec<u32>,
    jobs: Vec<(u8, bool, u64)>,
    offline: u8,
    pause: bool,
    disable: bool,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(pool_spec(), 1..5),
        0u32..15,
        prop::collection::vec(100u32..320, 0..10),
        prop::collection::vec((0u8..16, any::<bool>(), 0u64..100), 0..30),
        0u8..8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(pools, max_total, used, jobs, offline, pause, disable)| World {
                pools,
                max_total,
                used,
                jobs,
                offline,
                pause,
                disable,
            },
        )
}

fn labels_of(mask: u8) -> Vec<String> {
    VOCAB
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, l)| (*l).to_owned())
        .collect()
}

fn start_of(i: usize) -> u32 {
    200 + 20 * u32::try_from(i).unwrap()
}

/// Builds the config and the observation; also returns each listed VM's kind.
fn build(w: &World) -> (Config, Observed, BTreeMap<u32, Kind>) {
    let mut min_idles: Vec<u32> = w
        .pools
        .iter()
        .map(|p| {
            let mut m = p.min_idle.min(p.size);
            if p.max_runners > 0 {
                m = m.min(p.max_runners);
            }
            m
        })
        .collect();
    if w.max_total > 0 && min_idles.iter().sum::<u32>() > w.max_total {
        min_idles.iter_mut().for_each(|m| *m = 0);
    }
    let pools_json: Vec<serde_json::Value> = w
        .pools
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut labels = labels_of(p.labels);
            if labels.is_empty() {
                labels.push("linux".into());
            }
            let nodes: Vec<&str> = NODES
                .iter()
                .enumerate()
                .filter(|(k, _)| p.nodes & (1 << k) != 0)
                .map(|(_, n)| *n)
                .collect();
            serde_json::json!({
                "name": format!("pool{i}"), "labels": labels, "runner_name_prefix": format!("p{i}-"),
                "vmid_start": start_of(i), "vmid_end": start_of(i) + p.size - 1,
                "max_runners": p.max_runners, "min_idle": min_idles[i], "nodes": nodes,
            })
        })
        .collect();
    let mut config = common::config(
        &serde_json::json!({ "max_total_runners": w.max_total, "pools": pools_json }),
    );
    config.set_flags(Flags {
        disable_cleanup: w.disable,
        pause_on_stopped: w.pause,
    });

    let mut vms = Vec::new();
    let mut runners = Vec::new();
    let mut kinds = BTreeMap::new();
    let old = NOW - 100_000;
    for (i, spec) in w.pools.iter().enumerate() {
        let pool = &config.pools()[i];
        for (k, &kind) in spec.vms.iter().take(spec.size as usize).enumerate() {
            let vmid = start_of(i) + u32::try_from(k).unwrap();
            let created = match kind {
                Kind::Creating => NOW - 10,
                Kind::Booting | Kind::Idle => NOW - 30,
                Kind::HalfMade => NOW - 1000,
                _ => old,
            };
            let name = pool.runner_name(vmid, created);
            let ready = matches!(
                kind,
                Kind::Booting | Kind::Idle | Kind::Busy | Kind::Stopped | Kind::Vanished
            );
            let mut tags = marks::managed_tags(&pool.name);
            if ready {
                tags.push(marks::READY_TAG.into());
            }
            let stopped = matches!(
                kind,
                Kind::Stopped
                    | Kind::ForeignNoMark
                    | Kind::ForeignName
                    | Kind::Template
                    | Kind::NamelessTagged
            );
            let mut vm = ObservedVm {
                vmid,
                node: pool.nodes[0].clone(),
                name: Some(name.clone()),
                tags,
                marker: None,
                template: false,
                lock: None,
                power: if stopped {
                    Power::Stopped
                } else {
                    Power::Running
                },
                power_confirmed: stopped,
                uptime_secs: None,
            };
            match kind {
                Kind::Creating => vm.lock = Some("clone".into()),
                Kind::Booting => runners.push(reg(u64::from(vmid), &name, false, false)),
                Kind::Idle => runners.push(reg(u64::from(vmid), &name, true, false)),
                Kind::Busy => runners.push(reg(u64::from(vmid), &name, true, true)),
                Kind::ForeignNoMark => vm.tags.clear(),
                Kind::ForeignName => vm.name = Some(format!("other-{vmid}")),
                Kind::Template => vm.template = true,
                Kind::NamelessTagged => vm.name = None,
                Kind::Stopped | Kind::Vanished | Kind::HalfMade => {}
            }
            kinds.insert(vmid, kind);
            vms.push(vm);
        }
    }
    let jobs = w
        .jobs
        .iter()
        .enumerate()
        .map(|(id, &(mask, sh, t))| {
            let mut labels = labels_of(mask);
            if sh {
                labels.insert(0, "self-hosted".into());
            }
            Job {
                id: id as u64 + 1,
                run_id: 1,
                labels,
                created_at_unix: NOW - t,
            }
        })
        .collect();
    let nodes = NODES
        .iter()
        .enumerate()
        .map(|(k, n)| NodeInfo {
            name: (*n).into(),
            online: w.offline & (1 << k) == 0,
            mem_free: 1000 * k as u64,
        })
        .collect();
    // Every VM counts as idle for long enough: idle-surplus removal is exercised by every case (it must
    // still never touch a busy, unowned or template VM).
    let idle_since = vms.iter().map(|v: &ObservedVm| (v.vmid, 0)).collect();
    let observed = Observed {
        vms,
        used_vmids: w.used.iter().copied().collect(),
        jobs,
        runners,
        in_flight: vec![],
        nodes,
        vanished_since: BTreeMap::new(),
        idle_since,
    };
    (config, observed, kinds)
}

fn starts_per_pool(p: &Plan, c: &Config) -> Vec<u32> {
    let mut v = vec![0u32; c.pools().len()];
    for s in &p.starts {
        v[c.pool_index(&s.pool).unwrap()] += 1;
    }
    v
}

fn check_safety(
    c: &Config,
    o: &Observed,
    kinds: &BTreeMap<u32, Kind>,
    p: &Plan,
) -> Result<(), TestCaseError> {
    // caps
    let active: Vec<u32> = (0..c.pools().len())
        .map(|i| {
            let pool = &c.pools()[i];
            let listed = kinds
                .iter()
                .filter(|(id, k)| pool.contains_vmid(**id) && k.active())
                .count();
            let flying = o
                .in_flight
                .iter()
                .filter(|f| {
                    f.pool == pool.name && f.op == Op::Provision && !kinds.contains_key(&f.vmid)
                })
                .count();
            u32::try_from(listed + flying).unwrap()
        })
        .collect();
    let starts = starts_per_pool(p, c);
    for (i, pool) in c.pools().iter().enumerate() {
        if pool.max_runners > 0 {
            prop_assert!(
                starts[i] == 0 || active[i] + starts[i] <= pool.max_runners,
                "pool {i}: {} active + {} starts > cap {}",
                active[i],
                starts[i],
                pool.max_runners
            );
        }
    }
    let total_active: u32 = active.iter().sum();
    let total_starts: u32 = starts.iter().sum();
    if c.max_total_runners() > 0 {
        prop_assert!(total_starts == 0 || total_active + total_starts <= c.max_total_runners());
    }
    // VMIDs
    let mut seen = HashSet::new();
    for s in &p.starts {
        let pool = c.pool(&s.pool).unwrap();
        prop_assert!(
            pool.contains_vmid(s.vmid),
            "{} outside {}",
            s.vmid,
            pool.name
        );
        prop_assert!(!o.used_vmids.contains(&s.vmid), "{} used", s.vmid);
        prop_assert!(!o.vms.iter().any(|v| v.vmid == s.vmid), "{} listed", s.vmid);
        prop_assert!(
            !o.in_flight.iter().any(|f| f.vmid == s.vmid),
            "{} in flight",
            s.vmid
        );
        prop_assert!(seen.insert(s.vmid), "{} twice", s.vmid);
        prop_assert!(pool.nodes.contains(&s.node));
    }
    // deletes
    if c.flags().disable_cleanup {
        prop_assert!(p.deletes.is_empty() && p.deregister.is_empty());
    }
    let busy: HashSet<&str> = o
        .runners
        .iter()
        .filter(|r| r.busy)
        .map(|r| r.name.as_str())
        .collect();
    for d in &p.deletes {
        let vm = o.vms.iter().find(|v| v.vmid == d.vmid).unwrap();
        let pool = c.pool(&d.pool).unwrap();
        prop_assert!(!vm.template);
        prop_assert!(
            marks::has_managed_tag(&vm.tags)
                || vm.marker.as_ref().is_some_and(|m| m.pool == pool.name)
        );
        prop_assert!(
            vm.name
                .as_deref()
                .is_some_and(|n| n.starts_with(&pool.runner_name_prefix))
        );
        prop_assert!(pool.contains_vmid(vm.vmid));
        prop_assert!(!busy.contains(d.name.as_str()));
        prop_assert!(
            matches!(
                kinds[&d.vmid],
                Kind::Stopped | Kind::Vanished | Kind::HalfMade
            ) || (matches!(kinds[&d.vmid], Kind::Idle)
                && d.reason == pool_scheduler::DeleteReason::IdleSurplus),
            "deleted a {:?} ({:?})",
            kinds[&d.vmid],
            d.reason
        );
    }
    // Idle runners are only removed beyond what queued jobs and min_idle need.
    for n in &p.pools {
        let surplus_deleted = p
            .deletes
            .iter()
            .filter(|d| d.pool == n.pool && d.reason == pool_scheduler::DeleteReason::IdleSurplus)
            .count();
        if surplus_deleted > 0 {
            prop_assert!(
                n.idle + n.creating + n.booting >= n.demand.max(n.min_idle),
                "removed idle runners that queued jobs need: {n:?}"
            );
            prop_assert_eq!(n.to_start, 0);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_safe(w in world()) {
        let (c, o, kinds) = build(&w);
        let p = plan(&c, &o, NOW);
        check_safety(&c, &o, &kinds, &p)?;
        prop_assert_eq!(&p, &plan(&c, &o, NOW), "deterministic");
    }

    #[test]
    fn applying_a_plan_then_planning_again_starts_nothing(w in world(), as_in_flight in any::<bool>()) {
        let (c, mut o, kinds) = build(&w);
        let p = plan(&c, &o, NOW);
        check_safety(&c, &o, &kinds, &p)?;
        for s in &p.starts {
            if as_in_flight {
                o.in_flight.push(InFlight {
                    pool: s.pool.clone(),
                    vmid: s.vmid,
                    node: s.node.clone(),
                    runner_name: s.runner_name.clone(),
                    op: Op::Provision,
                stopped: false,
                });
            } else {
                o.vms.push(ObservedVm {
                    vmid: s.vmid,
                    node: s.node.clone(),
                    name: Some(s.runner_name.clone()),
                    tags: marks::managed_tags(&s.pool),
                    marker: None,
                    template: false,
                    lock: Some("clone".into()),
                    power: Power::Unknown,
                    power_confirmed: false,
                    uptime_secs: None,
                });
                o.used_vmids.insert(s.vmid);
            }
        }
        let again = plan(&c, &o, NOW + 5);
        prop_assert!(again.starts.is_empty(), "second plan starts {:?}", again.starts);
    }

    #[test]
    fn with_enough_capacity_every_matched_job_gets_exactly_one_vm(
        jobs in prop::collection::vec((0u8..16, any::<bool>(), 0u64..100), 0..60),
        pool_labels in prop::collection::vec(1u8..16, 1..4),
    ) {
        let pools: Vec<serde_json::Value> = pool_labels.iter().enumerate().map(|(i, m)| serde_json::json!({
            "name": format!("pool{i}"), "labels": labels_of(*m), "runner_name_prefix": format!("p{i}-"),
            "vmid_start": 1000 * (i + 1), "vmid_end": 1000 * (i + 1) + 199, "nodes": ["n1", "n2"],
        })).collect();
        let c = common::config(&serde_json::json!({ "pools": pools }));
        let jobs: Vec<Job> = jobs.iter().enumerate().map(|(i, &(m, sh, t))| {
            let mut labels = labels_of(m);
            if sh { labels.push("self-hosted".into()); }
            Job { id: i as u64 + 1, run_id: 1, labels, created_at_unix: NOW - t }
        }).collect();
        let matched: HashSet<u64> = jobs.iter()
            .filter(|j| matches!(match_job(&c, &j.labels), MatchResult::Matched { .. }))
            .map(|j| j.id)
            .collect();
        let o = Observed { jobs, ..Observed::default() };
        let p = plan(&c, &o, NOW);
        let served: Vec<u64> = p.starts.iter().filter_map(|s| s.for_job).collect();
        prop_assert_eq!(served.len(), p.starts.len());
        prop_assert_eq!(served.len(), matched.len());
        prop_assert_eq!(served.iter().copied().collect::<HashSet<_>>(), matched);
        for s in &p.starts {
            let j = o.jobs.iter().find(|j| Some(j.id) == s.for_job).unwrap();
            prop_assert_eq!(match_job(&c, &j.labels), MatchResult::Matched { pool: c.pool_index(&s.pool).unwrap() });
        }
    }
}
