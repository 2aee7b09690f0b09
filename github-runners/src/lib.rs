//! `github-runners`: a typed client for the parts of the GitHub REST API that run ephemeral self-hosted
//! Actions runners — queued jobs (including queued jobs inside `in_progress` runs), runner registrations,
//! registration tokens and just-in-time (JIT) runner configs — plus GitHub App authentication and
//! `workflow_job` webhook payloads with their signature check.
//!
//! - [`GitHubConfig`] (`from_lookup` reads the dispatcher's environment contract) → [`GitHubClient`].
//! - [`GitHubRunners`] is the object-safe trait the dispatcher uses (`MockGitHubRunners` with the `mock`
//!   feature).
//! - Every `GET` is conditional (`If-None-Match` with a per-URL ETag cache): an unchanged poll is answered
//!   304 and costs nothing of the primary rate limit; [`GitHubClient::stats`] counts both kinds.
//! - Rate limits are surfaced as [`Error::RateLimited`] with the time to resume; the client never sleeps on
//!   them (only short jittered retries of 5xx answers), and refuses to send before that time.
//! - Credentials are [`secrecy::SecretString`]s and never appear in `Debug`, errors or logs.
//!
//! ```no_run
//! use github_runners::{GitHubClient, GitHubConfig, GitHubRunners, JitRequest};
//!
//! # async fn demo() -> Result<(), github_runners::Error> {
//! let config = GitHubConfig::from_lookup(|k| std::env::var(k).ok())?;
//! let github = GitHubClient::new(config)?;
//! for job in github.queued_jobs().await? {
//!     println!("{} {} {:?}", job.repository, job.id, job.labels);
//! }
//! let jit = github
//!     .generate_jit_config(&JitRequest::new("runner-201", vec!["self-hosted".into(), "linux".into()]))
//!     .await?;
//! println!("registered runner {} ({})", jit.runner.id, jit.runner.name);
//! println!("{:?}", github.stats());
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod api;
#[cfg(test)]
mod arbitrary_json;
mod auth;
mod client;
mod config;
mod error;
mod types;
pub mod webhooks;

#[cfg(any(test, feature = "mock"))]
pub use api::MockGitHubRunners;
pub use api::{GitHubRunners, PER_PAGE, RUN_STATUSES};
pub use auth::{INSTALLATION_TOKEN_REFRESH_MARGIN_SECS, JWT_BACKDATE_SECS, JWT_LIFETIME_SECS};
pub use client::{
    ACCEPT, API_VERSION, ClientStats, ETAG_CACHE_CAPACITY, GitHubClient, MAX_PAGES,
    MAX_RATE_LIMIT_PAUSE, Method, RequestEvent, RequestObserver, RetryPolicy,
    SECONDARY_LIMIT_MAX_BACKOFF, SECONDARY_LIMIT_MIN_BACKOFF,
};
pub use config::{
    Auth, DEFAULT_API_URL, DEFAULT_REPO_NAME, DEFAULT_REPO_OWNER, GitHubConfig, Scope,
    default_api_url, default_user_agent,
};
pub use error::{Error, Result};
pub use types::{
    JitConfig, JitRequest, Job, QueuedJob, RateLimitSnapshot, RateLimitStatus, RegistrationToken,
    Runner, RunnerLabel,
};
