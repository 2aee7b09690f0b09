//! Shared helpers for the integration tests: a wiremock server with a catch-all that fails on any
//! unexpected request, a client pointed at it, a raw HTTP server for custom reason phrases, and
//! the schema-conformance check every test runs over the requests it sent.

#![allow(dead_code)]

pub mod schema;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxmox_api::{ProxmoxClient, ProxmoxConfig, RequestEvent, RequestObserver, TlsMode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;
use wiremock::matchers::{any, header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

pub const TOKEN_ID: &str = "dispatcher@pve!runners";
pub const TOKEN_SECRET: &str = "5e1f3c2a-SECRET-d00d-4bad-feedbeef0001";
pub const AUTH: &str = "PVEAPIToken=dispatcher@pve!runners=5e1f3c2a-SECRET-d00d-4bad-feedbeef0001";

/// Records every observer event.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<RequestEvent>>);

impl RequestObserver for Recorder {
    fn on_request(&self, event: &RequestEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

pub struct Pve {
    pub server: MockServer,
    pub client: ProxmoxClient,
    pub events: Arc<Recorder>,
}

pub fn config_for(base: &str) -> ProxmoxConfig {
    ProxmoxConfig {
        base_url: Url::parse(base).unwrap(),
        token_id: TOKEN_ID.into(),
        token_secret: SecretString::from(TOKEN_SECRET.to_owned()),
        tls: TlsMode::SystemRoots,
        timeout: Duration::from_secs(5),
    }
}

/// A mock PVE with a lowest-priority catch-all that answers 599 and expects zero calls (so the
/// server panics on drop listing any request nobody expected).
pub async fn pve() -> Pve {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(418).set_body_json(json!({
            "data": null, "message": "unexpected request (no mock matched)\n"
        })))
        .with_priority(u8::MAX)
        .expect(0)
        .named("catch-all: unexpected request")
        .mount(&server)
        .await;
    let events = Arc::new(Recorder::default());
    let client = ProxmoxClient::new(config_for(&format!("{}/api2/json", server.uri())))
        .unwrap()
        .with_observer(events.clone());
    Pve {
        server,
        client,
        events,
    }
}

/// A mock for `METHOD /api2/json{api_path}` that also requires the token header.
pub fn on(http_method: &str, api_path: &str) -> MockBuilder {
    Mock::given(method(http_method))
        .and(path(format!("/api2/json{api_path}")))
        .and(header("authorization", AUTH))
}

/// `{"data": data}` with status 200.
pub fn data(data: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "data": data }))
}

/// A PVE 8.4+ style error answer.
pub fn pve_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({ "data": null, "message": format!("{message}\n") }))
}

impl Pve {
    /// Checks every received request against the PVE schema; returns their `METHOD path-template`s.
    pub async fn check_schema(&self) -> Vec<String> {
        let requests = self.server.received_requests().await.unwrap_or_default();
        let recorded: Vec<schema::Sent> =
            requests.iter().map(schema::Sent::from_wiremock).collect();
        schema::check_all(&recorded)
    }
}

/// A UPID on `node` for a task of `kind` on `id`.
pub fn upid(node: &str, kind: &str, id: &str) -> String {
    format!("UPID:{node}:000A1B2C:0123ABCD:6650F00D:{kind}:{id}:{TOKEN_ID}:")
}

/// A raw HTTP/1.1 server answering each connection with the next canned response (status line
/// with any reason phrase). Returns the base URL (…/api2/json) and the requests it received.
pub async fn raw_server(responses: Vec<String>) -> (String, Arc<Mutex<Vec<schema::Sent>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        for response in responses {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by content-length.
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            seen2
                .lock()
                .unwrap()
                .push(schema::Sent::from_raw(&head, &buf[head_end..]));
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    (format!("http://{addr}/api2/json"), seen)
}

/// A raw HTTP response with a custom reason phrase.
pub fn raw_response(status_line: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json;charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The form body of the `i`-th received request as a map (panics if there is none).
pub async fn form_of(server: &MockServer, i: usize) -> std::collections::BTreeMap<String, String> {
    let reqs = server.received_requests().await.unwrap();
    let r = &reqs[i];
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/x-www-form-urlencoded"),
        "content-type {ct:?}"
    );
    url::form_urlencoded::parse(&r.body).into_owned().collect()
}
