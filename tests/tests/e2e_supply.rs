//! End-to-end: exact supply while `/cluster/resources` lags, agent injection with a v0 pools file, pools
//! held after failures that repeat, and a restart between an agent-mode start and the credential hand-over.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tests::dispatcher::DispatcherProcess;
use tests::scenario::{PREFIX, REPO, SERIAL, Scenario, linux};
use tests::{CredentialKind, GuestPhase, PveHandle, SimConfig, VmEventKind};

/// VMs created by the dispatcher whose name starts with `prefix` (from the simulator's event log; the
/// name is the one given in the clone request).
fn created(pve: &PveHandle, prefix: &str) -> usize {
    let ids: BTreeSet<u32> = pve
        .events()
        .into_iter()
        .filter(|e| e.kind == VmEventKind::Created)
        .filter(|e| e.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
        .map(|e| e.vmid)
        .collect();
    pve.events()
        .into_iter()
        .filter(|e| e.kind == VmEventKind::Created && ids.contains(&e.vmid))
        .count()
}

/// Names, status and uptime in the listing lag by `lag` (tags and lock are current), as pvestatd's
/// broadcast does on a real cluster.
fn lagging(lag: Duration) -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.timing.status_interval = lag;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_a_lagging_listing_keep_caps_and_create_one_vm_per_job() {
    let _serial = SERIAL.lock().await;
    // The listing shows a new VM with no name and `status: unknown` for up to 10 s: longer than a job here.
    let mut sc = Scenario::start(lagging(Duration::from_secs(10))).await;
    sc.pools_file(
        r#"{"max_total_runners": 6, "pools": [
            {"name": "a", "node": "pve1", "template": "ubuntu-2404-runner-template", "labels": ["linux", "a"],
             "vmid_start": 200, "vmid_end": 299, "runner_name_prefix": "a-", "max_runners": 3},
            {"name": "b", "node": "pve2", "template": "ubuntu-2404-runner-template", "labels": ["linux", "b"],
             "vmid_start": 300, "vmid_end": 399, "runner_name_prefix": "b-", "max_runners": 3,
             "injection": "agent"}
        ]}"#,
    );
    sc.launch();
    let gh = sc.sim.github();
    gh.queue_run(REPO, linux(3, &["self-hosted", "linux", "a"]));
    gh.queue_run(REPO, linux(3, &["self-hosted", "linux", "b"]));
    let pve = sc.sim.pve();
    sc.finish_with(&["a-", "b-"], &[], &[("a-", 3), ("b-", 3)], &[])
        .await;
    let total = pve.max_concurrent_by(|n| n.starts_with("a-") || n.starts_with("b-"), false);
    assert!(total <= 6, "total cap 6 exceeded: {total}");
    assert_eq!(
        (created(&pve, "a-"), created(&pve, "b-")),
        (3, 3),
        "6 jobs in two pools create exactly 6 VMs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_30_under_a_lagging_listing_creates_exactly_30_vms() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(lagging(Duration::from_secs(3))).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.set("MAX_TOTAL_RUNNERS", "10");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(30, &["self-hosted", "linux", "x64"]));
    let pve = sc.sim.pve();
    sc.finish(&[], &[(PREFIX, 10)], &[]).await;
    assert_eq!(created(&pve, PREFIX), 30, "one VM per job, no surplus");
}

fn v0_template() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../images/ubuntu-2404/cloud-init/runner-user-data.pkrtpl")
        .display()
        .to_string()
}

async fn run_to_end(
    env: &[(String, String)],
    args: &'static [&'static str],
) -> (Option<i32>, String) {
    let env = env.to_vec();
    let (status, out) = tokio::task::spawn_blocking(move || {
        DispatcherProcess::run_to_end(args, &env, Duration::from_secs(30))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    (status.code(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_injection_with_a_v0_pools_file_hands_over_jit_configs() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    // A v0 pools file: its pool names the seed's user-data template (with `${registration_token}`).
    let pools = format!(
        r#"{{"pools": [{{"name": "linux", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64"],
            "vmid_start": 200, "vmid_end": 220, "user_data_template": "{}"}}]}}"#,
        v0_template()
    );
    sc.pools_file(&pools);
    sc.set("RUNNER_INJECTION", "agent");

    let (code, out) = run_to_end(&sc.env, &["check"]).await;
    assert!(
        out.contains("user_data_template") && out.contains("not used with agent injection"),
        "check names the unused template (exit {code:?}):\n{out}"
    );
    sc.outputs.push(out);
    // `check` proves the credential can mint a registration token; the service must mint none.
    let tokens_by_check = sc
        .sim
        .github()
        .credentials()
        .iter()
        .filter(|c| c.kind == CredentialKind::RegistrationToken)
        .count();

    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(4, &["self-hosted", "linux", "x64"]));
    let gh = sc.sim.github();
    sc.finish(&[], &[], &[]).await;
    let kinds: Vec<CredentialKind> = gh.credentials().iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == CredentialKind::JitConfig)
            .count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == CredentialKind::RegistrationToken)
            .count(),
        tokens_by_check,
        "no registration token minted by the service in agent mode: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_without_any_credential_placeholder_is_refused_at_start_up() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    let template = sc.dir.path().join("no-credential.yaml");
    std::fs::write(&template, "#cloud-config\nhostname: ${runner_name}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    sc.pools_file(&format!(
        r#"{{"pools": [{{"name": "linux", "template": "ubuntu-2404-runner-template", "labels": ["linux"],
            "vmid_start": 200, "vmid_end": 220, "user_data_template": "{}"}}]}}"#,
        template.display()
    ));
    for args in [&["run"][..], &["check"][..]] {
        let args: &'static [&'static str] = if args == ["run"] {
            &["run"]
        } else {
            &["check"]
        };
        let (code, out) = run_to_end(&sc.env, args).await;
        assert_eq!(code, Some(2), "{args:?}:\n{out}");
        let line = out
            .lines()
            .find(|l| l.contains("user_data_template"))
            .unwrap_or_else(|| panic!("no line names the key:\n{out}"));
        assert!(
            line.contains("\"linux\"") && line.contains("never get a runner credential"),
            "{line}"
        );
    }
    assert!(sc.sim.pve().created_vms().is_empty());
    sc.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_that_repeat_hold_their_pool_while_another_pool_serves() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    // A template whose placeholder follows a backslash in a double-quoted string cannot be rendered safely.
    let broken = sc.dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "#cloud-config\nwrite_files:\n  - path: /var/lib/actions-runner-jit/jitconfig\n    content: ${jit_config}\nruncmd:\n  - [\"echo\", \"\\${repo_url}\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    sc.pools_file(&format!(
        r#"{{"pools": [
            {{"name": "ok", "template": "ubuntu-2404-runner-template", "labels": ["linux", "ok"],
              "vmid_start": 200, "vmid_end": 219}},
            {{"name": "broken", "template": "ubuntu-2404-runner-template", "labels": ["linux", "broken"],
              "vmid_start": 300, "vmid_end": 319, "runner_name_prefix": "broken-", "user_data_template": "{}"}},
            {{"name": "missing", "template": "no-such-template", "labels": ["linux", "missing"],
              "vmid_start": 400, "vmid_end": 419, "runner_name_prefix": "missing-"}}
        ]}}"#,
        broken.display()
    ));
    sc.launch();
    let gh = sc.sim.github();
    let held_jobs: Vec<u64> = [
        gh.queue_run(REPO, linux(2, &["self-hosted", "linux", "broken"])),
        gh.queue_run(REPO, linux(2, &["self-hosted", "linux", "missing"])),
    ]
    .iter()
    .flat_map(|r| r.job_ids.clone())
    .collect();
    gh.queue_run(REPO, linux(3, &["self-hosted", "linux", "ok"]));
    // Let the held pools be retried by several passes (POLL_INTERVAL=1) while the other pool serves.
    sc.wait("the healthy pool's jobs", Duration::from_secs(60), |s| {
        s.github()
            .jobs()
            .iter()
            .filter(|j| !held_jobs.contains(&j.id))
            .all(|j| j.status == tests::JobStatus::Completed)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (code, status) = run_to_end(&sc.env, &["status"]).await;
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.contains("HELD (render_error)") && status.contains("HELD (template_missing)"),
        "status shows why the pools are held:\n{status}"
    );
    sc.outputs.push(status);
    let pve = sc.sim.pve();
    let out = sc
        .finish_with(&[PREFIX, "broken-", "missing-"], &held_jobs, &[], &[])
        .await;
    assert!(
        created(&pve, "broken-") <= 1 && created(&pve, "missing-") == 0,
        "a held pool clones at most one VM"
    );
    for pool in ["broken", "missing"] {
        let lines = out
            .lines()
            .filter(|l| l.contains("pool held") && l.contains(&format!("pool={pool}")))
            .count();
        assert_eq!(lines, 1, "one error line for pool {pool}:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_start_and_agent_write_replaces_the_vm_at_once() {
    let _serial = SERIAL.lock().await;
    let mut cfg = SimConfig::default();
    cfg.timing.boot = Duration::from_secs(3);
    let mut sc = Scenario::start(cfg).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.set("RUNNER_INJECTION", "agent");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(2, &["self-hosted", "linux"]));
    // Kill while the guests boot: started, agent not answering yet, no credential handed over.
    sc.wait("VMs started and booting", Duration::from_secs(30), |s| {
        s.pve()
            .vms_with_prefix(PREFIX)
            .iter()
            .filter(|v| {
                v.running
                    && v.guest
                        .as_ref()
                        .is_some_and(|g| matches!(g.phase, GuestPhase::Booting))
            })
            .count()
            == 2
    })
    .await;
    let cut: BTreeSet<u32> = sc
        .sim
        .pve()
        .vms_with_prefix(PREFIX)
        .iter()
        .map(|v| v.vmid)
        .collect();
    sc.kill();
    let restarted = Instant::now();
    sc.launch();
    // POLL_INTERVAL=1: the restarted dispatcher's first pass replaces them (no 60 s grace).
    let c = cut.clone();
    sc.wait(
        "the cut VMs to be deleted",
        Duration::from_secs(10),
        move |s| c.iter().all(|id| s.pve().vm(*id).is_none()),
    )
    .await;
    let replaced_after = restarted.elapsed();
    assert!(
        replaced_after < Duration::from_secs(8),
        "replaced after {replaced_after:?}"
    );
    sc.caps_on_running_only = true;
    sc.finish(&[], &[(PREFIX, 4)], &[]).await;
}
