//! Deleting a runner VM (registration → stop if running → destroy with purge → snippet) and removing a
//! registration that has no VM. Ownership is re-checked on fresh `status/current` data (name, lock, tags)
//! right before each destructive call: the cluster listing the plan came from may be seconds old.

use pool_scheduler::{Delete, Deregister, marks};
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
    verify_ours(rec, &node, vmid, del, &status).await?;
    // The runner may take a job at any moment until it is gone from GitHub: remove its registration first
    // (GitHub refuses while a job runs: then the VM is kept, whatever the plan said), and stop the VM only
    // once the runner can no longer be given one.
    if let Some(id) = registration {
        match rec.gh.delete_runner(id).await {
            Ok(()) | Err(github_runners::Error::NotFound { .. }) => {}
            Err(github_runners::Error::RunnerBusy { .. }) => {
                tracing::info!(vmid = del.vmid, runner = %del.name, reason = %del.reason, "the runner is running a job; VM kept");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if status.is_running() {
        let upid = rec.pve.stop(&node, vmid).await?;
        rec.tasks.wait(&upid, rec.tuning.task_deadline).await?;
        // The marks are read again right before the destroy: the plan and the first read are seconds old.
        let fresh = rec.pve.vm_status(&node, vmid).await?;
        verify_ours(rec, &node, vmid, del, &fresh).await?;
    }
    let upid = rec.pve.delete_vm(&node, vmid, true, true).await?;
    rec.tasks.wait(&upid, rec.tuning.task_deadline).await?;
    if let Err(e) = rec.cfg.snippets.remove(&del.name).await {
        tracing::warn!(runner = %del.name, error = %e, "could not delete a leftover snippet");
    }
    Ok(true)
}

/// The fresh `status/current` of the VM still shows it as the one the plan chose: not a template, named as
/// planned (a missing name is not ours), unlocked, and carrying our marks — the tags (`ghr-managed`, its
/// pool, no other dispatcher instance) or, for a VM whose tags were never set, the description marker.
async fn verify_ours(
    rec: &Reconciler,
    node: &NodeName,
    vmid: VmId,
    del: &Delete,
    status: &proxmox_api::VmStatus,
) -> Result<(), Error> {
    let not_owned = |why: String| Error::NotOwned {
        vmid: del.vmid,
        why,
    };
    let pool = rec
        .cfg
        .pools
        .pool(&del.pool)
        .ok_or_else(|| not_owned(format!("pool {:?} unknown", del.pool)))?;
    if status.template {
        return Err(not_owned("it is a template".into()));
    }
    match status.name.as_deref() {
        None => return Err(not_owned("it has no name".into())),
        Some(name) if !name.starts_with(&pool.runner_name_prefix) || name != del.name => {
            return Err(not_owned(format!("its name is {name:?}")));
        }
        Some(_) => {}
    }
    if let Some(lock) = status.lock.as_deref().filter(|l| !l.is_empty()) {
        return Err(not_owned(format!("it is locked ({lock})")));
    }
    let tags: Vec<String> = status.tags.iter().map(str::to_owned).collect();
    let instance = rec.cfg.instance();
    if let Some(other) = marks::tagged_instance(&tags).filter(|id| *id != instance) {
        return Err(not_owned(format!(
            "it belongs to dispatcher instance {other:?}"
        )));
    }
    if marks::has_managed_tag(&tags) {
        let pool_tag = marks::pool_tag(&pool.name);
        if tags
            .iter()
            .any(|t| t.starts_with(marks::POOL_TAG_PREFIX) && *t != pool_tag)
        {
            return Err(not_owned("it carries another pool's tag".into()));
        }
        return Ok(());
    }
    // No tags yet (a clone that finished after a crash): the marker written with the clone must name us.
    let cfg = rec.pve.vm_config(node, vmid).await?;
    let marker = cfg
        .description
        .as_deref()
        .and_then(marks::parse_description_marker);
    match marker {
        Some(m)
            if m.pool == pool.name
                && m.runner == del.name
                && m.instance.as_deref().is_none_or(|id| id == instance) =>
        {
            Ok(())
        }
        _ => Err(not_owned(
            "it carries neither our tags nor our marker".into(),
        )),
    }
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
