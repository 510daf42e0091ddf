//! Python agents: `examples/python` built with `nexus build` (componentize-py,
//! which scripts/setup installs) and run by the real binary, embedded and
//! through a node: files and sqlite3, pipes between Python and Rust agents,
//! exit statuses, exceptions, timers, and the gate refusing a write.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use nexus_tests::{guest, ok, python_agent, run, text};

#[test]
fn python_agents_use_files_sqlite_pipes_and_timers_and_fail_as_python_does() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.as_path();
    let [notes, fails, producer, consumer] =
        ["notes", "fails", "producer", "consumer"].map(|n| python_agent(dir.path(), n));
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    ok(home, &["zone", "create", "z1"]);
    for agent in ["notes", "producer", "consumer"] {
        let principal = format!("agent:{agent}");
        ok(
            home,
            &["grant", "--zone", "z1", &principal, "editor", "zone"],
        );
    }
    ok(
        home,
        &["grant", "--zone", "z1", "agent:fails", "viewer", "zone"],
    );

    // Ahead of time: the first run then starts at once.
    let compiled = ok(home, &["compile", &s(&notes)]);
    assert!(compiled.contains("compiled in"), "{compiled}");
    assert!(ok(home, &["compile", &s(&notes)]).contains("compiled already"));

    // Files: a walk, a scratch file without a name (`tempfile`), JSON, a
    // log, sqlite3 with VACUUM; the state carries across runs.
    let first = ok(
        home,
        &["run", &s(&notes), "--zone", "z1", "--", "buy", "milk"],
    );
    assert!(
        first.contains("agent:notes in zone z1: 0 files, 1 notes"),
        "{first}"
    );
    let second = ok(
        home,
        &["run", &s(&notes), "--zone", "z1", "--", "call", "home"],
    );
    assert!(second.contains("3 files, 2 notes"), "{second}");
    let log = ok(home, &["fs", "cat", "--zone", "z1", "/notes/agent.log"]);
    assert!(
        log.contains("noted 'buy milk'") && log.contains("noted 'call home'"),
        "{log}"
    );
    let index = ok(home, &["fs", "cat", "--zone", "z1", "/notes/index.json"]);
    assert!(index.contains("\"/notes/notes.db\""), "{index}");
    assert!(ok(home, &["zone", "check", "z1", "--deep"]).contains("consistent"));

    // Exit statuses are the agent's; an exception is its traceback and 1.
    let status = |args: &[&str]| {
        let mut all = vec!["run", fails.to_str().unwrap(), "--zone", "z1", "--"];
        all.extend_from_slice(args);
        run(home, &all)
    };
    assert_eq!(status(&["exit", "7"]).status.code(), Some(7));
    assert_eq!(status(&["return", "9"]).status.code(), Some(9));
    assert_eq!(status(&["exit", "0"]).status.code(), Some(0));
    let raised = status(&["raise"]);
    assert_eq!(raised.status.code(), Some(1));
    let trace = text(&raised.stderr);
    assert!(
        trace.contains("Traceback") && trace.contains("ValueError: the agent gave up"),
        "{trace}"
    );
    // The gate: a viewer's write is a PermissionError in Python.
    let denied = status(&["denied"]);
    assert_eq!(denied.status.code(), Some(3), "{}", text(&denied.stderr));
    assert!(text(&denied.stdout).contains("PermissionError"));
    assert!(
        run(home, &["fs", "stat", "--zone", "z1", "/plans.txt"])
            .status
            .code()
            != Some(0)
    );
    // A kernel timer.
    let slept = status(&["sleep", "0.2"]);
    assert!(slept.status.success(), "{}", text(&slept.stderr));
    // At least the time asked for (a busy machine may take longer).
    let took: f64 = text(&slept.stdout)
        .trim()
        .strip_prefix("slept ")
        .and_then(|s| s.strip_suffix(" s"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{}", text(&slept.stdout)));
    assert!(took >= 0.2, "slept {took} s");

    // Pipes: Python to Python, Python to Rust, Rust to Python.
    let rust_producer = guest("examples/pipeline/producer");
    let rust_consumer = guest("examples/pipeline/consumer");
    let expect = "total: 500 jobs, sum of squares 41791750";
    for (a, b) in [
        (s(&producer), s(&consumer)),
        (s(&producer), s(&rust_consumer)),
        (s(&rust_producer), s(&consumer)),
    ] {
        // A fresh pipe each time (absent the first time).
        run(home, &["fs", "rm", "-r", "--zone", "z1", "/pipes"]);
        let out = ok(
            home,
            &["run", &a, "--zone", "z1", "--with", &b, "--", "500"],
        );
        assert!(out.contains("consumer: 500 jobs"), "{a} | {b}: {out}");
        let results = ok(home, &["fs", "cat", "--zone", "z1", "/output/results.txt"]);
        assert!(
            results.ends_with(&format!("{expect}\n")),
            "{a} | {b}: {results}"
        );
    }

    // Both SDKs build agents of one world, `command-agent` (the `agent`
    // imports, `wasi:cli/run` exported), checked as wit-component checks a
    // component against a world.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let mut resolve = wit_parser::Resolve::default();
    let (kernel, _) = resolve.push_dir(root.join("wit")).unwrap();
    let world = resolve
        .select_world(&[kernel], Some("command-agent"))
        .unwrap();
    for agent in [
        &notes,
        &producer,
        &consumer,
        &fails,
        &rust_producer,
        &rust_consumer,
    ] {
        let bytes = std::fs::read(agent).unwrap();
        wit_component::targets(&resolve, world, &bytes)
            .unwrap_or_else(|e| panic!("{} is not a command agent: {e:#}", agent.display()));
    }
    // One that exports no `run`, or imports what the world has not, is not.
    for other in [
        "(component)",
        r#"(component (import "wasi:keyvalue/store@0.2.0" (instance)))"#,
    ] {
        let bytes = wat::parse_str(other).unwrap();
        assert!(
            wit_component::targets(&resolve, world, &bytes).is_err(),
            "{other}"
        );
    }
}
