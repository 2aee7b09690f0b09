//! Error mapping: message from the body's `message`, else the reason phrase; `errors` for 400;
//! retryability; and the token secret never shows in Debug or Display.

use std::time::Duration;

use proxmox_api::{
    CloneRequest, Error, NodeName, ProxmoxApi, ProxmoxClient, RetryPolicy, VmId, retry,
};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::common::{
    TOKEN_SECRET, config_for, data, on, pve, pve_error, raw_response, raw_server, schema,
};

fn api_parts(e: &Error) -> (u16, String, Vec<(String, String)>) {
    match e {
        Error::Api {
            status,
            message,
            errors,
            ..
        } => (
            *status,
            message.clone(),
            errors.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        other => panic!("expected Error::Api, got {other:?}"),
    }
}

#[tokio::test]
async fn status_mapping_from_wiremock() {
    let pve = pve().await;
    let node = NodeName::new("pve1").unwrap();
    on("POST", "/nodes/pve1/qemu/9000/clone")
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "data": null,
            "message": "Parameter verification failed.\n",
            "errors": {"name": "invalid format - value does not look like a valid DNS name\n",
                       "newid": "value must have a minimum value of 100\n"}
        })))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes/pve1/qemu/205/config")
        .respond_with(pve_error(
            403,
            "Permission check failed (/vms/205, VM.Audit)",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes/pve1/qemu/205/status/current")
        .respond_with(pve_error(
            500,
            "Configuration file 'nodes/pve1/qemu-server/205.conf' does not exist",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/version")
        .respond_with(pve_error(501, "Method 'GET /version' not implemented"))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes")
        .respond_with(ResponseTemplate::new(596))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/cluster/nextid")
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&pve.server)
        .await;

    let mut req = CloneRequest::new(VmId(100));
    req.name = Some("valid-name".into());
    let e400 = pve
        .client
        .clone_vm(&node, VmId(9000), &req)
        .await
        .unwrap_err();
    let (status, message, errors) = api_parts(&e400);
    assert_eq!(
        (status, message.as_str()),
        (400, "Parameter verification failed.")
    );
    assert_eq!(
        errors,
        [
            (
                "name".to_owned(),
                "invalid format - value does not look like a valid DNS name".to_owned()
            ),
            (
                "newid".to_owned(),
                "value must have a minimum value of 100".to_owned()
            )
        ]
    );
    assert!(
        e400.to_string()
            .contains("newid: value must have a minimum value of 100")
    );
    assert!(!e400.is_retryable());

    let e403 = pve.client.vm_config(&node, VmId(205)).await.unwrap_err();
    assert_eq!(
        api_parts(&e403).1,
        "Permission check failed (/vms/205, VM.Audit)"
    );
    assert!(!e403.is_retryable());

    let e500 = pve.client.vm_status(&node, VmId(205)).await.unwrap_err();
    assert_eq!(api_parts(&e500).0, 500);
    assert!(e500.is_not_found());

    let e501 = pve.client.version().await.unwrap_err();
    assert_eq!(
        api_parts(&e501),
        (501, "Method 'GET /version' not implemented".into(), vec![])
    );
    assert!(!e501.is_retryable());

    let e596 = pve.client.nodes().await.unwrap_err();
    assert_eq!(api_parts(&e596).0, 596);
    assert!(e596.is_retryable());

    let e401 = pve.client.next_id().await.unwrap_err();
    let (status, message, _) = api_parts(&e401);
    assert_eq!((status, message.as_str()), (401, "Unauthorized"));
    assert!(!e401.is_retryable());

    for e in [&e400, &e403, &e500, &e501, &e596, &e401] {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(TOKEN_SECRET), "{text}");
    }
    pve.check_schema().await;
}

#[tokio::test]
async fn reason_phrase_is_the_message_when_the_body_has_none() {
    let (base, seen) = raw_server(vec![
        raw_response(
            "500 unable to create VM 205: config file already exists",
            r#"{"data":null}"#,
        ),
        raw_response(
            "500 Internal Server Error",
            r#"{"data":null,"message":"storage 'nfs' is not online\n"}"#,
        ),
        raw_response("596 Connection timed out", ""),
        raw_response(
            "500 can't lock file '/var/lock/qemu-server/lock-205.conf' - got timeout",
            "",
        ),
    ])
    .await;
    let client = ProxmoxClient::new(config_for(&base)).unwrap();
    let node = NodeName::new("pve1").unwrap();
    let e1 = client
        .clone_vm(&node, VmId(9000), &CloneRequest::new(VmId(205)))
        .await
        .unwrap_err();
    assert_eq!(
        api_parts(&e1).1,
        "unable to create VM 205: config file already exists"
    );
    assert!(e1.is_vmid_taken() && !e1.is_retryable());

    let e2 = client.storage("nfs").await.unwrap_err();
    assert_eq!(
        api_parts(&e2).1,
        "storage 'nfs' is not online",
        "body message wins"
    );

    let e3 = client.nodes().await.unwrap_err();
    assert_eq!(api_parts(&e3), (596, "Connection timed out".into(), vec![]));
    assert!(e3.is_retryable());

    let e4 = client.start(&node, VmId(205)).await.unwrap_err();
    assert!(e4.is_lock_timeout() && e4.is_retryable(), "{e4}");

    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    schema::check_all(&sent);
}

#[tokio::test]
async fn transport_and_decode_errors() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rec = std::sync::Arc::new(crate::common::Recorder::default());
    let client = ProxmoxClient::new(config_for(&format!("http://127.0.0.1:{port}/api2/json")))
        .unwrap()
        .with_observer(rec.clone());
    let e = client.version().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert!(!format!("{e} {e:?}").contains(TOKEN_SECRET));
    assert_eq!(rec.0.lock().unwrap()[0].status, None);

    let pve = pve().await;
    on("GET", "/version")
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>proxy</html>"))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"result": []})))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/cluster/nextid")
        .respond_with(data(json!({"unexpected": "shape"})))
        .expect(1)
        .mount(&pve.server)
        .await;
    for e in [
        pve.client.version().await.unwrap_err(),
        pve.client.nodes().await.unwrap_err(),
        pve.client.next_id().await.map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Decode { .. }), "{e:?}");
        assert!(!e.is_retryable());
    }
    pve.check_schema().await;
}

#[tokio::test]
async fn timeout_is_a_retryable_transport_error() {
    let pve = pve().await;
    on("GET", "/version")
        .respond_with(data(json!({"version": "9.1.1"})).set_delay(Duration::from_millis(800)))
        .expect(1)
        .mount(&pve.server)
        .await;
    let mut cfg = config_for(&format!("{}/api2/json", pve.server.uri()));
    cfg.timeout = Duration::from_millis(200);
    let client = ProxmoxClient::new(cfg).unwrap();
    let e = client.version().await.unwrap_err();
    match &e {
        Error::Transport { source, .. } => assert!(source.is_timeout()),
        other => panic!("{other:?}"),
    }
    assert!(e.is_retryable());
    pve.check_schema().await;
}

#[tokio::test]
async fn retry_helper_retries_5xx_then_succeeds_but_not_4xx() {
    let pve = pve().await;
    on("GET", "/version")
        .respond_with(pve_error(503, "service unavailable"))
        .up_to_n_times(2)
        .expect(2)
        .mount(&pve.server)
        .await;
    on("GET", "/version")
        .respond_with(data(
            json!({"version": "9.1.1", "release": "9.1", "repoid": "42d3b7d8"}),
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    on("GET", "/nodes")
        .respond_with(pve_error(
            403,
            "Permission check failed (/nodes, Sys.Audit)",
        ))
        .expect(1)
        .mount(&pve.server)
        .await;
    let policy = RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        multiplier: 2.0,
    };
    let v = retry(&policy, || pve.client.version()).await.unwrap();
    assert_eq!(v.version, "9.1.1");
    let e = retry(&policy, || pve.client.nodes()).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert_eq!(
        pve.events.0.lock().unwrap().len(),
        4,
        "one observer event per attempt"
    );
    pve.check_schema().await;
}

#[tokio::test]
async fn secret_never_in_debug_of_client_or_config() {
    let cfg = config_for("http://127.0.0.1:1/api2/json");
    let client = ProxmoxClient::new(cfg.clone()).unwrap();
    for text in [
        format!("{cfg:?}"),
        format!("{cfg:#?}"),
        format!("{client:?}"),
        format!("{client:#?}"),
    ] {
        assert!(!text.contains(TOKEN_SECRET), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[tokio::test]
#[should_panic(expected = "catch-all: unexpected request")]
async fn catch_all_fails_the_test_on_an_unexpected_request() {
    let pve = pve().await;
    // Nothing mounted for /nodes: the catch-all answers 418 and the server panics on drop.
    let e = pve.client.nodes().await.unwrap_err();
    assert_eq!(e.status(), Some(418));
    drop(pve);
}
