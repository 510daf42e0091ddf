//! Native agents through the real `nexus` binary: a Docker container
//! (isolation level 1, image built by scripts/native-image from this
//! machine's files) and a host process (level 0), each with its zone
//! mounted through FUSE and served by the kernel as its task. What the
//! container can reach and cannot, the gate's denials as EACCES, pipes as
//! FIFOs, limits, timeouts, and the cleanup after a SIGKILLed `nexus`.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nexus_tests::{nexus, ok, run, text};

const IMAGE: &str = "nexus-python";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The image the containers run, built once from this machine's files.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/native-image"))
            .arg(IMAGE)
            .output()
            .unwrap();
        assert!(out.status.success(), "native-image: {}", text(&out.stderr));
    });
    IMAGE
}

/// A data directory with zone z1, where `agent` may edit.
fn zone_for(agent: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["zone", "create", "z1"]);
    ok(
        dir.path(),
        &["grant", "--zone", "z1", agent, "editor", "zone"],
    );
    dir
}

/// `nexus run --image IMAGE --zone z1 [extra...] -- python3 -c CODE`.
fn python_in_container(home: &Path, extra: &[&str], code: &str) -> std::process::Output {
    let mut args = vec!["run", "--image", image(), "--zone", "z1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", "-c", code]);
    run(home, &args)
}

/// The containers a data directory started that still exist.
fn containers_of(home: &Path) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=nexus.home={}", home.display()))
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// The FUSE mounts under a data directory.
fn mounts_under(home: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let home = home.display().to_string();
    table
        .lines()
        .filter(|l| l.contains(&home))
        .map(str::to_owned)
        .collect()
}

/// `nexus run --isolation host --zone z1 -- sh -c SCRIPT`'s arguments.
fn on_host(script: &str) -> [&str; 9] {
    let args = [
        "run",
        "--isolation",
        "host",
        "--zone",
        "z1",
        "--",
        "sh",
        "-c",
    ];
    let [a, b, c, d, e, f, g, h] = args;
    [a, b, c, d, e, f, g, h, script]
}

/// `nexus fs put --zone z1 LOCAL DEST`.
fn put_file(home: &Path, local: &Path, dest: &str) {
    ok(
        home,
        &["fs", "put", "--zone", "z1", local.to_str().unwrap(), dest],
    );
}

/// `nexus ARGS` with "fed through\n" on its stdin; its stdout.
fn fed(home: &Path, args: &[&str]) -> String {
    use std::io::Write;
    let mut run = nexus(home)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    run.stdin
        .take()
        .unwrap()
        .write_all(b"fed through\n")
        .unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The run succeeded and printed each of `lines` (among others); its
/// stdout.
fn says(out: &std::process::Output, lines: &[&str]) -> String {
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    for line in lines {
        assert!(said.lines().any(|l| l == *line), "{line:?} not in:\n{said}");
    }
    said
}

/// What the probe below prints, one `key: value` per line.
const PROBE: &str = r#"
import os, socket
def check(key, f):
    try:
        print(f"{key}: {f()}")
    except OSError as e:
        print(f"{key}: errno {e.errno}")
status = open("/proc/self/status").read()
print("uid:", os.getuid())
print("caps:", [l.split()[1] for l in status.splitlines() if l.startswith("CapEff")][0])
print("nnp:", [l.split()[1] for l in status.splitlines() if l.startswith("NoNewPrivs")][0])
print("cwd:", os.getcwd())
print("parent:", sorted(os.listdir("/mnt/nexus/..")))
print("docker.sock:", os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock"))
print("devices:", sorted(d for d in os.listdir("/dev") if d.startswith(("sd", "nvme", "vd", "xvd", "loop", "fuse"))))
mounts = [l.split()[4] for l in open("/proc/self/mountinfo")]
print("mounted:", sorted(m for m in mounts if not m.startswith(("/proc", "/sys", "/dev")) and m != "/"))
check("inet", lambda: socket.socket(socket.AF_INET))
check("inet6", lambda: socket.socket(socket.AF_INET6))
check("netlink", lambda: socket.socket(socket.AF_NETLINK))
check("unix", lambda: socket.socket(socket.AF_UNIX).family.name)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("userns:", libc.syscall(272, 0x10000000), ctypes.get_errno())
check("etc", lambda: open("/etc/probe", "w"))
check("tmp", lambda: open("/tmp/probe", "w").write("x"))
check("read", lambda: open("/mnt/nexus/in/data.json").read())
check("write", lambda: open("/mnt/nexus/out.txt", "w").write("from the container"))
check("other", lambda: os.listdir("/mnt/nexus/other"))
"#;

#[test]
fn a_container_reaches_its_zone_through_the_kernel_and_nothing_else() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    ok(home, &["fs", "mkdir", "--zone", "z1", "/in"]);
    let data = dir.path().join("data.json");
    std::fs::write(&data, r#"{"a": 1}"#).unwrap();
    put_file(home, &data, "/in/data.json");
    // Another zone, mounted inside z1: without `enter` on it, closed.
    ok(home, &["zone", "create", "z2"]);
    ok(home, &["mount", "--zone", "z1", "/other", "z2"]);

    let out = python_in_container(home, &[], PROBE);
    let said = says(
        &out,
        &[
            "uid: 65534",
            "caps: 0000000000000000",
            "nnp: 1",
            "cwd: /mnt/nexus",
            "parent: ['nexus']",
            "docker.sock: False",
            "devices: []",
            "inet: errno 97",
            "inet6: errno 97",
            "netlink: errno 97",
            "unix: AF_UNIX",
            "userns: -1 1",
            "etc: errno 30",
            "tmp: 1",
            "read: {\"a\": 1}",
            "write: 18",
            "other: errno 13",
        ],
    );
    // The one mount besides Docker's /etc/hostname and the tmpfs: the zone.
    let mounted = said
        .lines()
        .find_map(|l| l.strip_prefix("mounted: "))
        .unwrap();
    assert_eq!(mounted, "['/etc/hostname', '/mnt/nexus', '/tmp']");
    // What it wrote is in the zone, written as its task, and audited.
    assert_eq!(
        ok(home, &["fs", "cat", "--zone", "z1", "/out.txt"]),
        "from the container"
    );
    let audit = ok(home, &["audit", "tail", "--zone", "z1", "-n", "50"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("agent:nexus-python") && l.contains("/out.txt")),
        "{audit}"
    );
    // Gone at the end: no container, no mount.
    assert_eq!(containers_of(home), Vec::<String>::new());
    assert_eq!(mounts_under(home), Vec::<String>::new());
}

#[test]
fn the_gate_decides_and_a_denial_is_eacces() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    ok(home, &["zone", "create", "z1"]);
    ok(home, &["fs", "mkdir", "--zone", "z1", "/ro"]);
    ok(home, &["fs", "mkdir", "--zone", "z1", "/rw"]);
    echo_into(home, "/ro/f", "read me");
    // Without `enter`, nothing runs.
    let out = python_in_container(home, &[], "print('ran')");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("may not enter zone z1"));

    ok(
        home,
        &[
            "grant",
            "--zone",
            "z1",
            "agent:nexus-python",
            "viewer",
            "zone",
        ],
    );
    ok(
        home,
        &[
            "grant",
            "--zone",
            "z1",
            "agent:nexus-python",
            "editor",
            "/rw",
        ],
    );
    let code = r#"
import os
def check(key, f):
    try:
        print(f"{key}: {f()}")
    except OSError as e:
        print(f"{key}: errno {e.errno}")
check("read", lambda: open("ro/f").read())
check("write", lambda: open("ro/f", "a").write("x"))
check("create", lambda: open("ro/new", "w"))
check("unlink", lambda: os.unlink("ro/f"))
check("mine", lambda: open("rw/new", "w").write("ok"))
check("rename", lambda: os.rename("rw/new", "ro/stolen"))
"#;
    let out = python_in_container(home, &[], code);
    says(
        &out,
        &[
            "read: read me",
            "write: errno 13",
            "create: errno 13",
            "unlink: errno 13",
            "mine: 2",
            "rename: errno 13",
        ],
    );
    assert_eq!(ok(home, &["fs", "cat", "--zone", "z1", "/ro/f"]), "read me");
    let audit = ok(home, &["audit", "tail", "--zone", "z1", "-n", "100"]);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("agent:nexus-python") && l.contains("denied")),
        "{audit}"
    );
}

fn echo_into(home: &Path, path: &str, content: &str) {
    let mut put = nexus(home)
        .args(["fs", "put", "--zone", "z1", "-", path])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    put.stdin
        .take()
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    assert!(put.wait().unwrap().success());
}

#[test]
fn files_behave_as_posix_programs_expect() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    // The example agent, kept in its zone, run twice: its state carries.
    let agent = root().join("examples/native-python/agent.py");
    put_file(home, &agent, "/agent.py");
    let mut args = vec!["run", "--image", image(), "--zone", "z1", "--"];
    args.extend(["python3", "agent.py", "buy", "milk"]);
    let first = ok(home, &args);
    assert!(first.contains("1 files, 1 notes"), "{first}");
    let second = ok(home, &args);
    assert!(second.contains("4 files, 2 notes"), "{second}");
    let log = ok(home, &["fs", "cat", "--zone", "z1", "/notes/agent.log"]);
    assert_eq!(
        log.matches("uid 65534 noted 'buy milk'").count(),
        2,
        "{log}"
    );

    // rename over a file, unlink while open, truncate, append, seek, mkdir
    // and rmdir, a directory listing, fsync; and SQLite with a journal.
    let code = r#"
import os, sqlite3
with open("a", "w") as f: f.write("old")
with open("b", "w") as f: f.write("new")
os.rename("b", "a")
print("renamed:", open("a").read(), os.path.exists("b"))
f = open("tmp", "w+"); f.write("kept after unlink"); f.flush()
os.unlink("tmp"); f.seek(0)
print("unlinked:", f.read(), os.path.exists("tmp")); f.close()
with open("log", "a") as f: f.write("1\n")
with open("log", "a") as f: f.write("2\n")
print("appended:", open("log").read().split())
with open("t", "w") as f: f.write("0123456789")
os.truncate("t", 4)
with open("t", "r+") as f:
    f.seek(2); f.write("X"); f.flush(); os.fsync(f.fileno())
print("truncated:", open("t").read(), os.stat("t").st_size)
os.makedirs("x/y/z"); os.rmdir("x/y/z")
print("listing:", sorted(os.listdir(".")), os.listdir("x"))
try:
    os.rmdir("x")
except OSError as e:
    print("rmdir non-empty: errno", e.errno)
db = sqlite3.connect("db.sqlite")
db.execute("create table t(x)")
with db:
    db.executemany("insert into t values (?)", [(i,) for i in range(2000)])
db.execute("delete from t where x % 2 = 0"); db.commit()
db.execute("vacuum")
print("sqlite:", db.execute("select count(*), sum(x) from t").fetchone(),
      db.execute("pragma integrity_check").fetchone()[0])
"#;
    let out = python_in_container(home, &[], code);
    says(
        &out,
        &[
            "renamed: new False",
            "unlinked: kept after unlink False",
            "appended: ['1', '2']",
            "truncated: 01X3 4",
            "rmdir non-empty: errno 39",
            "sqlite: (1000, 1000000) ok",
        ],
    );
    assert!(ok(home, &["zone", "check", "z1", "--deep"]).contains("consistent"));
}

#[test]
fn pipes_are_fifos_between_processes() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    ok(home, &["pipe", "create", "--zone", "z1", "/jobs"]);
    // A reader blocks until lines come, and sees end-of-file when the
    // last writer closes; a writer to a pipe nobody reads any more gets
    // EPIPE; mkfifo is refused (a FIFO node would be Linux's own pipe).
    let code = r#"
import os, threading, time
got = []
def reader():
    with open("jobs", "rb", buffering=0) as r:
        while True:
            chunk = r.read(4096)
            if not chunk:
                break
            got.append(chunk)
t = threading.Thread(target=reader); t.start()
time.sleep(0.3)
with open("jobs", "wb", buffering=0) as w:
    for i in range(100):
        w.write(f"job {i}\n".encode())
t.join()
lines = b"".join(got).decode().splitlines()
print("read:", len(lines), lines[0], lines[-1])
r = open("jobs", "rb", buffering=0)
w = open("jobs", "wb", buffering=0)
r.close()
try:
    w.write(b"nobody reads this\n")
    print("broken: no error")
except BrokenPipeError:
    print("broken: EPIPE")
w.close()
w = open("jobs", "wb", buffering=0)
fd = os.open("jobs", os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 10)
    print("nonblocking: data")
except BlockingIOError:
    print("nonblocking: EAGAIN")
w.close()
print("then end-of-file:", os.read(fd, 10))
os.close(fd)
try:
    os.mkfifo("fifo")
except OSError as e:
    print("mkfifo: errno", e.errno)
"#;
    let out = python_in_container(home, &[], code);
    says(
        &out,
        &[
            "read: 100 job 0 job 99",
            "broken: EPIPE",
            "nonblocking: EAGAIN",
            "then end-of-file: b''",
            "mkfifo: errno 1",
        ],
    );
}

#[test]
fn limits_and_timeouts_end_only_that_agent() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    // A memory bomb meets the memory limit: killed (137).
    let bomb = "x = []\nwhile True: x.append(bytearray(16 << 20))";
    let out = python_in_container(home, &["--memory", "64MiB"], bomb);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    // A fork bomb meets the pids limit; the timeout ends the container,
    // and nothing of it is left.
    let forks = r#"
import os
n = 0
try:
    while True:
        if os.fork() == 0:
            import time; time.sleep(600)
        n += 1
except OSError as e:
    print("forks stopped at", n, "errno", e.errno, flush=True)
import time; time.sleep(600)
"#;
    let out = python_in_container(home, &["--timeout", "10s"], forks);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let stopped: usize = said
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(stopped < 256, "{said}");
    assert!(
        text(&out.stderr).contains("timeout"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(containers_of(home), Vec::<String>::new());
    assert_eq!(mounts_under(home), Vec::<String>::new());
    // What `nexus run` reads on its stdin, the agent reads on its own.
    let upper = "import sys; print(sys.stdin.read().upper(), end='')";
    let fed = fed(
        home,
        &[
            "run", "--image", IMAGE, "--zone", "z1", "--", "python3", "-c", upper,
        ],
    );
    assert_eq!(fed, "FED THROUGH\n");
    // The exit code of a container that ends at once is the run's.
    let out = python_in_container(home, &[], "import sys; sys.exit(7)");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn clear_errors_without_an_engine_an_image_or_a_command() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    ok(
        home,
        &[
            "grant",
            "--zone",
            "z1",
            "agent:no-such-image",
            "viewer",
            "zone",
        ],
    );
    let out = run(
        home,
        &[
            "run",
            "--image",
            "no-such-image",
            "--zone",
            "z1",
            "--",
            "true",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("scripts/native-image"));
    let out = nexus(home)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["run", "--image", IMAGE, "--zone", "z1", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no Docker engine answers"));
    let out = run(home, &["run", "--image", IMAGE, "--zone", "z1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("needs a command"));
    let out = run(home, &["run", "--zone", "z1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("needs an agent"));
    // Nothing was left behind by any of them.
    assert_eq!(mounts_under(home), Vec::<String>::new());
}

#[test]
fn a_host_process_works_in_its_zone_and_leaves_nothing_running() {
    let dir = zone_for("agent:sh");
    let home = dir.path();
    let marker = format!("nexus-level0-{}", std::process::id());
    let script = format!(
        "echo hello > greeting; mkdir -p d; echo one >> d/log; echo two >> d/log; \
         cat d/log; pwd; (exec -a {marker} sleep 300 &) ; echo started"
    );
    let out = run(home, &on_host(&script));
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("one\ntwo\n"), "{said}");
    assert!(
        said.contains(&format!("{}/native/", home.display())),
        "{said}"
    );
    assert_eq!(
        ok(home, &["fs", "cat", "--zone", "z1", "/greeting"]),
        "hello\n"
    );
    assert_eq!(fed(home, &on_host("tr a-z A-Z")), "FED THROUGH\n");
    // Its leftover child went with it; its mount too.
    let left = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(!left.status.success(), "{}", text(&left.stdout));
    assert_eq!(mounts_under(home), Vec::<String>::new());
}

#[test]
fn symbolic_and_hard_links_work_through_the_mount() {
    let dir = zone_for("agent:sh");
    let home = dir.path();
    let script = "mkdir -p d && echo linked > d/f && ln -s d/f rel && ln -s d dirlink && \
         ln -s nowhere dangling && cat rel && cat dirlink/f && readlink rel && \
         test -L rel && echo is-link; cat dangling 2>/dev/null || echo dangling-fails; \
         mv rel moved && cat moved && rm dirlink && test -d d && echo target-kept; \
         ls -l | grep -c '^l'; echo one > e && ln e hard && echo more >> hard && rm e && cat hard; \
         ln d d2 2>/dev/null || echo no-dir-links";
    let out = run(home, &on_host(script));
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert_eq!(
        said,
        "linked\nlinked\nd/f\nis-link\ndangling-fails\nlinked\ntarget-kept\n2\none\nmore\nno-dir-links\n",
        "{}",
        text(&out.stderr)
    );
    // The links are the zone's: the kernel follows them too.
    assert_eq!(
        ok(home, &["fs", "cat", "--zone", "z1", "/moved"]),
        "linked\n"
    );
    let listed = ok(home, &["fs", "ls", "--zone", "z1", "/"]);
    assert!(listed.contains("symlink"), "{listed}");
}

/// `nexus run --image … -- sleep 600`, once its container exists.
fn sleeping_container(home: &Path) -> std::process::Child {
    image();
    let running = nexus(home)
        .args([
            "run", "--image", IMAGE, "--zone", "z1", "--", "sleep", "600",
        ])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while containers_of(home).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the container never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    running
}

#[test]
fn an_interrupted_run_removes_its_container_and_mount() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    for signal in ["INT", "TERM"] {
        let running = sleeping_container(home);
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &running.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let out = running.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "SIG{signal}");
        assert_eq!(containers_of(home), Vec::<String>::new(), "SIG{signal}");
        assert_eq!(mounts_under(home), Vec::<String>::new(), "SIG{signal}");
    }
}

#[test]
fn a_killed_nexus_leaves_nothing_after_the_next_start() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    let mut running = sleeping_container(home);
    running.kill().unwrap();
    running.wait().unwrap();
    // SIGKILL left a container and a dead mount behind...
    assert_eq!(containers_of(home).len(), 1);
    assert_eq!(mounts_under(home).len(), 1);
    // ...which the next native run removes before it starts.
    let out = python_in_container(home, &[], "print('next')");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(containers_of(home), Vec::<String>::new());
    assert_eq!(mounts_under(home), Vec::<String>::new());
    let runs = std::fs::read_dir(home.join("native")).unwrap().count();
    assert_eq!(runs, 0);
}

/// Through a node's client API (real gRPC and TLS, in process): the node
/// starts the container with its own engine and mounts the zone from its
/// own kernel; the output streams back; level 0 is refused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_runs_through_a_node_and_a_host_process_does_not() {
    use nexus_kernel::{Capabilities, Principal, ZoneId};
    use nexus_runtime::native::{Isolation, NativeSpec};
    use nexus_runtime::node::{local, tls};
    use nexus_runtime::ops::remote::Remote;
    use nexus_runtime::ops::{Ops, Output, RunIo, RunSpec, TupleSpec};

    image();
    let dir = tempfile::tempdir().unwrap();
    let node = local::start(dir.path(), 1, |_| {}).await.unwrap().remove(0);
    let owner = Principal::parse("user:owner").unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    node.kernel.create_zone(&owner, &z1).await.unwrap();
    let (token, _) = node
        .kernel
        .tokens()
        .issue(owner, z1, Vec::new(), Capabilities::ALL, 3600)
        .unwrap();
    let client = tls::client_config(&local::ca_cert(dir.path())).unwrap();
    let remote = Remote::connect(&node.addr.to_string(), &token, client)
        .await
        .unwrap();
    let grant = TupleSpec {
        subject: "agent:nexus-python".into(),
        relation: "editor".into(),
        object: "zone".into(),
    };
    remote.write_tuple("z1", grant, true).await.unwrap();
    let spec = |isolation: Isolation, command: &[&str]| RunSpec {
        zone: "z1".into(),
        agents: Vec::new(),
        native: Some(NativeSpec {
            isolation,
            command: command.iter().map(|s| s.to_string()).collect(),
        }),
        env: vec!["GREETING=hello".into()],
        timeout: None,
        memory: None,
        fuel: None,
    };
    let container = Isolation::Container {
        image: IMAGE.into(),
        cpus: Some(1.0),
    };
    let code = "import os; open('via-node', 'w').write(os.environ['GREETING']); print('ran as', os.getuid())";
    let (output, mut said) = tokio::sync::mpsc::channel(16);
    let io = RunIo::Stream {
        output,
        stdin: None,
    };
    let exit = remote
        .run(spec(container, &["python3", "-c", code]), io)
        .await
        .unwrap();
    assert_eq!(exit, Some(0));
    let mut stdout = Vec::new();
    while let Ok(out) = said.try_recv() {
        if let Output::Stdout(b) = out {
            stdout.extend(b);
        }
    }
    assert_eq!(text(&stdout), "ran as 65534\n");
    let stat = remote.stat("z1", "/via-node", true).await.unwrap();
    assert_eq!(stat.size, 5);

    // A node never runs a client's command on its host.
    let (output, _said) = tokio::sync::mpsc::channel(16);
    let io = RunIo::Stream {
        output,
        stdin: None,
    };
    let refused = remote.run(spec(Isolation::Host, &["true"]), io).await;
    assert_eq!(refused.unwrap(), Some(2));
}

#[test]
fn the_kernel_api_socket_answers_the_task_and_only_the_task() {
    let dir = zone_for("agent:nexus-python");
    let home = dir.path();
    // Another zone mounted in z1, which the agent may not enter.
    ok(home, &["zone", "create", "z2"]);
    ok(home, &["mount", "--zone", "z1", "/closed", "z2"]);
    let code = r#"
import json, os, socket, time
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["NEXUS_SOCKET"])
f = s.makefile("rwb", buffering=0)
def call(line):
    f.write(line + b"\n")
    return json.loads(f.readline())
print("whoami:", call(b'{"op":"whoami"}')["ok"]["principal"])
print("create:", call(b'{"op":"pipe_create","path":"/jobs","capacity":4096}'))
print("stat:", call(b'{"op":"pipe_stat","path":"/jobs"}')["ok"]["capacity"])
print("list:", [r["path"] for r in call(b'{"op":"pipe_list","dir":"/"}')["ok"]])
t = time.monotonic(); call(b'{"op":"sleep","ms":200}')
print("slept:", time.monotonic() - t >= 0.2)
print("bad:", call(b'{"op":"format_disk"}')["error"]["code"])
print("denied:", call(b'{"op":"pipe_create","path":"/closed/p","capacity":4096}')["error"]["code"])
print("hidden:", ".nexus.sock" in os.listdir("/mnt/nexus"))
open("/mnt/nexus/.nexus.sock.txt", "w").write("fine")
for name, attempt in [("open", lambda: open("/mnt/nexus/.nexus.sock", "w")),
                ("unlink", lambda: os.unlink("/mnt/nexus/.nexus.sock")),
                ("rename onto", lambda: os.rename(".nexus.sock.txt", ".nexus.sock"))]:
    try:
        attempt()
    except OSError as e:
        print(f"{name}: errno", e.errno)
f.write(b"x" * (70 << 10) + b"\n")
print("long:", json.loads(f.readline())["error"]["code"])
"#;
    let out = python_in_container(home, &[], code);
    says(
        &out,
        &[
            "whoami: agent:nexus-python",
            "create: {'ok': None}",
            "stat: 4096",
            "list: ['/jobs']",
            "slept: True",
            "bad: invalid",
            "denied: access",
            "hidden: False",
            "open: errno 6",
            "unlink: errno 1",
            "rename onto: errno 1",
            "long: invalid",
        ],
    );
    assert!(ok(home, &["pipe", "ls", "--zone", "z1"]).contains("/jobs"));

    // Level 0: the run's own processes are served; another process of the
    // same user, holding the socket's path, is not.
    let zone_dir = zone_for("agent:sh");
    let home = zone_dir.path();
    let script = "python3 -c \"import json, os, socket; s = socket.socket(socket.AF_UNIX); \
        s.connect(os.environ['NEXUS_SOCKET']); s.sendall(b'{\\\"op\\\":\\\"whoami\\\"}\\n'); \
        print(json.loads(s.makefile().readline())['ok']['principal'])\"; \
        echo $NEXUS_SOCKET; while [ ! -e checked ]; do sleep 0.1; done";
    let mut running = nexus(home)
        .args(on_host(script))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        std::io::BufRead::lines(std::io::BufReader::new(running.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "agent:sh");
    let socket = lines.next().unwrap().unwrap();
    let mut outsider = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::{Read, Write};
    let _ = outsider.write_all(b"{\"op\":\"whoami\"}\n");
    let mut answer = String::new();
    let _ = outsider.read_to_string(&mut answer);
    assert_eq!(answer, "", "an outsider was answered");
    // Only now may the run end (no race with a fixed sleep): a file made
    // through its mount (the data directory is the run's while it runs).
    let mount = Path::new(&socket).parent().unwrap();
    std::fs::write(mount.join("checked"), "").unwrap();
    assert!(running.wait().unwrap().success());
}

/// The bounds of a native agent's interfaces refuse what passes them and
/// harm nothing else: the kernel API socket serves 16 connections at once
/// (a 17th is closed, and a slot freed is taken again), the mount keeps
/// 4,096 open files (the next open is `ENFILE`; closing frees them), and a
/// name that is not UTF-8 is `EINVAL`.
#[test]
fn the_socket_and_the_open_table_refuse_past_their_bounds() {
    let dir = zone_for("agent:sh");
    let home = dir.path();
    let script = r#"python3 - <<'PY'
import json, os, resource, socket, time
def connect():
    # A refused connection is closed by the server: end of file, or a
    # reset when the request was still unread.
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.environ["NEXUS_SOCKET"])
    try:
        s.sendall(b'{"op":"whoami"}\n')
        return s, s.makefile().readline()
    except (ConnectionResetError, BrokenPipeError):
        return s, ""
held = [connect() for _ in range(16)]
print("held:", sum(1 for _, line in held if "agent:sh" in line))
extra, line = connect()
print("17th:", "closed" if line == "" else line.strip())
held.pop()[0].close()
for _ in range(100):
    again, line = connect()
    if line:
        break
    time.sleep(0.05)
print("after one closed:", json.loads(line)["ok"]["principal"])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
open("f", "w").write("x")
files = []
try:
    while len(files) < 5000:
        files.append(open("f"))
    print("opened: no limit")
except OSError as e:
    print("opened:", len(files), "then errno", e.errno)
for f in files:
    f.close()
print("after closing:", open("f").read())
try:
    open(b"bad-\xff", "w")
    print("non-utf8 name: made")
except OSError as e:
    print("non-utf8 name: errno", e.errno)
PY"#;
    let out = run(home, &on_host(script));
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("held: 16\n"), "{said}");
    assert!(said.contains("17th: closed\n"), "{said}");
    assert!(said.contains("after one closed: agent:sh\n"), "{said}");
    let opened = said
        .lines()
        .find_map(|l| l.strip_prefix("opened: "))
        .unwrap_or_else(|| panic!("{said}"));
    let (n, errno) = opened
        .split_once(" then errno ")
        .unwrap_or_else(|| panic!("{said}"));
    let n: usize = n.parse().unwrap();
    assert!((4000..=4096).contains(&n), "{said}");
    assert_eq!(errno, "23", "ENFILE expected: {said}");
    assert!(said.contains("after closing: x\n"), "{said}");
    // A zone's names are UTF-8: another is `EINVAL`, nothing made.
    assert!(said.contains("non-utf8 name: errno 22\n"), "{said}");
}

/// What the reader below waits for, in order, each for at most 30 s (half
/// the mount's 60 s lifetime for a cached entry or attribute, so a change
/// not reported to the mount is stale past it).
const READER: &str = r#"
import os, time
def read(p):
    try:
        with open(p) as f: return f.read()
    except FileNotFoundError:
        return None
def until(what, cond):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > 30:
            print("stale:", what, read("f"), read("g"), os.path.exists("x"), flush=True)
            raise SystemExit(1)
        time.sleep(0.01)
    print("saw:", what, flush=True)
for name, text in [("f", "one"), ("g", "old"), ("x", "here")]:
    open(name, "w").write(text)
for name, text in [("f", "one"), ("g", "old"), ("x", "here")]:
    assert read(name) == text, name
open("ready", "w").close()
until("a rewrite by a task", lambda: read("f") == "two")
until("a replace by a task", lambda: read("g") == "new")
until("a removal by a task", lambda: not os.path.exists("x"))
open("seen", "w").close()
until("a write through another mount", lambda: read("f") == "six")
"#;

/// Two host processes on one node, each with its own mount of z1, and a
/// third task writing through the kernel: a mount keeps what it read in
/// Linux's caches, and drops it as soon as another task or mount changes
/// it (an in-place rewrite of the same size, a rename over a name, a
/// removal), not when a lifetime runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_sees_what_others_change_without_waiting_for_its_caches() {
    use nexus_kernel::{Capabilities, Kernel, KernelConfig, OpenOptions, Principal, ZoneId};
    use nexus_runtime::agent::budget::{NodeMemory, NODE_HOST_MEMORY};
    use nexus_runtime::native::{self, Isolation, NativeIo, NativeLimits, NativeSpec};
    use nexus_runtime::ops::Output;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Kernel::open(KernelConfig::embedded(dir.path())).unwrap());
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    k.create_zone(&owner, &z1).await.unwrap();
    let task = || k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
    let host_run = |script: &'static str| {
        let (k, task) = (k.clone(), task());
        tokio::spawn(async move {
            let spec = NativeSpec {
                isolation: Isolation::Host,
                command: vec!["python3".into(), "-c".into(), script.into()],
            };
            let limits = NativeLimits {
                timeout: Some(Duration::from_secs(300)),
                memory: native::DEFAULT_MEMORY,
                node_memory: NodeMemory::new(NODE_HOST_MEMORY),
            };
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let io = NativeIo {
                output: Some(&tx),
                stdin: None,
            };
            let code = native::run(&k, task, &spec, &[], limits, io).await;
            drop(tx);
            let (mut out, mut err) = (Vec::new(), Vec::new());
            while let Some(o) = rx.recv().await {
                match o {
                    Output::Stdout(b) => out.extend(b),
                    Output::Stderr(b) => err.extend(b),
                }
            }
            (code.unwrap(), text(&out), text(&err))
        })
    };
    let me = task();
    // Until the reader makes `p`, or ends without it (then its output
    // says why).
    let wait_for = |p: &'static str, reader: &tokio::task::JoinHandle<_>| {
        let made = k.stat(&me, p).is_ok();
        !made && !reader.is_finished()
    };
    let reader = host_run(READER);
    while wait_for("/ready", &reader) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The other mount, started once the reader's run is in place.
    let writer = host_run(
        "import os, time\n\
         while not os.path.exists('go'): time.sleep(0.01)\n\
         with open('f', 'r+') as f: f.write('six')\n",
    );
    let opts = OpenOptions {
        write: true,
        ..OpenOptions::default()
    };
    let f = k.open_path(&me, "/f", opts).await.unwrap();
    k.write(&me, &f, 0, b"two").await.unwrap();
    let h = k
        .open_path(&me, "/h", OpenOptions::CREATE_NEW)
        .await
        .unwrap();
    k.write(&me, &h, 0, b"new").await.unwrap();
    k.rename(&me, "/h", "/g").await.unwrap();
    k.unlink(&me, "/x").await.unwrap();
    while wait_for("/seen", &reader) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    k.open_path(&me, "/go", OpenOptions::CREATE_NEW)
        .await
        .unwrap();
    let (code, said, err) = reader.await.unwrap();
    assert_eq!(code, Some(0), "{said}{err}");
    assert_eq!(
        said,
        "saw: a rewrite by a task\nsaw: a replace by a task\nsaw: a removal by a task\n\
         saw: a write through another mount\n",
        "{err}"
    );
    let (code, said, err) = writer.await.unwrap();
    assert_eq!(code, Some(0), "{said}{err}");
}
