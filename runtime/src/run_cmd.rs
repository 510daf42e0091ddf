//! `nexus run AGENT.wasm --zone Z`: an agent as a task of the zone, with the
//! kernel as its only I/O; the guest's exit code becomes nexus's.

use std::path::Path;
use std::sync::Arc;

use nexus_kernel::identity::{Permission, Principal};
use nexus_kernel::kernel::Kernel;
use nexus_kernel::rebac::ObjectRef;
use nexus_kernel::KernelError;

use crate::agent::host::{Host, RunLimits};
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};
use crate::session::Acting;
use crate::units;

/// `agent:<file stem>`, cleaned to a valid principal name.
pub fn default_principal(agent: &Path) -> Principal {
    let stem = agent
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    Principal::Agent(if name.is_empty() {
        "agent".into()
    } else {
        name
    })
}

fn env_pair(kv: &str) -> CliResult<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(CliError::Usage(format!("--env {kv:?}: use KEY=VALUE"))),
    }
}

/// Runs the agent; returns its exit code.
pub async fn run(kernel: &Arc<Kernel>, acting: &Acting, args: RunArgs) -> CliResult<i32> {
    let limits = RunLimits {
        timeout: args.timeout.as_deref().map(units::duration).transpose()?,
        memory: args
            .memory
            .as_deref()
            .map(units::size)
            .transpose()?
            .unwrap_or(RunLimits::default().memory),
        fuel: args.fuel,
        ..RunLimits::default()
    };
    let env = args
        .env
        .iter()
        .map(|kv| env_pair(kv))
        .collect::<CliResult<Vec<_>>>()?;
    let host = Host::new(
        &kernel.home().join("cache").join("components"),
        limits.fuel.is_some(),
        limits.memory,
    )?;
    // Problems with the file come first, then identity.
    let pre = host.prepare(&host.load(&args.agent)?)?;
    let task = acting.task(kernel, &args.zone.zone)?;
    // Running in a zone needs `enter` on it.
    let zone = task.zone().clone();
    if !kernel
        .check(&task, &zone, &ObjectRef::zone(&zone), Permission::Enter)?
        .allowed
    {
        return Err(KernelError::Access(format!(
            "{} may not enter zone {zone}; allow it with `nexus grant --zone {zone} {} viewer zone` (read) or `editor` (read and write)",
            task.principal(),
            task.principal()
        ))
        .into());
    }
    let mut argv = vec![args.agent.display().to_string()];
    argv.extend(args.args);
    Ok(host
        .run(&pre, kernel.clone(), task, &argv, &env, &limits)
        .await?)
}
