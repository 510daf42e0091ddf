//! The kernel API a native agent reaches from inside its one mount: a Unix
//! socket at `/mnt/nexus/.nexus.sock` (the zone root's reserved name; not
//! in listings, and no zone file can take it), for what files cannot say:
//! who am I, pipes (create, stat, list, remove) and kernel timers.
//!
//! Authenticated by the socket, with no token to steal: whoever can reach
//! the socket is the run's task, exactly as whoever can reach the mount
//! is. At level 0 the socket also checks its peer's credentials
//! (`SO_PEERCRED`): only a process of the run's own process group is
//! served (another host process of the same user is refused).
//!
//! The protocol is JSON lines: one request object per line, with `op`
//! naming the call, answered by one line, `{"ok": …}` or
//! `{"error": {"code": "<WASI error code>", "message": "…"}}`. A line is
//! at most 64 KiB; a run serves at most 16 connections at once.
//!
//! ```text
//! {"op":"whoami"}                                → {"ok":{"principal":"agent:x","zone":"z1","pid":7}}
//! {"op":"pipe_create","path":"/jobs","capacity":65536}  → {"ok":null}
//! {"op":"pipe_stat","path":"/jobs"}              → {"ok":{…PipeStat…}}
//! {"op":"pipe_list","dir":"/"}                   → {"ok":[{"path":…,"stat":…},…]}
//! {"op":"pipe_remove","path":"/jobs"}            → {"ok":null}
//! {"op":"sleep","ms":250}                        → {"ok":null}  (the kernel's timer driver)
//! ```

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nexus_kernel::{Kernel, KernelError, Task};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// The socket's name in the zone root.
pub const SOCKET_NAME: &str = ".nexus.sock";
/// Longest request line.
const MAX_LINE: usize = 64 << 10;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// Kernel timers one connection may hold.
const TIMERS: usize = 16;
/// Longest sleep asked in one call.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Request {
    Whoami,
    PipeCreate { path: String, capacity: u64 },
    PipeStat { path: String },
    PipeList { dir: String },
    PipeRemove { path: String },
    Sleep { ms: u64 },
}

#[derive(Serialize)]
struct Whoami<'a> {
    principal: String,
    zone: &'a str,
    pid: nexus_kernel::Pid,
}

#[derive(Serialize)]
struct PipeRow {
    path: String,
    stat: nexus_kernel::PipeStat,
}

#[derive(Serialize)]
struct Failure {
    code: &'static str,
    message: String,
}

/// Who may use the socket besides whoever reaches it.
#[derive(Debug, Clone)]
pub enum Peers {
    /// Whoever reaches the mount (a container's processes).
    Anyone,
    /// Only processes of the run's process group (level 0), known once
    /// its first process has started.
    Group(Arc<OnceLock<u32>>),
}

/// Serves the task's API on `listener` until the run ends (the future is
/// dropped with it).
pub async fn serve(listener: UnixListener, kernel: Arc<Kernel>, task: Task, peers: Peers) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Past the limit: refused at once, the others unaffected.
            drop(stream);
            continue;
        };
        if !admitted(&stream, &peers) {
            continue;
        }
        let (kernel, task) = (kernel.clone(), task.clone());
        tokio::spawn(async move {
            connection(stream, &kernel, &task).await;
            drop(slot);
        });
    }
}

/// The peer check of level 0: the connecting process is in the run's
/// process group.
fn admitted(stream: &UnixStream, peers: &Peers) -> bool {
    match peers {
        Peers::Anyone => true,
        Peers::Group(group) => {
            let Some(&group) = group.get() else {
                return false;
            };
            stream
                .peer_cred()
                .ok()
                .and_then(|c| c.pid())
                .and_then(|pid| u32::try_from(pid).ok())
                .and_then(process_group)
                .is_some_and(|g| g == group)
        }
    }
}

/// The process group of `pid`, from /proc (field 5 of its stat).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(2)?.parse().ok()
}

async fn connection(stream: UnixStream, kernel: &Kernel, task: &Task) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let timers = kernel.timers().for_task(TIMERS);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded before it is kept: a line longer than MAX_LINE ends the
        // connection.
        let mut limited = (&mut lines).take(MAX_LINE as u64 + 1);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > MAX_LINE => {
                let refused = failure(
                    "invalid",
                    format!("a request line is at most {MAX_LINE} bytes"),
                );
                let _ = write.write_all(&refused).await;
                return;
            }
            Ok(_) => {}
        }
        let answer = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => answer(kernel, task, &timers, request).await,
            Err(e) => failure("invalid", format!("not a request: {e}")),
        };
        if write.write_all(&answer).await.is_err() {
            return;
        }
    }
}

fn failure(code: &'static str, message: String) -> Vec<u8> {
    let mut out = serde_json::to_vec(&serde_json::json!({ "error": Failure { code, message } }))
        .unwrap_or_default();
    out.push(b'\n');
    out
}

fn success<T: Serialize>(value: T) -> Vec<u8> {
    let mut out = serde_json::to_vec(&serde_json::json!({ "ok": value })).unwrap_or_default();
    out.push(b'\n');
    out
}

fn kernel_failure(e: KernelError) -> Vec<u8> {
    failure(e.code().as_str(), e.to_string())
}

async fn answer(
    kernel: &Kernel,
    task: &Task,
    timers: &nexus_kernel::TaskTimers,
    request: Request,
) -> Vec<u8> {
    let r: Result<Vec<u8>, KernelError> = async {
        Ok(match request {
            Request::Whoami => success(Whoami {
                principal: task.principal().to_string(),
                zone: task.zone().as_str(),
                pid: task.pid(),
            }),
            Request::PipeCreate { path, capacity } => {
                kernel.mkpipe(task, &path, capacity).await?;
                success(())
            }
            Request::PipeStat { path } => success(kernel.pipe_stat(task, &path)?),
            Request::PipeList { dir } => success(
                kernel
                    .pipe_list(task, &dir)?
                    .into_iter()
                    .map(|(path, stat)| PipeRow { path, stat })
                    .collect::<Vec<_>>(),
            ),
            Request::PipeRemove { path } => {
                kernel.remove_pipe(task, &path).await?;
                success(())
            }
            Request::Sleep { ms } => {
                let d = Duration::from_millis(ms).min(MAX_SLEEP);
                match timers.after(d) {
                    Ok(timer) => {
                        timer.wait().await;
                        success(())
                    }
                    Err(e) => failure("quota", e.to_string()),
                }
            }
        })
    }
    .await;
    r.unwrap_or_else(kernel_failure)
}
