//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use cloudinit_render::{Credential, Os, RunnerSpec};
use secrecy::SecretString;

/// A fake JIT config shaped like GitHub's `encoded_jit_config` (base64 of a JSON document).
pub const JIT: &str = "eyJkLnJ1bm5lciI6ImV3b2dJQ0pCWjJWdWRFbGtJam9nTVRJek5Dd0tJQ0FpUVdkbGJuUk9ZVzFsSWpvZ0ltZG9MWEoxYm01bGNpMHlNREVpQ24wPSIsIi5jcmVkZW50aWFscyI6ImV3b2dJQ0p6WTJobGJXVWlPaUFpVDBGMWRHZ2lDbjA9In0=";
/// A fake registration token (29 characters like GitHub's).
pub const TOKEN: &str = "AXQ4ZK7TESTTOKEN0123456789AB";

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn spec(os: Os, credential: Credential) -> RunnerSpec {
    RunnerSpec {
        runner_name: "gh-runner-201".into(),
        labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        runner_user: "ci".into(),
        target_url: "https://github.com/NREL/EnergyPlus".into(),
        os,
        credential,
    }
}

pub fn linux_jit() -> RunnerSpec {
    spec(Os::Linux, Credential::Jit(SecretString::from(JIT)))
}

pub fn linux_token() -> RunnerSpec {
    spec(
        Os::Linux,
        Credential::RegistrationToken(SecretString::from(TOKEN)),
    )
}

pub fn windows_jit() -> RunnerSpec {
    let mut s = spec(Os::Windows, Credential::Jit(SecretString::from(JIT)));
    s.labels = vec!["self-hosted".into(), "windows".into(), "x64".into()];
    s
}

pub fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Runs `python3 -c script` with `input` on stdin and returns stdout. Returns `None` (the caller
/// skips) when python3 or PyYAML is missing, unless `CI` is set: then the test fails.
pub fn python(script: &str, input: &str) -> Option<String> {
    let probe = Command::new("python3").args(["-c", "import yaml"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            assert!(
                !ci(),
                "CI is set but python3 with PyYAML (Debian python3-yaml) is missing: {other:?}"
            );
            eprintln!("skipping: python3 with PyYAML not available");
            return None;
        }
    }
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("utf-8 stdout"))
}

/// Parses each document with PyYAML's `safe_load` (YAML 1.1, what cloud-init and cloudbase-init
/// use) and returns the results as JSON values (non-JSON types such as dates become strings
/// prefixed with `!type:` so that they can never compare equal to a string).
pub fn pyyaml_load_all(docs: &[String]) -> Option<Vec<serde_json::Value>> {
    const SCRIPT: &str = r#"
import json, sys, yaml, datetime
def conv(v):
    if isinstance(v, dict):
        return {("!key:" + repr(k) if not isinstance(k, str) else k): conv(x) for k, x in v.items()}
    if isinstance(v, list):
        return [conv(x) for x in v]
    if v is None or isinstance(v, (str, bool)):
        return v
    return "!%s:%r" % (type(v).__name__, v)
docs = json.load(sys.stdin)
out = []
for d in docs:
    try:
        out.append(conv(yaml.safe_load(d)))
    except Exception as e:
        out.append({"!error": str(e)})
json.dump(out, sys.stdout)
"#;
    let input = serde_json::to_string(docs).expect("json");
    let out = python(SCRIPT, &input)?;
    Some(serde_json::from_str(&out).expect("python json"))
}
