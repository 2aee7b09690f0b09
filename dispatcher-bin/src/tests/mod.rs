//! Unit tests of the reconciler and executors against a stateful fake of `ProxmoxApi` and `GitHubRunners`.

mod fake;
mod harness;
mod cleanup;
mod failures;
mod provision;
mod restart;
