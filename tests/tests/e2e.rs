//! End-to-end scenarios: the real `dispatcher` binary, as a process, against the simulated Proxmox VE
//! cluster and GitHub. Every scenario checks the same invariants at the end (see [`Scenario::finish`]):
//! every matchable job completed, unmatched jobs got no VM, caps held (sampled continuously by the
//! simulator), no runner VM or registration left after the drain, foreign VMs and templates untouched, no
//! secret in the dispatcher's output, and the process still running until we stopped it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tests::dispatcher::{DispatcherProcess, leaked, secrets_of, sim_env};
use tests::{JobSpec, JobStatus, Sim, SimConfig, TemplateSpec, VmSpec};

const REPO: &str = "NREL/EnergyPlus";
const PREFIX: &str = "gh-runner-";

/// Scenarios share the 2 cores with everything else: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Scenario {
    sim: Sim,
    cfg: SimConfig,
    env: Vec<(String, String)>,
    proc: Option<DispatcherProcess>,
    outputs: Vec<String>,
    dir: tempfile::TempDir,
}

impl Scenario {
    async fn start(cfg: SimConfig) -> Self {
        let sim = Sim::start(cfg.clone()).await.unwrap_or_else(|e| panic!("sim: {e}"));
        let env = sim_env(&sim, &cfg);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        Self { sim, cfg, env, proc: None, outputs: Vec::new(), dir }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    fn pools_file(&mut self, json: &str) {
        let path = self.dir.path().join("runner-pools.json");
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{e}"));
        self.set("RUNNER_POOLS_CONFIG", &path.display().to_string());
    }

    fn launch(&mut self) {
        let p = DispatcherProcess::spawn(&["run"], &self.env).unwrap_or_else(|e| panic!("{e}"));
        self.proc = Some(p);
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(p.exited().is_none(), "dispatcher exited on its own:\n{}", p.output());
            p.kill();
            self.outputs.push(p.output());
        }
    }

    fn assert_alive(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            if let Some(status) = p.exited() {
                panic!("dispatcher exited on its own ({status}):\n{}", p.output());
            }
        }
    }

    async fn wait(&mut self, what: &str, timeout: Duration, cond: impl Fn(&Sim) -> bool) {
        let ok = self.sim.wait_until(timeout, cond).await;
        self.assert_alive();
        if !ok {
            let out = self.proc.as_ref().map(DispatcherProcess::output).unwrap_or_default();
            let jobs: Vec<_> = self.sim.github().jobs().iter().map(|j| (j.id, j.status, j.runner_name.clone())).collect();
            let vms: Vec<_> = self.sim.pve().vms().iter().map(|v| (v.vmid, v.name.clone(), v.running, v.tags.clone())).collect();
            panic!("timed out waiting for {what}\njobs: {jobs:?}\nvms: {vms:?}\n--- dispatcher output ---\n{out}");
        }
    }

    /// Waits for every job except `unmatched` to complete, then for the drain (no runner VM, no
    /// registration), stops the dispatcher with SIGTERM and checks the invariants.
    async fn finish(mut self, unmatched: &[u64], caps: &[(&str, usize)], protected: &[u32]) -> String {
        let unmatched: BTreeSet<u64> = unmatched.iter().copied().collect();
        let u = unmatched.clone();
        self.wait("every matchable job to complete", Duration::from_secs(90), move |s| {
            s.github().jobs().iter().filter(|j| !u.contains(&j.id)).all(|j| j.status == JobStatus::Completed)
        })
        .await;
        for j in self.sim.github().jobs() {
            if !unmatched.contains(&j.id) {
                assert_eq!(j.conclusion.as_deref(), Some("success"), "job {} ({}) concluded {:?}", j.id, j.name, j.conclusion);
            } else {
                assert_ne!(j.status, JobStatus::Completed, "unmatched job {} ran", j.id);
                assert!(j.runner_name.is_none(), "unmatched job {} got runner {:?}", j.id, j.runner_name);
            }
        }
        self.wait("the drain (no runner VM, no registration)", Duration::from_secs(60), |s| {
            s.pve().vms_with_prefix(PREFIX).is_empty() && s.github().runners().iter().all(|r| !r.name.starts_with(PREFIX))
        })
        .await;
        for (prefix, cap) in caps {
            let max = self.sim.pve().max_concurrent(prefix);
            assert!(max <= *cap, "pool {prefix}: {max} runner VMs at once, cap {cap}");
        }
        for vmid in protected {
            let touched = self.sim.pve().mutations_on(*vmid);
            assert!(touched.is_empty(), "VM {vmid} is not ours but was changed: {touched:?}");
            assert!(self.sim.pve().vm(*vmid).is_some(), "VM {vmid} is not ours but is gone");
        }
        for t in &self.cfg.pve.templates {
            assert!(self.sim.pve().mutations_on(t.vmid).is_empty(), "template {} was changed", t.vmid);
        }
        if let Some(mut p) = self.proc.take() {
            assert!(p.exited().is_none(), "dispatcher exited on its own:\n{}", p.output());
            let status = p.terminate(Duration::from_secs(20));
            assert!(status.is_some_and(|s| s.success()), "SIGTERM: exit {status:?}\n{}", p.output());
            self.outputs.push(p.output());
        }
        let all = self.outputs.join("\n");
        let secrets = secrets_of(&self.sim, &self.cfg);
        assert!(!secrets.is_empty());
        let leaks = leaked(&all, &secrets);
        assert!(leaks.is_empty(), "secrets in the dispatcher's output: {leaks:?}");
        self.sim.shutdown().await;
        all
    }
}

fn linux(n: usize, labels: &[&str]) -> Vec<JobSpec> {
    (0..n).map(|i| JobSpec::new(&format!("job-{i}"), labels)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_snippet_mode() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut sc = Scenario::start(SimConfig::default()).await;
    sc.set("RUNNER_LABELS", "linux,x64");
    sc.launch();
    sc.sim.github().queue_run(REPO, linux(1, &["self-hosted", "linux"]));
    let out = sc.finish(&[], &[(PREFIX, 1)], &[]).await;
    assert!(out.contains("runner VM started"), "{out}");
}
