//! `nexus`: the command line of the Nexus runtime.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use nexus_kernel::{AuditSink, RecordStore};
use nexus_kernel::{Kernel, KernelConfig, ObjectStoreConfig};
use nexus_runtime::agent::host::RunLimits;
use nexus_runtime::cli::{self, Cli, Command, KernelCommand};
use nexus_runtime::node::tls;
use nexus_runtime::ops::local::Local;
use nexus_runtime::ops::remote::Remote;
use nexus_runtime::ops::run::{Hosts, RunPolicy};
use nexus_runtime::ops::{exit, OpError, OpResult};
use nexus_runtime::session::Acting;
use nexus_runtime::{bench, units};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                // fuser warns of every request a native agent makes that
                // Nexus answers with its default (ENOSYS), which is fine.
                .unwrap_or_else(|_| "warn,fuser=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        // The agent's (or the command's) exit status; out-of-range codes fail.
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(exit::FAILURE)),
        Err(e) => {
            // An error names paths an agent chose: shown escaped.
            eprintln!("error: {}", nexus_runtime::output::shown(&e.to_string()));
            if let Some(hint) = e.hint() {
                eprintln!("hint: {}", nexus_runtime::output::shown(hint));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// `NEXUS_HOME`, else `$XDG_DATA_HOME/nexus`, else `~/.local/share/nexus`.
fn home(given: &Option<PathBuf>) -> OpResult<PathBuf> {
    if let Some(h) = given {
        return Ok(h.clone());
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(x).join("nexus"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/nexus"))
        .ok_or_else(|| OpError::Usage("no data directory: set NEXUS_HOME".into()))
}

/// Runs the command; returns the process's exit code.
async fn run(cli: Cli) -> OpResult<i32> {
    let home = home(&cli.home)?;
    let cmd = match cli.command {
        // Benchmarks run on their own scratch data directory.
        Command::Bench(args) => return bench::run(args).await.map(|()| 0),
        // The audit log is read without opening (and locking) the kernel,
        // or through a node.
        Command::Audit(cmd) => {
            if let Some(addr) = &cli.node {
                let remote = connect(cli.token.as_deref(), cli.ca.as_deref(), &home, addr).await?;
                let source = cli::audit::Source::Node(&remote);
                return cli::audit::run(source, cmd).await.map(|()| 0);
            }
            let store =
                RecordStore::open(cli.record_store.as_deref(), &home.join(cli::audit::RECORDS))
                    .await?;
            let source = cli::audit::Source::Store(&store);
            return cli::audit::run(source, cmd).await.map(|()| 0);
        }
        Command::Kernel(cmd) => cmd,
        Command::Cluster(cmd) => return cli::cluster::run(cmd).map(|()| 0),
        Command::Issuer(cmd) => return cli::issuer::run(&home, cmd).map(|()| 0),
        Command::Build(args) => return cli::build::run(args).map(|()| 0),
        Command::Compile(args) => return cli::compile::run(&home, args).map(|()| 0),
        Command::Node(cmd) => {
            let mut cfg = KernelConfig::embedded(&home);
            cfg.object_store = ObjectStoreConfig::parse(&cli.object_store)?;
            return cli::node::run(&home, cfg, cli.record_store.as_deref(), cmd).await;
        }
    };
    let as_principal = cli.as_principal.as_deref();
    if let Some(addr) = &cli.node {
        let remote = connect(cli.token.as_deref(), cli.ca.as_deref(), &home, addr).await?;
        return cli::dispatch(&remote, as_principal, cmd).await;
    }
    let mut cfg = KernelConfig::embedded(&home);
    cfg.object_store = ObjectStoreConfig::parse(&cli.object_store)?;
    let kernel = Arc::new(Kernel::open(cfg)?);
    let store =
        RecordStore::open(cli.record_store.as_deref(), &home.join(cli::audit::RECORDS)).await?;
    kernel.attach_audit(AuditSink::spawn(store))?;
    let result = embedded(&kernel, as_principal, cli.token.as_deref(), cmd).await;
    // Write out the audit log, stop drivers and flush, whatever happened.
    kernel.shutdown().await?;
    result
}

/// `--node ADDR`: a client of that node, over TLS checked against `--ca`,
/// authenticated by `--token`.
async fn connect(
    token: Option<&str>,
    ca: Option<&std::path::Path>,
    home: &std::path::Path,
    addr: &str,
) -> OpResult<Remote> {
    let token = token
        .ok_or_else(|| OpError::Usage("--node needs --token (see `nexus token issue`)".into()))?;
    let default_ca = home.join("tls").join(tls::CA_CERT);
    let ca = ca.unwrap_or(&default_ca);
    Remote::connect(addr, token, tls::client_config(ca)?).await
}

/// The command on this data directory's kernel, as the operator, `--as`
/// or the holder of `--token`.
async fn embedded(
    kernel: &Arc<Kernel>,
    as_principal: Option<&str>,
    token: Option<&str>,
    cmd: KernelCommand,
) -> OpResult<i32> {
    // For `token issue`, `--as` names the token's principal, not the issuer.
    let acting = match cmd {
        KernelCommand::Token(_) => Acting::resolve(kernel, None, token)?,
        _ => Acting::resolve(kernel, as_principal, token)?,
    };
    // Agents get the linear memory they ask for (no node-wide cap here).
    let memory = match &cmd {
        KernelCommand::Run(args) => args.memory.as_deref().map(units::size).transpose()?,
        _ => None,
    };
    let policy = RunPolicy::embedded(memory.unwrap_or(RunLimits::default().memory));
    let hosts = Hosts::new(kernel, policy);
    let local = Local::new(kernel.clone(), acting, Arc::new(hosts));
    cli::dispatch(&local, as_principal, cmd).await
}
