//! version, cluster resources, nodes, next id, node VMs, storage, permissions.

use proxmox_api::{NodeName, ProxmoxApi, VmId};
use serde_json::json;
use wiremock::matchers::query_param;

use crate::common::{data, on, pve};

#[tokio::test]
async fn version() {
    let pve = pve().await;
    on("GET", "/version")
        .respond_with(data(
            json!({"version": "9.1.1", "release": "9.1", "repoid": "42d3b7d8", "console": "html5"}),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let v = pve.client.version().await.unwrap();
    assert_eq!((v.version.as_str(), v.release.as_str()), ("9.1.1", "9.1"));
    pve.check_schema().await;
    let events = pve.events.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].endpoint, "/version");
    assert_eq!(events[0].status, Some(200));
    assert_eq!(events[0].method, reqwest::Method::GET);
}

#[tokio::test]
async fn cluster_vms_keeps_only_qemu_and_decodes_leniently() {
    let pve = pve().await;
    on("GET", "/cluster/resources")
        .and(query_param("type", "vm"))
        .respond_with(data(json!([
            {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "name": "tmpl-ubuntu", "status": "stopped",
             "template": 1, "tags": "ghr-template", "maxmem": 4294967296u64, "mem": 0, "uptime": 0},
            {"id": "lxc/101", "type": "lxc", "vmid": 101, "node": "pve1", "name": "ct", "status": "running", "template": 0},
            {"id": "qemu/205", "type": "qemu", "vmid": "205", "node": "pve2", "status": "unknown", "lock": "clone",
             "tags": "GHR-managed;ghr-pool-linux", "pool": "ci"},
            {"id": "qemu/206", "type": "qemu", "vmid": 206, "node": "pve2", "name": "gha-linux-206", "status": "running",
             "template": false, "uptime": "3600", "mem": 1073741824, "maxmem": 2147483648u64, "hastate": "started"}
        ])))
        .expect(1)
        .mount(&pve.server)
        .await;
    let vms = pve.client.cluster_vms().await.unwrap();
    assert_eq!(
        vms.iter().map(|v| v.vmid).collect::<Vec<_>>(),
        [VmId(100), VmId(205), VmId(206)]
    );
    assert!(vms[0].template);
    assert_eq!(vms[1].name, None);
    assert_eq!(vms[1].lock.as_deref(), Some("clone"));
    assert_eq!(vms[1].tags.to_string(), "ghr-managed;ghr-pool-linux");
    assert_eq!(vms[1].pool.as_deref(), Some("ci"));
    assert_eq!(vms[2].uptime, Some(3600));
    assert_eq!(vms[2].node.as_str(), "pve2");
    assert!(!vms[2].template);
    pve.check_schema().await;
    assert_eq!(
        pve.events.0.lock().unwrap()[0].endpoint,
        "/cluster/resources"
    );
}

#[tokio::test]
async fn cluster_guests_keeps_containers_for_cluster_wide_vmids() {
    let pve = pve().await;
    on("GET", "/cluster/resources")
        .and(query_param("type", "vm"))
        .respond_with(data(json!([
            {"id": "qemu/100", "type": "qemu", "vmid": 100, "node": "pve1", "name": "vm", "status": "running"},
            {"id": "lxc/101", "type": "lxc", "vmid": "101", "node": "pve2", "name": "ct", "status": "running", "template": 0},
            {"id": "storage/pve1/local", "type": "storage", "node": "pve1", "storage": "local"}
        ])))
        .expect(1)
        .mount(&pve.server)
        .await;
    let guests = pve.client.cluster_guests().await.unwrap();
    assert_eq!(
        guests
            .iter()
            .map(|g| (g.vmid, g.resource_type.as_str()))
            .collect::<Vec<_>>(),
        [(VmId(100), "qemu"), (VmId(101), "lxc")]
    );
    assert_eq!(guests[1].node.as_str(), "pve2");
    pve.check_schema().await;
}

#[tokio::test]
async fn cluster_vms_rejects_qemu_entry_without_vmid() {
    let pve = pve().await;
    on("GET", "/cluster/resources")
        .respond_with(data(
            json!([{"id": "qemu/1", "type": "qemu", "node": "pve1"}]),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve.client.cluster_vms().await.unwrap_err();
    assert!(matches!(err, proxmox_api::Error::Decode { .. }), "{err}");
    pve.check_schema().await;
}

#[tokio::test]
async fn nodes_next_id_and_node_vms() {
    let pve = pve().await;
    on("GET", "/nodes")
        .respond_with(data(json!([
            {"node": "pve1", "status": "online", "mem": 1000, "maxmem": 8000, "cpu": 0.05, "maxcpu": 8, "uptime": 99,
             "ssl_fingerprint": "AA:BB", "level": ""},
            {"node": "pve2", "status": "offline"}
        ])))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/cluster/nextid")
        .respond_with(data(json!("105")))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes/pve1/qemu")
        .respond_with(data(json!([
            {"vmid": 100, "status": "stopped", "name": "tmpl", "template": 1},
            {"vmid": "205", "status": "running", "name": "gha-linux-205", "tags": "ghr-managed", "qmpstatus": "running",
             "uptime": 12, "lock": "backup"}
        ])))
        .expect(1)
        .mount(&pve.server)
        .await;
    let nodes = pve.client.nodes().await.unwrap();
    assert!(nodes[0].is_online() && !nodes[1].is_online());
    assert_eq!(nodes[0].maxmem, Some(8000));
    assert_eq!(pve.client.next_id().await.unwrap(), VmId(105));
    let vms = pve
        .client
        .node_vms(&NodeName::new("pve1").unwrap())
        .await
        .unwrap();
    assert!(vms[0].template);
    assert_eq!(vms[1].vmid, VmId(205));
    assert!(vms[1].tags.contains("ghr-managed"));
    assert_eq!(pve.check_schema().await.len(), 3);
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
        ["/nodes", "/cluster/nextid", "/nodes/{node}/qemu"]
    );
}

#[tokio::test]
async fn storage_and_permissions() {
    let pve = pve().await;
    on("GET", "/storage/local")
        .respond_with(data(
            json!({"storage": "local", "type": "dir", "content": "iso,vztmpl,snippets,backup",
                                  "path": "/var/lib/vz", "digest": "3f2a", "shared": 0}),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/access/permissions")
        .and(query_param("path", "/vms"))
        .respond_with(data(
            json!({"/vms": {"VM.Clone": 1, "VM.Allocate": 1, "VM.Audit": 1}}),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let s = pve.client.storage("local").await.unwrap();
    assert!(s.has_content("snippets"));
    assert_eq!(s.path.as_deref(), Some("/var/lib/vz"));
    let p = pve.client.permissions(Some("/vms")).await.unwrap();
    assert!(p.allows("/vms", "VM.Clone"));
    assert!(!p.allows("/vms", "VM.PowerMgmt"));
    pve.check_schema().await;
}

#[tokio::test]
async fn permissions_whole_tree() {
    let pve = pve().await;
    on("GET", "/access/permissions")
        .respond_with(data(json!({
            "/": {"Sys.Audit": 1},
            "/vms": {"VM.Allocate": 1, "VM.Clone": 1, "VM.Config.Options": 1, "VM.PowerMgmt": 1, "VM.Audit": 1,
                     "VM.GuestAgent.FileWrite": 1, "VM.GuestAgent.Audit": 1, "VM.Config.Cloudinit": 1},
            "/storage/local": {"Datastore.AllocateSpace": 1, "Datastore.Audit": 0}
        })))
        .expect(1)
        .mount(&pve.server)
        .await;
    let p = pve.client.permissions(None).await.unwrap();
    assert!(p.allows("/vms/205", "VM.PowerMgmt"));
    assert!(p.allows("/nodes/pve1", "Sys.Audit"));
    assert!(p.allows("/storage/local", "Datastore.Audit"));
    assert!(!p.allows("/storage/local/x", "Datastore.Audit"));
    let reqs = pve.server.received_requests().await.unwrap();
    assert_eq!(reqs[0].url.query(), None, "no path parameter when None");
    pve.check_schema().await;
}
