//! Registers a just-in-time runner and prints its id and name — never the config itself, which is a
//! credential. With `--delete` the registration is removed again right away (a dry run of the credential
//! path that leaves nothing behind).
//!
//! ```text
//! GITHUB_TOKEN=... REPO_OWNER=me REPO_NAME=repo \
//!   cargo run -p examples --bin mint-jit -- ghr-test-1 self-hosted,linux,x64 --delete
//! ```
//! Runner group: `RUNNER_GROUP_ID` (default 1, the Default group).

use github_runners::{Error, GitHubClient, GitHubConfig, GitHubRunners, JitRequest};
use secrecy::ExposeSecret;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("mint-jit: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Error> {
    let mut delete = false;
    let mut positional = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--delete" {
            delete = true;
        } else {
            positional.push(arg);
        }
    }
    let name = positional
        .first()
        .cloned()
        .unwrap_or_else(|| format!("ghr-example-{}", std::process::id()));
    let labels: Vec<String> = positional
        .get(1)
        .map(String::as_str)
        .unwrap_or("self-hosted,linux,x64")
        .split(',')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let group = match std::env::var("RUNNER_GROUP_ID") {
        Ok(raw) => raw.trim().parse::<u64>().map_err(|_| Error::InvalidInput {
            field: "RUNNER_GROUP_ID",
            value: raw.clone(),
            reason: "not a positive integer".to_owned(),
        })?,
        Err(_) => 1,
    };

    let config = GitHubConfig::from_lookup(|k| std::env::var(k).ok())?;
    let runner_url = config.runner_url();
    let github = GitHubClient::new(config)?;
    let mut request = JitRequest::new(name, labels);
    request.runner_group_id = group;
    let jit = github.generate_jit_config(&request).await?;
    println!(
        "registered runner id {} name {:?} for {runner_url}",
        jit.runner.id, jit.runner.name
    );
    println!(
        "labels: {}",
        jit.runner
            .labels
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "JIT config: {} bytes (not printed; start the runner with run.sh --jitconfig)",
        jit.encoded_jit_config.expose_secret().len()
    );
    if delete {
        github.delete_runner(jit.runner.id).await?;
        println!("deleted runner {}", jit.runner.id);
    }
    Ok(())
}
