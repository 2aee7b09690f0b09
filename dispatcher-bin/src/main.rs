//! `dispatcher`: the thin entry point. Everything lives in the `dispatcher_bin` library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = dispatcher_bin::cli::Cli::parse();
    dispatcher_bin::main_with(cli).await
}
