//! Typed Proxmox VE API client: the parts an ephemeral-runner autoscaler needs.
//!
//! Two layers: [`ProxmoxClient`] has one private function that sends a request, decodes the
//! `{"data": …}` envelope and maps errors (message from the body's `message`, else the HTTP
//! reason phrase; per-parameter `errors` of 400 answers); the typed methods of the object-safe,
//! mockable trait [`ProxmoxApi`] sit on top. Authentication is an API token
//! (`PVEAPIToken=USER@REALM!TOKENID=SECRET`); TLS is an explicit [`TlsMode`]: system roots, a CA
//! file, a pinned SHA-256 certificate fingerprint (Proxmox's way for self-signed hosts), or
//! insecure (logged as a warning).
//!
//! ```no_run
//! use std::time::Duration;
//! use proxmox_api::{CloneRequest, ProxmoxApi, ProxmoxClient, ProxmoxConfig, VmId};
//!
//! # async fn run() -> Result<(), proxmox_api::Error> {
//! let config = ProxmoxConfig::from_lookup(|k| std::env::var(k).ok())?;
//! let client = ProxmoxClient::new(config)?;
//! for vm in client.cluster_vms().await? {
//!     println!("{} on {}: {:?} [{}]", vm.vmid, vm.node, vm.status, vm.tags);
//! }
//! let node = "pve1".parse()?;
//! let mut clone = CloneRequest::new(client.next_id().await?);
//! clone.name = Some("gha-linux-1".into());
//! clone.full = Some(false);
//! let upid = client.clone_vm(&node, VmId(9000), &clone).await?;
//! client.wait_task(&upid, Duration::from_secs(300)).await?;
//! # Ok(()) }
//! ```
//!
//! Retry idempotent calls and lock timeouts with [`retry::retry`]; it retries only errors for
//! which [`Error::is_retryable`] is true. Many concurrent waits are cheaper with a shared
//! [`TaskWatcher`]: one task-list poll per node instead of one status poll per task.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod client;
mod config;
mod error;
pub mod lenient;
pub mod retry;
pub mod tls;
mod types;
pub mod watch;

#[cfg(any(test, feature = "mock"))]
pub use api::MockProxmoxApi;
pub use api::{AGENT_FILE_WRITE_MAX, ProxmoxApi, TASK_POLL_INITIAL, TASK_POLL_MAX};
pub use client::{ProxmoxClient, RequestEvent, RequestObserver};
pub use config::{DEFAULT_TIMEOUT, Fingerprint, ProxmoxConfig, TlsMode};
pub use error::Error;
pub use retry::{RetryPolicy, retry};
pub use types::{
    CloneRequest, ClusterVm, ConfigUpdate, NodeInfo, NodeName, NodeVm, Permissions, StorageConfig,
    Tags, TaskListEntry, TaskListQuery, TaskSource, TaskStatus, TaskStatusType, Upid, Version,
    VmConfig, VmId, VmStatus,
};
pub use watch::{TaskWatcher, TaskWatcherOptions};
