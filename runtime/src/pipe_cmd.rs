//! `nexus pipe create|stat|ls|cat|rm`.

use std::io::Write;

use nexus_kernel::identity::Task;
use nexus_kernel::kernel::Kernel;
use nexus_kernel::pipe::{PipeMode, PipeRead, PipeStat};
use nexus_kernel::types::FileKind;
use nexus_kernel::KernelError;

use crate::cli::PipeCmd;
use crate::error::{CliError, CliResult};
use crate::session::Acting;
use crate::{output, units};

/// Bytes `nexus pipe cat` takes per read.
const CAT_CHUNK: usize = 64 << 10;

pub async fn run(k: &Kernel, acting: &Acting, cmd: PipeCmd) -> CliResult {
    match cmd {
        PipeCmd::Create {
            zone,
            path,
            capacity,
        } => {
            let t = acting.task(k, &zone.zone)?;
            k.mkpipe(&t, &path, units::size(&capacity)? as u64).await?;
            Ok(())
        }
        PipeCmd::Stat { zone, path, json } => {
            let s = k.pipe_stat(&acting.task(k, &zone.zone)?, &path)?;
            if json {
                return output::json(&s);
            }
            print_stat(&path, &s);
            Ok(())
        }
        PipeCmd::Ls { zone, dir, json } => {
            let pipes = k.pipe_list(&acting.task(k, &zone.zone)?, &dir)?;
            print_list(&pipes, json)
        }
        PipeCmd::Cat { zone, path, follow } => {
            let t = acting.task(k, &zone.zone)?;
            let mut out = std::io::stdout().lock();
            drain(k, &t, &path, follow, |chunk| {
                let written = out
                    .write_all(&chunk)
                    .and_then(|()| out.flush())
                    .map_err(|e| CliError::local("stdout", e));
                async move { written }
            })
            .await
        }
        PipeCmd::Rm { zone, path } => remove(k, &acting.task(k, &zone.zone)?, &path).await,
    }
}

/// `nexus pipe rm`: only a pipe.
pub async fn remove(k: &Kernel, t: &Task, path: &str) -> CliResult {
    if k.lstat(t, path)?.kind != FileKind::Pipe {
        return Err(
            KernelError::Invalid(format!("{path} is not a pipe (use `nexus fs rm`)")).into(),
        );
    }
    k.unlink(t, path).await?;
    Ok(())
}

/// `nexus pipe ls`: a table, or JSON rows `{path, stat}`.
pub fn print_list(pipes: &[(String, PipeStat)], json: bool) -> CliResult {
    if json {
        let rows: Vec<_> = pipes
            .iter()
            .map(|(p, s)| serde_json::json!({"path": p, "stat": s}))
            .collect();
        return output::json(&rows);
    }
    println!(
        "{:<32} {:>10} {:>10} {:>12} {:>12} {:>7} {:>7}",
        "PATH", "CAPACITY", "OCCUPANCY", "BYTES IN", "BYTES OUT", "READERS", "WRITERS"
    );
    for (p, s) in pipes {
        println!(
            "{:<32} {:>10} {:>10} {:>12} {:>12} {:>7} {:>7}",
            p, s.capacity, s.occupancy, s.bytes_in, s.bytes_out, s.readers, s.writers
        );
    }
    Ok(())
}

pub fn print_stat(path: &str, s: &PipeStat) {
    println!("path:      {path}");
    println!("zone:      {}", s.zone);
    println!("inode:     {}", s.ino);
    println!("capacity:  {}", s.capacity);
    println!("occupancy: {}", s.occupancy);
    println!("bytes in:  {}", s.bytes_in);
    println!("bytes out: {}", s.bytes_out);
    println!("readers:   {}", s.readers);
    println!("writers:   {}", s.writers);
    println!("unsynced:  {}", s.unsynced);
    for a in &s.attached {
        println!("attached:  pid {} {} ({:?})", a.pid, a.principal, a.mode);
    }
}

/// Reads the pipe, handing each chunk to `emit` and consuming what it
/// reads. Without `follow` it stops when the pipe is empty; with it, at
/// end-of-file (every writer gone).
pub async fn drain<F, Fut>(k: &Kernel, t: &Task, path: &str, follow: bool, mut emit: F) -> CliResult
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = CliResult>,
{
    let end = k.pipe_open(t, path, PipeMode::Read).await?;
    loop {
        let chunk = if follow {
            k.pipe_read(t, &end, CAT_CHUNK).await?
        } else {
            match k.pipe_try_read(t, &end, CAT_CHUNK)? {
                PipeRead::Data(d) => Some(d),
                PipeRead::WouldBlock | PipeRead::EndOfFile => None,
            }
        };
        let Some(chunk) = chunk else { break };
        emit(chunk).await?;
    }
    // What was read is consumed durably, not delivered again.
    k.pipe_sync(t, &end).await?;
    Ok(())
}
