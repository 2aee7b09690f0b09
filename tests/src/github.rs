//! The simulated GitHub REST API (runs, jobs, runners, tokens, JIT configs, App tokens, rate limits).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Shared;
use crate::world::{
    ALNUM, ALNUM_UPPER, Credential, CredentialKind, Job, JobStatus, Run, Runner, Scope, Service,
    World,
};

/// A job to queue with [`crate::GitHubHandle::queue_run`].
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name (unique within the run; `needs` refers to it).
    pub name: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// Names of jobs of the same run that must complete first.
    pub needs: Vec<String>,
    /// Job duration (default: `Timing::job`).
    pub duration: Option<Duration>,
}

impl JobSpec {
    /// A job with these labels and no dependencies.
    pub fn new(name: &str, labels: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            labels: labels.iter().map(|s| (*s).to_string()).collect(),
            needs: Vec::new(),
            duration: None,
        }
    }

    /// Adds a dependency on another job of the run.
    #[must_use]
    pub fn needs(mut self, job: &str) -> Self {
        self.needs.push(job.to_string());
        self
    }

    /// Sets the duration.
    #[must_use]
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = Some(d);
        self
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

struct GhResp {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl GhResp {
    fn ok(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }
    fn err(status: u16, message: &str) -> Self {
        Self::ok(
            status,
            json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()}),
        )
    }
    fn not_found() -> Self {
        Self::err(404, "Not Found")
    }
}

fn labels_match(job_labels: &[String], runner: &Runner) -> bool {
    job_labels.iter().all(|l| {
        l.eq_ignore_ascii_case("self-hosted")
            || runner
                .labels
                .iter()
                .any(|(_, n, _)| n.eq_ignore_ascii_case(l))
    })
}

impl World {
    pub(crate) fn next_gh_id(&mut self) -> u64 {
        self.gh.next_id += 1;
        self.gh.next_id
    }

    pub(crate) fn label_id(&mut self, name: &str) -> u64 {
        let key = name.to_ascii_lowercase();
        if let Some(id) = self.gh.label_ids.get(&key) {
            return *id;
        }
        self.gh.next_label_id += 1;
        let id = self.gh.next_label_id;
        self.gh.label_ids.insert(key, id);
        id
    }

    pub(crate) fn queue_run(&mut self, repo: &str, jobs: &[JobSpec]) -> (u64, Vec<u64>) {
        self.gh.repos.insert(repo.to_string());
        if let Some(owner) = repo.split('/').next() {
            self.gh.orgs.insert(owner.to_string());
        }
        let run_id = self.next_gh_id();
        let now = Instant::now();
        let now_at = OffsetDateTime::now_utc();
        let mut ids = Vec::new();
        let mut by_name = BTreeMap::new();
        for spec in jobs {
            let id = self.next_gh_id();
            by_name.insert(spec.name.clone(), id);
            ids.push(id);
        }
        for (spec, id) in jobs.iter().zip(&ids) {
            let needs: Vec<u64> = spec
                .needs
                .iter()
                .filter_map(|n| by_name.get(n).copied())
                .collect();
            let status = if needs.is_empty() {
                JobStatus::Queued
            } else {
                JobStatus::Pending
            };
            self.gh.jobs.insert(
                *id,
                Job {
                    id: *id,
                    run_id,
                    repo: repo.to_string(),
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    needs,
                    status,
                    conclusion: None,
                    duration: spec.duration.unwrap_or(self.cfg.timing.job),
                    created: now,
                    created_at: now_at,
                    queued: (status == JobStatus::Queued).then_some(now),
                    started: None,
                    started_at: None,
                    completed: None,
                    completed_at: None,
                    finish_at: None,
                    runner_id: None,
                    runner_name: None,
                },
            );
        }
        let run_number = self.gh.runs.values().filter(|r| r.repo == repo).count() as u64 + 1;
        self.gh.runs.insert(
            run_id,
            Run {
                id: run_id,
                repo: repo.to_string(),
                run_number,
                jobs: ids.clone(),
                created_at: now_at,
                updated_at: now_at,
                status: "queued",
                conclusion: None,
            },
        );
        (run_id, ids)
    }

    pub(crate) fn finish_job(&mut self, job_id: u64, conclusion: &str, now: Instant) {
        if let Some(j) = self.gh.jobs.get_mut(&job_id) {
            if j.status == JobStatus::Completed {
                return;
            }
            j.status = JobStatus::Completed;
            j.conclusion = Some(conclusion.to_string());
            j.completed = Some(now);
            j.completed_at = Some(OffsetDateTime::now_utc());
            j.finish_at = None;
        }
    }

    pub(crate) fn tick_github(&mut self, now: Instant) {
        // primary rate-limit window
        if self.gh.rate_reset.is_none_or(|r| now >= r) {
            let window = self.cfg.github.rate_limit_window;
            self.gh.rate_used = 0;
            self.gh.rate_reset = Some(now + window);
            self.gh.rate_reset_epoch = (OffsetDateTime::now_utc() + window).unix_timestamp();
        }
        // running jobs that are done
        let done: Vec<(u64, Option<u64>)> = self
            .gh
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::InProgress && j.finish_at.is_some_and(|f| now >= f))
            .map(|j| (j.id, j.runner_id))
            .collect();
        for (job_id, runner_id) in done {
            self.finish_job(job_id, "success", now);
            if let Some(rid) = runner_id {
                let ephemeral = self.gh.runners.get_mut(&rid).is_some_and(|r| {
                    r.busy = false;
                    r.job = None;
                    r.ephemeral
                });
                if ephemeral && let Some(r) = self.gh.runners.remove(&rid) {
                    self.gh.removed_runners.push((r.id, r.name));
                }
            }
        }
        // pending jobs whose needs completed
        let pending: Vec<(u64, Vec<u64>)> = self
            .gh
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Pending)
            .map(|j| (j.id, j.needs.clone()))
            .collect();
        for (id, needs) in pending {
            let states: Vec<Option<String>> = needs
                .iter()
                .map(|n| {
                    self.gh
                        .jobs
                        .get(n)
                        .filter(|j| j.status == JobStatus::Completed)
                        .map(|j| j.conclusion.clone().unwrap_or_default())
                })
                .collect();
            if states.iter().all(Option::is_some) {
                if states.iter().all(|s| s.as_deref() == Some("success")) {
                    if let Some(j) = self.gh.jobs.get_mut(&id) {
                        j.status = JobStatus::Queued;
                        j.queued = Some(now);
                    }
                } else {
                    self.finish_job(id, "skipped", now);
                }
            }
        }
        // assignment: each online idle runner takes the oldest matching queued job
        let runner_ids: Vec<u64> = self
            .gh
            .runners
            .values()
            .filter(|r| r.online && !r.busy)
            .map(|r| r.id)
            .collect();
        for rid in runner_ids {
            let Some(runner) = self.gh.runners.get(&rid) else {
                continue;
            };
            let job = self
                .gh
                .jobs
                .values()
                .filter(|j| {
                    j.status == JobStatus::Queued
                        && runner.scope.serves(&j.repo)
                        && labels_match(&j.labels, runner)
                })
                .min_by_key(|j| (j.queued, j.id))
                .map(|j| j.id);
            let Some(job_id) = job else { continue };
            let name = runner.name.clone();
            if let Some(j) = self.gh.jobs.get_mut(&job_id) {
                j.status = JobStatus::InProgress;
                j.started = Some(now);
                j.started_at = Some(OffsetDateTime::now_utc());
                j.finish_at = Some(now + j.duration);
                j.runner_id = Some(rid);
                j.runner_name = Some(name);
            }
            if let Some(r) = self.gh.runners.get_mut(&rid) {
                r.busy = true;
                r.job = Some(job_id);
            }
        }
        // run status
        let run_ids: Vec<u64> = self.gh.runs.keys().copied().collect();
        for run_id in run_ids {
            let Some(run) = self.gh.runs.get(&run_id) else {
                continue;
            };
            let jobs: Vec<&Job> = run
                .jobs
                .iter()
                .filter_map(|j| self.gh.jobs.get(j))
                .collect();
            let (status, conclusion) = if jobs.iter().all(|j| j.status == JobStatus::Completed) {
                let ok = jobs
                    .iter()
                    .all(|j| matches!(j.conclusion.as_deref(), Some("success" | "skipped")));
                ("completed", Some(if ok { "success" } else { "failure" }))
            } else if jobs
                .iter()
                .any(|j| matches!(j.status, JobStatus::InProgress | JobStatus::Completed))
            {
                ("in_progress", None)
            } else {
                ("queued", None)
            };
            if run.status != status
                && let Some(run) = self.gh.runs.get_mut(&run_id)
            {
                run.status = status;
                run.conclusion = conclusion;
                run.updated_at = OffsetDateTime::now_utc();
            }
        }
    }

    fn runner_json(&self, r: &Runner) -> Value {
        json!({
            "id": r.id, "name": r.name,
            "os": r.os.map_or("unknown", |o| o.label()),
            "status": if r.online { "online" } else { "offline" },
            "busy": r.busy, "ephemeral": r.ephemeral, "runner_group_id": r.group_id, "version": "2.329.0",
            "labels": r.labels.iter().map(|(id, n, t)| json!({"id": id, "name": n, "type": t})).collect::<Vec<_>>(),
        })
    }
}

/// Shared request context for building URLs.
struct Ctx<'a> {
    sh: &'a Shared,
    base: String,
}

impl Ctx<'_> {
    fn example(&self, name: &str) -> Value {
        self.sh
            .examples
            .get(name)
            .cloned()
            .unwrap_or_else(|| json!({}))
    }

    fn repo_obj(&self, repo: &str) -> Value {
        let (owner, name) = repo.split_once('/').unwrap_or((repo, repo));
        let mut v = self
            .example("workflow-run")
            .get("repository")
            .cloned()
            .unwrap_or_else(|| json!({}));
        v["name"] = json!(name);
        v["full_name"] = json!(repo);
        v["url"] = json!(format!("{}/repos/{repo}", self.base));
        v["html_url"] = json!(format!("https://github.com/{repo}"));
        if v.get("owner").is_some() {
            v["owner"]["login"] = json!(owner);
        }
        v
    }

    fn run_json(&self, run: &Run) -> Value {
        let mut v = self.example("workflow-run");
        let url = format!("{}/repos/{}/actions/runs/{}", self.base, run.repo, run.id);
        v["id"] = json!(run.id);
        v["name"] = json!("CI");
        v["display_title"] = json!(format!("CI #{}", run.run_number));
        v["run_number"] = json!(run.run_number);
        v["run_attempt"] = json!(1);
        v["event"] = json!("push");
        v["head_branch"] = json!("main");
        v["status"] = json!(run.status);
        v["conclusion"] = json!(run.conclusion);
        v["created_at"] = json!(rfc3339(run.created_at));
        v["updated_at"] = json!(rfc3339(run.updated_at));
        v["run_started_at"] = json!(rfc3339(run.created_at));
        v["jobs_url"] = json!(format!("{url}/jobs"));
        v["url"] = json!(url);
        v["html_url"] = json!(format!(
            "https://github.com/{}/actions/runs/{}",
            run.repo, run.id
        ));
        v["repository"] = self.repo_obj(&run.repo);
        v["head_repository"] = self.repo_obj(&run.repo);
        v
    }

    fn job_json(&self, j: &Job) -> Value {
        let mut v = self.example("job");
        v["id"] = json!(j.id);
        v["run_id"] = json!(j.run_id);
        v["run_attempt"] = json!(1);
        v["run_url"] = json!(format!(
            "{}/repos/{}/actions/runs/{}",
            self.base, j.repo, j.run_id
        ));
        v["url"] = json!(format!(
            "{}/repos/{}/actions/jobs/{}",
            self.base, j.repo, j.id
        ));
        v["html_url"] = json!(format!(
            "https://github.com/{}/actions/runs/{}/job/{}",
            j.repo, j.run_id, j.id
        ));
        v["name"] = json!(j.name);
        v["status"] = json!(j.status.as_str());
        v["conclusion"] = json!(j.conclusion);
        v["created_at"] = json!(rfc3339(j.created_at));
        v["started_at"] = json!(rfc3339(j.started_at.unwrap_or(j.created_at)));
        v["completed_at"] = json!(j.completed_at.map(rfc3339));
        v["labels"] = json!(j.labels);
        v["runner_id"] = json!(j.runner_id);
        v["runner_name"] = json!(j.runner_name);
        v["runner_group_id"] = json!(j.runner_id.map(|_| 1));
        v["runner_group_name"] = json!(j.runner_id.map(|_| "Default"));
        v["workflow_name"] = json!("CI");
        v["head_branch"] = json!("main");
        if j.status != JobStatus::Completed {
            v["steps"] = json!([]);
        }
        v
    }
}

fn query_map(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn qget<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Paginates `items` and builds the `link` header like GitHub.
fn paginate(items: Vec<Value>, q: &[(String, String)], url: &str) -> (Vec<Value>, Option<String>) {
    let per_page = qget(q, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = qget(q, "page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link_for = |p: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in q.iter().filter(|(k, _)| k != "page" && k != "per_page") {
            ser.append_pair(k, v);
        }
        ser.append_pair("per_page", &per_page.to_string());
        ser.append_pair("page", &p.to_string());
        format!("<{url}?{}>", ser.finish())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_for(page - 1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_for(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_for(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link_for(1)));
    }
    (slice, (!links.is_empty()).then(|| links.join(", ")))
}

enum Auth {
    None,
    Token(String),
}

fn bearer(headers: &HeaderMap) -> Auth {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Auth::None;
    };
    let v = v.trim();
    let tok = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .or_else(|| v.strip_prefix("token "))
        .or_else(|| v.strip_prefix("Token "));
    tok.map_or(Auth::None, |t| Auth::Token(t.trim().to_string()))
}

/// Verifies an App JWT (RS256, `iss` = app id or client id, lifetime ≤ 10 min).
fn verify_jwt(w: &World, token: &str) -> Result<(), String> {
    let app = w
        .cfg
        .github
        .app
        .as_ref()
        .ok_or("A JSON web token could not be decoded")?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes())
        .map_err(|e| format!("simulator app key invalid: {e}"))?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp", "iat", "iss"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &v)
        .map_err(|e| format!("A JSON web token could not be decoded ({e})"))?;
    let c = data.claims;
    let iss = match &c["iss"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if iss != app.app_id.to_string() && iss != app.client_id {
        return Err(format!(
            "'Issuer' claim ('iss') must be the App's id, got '{iss}'"
        ));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let iat = c["iat"].as_i64().unwrap_or(i64::MAX);
    let exp = c["exp"].as_i64().unwrap_or(0);
    if iat > now + 60 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past.".into(),
        );
    }
    if exp - iat > 600 + 60 || exp > now + 600 + 60 {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    Ok(())
}

/// The axum fallback handler of the GitHub server.
pub(crate) async fn handle(
    State(sh): State<Arc<Shared>>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = sh.github_base.get().cloned().unwrap_or_default();
    let ctx = Ctx {
        sh: &sh,
        base: base.clone(),
    };
    let m = method.as_str().to_string();
    let path = uri.path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let q = query_map(&uri);
    let (endpoint, needs_jwt) = endpoint_of(&segs);
    let now = Instant::now();
    let mut w = sh.lock();
    let finish = |w: &mut World, r: GhResp, budgeted: bool| -> Response {
        let status = r.status;
        w.count(Service::GitHub, &m, &endpoint, status);
        if budgeted {
            w.gh.rate_used = w.gh.rate_used.saturating_add(1);
            w.github_budgeted += 1;
        }
        build(w, r)
    };
    // secondary rate limit window
    if let Some(until) = w.gh.secondary_until.filter(|u| now < *u) {
        let secs = until.duration_since(now).as_secs_f64().ceil().max(1.0);
        let mut r = GhResp::err(
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        r.headers.push(("retry-after", format!("{secs:.0}")));
        return finish(&mut w, r, false);
    }
    let fault = w.cfg.faults.github_502_rate;
    if w.fault(fault) {
        return finish(&mut w, GhResp::err(502, "Server Error"), false);
    }
    // auth
    let authed = match bearer(&headers) {
        Auth::None => Err("Requires authentication".to_string()),
        Auth::Token(t) => {
            if needs_jwt {
                verify_jwt(&w, &t)
            } else if t == w.cfg.github.token || w.gh.install_tokens.contains(&t) {
                Ok(())
            } else {
                Err("Bad credentials".to_string())
            }
        }
    };
    if let Err(msg) = authed {
        return finish(&mut w, GhResp::err(401, &msg), false);
    }
    let is_rate = endpoint == "/rate_limit";
    if !is_rate && !needs_jwt && w.gh.rate_used >= w.cfg.github.rate_limit {
        return finish(
            &mut w,
            GhResp::err(403, "API rate limit exceeded for user ID 1."),
            false,
        );
    }
    let mut r = route(&mut w, &ctx, &m, &segs, &q, &body);
    // ETag / If-None-Match
    if m == "GET"
        && r.status == 200
        && let Some(b) = &r.body
    {
        let etag = format!(
            "W/\"{}\"",
            &hex::encode(Sha256::digest(b.to_string().as_bytes()))[..32]
        );
        let inm = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let hit = inm
            .split(',')
            .any(|t| t.trim() == etag || t.trim() == etag.trim_start_matches("W/"));
        r.headers.push(("etag", etag));
        if hit {
            r.status = 304;
            r.body = None;
            return finish(&mut w, r, false);
        }
    }
    finish(&mut w, r, !is_rate && !needs_jwt)
}

fn build(w: &World, r: GhResp) -> Response {
    let limit = w.cfg.github.rate_limit;
    let used = w.gh.rate_used.min(limit);
    let mut resp = Response::new(match &r.body {
        Some(b) => Body::from(b.to_string()),
        None => Body::empty(),
    });
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    if r.body.is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-ratelimit-limit", limit.to_string());
    put("x-ratelimit-remaining", (limit - used).to_string());
    put("x-ratelimit-used", used.to_string());
    put("x-ratelimit-reset", w.gh.rate_reset_epoch.to_string());
    put("x-ratelimit-resource", "core".to_string());
    put("x-github-api-version-selected", "2022-11-28".to_string());
    for (k, v) in r.headers {
        put(k, v);
    }
    resp
}

/// Templated endpoint name and whether it takes an App JWT.
fn endpoint_of(s: &[&str]) -> (String, bool) {
    let t = match s {
        ["rate_limit"] => "/rate_limit",
        ["app"] => return ("/app".into(), true),
        ["app", "installations"] => return ("/app/installations".into(), true),
        ["app", "installations", _] => {
            return ("/app/installations/{installation_id}".into(), true);
        }
        ["app", "installations", _, "access_tokens"] => {
            return (
                "/app/installations/{installation_id}/access_tokens".into(),
                true,
            );
        }
        ["repos", _, _, "installation"] => {
            return ("/repos/{owner}/{repo}/installation".into(), true);
        }
        ["orgs", _, "installation"] => return ("/orgs/{org}/installation".into(), true),
        ["repos", _, _, "actions", "runs"] => "/repos/{owner}/{repo}/actions/runs",
        ["repos", _, _, "actions", "runs", _] => "/repos/{owner}/{repo}/actions/runs/{run_id}",
        ["repos", _, _, "actions", "runs", _, "jobs"] => {
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs"
        }
        ["repos", _, _, "actions", "runs", _, "attempts", _, "jobs"] => {
            "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs"
        }
        ["repos", _, _, "actions", "jobs", _] => "/repos/{owner}/{repo}/actions/jobs/{job_id}",
        ["orgs", _, "actions", "runner-groups"] => "/orgs/{org}/actions/runner-groups",
        ["repos", _, _, "actions", "runners", rest @ ..] => {
            return (
                format!(
                    "/repos/{{owner}}/{{repo}}/actions/runners{}",
                    runner_suffix(rest)
                ),
                false,
            );
        }
        ["orgs", _, "actions", "runners", rest @ ..] => {
            return (
                format!("/orgs/{{org}}/actions/runners{}", runner_suffix(rest)),
                false,
            );
        }
        _ => return (format!("/{}", s.join("/")), false),
    };
    (t.to_string(), false)
}

fn runner_suffix(rest: &[&str]) -> String {
    match rest {
        [] => String::new(),
        [x @ ("registration-token" | "remove-token" | "generate-jitconfig" | "downloads")] => {
            format!("/{x}")
        }
        [_] => "/{runner_id}".into(),
        other => format!("/{}", other.join("/")),
    }
}

fn route(
    w: &mut World,
    ctx: &Ctx<'_>,
    m: &str,
    s: &[&str],
    q: &[(String, String)],
    body: &Bytes,
) -> GhResp {
    let url = format!("{}/{}", ctx.base, s.join("/"));
    match (m, s) {
        ("GET", ["rate_limit"]) => {
            let limit = w.cfg.github.rate_limit;
            let used = w.gh.rate_used.min(limit);
            let core = json!({"limit": limit, "used": used, "remaining": limit - used, "reset": w.gh.rate_reset_epoch});
            let mut v = ctx.example("rate-limit-overview");
            v["resources"]["core"] = core.clone();
            v["rate"] = core;
            GhResp::ok(200, v)
        }
        ("GET", ["app"]) => {
            let mut v = ctx.example("integration");
            if let Some(app) = &w.cfg.github.app {
                v["id"] = json!(app.app_id);
                v["client_id"] = json!(app.client_id);
            }
            GhResp::ok(200, v)
        }
        ("GET", ["app", "installations"]) => GhResp::ok(200, json!([install_json(w, ctx)])),
        ("GET", ["app", "installations", id]) => match &w.cfg.github.app {
            Some(app) if app.installation_id.to_string() == *id => {
                GhResp::ok(200, install_json(w, ctx))
            }
            _ => GhResp::not_found(),
        },
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            let ok = w
                .cfg
                .github
                .app
                .as_ref()
                .is_some_and(|a| a.installation_id.to_string() == *id);
            if !ok {
                return GhResp::not_found();
            }
            let token = format!("ghs_{}", w.random_string(36, ALNUM));
            w.gh.install_tokens.insert(token.clone());
            let mut v = ctx.example("installation-token");
            v["token"] = json!(token);
            v["expires_at"] = json!(rfc3339(
                OffsetDateTime::now_utc() + Duration::from_secs(3600)
            ));
            v["repository_selection"] = json!("all");
            if let Some(o) = v.as_object_mut() {
                o.remove("repositories");
            }
            GhResp::ok(201, v)
        }
        ("GET", ["repos", o, r, "installation"]) => {
            if !repo_exists(w, o, r) {
                return GhResp::not_found();
            }
            GhResp::ok(200, install_json(w, ctx))
        }
        ("GET", ["orgs", o, "installation"]) => {
            if !org_exists(w, o) {
                return GhResp::not_found();
            }
            GhResp::ok(200, install_json(w, ctx))
        }
        ("GET", ["repos", o, r, "actions", "runs"]) => {
            if !repo_exists(w, o, r) {
                return GhResp::not_found();
            }
            let repo = format!("{o}/{r}");
            let status = qget(q, "status");
            let mut runs: Vec<&Run> = w
                .gh
                .runs
                .values()
                .filter(|run| run.repo.eq_ignore_ascii_case(&repo))
                .filter(|run| status.is_none_or(|s| run.status == s || run.conclusion == Some(s)))
                .collect();
            runs.sort_by_key(|r| std::cmp::Reverse(r.id));
            let total = runs.len();
            let items = runs.into_iter().map(|r| ctx.run_json(r)).collect();
            let (page, link) = paginate(items, q, &url);
            with_link(
                GhResp::ok(200, json!({"total_count": total, "workflow_runs": page})),
                link,
            )
        }
        ("GET", ["repos", o, r, "actions", "runs", id]) => {
            let repo = format!("{o}/{r}");
            match id
                .parse::<u64>()
                .ok()
                .and_then(|id| w.gh.runs.get(&id))
                .filter(|run| run.repo.eq_ignore_ascii_case(&repo))
            {
                Some(run) => GhResp::ok(200, ctx.run_json(run)),
                None => GhResp::not_found(),
            }
        }
        (
            "GET",
            ["repos", o, r, "actions", "runs", id, "jobs"]
            | ["repos", o, r, "actions", "runs", id, "attempts", _, "jobs"],
        ) => {
            let repo = format!("{o}/{r}");
            let Some(run) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| w.gh.runs.get(&id))
                .filter(|run| run.repo.eq_ignore_ascii_case(&repo))
            else {
                return GhResp::not_found();
            };
            let jobs: Vec<Value> = run
                .jobs
                .iter()
                .filter_map(|j| w.gh.jobs.get(j))
                .map(|j| ctx.job_json(j))
                .collect();
            let total = jobs.len();
            let (page, link) = paginate(jobs, q, &url);
            with_link(
                GhResp::ok(200, json!({"total_count": total, "jobs": page})),
                link,
            )
        }
        ("GET", ["repos", o, r, "actions", "jobs", id]) => {
            let repo = format!("{o}/{r}");
            match id
                .parse::<u64>()
                .ok()
                .and_then(|id| w.gh.jobs.get(&id))
                .filter(|j| j.repo.eq_ignore_ascii_case(&repo))
            {
                Some(j) => GhResp::ok(200, ctx.job_json(j)),
                None => GhResp::not_found(),
            }
        }
        ("GET", ["orgs", o, "actions", "runner-groups"]) => {
            if !org_exists(w, o) {
                return GhResp::not_found();
            }
            let ex = ctx.example("runner-groups-org");
            let tmpl = ex["runner_groups"][0].clone();
            let groups: Vec<Value> = w
                .cfg
                .github
                .runner_groups
                .iter()
                .map(|(id, name)| {
                    let mut g = tmpl.clone();
                    g["id"] = json!(id);
                    g["name"] = json!(name);
                    g["default"] = json!(*id == 1);
                    g["runners_url"] = json!(format!(
                        "{}/orgs/{o}/actions/runner_groups/{id}/runners",
                        ctx.base
                    ));
                    g
                })
                .collect();
            let total = groups.len();
            let (page, link) = paginate(groups, q, &url);
            with_link(
                GhResp::ok(200, json!({"total_count": total, "runner_groups": page})),
                link,
            )
        }
        (_, ["repos", o, r, "actions", "runners", rest @ ..]) => {
            if !repo_exists(w, o, r) {
                return GhResp::not_found();
            }
            runners_route(
                w,
                ctx,
                m,
                Scope::Repo(format!("{o}/{r}")),
                rest,
                q,
                body,
                &url,
            )
        }
        (_, ["orgs", o, "actions", "runners", rest @ ..]) => {
            if !org_exists(w, o) {
                return GhResp::not_found();
            }
            runners_route(w, ctx, m, Scope::Org((*o).to_string()), rest, q, body, &url)
        }
        _ => GhResp::not_found(),
    }
}

fn with_link(mut r: GhResp, link: Option<String>) -> GhResp {
    if let Some(l) = link {
        r.headers.push(("link", l));
    }
    r
}

fn repo_exists(w: &World, o: &str, r: &str) -> bool {
    let full = format!("{o}/{r}");
    w.gh.repos.iter().any(|x| x.eq_ignore_ascii_case(&full))
}

fn org_exists(w: &World, o: &str) -> bool {
    w.gh.orgs.iter().any(|x| x.eq_ignore_ascii_case(o))
}

fn install_json(w: &World, ctx: &Ctx<'_>) -> Value {
    let mut v = ctx.example("installation");
    if let Some(app) = &w.cfg.github.app {
        v["id"] = json!(app.installation_id);
        v["app_id"] = json!(app.app_id);
        v["client_id"] = json!(app.client_id);
    }
    v
}

#[allow(clippy::too_many_arguments)]
fn runners_route(
    w: &mut World,
    ctx: &Ctx<'_>,
    m: &str,
    scope: Scope,
    rest: &[&str],
    q: &[(String, String)],
    body: &Bytes,
    url: &str,
) -> GhResp {
    let now = Instant::now();
    match (m, rest) {
        ("GET", []) => {
            let name = qget(q, "name");
            let runners: Vec<Value> =
                w.gh.runners
                    .values()
                    .filter(|r| r.scope == scope && name.is_none_or(|n| r.name == n))
                    .map(|r| w.runner_json(r))
                    .collect();
            let total = runners.len();
            let (page, link) = paginate(runners, q, url);
            with_link(
                GhResp::ok(200, json!({"total_count": total, "runners": page})),
                link,
            )
        }
        ("GET", ["downloads"]) => GhResp::ok(200, ctx.example("runner-application-items")),
        ("POST", [kind @ ("registration-token" | "remove-token")]) => {
            let token = format!("A{}", w.random_string(28, ALNUM_UPPER));
            let ttl = Duration::from_secs(3600);
            w.gh.credentials.push(Credential {
                kind: if *kind == "registration-token" {
                    CredentialKind::RegistrationToken
                } else {
                    CredentialKind::RemoveToken
                },
                scope,
                secret: token.clone(),
                runner_id: None,
                runner_name: None,
                issued: now,
                expires: now + ttl,
                used: false,
            });
            GhResp::ok(
                201,
                json!({"token": token, "expires_at": rfc3339(OffsetDateTime::now_utc() + ttl)}),
            )
        }
        ("POST", ["generate-jitconfig"]) => {
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return GhResp::err(400, "Problems parsing JSON");
            };
            let name = req["name"].as_str().unwrap_or("").to_string();
            let labels: Vec<String> = req["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let Some(group) = req["runner_group_id"].as_u64() else {
                return GhResp::err(
                    422,
                    "Invalid request.\n\n\"runner_group_id\" wasn't supplied.",
                );
            };
            if name.is_empty() {
                return GhResp::err(422, "Invalid request.\n\n\"name\" wasn't supplied.");
            }
            if labels.is_empty() || labels.len() > 100 {
                return GhResp::err(
                    422,
                    "Invalid request.\n\n\"labels\" must have between 1 and 100 items.",
                );
            }
            let group_ok = match scope {
                Scope::Repo(_) => group == 1,
                Scope::Org(_) => w
                    .cfg
                    .github
                    .runner_groups
                    .iter()
                    .any(|(id, _)| *id == group),
            };
            if !group_ok {
                return GhResp::not_found();
            }
            if w.gh
                .runners
                .values()
                .any(|r| r.scope == scope && r.name == name)
            {
                return GhResp::err(
                    409,
                    &format!("Already exists - A runner with the name {name} already exists."),
                );
            }
            let id = w.next_gh_id();
            let mut rl = vec![(
                w.label_id("self-hosted"),
                "self-hosted".to_string(),
                "read-only",
            )];
            for l in &labels {
                if !rl.iter().any(|(_, n, _)| n.eq_ignore_ascii_case(l)) {
                    rl.push((w.label_id(l), l.clone(), "custom"));
                }
            }
            let runner = Runner {
                id,
                name: name.clone(),
                scope: scope.clone(),
                labels: rl,
                online: false,
                busy: false,
                ephemeral: true,
                group_id: group,
                os: None,
                job: None,
                jit: true,
            };
            let nonce = w.random_string(48, ALNUM);
            let raw = json!({".runner": {"AgentId": id, "AgentName": name, "PoolId": group, "nonce": nonce}}).to_string();
            let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
            w.gh.credentials.push(Credential {
                kind: CredentialKind::JitConfig,
                scope,
                secret: encoded.clone(),
                runner_id: Some(id),
                runner_name: Some(name),
                issued: now,
                expires: now + Duration::from_secs(3600),
                used: false,
            });
            let rj = w.runner_json(&runner);
            w.gh.runners.insert(id, runner);
            GhResp::ok(201, json!({"runner": rj, "encoded_jit_config": encoded}))
        }
        ("GET", [id]) => match id
            .parse::<u64>()
            .ok()
            .and_then(|id| w.gh.runners.get(&id))
            .filter(|r| r.scope == scope)
        {
            Some(r) => GhResp::ok(200, w.runner_json(r)),
            None => GhResp::not_found(),
        },
        ("DELETE", [id]) => {
            let Some(r) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| w.gh.runners.get(&id))
                .filter(|r| r.scope == scope)
            else {
                return GhResp::not_found();
            };
            if r.busy {
                return GhResp::err(
                    422,
                    &format!(
                        "Bad request - Runner \"{}\" is still running a job\"",
                        r.name
                    ),
                );
            }
            let rid = r.id;
            if let Some(r) = w.gh.runners.remove(&rid) {
                w.gh.removed_runners.push((r.id, r.name));
            }
            GhResp {
                status: 204,
                body: None,
                headers: Vec::new(),
            }
        }
        _ => GhResp::not_found(),
    }
}
