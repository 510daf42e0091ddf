//! The escape suite: `guests/escape` tries, one way per run, to get out of
//! its sandbox under the real `nexus run`. Every attempt must fail the right
//! way, and the host, the zone and other zones must be untouched.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nexus_tests::{guest, nexus};

struct Sandbox {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
    wasm: String,
}

impl Sandbox {
    fn new() -> Sandbox {
        let wasm = guest("guests/escape").to_str().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_owned();
        let s = Sandbox {
            _dir: dir,
            home,
            wasm,
        };
        assert!(s.nexus(&["zone", "create", "z1"]).status.success());
        assert!(s.nexus(&["zone", "create", "other"]).status.success());
        assert!(s
            .nexus(&["grant", "--zone", "z1", "agent:escape", "editor", "zone"])
            .status
            .success());
        let mut put = nexus(&s.home)
            .args(["fs", "put", "--zone", "z1", "-", "/secret.txt"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        put.stdin.take().unwrap().write_all(b"zone data").unwrap();
        assert!(put.wait().unwrap().success());
        s
    }

    fn nexus(&self, args: &[&str]) -> std::process::Output {
        nexus(&self.home).args(args).output().unwrap()
    }

    /// Runs the escape guest; returns (exit code, stdout, stderr).
    fn attempt(&self, flags: &[&str], case: &str) -> (i32, String, String) {
        let mut args = vec!["run", self.wasm.as_str(), "--zone", "z1"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", case]);
        let out = self.nexus(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`attempt`](Self::attempt) under GNU time; also the run's peak RSS
    /// in bytes.
    fn measured(&self, flags: &[&str], case: &str) -> (i32, String, String, u64) {
        let report = self.home.join("peak-rss");
        let mut args = vec!["run", self.wasm.as_str(), "--zone", "z1"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", case]);
        let out = std::process::Command::new("/usr/bin/time")
            .args(["-f", "%M", "-o"])
            .arg(&report)
            .arg(nexus_tests::nexus_bin())
            .args(&args)
            .env("NEXUS_HOME", &self.home)
            .output()
            .unwrap();
        let kib: u64 = std::fs::read_to_string(&report)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            kib << 10,
        )
    }

    /// The zone is as it was: consistent, and holding what it held.
    fn intact(&self) {
        let check = self.nexus(&["zone", "check", "z1"]);
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        assert_eq!(
            self.nexus(&["fs", "cat", "--zone", "z1", "/secret.txt"])
                .stdout,
            b"zone data"
        );
        let other = self.nexus(&["fs", "ls", "--zone", "other", "/"]);
        assert!(
            other.status.success() && other.stdout.is_empty(),
            "another zone changed"
        );
    }
}

fn line<'a>(out: &'a str, attempt: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{attempt}: ")))
        .unwrap_or_else(|| panic!("no {attempt:?} line in:\n{out}"))
}

#[test]
fn paths_never_leave_the_zone() {
    let s = Sandbox::new();
    let (code, out, err) = s.attempt(&[], "paths");
    assert_eq!(code, 0, "{err}");
    for p in ["/etc/passwd", "/proc/self/environ"] {
        assert_eq!(line(&out, &format!("read {p}")), "NotFound", "{out}");
    }
    // `..` may not climb above the directory it is resolved from, the
    // preopen `/` included (WASI's rule, stock's `not-permitted`).
    for p in ["../../../../etc/passwd", "/../../root", "../.."] {
        assert_eq!(
            line(&out, &format!("read {p}")),
            "PermissionDenied",
            "{out}"
        );
    }
    assert_eq!(line(&out, "list /../../.."), "PermissionDenied");
    assert_eq!(line(&out, "read long path"), "InvalidFilename");
    assert_eq!(line(&out, "create long name"), "InvalidFilename");
    // Links: an absolute target is refused (as stock); a relative one
    // that climbs is made, and following it out of the descriptor's
    // directory is refused (as stock: `not-permitted`).
    assert!(line(&out, "symlink").contains("not-permitted"), "{out}");
    assert_eq!(line(&out, "symlink climbing"), "ok");
    assert_eq!(line(&out, "read through climb"), "PermissionDenied");
    // A hard link is the zone's own file under another name.
    assert_eq!(line(&out, "hard link"), "ok");
    // As stock wasmtime-wasi 48 answers (its `open_at`): a directory is
    // not created by `open-at`, and the sync flags are refused.
    assert!(
        line(&out, "open directory|create").contains("\"invalid\""),
        "{out}"
    );
    assert!(
        line(&out, "open with sync").contains("\"unsupported\""),
        "{out}"
    );
    // An empty path names nothing.
    for attempt in ["open empty path", "stat empty path"] {
        assert!(line(&out, attempt).contains("\"no-entry\""), "{out}");
    }
    // The root directory may have its entries changed, not its bytes.
    let flags = line(&out, "root flags");
    assert!(flags.contains("MUTATE_DIRECTORY"), "{flags}");
    assert!(
        !flags.contains("| WRITE") && !flags.contains("(WRITE"),
        "{flags}"
    );
    s.intact();
}

/// Host memory an agent causes (pipe rings, HTTP fields, directory
/// listings) counts against its memory limit: the bombs stop at the
/// budget, and the process's peak RSS stays within the agent's memory
/// inside and its budget outside, above what a run that holds nothing
/// peaks at.
#[test]
fn host_memory_an_agent_causes_is_bounded_by_its_memory_limit() {
    const MIB: u64 = 1 << 20;
    let s = Sandbox::new();
    let (code, _, err, idle) = s.measured(&["--memory", "64MiB"], "env");
    assert_eq!(code, 0, "{err}");
    let within = |peak: u64, memory: u64| {
        assert!(
            peak < idle + 2 * memory + 64 * MIB,
            "peak RSS {} MiB (a run holding nothing: {} MiB)",
            peak / MIB,
            idle / MIB
        );
    };

    // 64 pipes of 16 MiB under --memory 32MiB stop at two.
    let (code, out, err, peak) = s.measured(&["--memory", "32MiB"], "pipebomb");
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "pipes held"), "2", "{out}");
    assert!(line(&out, "then").contains("quota"), "{out}");
    within(peak, 32 * MIB);

    // 96 header lists of 16 MiB under --memory 64MiB: the fourth would
    // pass the budget, and `wasi:http` fields have no such error, so the
    // agent traps with the reason.
    let (code, out, err, peak) = s.measured(&["--memory", "64MiB"], "fieldsbomb");
    assert_eq!(code, 125, "{out}{err}");
    assert!(
        err.contains("HTTP fields of") && err.contains("would pass this agent's host memory"),
        "{err}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("fields held")).count(),
        3
    );
    within(peak, 64 * MIB);

    // Open directory streams, each holding up to a page of long names.
    let (code, out, err, peak) = s.measured(&["--memory", "32MiB"], "dirbomb");
    assert_eq!(code, 0, "{err}");
    let held = line(&out, "listings held");
    let (n, then) = held.split_once(" then ").unwrap();
    let n: u64 = n.parse().unwrap();
    assert!(n > 100 && n < 1000, "{held}");
    assert_eq!(then, "QuotaExceeded", "{held}");
    within(peak, 32 * MIB);

    // File streams, each reading 1 MiB ahead: as many as the budget holds
    // (unbounded, 1,000 streams held 1.1 GB), then the read fails.
    let (code, out, err, peak) = s.measured(&["--memory", "32MiB"], "streambomb");
    assert_eq!(code, 0, "{err}");
    let held = line(&out, "streams held");
    let (n, then) = held.split_once(" then ").unwrap();
    let n: u64 = n.parse().unwrap();
    assert!((16..=32).contains(&n), "{held}");
    assert!(
        then.contains("a file stream's read buffer")
            && then.contains("would pass this agent's host memory"),
        "{held}"
    );
    within(peak, 32 * MIB);
    s.intact();
}

/// A zone's quota bounds what its agents can store: the write that would
/// pass it fails with no-space (ENOSPC), as a full disk would.
#[test]
fn an_agent_cannot_fill_the_disk_past_its_zone_quota() {
    let s = Sandbox::new();
    let set = s.nexus(&["zone", "quota", "z1", "--bytes", "1MiB", "--inodes", "100"]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let (code, out, err) = s.attempt(&[], "fill");
    assert_eq!(code, 0, "{err}");
    let filled = line(&out, "filled");
    let (n, then) = filled.split_once(" then ").unwrap();
    // Through std, wasi-libc reports a stream's failure as EIO; the
    // descriptor's own write carries the code.
    assert_eq!(then, "Uncategorized", "{out}");
    assert!(
        line(&out, "descriptor write").contains("insufficient-space"),
        "{out}"
    );
    assert!(n.parse::<u64>().unwrap() <= 1 << 20, "{out}");
    // A directory holds no bytes: the byte quota does not refuse it.
    assert_eq!(line(&out, "mkdir"), "ok", "{out}");
    let shown = s.nexus(&["zone", "quota", "z1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert!(v["usage"]["bytes"].as_u64().unwrap() <= 1 << 20, "{v}");
    // Lifting the limit lets the zone grow again.
    let lift = s.nexus(&["zone", "quota", "z1", "--bytes", "none"]);
    assert!(lift.status.success());
    let (_, out, _) = s.attempt(&[], "names");
    assert_eq!(out.matches(": ok").count(), 3, "{out}");
    s.intact();
}

/// Names an agent chose reach the operator's terminal only escaped: a
/// newline, an escape sequence or a right-to-left override in a file
/// name cannot forge lines, retitle the terminal or disguise a name.
#[test]
fn hostile_names_are_shown_escaped() {
    let s = Sandbox::new();
    let (code, out, err) = s.attempt(&[], "names");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches(": ok").count(), 3, "{out}");
    let raw = |b: &[u8]| {
        b.iter().any(|c| *c == 0x1b || *c == 0x07)
            || b.windows(3).any(|w| w == "\u{202e}".as_bytes())
    };
    let ls = s.nexus(&["fs", "ls", "--zone", "z1", "/"]);
    assert!(ls.status.success());
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(!raw(&ls.stdout), "{text:?}");
    for shown in ["a\\nb", "\\u{1b}]0;pwned\\u{7}", "evil\\u{202e}txt.exe"] {
        assert!(text.contains(shown), "{shown} in {text}");
    }
    // One line per entry: the newline in a name forged none.
    assert_eq!(text.lines().count(), 4, "{text}");
    let audit = s.nexus(&["audit", "tail", "--zone", "z1"]);
    assert!(
        !raw(&audit.stdout),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let cat = s.nexus(&["fs", "cat", "--zone", "z1", "/\x1b]0;pwned\x07/x"]);
    assert!(
        !raw(&cat.stderr),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    s.intact();
}

#[test]
fn the_network_is_denied() {
    let s = Sandbox::new();
    let (code, out, err) = s.attempt(&[], "net");
    assert_eq!(code, 0, "{err}");
    for attempt in ["tcp connect", "tcp bind", "udp bind", "resolve"] {
        assert_eq!(line(&out, attempt), "PermissionDenied", "{out}");
    }
    assert_eq!(line(&out, "http"), "ErrorCode::HttpRequestDenied", "{out}");
}

#[test]
fn the_host_environment_does_not_leak() {
    let s = Sandbox::new();
    // Set in nexus's own environment: the agent must not see it.
    let out = nexus(&s.home)
        .env("HOST_SECRET", "leaked")
        .args([
            "run",
            &s.wasm,
            "--zone",
            "z1",
            "--env",
            "ONLY=this",
            "--",
            "env",
            "x",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(line(&out, "env"), "ONLY=this");
    assert_eq!(line(&out, "args"), "env,x");
}

#[test]
fn descriptors_and_reads_are_bounded() {
    let s = Sandbox::new();
    let (code, out, err) = s.attempt(&[], "fds");
    assert_eq!(code, 0, "{err}");
    // 1,024 descriptors, one of them the preopen; then an error, not a trap.
    assert_eq!(line(&out, "fds"), "1023 then OutOfMemory");
    assert_eq!(line(&out, "after closing"), "ok");
    let (code, out, err) = s.attempt(&[], "bigread");
    assert_eq!(code, 0, "{err}");
    assert_eq!(line(&out, "read 1 GiB"), "got 16777216 bytes, eof false");
    s.intact();
}

#[test]
fn a_tight_loop_is_killed_at_its_timeout() {
    let s = Sandbox::new();
    // Compile once first, so the timing below is the guest's, not cranelift's.
    assert_eq!(s.attempt(&[], "env").0, 0);
    let started = Instant::now();
    let (code, _, err) = s.attempt(&["--timeout", "1s"], "loop");
    let took = started.elapsed();
    assert_eq!(code, 124, "{err}");
    assert!(err.contains("ran past its 1s timeout"), "{err}");
    // The epoch deadline stopped the guest (124, with the timeout's
    // message); a loop left running would never end. The bound below only
    // says "not left running": process start and compilation on a busy
    // machine are in it, so it is far from the timeout on purpose.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let (code, _, err) = s.attempt(&["--fuel", "100000"], "loop");
    assert_eq!(code, 125);
    assert!(err.contains("out of fuel"), "{err}");
    s.intact();
}

#[test]
fn a_memory_bomb_hits_its_limit() {
    let s = Sandbox::new();
    let (code, out, err) = s.attempt(&["--memory", "64MiB"], "membomb");
    assert_eq!(code, 125, "{err}");
    assert!(err.contains("agent trapped"), "{err}");
    let held = out.lines().filter(|l| l.starts_with("holding")).count();
    assert!(held <= 4, "held {held} × 16 MiB under a 64 MiB limit");
    s.intact();
}

#[test]
fn a_wasip1_module_runs_on_the_same_kernel_filesystem() {
    let s = Sandbox::new();
    let p1 = nexus_tests::guest_for("guests/escape", "wasm32-wasip1");
    let mut bytes = [0u8; 8];
    use std::io::Read;
    std::fs::File::open(&p1)
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    assert_eq!(bytes, *b"\0asm\x01\0\0\0", "a core module, not a component");
    let p1 = p1.to_str().unwrap();
    let out = s.nexus(&["run", p1, "--zone", "z1", "--", "paths"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(line(&text, "read /etc/passwd"), "NotFound");
    assert_eq!(line(&text, "list /../../.."), "PermissionDenied");
    let out = s.nexus(&["run", p1, "--zone", "z1", "--", "net"]);
    // wasip1 has no sockets at all; the calls fail inside the guest.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.intact();
}
