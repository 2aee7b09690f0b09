//! Guest agent ping and file-write.

use proxmox_api::{AGENT_FILE_WRITE_MAX, Error, NodeName, ProxmoxApi, VmId};
use secrecy::SecretString;
use serde_json::json;

use crate::common::{data, form_of, on, pve, pve_error};

fn node() -> NodeName {
    NodeName::new("pve1").unwrap()
}

#[tokio::test]
async fn ping_ok_and_not_running() {
    let pve = pve().await;
    on("POST", "/nodes/pve1/qemu/205/agent/ping")
        .respond_with(pve_error(500, "QEMU guest agent is not running"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&pve.server)
        .await;
    on("POST", "/nodes/pve1/qemu/205/agent/ping")
        .respond_with(data(json!({"result": {}})))
        .expect(1)
        .mount(&pve.server)
        .await;
    let err = pve.client.agent_ping(&node(), VmId(205)).await.unwrap_err();
    assert!(err.to_string().contains("QEMU guest agent is not running"));
    assert!(err.is_retryable());
    pve.client.agent_ping(&node(), VmId(205)).await.unwrap();
    pve.check_schema().await;
}

#[tokio::test]
async fn file_write_sends_file_content_encode() {
    let pve = pve().await;
    on("POST", "/nodes/pve1/qemu/205/agent/file-write")
        .respond_with(data(json!(null)))
        .expect(2)
        .mount(&pve.server)
        .await;
    let secret = SecretString::from("{\"jit\":\"ZW5jb2RlZC1qaXQtY29uZmln\"}\n".to_owned());
    pve.client
        .agent_file_write(&node(), VmId(205), "/run/gha/jitconfig", &secret)
        .await
        .unwrap();
    let form = form_of(&pve.server, 0).await;
    assert_eq!(form["file"], "/run/gha/jitconfig");
    assert_eq!(form["content"], "{\"jit\":\"ZW5jb2RlZC1qaXQtY29uZmln\"}\n");
    assert_eq!(form["encode"], "1");
    // Exactly at the limit (counted in characters, multi-byte ones included) is accepted.
    let at_limit = SecretString::from("é".repeat(AGENT_FILE_WRITE_MAX));
    pve.client
        .agent_file_write(&node(), VmId(205), "C:\\gha\\jit.txt", &at_limit)
        .await
        .unwrap();
    pve.check_schema().await;
}

#[tokio::test]
async fn file_write_too_large_is_refused_before_sending_without_leaking() {
    let pve = pve().await;
    let big = SecretString::from(format!("SECRETJIT{}", "x".repeat(AGENT_FILE_WRITE_MAX)));
    let err = pve
        .client
        .agent_file_write(&node(), VmId(205), "/run/gha/jitconfig", &big)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }));
    let text = err.to_string();
    assert!(text.contains("61440") && text.contains("61449"), "{text}");
    assert!(!text.contains("SECRETJIT"));
    assert!(pve.server.received_requests().await.unwrap().is_empty());
}
