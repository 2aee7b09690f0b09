//! Typed request and response values.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A job waiting for a runner (status `queued`), as found by [`crate::GitHubRunners::queued_jobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Job id.
    pub id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// Job name.
    pub name: String,
    /// Workflow name (GitHub may omit it).
    pub workflow_name: Option<String>,
    /// `runs-on` labels, as written in the workflow (strings, case preserved).
    pub labels: Vec<String>,
    /// When the job was created (falls back to `started_at` when GitHub omits `created_at`).
    pub created_at: OffsetDateTime,
    /// Repository full name `owner/name` the job belongs to.
    pub repository: String,
    /// Job status (always `queued` from `queued_jobs`).
    pub status: String,
}

/// A workflow job as returned by `GET …/actions/jobs/{job_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// Run attempt (absent in older payloads).
    #[serde(default)]
    pub run_attempt: Option<u32>,
    /// Job name.
    pub name: String,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested`, `pending`.
    pub status: String,
    /// `success`, `failure`, … or null while running.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// `runs-on` labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Assigned runner id (null while queued).
    #[serde(default)]
    pub runner_id: Option<u64>,
    /// Assigned runner name (null while queued).
    #[serde(default)]
    pub runner_name: Option<String>,
    /// Runner group id (null while queued).
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    /// Workflow name.
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// Branch.
    #[serde(default)]
    pub head_branch: Option<String>,
    /// Creation time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// Start time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Completion time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    /// Web URL of the job.
    #[serde(default)]
    pub html_url: Option<String>,
}

/// A label attached to a runner (runner labels are objects, job labels are strings).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RunnerLabel {
    /// Label id (absent for labels GitHub has not persisted yet).
    #[serde(default)]
    pub id: Option<u64>,
    /// Label name.
    pub name: String,
    /// `read-only` or `custom`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// A self-hosted runner registration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Runner {
    /// Runner id.
    pub id: u64,
    /// Runner name.
    pub name: String,
    /// Operating system (`linux`, `windows`, `macos`, `unknown`).
    pub os: String,
    /// `online` or `offline`.
    pub status: String,
    /// Whether it is running a job.
    pub busy: bool,
    /// Whether it is ephemeral (JIT runners are).
    #[serde(default)]
    pub ephemeral: Option<bool>,
    /// Runner group id.
    #[serde(default)]
    pub runner_group_id: Option<u64>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<RunnerLabel>,
}

impl Runner {
    /// `status == "online"`.
    pub fn is_online(&self) -> bool {
        self.status.eq_ignore_ascii_case("online")
    }
}

/// A runner registration token (valid one hour, can register many runners: a secret).
#[derive(Clone)]
pub struct RegistrationToken {
    /// The token.
    pub token: SecretString,
    /// Expiry.
    pub expires_at: OffsetDateTime,
}

impl fmt::Debug for RegistrationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationToken")
            .field("token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Arguments of `generate-jitconfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JitRequest {
    /// Runner name, unique within the scope (409 otherwise).
    pub name: String,
    /// Runner labels (1–100).
    pub labels: Vec<String>,
    /// Runner group (`1` = Default).
    pub runner_group_id: u64,
    /// Work folder relative to the runner directory (GitHub's default `_work`).
    pub work_folder: String,
}

impl JitRequest {
    /// A request in the Default group (`1`) with work folder `_work`.
    pub fn new(name: impl Into<String>, labels: Vec<String>) -> Self {
        Self {
            name: name.into(),
            labels,
            runner_group_id: 1,
            work_folder: "_work".to_owned(),
        }
    }
}

/// The answer of `generate-jitconfig`: the runner registration and its one-time config.
#[derive(Clone)]
pub struct JitConfig {
    /// The new (offline) runner.
    pub runner: Runner,
    /// The encoded config for `run.sh --jitconfig`: a credential.
    pub encoded_jit_config: SecretString,
}

impl fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitConfig")
            .field("runner", &self.runner)
            .field("encoded_jit_config", &"[REDACTED]")
            .finish()
    }
}

/// The rate-limit state of one resource, from `x-ratelimit-*` headers or `GET /rate_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RateLimitSnapshot {
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the window.
    pub remaining: u64,
    /// Requests used in the window.
    #[serde(default)]
    pub used: u64,
    /// Window reset, unix seconds.
    pub reset: u64,
    /// Resource name (`core`, `actions_runner_registration`, …).
    #[serde(default)]
    pub resource: String,
}

/// The answer of `GET /rate_limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// The `core` limit (the `rate` member).
    pub core: RateLimitSnapshot,
    /// Every resource by name (`core`, `search`, `actions_runner_registration`, …).
    pub resources: Vec<RateLimitSnapshot>,
}

impl RateLimitStatus {
    /// The snapshot of one resource by name.
    pub fn resource(&self, name: &str) -> Option<&RateLimitSnapshot> {
        self.resources.iter().find(|r| r.resource == name)
    }
}
