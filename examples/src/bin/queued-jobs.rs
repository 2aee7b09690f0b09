//! Lists the queued jobs of a repository (or of the repositories named in the arguments, for an organisation),
//! including queued jobs inside runs that are already in progress, then the rate-limit cost of the poll.
//!
//! Configured like the dispatcher: `GITHUB_TOKEN` (or the `GITHUB_APP_*` trio), `REPO_OWNER`/`REPO_NAME` or
//! `GITHUB_ORG`, optionally `GITHUB_API_URL`.
//!
//! ```text
//! GITHUB_TOKEN=... REPO_OWNER=NREL REPO_NAME=EnergyPlus cargo run -p examples --bin queued-jobs
//! GITHUB_TOKEN=... GITHUB_ORG=acme cargo run -p examples --bin queued-jobs -- web api
//! ```

use github_runners::{GitHubClient, GitHubConfig, GitHubRunners};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("queued-jobs: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), github_runners::Error> {
    let config = GitHubConfig::from_lookup(|k| std::env::var(k).ok())?;
    println!("scope: {}", config.scope);
    let repositories: Vec<String> = std::env::args().skip(1).collect();
    let github = GitHubClient::new(config)?.with_repositories(repositories);
    let jobs = github.queued_jobs().await?;
    if jobs.is_empty() {
        println!("no queued jobs");
    }
    for job in &jobs {
        println!(
            "{:>12}  run {:>12}  {}  {} / {}  [{}]  queued since {}",
            job.id,
            job.run_id,
            job.repository,
            job.workflow_name.as_deref().unwrap_or("-"),
            job.name,
            job.labels.join(", "),
            job.created_at,
        );
    }
    let stats = github.stats();
    println!(
        "{} requests ({} counted against the rate limit, {} answered 304)",
        stats.requests, stats.budgeted_requests, stats.conditional_hits
    );
    if let Some(rl) = github.rate_limit_snapshot() {
        println!(
            "rate limit {}: {}/{} left, resets at unix {}",
            rl.resource, rl.remaining, rl.limit, rl.reset
        );
    }
    Ok(())
}
