//! Helpers for end-to-end tests: finding the real `nexus` binary.

use std::path::PathBuf;
use std::process::Command;

/// The `nexus` binary this workspace built: `NEXUS_BIN` if set, else the one
/// beside the test executable (`cargo test --workspace` builds it, because
/// `nexus-runtime` has integration tests).
pub fn nexus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("nexus");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p nexus-runtime` or set NEXUS_BIN",
        bin.display()
    );
    bin
}

/// A `nexus` command on data directory `home`.
pub fn nexus(home: &std::path::Path) -> Command {
    let mut c = Command::new(nexus_bin());
    c.env("NEXUS_HOME", home).env_remove("NEXUS_ZONE");
    c
}

/// A real PostgreSQL server for one test: a fresh cluster in a temporary
/// directory, listening on a free loopback port, stopped on drop. Runs the
/// server as the `postgres` user when the tests run as root (PostgreSQL
/// refuses to run as root).
pub struct PgServer {
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

fn pg_bindir() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl) not found; set NEXUS_PG_BIN")
}

impl PgServer {
    fn command(&self, tool: &str) -> Command {
        pg_command(&self.bin, tool, self.as_postgres)
    }

    pub fn start() -> PgServer {
        use std::os::unix::fs::MetadataExt;
        let bin = pg_bindir();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                ok.success(),
                "cannot give the cluster directory to the postgres user"
            );
        }
        let data = dir.path().join("data");
        let init = pg_command(&bin, "initdb", as_postgres)
            .args(["-A", "trust", "-U", "nexus", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = PgServer {
            url: format!("postgres://nexus@127.0.0.1:{port}/postgres"),
            bin,
            data: data.clone(),
            as_postgres,
            _dir: dir,
        };
        let opts = format!(
            "-p {port} -h 127.0.0.1 -k {} -F",
            server._dir.path().display()
        );
        let start = server
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-o", &opts, "-l"])
            .arg(server._dir.path().join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&start.stderr)
        );
        server
    }
}

fn pg_command(bin: &std::path::Path, tool: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// Builds the guest at `dir` (relative to the repository, e.g.
/// `examples/hello`) for wasm32-wasip2 and returns its `.wasm`.
pub fn guest(dir: &str) -> PathBuf {
    guest_for(dir, "wasm32-wasip2")
}

/// Builds the guest at `dir` for `target`. Uses its own target directory,
/// so it never waits on the build lock of the `cargo test` that runs it.
pub fn guest_for(dir: &str, target_triple: &str) -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let target = nexus_bin()
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("guests");
    let manifest = root.join(dir).join("Cargo.toml");
    let name = std::path::Path::new(dir)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a guest name");
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            target_triple,
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run cargo for the guest");
    assert!(
        status.success(),
        "building {} failed (is the wasm target installed? scripts/setup adds it)",
        manifest.display()
    );
    target
        .join(target_triple)
        .join("release")
        .join(format!("{name}.wasm"))
}

/// `nexus ARGS` on the data directory `home`, run to completion.
pub fn run(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    nexus(home).args(args).output().expect("run nexus")
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `nexus ARGS`, which must succeed; its stdout.
pub fn ok(home: &std::path::Path, args: &[&str]) -> String {
    let out = run(home, args);
    assert!(
        out.status.success(),
        "nexus {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `examples/python/NAME.py` built with `nexus build` (componentize-py,
/// which scripts/setup installs) into `dir/NAME.wasm`.
pub fn python_agent(dir: &std::path::Path, name: &str) -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let source = root.join("examples/python").join(format!("{name}.py"));
    let out = dir.join(format!("{name}.wasm"));
    let built = nexus(dir)
        .arg("build")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run nexus build");
    assert!(
        built.status.success(),
        "nexus build {name}.py: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// `len` pseudo-random bytes from `seed`: no two chunks alike (chunks
/// equal by content are stored once), so a misplaced chunk shows.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The bucket a [`Moto`] server starts with.
pub const BUCKET: &str = "nexus-test";

fn moto_server() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    PathBuf::from(home).join(".cache/nexus-py/bin/moto_server")
}

/// moto's S3 server (installed by `scripts/setup`) on a free loopback
/// port, with [`BUCKET`] made; killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let bin = moto_server();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup)", bin.display()));
        let moto = Moto { child, port };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while moto.request(&format!("PUT /{BUCKET} HTTP/1.1")) != Some(200) {
            assert!(std::time::Instant::now() < until, "moto did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        moto
    }

    /// The environment that points a `nexus` at the server on `port`
    /// (object_store's AWS variables; moto takes any credentials).
    pub fn env(port: u16) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// The status of a bodiless request, if the server answered.
    fn request(&self, line: &str) -> Option<u16> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let req = format!(
            "{line}\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        std::io::Write::write_all(&mut s, req.as_bytes()).ok()?;
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 20 s) until `f` has something to say; panics naming
/// `what` if it never does.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Three nodes in this process over gRPC and TLS, each a voter of zone
/// `z1` (owned by `user:owner`), with 20 ms ticks.
pub async fn three_nodes(dir: &std::path::Path) -> Vec<nexus_runtime::node::local::LocalNode> {
    use nexus_kernel::{Principal, Role, ZoneId};
    let nodes = nexus_runtime::node::local::start(dir, 3, |cfg| {
        cfg.driver.tick = std::time::Duration::from_millis(20);
    })
    .await
    .expect("three local nodes");
    let z1 = ZoneId::new("z1").expect("a zone name");
    let replicas = vec![(1, Role::Voter), (2, Role::Voter), (3, Role::Voter)];
    for n in &nodes[1..] {
        n.kernel
            .join_zone(&z1, replicas.clone())
            .await
            .expect("join z1");
    }
    let owner = Principal::parse("user:owner").expect("a principal");
    nodes[0]
        .kernel
        .create_zone_on(&owner, &z1, replicas)
        .await
        .expect("create z1");
    nodes
}

/// The sizes of the snapshot receives in progress in a node's spool.
pub fn spool_parts(home: &std::path::Path) -> Vec<u64> {
    let spool = home.join("snapshots");
    std::fs::read_dir(&spool)
        .expect("the spool directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .collect()
}
