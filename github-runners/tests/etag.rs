//! Conditional requests: ETag cache, If-None-Match, 304 reuse, and the measured idle-poll budget.

mod common;

use std::sync::{Arc, Mutex};

use common::{Harness, example, runs_page};
use github_runners::{GitHubRunners, RequestEvent, RequestObserver};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const RUNNERS: &str = "/repos/octo-org/octo-repo/actions/runners";
const RUNS: &str = "/repos/octo-org/octo-repo/actions/runs";

#[derive(Default)]
struct Hits(Mutex<Vec<(String, bool)>>);

impl RequestObserver for Hits {
    fn on_request(&self, ev: &RequestEvent) {
        self.0
            .lock()
            .unwrap()
            .push((ev.endpoint.to_owned(), ev.conditional_hit));
    }
}

/// Mounts a GET that answers 200 + ETag without `If-None-Match` and 304 with it.
async fn mount_conditional(
    h: &Harness,
    p: &str,
    status: Option<&str>,
    etag: &str,
    body: serde_json::Value,
    hits: u64,
) {
    let mut cond = Mock::given(method("GET"))
        .and(path(p))
        .and(header("if-none-match", etag));
    let mut plain = Mock::given(method("GET")).and(path(p));
    if let Some(s) = status {
        cond = cond.and(query_param("status", s));
        plain = plain.and(query_param("status", s));
    }
    cond.respond_with(ResponseTemplate::new(304).insert_header("etag", etag))
        .with_priority(1)
        .expect(hits)
        .mount(&h.server)
        .await;
    plain
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", etag)
                .set_body_json(body),
        )
        .with_priority(2)
        .expect(1)
        .mount(&h.server)
        .await;
}

#[tokio::test]
async fn second_poll_is_conditional_and_free() {
    let h = Harness::start().await;
    mount_conditional(
        &h,
        RUNNERS,
        None,
        "\"5f1e2d3c\"",
        example("runner-paginated"),
        1,
    )
    .await;
    let hits = Arc::new(Hits::default());
    let c = h.client().with_observer(hits.clone());
    let first = c.list_runners().await.unwrap();
    assert_eq!(c.stats().conditional_hits, 0);
    let second = c.list_runners().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(second.len(), 2);
    let s = c.stats();
    assert_eq!(
        (s.requests, s.budgeted_requests, s.conditional_hits),
        (2, 1, 1)
    );
    let evs = hits.0.lock().unwrap().clone();
    assert_eq!(
        evs,
        [(RUNNERS_T.to_owned(), false), (RUNNERS_T.to_owned(), true)]
    );
    // The second request carried If-None-Match.
    let reqs = h.server.received_requests().await.unwrap();
    assert!(reqs[0].headers.get("if-none-match").is_none());
    assert_eq!(
        reqs[1].headers.get("if-none-match").unwrap(),
        "\"5f1e2d3c\""
    );
    assert_eq!(h.finish().await, 2);
}

const RUNNERS_T: &str = "/repos/{owner}/{repo}/actions/runners";

#[tokio::test]
async fn changed_resource_replaces_the_cached_body() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "W/\"v1\"")
                .set_body_json(example("runner-paginated")),
        )
        .up_to_n_times(1)
        .with_priority(3)
        .expect(1)
        .mount(&h.server)
        .await;
    let mut v2 = example("runner-paginated");
    v2["runners"].as_array_mut().unwrap().truncate(1);
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .and(header("if-none-match", "W/\"v1\""))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "W/\"v2\"")
                .set_body_json(v2),
        )
        .with_priority(1)
        .expect(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNERS))
        .and(header("if-none-match", "W/\"v2\""))
        .respond_with(ResponseTemplate::new(304))
        .with_priority(1)
        .expect(1)
        .mount(&h.server)
        .await;
    let c = h.client();
    assert_eq!(c.list_runners().await.unwrap().len(), 2);
    assert_eq!(c.list_runners().await.unwrap().len(), 1);
    assert_eq!(c.list_runners().await.unwrap().len(), 1);
    assert_eq!(c.stats().conditional_hits, 1);
    assert_eq!(h.finish().await, 3);
}

/// The dispatcher's observe step on an idle repository (no runs, no runners): `queued_jobs()` (runs with
/// status queued + in_progress) and `list_runners()`. After the first poll every request is a 304.
#[tokio::test]
async fn idle_poll_costs_zero_budgeted_requests() {
    const POLLS: u64 = 5;
    let h = Harness::start().await;
    mount_conditional(
        &h,
        RUNS,
        Some("queued"),
        "\"q0\"",
        runs_page(&[]),
        POLLS - 1,
    )
    .await;
    mount_conditional(
        &h,
        RUNS,
        Some("in_progress"),
        "\"p0\"",
        runs_page(&[]),
        POLLS - 1,
    )
    .await;
    let mut no_runners = example("runner-paginated");
    no_runners["runners"] = serde_json::json!([]);
    no_runners["total_count"] = 0.into();
    mount_conditional(&h, RUNNERS, None, "\"r0\"", no_runners, POLLS - 1).await;

    let c = h.client();
    assert!(c.queued_jobs().await.unwrap().is_empty());
    assert!(c.list_runners().await.unwrap().is_empty());
    let warm = c.stats();
    assert_eq!(warm.budgeted_requests, 3);
    for _ in 1..POLLS {
        assert!(c.queued_jobs().await.unwrap().is_empty());
        assert!(c.list_runners().await.unwrap().is_empty());
    }
    let after = c.stats();
    let idle_polls = POLLS - 1;
    let budgeted_per_poll =
        (after.budgeted_requests - warm.budgeted_requests) as f64 / idle_polls as f64;
    let requests_per_poll = (after.requests - warm.requests) as f64 / idle_polls as f64;
    println!(
        "idle poll (queued_jobs + list_runners, no runs): {requests_per_poll} requests, \
         {budgeted_per_poll} counted against the rate limit, {} conditional hits per poll",
        (after.conditional_hits - warm.conditional_hits) / idle_polls
    );
    assert_eq!(budgeted_per_poll, 0.0);
    assert_eq!(requests_per_poll, 3.0);
    assert_eq!(after.conditional_hits, 3 * idle_polls);
    assert_eq!(h.finish().await as u64, 3 * POLLS);
}

#[tokio::test]
async fn writes_are_not_conditional() {
    let h = Harness::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{RUNNERS}/registration-token")))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("etag", "\"t\"")
                .set_body_json(example("authentication-token")),
        )
        .expect(2)
        .mount(&h.server)
        .await;
    let c = h.client();
    c.registration_token().await.unwrap();
    c.registration_token().await.unwrap();
    let reqs = h.server.received_requests().await.unwrap();
    assert!(
        reqs.iter()
            .all(|r| r.headers.get("if-none-match").is_none())
    );
    assert_eq!(c.stats().conditional_hits, 0);
    assert_eq!(h.finish().await, 2);
}
