//! Builders shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use pool_scheduler::marks::{self, Marker};
use pool_scheduler::{Config, Defaults, Job, ObservedVm, Pool, Power, RunnerReg};

pub const NOW: u64 = 1_760_000_000;

pub fn defaults() -> Defaults {
    Defaults {
        node: "pve1".into(),
        ..Defaults::default()
    }
}

pub fn config(json: &serde_json::Value) -> Config {
    Config::from_json(&json.to_string(), Path::new("/etc/dispatcher"), &defaults())
        .unwrap_or_else(|e| panic!("config must be valid: {e}"))
        .config
}

/// Two pools: `small` (labels linux,x64; 200..=209) and `big` (linux,x64,gpu,cuda; 300..=309).
pub fn two_pools() -> Config {
    config(&serde_json::json!({
        "pools": [
            { "name": "small", "labels": ["linux", "x64"], "vmid_start": 200, "vmid_end": 209,
              "runner_name_prefix": "small-" },
            { "name": "big", "labels": ["linux", "x64", "gpu", "cuda"], "vmid_start": 300, "vmid_end": 309,
              "runner_name_prefix": "big-" }
        ]
    }))
}

/// A VM of `pool` as the dispatcher leaves it: name, marks, optional ready tag.
pub fn our_vm(pool: &Pool, vmid: u32, created: u64, ready: bool, power: Power) -> ObservedVm {
    let mut tags = marks::managed_tags(&pool.name);
    if ready {
        tags.push(marks::READY_TAG.into());
    }
    ObservedVm {
        vmid,
        node: pool.node.clone(),
        name: Some(pool.runner_name(vmid, created)),
        tags,
        marker: None,
        template: false,
        lock: None,
        power,
        power_confirmed: power == Power::Stopped,
        uptime_secs: None,
    }
}

pub fn marker_for(pool: &Pool, vmid: u32, created: u64) -> Marker {
    Marker {
        pool: pool.name.clone(),
        runner: pool.runner_name(vmid, created),
        created,
        instance: None,
    }
}

pub fn reg(id: u64, name: &str, online: bool, busy: bool) -> RunnerReg {
    RunnerReg {
        id,
        name: name.into(),
        online,
        busy,
    }
}

pub fn job(id: u64, labels: &[&str], created: u64) -> Job {
    Job {
        id,
        run_id: id / 10,
        labels: labels.iter().map(|s| (*s).to_owned()).collect(),
        created_at_unix: created,
    }
}
