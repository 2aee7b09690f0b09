//! End-to-end scenarios: the real `dispatcher` binary, as a process, against the simulated Proxmox VE
//! cluster and GitHub. Every scenario checks the same invariants at the end (see [`Scenario::finish`]):
//! every matchable job completed, unmatched jobs got no VM, caps held (sampled continuously by the
//! simulator), no runner VM or registration left after the drain, foreign VMs and templates untouched, no
//! secret in the dispatcher's output, and the process still running until we stopped it.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::dispatcher::DispatcherProcess;
use tests::scenario::{PREFIX, REPO, SERIAL, Scenario, linux};
use tests::{AppSpec, JobSpec, SimConfig, TemplateSpec, VmSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_snippet_mode() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(1, &["self-hosted", "linux"]));
    let out = sc.finish(&[], &[(PREFIX, 1)], &[]).await;
    assert!(
        out.contains("VM cloned") && out.contains("runner VM ready"),
        "{out}"
    );
}

fn u24_u22_config() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.pve.templates = vec![
        TemplateSpec::linux(9000, "pve1", "ubuntu-2404-runner-template"),
        TemplateSpec::linux(9001, "pve1", "ubuntu-2204-runner-template"),
    ];
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_with_caps_and_unmatched_jobs() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(u24_u22_config()).await;
    sc.pools_file(
        r#"{"max_total_runners": 4, "pools": [
            {"name": "u24", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64", "ubuntu-24.04"],
             "vmid_start": 200, "vmid_end": 219, "runner_name_prefix": "u24-", "max_runners": 3},
            {"name": "u22", "template": "ubuntu-2204-runner-template", "labels": "linux,x64,ubuntu-22.04",
             "vmid_start": 300, "vmid_end": 319, "runner_name_prefix": "u22-", "max_runners": 2}
        ]}"#,
    );
    sc.launch();
    let gh = sc.sim.github();
    gh.queue_run(REPO, linux(6, &["self-hosted", "Linux", "ubuntu-24.04"]));
    gh.queue_run(
        REPO,
        linux(4, &["self-hosted", "linux", "X64", "ubuntu-22.04"]),
    );
    let gpu = gh.queue_run(REPO, linux(2, &["self-hosted", "linux", "gpu"]));
    let hosted = gh.queue_run(REPO, linux(1, &["ubuntu-latest"]));
    let mut unmatched = gpu.job_ids.clone();
    unmatched.extend(hosted.job_ids.iter().copied());
    let sim_pve = sc.sim.pve();
    let out = sc
        .finish_with(
            &["u24-", "u22-"],
            &unmatched,
            &[("u24-", 3), ("u22-", 2)],
            &[],
        )
        .await;
    let total =
        sim_pve.max_concurrent_by(|n| n.starts_with("u24-") || n.starts_with("u22-"), false);
    assert!(total <= 4, "total cap 4 exceeded: {total}");
    assert!(
        out.contains("lacks [gpu]"),
        "the unmatched job's reason names the missing label:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_30_jobs() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.set("MAX_TOTAL_RUNNERS", "10");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(30, &["self-hosted", "linux", "x64"]));
    sc.finish(&[], &[(PREFIX, 10)], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_inside_in_progress_runs() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.launch();
    let labels = ["self-hosted", "linux"];
    sc.sim.github().queue_run(
        REPO,
        vec![
            JobSpec::new("build", &labels),
            JobSpec::new("lint", &labels),
            JobSpec::new("test", &labels).needs("build"),
            JobSpec::new("package", &labels).needs("test"),
        ],
    );
    sc.finish(&[], &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_proxmox_and_github() {
    let _serial = SERIAL.lock().await;
    let mut cfg = SimConfig {
        seed: 7,
        ..SimConfig::default()
    };
    cfg.faults.pve_write_error_rate = 0.1;
    cfg.faults.pve_lost_response_rate = 0.03;
    cfg.faults.clone_lock_failure_rate = 0.15;
    cfg.faults.github_502_rate = 0.05;
    let mut sc = Scenario::start(cfg).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.set("MAX_TOTAL_RUNNERS", "4");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(8, &["self-hosted", "linux"]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    sc.sim
        .github()
        .set_secondary_rate_limit(Duration::from_secs(2));
    sc.sim
        .github()
        .queue_run(REPO, linux(4, &["self-hosted", "linux"]));
    sc.finish(&[], &[(PREFIX, 4)], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_mid_flight() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.set("MAX_TOTAL_RUNNERS", "6");
    sc.sim
        .github()
        .queue_run(REPO, linux(12, &["self-hosted", "linux"]));
    for pause_ms in [150_u64, 420, 260, 900] {
        sc.launch();
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        sc.kill();
    }
    sc.launch();
    // Killed processes leave never-started clones behind (deleted as half-made): cap the running VMs.
    sc.caps_on_running_only = true;
    sc.finish(&[], &[(PREFIX, 6)], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_foreign_vms_and_agent_injection() {
    let _serial = SERIAL.lock().await;
    let cfg = SimConfig::default();
    let mut sc = Scenario::start(cfg).await;
    let pve = sc.sim.pve();
    // Inside the pool's range: a foreign VM on the other node, a VM with our prefix but no mark, a container.
    pve.add_vm(VmSpec {
        running: true,
        ..VmSpec::new(200, "pve2", "someone-elses-vm")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    pve.add_vm(VmSpec {
        running: false,
        ..VmSpec::new(202, "pve1", "gh-runner-202-handmade")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    sc.foreign_names.push("gh-runner-202-handmade".to_owned());
    pve.add_container(201, "pve2", "ct-in-range", true)
        .unwrap_or_else(|e| panic!("{e}"));
    sc.pools_file(
        r#"{"pools": [{"name": "linux", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64"],
            "nodes": ["pve1", "pve2"], "vmid_start": 200, "vmid_end": 220, "injection": "agent", "max_runners": 6}]}"#,
    );
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(8, &["self-hosted", "linux", "x64"]));
    let sim_pve = sc.sim.pve();
    sc.finish(&[], &[(PREFIX, 6)], &[200, 202]).await;
    let ours: Vec<_> = sim_pve
        .created_vms()
        .into_iter()
        .filter(|v| {
            v.description
                .as_deref()
                .is_some_and(|d| d.starts_with("ghr-managed:"))
        })
        .collect();
    assert_eq!(ours.len(), 8, "one VM per job");
    let nodes: BTreeSet<String> = ours.iter().map(|v| v.node.clone()).collect();
    assert!(nodes.len() == 2, "VMs spread over both nodes: {nodes:?}");
    assert!(
        ours.iter().all(|v| ![200, 201, 202].contains(&v.vmid)),
        "ids held by others were not used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_template_with_registration_token() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../images/ubuntu-2404/cloud-init/runner-user-data.pkrtpl");
    sc.set("USER_DATA_TEMPLATE", &template.display().to_string());
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(3, &["self-hosted", "linux"]));
    sc.finish(&[], &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_subcommands() {
    let _serial = SERIAL.lock().await;
    let mut sc = Scenario::start(SimConfig::default()).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.sim
        .github()
        .queue_run(REPO, linux(2, &["self-hosted", "linux"]));
    let gpu = sc
        .sim
        .github()
        .queue_run(REPO, linux(1, &["self-hosted", "linux", "gpu"]));
    let env = sc.env.clone();
    let run = move |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                DispatcherProcess::run_to_end(args, &env, Duration::from_secs(30))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };

    let (status, out) = run(&["plan"]).await;
    assert!(status.success(), "plan: {out}");
    assert_eq!(
        out.matches("start   pool=default").count(),
        2,
        "two starts planned:\n{out}"
    );
    assert!(
        out.contains("unmatched job=") && out.contains("lacks [gpu]"),
        "{out}"
    );
    assert!(
        sc.sim.pve().created_vms().is_empty(),
        "plan changed nothing"
    );

    let (status, out) = run(&["check"]).await;
    assert!(status.success(), "check: {out}");
    assert!(
        out.contains("proxmox reachable")
            && out.contains("template")
            && out.contains("github: can mint"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");

    let (status, out) = run(&["render"]).await;
    assert!(status.success(), "render: {out}");
    assert!(
        out.contains("#cloud-config") && out.contains("<redacted"),
        "{out}"
    );

    let (status, out) = run(&["once"]).await;
    assert!(status.success(), "once: {out}");
    assert_eq!(
        sc.sim.pve().created_vms().len(),
        2,
        "once provisioned the two jobs"
    );

    let (status, out) = run(&["status"]).await;
    assert!(status.success(), "status: {out}");
    assert!(
        out.contains("pool default") && out.contains("gh-runner-"),
        "{out}"
    );
    sc.outputs.push(out);

    // A broken configuration: every problem on its own line, exit code 2, no secret.
    let mut broken = sc.env.clone();
    broken.retain(|(k, _)| k != "PROXMOX_NODE");
    broken.push(("POLL_INTERVAL".to_owned(), "soon".to_owned()));
    let (status, out) = tokio::task::spawn_blocking(move || {
        DispatcherProcess::run_to_end(&["run"], &broken, Duration::from_secs(30))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains("PROXMOX_NODE") && out.contains("POLL_INTERVAL"),
        "{out}"
    );
    sc.outputs.push(out);

    sc.launch();
    sc.finish(&gpu.job_ids, &[], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_app_authentication() {
    let _serial = SERIAL.lock().await;
    let mut cfg = SimConfig::default();
    cfg.github.app = Some(AppSpec::test_app());
    let mut sc = Scenario::start(cfg).await;
    let key = sc.dir.path().join("app-key.pem");
    std::fs::write(&key, tests::TEST_APP_PRIVATE_KEY_PEM).unwrap_or_else(|e| panic!("{e}"));
    sc.env.retain(|(k, _)| k != "GITHUB_TOKEN");
    sc.set("GITHUB_APP_ID", "123456");
    sc.set("GITHUB_APP_INSTALLATION_ID", "7890");
    sc.set("GITHUB_APP_PRIVATE_KEY_FILE", &key.display().to_string());
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(2, &["self-hosted", "linux"]));
    let gh = sc.sim.github();
    sc.finish(&[], &[], &[]).await;
    let tokens = gh.request_count("POST", "/app/installations/{installation_id}/access_tokens");
    assert!(
        tokens >= 1,
        "the installation token was minted through the App"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_pool_with_agent_injection() {
    let _serial = SERIAL.lock().await;
    let mut cfg = SimConfig::default();
    cfg.pve.templates = vec![
        TemplateSpec::linux(9000, "pve1", "ubuntu-2404-runner-template"),
        TemplateSpec::windows(9100, "pve1", "windows-2022-runner-template"),
    ];
    let mut sc = Scenario::start(cfg).await;
    sc.pools_file(
        r#"{"pools": [
            {"name": "linux", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64"],
             "vmid_start": 200, "vmid_end": 219},
            {"name": "windows", "template": "windows-2022-runner-template", "labels": ["windows", "x64"],
             "os": "windows", "injection": "agent", "vmid_start": 400, "vmid_end": 419, "runner_name_prefix": "win-"}
        ]}"#,
    );
    sc.launch();
    sc.sim
        .github()
        .queue_run(REPO, linux(2, &["self-hosted", "Windows", "X64"]));
    sc.sim
        .github()
        .queue_run(REPO, linux(1, &["self-hosted", "linux"]));
    let pve = sc.sim.pve();
    sc.finish_with(&[PREFIX, "win-"], &[], &[], &[]).await;
    let windows: Vec<_> = pve
        .created_vms()
        .into_iter()
        .filter(|v| v.name.as_deref().is_some_and(|n| n.starts_with("win-")))
        .collect();
    assert_eq!(windows.len(), 2, "one Windows VM per Windows job");
}
