//! GET/PUT/POST /nodes/{node}/qemu/{vmid}/config.

use proxmox_api::{ConfigUpdate, NodeName, ProxmoxApi, Tags, VmId};
use serde_json::json;

use crate::common::{data, form_of, on, pve, upid};

fn node() -> NodeName {
    NodeName::new("pve2").unwrap()
}

#[tokio::test]
async fn get_config_typed_and_raw() {
    let pve = pve().await;
    on("GET", "/nodes/pve2/qemu/205/config")
        .respond_with(data(json!({
            "name": "gha-linux-205", "description": "managed-by: proxmox-gha-runners\n",
            "tags": "ghr-managed;ghr-pool-linux", "cicustom": "user=local:snippets/gha-linux-205.yaml",
            "agent": "1", "memory": "4096", "cores": 4, "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "digest": "a1b2c3", "smbios1": "uuid=6b8c6f0e-0000-4000-8000-000000000001"
        })))
        .expect(1)
        .mount(&pve.server)
        .await;
    let c = pve.client.vm_config(&node(), VmId(205)).await.unwrap();
    assert_eq!(c.name.as_deref(), Some("gha-linux-205"));
    assert!(c.tags.contains("ghr-managed"));
    assert!(c.agent_enabled());
    assert!(!c.template);
    assert_eq!(c.digest.as_deref(), Some("a1b2c3"));
    assert_eq!(c.raw["cores"], json!(4));
    pve.check_schema().await;
}

#[tokio::test]
async fn put_config_sends_every_field_as_form() {
    let pve = pve().await;
    on("PUT", "/nodes/pve2/qemu/205/config")
        .respond_with(data(json!(null)))
        .expect(1)
        .mount(&pve.server)
        .await;
    let update = ConfigUpdate {
        cicustom: Some("user=shared:snippets/gha-linux-205.yaml".into()),
        tags: Some(
            Tags::from_tags(["ghr-pool-linux", "GHR-managed", "ghr-phase-booting"]).unwrap(),
        ),
        description: Some("managed-by: proxmox-gha-runners\n".into()),
        name: Some("gha-linux-205".into()),
        smbios1: Some("uuid=6b8c6f0e-0000-4000-8000-000000000001,serial=Z2hh".into()),
        agent: Some("enabled=1".into()),
        delete: vec!["ide2".into(), "sshkeys".into()],
        digest: Some("a1b2c3".into()),
    };
    pve.client
        .update_config(&node(), VmId(205), &update)
        .await
        .unwrap();
    let form = form_of(&pve.server, 0).await;
    assert_eq!(form["tags"], "ghr-managed;ghr-phase-booting;ghr-pool-linux");
    assert_eq!(form["delete"], "ide2,sshkeys");
    assert_eq!(form["cicustom"], "user=shared:snippets/gha-linux-205.yaml");
    assert_eq!(form.len(), 8);
    pve.check_schema().await;
}

#[tokio::test]
async fn empty_update_is_refused_before_sending() {
    let pve = pve().await;
    let err = pve
        .client
        .update_config(&node(), VmId(205), &ConfigUpdate::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("config update"), "{err}");
    assert!(pve.server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn post_config_returns_task_or_nothing() {
    let pve = pve().await;
    let task = upid("pve2", "qmconfig", "205");
    on("POST", "/nodes/pve2/qemu/205/config")
        .respond_with(data(json!(task)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    on("POST", "/nodes/pve2/qemu/205/config")
        .respond_with(data(json!(null)))
        .expect(1)
        .mount(&pve.server)
        .await;
    let update = ConfigUpdate {
        delete: vec!["cicustom".into()],
        ..Default::default()
    };
    let first = pve
        .client
        .update_config_async(&node(), VmId(205), &update)
        .await
        .unwrap();
    assert_eq!(first.map(|u| u.to_string()), Some(task));
    let second = pve
        .client
        .update_config_async(&node(), VmId(205), &update)
        .await
        .unwrap();
    assert_eq!(second, None);
    pve.check_schema().await;
}
