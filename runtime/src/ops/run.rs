//! `nexus run`: agents as tasks of the zone, running at the same time in
//! this process, with the kernel as their only I/O; the exit code is the
//! first failure in command-line order, else the first non-zero code.
//! Their stdout and stderr are this process's, or stream to a receiver
//! (a node streaming a run back to its client; the run stops if the
//! receiver goes away, dropping the agents' stores, so their timers and
//! pipe ends go with them).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::ObjectRef;
use nexus_kernel::{Capabilities, Permission, Principal, Task};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::sync::mpsc;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::{OpError, OpResult, Output, RunIo, RunSpec};
use crate::agent::host::{Host, RunLimits, Stdio};
use crate::agent::state::AgentState;
use crate::session::Acting;

/// Bytes of output per chunk at most, when output streams.
const OUTPUT_CHUNK: usize = 32 * 1024;

/// The engines agents run on: one without fuel metering, one with
/// (metering is an engine setting and costs speed, so it is only paid for
/// when asked), each made on first use, with at most `max_memory` bytes
/// of linear memory per agent.
pub struct Hosts {
    cache: std::path::PathBuf,
    max_memory: usize,
    plain: OnceLock<Arc<Host>>,
    metered: OnceLock<Arc<Host>>,
}

impl Hosts {
    pub fn new(kernel: &Kernel, max_memory: usize) -> Self {
        Hosts {
            cache: kernel.home().join("cache").join("components"),
            max_memory,
            plain: OnceLock::new(),
            metered: OnceLock::new(),
        }
    }

    fn host(&self, fuel: bool) -> OpResult<Arc<Host>> {
        let cell = if fuel { &self.metered } else { &self.plain };
        if let Some(h) = cell.get() {
            return Ok(h.clone());
        }
        let host = Arc::new(Host::new(&self.cache, fuel, self.max_memory)?);
        Ok(cell.get_or_init(|| host).clone())
    }
}

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

fn env_pair(kv: &str) -> OpResult<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(OpError::Usage(format!("--env {kv:?}: use KEY=VALUE"))),
    }
}

/// An agent runs only in a zone its task may enter (invariant 14).
fn require_enter(kernel: &Kernel, task: &Task) -> OpResult {
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

/// The tasks of a run's agents: as the chosen identity (companions its
/// children), else each `agent:<file stem>`; each needs `enter`.
fn bind(kernel: &Kernel, acting: &Acting, spec: &RunSpec) -> OpResult<Vec<Task>> {
    let mut tasks: Vec<Task> = Vec::new();
    for agent in &spec.agents {
        let task = match (acting.chosen, tasks.first()) {
            (true, None) => acting.task(kernel, &spec.zone)?,
            (true, Some(first)) => kernel.spawn_child(first, first.caps())?,
            (false, _) => Acting {
                principal: default_principal(Path::new(&agent.name)),
                caps: Capabilities::ALL,
                zone: None,
                reach: Vec::new(),
                chosen: false,
            }
            .task(kernel, &spec.zone)?,
        };
        require_enter(kernel, &task)?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// One agent, compiled and bound to its task, ready to start.
struct Prepared {
    name: String,
    pre: CommandPre<AgentState>,
    task: Task,
    argv: Vec<String>,
}

pub async fn run(
    kernel: &Arc<Kernel>,
    hosts: &Hosts,
    acting: &Acting,
    spec: RunSpec,
    io: RunIo,
) -> OpResult<Option<i32>> {
    let defaults = RunLimits::default();
    let memory = match spec.memory {
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None => defaults.memory,
    };
    if memory > hosts.max_memory {
        return Err(OpError::Usage(format!(
            "--memory: agents run here with at most {} MiB",
            hosts.max_memory >> 20
        )));
    }
    let limits = RunLimits {
        timeout: spec.timeout,
        memory,
        fuel: spec.fuel,
        ..defaults
    };
    let env = spec
        .env
        .iter()
        .map(|kv| env_pair(kv))
        .collect::<OpResult<Vec<_>>>()?;
    let host = hosts.host(limits.fuel.is_some())?;
    // Every agent is compiled, then every identity checked, before any starts.
    let mut compiled = Vec::new();
    for agent in &spec.agents {
        // Compiling is CPU work: off the async threads.
        let (h, code, shown) = (host.clone(), agent.code.clone(), agent.name.clone());
        let pre = tokio::task::spawn_blocking(move || h.prepare(&h.load_bytes(code, shown)?))
            .await
            .map_err(|e| OpError::Failed(format!("compiling {}: {e}", agent.name)))??;
        compiled.push(pre);
    }
    let tasks = bind(kernel, acting, &spec)?;
    let prepared: Vec<Prepared> = spec
        .agents
        .into_iter()
        .zip(compiled)
        .zip(tasks)
        .map(|((agent, pre), task)| {
            let mut argv = vec![agent.name.clone()];
            argv.extend(agent.args);
            Prepared {
                name: agent.name,
                pre,
                task,
                argv,
            }
        })
        .collect();

    let (output, mut stdin) = match io {
        RunIo::Inherit => (None, None),
        RunIo::Stream { output, stdin } => (Some(output), stdin),
    };
    let mut pumps = Vec::new();
    let mut running = Vec::new();
    let mut names = Vec::new();
    for a in prepared {
        let stdio = match &output {
            None => Stdio::Inherit,
            Some(tx) => {
                let (stdout, out) = tokio::io::duplex(OUTPUT_CHUNK);
                let (stderr, err) = tokio::io::duplex(OUTPUT_CHUNK);
                pumps.push(tokio::spawn(pump(out, tx.clone(), Output::Stdout)));
                pumps.push(tokio::spawn(pump(err, tx.clone(), Output::Stderr)));
                // The first agent's stdin; it is fed as the agent reads
                // (the pipe's buffer is the backpressure). Not waited for.
                let stdin = stdin.take().map(|bytes| {
                    let (reader, writer) = tokio::io::duplex(OUTPUT_CHUNK);
                    tokio::spawn(feed(bytes, writer));
                    reader
                });
                Stdio::Streams {
                    stdin,
                    stdout,
                    stderr,
                }
            }
        };
        let (host, kernel, env, limits) =
            (host.clone(), kernel.clone(), env.clone(), limits.clone());
        names.push(a.name);
        // Each agent on its own task, so they run in parallel.
        running.push(tokio::spawn(async move {
            host.run(&a.pre, kernel, a.task, &a.argv, &env, &limits, stdio)
                .await
                .map_err(OpError::from)
        }));
    }
    let stop: Vec<_> = running.iter().map(|j| j.abort_handle()).collect();
    let gone = async {
        match &output {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    };
    let joined = tokio::select! {
        r = futures::future::join_all(running) => r,
        () = gone => {
            // Dropping an agent's store detaches its pipes and timers.
            stop.iter().for_each(|a| a.abort());
            tracing::info!("the receiver of a run's output went away; its agents were stopped");
            return Ok(None);
        }
    };
    let results = names
        .into_iter()
        .zip(joined)
        .map(|(name, r)| {
            let r = r.unwrap_or_else(|e| Err(OpError::Failed(format!("{name}: {e}"))));
            (name, r)
        })
        .collect();
    // The agents' stores are gone, so their streams are closed: the pumps
    // end once they have sent everything written.
    for p in pumps {
        let _ = p.await;
    }
    let (outcome, others) = settle(results);
    for line in others {
        match &output {
            None => eprintln!("{line}"),
            Some(tx) => {
                let _ = tx
                    .send(Output::Stderr(format!("{line}\n").into_bytes()))
                    .await;
            }
        }
    }
    outcome.map(Some)
}

/// The outcome of agents run together: the first failure in command-line
/// order, else the first non-zero exit, else 0; and a line for each other
/// agent that failed or exited non-zero.
fn settle(results: Vec<(String, OpResult<i32>)>) -> (OpResult<i32>, Vec<String>) {
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

/// Writes `bytes` into an agent's stdin until they end (then the agent
/// reads end-of-file) or the agent is gone.
async fn feed(mut bytes: super::ByteStream, mut to: DuplexStream) {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    while let Some(Ok(chunk)) = bytes.next().await {
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Sends what the agent writes to `from` as chunks, until it closes.
async fn pump(mut from: DuplexStream, tx: mpsc::Sender<Output>, kind: fn(Vec<u8>) -> Output) {
    let mut buf = vec![0u8; OUTPUT_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(kind(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Hands a chunk of an agent's output to `to`, or this process's streams;
/// `false` once nobody receives it any more.
pub async fn deliver(to: Option<&mpsc::Sender<Output>>, out: Output) -> bool {
    use std::io::Write;
    match to {
        None => {
            // A closed stdout or stderr loses the output, not the run.
            let _ = match out {
                Output::Stdout(b) => {
                    let mut o = std::io::stdout();
                    o.write_all(&b).and_then(|()| o.flush())
                }
                Output::Stderr(b) => std::io::stderr().write_all(&b),
            };
            true
        }
        Some(output) => output.send(out).await.is_ok(),
    }
}
