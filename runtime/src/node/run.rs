//! `nexus run --node ADDR agent.wasm --zone Z`: the node runs the agent as
//! the token's principal in the token's zone, exactly as `nexus run` would
//! (same engine settings, limits and gate), and streams its stdout and
//! stderr back as they are written, then its exit: the code and error
//! `nexus run` would have ended with. If the client goes away, the agent
//! is stopped (its store dropped, so its timers and pipe ends go with it).

use std::sync::{Arc, OnceLock};

use nexus_kernel::identity::Task;
use nexus_kernel::kernel::Kernel;
use nexus_proto::node::run_event::Event;
use nexus_proto::node::{Companion, Exit, RunEvent, RunRequest};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio::sync::mpsc;
use tonic::Status;

use crate::agent::host::{Host, Stdio};
use crate::error::{CliError, CliResult};
use crate::run_cmd;

/// Most linear memory an agent run on a node may ask for.
const MAX_MEMORY: usize = 4 << 30;
/// Bytes of output per event at most.
const EVENT_BYTES: usize = 32 * 1024;

pub type Events = mpsc::Receiver<Result<RunEvent, Status>>;

/// The node's engines: one without fuel metering, one with (metering is an
/// engine setting and costs speed, so it is only paid for when asked).
pub struct Runner {
    kernel: Arc<Kernel>,
    plain: OnceLock<Arc<Host>>,
    metered: OnceLock<Arc<Host>>,
}

impl Runner {
    pub fn new(kernel: Arc<Kernel>) -> Self {
        Runner {
            kernel,
            plain: OnceLock::new(),
            metered: OnceLock::new(),
        }
    }

    fn host(&self, fuel: bool) -> CliResult<Arc<Host>> {
        let cell = if fuel { &self.metered } else { &self.plain };
        if let Some(h) = cell.get() {
            return Ok(h.clone());
        }
        let cache = self.kernel.home().join("cache").join("components");
        let host = Arc::new(Host::new(&cache, fuel, MAX_MEMORY)?);
        Ok(cell.get_or_init(|| host).clone())
    }

    /// Starts `req` as `task`; the events end with exactly one exit.
    pub fn start(self: &Arc<Self>, task: Task, req: RunRequest) -> Events {
        let (tx, rx) = mpsc::channel(64);
        let runner = self.clone();
        tokio::spawn(async move {
            let outcome = runner.run(task, req, &tx).await;
            let exit = match outcome {
                // The client left; nobody to tell.
                Ok(None) => return,
                Ok(Some(code)) => Exit {
                    code,
                    error: String::new(),
                    hint: String::new(),
                },
                Err(e) => Exit {
                    code: i32::from(e.exit_code()),
                    error: e.to_string(),
                    hint: e.hint().unwrap_or_default().to_owned(),
                },
            };
            let event = Some(Event::Exit(exit));
            let _ = tx.send(Ok(RunEvent { event })).await;
        });
        rx
    }

    /// Runs the agent and its companions; `None` if the client went away
    /// first.
    async fn run(
        &self,
        task: Task,
        req: RunRequest,
        tx: &mpsc::Sender<Result<RunEvent, Status>>,
    ) -> CliResult<Option<i32>> {
        run_cmd::require_enter(&self.kernel, &task)?;
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let timeout = nonempty(&req.timeout);
        let memory = nonempty(&req.memory);
        let limits = run_cmd::limits(timeout.as_deref(), memory.as_deref(), req.fuel)?;
        if limits.memory > MAX_MEMORY {
            return Err(CliError::Usage(format!(
                "--memory: a node runs agents with at most {} GiB",
                MAX_MEMORY >> 30
            )));
        }
        let env = req
            .env
            .iter()
            .map(|kv| run_cmd::env_pair(kv))
            .collect::<CliResult<Vec<_>>>()?;
        let host = self.host(limits.fuel.is_some())?;
        let main = Companion {
            agent: req.agent,
            name: req.name,
            args: req.args,
        };
        // Every agent is compiled, and has its task, before any starts.
        let mut agents = Vec::new();
        for (i, a) in std::iter::once(main).chain(req.with).enumerate() {
            let name = nonempty(&a.name).unwrap_or_else(|| "agent.wasm".into());
            // Compiling is CPU work: off the async threads.
            let (h, bytes, shown) = (host.clone(), a.agent, name.clone());
            let pre = tokio::task::spawn_blocking(move || h.prepare(&h.load_bytes(bytes, shown)?))
                .await
                .map_err(|e| CliError::Failed(format!("compiling {name}: {e}")))??;
            let task = match i {
                0 => task.clone(),
                _ => self.kernel.spawn_child(&task, task.caps())?,
            };
            let mut argv = vec![name];
            argv.extend(a.args);
            agents.push((pre, task, argv));
        }

        let mut pumps = Vec::new();
        let mut running = Vec::new();
        let mut names = Vec::new();
        for (pre, task, argv) in agents {
            let (stdout, out) = tokio::io::duplex(EVENT_BYTES);
            let (stderr, err) = tokio::io::duplex(EVENT_BYTES);
            pumps.push(tokio::spawn(pump(out, tx.clone(), Event::Stdout)));
            pumps.push(tokio::spawn(pump(err, tx.clone(), Event::Stderr)));
            let (host, kernel, env, limits) = (
                host.clone(),
                self.kernel.clone(),
                env.clone(),
                limits.clone(),
            );
            names.push(argv[0].clone());
            // Each agent on its own task, so they run in parallel.
            running.push(tokio::spawn(async move {
                let stdio = Stdio::Streams { stdout, stderr };
                host.run(&pre, kernel, task, &argv, &env, &limits, stdio)
                    .await
                    .map_err(CliError::from)
            }));
        }
        let stop: Vec<_> = running.iter().map(|j| j.abort_handle()).collect();
        let joined = tokio::select! {
            r = futures::future::join_all(running) => r,
            _ = tx.closed() => {
                // Dropping an agent's store detaches its pipes and timers.
                stop.iter().for_each(|a| a.abort());
                tracing::info!("the client of a run went away; its agents were stopped");
                return Ok(None);
            }
        };
        let results = names
            .into_iter()
            .zip(joined)
            .map(|(name, r)| {
                let r = r.unwrap_or_else(|e| Err(CliError::Failed(format!("{name}: {e}"))));
                (name, r)
            })
            .collect();
        // The agents' stores are gone, so their streams are closed: the
        // pumps end once they have sent everything written.
        for p in pumps {
            let _ = p.await;
        }
        let (outcome, others) = run_cmd::settle(results);
        for line in others {
            let event = Some(Event::Stderr(format!("{line}\n").into_bytes()));
            let _ = tx.send(Ok(RunEvent { event })).await;
        }
        Ok(Some(outcome?))
    }
}

/// Sends what the agent writes to `from` as events, until it closes.
async fn pump(
    mut from: DuplexStream,
    tx: mpsc::Sender<Result<RunEvent, Status>>,
    kind: fn(Vec<u8>) -> Event,
) {
    let mut buf = vec![0u8; EVENT_BYTES];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let event = Some(kind(buf[..n].to_vec()));
                if tx.send(Ok(RunEvent { event })).await.is_err() {
                    return;
                }
            }
        }
    }
}
