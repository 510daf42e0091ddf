//! `examples/cluster` for real: three `nexus node` containers from the
//! image `build-image` makes from scratch, on a Docker network of their
//! own. A partition with `docker network disconnect`: the cut-off node
//! cannot commit, the other two can, and after `docker network connect`
//! every replica converges. Clients run inside the containers
//! (`docker exec`), so each node is reachable whatever its network.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nexus_tests::{nexus, nexus_bin};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples/cluster")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct DockerCluster {
    project: String,
    image: String,
    token: String,
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

impl DockerCluster {
    fn up() -> DockerCluster {
        let dir = tempfile::tempdir().unwrap();
        let id = std::process::id();
        let project = format!("nexustest{id}");
        let image = format!("nexus-test:{id}");
        run(Command::new("bash")
            .arg(example().join("build-image"))
            .arg(&image)
            .env("NEXUS_BIN", nexus_bin()));
        // The cluster's signing key and a token signed by it.
        let keys = dir.path().join("keys");
        let out = run(nexus(&keys).args([
            "token", "issue", "--zone", "z1", "--ttl", "1h", "--caps", "all",
        ]));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        // The nodes trust the operator's public key only.
        let shown = run(nexus(&keys).args(["issuer", "show"]));
        let key = String::from_utf8(shown.stdout).unwrap();
        let key = key.split_whitespace().next().unwrap().to_owned();
        let trust = dir.path().join("trust");
        run(nexus(&trust).args(["issuer", "trust", &key]));
        // The cluster's CA and a certificate per node (mounted at /data/tls).
        let ca = dir.path().join("ca");
        let tls = dir.path().join("tls");
        run(nexus(&keys).args(["cluster", "ca", "--dir"]).arg(&ca));
        for i in 1..=3 {
            run(nexus(&keys)
                .args(["cluster", "cert", "--id", &i.to_string(), "--ca-dir"])
                .arg(&ca)
                .arg("--out")
                .arg(tls.join(format!("n{i}"))));
        }
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
                .to_string()
        };
        let env = vec![
            ("NEXUS_IMAGE", image.clone()),
            ("NEXUS_ISSUERS", trust.join("issuers").display().to_string()),
            ("NEXUS_TLS", tls.display().to_string()),
            ("NEXUS_PORT_1", port()),
            ("NEXUS_PORT_2", port()),
            ("NEXUS_PORT_3", port()),
        ];
        let c = DockerCluster {
            project,
            image,
            token,
            env,
            _dir: dir,
        };
        run(&mut c.compose(&["up", "-d"]));
        c
    }

    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f")
            .arg(example().join("compose.yaml"))
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn container(&self, node: usize) -> String {
        format!("{}_n{node}_1", self.project)
    }

    /// `nexus --node (node) ARGS` inside node's container.
    fn cli(&self, node: usize, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["exec", &self.container(node), "/nexus"])
            .args(["--node", "127.0.0.1:2126", "--token", &self.token])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, node: usize, args: &[&str]) -> String {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.cli(node, args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < until,
                "n{node}: nexus {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn network(&self, verb: &str, node: usize) {
        let net = format!("{}_nexus", self.project);
        let mut cmd = Command::new("docker");
        cmd.args(["network", verb]);
        if verb == "connect" {
            cmd.args(["--alias", &format!("n{node}")]);
        }
        run(cmd.args([&net, &self.container(node)]));
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "1"]).output();
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

#[test]
fn a_partitioned_docker_node_cannot_commit_and_converges_after_reconnecting() {
    let c = DockerCluster::up();
    c.ok(1, &["zone", "create", "z1", "--replicas", "1,2,3"]);
    c.ok(1, &["fs", "mkdir", "--zone", "z1", "/before"]);
    c.ok(
        3,
        &["fs", "stat", "--zone", "z1", "--linearizable", "/before"],
    );

    c.network("disconnect", 3);
    // The majority commits (after electing a leader if node 3 led).
    c.ok(1, &["fs", "mkdir", "--zone", "z1", "/majority"]);
    c.ok(2, &["fs", "stat", "--zone", "z1", "/majority"]);
    // The minority does not, and does not see the majority's write.
    let out = c.cli(3, &["fs", "mkdir", "--zone", "z1", "/minority"]);
    assert!(!out.status.success(), "the minority committed");
    let refusal = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!c
        .cli(3, &["fs", "stat", "--zone", "z1", "/majority"])
        .status
        .success());
    for node in [1, 2] {
        let seen = c.cli(node, &["fs", "stat", "--zone", "z1", "/minority"]);
        assert!(!seen.status.success(), "n{node} has the minority's write");
    }

    c.network("connect", 3);
    c.ok(3, &["fs", "stat", "--zone", "z1", "/majority"]);
    // Every replica holds the same tree. The minority's write is there
    // only if node 3 had already forwarded it to the leader, and then its
    // caller was told the outcome was unknown (it was delivered once the
    // network came back).
    let listing = c.ok(1, &["fs", "ls", "--zone", "z1", "--linearizable", "/"]);
    assert!(listing.contains("majority"), "{listing}");
    if listing.contains("minority") {
        assert!(refusal.contains("may or may not"), "{refusal}");
    }
    for node in [2, 3] {
        let until = Instant::now() + Duration::from_secs(20);
        while c.ok(node, &["fs", "ls", "--zone", "z1", "/"]) != listing {
            assert!(Instant::now() < until, "n{node} did not converge");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let status: serde_json::Value =
        serde_json::from_str(&c.ok(3, &["zone", "status", "z1", "--json"])).unwrap();
    assert_eq!(status["voters"], serde_json::json!([1, 2, 3]));
}
