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
