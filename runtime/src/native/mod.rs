//! Native agents: programs that are not WebAssembly (a Python agent with
//! numpy, a shell tool, a compiled binary), run at isolation level 1 (a
//! Docker container) or 0 (a host process), with the task's zone mounted
//! through FUSE (`fuse/`) and served by the kernel as the task.
//!
//! A native run: bind the task (as a WebAssembly agent's, checked for
//! `enter`), clean up after runs whose `nexus` died (`sweep.rs`), make the
//! run's directory and mount the zone in it (`mount.rs`), start the
//! container (`container.rs`) or process (`host.rs`), wait for its end or
//! its timeout, remove it, unmount, and write out what it wrote.

pub mod api;
pub mod fuse;

pub(crate) mod container;
mod host;
mod mount;
mod sweep;

use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::{Kernel, Task};
use tokio::sync::mpsc;

use crate::agent::budget::{HostMemory, NodeMemory};
use crate::agent::pipe::PipeBudget;
use crate::ops::{ByteStream, Output};

pub use container::DEFAULT_MEMORY;
use sweep::sweep_runs;

/// Where a container sees the zone.
pub const MOUNT_POINT: &str = "/mnt/nexus";

/// How a native agent is isolated.
#[derive(Debug, Clone, PartialEq)]
pub enum Isolation {
    /// Level 1: a container of `image`, with at most `cpus` CPUs.
    Container { image: String, cpus: Option<f64> },
    /// Level 0: a process on the host (weak isolation).
    Host,
}

/// `nexus run --image IMAGE -- CMD…` or `nexus run --isolation host -- CMD…`.
#[derive(Debug, Clone, PartialEq)]
pub struct NativeSpec {
    pub isolation: Isolation,
    pub command: Vec<String>,
}

impl NativeSpec {
    /// The name of the agent: its image, or its program's file name.
    pub fn agent_name(&self) -> &str {
        match &self.isolation {
            Isolation::Container { image, .. } => image.split(':').next().unwrap_or(image),
            Isolation::Host => self.command.first().map_or("native", |c| c.as_str()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(
        "no Docker engine answers ({0}); start the Docker daemon, or run the agent as \
         WebAssembly (`nexus run AGENT.wasm`)"
    )]
    NoEngine(String),
    #[error(
        "image {0:?} is not in the Docker engine; build one from this machine's files with \
         `bash scripts/native-image` (no registry is used)"
    )]
    NoImage(String),
    #[error("docker: {0}")]
    Docker(String),
    #[error(
        "mounting the zone at {path}: {source}; FUSE needs /dev/fuse and fusermount3 \
         (Debian's fuse3 package)"
    )]
    Mount {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a native agent needs a command: nexus run --image IMAGE --zone Z -- CMD [ARGS...]")]
    NoCommand,
    #[error("--isolation host runs on the embedded default only: a node never runs a client's command on its host")]
    HostThroughNode,
    #[error("writing out the agent's files: {0}")]
    WriteOut(#[from] nexus_kernel::KernelError),
    #[error("interrupted: the agent was stopped and removed")]
    Interrupted,
    #[error("the agent ran past its timeout of {0:?} and was killed")]
    Timeout(Duration),
}

/// How a native agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    TimedOut,
    /// Whoever received its output went away; it was stopped.
    Abandoned,
    /// This process was told to stop; so was the agent.
    Interrupted,
}

/// Resolves when this process gets SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Where a native agent's output goes (`None`: this process's stdout and
/// stderr) and what it reads on its stdin (`None`: nothing).
pub struct NativeIo<'a> {
    pub output: Option<&'a mpsc::Sender<Output>>,
    pub stdin: Option<ByteStream>,
}

/// What a native run may use.
#[derive(Debug, Clone)]
pub struct NativeLimits {
    pub timeout: Option<Duration>,
    /// The container's memory, and the agent's share of the node's host
    /// memory (the pipe rings it holds open through its mount).
    pub memory: u64,
    pub node_memory: Arc<NodeMemory>,
}

/// Runs a native agent as `task`; its exit code, or `None` if the receiver
/// of its output went away first.
pub async fn run(
    kernel: &Arc<Kernel>,
    task: Task,
    spec: &NativeSpec,
    env: &[(String, String)],
    limits: NativeLimits,
    io: NativeIo<'_>,
) -> Result<Option<i32>, NativeError> {
    let NativeIo { output, stdin } = io;
    if spec.command.is_empty() {
        return Err(NativeError::NoCommand);
    }
    let home = kernel.home().to_path_buf();
    let swept = sweep_runs(&home);
    let docker = match &spec.isolation {
        Isolation::Container { .. } => {
            let docker = container::engine().await?;
            let containers = sweep::sweep_containers(&docker, &home).await;
            if swept + containers > 0 {
                tracing::info!("removed {swept} stale native runs and {containers} containers");
            }
            Some(docker)
        }
        Isolation::Host => None,
    };
    let run_id = format!("{:016x}", rand::random::<u64>());
    let mut dir = mount::RunDir::create(&home, &run_id)?;
    let (owner, reach) = match &spec.isolation {
        Isolation::Container { .. } => (
            fuse::Owner {
                uid: container::USER.0,
                gid: container::USER.1,
            },
            mount::Reach::OtherUsers,
        ),
        Isolation::Host => (
            fuse::Owner {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
            },
            mount::Reach::Owner,
        ),
    };
    let host_memory = HostMemory::new(limits.memory, limits.node_memory.clone());
    let pipes = PipeBudget::new(host_memory);
    dir.mount(kernel.clone(), task.clone(), owner, reach, pipes)?;
    // The kernel API socket, bound inside the mount (its node is made
    // through FUSE, by this process only): a blocking bind, off the
    // runtime's workers, since this process answers it.
    let group = Arc::new(std::sync::OnceLock::new());
    let peers = match &spec.isolation {
        Isolation::Container { .. } => api::Peers::Anyone,
        Isolation::Host => api::Peers::Group(group.clone()),
    };
    let socket = dir.zone().join(api::SOCKET_NAME);
    let listener = tokio::task::spawn_blocking(move || {
        let l = std::os::unix::net::UnixListener::bind(&socket)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>((l, socket))
    })
    .await
    .map_err(|e| NativeError::Docker(format!("binding the kernel socket: {e}")))?;
    let (listener, socket) = listener.map_err(|source| NativeError::Io {
        path: dir.zone().join(api::SOCKET_NAME).display().to_string(),
        source,
    })?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|source| NativeError::Io {
            path: socket.display().to_string(),
            source,
        })?;
    let api = tokio::spawn(api::serve(listener, kernel.clone(), task.clone(), peers));
    let agent = async {
        match (&spec.isolation, &docker) {
            (Isolation::Container { image, cpus }, Some(docker)) => {
                let c = container::Container {
                    run_id: &run_id,
                    home: &home,
                    image,
                    command: &spec.command,
                    env,
                    memory: limits.memory,
                    cpus: *cpus,
                    zone_dir: dir.zone(),
                };
                container::run(docker, c, limits.timeout, output, stdin).await
            }
            _ => {
                let zone = dir.zone();
                let io = NativeIo { output, stdin };
                host::run(&spec.command, env, zone, limits.timeout, io, &group).await
            }
        }
    };
    // Interrupted (Ctrl-C, SIGTERM: the user's, or the node's shutdown),
    // the agent is dropped, which removes its container or process group.
    let outcome = tokio::select! {
        outcome = agent => outcome,
        () = interrupted() => Ok(Outcome::Interrupted),
    };
    // The agent is gone: its socket closes (the listener held the mount),
    // then the zone is unmounted before its files are written out.
    api.abort();
    let _ = api.await;
    drop(dir);
    let written = kernel.write_out_for(std::slice::from_ref(&task)).await;
    let outcome = outcome?;
    written?;
    match outcome {
        Outcome::Exited(code) => Ok(Some(code)),
        Outcome::TimedOut => Err(NativeError::Timeout(limits.timeout.unwrap_or_default())),
        Outcome::Interrupted => Err(NativeError::Interrupted),
        Outcome::Abandoned => Ok(None),
    }
}
