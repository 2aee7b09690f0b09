//! Running the real `dispatcher` binary as a process against a [`Sim`]: environment, captured output,
//! SIGTERM / SIGKILL, and the checks every scenario makes on its output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::{Sim, SimConfig};

/// Where the `dispatcher` binary is: `DISPATCHER_BIN`, else beside the running executable's target folder
/// (`target/<profile>/dispatcher`), built once per process with `cargo build` so it is never stale.
pub fn dispatcher_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("DISPATCHER_BIN") {
            return Ok(PathBuf::from(path));
        }
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut dir = exe
            .parent()
            .map(Path::to_path_buf)
            .ok_or("executable has no folder")?;
        if dir
            .file_name()
            .is_some_and(|n| n == "deps" || n == "examples")
        {
            dir.pop();
        }
        let profile_release = dir.file_name().is_some_and(|n| n == "release");
        let bin = dir.join("dispatcher");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "dispatcher-bin",
            "--bin",
            "dispatcher",
        ]);
        if profile_release {
            build.arg("--release");
        }
        if let Some(target_dir) = dir.parent() {
            build.env("CARGO_TARGET_DIR", target_dir);
        }
        match build.status() {
            Ok(s) if s.success() => {}
            Ok(s) if bin.exists() => {
                eprintln!("dispatcher harness: cargo build exited {s}; using the existing binary")
            }
            Ok(s) => return Err(format!("cargo build -p dispatcher-bin failed: {s}")),
            Err(e) if bin.exists() => {
                eprintln!("dispatcher harness: cannot run cargo ({e}); using the existing binary")
            }
            Err(e) => return Err(format!("cannot run cargo to build the dispatcher: {e}")),
        }
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} not found", bin.display()))
        }
    })
    .clone()
}

/// The environment that points a dispatcher at a simulation (repository scope, PAT, snippet injection).
pub fn sim_env(sim: &Sim, cfg: &SimConfig) -> Vec<(String, String)> {
    let mut env = vec![
        ("PROXMOX_URL".to_owned(), sim.pve_url().to_owned()),
        (
            "PROXMOX_NODE".to_owned(),
            cfg.pve
                .nodes
                .first()
                .cloned()
                .unwrap_or_else(|| "pve1".to_owned()),
        ),
        ("PROXMOX_TOKEN_ID".to_owned(), cfg.pve.token_id.clone()),
        (
            "PROXMOX_TOKEN_SECRET".to_owned(),
            cfg.pve.token_secret.clone(),
        ),
        ("GITHUB_API_URL".to_owned(), sim.github_url().to_owned()),
        ("GITHUB_TOKEN".to_owned(), cfg.github.token.clone()),
        ("REPO_OWNER".to_owned(), "NREL".to_owned()),
        ("REPO_NAME".to_owned(), "EnergyPlus".to_owned()),
        ("POLL_INTERVAL".to_owned(), "1".to_owned()),
    ];
    if let Some(dir) = sim.snippets_dir() {
        env.push(("SNIPPETS_DIR".to_owned(), dir.display().to_string()));
    }
    env
}

/// A running dispatcher process with its output captured line by line.
#[derive(Debug)]
pub struct DispatcherProcess {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl DispatcherProcess {
    /// Starts `dispatcher <args>` with exactly `env` (plus `PATH`), output captured.
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Result<Self, String> {
        let bin = dispatcher_binary()?;
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var_os("E2E_ECHO").is_some();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[dispatcher] {line}");
                    }
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            });
        }
        Ok(Self {
            child,
            output,
            started: Instant::now(),
        })
    }

    /// Runs a one-shot subcommand (`once`, `plan`, `check`, …) to its end; SIGKILL after `timeout`.
    pub fn run_to_end(
        args: &[&str],
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<(std::process::ExitStatus, String), String> {
        let mut p = Self::spawn(args, env)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = p.exited() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return Ok((status, p.output()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        p.kill();
        Err(format!(
            "dispatcher {args:?} did not finish within {timeout:?}:\n{}",
            p.output()
        ))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Whether the process is still running (`Some(status)` once it exited).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// How long it has been running.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// SIGKILL, no chance to clean up (a crash or an OOM kill).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `grace` for the exit; SIGKILL after that. Returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Peak resident set size in KiB (`VmHWM` of `/proc/<pid>/status`), while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for DispatcherProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill();
        }
    }
}

/// Secrets that must never appear in a dispatcher's output: the configured tokens and every credential the
/// simulated GitHub issued.
pub fn secrets_of(sim: &Sim, cfg: &SimConfig) -> Vec<String> {
    let mut s = vec![cfg.pve.token_secret.clone(), cfg.github.token.clone()];
    s.extend(sim.github().issued_secrets());
    s.retain(|x| x.len() >= 8);
    s
}

/// The secrets of `secrets` that appear in `text` (shortened, for an assertion message).
pub fn leaked(text: &str, secrets: &[String]) -> Vec<String> {
    secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .map(|s| format!("{}…", &s[..6.min(s.len())]))
        .collect()
}
