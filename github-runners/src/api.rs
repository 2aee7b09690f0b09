//! The typed operations: trait [`GitHubRunners`] and its implementation on [`GitHubClient`].

use std::collections::HashSet;

use async_trait::async_trait;
use futures::StreamExt;
use secrecy::SecretString;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::client::{Credential, GitHubClient, Method};
use crate::config::Scope;
use crate::error::{Error, Result};
use crate::types::{
    JitConfig, JitRequest, Job, QueuedJob, RateLimitSnapshot, RateLimitStatus, RegistrationToken,
    Runner,
};

/// Run statuses whose jobs may still be queued: a run stays `in_progress` while some of its jobs wait.
pub const RUN_STATUSES: [&str; 2] = ["queued", "in_progress"];
/// Page size used for every list.
pub const PER_PAGE: &str = "100";

/// What the dispatcher needs from GitHub. Object-safe; a `MockGitHubRunners` exists under the `mock` feature.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait GitHubRunners: Send + Sync {
    /// Every job with status `queued` in runs with status `queued` or `in_progress` (both lists and every job
    /// list paginated, `filter=latest`), deduplicated by job id, oldest first.
    ///
    /// Organisation scope polls the repositories given to [`GitHubClient::with_repositories`] (GitHub has no
    /// org-wide runs endpoint) and fails with [`Error::Unsupported`] when there are none.
    async fn queued_jobs(&self) -> Result<Vec<QueuedJob>>;

    /// One job of the scope's repository (organisation scope: needs exactly one configured repository; use
    /// [`GitHubRunners::job_in`] otherwise).
    async fn job(&self, id: u64) -> Result<Job>;

    /// One job of the repository `owner/name` (or `name` inside the organisation).
    async fn job_in(&self, repository: &str, id: u64) -> Result<Job>;

    /// A registration token for `config.sh` (seed flow). A secret, valid one hour.
    async fn registration_token(&self) -> Result<RegistrationToken>;

    /// Registers a just-in-time runner; 409 (name taken) is [`Error::JitNameConflict`].
    async fn generate_jit_config(&self, request: &JitRequest) -> Result<JitConfig>;

    /// Every self-hosted runner of the scope (paginated).
    async fn list_runners(&self) -> Result<Vec<Runner>>;

    /// One runner.
    async fn runner(&self, id: u64) -> Result<Runner>;

    /// Removes a runner registration; a busy runner's 422 is [`Error::RunnerBusy`].
    async fn delete_runner(&self, id: u64) -> Result<()>;

    /// `GET /rate_limit` (does not count against the limit).
    async fn rate_limit(&self) -> Result<RateLimitStatus>;
}

#[derive(Deserialize)]
struct RunsPage {
    #[serde(default)]
    workflow_runs: Vec<RunItem>,
}

#[derive(Deserialize)]
struct RunItem {
    id: u64,
}

#[derive(Deserialize)]
struct JobsPage {
    #[serde(default)]
    jobs: Vec<Job>,
}

#[derive(Deserialize)]
struct RunnersPage {
    #[serde(default)]
    runners: Vec<Runner>,
}

#[derive(Deserialize)]
struct TokenBody {
    token: SecretString,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

#[derive(Deserialize)]
struct JitBody {
    runner: Runner,
    encoded_jit_config: SecretString,
}

#[derive(Deserialize)]
struct RateLimitBody {
    rate: RateLimitSnapshot,
    #[serde(default)]
    resources: std::collections::BTreeMap<String, RateLimitSnapshot>,
}

const EP_RUNS: &str = "/repos/{owner}/{repo}/actions/runs";
const EP_RUN_JOBS: &str = "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs";
const EP_JOB: &str = "/repos/{owner}/{repo}/actions/jobs/{job_id}";

/// A runner endpoint in both scopes: (repo template, org template, trailing segments).
struct RunnerEp {
    repo: &'static str,
    org: &'static str,
}

const EP_RUNNERS: RunnerEp = RunnerEp {
    repo: "/repos/{owner}/{repo}/actions/runners",
    org: "/orgs/{org}/actions/runners",
};
const EP_RUNNER: RunnerEp = RunnerEp {
    repo: "/repos/{owner}/{repo}/actions/runners/{runner_id}",
    org: "/orgs/{org}/actions/runners/{runner_id}",
};
const EP_REG_TOKEN: RunnerEp = RunnerEp {
    repo: "/repos/{owner}/{repo}/actions/runners/registration-token",
    org: "/orgs/{org}/actions/runners/registration-token",
};
const EP_JIT: RunnerEp = RunnerEp {
    repo: "/repos/{owner}/{repo}/actions/runners/generate-jitconfig",
    org: "/orgs/{org}/actions/runners/generate-jitconfig",
};

impl GitHubClient {
    /// Scope-dependent runner endpoint URL: `…/actions/runners` + `tail`.
    fn runner_url(
        &self,
        ep: &RunnerEp,
        tail: &[&str],
        query: &[(&str, &str)],
    ) -> (&'static str, url::Url) {
        let (template, mut segs): (&'static str, Vec<&str>) = match &self.config.scope {
            Scope::Repo { owner, name } => {
                (ep.repo, vec!["repos", owner, name, "actions", "runners"])
            }
            Scope::Org { org } => (ep.org, vec!["orgs", org, "actions", "runners"]),
        };
        segs.extend_from_slice(tail);
        (template, self.url(&segs, query))
    }

    /// `(owner, name)` pairs whose runs are polled.
    fn polled_repositories(&self) -> Result<Vec<(String, String)>> {
        match &self.config.scope {
            Scope::Repo { owner, name } => Ok(vec![(owner.clone(), name.clone())]),
            Scope::Org { org } => {
                if self.repositories.is_empty() {
                    return Err(Error::Unsupported(format!(
                        "queued jobs of organisation {org}: GitHub has no org-wide workflow-runs endpoint; \
                         configure the repositories to poll (GitHubClient::with_repositories) or rely on \
                         workflow_job webhooks"
                    )));
                }
                self.repositories
                    .iter()
                    .map(|r| split_repo(org, r))
                    .collect()
            }
        }
    }

    async fn run_ids(&self, owner: &str, name: &str, status: &str) -> Result<Vec<u64>> {
        let url = self.url(
            &["repos", owner, name, "actions", "runs"],
            &[("status", status), ("per_page", PER_PAGE)],
        );
        let pages: Vec<RunsPage> = self.get_pages(EP_RUNS, url).await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.workflow_runs)
            .map(|r| r.id)
            .collect())
    }

    async fn run_queued_jobs(
        &self,
        owner: &str,
        name: &str,
        run_id: u64,
    ) -> Result<Vec<QueuedJob>> {
        let run = run_id.to_string();
        let url = self.url(
            &["repos", owner, name, "actions", "runs", &run, "jobs"],
            &[("filter", "latest"), ("per_page", PER_PAGE)],
        );
        let pages: Vec<JobsPage> = match self.get_pages(EP_RUN_JOBS, url).await {
            Ok(p) => p,
            // The run was deleted between the two calls: it has no queued jobs.
            Err(Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let repository = format!("{owner}/{name}");
        pages
            .into_iter()
            .flat_map(|p| p.jobs)
            .filter(|j| j.status == "queued")
            .map(|j| {
                let created_at = j.created_at.or(j.started_at).ok_or_else(|| Error::Decode {
                    endpoint: EP_RUN_JOBS,
                    message: format!("job {} has neither created_at nor started_at", j.id),
                })?;
                Ok(QueuedJob {
                    id: j.id,
                    run_id: j.run_id,
                    name: j.name,
                    workflow_name: j.workflow_name,
                    labels: j.labels,
                    created_at,
                    repository: repository.clone(),
                    status: j.status,
                })
            })
            .collect()
    }
}

fn split_repo(org: &str, repo: &str) -> Result<(String, String)> {
    let (owner, name) = match repo.split_once('/') {
        Some((o, n)) => (o, n),
        None => (org, repo),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if valid(owner) && valid(name) {
        Ok((owner.to_owned(), name.to_owned()))
    } else {
        Err(Error::InvalidInput {
            field: "repository",
            value: repo.to_owned(),
            reason: "expected `name` or `owner/name`".to_owned(),
        })
    }
}

#[async_trait]
impl GitHubRunners for GitHubClient {
    async fn queued_jobs(&self) -> Result<Vec<QueuedJob>> {
        let repos = self.polled_repositories()?;
        // (owner, name, run id), deduplicated: a run can move from `queued` to `in_progress` between two lists.
        let mut runs: Vec<(String, String, u64)> = Vec::new();
        let mut seen_runs = HashSet::new();
        for (owner, name) in &repos {
            for status in RUN_STATUSES {
                for id in self.run_ids(owner, name, status).await? {
                    if seen_runs.insert((owner.clone(), name.clone(), id)) {
                        runs.push((owner.clone(), name.clone(), id));
                    }
                }
            }
        }
        let run_count = runs.len();
        let results: Vec<Result<Vec<QueuedJob>>> = futures::stream::iter(runs)
            .map(|(owner, name, id)| async move { self.run_queued_jobs(&owner, &name, id).await })
            .buffer_unordered(self.jobs_concurrency)
            .collect()
            .await;
        let mut seen_jobs = HashSet::new();
        let mut jobs = Vec::new();
        for r in results {
            for job in r? {
                if seen_jobs.insert(job.id) {
                    jobs.push(job);
                }
            }
        }
        jobs.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        tracing::debug!(runs = run_count, queued = jobs.len(), "queued jobs polled");
        Ok(jobs)
    }

    async fn job(&self, id: u64) -> Result<Job> {
        match &self.config.scope {
            Scope::Repo { owner, name } => self.job_in(&format!("{owner}/{name}"), id).await,
            Scope::Org { org } => match self.repositories.as_slice() {
                [only] => self.job_in(only, id).await,
                _ => Err(Error::Unsupported(format!(
                    "job({id}) in organisation {org}: name the repository with job_in(repository, id)"
                ))),
            },
        }
    }

    async fn job_in(&self, repository: &str, id: u64) -> Result<Job> {
        let default_owner = match &self.config.scope {
            Scope::Repo { owner, .. } => owner.as_str(),
            Scope::Org { org } => org.as_str(),
        };
        let (owner, name) = split_repo(default_owner, repository)?;
        let id_s = id.to_string();
        let url = self.url(&["repos", &owner, &name, "actions", "jobs", &id_s], &[]);
        self.execute(Method::GET, EP_JOB, url, None, Credential::Default)
            .await?
            .json(EP_JOB)
    }

    async fn registration_token(&self) -> Result<RegistrationToken> {
        let (ep, url) = self.runner_url(&EP_REG_TOKEN, &["registration-token"], &[]);
        let body: TokenBody = self
            .execute(Method::POST, ep, url, None, Credential::Default)
            .await?
            .json_sensitive(ep)?;
        Ok(RegistrationToken {
            token: body.token,
            expires_at: body.expires_at,
        })
    }

    async fn generate_jit_config(&self, request: &JitRequest) -> Result<JitConfig> {
        if request.name.trim().is_empty() {
            return Err(Error::InvalidInput {
                field: "name",
                value: request.name.clone(),
                reason: "runner name is empty".to_owned(),
            });
        }
        if request.labels.is_empty() || request.labels.len() > 100 {
            return Err(Error::InvalidInput {
                field: "labels",
                value: request.labels.join(","),
                reason: format!("GitHub needs 1 to 100 labels, got {}", request.labels.len()),
            });
        }
        if let Some(bad) = request.labels.iter().find(|l| l.trim().is_empty()) {
            return Err(Error::InvalidInput {
                field: "labels",
                value: bad.clone(),
                reason: "empty label".to_owned(),
            });
        }
        let body = serde_json::to_value(request).map_err(|e| Error::InvalidInput {
            field: "request",
            value: request.name.clone(),
            reason: e.to_string(),
        })?;
        let (ep, url) = self.runner_url(&EP_JIT, &["generate-jitconfig"], &[]);
        match self
            .execute(Method::POST, ep, url, Some(&body), Credential::Default)
            .await
        {
            Ok(resp) => {
                let b: JitBody = resp.json_sensitive(ep)?;
                tracing::info!(runner_id = b.runner.id, runner = %b.runner.name, "JIT runner registered");
                Ok(JitConfig {
                    runner: b.runner,
                    encoded_jit_config: b.encoded_jit_config,
                })
            }
            Err(Error::Api { status: 409, .. }) => Err(Error::JitNameConflict {
                name: request.name.clone(),
            }),
            Err(e) => Err(e),
        }
    }

    async fn list_runners(&self) -> Result<Vec<Runner>> {
        let (ep, url) = self.runner_url(&EP_RUNNERS, &[], &[("per_page", PER_PAGE)]);
        let pages: Vec<RunnersPage> = self.get_pages(ep, url).await?;
        Ok(pages.into_iter().flat_map(|p| p.runners).collect())
    }

    async fn runner(&self, id: u64) -> Result<Runner> {
        let id_s = id.to_string();
        let (ep, url) = self.runner_url(&EP_RUNNER, &[&id_s], &[]);
        self.execute(Method::GET, ep, url, None, Credential::Default)
            .await?
            .json(ep)
    }

    async fn delete_runner(&self, id: u64) -> Result<()> {
        let id_s = id.to_string();
        let (ep, url) = self.runner_url(&EP_RUNNER, &[&id_s], &[]);
        match self
            .execute(Method::DELETE, ep, url, None, Credential::Default)
            .await
        {
            Ok(_) => {
                tracing::info!(runner_id = id, "runner registration deleted");
                Ok(())
            }
            Err(Error::Api { status: 422, .. }) => Err(Error::RunnerBusy { id }),
            Err(e) => Err(e),
        }
    }

    async fn rate_limit(&self) -> Result<RateLimitStatus> {
        const EP: &str = "/rate_limit";
        let url = self.url(&["rate_limit"], &[]);
        let body: RateLimitBody = self
            .execute(Method::GET, EP, url, None, Credential::Default)
            .await?
            .json(EP)?;
        let core = RateLimitSnapshot {
            resource: "core".to_owned(),
            ..body.rate
        };
        let resources = body
            .resources
            .into_iter()
            .map(|(name, snap)| RateLimitSnapshot {
                resource: name,
                ..snap
            })
            .collect();
        Ok(RateLimitStatus { core, resources })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_repo_accepts_name_or_full_name() {
        assert_eq!(
            split_repo("acme", "web").unwrap(),
            ("acme".into(), "web".into())
        );
        assert_eq!(
            split_repo("acme", "other/web").unwrap(),
            ("other".into(), "web".into())
        );
        assert!(split_repo("acme", "a/b/c").is_err());
        assert!(split_repo("acme", "").is_err());
    }

    mod decoding {
        use std::sync::Arc;

        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::*;
        use crate::arbitrary_json::{mutated, value};
        use crate::client::Response;

        fn job() -> Value {
            json!({
                "id": 29679449, "run_id": 10950829, "run_attempt": 1, "name": "build",
                "status": "queued", "conclusion": null, "labels": ["self-hosted", "linux"],
                "runner_id": null, "runner_name": null, "runner_group_id": null,
                "workflow_name": "CI", "head_branch": "main",
                "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:01Z",
                "completed_at": null, "html_url": "https://github.com/o/r/actions/runs/1/job/2",
            })
        }

        fn runner() -> Value {
            json!({
                "id": 23, "name": "ghr-201-abc", "os": "linux", "status": "online", "busy": false,
                "ephemeral": true, "runner_group_id": 1,
                "labels": [{"id": 5, "name": "self-hosted", "type": "read-only"}],
            })
        }

        fn rate() -> Value {
            json!({"limit": 5000, "remaining": 4999, "used": 1, "reset": 1_700_000_000u64, "resource": "core"})
        }

        /// A body of up to `max` items of `item`, or any value at all.
        fn page(key: &'static str, item: Value, max: usize) -> impl Strategy<Value = Value> {
            prop_oneof![
                3 => prop::collection::vec(mutated(item), 0..max).prop_map(move |items| {
                    let mut body = serde_json::Map::new();
                    body.insert("total_count".into(), Value::from(items.len()));
                    body.insert(key.into(), Value::Array(items));
                    Value::Object(body)
                }),
                1 => value(),
            ]
        }

        /// Decodes `body` like a real answer and checks that any error is one line.
        fn decode<T: serde::de::DeserializeOwned>(
            body: &Value,
            sensitive: bool,
        ) -> Result<(), TestCaseError> {
            let resp = Response {
                headers: reqwest::header::HeaderMap::new(),
                body: Arc::from(body.to_string().into_bytes()),
            };
            let got: crate::Result<T> = if sensitive {
                resp.json_sensitive("/ep")
            } else {
                resp.json("/ep")
            };
            if let Err(e) = got {
                let text = e.to_string();
                prop_assert_eq!(text.lines().count(), 1, "{}", text);
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

            #[test]
            fn runs_pages_of_any_shape_decode_or_fail_cleanly(body in page("workflow_runs", json!({"id": 1, "status": "queued"}), 12)) {
                decode::<RunsPage>(&body, false)?;
            }

            #[test]
            fn jobs_pages_of_any_shape_decode_or_fail_cleanly(body in page("jobs", job(), 8)) {
                decode::<JobsPage>(&body, false)?;
                decode::<Job>(&body, false)?;
            }

            #[test]
            fn runners_pages_of_any_shape_decode_or_fail_cleanly(body in page("runners", runner(), 8)) {
                decode::<RunnersPage>(&body, false)?;
                decode::<Runner>(&body, false)?;
            }

            #[test]
            fn token_jit_and_rate_limit_bodies_of_any_shape_decode_or_fail_cleanly(
                token in mutated(json!({"token": "LLBF3JGZDX3P5PMEXLND6TS6FCWO6", "expires_at": "2026-01-22T12:13:35.123-08:00"})),
                jit in mutated(json!({"runner": runner(), "encoded_jit_config": "abc"})),
                rate_body in mutated(json!({"rate": rate(), "resources": {"core": rate(), "search": rate()}})),
                junk in value(),
            ) {
                decode::<TokenBody>(&token, true)?;
                decode::<JitBody>(&jit, true)?;
                decode::<RateLimitBody>(&rate_body, false)?;
                decode::<RateLimitBody>(&junk, false)?;
                decode::<TokenBody>(&junk, true)?;
            }
        }

        #[test]
        fn a_huge_page_decodes() {
            let items: Vec<Value> = (0..5_000).map(|i| json!({"id": i})).collect();
            let body = json!({"total_count": u64::MAX, "workflow_runs": items});
            let resp = Response {
                headers: reqwest::header::HeaderMap::new(),
                body: Arc::from(body.to_string().into_bytes()),
            };
            let page: RunsPage = resp.json("/ep").unwrap();
            assert_eq!(page.workflow_runs.len(), 5_000);
        }
    }

    #[tokio::test]
    async fn mock_is_object_safe_and_usable() {
        let mut m = MockGitHubRunners::new();
        m.expect_delete_runner()
            .returning(|id| Err(Error::RunnerBusy { id }));
        let gh: std::sync::Arc<dyn GitHubRunners> = std::sync::Arc::new(m);
        assert!(matches!(
            gh.delete_runner(7).await,
            Err(Error::RunnerBusy { id: 7 })
        ));
    }
}
