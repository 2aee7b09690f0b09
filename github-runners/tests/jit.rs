//! JIT runner configs: request body, official response example, 409 conflict, input validation.

mod common;

use common::{Harness, example};
use github_runners::{Error, GitHubRunners, JitRequest, Scope};
use secrecy::ExposeSecret;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

const JIT: &str = "/repos/octo-org/octo-repo/actions/runners/generate-jitconfig";

#[tokio::test]
async fn body_has_all_fields_and_response_decodes() {
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(JIT))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "ghr-linux-201",
            "runner_group_id": 3,
            "labels": ["self-hosted", "linux", "x64"],
            "work_folder": "_work"
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(example("runner-jitconfig")))
        .expect(1)
        .mount(&h.server)
        .await;
    let mut req = JitRequest::new(
        "ghr-linux-201",
        vec!["self-hosted".into(), "linux".into(), "x64".into()],
    );
    assert_eq!(
        (req.runner_group_id, req.work_folder.as_str()),
        (1, "_work")
    );
    req.runner_group_id = 3;
    let jit = h.client().generate_jit_config(&req).await.unwrap();
    assert_eq!(jit.runner.id, 23);
    assert_eq!(jit.runner.name, "New runner");
    assert_eq!(jit.runner.status, "offline");
    assert_eq!(jit.encoded_jit_config.expose_secret(), "abc123");
    let dbg = format!("{jit:?}");
    assert!(
        dbg.contains("New runner") && !dbg.contains("abc123"),
        "{dbg}"
    );
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn duplicate_name_409_is_a_distinct_error() {
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path("/orgs/octo-org/actions/runners/generate-jitconfig"))
        .respond_with(ResponseTemplate::new(409).set_body_json(json!({
            "message": "Already exists - A runner with the name ghr-1 already exists.",
            "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"
        })))
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h
        .client_for(Scope::org("octo-org"))
        .generate_jit_config(&JitRequest::new("ghr-1", vec!["self-hosted".into()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::JitNameConflict { name } if name == "ghr-1"),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn validation_422_is_an_api_error() {
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(JIT))
        .respond_with(
            ResponseTemplate::new(422).set_body_json(json!({"message": "Validation Failed"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h
        .client()
        .generate_jit_config(&JitRequest::new("r", vec!["x".into()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Api { status: 422, message, .. } if message == "Validation Failed"),
        "{err}"
    );
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn bad_input_is_rejected_before_any_request() {
    let h = Harness::start().await;
    let c = h.client();
    for (req, field) in [
        (JitRequest::new("r", vec![]), "labels"),
        (
            JitRequest::new("r", (0..101).map(|i| format!("l{i}")).collect()),
            "labels",
        ),
        (
            JitRequest::new("r", vec!["ok".into(), " ".into()]),
            "labels",
        ),
        (JitRequest::new(" ", vec!["ok".into()]), "name"),
    ] {
        let err = c.generate_jit_config(&req).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field: f, .. } if *f == field),
            "{err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
    assert_eq!(h.finish().await, 0);
}
