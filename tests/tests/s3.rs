//! The S3 content store against a real S3-compatible server: moto's server
//! mode (installed by `scripts/setup`), started on loopback, reached
//! through a TCP proxy the test can cut. Files of several chunks round
//! trip; two data directories sharing one bucket and prefix refuse `gc`
//! (neither can see the other's references); an upload cut mid-way fails
//! the write, leaves nothing half-written referenced, and loses nothing
//! acknowledged before it.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nexus_tests::{nexus, pattern, Moto, BUCKET};

/// A TCP proxy to `port` that the test can cut: while cut, every
/// connection it holds is closed and new ones are refused. It counts the
/// bytes it has passed.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    passed: Arc<AtomicU64>,
}

impl Proxy {
    fn to(port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let me = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let passed = Arc::new(AtomicU64::new(0));
        let (c, p) = (cut.clone(), passed.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (c, p) = (c.clone(), p.clone());
                    std::thread::spawn(move || pump(from, to, &c, &p));
                }
            }
        });
        Proxy {
            port: me,
            cut,
            passed,
        }
    }
}

/// Copies `from` into `to` until either ends or the proxy is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, passed: &AtomicU64) {
    let mut buf = [0u8; 16 << 10];
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        if cut.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                passed.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// `nexus` on data directory `home`, storing content in the bucket at
/// `prefix` through the server on `port`.
fn on_s3(home: &Path, port: u16, prefix: &str, args: &[&str]) -> Output {
    nexus(home)
        .envs(Moto::env(port))
        .args(["--object-store", &format!("s3://{BUCKET}/{prefix}")])
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn files_round_trip_through_s3_and_a_shared_bucket_refuses_gc() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let s3 = |home: &Path, args: &[&str]| on_s3(home, moto.port, "zones", args);
    ok(s3(&a, &["zone", "create", "z1"]));
    // Three chunks and a bit.
    let body = pattern(3 * (1 << 20) + 4321, 1);
    let src = dir.path().join("body");
    std::fs::write(&src, &body).unwrap();
    ok(s3(
        &a,
        &["fs", "put", "--zone", "z1", src.to_str().unwrap(), "/big"],
    ));
    let got = dir.path().join("got");
    ok(s3(
        &a,
        &["fs", "get", "--zone", "z1", "/big", got.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&got).unwrap() == body,
        "the file came back changed"
    );
    let check = ok(s3(&a, &["zone", "check", "z1", "--deep"]));
    assert!(check.contains("consistent"), "{check}");
    // Alone on its prefix, gc keeps what is referenced.
    let gc = ok(s3(&a, &["gc"]));
    assert!(gc.contains("deleted 0"), "{gc}");

    // A second data directory stores chunks under the same prefix: each
    // now refuses gc, since neither sees the other's references.
    ok(s3(&b, &["zone", "create", "z2"]));
    ok(s3(
        &b,
        &["fs", "put", "--zone", "z2", src.to_str().unwrap(), "/copy"],
    ));
    for home in [&a, &b] {
        let out = s3(home, &["gc"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "gc ran on a shared bucket");
        assert!(err.contains("other"), "{err}");
    }
    ok(s3(
        &b,
        &["fs", "get", "--zone", "z2", "/copy", got.to_str().unwrap()],
    ));
    assert!(std::fs::read(&got).unwrap() == body);
    ok(s3(
        &a,
        &["fs", "get", "--zone", "z1", "/big", got.to_str().unwrap()],
    ));
    assert!(std::fs::read(&got).unwrap() == body);
}

#[test]
fn an_upload_cut_midway_fails_and_loses_nothing_acknowledged() {
    let moto = Moto::start();
    let proxy = Proxy::to(moto.port);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let s3 = |args: &[&str]| on_s3(&home, proxy.port, "cut", args);
    ok(s3(&["zone", "create", "z1"]));
    let kept = pattern(2 * (1 << 20) + 7, 2);
    let src = dir.path().join("kept");
    std::fs::write(&src, &kept).unwrap();
    ok(s3(&[
        "fs",
        "put",
        "--zone",
        "z1",
        src.to_str().unwrap(),
        "/kept",
    ]));

    // A large upload, cut once 8 MiB of it have passed.
    let big = dir.path().join("big");
    std::fs::write(&big, pattern(96 << 20, 3)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (cut, passed, done) = (proxy.cut.clone(), proxy.passed.clone(), done.clone());
        let from = passed.load(Ordering::SeqCst);
        std::thread::spawn(move || {
            while passed.load(Ordering::SeqCst) < from + (8 << 20) {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            cut.store(true, Ordering::SeqCst);
            true
        })
    };
    let out = s3(&["fs", "put", "--zone", "z1", big.to_str().unwrap(), "/big"]);
    done.store(true, Ordering::SeqCst);
    assert!(
        cutter.join().unwrap(),
        "the upload ended before 8 MiB passed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the upload succeeded through a cut connection"
    );
    proxy.cut.store(false, Ordering::SeqCst);

    // Nothing half-written is referenced; what was acknowledged is whole.
    let ls = ok(s3(&["fs", "ls", "--zone", "z1", "/"]));
    assert!(!ls.contains("big"), "{ls}");
    let check = ok(s3(&["zone", "check", "z1", "--deep"]));
    assert!(check.contains("consistent"), "{check}");
    let got = dir.path().join("got");
    ok(s3(&[
        "fs",
        "get",
        "--zone",
        "z1",
        "/kept",
        got.to_str().unwrap(),
    ]));
    assert!(std::fs::read(&got).unwrap() == kept);
}
