//! POST /nodes/{node}/qemu/{vmid}/clone.

use proxmox_api::{CloneRequest, NodeName, ProxmoxApi, VmId};
use serde_json::json;

use crate::common::{data, form_of, on, pve, pve_error, upid};

#[tokio::test]
async fn linked_clone_with_every_field() {
    let pve = pve().await;
    let task = upid("pve1", "qmclone", "9000");
    on("POST", "/nodes/pve1/qemu/9000/clone")
        .respond_with(data(json!(task)))
        .expect(1)
        .mount(&pve.server)
        .await;
    let mut req = CloneRequest::new(VmId(205));
    req.name = Some("gha-linux-205".into());
    req.full = Some(false);
    req.target = Some(NodeName::new("pve2").unwrap());
    req.storage = Some("local-lvm".into());
    req.pool = Some("ci".into());
    req.description = Some("managed-by: proxmox-gha-runners\npool: linux\n".into());
    let got = pve
        .client
        .clone_vm(&NodeName::new("pve1").unwrap(), VmId(9000), &req)
        .await
        .unwrap();
    assert_eq!(got.to_string(), task);
    assert_eq!(got.node().as_str(), "pve1");
    assert_eq!(got.task_type(), "qmclone");
    let form = form_of(&pve.server, 0).await;
    assert_eq!(form["newid"], "205");
    assert_eq!(form["full"], "0");
    assert_eq!(form["target"], "pve2");
    assert_eq!(
        form["description"],
        "managed-by: proxmox-gha-runners\npool: linux\n"
    );
    assert_eq!(form.len(), 7);
    pve.check_schema().await;
    assert_eq!(
        pve.events.0.lock().unwrap()[0].endpoint,
        "/nodes/{node}/qemu/{vmid}/clone"
    );
}

#[tokio::test]
async fn full_clone_minimal_sends_only_what_is_set() {
    let pve = pve().await;
    on("POST", "/nodes/pve1/qemu/9000/clone")
        .respond_with(data(json!(upid("pve1", "qmclone", "9000"))))
        .expect(1)
        .mount(&pve.server)
        .await;
    let mut req = CloneRequest::new(VmId(300));
    req.full = Some(true);
    pve.client
        .clone_vm(&NodeName::new("pve1").unwrap(), VmId(9000), &req)
        .await
        .unwrap();
    let form = form_of(&pve.server, 0).await;
    assert_eq!(form.len(), 2);
    assert_eq!(form["full"], "1");
    pve.check_schema().await;
}

#[tokio::test]
async fn clone_onto_existing_id_is_vmid_taken_and_not_retryable() {
    let pve = pve().await;
    on("POST", "/nodes/pve1/qemu/9000/clone")
        .respond_with(pve_error(
            500,
            "unable to create VM 205: config file already exists",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve
        .client
        .clone_vm(
            &NodeName::new("pve1").unwrap(),
            VmId(9000),
            &CloneRequest::new(VmId(205)),
        )
        .await
        .unwrap_err();
    assert!(err.is_vmid_taken(), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(err.status(), Some(500));
    pve.check_schema().await;
}
