//! The read-only subcommands: `plan`, `status`, `check`, `render` (DESIGN §2.1). None of them changes
//! anything in Proxmox or GitHub (`check` mints a registration token, which registers nothing).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;

use pool_scheduler::{Injection, Plan};

use crate::config::RuntimeConfig;
use crate::observe::Observation;
use crate::pool_gate::HeldPool;
use crate::reconciler::Reconciler;

/// `dispatcher plan`: the decision table per pool and every action a pass would take.
pub async fn plan(rec: &Reconciler) -> ExitCode {
    match rec.observe_and_plan().await {
        Ok((_, plan)) => {
            print!("{}", format_plan(&plan));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dispatcher: cannot observe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Renders a plan as text.
pub fn format_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:>6} {:>8} {:>7} {:>5} {:>5} {:>7} {:>5} {:>5} {:>8}  blocked by",
        "POOL",
        "DEMAND",
        "CREATING",
        "BOOTING",
        "IDLE",
        "BUSY",
        "STOPPED",
        "STALE",
        "CAP",
        "TO START"
    );
    for p in &plan.pools {
        let cap = if p.cap == 0 {
            "-".to_owned()
        } else {
            p.cap.to_string()
        };
        let blocked = p
            .blocked_by
            .as_ref()
            .map_or_else(String::new, |b| format!("{b:?}"));
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>8} {:>7} {:>5} {:>5} {:>7} {:>5} {:>5} {:>8}  {blocked}",
            p.pool,
            p.demand,
            p.creating,
            p.booting,
            p.idle,
            p.busy,
            p.stopped,
            p.stale,
            cap,
            p.to_start
        );
    }
    let _ = writeln!(out);
    for s in &plan.starts {
        let job = s
            .for_job
            .map_or_else(String::new, |j| format!(" for job {j}"));
        let _ = writeln!(
            out,
            "start   pool={} node={} vmid={} runner={}{job}",
            s.pool, s.node, s.vmid, s.runner_name
        );
    }
    for d in &plan.deletes {
        let _ = writeln!(
            out,
            "delete  pool={} node={} vmid={} name={} reason={}",
            d.pool, d.node, d.vmid, d.name, d.reason
        );
    }
    for d in &plan.deregister {
        let _ = writeln!(
            out,
            "deregister runner={} id={} reason={:?}",
            d.name, d.runner_id, d.reason
        );
    }
    for u in &plan.unmatched {
        let _ = writeln!(out, "unmatched job={} {}", u.job_id, u.reason);
    }
    if plan.starts.is_empty() && plan.deletes.is_empty() && plan.deregister.is_empty() {
        let _ = writeln!(out, "nothing to do");
    }
    out
}

/// `dispatcher status`: pools, their VMs, caps and queued demand.
pub async fn status(rec: &Reconciler) -> ExitCode {
    match rec.observe_and_plan().await {
        Ok((observation, plan)) => {
            let held = pool_problems(rec, &observation);
            print!(
                "{}",
                format_status(&rec.cfg, &observation, &plan, &held, rec.clock.now_unix())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dispatcher: cannot observe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why each pool cannot provision now: the holds of this process's reconciler (a failure that repeats on
/// every attempt), plus what one observation shows on its own (a missing template, a render error).
pub fn pool_problems(rec: &Reconciler, observation: &Observation) -> Vec<HeldPool> {
    let mut out = rec.held_pools();
    for pool in rec.cfg.pools.pools() {
        if out.iter().any(|h| h.pool == pool.name) {
            continue;
        }
        let problem = if observation.templates.contains_key(&pool.template) {
            crate::render::preflight(&rec.cfg, pool, &pool.runner_name_prefix).err()
        } else {
            Some(crate::error::Error::TemplateNotFound {
                pool: pool.name.clone(),
                template: pool.template.clone(),
            })
        };
        if let Some(e) = problem {
            out.push(HeldPool {
                pool: pool.name.clone(),
                reason: e.hold_reason().unwrap_or("error"),
                message: crate::pool_gate::one_line(&e.to_string()),
            });
        }
    }
    out
}

/// Renders the status table.
pub fn format_status(
    cfg: &RuntimeConfig,
    observation: &Observation,
    plan: &Plan,
    held: &[HeldPool],
    now: u64,
) -> String {
    let owned = observation.owned_vms(&cfg.pools, now);
    let mut out = String::new();
    for numbers in &plan.pools {
        let Some(pool_idx) = cfg.pools.pool_index(&numbers.pool) else {
            continue;
        };
        let pool = &cfg.pools.pools()[pool_idx];
        let cap = if numbers.cap == 0 {
            "unlimited".to_owned()
        } else {
            numbers.cap.to_string()
        };
        let _ = writeln!(
            out,
            "pool {} (template {}, vmids {}-{}, cap {cap}, min_idle {}): {} queued job(s)",
            pool.name, pool.template, pool.vmid_start, pool.vmid_end, pool.min_idle, numbers.demand
        );
        for h in held.iter().filter(|h| h.pool == pool.name) {
            let _ = writeln!(out, "  HELD ({}): {}", h.reason, h.message);
        }
        let _ = writeln!(
            out,
            "  {:>6}  {:<10} {:<16} {:>8}  RUNNER",
            "VMID", "NODE", "PHASE", "AGE"
        );
        let mut any = false;
        for (vm, owned, phase) in &owned {
            if owned.pool != pool_idx {
                continue;
            }
            any = true;
            let age = owned
                .created_unix
                .map_or_else(|| "?".to_owned(), |c| format_age(now.saturating_sub(c)));
            let _ = writeln!(
                out,
                "  {:>6}  {:<10} {:<16} {:>8}  {}",
                vm.vmid,
                vm.node,
                format!("{phase:?}").to_lowercase(),
                age,
                owned.runner_name.unwrap_or("-")
            );
        }
        if !any {
            let _ = writeln!(out, "  (no runner VMs)");
        }
    }
    let unmatched = plan.unmatched.len();
    if unmatched > 0 {
        let _ = writeln!(
            out,
            "{unmatched} queued job(s) match no pool (see `dispatcher plan`)"
        );
    }
    out
}

fn format_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `dispatcher render --pool NAME`: the user-data or agent payload a VM of the pool would get, redacted.
pub fn render(cfg: &RuntimeConfig, pool: Option<&str>) -> ExitCode {
    let pools = cfg.pools.pools();
    let chosen = match pool {
        Some(name) => cfg.pools.pool(name),
        None if pools.len() == 1 => pools.first(),
        None => None,
    };
    let Some(pool) = chosen else {
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        eprintln!(
            "dispatcher: render: choose a pool with --pool (one of: {})",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    let runner_name =
        pool_scheduler::marks::runner_name(&pool.runner_name_prefix, pool.vmid_start, 0);
    let spec = crate::render::spec(
        cfg,
        pool,
        &runner_name,
        crate::render::placeholder_credential(cfg, pool),
    );
    let result = match pool.injection {
        Injection::Snippet => crate::render::user_data(cfg, pool, &spec).map(|u| {
            format!(
                "# snippet {} (cicustom {})\n{}",
                cfg.snippets.dir().display(),
                crate::snippets::SnippetStore::cicustom(&pool.storage, &spec.runner_name),
                u.redacted()
            )
        }),
        Injection::Agent => crate::render::agent_files(&spec).map(|files| {
            files
                .iter()
                .map(|f| {
                    format!(
                        "# agent/file-write {}\n<redacted: {} characters>\n",
                        f.path,
                        secrecy::ExposeSecret::expose_secret(&f.content).len()
                    )
                })
                .collect::<String>()
        }),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dispatcher: render: pool {:?}: {e}", pool.name);
            ExitCode::FAILURE
        }
    }
}

/// `dispatcher check`: one line per check, non-zero on any failure.
pub async fn check(rec: &Reconciler) -> ExitCode {
    let report = crate::commands::doctor(rec).await;
    for (ok, line) in &report {
        println!("{} {line}", if *ok { "ok  " } else { "FAIL" });
    }
    if report.iter().all(|(ok, _)| *ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Privileges the dispatcher needs on `/vms` (clone target, config, power, delete) besides the template.
const VM_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.Options",
    "VM.Config.Cloudinit",
    "VM.PowerMgmt",
];

/// The token against the least-privilege recipe of PROXMOX_SETUP.md for these pools: what it lacks and what
/// it holds beyond the recipe, one line per ACL path (both fail the check).
async fn least_privilege(
    rec: &Reconciler,
    pve_major: u8,
    pve_pool: &str,
) -> Result<Vec<(bool, String)>, crate::error::Error> {
    use crate::privileges::{Scope, Uses, beyond_recipe, clone_needs, missing};
    let cfg = &rec.cfg;
    let pools = cfg.pools.pools();
    let guests = rec.pve.cluster_guests().await?;
    let mut scope = Scope {
        pve_major,
        uses: Uses {
            snippet: cfg.any_snippet_pool(),
            agent: pools.iter().any(|p| p.injection == Injection::Agent),
        },
        pool: pve_pool.to_owned(),
        snippet_storages: if cfg.any_snippet_pool() {
            storages(cfg)
        } else {
            Vec::new()
        },
        ..Scope::default()
    };
    for pool in pools {
        for t in guests
            .iter()
            .filter(|g| g.template && g.name.as_deref() == Some(pool.template.as_str()))
        {
            scope.templates.push(t.vmid.get());
            let tpl = rec.pve.vm_config(&t.node, t.vmid).await?;
            let needs = clone_needs(
                &tpl,
                pool.full_clone
                    .then_some(pool.clone_storage.as_deref())
                    .flatten(),
            );
            scope.disk_storages.extend(needs.disk_storages);
            scope.bridges.extend(needs.bridges);
        }
    }
    scope.templates.sort_unstable();
    scope.templates.dedup();
    for list in [&mut scope.disk_storages, &mut scope.bridges] {
        list.sort();
        list.dedup();
    }
    scope.pool_members = guests
        .iter()
        .filter(|g| !g.template && cfg.pools.pool_for_vmid(g.vmid.get()).is_some())
        .map(|g| g.vmid.get())
        .collect();
    let perms = rec.pve.permissions(None).await?;
    let mut out: Vec<(bool, String)> = missing(&perms, &scope)
        .into_iter()
        .map(|l| (false, format!("token {l}")))
        .collect();
    out.extend(
        beyond_recipe(&perms, &scope)
            .into_iter()
            .map(|l| (false, format!("token {l}"))),
    );
    if out.is_empty() {
        out.push((
            true,
            format!(
                "token holds exactly the least-privilege recipe (pool {pve_pool}, PVE {pve_major})"
            ),
        ));
    }
    Ok(out)
}

/// Runs every check; `(passed, line)` each.
pub async fn doctor(rec: &Reconciler) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let cfg = &rec.cfg;
    out.push((
        true,
        format!("configuration valid: {} pool(s)", cfg.pools.pools().len()),
    ));
    let pve_major = match rec.pve.version().await {
        Ok(v) => {
            out.push((true, format!("proxmox reachable: version {}", v.version)));
            crate::privileges::pve_major(&v.version).unwrap_or(9)
        }
        Err(e) => {
            out.push((false, format!("proxmox unreachable: {e}")));
            return out;
        }
    };
    let pve_pools: BTreeSet<&str> = cfg
        .pools
        .pools()
        .iter()
        .filter_map(|p| p.pve_pool.as_deref())
        .collect();
    if pve_pools.len() == 1 && cfg.pools.pools().iter().all(|p| p.pve_pool.is_some()) {
        // The least-privilege layout (PROXMOX_SETUP.md): judge the token against the recipe exactly.
        match least_privilege(
            rec,
            pve_major,
            pve_pools.iter().next().copied().unwrap_or_default(),
        )
        .await
        {
            Ok(lines) => out.extend(lines),
            Err(e) => out.push((
                false,
                format!("cannot evaluate the least-privilege recipe: {e}"),
            )),
        }
    } else {
        out.push((
            true,
            "warning: no single pools-file `pve_pool`: the token needs its role on /vms (every VM of the \
             cluster); see PROXMOX_SETUP.md for the least-privilege recipe"
                .to_owned(),
        ));
    }
    match rec.pve.permissions(None).await {
        Ok(perms)
            if !(pve_pools.len() == 1
                && cfg.pools.pools().iter().all(|p| p.pve_pool.is_some())) =>
        {
            let mut missing: Vec<&str> = perms.missing("/vms", VM_PRIVS);
            if cfg
                .pools
                .pools()
                .iter()
                .any(|p| p.injection == Injection::Agent)
            {
                let pve9 =
                    perms.missing("/vms", &["VM.GuestAgent.Audit", "VM.GuestAgent.FileWrite"]);
                let pve8 = perms.missing("/vms", &["VM.Monitor"]);
                if !pve9.is_empty() && !pve8.is_empty() {
                    missing.extend(pve9);
                }
            }
            for storage in storages(cfg) {
                let path = format!("/storage/{storage}");
                for p in perms.missing(&path, &["Datastore.AllocateSpace", "Datastore.Audit"]) {
                    missing.push(p);
                    out.push((false, format!("token lacks {p} on {path}")));
                }
            }
            missing.retain(|p| !p.starts_with("Datastore"));
            if missing.is_empty() {
                out.push((true, "token privileges sufficient on /vms".to_owned()));
            } else {
                out.push((
                    false,
                    format!("token lacks on /vms: {}", missing.join(", ")),
                ));
            }
        }
        Ok(_) => {}
        Err(e) => out.push((false, format!("cannot read token permissions: {e}"))),
    }
    match rec.pve.cluster_guests().await {
        Ok(guests) => {
            for pool in cfg.pools.pools() {
                let nodes: Vec<&str> = if pool.nodes.is_empty() {
                    vec![pool.node.as_str()]
                } else {
                    pool.nodes.iter().map(String::as_str).collect()
                };
                let found: Vec<_> = guests
                    .iter()
                    .filter(|g| {
                        g.resource_type == "qemu"
                            && g.name.as_deref() == Some(pool.template.as_str())
                    })
                    .collect();
                match found.iter().find(|g| g.template) {
                    Some(t) => {
                        let local = nodes.iter().any(|n| *n == t.node.as_str());
                        out.push((
                            true,
                            format!(
                                "pool {}: template {:?} is VM {} on {}{}",
                                pool.name,
                                pool.template,
                                t.vmid,
                                t.node.as_str(),
                                if local {
                                    ""
                                } else {
                                    " (cloned cross-node: needs shared storage)"
                                }
                            ),
                        ));
                    }
                    None if !found.is_empty() => out.push((
                        false,
                        format!(
                            "pool {}: VM {:?} exists but is not a template",
                            pool.name, pool.template
                        ),
                    )),
                    None => out.push((
                        false,
                        format!("pool {}: template {:?} not found", pool.name, pool.template),
                    )),
                }
                if let Err(e) = crate::render::preflight(cfg, pool, &pool.runner_name_prefix) {
                    out.push((false, format!("pool {}: cannot render: {e}", pool.name)));
                }
            }
            // VMs of another dispatcher instance inside our ranges: they are left alone, but two instances
            // serving the same pools double the VMs and compete for ids.
            let mut others: Vec<String> = guests
                .iter()
                .filter(|g| g.resource_type == "qemu" && !g.template)
                .filter(|g| cfg.pools.pool_for_vmid(g.vmid.get()).is_some())
                .filter_map(|g| {
                    let tags: Vec<String> = g.tags.iter().map(str::to_owned).collect();
                    pool_scheduler::marks::tagged_instance(&tags)
                        .filter(|id| *id != cfg.instance())
                        .map(|id| format!("{} (VM {})", id, g.vmid))
                })
                .collect();
            others.sort();
            if others.is_empty() {
                out.push((
                    true,
                    format!(
                        "no other dispatcher instance in our VMID ranges (this one is {:?})",
                        cfg.instance()
                    ),
                ));
            } else {
                out.push((
                    true,
                    format!(
                        "warning: VMs of another dispatcher instance share our VMID ranges (left alone): {}",
                        others.join(", ")
                    ),
                ));
            }
        }
        Err(e) => out.push((false, format!("cannot list cluster VMs: {e}"))),
    }
    if cfg.any_snippet_pool() {
        for storage in storages(cfg) {
            match rec.pve.storage(&storage).await {
                Ok(s) if s.has_content("snippets") => {
                    let problems = crate::privileges::snippet_storage_problems(&s);
                    if problems.is_empty() {
                        out.push((true, format!("storage {storage} is a dedicated snippets storage")));
                    }
                    for p in problems {
                        out.push((false, format!("storage {storage} is unsafe for snippets: {p}")));
                    }
                }
                Ok(_) => out.push((false, format!("storage {storage} lacks the snippets content type (pvesm set {storage} --content …,snippets)"))),
                Err(e) => out.push((false, format!("cannot read storage {storage}: {e}"))),
            }
        }
        match cfg.snippets.probe() {
            Ok(()) => out.push((
                true,
                format!(
                    "snippet folder {} is writable",
                    cfg.snippets.dir().display()
                ),
            )),
            Err(e) => out.push((
                false,
                format!(
                    "snippet folder {} is not writable: {e}",
                    cfg.snippets.dir().display()
                ),
            )),
        }
    }
    match rec.gh.list_runners().await {
        Ok(r) => out.push((
            true,
            format!("github: can list runners ({} registered)", r.len()),
        )),
        Err(e) => out.push((false, format!("github: cannot list runners: {e}"))),
    }
    match rec.gh.registration_token().await {
        Ok(_) => out.push((true, "github: can mint runner credentials".to_owned())),
        Err(e) => out.push((
            false,
            format!("github: cannot mint runner credentials: {e}"),
        )),
    }
    for pool in cfg.pools.pools() {
        let hosted_only = matches!(
            pool_scheduler::match_job(&cfg.pools, &pool.labels),
            pool_scheduler::MatchResult::NotOurs
        );
        if pool.labels.len() > 100 || hosted_only {
            out.push((false, format!("pool {}: labels {:?} cannot be requested by a job (GitHub allows 1–100 self-hosted labels)", pool.name, pool.labels)));
        } else {
            out.push((
                true,
                format!(
                    "pool {}: jobs with runs-on ⊆ [self-hosted, {}] reach it",
                    pool.name,
                    pool.labels.join(", ")
                ),
            ));
        }
    }
    out
}

fn storages(cfg: &RuntimeConfig) -> Vec<String> {
    let mut s: Vec<String> = cfg
        .pools
        .pools()
        .iter()
        .map(|p| p.storage.clone())
        .collect();
    s.sort();
    s.dedup();
    s
}
