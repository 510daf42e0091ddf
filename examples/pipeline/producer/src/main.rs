//! The producer: writes N jobs, one line each, into the pipe /pipes/jobs
//! with plain `std::fs` (a pipe opened by path is a FIFO), then syncs so
//! every job is durable before it exits.

use std::fs::{self, OpenOptions};
use std::io::Write;

use nexus_guest::{exit, pipe};

const PIPE: &str = "/pipes/jobs";

fn main() {
    let jobs: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: producer [JOBS]");
            exit(2);
        }
    };
    // The first of the two agents to get here creates the pipe.
    let created = fs::create_dir_all("/pipes")
        .map_err(|e| e.to_string())
        .and_then(|()| match pipe::create(PIPE, 64 << 10) {
            Err(e) if std::io::Error::from(e).kind() != std::io::ErrorKind::AlreadyExists => {
                Err(e.to_string())
            }
            _ => Ok(()),
        });
    if let Err(e) = created {
        eprintln!("producer: cannot create {PIPE}: {e}");
        exit(2);
    }
    let mut out = match OpenOptions::new().write(true).open(PIPE) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("producer: cannot open {PIPE}: {e}");
            exit(2);
        }
    };
    for i in 1..=jobs {
        // One line per write call (`writeln!` on an unbuffered file makes
        // several), well under the pipe's atomic size: lines from several
        // producers never interleave.
        let line = format!("job {i}\n");
        if let Err(e) = out.write_all(line.as_bytes()) {
            eprintln!("producer: writing job {i}: {e}");
            exit(1);
        }
    }
    if let Err(e) = out.sync_all() {
        eprintln!("producer: sync: {e}");
        exit(1);
    }
    println!("producer: sent {jobs} jobs");
}
