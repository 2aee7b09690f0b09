//! Deletion of what is ours and done, and the ownership rule: what is not provably ours is never stopped,
//! changed or deleted. `DISABLE_CLEANUP` and `PAUSE_ON_STOPPED` as the seed documents them.

use super::fake::{Fake, FakeVm};
use super::harness::{Harness, JOB_LABELS, NOW, Setup, our_vm};

fn name_of(h: &Harness, vmid: u32) -> String {
    h.fake.world().vms[&vmid]
        .name
        .clone()
        .unwrap_or_else(|| panic!("VM {vmid} has no name"))
}

fn method_order(h: &Harness, vmid: u32) -> Vec<&'static str> {
    h.fake
        .world()
        .calls
        .iter()
        .filter(|c| c.vmid == Some(vmid) && c.method != "task_status")
        .map(|c| c.method)
        .collect()
}

#[tokio::test]
async fn stopped_vm_of_ours_is_confirmed_then_deleted_with_purge_snippet_and_registration() {
    let fake = Fake::new();
    fake.world().vms.insert(205, our_vm("pve1", 205, NOW - 600));
    let h = Setup::new().build(fake);
    let name = name_of(&h, 205);
    let reg = h.fake.add_runner(&name, false, false);
    std::fs::write(h.snippets.join(format!("{name}.yaml")), "leftover")
        .unwrap_or_else(|e| panic!("{e}"));

    let report = h.pass().await;
    assert_eq!(report.deleting, 1, "{report:?}");
    assert_eq!(h.rec.failed_tasks(), 0);
    let order = method_order(&h, 205);
    assert_eq!(
        order,
        ["vm_status", "vm_status", "delete_vm"],
        "status confirmed (observe, then right before the destroy), no stop needed"
    );
    let w = h.fake.world();
    assert_eq!(w.deletes, vec![(205, true, true)]);
    assert!(!w.vms.contains_key(&205));
    assert!(!w.runners.contains_key(&reg), "registration removed");
    assert!(
        w.calls
            .iter()
            .any(|c| c.method == "delete_runner" && c.args == format!("id={reg}"))
    );
    drop(w);
    assert!(h.snippet_files().is_empty(), "{:?}", h.snippet_files());
}

#[tokio::test]
async fn stale_running_vm_is_stopped_before_it_is_deleted() {
    let fake = Fake::new();
    // Ready and running, registration still offline 700 s after creation: boot timeout (600 s).
    fake.world()
        .vms
        .insert(206, our_vm("pve1", 206, NOW - 700).running());
    let h = Setup::new().build(fake);
    let reg = h.fake.add_runner(&name_of(&h, 206), false, false);

    let report = h.pass().await;
    assert_eq!(report.deleting, 1);
    assert_eq!(
        method_order(&h, 206),
        ["vm_status", "stop", "vm_status", "delete_vm"],
        "fresh status, stop, marks re-read, destroy"
    );
    let w = h.fake.world();
    assert_eq!(w.deletes, vec![(206, true, true)]);
    assert!(!w.runners.contains_key(&reg));
}

#[tokio::test]
async fn listing_that_lags_does_not_delete_a_running_vm() {
    let fake = Fake::new();
    let mut vm = our_vm("pve1", 207, NOW - 60).running();
    vm.listed_status = Some("stopped".to_owned());
    fake.world().vms.insert(207, vm);
    let h = Setup::new().build(fake);
    h.fake.add_runner(&name_of(&h, 207), true, false);

    let report = h.pass().await;
    assert_eq!(report.deleting, 0);
    let w = h.fake.world();
    assert_eq!(
        w.count_for("vm_status", 207),
        0,
        "an online runner proves the VM runs: no status read needed"
    );
    assert!(w.mutations_of(207).is_empty(), "{:?}", w.mutations_of(207));
    assert_eq!(w.vms[&207].status, "running");
}

#[tokio::test]
async fn a_listing_that_says_stopped_is_confirmed_while_the_runner_is_not_up() {
    let fake = Fake::new();
    let mut vm = our_vm("pve1", 207, NOW - 60).running();
    vm.listed_status = Some("stopped".to_owned());
    fake.world().vms.insert(207, vm);
    let h = Setup::new().build(fake);
    h.fake.add_runner(&name_of(&h, 207), false, false);

    let report = h.pass().await;
    assert_eq!(report.deleting, 0);
    let w = h.fake.world();
    assert_eq!(w.count_for("vm_status", 207), 1, "listing confirmed");
    assert!(w.mutations_of(207).is_empty(), "{:?}", w.mutations_of(207));
    assert_eq!(w.vms[&207].status, "running");
}

#[tokio::test]
async fn foreign_unmarked_template_and_busy_vms_survive_every_pass() {
    let fake = Fake::new();
    {
        let mut w = fake.world();
        // Inside the range, no mark at all.
        w.vms.insert(210, FakeVm::new("pve1", Some("web-server")));
        // The prefix, but neither tag nor marker.
        w.vms.insert(
            211,
            FakeVm::new("pve1", Some("gh-runner-211-abc")).with_description("kept by the admin"),
        );
        // A template with our prefix and tag.
        w.vms.insert(
            212,
            FakeVm::template("pve1", "gh-runner-212-abc").with_tags(&["ghr-managed"]),
        );
        // A marker of another pool.
        w.vms.insert(
            214,
            FakeVm::new("pve1", Some("gh-runner-214-abc"))
                .with_description("ghr-managed: pool=gpu runner=gh-runner-214-abc created=1"),
        );
        // Our tags, but the name carries another VMID.
        w.vms.insert(
            215,
            FakeVm::new("pve2", Some("gh-runner-216-abc"))
                .with_tags(&["ghr-managed", "ghr-pool-default"]),
        );
        // Our tag, but not our prefix.
        w.vms.insert(
            216,
            FakeVm::new("pve1", Some("db-primary")).with_tags(&["ghr-managed"]),
        );
        // Our marks, outside every range.
        w.vms.insert(150, our_vm("pve1", 150, NOW - 100_000));
        // Busy runners: one running, one whose VM already shows stopped while GitHub still says busy.
        w.vms.insert(213, our_vm("pve1", 213, NOW - 100).running());
        w.vms.insert(217, our_vm("pve2", 217, NOW - 100));
        // Control: a stopped VM of ours, which must go.
        w.vms.insert(205, our_vm("pve1", 205, NOW - 600));
    }
    let h = Setup::new().build(fake);
    let busy_a = h.fake.add_runner(&name_of(&h, 213), true, true);
    let busy_b = h.fake.add_runner(&name_of(&h, 217), true, true);
    let before = h.fake.world().vms.clone();

    // Past every grace, the boot timeout, the max lifetime.
    for step in [0, 130, 700, 13 * 3600, 2 * 86_400] {
        h.clock.advance(step);
        h.pass().await;
    }

    let w = h.fake.world();
    assert_eq!(w.deletes, vec![(205, true, true)], "only the control VM");
    for vmid in [150, 210, 211, 212, 213, 214, 215, 216, 217] {
        assert!(
            w.mutations_of(vmid).is_empty(),
            "VM {vmid} was touched: {:?}",
            w.mutations_of(vmid)
        );
        assert_eq!(w.vms.get(&vmid), before.get(&vmid), "VM {vmid} changed");
    }
    assert!(w.runners.contains_key(&busy_a) && w.runners.contains_key(&busy_b));
    for vmid in [210, 211, 214] {
        assert_eq!(
            w.count_for("vm_config", vmid),
            1,
            "marker of VM {vmid} read once, then cached"
        );
    }
    assert!(
        !w.calls.iter().any(|c| c.method == "delete_runner"
            && (c.args == format!("id={busy_a}") || c.args == format!("id={busy_b}"))),
        "busy registrations never removed"
    );
}

#[tokio::test]
async fn registration_without_vm_is_removed_only_after_the_grace() {
    let fake = Fake::new();
    let h = Setup::new().build(fake);
    let grace = pool_scheduler::classify::DEREGISTER_GRACE_SECS;
    let old = pool_scheduler::marks::runner_name("gh-runner-", 250, NOW - grace - 1);
    let young = pool_scheduler::marks::runner_name("gh-runner-", 251, NOW - grace / 2);
    let foreign = "laptop-of-alice";
    let old_id = h.fake.add_runner(&old, false, false);
    let young_id = h.fake.add_runner(&young, false, false);
    let foreign_id = h.fake.add_runner(foreign, false, false);

    let report = h.pass().await;
    assert_eq!(report.deregistering, 1);
    let w = h.fake.world();
    assert!(!w.runners.contains_key(&old_id));
    assert!(w.runners.contains_key(&young_id));
    assert!(
        w.runners.contains_key(&foreign_id),
        "not a runner name of ours"
    );
}

#[tokio::test]
async fn disable_cleanup_deletes_nothing() {
    let fake = Fake::new();
    {
        let mut w = fake.world();
        w.vms.insert(205, our_vm("pve1", 205, NOW - 600));
        w.vms.insert(206, our_vm("pve1", 206, NOW - 700).running());
    }
    fake.queue_job(1, JOB_LABELS);
    let h = Setup::new().var("DISABLE_CLEANUP", "true").build(fake);
    h.fake.add_runner(&name_of(&h, 206), false, false);
    h.fake.add_runner(
        &pool_scheduler::marks::runner_name("gh-runner-", 250, NOW - 5000),
        false,
        false,
    );
    // The job is served, runs and ends: its VM powers off.
    assert_eq!(h.pass().await.started, 1);
    let served = name_of(&h, 200);
    h.fake.runner_takes_job(&served, 1);
    h.fake.runner_finishes(&served);
    let runners_before = h.fake.world().runners.clone();

    for step in [0, 1000, 86_400] {
        h.clock.advance(step);
        let report = h.pass().await;
        assert_eq!((report.deleting, report.deregistering), (0, 0));
    }
    let w = h.fake.world();
    for m in ["stop", "shutdown", "delete_vm", "delete_runner"] {
        assert_eq!(w.count(m), 0, "{m} called with DISABLE_CLEANUP");
    }
    assert_eq!(w.vms[&205].status, "stopped");
    assert_eq!(w.vms[&206].status, "running");
    assert_eq!(w.vms[&200].status, "stopped");
    for id in runners_before.keys() {
        assert!(w.runners.contains_key(id));
    }
    assert_eq!(
        w.count("clone_vm"),
        1,
        "cleanup switched off does not stop provisioning"
    );
}

#[tokio::test]
async fn pause_on_stopped_with_cleanup_disabled_holds_new_vms_while_a_stopped_one_exists() {
    let fake = Fake::new();
    fake.world().vms.insert(205, our_vm("pve1", 205, NOW - 600));
    fake.queue_job(1, JOB_LABELS);
    let h = Setup::new()
        .var("DISABLE_CLEANUP", "true")
        .var("PAUSE_ON_STOPPED", "true")
        .build(fake);

    for _ in 0..3 {
        let report = h.pass().await;
        assert_eq!(report.started, 0);
        h.clock.advance(60);
    }
    assert_eq!(h.fake.world().count("clone_vm"), 0);
    assert_eq!(h.fake.world().count("delete_vm"), 0);

    // The operator removes the stopped VM after debugging it: provisioning resumes.
    h.fake.world().vms.remove(&205);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert_eq!(h.fake.world().count("clone_vm"), 1);
}

#[tokio::test]
async fn pause_on_stopped_alone_waits_for_the_stopped_vm_to_be_deleted() {
    let fake = Fake::new();
    fake.world().vms.insert(205, our_vm("pve1", 205, NOW - 600));
    fake.queue_job(1, JOB_LABELS);
    let h = Setup::new().var("PAUSE_ON_STOPPED", "true").build(fake);

    let report = h.pass().await;
    assert_eq!((report.started, report.deleting), (0, 1));
    assert_eq!(h.fake.world().deletes, vec![(205, true, true)]);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 1);
    assert!(
        w.calls
            .iter()
            .any(|c| c.method == "clone_vm" && c.args.contains("newid=200"))
    );
}

#[tokio::test]
async fn idle_surplus_runner_is_deregistered_first_then_deleted_after_the_grace() {
    let fake = Fake::new();
    fake.world()
        .vms
        .insert(207, our_vm("pve1", 207, NOW - 300).running());
    fake.world()
        .vms
        .insert(208, our_vm("pve1", 208, NOW - 300).running());
    let h = Setup::new().build(fake);
    let idle = h.fake.add_runner(&name_of(&h, 207), true, false);
    let busy_later = h.fake.add_runner(&name_of(&h, 208), true, false);

    // Seen idle for the first time: kept warm.
    let report = h.pass().await;
    assert_eq!(report.deleting, 0, "{report:?}");
    h.clock.advance(pool_scheduler::IDLE_SURPLUS_GRACE_SECS - 1);
    assert_eq!(h.pass().await.deleting, 0, "still within the grace");

    // 208's runner takes a job just now (the listing still said idle): GitHub refuses its removal.
    h.clock.advance(2);
    h.fake.world().faults.busy_on_delete.insert(busy_later);
    let report = h.pass().await;
    assert_eq!(
        report.deleting, 2,
        "no demand: both idle runners are surplus"
    );
    assert_eq!(
        method_order(&h, 207),
        ["vm_status", "stop", "vm_status", "delete_vm"],
        "fresh status, stop, marks re-read, destroy"
    );
    let w = h.fake.world();
    let dereg = w
        .calls
        .iter()
        .position(|c| c.method == "delete_runner" && c.args == format!("id={idle}"));
    let stop = w
        .calls
        .iter()
        .position(|c| c.method == "stop" && c.vmid == Some(207));
    assert_eq!(
        w.calls
            .iter()
            .filter(|c| c.method == "delete_runner" && c.args == format!("id={idle}"))
            .count(),
        1,
        "the registration is removed once, before the stop"
    );
    assert!(
        dereg.is_some() && dereg < stop,
        "deregistered first: {dereg:?} < {stop:?}"
    );
    assert!(!w.vms.contains_key(&207));
    assert!(
        w.vms.contains_key(&208),
        "a runner that took a job is never stopped"
    );
    assert_eq!(w.vms[&208].status, "running");
}

#[tokio::test]
async fn another_dispatcher_instances_vms_are_never_touched() {
    let fake = Fake::new();
    {
        let mut w = fake.world();
        // Stopped (done) and tagged with another instance: not ours to delete.
        w.vms.insert(
            205,
            our_vm("pve1", 205, NOW - 600).with_tags(&[
                "ghr-managed",
                "ghr-pool-default",
                "ghr-ready",
                "ghr-inst-someone-else",
            ]),
        );
        // Half-made (not ready, unlocked) by another instance, marked only in its description.
        let name = pool_scheduler::marks::runner_name("gh-runner-", 206, NOW - 5);
        w.vms.insert(
            206,
            FakeVm::new("pve1", Some(&name))
                .with_description(&pool_scheduler::marks::description_marker_of(
                    Some("someone-else"),
                    "default",
                    &name,
                    NOW - 5,
                    "",
                ))
                .running(),
        );
    }
    let h = Setup::new().build(fake);
    assert_ne!(h.rec.cfg.instance(), "someone-else");
    for _ in 0..3 {
        let report = h.pass().await;
        assert_eq!((report.deleting, report.started), (0, 0), "{report:?}");
        h.clock.advance(4000);
    }
    let w = h.fake.world();
    for vmid in [205, 206] {
        assert!(
            w.mutations_of(vmid).is_empty(),
            "{:?}",
            w.mutations_of(vmid)
        );
        assert_eq!(w.count_for("stop", vmid), 0);
    }
}

#[tokio::test]
async fn a_stale_vm_whose_runner_took_a_job_is_kept() {
    let fake = Fake::new();
    // Past max_lifetime (12 h) with an online, idle runner: the plan deletes it …
    fake.world()
        .vms
        .insert(207, our_vm("pve1", 207, NOW - 13 * 3600).running());
    let h = Setup::new().build(fake);
    let reg = h.fake.add_runner(&name_of(&h, 207), true, false);
    // … but the runner takes a job before the deletion reaches it: GitHub refuses to remove it.
    h.fake.world().faults.busy_on_delete.insert(reg);
    let report = h.pass().await;
    assert_eq!(report.deleting, 1, "{report:?}");
    assert_eq!(
        method_order(&h, 207),
        ["vm_status"],
        "registration removal refused: no stop, no destroy"
    );
    let w = h.fake.world();
    assert_eq!(w.vms[&207].status, "running");
    assert!(w.runners.contains_key(&reg));
}

#[tokio::test]
async fn a_vm_without_a_name_in_the_fresh_status_is_not_deleted() {
    let fake = Fake::new();
    let mut vm = our_vm("pve1", 208, NOW - 600);
    // The listing still shows the old name (lag); the VM itself has none.
    vm.name_listed = true;
    fake.world().vms.insert(208, vm);
    let h = Setup::new().build(fake);
    let listed = name_of(&h, 208);
    h.fake.add_runner(&listed, false, false);
    if let Some(v) = h.fake.world().vms.get_mut(&208) {
        v.name = None;
    }
    let report = h.pass().await;
    assert_eq!(report.deleting, 0, "{report:?}");
    assert!(h.fake.world().mutations_of(208).is_empty());
}
