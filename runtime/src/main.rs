//! `nexus`: the command line of the Nexus runtime.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use nexus_kernel::audit::{AuditSink, RecordStore};
use nexus_kernel::kernel::{Kernel, KernelConfig, ObjectStoreConfig};
use nexus_runtime::{
    access_cmd, audit_cmd, bench, client, fs_cmd, node_cmd, pipe_cmd, run_cmd, stress, zone_cmd,
};

use nexus_runtime::cli::{Cli, Command, KernelCommand};
use nexus_runtime::error::{self, CliError, CliResult};
use nexus_runtime::session::Acting;

/// The audit log's SQLite file in the data directory.
const RECORDS: &str = "records.db";

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
        // The agent's (or the command's) exit status; out-of-range codes fail.
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(error::exit::FAILURE)),
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
fn home(given: &Option<PathBuf>) -> CliResult<PathBuf> {
    if let Some(h) = given {
        return Ok(h.clone());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("nexus"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/nexus"))
        .ok_or_else(|| CliError::Usage("no data directory: set NEXUS_HOME".into()))
}

/// Runs the command; returns the process's exit code.
async fn run(cli: Cli) -> CliResult<i32> {
    let home = home(&cli.home)?;
    let cmd = match cli.command {
        // Benchmarks run on their own scratch data directory.
        Command::Bench(args) => return bench::run(args).await.map(|()| 0),
        // The audit log is read without opening (and locking) the kernel.
        Command::Audit(cmd) => {
            let store = RecordStore::open(cli.record_store.as_deref(), &home.join(RECORDS)).await?;
            return audit_cmd::run(&store, cmd).await.map(|()| 0);
        }
        Command::Kernel(cmd) => cmd,
        Command::Node(cmd) => {
            let mut cfg = KernelConfig::embedded(&home);
            cfg.object_store = ObjectStoreConfig::parse(&cli.object_store)?;
            return node_cmd::run(&home, cfg, cmd).await;
        }
    };
    if let Some(addr) = &cli.node {
        return client::run(addr, cli.token.as_deref(), cli.as_principal.as_deref(), cmd).await;
    }
    let mut cfg = KernelConfig::embedded(&home);
    cfg.object_store = ObjectStoreConfig::parse(&cli.object_store)?;
    let kernel = Arc::new(Kernel::open(cfg)?);
    let store = RecordStore::open(cli.record_store.as_deref(), &home.join(RECORDS)).await?;
    kernel.attach_audit(AuditSink::spawn(store))?;
    let result = dispatch(&kernel, &cli.as_principal, &cli.token, cmd).await;
    // Write out the audit log, stop drivers and flush, whatever happened.
    kernel.shutdown().await?;
    result
}

async fn dispatch(
    kernel: &Arc<Kernel>,
    as_principal: &Option<String>,
    token: &Option<String>,
    cmd: KernelCommand,
) -> CliResult<i32> {
    let k = kernel;
    let acting = || Acting::resolve(k, as_principal.as_deref(), token.as_deref());
    let done = match cmd {
        KernelCommand::Run(args) => {
            // An agent is `agent:<file stem>` unless told otherwise.
            let explicit = match (as_principal, token) {
                (None, None) => None,
                _ => Some(acting()?),
            };
            return run_cmd::run(k, explicit.as_ref(), args).await;
        }
        KernelCommand::Token(cmd) => {
            // For `token issue`, `--as` names the token's principal; the
            // issuer is the operator, or the holder of `--token`.
            let issuer = Acting::resolve(k, None, token.as_deref())?;
            access_cmd::token(k, &issuer, as_principal.as_deref(), cmd).await
        }
        KernelCommand::Zone(cmd) => zone_cmd::run(k, &acting()?, cmd).await,
        KernelCommand::Fs(cmd) => fs_cmd::run(k, &acting()?, cmd).await,
        KernelCommand::Pipe(cmd) => pipe_cmd::run(k, &acting()?, cmd).await,
        KernelCommand::Mount { zone, path, target } => {
            fs_cmd::mount(k, &acting()?, &zone, &path, &target).await
        }
        KernelCommand::Gc { json } => zone_cmd::gc(k, &acting()?, json).await,
        KernelCommand::Stress(args) => stress::run(k, &acting()?, args).await,
        KernelCommand::Grant(args) => access_cmd::grant(k, &acting()?, args, true).await,
        KernelCommand::Revoke(args) => access_cmd::grant(k, &acting()?, args, false).await,
        KernelCommand::Check {
            zone,
            subject,
            permission,
            object,
            at,
            json,
        } => {
            let query = access_cmd::CheckQuery {
                subject: &subject,
                permission: &permission,
                object: &object,
                at,
            };
            access_cmd::check(k, &acting()?, &zone, query, json).await
        }
        KernelCommand::Tuples { zone, json } => access_cmd::tuples(k, &acting()?, &zone, json),
    };
    done.map(|()| 0)
}
