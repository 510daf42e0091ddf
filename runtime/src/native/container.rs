//! Isolation level 1: the agent in a Docker container started through the
//! Engine API (bollard), whose only I/O is the one mount it is given,
//! `/mnt/nexus`, the task's zone served by the kernel through FUSE.
//!
//! The container gets no network (and no socket but a Unix one), a
//! read-only root, no capabilities, no-new-privileges, a seccomp profile, a non-root user, limits on processes, memory and
//! CPU, and a small tmpfs at `/tmp`; no device, no Docker socket and no
//! host path besides the zone (Docker's own `/etc/hostname` aside). It carries labels naming the run
//! and the data directory, so a later start can remove it if `nexus` died
//! before it could (`sweep.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{NativeError, Outcome, MOUNT_POINT};
use crate::ops::{ByteStream, Output};

/// The user every container runs as: `nobody`, never root.
pub const USER: (u32, u32) = (65534, 65534);
/// Processes (threads included) in one container at most.
const PIDS: i64 = 256;
/// Memory of a container unless `--memory` says otherwise.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// The writable scratch space at `/tmp`.
const TMPFS: &str = "rw,nosuid,nodev,noexec,size=64m,mode=1777";
/// The container's seccomp profile (`seccomp.json`, ours): every system
/// call allowed but sockets of any family other than Unix (refused at
/// creation, `EAFNOSUPPORT`), new user namespaces, and the namespace,
/// mount, key, module, tracing and clock calls an agent never needs
/// (`EPERM`). With no capabilities, no-new-privileges and a non-root user,
/// it stands in for Docker's default profile, which it replaces.
const SECCOMP: &str = include_str!("seccomp.json");
/// Labels every container of Nexus carries.
pub const LABEL_RUN: &str = "nexus.run";
pub const LABEL_HOME: &str = "nexus.home";

/// What to start.
pub struct Container<'a> {
    pub run_id: &'a str,
    pub home: &'a Path,
    pub image: &'a str,
    pub command: &'a [String],
    pub env: &'a [(String, String)],
    pub memory: u64,
    pub cpus: Option<f64>,
    pub zone_dir: &'a Path,
}

fn engine_error(e: bollard::errors::Error) -> NativeError {
    NativeError::Docker(e.to_string())
}

/// The local Docker engine, or why there is none.
pub async fn engine() -> Result<Docker, NativeError> {
    let docker =
        Docker::connect_with_local_defaults().map_err(|e| NativeError::NoEngine(e.to_string()))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| NativeError::NoEngine(e.to_string()))
}

fn create_body(c: &Container<'_>) -> ContainerCreateBody {
    let socket = format!("NEXUS_SOCKET={MOUNT_POINT}/{}", super::api::SOCKET_NAME);
    let env = c
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain([socket])
        .collect();
    let labels = HashMap::from([
        (LABEL_RUN.to_owned(), c.run_id.to_owned()),
        (LABEL_HOME.to_owned(), c.home.display().to_string()),
    ]);
    let memory = i64::try_from(c.memory).unwrap_or(i64::MAX);
    let host_config = HostConfig {
        binds: Some(vec![format!(
            "{}:{MOUNT_POINT}:rw,rprivate",
            c.zone_dir.display()
        )]),
        network_mode: Some("none".into()),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec![
            "no-new-privileges".into(),
            format!("seccomp={SECCOMP}"),
        ]),
        pids_limit: Some(PIDS),
        memory: Some(memory),
        // No swap beyond the memory limit.
        memory_swap: Some(memory),
        nano_cpus: c.cpus.map(|n| (n * 1e9) as i64),
        tmpfs: Some(HashMap::from([("/tmp".to_owned(), TMPFS.to_owned())])),
        ipc_mode: Some("private".into()),
        shm_size: Some(16 << 20),
        privileged: Some(false),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(c.image.to_owned()),
        cmd: Some(c.command.to_vec()),
        env: Some(env),
        user: Some(format!("{}:{}", USER.0, USER.1)),
        working_dir: Some(MOUNT_POINT.into()),
        network_disabled: Some(true),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        open_stdin: Some(true),
        // Its stdin closes when ours ends.
        stdin_once: Some(true),
        labels: Some(labels),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Runs the container to its end (or `timeout`), its output delivered as
/// it comes; the container is removed whatever happens.
pub async fn run(
    docker: &Docker,
    c: Container<'_>,
    timeout: Option<Duration>,
    output: Option<&mpsc::Sender<Output>>,
    stdin: Option<ByteStream>,
) -> Result<Outcome, NativeError> {
    match docker.inspect_image(c.image).await {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Err(NativeError::NoImage(c.image.to_owned())),
        Err(e) => return Err(engine_error(e)),
    }
    let name = format!("nexus-{}", c.run_id);
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    // Armed before the container exists: a run dropped while the engine
    // creates it still removes it.
    let mut removal = Removal(Some(name.clone()));
    docker
        .create_container(Some(options), create_body(&c))
        .await
        .map_err(engine_error)?;
    let outcome = attach_and_wait(docker, &name, timeout, output, stdin).await;
    remove(docker, &name).await;
    removal.0 = None;
    outcome
}

/// Removes the container if the run is dropped before it could (its
/// `nexus run` interrupted, the node shutting down).
struct Removal(Option<String>);

impl Drop for Removal {
    fn drop(&mut self) {
        let Some(name) = self.0.take() else {
            return;
        };
        // Nothing can be awaited here: a thread with a runtime of its own,
        // waited for, so the container is gone when the run is.
        let removing = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(docker) = engine().await {
                        remove(&docker, &name).await;
                    }
                });
            }
        });
        let _ = removing.join();
    }
}

async fn attach_and_wait(
    docker: &Docker,
    name: &str,
    timeout: Option<Duration>,
    output: Option<&mpsc::Sender<Output>>,
    stdin: Option<ByteStream>,
) -> Result<Outcome, NativeError> {
    // Attached before it starts, so no early line is lost.
    let attach = AttachContainerOptionsBuilder::new()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let mut attached = docker
        .attach_container(name, Some(attach))
        .await
        .map_err(engine_error)?;
    docker
        .start_container(name, None)
        .await
        .map_err(engine_error)?;
    // Its stdin, fed as it reads; at the end of the bytes it reads
    // end-of-file. Ends with the run.
    let input = attached.input;
    let feeding = tokio::spawn(async move {
        match stdin {
            Some(bytes) => crate::ops::run::feed(bytes, input).await,
            None => {
                let mut input = input;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut input).await;
            }
        }
    });
    let _feeding = AbortOnDrop(feeding);
    let relay = async {
        while let Some(Ok(out)) = attached.output.next().await {
            let chunk = match out {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    Output::Stdout(message.to_vec())
                }
                LogOutput::StdErr { message } => Output::Stderr(message.to_vec()),
                LogOutput::StdIn { .. } => continue,
            };
            if !crate::ops::run::deliver(output, chunk).await {
                return false;
            }
        }
        true
    };
    let finished = async {
        let receiver_stayed = relay.await;
        if !receiver_stayed {
            return None;
        }
        Some(exit_status(docker, name).await)
    };
    let gone = async {
        match output {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    };
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = finished => match status {
            Some(status) => status,
            None => {
                kill(docker, name).await;
                Ok(Outcome::Abandoned)
            }
        },
        () = gone => {
            kill(docker, name).await;
            Ok(Outcome::Abandoned)
        }
        () = deadline => {
            kill(docker, name).await;
            Ok(Outcome::TimedOut)
        }
    }
}

/// The exit status of a container that has stopped (or is stopping).
async fn exit_status(docker: &Docker, name: &str) -> Result<Outcome, NativeError> {
    let mut wait = docker.wait_container(name, None);
    match wait.next().await {
        Some(Ok(r)) => Ok(Outcome::Exited(r.status_code as i32)),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            Ok(Outcome::Exited(code as i32))
        }
        Some(Err(e)) => Err(engine_error(e)),
        None => Err(NativeError::Docker(format!(
            "container {name}: the engine never said how it ended"
        ))),
    }
}

async fn kill(docker: &Docker, name: &str) {
    let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
    if let Err(e) = docker.kill_container(name, Some(options)).await {
        tracing::debug!("killing container {name}: {e}");
    }
}

/// Removes a container, running or not; a failure is logged (the next
/// start's sweep retries).
pub async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => {}
        // Never made, or already gone.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => tracing::warn!("removing container {name}: {e}"),
    }
}

/// Containers this data directory started: (name or id, run id).
pub async fn ours(docker: &Docker, home: &Path) -> Result<Vec<(String, String)>, NativeError> {
    let filters = HashMap::from([("label", vec![format!("{LABEL_HOME}={}", home.display())])]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(engine_error)?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let run = c.labels.as_ref()?.get(LABEL_RUN)?.clone();
            Some((c.id?, run))
        })
        .collect())
}

/// Aborts a task when dropped.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub(super) fn new(task: tokio::task::JoinHandle<()>) -> Self {
        AbortOnDrop(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
