//! `plan()` with 10,000 queued jobs, 50 pools and 2,000 VMs (goal: ≤ 5 ms per plan).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use pool_scheduler::marks;
use pool_scheduler::{
    Config, Defaults, Job, NodeInfo, Observed, ObservedVm, Power, RunnerReg, plan,
};

const NOW: u64 = 1_760_000_000;
const POOLS: u32 = 50;
const VMS_PER_POOL: u32 = 40;
const JOBS: u64 = 10_000;

fn setup() -> (Config, Observed) {
    let pools: Vec<serde_json::Value> = (0..POOLS)
        .map(|i| {
            serde_json::json!({
                "name": format!("pool-{i}"),
                "labels": ["linux", "x64", format!("flavour-{i}")],
                "runner_name_prefix": format!("p{i}-"),
                "vmid_start": 1000 + i * 100,
                "vmid_end": 1000 + i * 100 + 99,
                "max_runners": 60,
                "min_idle": 1,
                "nodes": ["n1", "n2", "n3", "n4"],
            })
        })
        .collect();
    let defaults = Defaults {
        node: "n1".into(),
        ..Defaults::default()
    };
    let text = serde_json::json!({ "max_total_runners": 2500, "pools": pools }).to_string();
    let config = Config::from_json(&text, Path::new("."), &defaults)
        .unwrap()
        .config;

    let mut vms = Vec::new();
    let mut runners = Vec::new();
    for (i, pool) in config.pools().iter().enumerate() {
        for k in 0..VMS_PER_POOL {
            let vmid = pool.vmid_start + k;
            let created = NOW - 60 * u64::from(k);
            let name = pool.runner_name(vmid, created);
            let mut tags = marks::managed_tags(&pool.name);
            let phase = k % 5;
            if phase != 0 {
                tags.push(marks::READY_TAG.into());
            }
            let stopped = phase == 4;
            vms.push(ObservedVm {
                vmid,
                node: format!("n{}", 1 + (k as usize + i) % 4),
                name: Some(name.clone()),
                tags,
                marker: None,
                template: false,
                lock: (phase == 0).then(|| "clone".to_owned()),
                power: if stopped {
                    Power::Stopped
                } else {
                    Power::Running
                },
                power_confirmed: stopped,
                uptime_secs: Some(60 * u64::from(k)),
            });
            if phase == 1 || phase == 2 || phase == 3 {
                runners.push(RunnerReg {
                    id: u64::from(vmid),
                    name,
                    online: phase != 1,
                    busy: phase == 3,
                });
            }
        }
    }
    let jobs = (0..JOBS)
        .map(|j| {
            let flavour = j % (u64::from(POOLS) + 2); // two label sets match no pool
            let mut labels = vec![
                "self-hosted".to_owned(),
                "Linux".to_owned(),
                format!("flavour-{flavour}"),
            ];
            if j % 7 == 0 {
                labels.push("X64".to_owned());
            }
            Job {
                id: 1_000_000 + j,
                run_id: j / 4,
                labels,
                created_at_unix: NOW - (j * 7919) % 3600,
            }
        })
        .collect();
    let observed = Observed {
        vms,
        used_vmids: (100..400).collect(),
        jobs,
        runners,
        in_flight: vec![],
        nodes: (1..=4)
            .map(|n| NodeInfo {
                name: format!("n{n}"),
                online: true,
                mem_free: 1 << (30 + n),
            })
            .collect(),
        vanished_since: Default::default(),
        // Every VM idle past the grace: the idle-surplus pass runs over all of them.
        idle_since: (1000..6100).map(|id| (id, 0)).collect(),
    };
    (config, observed)
}

fn bench(c: &mut Criterion) {
    let (config, observed) = setup();
    let p = plan(&config, &observed, NOW);
    assert!(!p.starts.is_empty() && !p.deletes.is_empty() && !p.unmatched.is_empty());
    c.bench_function("plan 10k jobs, 50 pools, 2k VMs", |b| {
        b.iter(|| plan(black_box(&config), black_box(&observed), black_box(NOW)));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
