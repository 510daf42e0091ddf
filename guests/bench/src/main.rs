//! `bench noop`: returns at once (the cost of a spawn).
//! `bench io DIR N`: stats, reads and writes N 4 KiB files in DIR (`DIR/fI`
//! must exist), timing each phase with the guest's own monotonic clock,
//! and writes `stat_ns read_ns write_ns` to `DIR/results.txt`. The same
//! binary runs on the kernel and on a host directory, so the two compare.

use std::fs;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("noop") => {}
        Some("io") => {
            let dir = args.get(2).expect("DIR");
            let n: usize = args.get(3).and_then(|s| s.parse().ok()).expect("N");
            let t = Instant::now();
            for i in 0..n {
                std::hint::black_box(fs::metadata(format!("{dir}/f{i}")).expect("stat"));
            }
            let stat = t.elapsed().as_nanos();
            let t = Instant::now();
            for i in 0..n {
                std::hint::black_box(fs::read(format!("{dir}/f{i}")).expect("read"));
            }
            let read = t.elapsed().as_nanos();
            let block = vec![42u8; 4096];
            let t = Instant::now();
            for i in 0..n {
                fs::write(format!("{dir}/w{i}"), &block).expect("write");
            }
            let write = t.elapsed().as_nanos();
            fs::write(
                format!("{dir}/results.txt"),
                format!("{stat} {read} {write}\n"),
            )
            .expect("results");
        }
        _ => {
            eprintln!("usage: bench noop | bench io DIR N");
            std::process::exit(2);
        }
    }
}
