//! Demand: queued jobs of `queued` and `in_progress` runs, pagination, status filtering, org scope, `job(id)`.

mod common;

use common::{Harness, example, jobs_page, runs_page};
use github_runners::{Error, GitHubRunners, Scope};
use serde_json::Value;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

const RUNS: &str = "/repos/octo-org/octo-repo/actions/runs";

async fn mount_runs(h: &Harness, status: &str, body: Value) {
    Mock::given(method("GET"))
        .and(path(RUNS))
        .and(query_param("status", status))
        .and(query_param("per_page", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&h.server)
        .await;
}

async fn mount_jobs(h: &Harness, run_id: u64, body: Value) {
    Mock::given(method("GET"))
        .and(path(format!("{RUNS}/{run_id}/jobs")))
        .and(query_param("filter", "latest"))
        .and(query_param("per_page", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .expect(1)
        .mount(&h.server)
        .await;
}

#[tokio::test]
async fn queued_job_inside_in_progress_run_is_found() {
    let h = Harness::start().await;
    mount_runs(&h, "queued", runs_page(&[])).await;
    mount_runs(&h, "in_progress", runs_page(&[30433642])).await;
    mount_jobs(
        &h,
        30433642,
        jobs_page(&[
            (1, 30433642, "completed", &["self-hosted", "linux"]),
            (2, 30433642, "in_progress", &["self-hosted", "linux"]),
            (3, 30433642, "queued", &["self-hosted", "Linux", "X64"]),
        ]),
    )
    .await;

    let jobs = h.client().queued_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let j = &jobs[0];
    assert_eq!((j.id, j.run_id), (3, 30433642));
    assert_eq!(j.labels, ["self-hosted", "Linux", "X64"]);
    assert_eq!(j.name, "build");
    assert_eq!(j.workflow_name.as_deref(), Some("CI"));
    assert_eq!(j.repository, "octo-org/octo-repo");
    assert_eq!(j.status, "queued");
    // The official example has no created_at: started_at is used.
    assert_eq!(j.created_at.unix_timestamp(), 1579542160);
    assert_eq!(h.finish().await, 3);
}

#[tokio::test]
async fn other_statuses_are_ignored_and_runs_in_both_lists_are_read_once() {
    let h = Harness::start().await;
    // Run 10 shows up in both lists (it moved between the two calls).
    mount_runs(&h, "queued", runs_page(&[10, 11])).await;
    mount_runs(&h, "in_progress", runs_page(&[10])).await;
    mount_jobs(
        &h,
        10,
        jobs_page(&[
            (100, 10, "queued", &["self-hosted"]),
            (101, 10, "waiting", &["self-hosted"]),
            (102, 10, "pending", &["self-hosted"]),
            (103, 10, "requested", &["self-hosted"]),
            (104, 10, "completed", &["self-hosted"]),
            (105, 10, "in_progress", &["self-hosted"]),
        ]),
    )
    .await;
    let mut page = jobs_page(&[(110, 11, "queued", &["self-hosted", "gpu"])]);
    page["jobs"][0]["created_at"] = "2020-01-20T17:00:00Z".into();
    mount_jobs(&h, 11, page).await;

    let jobs = h.client().queued_jobs().await.unwrap();
    let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    // Oldest first: job 110 has an explicit earlier created_at.
    assert_eq!(ids, [110, 100]);
    assert_eq!(jobs[0].created_at.unix_timestamp(), 1579539600);
    assert_eq!(h.finish().await, 4);
}

#[tokio::test]
async fn pagination_follows_link_across_three_pages() {
    let h = Harness::start().await;
    let base = h.uri();
    mount_runs(&h, "queued", runs_page(&[])).await;
    // Runs: three pages.
    for page in 1..=3u64 {
        let mut m = Mock::given(method("GET"))
            .and(path(RUNS))
            .and(query_param("status", "in_progress"))
            .and(query_param("per_page", "100"));
        m = if page == 1 {
            m.and(query_param_is_missing("page"))
        } else {
            m.and(query_param("page", page.to_string()))
        };
        let mut resp = ResponseTemplate::new(200).set_body_json(runs_page(&[page]));
        if page < 3 {
            resp = resp.insert_header(
                "link",
                format!(
                    "<{base}{RUNS}?status=in_progress&per_page=100&page={}>; rel=\"next\", \
                     <{base}{RUNS}?status=in_progress&per_page=100&page=3>; rel=\"last\"",
                    page + 1
                ),
            );
        } else {
            resp = resp.insert_header(
                "link",
                format!("<{base}{RUNS}?status=in_progress&per_page=100&page=1>; rel=\"first\""),
            );
        }
        m.respond_with(resp).expect(1).mount(&h.server).await;
    }
    // Run 1's jobs: three pages too; runs 2 and 3: one page.
    let jobs_path = format!("{RUNS}/1/jobs");
    for page in 1..=3u64 {
        let mut m = Mock::given(method("GET"))
            .and(path(jobs_path.clone()))
            .and(query_param("filter", "latest"))
            .and(query_param("per_page", "100"));
        m = if page == 1 {
            m.and(query_param_is_missing("page"))
        } else {
            m.and(query_param("page", page.to_string()))
        };
        let mut resp = ResponseTemplate::new(200).set_body_json(jobs_page(&[(
            page * 1000,
            1,
            "queued",
            &["self-hosted"],
        )]));
        if page < 3 {
            resp = resp.insert_header(
                "link",
                format!(
                    "<{base}{jobs_path}?filter=latest&per_page=100&page={}>; rel=\"next\"",
                    page + 1
                ),
            );
        }
        m.respond_with(resp).expect(1).mount(&h.server).await;
    }
    mount_jobs(&h, 2, jobs_page(&[(2, 2, "queued", &["self-hosted"])])).await;
    mount_jobs(&h, 3, jobs_page(&[(3, 3, "completed", &["self-hosted"])])).await;

    let client = h.client();
    let mut ids: Vec<u64> = client
        .queued_jobs()
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [2, 1000, 2000, 3000]);
    assert_eq!(client.stats().requests, 9);
    assert_eq!(h.finish().await, 9);
}

#[tokio::test]
async fn link_to_another_origin_is_refused() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path(RUNS))
        .and(query_param("status", "queued"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(runs_page(&[]))
                .insert_header("link", "<https://evil.example/steal?page=2>; rel=\"next\""),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h.client().queued_jobs().await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.to_string().contains("another origin"), "{err}");
    h.finish().await;
}

#[tokio::test]
async fn deleted_run_is_skipped_other_errors_propagate() {
    let h = Harness::start().await;
    mount_runs(&h, "queued", runs_page(&[5])).await;
    mount_runs(&h, "in_progress", runs_page(&[])).await;
    Mock::given(method("GET"))
        .and(path(format!("{RUNS}/5/jobs")))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(serde_json::json!({"message": "Not Found"})),
        )
        .expect(1)
        .mount(&h.server)
        .await;
    assert!(h.client().queued_jobs().await.unwrap().is_empty());
    h.finish().await;

    let h = Harness::start().await;
    mount_runs(&h, "queued", runs_page(&[])).await;
    Mock::given(method("GET"))
        .and(path(RUNS))
        .and(query_param("status", "in_progress"))
        .respond_with(ResponseTemplate::new(403).set_body_json(
            serde_json::json!({"message": "Resource not accessible by personal access token"}),
        ))
        .expect(1)
        .mount(&h.server)
        .await;
    let err = h.client().queued_jobs().await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 403, .. }), "{err}");
    assert!(!err.is_retryable());
    h.finish().await;
}

#[tokio::test]
async fn org_scope_polls_the_configured_repositories() {
    let h = Harness::start().await;
    let err = h
        .client_for(Scope::org("octo-org"))
        .queued_jobs()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("octo-org"), "{err}");

    for (owner, repo, run) in [("octo-org", "web", 7u64), ("partner", "api", 8)] {
        for status in ["queued", "in_progress"] {
            let runs = if status == "queued" {
                runs_page(&[run])
            } else {
                runs_page(&[])
            };
            Mock::given(method("GET"))
                .and(path(format!("/repos/{owner}/{repo}/actions/runs")))
                .and(query_param("status", status))
                .respond_with(ResponseTemplate::new(200).set_body_json(runs))
                .expect(1)
                .mount(&h.server)
                .await;
        }
        Mock::given(method("GET"))
            .and(path(format!(
                "/repos/{owner}/{repo}/actions/runs/{run}/jobs"
            )))
            .respond_with(ResponseTemplate::new(200).set_body_json(jobs_page(&[(
                run * 10,
                run,
                "queued",
                &["self-hosted"],
            )])))
            .expect(1)
            .mount(&h.server)
            .await;
    }
    let client = h
        .client_for(Scope::org("octo-org"))
        .with_repositories(["web", "partner/api"]);
    let mut got: Vec<(String, u64)> = client
        .queued_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.repository, j.id))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("octo-org/web".to_owned(), 70),
            ("partner/api".to_owned(), 80)
        ]
    );
    assert_eq!(h.finish().await, 6);
}

#[tokio::test]
async fn job_by_id_decodes_the_official_example() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .and(path("/repos/octo-org/octo-repo/actions/jobs/399444496"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("job")))
        .expect(2)
        .mount(&h.server)
        .await;
    let client = h.client();
    let job = client.job(399444496).await.unwrap();
    assert_eq!(job.id, 399444496);
    assert_eq!(job.run_id, 29679449);
    assert_eq!(job.status, "completed");
    assert_eq!(job.conclusion.as_deref(), Some("success"));
    assert_eq!(job.labels, ["self-hosted", "foo", "bar"]);
    assert_eq!(job.runner_id, Some(1));
    assert_eq!(job.runner_name.as_deref(), Some("my runner"));
    assert_eq!(job.workflow_name.as_deref(), Some("CI"));
    assert!(job.started_at.is_some() && job.completed_at.is_some());
    let same = client
        .job_in("octo-org/octo-repo", 399444496)
        .await
        .unwrap();
    assert_eq!(same, job);
    assert!(matches!(
        client.job_in("a/b/c", 1).await,
        Err(Error::InvalidInput {
            field: "repository",
            ..
        })
    ));
    assert_eq!(h.finish().await, 2);
}
