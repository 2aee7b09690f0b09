//! The HTTP listener of `dispatcher run` when `LISTEN_ADDR` is set: `POST /webhook`, `GET /metrics`,
//! `GET /healthz`, `GET /readyz`.
//!
//! The webhook is a trigger, never a command: a verified `workflow_job` `queued` (or `completed`) delivery
//! for a job one of our pools serves asks the reconciler for a pass at once and is answered `202` without
//! waiting for it; the pass then decides from what GitHub and Proxmox say. Without `WEBHOOK_SECRET` the
//! listener serves only metrics and health, and `/webhook` answers `404` (an unsigned webhook endpoint
//! would let anyone make the dispatcher poll).
//!
//! | request | answer |
//! |---|---|
//! | bad, missing or non-`sha256=` signature | `401`, one-line reason |
//! | no `X-GitHub-Event` | `400` |
//! | delivery id seen before (last [`REMEMBERED_DELIVERIES`]) | `200 duplicate delivery` |
//! | `ping` | `200 pong` |
//! | `workflow_job` `queued`/`completed` for one of our pools | `202`, a pass is triggered |
//! | any other event, action or a job no pool serves | `204` |
//! | unparseable `workflow_job` | `400` (the body is never logged nor echoed) |

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use github_runners::webhooks::{
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, WorkflowJobAction, parse_workflow_job,
    verify_signature,
};
use pool_scheduler::MatchResult;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::RuntimeConfig;
use crate::metrics::{CONTENT_TYPE, Delivery, Metrics};
use crate::reconciler::Reconciler;

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

/// The routes; `/webhook` only when a webhook secret is configured.
pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.cfg.webhook_secret.is_some() {
        r = r.route("/webhook", post(webhook));
    }
    r.with_state(state)
}

/// Binds `addr` (a one-line error naming `LISTEN_ADDR` on failure).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("LISTEN_ADDR={addr}: cannot listen: {e}"))
}

/// Serves `router` on `listener` until `shutdown` is cancelled.
pub fn spawn(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let app = router(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    })
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

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    match s.metrics.readiness(s.cfg.poll_interval) {
        Ok(why) => text(StatusCode::OK, format!("ready: {why}\n")),
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
    let delivery = header_str(headers, DELIVERY_HEADER).unwrap_or("-");
    let Some(secret) = s.cfg.webhook_secret.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            Delivery::Unauthorized,
            "webhook disabled".into(),
        );
    };
    if let Err(e) = verify(secret, body, header_str(headers, SIGNATURE_HEADER)) {
        tracing::warn!(delivery, reason = %e, "webhook delivery rejected");
        return (StatusCode::UNAUTHORIZED, Delivery::Unauthorized, e);
    }
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
        let listener = bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stop = CancellationToken::new();
        spawn(listener, state, stop.clone());
        Served {
            base: format!("http://{addr}"),
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
        assert_eq!(status, 401);
        assert!(text.contains("does not match"), "{text}");
        let (status, text) = s.post("workflow_job", "d-2", &body, None).await;
        assert_eq!(status, 401);
        assert!(text.contains("missing"), "{text}");
        let good = signature_header(&SecretString::from(SECRET), &body);
        let unprefixed = good.trim_start_matches("sha256=").to_owned();
        let (status, text) = s.post("workflow_job", "d-3", &body, Some(unprefixed)).await;
        assert_eq!(status, 401);
        assert!(text.contains("sha256="), "{text}");
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
        assert_eq!(status, 503);
        assert!(text.starts_with("not ready: no reconcile pass"), "{text}");
        let cfg = config(Some(SECRET));
        let (observation, plan) = (
            crate::observe::Observation::default(),
            pool_scheduler::Plan::default(),
        );
        s.metrics.pass_observed(&cfg, &observation, &plan, 0);
        let (status, text) = s.get("/readyz").await;
        assert_eq!(status, 200, "{text}");
        assert!(text.starts_with("ready: "), "{text}");
        s.metrics
            .pass_failed(&crate::error::Error::Proxmox(proxmox_api::Error::Api {
                method: "GET",
                endpoint: "/cluster/resources",
                status: 503,
                message: "Service Unavailable\nsecond line".into(),
                errors: Default::default(),
            }));
        let (status, text) = s.get("/readyz").await;
        assert_eq!(status, 503);
        assert!(
            text.contains("last pass failed: proxmox: GET /cluster/resources"),
            "{text}"
        );
        assert_eq!(text.trim_end().lines().count(), 1, "{text}");
        s.metrics.pass_observed(&cfg, &observation, &plan, 0);
        assert_eq!(s.get("/readyz").await.0, 200);
    }
}
