//! Exercises every `ProxmoxApi` method against one mock server and checks all requests against
//! `../shared/api/pve-apidata-9.1.json` (at least 15 distinct method + path pairs). Also proves
//! the checker rejects what it must (so it cannot pass vacuously).

use std::collections::BTreeSet;
use std::time::Duration;

use proxmox_api::{
    CloneRequest, ConfigUpdate, NodeName, ProxmoxApi, Tags, TaskListQuery, TaskSource,
    TaskStatusType, Upid, VmId,
};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::common::{pve, schema, upid};

#[tokio::test]
async fn every_request_the_client_sends_conforms_to_the_pve_schema() {
    let pve = pve().await;
    let task = upid("pve1", "qmstart", "205");
    // A permissive mock that answers by endpoint; conformance is checked afterwards.
    let answers: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "GET",
            r"^/api2/json/version$",
            json!({"version": "9.1.1", "release": "9.1", "repoid": "42d3b7d8"}),
        ),
        (
            "GET",
            r"^/api2/json/cluster/resources$",
            json!([{"id": "qemu/205", "type": "qemu", "vmid": 205, "node": "pve1"}]),
        ),
        (
            "GET",
            r"^/api2/json/nodes$",
            json!([{"node": "pve1", "status": "online"}]),
        ),
        ("GET", r"^/api2/json/cluster/nextid$", json!("205")),
        (
            "GET",
            r"^/api2/json/nodes/pve1/qemu$",
            json!([{"vmid": 205, "status": "running"}]),
        ),
        (
            "GET",
            r"^/api2/json/nodes/pve1/qemu/205/config$",
            json!({"name": "gha-linux-205"}),
        ),
        (
            "PUT",
            r"^/api2/json/nodes/pve1/qemu/205/config$",
            json!(null),
        ),
        (
            "POST",
            r"^/api2/json/nodes/pve1/qemu/205/config$",
            json!(task),
        ),
        (
            "POST",
            r"^/api2/json/nodes/pve1/qemu/9000/clone$",
            json!(task),
        ),
        (
            "POST",
            r"^/api2/json/nodes/pve1/qemu/205/status/(start|stop|shutdown)$",
            json!(task),
        ),
        (
            "GET",
            r"^/api2/json/nodes/pve1/qemu/205/status/current$",
            json!({"status": "running"}),
        ),
        ("DELETE", r"^/api2/json/nodes/pve1/qemu/205$", json!(task)),
        (
            "GET",
            r"^/api2/json/nodes/pve1/tasks$",
            json!([{"upid": task, "status": "RUNNING"}]),
        ),
        (
            "GET",
            r"^/api2/json/nodes/pve1/tasks/.+/status$",
            json!({"status": "stopped", "exitstatus": "OK"}),
        ),
        (
            "POST",
            r"^/api2/json/nodes/pve1/qemu/205/agent/ping$",
            json!({"result": {}}),
        ),
        (
            "POST",
            r"^/api2/json/nodes/pve1/qemu/205/agent/file-write$",
            json!(null),
        ),
        (
            "GET",
            r"^/api2/json/storage/local$",
            json!({"storage": "local", "type": "dir", "content": "snippets"}),
        ),
        (
            "GET",
            r"^/api2/json/access/permissions$",
            json!({"/": {"Sys.Audit": 1}}),
        ),
    ];
    for (m, p, body) in answers {
        Mock::given(method(m))
            .and(path_regex(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": body })))
            .expect(1..)
            .mount(&pve.server)
            .await;
    }

    let c = &pve.client;
    let node = NodeName::new("pve1").unwrap();
    let vm = VmId(205);
    c.version().await.unwrap();
    c.cluster_vms().await.unwrap();
    c.nodes().await.unwrap();
    c.next_id().await.unwrap();
    c.node_vms(&node).await.unwrap();
    c.vm_config(&node, vm).await.unwrap();
    let update = ConfigUpdate {
        cicustom: Some("user=local:snippets/gha-linux-205.yaml".into()),
        tags: Some(Tags::from_tags(["ghr-managed", "ghr-pool-linux"]).unwrap()),
        description: Some("managed-by: proxmox-gha-runners\n".into()),
        name: Some("gha-linux-205".into()),
        smbios1: Some("uuid=6b8c6f0e-0000-4000-8000-000000000001,serial=Z2hh".into()),
        agent: Some("enabled=1".into()),
        delete: vec!["ide2".into()],
        digest: Some("a1b2c3".into()),
    };
    c.update_config(&node, vm, &update).await.unwrap();
    c.update_config_async(&node, vm, &update).await.unwrap();
    let mut clone = CloneRequest::new(vm);
    clone.name = Some("gha-linux-205".into());
    clone.full = Some(false);
    clone.target = Some(node.clone());
    clone.storage = Some("local-lvm".into());
    clone.pool = Some("ci".into());
    clone.description = Some("managed-by: proxmox-gha-runners\n".into());
    c.clone_vm(&node, VmId(9000), &clone).await.unwrap();
    c.start(&node, vm).await.unwrap();
    c.stop(&node, vm).await.unwrap();
    c.shutdown(&node, vm, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    c.vm_status(&node, vm).await.unwrap();
    c.delete_vm(&node, vm, true, true).await.unwrap();
    let up: Upid = task.parse().unwrap();
    c.task_status(&up).await.unwrap();
    c.wait_task(&up, Duration::from_secs(5)).await.unwrap();
    c.node_tasks(&node, &TaskListQuery::default())
        .await
        .unwrap();
    let query = TaskListQuery {
        source: Some(TaskSource::All),
        since: Some(1_716_580_000),
        until: Some(1_716_590_000),
        limit: Some(1000),
        start: Some(10),
        vmid: Some(vm),
        typefilter: Some("qmclone".into()),
        userfilter: Some("dispatcher@pve".into()),
        errors: Some(true),
        statusfilter: vec![TaskStatusType::Error, TaskStatusType::Unknown],
    };
    c.node_tasks(&node, &query).await.unwrap();
    c.agent_ping(&node, vm).await.unwrap();
    c.agent_file_write(
        &node,
        vm,
        "/run/gha/jitconfig",
        &SecretString::from("jit".to_owned()),
    )
    .await
    .unwrap();
    c.storage("local").await.unwrap();
    c.permissions(Some("/vms")).await.unwrap();
    c.permissions(None).await.unwrap();

    let pairs: BTreeSet<String> = pve.check_schema().await.into_iter().collect();
    assert!(
        pairs.len() >= 15,
        "only {} distinct method+path pairs: {pairs:#?}",
        pairs.len()
    );
    for must in [
        "GET /cluster/resources",
        "POST /nodes/{node}/qemu/{vmid}/clone",
        "PUT /nodes/{node}/qemu/{vmid}/config",
        "DELETE /nodes/{node}/qemu/{vmid}",
        "GET /nodes/{node}/tasks/{upid}/status",
        "GET /nodes/{node}/tasks",
        "POST /nodes/{node}/qemu/{vmid}/agent/file-write",
        "GET /access/permissions",
    ] {
        assert!(pairs.contains(must), "{must} missing from {pairs:#?}");
    }
    assert_eq!(pairs.len(), 20, "{pairs:#?}");
}

fn sent(method: &str, path: &str, query: &[(&str, &str)], form: &[(&str, &str)]) -> schema::Sent {
    let own = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    schema::Sent {
        method: method.into(),
        path: format!("/api2/json{path}"),
        query: own(query),
        form: own(form),
        json: None,
    }
}

#[test]
fn checker_rejects_what_the_schema_forbids() {
    assert!(
        schema::schema_path().exists(),
        "schema file must exist: {}",
        schema::schema_path().display()
    );
    let clone = "/nodes/pve1/qemu/9000/clone";
    let ok = sent("POST", clone, &[], &[("newid", "205"), ("full", "0")]);
    assert_eq!(
        schema::check(&ok).unwrap(),
        "POST /nodes/{node}/qemu/{vmid}/clone"
    );
    let bad: Vec<(schema::Sent, &str)> = vec![
        (
            sent("POST", clone, &[], &[("newid", "205"), ("full", "true")]),
            "boolean",
        ),
        (
            sent("POST", clone, &[], &[("newid", "205"), ("tags", "a")]),
            "not declared",
        ),
        (
            sent("POST", clone, &[], &[("full", "1")]),
            "required parameter \"newid\"",
        ),
        (sent("POST", clone, &[], &[("newid", "99")]), "minimum"),
        (sent("POST", clone, &[], &[("newid", "abc")]), "integer"),
        (
            sent("POST", clone, &[], &[("newid", "205"), ("format", "vhd")]),
            "not one of",
        ),
        (
            sent(
                "POST",
                clone,
                &[],
                &[("newid", "205"), ("name", "bad_name")],
            ),
            "dns-name",
        ),
        (sent("GET", clone, &[], &[]), "method not defined"),
        (
            sent("POST", "/nodes/pve1/qemu/205/cloudinit/dump", &[], &[]),
            "method not defined",
        ),
        (
            sent("GET", "/nodes/pve1/nonexistent", &[], &[]),
            "no such path",
        ),
        (
            sent("GET", "/cluster/resources", &[("type", "qemu")], &[]),
            "not one of",
        ),
        (
            sent(
                "PUT",
                "/nodes/pve1/qemu/205/config",
                &[],
                &[("tags", "a:b")],
            ),
            "pve-tag-list",
        ),
        (
            sent(
                "PUT",
                "/nodes/pve1/qemu/205/config",
                &[],
                &[("cicustom", "user=local")],
            ),
            "cicustom",
        ),
        (
            sent("DELETE", "/nodes/pve1/qemu/205", &[("purge", "yes")], &[]),
            "boolean",
        ),
        (sent("GET", "/version", &[], &[("x", "1")]), "with a body"),
        (
            sent("GET", "/nodes/pve1/tasks", &[("source", "running")], &[]),
            "not one of",
        ),
        (
            sent("GET", "/nodes/pve1/tasks", &[("errors", "true")], &[]),
            "boolean",
        ),
        (
            sent("GET", "/nodes/pve1/tasks", &[("since", "yesterday")], &[]),
            "integer",
        ),
        (
            sent("GET", "/nodes/pve1/tasks", &[("state", "ok")], &[]),
            "not declared",
        ),
    ];
    for (s, needle) in bad {
        let problems =
            schema::check(&s).expect_err(&format!("{} {} should fail", s.method, s.path));
        let text = problems.join("\n");
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}
