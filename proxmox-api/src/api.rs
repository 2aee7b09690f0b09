//! The typed API: trait [`ProxmoxApi`] and its implementation for [`ProxmoxClient`].

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::client::ProxmoxClient;
use crate::error::Error;
use crate::types::{
    CloneRequest, ClusterVm, ConfigUpdate, NodeInfo, NodeName, NodeVm, Permissions, StorageConfig,
    TaskListEntry, TaskListQuery, TaskStatus, Upid, Version, VmConfig, VmId, VmStatus, form_bool,
};

/// Largest `content` `agent/file-write` accepts (characters, before the server's base64 encoding).
pub const AGENT_FILE_WRITE_MAX: usize = 61_440;

/// First poll interval of [`ProxmoxApi::wait_task`].
pub const TASK_POLL_INITIAL: Duration = Duration::from_millis(100);
/// Largest poll interval of [`ProxmoxApi::wait_task`].
pub const TASK_POLL_MAX: Duration = Duration::from_secs(1);

/// The Proxmox VE operations a runner autoscaler needs. Object-safe; mockable with the `mock`
/// feature (`MockProxmoxApi`).
///
/// Methods that start a task return its [`Upid`]; wait for it with [`ProxmoxApi::wait_task`].
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ProxmoxApi: Send + Sync {
    /// `GET /version`.
    async fn version(&self) -> Result<Version, Error>;

    /// `GET /cluster/resources?type=vm`, keeping only QEMU VMs (`type == "qemu"`; LXC dropped).
    /// Name/status/template/uptime lag ~10 s; confirm with [`ProxmoxApi::vm_status`].
    async fn cluster_vms(&self) -> Result<Vec<ClusterVm>, Error>;

    /// `GET /cluster/resources?type=vm` with every guest: QEMU VMs **and** LXC containers (check
    /// `resource_type`). VMIDs are cluster-wide, so an allocator must avoid the containers' ids too.
    async fn cluster_guests(&self) -> Result<Vec<ClusterVm>, Error>;

    /// `GET /nodes`.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, Error>;

    /// `GET /cluster/nextid`: the lowest free VMID cluster-wide (a hint; it is not reserved).
    async fn next_id(&self) -> Result<VmId, Error>;

    /// `GET /nodes/{node}/qemu`: the VMs of one node.
    async fn node_vms(&self, node: &NodeName) -> Result<Vec<NodeVm>, Error>;

    /// `GET /nodes/{node}/qemu/{vmid}/config`.
    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<VmConfig, Error>;

    /// `PUT /nodes/{node}/qemu/{vmid}/config` (synchronous). An empty update is an error.
    async fn update_config(
        &self,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<(), Error>;

    /// `POST /nodes/{node}/qemu/{vmid}/config`: may run as a task (returns its UPID) or finish
    /// at once (`None`).
    async fn update_config_async(
        &self,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<Option<Upid>, Error>;

    /// `POST /nodes/{node}/qemu/{vmid}/clone` of `template` on `node`.
    async fn clone_vm(
        &self,
        node: &NodeName,
        template: VmId,
        request: &CloneRequest,
    ) -> Result<Upid, Error>;

    /// `POST /nodes/{node}/qemu/{vmid}/status/start`.
    async fn start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, Error>;

    /// `POST /nodes/{node}/qemu/{vmid}/status/stop` (hard stop).
    async fn stop(&self, node: &NodeName, vmid: VmId) -> Result<Upid, Error>;

    /// `POST /nodes/{node}/qemu/{vmid}/status/shutdown` (ACPI/agent), with an optional timeout.
    async fn shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout: Option<Duration>,
    ) -> Result<Upid, Error>;

    /// `GET /nodes/{node}/qemu/{vmid}/status/current` (authoritative status).
    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, Error>;

    /// `DELETE /nodes/{node}/qemu/{vmid}?purge=…&destroy-unreferenced-disks=…`.
    async fn delete_vm(
        &self,
        node: &NodeName,
        vmid: VmId,
        purge: bool,
        destroy_unreferenced_disks: bool,
    ) -> Result<Upid, Error>;

    /// `GET /nodes/{node}/tasks/{upid}/status` on the node named in the UPID.
    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error>;

    /// Polls [`ProxmoxApi::task_status`] (100 ms, growing to 1 s) until the task stops or
    /// `deadline` passes. `Ok` only when it stopped with `OK` or `WARNINGS: n`;
    /// [`Error::TaskFailed`] for any other exit status; [`Error::DeadlineExceeded`] if still
    /// running. Retryable errors while polling are tolerated until the deadline.
    async fn wait_task(&self, upid: &Upid, deadline: Duration) -> Result<TaskStatus, Error> {
        poll_task_status(self, upid, Instant::now(), deadline).await
    }

    /// `GET /nodes/{node}/tasks` with `query`: the node's task list (see [`TaskListEntry`] for
    /// the order and the statuses). Without `Sys.Audit` on `/nodes/{node}` a token sees only
    /// its own tasks. Entries without a `upid` are skipped.
    ///
    /// The default implementation answers 501 (as an old or odd server would), so an
    /// implementation that does not provide it makes [`crate::watch::TaskWatcher`] fall back to
    /// per-task [`ProxmoxApi::task_status`] polling.
    async fn node_tasks(
        &self,
        node: &NodeName,
        query: &TaskListQuery,
    ) -> Result<Vec<TaskListEntry>, Error> {
        let _ = (node, query);
        Err(Error::Api {
            method: "GET",
            endpoint: NODE_TASKS,
            status: 501,
            message: "node_tasks is not implemented by this ProxmoxApi".into(),
            errors: Default::default(),
        })
    }

    /// `POST /nodes/{node}/qemu/{vmid}/agent/ping`: `Ok` when the guest agent answers
    /// (500 `QEMU guest agent is not running` until the guest is up).
    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), Error>;

    /// `POST /nodes/{node}/qemu/{vmid}/agent/file-write`: writes `content` (≤ 61 440
    /// characters, checked before sending) to `path` in the guest; the server base64-encodes it
    /// (`encode=1`). The content is never logged.
    async fn agent_file_write(
        &self,
        node: &NodeName,
        vmid: VmId,
        path: &str,
        content: &SecretString,
    ) -> Result<(), Error>;

    /// `GET /storage/{storage}`: a storage definition (check `snippets` content).
    async fn storage(&self, storage: &str) -> Result<StorageConfig, Error>;

    /// `GET /access/permissions[?path=…]`: the token's effective privileges.
    async fn permissions<'a>(&self, path: Option<&'a str>) -> Result<Permissions, Error>;
}

const VM_CONFIG: &str = "/nodes/{node}/qemu/{vmid}/config";
const NODE_TASKS: &str = "/nodes/{node}/tasks";

/// The loop of [`ProxmoxApi::wait_task`], counting from `started`: polls
/// [`ProxmoxApi::task_status`] (100 ms, growing ×1.5 to 1 s) until the task stops or `deadline`
/// passes; tolerates retryable errors until then.
pub(crate) async fn poll_task_status<A: ProxmoxApi + ?Sized>(
    api: &A,
    upid: &Upid,
    started: Instant,
    deadline: Duration,
) -> Result<TaskStatus, Error> {
    let mut interval = TASK_POLL_INITIAL;
    loop {
        match api.task_status(upid).await {
            Ok(status) if status.is_stopped() => return finished(upid, status),
            Ok(_) => {}
            Err(e) if e.is_retryable() => {
                tracing::warn!(upid = %upid, error = %e, "task status poll failed; retrying");
            }
            Err(e) => return Err(e),
        }
        let waited = started.elapsed();
        if waited >= deadline {
            return Err(Error::DeadlineExceeded {
                upid: upid.clone(),
                waited,
            });
        }
        tokio::time::sleep(interval.min(deadline - waited)).await;
        interval = (interval * 3 / 2).min(TASK_POLL_MAX);
    }
}

/// The result of waiting for a task that stopped: `Ok` for `OK`/`WARNINGS: n`, else
/// [`Error::TaskFailed`] with the exit status.
pub(crate) fn finished(upid: &Upid, status: TaskStatus) -> Result<TaskStatus, Error> {
    if status.is_success() {
        Ok(status)
    } else {
        Err(Error::TaskFailed {
            upid: upid.clone(),
            exitstatus: status
                .exitstatus
                .clone()
                .unwrap_or_else(|| "unknown (no exit status)".into()),
        })
    }
}

#[async_trait]
impl ProxmoxApi for ProxmoxClient {
    async fn version(&self) -> Result<Version, Error> {
        self.call(Method::GET, "/version", &[], &[], None).await
    }

    async fn cluster_vms(&self) -> Result<Vec<ClusterVm>, Error> {
        Ok(self
            .cluster_guests()
            .await?
            .into_iter()
            .filter(|r| r.resource_type == "qemu")
            .collect())
    }

    async fn cluster_guests(&self) -> Result<Vec<ClusterVm>, Error> {
        const EP: &str = "/cluster/resources";
        let all: Vec<Value> = self
            .call(Method::GET, EP, &[], &[("type", "vm".into())], None)
            .await?;
        all.into_iter()
            .filter(|r| matches!(r.get("type").and_then(Value::as_str), Some("qemu" | "lxc")))
            .map(|r| {
                serde_json::from_value::<ClusterVm>(r).map_err(|e| Error::Decode {
                    method: "GET",
                    endpoint: EP,
                    message: format!("guest resource: {e}"),
                })
            })
            .collect()
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        self.call(Method::GET, "/nodes", &[], &[], None).await
    }

    async fn next_id(&self) -> Result<VmId, Error> {
        self.call(Method::GET, "/cluster/nextid", &[], &[], None)
            .await
    }

    async fn node_vms(&self, node: &NodeName) -> Result<Vec<NodeVm>, Error> {
        self.call(
            Method::GET,
            "/nodes/{node}/qemu",
            &[node.as_str()],
            &[],
            None,
        )
        .await
    }

    async fn vm_config(&self, node: &NodeName, vmid: VmId) -> Result<VmConfig, Error> {
        let id = vmid.to_string();
        self.call(Method::GET, VM_CONFIG, &[node.as_str(), &id], &[], None)
            .await
    }

    async fn update_config(
        &self,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<(), Error> {
        check_update(update)?;
        let id = vmid.to_string();
        let _: Value = self
            .call(
                Method::PUT,
                VM_CONFIG,
                &[node.as_str(), &id],
                &[],
                Some(&update.form()),
            )
            .await?;
        Ok(())
    }

    async fn update_config_async(
        &self,
        node: &NodeName,
        vmid: VmId,
        update: &ConfigUpdate,
    ) -> Result<Option<Upid>, Error> {
        check_update(update)?;
        let id = vmid.to_string();
        self.call(
            Method::POST,
            VM_CONFIG,
            &[node.as_str(), &id],
            &[],
            Some(&update.form()),
        )
        .await
    }

    async fn clone_vm(
        &self,
        node: &NodeName,
        template: VmId,
        request: &CloneRequest,
    ) -> Result<Upid, Error> {
        let id = template.to_string();
        self.call(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/clone",
            &[node.as_str(), &id],
            &[],
            Some(&request.form()),
        )
        .await
    }

    async fn start(&self, node: &NodeName, vmid: VmId) -> Result<Upid, Error> {
        let id = vmid.to_string();
        self.call(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/status/start",
            &[node.as_str(), &id],
            &[],
            Some(&[]),
        )
        .await
    }

    async fn stop(&self, node: &NodeName, vmid: VmId) -> Result<Upid, Error> {
        let id = vmid.to_string();
        self.call(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/status/stop",
            &[node.as_str(), &id],
            &[],
            Some(&[]),
        )
        .await
    }

    async fn shutdown(
        &self,
        node: &NodeName,
        vmid: VmId,
        timeout: Option<Duration>,
    ) -> Result<Upid, Error> {
        let id = vmid.to_string();
        let form: Vec<(&'static str, String)> = timeout
            .map(|t| vec![("timeout", t.as_secs().max(1).to_string())])
            .unwrap_or_default();
        self.call(
            Method::POST,
            "/nodes/{node}/qemu/{vmid}/status/shutdown",
            &[node.as_str(), &id],
            &[],
            Some(&form),
        )
        .await
    }

    async fn vm_status(&self, node: &NodeName, vmid: VmId) -> Result<VmStatus, Error> {
        let id = vmid.to_string();
        self.call(
            Method::GET,
            "/nodes/{node}/qemu/{vmid}/status/current",
            &[node.as_str(), &id],
            &[],
            None,
        )
        .await
    }

    async fn delete_vm(
        &self,
        node: &NodeName,
        vmid: VmId,
        purge: bool,
        destroy_unreferenced_disks: bool,
    ) -> Result<Upid, Error> {
        let id = vmid.to_string();
        self.call(
            Method::DELETE,
            "/nodes/{node}/qemu/{vmid}",
            &[node.as_str(), &id],
            &[
                ("purge", form_bool(purge)),
                (
                    "destroy-unreferenced-disks",
                    form_bool(destroy_unreferenced_disks),
                ),
            ],
            None,
        )
        .await
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error> {
        self.call(
            Method::GET,
            "/nodes/{node}/tasks/{upid}/status",
            &[upid.node().as_str(), upid.as_str()],
            &[],
            None,
        )
        .await
    }

    async fn node_tasks(
        &self,
        node: &NodeName,
        query: &TaskListQuery,
    ) -> Result<Vec<TaskListEntry>, Error> {
        let all: Vec<Value> = self
            .call(
                Method::GET,
                NODE_TASKS,
                &[node.as_str()],
                &query.query(),
                None,
            )
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|v| match serde_json::from_value::<TaskListEntry>(v) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    tracing::warn!(%node, error = %e, "skipping a task list entry");
                    None
                }
            })
            .collect())
    }

    async fn agent_ping(&self, node: &NodeName, vmid: VmId) -> Result<(), Error> {
        let id = vmid.to_string();
        let _: Value = self
            .call(
                Method::POST,
                "/nodes/{node}/qemu/{vmid}/agent/ping",
                &[node.as_str(), &id],
                &[],
                Some(&[]),
            )
            .await?;
        Ok(())
    }

    async fn agent_file_write(
        &self,
        node: &NodeName,
        vmid: VmId,
        path: &str,
        content: &SecretString,
    ) -> Result<(), Error> {
        if path.trim().is_empty() {
            return Err(Error::InvalidValue {
                what: "guest file path",
                value: path.to_owned(),
                reason: "empty".into(),
            });
        }
        let len = content.expose_secret().chars().count();
        if len > AGENT_FILE_WRITE_MAX {
            return Err(Error::InvalidValue {
                what: "agent file-write content",
                value: format!("<{len} characters>"),
                reason: format!("longer than the API's limit of {AGENT_FILE_WRITE_MAX} characters"),
            });
        }
        let id = vmid.to_string();
        let form = [
            ("file", path.to_owned()),
            ("content", content.expose_secret().to_owned()),
            ("encode", form_bool(true)),
        ];
        let _: Value = self
            .call(
                Method::POST,
                "/nodes/{node}/qemu/{vmid}/agent/file-write",
                &[node.as_str(), &id],
                &[],
                Some(&form),
            )
            .await?;
        Ok(())
    }

    async fn storage(&self, storage: &str) -> Result<StorageConfig, Error> {
        self.call(Method::GET, "/storage/{storage}", &[storage], &[], None)
            .await
    }

    async fn permissions<'a>(&self, path: Option<&'a str>) -> Result<Permissions, Error> {
        let query: Vec<(&'static str, String)> = path
            .map(|p| vec![("path", p.to_owned())])
            .unwrap_or_default();
        self.call(Method::GET, "/access/permissions", &[], &query, None)
            .await
    }
}

fn check_update(update: &ConfigUpdate) -> Result<(), Error> {
    if update.is_empty() {
        return Err(Error::InvalidValue {
            what: "config update",
            value: "{}".into(),
            reason: "nothing to change".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn trait_is_object_safe_and_mockable() {
        let mut mock = MockProxmoxApi::new();
        mock.expect_permissions()
            .withf(|p| *p == Some("/vms"))
            .times(1)
            .returning(|_| Ok(Permissions::default()));
        mock.expect_next_id().times(1).returning(|| Ok(VmId(123)));
        let api: Arc<dyn ProxmoxApi> = Arc::new(mock);
        assert_eq!(
            api.permissions(Some("/vms")).await.unwrap(),
            Permissions::default()
        );
        assert_eq!(api.next_id().await.unwrap(), VmId(123));
    }
}
