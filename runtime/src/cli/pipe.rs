//! `nexus pipe create|stat|ls|cat|rm`: arguments in, the operation, output out.

use futures::StreamExt;
use nexus_kernel::PipeStat;
use tokio::io::AsyncWriteExt;

use super::args::PipeCmd;
use crate::ops::{OpError, OpResult, Ops, PipeEntry};
use crate::{output, units};

pub async fn run(ops: &dyn Ops, cmd: PipeCmd) -> OpResult {
    match cmd {
        PipeCmd::Create {
            zone,
            path,
            capacity,
        } => {
            let capacity = units::size(&capacity)? as u64;
            ops.pipe_create(&zone.zone, &path, capacity).await
        }
        PipeCmd::Stat { zone, path, json } => {
            let s = ops.pipe_stat(&zone.zone, &path).await?;
            if json {
                return output::json(&s);
            }
            print_stat(&path, &s);
            Ok(())
        }
        PipeCmd::Ls { zone, dir, json } => {
            print_list(&ops.pipe_list(&zone.zone, &dir).await?, json)
        }
        PipeCmd::Cat { zone, path, follow } => {
            let mut bytes = ops.pipe_cat(&zone.zone, &path, follow).await?;
            let mut out = tokio::io::stdout();
            while let Some(chunk) = bytes.next().await {
                let chunk = chunk?;
                out.write_all(&chunk)
                    .await
                    .map_err(|e| OpError::local("stdout", e))?;
                // Each chunk as it comes: `cat --follow` is watched live.
                out.flush().await.map_err(|e| OpError::local("stdout", e))?;
            }
            Ok(())
        }
        PipeCmd::Rm { zone, path } => ops.pipe_remove(&zone.zone, &path).await,
    }
}

/// A table, or JSON rows `{path, stat}`.
fn print_list(pipes: &[PipeEntry], json: bool) -> OpResult {
    if json {
        return output::json(&pipes);
    }
    println!(
        "{:<32} {:>10} {:>10} {:>12} {:>12} {:>7} {:>7}",
        "PATH", "CAPACITY", "OCCUPANCY", "BYTES IN", "BYTES OUT", "READERS", "WRITERS"
    );
    for PipeEntry { path, stat: s } in pipes {
        println!(
            "{:<32} {:>10} {:>10} {:>12} {:>12} {:>7} {:>7}",
            path, s.capacity, s.occupancy, s.bytes_in, s.bytes_out, s.readers, s.writers
        );
    }
    Ok(())
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
