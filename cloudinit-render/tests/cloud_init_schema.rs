//! Real validation: Debian's `cloud-init schema --config-file` on every rendered Linux sample.
//! Fails (does not skip) when `CI` is set and `cloud-init` is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cloudinit_render::{render_cloud_config, render_template, render_windows_user_data};
use common::*;

fn cloud_init_available() -> bool {
    match Command::new("cloud-init").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        other => {
            assert!(
                !ci(),
                "CI is set but `cloud-init` is not installed: {other:?}"
            );
            eprintln!("skipping: cloud-init not installed");
            false
        }
    }
}

fn schema_check(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stdout.contains("Valid cloud-config") {
        Ok(())
    } else {
        Err(format!("{name}: {}\n{stdout}{stderr}", out.status))
    }
}

fn samples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut awkward = linux_token();
    awkward.runner_name = "12:30".into();
    awkward.labels = vec![
        "on".into(),
        "0755".into(),
        "~".into(),
        "a: b".into(),
        "x?y".into(),
    ];
    awkward.runner_user = "off".into();
    let mut awkward_jit = linux_jit();
    awkward_jit.runner_name = "yes".into();
    awkward_jit.runner_user = "no".into();
    for (name, spec) in [
        ("linux-jit", linux_jit()),
        ("linux-token", linux_token()),
        ("linux-awkward-token", awkward.clone()),
        ("linux-awkward-jit", awkward_jit.clone()),
    ] {
        out.push((
            name.to_owned(),
            render_cloud_config(&spec).unwrap().expose().to_owned(),
        ));
        let redacted = render_cloud_config(&spec).unwrap().redacted();
        out.push((format!("{name}-redacted"), redacted));
    }
    for (name, fixture_name, spec) in [
        (
            "seed-template",
            "seed-runner-user-data.pkrtpl",
            linux_token(),
        ),
        (
            "token-file-template",
            "token-file-user-data.pkrtpl",
            linux_token(),
        ),
        (
            "token-file-template-awkward",
            "token-file-user-data.pkrtpl",
            awkward,
        ),
        ("jit-template", "jit-user-data.pkrtpl", linux_jit()),
        ("jit-template-awkward", "jit-user-data.pkrtpl", awkward_jit),
    ] {
        let ud = render_template(&fixture(fixture_name), &spec).unwrap();
        out.push((name.to_owned(), ud.expose().to_owned()));
        out.push((format!("{name}-redacted"), ud.redacted()));
    }
    // The image's own seed template (images/), when this crate sits in the workspace.
    for distro in ["ubuntu-2404", "ubuntu-2204"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../images")
            .join(distro)
            .join("cloud-init/runner-user-data.pkrtpl");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let ud = render_template(&text, &linux_token())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((format!("images-{distro}-template"), ud.expose().to_owned()));
        }
    }
    out
}

#[test]
fn every_rendered_linux_sample_passes_cloud_init_schema() {
    if !cloud_init_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = samples();
    // Two at a time: the machine is shared.
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let (a, b) = samples.split_at(samples.len() / 2);
        let h = scope.spawn(|| {
            a.iter()
                .map(|(n, t)| schema_check(dir.path(), n, t))
                .collect::<Vec<_>>()
        });
        let mut rb: Vec<_> = b
            .iter()
            .map(|(n, t)| schema_check(dir.path(), n, t))
            .collect();
        let mut ra = h.join().unwrap();
        ra.append(&mut rb);
        ra
    });
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "cloud-init schema failures:\n{failures:#?}"
    );
    eprintln!("cloud-init schema: {} samples valid", samples.len());
}

/// The validator really catches mistakes (so a pass above means something).
#[test]
fn cloud_init_schema_rejects_a_broken_sample() {
    if !cloud_init_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = render_cloud_config(&linux_jit())
        .unwrap()
        .expose()
        .to_owned();
    let bad = good
        .replace("permissions: \"0600\"", "permissions: 0600")
        .replace("mode: poweroff", "mode: poweroof");
    assert_ne!(good, bad);
    let err = schema_check(dir.path(), "broken", &bad).unwrap_err();
    assert!(
        err.contains("poweroof") && err.contains("permissions"),
        "{err}"
    );
}

/// Windows user-data is for cloudbase-init, not cloud-init: it is checked as YAML 1.1 (PyYAML,
/// which cloudbase-init also uses) and for the keys cloudbase-init's write_files plugin reads.
#[test]
fn windows_sample_is_valid_yaml_for_cloudbase_init() {
    let text = render_windows_user_data(&windows_jit())
        .unwrap()
        .expose()
        .to_owned();
    assert!(text.starts_with("#cloud-config\n"));
    let Some(parsed) = pyyaml_load_all(&[text]) else {
        return;
    };
    let doc = &parsed[0];
    let file = &doc["write_files"][0];
    let mut keys: Vec<&str> = file
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["content", "path", "permissions"]);
    assert_eq!(file["path"], r"C:\ProgramData\actions-runner-jit\jitconfig");
    assert_eq!(file["permissions"], "0600");
    assert_eq!(file["content"], JIT);
    assert_eq!(doc.as_object().unwrap().len(), 1, "only write_files: {doc}");
}
