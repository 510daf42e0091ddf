//! Drives pipes and timers into their edge cases for the end-to-end tests.
//! Each subcommand prints one line the test checks.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use nexus_guest::pipe::Pipe;
use nexus_guest::raw::wasi::clocks::monotonic_clock;
use nexus_guest::{exit, timer};

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_else(|| {
        eprintln!("missing argument {i}");
        exit(2)
    })
}

fn num(i: usize) -> u64 {
    arg(i).parse().unwrap_or_else(|_| {
        eprintln!("argument {i} is not a number");
        exit(2)
    })
}

fn writer(path: &str) -> File {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| {
            println!("open failed: {:?}", e.kind());
            exit(3)
        })
}

fn main() {
    match arg(1).as_str() {
        // Writes until the readers are gone; reports how the write failed.
        "write-until-broken" => {
            let mut f = writer(&arg(2));
            let line = [b'x'; 100];
            let mut sent = 0u64;
            loop {
                match f.write_all(&line) {
                    Ok(()) => sent += 100,
                    Err(e) => {
                        println!("write failed after {sent} bytes: {:?}", e.kind());
                        exit(if e.kind() == ErrorKind::BrokenPipe {
                            0
                        } else {
                            1
                        });
                    }
                }
            }
        }
        // Writes N bytes with std::fs and exits.
        "write" => {
            let mut f = writer(&arg(2));
            f.write_all(&vec![b'w'; num(3) as usize])
                .unwrap_or_else(|e| {
                    println!("write failed: {:?}", e.kind());
                    exit(1)
                });
            println!("wrote {}", num(3));
        }
        // Writes N lines of SIZE bytes, each with one `write()` call (no
        // retry), and counts the calls that wrote less than the whole line.
        "lines" => {
            let mut f = writer(&arg(2));
            let (n, size) = (num(3), num(4) as usize);
            let mut line = vec![b'l'; size];
            if let Some(last) = line.last_mut() {
                *last = b'\n';
            }
            let mut short = 0;
            for _ in 0..n {
                match f.write(&line) {
                    Ok(w) if w == size => {}
                    Ok(_) => short += 1,
                    Err(e) => {
                        println!("write failed: {:?}", e.kind());
                        exit(1)
                    }
                }
            }
            println!("wrote {n} lines, {short} short");
        }
        // Reads to end-of-file with std::fs.
        "read-all" => {
            let mut f = File::open(arg(2)).unwrap_or_else(|e| {
                println!("open failed: {:?}", e.kind());
                exit(3)
            });
            let mut buf = Vec::new();
            match f.read_to_end(&mut buf) {
                Ok(n) => println!("read {n} bytes to end-of-file"),
                Err(e) => {
                    println!("read failed: {:?}", e.kind());
                    exit(1)
                }
            }
        }
        // Reads N bytes, then closes its end.
        "read-some" => {
            let p = Pipe::reader(&arg(2)).unwrap_or_else(|e| {
                println!("open failed: {e}");
                exit(3)
            });
            let want = num(3) as usize;
            let mut got = 0;
            while got < want {
                match p.read(want - got) {
                    Ok(Some(d)) => got += d.len(),
                    Ok(None) => break,
                    Err(e) => {
                        println!("read failed: {e}");
                        exit(1)
                    }
                }
            }
            println!("read {got} bytes, closing");
        }
        // Writes N bytes, then dies without closing anything.
        "write-then-trap" => {
            let mut f = writer(&arg(2));
            f.write_all(&vec![b'y'; num(3) as usize])
                .unwrap_or_else(|e| {
                    println!("write failed: {:?}", e.kind());
                    exit(1)
                });
            println!("wrote, now trapping");
            std::process::abort();
        }
        // Writes N bytes and syncs them, then M more unsynced, then hangs
        // (the test kills the node).
        "write-sync-hang" => {
            let mut f = writer(&arg(2));
            let ok = f
                .write_all(&vec![b's'; num(3) as usize])
                .and_then(|()| f.sync_all())
                .and_then(|()| f.write_all(&vec![b'u'; num(4) as usize]));
            if let Err(e) = ok {
                println!("write failed: {:?}", e.kind());
                exit(1)
            }
            println!("synced");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        // Non-blocking writes until the pipe is full.
        "flood" => {
            let p = Pipe::writer(&arg(2)).unwrap_or_else(|e| {
                println!("open failed: {e}");
                exit(3)
            });
            let chunk = vec![b'z'; 1000];
            let mut sent = 0;
            loop {
                match p.try_write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.is_would_block() => break,
                    Err(e) => {
                        println!("write failed: {e}");
                        exit(1)
                    }
                }
            }
            let s = p.stat();
            println!(
                "flooded {sent} bytes, occupancy {}, capacity {}",
                s.occupancy, s.capacity
            );
            // Stays attached so a test can see it blocking other writers.
            timer::sleep(Duration::from_millis(num(3))).ok();
        }
        // Holds timers from nexus:kernel/timer until the limit refuses one.
        "timer-hog" => {
            let mut held = Vec::new();
            loop {
                match timer::after(Duration::from_secs(3600)) {
                    Ok(t) => held.push(t),
                    Err(e) => {
                        let (live, limit) = timer::usage();
                        println!(
                            "held {} timers, then: {e} (usage {live}/{limit})",
                            held.len()
                        );
                        break;
                    }
                }
            }
            drop(held);
            let (live, _) = timer::usage();
            println!("after dropping them: {live} live");
        }
        // Holds wasi:clocks subscriptions, which cannot report an error.
        "clock-hog" => {
            let mut held = Vec::new();
            loop {
                held.push(monotonic_clock::subscribe_duration(3_600_000_000_000));
                if held.len() % 1000 == 0 {
                    println!("holding {}", held.len());
                }
            }
        }
        // Holds N timers and sleeps MS milliseconds with std.
        "sleep-hold" => {
            let held: Vec<_> = (0..num(2))
                .map(|_| timer::after(Duration::from_secs(3600)).expect("a timer"))
                .collect();
            println!("holding {} timers", held.len());
            std::thread::sleep(Duration::from_millis(num(3)));
            println!("woke");
        }
        // Reads stdin to its end; prints its length and FNV-1a hash.
        "stdin-sum" => {
            let mut data = Vec::new();
            std::io::stdin().read_to_end(&mut data).unwrap_or_else(|e| {
                println!("stdin failed: {:?}", e.kind());
                exit(1)
            });
            let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            println!("{} bytes, fnv {hash:016x}", data.len());
        }
        // Says it is waiting, then waits until PATH exists (the test makes
        // it only after it has read that line).
        "wait-for" => {
            let path = arg(2);
            println!("waiting for {path}");
            while std::fs::metadata(&path).is_err() {
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("found {path}");
        }
        // Sleeps with std, reporting the kernel clock's view of how long.
        "sleep" => {
            let start = timer::now();
            std::thread::sleep(Duration::from_millis(num(2)));
            println!("slept {} ms", (timer::now() - start) / 1_000_000);
        }
        // An interval that fires N times.
        "ticks" => {
            let every = Duration::from_millis(num(2));
            let iv = timer::Interval::new(every).expect("an interval");
            let start = timer::now();
            let mut n = 0;
            while n < num(3) {
                n += iv.tick().expect("a tick");
            }
            println!("{n} ticks in {} ms", (timer::now() - start) / 1_000_000);
        }
        other => {
            eprintln!("unknown command {other}");
            exit(2)
        }
    }
}
