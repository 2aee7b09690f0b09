//! Property tests: arbitrary names, labels, users and credentials survive rendering and parsing
//! back unchanged — with serde-saphyr in process (with shrinking) and with PyYAML, the YAML 1.1
//! reader cloud-init and cloudbase-init use, on a batch of generated documents.

mod common;

use cloudinit_render::{
    Credential, Error, LINUX_JIT_PATH, Os, RunnerSpec, WINDOWS_JIT_PATH, render_cloud_config,
    render_template, render_windows_user_data,
};
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use secrecy::SecretString;
use serde_json::{Value, json};

/// Strings a YAML 1.1 reader would misread, or that break naive YAML.
const AWKWARD: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Yes",
    "NO",
    "On",
    "OFF",
    "true",
    "False",
    "~",
    "null",
    "NULL",
    "0755",
    "0600",
    "12:30",
    "1:20:30",
    "1e3",
    "1.5",
    ".5",
    "-1",
    "+1",
    "0x1F",
    "0o17",
    "0b101",
    "1_000",
    ".inf",
    ".NaN",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "<<",
    "=",
    ": ",
    "#",
    "a #b",
    "a: b",
    "x:",
    "-",
    "- x",
    "?",
    "? x",
    "[x]",
    "{a: b}",
    "*a",
    "&a",
    "!tag",
    "%x",
    "@x",
    "`x",
    "|",
    "> x",
    "'",
    "\"",
    "'q'",
    "\"q\"",
    "it's",
    "\\",
    "a\\nb",
    "--- x",
    "...",
    "ünï",
    "日本語",
    "😀",
    " lead",
    "trail ",
    "a,b,c",
    "$",
    "$$",
    "${x}",
];

fn awkward() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(AWKWARD).prop_map(str::to_owned);
    prop_oneof![
        4 => fixed.clone(),
        2 => "[ -~]{1,12}",
        1 => "\\PC{1,8}",
        2 => (fixed.clone(), "[ -~]{0,3}", fixed).prop_map(|(a, b, c)| format!("{a}{b}{c}")),
    ]
}

fn name() -> impl Strategy<Value = String> {
    awkward().prop_filter("non-empty", |s| !s.trim().is_empty())
}

fn label() -> impl Strategy<Value = String> {
    awkward()
        .prop_map(|s| s.replace(',', ";"))
        .prop_filter("non-empty", |s| !s.trim().is_empty())
}

/// Credentials may hold anything, line breaks and tabs included.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => awkward(),
        1 => "[A-Za-z0-9+/=]{20,120}",
        2 => "[a-z0-9 :#'\"\\\\\n\t-]{1,24}",
    ]
    .prop_filter("non-empty", |s| !s.trim().is_empty())
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<String>,
    user: String,
    url: String,
    jit: String,
    token: String,
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        name(),
        prop::collection::vec(label(), 0..4),
        prop::sample::select(&["ci", "runner", "on", "no", "y", "off", "_x", "a.b-c"][..]),
        prop::sample::select(
            &[
                "https://github.com/NREL/EnergyPlus",
                "https://github.com/yes",
                "https://github.com/a/b?x=1&y=2",
                "https://ghe.example:8443/org/repo#frag",
                "http://127.0.0.1:1/on",
            ][..],
        ),
        secret(),
        secret(),
    )
        .prop_map(|(name, labels, user, url, jit, token)| Sample {
            name,
            labels,
            user: user.to_owned(),
            url: url.to_owned(),
            jit,
            token,
        })
}

fn spec(s: &Sample, os: Os, credential: Credential) -> RunnerSpec {
    RunnerSpec {
        runner_name: s.name.clone(),
        labels: s.labels.clone(),
        runner_user: s.user.clone(),
        target_url: s.url.clone(),
        os,
        credential,
    }
}

/// One rendered document and what a YAML reader must find in it.
struct Case {
    what: &'static str,
    doc: String,
    checks: Vec<(&'static str, Value)>,
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c != '\t' && c.is_control())
}

/// Renders every output for `s`; asserts the refusals are the intended ones; returns the
/// documents to check.
fn cases(s: &Sample) -> Vec<Case> {
    let jit = spec(
        s,
        Os::Linux,
        Credential::Jit(SecretString::from(s.jit.clone())),
    );
    let tok = spec(
        s,
        Os::Linux,
        Credential::RegistrationToken(SecretString::from(s.token.clone())),
    );
    let win = spec(
        s,
        Os::Windows,
        Credential::Jit(SecretString::from(s.jit.clone())),
    );
    let labels = s.labels.join(",");
    let mut out = Vec::new();

    let ud = render_cloud_config(&jit).expect("linux jit renders");
    out.push(Case {
        what: "linux jit",
        doc: ud.expose().to_owned(),
        checks: vec![
            ("/hostname", json!(jit.hostname())),
            ("/write_files/0/path", json!(LINUX_JIT_PATH)),
            ("/write_files/0/content", json!(s.jit)),
            ("/write_files/0/owner", json!(s.user)),
            ("/write_files/0/permissions", json!("0600")),
            (
                "/runcmd/0",
                json!(["systemctl", "start", "--wait", "actions-runner-jit.service"]),
            ),
            ("/power_state/mode", json!("poweroff")),
        ],
    });

    let ud = render_cloud_config(&tok).expect("linux token renders");
    let mut checks = vec![
        ("/hostname", json!(tok.hostname())),
        ("/write_files/0/content", json!(s.token)),
        ("/runcmd/0/1", json!(format!("RUNNER_USER={}", s.user))),
        ("/runcmd/0/3", json!(s.url)),
        ("/runcmd/0/5", json!(s.name)),
    ];
    if !labels.is_empty() {
        checks.push(("/runcmd/0/6", json!(labels)));
    }
    out.push(Case {
        what: "linux token",
        doc: ud.expose().to_owned(),
        checks,
    });

    let ud = render_windows_user_data(&win).expect("windows renders");
    out.push(Case {
        what: "windows",
        doc: ud.expose().to_owned(),
        checks: vec![
            ("/write_files/0/path", json!(WINDOWS_JIT_PATH)),
            ("/write_files/0/content", json!(s.jit)),
        ],
    });

    // Standalone and quoted placeholders always work; only the block scalar refuses values.
    match render_template(&fixture("token-file-user-data.pkrtpl"), &tok) {
        Ok(ud) => out.push(Case {
            what: "token-file template",
            doc: ud.expose().to_owned(),
            checks: vec![
                ("/hostname", json!(s.name)),
                ("/write_files/0/content", json!(format!("{}\n", s.token))),
                ("/runcmd/0/1", json!(format!("RUNNER_USER={}", s.user))),
                ("/runcmd/0/3", json!(s.url)),
                ("/runcmd/0/5", json!(s.name)),
                ("/runcmd/0/6", json!(labels)),
            ],
        }),
        Err(Error::UnsafeValue { name, .. }) => {
            assert_eq!(name, "registration_token");
            assert!(has_control(&s.token) || s.token.starts_with(' '), "{s:?}");
        }
        Err(e) => panic!("token-file template: {e} for {s:?}"),
    }

    let ud = render_template(&fixture("jit-user-data.pkrtpl"), &jit);
    match ud {
        Ok(ud) => out.push(Case {
            what: "jit template",
            doc: ud.expose().to_owned(),
            checks: vec![
                ("/hostname", json!(s.name)),
                ("/write_files/0/owner", json!(s.user)),
                ("/write_files/0/content", json!(s.jit)),
                (
                    "/write_files/1/content",
                    json!(format!(
                        "Ephemeral runner {} (labels: {labels}) for {}.\n",
                        s.name, s.url
                    )),
                ),
            ],
        }),
        Err(e) => panic!("jit template: {e} for {s:?}"),
    }

    // Unquoted contexts: either the exact text, or a refusal naming the placeholder.
    match render_template(&fixture("seed-runner-user-data.pkrtpl"), &tok) {
        Ok(ud) => out.push(Case {
            what: "seed template",
            doc: ud.expose().to_owned(),
            checks: vec![
                ("/hostname", json!(s.name)),
                (
                    "/runcmd/0/2",
                    json!(format!(
                        "echo \"bootstrapping {} for {}\" >> /var/log/runner-boot.log; echo HOME=$HOME",
                        s.name, s.url
                    )),
                ),
                (
                    "/runcmd/1",
                    json!(format!(
                        "/opt/actions-runner/run-once.sh {} {} {} {labels}",
                        s.url, s.token, s.name
                    )
                    .trim_end()),
                ),
            ],
        }),
        Err(Error::UnsafeValue { .. }) => {}
        Err(e) => panic!("seed template: {e} for {s:?}"),
    }
    out
}

fn check(case: &Case, parsed: &Value, reader: &str, s: &Sample) {
    for (pointer, expected) in &case.checks {
        assert_eq!(
            parsed.pointer(pointer),
            Some(expected),
            "{reader}: {} {pointer} for {s:?}\n--- document:\n{}",
            case.what,
            case.doc
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn values_survive_serde_saphyr(s in sample()) {
        for case in cases(&s) {
            let parsed: Value = serde_saphyr::from_str(&case.doc)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", case.what, case.doc));
            check(&case, &parsed, "serde-saphyr", &s);
        }
    }
}

/// The same property, read by PyYAML (YAML 1.1, as cloud-init reads user-data) on a batch of
/// 400 deterministic samples. Fails under `CI` when python3/PyYAML is missing.
#[test]
fn values_survive_pyyaml() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = sample();
    let mut samples = Vec::new();
    let mut all = Vec::new();
    for _ in 0..400 {
        let s = strategy.new_tree(&mut runner).expect("sample").current();
        for case in cases(&s) {
            all.push((s.clone(), case));
        }
        samples.push(s);
    }
    let docs: Vec<String> = all.iter().map(|(_, c)| c.doc.clone()).collect();
    let Some(parsed) = pyyaml_load_all(&docs) else {
        return;
    };
    assert_eq!(parsed.len(), all.len());
    for ((s, case), value) in all.iter().zip(&parsed) {
        check(case, value, "PyYAML", s);
    }
    eprintln!(
        "PyYAML checked {} documents from {} samples",
        all.len(),
        samples.len()
    );
}
