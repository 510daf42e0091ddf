//! A C agent: `examples/c/hello.c` built for wasm32-wasi with zig's C
//! toolchain (PyPI's ziglang, which scripts/setup installs), run by the real
//! binary as a wasip1 module (wrapped with the preview1 adapter).

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use nexus_tests::{ok, run, text};

#[test]
fn a_c_program_built_with_zig_runs_on_its_zone() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cache/nexus-py/bin/python"))
        .unwrap();
    let wasm = dir.path().join("hello-c.wasm");
    let built = Command::new(&python)
        .args(["-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-o"])
        .arg(&wasm)
        .arg(root.join("examples/c/hello.c"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "zig cc (is ziglang installed? scripts/setup does it): {}",
        text(&built.stderr)
    );
    let home = dir.path().join("home");
    ok(&home, &["zone", "create", "z1"]);
    let wasm = wasm.to_str().unwrap();
    // No grant yet: refused, as any agent.
    assert_eq!(
        run(&home, &["run", wasm, "--zone", "z1"]).status.code(),
        Some(4)
    );
    ok(
        &home,
        &["grant", "--zone", "z1", "agent:hello-c", "editor", "zone"],
    );
    let out = ok(&home, &["run", wasm, "--zone", "z1", "--", "nexus"]);
    assert!(out.contains("hello, nexus: 4194304 heap bytes"), "{out}");
    let note = ok(&home, &["fs", "cat", "--zone", "z1", "/c-hello.txt"]);
    assert_eq!(note, "hello, nexus, from C\n");
}
