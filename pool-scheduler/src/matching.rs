//! Job → pool matching (DESIGN §2.4): GitHub's rule, made deterministic.
//!
//! A job matches a pool when every job label is in the pool's labels ∪ {`self-hosted`}, compared
//! case-insensitively. Among matching pools the one with the fewest labels wins (counted without
//! `self-hosted`, after case-insensitive de-duplication); ties go to the first pool in the file. A job whose
//! labels contain no `self-hosted` and are all GitHub-hosted image names ([`is_github_hosted_label`]) is not
//! ours, even if a pool lists such a label (GitHub routes it to its hosted runners). A job without labels is
//! not ours either.

use serde::Serialize;

use crate::config::Config;

/// The label every self-hosted runner carries implicitly.
pub const SELF_HOSTED: &str = "self-hosted";

/// GitHub-hosted runner image labels (lowercase). Any label starting with `macos-` also counts.
/// Source: GitHub's "GitHub-hosted runners" reference (standard and arm64 images).
pub const GITHUB_HOSTED_LABELS: &[&str] = &[
    "ubuntu-latest",
    "ubuntu-slim",
    "ubuntu-24.04",
    "ubuntu-22.04",
    "ubuntu-20.04",
    "ubuntu-18.04",
    "ubuntu-24.04-arm",
    "ubuntu-22.04-arm",
    "windows-latest",
    "windows-2025",
    "windows-2022",
    "windows-2019",
    "windows-11-arm",
];

/// Whether `label` names a GitHub-hosted image (case-insensitive): one of [`GITHUB_HOSTED_LABELS`] or
/// `macos-*`.
#[must_use]
pub fn is_github_hosted_label(label: &str) -> bool {
    let l = label.trim().to_ascii_lowercase();
    l.starts_with("macos-") || GITHUB_HOSTED_LABELS.contains(&l.as_str())
}

/// The outcome of matching one job's labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MatchResult {
    /// The job goes to this pool (index into [`Config::pools`]).
    Matched {
        /// Pool index.
        pool: usize,
    },
    /// Not a self-hosted job (GitHub-hosted labels only, or no labels): not ours, do not provision.
    NotOurs,
    /// No pool has every label; `nearest_pool` lacks the fewest (`missing_labels`, as the job wrote them).
    NoPool {
        /// Index of the pool with the fewest missing labels (ties: file order).
        nearest_pool: usize,
        /// The job labels that pool lacks, in job order.
        missing_labels: Vec<String>,
    },
}

/// Matches a job's labels against the configuration (see the module docs).
///
/// ```no_run
/// # fn demo(config: &pool_scheduler::Config) {
/// use pool_scheduler::{match_job, MatchResult};
/// match match_job(config, &["self-hosted", "Linux", "x64"]) {
///     MatchResult::Matched { pool } => println!("pool {}", config.pools()[pool].name),
///     MatchResult::NotOurs => println!("GitHub-hosted job"),
///     MatchResult::NoPool { nearest_pool, missing_labels } => {
///         println!("nearest {} lacks {missing_labels:?}", config.pools()[nearest_pool].name)
///     }
/// }
/// # }
/// ```
#[must_use]
pub fn match_job<S: AsRef<str>>(config: &Config, labels: &[S]) -> MatchResult {
    let mut lowered: Vec<(String, &str)> = Vec::with_capacity(labels.len());
    let mut self_hosted = false;
    for l in labels {
        let raw = l.as_ref().trim();
        let low = raw.to_lowercase();
        if low == SELF_HOSTED {
            self_hosted = true;
        } else if !low.is_empty() && !lowered.iter().any(|(x, _)| *x == low) {
            lowered.push((low, raw));
        }
    }
    if !self_hosted && lowered.iter().all(|(l, _)| is_github_hosted_label(l)) {
        return MatchResult::NotOurs;
    }

    let mut best: Option<(usize, usize)> = None; // (label count, index)
    let mut nearest: Option<(usize, usize)> = None; // (missing count, index)
    for (i, pool) in config.pools().iter().enumerate() {
        let have = pool.match_labels();
        let missing = lowered
            .iter()
            .filter(|(l, _)| !have.iter().any(|h| h == l))
            .count();
        if missing == 0 {
            if best.is_none_or(|(n, _)| have.len() < n) {
                best = Some((have.len(), i));
            }
        } else if nearest.is_none_or(|(m, _)| missing < m) {
            nearest = Some((missing, i));
        }
    }
    if let Some((_, pool)) = best {
        return MatchResult::Matched { pool };
    }
    let nearest_pool = nearest.map_or(0, |(_, i)| i);
    let have = config
        .pools()
        .get(nearest_pool)
        .map(crate::config::Pool::match_labels)
        .unwrap_or_default();
    let missing_labels = lowered
        .iter()
        .filter(|(l, _)| !have.iter().any(|h| h == l))
        .map(|(_, raw)| (*raw).to_owned())
        .collect();
    MatchResult::NoPool {
        nearest_pool,
        missing_labels,
    }
}
