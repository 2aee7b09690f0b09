//! Small, strict parsers for environment values and the typo check of DESIGN §2.2.

use std::collections::BTreeSet;

/// Every variable the dispatcher reads (DESIGN §2.2), seed names included.
pub const KNOWN_VARIABLES: &[&str] = &[
    "PROXMOX_URL",
    "PROXMOX_NODE",
    "PROXMOX_TOKEN_ID",
    "PROXMOX_TOKEN_SECRET",
    "PROXMOX_STORAGE",
    "PROXMOX_VERIFY_SSL",
    "PROXMOX_CA_CERT",
    "PROXMOX_TLS_FINGERPRINT",
    "GITHUB_TOKEN",
    "GITHUB_APP_ID",
    "GITHUB_APP_INSTALLATION_ID",
    "GITHUB_APP_PRIVATE_KEY_FILE",
    "GITHUB_API_URL",
    "GITHUB_ORG",
    "GITHUB_REPOSITORIES",
    "MAX_TOTAL_RUNNERS",
    "DISABLE_CLEANUP",
    "PAUSE_ON_STOPPED",
    "REPO_OWNER",
    "REPO_NAME",
    "REPO_URL",
    "POLL_INTERVAL",
    "RUNNER_POOLS_CONFIG",
    "SNIPPETS_DIR",
    "TEMPLATE_NAME",
    "RUNNER_ID_START",
    "RUNNER_ID_END",
    "RUNNER_NAME_PREFIX",
    "RUNNER_USER",
    "RUNNER_LABELS",
    "USER_DATA_TEMPLATE",
    "RUNNER_GROUP_ID",
    "RUNNER_INJECTION",
    "DEBUG_LOGGING",
    "WEBHOOK_SECRET",
    "LISTEN_ADDR",
    "METRICS_ADDR",
    "ALLOW_INSECURE_HTTP",
    "LOG_FORMAT",
    "DISPATCHER_ID",
];

/// Prefixes whose unknown members are probably typos of ours.
const WATCHED_PREFIXES: &[&str] = &["PROXMOX_", "GITHUB_", "RUNNER_"];

/// Variables that GitHub itself sets inside Actions jobs (`GITHUB_*`, `RUNNER_*`): not typos of ours.
const FOREIGN_WELL_KNOWN: &[&str] = &[
    "GITHUB_ACTIONS",
    "GITHUB_ACTION",
    "GITHUB_ACTOR",
    "GITHUB_ENV",
    "GITHUB_EVENT_NAME",
    "GITHUB_EVENT_PATH",
    "GITHUB_JOB",
    "GITHUB_OUTPUT",
    "GITHUB_PATH",
    "GITHUB_REF",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_NUMBER",
    "GITHUB_SERVER_URL",
    "GITHUB_SHA",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_WORKFLOW",
    "GITHUB_WORKSPACE",
    "RUNNER_ARCH",
    "RUNNER_NAME",
    "RUNNER_OS",
    "RUNNER_TEMP",
    "RUNNER_TOOL_CACHE",
    "RUNNER_DEBUG",
    "RUNNER_ENVIRONMENT",
    "RUNNER_WORKSPACE",
    "RUNNER_TRACKING_ID",
];

/// Names of variables in `names` that look like ours (watched prefix) but are not known: probable typos.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let known: BTreeSet<&str> = KNOWN_VARIABLES.iter().copied().collect();
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| WATCHED_PREFIXES.iter().any(|p| n.starts_with(p)))
        .filter(|n| !known.contains(n) && !FOREIGN_WELL_KNOWN.contains(n))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Parses a boolean the way the seed's operators write them.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{name}={value:?}: expected true or false")),
    }
}

/// Parses a non-negative integer.
pub fn parse_u64(name: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{name}={value:?}: expected a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_found_and_known_names_pass() {
        let names = [
            "PROXMOX_URL",
            "PROXMOX_TOKEN_SECRT",
            "GITHUB_TOKEN",
            "GITHUB_SHA",
            "RUNNER_LABLES",
            "HOME",
            "RUNNER_OS",
        ];
        assert_eq!(
            unknown_variables(names),
            vec!["PROXMOX_TOKEN_SECRT", "RUNNER_LABLES"]
        );
    }

    #[test]
    fn booleans() {
        for t in ["1", "true", "TRUE", " yes ", "on"] {
            assert_eq!(parse_bool("X", t), Ok(true), "{t}");
        }
        for f in ["0", "false", "False", "no", "off", ""] {
            assert_eq!(parse_bool("X", f), Ok(false), "{f}");
        }
        let err = parse_bool("DISABLE_CLEANUP", "maybe").unwrap_err();
        assert!(
            err.contains("DISABLE_CLEANUP") && err.contains("maybe"),
            "{err}"
        );
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u64("POLL_INTERVAL", "15"), Ok(15));
        assert!(
            parse_u64("POLL_INTERVAL", "-1")
                .unwrap_err()
                .contains("POLL_INTERVAL")
        );
    }
}
