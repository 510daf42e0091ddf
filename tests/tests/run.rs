//! `nexus run`: real agents built from examples/ for wasm32-wasip2, run by
//! the real binary, their only I/O the kernel.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_tests::{guest, run, text};

#[test]
fn hello_runs_as_its_own_identity_on_its_zone() {
    let hello = guest("examples/hello");
    let hello = hello.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    assert!(run(home, &["zone", "create", "z1"]).status.success());
    assert!(run(home, &["zone", "create", "z2"]).status.success());

    // No grant: refused before it starts, with what to do about it.
    let refused = run(home, &["run", hello, "--zone", "z1"]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("nexus grant --zone z1 agent:hello"));

    // Read-only: it starts, its write is denied by the gate (an error the
    // guest sees, not a trap), and its own exit code comes back.
    assert!(run(
        home,
        &["grant", "--zone", "z1", "agent:hello", "viewer", "zone"]
    )
    .status
    .success());
    let read_only = run(home, &["run", hello, "--zone", "z1"]);
    assert_eq!(
        read_only.status.code(),
        Some(2),
        "{}",
        text(&read_only.stderr)
    );
    assert!(
        text(&read_only.stderr)
            .to_lowercase()
            .contains("permission denied"),
        "{}",
        text(&read_only.stderr)
    );

    assert!(run(
        home,
        &["grant", "--zone", "z1", "agent:hello", "editor", "zone"]
    )
    .status
    .success());
    let ok = run(home, &["run", hello, "--zone", "z1"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(out.contains("hello from agent:hello"), "{out}");
    assert!(out.contains("in zone z1"), "{out}");
    assert!(out.contains("wrote and read back /hello/note.txt"), "{out}");
    // What it wrote is in the zone, seen through the kernel...
    let cat = run(home, &["fs", "cat", "--zone", "z1", "/hello/note.txt"]);
    assert_eq!(text(&cat.stdout), "written by agent:hello\n");
    // ...attributed to it in the audit log...
    let audit = text(&run(home, &["audit", "tail", "--zone", "z1", "-n", "3"]).stdout);
    assert!(
        audit.contains("agent:hello") && audit.contains("/hello/note.txt"),
        "{audit}"
    );
    // ...and nowhere else: not in z2, not on the host.
    assert_eq!(
        run(home, &["fs", "stat", "--zone", "z2", "/hello"])
            .status
            .code(),
        Some(3)
    );
    assert!(!std::path::Path::new("/hello/note.txt").exists());

    // Another identity has no grant, whatever the file is called.
    let other = run(home, &["run", hello, "--zone", "z1", "--as", "agent:other"]);
    assert_eq!(other.status.code(), Some(4));
    // The compiled component is cached for the next run.
    let cache = home.join("cache/components");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

#[test]
fn files_that_are_not_components_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    assert!(run(home, &["zone", "create", "z1"]).status.success());
    assert!(run(
        home,
        &["grant", "--zone", "z1", "agent:junk", "viewer", "zone"]
    )
    .status
    .success());
    let junk = home.join("junk.wasm");
    std::fs::write(&junk, b"#!/bin/sh\necho hi\n").unwrap();
    let r = run(home, &["run", junk.to_str().unwrap(), "--zone", "z1"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stderr).contains("not a WebAssembly file"),
        "{}",
        text(&r.stderr)
    );
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let r = run(home, &["run", junk.to_str().unwrap(), "--zone", "z1"]);
    assert!(
        text(&r.stderr).contains("core wasm module"),
        "{}",
        text(&r.stderr)
    );
    let r = run(home, &["run", "/no/such/agent.wasm", "--zone", "z1"]);
    assert_eq!(r.status.code(), Some(3));
    let hello = guest("examples/hello");
    let r = run(home, &["run", hello.to_str().unwrap(), "--zone", "nozone"]);
    assert_eq!(r.status.code(), Some(3));
    assert!(
        text(&r.stderr).contains("unknown zone nozone"),
        "{}",
        text(&r.stderr)
    );
}

#[test]
fn wordcount_counts_the_zone_input_into_its_output() {
    let wc = guest("examples/wordcount");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    assert!(run(home, &["zone", "create", "z1"]).status.success());
    assert!(run(home, &["fs", "mkdir", "--zone", "z1", "/input"])
        .status
        .success());
    for (name, body) in [
        ("a.txt", "the cat saw the dog\n"),
        ("b.txt", "The end"),
        ("skip.md", "not counted"),
    ] {
        let local = home.join(name);
        std::fs::write(&local, body).unwrap();
        let dest = format!("/input/{name}");
        assert!(run(
            home,
            &["fs", "put", "--zone", "z1", local.to_str().unwrap(), &dest]
        )
        .status
        .success());
    }
    // Reading /input needs read; writing /output needs write on the root.
    assert!(run(
        home,
        &["grant", "--zone", "z1", "agent:wordcount", "editor", "zone"]
    )
    .status
    .success());
    let out = run(home, &["run", wc.to_str().unwrap(), "--zone", "z1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "counted 7 words in 2 files\n");
    let json = text(&run(home, &["fs", "cat", "--zone", "z1", "/output/counts.json"]).stdout);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["files"], 2);
    assert_eq!(v["words"], 7);
    assert_eq!(v["counts"]["the"], 3);
    assert_eq!(v["counts"]["cat"], 1);
    assert_eq!(v["counts"]["end"], 1);
    assert!(v["counts"].get("not").is_none());
}

#[test]
fn a_component_importing_what_nexus_lacks_is_refused_by_name() {
    // The smallest component that imports wasi:keyvalue, which Nexus does not serve.
    let wasm = wat::parse_str(
        r#"(component
             (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "open" (func))))
           )"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let agent = home.join("needs-keyvalue.wasm");
    std::fs::write(&agent, wasm).unwrap();
    assert!(run(home, &["zone", "create", "z1"]).status.success());
    let out = run(home, &["run", agent.to_str().unwrap(), "--zone", "z1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("imports something Nexus does not provide"),
        "{err}"
    );
    assert!(err.contains("wasi:keyvalue/store@0.2.0-draft"), "{err}");
}
