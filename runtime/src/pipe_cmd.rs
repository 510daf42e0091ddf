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
        PipeCmd::Cat { zone, path, follow } => {
            cat(k, &acting.task(k, &zone.zone)?, &path, follow).await
        }
        PipeCmd::Rm { zone, path } => {
            let t = acting.task(k, &zone.zone)?;
            if k.lstat(&t, &path)?.kind != FileKind::Pipe {
                return Err(KernelError::Invalid(format!(
                    "{path} is not a pipe (use `nexus fs rm`)"
                ))
                .into());
            }
            k.unlink(&t, &path).await?;
            Ok(())
        }
    }
}

fn print_stat(path: &str, s: &PipeStat) {
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

/// Reads the pipe to stdout, consuming what it reads. Without `follow` it
/// stops when the pipe is empty; with it, at end-of-file (every writer gone).
async fn cat(k: &Kernel, t: &Task, path: &str, follow: bool) -> CliResult {
    let end = k.pipe_open(t, path, PipeMode::Read).await?;
    let mut out = std::io::stdout().lock();
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
        out.write_all(&chunk)
            .map_err(|e| CliError::local("stdout", e))?;
    }
    out.flush().map_err(|e| CliError::local("stdout", e))?;
    // What was read is consumed durably, not delivered again.
    k.pipe_sync(t, &end).await?;
    Ok(())
}
