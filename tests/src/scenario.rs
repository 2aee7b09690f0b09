//! The end-to-end scenario harness: the real `dispatcher` binary, as a process, against the simulated
//! Proxmox VE cluster and GitHub. Every scenario checks the same invariants at the end (see
//! [`Scenario::finish`]): every matchable job completed, unmatched jobs got no VM, caps held (sampled on every
//! VM event), no runner VM or registration left after the drain, foreign VMs and templates untouched, no
//! secret in the dispatcher's output, and the process still running until it was stopped.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::dispatcher::{DispatcherProcess, leaked, secrets_of, sim_env};
use crate::{JobSpec, JobStatus, Sim, SimConfig, VmEventKind};

/// The default repository of the scenarios.
pub const REPO: &str = "NREL/EnergyPlus";
/// The default runner name prefix.
pub const PREFIX: &str = "gh-runner-";

/// Scenarios share the 2 cores with everything else: run them one at a time (within one test binary).
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One end-to-end run: a simulator, the dispatcher process(es) and the checks at the end.
#[derive(Debug)]
pub struct Scenario {
    pub sim: Sim,
    pub cfg: SimConfig,
    pub env: Vec<(String, String)>,
    pub proc: Option<DispatcherProcess>,
    pub outputs: Vec<String>,
    pub dir: tempfile::TempDir,
    /// Check caps on powered-on VMs only (see [`max_running`]) instead of every created VM.
    pub caps_on_running_only: bool,
    /// VM names that are not ours although they carry the prefix.
    pub foreign_names: Vec<String>,
}

impl Scenario {
    pub async fn start(cfg: SimConfig) -> Self {
        let sim = Sim::start(cfg.clone())
            .await
            .unwrap_or_else(|e| panic!("sim: {e}"));
        let env = sim_env(&sim, &cfg);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        Self {
            sim,
            cfg,
            env,
            proc: None,
            outputs: Vec::new(),
            dir,
            caps_on_running_only: false,
            foreign_names: Vec::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    pub fn pools_file(&mut self, json: &str) {
        let path = self.dir.path().join("runner-pools.json");
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{e}"));
        self.set("RUNNER_POOLS_CONFIG", &path.display().to_string());
    }

    pub fn launch(&mut self) {
        let p = DispatcherProcess::spawn(&["run"], &self.env).unwrap_or_else(|e| panic!("{e}"));
        self.proc = Some(p);
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(
                p.exited().is_none(),
                "dispatcher exited on its own:\n{}",
                p.output()
            );
            p.kill();
            self.outputs.push(p.output());
        }
    }

    pub fn assert_alive(&mut self) {
        if let Some(p) = self.proc.as_mut()
            && let Some(status) = p.exited()
        {
            panic!("dispatcher exited on its own ({status}):\n{}", p.output());
        }
    }

    pub async fn wait(&mut self, what: &str, timeout: Duration, cond: impl Fn(&Sim) -> bool) {
        let ok = self.sim.wait_until(timeout, cond).await;
        self.assert_alive();
        if !ok {
            let out = self
                .proc
                .as_ref()
                .map(DispatcherProcess::output)
                .unwrap_or_default();
            let jobs: Vec<_> = self
                .sim
                .github()
                .jobs()
                .iter()
                .map(|j| (j.id, j.status, j.runner_name.clone()))
                .collect();
            let vms: Vec<_> = self
                .sim
                .pve()
                .vms()
                .iter()
                .map(|v| {
                    (
                        v.vmid,
                        v.name.clone(),
                        v.running,
                        v.tags.clone(),
                        v.guest.as_ref().map(|g| g.phase.clone()),
                    )
                })
                .collect();
            let runners: Vec<_> = self
                .sim
                .github()
                .runners()
                .iter()
                .map(|r| format!("{r:?}"))
                .collect();
            panic!(
                "timed out waiting for {what}\njobs: {jobs:?}\nvms: {vms:?}\nrunners: {runners:?}\n--- dispatcher output ---\n{out}"
            );
        }
    }

    /// Waits for every job except `unmatched` to complete, then for the drain (no runner VM, no
    /// registration), stops the dispatcher with SIGTERM and checks the invariants.
    pub async fn finish(
        self,
        unmatched: &[u64],
        caps: &[(&str, usize)],
        protected: &[u32],
    ) -> String {
        self.finish_with(&[PREFIX], unmatched, caps, protected)
            .await
    }

    pub async fn finish_with(
        mut self,
        prefixes: &[&str],
        unmatched: &[u64],
        caps: &[(&str, usize)],
        protected: &[u32],
    ) -> String {
        let prefixes: Vec<String> = prefixes.iter().map(|p| (*p).to_owned()).collect();
        let unmatched: BTreeSet<u64> = unmatched.iter().copied().collect();
        let u = unmatched.clone();
        self.wait(
            "every matchable job to complete",
            Duration::from_secs(90),
            move |s| {
                s.github()
                    .jobs()
                    .iter()
                    .filter(|j| !u.contains(&j.id))
                    .all(|j| j.status == JobStatus::Completed)
            },
        )
        .await;
        for j in self.sim.github().jobs() {
            if !unmatched.contains(&j.id) {
                if j.conclusion.as_deref() != Some("success") {
                    let runner = j.runner_name.clone().unwrap_or_default();
                    let vm: Vec<_> = self
                        .sim
                        .pve()
                        .events()
                        .into_iter()
                        .filter(|e| e.name.as_deref() == Some(runner.as_str()))
                        .map(|e| format!("{:?} {:?}", e.at, e.kind))
                        .collect();
                    let out = self
                        .proc
                        .as_ref()
                        .map(DispatcherProcess::output)
                        .unwrap_or_default();
                    let lines: Vec<&str> = out
                        .lines()
                        .filter(|l| !runner.is_empty() && l.contains(runner.as_str()))
                        .collect();
                    panic!(
                        "job {} ({}) concluded {:?} on runner {runner}\nVM events: {vm:?}\ndispatcher lines:\n{}",
                        j.id,
                        j.name,
                        j.conclusion,
                        lines.join("\n")
                    );
                }
            } else {
                assert_ne!(j.status, JobStatus::Completed, "unmatched job {} ran", j.id);
                assert!(
                    j.runner_name.is_none(),
                    "unmatched job {} got runner {:?}",
                    j.id,
                    j.runner_name
                );
            }
        }
        let pf = prefixes.clone();
        let foreign: BTreeSet<u32> = protected.iter().copied().collect();
        self.wait(
            "the drain (no runner VM, no registration)",
            Duration::from_secs(120),
            move |s| {
                pf.iter().all(|p| {
                    s.pve()
                        .vms_with_prefix(p)
                        .iter()
                        .all(|v| foreign.contains(&v.vmid))
                        && s.github()
                            .runners()
                            .iter()
                            .all(|r| !r.name.starts_with(p.as_str()))
                })
            },
        )
        .await;
        for (prefix, cap) in caps {
            let ours =
                |n: &str| n.starts_with(prefix) && !self.foreign_names.iter().any(|f| f == n);
            let max = if self.caps_on_running_only {
                max_running(&self.sim, ours)
            } else {
                self.sim.pve().max_concurrent_by(ours, false)
            };
            assert!(
                max <= *cap,
                "pool {prefix}: {max} runner VMs at once, cap {cap}"
            );
        }
        for vmid in protected {
            let touched = self.sim.pve().mutations_on(*vmid);
            assert!(
                touched.is_empty(),
                "VM {vmid} is not ours but was changed: {touched:?}"
            );
            assert!(
                self.sim.pve().vm(*vmid).is_some(),
                "VM {vmid} is not ours but is gone"
            );
        }
        for t in &self.cfg.pve.templates {
            assert!(
                self.sim.pve().mutations_on(t.vmid).is_empty(),
                "template {} was changed",
                t.vmid
            );
        }
        if let Some(mut p) = self.proc.take() {
            assert!(
                p.exited().is_none(),
                "dispatcher exited on its own:\n{}",
                p.output()
            );
            let status = p.terminate(Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| s.success()),
                "SIGTERM: exit {status:?}\n{}",
                p.output()
            );
            self.outputs.push(p.output());
        }
        let all = self.outputs.join("\n");
        let secrets = secrets_of(&self.sim, &self.cfg);
        assert!(!secrets.is_empty());
        let leaks = leaked(&all, &secrets);
        assert!(
            leaks.is_empty(),
            "secrets in the dispatcher's output: {leaks:?}"
        );
        self.sim.shutdown().await;
        all
    }
}

/// Peak number of VMs whose name satisfies `pred` that were powered on at the same time (a crash can leave
/// never-started half-made clones behind; they hold no CPU or memory and are not counted by the caps).
pub fn max_running(sim: &Sim, pred: impl Fn(&str) -> bool) -> usize {
    let mut running: BTreeSet<u32> = BTreeSet::new();
    let mut peak = 0;
    for e in sim.pve().events() {
        match e.kind {
            VmEventKind::Started if e.name.as_deref().is_some_and(&pred) => {
                running.insert(e.vmid);
            }
            VmEventKind::Stopped | VmEventKind::Destroyed => {
                running.remove(&e.vmid);
            }
            _ => {}
        }
        peak = peak.max(running.len());
    }
    peak
}

/// `n` jobs named `job-<i>` with these labels.
pub fn linux(n: usize, labels: &[&str]) -> Vec<JobSpec> {
    (0..n)
        .map(|i| JobSpec::new(&format!("job-{i}"), labels))
        .collect()
}
