//! The consumer: reads jobs from /pipes/jobs with the SDK's `Pipe` until
//! every producer has closed, squares each job's number, and writes the
//! results to /output/results.txt. While waiting it reports progress once
//! a second, waiting on the pipe and a kernel interval timer together.

use std::fs;
use std::time::Duration;

use nexus_guest::pipe::Pipe;
use nexus_guest::{exit, poll, timer};

const PIPE: &str = "/pipes/jobs";

/// Opens the pipe, waiting (on kernel timers) for the producer to create it.
fn open() -> Pipe {
    for _ in 0..200 {
        match Pipe::reader(PIPE) {
            Ok(p) => return p,
            Err(e) if e.0.name() == "no-entry" => {
                let _ = timer::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                eprintln!("consumer: cannot open {PIPE}: {e}");
                exit(2);
            }
        }
    }
    eprintln!("consumer: {PIPE} never appeared");
    exit(2);
}

fn main() {
    let pipe = open();
    let ticks = match timer::Interval::new(Duration::from_secs(1)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("consumer: interval: {e}");
            exit(2);
        }
    };
    let mut pending = Vec::new();
    let mut report = String::new();
    let (mut count, mut sum) = (0u64, 0u128);
    loop {
        match pipe.try_read(64 << 10) {
            Ok(Some(bytes)) => pending.extend_from_slice(&bytes),
            Ok(None) => break,
            Err(e) if e.is_would_block() => {
                let (p, t) = match ticks.subscribe() {
                    Ok(t) => (pipe.subscribe(), t),
                    Err(e) => {
                        eprintln!("consumer: timer: {e}");
                        exit(2);
                    }
                };
                poll(&[&p, &t]);
                if ticks.take_ticks() > 0 {
                    println!("consumer: {count} jobs so far");
                }
                continue;
            }
            Err(e) => {
                eprintln!("consumer: reading {PIPE}: {e}");
                exit(1);
            }
        }
        // Whole lines only; a partial one waits for the rest.
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&pending[start..start + nl]).into_owned();
            start += nl + 1;
            let Some(n) = line
                .strip_prefix("job ")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                eprintln!("consumer: bad job line {line:?}");
                exit(1);
            };
            count += 1;
            sum += u128::from(n) * u128::from(n);
            report.push_str(&format!("job {n} -> {}\n", n * n));
        }
        pending.drain(..start);
    }
    report.push_str(&format!("total: {count} jobs, sum of squares {sum}\n"));
    if let Err(e) =
        fs::create_dir_all("/output").and_then(|()| fs::write("/output/results.txt", &report))
    {
        eprintln!("consumer: cannot write /output/results.txt: {e}");
        exit(2);
    }
    println!("consumer: {count} jobs, sum of squares {sum}");
}
