//! Pipes and timers end to end: real agents (examples/pipeline and the
//! guests/pipes fault agent) run by the real `nexus` binary, and, for what
//! only the process itself can observe (the timer driver, a virtual clock),
//! by the runtime library in this process.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Principal};
use nexus_kernel::{Kernel, KernelConfig};
use nexus_runtime::agent::host::Stdio as AgentStdio;
use nexus_runtime::agent::host::{Host, RunLimits};
use nexus_tests::{guest, nexus, ok, run, text};

/// A data directory with zone z1 where `agents` are editors.
fn zone_for(agents: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["zone", "create", "z1"]);
    for a in agents {
        ok(dir.path(), &["grant", "--zone", "z1", a, "editor", "zone"]);
    }
    dir
}

fn mkpipe(home: &Path, path: &str, capacity: &str) {
    ok(
        home,
        &[
            "pipe",
            "create",
            "--zone",
            "z1",
            path,
            "--capacity",
            capacity,
        ],
    );
}

/// `nexus run AGENT ARGS` with `--with COMPANION` beside it, in zone z1.
fn run_pair(home: &Path, agent: &str, args: &[&str], companion: &str) -> Output {
    let mut all = vec![
        "run",
        agent,
        "--zone",
        "z1",
        "--timeout",
        "20s",
        "--with",
        companion,
        "--",
    ];
    all.extend_from_slice(args);
    run(home, &all)
}

/// The pipeline example's producer (`jobs` jobs) with `companions` beside it.
fn pipeline(home: &Path, producer: &Path, companions: &[String], jobs: &str) -> Output {
    let mut all = vec![
        "run",
        producer.to_str().unwrap(),
        "--zone",
        "z1",
        "--timeout",
        "60s",
    ];
    for c in companions {
        all.extend(["--with", c.as_str()]);
    }
    all.extend(["--", jobs]);
    run(home, &all)
}

fn stat_json(home: &Path, path: &str) -> serde_json::Value {
    serde_json::from_str(&ok(home, &["pipe", "stat", "--zone", "z1", path, "--json"])).unwrap()
}

#[test]
fn the_pipeline_example_runs_producer_and_consumer_together() {
    let producer = guest("examples/pipeline/producer");
    let consumer = guest("examples/pipeline/consumer");
    let dir = zone_for(&["agent:producer", "agent:consumer"]);
    let home = dir.path();
    let out = pipeline(home, &producer, &[consumer.display().to_string()], "20000");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("producer: sent 20000 jobs"), "{stdout}");
    let n: u128 = 20000;
    let sum = n * (n + 1) * (2 * n + 1) / 6;
    assert!(
        stdout.contains(&format!("consumer: 20000 jobs, sum of squares {sum}")),
        "{stdout}"
    );
    let results = ok(home, &["fs", "cat", "--zone", "z1", "/output/results.txt"]);
    assert_eq!(results.lines().count(), 20001);
    assert!(results.contains("job 19999 -> 399960001\n"));
    // Everything written was read; nobody is attached any more.
    let s = stat_json(home, "/pipes/jobs");
    let bytes: u64 = (1..=20000u64)
        .map(|i| format!("job {i}\n").len() as u64)
        .sum();
    assert_eq!(s["bytes_in"], bytes);
    assert_eq!(s["bytes_out"], bytes);
    assert_eq!(s["occupancy"], 0);
    assert_eq!(s["readers"], 0);
    assert_eq!(s["writers"], 0);
    let ls = ok(home, &["pipe", "ls", "--zone", "z1"]);
    assert!(ls.contains("/pipes/jobs") && ls.contains("65536"), "{ls}");
}

/// Invariant 16: a write up to the atomic size is never split. libc's
/// `write` takes only what `check-write` grants, so the grant must cover a
/// whole atomic write or be nothing (the writer then waits).
#[test]
fn small_writes_into_a_full_pipe_are_never_split() {
    let pipes = guest("guests/pipes");
    let dir = zone_for(&["agent:pipes"]);
    let home = dir.path();
    mkpipe(home, "/p", "95B");
    let reader = format!("{} read-all /p", pipes.display());
    let out = run_pair(
        home,
        pipes.to_str().unwrap(),
        &["lines", "/p", "2000", "10"],
        &reader,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("wrote 2000 lines, 0 short"), "{stdout}");
    assert!(
        stdout.contains("read 20000 bytes to end-of-file"),
        "{stdout}"
    );
}

/// Two producers of the pipeline example feed one consumer: every line
/// arrives whole (the consumer refuses a garbled one).
#[test]
fn two_producers_never_interleave_their_lines() {
    let producer = guest("examples/pipeline/producer");
    let consumer = guest("examples/pipeline/consumer");
    let dir = zone_for(&["agent:producer", "agent:consumer"]);
    let home = dir.path();
    let companions = [
        format!("{} 10000", producer.display()),
        consumer.display().to_string(),
    ];
    let out = pipeline(home, &producer, &companions, "10000");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let n: u128 = 10000;
    let sum = 2 * (n * (n + 1) * (2 * n + 1) / 6);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("consumer: 20000 jobs, sum of squares {sum}")),
        "{stdout}"
    );
}

#[test]
fn a_writer_whose_reader_left_gets_broken_pipe_and_a_dead_writer_means_eof() {
    let pipes = guest("guests/pipes");
    let p = pipes.to_str().unwrap();
    let dir = zone_for(&["agent:pipes"]);
    let home = dir.path();
    mkpipe(home, "/p", "4KiB");
    let reader = format!("{p} read-some /p 1000");
    let out = run_pair(home, p, &["write-until-broken", "/p"], &reader);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("read 1000 bytes, closing"), "{stdout}");
    assert!(stdout.contains(": BrokenPipe"), "{stdout}");

    // The writer traps after writing: the reader sees all of it, then EOF
    // (not a hang); nexus reports the trap.
    mkpipe(home, "/d", "64KiB");
    let reader = format!("{p} read-all /d");
    let out = run_pair(home, p, &["write-then-trap", "/d", "10000"], &reader);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("read 10000 bytes to end-of-file"));
}

#[test]
fn a_flood_stops_at_capacity_and_the_gate_guards_pipes() {
    let pipes = guest("guests/pipes");
    let p = pipes.to_str().unwrap();
    let dir = zone_for(&["agent:pipes"]);
    let home = dir.path();
    mkpipe(home, "/f", "10000");
    let out = ok(home, &["run", p, "--zone", "z1", "--", "flood", "/f", "0"]);
    assert!(
        out.contains("flooded 10000 bytes, occupancy 10000, capacity 10000"),
        "{out}"
    );
    // A write that leaves the pipe nearly full returns at once, though
    // nobody reads: the writer waits for room, never for more than it needs.
    mkpipe(home, "/nearly", "4KiB");
    // ... nor when it fills the pipe to the last byte.
    for n in ["4000", "96"] {
        let args = [
            "run",
            p,
            "--zone",
            "z1",
            "--timeout",
            "10s",
            "--",
            "write",
            "/nearly",
            n,
        ];
        let out = ok(home, &args);
        assert!(out.contains(&format!("wrote {n}")), "{out}");
    }
    // The flood is all there, and `pipe cat` drains it (durably).
    let cat = run(home, &["pipe", "cat", "--zone", "z1", "/f"]);
    assert_eq!(cat.stdout, vec![b'z'; 10000]);
    assert_eq!(stat_json(home, "/f")["occupancy"], 0);

    // An agent with only `viewer` may not write, and is told so.
    mkpipe(home, "/ro", "100");
    ok(
        home,
        &["grant", "--zone", "z1", "agent:reader", "viewer", "zone"],
    );
    let out = run(
        home,
        &[
            "--as",
            "agent:reader",
            "run",
            p,
            "--zone",
            "z1",
            "--",
            "flood",
            "/ro",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("open failed: access"),
        "{}",
        text(&out.stdout)
    );

    // Bad input on the command line.
    let bad = run(
        home,
        &[
            "pipe",
            "create",
            "--zone",
            "z1",
            "/big",
            "--capacity",
            "1GiB",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("capacity"),
        "{}",
        text(&bad.stderr)
    );
    let not_pipe = run(home, &["pipe", "stat", "--zone", "z1", "/"]);
    assert!(text(&not_pipe.stderr).contains("not a pipe"));
    ok(home, &["pipe", "rm", "--zone", "z1", "/ro"]);
    assert_eq!(
        run(home, &["pipe", "stat", "--zone", "z1", "/ro"])
            .status
            .code(),
        Some(3)
    );
}

#[test]
fn synced_bytes_survive_sigkill_of_the_node() {
    let pipes = guest("guests/pipes");
    let dir = zone_for(&["agent:pipes"]);
    let home = dir.path();
    mkpipe(home, "/q", "1MiB");
    let mut child = nexus(home)
        .args(["run", pipes.to_str().unwrap(), "--zone", "z1", "--"])
        .args(["write-sync-hang", "/q", "300000", "5000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(line, "synced");
    child.kill().unwrap(); // SIGKILL: no clean shutdown
    child.wait().unwrap();
    let cat = run(home, &["pipe", "cat", "--zone", "z1", "/q"]);
    assert!(cat.status.success(), "{}", text(&cat.stderr));
    // Every synced byte is there; of the unsynced ones, a prefix may be
    // (the background checkpoint may have saved them before the kill).
    let got = cat.stdout;
    assert!(
        got.len() >= 300_000 && got.len() <= 305_000,
        "{} bytes",
        got.len()
    );
    assert!(got[..300_000].iter().all(|b| *b == b's'));
    assert!(got[300_000..].iter().all(|b| *b == b'u'));
    let check = ok(home, &["zone", "check", "z1"]);
    assert_eq!(check.lines().last(), Some("consistent"), "{check}");
    assert!(
        check.contains("consistent") || check.contains("ok"),
        "{check}"
    );
}

#[test]
fn timer_limits_stop_the_hog_and_not_its_neighbour() {
    let pipes = guest("guests/pipes");
    let p = pipes.to_str().unwrap();
    let dir = zone_for(&["agent:pipes"]);
    let home = dir.path();
    let out = ok(home, &["run", p, "--zone", "z1", "--", "timer-hog"]);
    assert!(
        out.contains("held 4096 timers, then: too many timers (usage 4096/4096)"),
        "{out}"
    );
    assert!(out.contains("after dropping them: 0 live"), "{out}");
    // wasi:clocks cannot return an error: the hog is stopped with a clear
    // trap, while the agent beside it sleeps and finishes normally.
    let neighbour = format!("{p} sleep 200");
    let out = run(
        home,
        &[
            "run",
            p,
            "--zone",
            "z1",
            "--timeout",
            "20s",
            "--with",
            &neighbour,
            "--",
            "clock-hog",
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("too many timers"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("slept 2"),
        "{}",
        text(&out.stdout)
    );
    // An interval does not drift.
    let out = ok(home, &["run", p, "--zone", "z1", "--", "ticks", "20", "10"]);
    assert!(out.starts_with("10 ticks in "), "{out}");
}

/// Kernel + host in this process, on the given clock.
fn in_process(virtual_clock: bool) -> (tempfile::TempDir, Arc<Kernel>, Host) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = KernelConfig::embedded(dir.path());
    cfg.virtual_clock = virtual_clock;
    let k = Arc::new(Kernel::open(cfg).unwrap());
    let host = Host::new(&dir.path().join("cache"), false, 64 << 20).unwrap();
    (dir, k, host)
}

async fn agent_zone(k: &Kernel) -> nexus_kernel::Task {
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    k.create_zone(&owner, &z1).await.unwrap();
    k.spawn_task(owner, &z1, Capabilities::ALL).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_virtual_clock_an_hour_of_sleep_takes_no_time() {
    let pipes = guest("guests/pipes");
    let (_dir, k, host) = in_process(true);
    let task = agent_zone(&k).await;
    let pre = host.prepare(&host.load(&pipes).unwrap()).unwrap();
    let started = Instant::now();
    let argv: Vec<String> = ["pipes", "sleep", "3600000"].map(String::from).to_vec();
    let run = {
        let k = k.clone();
        tokio::spawn(async move {
            let limits = RunLimits::default();
            let code = host
                .run(&pre, k, task, &argv, &[], &limits, AgentStdio::Inherit)
                .await;
            (host, code)
        })
    };
    // Nothing moves the clock but the test: the agent waits until the
    // driver holds its timer, then an hour passes in one step.
    while k.timers().pending() == 0 {
        assert!(!run.is_finished(), "the agent finished without sleeping");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    k.timers().advance(Duration::from_secs(3599));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!run.is_finished(), "woke a second early");
    k.timers().advance(Duration::from_secs(1));
    let (_host, code) = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("woke")
        .unwrap();
    assert_eq!(code.unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(k.timers().pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_task_leaves_no_timer_behind() {
    let pipes = guest("guests/pipes");
    let (_dir, k, host) = in_process(false);
    let task = agent_zone(&k).await;
    let pre = host.prepare(&host.load(&pipes).unwrap()).unwrap();
    let argv: Vec<String> = ["pipes", "sleep-hold", "1000", "600000"]
        .map(String::from)
        .to_vec();
    let limits = RunLimits {
        timeout: Some(Duration::from_millis(500)),
        ..RunLimits::default()
    };
    let r = host
        .run(
            &pre,
            k.clone(),
            task,
            &argv,
            &[],
            &limits,
            AgentStdio::Inherit,
        )
        .await;
    assert!(
        matches!(r, Err(nexus_runtime::agent::host::RunError::Timeout(_))),
        "{r:?}"
    );
    // 1,000 held timers and the sleep's own: all cancelled with the store.
    assert_eq!(k.timers().pending(), 0);
}
