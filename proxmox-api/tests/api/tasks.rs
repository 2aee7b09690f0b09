//! Task status and waiting: polls the node named in the UPID; success = stopped + OK/WARNINGS.

use std::time::{Duration, Instant};

use proxmox_api::{Error, ProxmoxApi, Upid};
use serde_json::json;

use crate::common::{data, on, pve, pve_error, upid};

fn status(up: &str, state: &str, exit: Option<&str>) -> serde_json::Value {
    let mut v = json!({
        "upid": up, "node": "pve2", "pid": 662316, "pstart": 19114957, "starttime": 1716580365,
        "type": "qmclone", "id": "9000", "user": "dispatcher@pve!runners", "status": state
    });
    if let Some(e) = exit {
        v["exitstatus"] = json!(e);
    }
    v
}

fn task() -> (String, Upid) {
    // The task runs on pve2 although nothing else in these tests mentions pve2: the client must
    // poll the node inside the UPID.
    let s = upid("pve2", "qmclone", "9000");
    let u: Upid = s.parse().unwrap();
    (s, u)
}

#[tokio::test]
async fn waits_until_stopped_ok_polling_the_upid_node() {
    let pve = pve().await;
    let (s, u) = task();
    let p = format!("/nodes/pve2/tasks/{s}/status");
    on("GET", &p)
        .respond_with(data(status(&s, "running", None)))
        .up_to_n_times(2)
        .expect(2)
        .mount(&pve.server)
        .await;
    on("GET", &p)
        .respond_with(data(status(&s, "stopped", Some("OK"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    let started = Instant::now();
    let st = pve
        .client
        .wait_task(&u, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(st.is_success());
    // 100 ms then 150 ms between polls.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(240) && took < Duration::from_secs(3),
        "{took:?}"
    );
    pve.check_schema().await;
    assert!(
        pve.events
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|e| e.endpoint == "/nodes/{node}/tasks/{upid}/status")
    );
}

#[tokio::test]
async fn warnings_count_as_success() {
    let pve = pve().await;
    let (s, u) = task();
    on("GET", &format!("/nodes/pve2/tasks/{s}/status"))
        .respond_with(data(status(&s, "stopped", Some("WARNINGS: 2"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    let st = pve
        .client
        .wait_task(&u, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(st.warnings(), Some(2));
    pve.check_schema().await;
}

#[tokio::test]
async fn error_text_is_task_failed() {
    let pve = pve().await;
    let (s, u) = task();
    on("GET", &format!("/nodes/pve2/tasks/{s}/status"))
        .respond_with(data(status(
            &s,
            "stopped",
            Some("unable to create VM 205: config file already exists"),
        )))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve
        .client
        .wait_task(&u, Duration::from_secs(5))
        .await
        .unwrap_err();
    match &err {
        Error::TaskFailed { upid, exitstatus } => {
            assert_eq!(upid, &u);
            assert_eq!(
                exitstatus,
                "unable to create VM 205: config file already exists"
            );
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    assert!(err.is_vmid_taken());
    assert!(!err.is_retryable());
    pve.check_schema().await;
}

#[tokio::test]
async fn deadline_exceeded_while_running() {
    let pve = pve().await;
    let (s, u) = task();
    on("GET", &format!("/nodes/pve2/tasks/{s}/status"))
        .respond_with(data(status(&s, "running", None)))
        .expect(3..=6)
        .mount(&pve.server)
        .await;
    let started = Instant::now();
    let err = pve
        .client
        .wait_task(&u, Duration::from_millis(400))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(!err.is_retryable());
    pve.check_schema().await;
}

#[tokio::test]
async fn transient_poll_errors_are_tolerated_permanent_ones_are_not() {
    let pve = pve().await;
    let (s, u) = task();
    let p = format!("/nodes/pve2/tasks/{s}/status");
    on("GET", &p)
        .respond_with(pve_error(596, "Connection timed out"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", &p)
        .respond_with(data(status(&s, "stopped", Some("OK"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    assert!(
        pve.client
            .wait_task(&u, Duration::from_secs(5))
            .await
            .is_ok()
    );

    let other = upid("pve3", "qmstart", "205");
    let ou: Upid = other.parse().unwrap();
    on("GET", &format!("/nodes/pve3/tasks/{other}/status"))
        .respond_with(pve_error(
            403,
            "Permission check failed (/nodes/pve3, Sys.Audit)",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve
        .client
        .wait_task(&ou, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    pve.check_schema().await;
}
