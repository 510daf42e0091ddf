//! The client API of a node, in process over real gRPC on loopback: the
//! operations layer through a node ([`Remote`]) against the same layer on
//! the node's own kernel ([`Local`]) — the same answers and the same
//! errors — streamed transfers larger than any one gRPC message, and the
//! attacks a client can make on the API (no token, a put without its
//! header, an oversized chunk, an upload that breaks off).

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Principal};
use nexus_proto::node as pb;
use nexus_proto::node::node_client::NodeClient;
use nexus_runtime::node::local::{self, LocalNode};
use nexus_runtime::node::tls;
use nexus_runtime::ops::local::Local;
use nexus_runtime::ops::remote::Remote;
use nexus_runtime::ops::run::{Hosts, RunPolicy};
use nexus_runtime::ops::{
    ByteStream, CheckQuery, OpError, OpResult, Ops, Range, TupleSpec, TRANSFER_CHUNK,
};
use nexus_runtime::session::Acting;

struct Node {
    _dir: tempfile::TempDir,
    node: LocalNode,
    token: String,
    local: Local,
    remote: Remote,
}

/// One node serving zone z1, owned by `user:owner`, whose token both
/// sides act with.
async fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = local::start(dir.path(), 1, |_| {}).await.unwrap();
    let node = nodes.remove(0);
    let owner = Principal::parse("user:owner").unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    node.kernel.create_zone(&owner, &z1).await.unwrap();
    let (token, claims) = node
        .kernel
        .tokens()
        .issue(owner, z1, Vec::new(), Capabilities::ALL, 3600)
        .unwrap();
    let hosts = Arc::new(Hosts::new(&node.kernel, RunPolicy::embedded(64 << 20)));
    let local = Local::new(node.kernel.clone(), Acting::holder(claims), hosts);
    let tls = tls::client_config(&local::ca_cert(dir.path())).unwrap();
    let remote = Remote::connect(&node.addr.to_string(), &token, tls)
        .await
        .unwrap();
    Node {
        _dir: dir,
        node,
        token,
        local,
        remote,
    }
}

fn bytes_of(data: Vec<u8>) -> ByteStream {
    let chunks: Vec<OpResult<Bytes>> = data
        .chunks(TRANSFER_CHUNK)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(chunks).boxed()
}

async fn read_all(ops: &dyn Ops, path: &str, range: Range) -> (u64, Vec<u8>) {
    let d = ops.get("z1", path, range, false).await.unwrap();
    let mut out = Vec::new();
    let mut bytes = d.bytes;
    while let Some(b) = bytes.next().await {
        out.extend_from_slice(&b.unwrap());
    }
    (d.total, out)
}

/// The same error on both sides: message, exit code and hint.
fn same<T: std::fmt::Debug>(what: &str, local: OpResult<T>, remote: OpResult<T>) -> OpError {
    let (l, r) = match (local, remote) {
        (Err(l), Err(r)) => (l, r),
        (l, r) => panic!("{what}: expected two errors, got {l:?} and {r:?}"),
    };
    assert_eq!(l.to_string(), r.to_string(), "{what}");
    assert_eq!(l.exit_code(), r.exit_code(), "{what}: {l}");
    assert_eq!(l.hint(), r.hint(), "{what}: {l}");
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_the_same_embedded_and_through_a_node() {
    let n = node().await;
    let (l, r) = (&n.local as &dyn Ops, &n.remote as &dyn Ops);
    l.mkdir("z1", "/d", false).await.unwrap();
    l.put("z1", "/d/f", bytes_of(b"x".to_vec())).await.unwrap();
    l.pipe_create("z1", "/p", 4096).await.unwrap();
    let long = format!("/{}", "n".repeat(300));
    let cases: Vec<(&str, OpResult<()>, OpResult<()>)> = vec![
        (
            "no-entry",
            l.stat("z1", "/nope", false).await.map(drop),
            r.stat("z1", "/nope", false).await.map(drop),
        ),
        (
            "exist",
            l.mkdir("z1", "/d", false).await,
            r.mkdir("z1", "/d", false).await,
        ),
        (
            "not-empty",
            l.remove("z1", "/d", false).await,
            r.remove("z1", "/d", false).await,
        ),
        (
            "is-directory",
            l.get("z1", "/d", Range::default(), false).await.map(drop),
            r.get("z1", "/d", Range::default(), false).await.map(drop),
        ),
        (
            "not-directory",
            l.list("z1", "/d/f", false).await.map(drop),
            r.list("z1", "/d/f", false).await.map(drop),
        ),
        (
            "name-too-long",
            l.mkdir("z1", &long, false).await,
            r.mkdir("z1", &long, false).await,
        ),
        (
            "invalid (a pipe too large)",
            l.pipe_create("z1", "/q", 1 << 30).await,
            r.pipe_create("z1", "/q", 1 << 30).await,
        ),
        (
            "invalid (not a pipe)",
            l.pipe_remove("z1", "/d/f").await,
            r.pipe_remove("z1", "/d/f").await,
        ),
        (
            "access (another zone than the token's)",
            l.stat("z2", "/", false).await.map(drop),
            r.stat("z2", "/", false).await.map(drop),
        ),
        (
            "zone not found (a mount's target), with its hint",
            l.mount("z1", "/m", "z9").await.map(drop),
            r.mount("z1", "/m", "z9").await.map(drop),
        ),
        (
            "invalid (readlink of a directory)",
            l.readlink("z1", "/d").await.map(drop),
            r.readlink("z1", "/d").await.map(drop),
        ),
        (
            "invalid destination of a secret",
            l.secret_set("z1", "exa mple.com", &["a: b".into()])
                .await
                .map(drop),
            r.secret_set("z1", "exa mple.com", &["a: b".into()])
                .await
                .map(drop),
        ),
        (
            "invalid secret header",
            l.secret_set("z1", "example.com", &["no colon".into()])
                .await
                .map(drop),
            r.secret_set("z1", "example.com", &["no colon".into()])
                .await
                .map(drop),
        ),
        (
            "invalid relation",
            l.write_tuple("z1", tuple("agent:bot", "boss", "/d"), true)
                .await
                .map(drop),
            r.write_tuple("z1", tuple("agent:bot", "boss", "/d"), true)
                .await
                .map(drop),
        ),
        (
            "invalid permission",
            l.check("z1", query("agent:bot", "fly", "/d"))
                .await
                .map(drop),
            r.check("z1", query("agent:bot", "fly", "/d"))
                .await
                .map(drop),
        ),
        (
            "a malformed token",
            l.token_verify("nxt1.garbage").await.map(drop),
            r.token_verify("nxt1.garbage").await.map(drop),
        ),
    ];
    let mut seen = Vec::new();
    for (what, local, remote) in cases {
        let e = same(what, local, remote);
        seen.push(format!("{what}: {e} (exit {})", e.exit_code()));
    }
    // A few exit codes and hints, to be sure the comparison compared
    // something.
    let not_empty = same(
        "not-empty again",
        l.remove("z1", "/d", false).await,
        r.remove("z1", "/d", false).await,
    );
    assert_eq!(not_empty.exit_code(), 5);
    assert!(not_empty.hint().unwrap().contains("fs rm -r"));
    let gone = same(
        "no-entry again",
        l.stat("z1", "/nope", false).await.map(drop),
        r.stat("z1", "/nope", false).await.map(drop),
    );
    assert_eq!(gone.exit_code(), 3);
    assert!(gone.to_string().contains("/nope"), "{gone}");
    eprintln!("{}", seen.join("\n"));
}

fn tuple(s: &str, rel: &str, obj: &str) -> TupleSpec {
    TupleSpec {
        subject: s.into(),
        relation: rel.into(),
        object: obj.into(),
    }
}

fn query(s: &str, perm: &str, obj: &str) -> CheckQuery {
    CheckQuery {
        subject: s.into(),
        permission: perm.into(),
        object: obj.into(),
        at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_same_embedded_and_through_a_node() {
    let n = node().await;
    let (l, r) = (&n.local as &dyn Ops, &n.remote as &dyn Ops);
    r.mkdir("z1", "/a/b", true).await.unwrap();
    r.put("z1", "/a/b/f", bytes_of(b"hello".to_vec()))
        .await
        .unwrap();
    r.pipe_create("z1", "/a/p", 1024).await.unwrap();
    let w = r
        .write_tuple("z1", tuple("agent:bot", "viewer", "/a"), true)
        .await
        .unwrap();
    assert!(w.inserted && w.revision > 0);
    assert_eq!(
        json(&l.stat("z1", "/a/b/f", false).await.unwrap()),
        json(&r.stat("z1", "/a/b/f", false).await.unwrap())
    );
    assert_eq!(
        json(&l.list("z1", "/a", false).await.unwrap()),
        json(&r.list("z1", "/a", true).await.unwrap())
    );
    assert_eq!(
        json(&l.pipe_list("z1", "/").await.unwrap()),
        json(&r.pipe_list("z1", "/").await.unwrap())
    );
    assert_eq!(
        json(&l.tuples("z1").await.unwrap()),
        json(&r.tuples("z1").await.unwrap())
    );
    // A hard link made through the node, counted the same both ways.
    r.link("z1", "/a/b/f", "/a/hard").await.unwrap();
    assert_eq!(
        json(&l.stat("z1", "/a/hard", false).await.unwrap()),
        json(&r.stat("z1", "/a/hard", false).await.unwrap())
    );
    assert_eq!(
        l.link("z1", "/a", "/a2").await.unwrap_err().to_string(),
        r.link("z1", "/a", "/a2").await.unwrap_err().to_string()
    );
    r.symlink("z1", "b/f", "/a/link").await.unwrap();
    assert_eq!(l.readlink("z1", "/a/link").await.unwrap(), "b/f");
    assert_eq!(r.readlink("z1", "/a/link").await.unwrap(), "b/f");
    assert_eq!(
        json(&l.stat("z1", "/a/link", false).await.unwrap()),
        json(&r.stat("z1", "/a/link", false).await.unwrap())
    );
    let secret = ["Authorization: Bearer sk-node-0123456789".to_owned()];
    r.secret_set("z1", "host:api.example.com", &secret)
        .await
        .unwrap();
    let listed = r.secret_list("z1").await.unwrap();
    assert_eq!(json(&l.secret_list("z1").await.unwrap()), json(&listed));
    assert_eq!(listed[0].destination, "host:api.example.com");
    assert_eq!(listed[0].headers, ["authorization"]);
    assert!(!json(&listed).contains("sk-node"));
    assert_eq!(
        json(
            &l.check("z1", query("agent:bot", "read", "/a/b/f"))
                .await
                .unwrap()
        ),
        json(
            &r.check("z1", query("agent:bot", "read", "/a/b/f"))
                .await
                .unwrap()
        )
    );
    assert_eq!(
        json(&l.zone_list().await.unwrap()),
        json(&r.zone_list().await.unwrap())
    );
    let issued = r
        .token_issue(
            "z1",
            Some("agent:bot"),
            Duration::from_secs(60),
            "read",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        json(&l.token_verify(&issued.token).await.unwrap()),
        json(&r.token_verify(&issued.token).await.unwrap())
    );
    // The zone's revocation, named by the reply.
    let zone = r.token_revoke(None, &issued.claims.id).await.unwrap();
    assert_eq!(zone.as_deref(), Some("z1"));
    let revoked = same(
        "a revoked token",
        l.token_verify(&issued.token).await.map(drop),
        r.token_verify(&issued.token).await.map(drop),
    );
    assert_eq!(revoked.exit_code(), 4);
}

/// A value as `--json` prints it (what is compared).
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_larger_than_any_message_stream_both_ways() {
    let n = node().await;
    // Past the 64 MiB a gRPC message may hold, and not a whole number of chunks.
    let data = nexus_tests::pattern((65 << 20) + 12_345, 1);
    let put = n
        .remote
        .put("z1", "/big", bytes_of(data.clone()))
        .await
        .unwrap();
    assert_eq!(put, data.len() as u64);
    let (total, got) = read_all(&n.remote, "/big", Range::default()).await;
    assert_eq!(total, data.len() as u64);
    assert!(got == data, "the file came back different");
    // Ranges, through the node and on the kernel alike.
    for (offset, length) in [
        (0, Some(10)),
        (3 << 20, Some((2 << 20) + 7)),
        (data.len() as u64 - 5, Some(100)),
        (data.len() as u64 + 10, None),
        (1 << 20, Some(0)),
    ] {
        let range = Range { offset, length };
        let (rt, remote) = read_all(&n.remote, "/big", range).await;
        let (lt, local) = read_all(&n.local, "/big", range).await;
        let lo = (offset as usize).min(data.len());
        let hi = length.map_or(data.len(), |l| (lo + l as usize).min(data.len()));
        assert_eq!(rt, (hi - lo) as u64, "{range:?}");
        assert_eq!(lt, rt, "{range:?}");
        assert!(remote == data[lo..hi], "{range:?}");
        assert!(local == remote, "{range:?}");
    }
    // Replacing a large file with a small one.
    n.remote
        .put("z1", "/big", bytes_of(b"small".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        read_all(&n.remote, "/big", Range::default()).await.1,
        b"small"
    );
}

/// A raw client of the node, for requests the `nexus` client never makes.
async fn raw(n: &Node) -> NodeClient<tonic::transport::Channel> {
    let tls = tls::client_config(&local::ca_cert(n._dir.path())).unwrap();
    let addr = n.node.addr.to_string();
    let dialer = tls::Dialer::Client(tls);
    let channel = tls::channel(&dialer, &addr, tls::ANY_NODE).await;
    NodeClient::new(channel.unwrap())
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn end_chunk(bytes: u64) -> pb::PutChunk {
    pb::PutChunk {
        part: Some(pb::put_chunk::Part::End(pb::PutEnd { bytes })),
    }
}

fn data_chunk(d: Vec<u8>) -> pb::PutChunk {
    pb::PutChunk {
        part: Some(pb::put_chunk::Part::Data(d.into())),
    }
}

fn header(path: &str) -> pb::PutChunk {
    pb::PutChunk {
        part: Some(pb::put_chunk::Part::Header(pb::PutHeader {
            zone: "z1".into(),
            path: path.into(),
        })),
    }
}

/// The names in `/`, hidden ones included.
async fn names(n: &Node) -> Vec<String> {
    n.local
        .list("z1", "/", false)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_broken_uploads_change_nothing() {
    let n = node().await;
    n.remote
        .put("z1", "/f", bytes_of(b"original".to_vec()))
        .await
        .unwrap();
    let mut c = raw(&n).await;
    // No token: refused before anything is read.
    let s = c
        .put(futures::stream::iter([
            header("/f"),
            data_chunk(vec![1; 10]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    // A forged token.
    let s = c
        .put(with_token(
            futures::stream::iter([header("/f")]),
            "nxt1.forged",
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    // Bytes before the header.
    let s = c
        .put(with_token(
            futures::stream::iter([data_chunk(vec![1; 10]), header("/f")]),
            &n.token,
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    // A second header, and a chunk over the limit: the file is untouched
    // and the temporary file is gone.
    for body in [
        vec![header("/f"), data_chunk(vec![2; 10]), header("/g")],
        vec![header("/f"), data_chunk(vec![3; TRANSFER_CHUNK + 1])],
    ] {
        let s = c
            .put(with_token(futures::stream::iter(body), &n.token))
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        let e = nexus_runtime::ops::wire::op_error(s);
        assert_eq!(e.exit_code(), 2, "{e}");
    }
    // An upload whose stream ends without its end marker (however the
    // client's transport ended it), or whose end disagrees with what
    // arrived: nothing is written.
    for body in [
        vec![header("/f"), data_chunk(vec![5; 10])],
        vec![header("/f"), data_chunk(vec![5; 10]), end_chunk(11)],
    ] {
        let s = c
            .put(with_token(futures::stream::iter(body), &n.token))
            .await
            .unwrap_err();
        assert!(s.message().contains("nothing was written"), "{s:?}");
    }
    // Bytes after the end marker: refused, and nothing is written either.
    let body = vec![
        header("/f"),
        data_chunk(vec![6; 10]),
        end_chunk(10),
        data_chunk(vec![6; 10]),
    ];
    let s = c
        .put(with_token(futures::stream::iter(body), &n.token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    // An upload that breaks off (the client's source fails mid-way): the
    // node sees the call cancelled.
    let failing: Vec<OpResult<Bytes>> = vec![
        Ok(Bytes::from(vec![4u8; TRANSFER_CHUNK])),
        Err(OpError::Failed("the disk went away".into())),
    ];
    let e = n
        .remote
        .put("z1", "/f", futures::stream::iter(failing).boxed())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the disk went away"), "{e}");
    // The node notices the cancelled stream and cleans up shortly after.
    let mut left = names(&n).await;
    for _ in 0..200 {
        if left == ["f"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        left = names(&n).await;
    }
    assert_eq!(left, ["f"], "a temporary file was left behind");
    assert_eq!(
        read_all(&n.remote, "/f", Range::default()).await.1,
        b"original"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_stream_the_client_leaves_stops_on_the_node() {
    let n = node().await;
    n.remote
        .put("z1", "/big", bytes_of(nexus_tests::pattern(16 << 20, 1)))
        .await
        .unwrap();
    let d = n
        .remote
        .get("z1", "/big", Range::default(), false)
        .await
        .unwrap();
    assert_eq!(d.total, 16 << 20);
    let mut bytes = d.bytes;
    let first = bytes.next().await.unwrap().unwrap();
    assert!(first.len() <= TRANSFER_CHUNK);
    drop(bytes);
    // The node still answers (nothing is stuck on the abandoned stream).
    n.remote.stat("z1", "/big", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_must_start_with_what_to_run() {
    let n = node().await;
    let mut c = raw(&n).await;
    let stdin_first = pb::RunInput {
        input: Some(pb::run_input::Input::Stdin(b"hello".to_vec())),
    };
    let s = c
        .run(with_token(futures::stream::iter([stdin_first]), &n.token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    // Nothing at all.
    let s = c
        .run(with_token(futures::stream::iter(Vec::new()), &n.token))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
    // Not a WebAssembly file: the run's own error, as its exit event.
    let start = pb::RunInput {
        input: Some(pb::run_input::Input::Start(pb::RunRequest {
            zone: "z1".into(),
            agent: b"#!/bin/sh".to_vec(),
            name: "x.wasm".into(),
            ..Default::default()
        })),
    };
    let mut events = c
        .run(with_token(futures::stream::iter([start]), &n.token))
        .await
        .unwrap()
        .into_inner();
    let mut exit = None;
    while let Some(e) = events.message().await.unwrap() {
        if let Some(pb::run_event::Event::Exit(x)) = e.event {
            exit = Some(x);
        }
    }
    let exit = exit.expect("an exit event");
    assert_eq!(exit.code, 1);
    assert!(
        exit.error.contains("not a WebAssembly file"),
        "{}",
        exit.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_created_through_a_node_without_replicas_is_that_nodes_alone() {
    let n = node().await;
    let owner = Principal::parse("user:owner").unwrap();
    let z9 = ZoneId::new("z9").unwrap();
    let (token, _) = n
        .node
        .kernel
        .tokens()
        .issue(owner, z9, Vec::new(), Capabilities::ALL, 3600)
        .unwrap();
    let tls = tls::client_config(&local::ca_cert(n._dir.path())).unwrap();
    let remote = Remote::connect(&n.node.addr.to_string(), &token, tls)
        .await
        .unwrap();
    remote.zone_create("z9", &[]).await.unwrap();
    let status = remote.zone_status("z9").await.unwrap();
    assert_eq!(status.voters, vec![1]);
    remote.mkdir("z9", "/here", false).await.unwrap();
}
