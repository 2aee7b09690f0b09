//! Label matching table (DESIGN §2.4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use pool_scheduler::{MatchResult, is_github_hosted_label, match_job};

fn cfg() -> pool_scheduler::Config {
    common::config(&serde_json::json!({ "pools": [
        { "name": "linux",     "labels": "linux,x64",                 "vmid_start": 200, "vmid_end": 209, "runner_name_prefix": "a-" },
        { "name": "linux-too", "labels": ["Linux", "X64"],            "vmid_start": 210, "vmid_end": 219, "runner_name_prefix": "b-" },
        { "name": "gpu",       "labels": ["linux", "x64", "gpu"],     "vmid_start": 220, "vmid_end": 229, "runner_name_prefix": "c-" },
        { "name": "noble",     "labels": ["self-hosted", "linux", "x64", "ubuntu-24.04", "energyplus"],
                                                                      "vmid_start": 230, "vmid_end": 239, "runner_name_prefix": "d-" },
        { "name": "win",       "labels": ["windows", "x64"],          "vmid_start": 240, "vmid_end": 249, "runner_name_prefix": "e-" }
    ]}))
}

fn matched(name: &str) -> MatchResult {
    let c = cfg();
    MatchResult::Matched {
        pool: c.pool_index(name).unwrap(),
    }
}

fn no_pool(nearest: &str, missing: &[&str]) -> MatchResult {
    let c = cfg();
    MatchResult::NoPool {
        nearest_pool: c.pool_index(nearest).unwrap(),
        missing_labels: missing.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn matching_table() {
    let c = cfg();
    let table: Vec<(&[&str], MatchResult)> = vec![
        // self-hosted is implicit; fewest labels wins; tie → file order ("linux" before "linux-too").
        (&["self-hosted"], matched("linux")),
        (&["self-hosted", "linux"], matched("linux")),
        (&["linux", "x64"], matched("linux")),
        // case-insensitive on both sides
        (&["SELF-HOSTED", "LINUX", "x64"], matched("linux")),
        (&["Self-Hosted", "GPU"], matched("gpu")),
        (&["self-hosted", "linux", "x64", "gpu"], matched("gpu")),
        // a GitHub-hosted image name with self-hosted is ours
        (&["self-hosted", "ubuntu-24.04"], matched("noble")),
        (&["self-hosted", "Linux", "EnergyPlus"], matched("noble")),
        (&["windows"], matched("win")),
        // GitHub-hosted only (no self-hosted): not ours, even though "noble" lists ubuntu-24.04
        (&["ubuntu-latest"], MatchResult::NotOurs),
        (&["ubuntu-24.04"], MatchResult::NotOurs),
        (&["Windows-Latest"], MatchResult::NotOurs),
        (&["macos-14-large"], MatchResult::NotOurs),
        (&["windows-2022", "ubuntu-22.04"], MatchResult::NotOurs),
        (&[], MatchResult::NotOurs),
        // a custom label without self-hosted that no pool has: nearest pool + missing labels (job spelling)
        (
            &["self-hosted", "linux", "ARM64"],
            no_pool("linux", &["ARM64"]),
        ),
        (
            &["self-hosted", "windows", "gpu"],
            no_pool("gpu", &["windows"]),
        ),
        (
            &["big-box", "Huge", "big-box"],
            no_pool("linux", &["big-box", "Huge"]),
        ),
        (
            &["ubuntu-latest", "gpu", "cuda"],
            no_pool("gpu", &["ubuntu-latest", "cuda"]),
        ),
    ];
    for (labels, want) in table {
        assert_eq!(match_job(&c, labels), want, "{labels:?}");
    }
}

#[test]
fn hosted_label_list() {
    for l in [
        "ubuntu-latest",
        "ubuntu-22.04",
        "ubuntu-24.04-arm",
        "windows-2025",
        "macos-latest",
        "MACOS-15",
    ] {
        assert!(is_github_hosted_label(l), "{l}");
    }
    for l in ["self-hosted", "linux", "ubuntu", "windows", "macos", "gpu"] {
        assert!(!is_github_hosted_label(l), "{l}");
    }
}
