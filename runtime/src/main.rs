//! `nexus`: the command line of the Nexus runtime.

mod bench;
mod cli;
mod error;
mod fs_cmd;
mod output;
mod stress;
mod zone_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nexus_kernel::kernel::{Kernel, KernelConfig, ObjectStoreConfig};

use cli::{Cli, Command, KernelCommand};
use error::{CliError, CliResult};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// `NEXUS_HOME`, else `$XDG_DATA_HOME/nexus`, else `~/.local/share/nexus`.
fn default_home() -> CliResult<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("nexus"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/nexus"))
        .ok_or_else(|| CliError::Usage("no data directory: set NEXUS_HOME".into()))
}

fn open_kernel(home: &Option<PathBuf>, object_store: &str) -> CliResult<Kernel> {
    let home = match home {
        Some(h) => h.clone(),
        None => default_home()?,
    };
    let mut cfg = KernelConfig::embedded(home);
    cfg.object_store = ObjectStoreConfig::parse(object_store)?;
    Ok(Kernel::open(cfg)?)
}

async fn run(cli: Cli) -> CliResult {
    let cmd = match cli.command {
        // Benchmarks run on their own scratch data directory.
        Command::Bench(args) => return bench::run(args).await,
        Command::Kernel(cmd) => cmd,
    };
    let kernel = open_kernel(&cli.home, &cli.object_store)?;
    let result = match cmd {
        KernelCommand::Zone(cmd) => zone_cmd::run(&kernel, cmd).await,
        KernelCommand::Fs(cmd) => fs_cmd::run(&kernel, cmd).await,
        KernelCommand::Mount { zone, path, target } => {
            fs_cmd::mount(&kernel, &zone, &path, &target).await
        }
        KernelCommand::Gc { json } => zone_cmd::gc(&kernel, json).await,
        KernelCommand::Stress(args) => stress::run(&kernel, args).await,
    };
    // Stop drivers and flush before exit, whatever happened.
    kernel.shutdown()?;
    result
}
