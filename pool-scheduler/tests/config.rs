//! Pools file loading: seed compatibility, defaults, validation (every problem at once), warnings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use pool_scheduler::{Config, Defaults, Error, Flags, Injection, Location, Os, ProblemKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn seed_two_pool_file_loads_with_the_same_meaning() {
    let loaded = Config::load_file(&fixture("runner-pools.json"), &common::defaults()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    assert_eq!(c.max_total_runners(), 6);
    assert_eq!(c.pools().len(), 2);

    let a = c.pool("ubuntu-2404").unwrap();
    assert_eq!(a.node, "pve1");
    assert_eq!(a.nodes, vec!["pve1".to_owned()]);
    assert_eq!(a.template, "ubuntu-2404-runner-template");
    assert_eq!(a.labels, ["linux", "x64", "ubuntu-24.04", "energyplus"]);
    assert_eq!((a.vmid_start, a.vmid_end), (200, 249));
    assert_eq!(
        a.runner_name_prefix, "ubuntu-2404-runner-",
        "a '-' is appended"
    );
    assert_eq!(a.runner_user, "ci");
    assert_eq!(
        a.user_data_template.as_deref(),
        Some(fixture("cloud-init/ubuntu-2404-user-data.pkrtpl").as_path()),
        "relative to the file's folder"
    );
    assert_eq!(a.storage, "local");
    assert_eq!(a.max_runners, 4);
    assert_eq!(a.cap(), Some(4));

    let b = c.pool("ubuntu-2204").unwrap();
    assert_eq!(b.node, "pve1", "PROXMOX_NODE default");
    assert_eq!(b.template, "ubuntu-2204-runner-template");
    assert_eq!(
        b.labels,
        ["linux", "x64", "ubuntu-22.04", "energyplus"],
        "comma string: trimmed, empty entries dropped"
    );
    assert_eq!(
        (b.vmid_start, b.vmid_end),
        (250, 299),
        "numeric string accepted"
    );
    assert_eq!(b.runner_name_prefix, "ubuntu-2204-runner-");
    assert_eq!(b.runner_user, "ci", "seed default");
    assert_eq!(b.storage, "local", "PROXMOX_STORAGE default");
    assert_eq!(
        b.user_data_template.as_deref(),
        Some(fixture("cloud-init/ubuntu-2204-user-data.pkrtpl").as_path())
    );
    // Extensions take their defaults.
    for p in c.pools() {
        assert_eq!(p.injection, Injection::Snippet);
        assert!(!p.full_clone);
        assert_eq!(p.clone_storage, None);
        assert_eq!(p.pve_pool, None);
        assert_eq!(p.min_idle, 0);
        assert_eq!(p.boot_timeout, Duration::from_secs(600));
        assert_eq!(p.max_lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(p.os, Os::Linux);
        assert_eq!(p.runner_group_id, 1);
    }
    assert_eq!(c.pool_for_vmid(249), Some(0));
    assert_eq!(c.pool_for_vmid(250), Some(1));
    assert_eq!(c.pool_for_vmid(300), None);
    assert_eq!(c.pool_for_vmid(199), None);
    assert_eq!(
        c.parse_runner_name("ubuntu-2204-runner-251-abc"),
        Some((1, 251, 36 * 36 * 10 + 36 * 11 + 12))
    );
    assert_eq!(
        c.parse_runner_name("ubuntu-2204-runner-201-abc"),
        None,
        "vmid outside the pool's range"
    );
    assert_eq!(c.parse_runner_name("energyplus-runner-201"), None);
}

#[test]
fn max_total_runners_env_overrides_like_the_seed() {
    let text = std::fs::read_to_string(fixture("runner-pools.json")).unwrap();
    let base = fixture("");
    for (env, want) in [(None, 6), (Some(0), 6), (Some(10), 10)] {
        let d = Defaults {
            max_total_runners: env,
            ..common::defaults()
        };
        assert_eq!(
            Config::from_json(&text, &base, &d)
                .unwrap()
                .config
                .max_total_runners(),
            want
        );
    }
}

#[test]
fn no_pools_file_gives_one_default_pool_from_the_environment() {
    let d = Defaults {
        node: "pve2".into(),
        labels: pool_scheduler::split_labels("energyplus, linux,x64 ,"),
        runner_name_prefix: "energyplus-runner".into(),
        user_data_template: Some(PathBuf::from(
            "runners/ubuntu-2404/cloud-init/runner-user-data.pkrtpl",
        )),
        injection: Injection::Agent,
        runner_group_id: 3,
        max_total_runners: Some(5),
        flags: Flags {
            disable_cleanup: true,
            pause_on_stopped: true,
        },
        ..Defaults::default()
    };
    let c = Config::from_defaults(&d).unwrap().config;
    assert_eq!(c.pools().len(), 1);
    let p = &c.pools()[0];
    assert_eq!(p.name, "default");
    assert_eq!(p.node, "pve2");
    assert_eq!(p.template, "ubuntu-2404-runner-template");
    assert_eq!(p.labels, ["energyplus", "linux", "x64"]);
    assert_eq!((p.vmid_start, p.vmid_end), (200, 299));
    assert_eq!(p.runner_name_prefix, "energyplus-runner-");
    assert_eq!(
        p.user_data_template.as_deref(),
        Some(Path::new(
            "runners/ubuntu-2404/cloud-init/runner-user-data.pkrtpl"
        )),
        "env paths are taken as given"
    );
    assert_eq!(p.injection, Injection::Agent);
    assert_eq!(p.runner_group_id, 3);
    assert_eq!(c.max_total_runners(), 5);
    assert!(c.flags().disable_cleanup && c.flags().pause_on_stopped);
}

#[test]
fn defaults_without_node_or_labels_are_reported() {
    let d = Defaults {
        labels: vec![],
        ..Defaults::default()
    };
    let err = Config::from_defaults(&d).unwrap_err();
    let msgs: Vec<String> = err.problems().iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "pool \"default\": `node`: required key is missing (set `node` in the pool or PROXMOX_NODE)",
            "pool \"default\": `labels`: must not be empty (set `labels` in the pool or RUNNER_LABELS)",
        ]
    );
}

#[test]
fn extensions_parse() {
    let c = common::config(&serde_json::json!({
        "pools": [{
            "name": "win", "labels": ["windows", "x64"], "vmid_start": 500, "vmid_end": 520,
            "runner_name_prefix": "win-", "injection": "Agent", "full_clone": true,
            "clone_storage": "local-lvm", "pve_pool": "ci-runners", "min_idle": 2, "boot_timeout": "1h30m", "max_lifetime": 86400,
            "os": "windows", "runner_group_id": 7, "nodes": "pve1, pve2,pve1", "user_data_template": "/abs/t.yaml"
        }]
    }));
    let p = &c.pools()[0];
    assert_eq!(p.injection, Injection::Agent);
    assert!(p.full_clone);
    assert_eq!(p.clone_storage.as_deref(), Some("local-lvm"));
    assert_eq!(p.pve_pool.as_deref(), Some("ci-runners"));
    assert_eq!(p.min_idle, 2);
    assert_eq!(p.boot_timeout, Duration::from_secs(5400));
    assert_eq!(p.max_lifetime, Duration::from_secs(86400));
    assert_eq!(p.os, Os::Windows);
    assert_eq!(p.runner_group_id, 7);
    assert_eq!(p.nodes, ["pve1", "pve2"], "deduplicated");
    assert_eq!(
        p.user_data_template.as_deref(),
        Some(Path::new("/abs/t.yaml"))
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let loaded = Config::from_json(
        r#"{"pools":[{"name":"a","lables":"x"}],"max_total":3}"#,
        Path::new("."),
        &common::defaults(),
    )
    .unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "pools file: `max_total`: unknown key ignored (typo?)",
            "pool \"a\": `lables`: unknown key ignored (typo?)",
        ]
    );
}

#[test]
fn a_broken_file_reports_all_its_problems_at_once() {
    let err = Config::load_file(&fixture("broken-pools.json"), &common::defaults()).unwrap_err();
    assert!(!err.is_retryable());
    let Error::Invalid { problems, warnings } = &err else {
        panic!("expected Invalid, got {err}");
    };
    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
    let want = [
        "pools file: `max_total_runners`: expected a non-negative integer, found \"lots\"",
        "pool \"linux\": `labels`: must not be empty (set `labels` in the pool or RUNNER_LABELS)",
        "pool \"linux\": `vmid_start`: vmid_start 300 is greater than vmid_end 200",
        "pool \"linux\": `injection`: invalid value \"ssh\": expected one of snippet, agent",
        "pool \"linux\": `boot_timeout`: invalid duration \"10 minutes\": unexpected character ' ' (use seconds or e.g. \"90s\", \"10m\", \"12h\", \"1h30m\")",
        "pool \"Linux\": `name`: duplicate pool name \"Linux\" (same as pool \"linux\")",
        "pool \"Linux\": `runner_name_prefix`: runner_name_prefix \"gh-runner-linux-\" and pool \"linux\"'s \"gh-runner-\" are prefixes of one another: VM ownership would be ambiguous",
        "pool \"Linux\": `min_idle`: min_idle 3 is above max_runners 2",
        "pools[2]: `name`: required key is missing",
        "pools[2]: `max_lifetime`: invalid duration 0: must be greater than zero (use seconds or e.g. \"90s\", \"10m\", \"12h\", \"1h30m\")",
        "pools[2]: `vmid_start`: VMID range 140..=160 overlaps pool \"Linux\" (100..=150)",
        "pools[2]: `runner_name_prefix`: runner_name_prefix \"gh-runner-\" and pool \"linux\"'s \"gh-runner-\" are prefixes of one another: VM ownership would be ambiguous",
        "pools[2]: `runner_name_prefix`: runner_name_prefix \"gh-runner-\" and pool \"Linux\"'s \"gh-runner-linux-\" are prefixes of one another: VM ownership would be ambiguous",
        "pool \"win\": `runner_name_prefix`: invalid runner_name_prefix \"Win_\": only lowercase letters, digits and '-' are allowed",
        "pool \"win\": `runner_group_id`: expected a non-negative integer, found \"one\"",
        "pool \"win\": `os`: template \"shared-template\" has os linux here but os windows in pool \"Linux\"",
        "pools[4]: `pools`: expected an object, found \"not a pool\"",
    ];
    assert_eq!(got, want);
    let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "pools file: `pool`: unknown key ignored (typo?)",
            "pool \"linux\": `runer_user`: unknown key ignored (typo?)",
            "pool \"win\": `os_version`: unknown key ignored (typo?)",
        ]
    );
    // The error's one-line rendering carries everything.
    let line = err.to_string();
    assert!(!line.contains('\n'));
    assert!(line.starts_with("pools configuration has 17 problem(s): "));
}

fn kinds(json: &str) -> Vec<(Location, String, ProblemKind)> {
    match Config::from_json(json, Path::new("."), &common::defaults()) {
        Ok(_) => vec![],
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.location.clone(), p.key.clone(), p.kind.clone()))
            .collect(),
    }
}

fn only_kind(json: &str) -> ProblemKind {
    let mut k = kinds(json);
    assert_eq!(k.len(), 1, "{json}: {k:?}");
    k.remove(0).2
}

#[test]
fn each_validation_error() {
    assert!(matches!(
        Config::from_json("{\"pools\": [", Path::new("."), &common::defaults()),
        Err(Error::Json { .. })
    ));
    assert!(matches!(only_kind("42"), ProblemKind::NotAConfig { .. }));
    assert_eq!(only_kind("{}"), ProblemKind::NoPools);
    assert_eq!(only_kind("[]"), ProblemKind::NoPools);
    assert!(matches!(
        only_kind(r#"{"pools": {"a": 1}}"#),
        ProblemKind::WrongType { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a b"}]"#),
        ProblemKind::InvalidName { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": ""}]"#),
        ProblemKind::Empty { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": 5}]"#),
        ProblemKind::WrongType { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "labels": [1]}]"#),
        ProblemKind::WrongType { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "labels": " , "}]"#),
        ProblemKind::Empty { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "nodes": []}]"#),
        ProblemKind::Empty { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "node": ""}]"#),
        ProblemKind::Empty { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "template": ""}]"#),
        ProblemKind::Empty { .. }
    ));
    assert_eq!(
        only_kind(r#"[{"name": "a", "vmid_start": 99}]"#),
        ProblemKind::OutOfRange {
            value: 99,
            min: 100,
            max: 999_999_999
        }
    );
    assert!(matches!(
        only_kind(r#"[{"name": "a", "vmid_end": -1}]"#),
        ProblemKind::NotAnInteger { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "max_runners": 1.5}]"#),
        ProblemKind::NotAnInteger { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "runner_group_id": 0}]"#),
        ProblemKind::OutOfRange { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "full_clone": "maybe"}]"#),
        ProblemKind::BadChoice { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "os": "bsd"}]"#),
        ProblemKind::BadChoice { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "boot_timeout": "5y"}]"#),
        ProblemKind::BadDuration { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "boot_timeout": [1]}]"#),
        ProblemKind::BadDuration { .. }
    ));
    assert_eq!(
        only_kind(r#"[{"name": "a", "boot_timeout": "2h", "max_lifetime": "1h"}]"#),
        ProblemKind::BootTimeoutNotBelowLifetime {
            boot_secs: 7200,
            lifetime_secs: 3600
        }
    );
    assert!(matches!(
        only_kind(r#"[{"name": "a", "runner_name_prefix": ""}]"#),
        ProblemKind::InvalidPrefix { .. }
    ));
    assert!(matches!(
        only_kind(r#"[{"name": "a", "runner_name_prefix": "-x"}]"#),
        ProblemKind::InvalidPrefix { .. }
    ));
    assert!(matches!(
        only_kind(&format!(
            r#"[{{"name": "a", "runner_name_prefix": "{}"}}]"#,
            "a".repeat(40)
        )),
        ProblemKind::InvalidPrefix { .. }
    ));
    assert_eq!(
        only_kind(r#"[{"name": "a", "min_idle": 3, "vmid_start": 200, "vmid_end": 201}]"#),
        ProblemKind::MinIdleAboveCap {
            min_idle: 3,
            cap_key: "the VMID range size",
            cap: 2
        }
    );
    assert_eq!(
        only_kind(r#"{"max_total_runners": 2, "pools": [{"name": "a", "min_idle": 3}]}"#),
        ProblemKind::MinIdleAboveCap {
            min_idle: 3,
            cap_key: "max_total_runners",
            cap: 2
        }
    );
    assert_eq!(
        only_kind(
            r#"{"max_total_runners": 3, "pools": [
                {"name": "a", "min_idle": 2},
                {"name": "b", "min_idle": 2, "vmid_start": 300, "vmid_end": 310, "runner_name_prefix": "b-"}]}"#
        ),
        ProblemKind::MinIdleSumAboveTotal { sum: 4, cap: 3 }
    );
    // Equal default prefixes in two pools are ambiguous too.
    assert!(matches!(
        only_kind(r#"[{"name": "a"}, {"name": "b", "vmid_start": 300, "vmid_end": 310}]"#),
        ProblemKind::PrefixConflict { .. }
    ));
    // A pool name that differs only in case or in characters the tag replaces is a duplicate.
    assert!(matches!(
        only_kind(
            r#"[{"name": "a b"}, {"name": "a/b", "vmid_start": 300, "vmid_end": 310, "runner_name_prefix": "b-"}]"#
        ),
        ProblemKind::InvalidName { .. }
    ));
    assert!(matches!(
        only_kind(
            r#"[{"name": "a.b"}, {"name": "A.B", "vmid_start": 300, "vmid_end": 310, "runner_name_prefix": "b-"}]"#
        ),
        ProblemKind::DuplicateName { .. }
    ));
}

#[test]
fn lenient_value_forms() {
    let c = common::config(&serde_json::json!([
        { "name": "a", "vmid_start": 200.0, "vmid_end": " 210 ", "full_clone": 1, "max_runners": "3",
          "labels": ["Linux", "linux", "x64, arm64"] }
    ]));
    let p = &c.pools()[0];
    assert_eq!((p.vmid_start, p.vmid_end, p.max_runners), (200, 210, 3));
    assert!(p.full_clone);
    assert_eq!(
        p.labels,
        ["Linux", "x64", "arm64"],
        "case-insensitive duplicates dropped"
    );
    assert_eq!(p.match_labels(), ["linux", "x64", "arm64"]);
}

#[test]
fn durations_beyond_a_year_are_refused_naming_the_field_and_value() {
    // u64::MAX seconds used to load, and overflowed `Instant + boot_timeout` in the dispatcher.
    for (key, value) in [
        ("boot_timeout", "18446744073709551615"),
        ("boot_timeout", "\"18446744073709551615\""),
        ("max_lifetime", "18446744073709551615"),
        ("max_lifetime", "\"106751991167300d\""),
        ("max_lifetime", "\"366d\""),
        ("max_lifetime", "31622400"),
    ] {
        let json = format!(r#"[{{"name": "a", "{key}": {value}}}]"#);
        let err = Config::from_json(&json, Path::new("."), &common::defaults()).unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains(key) && line.contains("at most 365 days"),
            "{json}: {line}"
        );
        assert!(
            line.contains(value.trim_matches('"')),
            "{json}: the value is not named: {line}"
        );
        assert!(!line.contains('\n'), "{line}");
    }
    let ok = Config::from_json(
        r#"[{"name": "a", "boot_timeout": "1d", "max_lifetime": "365d"}]"#,
        Path::new("."),
        &common::defaults(),
    )
    .unwrap();
    assert_eq!(
        ok.config.pools()[0].max_lifetime,
        pool_scheduler::config::MAX_POOL_DURATION
    );
}

mod arbitrary {
    //! `Config::from_json` over arbitrary JSON and near-valid pools files: never a panic, one-line errors.

    use std::path::Path;

    use pool_scheduler::Config;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    use super::common;

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(Value::from(u64::MAX)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<u64>().prop_map(|n| Value::String(n.to_string())),
            "[0-9]{1,25}[smhd]{0,2}[0-9]{0,4}[smhd]?".prop_map(Value::String),
            "\\PC{0,16}".prop_map(Value::String),
            "[a-z0-9, -]{0,20}".prop_map(Value::String),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{1,10}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const KEYS: &[&str] = &[
        "name",
        "node",
        "nodes",
        "template",
        "labels",
        "vmid_start",
        "vmid_end",
        "runner_name_prefix",
        "runner_user",
        "user_data_template",
        "storage",
        "clone_storage",
        "max_runners",
        "injection",
        "full_clone",
        "min_idle",
        "boot_timeout",
        "max_lifetime",
        "os",
        "runner_group_id",
    ];

    /// A pool with a random subset of the known keys, each with an arbitrary value.
    fn pool() -> impl Strategy<Value = Value> {
        prop::collection::vec(prop::option::of(value()), KEYS.len()).prop_map(|values| {
            let mut pool = Map::new();
            for (k, v) in KEYS.iter().zip(values) {
                if let Some(v) = v {
                    pool.insert((*k).to_owned(), v);
                }
            }
            Value::Object(pool)
        })
    }

    fn file() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => (prop::collection::vec(pool(), 0..4), prop::option::of(leaf())).prop_map(|(pools, total)| {
                let mut v = json!({ "pools": pools });
                if let Some(t) = total {
                    v["max_total_runners"] = t;
                }
                v
            }),
            1 => prop::collection::vec(pool(), 0..4).prop_map(Value::Array),
            1 => value(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_pools_file_loads_or_fails_on_one_line(doc in file(), text in "\\PC{0,60}") {
            for input in [doc.to_string(), text] {
                match Config::from_json(&input, Path::new("/etc/dispatcher"), &common::defaults()) {
                    Ok(loaded) => {
                        for p in loaded.config.pools() {
                            prop_assert!(p.boot_timeout <= pool_scheduler::config::MAX_POOL_DURATION);
                            prop_assert!(p.max_lifetime <= pool_scheduler::config::MAX_POOL_DURATION);
                        }
                    }
                    Err(e) => {
                        let line = e.to_string();
                        prop_assert!(!line.contains('\n'), "{}", line);
                        for p in e.problems() {
                            let text = p.to_string();
                            prop_assert!(!text.contains('\n'), "{}", text);
                        }
                    }
                }
            }
        }
    }
}
