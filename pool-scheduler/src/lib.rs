//! `pool-scheduler` — the pure decisions of the ephemeral-runner dispatcher.
//!
//! No IO, no clock, no async: every function takes what it needs (file text, observations, `now`) and
//! returns a value, so the same input always gives the same output.
//!
//! * [`Config`] — the pools file (`runner-pools.json`, seed keys and defaults plus extensions), validated
//!   with every problem reported at once ([`Error::Invalid`]).
//! * [`match_job`] — which pool takes a job (DESIGN §2.4), with the nearest pool's missing labels otherwise.
//! * [`marks`] — runner/VM names, the description marker and tags; [`ownership`] — the one safety rule.
//! * [`classify`] — the phase of an owned VM; [`plan`] — starts, deletes, deregistrations, numbers.
//!
//! ```no_run
//! use std::path::Path;
//! use pool_scheduler::{Config, Defaults, Observed, plan};
//!
//! let defaults = Defaults { node: "pve1".into(), ..Defaults::default() };
//! let text = std::fs::read_to_string("/etc/dispatcher/runner-pools.json")?;
//! let loaded = Config::from_json(&text, Path::new("/etc/dispatcher"), &defaults)?;
//! for w in &loaded.warnings {
//!     eprintln!("warning: {w}");
//! }
//! let observed = Observed::default(); // filled by the dispatcher from Proxmox and GitHub
//! let plan = plan(&loaded.config, &observed, 1_760_000_000);
//! for start in &plan.starts {
//!     println!("start {} ({}) on {}", start.vmid, start.runner_name, start.node);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod classify;
pub mod config;
mod duration;
pub mod error;
mod fxhash;
pub mod ledger;
pub mod marks;
pub mod matching;
pub mod observed;
pub mod plan;

pub use classify::{
    DEREGISTER_GRACE_SECS, HALF_MADE_GRACE_SECS, Owned, Phase, RunnerIndex, StaleReason,
    VANISHED_GRACE_SECS, VmContext, classify, ownership,
};
pub use config::{
    Config, DEFAULT_POOL_NAME, Defaults, Flags, Injection, Loaded, Os, Pool, split_labels,
};
pub use duration::parse_duration;
pub use error::{Error, Location, Problem, ProblemKind, Warning};
pub use ledger::{Ledger, Outcome};
pub use marks::Marker;
pub use matching::{MatchResult, is_github_hosted_label, match_job};
pub use observed::{InFlight, Job, NodeInfo, Observed, ObservedVm, Op, Power, RunnerReg};
pub use plan::{
    BlockedBy, Delete, DeleteReason, Deregister, DeregisterReason, IDLE_SURPLUS_GRACE_SECS, Plan,
    PoolNumbers, Start, Unmatched, UnmatchedReason, plan,
};
