//! The demo: the real reconciler (the `dispatcher-bin` library, as `dispatcher run` uses it) against a
//! simulated two-node Proxmox VE cluster and a simulated GitHub, with a stream of jobs and live progress.
//!
//! ```text
//! cargo run -p examples --bin demo            # RUST_LOG=info shows the dispatcher's own log lines too
//! ```
//!
//! Two pools: `u24` (snippet injection, node pve1) and `u22` (guest-agent injection, node pve2). Jobs
//! arrive over ~8 seconds, some in runs whose later jobs wait for earlier ones, one needs a `gpu` label no
//! pool has (it is reported, never served). Delays are scaled down (clone 0.8 s, boot 1.5 s, jobs 1–3 s).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatcher_bin::config::RuntimeConfig;
use dispatcher_bin::reconciler::{Reconciler, SystemClock, Tuning};
use tests::{GuestPhase, JobSpec, JobStatus, Service, Sim, SimConfig, TemplateSpec};

const REPO: &str = "NREL/EnergyPlus";

fn sim_config() -> SimConfig {
    let mut cfg = SimConfig::default();
    cfg.pve.templates = vec![
        TemplateSpec::linux(9000, "pve1", "ubuntu-2404-runner-template"),
        TemplateSpec::linux(9001, "pve2", "ubuntu-2204-runner-template"),
    ];
    cfg.timing.clone = Duration::from_millis(800);
    cfg.timing.start = Duration::from_millis(300);
    cfg.timing.boot = Duration::from_millis(1500);
    cfg.timing.job = Duration::from_secs(2);
    cfg.timing.status_interval = Duration::from_secs(1);
    cfg
}

const POOLS: &str = r#"{
  "max_total_runners": 6,
  "pools": [
    {"name": "u24", "template": "ubuntu-2404-runner-template", "node": "pve1",
     "labels": ["linux", "x64", "ubuntu-24.04"], "vmid_start": 200, "vmid_end": 249,
     "runner_name_prefix": "u24-", "max_runners": 4, "injection": "snippet"},
    {"name": "u22", "template": "ubuntu-2204-runner-template", "node": "pve2",
     "labels": "linux,x64,ubuntu-22.04", "vmid_start": 300, "vmid_end": 349,
     "runner_name_prefix": "u22-", "max_runners": 3, "injection": "agent"}
  ]
}"#;

#[tokio::main]
async fn main() -> ExitCode {
    match demo().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        dispatcher_bin::logging::init(dispatcher_bin::cli::LogFormat::Text, false);
    }
    let cfg = sim_config();
    let sim = Sim::start(cfg.clone())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pools = dir.path().join("runner-pools.json");
    std::fs::write(&pools, POOLS).map_err(|e| e.to_string())?;

    let vars: HashMap<&str, String> = HashMap::from([
        ("PROXMOX_URL", sim.pve_url().to_owned()),
        ("PROXMOX_NODE", "pve1".to_owned()),
        ("PROXMOX_TOKEN_ID", cfg.pve.token_id.clone()),
        ("PROXMOX_TOKEN_SECRET", cfg.pve.token_secret.clone()),
        ("GITHUB_API_URL", sim.github_url().to_owned()),
        ("GITHUB_TOKEN", cfg.github.token.clone()),
        ("RUNNER_POOLS_CONFIG", pools.display().to_string()),
        (
            "SNIPPETS_DIR",
            sim.snippets_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        ),
        ("POLL_INTERVAL", "2".to_owned()),
    ]);
    let runtime =
        RuntimeConfig::load(&|k| vars.get(k).cloned(), &|_| false).map_err(|e| e.to_string())?;
    let pve =
        proxmox_api::ProxmoxClient::new(runtime.proxmox.clone()).map_err(|e| e.to_string())?;
    let gh =
        github_runners::GitHubClient::new(runtime.github.clone()).map_err(|e| e.to_string())?;
    let rec = Reconciler::new(
        Arc::new(pve),
        Arc::new(gh),
        Arc::new(runtime),
        Arc::new(SystemClock),
        Tuning::default(),
    );
    let shutdown = rec.shutdown_token();
    let loop_rec = Arc::clone(&rec);
    let service = tokio::spawn(async move { loop_rec.run().await });

    println!(
        "simulated cluster: nodes pve1 + pve2, templates ubuntu-2404 (pve1) and ubuntu-2204 (pve2)"
    );
    println!("pools: u24 (snippet injection, cap 4), u22 (agent injection, cap 3), total cap 6\n");

    let began = Instant::now();
    let gh = sim.github();
    let mut unmatched = Vec::new();
    let stream: Vec<(u64, Vec<JobSpec>)> = vec![
        (
            0,
            jobs(
                "build-u24",
                3,
                &["self-hosted", "linux", "ubuntu-24.04"],
                2000,
            ),
        ),
        (
            500,
            jobs(
                "build-u22",
                2,
                &["self-hosted", "Linux", "ubuntu-22.04"],
                1500,
            ),
        ),
        (
            1500,
            vec![
                JobSpec::new("compile", &["self-hosted", "linux", "ubuntu-24.04"])
                    .duration(Duration::from_millis(1500)),
                JobSpec::new("unit-tests", &["self-hosted", "linux", "ubuntu-24.04"])
                    .needs("compile"),
                JobSpec::new("package", &["self-hosted", "linux", "ubuntu-22.04"])
                    .needs("unit-tests"),
            ],
        ),
        (
            3000,
            jobs("cuda", 1, &["self-hosted", "linux", "gpu"], 1000),
        ),
        (
            4000,
            jobs(
                "regression",
                4,
                &["self-hosted", "linux", "x64", "ubuntu-24.04"],
                3000,
            ),
        ),
        (
            6000,
            jobs("docs", 2, &["self-hosted", "ubuntu-22.04"], 1000),
        ),
    ];
    let mut pending = stream.into_iter().peekable();
    let mut last_line = String::new();
    loop {
        while let Some((at, _)) = pending.peek() {
            if began.elapsed() < Duration::from_millis(*at) {
                break;
            }
            let Some((_, specs)) = pending.next() else {
                break;
            };
            let gpu = specs.iter().any(|s| format!("{s:?}").contains("gpu"));
            let run = gh.queue_run(REPO, specs);
            if gpu {
                unmatched.extend(run.job_ids);
            }
        }
        let state = progress(&sim);
        if state != last_line {
            println!("t={:>5.1}s  {state}", began.elapsed().as_secs_f32());
            last_line = state;
        }
        let all_done = pending.peek().is_none()
            && gh
                .jobs()
                .iter()
                .filter(|j| !unmatched.contains(&j.id))
                .all(|j| j.status == JobStatus::Completed);
        let drained = ["u24-", "u22-"]
            .iter()
            .all(|p| sim.pve().vms_with_prefix(p).is_empty());
        if all_done && drained {
            break;
        }
        if began.elapsed() > Duration::from_secs(120) {
            shutdown.cancel();
            return Err("the demo did not finish within 120 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    shutdown.cancel();
    let _ = service.await;
    summary(&sim, began.elapsed(), &unmatched);
    sim.shutdown().await;
    Ok(())
}

fn jobs(name: &str, n: usize, labels: &[&str], ms: u64) -> Vec<JobSpec> {
    (0..n)
        .map(|i| JobSpec::new(&format!("{name}-{i}"), labels).duration(Duration::from_millis(ms)))
        .collect()
}

fn progress(sim: &Sim) -> String {
    let jobs = sim.github().jobs();
    let count = |s: JobStatus| jobs.iter().filter(|j| j.status == s).count();
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    for vm in sim
        .pve()
        .vms()
        .iter()
        .filter(|v| !v.template && v.name.as_deref().is_some_and(|n| n.starts_with("u2")))
    {
        let phase = match (&vm.lock, vm.guest.as_ref().map(|g| &g.phase)) {
            (Some(_), _) => "cloning",
            (None, None) => "created",
            (
                None,
                Some(
                    GuestPhase::Booting
                    | GuestPhase::WaitingForCredential
                    | GuestPhase::Connecting { .. },
                ),
            ) => "booting",
            (None, Some(GuestPhase::Online { .. })) => "online",
            (None, Some(GuestPhase::PoweringOff | GuestPhase::Off)) => "off",
            (None, Some(GuestPhase::CredentialRejected(_))) => "rejected",
        };
        *phases.entry(phase).or_default() += 1;
    }
    let vms: Vec<String> = phases.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!(
        "jobs: pending {:>2} queued {:>2} running {:>2} done {:>2}  |  runner VMs: {}",
        count(JobStatus::Pending),
        count(JobStatus::Queued),
        count(JobStatus::InProgress),
        count(JobStatus::Completed),
        if vms.is_empty() {
            "none".to_owned()
        } else {
            vms.join(", ")
        }
    )
}

fn summary(sim: &Sim, total: Duration, unmatched: &[u64]) {
    let jobs = sim.github().jobs();
    let mut waits: Vec<Duration> = jobs
        .iter()
        .filter_map(|j| Some(j.started? - j.queued.unwrap_or(j.created)))
        .collect();
    waits.sort();
    let pct = |p: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let created = sim
        .pve()
        .created_vms()
        .iter()
        .filter(|v| v.name.as_deref().is_some_and(|n| n.starts_with("u2")))
        .count();
    let done = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Completed)
        .count();
    println!("\nsummary after {:.1} s", total.as_secs_f32());
    println!(
        "  jobs completed          {done} of {} ({} matched no pool and got no VM)",
        jobs.len(),
        unmatched.len()
    );
    println!("  runner VMs created      {created} (all deleted again)");
    println!(
        "  queued -> job started   p50 {:.1} s, p95 {:.1} s, max {:.1} s",
        pct(0.5).as_secs_f32(),
        pct(0.95).as_secs_f32(),
        waits.last().copied().unwrap_or_default().as_secs_f32()
    );
    println!(
        "  API requests            Proxmox {}, GitHub {} ({} counted against the rate limit)",
        sim.total_requests(Service::Pve),
        sim.total_requests(Service::GitHub),
        sim.github().budgeted_requests()
    );
}
