//! `nexus run AGENT.wasm --zone Z [--with "OTHER.wasm ARGS"]...`: agents as
//! tasks of the zone, running at the same time in this process, with the
//! kernel as their only I/O; the guest's exit code becomes nexus's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nexus_kernel::identity::{Capabilities, Permission, Principal, Task};
use nexus_kernel::kernel::Kernel;
use nexus_kernel::rebac::ObjectRef;
use nexus_kernel::KernelError;

use crate::agent::host::{Host, RunLimits, Stdio};
use crate::agent::state::AgentState;
use crate::cli::RunArgs;
use crate::error::{CliError, CliResult};
use crate::session::Acting;
use crate::units;
use wasmtime_wasi::p2::bindings::CommandPre;

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

pub(crate) fn env_pair(kv: &str) -> CliResult<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(CliError::Usage(format!("--env {kv:?}: use KEY=VALUE"))),
    }
}

/// `--with "AGENT.wasm ARGS..."`: a path and its arguments.
pub(crate) fn companion(spec: &str) -> CliResult<(PathBuf, Vec<String>)> {
    let mut words = spec.split_whitespace();
    match words.next() {
        Some(path) => Ok((PathBuf::from(path), words.map(str::to_owned).collect())),
        None => Err(CliError::Usage(
            "--with needs an agent: --with \"AGENT.wasm [ARGS...]\"".into(),
        )),
    }
}

/// One agent, loaded, linked and bound to its task, ready to start.
struct Prepared {
    path: PathBuf,
    pre: CommandPre<AgentState>,
    task: Task,
    argv: Vec<String>,
}

/// A task for `agent` in the zone: as `explicit` (from `--as`/`--token`),
/// else `agent:<file stem>`; it needs `enter` on the zone.
fn bind(kernel: &Kernel, explicit: Option<&Acting>, agent: &Path, zone: &str) -> CliResult<Task> {
    let task = match explicit {
        Some(acting) => acting.task(kernel, zone)?,
        None => Acting {
            principal: default_principal(agent),
            caps: Capabilities::ALL,
            zone: None,
        }
        .task(kernel, zone)?,
    };
    require_enter(kernel, &task)?;
    Ok(task)
}

/// An agent runs only in a zone its task may enter (invariant 14).
pub(crate) fn require_enter(kernel: &Kernel, task: &Task) -> CliResult {
    let zone = task.zone().clone();
    if !kernel
        .check(task, &zone, &ObjectRef::zone(&zone), Permission::Enter)?
        .allowed
    {
        return Err(KernelError::Access(format!(
            "{} may not enter zone {zone}; allow it with `nexus grant --zone {zone} {} viewer zone` (read) or `editor` (read and write)",
            task.principal(),
            task.principal()
        ))
        .into());
    }
    Ok(())
}

/// `--timeout`, `--memory` and `--fuel` as limits.
pub(crate) fn limits(
    timeout: Option<&str>,
    memory: Option<&str>,
    fuel: Option<u64>,
) -> CliResult<RunLimits> {
    Ok(RunLimits {
        timeout: timeout.map(units::duration).transpose()?,
        memory: memory
            .map(units::size)
            .transpose()?
            .unwrap_or(RunLimits::default().memory),
        fuel,
        ..RunLimits::default()
    })
}

/// Runs the agent and its `--with` companions at the same time, in this
/// process, each as its own task; returns the exit code: the first failure
/// in command-line order, else the first non-zero code, else 0.
pub async fn run(kernel: &Arc<Kernel>, explicit: Option<&Acting>, args: RunArgs) -> CliResult<i32> {
    let limits = limits(args.timeout.as_deref(), args.memory.as_deref(), args.fuel)?;
    let env = args
        .env
        .iter()
        .map(|kv| env_pair(kv))
        .collect::<CliResult<Vec<_>>>()?;
    let host = Arc::new(Host::new(
        &kernel.home().join("cache").join("components"),
        limits.fuel.is_some(),
        limits.memory,
    )?);
    let mut agents = vec![(args.agent.clone(), args.args.clone())];
    for spec in &args.with {
        agents.push(companion(spec)?);
    }
    // Every agent's file, then every identity, is checked before any starts.
    let mut loaded = Vec::new();
    for (path, rest) in agents {
        let pre = host.prepare(&host.load(&path)?)?;
        loaded.push((path, pre, rest));
    }
    let mut prepared = Vec::new();
    for (path, pre, rest) in loaded {
        let task = bind(kernel, explicit, &path, &args.zone.zone)?;
        let mut argv = vec![path.display().to_string()];
        argv.extend(rest);
        prepared.push(Prepared {
            path,
            pre,
            task,
            argv,
        });
    }
    if prepared.len() == 1 {
        let a = prepared.remove(0);
        return Ok(host
            .run(
                &a.pre,
                kernel.clone(),
                a.task,
                &a.argv,
                &env,
                &limits,
                Stdio::Inherit,
            )
            .await?);
    }
    let running: Vec<_> = prepared
        .into_iter()
        .map(|a| {
            let (host, kernel, env, limits) =
                (host.clone(), kernel.clone(), env.clone(), limits.clone());
            let path = a.path.clone();
            let job = tokio::spawn(async move {
                host.run(
                    &a.pre,
                    kernel,
                    a.task,
                    &a.argv,
                    &env,
                    &limits,
                    Stdio::Inherit,
                )
                .await
            });
            (path, job)
        })
        .collect();
    let mut results = Vec::new();
    for (path, job) in running {
        let r = match job.await {
            Ok(r) => r.map_err(CliError::from),
            Err(e) => Err(CliError::Failed(format!("{}: {e}", path.display()))),
        };
        results.push((path.display().to_string(), r));
    }
    let (outcome, others) = settle(results);
    for line in others {
        eprintln!("{line}");
    }
    outcome
}

/// The outcome of agents run together: the first failure in command-line
/// order, else the first non-zero exit, else 0; and a line for each other
/// agent that failed or exited non-zero.
pub(crate) fn settle(results: Vec<(String, CliResult<i32>)>) -> (CliResult<i32>, Vec<String>) {
    let chosen = results
        .iter()
        .position(|(_, r)| r.is_err())
        .or_else(|| results.iter().position(|(_, r)| !matches!(r, Ok(0))));
    let mut outcome = Ok(0);
    let mut others = Vec::new();
    for (i, (name, r)) in results.into_iter().enumerate() {
        match r {
            _ if Some(i) == chosen => outcome = r,
            Ok(0) => {}
            Ok(code) => others.push(format!("nexus: {name} exited with {code}")),
            Err(e) => others.push(format!("nexus: {name}: {e}")),
        }
    }
    (outcome, others)
}
