//! `bench noop`: returns at once (the cost of a spawn).
//! `bench pipe-send PATH BYTES` / `bench pipe-recv PATH`: stream BYTES
//! through a pipe in 64 KiB writes and reads, with plain `std::fs`.
//! `bench ping OUT IN N RESULTS` / `bench pong IN OUT`: N one-byte round
//! trips over two pipes; `ping` writes `p50_ns p99_ns` to RESULTS.
//! `bench sleep-until UNIX_NS PIPE`: sleeps until a wall-clock instant (the
//! sleep itself is a monotonic-clock timer) and writes how late it woke,
//! in nanoseconds, as one 8-byte record into PIPE.
//! `bench io DIR N`: stats, reads and writes N 4 KiB files in DIR (`DIR/fI`
//! must exist), timing each phase with the guest's own monotonic clock,
//! and writes `stat_ns read_ns write_ns` to `DIR/results.txt`. The same
//! binary runs on the kernel and on a host directory, so the two compare.
//! `bench writes DIR`: the write path, each case ended by an `fsync` and
//! timed with the guest's clock: 5,000 appends of 62 bytes to one file;
//! 2,000 4 KiB writes at random pages of an 8 MiB file; a 32 MiB file
//! written in 1 MiB writes. Writes `append_ns random_ns sequential_ns` to
//! `DIR/writes.txt`.
//! `bench journal FILE`: appends 64-byte records forever, `sync_data` every
//! ten, printing `synced N` after each (the crash test's writer).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn writer(path: &str) -> File {
    OpenOptions::new().write(true).open(path).expect("open for writing")
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// Record `i` of the `journal` case.
fn journal_record(i: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..16].copy_from_slice(format!("{i:016x}").as_bytes());
    for (j, b) in r[16..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(j as u8);
    }
    r[63] = b'\n';
    r
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("noop") => {}
        Some("spin") => {
            println!("spinning");
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
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
        Some("writes") => {
            let dir = args.get(2).expect("DIR");
            let line = [b'x'; 61].iter().chain(b"\n").copied().collect::<Vec<u8>>();
            let t = Instant::now();
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("{dir}/log"))
                .expect("open the log");
            for _ in 0..5000 {
                log.write_all(&line).expect("append");
            }
            log.sync_all().expect("sync the log");
            let append = t.elapsed().as_nanos();

            let mut big = OpenOptions::new()
                .create(true)
                .read(true)
                .write(true)
                .open(format!("{dir}/big"))
                .expect("open the 8 MiB file");
            // Aperiodic bytes: equal chunks would be stored once.
            let mut x: u64 = 0x2545_F491_4F6C_DD1D;
            let fill: Vec<u8> = (0..8 << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            big.write_all(&fill).expect("fill");
            big.sync_all().expect("sync the fill");
            let page = vec![2u8; 4096];
            let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
            let t = Instant::now();
            for _ in 0..2000 {
                // xorshift: the same pages on every host.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % 2048) * 4096;
                big.seek(SeekFrom::Start(at)).expect("seek");
                big.write_all(&page).expect("write a page");
            }
            big.sync_all().expect("sync the pages");
            let random = t.elapsed().as_nanos();

            let mut block = vec![3u8; 1 << 20];
            let t = Instant::now();
            let mut seq = File::create(format!("{dir}/seq")).expect("create");
            for i in 0..32u64 {
                // Distinct blocks, as above.
                block[..8].copy_from_slice(&i.to_le_bytes());
                seq.write_all(&block).expect("write 1 MiB");
            }
            seq.sync_all().expect("sync");
            let sequential = t.elapsed().as_nanos();
            fs::write(
                format!("{dir}/writes.txt"),
                format!("{append} {random} {sequential}\n"),
            )
            .expect("results");
        }
        Some("journal") => {
            // Appends 64-byte records (record i is `i` as 16 hex digits,
            // then its bytes repeated), fsyncs every 10, and prints
            // `synced N` after each fsync: a crash test kills it anywhere.
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&args[2])
                .expect("open the journal");
            let mut out = std::io::stdout();
            for i in 0u64.. {
                log.write_all(&journal_record(i)).expect("append");
                if i % 10 == 9 {
                    log.sync_data().expect("sync");
                    writeln!(out, "synced {}", i + 1).expect("report");
                    out.flush().expect("report");
                }
            }
        }
        Some("pipe-send") => {
            let mut out = writer(&args[2]);
            let total: u64 = args[3].parse().expect("BYTES");
            let block = vec![1u8; 64 << 10];
            let mut sent = 0;
            while sent < total {
                let n = block.len().min((total - sent) as usize);
                out.write_all(&block[..n]).expect("write");
                sent += n as u64;
            }
        }
        Some("pipe-recv") => {
            let mut input = File::open(&args[2]).expect("open for reading");
            let mut buf = vec![0u8; 64 << 10];
            let mut got = 0u64;
            loop {
                match input.read(&mut buf).expect("read") {
                    0 => break,
                    n => got += n as u64,
                }
            }
            std::hint::black_box(got);
        }
        Some("ping") => {
            let mut out = writer(&args[2]);
            let mut input = File::open(&args[3]).expect("open for reading");
            let n: usize = args[4].parse().expect("N");
            let mut rtt = Vec::with_capacity(n);
            let mut b = [0u8; 1];
            for i in 0..n {
                let t = Instant::now();
                out.write_all(&[i as u8]).expect("ping");
                input.read_exact(&mut b).expect("pong");
                rtt.push(t.elapsed().as_nanos() as u64);
            }
            rtt.sort_unstable();
            let p = |q: f64| rtt[((n as f64 * q) as usize).min(n - 1)];
            fs::write(&args[5], format!("{} {}\n", p(0.5), p(0.99))).expect("results");
        }
        Some("pong") => {
            let mut input = File::open(&args[2]).expect("open for reading");
            let mut out = writer(&args[3]);
            let mut b = [0u8; 1];
            while input.read(&mut b).expect("read") == 1 {
                out.write_all(&b).expect("write");
            }
        }
        Some("sleep-until") => {
            let at: u64 = args[2].parse().expect("UNIX_NS");
            let mut out = writer(&args[3]);
            std::thread::sleep(Duration::from_nanos(at.saturating_sub(unix_ns())));
            let late = unix_ns().saturating_sub(at);
            out.write_all(&late.to_le_bytes()).expect("report");
        }
        _ => {
            eprintln!("usage: bench noop | io | writes | journal | pipe-send | pipe-recv | ping | pong | sleep-until");
            std::process::exit(2);
        }
    }
}
