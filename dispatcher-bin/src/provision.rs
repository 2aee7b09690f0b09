//! One provision (DESIGN §2.7 step 4): credential ∥ clone → configure → start → inject → ready.
//!
//! The credential is minted while the clone runs (the two are independent), so a JIT config costs no
//! latency. Any failure — or a shutdown — rolls back everything this provision made: the VM (only if our
//! clone task succeeded: a VMID someone else holds is never touched), the snippet and the runner
//! registration.

use std::time::{Duration, Instant};

use cloudinit_render::Credential;
use github_runners::JitRequest;
use pool_scheduler::{Injection, Pool, Start, marks};
use proxmox_api::{CloneRequest, ConfigUpdate, NodeName, Tags, VmId};

use crate::error::Error;
use crate::observe::TemplateRef;
use crate::reconciler::Reconciler;

/// The runner's credential and, for a JIT config, the registration it created (to remove on rollback).
struct Minted {
    credential: Credential,
    runner_id: Option<u64>,
}

/// What exists so far, for the rollback.
#[derive(Default)]
struct Made {
    vm: bool,
    started: bool,
    snippet: bool,
    runner_id: Option<u64>,
}

/// Provisions one runner VM; on error everything made is rolled back before returning.
pub(crate) async fn provision(
    rec: &Reconciler,
    pool: &Pool,
    start: &Start,
    template: TemplateRef,
) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut made = Made::default();
    let result = steps(rec, pool, start, &template, &mut made, t0).await;
    if let Err(e) = &result {
        if !matches!(e, Error::VmidTaken { .. }) {
            tracing::warn!(pool = %pool.name, vmid = start.vmid, runner = %start.runner_name, error = %e, "rolling back");
        }
        rollback(rec, pool, start, &made).await;
    }
    result
}

fn ids(node: &str, vmid: u32) -> Result<(NodeName, VmId), Error> {
    Ok((NodeName::new(node)?, VmId::new(vmid)?))
}

async fn steps(
    rec: &Reconciler,
    pool: &Pool,
    start: &Start,
    template: &TemplateRef,
    made: &mut Made,
    t0: Instant,
) -> Result<(), Error> {
    let cancel = rec.shutdown_token();
    let (node, vmid) = ids(&start.node, start.vmid)?;
    let (tpl_node, tpl_vmid) = ids(&template.node, template.vmid)?;
    let name = start.runner_name.as_str();

    // 0. a render error would repeat on every VM: find it before anything is cloned or minted
    crate::render::preflight(&rec.cfg, pool, name)?;

    // 1. credential ∥ clone
    let description = marks::description_marker_of(
        Some(rec.cfg.instance()),
        &pool.name,
        name,
        start.created_unix,
        &details(rec, start),
    );
    let mut clone = CloneRequest::new(vmid);
    clone.name = Some(name.to_owned());
    clone.description = Some(description);
    if pool.full_clone {
        clone.full = Some(true);
        clone.storage.clone_from(&pool.clone_storage);
    }
    if tpl_node != node {
        clone.target = Some(node.clone());
    }
    clone.pool.clone_from(&pool.pve_pool);
    let clone_started = Instant::now();
    let (minted, cloned) = tokio::join!(
        mint(rec, pool, name),
        clone_and_wait(rec, &tpl_node, tpl_vmid, &clone)
    );
    // Record what exists before looking at errors, so the rollback removes exactly that.
    made.vm = cloned.is_ok();
    if let Ok(m) = &minted {
        made.runner_id = m.runner_id;
    }
    let minted = minted?;
    cloned?;
    let clone_ms = clone_started.elapsed().as_millis() as u64;
    tracing::info!(pool = %pool.name, vmid = start.vmid, node = %start.node, runner = %name, clone_ms, "VM cloned");
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }

    // 2. configure: tags (+ the ready mark and cicustom in snippet mode: the VM is complete once started)
    let spec = crate::render::spec(&rec.cfg, pool, name, minted.credential);
    let mut tags = managed_tags(rec, pool);
    let mut update = ConfigUpdate::default();
    if pool.injection == Injection::Snippet {
        let user_data = crate::render::user_data(&rec.cfg, pool, &spec)?;
        rec.cfg
            .snippets
            .write(name, &user_data.into_secret())
            .await
            .map_err(|source| Error::Snippet {
                path: rec.cfg.snippets.dir().join(name).display().to_string(),
                source,
            })?;
        made.snippet = true;
        update.cicustom = Some(crate::snippets::SnippetStore::cicustom(&pool.storage, name));
        tags.push(marks::READY_TAG.to_owned());
    }
    update.tags = Some(Tags::from_tags(tags.iter().map(String::as_str))?);
    retry(|| rec.pve.update_config(&node, vmid, &update)).await?;

    // 3. start
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let start_began = Instant::now();
    made.started = true;
    let started = match retry(|| rec.pve.start(&node, vmid)).await {
        Ok(upid) => rec
            .tasks
            .wait(&upid, rec.tuning.task_deadline)
            .await
            .map(|_| ())
            .map_err(Error::from),
        Err(e) => Err(e),
    };
    // A start whose answer was lost (e.g. 596 from a proxied node) may have happened: its retry then fails,
    // as a request or as a task ("VM N already running"). Ask the VM before declaring failure — rolling back
    // a running VM would kill the job its runner may already have taken.
    if let Err(e) = started {
        match rec.pve.vm_status(&node, vmid).await {
            Ok(status) if status.is_running() => {
                tracing::debug!(vmid = start.vmid, error = %e, "start reported an error but the VM runs");
            }
            _ => return Err(e),
        }
    }
    let start_ms = start_began.elapsed().as_millis() as u64;
    tracing::info!(pool = %pool.name, vmid = start.vmid, node = %start.node, runner = %name, start_ms, "VM started");
    rec.metrics.vm_started(&pool.name, name, clone_ms, start_ms);

    // 4. inject
    match pool.injection {
        Injection::Snippet => {
            // PVE built the cloud-init drive during the start: the secret leaves host storage now.
            if let Err(e) = rec.cfg.snippets.remove(name).await {
                tracing::warn!(runner = %name, error = %e, "could not delete the snippet after start");
            } else {
                made.snippet = false;
            }
        }
        Injection::Agent => {
            let boot_began = Instant::now();
            wait_for_agent(rec, pool, &node, vmid).await?;
            tracing::info!(
                pool = %pool.name, vmid = start.vmid, node = %start.node, runner = %name,
                agent_wait_ms = boot_began.elapsed().as_millis() as u64, "guest agent answers"
            );
            for file in crate::render::agent_files(&spec)? {
                retry(|| {
                    rec.pve
                        .agent_file_write(&node, vmid, &file.path, &file.content)
                })
                .await?;
            }
            // The credential is in the guest: from here on the runner may take a job at any moment, so a
            // failure to set the ready mark must not roll the VM back (that would kill the job). An owned
            // VM whose runner is online counts as idle without the mark.
            let mut ready = managed_tags(rec, pool);
            ready.push(marks::READY_TAG.to_owned());
            let update = ConfigUpdate {
                tags: Some(Tags::from_tags(ready.iter().map(String::as_str))?),
                ..ConfigUpdate::default()
            };
            if let Err(e) = retry(|| rec.pve.update_config(&node, vmid, &update)).await {
                tracing::warn!(vmid = start.vmid, error = %e, "could not set the ready mark after injecting the credential");
            }
        }
    }
    tracing::info!(
        pool = %pool.name, vmid = start.vmid, node = %start.node, runner = %name, job = ?start.for_job,
        clone_ms, start_ms, total_ms = t0.elapsed().as_millis() as u64, injection = ?pool.injection,
        "runner VM ready (credential handed over)"
    );
    Ok(())
}

/// The tags that make a VM ours: managed, its pool, this dispatcher instance.
fn managed_tags(rec: &Reconciler, pool: &Pool) -> Vec<String> {
    let mut tags = marks::managed_tags(&pool.name);
    tags.push(marks::instance_tag(rec.cfg.instance()));
    tags
}

/// Free text after the marker line: what the VM was made for.
fn details(rec: &Reconciler, start: &Start) -> String {
    let mut d = format!("Ephemeral GitHub Actions runner for {}", rec.cfg.runner_url);
    if let Some(job) = start.for_job {
        d.push_str(&format!("\njob={job}"));
    }
    d.push_str(&format!("\ncreated={}", start.created_unix));
    d
}

async fn mint(rec: &Reconciler, pool: &Pool, name: &str) -> Result<Minted, Error> {
    if rec.cfg.uses_registration_token(&pool.name) {
        // One token per VM, never cached: a token can register any number of runners for an hour, so a
        // token shared between VMs would let one job's code register runners with another VM's token.
        let token = rec.gh.registration_token().await?.token;
        return Ok(Minted {
            credential: Credential::RegistrationToken(token),
            runner_id: None,
        });
    }
    // The labels are all a JIT runner gets: `self-hosted` (implicit in our matching, as in GitHub's) must be
    // among them, as in GitHub's own example request.
    let mut labels = pool.labels.clone();
    if !labels.iter().any(|l| l.eq_ignore_ascii_case("self-hosted")) {
        labels.insert(0, "self-hosted".to_owned());
    }
    let request = JitRequest {
        name: name.to_owned(),
        labels,
        runner_group_id: pool.runner_group_id,
        work_folder: "_work".to_owned(),
    };
    let jit = rec.gh.generate_jit_config(&request).await?;
    Ok(Minted {
        credential: Credential::Jit(jit.encoded_jit_config),
        runner_id: Some(jit.runner.id),
    })
}

/// Clones and waits for the clone task, holding a clone slot of the template's node. A clone task that
/// failed on a lock timeout (too many clones of one template at once) is issued again after a pause.
async fn clone_and_wait(
    rec: &Reconciler,
    node: &NodeName,
    template: VmId,
    req: &CloneRequest,
) -> Result<(), Error> {
    let _slot = rec.permits(node.as_str()).await;
    let vmid = req.newid.get();
    let taken = |e: &proxmox_api::Error| Error::VmidTaken {
        vmid,
        message: e.to_string(),
    };
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let upid = match retry(|| rec.pve.clone_vm(node, template, req)).await {
            Ok(upid) => upid,
            // On a retry, "already exists" may be our own clone whose first answer was lost.
            Err(Error::Proxmox(e))
                if e.is_vmid_taken() && attempt_was_ours(rec, node, req).await =>
            {
                return wait_unlocked(rec, node, req).await;
            }
            Err(Error::Proxmox(e)) if e.is_vmid_taken() => return Err(taken(&e)),
            Err(e) => return Err(e),
        };
        match rec.tasks.wait(&upid, rec.tuning.clone_deadline).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_vmid_taken() => return Err(taken(&e)),
            Err(e) if e.is_lock_timeout() && attempt < 4 => {
                let pause = crate::reconciler::backoff_delay(
                    Duration::from_millis(300),
                    Duration::from_secs(5),
                    attempt,
                );
                tracing::debug!(vmid, attempt, error = %e, "clone task hit a lock timeout; cloning again");
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the VM holding the clone's id is the one this clone request creates: it carries our marker
/// naming this very runner (a retried clone whose first answer was lost).
async fn attempt_was_ours(rec: &Reconciler, node: &NodeName, req: &CloneRequest) -> bool {
    let on = req.target.as_ref().unwrap_or(node);
    match rec.pve.vm_config(on, req.newid).await {
        Ok(cfg) => {
            let marker = cfg
                .description
                .as_deref()
                .and_then(marks::parse_description_marker);
            marker.is_some_and(|m| Some(m.runner.as_str()) == req.name.as_deref())
        }
        Err(_) => false,
    }
}

/// Waits (polling `status/current`) until our clone's lock is released, within the clone deadline.
async fn wait_unlocked(rec: &Reconciler, node: &NodeName, req: &CloneRequest) -> Result<(), Error> {
    let on = req.target.as_ref().unwrap_or(node);
    let deadline = Instant::now() + rec.tuning.clone_deadline;
    let mut pause = Duration::from_millis(200);
    loop {
        let status = rec.pve.vm_status(on, req.newid).await?;
        if status.lock.as_deref().is_none_or(str::is_empty) {
            tracing::info!(
                vmid = req.newid.get(),
                "clone answer was lost but the clone is ours and finished"
            );
            return Ok(());
        }
        if Instant::now() + pause > deadline {
            return Err(Error::VmidTaken {
                vmid: req.newid.get(),
                message: "our own clone is still locked past the deadline".to_owned(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Retries lock timeouts and transient errors of one call (jittered back-off, bounded).
async fn retry<T, F, Fut>(op: F) -> Result<T, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, proxmox_api::Error>>,
{
    proxmox_api::retry::retry(&proxmox_api::retry::RetryPolicy::default(), op)
        .await
        .map_err(Error::from)
}

async fn wait_for_agent(
    rec: &Reconciler,
    pool: &Pool,
    node: &NodeName,
    vmid: VmId,
) -> Result<(), Error> {
    let began = Instant::now();
    let deadline = began + pool.boot_timeout;
    let (mut pause, max_pause) = rec.tuning.agent_poll;
    let cancel = rec.shutdown_token();
    // No guest of this pool answered sooner than its fastest boot so far: the first ping waits for most of
    // that (fewer pings through pveproxy), the rest poll as before.
    let fastest = rec.state().agent_boot.get(&pool.name).copied();
    if let Some(fastest) = fastest {
        tokio::select! {
            () = cancel.cancelled() => return Err(Error::Cancelled),
            () = tokio::time::sleep(fastest.mul_f64(0.8)) => {},
        }
    }
    loop {
        match rec.pve.agent_ping(node, vmid).await {
            Ok(()) => {
                let took = began.elapsed();
                let mut st = rec.state();
                let best = st.agent_boot.entry(pool.name.clone()).or_insert(took);
                *best = (*best).min(took);
                return Ok(());
            }
            Err(e) => tracing::trace!(vmid = vmid.get(), error = %e, "agent not up yet"),
        }
        if Instant::now() + pause > deadline {
            return Err(Error::AgentTimeout {
                vmid: vmid.get(),
                seconds: pool.boot_timeout.as_secs(),
            });
        }
        tokio::select! {
            () = cancel.cancelled() => return Err(Error::Cancelled),
            () = tokio::time::sleep(pause) => {},
        }
        pause = (pause * 2).min(max_pause);
    }
}

async fn rollback(rec: &Reconciler, pool: &Pool, start: &Start, made: &Made) {
    let name = start.runner_name.as_str();
    if made.vm
        && let Ok((node, vmid)) = ids(&start.node, start.vmid)
    {
        if made.started {
            match rec.pve.stop(&node, vmid).await {
                Ok(upid) => {
                    let _ = rec.tasks.wait(&upid, rec.tuning.task_deadline).await;
                }
                Err(e) => {
                    tracing::debug!(vmid = start.vmid, error = %e, "rollback: stop failed")
                }
            }
        }
        let deleted = match retry(|| rec.pve.delete_vm(&node, vmid, true, true)).await {
            Ok(upid) => rec
                .tasks
                .wait(&upid, rec.tuning.task_deadline)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            tracing::error!(pool = %pool.name, vmid = start.vmid, error = %e, "rollback: could not delete the half-made VM; cleanup will retry");
        }
    }
    if made.snippet
        && let Err(e) = rec.cfg.snippets.remove(name).await
    {
        tracing::error!(runner = %name, error = %e, "rollback: could not delete the snippet");
    }
    if let Some(id) = made.runner_id {
        match rec.gh.delete_runner(id).await {
            Ok(()) | Err(github_runners::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(runner = %name, error = %e, "rollback: could not remove the registration; cleanup will retry")
            }
        }
    }
}
