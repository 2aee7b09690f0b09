//! `TaskWatcher`: one shared `GET /nodes/{node}/tasks` per node and tick for every waiter, the
//! semantics of `wait_task`, and the fallbacks (per-task polling, direct reads).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proxmox_api::{Error, ProxmoxApi, TaskWatcher, TaskWatcherOptions, Upid};
use serde_json::{Value, json};
use wiremock::matchers::query_param;
use wiremock::{MockServer, Request, ResponseTemplate};

use crate::common::{Pve, TOKEN_ID, data, on, pve, pve_error};

/// Start time inside every UPID of these tests (0x6650F00D).
const STARTTIME: u64 = 1_716_580_365;

fn options() -> TaskWatcherOptions {
    TaskWatcherOptions {
        interval: Duration::from_millis(100),
        first_poll: Duration::from_millis(30),
        not_listed_grace: Duration::from_millis(300),
        ..TaskWatcherOptions::default()
    }
}

fn watcher(pve: &Pve) -> TaskWatcher {
    let api: Arc<dyn ProxmoxApi> = Arc::new(pve.client.clone());
    TaskWatcher::new(api, options())
}

fn task(node: &str, kind: &str, n: u32) -> Upid {
    format!(
        "UPID:{node}:{:08X}:0123ABCD:6650F00D:{kind}:{n}:{TOKEN_ID}:",
        0x1000 + n
    )
    .parse()
    .unwrap()
}

/// A list entry as PVE gives it: `None` = running, else finished with that exit status.
fn entry(upid: &Upid, status: Option<&str>) -> Value {
    let mut v = json!({
        "upid": upid.as_str(), "node": upid.node().as_str(), "pid": upid.pid(),
        "pstart": upid.pstart(), "starttime": upid.starttime(), "type": upid.task_type(),
        "id": upid.id(), "user": "dispatcher@pve", "tokenid": "runners", "status": "RUNNING",
    });
    if let Some(s) = status {
        v["status"] = json!(s);
        v["endtime"] = json!(upid.starttime() + 4);
    }
    v
}

/// The number of requests the server received for `path` (under /api2/json).
async fn count(server: &MockServer, path: &str) -> usize {
    let full = format!("/api2/json{path}");
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == full)
        .count()
}

/// A list responder answering with `f(call number)` (1-based).
fn by_call(
    f: impl Fn(usize) -> Vec<Value> + Send + Sync + 'static,
) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync + 'static {
    let calls = AtomicUsize::new(0);
    move |_: &Request| data(Value::Array(f(calls.fetch_add(1, Ordering::SeqCst) + 1)))
}

#[tokio::test]
async fn concurrent_waiters_on_one_node_share_one_list_request_per_tick() {
    let pve = pve().await;
    let tasks: Vec<Upid> = (0..20).map(|n| task("pve1", "qmclone", 300 + n)).collect();
    let listed = tasks.clone();
    // Running for two polls, finished (OK, one with warnings) from the third on.
    on("GET", "/nodes/pve1/tasks")
        .and(query_param("source", "all"))
        .and(query_param("since", (STARTTIME - 10).to_string()))
        .and(query_param("limit", "1000"))
        .respond_with(by_call(move |call| {
            listed
                .iter()
                .enumerate()
                .map(|(i, u)| match (call, i) {
                    (1 | 2, _) => entry(u, None),
                    (_, 7) => entry(u, Some("WARNINGS: 1")),
                    _ => entry(u, Some("OK")),
                })
                .collect()
        }))
        .expect(3)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    let started = Instant::now();
    let handles: Vec<_> = tasks
        .iter()
        .map(|u| {
            let (w, u) = (w.clone(), u.clone());
            tokio::spawn(async move { w.wait(&u, Duration::from_secs(10)).await })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let st = h.await.unwrap().unwrap();
        assert!(st.is_stopped() && st.is_success(), "{st:?}");
        assert_eq!(st.warnings(), (i == 7).then_some(1));
        assert_eq!(st.upid.as_deref(), Some(tasks[i].as_str()));
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(230) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // Idle: no further polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&pve.server, "/nodes/pve1/tasks").await, 3);
    assert_eq!(w.waiters(), 0);
    let pairs = pve.check_schema().await;
    assert!(
        pairs.iter().all(|p| p == "GET /nodes/{node}/tasks"),
        "{pairs:?}"
    );
}

#[tokio::test]
async fn ok_warnings_and_failure_text_like_wait_task() {
    let pve = pve().await;
    let ok = task("pve1", "qmstart", 205);
    let warned = task("pve1", "qmconfig", 206);
    let failed = task("pve1", "qmclone", 9000);
    let list = vec![
        entry(&ok, Some("OK")),
        entry(&warned, Some("WARNINGS: 2")),
        entry(
            &failed,
            Some("unable to create VM 207: config file already exists"),
        ),
    ];
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(Value::Array(list)))
        .expect(1)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    let d = Duration::from_secs(5);
    let (a, b, c) = tokio::join!(w.wait(&ok, d), w.wait(&warned, d), w.wait(&failed, d));
    assert_eq!(a.unwrap().exitstatus.as_deref(), Some("OK"));
    assert_eq!(b.unwrap().warnings(), Some(2));
    match c.unwrap_err() {
        err @ Error::TaskFailed { .. } => {
            assert!(err.is_vmid_taken(), "{err}");
            let Error::TaskFailed { upid, exitstatus } = err else {
                unreachable!()
            };
            assert_eq!(upid, failed);
            assert_eq!(
                exitstatus,
                "unable to create VM 207: config file already exists"
            );
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    pve.check_schema().await;
}

#[tokio::test]
async fn deadline_exceeded_while_running_then_polling_stops() {
    let pve = pve().await;
    let up = task("pve1", "qmclone", 9000);
    let listed = up.clone();
    on("GET", "/nodes/pve1/tasks")
        .respond_with(by_call(move |_| vec![entry(&listed, None)]))
        .expect(3..=5)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    let started = Instant::now();
    let err = w.wait(&up, Duration::from_millis(350)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(!err.is_retryable());
    let polls = count(&pve.server, "/nodes/pve1/tasks").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&pve.server, "/nodes/pve1/tasks").await, polls);
    pve.check_schema().await;
}

#[tokio::test]
async fn a_deadline_before_the_first_poll_still_reads_the_task_once() {
    let pve = pve().await;
    let up = task("pve1", "qmstart", 205);
    on("GET", &format!("/nodes/pve1/tasks/{up}/status"))
        .respond_with(data(json!({"status": "stopped", "exitstatus": "OK"})))
        .expect(1)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    let st = w.wait(&up, Duration::ZERO).await.unwrap();
    assert!(st.is_success());
    // The driver's first poll finds no waiter and sends nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&pve.server, "/nodes/pve1/tasks").await, 0);
    pve.check_schema().await;
}

#[tokio::test]
async fn retryable_list_errors_are_tolerated() {
    let pve = pve().await;
    let up = task("pve1", "qmstart", 205);
    on("GET", "/nodes/pve1/tasks")
        .respond_with(pve_error(596, "Connection timed out"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(json!([entry(&up, Some("OK"))])))
        .expect(1)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    assert!(w.wait(&up, Duration::from_secs(5)).await.is_ok());
    pve.check_schema().await;
}

#[tokio::test]
async fn a_501_list_falls_back_to_per_task_status_polling_for_that_node() {
    let pve = pve().await;
    let first = task("pve1", "qmclone", 9000);
    let second = task("pve1", "qmstart", 205);
    on("GET", "/nodes/pve1/tasks")
        .respond_with(pve_error(
            501,
            "Method 'GET /nodes/pve1/tasks' not implemented",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let first_status = format!("/nodes/pve1/tasks/{first}/status");
    on("GET", &first_status)
        .respond_with(data(json!({"status": "running"})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", &first_status)
        .respond_with(data(json!({"status": "stopped", "exitstatus": "OK"})))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", &format!("/nodes/pve1/tasks/{second}/status"))
        .respond_with(data(
            json!({"status": "stopped", "exitstatus": "can't lock file '/var/lock/qemu-server/lock-205.conf' - got timeout"}),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    assert!(w.wait(&first, Duration::from_secs(5)).await.is_ok());
    // The node stays on per-task polling: no second list request.
    let err = w.wait(&second, Duration::from_secs(5)).await.unwrap_err();
    assert!(err.is_lock_timeout(), "{err}");
    assert_eq!(count(&pve.server, "/nodes/pve1/tasks").await, 1);
    pve.check_schema().await;
}

#[tokio::test]
async fn a_403_list_falls_back_too_and_a_permanent_status_error_is_returned() {
    let pve = pve().await;
    let up = task("pve2", "qmstart", 205);
    on("GET", "/nodes/pve2/tasks")
        .respond_with(pve_error(
            403,
            "Permission check failed (/nodes/pve2, Sys.Audit)",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", &format!("/nodes/pve2/tasks/{up}/status"))
        .respond_with(pve_error(
            403,
            "Permission check failed (/nodes/pve2, Sys.Audit)",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = watcher(&pve)
        .wait(&up, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    pve.check_schema().await;
}

#[tokio::test]
async fn a_task_missing_from_the_list_is_read_directly_once_after_the_grace() {
    let pve = pve().await;
    let up = task("pve1", "qmclone", 9000);
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(json!([])))
        .expect(3..=5)
        .mount(&pve.server)
        .await;
    on("GET", &format!("/nodes/pve1/tasks/{up}/status"))
        .respond_with(data(json!({"status": "stopped", "exitstatus": "OK"})))
        .expect(1)
        .mount(&pve.server)
        .await;
    let started = Instant::now();
    let st = watcher(&pve)
        .wait(&up, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(st.is_success());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    pve.check_schema().await;
}

#[tokio::test]
async fn a_missing_task_still_running_is_read_once_per_grace_and_keeps_being_watched() {
    let pve = pve().await;
    let up = task("pve1", "qmclone", 9000);
    let listed = up.clone();
    // Missing for ~0.5 s (one direct read says running), then listed finished.
    let t0 = Instant::now();
    on("GET", "/nodes/pve1/tasks")
        .respond_with(move |_: &Request| {
            if t0.elapsed() < Duration::from_millis(500) {
                data(json!([]))
            } else {
                data(json!([entry(&listed, Some("OK"))]))
            }
        })
        .expect(5..=7)
        .mount(&pve.server)
        .await;
    on("GET", &format!("/nodes/pve1/tasks/{up}/status"))
        .respond_with(data(json!({"status": "running"})))
        .expect(1)
        .mount(&pve.server)
        .await;
    assert!(
        watcher(&pve)
            .wait(&up, Duration::from_secs(5))
            .await
            .is_ok()
    );
    pve.check_schema().await;
}

#[tokio::test]
async fn two_nodes_are_polled_independently() {
    let pve = pve().await;
    let a = task("pve1", "qmstart", 205);
    let b = task("pve2", "qmclone", 9001);
    let (la, lb) = (a.clone(), b.clone());
    on("GET", "/nodes/pve1/tasks")
        .respond_with(by_call(move |call| {
            vec![entry(&la, (call >= 2).then_some("OK"))]
        }))
        .expect(2)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes/pve2/tasks")
        .respond_with(by_call(move |call| {
            vec![entry(&lb, (call >= 5).then_some("OK"))]
        }))
        .expect(5)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    let d = Duration::from_secs(5);
    let (ra, rb) = tokio::join!(w.wait(&a, d), w.wait(&b, d));
    assert!(ra.is_ok() && rb.is_ok());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(count(&pve.server, "/nodes/pve1/tasks").await, 2);
    assert_eq!(count(&pve.server, "/nodes/pve2/tasks").await, 5);
    pve.check_schema().await;
}

#[tokio::test]
async fn a_dropped_waiter_stops_the_polling() {
    let pve = pve().await;
    let up = task("pve1", "qmclone", 9000);
    let listed = up.clone();
    on("GET", "/nodes/pve1/tasks")
        .respond_with(by_call(move |_| vec![entry(&listed, None)]))
        .expect(2..=4)
        .mount(&pve.server)
        .await;
    let w = watcher(&pve);
    let (w2, u2) = (w.clone(), up.clone());
    let waiting = tokio::spawn(async move { w2.wait(&u2, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(w.waiters(), 1);
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert_eq!(w.waiters(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let polls = count(&pve.server, "/nodes/pve1/tasks").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(count(&pve.server, "/nodes/pve1/tasks").await, polls);
    // The node's driver ended; a new waiter gets a new one.
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(json!([entry(&up, Some("OK"))])))
        .with_priority(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    assert!(w.wait(&up, Duration::from_secs(5)).await.is_ok());
    pve.check_schema().await;
}

#[tokio::test]
async fn a_finished_entry_without_exit_status_is_read_directly() {
    let pve = pve().await;
    let up = task("pve1", "qmstart", 205);
    let mut odd = entry(&up, Some("OK"));
    odd.as_object_mut().unwrap().remove("status");
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(json!([odd])))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", &format!("/nodes/pve1/tasks/{up}/status"))
        .respond_with(data(
            json!({"status": "stopped", "exitstatus": "WARNINGS: 3"}),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let st = watcher(&pve)
        .wait(&up, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(st.warnings(), Some(3));
    pve.check_schema().await;
}
