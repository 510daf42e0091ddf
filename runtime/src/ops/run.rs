//! `nexus run`: agents as tasks of the zone, running at the same time in
//! this process on the agents' own threads (`agent::threads`), with the
//! kernel as their only I/O, within the place's [`RunPolicy`] (agents at
//! once, per principal and in all; memory; time); the exit code is the
//! first failure in command-line order, else the first non-zero code.
//! Their stdout and stderr are this process's, or stream to a receiver
//! (a node streaming a run back to its client; the run stops if the
//! receiver goes away, dropping the agents' stores, so their timers and
//! pipe ends go with them).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::ObjectRef;
use nexus_kernel::{Capabilities, Permission, Principal, Task};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::sync::mpsc;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::{OpError, OpResult, Output, RunIo, RunSpec};
use crate::agent::budget::{NodeMemory, NODE_HOST_MEMORY};
use crate::agent::host::{Host, RunLimits, Stdio, POOLED_AGENTS};
use crate::agent::state::AgentState;
use crate::agent::threads;
use crate::native::{self, Isolation, NativeError, NativeSpec};
use crate::session::Acting;

/// Bytes of output per chunk at most, when output streams.
const OUTPUT_CHUNK: usize = 32 * 1024;

/// What runs may use where they run: the embedded default's limits, or a
/// node's (`nexus node start --max-agents …`), which every client shares.
#[derive(Debug, Clone)]
pub struct RunPolicy {
    /// Linear memory per agent at most.
    pub max_memory: usize,
    /// Every run ends within this (a run asks for less with `--timeout`);
    /// `None`: runs last until their agents exit.
    pub run_timeout: Option<Duration>,
    /// Agents running at once, every principal's together.
    pub max_agents: usize,
    /// Agents running at once for one principal.
    pub max_agents_per_principal: usize,
    /// Host memory (pipe rings, HTTP fields, listings) every running agent
    /// holds together; each agent's own share is its memory limit.
    pub host_memory: u64,
    /// Whether native agents may run as host processes (level 0): on the
    /// embedded default, never on a node.
    pub host_processes: bool,
}

impl RunPolicy {
    /// The embedded default: one operator, whose agents get the memory
    /// they ask for and run until they exit.
    pub fn embedded(max_memory: usize) -> Self {
        RunPolicy {
            max_memory,
            run_timeout: None,
            max_agents: POOLED_AGENTS as usize,
            max_agents_per_principal: POOLED_AGENTS as usize,
            host_memory: NODE_HOST_MEMORY,
            host_processes: true,
        }
    }

    /// A node's default (`nexus node start`'s): runs end within an hour,
    /// and no principal takes more than a quarter of the node's agents.
    pub fn node() -> Self {
        RunPolicy {
            max_memory: 4 << 30,
            run_timeout: Some(Duration::from_secs(3600)),
            max_agents: POOLED_AGENTS as usize,
            max_agents_per_principal: POOLED_AGENTS as usize / 4,
            host_memory: NODE_HOST_MEMORY,
            host_processes: false,
        }
    }

    /// The timeout of a run that asked for `asked`.
    fn timeout(&self, asked: Option<Duration>) -> OpResult<Option<Duration>> {
        match (asked, self.run_timeout) {
            (Some(a), Some(most)) if a > most => Err(OpError::Usage(format!(
                "--timeout: runs here end within {}",
                shown_duration(most)
            ))),
            (Some(a), _) => Ok(Some(a)),
            (None, most) => Ok(most),
        }
    }
}

fn shown_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// The agents running now, counted against the policy's limits.
#[derive(Default)]
struct Running {
    total: usize,
    by_principal: HashMap<Principal, usize>,
}

/// Slots held by one run's agents, given back when it ends.
struct Admitted<'a> {
    running: &'a Mutex<Running>,
    principal: Principal,
    agents: usize,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        r.total -= self.agents;
        if let Some(n) = r.by_principal.get_mut(&self.principal) {
            *n -= self.agents;
            if *n == 0 {
                r.by_principal.remove(&self.principal);
            }
        }
    }
}

/// Where a data directory keeps compiled agents.
pub fn compile_cache(home: &Path) -> std::path::PathBuf {
    home.join("cache").join("components")
}

/// The engines agents run on: one without fuel metering, one with
/// (metering is an engine setting and costs speed, so it is only paid for
/// when asked), each made on first use; and the agents running on them.
pub struct Hosts {
    cache: std::path::PathBuf,
    policy: RunPolicy,
    plain: OnceLock<Arc<Host>>,
    metered: OnceLock<Arc<Host>>,
    running: Mutex<Running>,
    node_memory: Arc<NodeMemory>,
}

impl Hosts {
    pub fn new(kernel: &Kernel, policy: RunPolicy) -> Self {
        Hosts {
            cache: compile_cache(kernel.home()),
            policy: policy.clone(),
            plain: OnceLock::new(),
            metered: OnceLock::new(),
            running: Mutex::default(),
            node_memory: NodeMemory::new(policy.host_memory),
        }
    }

    fn host(&self, fuel: bool) -> OpResult<Arc<Host>> {
        let cell = if fuel { &self.metered } else { &self.plain };
        if let Some(h) = cell.get() {
            return Ok(h.clone());
        }
        let host = Arc::new(Host::new(&self.cache, fuel, self.policy.max_memory)?);
        Ok(cell.get_or_init(|| host).clone())
    }

    /// Takes `agents` slots for `principal`'s run, or refuses it whole.
    fn admit(&self, principal: &Principal, agents: usize) -> OpResult<Admitted<'_>> {
        let p = &self.policy;
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let theirs = r.by_principal.get(principal).copied().unwrap_or(0);
        if agents > p.max_agents_per_principal || theirs + agents > p.max_agents_per_principal {
            return Err(KernelError::Quota(format!(
                "{principal} may run {} agents at once here and runs {theirs}; this run has {agents}",
                p.max_agents_per_principal
            ))
            .into());
        }
        if r.total + agents > p.max_agents {
            return Err(KernelError::Quota(format!(
                "this node runs {} agents at once at most and runs {} now; this run has {agents}",
                p.max_agents, r.total
            ))
            .into());
        }
        r.total += agents;
        *r.by_principal.entry(principal.clone()).or_default() += agents;
        Ok(Admitted {
            running: &self.running,
            principal: principal.clone(),
            agents,
        })
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

/// The task an agent named `name` runs as: the chosen identity, else
/// `agent:<its file stem>`; it needs `enter`.
fn task_for(kernel: &Kernel, acting: &Acting, zone: &str, name: &str) -> OpResult<Task> {
    let task = if acting.chosen {
        acting.task(kernel, zone)?
    } else {
        Acting {
            principal: default_principal(Path::new(name)),
            caps: Capabilities::ALL,
            zone: None,
            reach: Vec::new(),
            chosen: false,
        }
        .task(kernel, zone)?
    };
    require_enter(kernel, &task)?;
    Ok(task)
}

/// The tasks of a run's agents: as the chosen identity (companions its
/// children), else each `agent:<file stem>`; each needs `enter`.
fn bind(kernel: &Kernel, acting: &Acting, spec: &RunSpec) -> OpResult<Vec<Task>> {
    let mut tasks: Vec<Task> = Vec::new();
    for agent in &spec.agents {
        let task = match (acting.chosen, tasks.first()) {
            (true, Some(first)) => {
                let child = kernel.spawn_child(first, first.caps())?;
                require_enter(kernel, &child)?;
                child
            }
            _ => task_for(kernel, acting, &spec.zone, &agent.name)?,
        };
        tasks.push(task);
    }
    Ok(tasks)
}

/// A native agent's run (`native/`), within the same policy as any other
/// agent's: admitted, bounded in memory and time.
async fn run_native(
    kernel: &Arc<Kernel>,
    hosts: &Hosts,
    acting: &Acting,
    spec: RunSpec,
    native: NativeSpec,
    io: RunIo,
) -> OpResult<Option<i32>> {
    if native.isolation == Isolation::Host && !hosts.policy.host_processes {
        return Err(NativeError::HostThroughNode.into());
    }
    if spec.fuel.is_some() {
        return Err(OpError::Usage(
            "--fuel counts WebAssembly instructions: a native agent has none".into(),
        ));
    }
    let memory = spec
        .memory
        .unwrap_or(native::DEFAULT_MEMORY.min(hosts.policy.max_memory as u64));
    if memory > hosts.policy.max_memory as u64 {
        return Err(OpError::Usage(format!(
            "--memory: agents run here with at most {} MiB",
            hosts.policy.max_memory >> 20
        )));
    }
    let _admitted = hosts.admit(&acting.principal, 1)?;
    let limits = native::NativeLimits {
        timeout: hosts.policy.timeout(spec.timeout)?,
        memory,
        node_memory: hosts.node_memory.clone(),
    };
    let env = spec
        .env
        .iter()
        .map(|kv| env_pair(kv))
        .collect::<OpResult<Vec<_>>>()?;
    let task = task_for(kernel, acting, &spec.zone, native.agent_name())?;
    let (output, stdin) = match io {
        RunIo::Inherit => (None, Some(super::remote::process_stdin())),
        RunIo::Stream { output, stdin } => (Some(output), stdin),
    };
    let io = native::NativeIo {
        output: output.as_ref(),
        stdin,
    };
    Ok(native::run(kernel, task, &native, &env, limits, io).await?)
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
    mut spec: RunSpec,
    io: RunIo,
) -> OpResult<Option<i32>> {
    if let Some(native) = spec.native.take() {
        return run_native(kernel, hosts, acting, spec, native, io).await;
    }
    let defaults = RunLimits::default();
    let memory = match spec.memory {
        Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
        None => defaults.memory,
    };
    if memory > hosts.policy.max_memory {
        return Err(OpError::Usage(format!(
            "--memory: agents run here with at most {} MiB",
            hosts.policy.max_memory >> 20
        )));
    }
    let _admitted = hosts.admit(&acting.principal, spec.agents.len())?;
    let limits = RunLimits {
        timeout: hosts.policy.timeout(spec.timeout)?,
        memory,
        fuel: spec.fuel,
        node_memory: hosts.node_memory.clone(),
        ..defaults
    };
    let env = spec
        .env
        .iter()
        .map(|kv| env_pair(kv))
        .collect::<OpResult<Vec<_>>>()?;
    let host = hosts.host(limits.fuel.is_some())?;
    let agent_threads = threads::handle()?;
    let (output, mut stdin) = match io {
        RunIo::Inherit => (None, None),
        RunIo::Stream { output, stdin } => (Some(output), stdin),
    };
    // Every agent is compiled, then every identity checked, before any starts.
    let mut compiled = Vec::new();
    for agent in &spec.agents {
        if !host.is_compiled(&agent.code) {
            let line = format!("nexus: compiling {} (first run only)…\n", agent.name);
            // Through a node the client hears it; here, a terminal does.
            if output.is_some() || std::io::stderr().is_terminal() {
                deliver(output.as_ref(), Output::Stderr(line.into_bytes())).await;
            }
        }
        // Compiling is CPU work: on the agents' blocking threads.
        let (h, code, shown) = (host.clone(), agent.code.clone(), agent.name.clone());
        let pre = agent_threads
            .spawn_blocking(move || h.prepare(&h.load_bytes(code, shown)?))
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

    let mut pumps = Vec::new();
    let mut running = Vec::new();
    let mut names = Vec::new();
    let writers: Vec<Task> = prepared.iter().map(|a| a.task.clone()).collect();
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
        // Each agent on its own task of the agents' threads, so they run
        // in parallel and never on the threads that serve the node.
        running.push(agent_threads.spawn(async move {
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
    let (mut outcome, mut others) = settle(results);
    // What the agents wrote is written out before the run reports its
    // exit: durable, and visible through every node. A failure is the
    // run's, unless it failed already.
    if let Err(e) = kernel.write_out_for(&writers).await {
        others.push(format!("nexus: writing out the agents' files: {e}"));
        if outcome.is_ok() {
            outcome = Err(OpError::from(e));
        }
    }
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
pub(crate) async fn feed(mut bytes: super::ByteStream, mut to: impl tokio::io::AsyncWrite + Unpin) {
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
