//! A C agent: `examples/c/hello.c` built for wasm32-wasi with zig's C
//! toolchain (PyPI's ziglang, which scripts/setup installs), run by the real
//! binary as a wasip1 module (wrapped with the preview1 adapter); and what
//! a module built with an old wasi-libc (Debian 12's) is told.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use nexus_tests::{ok, run, text};

/// Builds `source` for wasm32-wasi into `out` with zig's C toolchain
/// (PyPI's ziglang, which scripts/setup installs beside componentize-py).
fn zig_cc(source: &Path, out: &Path) {
    let python = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cache/nexus-py/bin/python"))
        .expect("HOME");
    let built = Command::new(&python)
        .args(["-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-o"])
        .arg(out)
        .arg(source)
        .output()
        .expect("run python -m ziglang");
    assert!(
        built.status.success(),
        "zig cc (is ziglang installed? scripts/setup does it): {}",
        text(&built.stderr)
    );
}

#[test]
fn a_c_program_built_with_zig_runs_on_its_zone() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let wasm = dir.path().join("hello-c.wasm");
    zig_cc(&root.join("examples/c/hello.c"), &wasm);
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

/// Debian 12's clang 14 and wasi-libc (2022): malloc takes the memory up
/// to the end of linear memory at its first call, which includes the
/// pages the preview 1 adapter grew for its state, so a block reaching
/// them is written over the adapter's state and the adapter asserts. Small
/// blocks work; a large one gets the explanation and what to do, not an
/// opaque trap. The same source built with zig's toolchain works at every
/// size.
#[test]
fn an_old_wasi_libc_heap_overlap_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let source = root.join("guests/c/malloc_memset.c");
    let old = dir.path().join("old-libc.wasm");
    let built = Command::new("clang-14")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
        .arg(&old)
        .arg(&source)
        .output()
        .expect("clang-14 (scripts/setup installs it)");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let current = dir.path().join("current-libc.wasm");
    zig_cc(&source, &current);
    let home = dir.path().join("home");
    ok(&home, &["zone", "create", "z1"]);
    for agent in ["old-libc", "current-libc"] {
        let who = format!("agent:{agent}");
        ok(&home, &["grant", "--zone", "z1", &who, "editor", "zone"]);
    }
    let (old, current) = (old.to_str().unwrap(), current.to_str().unwrap());
    let small = ok(&home, &["run", old, "--zone", "z1", "--", "100"]);
    assert_eq!(small, "100 bytes set to 171\n");
    let big = run(&home, &["run", old, "--zone", "z1", "--", "250000"]);
    let err = text(&big.stderr);
    assert_eq!(big.status.code(), Some(125), "{err}");
    assert!(
        err.contains("agent trapped in the WASI preview 1 adapter")
            && err.contains("wasi-libc from before 2023")
            && err.contains("ziglang"),
        "{err}"
    );
    assert!(!err.contains("wasm backtrace"), "{err}");
    let fine = ok(&home, &["run", current, "--zone", "z1", "--", "250000"]);
    assert_eq!(fine, "250000 bytes set to 171\n");
}
