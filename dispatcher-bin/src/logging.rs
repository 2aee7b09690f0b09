//! Log setup: `tracing` to stderr (journald picks it up), text or JSON, `RUST_LOG` over `DEBUG_LOGGING`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `debug` raises our crates to `debug` unless `RUST_LOG` says otherwise.
pub fn init(format: LogFormat, debug: bool) {
    let default = if debug {
        "info,dispatcher_bin=debug,proxmox_api=debug,github_runners=debug,pool_scheduler=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("dispatcher: logging already initialised: {e}");
    }
}
