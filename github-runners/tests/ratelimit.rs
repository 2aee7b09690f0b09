//! Rate limits (403 + retry-after, 429, 403 + remaining 0 + reset, secondary), 5xx retries, no 4xx retries,
//! `x-ratelimit-*` snapshots, `GET /rate_limit`, and the request observer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Harness, example, now_unix};
use github_runners::{Error, GitHubRunners, RequestEvent, RequestObserver};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const RUNNERS: &str = "/repos/octo-org/octo-repo/actions/runners";

fn secs_from_now(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 - now_unix()
}

#[tokio::test]
async fn forbidden_with_retry_after_pauses_the_client() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "30")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit."})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    let err = c.list_runners().await.unwrap_err();
    let Error::RateLimited { until, reason } = &err else {
        panic!("{err}")
    };
    assert!((29..=31).contains(&secs_from_now(*until)), "{err}");
    assert!(reason.contains("retry-after"), "{reason}");
    assert!(err.is_retryable());
    assert_eq!(c.stats().rate_limited, 1);
    assert!(c.rate_limited_until().is_some());
    // The next call does not reach GitHub (mock expects exactly 1, catch-all 0).
    let again = c.list_runners().await.unwrap_err();
    assert!(matches!(again, Error::RateLimited { .. }), "{again}");
    assert_eq!(c.stats().requests, 1);
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn too_many_requests_without_headers_backs_off_at_least_a_minute() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(429))
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h.client().list_runners().await.unwrap_err();
    let Error::RateLimited { until, .. } = &err else {
        panic!("{err}")
    };
    assert!(secs_from_now(*until) >= 59, "{err}");
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn forbidden_with_remaining_zero_waits_until_reset() {
    let h = Harness::start().await;
    let reset = now_unix() + 120;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-limit", "5000")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-used", "5000")
                .insert_header("x-ratelimit-reset", reset.to_string())
                .insert_header("x-ratelimit-resource", "core")
                .set_body_json(json!({"message": "API rate limit exceeded for user ID 1."})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    let err = c.list_runners().await.unwrap_err();
    let Error::RateLimited { until, reason } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        until.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
        reset
    );
    assert!(reason.contains("remaining: 0"), "{reason}");
    let snap = c.rate_limit_snapshot().unwrap();
    assert_eq!(
        (snap.limit, snap.remaining, snap.used, snap.reset as i64),
        (5000, 0, 5000, reset)
    );
    assert_eq!(snap.resource, "core");
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn secondary_limit_without_headers_backs_off_a_minute() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    let Error::RateLimited { until, .. } = c.list_runners().await.unwrap_err() else {
        panic!()
    };
    let first = secs_from_now(until);
    assert!((59..=61).contains(&first), "{first}");
    // Growth on repeated strikes is covered by the unit test `secondary_backoff_grows` in client.rs.
    h.finish().await;
}

#[tokio::test]
async fn plain_forbidden_is_not_a_rate_limit() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"message": "Resource not accessible by integration"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    let err = c.list_runners().await.unwrap_err();
    assert!(matches!(&err, Error::Api { status: 403, .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(c.stats().rate_limited, 0);
    assert!(c.rate_limited_until().is_none());
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn bad_gateway_is_retried_then_succeeds() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("runner-paginated")))
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    assert_eq!(c.list_runners().await.unwrap().len(), 2);
    assert_eq!(c.stats().requests, 2);
    assert_eq!(h.finish().await, 2);
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_max_attempts_and_is_retryable() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(json!({"message": "Service Unavailable"})),
        )
        .expect(3)
        .mount(&h.server)
        .await;
    let err = h.client().list_runners().await.unwrap_err();
    assert!(matches!(&err, Error::Api { status: 503, .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(h.finish().await, 3);
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{RUNNERS}/registration-token")))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"message": "Problems parsing JSON"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h.client().registration_token().await.unwrap_err();
    assert!(matches!(&err, Error::Api { status: 400, .. }), "{err}");
    assert_eq!(h.finish().await, 1);
}

#[tokio::test]
async fn transport_errors_are_retryable() {
    // A port nobody listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = Harness::start().await;
    let mut cfg = h.config(
        github_runners::Scope::repo("o", "r"),
        github_runners::Auth::Token(common::TOKEN.to_owned().into()),
    );
    cfg.api_url = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let c = github_runners::GitHubClient::new(cfg)
        .unwrap()
        .with_retry_policy(common::fast_retry());
    let err = c.list_runners().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(c.stats().requests, 3);
    assert_eq!(c.stats().budgeted_requests, 0);
    h.finish().await;
}

#[tokio::test]
async fn rate_limit_endpoint_decodes_the_official_example() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path("/rate_limit"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("rate-limit-overview")))
        .expect(1)
        .mount(&h.server)
        .await;
    let rl = h.client().rate_limit().await.unwrap();
    assert_eq!(
        (rl.core.limit, rl.core.remaining, rl.core.used),
        (5000, 4999, 1)
    );
    assert_eq!(rl.core.resource, "core");
    let reg = rl.resource("actions_runner_registration").unwrap();
    assert_eq!((reg.limit, reg.remaining), (10000, 10000));
    assert_eq!(rl.resources.len(), 10);
    assert_eq!(h.finish().await, 1);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<RequestEvent>>);

impl RequestObserver for Recorder {
    fn on_request(&self, ev: &RequestEvent) {
        self.0.lock().unwrap().push(ev.clone());
    }
}

#[tokio::test]
async fn observer_sees_every_attempt_with_templated_endpoint() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{RUNNERS}/23")))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{RUNNERS}/23")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(example("runner"))
                .insert_header("x-ratelimit-limit", "5000")
                .insert_header("x-ratelimit-remaining", "4990")
                .insert_header("x-ratelimit-reset", "1700000000"),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let rec = Arc::new(Recorder::default());
    let c = h.client().with_observer(rec.clone());
    c.runner(23).await.unwrap();
    let evs = rec.0.lock().unwrap().clone();
    assert_eq!(evs.len(), 2);
    for (ev, status) in evs.iter().zip([500, 200]) {
        assert_eq!(ev.method, github_runners::Method::GET);
        assert_eq!(
            ev.endpoint,
            "/repos/{owner}/{repo}/actions/runners/{runner_id}"
        );
        assert_eq!(ev.status, Some(status));
        assert!(!ev.conditional_hit);
        assert!(ev.elapsed < Duration::from_secs(5));
    }
    let snap = c.rate_limit_snapshot().unwrap();
    assert_eq!(
        (snap.remaining, snap.used, snap.resource.as_str()),
        (4990, 10, "core")
    );
    assert_eq!(h.finish().await, 2);
}

#[tokio::test]
async fn huge_rate_limit_headers_pause_at_most_an_hour_and_never_panic() {
    // u64::MAX seconds overflowed `SystemTime + Duration` ("overflow when adding duration to instant").
    let huge = u64::MAX.to_string();
    let cases: Vec<Vec<(&str, String)>> = vec![
        vec![("retry-after", huge.clone())],
        vec![
            ("x-ratelimit-limit", "5000".to_owned()),
            ("x-ratelimit-remaining", "0".to_owned()),
            ("x-ratelimit-used", "5000".to_owned()),
            ("x-ratelimit-reset", huge.clone()),
        ],
        vec![
            ("x-ratelimit-remaining", "0".to_owned()),
            ("x-ratelimit-reset", (now_unix() + 10 * 86_400).to_string()),
        ],
    ];
    for headers in cases {
        let h = Harness::start().await;
        let mut answer =
            ResponseTemplate::new(403).set_body_json(json!({"message": "API rate limit exceeded"}));
        for (name, value) in &headers {
            answer = answer.insert_header(*name, value.as_str());
        }
        Mock::given(method("GET"))
            .and(path(RUNNERS))
            .respond_with(answer)
            .expect(1)
            .mount(&h.server)
            .await;
        let c = h.client();
        let err = c.list_runners().await.unwrap_err();
        let Error::RateLimited { until, .. } = &err else {
            panic!("{headers:?}: {err}")
        };
        let wait = secs_from_now(*until);
        assert!(
            (3590..=github_runners::MAX_RATE_LIMIT_PAUSE.as_secs() as i64).contains(&wait),
            "{headers:?}: paused {wait} s: {err}"
        );
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        assert!(c.rate_limited_until().is_some());
        h.finish().await;
    }
}
