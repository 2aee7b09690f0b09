//! `GET /nodes/{node}/tasks`: the query PVE declares, lenient decoding of its entries.

use proxmox_api::{Error, NodeName, ProxmoxApi, TaskListQuery, TaskSource, TaskStatusType, VmId};
use serde_json::json;
use wiremock::matchers::query_param;

use crate::common::{data, on, pve, pve_error, upid};

fn node() -> NodeName {
    NodeName::new("pve1").unwrap()
}

#[tokio::test]
async fn sends_the_typed_query_and_decodes_active_then_archived_entries() {
    let pve = pve().await;
    let running = upid("pve1", "qmclone", "9000");
    let done = upid("pve1", "qmstart", "205");
    on("GET", "/nodes/pve1/tasks")
        .and(query_param("source", "all"))
        .and(query_param("since", "1716580000"))
        .and(query_param("until", "1716590000"))
        .and(query_param("limit", "1000"))
        .and(query_param("start", "0"))
        .and(query_param("vmid", "205"))
        .and(query_param("typefilter", "qmstart"))
        .and(query_param("userfilter", "dispatcher"))
        .and(query_param("errors", "0"))
        .and(query_param("statusfilter", "ok,warning,error,unknown"))
        .respond_with(data(json!([
            {"upid": running, "node": "pve1", "pid": 662316, "pstart": 19114957,
             "starttime": 1716580365, "type": "qmclone", "id": "9000",
             "user": "dispatcher@pve", "tokenid": "runners", "status": "RUNNING"},
            {"upid": done, "node": "pve1", "pid": "662316", "pstart": "19114957",
             "starttime": "1716580365", "endtime": 1716580371, "type": "qmstart", "id": 205,
             "user": "dispatcher@pve", "tokenid": "runners", "status": "OK"},
            {"node": "pve1", "status": "OK", "note": "no upid: skipped"}
        ])))
        .expect(1)
        .mount(&pve.server)
        .await;
    let query = TaskListQuery {
        source: Some(TaskSource::All),
        since: Some(1716580000),
        until: Some(1716590000),
        limit: Some(1000),
        start: Some(0),
        vmid: Some(VmId(205)),
        typefilter: Some("qmstart".into()),
        userfilter: Some("dispatcher".into()),
        errors: Some(false),
        statusfilter: vec![
            TaskStatusType::Ok,
            TaskStatusType::Warning,
            TaskStatusType::Error,
            TaskStatusType::Unknown,
        ],
    };
    let list = pve.client.node_tasks(&node(), &query).await.unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0].upid, running);
    assert!(list[0].is_running());
    assert_eq!(list[0].parsed_upid.as_ref().unwrap().id(), "9000");
    assert!(list[1].is_finished());
    assert_eq!(list[1].id, "205");
    assert_eq!(list[1].endtime, Some(1716580371));
    assert!(list[1].task_status().is_success());
    assert_eq!(
        pve.check_schema().await,
        ["GET /nodes/{node}/tasks".to_owned()]
    );
    let events = pve.events.0.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].endpoint, "/nodes/{node}/tasks");
}

#[tokio::test]
async fn default_query_sends_no_parameters_and_errors_map() {
    let pve = pve().await;
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(json!([])))
        .up_to_n_times(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    let list = pve
        .client
        .node_tasks(&node(), &TaskListQuery::default())
        .await
        .unwrap();
    assert!(list.is_empty());
    let reqs = pve.server.received_requests().await.unwrap();
    assert_eq!(reqs[0].url.query(), None);

    on("GET", "/nodes/pve1/tasks")
        .respond_with(pve_error(
            403,
            "Permission check failed (/nodes/pve1, Sys.Audit)",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve
        .client
        .node_tasks(&node(), &TaskListQuery::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Api { status: 403, .. }), "{err}");
    assert!(!err.is_retryable());
    pve.check_schema().await;
}

#[tokio::test]
async fn a_non_list_answer_is_a_decode_error() {
    let pve = pve().await;
    on("GET", "/nodes/pve1/tasks")
        .respond_with(data(json!({"unexpected": "object"})))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve
        .client
        .node_tasks(&node(), &TaskListQuery::default())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Decode { .. }), "{err}");
    assert!(!err.is_retryable());
    pve.check_schema().await;
}
