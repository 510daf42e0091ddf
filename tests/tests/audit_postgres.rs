//! The audit log on a real PostgreSQL server, through the real `nexus`
//! binary: mutations and denials land there, and `nexus audit tail` reads
//! them back.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_tests::{nexus, PgServer};

#[test]
fn nexus_records_audit_events_in_postgresql() {
    let pg = PgServer::start();
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        nexus(home.path())
            .env("NEXUS_RECORD_STORE", &pg.url)
            .env("USER", "owner")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["zone", "create", "z1"]).status.success());
    assert!(run(&["fs", "mkdir", "--zone", "z1", "/work"])
        .status
        .success());
    let denied = run(&[
        "fs",
        "mkdir",
        "--zone",
        "z1",
        "--as",
        "agent:bot",
        "/work/x",
    ]);
    assert_eq!(
        denied.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(
        run(&["grant", "--zone", "z1", "agent:bot", "editor", "/work"])
            .status
            .success()
    );
    assert!(run(&[
        "fs",
        "mkdir",
        "--zone",
        "z1",
        "--as",
        "agent:bot",
        "/work/x"
    ])
    .status
    .success());

    let tail = run(&["audit", "tail", "--zone", "z1", "--json", "-n", "50"]);
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let lines: Vec<String> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {} {}",
                v["principal"].as_str().unwrap(),
                v["op"].as_str().unwrap(),
                v["path"].as_str().unwrap(),
                v["result"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "user:owner mkdir /work ok",
            "agent:bot create /work/x denied",
            &lines[2], // the grant, checked below
            "agent:bot mkdir /work/x ok",
        ]
    );
    assert!(
        lines[2].starts_with("user:owner write-tuples dir:")
            && lines[2].ends_with("#editor@agent:bot ok"),
        "{}",
        lines[2]
    );
    // The records are in PostgreSQL, not in a SQLite file.
    assert!(!home.path().join("records.db").exists());
    let count = std::process::Command::new("psql")
        .args([
            "-tAc",
            "SELECT count(*) FROM audit WHERE zone = 'z1'",
            &pg.url,
        ])
        .output()
        .expect("psql");
    assert!(
        count.status.success(),
        "{}",
        String::from_utf8_lossy(&count.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "4");
}
