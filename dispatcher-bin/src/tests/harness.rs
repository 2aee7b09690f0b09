//! Builds a reconciler over the fake: configuration from a variable map (and an optional pools file), a
//! temporary snippet folder, a clock the test controls and short deadlines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::RuntimeConfig;
use crate::reconciler::{Clock, PassReport, Reconciler, Tuning};

use super::fake::Fake;

/// The clock's start: 2025-10-09.
pub const NOW: u64 = 1_760_000_000;
/// The Proxmox token secret of every test configuration.
pub const PVE_SECRET: &str = "c0ffee00-pve-token-secret-9f3a";
/// The GitHub token of every test configuration.
pub const GH_TOKEN: &str = "github_pat_11TESTTOKEN0secretvalue42";
/// Labels of a job the default pool serves.
pub const JOB_LABELS: &[&str] = &["self-hosted", "Linux", "X64"];

/// A clock that moves only when told.
#[derive(Debug)]
pub struct TestClock(AtomicU64);

impl TestClock {
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Short deadlines and back-offs so a test runs in milliseconds.
pub fn tuning() -> Tuning {
    Tuning {
        max_parallel: 8,
        max_parallel_per_node: 4,
        clone_deadline: Duration::from_secs(3),
        task_deadline: Duration::from_secs(3),
        agent_poll: (Duration::from_millis(5), Duration::from_millis(20)),
        min_pass_gap: Duration::ZERO,
        shutdown_grace: Duration::from_secs(2),
        pool_backoff: Duration::from_millis(1),
        hold_retry: Duration::from_millis(40),
        task_watch: proxmox_api::TaskWatcherOptions::default(),
        max_backoff: Duration::from_millis(5),
        taken_vmid_ttl: Duration::from_secs(600),
    }
}

/// Configuration inputs.
#[derive(Debug, Clone)]
pub struct Setup {
    vars: BTreeMap<String, String>,
    pools: Option<String>,
    files: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

impl Setup {
    /// The seed's minimal environment (one `default` pool, snippet injection, VMIDs 200–299 on pve1).
    pub fn new() -> Self {
        let vars = [
            ("PROXMOX_URL", "https://pve.test:8006/api2/json"),
            ("PROXMOX_NODE", "pve1"),
            ("PROXMOX_TOKEN_ID", "ghr@pve!dispatcher"),
            ("PROXMOX_TOKEN_SECRET", PVE_SECRET),
            ("GITHUB_TOKEN", GH_TOKEN),
            ("REPO_OWNER", "acme"),
            ("REPO_NAME", "widgets"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            vars,
            pools: None,
            files: Vec::new(),
        }
    }

    pub fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.to_owned(), value.to_owned());
        self
    }

    /// A pools file (`RUNNER_POOLS_CONFIG`).
    pub fn pools(mut self, json: &str) -> Self {
        self.pools = Some(json.to_owned());
        self
    }

    /// A file next to the pools file (e.g. a user-data template).
    pub fn file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.to_owned(), text.to_owned()));
        self
    }

    /// The reconciler over `fake`.
    pub fn build(self, fake: Fake) -> Harness {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let snippets = dir.path().join("snippets");
        std::fs::create_dir(&snippets).unwrap_or_else(|e| panic!("{e}"));
        let mut vars = self.vars;
        vars.insert("SNIPPETS_DIR".into(), snippets.display().to_string());
        for (name, text) in &self.files {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        if let Some(json) = &self.pools {
            let file = dir.path().join("runner-pools.json");
            std::fs::write(&file, json).unwrap_or_else(|e| panic!("{e}"));
            vars.insert("RUNNER_POOLS_CONFIG".into(), file.display().to_string());
        }
        let lookup = |k: &str| vars.get(k).cloned();
        let cfg = RuntimeConfig::load(&lookup, &|_| false)
            .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}"));
        fake.world().snippets_dir = Some(snippets.clone());
        let fake = Arc::new(fake);
        let clock = Arc::new(TestClock(AtomicU64::new(NOW)));
        let rec = Reconciler::new(
            fake.clone(),
            fake.clone(),
            Arc::new(cfg),
            clock.clone(),
            tuning(),
        );
        Harness {
            fake,
            rec,
            clock,
            snippets,
            _dir: dir,
        }
    }
}

/// A reconciler wired to a fake.
pub struct Harness {
    pub fake: Arc<Fake>,
    pub rec: Arc<Reconciler>,
    pub clock: Arc<TestClock>,
    pub snippets: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// One pass, then wait until every action it started has finished.
    pub async fn pass(&self) -> PassReport {
        let report = self
            .rec
            .pass()
            .await
            .unwrap_or_else(|e| panic!("pass failed: {e}"));
        self.rec.wait_idle().await;
        report
    }

    /// A fresh reconciler (as after a restart) over the same fake and configuration.
    pub fn restart(&self) -> Arc<Reconciler> {
        Reconciler::new(
            self.fake.clone(),
            self.fake.clone(),
            self.rec.cfg.clone(),
            self.clock.clone(),
            tuning(),
        )
    }

    /// Names of the files in the snippet folder (temporary files included).
    pub fn snippet_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.snippets)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The runner name the planner gives VMID `vmid` at the current clock.
    pub fn runner_name(&self, vmid: u32) -> String {
        pool_scheduler::marks::runner_name("gh-runner-", vmid, self.clock.now_unix())
    }
}

/// A VM of the `default` pool with all marks, as the dispatcher leaves it once ready.
pub fn our_vm(node: &str, vmid: u32, created: u64) -> super::fake::FakeVm {
    let name = pool_scheduler::marks::runner_name("gh-runner-", vmid, created);
    let description =
        pool_scheduler::marks::description_marker("default", &name, created, "seeded by a test");
    super::fake::FakeVm::new(node, Some(&name))
        .with_tags(&["ghr-managed", "ghr-pool-default", "ghr-ready"])
        .with_description(&description)
}
