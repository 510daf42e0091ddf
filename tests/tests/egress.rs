//! Egress: agents' `wasi:http` requests through the kernel, against HTTP
//! and HTTPS servers this test starts on loopback (HTTPS with a CA the
//! test makes and the `nexus` process trusts through `SSL_CERT_FILE`).
//! The agent is `examples/fetch`, run by the real binary, and in-process
//! where a test needs limits of its own.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nexus_kernel::{Capabilities, Kernel, KernelConfig, ObjectRef, Principal, Relation};
use nexus_kernel::{Subject, Task, Tuple, ZoneId};
use nexus_runtime::agent::host::Stdio as AgentStdio;
use nexus_runtime::agent::host::{Host, RunLimits};
use nexus_tests::{guest, nexus, ok, python_agent, run, text};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const SECRET: &str = "Bearer sk-test-0123456789abcdef";

/// One request a test server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 server on a loopback port, on a thread of its own, that
/// records every request. Routes: `/echo` (the request's headers and body
/// back, and its `authorization` in a response header), `/big/N` (N
/// bytes), `/hang` (never answers), and hostile answers: `/garbage` (not
/// HTTP), `/many-headers` (200 KB of headers), `/trickle` (a body that
/// stops coming); anything else a greeting.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let log = log.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => serve(tcp, log).await,
                            Some(cfg) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                                if let Ok(s) = acceptor.accept(tcp).await {
                                    serve(s, log).await;
                                }
                            }
                        }
                    });
                }
            });
        });
        Server { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 || buf.len() > 64 << 10 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let seen = Seen {
        path: path.clone(),
        headers,
        body,
    };
    log.lock().unwrap().push(seen.clone());
    let mut extra = String::new();
    let reply: Vec<u8> = if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    } else if path == "/garbage" {
        let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
        return;
    } else if path == "/many-headers" {
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..2000 {
            head.push_str(&format!("x-h{i}: {}\r\n", "v".repeat(100)));
        }
        head.push_str("content-length: 0\r\n\r\n");
        let _ = s.write_all(head.as_bytes()).await;
        return;
    } else if path == "/trickle" {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten..")
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return;
    } else if let Some(n) = path.strip_prefix("/big/") {
        vec![b'x'; n.parse().unwrap_or(0)]
    } else if path == "/echo" {
        if let Some(auth) = seen.header("authorization") {
            extra = format!("x-seen-authorization: {auth}\r\n");
        }
        let mut out = String::new();
        for (n, v) in &seen.headers {
            out.push_str(&format!("{n}: {v}\n"));
        }
        let mut out = out.into_bytes();
        out.extend_from_slice(&seen.body);
        out
    } else {
        b"hello from the test server\n".to_vec()
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        reply.len()
    );
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&reply).await;
    let _ = s.shutdown().await;
}

/// A CA (its certificate written to `dir/ca.pem`) and a server
/// configuration for 127.0.0.1 signed by it.
fn tls_server(dir: &Path) -> Arc<rustls::ServerConfig> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der)
    .unwrap();
    Arc::new(cfg)
}

/// A data directory with zone z1, where `agent:fetch` may write.
fn zone() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    ok(home, &["zone", "create", "z1"]);
    ok(
        home,
        &["grant", "--zone", "z1", "agent:fetch", "editor", "zone"],
    );
    let fetch = guest("examples/fetch").to_str().unwrap().to_owned();
    (dir, fetch)
}

/// `nexus secret set` of `Authorization: SECRET` for `dest`, with `more`.
fn set_secret(home: &Path, dest: &str, more: &[&str]) -> std::process::Output {
    let header = format!("Authorization: {SECRET}");
    let mut args = vec!["secret", "set", "--zone", "z1", dest, "-H", &header];
    args.extend_from_slice(more);
    run(home, &args)
}

/// Grants `agent:fetch` the destination `dest` (`host:…`).
fn allow(home: &Path, dest: &str) {
    ok(
        home,
        &["grant", "--zone", "z1", "agent:fetch", "fetch", dest],
    );
}

fn fetch(home: &Path, wasm: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["run", wasm, "--zone", "z1", "--"];
    all.extend_from_slice(args);
    run(home, &all)
}

#[test]
fn a_request_leaves_only_with_a_grant_and_the_denial_says_which() {
    let server = Server::start(None);
    let (dir, wasm) = zone();
    let home = dir.path();
    let url = format!("http://127.0.0.1:{}/hello", server.port);

    let denied = fetch(home, &wasm, &[&url, "/page.txt"]);
    assert!(!denied.status.success());
    let err = text(&denied.stderr);
    let grant = format!(
        "nexus grant --zone z1 agent:fetch fetch host:http://127.0.0.1:{}",
        server.port
    );
    assert!(err.contains(&grant), "{err}");
    assert!(err.contains("denied by the kernel"), "{err}");
    assert!(
        server.seen().is_empty(),
        "a denied request reached the server"
    );

    let args: Vec<&str> = grant.split(' ').skip(1).collect();
    ok(home, &args);
    let fetched = fetch(home, &wasm, &[&url, "/page.txt"]);
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    assert_eq!(
        ok(home, &["fs", "cat", "--zone", "z1", "/page.txt"]),
        "hello from the test server\n"
    );
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].path, "/hello");
    // Another port of the same address is another destination.
    let other = Server::start(None);
    let elsewhere = fetch(home, &wasm, &[&format!("http://127.0.0.1:{}/", other.port)]);
    assert!(!elsewhere.status.success());
    assert!(other.seen().is_empty());

    // Both requests are in the audit log, the denial as such.
    let audit = ok(
        home,
        &["audit", "tail", "--zone", "z1", "--json", "-n", "50"],
    );
    let rows: Vec<serde_json::Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &serde_json::Value| r["op"] == "http")
        .collect();
    assert_eq!(rows.len(), 3, "{audit}");
    let target = format!("GET http://127.0.0.1:{}/hello", server.port);
    assert_eq!(rows[0]["path"], target.as_str());
    assert!(rows[0]["result"].as_str().unwrap().starts_with("denied;"));
    assert_eq!(rows[1]["principal"], "agent:fetch");
    let done = rows[1]["result"].as_str().unwrap();
    assert!(done.starts_with("200; 0 B sent, 27 B received,"), "{done}");
    assert!(rows[2]["result"].as_str().unwrap().starts_with("denied;"));
}

#[test]
fn wildcard_grants_cover_subdomains_and_check_explains_them() {
    let (dir, _) = zone();
    let home = dir.path();
    ok(
        home,
        &[
            "grant",
            "--zone",
            "z1",
            "agent:bot",
            "fetch",
            "host:*.Example.com",
        ],
    );
    let why = ok(
        home,
        &[
            "check",
            "--zone",
            "z1",
            "agent:bot",
            "fetch",
            "host:https://api.example.com:443",
        ],
    );
    assert!(why.contains("host:*.example.com#fetch@agent:bot"), "{why}");
    assert!(
        why.contains("host:api.example.com inherits fetch from host:*.example.com"),
        "{why}"
    );
    for not in [
        "host:example.com",
        "host:http://api.example.com",
        "host:api.example.com:8443",
        "host:10.0.0.1",
    ] {
        let out = run(home, &["check", "--zone", "z1", "agent:bot", "fetch", not]);
        assert!(!out.status.success(), "{not}: {}", text(&out.stdout));
    }
    // Nonsense is refused before anything is stored.
    let bad = run(
        home,
        &["grant", "--zone", "z1", "agent:bot", "fetch", "host:a b"],
    );
    assert!(!bad.status.success());
    let bad = run(
        home,
        &["grant", "--zone", "z1", "agent:bot", "viewer", "host:x.com"],
    );
    assert!(!bad.status.success());
}

#[test]
fn a_name_that_resolves_to_a_private_address_is_refused() {
    let server = Server::start(None);
    let (dir, wasm) = zone();
    let home = dir.path();
    // The grant names `localhost`, which resolves to loopback: a name an
    // agent's owner does not control could be rebound the same way.
    let dest = format!("host:http://localhost:{}", server.port);
    allow(home, &dest);
    let out = fetch(
        home,
        &wasm,
        &[&format!("http://localhost:{}/", server.port)],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("resolves to 127.0.0.1, a loopback address"),
        "{err}"
    );
    assert!(err.contains("DestinationIpProhibited"), "{err}");
    assert!(
        server.seen().is_empty(),
        "the request reached a loopback server"
    );
}

#[test]
fn secrets_reach_the_destination_and_never_the_agent() {
    let server = Server::start(None);
    let plain = Server::start(None);
    let (dir, wasm) = zone();
    let home = dir.path();
    for s in [&server, &plain] {
        let dest = format!("host:http://127.0.0.1:{}", s.port);
        allow(home, &dest);
    }
    let dest = format!("http://127.0.0.1:{}", server.port);
    let set = set_secret(home, &dest, &[]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(!text(&set.stdout).contains("sk-test"));
    let listed = ok(home, &["secret", "list", "--zone", "z1"]);
    assert!(
        listed.contains("authorization") && !listed.contains("sk-test"),
        "{listed}"
    );

    // The agent even tries to set its own: the kernel's replaces it.
    let out = fetch(
        home,
        &wasm,
        &[
            &format!("{dest}/echo"),
            "/echo.txt",
            "-H",
            "Authorization: mine",
            "--headers",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = server.seen();
    assert_eq!(got[0].header("authorization"), Some(SECRET));
    // The echo came back masked: in the body the agent wrote, in the
    // header it printed, on its stderr, in the audit log.
    let echoed = ok(home, &["fs", "cat", "--zone", "z1", "/echo.txt"]);
    assert!(echoed.contains("authorization: [secret]"), "{echoed}");
    let shown = text(&out.stdout);
    assert!(shown.contains("x-seen-authorization: [secret]"), "{shown}");
    let audit = ok(
        home,
        &["audit", "tail", "--zone", "z1", "--json", "-n", "100"],
    );
    for (what, s) in [
        ("file", &echoed),
        ("stdout", &shown),
        ("stderr", &text(&out.stderr)),
        ("audit", &audit),
    ] {
        assert!(
            !s.contains("sk-test"),
            "the secret leaked into the agent's {what}: {s}"
        );
    }
    // Nor is it anywhere in the zone's files.
    let files = ok(home, &["fs", "ls", "--zone", "z1", "/"]);
    assert!(!files.contains("secret"), "{files}");

    // Another destination gets no secret.
    let other = fetch(
        home,
        &wasm,
        &[&format!("http://127.0.0.1:{}/echo", plain.port)],
    );
    assert!(other.status.success());
    assert_eq!(plain.seen()[0].header("authorization"), None);

    // Removed, it is sent no more.
    ok(home, &["secret", "rm", "--zone", "z1", &dest]);
    assert!(fetch(home, &wasm, &[&format!("{dest}/echo")])
        .status
        .success());
    assert_eq!(server.seen()[1].header("authorization"), None);
    // Only an admin of the zone manages secrets.
    let as_agent = set_secret(home, &dest, &["--as", "agent:fetch"]);
    assert_eq!(
        as_agent.status.code(),
        Some(4),
        "{}",
        text(&as_agent.stderr)
    );
}

#[test]
fn https_is_checked_against_the_trusted_roots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Some(tls_server(dir.path())));
    let (zone_dir, wasm) = zone();
    let home = zone_dir.path();
    let dest = format!("host:127.0.0.1:{}", server.port);
    allow(home, &dest);
    let url = format!("https://127.0.0.1:{}/echo", server.port);
    assert!(set_secret(home, &dest, &[]).status.success());

    // Trusted (the CA is the only root): the request and its secret go.
    let out = nexus(home)
        .env("SSL_CERT_FILE", dir.path().join("ca.pem"))
        .args(["run", &wasm, "--zone", "z1", "--", &url, "/tls.txt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.seen()[0].header("authorization"), Some(SECRET));

    // Not trusted (the system's roots): refused before a byte is sent.
    let out = fetch(home, &wasm, &[&url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("TlsCertificateError"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.seen().len(), 1);
}

/// In-process: a kernel, a host, zone z1 and a task of its owner, granted
/// `fetch` on the server's destination.
async fn in_process(port: u16) -> (tempfile::TempDir, Arc<Kernel>, Host, Task) {
    let dir = tempfile::tempdir().unwrap();
    let k = Arc::new(Kernel::open(KernelConfig::embedded(dir.path())).unwrap());
    let host = Host::new(&dir.path().join("cache"), false, 64 << 20).unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    k.create_zone(&owner, &z1).await.unwrap();
    let task = k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
    let grant = Tuple {
        object: ObjectRef::parse(&format!("host:http://127.0.0.1:{port}")).unwrap(),
        relation: Relation::Fetch,
        subject: Subject::Principal(owner),
    };
    k.write_tuples(&task, vec![grant], vec![]).await.unwrap();
    (dir, k, host, task)
}

/// Runs `examples/fetch ARGS` in-process with `limits`; its exit code and
/// stdout.
async fn fetch_with(limits: RunLimits, port: u16, args: &[&str]) -> (i32, String, String) {
    let (_dir, k, host, task) = in_process(port).await;
    fetch_as(&k, &host, task, &limits, args).await
}

/// Runs `examples/fetch ARGS` as `task` with `limits`.
async fn fetch_as(
    k: &Arc<Kernel>,
    host: &Host,
    task: Task,
    limits: &RunLimits,
    args: &[&str],
) -> (i32, String, String) {
    let pre = host
        .prepare(&host.load(&guest("examples/fetch")).unwrap())
        .unwrap();
    let argv: Vec<String> = std::iter::once("fetch")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let (out_w, mut out_r) = tokio::io::duplex(1 << 20);
    let (err_w, mut err_r) = tokio::io::duplex(1 << 20);
    let stdio = AgentStdio::Streams {
        stdin: None,
        stdout: out_w,
        stderr: err_w,
    };
    let code = host
        .run(&pre, k.clone(), task, &argv, &[], limits, stdio)
        .await
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    out_r.read_to_end(&mut out).await.unwrap();
    err_r.read_to_end(&mut err).await.unwrap();
    (code, text(&out), text(&err))
}

fn limits(f: impl FnOnce(&mut nexus_runtime::agent::http::EgressLimits)) -> RunLimits {
    let mut l = RunLimits::default();
    f(&mut l.egress);
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_a_clear_error() {
    let server = Server::start(None);
    let base = format!("http://127.0.0.1:{}", server.port);

    // A response body past its limit.
    let l = limits(|e| e.response_body = 1000);
    let (code, _, err) = fetch_with(l, server.port, &[&format!("{base}/big/5000")]).await;
    assert_ne!(code, 0);
    assert!(err.contains("HttpResponseBodySize(Some(1000))"), "{err}");

    // A request body past its limit: refused before it is sent.
    let l = limits(|e| e.request_body = 100);
    let big = "y".repeat(5000);
    let (code, _, err) = fetch_with(
        l,
        server.port,
        &[&format!("{base}/echo"), "-X", "POST", "-d", &big],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("HttpRequestBodySize(Some(100))"), "{err}");
    assert!(server.seen().iter().all(|s| s.body.len() < 5000));

    // A destination that never answers: the request's time runs out.
    let l = limits(|e| e.request_time = Duration::from_millis(300));
    let (code, _, err) = fetch_with(l, server.port, &[&format!("{base}/hang")]).await;
    assert_ne!(code, 0);
    assert!(err.contains("HttpResponseTimeout"), "{err}");

    // More requests in flight than allowed: the one past the limit fails.
    let l = limits(|e| e.concurrent = 3);
    let (_, out, _) = fetch_with(l, server.port, &[&format!("{base}/"), "--parallel", "4"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0: 200", "1: 200", "2: 200"], "{out}");
    assert!(lines[3].contains("ConnectionLimitReached"), "{out}");

    // The run's traffic: three 400-byte bodies fit 1000 bytes twice.
    let l = limits(|e| e.run_bytes = 1000);
    let (_, out, err) = fetch_with(
        l,
        server.port,
        &[&format!("{base}/big/400"), "--parallel", "3"],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["0: 200", "1: 200"], "{out}");
    assert!(
        lines[2].contains("traffic limit of 1000 bytes"),
        "{out}{err}"
    );

    // A run's agents share its traffic: the second agent of the run finds
    // what the first spent.
    let (_dir, k, host, task) = in_process(server.port).await;
    let run = limits(|e| e.run_bytes = 600);
    let big = format!("{base}/big/400");
    let (code, _, _) = fetch_as(&k, &host, task.clone(), &run, &[&big]).await;
    assert_eq!(code, 0);
    let (code, _, err) = fetch_as(&k, &host, task, &run, &[&big]).await;
    assert_ne!(code, 0);
    assert!(err.contains("traffic limit of 600 bytes"), "{err}");
}

#[test]
fn a_python_agent_fetches_through_the_sdk() {
    let server = Server::start(None);
    let (dir, _) = zone();
    let home = dir.path();
    let wasm = python_agent(home, "fetch");
    let wasm = wasm.to_str().unwrap();
    let url = format!("http://127.0.0.1:{}/hello", server.port);
    let denied = run(home, &["run", wasm, "--zone", "z1", "--", &url, "/py.txt"]);
    assert_eq!(denied.status.code(), Some(4), "{}", text(&denied.stderr));
    assert!(text(&denied.stderr)
        .contains("nexus grant --zone z1 agent:fetch fetch host:http://127.0.0.1:"));
    let dest = format!("host:http://127.0.0.1:{}", server.port);
    allow(home, &dest);
    let out = ok(home, &["run", wasm, "--zone", "z1", "--", &url, "/py.txt"]);
    assert!(out.starts_with("200 27 bytes"), "{out}");
    assert_eq!(
        ok(home, &["fs", "cat", "--zone", "z1", "/py.txt"]),
        "hello from the test server\n"
    );
    assert_eq!(server.seen()[0].header("accept"), Some("*/*"));
}

#[test]
fn requests_goes_through_the_kernel_with_the_adapter() {
    let server = Server::start(None);
    let (dir, _) = zone();
    let home = dir.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let vendor = Path::new(&std::env::var("HOME").unwrap()).join(".cache/nexus-py/agent-packages");
    let wasm = home.join("fetch_requests.wasm");
    let source = root.join("examples/python/fetch_requests.py");
    ok(
        home,
        &[
            "build",
            source.to_str().unwrap(),
            "--path",
            vendor.to_str().unwrap(),
            "-o",
            wasm.to_str().unwrap(),
        ],
    );
    let wasm = wasm.to_str().unwrap();
    ok(
        home,
        &[
            "grant",
            "--zone",
            "z1",
            "agent:fetch_requests",
            "viewer",
            "zone",
        ],
    );
    let url = format!("http://127.0.0.1:{}/hello", server.port);
    let denied = run(home, &["run", wasm, "--zone", "z1", "--", &url]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        text(&denied.stderr).contains("HttpRequestDenied"),
        "{}",
        text(&denied.stderr)
    );
    let dest = format!("host:http://127.0.0.1:{}", server.port);
    ok(
        home,
        &[
            "grant",
            "--zone",
            "z1",
            "agent:fetch_requests",
            "fetch",
            &dest,
        ],
    );
    let out = ok(home, &["run", wasm, "--zone", "z1", "--", &url]);
    assert_eq!(out.trim(), "200 hello from the test server");
    assert_eq!(server.seen()[0].header("x-from"), Some("requests"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_destination_gets_errors_not_a_crash() {
    let server = Server::start(None);
    let base = format!("http://127.0.0.1:{}", server.port);
    let l = || limits(|e| e.request_time = Duration::from_secs(2));
    for (path, expected) in [
        ("/garbage", "HttpProtocolError"),
        ("/many-headers", "HttpResponseHeaderSectionSize"),
        ("/trickle", "HttpResponseTimeout"),
    ] {
        let (code, _, err) = fetch_with(l(), server.port, &[&format!("{base}{path}")]).await;
        assert_ne!(code, 0, "{path}");
        assert!(err.contains(expected), "{path}: {err}");
    }
    // Nothing listens: refused, not hung.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let (code, _, err) = fetch_with(l(), port, &[&format!("http://127.0.0.1:{port}/")]).await;
    assert_ne!(code, 0);
    assert!(err.contains("ConnectionRefused"), "{err}");
}
