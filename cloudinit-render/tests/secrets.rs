//! The credential appears exactly where intended, and nowhere in Debug, errors or redacted output.

mod common;

use cloudinit_render::{
    AGENT_FILE_WRITE_MAX_CHARS, Credential, Error, LINUX_JIT_PATH, LINUX_REGISTRATION_TOKEN_PATH,
    Os, WINDOWS_JIT_PATH, agent_payload, render_cloud_config, render_template,
    render_windows_user_data,
};
use common::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

fn parse(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).expect("rendered output parses")
}

/// Every string leaf in `v` with its path.
fn leaves(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path, s.clone())),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| leaves(x, format!("{path}/{i}"), out)),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| leaves(x, format!("{path}/{k}"), out)),
        _ => {}
    }
}

/// Asserts the secret occurs exactly once in `text`, exactly as the value at `pointer`, and that
/// the redacted form holds the marker once and no secret.
fn assert_only_at(
    text: &str,
    redacted: &str,
    secret: &str,
    marker: &str,
    pointer: &str,
    exact: &str,
) {
    assert_eq!(text.matches(secret).count(), 1, "secret count in:\n{text}");
    let doc = parse(text);
    let mut all = Vec::new();
    leaves(&doc, String::new(), &mut all);
    let holding: Vec<_> = all.iter().filter(|(_, s)| s.contains(secret)).collect();
    assert_eq!(holding.len(), 1, "{holding:?}");
    assert_eq!(holding[0].0, pointer);
    assert_eq!(holding[0].1, exact);
    assert!(!redacted.contains(secret));
    assert_eq!(redacted.matches(marker).count(), 1, "{redacted}");
    // The redacted document has the same shape, marker in place of the secret.
    let red = parse(redacted);
    assert_eq!(
        red.pointer(pointer).and_then(Value::as_str),
        Some(exact.replace(secret, marker).as_str())
    );
}

#[test]
fn linux_jit_secret_only_in_the_jit_file() {
    let ud = render_cloud_config(&linux_jit()).unwrap();
    assert_only_at(
        ud.expose(),
        &ud.redacted(),
        JIT,
        "<redacted:jit-config>",
        "/write_files/0/content",
        JIT,
    );
    let doc = parse(ud.expose());
    assert_eq!(doc.pointer("/write_files/0/path").unwrap(), LINUX_JIT_PATH);
    assert_eq!(doc.pointer("/write_files/0/permissions").unwrap(), "0600");
    assert_eq!(doc.pointer("/write_files/0/owner").unwrap(), "ci");
    assert_eq!(
        doc.pointer("/runcmd").unwrap(),
        &serde_json::json!([["systemctl", "start", "--wait", "actions-runner-jit.service"]])
    );
    assert_eq!(doc.pointer("/power_state/mode").unwrap(), "poweroff");
    assert_eq!(doc.pointer("/hostname").unwrap(), "gh-runner-201");
}

#[test]
fn linux_token_secret_only_in_the_token_file() {
    let ud = render_cloud_config(&linux_token()).unwrap();
    assert_only_at(
        ud.expose(),
        &ud.redacted(),
        TOKEN,
        "<redacted:registration-token>",
        "/write_files/0/content",
        TOKEN,
    );
    let doc = parse(ud.expose());
    assert_eq!(
        doc.pointer("/write_files/0/path").unwrap(),
        LINUX_REGISTRATION_TOKEN_PATH
    );
    assert_eq!(
        doc.pointer("/runcmd/0/4").unwrap().as_str().unwrap(),
        format!("@{LINUX_REGISTRATION_TOKEN_PATH}")
    );
}

#[test]
fn templates_put_the_secret_where_the_placeholder_is() {
    let ud = render_template(&fixture("token-file-user-data.pkrtpl"), &linux_token()).unwrap();
    assert_only_at(
        ud.expose(),
        &ud.redacted(),
        TOKEN,
        "<redacted:registration-token>",
        "/write_files/0/content",
        &format!("{TOKEN}\n"),
    );
    let ud = render_template(&fixture("jit-user-data.pkrtpl"), &linux_jit()).unwrap();
    assert_only_at(
        ud.expose(),
        &ud.redacted(),
        JIT,
        "<redacted:jit-config>",
        "/write_files/0/content",
        JIT,
    );
    // The seed's own shape passes the token as an argument (that is the template's choice).
    let ud = render_template(&fixture("seed-runner-user-data.pkrtpl"), &linux_token()).unwrap();
    assert_only_at(
        ud.expose(),
        &ud.redacted(),
        TOKEN,
        "<redacted:registration-token>",
        "/runcmd/1",
        &format!(
            "/opt/actions-runner/run-once.sh https://github.com/NREL/EnergyPlus {TOKEN} gh-runner-201 self-hosted,linux,x64"
        ),
    );
}

#[test]
fn windows_secret_only_in_the_jit_file() {
    let ud = render_windows_user_data(&windows_jit()).unwrap();
    assert_only_at(
        ud.expose(),
        &ud.redacted(),
        JIT,
        "<redacted:jit-config>",
        "/write_files/0/content",
        JIT,
    );
    let doc = parse(ud.expose());
    assert_eq!(
        doc.pointer("/write_files/0/path").unwrap(),
        WINDOWS_JIT_PATH
    );
    assert!(doc.get("runcmd").is_none());
}

#[test]
fn agent_payload_is_exactly_the_jit_file() {
    let files = agent_payload(&linux_jit()).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, LINUX_JIT_PATH);
    assert_eq!(files[0].content.expose_secret(), JIT);
    let files = agent_payload(&windows_jit()).unwrap();
    assert_eq!(files[0].path, WINDOWS_JIT_PATH);
    assert_eq!(files[0].content.expose_secret(), JIT);
    assert!(!format!("{files:?}").contains(JIT));
}

#[test]
fn agent_payload_limit() {
    let mut spec = linux_jit();
    let exact = "A".repeat(AGENT_FILE_WRITE_MAX_CHARS);
    spec.credential = Credential::Jit(SecretString::from(exact.clone()));
    assert_eq!(
        agent_payload(&spec).unwrap()[0]
            .content
            .expose_secret()
            .len(),
        exact.len()
    );
    // Characters, not bytes: 61,440 two-byte characters still fit.
    spec.credential = Credential::Jit(SecretString::from("é".repeat(AGENT_FILE_WRITE_MAX_CHARS)));
    assert!(agent_payload(&spec).is_ok());
    let secret = format!("SECRET{}", "B".repeat(AGENT_FILE_WRITE_MAX_CHARS));
    spec.credential = Credential::Jit(SecretString::from(secret.clone()));
    let err = agent_payload(&spec).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PayloadTooLarge {
                chars: 61_446,
                limit: 61_440,
                ..
            }
        ),
        "{err}"
    );
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(!err.is_retryable());
}

#[test]
fn debug_never_shows_the_secret() {
    for spec in [linux_jit(), linux_token(), windows_jit()] {
        let secret = match &spec.credential {
            Credential::Jit(s) | Credential::RegistrationToken(s) => s.expose_secret().to_owned(),
        };
        let dbg = format!("{spec:?} {:?} {spec:#?}", spec.credential);
        assert!(!dbg.contains(&secret), "{dbg}");
        assert!(dbg.contains("gh-runner-201"));
        let ud = match spec.os {
            Os::Linux => render_cloud_config(&spec).unwrap(),
            Os::Windows => render_windows_user_data(&spec).unwrap(),
        };
        let dbg = format!("{ud:?} {ud:#?}");
        assert!(!dbg.contains(&secret), "{dbg}");
        let secret_out = ud.into_secret();
        assert!(!format!("{secret_out:?}").contains(&secret));
        assert!(secret_out.expose_secret().contains(&secret));
    }
}

#[test]
fn errors_never_show_the_secret() {
    let secret_marker = "S3CR3T";
    let mut errors: Vec<Error> = Vec::new();
    // A token with a line break cannot go into a block scalar or an unquoted string.
    let mut spec = linux_token();
    spec.credential =
        Credential::RegistrationToken(SecretString::from(format!("{secret_marker}\nx")));
    errors.push(render_template(&fixture("token-file-user-data.pkrtpl"), &spec).unwrap_err());
    errors.push(render_template(&fixture("seed-runner-user-data.pkrtpl"), &spec).unwrap_err());
    // A token starting with a space at the start of a block scalar's first line.
    spec.credential =
        Credential::RegistrationToken(SecretString::from(format!("  {secret_marker}")));
    errors.push(render_template(&fixture("token-file-user-data.pkrtpl"), &spec).unwrap_err());
    // A token with ': ' inside a larger unquoted string.
    spec.credential =
        Credential::RegistrationToken(SecretString::from(format!("{secret_marker}: x")));
    errors.push(render_template(&fixture("seed-runner-user-data.pkrtpl"), &spec).unwrap_err());
    // Wrong credential kinds.
    errors.push(render_template(&fixture("jit-user-data.pkrtpl"), &spec).unwrap_err());
    errors.push(
        render_windows_user_data(&{
            let mut s = spec.clone();
            s.os = Os::Windows;
            s
        })
        .unwrap_err(),
    );
    errors.push(agent_payload(&spec).unwrap_err());
    let mut jit = linux_jit();
    jit.credential = Credential::Jit(SecretString::from(secret_marker));
    errors.push(render_template(&fixture("token-file-user-data.pkrtpl"), &jit).unwrap_err());
    // Bad non-secret fields next to a secret.
    jit.runner_user = "root".into();
    errors.push(render_cloud_config(&jit).unwrap_err());
    jit.runner_user = "ci".into();
    jit.labels.push("a,b".into());
    errors.push(render_cloud_config(&jit).unwrap_err());
    for err in &errors {
        let shown = format!("{err} | {err:?}");
        assert!(!shown.contains(secret_marker), "{shown}");
        assert!(!shown.contains('\n'), "one line: {shown}");
    }
    let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts[0],
        "value of ${registration_token} at line 10 cannot be inserted inside a block scalar: it contains a line break or control character"
    );
    assert!(texts[1].starts_with("value of ${registration_token} at line 12 cannot be inserted inside a larger unquoted string"), "{}", texts[1]);
    assert!(texts[2].contains("starts with a space"), "{}", texts[2]);
    assert!(texts[3].contains("': '"), "{}", texts[3]);
    assert_eq!(
        texts[4],
        "template placeholder ${jit_config} at line 8 needs a JIT config, but the runner credential is a registration token"
    );
    assert!(
        texts[5].contains("Windows") && texts[5].contains("registration-token"),
        "{}",
        texts[5]
    );
    assert!(texts[6].contains("guest-agent payload"), "{}", texts[6]);
    assert_eq!(
        texts[7],
        "template placeholder ${registration_token} at line 10 needs a registration token, but the runner credential is a JIT config"
    );
    assert_eq!(
        texts[8],
        "invalid runner spec: runner_user = \"root\": must not be root (the image refuses to run jobs as root)"
    );
    assert_eq!(
        texts[9],
        "invalid runner spec: labels[3] = \"a,b\": must not contain a comma (labels are comma-joined)"
    );
}

#[test]
fn empty_credential_is_refused() {
    let mut spec = linux_jit();
    spec.credential = Credential::Jit(SecretString::from(" \n"));
    assert_eq!(
        render_cloud_config(&spec).unwrap_err().to_string(),
        "invalid runner spec: credential (jit-config) is empty"
    );
}
