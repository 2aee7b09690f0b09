//! Restart safety: a reconciler that knows nothing (no in-flight state) over a cluster that already holds
//! VMs being created and booting counts them as supply and starts no duplicates.

use super::fake::{Fake, FakeVm};
use super::harness::{JOB_LABELS, NOW, Setup, our_vm};

#[tokio::test]
async fn fresh_reconciler_over_creating_and_booting_vms_starts_no_duplicates() {
    let fake = Fake::new();
    let creating_name = pool_scheduler::marks::runner_name("gh-runner-", 200, NOW - 20);
    {
        let mut w = fake.world();
        // Creating: the clone task still runs (lock), the listing has no name and no status yet, no tags —
        // only the marker in the description the clone request carried.
        let mut creating = FakeVm::new("pve1", Some(&creating_name))
            .locked("clone")
            .with_description(&pool_scheduler::marks::description_marker(
                "default",
                &creating_name,
                NOW - 20,
                "job=1",
            ));
        creating.name_listed = false;
        creating.listed_status = Some("unknown".to_owned());
        w.vms.insert(200, creating);
        // Booting: ready, running, its registration offline.
        w.vms.insert(201, our_vm("pve2", 201, NOW - 40).running());
    }
    for job in 1..=3 {
        fake.queue_job(job, JOB_LABELS);
    }
    let h = Setup::new().build(fake);
    h.fake.add_runner(&creating_name, false, false);
    let booting_name = h.fake.world().vms[&201].name.clone().unwrap_or_default();
    h.fake.add_runner(&booting_name, false, false);

    let report = h.pass().await;
    assert_eq!(report.started, 1, "3 jobs, 2 VMs already serving: one more");
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1);
        assert!(
            w.calls
                .iter()
                .any(|c| c.method == "clone_vm" && c.args.contains("newid=202")),
            "{:?}",
            w.calls
        );
    }
    for _ in 0..3 {
        h.clock.advance(10);
        let report = h.pass().await;
        assert_eq!(report.started, 0);
    }
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 1, "no duplicates over later passes");
    assert_eq!(w.count("generate_jit_config"), 1);
    for vmid in [200, 201] {
        assert!(
            w.mutations_of(vmid).is_empty(),
            "VM {vmid} touched: {:?}",
            w.mutations_of(vmid)
        );
    }
    assert_eq!(
        w.count("delete_runner"),
        0,
        "registrations of VMs being made are kept"
    );
    assert_eq!(
        w.count_for("vm_config", 200),
        1,
        "the marker is read once and cached"
    );
}

#[tokio::test]
async fn restart_after_provisioning_sees_its_own_vms_as_supply() {
    let fake = Fake::new();
    for job in 1..=2 {
        fake.queue_job(job, JOB_LABELS);
    }
    let h = Setup::new().var("RUNNER_INJECTION", "agent").build(fake);
    assert_eq!(h.pass().await.started, 2);
    assert_eq!(h.fake.runner_vmids(), vec![200, 201]);

    // The process restarts: nothing in flight, nothing cached.
    let fresh = h.restart();
    for _ in 0..3 {
        h.clock.advance(15);
        let report = fresh
            .pass()
            .await
            .unwrap_or_else(|e| panic!("pass failed: {e}"));
        fresh.wait_idle().await;
        assert_eq!(
            (report.started, report.deleting, report.deregistering),
            (0, 0, 0)
        );
    }
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 2);
    assert_eq!(w.count("delete_vm") + w.count("stop"), 0);
}

#[tokio::test]
async fn vm_left_half_made_by_a_crash_counts_as_supply_then_is_replaced() {
    // The dispatcher died while waiting for the agent: tags set, no ready mark, running, unlocked, its JIT
    // registration offline. Nobody will ever hand it a credential.
    let fake = Fake::new();
    let name = pool_scheduler::marks::runner_name("gh-runner-", 200, NOW - 10);
    fake.world().vms.insert(
        200,
        FakeVm::new("pve1", Some(&name))
            .with_tags(&["ghr-managed", "ghr-pool-default"])
            .with_description(&pool_scheduler::marks::description_marker(
                "default",
                &name,
                NOW - 10,
                "job=1",
            ))
            .running(),
    );
    fake.queue_job(1, JOB_LABELS);
    let h = Setup::new().var("RUNNER_INJECTION", "agent").build(fake);
    let reg = h.fake.add_runner(&name, false, false);

    // Not in flight and never handed a credential: replaced at once (deleted, stopped first), its
    // registration removed, the job served anew.
    let report = h.pass().await;
    assert_eq!(report.deleting, 1, "{report:?}");
    {
        let w = h.fake.world();
        assert_eq!(w.deletes, vec![(200, true, true)]);
        assert_eq!(w.count_for("stop", 200), 1);
        assert!(!w.runners.contains_key(&reg));
    }
    if report.started == 0 {
        h.pass().await;
    }
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 1, "exactly one replacement");
    let vm = w
        .vms
        .values()
        .find(|v| !v.template)
        .unwrap_or_else(|| panic!("no replacement VM"));
    assert_eq!(vm.status, "running");
    assert_eq!(vm.files.len(), 1);
}
