//! `nexus fs put -r` and `fs get -r` through the real binary: whole trees
//! both ways, and symbolic links on the host side that must not lead
//! Nexus outside the directory it was given (cap-std).

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;

use nexus_tests::{ok, run, text};

#[test]
fn trees_copy_both_ways_and_symlinks_never_lead_outside() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let home = home.as_path();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("top.txt"), "top").unwrap();
    std::fs::write(src.join("a/one.txt"), "one").unwrap();
    std::fs::write(src.join("a/b/two.bin"), vec![7u8; 3 << 20]).unwrap();
    // A secret beside the tree, and links to it and to its directory.
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("key"), "do not copy").unwrap();
    symlink(secret.join("key"), src.join("a/leak")).unwrap();
    symlink(&secret, src.join("escape")).unwrap();
    // A relative link inside the tree is copied as a link.
    symlink("one.txt", src.join("a/rel")).unwrap();
    ok(home, &["zone", "create", "z1"]);

    let out = run(
        home,
        &[
            "fs",
            "put",
            "-r",
            "--zone",
            "z1",
            src.to_str().unwrap(),
            "/in",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("put 3 files (3145734 bytes) in 3 directories, 1 symbolic links; 2 skipped"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        text(&out.stderr)
            .matches("a link to an absolute host path")
            .count(),
        2
    );
    assert_eq!(
        ok(home, &["fs", "readlink", "--zone", "z1", "/in/a/rel"]),
        "one.txt\n"
    );
    assert_eq!(ok(home, &["fs", "cat", "--zone", "z1", "/in/a/rel"]), "one");
    // `fs ln -s`: an absolute target is taken from the zone root.
    ok(
        home,
        &["fs", "ln", "-s", "--zone", "z1", "/in/top.txt", "/top-link"],
    );
    assert_eq!(ok(home, &["fs", "cat", "--zone", "z1", "/top-link"]), "top");
    let listed = ok(home, &["fs", "ls", "--zone", "z1", "/"]);
    assert!(listed.contains("symlink"), "{listed}");
    assert_eq!(
        ok(home, &["fs", "cat", "--zone", "z1", "/in/a/one.txt"]),
        "one"
    );
    let gone = run(home, &["fs", "stat", "--zone", "z1", "/in/a/leak"]);
    assert_eq!(gone.status.code(), Some(3));
    let gone = run(home, &["fs", "stat", "--zone", "z1", "/in/escape"]);
    assert_eq!(gone.status.code(), Some(3));

    // Back out, into a fresh directory: the same tree.
    let back = dir.path().join("back");
    ok(
        home,
        &[
            "fs",
            "get",
            "-r",
            "--zone",
            "z1",
            "/in",
            back.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(back.join("a/one.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read(back.join("a/b/two.bin")).unwrap(),
        vec![7u8; 3 << 20]
    );
    assert_eq!(
        std::fs::read_to_string(back.join("top.txt")).unwrap(),
        "top"
    );

    // A destination holding a link out of it: refused, nothing written
    // where the link points.
    let trap = dir.path().join("trap");
    std::fs::create_dir(&trap).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    symlink(&outside, trap.join("a")).unwrap();
    let out = run(
        home,
        &[
            "fs",
            "get",
            "-r",
            "--zone",
            "z1",
            "/in",
            trap.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("outside"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

    // A directory without -r: a clear usage error.
    let out = run(
        home,
        &["fs", "put", "--zone", "z1", src.to_str().unwrap(), "/x"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("fs put -r"));
}
