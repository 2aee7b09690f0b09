//! Webhook signature (official test vector and tampering) and `workflow_job` payloads.
//!
//! The `webhooks` part of the OpenAPI file carries no whole-payload examples for `workflow_job` (only
//! per-property `examples`), so payloads are built from each of the four official schemas: once with every
//! property (using the schema's own example values), once with only the required ones and nulls wherever the
//! schema allows null. Both must parse.

mod common;

use common::spec;
use github_runners::webhooks::{
    SignatureError, WorkflowJobAction, parse_workflow_job, signature_header, verify_signature,
};
use secrecy::SecretString;
use serde_json::{Map, Value, json};

const SECRET: &str = "It's a Secret to Everybody";
const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn official_test_vector_verifies() {
    let s = SecretString::from(SECRET);
    assert_eq!(verify_signature(&s, b"Hello, World!", Some(VECTOR)), Ok(()));
    assert_eq!(signature_header(&s, b"Hello, World!"), VECTOR);
}

#[test]
fn wrong_signature_missing_prefix_and_changed_body_are_rejected() {
    let s = SecretString::from(SECRET);
    let body = b"Hello, World!";
    let wrong = VECTOR.replace("757107", "757108");
    assert_eq!(
        verify_signature(&s, body, Some(&wrong)),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        verify_signature(&s, body, Some(VECTOR.trim_start_matches("sha256="))),
        Err(SignatureError::MissingPrefix)
    );
    assert_eq!(
        verify_signature(&s, body, None),
        Err(SignatureError::Missing)
    );
    for i in 0..body.len() {
        let mut changed = body.to_vec();
        changed[i] ^= 0x01;
        assert_eq!(
            verify_signature(&s, &changed, Some(VECTOR)),
            Err(SignatureError::Mismatch),
            "byte {i}"
        );
    }
    let mut longer = body.to_vec();
    longer.push(b' ');
    assert_eq!(
        verify_signature(&s, &longer, Some(VECTOR)),
        Err(SignatureError::Mismatch)
    );
    for malformed in [
        "sha256=",
        "sha256=xyz",
        "sha256=757107ea",
        "sha256= ",
        "sha256=ü",
        "sha1=757107ea",
    ] {
        assert!(
            verify_signature(&s, body, Some(malformed)).is_err(),
            "{malformed}"
        );
    }
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    common::resolve(doc, v)
}

fn first_type(schema: &Value) -> Option<String> {
    match &schema["type"] {
        Value::String(t) => Some(t.clone()),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .map(str::to_owned),
        _ => None,
    }
}

fn nullable(schema: &Value) -> bool {
    schema["type"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t == "null"))
        || schema["nullable"] == true
        || schema["enum"]
            .as_array()
            .is_some_and(|e| e.iter().any(Value::is_null))
}

/// Builds an instance of `schema`. `full`: every property with example values; else required only and nulls.
fn instance(doc: &Value, schema: &Value, name: &str, full: bool, depth: usize) -> Value {
    let schema = resolve(doc, schema);
    if depth > 12 {
        return Value::Null;
    }
    if let Some(all) = schema["allOf"].as_array() {
        let mut merged = Map::new();
        for s in all {
            if let Value::Object(m) = instance(doc, s, name, full, depth + 1) {
                merged.extend(m);
            }
        }
        return Value::Object(merged);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(variants) = schema[key].as_array() {
            let v = variants
                .iter()
                .map(|v| resolve(doc, v))
                .find(|v| v["type"] != "null")
                .unwrap_or(&Value::Null);
            return instance(doc, v, name, full, depth + 1);
        }
    }
    if !full && nullable(schema) {
        return Value::Null;
    }
    if let Some(e) = schema["examples"].as_array().and_then(|e| e.first()) {
        return e.clone();
    }
    if !schema["example"].is_null() {
        return schema["example"].clone();
    }
    if let Some(e) = schema["enum"]
        .as_array()
        .and_then(|e| e.iter().find(|v| !v.is_null()))
    {
        return e.clone();
    }
    match first_type(schema).as_deref() {
        Some("object") | None if schema["properties"].is_object() => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut m = Map::new();
            for (k, ps) in schema["properties"].as_object().into_iter().flatten() {
                if full || required.contains(&k.as_str()) {
                    m.insert(k.clone(), instance(doc, ps, k, full, depth + 1));
                }
            }
            Value::Object(m)
        }
        Some("object") => json!({}),
        Some("array") => json!([instance(doc, &schema["items"], name, full, depth + 1)]),
        Some("integer") => json!(4_200_000_001u64),
        Some("number") => json!(4_200_000_002.0),
        Some("boolean") => json!(false),
        Some("string") => {
            if schema["format"] == "date-time" || name.ends_with("_at") {
                json!("2024-05-01T12:00:00Z")
            } else if schema["format"] == "uri" {
                json!("https://example.com/x")
            } else {
                json!(format!("{name}-value"))
            }
        }
        _ => Value::Null,
    }
}

#[test]
fn official_workflow_job_schemas_parse_in_full_and_minimal_form() {
    let doc = &spec()["webhooks"];
    let cases = [
        ("workflow-job-queued", WorkflowJobAction::Queued, "queued"),
        (
            "workflow-job-in-progress",
            WorkflowJobAction::InProgress,
            "in_progress",
        ),
        (
            "workflow-job-completed",
            WorkflowJobAction::Completed,
            "completed",
        ),
        (
            "workflow-job-waiting",
            WorkflowJobAction::Waiting,
            "waiting",
        ),
    ];
    for (hook, action, _) in cases {
        let schema =
            &doc["webhooks"][hook]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{hook}");
        for full in [true, false] {
            let payload = instance(doc, schema, "", full, 0);
            let raw = serde_json::to_vec(&payload).unwrap();
            let ev = parse_workflow_job(&raw)
                .unwrap_or_else(|e| panic!("{hook} full={full}: {e}\n{payload:#}"));
            assert_eq!(ev.action, action, "{hook}");
            let job = &ev.workflow_job;
            assert_eq!(job.id, payload["workflow_job"]["id"].as_u64().unwrap());
            assert_eq!(
                job.run_id as f64,
                payload["workflow_job"]["run_id"].as_f64().unwrap()
            );
            assert_eq!(
                job.labels.len(),
                payload["workflow_job"]["labels"].as_array().unwrap().len()
            );
            assert_eq!(
                ev.repository.full_name,
                payload["repository"]["full_name"].as_str().unwrap()
            );
            if full {
                assert!(
                    ev.organization.is_some() && ev.installation.is_some(),
                    "{hook}"
                );
                assert!(job.created_at.is_some(), "{hook}");
            } else {
                assert!(
                    ev.organization.is_none() && ev.installation.is_none(),
                    "{hook}"
                );
            }
            // Nullable runner fields follow the payload exactly (null → None).
            let pj = &payload["workflow_job"];
            assert_eq!(
                job.runner_id.map(|v| v as f64),
                pj["runner_id"].as_f64(),
                "{hook} full={full}"
            );
            assert_eq!(
                job.runner_name.as_deref(),
                pj["runner_name"].as_str(),
                "{hook} full={full}"
            );
            assert_eq!(
                job.conclusion.as_deref(),
                pj["conclusion"].as_str(),
                "{hook} full={full}"
            );
            assert_eq!(job.status, pj["status"].as_str().unwrap());
        }
    }
}

#[test]
fn realistic_queued_delivery_parses_and_verifies() {
    let body = json!({
        "action": "queued",
        "workflow_job": {
            "id": 29679449, "run_id": 5829429, "run_attempt": 1, "name": "build",
            "workflow_name": "CI", "head_branch": "main", "status": "queued", "conclusion": null,
            "labels": ["self-hosted", "Linux", "X64"], "runner_id": null, "runner_name": null,
            "runner_group_id": null, "runner_group_name": null, "steps": [],
            "created_at": "2024-05-01T12:00:00Z", "started_at": "2024-05-01T12:00:00Z", "completed_at": null,
            "html_url": "https://github.com/octo-org/octo-repo/actions/runs/5829429/job/29679449"
        },
        "repository": {"id": 1296269, "name": "octo-repo", "full_name": "octo-org/octo-repo",
                       "owner": {"login": "octo-org", "id": 1}},
        "organization": {"login": "octo-org", "id": 1},
        "installation": {"id": 4242, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
        "sender": {"login": "octocat", "id": 1}
    });
    let raw = serde_json::to_vec(&body).unwrap();
    let secret = SecretString::from("whsec-test");
    let sig = signature_header(&secret, &raw);
    verify_signature(&secret, &raw, Some(&sig)).unwrap();
    let ev = parse_workflow_job(&raw).unwrap();
    assert_eq!(ev.action, WorkflowJobAction::Queued);
    assert_eq!(ev.workflow_job.labels, ["self-hosted", "Linux", "X64"]);
    assert_eq!(ev.workflow_job.runner_id, None);
    assert_eq!(ev.installation.unwrap().id, 4242);
    assert_eq!(ev.organization.unwrap().login, "octo-org");
    assert!(parse_workflow_job(b"{\"action\":\"queued\"}").is_err());
}
