//! Unit tests of the reconciler and executors against a stateful fake of `ProxmoxApi` and `GitHubRunners`.

mod api_calls;
mod cleanup;
mod failures;
mod fake;
mod harness;
mod lifecycle;
mod provision;
mod restart;
mod secrets;
