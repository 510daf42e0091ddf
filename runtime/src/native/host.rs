//! Isolation level 0: the agent as a process on the host, with the task's
//! zone mounted through FUSE as its working directory. Weak isolation: the
//! process can do anything its host user can, the zone is only where it is
//! *meant* to work. What it does inside the zone is gated and audited as
//! the task, like any other agent's. Offered on the embedded default only
//! (a node never runs a client's command on its host).

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{NativeError, NativeIo, Outcome};
use crate::ops::run::deliver;
use crate::ops::Output;

/// Runs `command` in `zone_dir` to its end (or `timeout`).
pub async fn run(
    command: &[String],
    env: &[(String, String)],
    zone_dir: &Path,
    timeout: Option<Duration>,
    io: NativeIo<'_>,
    group: &OnceLock<u32>,
) -> Result<Outcome, NativeError> {
    let NativeIo { output, stdin } = io;
    let Some((program, args)) = command.split_first() else {
        return Err(NativeError::NoCommand);
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(zone_dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("NEXUS_ZONE_DIR", zone_dir)
        .env("NEXUS_SOCKET", zone_dir.join(super::api::SOCKET_NAME))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        // Its own process group: the run ends every process it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    if output.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|source| NativeError::Spawn {
        command: program.clone(),
        source,
    })?;
    // Whatever it left behind goes with it when the run ends, however it
    // ends (this future dropped included), as with a container's end.
    if let Some(pid) = child.id() {
        // The kernel socket serves this process group only.
        let _ = group.set(pid);
    }
    let group = ProcessGroup(child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // Its stdin, fed as it reads; end-of-file at the end of the bytes.
    let _feeding = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(to)) => {
            let feeding = tokio::spawn(crate::ops::run::feed(bytes, to));
            Some(super::container::AbortOnDrop::new(feeding))
        }
        _ => None,
    };
    let pumps = async {
        if let (Some(out), Some(err)) = (stdout, stderr) {
            tokio::join!(
                relay(out, output, Output::Stdout),
                relay(err, output, Output::Stderr)
            );
        }
    };
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let gone = async {
        match output {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    };
    let spawn_error = |source| NativeError::Spawn {
        command: program.clone(),
        source,
    };
    let ended = tokio::select! {
        status = async { pumps.await; child.wait().await } => Some(status.map_err(spawn_error)?),
        () = deadline => None,
        () = gone => None,
    };
    let Some(status) = ended else {
        // Killed and reaped, so nothing is left running.
        drop(group);
        let _ = child.kill().await;
        let timed_out = !output.is_some_and(|tx| tx.is_closed());
        return Ok(if timed_out {
            Outcome::TimedOut
        } else {
            Outcome::Abandoned
        });
    };
    drop(group);
    Ok(Outcome::Exited(exit_code(status)))
}

/// A shell's view of a status: the code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

async fn relay(
    mut from: impl AsyncRead + Unpin,
    to: Option<&mpsc::Sender<Output>>,
    kind: fn(Vec<u8>) -> Output,
) {
    let mut buf = vec![0; 32 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || !deliver(to, kind(buf[..n].to_vec())).await {
            return;
        }
    }
}

/// Kills a process group when dropped.
struct ProcessGroup(Option<u32>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let leader = self
            .0
            .and_then(|p| rustix::process::Pid::from_raw(p as i32));
        if let Some(pid) = leader {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}
