//! Crash safety of the embedded node: a real `nexus stress` process is killed
//! with SIGKILL in the middle of a write storm, many times over. After each
//! kill, every write it acknowledged must be present and intact, and
//! `nexus zone check` must find the zone consistent. A SIGKILL leaves the
//! page cache intact, so what only a power loss would lose is watched
//! directly: every stored chunk is fsync'd, with its directory.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nexus_kernel::Capabilities;
use nexus_kernel::Subject;
use nexus_kernel::ZoneId;
use nexus_kernel::{Kernel, KernelConfig};
use nexus_tests::nexus;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 10;

/// Runs a storm, kills it after `after`, returns the acknowledged (path, hash).
fn storm_and_kill(
    home: &std::path::Path,
    round: usize,
    size: usize,
    after: Duration,
) -> Vec<(String, String)> {
    let concurrency = if size > 100_000 { 4 } else { 32 };
    let mut child = nexus(home)
        .args(["stress", "--zone", "z1", "--count", "100000000"])
        .args(["--concurrency", &concurrency.to_string()])
        .args([
            "--dir",
            &format!("/round{round}"),
            "--size",
            &size.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nexus stress");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| {
                let mut parts = l.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("ack"), Some(p), Some(h)) => Some((p.to_owned(), h.to_owned())),
                    _ => None,
                }
            })
            .collect::<Vec<_>>()
    });
    std::thread::sleep(after);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    reader.join().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = std::env::var("NEXUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    assert!(nexus(home)
        .args(["zone", "create", "z1"])
        .status()
        .unwrap()
        .success());
    let z1 = ZoneId::new("z1").unwrap();
    let mut total = 0;
    for round in 0..ROUNDS {
        // Small inline files, and multi-chunk ones that go through the object store.
        let size = if round % 3 == 2 {
            1_500_000
        } else {
            rng.gen_range(10..6000)
        };
        let after =
            Duration::from_millis(rng.gen_range(300..1200) * if size > 100_000 { 3 } else { 1 });
        let started = Instant::now();
        let acked = storm_and_kill(home, round, size, after);
        assert!(
            !acked.is_empty(),
            "round {round}: nothing acknowledged in {:?}",
            started.elapsed()
        );
        total += acked.len();

        let k = Kernel::open(KernelConfig::embedded(home)).expect("reopen after SIGKILL");
        // The zone's owner is the OS user who ran `nexus zone create`.
        let owner = k
            .zone_state(&z1)
            .unwrap()
            .all_tuples()
            .next()
            .unwrap()
            .unwrap()
            .subject;
        let Subject::Principal(owner) = owner else {
            panic!("owner is a principal")
        };
        let t = k.spawn_task(owner, &z1, Capabilities::ALL).unwrap();
        for (path, hash) in &acked {
            let h = k.resolve(&t, path, true).unwrap_or_else(|e| {
                panic!("round {round} (seed {seed}): acknowledged {path} lost: {e}")
            });
            let bytes = k.read(&t, &h, 0, 1 << 24).await.unwrap();
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                hash,
                "round {round} (seed {seed}): {path} corrupted"
            );
        }
        drop(k);
        let check = nexus(home)
            .args(["zone", "check", "z1", "--json"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "round {round} (seed {seed}): zone check failed: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    eprintln!("{ROUNDS} SIGKILLs, {total} acknowledged writes verified");
}

/// Record `i` of the bench guest's `journal` case.
fn journal_record(i: u64) -> Vec<u8> {
    let mut r = format!("{i:016x}").into_bytes();
    r.extend((16..63).map(|j| (i as u8).wrapping_add(j as u8 - 16)));
    r.push(b'\n');
    r
}

/// The file durability contract through an agent: a `nexus run` of a guest
/// appending records and syncing every ten is SIGKILLed anywhere; after
/// the restart, every record a `sync` acknowledged is there, and the file
/// is whole records, each intact (whatever else a write-out got out).
#[test]
fn what_an_agent_synced_survives_sigkill() {
    let seed: u64 = std::env::var("NEXUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let guest = nexus_tests::guest("guests/bench");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    for setup in [
        &["zone", "create", "z1"][..],
        &["grant", "--zone", "z1", "agent:bench", "editor", "zone"],
    ] {
        assert!(nexus(home).args(setup).status().unwrap().success());
    }
    for round in 0..4 {
        let journal = format!("/journal{round}");
        let mut child = nexus(home)
            .args(["run", guest.to_str().unwrap(), "--zone", "z1", "--"])
            .args(["journal", &journal])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill after a random number of acknowledged syncs.
        let wanted = rng.gen_range(5..300u64);
        let mut synced = 0;
        for line in stdout.lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("synced ") {
                synced = n.parse().unwrap();
                if synced >= wanted * 10 {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        assert!(synced > 0, "round {round}: nothing synced");

        let cat = nexus(home)
            .args(["fs", "cat", "--zone", "z1", &journal])
            .output()
            .unwrap();
        assert!(
            cat.status.success(),
            "{}",
            String::from_utf8_lossy(&cat.stderr)
        );
        let bytes = cat.stdout;
        assert_eq!(
            bytes.len() % 64,
            0,
            "round {round} (seed {seed}): a torn record"
        );
        let records = bytes.len() as u64 / 64;
        assert!(
            records >= synced,
            "round {round} (seed {seed}): {synced} records synced, {records} survived"
        );
        for (i, r) in bytes.chunks(64).enumerate() {
            assert_eq!(
                r,
                journal_record(i as u64),
                "round {round}: record {i} damaged"
            );
        }
        let check = nexus(home)
            .args(["zone", "check", "z1", "--deep"])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
}

/// The files a traced process fsync'd and the chunks it stored, from an
/// `strace -f` log (calls split across threads are joined first).
fn synced_and_stored(log: &str) -> (std::collections::HashSet<String>, Vec<String>) {
    let quoted = |s: &str, n: usize| s.split('"').nth(2 * n + 1).map(str::to_owned);
    let mut partial: std::collections::HashMap<&str, String> = Default::default();
    let (mut fds, mut synced, mut stored) = (
        std::collections::HashMap::new(),
        std::collections::HashSet::new(),
        Vec::new(),
    );
    for line in log.lines() {
        let Some((pid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        let whole = if let Some(start) = call.strip_suffix(" <unfinished ...>") {
            partial.insert(pid, start.to_owned());
            continue;
        } else if let Some(rest) = call.strip_prefix("<... ") {
            let Some((_, tail)) = rest.split_once(" resumed>") else {
                continue;
            };
            partial.remove(pid).unwrap_or_default() + tail
        } else {
            call.to_owned()
        };
        let Some((head, result)) = whole.rsplit_once(" = ") else {
            continue;
        };
        let (head, result) = (
            head.trim_end(),
            result.split_whitespace().next().unwrap_or(""),
        );
        if head.starts_with("openat(") {
            if let (Some(path), Ok(fd)) = (quoted(head, 0), result.parse::<i32>()) {
                fds.insert(fd, path);
            }
        } else if let Some(fd) = head
            .strip_prefix("fsync(")
            .or_else(|| head.strip_prefix("fdatasync("))
        {
            let fd: i32 = fd.trim_end_matches(')').trim().parse().unwrap_or(-1);
            if let (Some(path), "0") = (fds.get(&fd), result) {
                synced.insert(path.clone());
            }
        } else if head.starts_with("rename") && result == "0" {
            if let Some(to) = quoted(head, 1).filter(|t| t.contains("/content/chunks/")) {
                // A file fsync'd under a temporary name and then renamed
                // is durable under its new one (the rename itself is made
                // durable by the directory's fsync, checked separately).
                if quoted(head, 0).is_some_and(|from| synced.contains(&from)) {
                    synced.insert(to.clone());
                }
                stored.push(to);
            }
        }
    }
    (synced, stored)
}

/// Content is durable before anything names it: `put` fsyncs each chunk
/// file (before or after its rename into place) and the directory naming
/// it before it returns (and the command
/// naming the chunks is proposed only after). Watched with strace on a
/// real `nexus fs put` of three chunks.
#[test]
fn every_stored_chunk_is_fsynced_with_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    assert!(nexus(&home)
        .args(["zone", "create", "z1"])
        .status()
        .unwrap()
        .success());
    let local = dir.path().join("three-chunks");
    std::fs::write(&local, nexus_tests::pattern(3 << 20, 11)).unwrap();
    let log = dir.path().join("strace.log");
    let traced = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2",
        ])
        .arg(nexus_tests::nexus_bin())
        .args(["fs", "put"])
        .arg(&local)
        .args(["/three-chunks", "--zone", "z1"])
        .env("NEXUS_HOME", &home)
        .output()
        .expect("strace (scripts/setup installs it)");
    assert!(
        traced.status.success(),
        "{}",
        String::from_utf8_lossy(&traced.stderr)
    );
    let (synced, stored) = synced_and_stored(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(stored.len(), 3, "chunks stored: {stored:?}");
    for chunk in &stored {
        assert!(synced.contains(chunk), "{chunk} was never fsync'd");
        let parent = std::path::Path::new(chunk).parent().unwrap();
        assert!(
            synced.contains(parent.to_str().unwrap()),
            "the directory of {chunk} was never fsync'd"
        );
    }
}

/// A chunk damaged on disk (same length, other bytes: a flipped bit, or a
/// file planted under its name) is never served: reading it is an error,
/// `zone check` (by size) passes it and `zone check --deep` names it, and
/// the other chunks of the file still read.
#[test]
fn a_damaged_chunk_is_an_error_and_the_deep_check_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |args: &[&str]| nexus(&home).args(args).output().unwrap();
    assert!(run(&["zone", "create", "z1"]).status.success());
    let local = dir.path().join("two-chunks");
    let data = nexus_tests::pattern(2 << 20, 5);
    std::fs::write(&local, &data).unwrap();
    assert!(
        run(&["fs", "put", local.to_str().unwrap(), "/f", "--zone", "z1"])
            .status
            .success()
    );
    // The first chunk's file, by the hash of the file's first MiB.
    let hash = blake3::hash(&data[..1 << 20]).to_hex().to_string();
    let chunk = home.join("content/chunks").join(&hash[..2]).join(&hash);
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&chunk, &bytes).unwrap();

    let read = run(&["fs", "cat", "/f", "--zone", "z1"]);
    assert!(!read.status.success(), "a damaged chunk was served");
    let err = String::from_utf8_lossy(&read.stderr);
    assert!(err.contains("does not match its hash"), "{err}");
    assert!(
        read.stdout.len() < 1 << 20,
        "{} bytes of the damaged chunk reached the reader",
        read.stdout.len()
    );
    let shallow = run(&["zone", "check", "z1", "--json"]);
    assert!(
        shallow.status.success(),
        "{}",
        String::from_utf8_lossy(&shallow.stdout)
    );
    let deep = run(&["zone", "check", "z1", "--deep", "--json"]);
    assert!(!deep.status.success());
    let report = String::from_utf8_lossy(&deep.stdout);
    assert!(
        report.contains(&format!("({hash}) fails its hash")),
        "{report}"
    );
}
