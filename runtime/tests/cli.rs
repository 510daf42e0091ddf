//! The `nexus` command as a user meets it: real processes on a real data
//! directory, checking output, JSON and exit codes.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

struct Home(tempfile::TempDir);

impl Home {
    fn new() -> Self {
        Home(tempfile::tempdir().unwrap())
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_nexus"));
        c.args(args)
            .env("NEXUS_HOME", self.0.path())
            .env_remove("NEXUS_ZONE");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "nexus {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns (exit code, stderr).
    fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "nexus {args:?} unexpectedly succeeded"
        );
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn put_stdin(&self, zone: &str, dest: &str, data: &[u8]) {
        self.put_with(&["fs", "put", "--zone", zone, "-", dest], data)
    }

    fn put_stdin_as(&self, zone: &str, principal: &str, dest: &str, data: &[u8]) {
        self.put_with(
            &["fs", "put", "--zone", zone, "--as", principal, "-", dest],
            data,
        )
    }

    fn put_with(&self, args: &[&str], data: &[u8]) {
        let mut child = self.cmd(args).stdin(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn zones_are_created_listed_checked_and_destroyed() {
    let h = Home::new();
    assert!(h.ok(&["zone", "create", "z1"]).contains("created zone z1"));
    let (code, err) = h.fails(&["zone", "create", "z1"]);
    assert_eq!(code, 5);
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = h.fails(&["zone", "create", "bad/name"]);
    assert_eq!(code, 1);
    assert!(err.contains("zone name"), "{err}");
    let zones: serde_json::Value =
        serde_json::from_str(&h.ok(&["zone", "list", "--json"])).unwrap();
    assert_eq!(zones[0]["name"], "z1");
    assert!(zones[0]["applied_index"].as_u64().unwrap() >= 1);
    assert!(h.ok(&["zone", "check", "z1"]).contains("consistent"));
    let (code, _) = h.fails(&["zone", "destroy", "z1"]);
    assert_eq!(code, 2, "destroy without --yes is refused");
    h.ok(&["zone", "destroy", "z1", "--yes"]);
    let (code, err) = h.fails(&["fs", "ls", "--zone", "z1", "/"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("unknown zone z1") && err.contains("nexus zone create"),
        "{err}"
    );
}

#[test]
fn files_go_in_and_come_out_intact() {
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    h.ok(&["fs", "mkdir", "--zone", "z1", "-p", "/a/b"]);
    h.put_stdin("z1", "/a/b/hello.txt", b"hello, nexus\n");
    assert_eq!(
        h.ok(&["fs", "cat", "--zone", "z1", "/a/b/hello.txt"]),
        "hello, nexus\n"
    );

    // A multi-chunk file from disk, back out to disk, byte for byte.
    let local = h.0.path().join("big.bin");
    // Aperiodic bytes: identical chunks would be stored once (content addressing).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..3_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&local, &data).unwrap();
    h.ok(&["fs", "put", "-z", "z1", local.to_str().unwrap(), "/big.bin"]);
    let back = h.0.path().join("back.bin");
    h.ok(&["fs", "get", "-z", "z1", "/big.bin", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);

    let stat: serde_json::Value =
        serde_json::from_str(&h.ok(&["fs", "stat", "-z", "z1", "/big.bin", "--json"])).unwrap();
    assert_eq!(stat["size"], 3_500_000);
    assert_eq!(stat["kind"], "file");
    let ls: serde_json::Value =
        serde_json::from_str(&h.ok(&["fs", "ls", "-z", "z1", "/", "--json"])).unwrap();
    let names: Vec<_> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["a", "big.bin"],
        "no temporary upload files are left behind"
    );

    h.ok(&["fs", "mv", "-z", "z1", "/big.bin", "/a/moved.bin"]);
    assert_eq!(h.fails(&["fs", "cat", "-z", "z1", "/big.bin"]).0, 3);
    assert_eq!(h.fails(&["fs", "rm", "-z", "z1", "/a"]).0, 5);
    h.ok(&["fs", "rm", "-r", "-z", "z1", "/a"]);
    assert_eq!(h.ok(&["fs", "ls", "-z", "z1", "/"]), "");
    let gc: serde_json::Value = serde_json::from_str(&h.ok(&["gc", "--json"])).unwrap();
    // The collector deleted the four chunks of the removed file when
    // `fs rm` finished: `gc` finds the store empty.
    assert_eq!(
        (gc["scanned"].as_u64(), gc["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{gc}"
    );
    assert!(h
        .ok(&["zone", "check", "z1", "--deep"])
        .contains("consistent"));
}

#[test]
fn bad_input_gets_a_clear_error_and_a_nonzero_exit() {
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    h.put_stdin("z1", "/f", b"data");
    let cases: &[(&[&str], i32, &str)] = &[
        (&["fs", "cat", "-z", "z1", "/missing"], 3, "no such file"),
        (&["fs", "ls", "-z", "z1", ""], 1, "empty path"),
        (&["fs", "mkdir", "-z", "z1", "/f/sub"], 1, "not a directory"),
        (&["fs", "cat", "-z", "z1", "/"], 1, "is a directory"),
        (&["fs", "mv", "-z", "z1", "/", "/x"], 1, "invalid"),
        (
            &["fs", "put", "-z", "z1", "/no/such/local/file", "/g"],
            3,
            "/no/such/local/file",
        ),
        (&["fs", "cat", "-z", "nozone", "/f"], 3, "unknown zone"),
    ];
    for (args, code, needle) in cases {
        let (got, err) = h.fails(args);
        assert_eq!(got, *code, "nexus {args:?}: {err}");
        assert!(err.to_lowercase().contains(needle), "nexus {args:?}: {err}");
    }
    // `nexus build`: a name that is no Python module, and no
    // componentize-py anywhere: each says what to do.
    let (code, err) = h.fails(&["build", "my-agent.py"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Python identifier"), "{err}");
    let agent = h.0.path().join("agent.py");
    std::fs::write(&agent, "print('hi')\n").unwrap();
    let out = h
        .cmd(&["build", agent.to_str().unwrap()])
        .env("PATH", "/nonexistent")
        .env("HOME", "/nonexistent")
        .env_remove("NEXUS_COMPONENTIZE_PY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("pip install componentize-py"), "{err}");
    let long = format!("/{}", "n".repeat(300));
    let (_, err) = h.fails(&["fs", "mkdir", "-z", "z1", &long]);
    assert!(err.contains("name too long"), "{err}");
    // Nothing stored was harmed.
    assert_eq!(h.ok(&["fs", "cat", "-z", "z1", "/f"]), "data");
    assert!(h.ok(&["zone", "check", "z1"]).contains("consistent"));
}

#[test]
fn mounts_show_in_listings_and_lead_into_the_other_zone() {
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    h.ok(&["zone", "create", "z2"]);
    h.ok(&["mount", "-z", "z1", "/shared", "z2"]);
    assert_eq!(h.fails(&["mount", "-z", "z1", "/shared", "z2"]).0, 5);
    h.put_stdin("z1", "/shared/note", b"via z1");
    assert_eq!(h.ok(&["fs", "cat", "-z", "z2", "/note"]), "via z1");
    assert!(h
        .ok(&["fs", "ls", "-z", "z1"])
        .contains("shared -> zone z2"));
    let (code, err) = h.fails(&["zone", "destroy", "z2", "--yes"]);
    assert_eq!(code, 5);
    assert!(err.contains("mounted in zone z1"), "{err}");
}

#[test]
fn grants_decide_what_another_principal_may_do() {
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    h.ok(&["fs", "mkdir", "-z", "z1", "/secret"]);
    h.ok(&["fs", "mkdir", "-z", "z1", "/work"]);
    h.put_stdin("z1", "/secret/x", b"classified");
    let (code, err) = h.fails(&["fs", "cat", "-z", "z1", "--as", "agent:bot", "/secret/x"]);
    assert_eq!(code, 4);
    assert!(
        err.contains("permission denied") && err.contains("agent:bot"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");

    let out = h.ok(&["grant", "-z", "z1", "agent:bot", "editor", "/work"]);
    assert!(
        out.starts_with("granted dir:") && out.contains("zone revision"),
        "{out}"
    );
    let check = h.ok(&["check", "-z", "z1", "agent:bot", "write", "/work"]);
    assert!(check.starts_with("allowed"), "{check}");
    assert!(
        check.contains("#editor@agent:bot"),
        "the proof names the grant: {check}"
    );
    let (code, out) = {
        let o = h.run(&["check", "-z", "z1", "agent:bot", "write", "/secret/x"]);
        (
            o.status.code().unwrap(),
            String::from_utf8(o.stdout).unwrap(),
        )
    };
    assert_eq!(code, 4);
    assert!(out.starts_with("denied"), "{out}");

    h.put_stdin_as("z1", "agent:bot", "/work/a.txt", b"from bot");
    assert_eq!(h.ok(&["fs", "cat", "-z", "z1", "/work/a.txt"]), "from bot");
    let tuples: serde_json::Value =
        serde_json::from_str(&h.ok(&["tuples", "-z", "z1", "--json"])).unwrap();
    let rows: Vec<(String, Option<String>)> = tuples
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tuple"].as_str().unwrap().to_owned(),
                t["path"].as_str().map(String::from),
            )
        })
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .any(|(t, _)| t.starts_with("zone:z1#owner@user:")));
    assert!(rows
        .iter()
        .any(|(t, p)| t.ends_with("#editor@agent:bot") && p.as_deref() == Some("/work")));

    h.ok(&["revoke", "-z", "z1", "agent:bot", "editor", "/work"]);
    assert_eq!(
        h.fails(&["fs", "cat", "-z", "z1", "--as", "agent:bot", "/work/a.txt"])
            .0,
        4
    );
    // An agent cannot grant itself anything.
    assert_eq!(
        h.fails(&[
            "grant",
            "-z",
            "z1",
            "--as",
            "agent:bot",
            "agent:bot",
            "owner",
            "zone"
        ])
        .0,
        4
    );
    assert_eq!(
        h.fails(&["grant", "-z", "z1", "agent:bot", "member", "/work"])
            .0,
        1
    );
}

#[test]
fn tokens_carry_an_identity_and_are_refused_with_a_reason() {
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    h.ok(&["zone", "create", "z2"]);
    h.put_stdin("z1", "/doc", b"text");
    h.ok(&["grant", "-z", "z1", "agent:bot", "editor", "zone"]);
    let issued: serde_json::Value = serde_json::from_str(&h.ok(&[
        "token",
        "issue",
        "-z",
        "z1",
        "--as",
        "agent:bot",
        "--ttl",
        "1h",
        "--caps",
        "read",
        "--json",
    ]))
    .unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    assert_eq!(issued["principal"], serde_json::json!({"Agent": "bot"}));
    let with = |args: &[&str]| {
        let mut all = vec!["--token", token.as_str()];
        all.extend_from_slice(args);
        h.run(&all)
    };
    // The token acts as agent:bot, limited to reading, in zone z1 only.
    assert_eq!(
        String::from_utf8(with(&["fs", "cat", "-z", "z1", "/doc"]).stdout).unwrap(),
        "text"
    );
    assert_eq!(
        with(&["fs", "mkdir", "-z", "z1", "/new"]).status.code(),
        Some(4)
    );
    let other = with(&["fs", "ls", "-z", "z2"]);
    assert_eq!(other.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&other.stderr).contains("token is for zone z1"));
    // A token holder without admin cannot mint more tokens.
    assert_eq!(with(&["token", "issue", "-z", "z1"]).status.code(), Some(4));
    assert!(h
        .ok(&["token", "verify", &token])
        .starts_with("valid: agent:bot in zone z1 (read)"));

    let mut tampered = token.clone();
    // Alter the claims (near the payload's end), not the key id at its start.
    let at = tampered.rfind('.').unwrap() - 5;
    let flipped = if &tampered[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(at..at + 1, flipped);
    let (code, err) = h.fails(&["token", "verify", &tampered]);
    assert_eq!(code, 4);
    assert!(err.contains("tampered"), "{err}");

    // Another node's token: a different data directory has a different key.
    let elsewhere = Home::new();
    elsewhere.ok(&["zone", "create", "z1"]);
    let foreign = elsewhere.ok(&["token", "issue", "-z", "z1"]);
    let (_, err) = h.fails(&["token", "verify", foreign.trim()]);
    assert!(err.contains("does not trust"), "{err}");

    // Revoked in the zone (by its owner, through the zone's log)...
    let (code, err) = h.fails(&["--token", &token, "token", "revoke", "-z", "z1", &id]);
    assert_eq!(code, 4, "a reader cannot revoke: {err}");
    h.ok(&["token", "revoke", "-z", "z1", &id]);
    let (code, err) = h.fails(&["--token", &token, "fs", "cat", "-z", "z1", "/doc"]);
    assert_eq!(code, 4);
    assert!(err.contains("has been revoked in zone z1"), "{err}");
    let (code, err) = h.fails(&["token", "revoke", "-z", "z1", "not-an-id"]);
    assert_eq!(code, 1, "{err}");
    // ...and on this node by its operator.
    h.ok(&["token", "revoke", &id]);
    let (code, err) = h.fails(&["--token", &token, "fs", "cat", "-z", "z1", "/doc"]);
    assert_eq!(code, 4);
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(
        h.fails(&["token", "issue", "-z", "z1", "--ttl", "soon"]).0,
        2
    );

    let key = std::fs::metadata(h.0.path().join("issuer.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}

#[test]
fn the_audit_log_shows_denials_and_mutations() {
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    h.ok(&["fs", "mkdir", "-z", "z1", "/d"]);
    h.fails(&["fs", "mkdir", "-z", "z1", "--as", "agent:eve", "/d/e"]);
    let tail = h.ok(&["audit", "tail", "-z", "z1", "-n", "2"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail}");
    assert!(
        lines[0].contains("mkdir") && lines[0].contains(" ok ") && lines[0].ends_with("/d"),
        "{tail}"
    );
    assert!(
        lines[1].contains("agent:eve") && lines[1].contains("denied"),
        "{tail}"
    );
}

#[test]
fn a_second_process_on_a_busy_data_directory_is_told_so() {
    use std::io::BufRead;
    let h = Home::new();
    h.ok(&["zone", "create", "z1"]);
    let mut storm = h
        .cmd(&["stress", "--zone", "z1", "--count", "100000000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it holds the directory and is writing.
    let mut first = String::new();
    std::io::BufReader::new(storm.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("ack "), "{first}");
    let (code, err) = h.fails(&["zone", "list"]);
    storm.kill().unwrap();
    storm.wait().unwrap();
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("in use by another nexus process"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    // Once it is gone, the directory opens again.
    assert!(h.ok(&["zone", "list"]).contains("z1"));
}
