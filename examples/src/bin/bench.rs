//! The headline benchmark: the real `dispatcher` binary, as a process, against the simulator with realistic
//! delays (clone 2 s, start 1 s, boot 8 s, job 5 s, `/cluster/resources` names and status refreshed every
//! 10 s). Two scenarios:
//!
//! * **burst** — 30 jobs queued at once for the default single-node pool (snippet injection);
//! * **two-node** — 12 jobs for two pools of 3 VMs each (`max_runners: 3`), one pool per node (snippet
//!   injection on the first, guest-agent injection on the second: the snippet storage is node-local).
//!
//! ```text
//! cargo run --release -p examples --bin bench [-- --idle-seconds 60 --jobs 30 --poll-interval 15]
//! ```
//!
//! The jobs are queued, then the dispatcher starts (so its first pass sees them all: the figures are the
//! provisioning pipeline, not the phase of the poll timer — a webhook gives the same start). Printed per
//! scenario: queued → job started (p50/p95/max), time until every job started and until every VM is gone,
//! VMs created per job, Proxmox and GitHub requests per job (GitHub: all / counted against the rate limit),
//! and the requests by endpoint; after the burst, GitHub requests per idle minute and the peak RSS.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tests::dispatcher::{DispatcherProcess, sim_env};
use tests::{JobSpec, JobStatus, Service, Sim, SimConfig, VmEventKind};

struct Args {
    jobs: usize,
    idle_seconds: u64,
    poll_interval: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        jobs: 30,
        idle_seconds: 60,
        poll_interval: 15,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag} {value:?}: expected a number"))?;
        match flag.as_str() {
            "--jobs" => a.jobs = usize::try_from(n).map_err(|e| e.to_string())?,
            "--idle-seconds" => a.idle_seconds = n,
            "--poll-interval" => a.poll_interval = n,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one scenario measured.
struct Figures {
    jobs: usize,
    waits: Vec<f64>,
    all_started: Duration,
    drained: Duration,
    vms_created: usize,
    pve: u64,
    gh: u64,
    gh_budgeted: u64,
    by_endpoint: BTreeMap<(Service, String, String), u64>,
    idle: Option<(u64, u64)>,
    rss_kib: Option<u64>,
}

impl Figures {
    fn pct(&self, p: f64) -> f64 {
        self.waits
            .get(((self.waits.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn per_job(&self, x: u64) -> f64 {
        x as f64 / self.jobs.max(1) as f64
    }
}

async fn run() -> Result<(), String> {
    let args = args()?;
    // Build (or find) the binary first: the clock below must not include a compile.
    tests::dispatcher::dispatcher_binary()?;

    let burst = scenario(&args, Scenario::Burst).await?;
    let two_node = scenario(&args, Scenario::TwoNode).await?;

    println!(
        "| metric | burst ({} jobs, 1 node) | two-node (12 jobs, caps 3 + 3) |",
        burst.jobs
    );
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Figures) -> String| {
        println!("| {name} | {} | {} |", f(&burst), f(&two_node));
    };
    row("queued → job started, p50", &|f| {
        format!("{:.1} s", f.pct(0.5))
    });
    row("queued → job started, p95", &|f| {
        format!("{:.1} s", f.pct(0.95))
    });
    row("queued → job started, max", &|f| {
        format!("{:.1} s", f.waits.last().copied().unwrap_or(f64::NAN))
    });
    row("time until every job started", &|f| {
        format!("{:.1} s", f.all_started.as_secs_f64())
    });
    row("time until all done and every VM deleted", &|f| {
        format!("{:.1} s", f.drained.as_secs_f64())
    });
    row("VMs created per job", &|f| {
        format!("{:.2}", f.per_job(f.vms_created as u64))
    });
    row("Proxmox requests per job", &|f| {
        format!("{:.1}", f.per_job(f.pve))
    });
    row(
        "GitHub requests per job (all / counted against the rate limit)",
        &|f| format!("{:.1} / {:.1}", f.per_job(f.gh), f.per_job(f.gh_budgeted)),
    );
    if let Some((total, budgeted)) = burst.idle {
        let per_minute = |x: u64| x as f64 * 60.0 / args.idle_seconds.max(1) as f64;
        println!(
            "| GitHub requests per idle minute (all / counted against the rate limit), POLL_INTERVAL={} | {:.1} / {:.1} | |",
            args.poll_interval,
            per_minute(total),
            per_minute(budgeted)
        );
    }
    println!(
        "| dispatcher peak RSS | {} | |",
        burst.rss_kib.map_or_else(
            || "n/a".to_owned(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0)
        )
    );

    for (title, f) in [("burst", &burst), ("two-node", &two_node)] {
        println!();
        println!("Requests per job by endpoint, {title}:");
        println!();
        println!("| service | request | per job |");
        println!("|---|---|---|");
        let mut rows: Vec<_> = f.by_endpoint.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for ((service, method, endpoint), n) in rows {
            println!(
                "| {} | {method} {endpoint} | {:.2} |",
                match service {
                    Service::Pve => "Proxmox",
                    Service::GitHub => "GitHub",
                },
                f.per_job(*n)
            );
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Burst,
    TwoNode,
}

async fn scenario(args: &Args, which: Scenario) -> Result<Figures, String> {
    let cfg = SimConfig::realistic();
    let sim = Sim::start(cfg.clone())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let mut env = sim_env(&sim, &cfg);
    env.retain(|(k, _)| k != "POLL_INTERVAL");
    env.push(("POLL_INTERVAL".to_owned(), args.poll_interval.to_string()));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (jobs, prefixes): (usize, &[&str]) = match which {
        Scenario::Burst => {
            env.push(("RUNNER_LABELS".to_owned(), "linux,x64".to_owned()));
            env.push(("RUNNER_ID_END".to_owned(), "399".to_owned()));
            let specs: Vec<JobSpec> = (0..args.jobs)
                .map(|i| JobSpec::new(&format!("job-{i}"), &["self-hosted", "linux", "x64"]))
                .collect();
            sim.github().queue_run("NREL/EnergyPlus", specs);
            (args.jobs, &["gh-runner-"])
        }
        Scenario::TwoNode => {
            let path = dir.path().join("runner-pools.json");
            std::fs::write(
                &path,
                r#"{"pools": [
  {"name": "a", "node": "pve1", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64", "a"],
   "vmid_start": 200, "vmid_end": 299, "runner_name_prefix": "a-", "max_runners": 3},
  {"name": "b", "node": "pve2", "template": "ubuntu-2404-runner-template", "labels": ["linux", "x64", "b"],
   "vmid_start": 300, "vmid_end": 399, "runner_name_prefix": "b-", "max_runners": 3, "injection": "agent"}
]}"#,
            )
            .map_err(|e| e.to_string())?;
            env.push(("RUNNER_POOLS_CONFIG".to_owned(), path.display().to_string()));
            for pool in ["a", "b"] {
                let specs: Vec<JobSpec> = (0..6)
                    .map(|i| JobSpec::new(&format!("{pool}-{i}"), &["self-hosted", "linux", pool]))
                    .collect();
                sim.github().queue_run("NREL/EnergyPlus", specs);
            }
            (12, &["a-", "b-"])
        }
    };
    let before = sim.requests();
    let budget_before = sim.github().budgeted_requests();

    let mut proc = DispatcherProcess::spawn(&["run"], &env)?;
    let began = Instant::now();
    wait(&sim, &mut proc, Duration::from_secs(300), |s| {
        s.github().jobs().iter().all(|j| j.started.is_some())
    })
    .await?;
    let all_started = began.elapsed();
    wait(&sim, &mut proc, Duration::from_secs(300), |s| {
        s.github().all_jobs_completed()
            && prefixes
                .iter()
                .all(|p| s.pve().vms_with_prefix(p).is_empty())
    })
    .await?;
    let drained = began.elapsed();
    let after = sim.requests();
    let gh_budgeted = sim.github().budgeted_requests() - budget_before;
    let mut by_endpoint: BTreeMap<(Service, String, String), u64> = BTreeMap::new();
    for (k, n) in &after {
        let n = n - before.get(k).copied().unwrap_or(0);
        if n > 0 {
            *by_endpoint
                .entry((k.service, k.method.clone(), k.endpoint.clone()))
                .or_default() += n;
        }
    }
    let total = |s: Service| -> u64 {
        by_endpoint
            .iter()
            .filter(|((svc, _, _), _)| *svc == s)
            .map(|(_, n)| n)
            .sum()
    };
    let vms_created = sim
        .pve()
        .events()
        .iter()
        .filter(|e| e.kind == VmEventKind::Created)
        .filter(|e| {
            e.name
                .as_deref()
                .is_some_and(|n| prefixes.iter().any(|p| n.starts_with(p)))
        })
        .count();

    // Idle (burst only): nothing queued, nothing running. What does a quiet repository cost?
    let idle = if which == Scenario::Burst {
        let budget_before = sim.github().budgeted_requests();
        let gh_before = sim.total_requests(Service::GitHub);
        tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
        Some((
            sim.total_requests(Service::GitHub) - gh_before,
            sim.github().budgeted_requests() - budget_before,
        ))
    } else {
        None
    };
    let rss_kib = proc.peak_rss_kib();
    if let Some(status) = proc.exited() {
        return Err(format!("the dispatcher exited on its own ({status})"));
    }
    proc.terminate(Duration::from_secs(30));

    let mut waits: Vec<f64> = sim
        .github()
        .jobs()
        .iter()
        .filter_map(|j| Some((j.started? - j.queued.unwrap_or(j.created)).as_secs_f64()))
        .collect();
    waits.sort_by(f64::total_cmp);
    let figures = Figures {
        jobs,
        waits,
        all_started,
        drained,
        vms_created,
        pve: total(Service::Pve),
        gh: total(Service::GitHub),
        gh_budgeted,
        by_endpoint,
        idle,
        rss_kib,
    };
    sim.shutdown().await;
    Ok(figures)
}

async fn wait(
    sim: &Sim,
    proc: &mut DispatcherProcess,
    timeout: Duration,
    cond: impl Fn(&Sim) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond(sim) {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            return Err(format!(
                "the dispatcher exited ({status}):\n{}",
                proc.output()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = sim.github().jobs_with_status(JobStatus::Queued).len();
    Err(format!(
        "timed out ({queued} jobs still queued):\n{}",
        proc.output()
    ))
}
