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

pub mod fuse;

mod container;
mod host;
mod mount;
mod sweep;

use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::{Kernel, Task};
use tokio::sync::mpsc;

use crate::ops::Output;

pub use container::{DEFAULT_MEMORY, PIDS};
pub use sweep::{sweep_runs, Swept};

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
}

/// What a native run may use.
#[derive(Debug, Clone, Copy)]
pub struct NativeLimits {
    pub timeout: Option<Duration>,
    pub memory: u64,
}

/// Runs a native agent as `task`; its exit code, or `None` if the receiver
/// of its output went away first.
pub async fn run(
    kernel: &Arc<Kernel>,
    task: Task,
    spec: &NativeSpec,
    env: &[(String, String)],
    limits: NativeLimits,
    output: Option<&mpsc::Sender<Output>>,
) -> Result<Option<i32>, NativeError> {
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
    dir.mount(kernel.clone(), task.clone(), owner, reach)?;
    let outcome = match (&spec.isolation, &docker) {
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
            container::run(docker, c, limits.timeout, output).await
        }
        _ => host::run(&spec.command, env, dir.zone(), limits.timeout, output).await,
    };
    // The agent is gone: unmount before writing out, so nothing writes
    // while its files are written out.
    drop(dir);
    let written = kernel.write_out_for(std::slice::from_ref(&task)).await;
    let outcome = outcome?;
    written?;
    match outcome {
        Outcome::Exited(code) => Ok(Some(code)),
        Outcome::TimedOut => Err(NativeError::Timeout(limits.timeout.unwrap_or_default())),
        Outcome::Abandoned => Ok(None),
    }
}
