//! The headline benchmark: a burst of 30 jobs against the simulator with realistic delays (clone 2 s,
//! start 1 s, boot 8 s, job 5 s, pvestatd every 10 s), served by the real `dispatcher` binary as a process.
//!
//! ```text
//! cargo run --release -p examples --bin bench [-- --idle-seconds 60 --jobs 30 --poll-interval 15]
//! ```
//!
//! The 30 jobs are queued, then the dispatcher starts (so its first pass sees them all: the figures are
//! the provisioning pipeline, not the phase of the poll timer — a webhook gives the same start). Printed:
//! queued → job started (p50/p95/max), time until every job started, Proxmox and GitHub requests per job,
//! GitHub requests counted against the rate limit per idle minute, and the dispatcher's peak RSS.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tests::dispatcher::{DispatcherProcess, sim_env};
use tests::{JobSpec, JobStatus, Service, Sim, SimConfig};

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

async fn run() -> Result<(), String> {
    let args = args()?;
    // Build (or find) the binary first: the clock below must not include a compile.
    tests::dispatcher::dispatcher_binary()?;
    let cfg = SimConfig::realistic();
    let sim = Sim::start(cfg.clone())
        .await
        .map_err(|e| format!("simulator: {e}"))?;
    let mut env = sim_env(&sim, &cfg);
    env.retain(|(k, _)| k != "POLL_INTERVAL");
    env.push(("POLL_INTERVAL".to_owned(), args.poll_interval.to_string()));
    env.push(("RUNNER_LABELS".to_owned(), "linux,x64".to_owned()));
    env.push(("RUNNER_ID_END".to_owned(), "399".to_owned()));

    let specs: Vec<JobSpec> = (0..args.jobs)
        .map(|i| JobSpec::new(&format!("job-{i}"), &["self-hosted", "linux", "x64"]))
        .collect();
    sim.github().queue_run("NREL/EnergyPlus", specs);
    let pve_before = sim.total_requests(Service::Pve);
    let gh_before = sim.total_requests(Service::GitHub);
    let budget_before = sim.github().budgeted_requests();

    let mut proc = DispatcherProcess::spawn(&["run"], &env)?;
    let began = Instant::now();
    wait(&sim, &mut proc, Duration::from_secs(300), |s| {
        s.github().jobs().iter().all(|j| j.started.is_some())
    })
    .await?;
    let all_started_after = began.elapsed();
    wait(&sim, &mut proc, Duration::from_secs(300), |s| {
        s.github().all_jobs_completed() && s.pve().vms_with_prefix("gh-runner-").is_empty()
    })
    .await?;
    let drained_after = began.elapsed();
    let pve_requests = sim.total_requests(Service::Pve) - pve_before;
    let gh_requests = sim.total_requests(Service::GitHub) - gh_before;
    let gh_budgeted = sim.github().budgeted_requests() - budget_before;

    // Idle: nothing queued, nothing running. What does a quiet repository cost?
    let idle_budget_before = sim.github().budgeted_requests();
    let idle_gh_before = sim.total_requests(Service::GitHub);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_budgeted = sim.github().budgeted_requests() - idle_budget_before;
    let idle_total = sim.total_requests(Service::GitHub) - idle_gh_before;
    let rss = proc.peak_rss_kib();
    if let Some(status) = proc.exited() {
        return Err(format!("the dispatcher exited on its own ({status})"));
    }
    proc.terminate(Duration::from_secs(30));

    let jobs = sim.github().jobs();
    let mut waits: Vec<f64> = jobs
        .iter()
        .filter_map(|j| Some((j.started? - j.queued.unwrap_or(j.created)).as_secs_f64()))
        .collect();
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        waits
            .get(((waits.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let n = args.jobs as f64;
    let per_minute = |x: u64| x as f64 * 60.0 / args.idle_seconds.max(1) as f64;

    println!("| metric | value |");
    println!("|---|---|");
    println!("| jobs in the burst | {} |", args.jobs);
    println!("| queued → job started, p50 | {:.1} s |", pct(0.5));
    println!("| queued → job started, p95 | {:.1} s |", pct(0.95));
    println!(
        "| queued → job started, max | {:.1} s |",
        waits.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| time until all {} jobs started | {:.1} s |",
        args.jobs,
        all_started_after.as_secs_f64()
    );
    println!(
        "| time until all done and every VM deleted | {:.1} s |",
        drained_after.as_secs_f64()
    );
    println!(
        "| Proxmox requests per job | {:.1} |",
        pve_requests as f64 / n
    );
    println!(
        "| GitHub requests per job (all / counted against the rate limit) | {:.1} / {:.1} |",
        gh_requests as f64 / n,
        gh_budgeted as f64 / n
    );
    println!(
        "| GitHub requests per idle minute (all / counted against the rate limit), POLL_INTERVAL={} | {:.1} / {:.1} |",
        args.poll_interval,
        per_minute(idle_total),
        per_minute(idle_budgeted)
    );
    println!(
        "| dispatcher peak RSS | {} |",
        rss.map_or_else(
            || "n/a".to_owned(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0)
        )
    );
    Ok(())
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
