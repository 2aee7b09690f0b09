//! The HTTP listeners of `dispatcher run`: `POST /webhook` on `LISTEN_ADDR`; `GET /metrics`, `GET /healthz`
//! and `GET /readyz` on `METRICS_ADDR` when it is set, else on `LISTEN_ADDR` too.
//!
//! The webhook is a trigger, never a command: a verified `workflow_job` `queued` (or `completed`) delivery
//! for a job one of our pools serves asks the reconciler for a pass at once and is answered `202` without
//! waiting for it; the pass then decides from what GitHub and Proxmox say. Without `WEBHOOK_SECRET` the
//! listener serves only metrics and health, and `/webhook` answers `404` (an unsigned webhook endpoint
//! would let anyone make the dispatcher poll).
//!
//! | request | answer |
//! |---|---|
//! | bad, missing or non-`sha256=` signature | `401 invalid signature` (the reason goes to the log) |
//! | no `X-GitHub-Event` | `400` |
//! | delivery id seen before (last [`REMEMBERED_DELIVERIES`]) | `200 duplicate delivery` |
//! | `ping` | `200 pong` |
//! | `workflow_job` `queued`/`completed` for one of our pools | `202`, a pass is triggered |
//! | any other event, action or a job no pool serves | `204` |
//! | unparseable `workflow_job` | `400` (the body is never logged nor echoed) |
//! | body larger than [`Limits::max_body_bytes`] | `413` |
//! | request not answered within [`Limits::request_timeout`] (e.g. a body that trickles in) | `408` |
//!
//! Nothing an unauthenticated client sends is logged or echoed: a delivery rejected for its signature is
//! logged without its delivery id, and `/readyz` says only `ready` or a generic reason (the detail of a
//! failed pass is in the log).
//!
//! The listener is plain HTTP/1.1 (hyper) with the [`Limits`]: a client must send its request head within
//! [`Limits::header_read_timeout`] (an idle keep-alive connection is closed after it too), at most
//! [`Limits::max_connections`] connections are open at once (a connection beyond that is closed at once),
//! and bodies and requests are bounded as in the table.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use github_runners::webhooks::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, WorkflowJobAction, parse_workflow_job,
    verify_signature,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use pool_scheduler::MatchResult;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::config::RuntimeConfig;
use crate::metrics::{CONTENT_TYPE, Delivery, Metrics};
use crate::reconciler::Reconciler;

/// Bounds of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A client must send its whole request head (request line and headers) within this time, counted
    /// from the connection (or the end of its previous request); else the connection is closed.
    pub header_read_timeout: Duration,
    /// A request (reading its body included) must be answered within this time; else `408`.
    pub request_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Largest request body; a larger one is answered `413`.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    /// 10 s for the head, 10 s per request (GitHub gives up on a delivery after 10 s), 64 connections,
    /// 256 KiB bodies (a `workflow_job` delivery is a few KB; GitHub caps payloads at 25 MB).
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 64,
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Largest request head (request line and headers) read into memory (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// `/webhook` (when a secret is configured), `/metrics`, `/healthz`, `/readyz`: `LISTEN_ADDR` without
    /// `METRICS_ADDR`.
    All,
    /// `/webhook` only: `LISTEN_ADDR` when `METRICS_ADDR` is set.
    Webhook,
    /// `/metrics`, `/healthz`, `/readyz`: `METRICS_ADDR`.
    Monitoring,
}

/// Delivery ids remembered for de-duplication (oldest forgotten first).
pub const REMEMBERED_DELIVERIES: usize = 4096;

/// The last [`REMEMBERED_DELIVERIES`] delivery ids, in arrival order.
#[derive(Debug, Default)]
struct DeliveryLog {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl DeliveryLog {
    /// Records `id`; `false` if it was already there.
    fn insert(&mut self, id: &str, capacity: usize) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        while self.order.len() >= capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// Told about a `queued` delivery of one of our pools: (job id, repository `owner/name`).
type Announce = Box<dyn Fn(u64, &str) + Send + Sync>;

/// What the handlers share.
pub struct AppState {
    cfg: Arc<RuntimeConfig>,
    metrics: Arc<Metrics>,
    trigger: Box<dyn Fn() + Send + Sync>,
    /// Called with (job id, repository) for a `queued` delivery of one of our pools.
    announce: Announce,
    deliveries: Mutex<DeliveryLog>,
    capacity: usize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("webhook", &self.cfg.webhook_secret.is_some())
            .field("remembered", &self.lock().order.len())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over a reconciler: deliveries call [`Reconciler::trigger`].
    pub fn for_reconciler(rec: &Arc<Reconciler>) -> Self {
        let weak = Arc::downgrade(rec);
        let weak_announce = Arc::downgrade(rec);
        let mut state = Self::new(
            Arc::clone(&rec.cfg),
            Arc::clone(rec.metrics()),
            Box::new(move || {
                if let Some(rec) = weak.upgrade() {
                    rec.trigger();
                }
            }),
        );
        state.announce = Box::new(move |job, repository| {
            if let Some(rec) = weak_announce.upgrade() {
                rec.note_queued_job(job, repository);
            }
        });
        state
    }

    /// State with an explicit trigger (tests).
    pub fn new(
        cfg: Arc<RuntimeConfig>,
        metrics: Arc<Metrics>,
        trigger: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            cfg,
            metrics,
            trigger,
            announce: Box::new(|_, _| {}),
            deliveries: Mutex::new(DeliveryLog::default()),
            capacity: REMEMBERED_DELIVERIES,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeliveryLog> {
        self.deliveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The routes of `endpoints` (`/webhook` only when a webhook secret is configured), with the body limit and
/// the request timeout of `limits`.
pub fn router(state: Arc<AppState>, endpoints: Endpoints, limits: Limits) -> Router {
    let mut r = Router::new();
    if endpoints != Endpoints::Webhook {
        r = r
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz));
    }
    if endpoints != Endpoints::Monitoring && state.cfg.webhook_secret.is_some() {
        r = r.route("/webhook", post(webhook));
    }
    r.layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .with_state(state)
}

/// Binds `addr`; a one-line error naming `var` (`LISTEN_ADDR`, `METRICS_ADDR`) on failure.
pub async fn bind(var: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{var}={addr}: cannot listen: {e}"))
}

/// Serves `endpoints` on `listener` within `limits` until `shutdown` is cancelled; then stops accepting and
/// lets open connections finish their request.
pub fn spawn(
    listener: TcpListener,
    state: Arc<AppState>,
    endpoints: Endpoints,
    limits: Limits,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = router(state, endpoints, limits);
    tokio::spawn(serve(listener, app, limits, shutdown))
}

async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) {
    let local = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(listen = %local, error = %e, "HTTP listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    listen = %local,
                    max = limits.max_connections,
                    "HTTP listener: connection limit reached; closing new connections until one ends"
                );
                refusing = true;
            }
            drop(stream);
            continue;
        };
        refusing = false;
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

/// `ready`, or `not ready:` and a generic reason; never an error's text (it may name internal URLs: the
/// reconciler logs it).
async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    match s.metrics.public_readiness(s.cfg.poll_interval) {
        Ok(()) => text(StatusCode::OK, "ready\n"),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        s.metrics.encode(),
    )
        .into_response()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn webhook(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, result, message) = handle_webhook(&s, &headers, &body);
    s.metrics.webhook_delivery(result);
    if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        text(status, format!("{message}\n"))
    }
}

/// The decision for one delivery: status, metric result and a one-line message.
fn handle_webhook(
    s: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Delivery, String) {
    let Some(secret) = s.cfg.webhook_secret.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            Delivery::Unauthorized,
            "webhook disabled".into(),
        );
    };
    if let Err(e) = verify(secret, body, header_str(headers, SIGNATURE_HEADER)) {
        // Everything else in the request is the sender's choice: log only our own reason.
        tracing::warn!(reason = %e, "webhook delivery rejected: invalid signature");
        return (
            StatusCode::UNAUTHORIZED,
            Delivery::Unauthorized,
            "invalid signature".into(),
        );
    }
    // Authenticated from here on: the delivery id may be logged.
    let delivery = header_str(headers, DELIVERY_HEADER).unwrap_or("-");
    let Some(event) = header_str(headers, EVENT_HEADER) else {
        return (
            StatusCode::BAD_REQUEST,
            Delivery::BadRequest,
            format!("missing {EVENT_HEADER} header"),
        );
    };
    if let Some(id) = header_str(headers, DELIVERY_HEADER)
        && !s.lock().insert(id, s.capacity)
    {
        tracing::debug!(delivery = id, "duplicate webhook delivery ignored");
        return (
            StatusCode::OK,
            Delivery::Duplicate,
            "duplicate delivery".into(),
        );
    }
    match event {
        "ping" => (StatusCode::OK, Delivery::Ping, "pong".into()),
        "workflow_job" => {
            let ev = match parse_workflow_job(body) {
                Ok(ev) => ev,
                Err(e) => {
                    // serde's message may quote the payload: report only where it broke.
                    let why = format!(
                        "invalid workflow_job payload ({:?} error at line {} column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    );
                    tracing::warn!(delivery, "{why}");
                    return (StatusCode::BAD_REQUEST, Delivery::BadRequest, why);
                }
            };
            let job = &ev.workflow_job;
            let relevant = matches!(
                ev.action,
                WorkflowJobAction::Queued | WorkflowJobAction::Completed
            );
            if !relevant {
                return (StatusCode::NO_CONTENT, Delivery::Ignored, String::new());
            }
            match pool_scheduler::match_job(&s.cfg.pools, &job.labels) {
                MatchResult::Matched { pool } => {
                    let pool = s
                        .cfg
                        .pools
                        .pools()
                        .get(pool)
                        .map_or("?", |p| p.name.as_str());
                    if ev.action == WorkflowJobAction::Queued {
                        (s.announce)(job.id, &ev.repository.full_name);
                    }
                    (s.trigger)();
                    tracing::info!(
                        delivery, job = job.id, run = job.run_id, action = ?ev.action,
                        repository = %ev.repository.full_name, pool, "webhook: reconcile triggered"
                    );
                    (
                        StatusCode::ACCEPTED,
                        Delivery::Triggered,
                        format!("job {} ({pool}): reconcile triggered", job.id),
                    )
                }
                _ => {
                    tracing::debug!(
                        delivery,
                        job = job.id,
                        "webhook: job not served by any pool"
                    );
                    (StatusCode::NO_CONTENT, Delivery::NotOurs, String::new())
                }
            }
        }
        _ => (StatusCode::NO_CONTENT, Delivery::Ignored, String::new()),
    }
}

fn verify(secret: &SecretString, body: &[u8], header: Option<&str>) -> Result<(), String> {
    verify_signature(secret, body, header).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use github_runners::webhooks::signature_header;

    use super::*;

    const SECRET: &str = "whsec-test-0123";

    fn config(secret: Option<&str>) -> Arc<RuntimeConfig> {
        let mut vars: HashMap<&str, String> = HashMap::from([
            (
                "PROXMOX_URL",
                "https://pve.example:8006/api2/json".to_owned(),
            ),
            ("PROXMOX_NODE", "pve1".to_owned()),
            ("PROXMOX_TOKEN_ID", "ghr@pve!dispatcher".to_owned()),
            ("PROXMOX_TOKEN_SECRET", "pve-secret-value-123".to_owned()),
            ("GITHUB_TOKEN", "ghp_secretsecretsecret".to_owned()),
            ("POLL_INTERVAL", "2".to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ]);
        if let Some(s) = secret {
            vars.insert("WEBHOOK_SECRET", s.to_owned());
        }
        let lookup = |k: &str| vars.get(k).cloned();
        Arc::new(RuntimeConfig::load(&lookup, &|_| false).unwrap_or_else(|e| panic!("{e}")))
    }

    struct Served {
        base: String,
        addr: SocketAddr,
        triggers: Arc<AtomicUsize>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        http: reqwest::Client,
    }

    impl Drop for Served {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn serve(secret: Option<&str>) -> Served {
        serve_with(secret, Endpoints::All, Limits::default()).await
    }

    async fn serve_with(secret: Option<&str>, endpoints: Endpoints, limits: Limits) -> Served {
        let triggers = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new());
        let counted = Arc::clone(&triggers);
        let state = Arc::new(AppState::new(
            config(secret),
            Arc::clone(&metrics),
            Box::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        ));
        let listener = bind(
            "LISTEN_ADDR",
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stop = CancellationToken::new();
        spawn(listener, state, endpoints, limits, stop.clone());
        Served {
            base: format!("http://{addr}"),
            addr,
            triggers,
            metrics,
            stop,
            http: reqwest::Client::new(),
        }
    }

    fn job_payload(action: &str, labels: &[&str]) -> Vec<u8> {
        serde_json::json!({
            "action": action,
            "workflow_job": {
                "id": 4242,
                "run_id": 99,
                "name": "build",
                "labels": labels,
                "status": action,
                "created_at": "2026-01-01T00:00:00Z",
            },
            "repository": {"id": 1, "name": "EnergyPlus", "full_name": "NREL/EnergyPlus"},
        })
        .to_string()
        .into_bytes()
    }

    impl Served {
        async fn post(
            &self,
            event: &str,
            delivery: &str,
            body: &[u8],
            signature: Option<String>,
        ) -> (u16, String) {
            let mut req = self
                .http
                .post(format!("{}/webhook", self.base))
                .header("content-type", "application/json")
                .header(EVENT_HEADER, event)
                .header(DELIVERY_HEADER, delivery)
                .body(body.to_vec());
            if let Some(sig) = signature {
                req = req.header(SIGNATURE_HEADER, sig);
            }
            let resp = req.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }

        async fn signed(&self, event: &str, delivery: &str, body: &[u8]) -> (u16, String) {
            let sig = signature_header(&SecretString::from(SECRET), body);
            self.post(event, delivery, body, Some(sig)).await
        }

        async fn get(&self, path: &str) -> (u16, String) {
            let resp = self
                .http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }

        fn triggers(&self) -> usize {
            self.triggers.load(Ordering::SeqCst)
        }
    }

    const OURS: &[&str] = &["self-hosted", "linux"];

    #[tokio::test]
    async fn a_valid_signature_on_a_queued_job_of_ours_triggers_a_pass() {
        let s = serve(Some(SECRET)).await;
        let (status, body) = s
            .signed("workflow_job", "d-1", &job_payload("queued", OURS))
            .await;
        assert_eq!(status, 202, "{body}");
        assert!(body.contains("job 4242"), "{body}");
        assert_eq!(s.triggers(), 1);
    }

    #[tokio::test]
    async fn bad_missing_and_unprefixed_signatures_are_401_and_trigger_nothing() {
        let s = serve(Some(SECRET)).await;
        let body = job_payload("queued", OURS);
        let wrong_secret = signature_header(&SecretString::from("another secret"), &body);
        let (status, text) = s
            .post("workflow_job", "d-1", &body, Some(wrong_secret))
            .await;
        assert_eq!((status, text.as_str()), (401, "invalid signature\n"));
        let (status, text) = s.post("workflow_job", "d-2", &body, None).await;
        assert_eq!((status, text.as_str()), (401, "invalid signature\n"));
        let good = signature_header(&SecretString::from(SECRET), &body);
        let unprefixed = good.trim_start_matches("sha256=").to_owned();
        let (status, text) = s.post("workflow_job", "d-3", &body, Some(unprefixed)).await;
        assert_eq!((status, text.as_str()), (401, "invalid signature\n"));
        let sha1 = good.replace("sha256=", "sha1=");
        let (status, _) = s.post("workflow_job", "d-4", &body, Some(sha1)).await;
        assert_eq!(status, 401);
        // A signature of another body (tampered payload).
        let tampered = job_payload("queued", &["self-hosted", "linux", "x64"]);
        let (status, _) = s
            .post("workflow_job", "d-5", &tampered, Some(good.clone()))
            .await;
        assert_eq!(status, 401);
        assert_eq!(s.triggers(), 0);
        // The rejected ids were not remembered: the genuine delivery still goes through.
        let (status, _) = s.post("workflow_job", "d-1", &body, Some(good)).await;
        assert_eq!(status, 202);
        assert_eq!(s.triggers(), 1);
        let text = s.metrics.encode();
        assert!(
            text.contains("gha_webhook_deliveries_total{result=\"unauthorized\"} 5"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_duplicate_delivery_is_processed_once() {
        let s = serve(Some(SECRET)).await;
        let body = job_payload("queued", OURS);
        assert_eq!(s.signed("workflow_job", "same-id", &body).await.0, 202);
        let (status, text) = s.signed("workflow_job", "same-id", &body).await;
        assert_eq!(status, 200);
        assert!(text.contains("duplicate"), "{text}");
        assert_eq!(s.triggers(), 1);
        assert_eq!(s.signed("workflow_job", "other-id", &body).await.0, 202);
        assert_eq!(s.triggers(), 2);
    }

    #[test]
    fn the_delivery_log_is_bounded() {
        let mut log = DeliveryLog::default();
        for i in 0..10 {
            assert!(log.insert(&format!("id-{i}"), 4));
        }
        assert_eq!(log.order.len(), 4);
        assert_eq!(log.ids.len(), 4);
        assert!(!log.insert("id-9", 4));
        assert!(log.insert("id-0", 4), "the oldest ids are forgotten");
    }

    #[tokio::test]
    async fn ping_is_200_and_other_events_and_actions_are_204() {
        let s = serve(Some(SECRET)).await;
        let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
        let (status, text) = s.signed("ping", "p-1", ping).await;
        assert_eq!((status, text.trim()), (200, "pong"));
        let (status, text) = s
            .signed("push", "e-1", br#"{"ref":"refs/heads/main"}"#)
            .await;
        assert_eq!((status, text.as_str()), (204, ""));
        let (status, _) = s
            .signed("workflow_job", "e-2", &job_payload("in_progress", OURS))
            .await;
        assert_eq!(status, 204);
        // GitHub-hosted and unmatched labels are not ours.
        let (status, _) = s
            .signed(
                "workflow_job",
                "e-3",
                &job_payload("queued", &["ubuntu-latest"]),
            )
            .await;
        assert_eq!(status, 204);
        let (status, _) = s
            .signed(
                "workflow_job",
                "e-4",
                &job_payload("queued", &["self-hosted", "gpu"]),
            )
            .await;
        assert_eq!(status, 204);
        assert_eq!(s.triggers(), 0);
        // A completed job of ours frees a slot: it triggers too.
        let (status, _) = s
            .signed("workflow_job", "e-5", &job_payload("completed", OURS))
            .await;
        assert_eq!(status, 202);
        assert_eq!(s.triggers(), 1);
        // Signed garbage is a 400 that does not echo the body.
        let (status, text) = s
            .signed(
                "workflow_job",
                "e-6",
                b"{\"action\": \"queued\", \"secret-ish\": tru}",
            )
            .await;
        assert_eq!(status, 400);
        assert!(!text.contains("secret-ish"), "{text}");
        let (status, _) = s.post("workflow_job", "e-7", b"{}", None).await;
        assert_eq!(status, 401);
        let text = s.metrics.encode();
        for line in [
            "gha_webhook_deliveries_total{result=\"ping\"} 1",
            "gha_webhook_deliveries_total{result=\"ignored\"} 2",
            "gha_webhook_deliveries_total{result=\"not_ours\"} 2",
            "gha_webhook_deliveries_total{result=\"triggered\"} 1",
            "gha_webhook_deliveries_total{result=\"bad_request\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn without_a_secret_the_webhook_route_does_not_exist() {
        let s = serve(None).await;
        let body = job_payload("queued", OURS);
        let (status, _) = s.signed("workflow_job", "d-1", &body).await;
        assert_eq!(status, 404);
        assert_eq!(s.triggers(), 0);
        assert_eq!(s.get("/healthz").await.0, 200);
        assert_eq!(s.get("/metrics").await.0, 200);
    }

    #[tokio::test]
    async fn metrics_parse_as_text_exposition_with_every_family() {
        let s = serve(Some(SECRET)).await;
        s.signed("workflow_job", "d-1", &job_payload("queued", OURS))
            .await;
        let resp = s
            .http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        let text = resp.text().await.unwrap_or_default();
        let families =
            crate::metrics::parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (name, kind) in crate::metrics::FAMILIES {
            assert_eq!(
                families.get(name).map(String::as_str),
                Some(kind),
                "{name} in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn healthz_is_200_and_readyz_follows_the_passes() {
        let s = serve(Some(SECRET)).await;
        assert_eq!(s.get("/healthz").await, (200, "ok\n".to_owned()));
        let (status, text) = s.get("/readyz").await;
        assert_eq!(
            (status, text.as_str()),
            (503, "not ready: no reconcile pass has completed yet\n")
        );
        let cfg = config(Some(SECRET));
        let (observation, plan) = (
            crate::observe::Observation::default(),
            pool_scheduler::Plan::default(),
        );
        s.metrics.pass_observed(&cfg, &observation, &plan, 0);
        let (status, text) = s.get("/readyz").await;
        assert_eq!((status, text.as_str()), (200, "ready\n"));
        s.metrics
            .pass_failed(&crate::error::Error::Proxmox(proxmox_api::Error::Api {
            method: "GET",
            endpoint: "/cluster/resources",
            status: 503,
            message:
                "Service Unavailable at https://pve-internal.example:8006/api2/json\nsecond line"
                    .into(),
            errors: Default::default(),
        }));
        // Generic on the wire: neither the error's text nor the URL it names (the log has them).
        let (status, text) = s.get("/readyz").await;
        assert_eq!(
            (status, text.as_str()),
            (503, "not ready: last pass failed\n")
        );
        s.metrics.pass_observed(&cfg, &observation, &plan, 0);
        assert_eq!(s.get("/readyz").await.0, 200);
    }

    /// A raw TCP client: writes `request`, then reads until the server closes (or `wait` passes).
    /// Returns what was read and how long the server took to close (`None`: still open after `wait`).
    async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, Option<Duration>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        if tcp.write_all(request).await.is_err() {
            // Closed by the server before the request was even sent.
            return (String::new(), Some(started.elapsed()));
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(wait, async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .is_ok();
        (
            String::from_utf8_lossy(&got).into_owned(),
            closed.then(|| started.elapsed()),
        )
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let l = Limits::default();
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.request_timeout, Duration::from_secs(10));
        assert_eq!(l.max_body_bytes, 256 * 1024);
        assert_eq!(l.max_connections, 64);
    }

    #[tokio::test]
    async fn a_client_holding_partial_headers_is_cut_off_after_the_header_read_timeout() {
        let limits = Limits {
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let s = serve_with(Some(SECRET), Endpoints::All, limits).await;
        let (answer, closed) = raw(
            s.addr,
            b"POST /webhook HTTP/1.1\r\nHost: dispatcher\r\nX-GitHub-Event: ping\r\nX-Slow: ",
            Duration::from_secs(10),
        )
        .await;
        let closed = closed.unwrap_or_else(|| panic!("still open after 10 s: {answer:?}"));
        assert!(
            closed >= Duration::from_millis(300) && closed < Duration::from_secs(5),
            "closed after {closed:?}"
        );
        assert!(
            !answer.contains(" 200 ") && !answer.contains(" 202 "),
            "{answer:?}"
        );
        // An idle connection that never sends a byte is closed too.
        let (_, closed) = raw(s.addr, b"", Duration::from_secs(10)).await;
        assert!(closed.is_some(), "an idle connection stays open");
        // The listener still serves everyone else.
        assert_eq!(s.get("/healthz").await.0, 200);
    }

    #[tokio::test]
    async fn a_body_that_trickles_in_is_answered_408_after_the_request_timeout() {
        let limits = Limits {
            request_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let s = serve_with(Some(SECRET), Endpoints::All, limits).await;
        let request = format!(
            "POST /webhook HTTP/1.1\r\nHost: dispatcher\r\n{EVENT_HEADER}: ping\r\n{DELIVERY_HEADER}: d-1\r\n\
             {SIGNATURE_HEADER}: sha256={}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"zen\":",
            "0".repeat(64)
        );
        let (answer, closed) = raw(s.addr, request.as_bytes(), Duration::from_secs(10)).await;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{answer:?} (closed: {closed:?})"
        );
        assert_eq!(s.triggers(), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_answered_413() {
        let s = serve(Some(SECRET)).await;
        let padding = "x".repeat(300 * 1024);
        let big = serde_json::json!({"zen": padding}).to_string().into_bytes();
        let (status, _) = s.signed("ping", "big-1", &big).await;
        assert_eq!(status, 413);
        let (status, _) = s.post("ping", "big-2", &big, None).await;
        assert_eq!(status, 413, "the limit applies before the signature check");
        // A large but legitimate delivery is still accepted.
        let padding = "x".repeat(200 * 1024);
        let fits = serde_json::json!({"zen": padding}).to_string().into_bytes();
        let (status, text) = s.signed("ping", "big-3", &fits).await;
        assert_eq!((status, text.trim()), (200, "pong"));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once_and_served_again_when_one_ends() {
        let limits = Limits {
            max_connections: 3,
            header_read_timeout: Duration::from_secs(30),
            ..Limits::default()
        };
        let s = serve_with(Some(SECRET), Endpoints::All, limits).await;
        let mut holders = Vec::new();
        for _ in 0..3 {
            holders.push(
                tokio::net::TcpStream::connect(s.addr)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let get = b"GET /healthz HTTP/1.1\r\nHost: dispatcher\r\nConnection: close\r\n\r\n";
        let (answer, closed) = raw(s.addr, get, Duration::from_secs(5)).await;
        assert!(
            closed.is_some(),
            "the 4th connection was kept waiting: {answer:?}"
        );
        assert!(
            !answer.contains("200"),
            "the 4th connection was served: {answer:?}"
        );
        drop(holders.pop());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (answer, _) = raw(s.addr, get, Duration::from_secs(5)).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never served again after a connection ended: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn monitoring_and_webhook_endpoints_can_be_served_apart() {
        let body = job_payload("queued", OURS);
        let hook = serve_with(Some(SECRET), Endpoints::Webhook, Limits::default()).await;
        assert_eq!(hook.signed("workflow_job", "d-1", &body).await.0, 202);
        for path in ["/metrics", "/healthz", "/readyz"] {
            assert_eq!(
                hook.get(path).await.0,
                404,
                "{path} on the webhook listener"
            );
        }
        let mon = serve_with(Some(SECRET), Endpoints::Monitoring, Limits::default()).await;
        assert_eq!(mon.signed("workflow_job", "d-2", &body).await.0, 404);
        assert_eq!(mon.triggers(), 0);
        assert_eq!(mon.get("/healthz").await.0, 200);
        assert_eq!(mon.get("/metrics").await.0, 200);
        assert_eq!(mon.get("/readyz").await.0, 503);
    }

    #[tokio::test]
    async fn readyz_says_only_a_generic_reason_never_the_error_or_its_urls() {
        let s = serve(None).await;
        s.metrics
            .pass_failed(&crate::error::Error::Proxmox(proxmox_api::Error::Api {
            method: "GET",
            endpoint: "/cluster/resources",
            status: 401,
            message:
                "authentication failure at https://10.1.2.3:8006/api2/json for ghr@pve!dispatcher"
                    .into(),
            errors: Default::default(),
        }));
        let (status, text) = s.get("/readyz").await;
        assert_eq!(
            (status, text.as_str()),
            (503, "not ready: last pass failed\n")
        );
    }

    #[tracing_test::traced_test]
    #[test]
    fn a_rejected_webhook_logs_neither_its_delivery_id_nor_its_body() {
        let state = AppState::new(
            config(Some(SECRET)),
            Arc::new(Metrics::new()),
            Box::new(|| {}),
        );
        let body = br#"{"action":"queued","BODY-MARK-77":"\u001b[31m"}"#;
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            headers.insert(name, value.parse().unwrap_or_else(|e| panic!("{e}")));
        };
        set(EVENT_HEADER, "workflow_job");
        set(DELIVERY_HEADER, "DELIVERY-MARK-42 forged=1");
        set(SIGNATURE_HEADER, &format!("sha256={}", "ab".repeat(32)));
        let (status, _, message) = handle_webhook(&state, &headers, body);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(message, "invalid signature");
        assert!(logs_contain("webhook delivery rejected"));
        assert!(logs_contain("does not match"), "the reason is logged");
        assert!(!logs_contain("DELIVERY-MARK-42"));
        assert!(!logs_contain("BODY-MARK-77"));
        // Once the signature is valid, the delivery id may be logged.
        let sig = signature_header(&SecretString::from(SECRET), &job_payload("queued", OURS));
        headers.insert(
            SIGNATURE_HEADER,
            sig.parse().unwrap_or_else(|e| panic!("{e}")),
        );
        headers.insert(
            DELIVERY_HEADER,
            "DELIVERY-OK-43".parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let (status, _, _) = handle_webhook(&state, &headers, &job_payload("queued", OURS));
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(logs_contain("DELIVERY-OK-43"));
    }
}
