//! The `nexus` command as a user meets it: real processes on a real data
//! directory, checking output, JSON and exit codes.

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
        let mut child = self
            .cmd(&["fs", "put", "--zone", zone, "-", dest])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
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
    assert_eq!(
        gc["deleted"], 4,
        "the four chunks of the removed file are collected"
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
