//! Golden files of every output (insta; `CI=true` makes a mismatch fail).

mod common;

use cloudinit_render::{
    RunnerSpec, agent_payload, render_cloud_config, render_template, render_windows_user_data,
};
use common::*;
use secrecy::ExposeSecret;

fn payload_text(spec: &RunnerSpec) -> String {
    agent_payload(spec)
        .expect("payload")
        .iter()
        .map(|f| format!("file: {}\ncontent: {}\n", f.path, f.content.expose_secret()))
        .collect()
}

#[test]
fn snapshot_linux_jit() {
    let ud = render_cloud_config(&linux_jit()).expect("render");
    insta::assert_snapshot!("linux_jit", ud.expose());
    insta::assert_snapshot!("linux_jit_redacted", ud.redacted());
}

#[test]
fn linux_registration_token_without_template() {
    let ud = render_cloud_config(&linux_token()).expect("render");
    insta::assert_snapshot!("linux_registration_token", ud.expose());
    insta::assert_snapshot!("linux_registration_token_redacted", ud.redacted());
}

#[test]
fn linux_seed_template() {
    let ud =
        render_template(&fixture("seed-runner-user-data.pkrtpl"), &linux_token()).expect("render");
    insta::assert_snapshot!("linux_seed_template", ud.expose());
    insta::assert_snapshot!("linux_seed_template_redacted", ud.redacted());
}

#[test]
fn linux_token_file_template() {
    let ud =
        render_template(&fixture("token-file-user-data.pkrtpl"), &linux_token()).expect("render");
    insta::assert_snapshot!("linux_token_file_template", ud.expose());
    insta::assert_snapshot!("linux_token_file_template_redacted", ud.redacted());
}

#[test]
fn linux_jit_template() {
    let ud = render_template(&fixture("jit-user-data.pkrtpl"), &linux_jit()).expect("render");
    insta::assert_snapshot!("linux_jit_template", ud.expose());
    insta::assert_snapshot!("linux_jit_template_redacted", ud.redacted());
}

/// Values that a YAML 1.1 reader would misread if they were not quoted.
#[test]
fn linux_awkward_values() {
    let mut spec = linux_token();
    spec.runner_name = "12:30".into();
    spec.labels = vec!["on".into(), "0755".into(), "~".into(), "a: b".into()];
    spec.runner_user = "off".into();
    let ud = render_template(&fixture("token-file-user-data.pkrtpl"), &spec).expect("render");
    insta::assert_snapshot!("linux_awkward_token_file_template", ud.expose());
    let ud = render_cloud_config(&spec).expect("render");
    insta::assert_snapshot!("linux_awkward_registration_token", ud.expose());
}

#[test]
fn snapshot_windows() {
    let ud = render_windows_user_data(&windows_jit()).expect("render");
    insta::assert_snapshot!("windows_jit", ud.expose());
    insta::assert_snapshot!("windows_jit_redacted", ud.redacted());
}

#[test]
fn agent_payloads() {
    insta::assert_snapshot!("agent_payload_linux", payload_text(&linux_jit()));
    insta::assert_snapshot!("agent_payload_windows", payload_text(&windows_jit()));
}
