//! Shared test harness: the OpenAPI document (fixtures + conformance check) and a wiremock server with a
//! lowest-priority catch-all that fails the test on any unexpected request.
#![allow(dead_code)]

use std::sync::OnceLock;

use github_runners::{Auth, GitHubClient, GitHubConfig, RetryPolicy, Scope};
use secrecy::SecretString;
use serde_json::Value;
use url::Url;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub const TOKEN: &str = "ghp_TESTtokenValue0123456789abcdefABCDEF";

/// The OpenAPI data file shipped beside the repository.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/api/github-actions-runners.openapi.json"
        );
        let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        serde_json::from_str(&raw).unwrap()
    })
}

pub fn rest() -> &'static Value {
    &spec()["rest"]
}

/// An official example response, `rest.components.examples.NAME.value`.
pub fn example(name: &str) -> Value {
    let v = &rest()["components"]["examples"][name]["value"];
    assert!(!v.is_null(), "no official example {name}");
    v.clone()
}

/// Resolves a local `$ref` inside `doc`.
pub fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r.trim_start_matches('#');
            resolve(
                doc,
                doc.pointer(ptr)
                    .unwrap_or_else(|| panic!("dangling $ref {r}")),
            )
        }
        None => v,
    }
}

/// A mock GitHub: catch-all mounted at the lowest priority with `.expect(0)`.
pub struct Harness {
    pub server: MockServer,
    /// Path prefix of the API base (GHES `/api/v3`), stripped before matching spec paths.
    pub prefix: String,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with_prefix("").await
    }

    pub async fn start_with_prefix(prefix: &str) -> Self {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(418).set_body_string("unexpected request"))
            .with_priority(u8::MAX)
            .expect(0)
            .named("catch-all: unexpected request")
            .mount(&server)
            .await;
        Self {
            server,
            prefix: prefix.to_owned(),
        }
    }

    pub fn uri(&self) -> String {
        format!("{}{}", self.server.uri(), self.prefix)
    }

    pub fn config(&self, scope: Scope, auth: Auth) -> GitHubConfig {
        GitHubConfig {
            api_url: Url::parse(&self.uri()).unwrap(),
            scope,
            auth,
            user_agent: "github-runners-tests".to_owned(),
        }
    }

    /// A PAT client for `octo-org/octo-repo` with fast retries.
    pub fn client(&self) -> GitHubClient {
        self.client_for(Scope::repo("octo-org", "octo-repo"))
    }

    pub fn client_for(&self, scope: Scope) -> GitHubClient {
        GitHubClient::new(self.config(scope, Auth::Token(SecretString::from(TOKEN))))
            .unwrap()
            .with_retry_policy(fast_retry())
    }

    /// Checks every request received so far against the OpenAPI document; returns how many there were.
    pub async fn finish(&self) -> usize {
        let reqs = self.server.received_requests().await.unwrap_or_default();
        let mut errors = Vec::new();
        for r in &reqs {
            if let Err(e) = check_request(r, &self.prefix) {
                errors.push(format!("{} {}: {e}", r.method, r.url));
            }
        }
        assert!(
            errors.is_empty(),
            "requests not conforming to the OpenAPI document:\n{}",
            errors.join("\n")
        );
        reqs.len()
    }
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(5),
    }
}

fn type_ok(schema: &Value, v: &Value) -> bool {
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => v.as_i64().is_some() || v.as_u64().is_some(),
        Some("number") => v.is_number(),
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("array") => v.as_array().is_some_and(|items| {
            let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) as usize;
            let max = schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .map_or(usize::MAX, |m| m as usize);
            let item_schema = schema.get("items").cloned().unwrap_or(Value::Null);
            items.len() >= min
                && items.len() <= max
                && items.iter().all(|i| type_ok(&item_schema, i))
        }),
        Some("object") => v.is_object(),
        _ => true,
    }
}

fn scalar_ok(schema: &Value, raw: &str) -> bool {
    let typed = match schema.get("type").and_then(Value::as_str) {
        Some("integer") => raw.parse::<i64>().is_ok(),
        Some("number") => raw.parse::<f64>().is_ok(),
        Some("boolean") => raw == "true" || raw == "false",
        _ => true,
    };
    let in_enum = match schema.get("enum").and_then(Value::as_array) {
        Some(values) => values.iter().any(|e| match e {
            Value::String(s) => s == raw,
            other => other.to_string().as_str() == raw,
        }),
        None => true,
    };
    typed && in_enum
}

/// Does `req` name a path + method of the `rest` document, with declared and well-typed path and query
/// parameters, a JSON body carrying the schema's required properties, and the mandatory headers?
pub fn check_request(req: &Request, prefix: &str) -> Result<String, String> {
    let doc = rest();
    let header = |n: &str| {
        req.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if header("accept") != "application/vnd.github+json" {
        return Err(format!("Accept is {:?}", header("accept")));
    }
    if header("x-github-api-version") != "2022-11-28" {
        return Err("missing X-GitHub-Api-Version: 2022-11-28".into());
    }
    if header("user-agent").is_empty() || !header("authorization").starts_with("Bearer ") {
        return Err("missing User-Agent or Authorization: Bearer".into());
    }
    let path = req
        .url
        .path()
        .strip_prefix(prefix)
        .ok_or("path outside the API prefix")?;
    let method = req.method.as_str().to_ascii_lowercase();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut reasons = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        let tsegs: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let Some(op) = item.get(&method) else {
            continue;
        };
        let mut params: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if let Some(common) = item.get("parameters").and_then(Value::as_array) {
            params.extend(common.iter());
        }
        let params: Vec<&Value> = params.into_iter().map(|p| resolve(doc, p)).collect();
        let mut ok = true;
        for (t, s) in tsegs.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                let p = params
                    .iter()
                    .find(|p| p["in"] == "path" && p["name"] == name);
                let schema = p
                    .map(|p| resolve(doc, &p["schema"]))
                    .cloned()
                    .unwrap_or(Value::Null);
                if s.is_empty() || !scalar_ok(&schema, s) {
                    ok = false;
                }
            } else if t != s {
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        // Query parameters: declared, well-typed.
        let mut query_errors = Vec::new();
        for (k, v) in req.url.query_pairs() {
            match params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == k.as_ref())
            {
                None => query_errors.push(format!("undeclared query parameter {k}")),
                Some(p) => {
                    if !scalar_ok(resolve(doc, &p["schema"]), &v) {
                        query_errors
                            .push(format!("query parameter {k}={v} does not fit its schema"));
                    }
                }
            }
        }
        // Body.
        let body_schema = op.get("requestBody").map(|rb| resolve(doc, rb)).map(|rb| {
            (
                rb["required"].as_bool().unwrap_or(false),
                resolve(doc, &rb["content"]["application/json"]["schema"]),
            )
        });
        match body_schema {
            None if !req.body.is_empty() => {
                query_errors.push("body sent to an operation without requestBody".into())
            }
            None => {}
            Some((true, _)) if req.body.is_empty() => {
                query_errors.push("required request body missing".into());
            }
            Some((false, _)) if req.body.is_empty() => {}
            Some((_, schema)) => match serde_json::from_slice::<Value>(&req.body) {
                Err(e) => query_errors.push(format!("body is not JSON: {e}")),
                Ok(body) => {
                    if header("content-type") != "application/json" {
                        query_errors.push(format!("content-type {:?}", header("content-type")));
                    }
                    for r in schema["required"].as_array().into_iter().flatten() {
                        let r = r.as_str().unwrap();
                        if body.get(r).is_none() {
                            query_errors.push(format!("body lacks required property {r}"));
                        }
                    }
                    for (k, v) in body.as_object().into_iter().flatten() {
                        match schema["properties"].get(k) {
                            None => {
                                query_errors.push(format!("body property {k} not in the schema"))
                            }
                            Some(ps) => {
                                if !type_ok(resolve(doc, ps), v) {
                                    query_errors
                                        .push(format!("body property {k} does not fit its schema"));
                                }
                            }
                        }
                    }
                }
            },
        }
        if query_errors.is_empty() {
            return Ok(format!("{} {template}", method.to_ascii_uppercase()));
        }
        reasons.push(format!("{template}: {}", query_errors.join("; ")));
    }
    if reasons.is_empty() {
        Err(format!(
            "no operation {method} {path} in the OpenAPI document"
        ))
    } else {
        Err(reasons.join(" | "))
    }
}

/// Minimal base64 (standard alphabet, padded) for PEM encoding in tests.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Current unix time.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A `workflow-run-paginated` example page with the given run ids.
pub fn runs_page(ids: &[u64]) -> Value {
    let mut page = example("workflow-run-paginated");
    let template = page["workflow_runs"][0].clone();
    page["workflow_runs"] = ids
        .iter()
        .map(|id| {
            let mut r = template.clone();
            r["id"] = (*id).into();
            r
        })
        .collect();
    page["total_count"] = ids.len().into();
    page
}

/// A `job-paginated` example page with jobs `(id, run_id, status, labels)`.
pub fn jobs_page(jobs: &[(u64, u64, &str, &[&str])]) -> Value {
    let mut page = example("job-paginated");
    let template = page["jobs"][0].clone();
    page["jobs"] = jobs
        .iter()
        .map(|(id, run_id, status, labels)| {
            let mut j = template.clone();
            j["id"] = (*id).into();
            j["run_id"] = (*run_id).into();
            j["status"] = (*status).into();
            j["labels"] = labels.iter().map(|l| Value::from(*l)).collect();
            if *status != "completed" {
                j["conclusion"] = Value::Null;
                j["completed_at"] = Value::Null;
            }
            if *status == "queued" {
                j["runner_id"] = Value::Null;
                j["runner_name"] = Value::Null;
            }
            j
        })
        .collect();
    page["total_count"] = jobs.len().into();
    page
}
