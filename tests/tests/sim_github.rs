//! Self-tests of the simulated GitHub, through plain HTTP.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tests::{
    AppSpec, GuestPhase, JobSpec, JobStatus, Scope, Sim, SimConfig, TEST_APP_PRIVATE_KEY_PEM,
};

const TOKEN: &str = "github_pat_sim_0123456789";
const REPO: &str = "NREL/EnergyPlus";

fn fast() -> SimConfig {
    let mut c = SimConfig::default();
    c.timing.job = Duration::from_millis(150);
    c.timing.clone = Duration::from_millis(50);
    c.timing.start = Duration::from_millis(30);
    c.timing.boot = Duration::from_millis(100);
    c
}

struct Gh {
    c: reqwest::Client,
    base: String,
    token: String,
}

impl Gh {
    fn new(sim: &Sim) -> Self {
        Self {
            c: reqwest::Client::new(),
            base: sim.github_url(),
            token: TOKEN.into(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        body: Option<Value>,
        etag: Option<&str>,
    ) -> reqwest::Response {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut rb = self
            .c
            .request(method, url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        if let Some(e) = etag {
            rb = rb.header("If-None-Match", e);
        }
        rb.send().await.unwrap()
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.send(method, path, body, None).await;
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn needs_orders_jobs_and_run_status_follows() {
    let sim = Sim::start(fast()).await.unwrap();
    let gh = Gh::new(&sim);
    let h = sim.github();
    let run = h.queue_run(
        REPO,
        vec![
            JobSpec::new("build", &["self-hosted", "linux"]),
            JobSpec::new("test", &["self-hosted", "Linux"]).needs("build"),
        ],
    );
    let (s, v) = gh
        .json(
            Method::GET,
            &format!(
                "/repos/{REPO}/actions/runs/{}/jobs?filter=latest",
                run.run_id
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let statuses: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "pending"]);
    assert_eq!(v["jobs"][0]["labels"], json!(["self-hosted", "linux"]));
    let (_, v) = gh
        .json(
            Method::GET,
            &format!("/repos/{REPO}/actions/runs?status=queued"),
            None,
        )
        .await;
    assert_eq!(v["total_count"], 1);
    assert_eq!(v["workflow_runs"][0]["status"], "queued");
    // a foreign, persistent runner with matching labels (case-insensitive) takes the jobs one by one
    let rid = h.add_runner(
        Scope::Repo(REPO.into()),
        "persistent-1",
        &["LINUX"],
        true,
        false,
    );
    assert!(
        sim.wait_until(Duration::from_secs(2), |s| s.github().runs()[0].status
            == "in_progress")
            .await
    );
    let (_, v) = gh
        .json(
            Method::GET,
            &format!("/repos/{REPO}/actions/runs?status=in_progress"),
            None,
        )
        .await;
    assert_eq!(v["total_count"], 1);
    let (_, v) = gh
        .json(
            Method::GET,
            &format!("/repos/{REPO}/actions/runners/{rid}"),
            None,
        )
        .await;
    assert_eq!(v["busy"], true);
    assert!(
        sim.wait_until(Duration::from_secs(3), |s| s.github().all_jobs_completed())
            .await
    );
    let build = h.job(run.job_ids[0]).unwrap();
    let test = h.job(run.job_ids[1]).unwrap();
    assert!(
        test.queued.unwrap() >= build.completed.unwrap(),
        "test queued only after build completed"
    );
    assert!(test.started.unwrap() >= test.queued.unwrap());
    assert_eq!(test.runner_name.as_deref(), Some("persistent-1"));
    assert!(
        sim.wait_until(Duration::from_secs(1), |s| s.github().runs()[0].status
            == "completed")
            .await
    );
    assert_eq!(h.runs()[0].conclusion.as_deref(), Some("success"));
    assert_eq!(h.runners().len(), 1, "a non-ephemeral runner stays");
    let (_, j) = gh
        .json(
            Method::GET,
            &format!("/repos/{REPO}/actions/jobs/{}", run.job_ids[1]),
            None,
        )
        .await;
    assert_eq!(
        (j["status"].as_str(), j["conclusion"].as_str()),
        (Some("completed"), Some("success"))
    );
    // a failed need skips the dependant
    let run2 = h.queue_run(
        REPO,
        vec![
            JobSpec::new("a", &["linux"]),
            JobSpec::new("b", &["linux"]).needs("a"),
        ],
    );
    assert!(
        sim.wait_until(Duration::from_secs(2), |s| s
            .github()
            .job(run2.job_ids[0])
            .unwrap()
            .status
            == JobStatus::InProgress)
            .await
    );
    h.set_runner_online(rid, false);
    assert!(
        sim.wait_until(Duration::from_secs(1), |s| s.github().all_jobs_completed())
            .await
    );
    assert_eq!(
        h.job(run2.job_ids[1]).unwrap().conclusion.as_deref(),
        Some("skipped")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn etag_304_is_free_and_rate_headers_count_down() {
    let sim = Sim::start(fast()).await.unwrap();
    let gh = Gh::new(&sim);
    sim.github()
        .queue_run(REPO, vec![JobSpec::new("x", &["gpu"])]);
    let url = format!("/repos/{REPO}/actions/runs?status=queued&per_page=100");
    let r1 = gh.send(Method::GET, &url, None, None).await;
    assert_eq!(r1.status(), StatusCode::OK);
    let etag = header(&r1, "etag");
    assert!(etag.starts_with("W/\""), "{etag}");
    assert_eq!(header(&r1, "x-ratelimit-limit"), "5000");
    assert_eq!(header(&r1, "x-ratelimit-remaining"), "4999");
    assert_eq!(header(&r1, "x-ratelimit-used"), "1");
    assert_eq!(header(&r1, "x-ratelimit-resource"), "core");
    assert!(header(&r1, "x-ratelimit-reset").parse::<i64>().unwrap() > 1_700_000_000);
    let r2 = gh.send(Method::GET, &url, None, Some(&etag)).await;
    assert_eq!(r2.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(&r2, "x-ratelimit-remaining"),
        "4999",
        "304 does not count"
    );
    assert_eq!(sim.github().rate_limit_remaining(), 4999);
    // a change invalidates the ETag
    sim.github()
        .queue_run(REPO, vec![JobSpec::new("y", &["gpu"])]);
    let r3 = gh.send(Method::GET, &url, None, Some(&etag)).await;
    assert_eq!(r3.status(), StatusCode::OK);
    assert_eq!(header(&r3, "x-ratelimit-remaining"), "4998");
    let (s, v) = gh.json(Method::GET, "/rate_limit", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["resources"]["core"]["remaining"], 4998,
        "rate_limit itself is free"
    );
    assert_eq!(sim.github().budgeted_requests(), 2);
    assert_eq!(
        sim.github()
            .request_count("GET", "/repos/{owner}/{repo}/actions/runs"),
        3
    );
    // primary budget exhausted
    sim.github().set_rate_limit_used(5000);
    let r = gh.send(Method::GET, &url, None, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    sim.shutdown().await;
}

#[tokio::test]
async fn pagination_follows_link_headers() {
    let sim = Sim::start(fast()).await.unwrap();
    let gh = Gh::new(&sim);
    for i in 0..5 {
        sim.github().add_runner(
            Scope::Repo(REPO.into()),
            &format!("r{i}"),
            &["linux"],
            false,
            true,
        );
    }
    let mut url = format!(
        "{}/repos/{REPO}/actions/runners?per_page=2",
        sim.github_url()
    );
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let r = gh.send(Method::GET, &url, None, None).await;
        let link = header(&r, "link");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["total_count"], 5);
        names.extend(
            v["runners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string()),
        );
        pages += 1;
        let next = link
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| {
                l.split(';')
                    .next()
                    .unwrap()
                    .trim_matches(['<', '>'])
                    .to_string()
            });
        if pages == 1 {
            assert!(link.contains("page=3>; rel=\"last\""), "{link}");
        }
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4"]);
    // jobs pagination
    let jobs: Vec<JobSpec> = (0..3)
        .map(|i| JobSpec::new(&format!("j{i}"), &["gpu"]))
        .collect();
    let run = sim.github().queue_run(REPO, jobs);
    let r = gh
        .send(
            Method::GET,
            &format!(
                "/repos/{REPO}/actions/runs/{}/jobs?per_page=2&page=2",
                run.run_id
            ),
            None,
            None,
        )
        .await;
    assert!(header(&r, "link").contains("rel=\"prev\""));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn jit_registration_tokens_and_runner_deletion() {
    let mut cfg = fast();
    cfg.github.orgs = vec!["octo-org".into()];
    let sim = Sim::start(cfg).await.unwrap();
    let gh = Gh::new(&sim);
    let body = json!({"name": "gh-runner-1", "runner_group_id": 1, "labels": ["linux", "x64"], "work_folder": "_work"});
    let (s, v) = gh
        .json(
            Method::POST,
            &format!("/repos/{REPO}/actions/runners/generate-jitconfig"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["runner"]["status"], "offline");
    assert!(v["encoded_jit_config"].as_str().unwrap().len() > 40);
    let (s, _) = gh
        .json(
            Method::POST,
            &format!("/repos/{REPO}/actions/runners/generate-jitconfig"),
            Some(body),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = gh
        .json(
            Method::POST,
            &format!("/repos/{REPO}/actions/runners/generate-jitconfig"),
            Some(json!({"name": "x", "runner_group_id": 1, "labels": []})),
        )
        .await;
    assert_eq!(s, 422);
    let (s, v) = gh
        .json(
            Method::POST,
            &format!("/repos/{REPO}/actions/runners/registration-token"),
            None,
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(v["token"].as_str().unwrap().len(), 29);
    let (s, _) = gh
        .json(
            Method::POST,
            &format!("/repos/{REPO}/actions/runners/remove-token"),
            None,
        )
        .await;
    assert_eq!(s, 201);
    // org scope and runner groups
    let (s, v) = gh
        .json(Method::GET, "/orgs/octo-org/actions/runner-groups", None)
        .await;
    assert_eq!(
        (s, &v["runner_groups"][0]["name"]),
        (200, &json!("Default"))
    );
    let (s, v) = gh
        .json(
            Method::POST,
            "/orgs/octo-org/actions/runners/generate-jitconfig",
            Some(json!({"name": "org-1", "runner_group_id": 1, "labels": ["linux"]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, v) = gh
        .json(Method::GET, "/orgs/octo-org/actions/runners", None)
        .await;
    assert_eq!(v["total_count"], 1);
    let (_, v) = gh
        .json(
            Method::GET,
            &format!("/repos/{REPO}/actions/runners?name=gh-runner-1"),
            None,
        )
        .await;
    let id = v["runners"][0]["id"].as_u64().unwrap();
    // deleting a busy runner is refused; an idle one goes
    sim.github()
        .queue_run(REPO, vec![JobSpec::new("j", &["self-hosted", "x64"])]);
    sim.github().set_runner_online(id, true);
    assert!(
        sim.wait_until(Duration::from_secs(1), |s| s
            .github()
            .runners()
            .iter()
            .any(|r| r.busy))
            .await
    );
    let (s, _) = gh
        .json(
            Method::DELETE,
            &format!("/repos/{REPO}/actions/runners/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        sim.wait_until(Duration::from_secs(2), |s| s.github().all_jobs_completed())
            .await
    );
    let (s, _) = gh
        .json(
            Method::GET,
            &format!("/repos/{REPO}/actions/runners/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 404, "ephemeral runner removed after its job");
    let (_, v) = gh
        .json(Method::GET, "/orgs/octo-org/actions/runners", None)
        .await;
    let org_id = v["runners"][0]["id"].as_u64().unwrap();
    let r = gh
        .send(
            Method::DELETE,
            &format!("/orgs/octo-org/actions/runners/{org_id}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        gh.json(Method::GET, "/repos/nobody/nothing/actions/runners", None)
            .await
            .0,
        404
    );
    assert_eq!(sim.github().issued_secrets().len(), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_secondary_limit_and_502_faults() {
    let sim = Sim::start(fast()).await.unwrap();
    let mut gh = Gh::new(&sim);
    gh.token = "wrong".into();
    assert_eq!(
        gh.json(Method::GET, &format!("/repos/{REPO}/actions/runners"), None)
            .await
            .0,
        401
    );
    gh.token = TOKEN.into();
    sim.github()
        .set_secondary_rate_limit(Duration::from_millis(1500));
    let r = gh
        .send(
            Method::GET,
            &format!("/repos/{REPO}/actions/runners"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&r, "retry-after"), "2");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        gh.json(Method::GET, &format!("/repos/{REPO}/actions/runners"), None)
            .await
            .0,
        200
    );
    sim.shutdown().await;

    let mut cfg = fast();
    cfg.faults.github_502_rate = 1.0;
    let sim = Sim::start(cfg).await.unwrap();
    let gh = Gh::new(&sim);
    assert_eq!(
        gh.json(Method::GET, &format!("/repos/{REPO}/actions/runners"), None)
            .await
            .0,
        502
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn app_jwt_mints_installation_token() {
    let mut cfg = fast();
    cfg.github.app = Some(AppSpec::test_app());
    let sim = Sim::start(cfg).await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(TEST_APP_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iat": now - 60, "exp": now + 540, "iss": "123456"}),
        &key,
    )
    .unwrap();
    let mut gh = Gh::new(&sim);
    gh.token = jwt;
    let (s, v) = gh
        .json(Method::GET, &format!("/repos/{REPO}/installation"), None)
        .await;
    assert_eq!((s, &v["id"]), (200, &json!(7890)));
    let (s, v) = gh
        .json(Method::POST, "/app/installations/7890/access_tokens", None)
        .await;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("ghs_"));
    // the PAT is not a JWT
    gh.token = TOKEN.into();
    assert_eq!(
        gh.json(Method::POST, "/app/installations/7890/access_tokens", None)
            .await
            .0,
        401
    );
    gh.token = token;
    assert_eq!(
        gh.json(Method::GET, &format!("/repos/{REPO}/actions/runners"), None)
            .await
            .0,
        200
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn registration_token_guest_registers_under_vm_name() {
    let sim = Sim::start(fast()).await.unwrap();
    let gh = Gh::new(&sim);
    let (_, v) = gh
        .json(
            Method::POST,
            &format!("/repos/{REPO}/actions/runners/registration-token"),
            None,
        )
        .await;
    let token = v["token"].as_str().unwrap().to_string();
    sim.github().queue_run(
        REPO,
        vec![JobSpec::new("build", &["self-hosted", "linux", "x64"])],
    );
    std::fs::write(
        sim.snippets_dir().unwrap().join("seed.yaml"),
        format!("#cloud-config\nruncmd:\n  - /opt/actions-runner/run-once.sh https://github.com/{REPO} {token} gh-runner-210 linux,x64\n"),
    )
    .unwrap();
    let pve = reqwest::Client::new();
    let call = |m: Method, path: &str, form: Vec<(&'static str, String)>| {
        pve.request(m, format!("{}{path}", sim.pve_url()))
            .header("Authorization", sim.pve_auth_header())
            .form(&form)
            .send()
    };
    let r = call(
        Method::POST,
        "/nodes/pve1/qemu/9000/clone",
        vec![("newid", "210".into()), ("name", "gh-runner-210".into())],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        sim.wait_until(Duration::from_secs(2), |s| s
            .pve()
            .vm(210)
            .is_some_and(|v| v.lock.is_none()))
            .await
    );
    let r = call(
        Method::PUT,
        "/nodes/pve1/qemu/210/config",
        vec![("cicustom", "user=ghr-snippets:snippets/seed.yaml".into())],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(Method::POST, "/nodes/pve1/qemu/210/status/start", vec![])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        sim.wait_until(Duration::from_secs(3), |s| s.github().all_jobs_completed())
            .await
    );
    assert_eq!(
        sim.github().jobs()[0].runner_name.as_deref(),
        Some("gh-runner-210")
    );
    assert!(
        sim.wait_until(Duration::from_secs(2), |s| s
            .pve()
            .vm(210)
            .is_some_and(|v| !v.running))
            .await
    );
    assert_eq!(
        sim.pve().vm(210).unwrap().guest.unwrap().phase,
        GuestPhase::Off
    );
    sim.shutdown().await;
}
