//! Spec conformance. Every test file checks all requests its mock servers received against the OpenAPI
//! `rest` document (`Harness::finish`). This file additionally drives every operation the client can send, in
//! both scopes and behind a GHES prefix, and shows that the checker rejects what it should.

mod common;

use std::collections::BTreeSet;

use common::{Harness, check_request, example, jobs_page, runs_page};
use github_runners::{Auth, GitHubClient, GitHubRunners, JitRequest, Scope};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

async fn mount_everything(h: &Harness, p: &str) {
    let ok = |v| ResponseTemplate::new(200).set_body_json(v);
    let created = |v| ResponseTemplate::new(201).set_body_json(v);
    let mounts: Vec<(&str, String, ResponseTemplate)> = vec![
        (
            "GET",
            format!(r"^{p}/repos/[^/]+/[^/]+/actions/runs$"),
            ok(runs_page(&[1])),
        ),
        (
            "GET",
            format!(r"^{p}/repos/[^/]+/[^/]+/actions/runs/1/jobs$"),
            ok(jobs_page(&[(9, 1, "queued", &["self-hosted"])])),
        ),
        (
            "GET",
            format!(r"^{p}/repos/[^/]+/[^/]+/actions/jobs/\d+$"),
            ok(example("job")),
        ),
        (
            "GET",
            format!(r"^{p}/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/runners$"),
            ok(example("runner-paginated")),
        ),
        (
            "GET",
            format!(r"^{p}/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/runners/\d+$"),
            ok(example("runner")),
        ),
        (
            "DELETE",
            format!(r"^{p}/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/runners/\d+$"),
            ResponseTemplate::new(204),
        ),
        (
            "POST",
            format!(r"^{p}/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/runners/registration-token$"),
            created(example("authentication-token")),
        ),
        (
            "POST",
            format!(r"^{p}/(repos/[^/]+/[^/]+|orgs/[^/]+)/actions/runners/generate-jitconfig$"),
            created(example("runner-jitconfig")),
        ),
        (
            "GET",
            format!(r"^{p}/rate_limit$"),
            ok(example("rate-limit-overview")),
        ),
    ];
    for (m, re, resp) in mounts {
        Mock::given(method(m))
            .and(path_regex(re))
            .respond_with(resp)
            .mount(&h.server)
            .await;
    }
}

async fn drive(c: &GitHubClient) {
    assert_eq!(c.queued_jobs().await.unwrap().len(), 1);
    c.job_in("octo-org/octo-repo", 399444496).await.unwrap();
    assert_eq!(c.list_runners().await.unwrap().len(), 2);
    c.runner(23).await.unwrap();
    c.delete_runner(23).await.unwrap();
    c.registration_token().await.unwrap();
    c.generate_jit_config(&JitRequest::new(
        "ghr-1",
        vec!["self-hosted".into(), "linux".into()],
    ))
    .await
    .unwrap();
    c.rate_limit().await.unwrap();
}

#[tokio::test]
async fn every_operation_in_both_scopes_conforms() {
    let mut covered = BTreeSet::new();
    for prefix in ["", "/api/v3"] {
        let h = Harness::start_with_prefix(prefix).await;
        mount_everything(&h, prefix).await;
        drive(&h.client()).await;
        drive(
            &h.client_for(Scope::org("octo-org"))
                .with_repositories(["octo-repo"]),
        )
        .await;
        h.finish().await;
        for r in h.server.received_requests().await.unwrap() {
            covered.insert(check_request(&r, prefix).unwrap());
        }
    }
    // App installation token (a real App client with a key generated here).
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path("/app/installations/1/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(example("installation-token")))
        .expect(1)
        .mount(&h.server)
        .await;
    mount_everything(&h, "").await;
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pem = common::pem(
        "PRIVATE KEY",
        aws_lc_rs::encoding::AsDer::as_der(&kp).unwrap().as_ref(),
    );
    let auth = Auth::App {
        app_id: "1".into(),
        installation_id: 1,
        private_key_pem: SecretString::from(pem),
    };
    let app = GitHubClient::new(h.config(Scope::repo("octo-org", "octo-repo"), auth)).unwrap();
    // The example token expired in 2016, so each call mints a new one: make a single call.
    app.runner(23).await.unwrap();
    for r in h.server.received_requests().await.unwrap() {
        covered.insert(check_request(&r, "").unwrap());
    }
    let expected: BTreeSet<String> = [
        "GET /repos/{owner}/{repo}/actions/runs",
        "GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
        "GET /repos/{owner}/{repo}/actions/jobs/{job_id}",
        "GET /repos/{owner}/{repo}/actions/runners",
        "GET /repos/{owner}/{repo}/actions/runners/{runner_id}",
        "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}",
        "POST /repos/{owner}/{repo}/actions/runners/registration-token",
        "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig",
        "GET /orgs/{org}/actions/runners",
        "GET /orgs/{org}/actions/runners/{runner_id}",
        "DELETE /orgs/{org}/actions/runners/{runner_id}",
        "POST /orgs/{org}/actions/runners/registration-token",
        "POST /orgs/{org}/actions/runners/generate-jitconfig",
        "POST /app/installations/{installation_id}/access_tokens",
        "GET /rate_limit",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(covered, expected);
    h.finish().await;
}

fn good_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "accept",
        HeaderValue::from_static("application/vnd.github+json"),
    );
    h.insert(
        "x-github-api-version",
        HeaderValue::from_static("2022-11-28"),
    );
    h.insert("user-agent", HeaderValue::from_static("t"));
    h.insert("authorization", HeaderValue::from_static("Bearer x"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn req(m: Method, url: &str, body: serde_json::Value) -> Request {
    Request {
        url: format!("http://127.0.0.1{url}").parse().unwrap(),
        method: m,
        headers: good_headers(),
        body: if body.is_null() {
            vec![]
        } else {
            serde_json::to_vec(&body).unwrap()
        },
    }
}

#[test]
fn the_checker_rejects_nonconforming_requests() {
    let jit = "/repos/o/r/actions/runners/generate-jitconfig";
    let good = json!({"name": "n", "runner_group_id": 1, "labels": ["a"], "work_folder": "_work"});
    assert!(check_request(&req(Method::POST, jit, good.clone()), "").is_ok());
    let bad = [
        (
            req(Method::GET, "/repos/o/r/actions/workflows", json!(null)),
            "unknown path",
        ),
        (
            req(Method::PUT, "/repos/o/r/actions/runners/1", json!(null)),
            "unknown method",
        ),
        (
            req(Method::GET, "/repos/o/r/actions/runners/abc", json!(null)),
            "non-integer path param",
        ),
        (
            req(
                Method::GET,
                "/repos/o/r/actions/runs?state=queued",
                json!(null),
            ),
            "undeclared query",
        ),
        (
            req(
                Method::GET,
                "/repos/o/r/actions/runs?status=bogus",
                json!(null),
            ),
            "enum violation",
        ),
        (
            req(
                Method::GET,
                "/repos/o/r/actions/runs?per_page=many",
                json!(null),
            ),
            "non-integer query",
        ),
        (
            req(
                Method::GET,
                "/repos/o/r/actions/runs/1/jobs?filter=newest",
                json!(null),
            ),
            "filter enum",
        ),
        (
            req(Method::POST, jit, json!({"name": "n", "labels": ["a"]})),
            "missing runner_group_id",
        ),
        (
            req(
                Method::POST,
                jit,
                json!({"name": "n", "runner_group_id": 1, "labels": []}),
            ),
            "labels minItems",
        ),
        (
            req(
                Method::POST,
                jit,
                json!({"name": "n", "runner_group_id": "1", "labels": ["a"]}),
            ),
            "type",
        ),
        (req(Method::POST, jit, json!(null)), "required body missing"),
        (
            req(
                Method::DELETE,
                "/repos/o/r/actions/runners/1",
                json!({"x": 1}),
            ),
            "body without requestBody",
        ),
    ];
    for (r, why) in bad {
        assert!(check_request(&r, "").is_err(), "checker accepted: {why}");
    }
    let mut no_version = req(Method::GET, "/rate_limit", json!(null));
    no_version.headers.remove("x-github-api-version");
    assert!(check_request(&no_version, "").is_err());
    let mut wrong_accept = req(Method::GET, "/rate_limit", json!(null));
    wrong_accept
        .headers
        .insert("accept", HeaderValue::from_static("application/json"));
    assert!(check_request(&wrong_accept, "").is_err());
}

/// The catch-all really fails a test on an unexpected request.
#[tokio::test]
async fn catch_all_fails_on_unexpected_requests() {
    let outcome = tokio::spawn(async {
        let h = Harness::start().await;
        // No mocks: this request hits the catch-all (418) and dropping the server must panic.
        let err = h.client().runner(1).await.unwrap_err();
        assert!(
            matches!(err, github_runners::Error::Api { status: 418, .. }),
            "{err}"
        );
        drop(h);
    })
    .await;
    assert!(outcome.is_err(), "the catch-all did not fail the test");
}
