//! `dispatcher-bin`: the service that turns queued GitHub Actions jobs into ephemeral Proxmox VE runner VMs.
//!
//! The binary (`dispatcher`) is a thin `main` over this library, so tests and the demo can drive the same
//! code: [`config::RuntimeConfig`] reads the environment contract, [`reconciler::Reconciler`] runs passes
//! (observe → `pool_scheduler::plan` → act), [`provision`] and [`deprovision`] are the executors, and
//! [`commands`] prints `plan`, `status`, `check` and `render`. With `LISTEN_ADDR`, [`server`] serves the
//! webhook trigger, [`metrics`] (Prometheus) and health endpoints (those two on `METRICS_ADDR` when set).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use dispatcher_bin::{config::RuntimeConfig, reconciler::{Reconciler, SystemClock, Tuning}};
//! let cfg = RuntimeConfig::load(&|k| std::env::var(k).ok(), &|p| p.exists())?;
//! let pve = Arc::new(proxmox_api::ProxmoxClient::new(cfg.proxmox.clone())?);
//! let gh = Arc::new(github_runners::GitHubClient::new(cfg.github.clone())?);
//! let rec = Reconciler::new(pve, gh, Arc::new(cfg), Arc::new(SystemClock), Tuning::default());
//! rec.pass().await?;
//! rec.wait_idle().await;
//! # Ok(()) }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod commands;
pub mod config;
pub mod deprovision;
pub mod env;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod pool_gate;
pub mod privileges;
pub mod provision;
pub mod reconciler;
pub mod render;
pub mod server;
pub mod snippets;

#[cfg(test)]
mod tests;

use std::process::ExitCode;
use std::sync::Arc;

use cli::{Cli, Command, LogFormat};
use config::RuntimeConfig;
use reconciler::{Reconciler, SystemClock, Tuning};

/// Runs the command line: the whole program behind `main`.
pub async fn main_with(cli: Cli) -> ExitCode {
    let settings = cli.settings.clone();
    let lookup = settings.lookup();
    // Logging first, from the raw values, so configuration errors are logged in the chosen format.
    let format = match lookup("LOG_FORMAT").as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let debug = lookup("DEBUG_LOGGING")
        .is_some_and(|v| env::parse_bool("DEBUG_LOGGING", &v).unwrap_or(false));
    logging::init(format, debug);

    for name in env::unknown_variables(
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    ) {
        tracing::warn!(variable = %name, "unknown variable (a typo?); it is ignored");
    }

    let cfg = match RuntimeConfig::load(&lookup, &|p| p.exists()) {
        Ok(cfg) => cfg,
        Err(errors) => {
            for line in &errors.0 {
                tracing::error!("configuration: {line}");
            }
            eprintln!(
                "dispatcher: invalid configuration ({} problem(s)):",
                errors.0.len()
            );
            for line in &errors.0 {
                eprintln!("  {line}");
            }
            return ExitCode::from(2);
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("configuration: {w}");
    }
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Render { pool } = &command {
        return commands::render(&cfg, pool.as_deref());
    }

    let metrics = Arc::new(metrics::Metrics::new());
    let pve = match proxmox_api::ProxmoxClient::new(cfg.proxmox.clone()) {
        Ok(c) => Arc::new(c.with_observer(metrics.proxmox_observer())),
        Err(e) => {
            eprintln!("dispatcher: proxmox client: {e}");
            return ExitCode::from(2);
        }
    };
    let gh = match github_runners::GitHubClient::new(cfg.github.clone()) {
        Ok(c) => Arc::new(
            c.with_repositories(cfg.org_repositories.clone())
                .with_observer(metrics.github_observer()),
        ),
        Err(e) => {
            eprintln!("dispatcher: github client: {e}");
            return ExitCode::from(2);
        }
    };
    metrics.set_rate_limit_source(Arc::downgrade(&gh));
    let rec = Reconciler::with_metrics(
        pve,
        gh,
        Arc::new(cfg),
        Arc::new(SystemClock),
        Tuning::default(),
        metrics,
    );

    match command {
        Command::Run => {
            let server = match start_server(&rec).await {
                Ok(server) => server,
                Err(e) => {
                    tracing::error!("configuration: {e}");
                    eprintln!("dispatcher: {e}");
                    return ExitCode::from(2);
                }
            };
            spawn_signal_handler(&rec);
            tracing::info!(
                pools = rec.cfg.pools.pools().len(),
                poll_s = rec.cfg.poll_interval.as_secs(),
                "dispatcher started"
            );
            rec.run().await;
            if let Some(server) = server {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
            }
            tracing::info!("dispatcher stopped");
            ExitCode::SUCCESS
        }
        Command::Once => {
            spawn_signal_handler(&rec);
            let result = rec.pass().await;
            rec.wait_idle().await;
            match result {
                Ok(report) if rec.failed_tasks() == 0 => {
                    println!(
                        "pass done: {} started, {} deleting, {} deregistering, {} held, {} queued jobs",
                        report.started,
                        report.deleting,
                        report.deregistering,
                        report.held,
                        report.queued_jobs
                    );
                    ExitCode::SUCCESS
                }
                Ok(_) => {
                    eprintln!(
                        "dispatcher: {} action(s) of the pass failed (see the log)",
                        rec.failed_tasks()
                    );
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("dispatcher: pass failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plan => commands::plan(&rec).await,
        Command::Status => commands::status(&rec).await,
        Command::Check => commands::check(&rec).await,
        Command::Render { .. } => ExitCode::SUCCESS,
    }
}

/// Binds `LISTEN_ADDR` and `METRICS_ADDR` (those set) and serves webhook, metrics and health until
/// shutdown: the webhook on `LISTEN_ADDR`; metrics and health on `METRICS_ADDR`, else on `LISTEN_ADDR`.
async fn start_server(
    rec: &Arc<Reconciler>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    use server::Endpoints;
    let cfg = &rec.cfg;
    let webhook = cfg.webhook_secret.is_some();
    if webhook && cfg.listen_addr.is_none() {
        tracing::warn!("WEBHOOK_SECRET is set without LISTEN_ADDR: no webhook listener");
    }
    let mut listeners = Vec::new();
    if let Some(addr) = cfg.listen_addr {
        let endpoints = if cfg.metrics_addr.is_some() {
            if !webhook {
                tracing::warn!(
                    "LISTEN_ADDR is set without WEBHOOK_SECRET while METRICS_ADDR serves metrics and \
                     health: LISTEN_ADDR serves nothing (/webhook answers 404)"
                );
            }
            Endpoints::Webhook
        } else {
            if !webhook {
                tracing::warn!(
                    "LISTEN_ADDR is set without WEBHOOK_SECRET: serving /metrics, /healthz and /readyz only (/webhook answers 404)"
                );
            }
            Endpoints::All
        };
        listeners.push(("LISTEN_ADDR", addr, endpoints));
    }
    if let Some(addr) = cfg.metrics_addr {
        listeners.push(("METRICS_ADDR", addr, Endpoints::Monitoring));
    }
    if listeners.is_empty() {
        return Ok(None);
    }
    let mut bound = Vec::new();
    for (var, addr, endpoints) in listeners {
        bound.push((server::bind(var, addr).await?, var, addr, endpoints));
    }
    let state = Arc::new(server::AppState::for_reconciler(rec));
    let limits = server::Limits::default();
    let handles: Vec<_> = bound
        .into_iter()
        .map(|(listener, var, addr, endpoints)| {
            let local = listener.local_addr().map_or(addr, |a| a);
            tracing::info!(listen = %local, variable = var, ?endpoints, webhook, "HTTP listener started");
            server::spawn(
                listener,
                Arc::clone(&state),
                endpoints,
                limits,
                rec.shutdown_token(),
            )
        })
        .collect();
    Ok(Some(tokio::spawn(async move {
        for handle in handles {
            let _ = handle.await;
        }
    })))
}

/// SIGTERM / SIGINT: stop starting work, roll back or finish what is in flight, exit.
fn spawn_signal_handler(rec: &Arc<Reconciler>) {
    let token = rec.shutdown_token();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {},
                        _ = term.recv() => {},
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("signal received: shutting down");
        token.cancel();
    });
}
