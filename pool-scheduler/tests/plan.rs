//! Ownership, classification and planning rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NOW, job, marker_for, our_vm, reg, two_pools};
use pool_scheduler::marks;
use pool_scheduler::{
    BlockedBy, Config, DeleteReason, Flags, InFlight, NodeInfo, Observed, ObservedVm, Op, Phase,
    Power, RunnerIndex, StaleReason, UnmatchedReason, VmContext, classify, ownership, plan,
};

fn phase_of(
    c: &Config,
    vm: &ObservedVm,
    runners: &[pool_scheduler::RunnerReg],
    ctx: VmContext,
) -> Phase {
    let owned = ownership(c, vm).expect("owned");
    let idx = RunnerIndex::new(runners);
    classify(vm, &owned, &c.pools()[owned.pool], &idx, ctx, NOW)
}

// ---- ownership --------------------------------------------------------------------------------------------

#[test]
fn ownership_needs_all_three_marks() {
    let c = two_pools();
    let small = &c.pools()[0];
    let base = our_vm(small, 201, NOW - 10, true, Power::Running);
    let o = ownership(&c, &base).unwrap();
    assert_eq!(
        (o.pool, o.deletable, o.created_unix),
        (0, true, Some(NOW - 10))
    );

    // no mark
    let mut vm = base.clone();
    vm.tags = vec!["ghr-ready".into()];
    assert!(ownership(&c, &vm).is_none());
    // wrong prefix
    let mut vm = base.clone();
    vm.name = Some("build-201-abc".into());
    assert!(ownership(&c, &vm).is_none());
    // outside every range
    let mut vm = base.clone();
    vm.vmid = 250;
    assert!(ownership(&c, &vm).is_none());
    // in the other pool's range with this pool's prefix
    let mut vm = base.clone();
    vm.vmid = 301;
    assert!(ownership(&c, &vm).is_none());
    // template
    let mut vm = base.clone();
    vm.template = true;
    assert!(ownership(&c, &vm).is_none());
    // marks naming another pool contradict the range
    let mut vm = base.clone();
    vm.tags = marks::managed_tags("big");
    assert!(ownership(&c, &vm).is_none());
    let mut vm = base.clone();
    vm.marker = Some(marker_for(&c.pools()[1], 301, NOW));
    assert!(ownership(&c, &vm).is_none());

    // the description marker alone is a mark
    let mut vm = base.clone();
    vm.tags.clear();
    vm.marker = Some(marker_for(small, 201, NOW - 10));
    assert!(ownership(&c, &vm).unwrap().deletable);

    // a name carrying another VMID (a copy) is counted but never deleted
    let mut vm = base.clone();
    vm.name = Some(small.runner_name(205, NOW));
    assert!(!ownership(&c, &vm).unwrap().deletable);
    // a marker naming another runner than the name: not deletable
    let mut vm = base.clone();
    vm.marker = Some(marker_for(small, 202, NOW));
    assert!(!ownership(&c, &vm).unwrap().deletable);
}

#[test]
fn a_nameless_vm_is_not_foreign_but_deletable_only_with_a_matching_marker() {
    let c = two_pools();
    let small = &c.pools()[0];
    let mut vm = our_vm(small, 203, NOW - 5000, false, Power::Stopped);
    vm.name = None;
    // tag only: owned (supply), not deletable
    let o = ownership(&c, &vm).unwrap();
    assert!(!o.deletable);
    assert_eq!(o.runner_name, None);
    // marker naming the pool and a runner with this VMID: deletable
    vm.marker = Some(marker_for(small, 203, NOW - 5000));
    let o = ownership(&c, &vm).unwrap();
    assert!(o.deletable);
    assert_eq!(o.created_unix, Some(NOW - 5000));
    // marker whose runner carries another VMID: not deletable
    vm.marker = Some(marker_for(small, 204, NOW - 5000));
    assert!(!ownership(&c, &vm).unwrap().deletable);
    // empty name counts as unknown
    vm.name = Some(String::new());
    vm.marker = None;
    assert!(!ownership(&c, &vm).unwrap().deletable);
}

#[test]
fn foreign_vms_survive_every_cleanup_path() {
    let c = two_pools();
    let small = &c.pools()[0];
    let old = NOW - 100_000;
    let mut vms = Vec::new();
    // inside the range, with the prefix, no mark — stopped, running, not ready: all look "stale"
    for (vmid, power) in [
        (200, Power::Stopped),
        (201, Power::Running),
        (202, Power::Unknown),
    ] {
        let mut vm = our_vm(small, vmid, old, false, power);
        vm.tags = vec![];
        vms.push(vm);
    }
    // inside the range, marked, foreign name
    let mut vm = our_vm(small, 203, old, true, Power::Stopped);
    vm.name = Some("someones-vm".into());
    vms.push(vm);
    // a marked template inside the range
    let mut vm = our_vm(small, 204, old, true, Power::Stopped);
    vm.template = true;
    vms.push(vm);
    // marked, prefixed, stopped, but outside every range
    vms.push(our_vm(small, 150, old, true, Power::Stopped));
    let observed = Observed {
        vms,
        runners: vec![reg(1, "someones-vm", false, false)],
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    assert!(p.deletes.is_empty(), "{:?}", p.deletes);
    assert!(p.deregister.is_empty());
    assert_eq!(
        p.pools[0].stopped + p.pools[0].stale + p.pools[0].creating,
        0
    );
}

// ---- classify: every phase and stale reason ------------------------------------------------------------------

#[test]
fn classify_phases() {
    let c = two_pools();
    let p = &c.pools()[0];
    let young = NOW - 30;
    let name = |vmid| p.runner_name(vmid, young);
    let none = VmContext::default();

    // Creating: in flight (even stopped and old) or a locked clone; not ready otherwise is half-made
    let vm = our_vm(p, 201, NOW - 5000, false, Power::Stopped);
    let ctx = VmContext {
        in_flight: Some(Op::Provision),
        vanished_since: None,
    };
    assert_eq!(phase_of(&c, &vm, &[], ctx), Phase::Creating);
    let mut vm = our_vm(p, 201, young, false, Power::Stopped);
    vm.power_confirmed = false;
    vm.lock = Some("clone".into());
    assert_eq!(phase_of(&c, &vm, &[], none), Phase::Creating);
    let vm = our_vm(p, 201, young, false, Power::Running);
    assert_eq!(
        phase_of(&c, &vm, &[], none),
        Phase::Stale(StaleReason::HalfMade)
    );

    // Booting: ready, registration offline (JIT) or not there yet (registration token)
    let vm = our_vm(p, 201, young, true, Power::Running);
    assert_eq!(
        phase_of(&c, &vm, &[reg(1, &name(201), false, false)], none),
        Phase::Booting
    );
    assert_eq!(phase_of(&c, &vm, &[], none), Phase::Booting);

    // Idle / Busy
    assert_eq!(
        phase_of(&c, &vm, &[reg(1, &name(201), true, false)], none),
        Phase::Idle
    );
    assert_eq!(
        phase_of(&c, &vm, &[reg(1, &name(201), true, true)], none),
        Phase::Busy
    );

    // Stopped only when confirmed
    let vm = our_vm(p, 201, young, true, Power::Stopped);
    assert_eq!(phase_of(&c, &vm, &[], none), Phase::Stopped);
    let mut unconfirmed = vm.clone();
    unconfirmed.power_confirmed = false;
    assert_eq!(phase_of(&c, &unconfirmed, &[], none), Phase::Booting);

    // Deleting
    let ctx = VmContext {
        in_flight: Some(Op::Delete),
        vanished_since: None,
    };
    assert_eq!(phase_of(&c, &vm, &[], ctx), Phase::Deleting);
}

#[test]
fn classify_stale_reasons() {
    let c = two_pools();
    let p = &c.pools()[0];
    let none = VmContext::default();
    let boot = p.boot_timeout.as_secs();
    let life = p.max_lifetime.as_secs();

    // BootTimeout: locked past boot_timeout; ready with an offline registration past boot_timeout
    let t = NOW - boot;
    let mut vm = our_vm(p, 201, t, false, Power::Stopped);
    vm.power_confirmed = false;
    vm.lock = Some("clone".into());
    assert_eq!(
        phase_of(&c, &vm, &[], none),
        Phase::Stale(StaleReason::BootTimeout)
    );
    let vm = our_vm(p, 201, t, true, Power::Running);
    let offline = reg(1, &p.runner_name(201, t), false, false);
    assert_eq!(
        phase_of(&c, &vm, &[offline], none),
        Phase::Stale(StaleReason::BootTimeout)
    );
    let younger = our_vm(p, 201, t + 1, true, Power::Running);
    let offline = reg(1, &p.runner_name(201, t + 1), false, false);
    assert_eq!(phase_of(&c, &younger, &[offline], none), Phase::Booting);

    // MaxLifetime: idle and old; a busy runner is never stale, however old
    let t = NOW - life;
    let vm = our_vm(p, 201, t, true, Power::Running);
    let n = p.runner_name(201, t);
    assert_eq!(
        phase_of(&c, &vm, &[reg(1, &n, true, false)], none),
        Phase::Stale(StaleReason::MaxLifetime)
    );
    assert_eq!(
        phase_of(&c, &vm, &[reg(1, &n, true, true)], none),
        Phase::Busy
    );
    let mut stopped_but_busy = our_vm(p, 201, t, true, Power::Stopped);
    stopped_but_busy.power_confirmed = true;
    assert_eq!(
        phase_of(&c, &stopped_but_busy, &[reg(1, &n, false, true)], none),
        Phase::Busy
    );

    // RunnerVanished: ready, no registration, past boot_timeout — or the hint is old enough
    let vm = our_vm(p, 201, NOW - boot, true, Power::Running);
    assert_eq!(
        phase_of(&c, &vm, &[], none),
        Phase::Stale(StaleReason::RunnerVanished)
    );
    let vm = our_vm(p, 201, NOW - 200, true, Power::Running);
    let hint = |since| VmContext {
        in_flight: None,
        vanished_since: Some(since),
    };
    assert_eq!(
        phase_of(
            &c,
            &vm,
            &[],
            hint(NOW - pool_scheduler::VANISHED_GRACE_SECS)
        ),
        Phase::Stale(StaleReason::RunnerVanished)
    );
    // Within the grace the VM is finishing (powering off): not supply for queued jobs.
    assert_eq!(phase_of(&c, &vm, &[], hint(NOW - 10)), Phase::Finishing);
    assert!(!Phase::Finishing.is_supply() && Phase::Finishing.counts_toward_caps());

    // HalfMade: not ready, not locked, not in flight, older than the grace
    let g = pool_scheduler::HALF_MADE_GRACE_SECS;
    let vm = our_vm(p, 201, NOW - g, false, Power::Running);
    assert_eq!(
        phase_of(&c, &vm, &[], none),
        Phase::Stale(StaleReason::HalfMade)
    );
    // … right away (the grace is 0): a provision in flight is reported, so this one was cut by a restart
    assert_eq!(g, 0);
    let vm = our_vm(p, 201, NOW, false, Power::Running);
    assert_eq!(
        phase_of(&c, &vm, &[], none),
        Phase::Stale(StaleReason::HalfMade)
    );
    // … but never while the dispatcher reports work on it
    let busy = VmContext {
        in_flight: Some(Op::Provision),
        vanished_since: None,
    };
    assert_eq!(phase_of(&c, &vm, &[], busy), Phase::Creating);
    // … but an online runner on it is used, not killed
    let n = p.runner_name(201, NOW - g);
    let vm = our_vm(p, 201, NOW - g, false, Power::Running);
    assert_eq!(
        phase_of(&c, &vm, &[reg(1, &n, true, false)], none),
        Phase::Idle
    );
}

#[test]
fn age_falls_back_to_marker_then_uptime() {
    let c = two_pools();
    let p = &c.pools()[0];
    // A ready VM without a registration boots until `boot_timeout` from its age.
    let boot = p.boot_timeout.as_secs();
    let mut vm = our_vm(p, 201, NOW, true, Power::Running);
    vm.name = Some("small-201".into()); // prefixed but not a runner name: age unknown from the name
    assert_eq!(phase_of(&c, &vm, &[], VmContext::default()), Phase::Booting);
    vm.uptime_secs = Some(boot + 1);
    assert_eq!(
        phase_of(&c, &vm, &[], VmContext::default()),
        Phase::Stale(StaleReason::RunnerVanished)
    );
    vm.marker = Some(pool_scheduler::Marker {
        pool: "small".into(),
        runner: "small-201".into(),
        created: NOW - 5,
        instance: None,
    });
    assert_eq!(phase_of(&c, &vm, &[], VmContext::default()), Phase::Booting);
}

// ---- plan ----------------------------------------------------------------------------------------------------

fn flags(c: &mut Config, disable_cleanup: bool, pause_on_stopped: bool) {
    c.set_flags(Flags {
        disable_cleanup,
        pause_on_stopped,
    });
}

/// small: one stopped VM, one stale (half-made), one vanished registration; 2 queued jobs each pool.
fn busy_world(c: &Config) -> Observed {
    let small = &c.pools()[0];
    let old = NOW - 10_000;
    Observed {
        vms: vec![
            our_vm(small, 200, old, true, Power::Stopped),
            our_vm(small, 201, NOW - 500, false, Power::Running),
        ],
        jobs: vec![
            job(1, &["self-hosted", "linux"], NOW - 60),
            job(2, &["self-hosted", "linux"], NOW - 50),
            job(3, &["gpu"], NOW - 40),
            job(4, &["cuda", "gpu"], NOW - 30),
        ],
        runners: vec![reg(9, &small.runner_name(205, old), false, false)],
        ..Observed::default()
    }
}

#[test]
fn plan_deletes_stopped_and_stale_and_starts_for_demand() {
    let c = two_pools();
    let p = plan(&c, &busy_world(&c), NOW);
    let dels: Vec<(u32, DeleteReason)> = p.deletes.iter().map(|d| (d.vmid, d.reason)).collect();
    assert_eq!(
        dels,
        [(200, DeleteReason::Stopped), (201, DeleteReason::HalfMade)]
    );
    assert_eq!(
        p.deletes[0].name,
        c.pools()[0].runner_name(200, NOW - 10_000)
    );
    assert_eq!(p.deregister.len(), 1);
    assert_eq!(p.deregister[0].runner_id, 9);
    let starts: Vec<(&str, u32, Option<u64>)> = p
        .starts
        .iter()
        .map(|s| (s.pool.as_str(), s.vmid, s.for_job))
        .collect();
    assert_eq!(
        starts,
        [
            ("small", 202, Some(1)),
            ("small", 203, Some(2)),
            ("big", 300, Some(3)),
            ("big", 301, Some(4))
        ]
    );
    let s = &p.starts[0];
    assert_eq!(s.node, "pve1");
    assert_eq!(s.created_unix, NOW);
    assert_eq!(s.runner_name, c.pools()[0].runner_name(202, NOW));
}

#[test]
fn disable_cleanup_deletes_and_deregisters_nothing() {
    let mut c = two_pools();
    flags(&mut c, true, false);
    let p = plan(&c, &busy_world(&c), NOW);
    assert!(p.deletes.is_empty());
    assert!(p.deregister.is_empty());
    assert_eq!(p.starts.len(), 4, "scale-up continues");
    assert_eq!((p.pools[0].stopped, p.pools[0].stale), (1, 1));
}

#[test]
fn pause_on_stopped_holds_scale_up_in_that_pool_only() {
    let mut c = two_pools();
    flags(&mut c, true, true);
    let p = plan(&c, &busy_world(&c), NOW);
    assert!(p.starts.iter().all(|s| s.pool == "big"));
    assert_eq!(p.starts.len(), 2);
    assert_eq!(p.pools[0].blocked_by, Some(BlockedBy::PausedOnStopped));
    assert_eq!(p.pools[0].wanted, 2);
    assert_eq!(p.pools[0].to_start, 0);
    assert_eq!(p.pools[1].blocked_by, None);
    // with cleanup on, the stopped VM is still deleted, so the next pass resumes
    flags(&mut c, false, true);
    let p = plan(&c, &busy_world(&c), NOW);
    assert_eq!(p.deletes.len(), 2);
    assert_eq!(p.pools[0].to_start, 0);
}

#[test]
fn busy_in_flight_locked_and_unconfirmed_vms_are_never_deleted() {
    let c = two_pools();
    let small = &c.pools()[0];
    let old = NOW - 100_000;
    let mut locked = our_vm(small, 202, old, true, Power::Stopped);
    locked.lock = Some("backup".into());
    let observed = Observed {
        vms: vec![
            our_vm(small, 200, old, true, Power::Running), // busy, past max_lifetime
            our_vm(small, 201, old, true, Power::Stopped), // in flight (delete running)
            locked,
            our_vm(small, 203, old, true, Power::Stopped), // in flight provision (clone stopped)
        ],
        runners: vec![reg(1, &small.runner_name(200, old), true, true)],
        in_flight: vec![
            InFlight {
                pool: "small".into(),
                vmid: 201,
                node: "pve1".into(),
                runner_name: small.runner_name(201, old),
                op: Op::Delete,
                stopped: true,
            },
            InFlight {
                pool: "small".into(),
                vmid: 203,
                node: "pve1".into(),
                runner_name: small.runner_name(203, old),
                op: Op::Provision,
                stopped: false,
            },
        ],
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    assert!(p.deletes.is_empty(), "{:?}", p.deletes);
    let n = &p.pools[0];
    assert_eq!((n.busy, n.deleting, n.stopped, n.creating), (1, 1, 1, 1));
    assert_eq!(n.active, 2, "busy + creating count toward caps");

    // The deletion of a VM that still runs keeps its slot until it is gone.
    let mut running_delete = observed.clone();
    running_delete.vms[1].power = Power::Running;
    running_delete.in_flight[0].stopped = false;
    let n = &plan(&c, &running_delete, NOW).pools[0];
    assert_eq!((n.deleting, n.active), (1, 3));
}

#[test]
fn caps_count_every_non_stopped_vm_and_min_idle_fills_a_warm_pool() {
    let c = common::config(&serde_json::json!({ "max_total_runners": 5, "pools": [
        { "name": "a", "labels": "linux", "vmid_start": 200, "vmid_end": 209, "runner_name_prefix": "a-",
          "max_runners": 3, "min_idle": 2 },
        { "name": "b", "labels": "gpu", "vmid_start": 300, "vmid_end": 309, "runner_name_prefix": "b-",
          "min_idle": 1 }
    ]}));
    let a = &c.pools()[0];
    // a: one busy runner, no demand → wants 2 idle, pool cap 3 leaves room for 2
    let observed = Observed {
        vms: vec![our_vm(a, 200, NOW - 100, true, Power::Running)],
        runners: vec![reg(1, &a.runner_name(200, NOW - 100), true, true)],
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    let starts: Vec<(&str, u32, Option<u64>)> = p
        .starts
        .iter()
        .map(|s| (s.pool.as_str(), s.vmid, s.for_job))
        .collect();
    assert_eq!(
        starts,
        [("a", 201, None), ("a", 202, None), ("b", 300, None)]
    );

    // three queued jobs for a: wants 3, pool cap leaves 2
    let mut obs = observed.clone();
    obs.jobs = (1..=3).map(|i| job(i, &["linux"], NOW - 100 + i)).collect();
    let p = plan(&c, &obs, NOW);
    assert_eq!(p.pools[0].wanted, 3);
    assert_eq!(p.pools[0].to_start, 2);
    assert_eq!(p.pools[0].blocked_by, Some(BlockedBy::PoolCap));
}

#[test]
fn the_total_cap_goes_to_the_oldest_jobs_first() {
    let c = common::config(&serde_json::json!({ "max_total_runners": 3, "pools": [
        { "name": "a", "labels": "linux", "vmid_start": 200, "vmid_end": 209, "runner_name_prefix": "a-" },
        { "name": "b", "labels": "gpu", "vmid_start": 300, "vmid_end": 309, "runner_name_prefix": "b-" }
    ]}));
    let observed = Observed {
        jobs: vec![
            job(10, &["linux"], NOW - 10),
            job(11, &["linux"], NOW - 9),
            job(12, &["linux"], NOW - 8),
            job(20, &["gpu"], NOW - 50),
            job(21, &["gpu"], NOW - 5),
        ],
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    let for_jobs: Vec<Option<u64>> = p.starts.iter().map(|s| s.for_job).collect();
    assert_eq!(for_jobs, [Some(20), Some(10), Some(11)]);
    assert_eq!(p.pools[0].to_start, 2);
    assert_eq!(p.pools[0].blocked_by, Some(BlockedBy::TotalCap));
    assert_eq!(p.pools[1].to_start, 1);
    assert_eq!(p.pools[1].blocked_by, Some(BlockedBy::TotalCap));
}

#[test]
fn vmids_are_allocated_cluster_wide() {
    let c = two_pools();
    let small = &c.pools()[0];
    let mut foreign = our_vm(small, 201, NOW, false, Power::Running);
    foreign.tags.clear();
    foreign.node = "pve9".into();
    let observed = Observed {
        vms: vec![foreign],
        used_vmids: [200, 203].into_iter().collect(), // e.g. containers on other nodes
        in_flight: vec![InFlight {
            pool: "small".into(),
            vmid: 202,
            node: "pve1".into(),
            runner_name: small.runner_name(202, NOW),
            op: Op::Provision,
            stopped: false,
        }],
        jobs: (1..=3).map(|i| job(i, &["linux"], NOW)).collect(),
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    let ids: Vec<u32> = p.starts.iter().map(|s| s.vmid).collect();
    assert_eq!(ids, [204, 205], "the in-flight provision covers one job");

    // a full range blocks with RangeExhausted
    let mut obs = observed.clone();
    obs.used_vmids = (200..=209).collect();
    let p = plan(&c, &obs, NOW);
    assert!(p.starts.is_empty());
    assert_eq!(p.pools[0].blocked_by, Some(BlockedBy::RangeExhausted));
}

#[test]
fn nodes_are_spread_fewest_vms_then_most_free_memory() {
    let c = common::config(&serde_json::json!({ "pools": [
        { "name": "a", "labels": "linux", "vmid_start": 200, "vmid_end": 299, "runner_name_prefix": "a-",
          "nodes": ["n1", "n2", "n3", "n4"] }
    ]}));
    let a = &c.pools()[0];
    let mut vm1 = our_vm(a, 200, NOW - 10, true, Power::Running);
    vm1.node = "n1".into();
    let mut vm2 = our_vm(a, 201, NOW - 10, true, Power::Running);
    vm2.node = "n1".into();
    let mut stopped = our_vm(a, 202, NOW - 10, true, Power::Stopped);
    stopped.node = "n2".into(); // stopped VMs do not load a node
    let observed = Observed {
        vms: vec![vm1, vm2, stopped],
        nodes: vec![
            NodeInfo {
                name: "n1".into(),
                online: true,
                mem_free: 100,
            },
            NodeInfo {
                name: "n2".into(),
                online: true,
                mem_free: 10,
            },
            NodeInfo {
                name: "n3".into(),
                online: true,
                mem_free: 50,
            },
            NodeInfo {
                name: "n4".into(),
                online: false,
                mem_free: 1000,
            },
        ],
        jobs: (1..=7).map(|i| job(i, &["linux"], NOW)).collect(),
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    let nodes: Vec<&str> = p.starts.iter().map(|s| s.node.as_str()).collect();
    // 5 wanted (7 jobs - 2 booting): n3 (0 VMs, more memory), n2 (0), n3 (1, more memory), n2, then n1/n2/n3 tie at 2 → n1 (most memory)
    assert_eq!(nodes, ["n3", "n2", "n3", "n2", "n1"]);

    // every node offline → nothing starts, blocked
    let mut obs = observed.clone();
    for n in &mut obs.nodes {
        n.online = false;
    }
    let p = plan(&c, &obs, NOW);
    assert!(p.starts.is_empty());
    assert_eq!(p.pools[0].blocked_by, Some(BlockedBy::NoOnlineNode));
}

#[test]
fn deregistration_rules() {
    let c = two_pools();
    let small = &c.pools()[0];
    let old = NOW - 1000;
    let fresh = NOW - 10;
    let mut nameless = our_vm(small, 206, old, false, Power::Unknown);
    nameless.name = None;
    nameless.tags.clear(); // nothing known yet: could be anyone's
    let observed = Observed {
        vms: vec![our_vm(small, 201, old, true, Power::Running), nameless],
        runners: vec![
            reg(1, &small.runner_name(200, old), false, false), // no VM, old → removed
            reg(2, &small.runner_name(201, old), true, false),  // has a VM
            reg(3, &small.runner_name(202, fresh), false, false), // within the grace
            reg(4, &small.runner_name(203, old), true, true),   // busy
            reg(5, &small.runner_name(204, old), false, false), // in flight
            reg(6, "laptop-runner", false, false),              // not ours
            reg(7, &small.runner_name(250, old), false, false), // VMID outside the range
            reg(8, &small.runner_name(206, old), false, false), // a nameless VM holds its VMID
            reg(9, &c.pools()[1].runner_name(305, old), true, false), // other pool, no VM → removed
        ],
        in_flight: vec![InFlight {
            pool: "small".into(),
            vmid: 204,
            node: "pve1".into(),
            runner_name: small.runner_name(204, old),
            op: Op::Provision,
            stopped: false,
        }],
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    let ids: Vec<u64> = p.deregister.iter().map(|d| d.runner_id).collect();
    assert_eq!(ids, [9, 1], "sorted by name");
}

#[test]
fn unmatched_jobs_are_explained() {
    let c = two_pools();
    let observed = Observed {
        jobs: vec![
            job(1, &["ubuntu-latest"], NOW - 3),
            job(2, &["self-hosted", "linux", "arm64"], NOW - 2),
            job(2, &["self-hosted", "linux", "arm64"], NOW - 2), // listed twice: counted once
        ],
        ..Observed::default()
    };
    let p = plan(&c, &observed, NOW);
    assert_eq!(p.unmatched.len(), 2);
    assert_eq!(p.unmatched[0].reason, UnmatchedReason::NotOurs);
    assert_eq!(
        p.unmatched[1].reason,
        UnmatchedReason::NoPool {
            nearest_pool: "small".into(),
            missing_labels: vec!["arm64".into()]
        }
    );
    assert!(p.starts.is_empty());
}

#[test]
fn plan_is_deterministic_under_input_order() {
    let c = two_pools();
    let mut a = busy_world(&c);
    a.jobs
        .extend((10..40).map(|i| job(i, &["linux"], NOW - (i % 7))));
    let mut b = a.clone();
    b.vms.reverse();
    b.jobs.reverse();
    b.runners.reverse();
    assert_eq!(plan(&c, &a, NOW), plan(&c, &b, NOW));
    let json = serde_json::to_string(&plan(&c, &a, NOW)).unwrap();
    assert!(json.contains("\"reason\":\"half_made\""));
}

#[test]
fn another_instances_vms_are_never_ours() {
    let mut c = two_pools();
    c.set_instance(Some("site-a".into()));
    let p = c.pools()[0].clone();
    let stopped = |tags: &[&str]| {
        let mut vm = our_vm(&p, 201, NOW - 100, true, Power::Stopped);
        vm.tags.extend(tags.iter().map(|t| (*t).to_owned()));
        vm
    };
    // Ours (tagged with our instance, or made before instance identities): deleted once stopped.
    for tags in [&["ghr-inst-site-a"][..], &[][..]] {
        let observed = Observed {
            vms: vec![stopped(tags)],
            ..Observed::default()
        };
        assert_eq!(plan(&c, &observed, NOW).deletes.len(), 1, "{tags:?}");
    }
    // Another instance's, by tag or by marker: never counted, never deleted.
    let mut by_marker = stopped(&[]);
    by_marker.marker = Some(pool_scheduler::Marker {
        instance: Some("site-b".into()),
        ..marker_for(&p, 201, NOW - 100)
    });
    for vm in [stopped(&["ghr-inst-site-b"]), by_marker] {
        assert!(pool_scheduler::ownership(&c, &vm).is_none());
        let observed = Observed {
            vms: vec![vm],
            ..Observed::default()
        };
        let pl = plan(&c, &observed, NOW);
        assert!(pl.deletes.is_empty());
        assert_eq!(pl.pools[0].active, 0);
    }
}
