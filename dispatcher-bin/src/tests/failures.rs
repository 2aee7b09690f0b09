//! Failed provisions leave nothing behind (no VM, no snippet, no runner registration); a VMID found taken
//! moves to the next id; lock timeouts are retried within the same provision.

use std::time::{Duration, Instant};

use super::fake::{Fake, FakeVm, api_error};
use super::harness::{Harness, JOB_LABELS, Setup};

const CLONE: &str = "/nodes/{node}/qemu/{vmid}/clone";
const START: &str = "/nodes/{node}/qemu/{vmid}/status/start";
const LOCK_TIMEOUT: &str = "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout";

/// Nothing of a provision remains: no runner VM, no registration, no snippet.
fn assert_nothing_left(h: &Harness) {
    let w = h.fake.world();
    let vms: Vec<u32> = w.vms.keys().copied().filter(|id| *id < 9000).collect();
    assert!(vms.is_empty(), "VMs left: {vms:?}");
    assert!(
        w.runners.is_empty(),
        "registrations left: {:?}",
        w.runners.values().map(|r| &r.name).collect::<Vec<_>>()
    );
    assert_eq!(
        w.jit_issued.len(),
        w.count("delete_runner"),
        "every minted registration removed"
    );
    drop(w);
    assert!(
        h.snippet_files().is_empty(),
        "snippets left: {:?}",
        h.snippet_files()
    );
}

/// A failure that repeats on every attempt holds the pool: the next pass starts nothing, and the reason
/// is reported.
async fn assert_held(h: &Harness, reason: &str) {
    let report = h.pass().await;
    assert_eq!((report.started, report.held), (0, 1), "{report:?}");
    let held = h.rec.held_pools();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].reason, reason);
}

/// After the pool's (test-short) back-off or hold the job is served by a new attempt.
async fn retry_succeeds(h: &Harness) {
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = h.pass().await;
    assert_eq!(report.started, 1, "{report:?}");
    let w = h.fake.world();
    let ours: Vec<&FakeVm> = w.vms.values().filter(|v| !v.template).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].status, "running");
    assert_eq!(w.runners.len(), 1);
}

#[tokio::test]
async fn clone_refused_leaves_nothing() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world().faults.clone_errors.push_back(api_error(
        "POST",
        CLONE,
        403,
        "Permission check failed (/vms/9000, VM.Clone)",
    ));
    let h = Setup::new().build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1, "a 403 is not retried");
        assert_eq!(w.count("start"), 0);
        assert_eq!(w.count("generate_jit_config"), 1);
    }
    assert_nothing_left(&h);
    assert_held(&h, "proxmox_permission").await;
    retry_succeeds(&h).await;
}

#[tokio::test]
async fn clone_task_failure_leaves_nothing() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world()
        .faults
        .clone_task_failures
        .push_back("clone failed: storage 'local-lvm' is not online".to_owned());
    let h = Setup::new().build(fake);
    h.pass().await;
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1);
        assert_eq!(w.count("update_config") + w.count("start"), 0);
    }
    assert_nothing_left(&h);
    retry_succeeds(&h).await;
}

#[tokio::test]
async fn start_task_failure_rolls_back_vm_snippet_and_registration() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world()
        .faults
        .start_task_failures
        .push_back("start failed: QEMU exited with code 1".to_owned());
    let h = Setup::new().build(fake);
    h.pass().await;
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1);
        assert_eq!(w.count("start"), 1);
        assert!(
            w.starts[0].snippet.is_some(),
            "the snippet existed at the start"
        );
        assert_eq!(
            w.deletes,
            vec![(200, true, true)],
            "half-made VM destroyed with purge"
        );
    }
    assert_nothing_left(&h);
    retry_succeeds(&h).await;
}

#[tokio::test]
async fn start_refused_rolls_back_vm_snippet_and_registration() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world().faults.start_errors.push_back(api_error(
        "POST",
        START,
        403,
        "Permission check failed (/vms/200, VM.PowerMgmt)",
    ));
    let h = Setup::new().build(fake);
    h.pass().await;
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert_eq!(w.count("start"), 1, "a 403 is not retried");
        assert_eq!(w.deletes, vec![(200, true, true)]);
    }
    assert_nothing_left(&h);
    assert_held(&h, "proxmox_permission").await;
    retry_succeeds(&h).await;
}

#[tokio::test]
async fn agent_that_never_answers_is_rolled_back_after_the_boot_timeout() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world().faults.agent_after_pings = None;
    let h = Setup::new()
        .pools(
            r#"{"pools": [{"name": "default", "template": "ubuntu-2404-runner-template",
                "labels": ["linux", "x64"], "injection": "agent", "boot_timeout": 1}]}"#,
        )
        .build(fake);
    let began = Instant::now();
    h.pass().await;
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert!(
            w.count("agent_ping") >= 5,
            "pinged {} times",
            w.count("agent_ping")
        );
        assert_eq!(w.count("agent_file_write"), 0);
        assert_eq!(w.count_for("stop", 200), 1, "running VM stopped first");
        assert_eq!(w.deletes, vec![(200, true, true)]);
    }
    assert_nothing_left(&h);
}

#[tokio::test]
async fn vmid_taken_at_clone_call_moves_to_the_next_id() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    // Someone created VM 200 on pve1 a moment ago: the cluster listing does not show it yet.
    let mut other = FakeVm::new("pve1", Some("someone-else")).running();
    other.hidden = true;
    fake.world().vms.insert(200, other.clone());
    let h = Setup::new().build(fake);

    h.pass().await;
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1);
        assert!(
            w.mutations_of(200).iter().all(|c| c.method == "clone_vm"),
            "{:?}",
            w.mutations_of(200)
        );
        assert_eq!(w.vms.get(&200), Some(&other), "the other VM is untouched");
        assert!(
            w.runners.is_empty(),
            "registration of the failed attempt removed"
        );
    }
    assert!(h.snippet_files().is_empty());
    assert_eq!(h.rec.failed_tasks(), 0, "a taken id is not a failure");

    let report = h.pass().await;
    assert_eq!(report.started, 1);
    let w = h.fake.world();
    let clones: Vec<&str> = w
        .calls
        .iter()
        .filter(|c| c.method == "clone_vm")
        .map(|c| c.args.as_str())
        .collect();
    assert_eq!(clones.len(), 2);
    assert!(clones[1].contains("newid=201"), "{}", clones[1]);
    assert_eq!(w.vms[&201].status, "running");
    assert_eq!(w.vms.get(&200), Some(&other));
    assert_eq!(w.runners.len(), 1);
}

#[tokio::test]
async fn vmid_taken_inside_the_clone_task_moves_to_the_next_id() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    // A container on another node holds 200 and is not listed yet: the early check passes, the task fails.
    fake.world()
        .containers
        .insert(200, ("pve2".to_owned(), true));
    let h = Setup::new().build(fake);

    h.pass().await;
    assert_eq!(h.rec.failed_tasks(), 0);
    {
        let w = h.fake.world();
        assert_eq!(w.count("clone_vm"), 1);
        assert_eq!(w.count("delete_vm"), 0, "nothing of ours to delete");
        assert!(w.containers.contains_key(&200));
        assert!(w.runners.is_empty());
    }
    h.pass().await;
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 2);
    assert_eq!(w.vms[&201].status, "running");
    assert!(!w.vms.contains_key(&200));
}

#[tokio::test]
async fn lock_timeout_answer_to_the_clone_call_is_retried_in_the_same_provision() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world()
        .faults
        .clone_errors
        .push_back(api_error("POST", CLONE, 500, LOCK_TIMEOUT));
    let h = Setup::new().build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert_eq!(h.rec.failed_tasks(), 0);
    let w = h.fake.world();
    let clones: Vec<&str> = w
        .calls
        .iter()
        .filter(|c| c.method == "clone_vm")
        .map(|c| c.args.as_str())
        .collect();
    assert_eq!(clones.len(), 2);
    assert!(clones.iter().all(|c| c.contains("newid=200")), "{clones:?}");
    assert_eq!(w.count("generate_jit_config"), 1);
    assert_eq!(w.count("start"), 1);
    assert_eq!(w.vms[&200].status, "running");
}

#[tokio::test]
async fn lock_timeout_in_the_clone_task_is_retried_in_the_same_provision() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world()
        .faults
        .clone_task_failures
        .push_back(LOCK_TIMEOUT.to_owned());
    let h = Setup::new().build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert_eq!(h.rec.failed_tasks(), 0);
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 2);
    assert_eq!(w.count("generate_jit_config"), 1);
    assert_eq!(w.count("start"), 1);
    assert_eq!(w.vms[&200].status, "running");
    assert_eq!(w.runners.len(), 1);
}

#[tokio::test]
async fn refused_configuration_removes_the_clone_the_snippet_and_the_registration() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world()
        .faults
        .update_config_errors
        .push_back(api_error(
            "PUT",
            "/nodes/{node}/qemu/{vmid}/config",
            400,
            "Parameter verification failed.",
        ));
    let h = Setup::new().build(fake);
    h.pass().await;
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert_eq!(w.count("start"), 0);
        assert_eq!(w.count("stop"), 0, "never started, nothing to stop");
        assert_eq!(w.deletes, vec![(200, true, true)]);
    }
    assert_nothing_left(&h);
    assert_held(&h, "proxmox_parameter").await;
    retry_succeeds(&h).await;
}

#[tokio::test]
async fn refused_agent_file_write_rolls_back_the_running_vm() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world().faults.agent_write_errors.push_back(api_error(
        "POST",
        "/nodes/{node}/qemu/{vmid}/agent/file-write",
        403,
        "Permission check failed (/vms/200, VM.GuestAgent.FileWrite)",
    ));
    let h = Setup::new().var("RUNNER_INJECTION", "agent").build(fake);
    h.pass().await;
    assert_eq!(h.rec.failed_tasks(), 1);
    {
        let w = h.fake.world();
        assert_eq!(w.count("agent_file_write"), 1, "a 403 is not retried");
        assert_eq!(w.count_for("stop", 200), 1);
        assert_eq!(w.deletes, vec![(200, true, true)]);
    }
    assert_nothing_left(&h);
    assert_held(&h, "proxmox_permission").await;
    retry_succeeds(&h).await;
}

#[tokio::test]
async fn lost_clone_answer_is_recognised_as_our_own_clone() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world().faults.clone_lost_answers = 1;
    let h = Setup::new().build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert_eq!(h.rec.failed_tasks(), 0, "the clone happened: no rollback");
    let w = h.fake.world();
    // First call performed but answered 596, its retry "already exists" on our own marker.
    assert_eq!(w.count("clone_vm"), 2);
    assert_eq!(
        w.count("vm_config"),
        1,
        "the marker was read to recognise the clone"
    );
    assert_eq!(w.count("generate_jit_config"), 1);
    assert_eq!(w.count("delete_vm"), 0);
    assert_eq!(w.vms[&200].status, "running");
    assert_eq!(w.runners.len(), 1);
}

#[tokio::test]
async fn a_panic_in_a_provision_clears_its_record_and_the_vm_is_cleaned_up() {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    fake.world().faults.panic_on_start = true;
    let h = Setup::new().build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 1);
    assert!(
        h.rec.in_flight().is_empty(),
        "the record is not left behind"
    );
    assert_eq!(h.rec.failed_tasks(), 1);
    // The clone it left is half-made: the next pass deletes it and serves the job with a new VM.
    let report = h.pass().await;
    assert_eq!((report.deleting, report.started), (1, 1), "{report:?}");
    h.pass().await;
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm"), 2);
    assert_eq!(w.deletes.len(), 1);
    drop(w);
    assert_eq!(h.snippet_files().len(), 0, "{:?}", h.snippet_files());
}
