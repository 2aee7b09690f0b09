//! Deleting a runner VM (stop if running → destroy with purge → snippet → registration) and removing a
//! registration that has no VM. Ownership is re-checked on fresh `status/current` data right before the
//! destructive call: the cluster listing the plan came from may be seconds old.

use pool_scheduler::{Delete, DeleteReason, Deregister};
use proxmox_api::{NodeName, VmId};

use crate::error::Error;
use crate::reconciler::Reconciler;

/// Deletes one VM the plan found stopped or stale. Failures are logged (the next pass retries); returns
/// whether the deletion succeeded or was rightly refused.
pub(crate) async fn delete_vm(rec: &Reconciler, del: &Delete, registration: Option<u64>) -> bool {
    match try_delete(rec, del, registration).await {
        Ok(false) => true,
        Ok(true) => {
            tracing::info!(pool = %del.pool, vmid = del.vmid, node = %del.node, runner = %del.name, reason = %del.reason, "runner VM deleted");
            rec.metrics.deletion(&del.pool, del.reason);
            true
        }
        Err(Error::NotOwned { why, .. }) => {
            tracing::warn!(vmid = del.vmid, node = %del.node, why = %why, "not deleting: the VM no longer carries our marks");
            true
        }
        Err(e) => {
            tracing::error!(pool = %del.pool, vmid = del.vmid, node = %del.node, error = %e, "deletion failed; retrying on a later pass");
            false
        }
    }
}

async fn try_delete(
    rec: &Reconciler,
    del: &Delete,
    registration: Option<u64>,
) -> Result<bool, Error> {
    let node = NodeName::new(del.node.clone())?;
    let vmid = VmId::new(del.vmid)?;
    let status = rec.pve.vm_status(&node, vmid).await?;
    let pool = rec
        .cfg
        .pools
        .pool(&del.pool)
        .ok_or_else(|| Error::NotOwned {
            vmid: del.vmid,
            why: format!("pool {:?} unknown", del.pool),
        })?;
    if status.template {
        return Err(Error::NotOwned {
            vmid: del.vmid,
            why: "it is a template".into(),
        });
    }
    if let Some(name) = status.name.as_deref()
        && (!name.starts_with(&pool.runner_name_prefix) || name != del.name)
    {
        return Err(Error::NotOwned {
            vmid: del.vmid,
            why: format!("its name is {name:?}"),
        });
    }
    if let Some(lock) = status.lock.as_deref().filter(|l| !l.is_empty()) {
        return Err(Error::NotOwned {
            vmid: del.vmid,
            why: format!("it is locked ({lock})"),
        });
    }
    if del.reason == DeleteReason::IdleSurplus {
        // The runner may take a job at any moment: remove its registration first (GitHub refuses while
        // a job runs) and stop the VM only once the runner can no longer be given one.
        if let Some(id) = registration {
            match rec.gh.delete_runner(id).await {
                Ok(()) | Err(github_runners::Error::NotFound { .. }) => {}
                Err(github_runners::Error::RunnerBusy { .. }) => {
                    tracing::info!(vmid = del.vmid, runner = %del.name, "idle runner took a job meanwhile; kept");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if status.is_running() {
        let upid = rec.pve.stop(&node, vmid).await?;
        rec.tasks.wait(&upid, rec.tuning.task_deadline).await?;
    }
    let upid = rec.pve.delete_vm(&node, vmid, true, true).await?;
    rec.tasks.wait(&upid, rec.tuning.task_deadline).await?;
    if let Err(e) = rec.cfg.snippets.remove(&del.name).await {
        tracing::warn!(runner = %del.name, error = %e, "could not delete a leftover snippet");
    }
    // An idle-surplus runner's registration is already gone (removed before the stop).
    if let Some(id) = registration.filter(|_| del.reason != DeleteReason::IdleSurplus) {
        remove_registration(rec, id, &del.name).await;
    }
    Ok(true)
}

/// Removes a registration of ours that has no VM.
pub(crate) async fn deregister(rec: &Reconciler, d: &Deregister) {
    remove_registration(rec, d.runner_id, &d.name).await;
}

async fn remove_registration(rec: &Reconciler, id: u64, name: &str) {
    match rec.gh.delete_runner(id).await {
        Ok(()) => tracing::info!(runner = %name, runner_id = id, "runner registration removed"),
        Err(github_runners::Error::NotFound { .. }) => {}
        Err(github_runners::Error::RunnerBusy { .. }) => {
            tracing::warn!(runner = %name, runner_id = id, "registration is busy with a job; left in place")
        }
        Err(e) => {
            tracing::warn!(runner = %name, runner_id = id, error = %e, "could not remove the registration")
        }
    }
}
