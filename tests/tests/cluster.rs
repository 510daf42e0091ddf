//! Three real `nexus node` processes on loopback: a zone on all three,
//! writes through one node read on another, SIGKILL of the leader, writes
//! through a survivor within a bounded time, the killed node restarted and
//! caught up, every acknowledged write on every replica.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nexus_tests::nexus;

struct Cluster {
    _dir: tempfile::TempDir,
    /// A bootstrap token for zone z2.
    token_z2: String,
    /// A read-only token of agent:bot in z1, and its id.
    token_bot: (String, String),
    homes: Vec<PathBuf>,
    /// The object store every node shares (a directory)...
    shared: PathBuf,
    /// ...unless the nodes store in S3: the moto server's port.
    s3: Option<u16>,
    addrs: Vec<String>,
    nodes: Vec<Option<Child>>,
    token: String,
    /// Nodes (0-based) started with `--witness`.
    witnesses: Vec<usize>,
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// `n` nodes and zone z1 on `replicas` (e.g. "1,2"), created through node 1.
    fn with_zone(n: usize, replicas: &str) -> Cluster {
        let c = Self::start(n);
        c.ok(
            0,
            &["zone", "create", "z1", "--replicas", replicas],
            Duration::from_secs(20),
        );
        c
    }

    /// `n` nodes storing content in one S3 bucket (the moto server on
    /// `port`).
    fn on_s3(n: usize, port: u16) -> Cluster {
        Self::build(n, &[], Some(port))
    }

    fn start_with(n: usize, witnesses: &[usize]) -> Cluster {
        Self::build(n, witnesses, None)
    }

    fn build(n: usize, witnesses: &[usize], s3: Option<u16>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let homes: Vec<PathBuf> = (1..=n).map(|i| dir.path().join(format!("h{i}"))).collect();
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        // Tokens are signed on the operator's machine (its own data
        // directory, `op`); every node trusts the operator's public key.
        let op = dir.path().join("op");
        // The main token also names z2, so its holder may mount z2 in z1.
        let token = run_ok(nexus(&op).args([
            "token", "issue", "--zone", "z1", "--reach", "z2", "--ttl", "1h", "--caps", "all",
        ]))
        .trim()
        .to_owned();
        let out = nexus(&op)
            .args([
                "token", "issue", "--zone", "z2", "--ttl", "1h", "--caps", "all",
            ])
            .output()
            .unwrap();
        let token_z2 = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let out = nexus(&op)
            .args(["--as", "agent:bot", "token", "issue", "--zone", "z1"])
            .args(["--caps", "read,enter"])
            .output()
            .unwrap();
        // stderr: "token ID for agent:bot in zone z1 (...)".
        let said = String::from_utf8(out.stderr).unwrap();
        let bot_id = said.split_whitespace().nth(1).unwrap().to_owned();
        let token_bot = (
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            bot_id,
        );
        let shown = run_ok(nexus(&op).args(["issuer", "show"]));
        let key = shown.split_whitespace().next().unwrap().to_owned();
        for h in &homes {
            run_ok(nexus(h).args(["issuer", "trust", &key]));
        }
        // The cluster's CA, and each node's certificate in its data
        // directory's `tls` (where `node start` and `--node` look).
        let ca = dir.path().join("ca");
        run_ok(nexus(&homes[0]).args(["cluster", "ca", "--dir"]).arg(&ca));
        for (i, h) in homes.iter().enumerate() {
            run_ok(
                nexus(h)
                    .args(["cluster", "cert", "--id", &(i + 1).to_string()])
                    .arg("--ca-dir")
                    .arg(&ca)
                    .arg("--out")
                    .arg(h.join("tls")),
            );
        }
        let shared = dir.path().join("content");
        let mut c = Cluster {
            _dir: dir,
            token_z2,
            token_bot,
            homes,
            shared,
            s3,
            addrs,
            nodes: Vec::new(),
            token,
            witnesses: witnesses.to_vec(),
        };
        c.nodes = (0..n).map(|i| Some(c.spawn(i))).collect();
        c
    }

    fn spawn(&self, i: usize) -> Child {
        let peers: Vec<String> = (0..self.addrs.len())
            .filter(|j| *j != i)
            .map(|j| format!("{}@{}", j + 1, self.addrs[j]))
            .collect();
        let mut cmd = nexus(&self.homes[i]);
        match self.s3 {
            None => cmd.args([
                "--object-store",
                &format!("file://{}", self.shared.display()),
            ]),
            Some(port) => cmd.envs(nexus_tests::Moto::env(port)).args([
                "--object-store",
                &format!("s3://{}/cluster", nexus_tests::BUCKET),
            ]),
        };
        cmd.args(["node", "start", "--id", &(i + 1).to_string()])
            .args(["--listen", &self.addrs[i], "--peers", &peers.join(",")]);
        if self.witnesses.contains(&i) {
            cmd.arg("--witness");
        }
        // Each node's log, for a failing test's post-mortem.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.homes[i].with_extension("log"))
            .expect("a log file");
        cmd.env("NEXUS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node")
    }

    /// `nexus --node (node i) --token … ARGS`.
    fn cli(&self, i: usize, args: &[&str]) -> Output {
        self.cli_as(i, &self.token, args)
    }

    /// `nexus --node (node i) --token TOKEN ARGS`.
    fn cli_as(&self, i: usize, token: &str, args: &[&str]) -> Output {
        let mut c: Command = nexus(&self.homes[i]);
        c.args(["--node", &self.addrs[i], "--token", token]);
        c.args(args).output().unwrap()
    }

    /// [`cli`](Self::cli), which must end within `bound`: killed and
    /// failed past it (a node that stopped answering fails the test
    /// instead of hanging it).
    fn cli_within(&self, i: usize, args: &[&str], bound: Duration) -> Output {
        let started = Instant::now();
        let mut child = nexus(&self.homes[i])
            .args(["--node", &self.addrs[i], "--token", &self.token])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > bound {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nexus {args:?} through node {} took over {bound:?}", i + 1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait_with_output().unwrap()
    }

    /// Retries until the command succeeds (the node may still be starting,
    /// or the group electing).
    fn ok(&self, i: usize, args: &[&str], within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let out = self.cli(i, args);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < until,
                "node {}: nexus {args:?}: {}\n{}",
                i + 1,
                String::from_utf8_lossy(&out.stderr),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The end of every node's log.
    fn logs(&self) -> String {
        let mut all = String::new();
        for (i, h) in self.homes.iter().enumerate() {
            let log = std::fs::read_to_string(h.with_extension("log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            // A panic's message, wherever it is, then the end.
            for (n, line) in lines.iter().enumerate() {
                if line.contains("panicked") {
                    all += &lines[n..(n + 3).min(lines.len())].join("\n");
                    all += "\n";
                }
            }
            all += &format!("--- node {} log (end) ---\n", i + 1);
            all += &lines[lines.len().saturating_sub(40)..].join("\n");
            all += "\n";
        }
        all
    }

    fn put(&self, i: usize, path: &str, body: &str, scratch: &Path) -> Output {
        let src = scratch.join("body");
        std::fs::write(&src, body).unwrap();
        self.cli(
            i,
            &["fs", "put", "--zone", "z1", src.to_str().unwrap(), path],
        )
    }

    /// `/f{i}` = "body {i}" through node `node`, each acknowledged.
    fn put_bodies(&self, node: usize, files: std::ops::Range<usize>, scratch: &Path) {
        for i in files {
            let out = self.put(node, &format!("/f{i}"), &format!("body {i}"), scratch);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn leader(&self, i: usize) -> usize {
        let json = self.ok(
            i,
            &["zone", "status", "z1", "--json"],
            Duration::from_secs(10),
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["leader"].as_u64().unwrap() as usize
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().flatten() {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

#[test]
fn three_node_processes_survive_the_loss_of_the_leader() {
    let mut c = Cluster::start(3);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    c.ok(
        0,
        &["zone", "create", "z1", "--replicas", "1,2,3"],
        Duration::from_secs(20),
    );
    c.put_bodies(0, 0..10, s);
    let mut acked: Vec<usize> = (0..10).collect();
    // A linearizable read on node 3 sees node 1's last acknowledged write
    // at once (no retry).
    let out = c.cli(2, &["fs", "cat", "--zone", "z1", "--linearizable", "/f9"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "body 9",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Read on node 3, from its own replica.
    let got = c.ok(
        2,
        &["fs", "cat", "--zone", "z1", "/f9"],
        Duration::from_secs(10),
    );
    assert_eq!(got, "body 9");

    // SIGKILL the leader; writes through a survivor resume in bounded time.
    let leader = c.leader(0);
    assert!((1..=3).contains(&leader));
    let mut killed = c.nodes[leader - 1].take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let survivor = if leader == 1 { 1 } else { 0 };
    let t = Instant::now();
    let mut n = 10;
    let mut first_ack = None;
    while t.elapsed() < Duration::from_secs(20) && acked.len() < 20 {
        let put = c.put(survivor, &format!("/f{n}"), &format!("body {n}"), s);
        if put.status.success() {
            first_ack.get_or_insert(t.elapsed());
            acked.push(n);
        }
        n += 1;
    }
    eprintln!("first write acknowledged {first_ack:?} after SIGKILL of the leader");
    assert!(
        acked.len() >= 20,
        "only {} writes acknowledged",
        acked.len()
    );
    let new_leader = c.leader(survivor);
    assert_ne!(new_leader, leader);

    // Restart the killed node: it catches up and has every acknowledged write.
    c.nodes[leader - 1] = Some(c.spawn(leader - 1));
    for node in 0..3 {
        for i in &acked {
            let got = c.ok(
                node,
                &["fs", "cat", "--zone", "z1", &format!("/f{i}")],
                Duration::from_secs(20),
            );
            assert_eq!(got, format!("body {i}"), "node {} /f{i}", node + 1);
        }
    }
}

#[test]
fn bad_requests_to_a_node_are_refused_clearly() {
    let c = Cluster::start(2);
    // No token.
    let out = nexus(&c.homes[0])
        .args(["--node", &c.addrs[0], "zone", "status", "z1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
    // A zone on a node the cluster does not know.
    let out = c.cli(0, &["zone", "create", "z1", "--replicas", "1,7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node 7 is not a peer"));
    // A token for another zone.
    c.ok(
        0,
        &["zone", "create", "z1", "--replicas", "1,2"],
        Duration::from_secs(20),
    );
    let out = c.cli(0, &["fs", "ls", "--zone", "z2", "/"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the token is for zone z1"));
    // No node can tell garbage in a store other nodes share.
    let d = tempfile::tempdir().unwrap();
    let out = nexus(d.path())
        .args([
            "--object-store",
            &format!("file://{}", c.shared.display()),
            "gc",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shared"));
    // A node id clash in --peers.
    let out = nexus(&c.homes[1])
        .args([
            "node",
            "start",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--peers",
            "2@127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("own --id"));
}

#[test]
fn two_voters_and_a_witness_survive_the_loss_of_a_voter() {
    let mut c = Cluster::start_with(3, &[2]);
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    // Node 3 was started with --witness: it will not hold a voter's state.
    let until = Instant::now() + Duration::from_secs(20);
    let err = loop {
        let out = c.cli(0, &["zone", "create", "z1", "--replicas", "1,2,3"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // (until the nodes are up)
        if !err.contains("unavailable") || Instant::now() > until {
            break err;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        err.contains("node 3 is a witness node; name it 3w"),
        "{err}"
    );
    c.ok(
        0,
        &["zone", "create", "z1", "--replicas", "1,2,3w"],
        Duration::from_secs(20),
    );
    assert!(c.put(0, "/a", "before", s).status.success());
    // The witness has nothing to read and says so.
    let out = c.cli(2, &["fs", "ls", "--zone", "z1", "/"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keeps only the log of zone z1"), "{err}");
    // The witness never leads; kill whichever voter does.
    let leader = c.leader(0);
    assert!(leader == 1 || leader == 2, "the witness leads: {leader}");
    let mut killed = c.nodes[leader - 1].take().unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    let other = if leader == 1 { 1 } else { 0 };
    let until = Instant::now() + Duration::from_secs(20);
    while !c.put(other, "/b", "after", s).status.success() {
        assert!(
            Instant::now() < until,
            "the surviving voter and the witness could not commit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.leader(other), other + 1);
    for p in ["/a", "/b"] {
        c.ok(
            other,
            &["fs", "cat", "--zone", "z1", "--linearizable", p],
            Duration::from_secs(5),
        );
    }
}

#[test]
fn a_mount_to_a_zone_another_node_does_not_serve_says_so() {
    let c = Cluster::with_zone(2, "1,2");
    // z2 lives on node 1 only.
    let z2 = |args: &[&str]| {
        nexus(&c.homes[0])
            .args(["--node", &c.addrs[0], "--token", &c.token_z2])
            .args(args)
            .output()
            .unwrap()
    };
    assert!(z2(&["zone", "create", "z2", "--replicas", "1"])
        .status
        .success());
    assert!(z2(&["fs", "mkdir", "--zone", "z2", "/inside"])
        .status
        .success());
    c.ok(
        0,
        &["mount", "--zone", "z1", "/shared", "z2"],
        Duration::from_secs(10),
    );
    // Node 1 serves both: the mount leads into z2, for a token naming z2;
    // the bot's token names z1 alone.
    let out = c.cli_as(0, &c.token_bot.0, &["fs", "ls", "--zone", "z1", "/shared"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not name zone z2"), "{err}");
    let ls = c.ok(
        0,
        &["fs", "ls", "--zone", "z1", "/shared"],
        Duration::from_secs(5),
    );
    assert!(ls.contains("inside"), "{ls}");
    // Node 2 shows the entry but cannot enter it, and says why.
    let root = c.ok(
        1,
        &["fs", "ls", "--zone", "z1", "--linearizable", "/"],
        Duration::from_secs(10),
    );
    assert!(root.contains("shared"), "{root}");
    let out = c.cli(1, &["fs", "ls", "--zone", "z1", "/shared"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zone z2 is not served on this node"), "{err}");
}

fn status_json(out: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(out).unwrap();
    v
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn replicas_are_added_and_removed_by_conf_change() {
    let c = Cluster::with_zone(3, "1,2");
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    c.put_bodies(0, 0..10, s);
    // Node 3 does not serve z1 yet.
    assert!(!c
        .cli(2, &["fs", "ls", "--zone", "z1", "/"])
        .status
        .success());

    // Added through node 2 (forwarded to the leader): it catches up as a
    // learner, then votes.
    let out = c.ok(
        1,
        &["zone", "add-replica", "z1", "3"],
        Duration::from_secs(30),
    );
    assert!(out.contains("voters:  [1, 2, 3]"), "{out}");
    for i in 0..10 {
        let got = c.ok(
            2,
            &["fs", "cat", "--zone", "z1", &format!("/f{i}")],
            Duration::from_secs(10),
        );
        assert_eq!(got, format!("body {i}"));
    }
    let status = status_json(&c.ok(
        2,
        &["zone", "status", "z1", "--json"],
        Duration::from_secs(5),
    ));
    assert_eq!(ids(&status["voters"]), [1, 2, 3]);

    // Remove the leader, asking the leader itself: another member
    // coordinates, leadership moves first, the group goes on.
    let leader = c.leader(0);
    let out = c.ok(
        leader - 1,
        &["zone", "remove-replica", "z1", &leader.to_string()],
        Duration::from_secs(30),
    );
    let remaining: Vec<u64> = (1..=3).filter(|n| *n != leader as u64).collect();
    assert!(out.contains(&format!("voters:  {remaining:?}")), "{out}");
    let survivor = remaining[0] as usize - 1;
    let new_leader = c.leader(survivor);
    assert_ne!(new_leader, leader);
    assert!(c.put(survivor, "/after", "x", s).status.success());
    // The removed node deleted its copy.
    let out = c.cli(leader - 1, &["fs", "ls", "--zone", "z1", "/"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("z1"));

    // It comes back as a witness: it keeps the log, not the state.
    let out = c.ok(
        survivor,
        &["zone", "add-replica", "z1", &format!("{leader}w")],
        Duration::from_secs(30),
    );
    assert!(out.contains(&format!("witnesses: [{leader}]")), "{out}");
    let status = status_json(&c.ok(
        survivor,
        &["zone", "status", "z1", "--json"],
        Duration::from_secs(5),
    ));
    assert_eq!(ids(&status["voters"]), [1, 2, 3]);
    assert_eq!(ids(&status["witnesses"]), [leader as u64]);
    assert!(c.put(survivor, "/later", "y", s).status.success());

    // Refusals: a member added twice, a node that is not a member, the
    // last voter with state, a node the cluster does not know.
    let out = c.cli(
        survivor,
        &["zone", "add-replica", "z1", &remaining[0].to_string()],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already"));
    let out = c.cli(survivor, &["zone", "add-replica", "z1", "9"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("node 9 is not a peer"));
    let other = remaining[1];
    let out = c.ok(
        survivor,
        &["zone", "remove-replica", "z1", &other.to_string()],
        Duration::from_secs(30),
    );
    assert!(
        out.contains(&format!(
            "voters:  [{}]",
            remaining_after(&remaining, other, leader)
        )),
        "{out}"
    );
    let out = c.cli(
        survivor,
        &["zone", "remove-replica", "z1", &other.to_string()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
}

/// The voters left after removing `gone` from `remaining` plus the witness.
fn remaining_after(remaining: &[u64], gone: u64, witness: usize) -> String {
    let mut v: Vec<u64> = remaining.iter().copied().filter(|n| *n != gone).collect();
    v.push(witness as u64);
    v.sort_unstable();
    v.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn an_agent_runs_on_a_node_and_its_output_streams_back() {
    use std::io::BufRead;
    let c = Cluster::with_zone(2, "1,2");
    let hello = nexus_tests::guest("examples/hello");
    let hello = hello.to_str().unwrap();
    // Run through node 2: the agent's files are the zone's, on every node.
    let out = c.cli(1, &["run", hello, "--zone", "z1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("in zone z1"), "{stdout}");
    assert!(
        stdout.contains("wrote and read back /hello/note.txt"),
        "{stdout}"
    );
    let note = c.ok(
        0,
        &[
            "fs",
            "cat",
            "--zone",
            "z1",
            "--linearizable",
            "/hello/note.txt",
        ],
        Duration::from_secs(5),
    );
    assert!(note.starts_with("written by user:"), "{note}");

    // Output arrives while the agent runs, not at its exit: the agent
    // waits for a file the test makes only once it has read the agent's
    // first line (were output held back until the exit, the agent would
    // run into its timeout and the second line would never come).
    let pipes = nexus_tests::guest("guests/pipes");
    let pipes = pipes.to_str().unwrap();
    let mut child = nexus(&c.homes[0])
        .args(["--node", &c.addrs[0], "--token", &c.token])
        .args([
            "run",
            pipes,
            "--zone",
            "z1",
            "--timeout",
            "120s",
            "--",
            "wait-for",
            "/go",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "waiting for /go");
    c.ok(
        0,
        &["fs", "mkdir", "--zone", "z1", "/go"],
        Duration::from_secs(5),
    );
    assert_eq!(lines.next().unwrap().unwrap(), "found /go");
    assert!(child.wait().unwrap().success());

    // Stdin streams to the agent (several chunks' worth), as it does
    // embedded; without stdin the agent reads end-of-file.
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut child = nexus(&c.homes[0])
        .args(["--node", &c.addrs[0], "--token", &c.token])
        .args(["run", pipes, "--zone", "z1", "--", "stdin-sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("3000000 bytes, fnv {hash:016x}\n")
    );
    let out = c.cli(0, &["run", pipes, "--zone", "z1", "--", "stdin-sum"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0 bytes, fnv cbf29ce484222325\n"
    );

    // Exit codes, errors and stderr as `nexus run` gives them.
    let out = c.cli(0, &["run", pipes, "--zone", "z1", "--", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command bogus"));
    let out = c.cli(
        0,
        &[
            "run",
            pipes,
            "--zone",
            "z1",
            "--timeout",
            "300ms",
            "--",
            "sleep",
            "60000",
        ],
    );
    assert_eq!(out.status.code(), Some(124));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timeout"));
    let not_wasm = c.homes[0].join("tls").join("node.crt");
    let out = c.cli(0, &["run", not_wasm.to_str().unwrap(), "--zone", "z1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a WebAssembly file"));

    // A Python agent through a node: the client hears of the first
    // compile, and gets the agent's status and traceback.
    let fails = nexus_tests::python_agent(&c.homes[0], "fails");
    let fails = fails.to_str().unwrap();
    let out = c.cli(1, &["run", fails, "--zone", "z1", "--", "exit", "7"]);
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fails.wasm (first run only)"), "{stderr}");
    let out = c.cli(1, &["run", fails, "--zone", "z1", "--", "raise"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ValueError: the agent gave up"), "{stderr}");
    assert!(!stderr.contains("compiling"), "compiled once: {stderr}");
}

#[test]
fn file_edits_and_the_gate_work_through_any_node() {
    let c = Cluster::with_zone(2, "1,2");
    let scratch = tempfile::tempdir().unwrap();
    let s = scratch.path();
    c.ok(
        0,
        &["fs", "mkdir", "--zone", "z1", "/docs"],
        Duration::from_secs(5),
    );
    assert!(c.put(0, "/docs/a.txt", "alpha", s).status.success());
    c.ok(
        1,
        &["fs", "mv", "--zone", "z1", "/docs/a.txt", "/docs/b.txt"],
        Duration::from_secs(5),
    );
    let local = s.join("b.txt");
    c.ok(
        1,
        &[
            "fs",
            "get",
            "--zone",
            "z1",
            "/docs/b.txt",
            local.to_str().unwrap(),
        ],
        Duration::from_secs(5),
    );
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "alpha");
    let out = c.cli(0, &["fs", "rm", "--zone", "z1", "/docs"]);
    assert_eq!(out.status.code(), Some(5), "a non-empty directory needs -r");
    c.ok(
        0,
        &["fs", "rm", "-r", "--zone", "z1", "/docs"],
        Duration::from_secs(5),
    );
    let root = c.ok(
        1,
        &["fs", "ls", "--zone", "z1", "--linearizable", "/"],
        Duration::from_secs(5),
    );
    assert!(!root.contains("docs"), "{root}");

    // fsck of node 2's replica.
    let check = c.ok(1, &["zone", "check", "z1"], Duration::from_secs(5));
    assert!(check.trim_end().ends_with("consistent"), "{check}");

    // Grants through one node decide on the other.
    let granted = c.ok(
        1,
        &["grant", "--zone", "z1", "agent:bot", "viewer", "zone"],
        Duration::from_secs(5),
    );
    assert!(
        granted.starts_with("granted zone:z1#viewer@agent:bot"),
        "{granted}"
    );
    let rev: u64 = granted
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap();
    let check = ["check", "--zone", "z1", "agent:bot", "read", "zone"];
    let at = rev.to_string();
    let out = c.cli(0, &[&check[..], &["--at", &at]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("allowed: agent:bot may read"));
    let tuples = c.ok(
        0,
        &["tuples", "--zone", "z1", "--json"],
        Duration::from_secs(5),
    );
    assert!(tuples.contains("agent:bot"), "{tuples}");
    c.ok(
        0,
        &["revoke", "--zone", "z1", "agent:bot", "viewer", "zone"],
        Duration::from_secs(5),
    );
    let out = c.cli(0, &check);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("denied:"));

    // A token revoked in the zone is refused by every node serving it.
    c.ok(
        0,
        &["grant", "--zone", "z1", "agent:bot", "viewer", "zone"],
        Duration::from_secs(5),
    );
    let (bot, bot_id) = &c.token_bot;
    let as_bot = |i: usize| {
        nexus(&c.homes[i])
            .args(["--node", &c.addrs[i], "--token", bot])
            .args(["fs", "ls", "--zone", "z1", "--linearizable", "/"])
            .output()
            .unwrap()
    };
    assert!(as_bot(1).status.success());
    let out = c.ok(
        0,
        &["token", "revoke", "--zone", "z1", bot_id],
        Duration::from_secs(5),
    );
    assert!(out.contains("revoked token"), "{out}");
    for i in [0, 1] {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let out = as_bot(i);
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                assert!(err.contains("has been revoked in zone z1"), "{err}");
                break;
            }
            assert!(
                Instant::now() < until,
                "node {} still takes the token",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn pipes_and_tokens_work_through_a_node() {
    let c = Cluster::with_zone(2, "1,2");
    c.ok(
        0,
        &[
            "pipe",
            "create",
            "--zone",
            "z1",
            "/jobs",
            "--capacity",
            "4KiB",
        ],
        Duration::from_secs(5),
    );
    let stat = c.ok(
        0,
        &["pipe", "stat", "--zone", "z1", "/jobs"],
        Duration::from_secs(5),
    );
    assert!(stat.contains("capacity:  4096"), "{stat}");
    // An agent on node 1 writes into node 1's ring; cat through node 1
    // reads (and consumes) it.
    let pipes = nexus_tests::guest("guests/pipes");
    let out = c.cli(
        0,
        &[
            "run",
            pipes.to_str().unwrap(),
            "--zone",
            "z1",
            "--",
            "write",
            "/jobs",
            "100",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.cli(0, &["pipe", "cat", "--zone", "z1", "/jobs"]);
    assert_eq!(out.stdout, vec![b'w'; 100]);
    let ls = c.ok(
        0,
        &["pipe", "ls", "--zone", "z1", "/", "--json"],
        Duration::from_secs(5),
    );
    let rows: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(rows[0]["path"], "/jobs");
    assert_eq!(rows[0]["stat"]["bytes_out"], 100);
    c.ok(
        0,
        &["pipe", "rm", "--zone", "z1", "/jobs"],
        Duration::from_secs(5),
    );
    let out = c.cli(0, &["pipe", "stat", "--zone", "z1", "/jobs"]);
    assert_eq!(out.status.code(), Some(3));

    // Nodes hold no signing key: no token is issued through one.
    let out = c.cli(1, &["--as", "agent:bot", "token", "issue", "--zone", "z1"]);
    assert_eq!(out.status.code(), Some(4));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("holds no signing key"), "{said}");
    // The operator's token for agent:bot verifies through node 1.
    let issued = c.token_bot.0.clone();
    let verified = c.ok(
        0,
        &["token", "verify", issued.trim()],
        Duration::from_secs(5),
    );
    assert!(
        verified.starts_with("valid: agent:bot in zone z1 (read,enter)"),
        "{verified}"
    );
    // A reader's token cannot mint more.
    let out = nexus(&c.homes[0])
        .args(["--node", &c.addrs[0], "--token", issued.trim()])
        .args(["token", "issue", "--zone", "z1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    // Revoked through a node without --zone: in the caller's zone.
    let claims = c.ok(
        0,
        &["token", "verify", issued.trim(), "--json"],
        Duration::from_secs(5),
    );
    let id = serde_json::from_str::<serde_json::Value>(&claims).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok(1, &["token", "revoke", &id], Duration::from_secs(5));
    let until = Instant::now() + Duration::from_secs(10);
    while c
        .cli(0, &["token", "verify", issued.trim()])
        .status
        .success()
    {
        assert!(
            Instant::now() < until,
            "node 1 still takes the revoked token"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_zone_is_destroyed_on_every_node_through_one() {
    let c = Cluster::with_zone(3, "1,2,3");
    let scratch = tempfile::tempdir().unwrap();
    c.put_bodies(1, 0..3, scratch.path());
    // The load generator, through a node: every ack is a committed file.
    let acks = c.ok(
        1,
        &[
            "stress",
            "--zone",
            "z1",
            "--count",
            "40",
            "--concurrency",
            "4",
            "--size",
            "100",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(
        acks.lines()
            .filter(|l| l.starts_with("ack /stress/f"))
            .count(),
        40
    );
    let ls = c.ok(
        2,
        &[
            "fs",
            "ls",
            "--zone",
            "z1",
            "--linearizable",
            "/stress",
            "--json",
        ],
        Duration::from_secs(5),
    );
    let entries: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 40);
    let list = c.ok(2, &["zone", "list", "--json"], Duration::from_secs(5));
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows[0]["name"], "z1");
    // Every node shares one object store: no node can tell garbage.
    let out = c.cli(0, &["gc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shared"));

    let out = c.cli(1, &["zone", "destroy", "z1"]);
    assert_eq!(out.status.code(), Some(2), "destroy needs --yes");
    let out = c.ok(
        1,
        &["zone", "destroy", "z1", "--yes"],
        Duration::from_secs(30),
    );
    assert!(out.contains("destroyed zone z1"), "{out}");
    for i in 0..3 {
        let out = c.cli(i, &["fs", "ls", "--zone", "z1", "/"]);
        assert_eq!(out.status.code(), Some(3), "node {} still has z1", i + 1);
    }
}

#[test]
fn agents_run_together_on_a_node_with_with() {
    let c = Cluster::with_zone(2, "1,2");
    let producer = nexus_tests::guest("examples/pipeline/producer");
    let consumer = nexus_tests::guest("examples/pipeline/consumer");
    let with = consumer.display().to_string();
    let out = c.cli(
        1,
        &[
            "run",
            producer.to_str().unwrap(),
            "--zone",
            "z1",
            "--timeout",
            "60s",
            "--with",
            &with,
            "--",
            "2000",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let n: u128 = 2000;
    let sum = n * (n + 1) * (2 * n + 1) / 6;
    assert!(stdout.contains("producer: sent 2000 jobs"), "{stdout}");
    assert!(
        stdout.contains(&format!("consumer: 2000 jobs, sum of squares {sum}")),
        "{stdout}"
    );
    let results = c.ok(
        0,
        &[
            "fs",
            "cat",
            "--zone",
            "z1",
            "--linearizable",
            "/output/results.txt",
        ],
        Duration::from_secs(5),
    );
    assert_eq!(results.lines().count(), 2001);
    // A companion's failure is reported, and decides the exit code.
    let pipes = nexus_tests::guest("guests/pipes");
    let bad = format!("{} bogus", pipes.display());
    let out = c.cli(
        1,
        &[
            "run",
            pipes.to_str().unwrap(),
            "--zone",
            "z1",
            "--with",
            &bad,
            "--",
            "sleep",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command bogus"));
}

#[test]
fn a_node_keeps_an_audit_log_of_what_it_serves() {
    let c = Cluster::with_zone(2, "1,2");
    c.ok(
        0,
        &["fs", "mkdir", "--zone", "z1", "/audited"],
        Duration::from_secs(10),
    );
    // agent:bot's token reads, but no tuple grants it anything in z1.
    let out = c.cli_as(0, &c.token_bot.0, &["fs", "ls", "--zone", "z1", "/audited"]);
    assert_eq!(out.status.code(), Some(4));
    let records = |out: Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let tail = ["audit", "tail", "--json", "-n", "200"];
    // Node 1's record store, read directly while the node runs, and
    // through the node (for an admin of the zone); node 2's has the
    // replica node 1 asked it to take. The writers batch, so the records
    // arrive shortly after.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let direct = records(nexus(&c.homes[0]).args(tail).output().unwrap());
        let through = records(c.cli(0, &[&tail[..], &["--zone", "z1"]].concat()));
        let node2 = records(nexus(&c.homes[1]).args(tail).output().unwrap());
        let complete = |records: &[serde_json::Value]| {
            let owner = records
                .iter()
                .find(|r| r["op"] == "mkdir")
                .and_then(|r| r["principal"].as_str())
                .unwrap_or("?");
            records
                .iter()
                .any(|r| r["op"] == "mkdir" && r["result"] == "ok" && r["principal"] == owner)
                && records
                    .iter()
                    .any(|r| r["result"] == "denied" && r["principal"] == "agent:bot")
        };
        let joined = node2
            .iter()
            .any(|r| r["op"] == "join-zone" && r["principal"] == "node:1" && r["result"] == "ok");
        if complete(&direct) && complete(&through) && joined {
            break;
        }
        assert!(
            Instant::now() < until,
            "an audit log lacks the mkdir, the denial or the join: {direct:?} {through:?} {node2:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Reading the log needs admin on the zone.
    let out = c.cli_as(0, &c.token_bot.0, &[&tail[..], &["--zone", "z1"]].concat());
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn a_node_holds_no_signing_key_and_a_retired_key_is_refused_after_sighup() {
    let c = Cluster::with_zone(2, "1,2");
    c.ok(0, &["zone", "status", "z1"], Duration::from_secs(5));
    // The operator retires the key that signed every token of the test,
    // on node 1, which re-reads its keys on SIGHUP.
    let op = c.homes[0].parent().unwrap().join("op");
    let shown = run_ok(nexus(&op).args(["issuer", "show"]));
    let kid = shown
        .split("key id ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n']);
    run_ok(nexus(&c.homes[0]).args(["issuer", "retire", kid]));
    let pid = c.nodes[0].as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.cli(0, &["zone", "status", "z1"]);
        if out.status.code() == Some(4) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("retired"), "{err}");
            break;
        }
        assert!(
            Instant::now() < until,
            "node 1 still takes the retired key's tokens"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Node 2 was not told: it still takes them.
    c.ok(1, &["zone", "status", "z1"], Duration::from_secs(5));

    // A data directory holding a signing key does not start as a node.
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("h");
    assert!(nexus(&home)
        .args(["issuer", "show"])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(home.join("tls")).unwrap();
    for f in ["ca.crt", "node.crt", "node.key"] {
        std::fs::copy(c.homes[0].join("tls").join(f), home.join("tls").join(f)).unwrap();
    }
    let out = nexus(&home)
        .args(["node", "start", "--id", "1", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signing key"), "{err}");
}

/// CPU seconds node `pid`'s process has used (all its threads).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name, which ends at the last ')': state is field 3,
    // utime and stime fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = run_ok(Command::new("getconf").arg("CLK_TCK"));
    ticks as f64 / hz.trim().parse::<f64>().unwrap()
}

/// Cores node `pid` kept busy over the next second.
fn cores_busy(pid: u32) -> f64 {
    let (t, c) = (Instant::now(), cpu_seconds(pid));
    std::thread::sleep(Duration::from_secs(1));
    (cpu_seconds(pid) - c) / t.elapsed().as_secs_f64()
}

/// A client of node 1 running `n` agents that spin in tight loops (with
/// no --timeout), once every one has started.
fn spinners(c: &Cluster, n: usize) -> Child {
    use std::io::BufRead;
    let escape = nexus_tests::guest("guests/escape");
    let spin = format!("{} loop", escape.display());
    let mut cmd = nexus(&c.homes[0]);
    cmd.args(["--node", &c.addrs[0], "--token", &c.token])
        .args(["run", escape.to_str().unwrap(), "--zone", "z1"]);
    for _ in 1..n {
        cmd.args(["--with", &spin]);
    }
    let mut client = cmd
        .args(["--", "loop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    for _ in 0..n {
        assert_eq!(lines.next().unwrap().unwrap(), "spinning");
    }
    client
}

#[test]
fn spinning_agents_do_not_starve_their_node() {
    // What a node owes its peers and clients while agents saturate its
    // cores; an idle node answers in well under a second.
    const BOUND: Duration = Duration::from_secs(10);
    let c = Cluster::with_zone(2, "1,2");
    let node1 = c.nodes[0].as_ref().unwrap().id();
    let cores = std::thread::available_parallelism().unwrap().get();
    // More tight loops than the machine has cores, with no --timeout.
    let mut client = spinners(&c, cores + 2);
    let status = |i: usize| -> serde_json::Value {
        let out = c.cli_within(i, &["zone", "status", "z1", "--json"], BOUND);
        assert!(out.status.success(), "{}", c.logs());
        status_json(&String::from_utf8_lossy(&out.stdout))
    };
    let term = status(0)["term"].as_u64().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let body = scratch.path().join("body");
    std::fs::write(&body, "written while agents spin").unwrap();
    let body = body.to_str().unwrap();
    for round in 0..3 {
        let path = format!("/busy{round}");
        let out = c.cli_within(0, &["fs", "put", "--zone", "z1", body, &path], BOUND);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        status(0);
    }
    // The agents are still running (their client is)...
    assert!(client.try_wait().unwrap().is_none(), "the run ended");
    // ...and its zone stayed healthy: no election, every write on both
    // replicas, the leader seeing no lag.
    let leader = c.leader(0) - 1;
    let s = status(leader);
    assert_eq!(s["term"].as_u64().unwrap(), term, "an election happened");
    for p in s["progress"].as_array().unwrap() {
        assert_eq!(p["lag"].as_u64().unwrap(), 0, "{s}");
    }
    let on_2 = c.ok(
        1,
        &["fs", "cat", "--zone", "z1", "--linearizable", "/busy2"],
        BOUND,
    );
    assert_eq!(on_2, "written while agents spin");

    // The client leaves: its agents stop (at their next epoch tick) and
    // the node's cores come back.
    client.kill().unwrap();
    client.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let busy = cores_busy(node1);
        if busy < 0.5 {
            break;
        }
        assert!(Instant::now() < until, "still {busy:.2} cores busy");
    }

    // SIGTERM stops a node whose agents spin, with its client still there.
    let mut client = spinners(&c, cores + 2);
    run_ok(Command::new("kill").args(["-TERM", &node1.to_string()]));
    let t = Instant::now();
    loop {
        let gone = !std::path::Path::new(&format!("/proc/{node1}")).exists()
            || std::fs::read_to_string(format!("/proc/{node1}/stat"))
                .map(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
                .unwrap_or(true);
        if gone {
            break;
        }
        assert!(
            t.elapsed() < BOUND,
            "node 1 still running {:?} after SIGTERM",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn a_node_bounds_runs_per_principal_and_in_time() {
    let c = Cluster::with_zone(1, "1");
    let escape = nexus_tests::guest("guests/escape");
    let escape = escape.to_str().unwrap();
    let spin = format!("{escape} loop");
    // One principal may run 16 agents at once on a node by default: a run
    // of 17 is refused whole, before anything is compiled or started.
    let mut args = vec!["run", escape, "--zone", "z1"];
    for _ in 0..16 {
        args.extend(["--with", &spin]);
    }
    args.extend(["--", "loop"]);
    let out = c.cli(0, &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("may run 16 agents at once here"), "{err}");
    // Runs end within the node's run timeout: asking for longer is refused.
    let out = c.cli(
        0,
        &[
            "run",
            escape,
            "--zone",
            "z1",
            "--timeout",
            "2h",
            "--",
            "loop",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("runs here end within 1h"), "{err}");
}

#[test]
fn nodes_share_one_s3_bucket_and_refuse_its_gc() {
    let moto = nexus_tests::Moto::start();
    let c = Cluster::on_s3(2, moto.port);
    c.ok(
        0,
        &["zone", "create", "z1", "--replicas", "1,2"],
        Duration::from_secs(20),
    );
    let scratch = tempfile::tempdir().unwrap();
    // Written through node 1 (three chunks and a bit), read through node 2,
    // which fetches the chunks from the bucket; and the other way round.
    let body: String = (0..3_200_000u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let src = scratch.path().join("body");
    let src = src.to_str().unwrap();
    for (writer, reader, path, body) in [
        (0, 1, "/one", body.clone()),
        (1, 0, "/two", body.to_uppercase()),
    ] {
        std::fs::write(src, &body).unwrap();
        c.ok(
            writer,
            &["fs", "put", "--zone", "z1", src, path],
            Duration::from_secs(20),
        );
        let got = c.ok(
            reader,
            &["fs", "cat", "--zone", "z1", "--linearizable", path],
            Duration::from_secs(20),
        );
        assert!(got == body, "node {} read other bytes", reader + 1);
    }
    // Both nodes stored chunks in the bucket: neither may collect it.
    for node in 0..2 {
        let out = c.cli(node, &["gc"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "gc ran on a shared bucket");
        assert!(err.contains("other"), "{err}");
    }
    let check = c.ok(
        0,
        &["zone", "check", "z1", "--deep"],
        Duration::from_secs(20),
    );
    assert!(check.contains("consistent"), "{check}");
}
