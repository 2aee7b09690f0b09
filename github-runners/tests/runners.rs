//! Runner registrations: list (paginated), get, delete (busy → 422), registration token; repo and org scope.

mod common;

use common::{Harness, example};
use github_runners::{Error, GitHubRunners, Scope};
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn list_runners_paginated_from_official_example() {
    let h = Harness::start().await;
    let p = "/repos/octo-org/octo-repo/actions/runners";
    let next = format!("<{}{p}?per_page=100&page=2>; rel=\"next\"", h.uri());
    Mock::given(method("GET"))
        .and(path(p))
        .and(query_param("per_page", "100"))
        .and(query_param_is_missing("page"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(example("runner-paginated"))
                .insert_header("link", next),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let mut second = example("runner-paginated");
    second["runners"] = json!([example("runner")]);
    Mock::given(method("GET"))
        .and(path(p))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(second))
        .expect(1)
        .mount(&h.server)
        .await;

    let runners = h.client().list_runners().await.unwrap();
    let names: Vec<&str> = runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["linux_runner", "mac_runner", "MBP"]);
    let linux = &runners[0];
    assert_eq!(
        (
            linux.id,
            linux.os.as_str(),
            linux.status.as_str(),
            linux.busy
        ),
        (23, "linux", "online", true)
    );
    assert!(linux.is_online());
    assert!(!runners[1].is_online());
    assert_eq!(linux.labels[0].name, "self-hosted");
    assert_eq!(linux.labels[0].id, Some(5));
    assert_eq!(linux.labels[0].kind.as_deref(), Some("read-only"));
    assert_eq!(runners[2].labels[3].kind.as_deref(), Some("custom"));
    assert_eq!(h.finish().await, 2);
}

#[tokio::test]
async fn org_scope_uses_org_endpoints() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path("/orgs/octo-org/actions/runners"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner-paginated")))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path("/orgs/octo-org/actions/runners/23"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner")))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/orgs/octo-org/actions/runners/24"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("POST"))
        .and(path("/orgs/octo-org/actions/runners/registration-token"))
        .respond_with(ResponseTemplate::new(201).set_body_json(example("authentication-token")))
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client_for(Scope::org("octo-org"));
    assert_eq!(c.list_runners().await.unwrap().len(), 2);
    assert_eq!(c.runner(23).await.unwrap().name, "MBP");
    c.delete_runner(24).await.unwrap();
    let t = c.registration_token().await.unwrap();
    assert_eq!(t.token.expose_secret(), "LLBF3JGZDX3P5PMEXLND6TS6FCWO6");
    assert_eq!(h.finish().await, 4);
}

#[tokio::test]
async fn get_and_delete_runner() {
    let h = Harness::start().await;
    let base = "/repos/octo-org/octo-repo/actions/runners";
    Mock::given(method("GET"))
        .and(path(format!("{base}/23")))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner")))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{base}/23")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{base}/24")))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "Bad request - Runner \"mac_runner\" is still running a job\"",
            "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"
        })))
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{base}/25")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    let r = c.runner(23).await.unwrap();
    assert_eq!(
        (r.id, r.name.as_str(), r.os.as_str(), r.busy, r.ephemeral),
        (23, "MBP", "macos", true, Some(false))
    );
    c.delete_runner(23).await.unwrap();
    let busy = c.delete_runner(24).await.unwrap_err();
    assert!(matches!(busy, Error::RunnerBusy { id: 24 }), "{busy}");
    assert!(!busy.is_retryable());
    let gone = c.delete_runner(25).await.unwrap_err();
    assert!(
        matches!(
            gone,
            Error::NotFound {
                endpoint: "/repos/{owner}/{repo}/actions/runners/{runner_id}"
            }
        ),
        "{gone}"
    );
    assert_eq!(h.finish().await, 4);
}

#[tokio::test]
async fn registration_token_is_secret() {
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/repos/octo-org/octo-repo/actions/runners/registration-token",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(example("authentication-token")))
        .expect(1)
        .mount(&h.server)
        .await;
    let t = h.client().registration_token().await.unwrap();
    assert_eq!(t.token.expose_secret(), "LLBF3JGZDX3P5PMEXLND6TS6FCWO6");
    // 2020-01-22T12:13:35.123-08:00
    assert_eq!(t.expires_at.unix_timestamp(), 1579724015);
    let dbg = format!("{t:?}");
    assert!(
        !dbg.contains("LLBF3JGZDX3P5PMEXLND6TS6FCWO6") && dbg.contains("REDACTED"),
        "{dbg}"
    );
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn ghes_prefix_and_runner_url() {
    let h = Harness::start_with_prefix("/api/v3").await;
    Mock::given(method("GET"))
        .and(path("/api/v3/repos/octo-org/octo-repo/actions/runners"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner-paginated")))
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    assert_eq!(c.list_runners().await.unwrap().len(), 2);
    let web = c.config().runner_url();
    assert_eq!(
        web.as_str(),
        format!("{}/octo-org/octo-repo", h.server.uri())
    );
    assert_eq!(h.finish().await, 1);
}
