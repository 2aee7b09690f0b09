//! start, stop, shutdown, status/current.

use std::time::Duration;

use proxmox_api::{NodeName, ProxmoxApi, VmId};
use serde_json::json;

use crate::common::{data, form_of, on, pve, pve_error, upid};

fn node() -> NodeName {
    NodeName::new("pve1").unwrap()
}

#[tokio::test]
async fn start_stop_shutdown_return_upids() {
    let pve = pve().await;
    for (action, kind) in [
        ("start", "qmstart"),
        ("stop", "qmstop"),
        ("shutdown", "qmshutdown"),
    ] {
        on("POST", &format!("/nodes/pve1/qemu/205/status/{action}"))
            .respond_with(data(json!(upid("pve1", kind, "205"))))
            .expect(1)
            .mount(&pve.server)
            .await;
    }
    assert_eq!(
        pve.client
            .start(&node(), VmId(205))
            .await
            .unwrap()
            .task_type(),
        "qmstart"
    );
    assert_eq!(
        pve.client
            .stop(&node(), VmId(205))
            .await
            .unwrap()
            .task_type(),
        "qmstop"
    );
    let up = pve
        .client
        .shutdown(&node(), VmId(205), Some(Duration::from_secs(120)))
        .await
        .unwrap();
    assert_eq!(up.task_type(), "qmshutdown");
    assert_eq!(up.id(), "205");
    assert_eq!(form_of(&pve.server, 2).await["timeout"], "120");
    assert!(form_of(&pve.server, 0).await.is_empty());
    pve.check_schema().await;
    let endpoints: Vec<_> = pve
        .events
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.endpoint)
        .collect();
    assert_eq!(
        endpoints,
        [
            "/nodes/{node}/qemu/{vmid}/status/start",
            "/nodes/{node}/qemu/{vmid}/status/stop",
            "/nodes/{node}/qemu/{vmid}/status/shutdown"
        ]
    );
}

#[tokio::test]
async fn shutdown_without_timeout_sends_no_parameters() {
    let pve = pve().await;
    on("POST", "/nodes/pve1/qemu/205/status/shutdown")
        .respond_with(data(json!(upid("pve1", "qmshutdown", "205"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    pve.client.shutdown(&node(), VmId(205), None).await.unwrap();
    assert!(form_of(&pve.server, 0).await.is_empty());
    pve.check_schema().await;
}

#[tokio::test]
async fn current_status() {
    let pve = pve().await;
    on("GET", "/nodes/pve1/qemu/205/status/current")
        .respond_with(data(json!({
            "status": "running", "qmpstatus": "running", "vmid": 205, "name": "gha-linux-205", "agent": 1,
            "uptime": 42, "tags": "ghr-managed", "pid": 4242, "cpus": 2, "ha": {"managed": 0}
        })))
        .expect(1)
        .mount(&pve.server)
        .await;
    let s = pve.client.vm_status(&node(), VmId(205)).await.unwrap();
    assert!(s.is_running());
    assert!(s.agent);
    assert_eq!(s.vmid, Some(VmId(205)));
    assert_eq!(s.uptime, Some(42));
    pve.check_schema().await;
}

#[tokio::test]
async fn start_of_locked_vm_is_not_retryable() {
    let pve = pve().await;
    on("POST", "/nodes/pve1/qemu/205/status/start")
        .respond_with(pve_error(500, "VM 205 is locked (clone)"))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve.client.start(&node(), VmId(205)).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert!(err.to_string().contains("VM 205 is locked (clone)"));
    pve.check_schema().await;
}
