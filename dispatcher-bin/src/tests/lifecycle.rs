//! Several jobs at once, caps, a missing template, and shutdown: in-flight provisions roll back and
//! nothing new starts.

use std::collections::BTreeSet;
use std::time::Duration;

use super::fake::Fake;
use super::harness::{JOB_LABELS, Setup};

#[tokio::test]
async fn several_jobs_get_distinct_vmids_and_names_within_the_total_cap() {
    let fake = Fake::new();
    for job in 1..=5 {
        fake.queue_job(job, JOB_LABELS);
    }
    let h = Setup::new().var("MAX_TOTAL_RUNNERS", "3").build(fake);
    let report = h.pass().await;
    assert_eq!(report.started, 3, "{report:?}");
    assert_eq!(h.rec.failed_tasks(), 0);
    {
        let w = h.fake.world();
        let vms: Vec<u32> = w
            .vms
            .iter()
            .filter(|(_, v)| !v.template)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(vms, [200, 201, 202]);
        let names: BTreeSet<&str> = w
            .vms
            .values()
            .filter(|v| !v.template)
            .filter_map(|v| v.name.as_deref())
            .collect();
        assert_eq!(names.len(), 3);
        let registered: BTreeSet<&str> = w.runners.values().map(|r| r.name.as_str()).collect();
        assert_eq!(registered, names, "one registration per VM, same names");
    }

    // The cap holds on later passes while the three boot.
    h.clock.advance(15);
    assert_eq!(h.pass().await.started, 0);
    assert_eq!(h.fake.world().count("clone_vm"), 3);
}

#[tokio::test]
async fn missing_template_holds_the_start_and_mints_nothing() {
    let fake = Fake::new();
    {
        let mut w = fake.world();
        w.vms.remove(&9000);
        w.vms.remove(&9001);
    }
    fake.queue_job(1, JOB_LABELS);
    let h = Setup::new().build(fake);
    for _ in 0..2 {
        let report = h.pass().await;
        assert_eq!((report.started, report.held), (0, 1), "{report:?}");
    }
    let w = h.fake.world();
    assert_eq!(w.count("clone_vm") + w.count("generate_jit_config"), 0);
}

#[tokio::test]
async fn shutdown_rolls_back_a_provision_waiting_for_its_agent_and_starts_nothing_new() {
    let fake = Fake::new();
    fake.world().faults.agent_after_pings = None;
    fake.queue_job(1, JOB_LABELS);
    // Default boot timeout (10 min): only the shutdown can end the wait.
    let h = Setup::new().var("RUNNER_INJECTION", "agent").build(fake);
    let report = h
        .rec
        .pass()
        .await
        .unwrap_or_else(|e| panic!("pass failed: {e}"));
    assert_eq!(report.started, 1);
    // Let the provision reach the agent wait.
    for _ in 0..200 {
        if h.fake.world().count("agent_ping") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h.fake.world().count("agent_ping") >= 2);
    h.rec.shutdown_token().cancel();
    tokio::time::timeout(Duration::from_secs(3), h.rec.wait_idle())
        .await
        .unwrap_or_else(|_| panic!("the provision did not end after the shutdown"));

    {
        let w = h.fake.world();
        assert_eq!(w.deletes, vec![(200, true, true)], "rolled back");
        assert!(!w.vms.contains_key(&200));
        assert!(w.runners.is_empty(), "registration removed");
        assert_eq!(w.count("agent_file_write"), 0);
    }
    assert!(h.snippet_files().is_empty());

    // After the shutdown began, a pass starts nothing although the job is still queued.
    let report = h
        .rec
        .pass()
        .await
        .unwrap_or_else(|e| panic!("pass failed: {e}"));
    h.rec.wait_idle().await;
    assert_eq!(report.started, 0);
    assert_eq!(h.fake.world().count("clone_vm"), 1);
}
