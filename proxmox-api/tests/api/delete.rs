//! DELETE /nodes/{node}/qemu/{vmid}.

use proxmox_api::{NodeName, ProxmoxApi, VmId};
use serde_json::json;
use wiremock::matchers::query_param;

use crate::common::{data, on, pve, pve_error, upid};

#[tokio::test]
async fn delete_with_purge_and_unreferenced_disks() {
    let pve = pve().await;
    on("DELETE", "/nodes/pve2/qemu/205")
        .and(query_param("purge", "1"))
        .and(query_param("destroy-unreferenced-disks", "1"))
        .respond_with(data(json!(upid("pve2", "qmdestroy", "205"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    let up = pve
        .client
        .delete_vm(&NodeName::new("pve2").unwrap(), VmId(205), true, true)
        .await
        .unwrap();
    assert_eq!(up.task_type(), "qmdestroy");
    let reqs = pve.server.received_requests().await.unwrap();
    assert!(reqs[0].body.is_empty(), "DELETE carries no body");
    pve.check_schema().await;
}

#[tokio::test]
async fn delete_without_flags_sends_zeroes() {
    let pve = pve().await;
    on("DELETE", "/nodes/pve2/qemu/205")
        .and(query_param("purge", "0"))
        .and(query_param("destroy-unreferenced-disks", "0"))
        .respond_with(data(json!(upid("pve2", "qmdestroy", "205"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    pve.client
        .delete_vm(&NodeName::new("pve2").unwrap(), VmId(205), false, false)
        .await
        .unwrap();
    pve.check_schema().await;
}

#[tokio::test]
async fn delete_of_running_vm_and_of_missing_vm() {
    let pve = pve().await;
    on("DELETE", "/nodes/pve2/qemu/205")
        .respond_with(pve_error(500, "VM 205 is running - destroy failed"))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("DELETE", "/nodes/pve2/qemu/206")
        .respond_with(pve_error(
            500,
            "Configuration file 'nodes/pve2/qemu-server/206.conf' does not exist",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let node = NodeName::new("pve2").unwrap();
    let running = pve
        .client
        .delete_vm(&node, VmId(205), true, true)
        .await
        .unwrap_err();
    assert!(running.to_string().contains("is running - destroy failed"));
    assert!(!running.is_not_found());
    let missing = pve
        .client
        .delete_vm(&node, VmId(206), true, true)
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(!missing.is_retryable());
    pve.check_schema().await;
}
