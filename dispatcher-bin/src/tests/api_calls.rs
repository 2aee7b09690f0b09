//! What one job costs in API calls, from queued to its VM deleted: three passes (the job is queued → the
//! runner is busy → the VM powered off), every task finishing at its first poll and the guest agent
//! answering its first ping. Counted at the trait boundary (one trait call = one HTTP request for every
//! PVE method; `queued_jobs` and `list_runners` are one call each here but page through GitHub, see
//! github-runners' README for their request counts).

use std::collections::BTreeMap;

use super::fake::{Api, Fake};
use super::harness::{JOB_LABELS, Setup};

type Histogram = BTreeMap<&'static str, usize>;

fn hist(pairs: &[(&'static str, usize)]) -> Histogram {
    pairs.iter().copied().collect()
}

/// Calls per pass: (PVE, GitHub) histograms of the calls logged since `from`.
fn since(fake: &Fake, from: usize) -> (Histogram, Histogram) {
    let w = fake.world();
    let mut pve = Histogram::new();
    let mut gh = Histogram::new();
    for c in &w.calls[from..] {
        let h = if c.api == Api::Pve { &mut pve } else { &mut gh };
        *h.entry(c.method).or_default() += 1;
    }
    (pve, gh)
}

fn total(h: &Histogram) -> usize {
    h.values().sum()
}

async fn one_job(agent: bool) -> [(Histogram, Histogram); 3] {
    let fake = Fake::new();
    fake.queue_job(1, JOB_LABELS);
    let setup = if agent {
        Setup::new().var("RUNNER_INJECTION", "agent")
    } else {
        Setup::new()
    };
    let h = setup.build(fake);

    let mark = h.fake.world().calls.len();
    assert_eq!(h.pass().await.started, 1);
    let provision = since(&h.fake, mark);
    let name = h.runner_name(200);

    h.fake.runner_takes_job(&name, 1);
    h.clock.advance(15);
    let mark = h.fake.world().calls.len();
    let report = h.pass().await;
    assert_eq!((report.started, report.deleting), (0, 0));
    let busy = since(&h.fake, mark);

    h.fake.runner_finishes(&name);
    h.clock.advance(15);
    let mark = h.fake.world().calls.len();
    assert_eq!(h.pass().await.deleting, 1);
    let delete = since(&h.fake, mark);
    assert!(h.fake.runner_vmids().is_empty());
    assert_eq!(h.rec.failed_tasks(), 0);

    let mode = if agent { "agent" } else { "snippet" };
    for (phase, (pve, gh)) in [
        ("queued → provisioned", &provision),
        ("runner busy", &busy),
        ("VM stopped → deleted", &delete),
    ] {
        eprintln!(
            "[{mode}] {phase}: PVE {} {pve:?} | GitHub {} {gh:?}",
            total(pve),
            total(gh)
        );
    }
    let pve_total = total(&provision.0) + total(&busy.0) + total(&delete.0);
    let gh_total = total(&provision.1) + total(&busy.1) + total(&delete.1);
    eprintln!(
        "[{mode}] one job, queued to deleted over 3 passes: PVE {pve_total}, GitHub {gh_total}"
    );
    [provision, busy, delete]
}

/// Every pass starts with the same observation: cluster listing + nodes, runners + queued jobs.
/// A pass that only observes: the cluster listing (the node list is reused for 10 s) and GitHub.
fn observe_only() -> (Histogram, Histogram) {
    (
        hist(&[("cluster_guests", 1)]),
        hist(&[("list_runners", 1), ("queued_jobs", 1)]),
    )
}

#[tokio::test]
async fn api_calls_for_one_job_in_snippet_mode() {
    let [provision, busy, delete] = one_job(false).await;
    assert_eq!(
        provision.0,
        hist(&[
            ("cluster_guests", 1),
            ("nodes", 1),
            ("clone_vm", 1),
            ("update_config", 1),
            ("start", 1),
            ("task_status", 2),
        ])
    );
    assert_eq!(
        provision.1,
        hist(&[
            ("list_runners", 1),
            ("queued_jobs", 1),
            ("generate_jit_config", 1)
        ])
    );
    assert_eq!(busy, observe_only());
    assert_eq!(
        delete.0,
        hist(&[
            ("cluster_guests", 1),
            ("vm_status", 2),
            ("delete_vm", 1),
            ("task_status", 1),
        ])
    );
    assert_eq!(delete.1, observe_only().1);
    let pve: usize = [&provision.0, &busy.0, &delete.0]
        .into_iter()
        .map(total)
        .sum();
    let gh: usize = [&provision.1, &busy.1, &delete.1]
        .into_iter()
        .map(total)
        .sum();
    assert_eq!((pve, gh), (13, 7));
}

#[tokio::test]
async fn api_calls_for_one_job_in_agent_mode() {
    let [provision, busy, delete] = one_job(true).await;
    assert_eq!(
        provision.0,
        hist(&[
            ("cluster_guests", 1),
            ("nodes", 1),
            ("clone_vm", 1),
            ("update_config", 2),
            ("start", 1),
            ("task_status", 2),
            ("agent_ping", 1),
            ("agent_file_write", 1),
        ])
    );
    assert_eq!(
        provision.1,
        hist(&[
            ("list_runners", 1),
            ("queued_jobs", 1),
            ("generate_jit_config", 1)
        ])
    );
    assert_eq!(busy, observe_only());
    assert_eq!(
        delete.0,
        hist(&[
            ("cluster_guests", 1),
            ("vm_status", 2),
            ("delete_vm", 1),
            ("task_status", 1),
        ])
    );
    assert_eq!(delete.1, observe_only().1);
    let pve: usize = [&provision.0, &busy.0, &delete.0]
        .into_iter()
        .map(total)
        .sum();
    let gh: usize = [&provision.1, &busy.1, &delete.1]
        .into_iter()
        .map(total)
        .sum();
    assert_eq!((pve, gh), (16, 7));
}
