//! The network between nodes is hostile: each attack issue 12 reproduced
//! against three in-process nodes on loopback (real gRPC, real TLS), and
//! each now refused. A plaintext client, a certificate from another CA, a
//! node claiming another node's id, membership calls from a client, a
//! revoked certificate on a new connection and on one already open, a
//! member node forwarding writes its caller may not make.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nexus_kernel::{Actor, Capabilities, Forwarded, Outcome, Permission, Proposal, ZoneCommand};
use nexus_kernel::{ObjectRef, Principal, Relation, Role, Subject, Tuple, ZoneId};
use nexus_proto::node::node_client::NodeClient;
use nexus_proto::node::{JoinZoneRequest, Replica, ZoneRef};
use nexus_proto::transport::raft_transport_client::RaftTransportClient;
use nexus_proto::transport::{Batch, BatchAck, Envelope, ForwardedWrites, SnapshotAck};
use nexus_runtime::node::local::{self, LocalNode};
use nexus_runtime::node::tls::{self, authority::Authority, Dialer, NodeTls};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

/// A raft message as node `from` would send it to node `to` in zone z1.
fn forged_batch(from: u64, claimed: u64, to: u64) -> Batch {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = claimed;
    m.to = to;
    m.term = 1;
    Batch {
        from_node: from,
        to_node: to,
        envelopes: vec![Envelope {
            zone: "z1".into(),
            message: m.write_to_bytes().unwrap(),
            incarnation: 0,
        }],
    }
}

/// Node 3's dialer, once node 1 has heard an honest batch from it: the
/// control before a test changes one thing.
async fn heard_from_node3(nodes: &[LocalNode]) -> Dialer {
    let node3 = Dialer::Node(nodes[2].tls.clone());
    let ack = exchange(&node3, &nodes[0], forged_batch(3, 3, 1))
        .await
        .unwrap();
    assert_eq!((ack.delivered, ack.refused.len()), (1, 0), "{ack:?}");
    node3
}

/// Sends `batch` on a Raft stream dialed with `dialer`; the first answer.
async fn exchange(
    dialer: &Dialer,
    to: &LocalNode,
    batch: Batch,
) -> Result<BatchAck, tonic::Status> {
    let addr = to.addr.to_string();
    let expect = tls::node_name(to.kernel.node_id());
    let channel = tls::channel(dialer, &addr, &expect)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = RaftTransportClient::new(channel);
    let mut acks = client
        .exchange(futures::stream::iter([batch]))
        .await?
        .into_inner();
    acks.message()
        .await?
        .ok_or_else(|| tonic::Status::aborted("the stream ended without an ack"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_and_impostors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    let addr = nodes[0].addr.to_string();

    // Connections that never say a word hold up nobody.
    let stalled: Vec<_> = (0..32)
        .map(|_| std::net::TcpStream::connect(nodes[0].addr).unwrap())
        .collect();

    // Plaintext: the handshake fails, no call is answered.
    let plain = NodeClient::connect(format!("http://{addr}")).await;
    if let Ok(mut c) = plain {
        let s = c.zone_list(nexus_proto::node::Empty {}).await.unwrap_err();
        assert_ne!(s.code(), tonic::Code::Ok);
    }

    // A node certificate from another CA: refused at the handshake.
    let rogue_dir = dir.path().join("rogue");
    Authority::create(&rogue_dir.join("ca"), 30)
        .unwrap()
        .issue_node(2, &[], 30, &rogue_dir.join("tls"))
        .unwrap();
    let rogue = Dialer::Node(NodeTls::load(&rogue_dir.join("tls"), 2).unwrap());
    let refused = exchange(&rogue, &nodes[0], forged_batch(2, 2, 1)).await;
    assert!(refused.is_err(), "a foreign CA's certificate was accepted");

    // Node 3's real certificate, claiming to be node 2 (in the batch, or
    // in the message): refused, a heartbeat or a proposal alike (the
    // issue's forged MsgPropose wrote a tuple and a file into every
    // replica).
    let node3 = Dialer::Node(nodes[2].tls.clone());
    let mut proposal = forged_batch(2, 2, 1);
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = 2;
    m.to = 1;
    m.mut_entries().push(raft::prelude::Entry {
        data: b"forged".to_vec().into(),
        ..Default::default()
    });
    proposal.envelopes[0].message = m.write_to_bytes().unwrap();
    for batch in [forged_batch(2, 2, 1), proposal] {
        let s = exchange(&node3, &nodes[0], batch).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
        assert!(
            s.message().contains("node 3 sent a message as node 2"),
            "{s:?}"
        );
    }
    // Honest framing, a lie inside: refused per message (the ack says so).
    let ack = exchange(&node3, &nodes[0], forged_batch(3, 2, 1))
        .await
        .unwrap();
    assert_eq!(ack.delivered, 0, "{ack:?}");
    assert!(
        ack.refused[0]
            .reason
            .contains("message from node 2 in a batch from node 3"),
        "{ack:?}"
    );

    // JoinZone and LeaveZone from a client with a full token: no.
    let owner = Principal::parse("user:owner").unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    let (token, _) = nodes[0]
        .kernel
        .tokens()
        .issue(owner, z1, Vec::new(), nexus_kernel::Capabilities::ALL, 3600)
        .unwrap();
    let client = Dialer::Client(tls::client_config(&local::ca_cert(dir.path())).unwrap());
    let channel = tls::channel(&client, &addr, tls::ANY_NODE).await.unwrap();
    // A client's connection (TLS, no certificate) on the Raft transport:
    // refused before a message is read.
    let s = RaftTransportClient::new(channel.clone())
        .exchange(futures::stream::iter([forged_batch(2, 2, 1)]))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    let mut api = NodeClient::new(channel);
    fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }
    let join = JoinZoneRequest {
        zone: "rogue".into(),
        replicas: vec![Replica {
            node: 1,
            witness: false,
        }],
        owner: String::new(),
        running: false,
        witness: false,
        check_only: false,
    };
    let s = api.join_zone(with_token(join, &token)).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    let leave = ZoneRef { zone: "z1".into() };
    let s = api.leave_zone(with_token(leave, &token)).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(nodes[0]
        .kernel
        .zone_record(&ZoneId::new("z1").unwrap())
        .is_ok());
    assert!(nodes[0]
        .kernel
        .zone_record(&ZoneId::new("rogue").unwrap())
        .is_err());
    // (Every call above was served while those connections waited.)
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_on_new_and_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    // Before: node 3 speaks for itself and is heard.
    let node3 = heard_from_node3(&nodes).await;
    // An open stream from node 3, before the revocation.
    let channel = tls::channel(&node3, &nodes[0].addr.to_string(), &tls::node_name(1))
        .await
        .unwrap();
    let (batches, outbound) = tokio::sync::mpsc::channel(4);
    let mut acks = RaftTransportClient::new(channel)
        .exchange(tokio_stream_of(outbound))
        .await
        .unwrap()
        .into_inner();
    batches.send(forged_batch(3, 3, 1)).await.unwrap();
    acks.message().await.unwrap().unwrap();

    // The operator revokes node 3's certificate; node 1 gets the list.
    let ca = Authority::open(&dir.path().join("ca")).unwrap();
    let issued = ca
        .revoke(&dir.path().join("node3/tls").join(tls::NODE_CERT))
        .unwrap();
    assert_eq!(issued.info.node, Some(3));
    std::fs::copy(
        &issued.files[0],
        dir.path().join("node1/tls").join(tls::CRL),
    )
    .unwrap();
    nodes[0].tls.reload().unwrap();

    // The open stream: the next batch ends it.
    batches.send(forged_batch(3, 3, 1)).await.unwrap();
    let s = acks.message().await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("revoked"), "{s:?}");
    // A new connection: refused at the handshake.
    assert!(exchange(&node3, &nodes[0], forged_batch(3, 3, 1))
        .await
        .is_err());
    // Node 2 is still heard.
    let node2 = Dialer::Node(nodes[1].tls.clone());
    exchange(&node2, &nodes[0], forged_batch(2, 2, 1))
        .await
        .unwrap();
}

fn tokio_stream_of(rx: tokio::sync::mpsc::Receiver<Batch>) -> impl futures::Stream<Item = Batch> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_works_and_the_old_one_can_be_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    let tls3 = dir.path().join("node3/tls");
    let old = dir.path().join("old-node3.crt");
    std::fs::copy(tls3.join(tls::NODE_CERT), &old).unwrap();
    // The operator issues node 3 a new certificate; node 3 reloads.
    let ca = Authority::open(&dir.path().join("ca")).unwrap();
    let new = ca.issue_node(3, &[], 30, &tls3).unwrap();
    nodes[2].tls.reload().unwrap();
    // The old one is revoked; node 1 gets the list and reloads.
    let revoked = ca.revoke(&old).unwrap();
    assert_ne!(revoked.info.serial, new.info.serial);
    std::fs::copy(
        &revoked.files[0],
        dir.path().join("node1/tls").join(tls::CRL),
    )
    .unwrap();
    nodes[0].tls.reload().unwrap();
    // Node 3, with its new certificate, is heard.
    heard_from_node3(&nodes).await;
    // Node 3's data directory with a certificate for another node, or a
    // revoked one, does not load.
    ca.issue_node(2, &[], 30, &dir.path().join("elsewhere"))
        .unwrap();
    std::fs::copy(
        dir.path().join("elsewhere").join(tls::NODE_CERT),
        tls3.join(tls::NODE_CERT),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("elsewhere").join(tls::NODE_KEY),
        tls3.join(tls::NODE_KEY),
    )
    .unwrap();
    assert!(
        nodes[2].tls.reload().is_err(),
        "node 3 loaded node 2's certificate"
    );
    assert!(NodeTls::load(&tls3, 3).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_snapshot_and_a_refused_add_replica_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    // A snapshot "from node 2" (term 1000, index 10^6) sent with node 3's
    // certificate: refused before any of it is read.
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgSnapshot);
    m.from = 2;
    m.to = 1;
    m.term = 1000;
    m.mut_snapshot().mut_metadata().index = 1_000_000;
    m.mut_snapshot().mut_metadata().term = 1000;
    let chunks = nexus_runtime::node::snapshot::split("z1", (2, 0), 1, m, None).unwrap();
    let node3 = Dialer::Node(nodes[2].tls.clone());
    let channel = tls::channel(&node3, &nodes[0].addr.to_string(), &tls::node_name(1))
        .await
        .unwrap();
    let s = RaftTransportClient::new(channel)
        .install_snapshot(futures::stream::iter(chunks))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let z1 = ZoneId::new("z1").unwrap();
    let status = nodes[0]
        .kernel
        .zone_status(
            &nodes[0]
                .kernel
                .spawn_task(owner(), &z1, nexus_kernel::Capabilities::ALL)
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(status.term < 1000, "{status:?}");

    // A read-only token asks node 1 to add node 3 to a zone node 3 does
    // not serve: refused before node 3 is asked to join, so no replica is
    // left there.
    let z9 = ZoneId::new("z9").unwrap();
    let replicas = vec![(1, Role::Voter), (2, Role::Voter)];
    nodes[1]
        .kernel
        .join_zone(&z9, replicas.clone())
        .await
        .unwrap();
    nodes[0]
        .kernel
        .create_zone_on(&owner(), &z9, replicas)
        .await
        .unwrap();
    let reader = Principal::parse("agent:reader").unwrap();
    let (token, _) = nodes[0]
        .kernel
        .tokens()
        .issue(
            reader,
            z9.clone(),
            Vec::new(),
            nexus_kernel::Capabilities::parse("read,enter").unwrap(),
            600,
        )
        .unwrap();
    let client = tls::client_config(&local::ca_cert(dir.path())).unwrap();
    let remote =
        nexus_runtime::ops::remote::Remote::connect(&nodes[0].addr.to_string(), &token, client)
            .await
            .unwrap();
    use nexus_runtime::ops::Ops as _;
    let spec = nexus_runtime::ops::ReplicaSpec::parse("3").unwrap();
    let e = remote.add_replica("z9", spec).await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(
        nodes[2].kernel.zone_record(&z9).is_err(),
        "a stray replica was left on node 3"
    );
}

fn owner() -> Principal {
    Principal::parse("user:owner").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    let node3 = heard_from_node3(&nodes).await;
    // Node 3 gets a certificate that ends now: the one thing that changes.
    let ca = Authority::open(&dir.path().join("ca")).unwrap();
    let tls3 = dir.path().join("node3/tls");
    ca.issue_node(3, &[], 0, &tls3).unwrap();
    nodes[2].tls.reload().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The server refuses it at the handshake (the client sees the alert,
    // or the connection closed under it, as TLS 1.3's timing has it).
    let refused = exchange(&node3, &nodes[0], forged_batch(3, 3, 1)).await;
    assert!(refused.is_err(), "an expired certificate was accepted");
}

/// Sends a forwarded write (`Forward`) dialed with `dialer` to `to`.
async fn forward(
    dialer: &Dialer,
    to: &LocalNode,
    write: Vec<u8>,
) -> Result<Outcome, tonic::Status> {
    let channel = tls::channel(
        dialer,
        &to.addr.to_string(),
        &tls::node_name(to.kernel.node_id()),
    )
    .await
    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply = RaftTransportClient::new(channel)
        .forward(ForwardedWrites {
            writes: vec![write],
        })
        .await?;
    let outcomes = reply.into_inner().outcomes;
    assert_eq!(outcomes.len(), 1, "one outcome per write");
    Ok(Outcome::decode(&outcomes[0]).unwrap())
}

fn write_tuple(actor: Actor, who: &str, relation: Relation) -> Vec<u8> {
    let z1 = ZoneId::new("z1").unwrap();
    let tuple = Tuple {
        object: ObjectRef::zone(&z1),
        relation,
        subject: Subject::Principal(Principal::parse(who).unwrap()),
    };
    Forwarded {
        zone: z1,
        actor,
        proposal: Proposal::Command(ZoneCommand::WriteTuples {
            insert: vec![tuple],
            delete: vec![],
        }),
    }
    .encode()
}

fn task(principal: &str, home: &str, caps: Capabilities, reach: Option<&str>) -> Actor {
    Actor::Task {
        principal: Principal::parse(principal).unwrap(),
        zone: ZoneId::new(home).unwrap(),
        caps,
        reach: reach.map(|z| vec![ZoneId::new(z).unwrap()]),
    }
}

fn refused_as(outcome: &Outcome, kind: &str, says: &str) {
    match outcome {
        Outcome::Failed { kind: k, detail } => {
            assert_eq!(k, kind, "{outcome:?}");
            assert!(detail.contains(says), "{outcome:?}");
        }
        other => panic!("a forged write was taken: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_node_cannot_write_what_its_caller_may_not() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    let z1 = ZoneId::new("z1").unwrap();
    let owner = || task("user:owner", "z1", Capabilities::ALL, None);

    // The control: the owner's grant, forwarded by a member to the leader,
    // is applied there. Whoever is asked names the leader.
    let mut leader = 1;
    let (sender, index) = loop {
        let sender = if leader == 1 { 2 } else { 1 };
        let dialer = Dialer::Node(nodes[sender - 1].tls.clone());
        let grant = write_tuple(owner(), "user:alice", Relation::Viewer);
        match forward(&dialer, &nodes[leader - 1], grant).await.unwrap() {
            Outcome::Applied { index, .. } => break (dialer, index),
            Outcome::NotLeader { leader: l } if l != 0 => leader = l as usize,
            Outcome::NotLeader { .. } => tokio::time::sleep(Duration::from_millis(50)).await,
            Outcome::Failed { kind, detail } => panic!("the control was refused: {kind} {detail}"),
        }
    };
    assert!(index > 0);
    let target = &nodes[leader - 1];

    // The issue's forged proposal, as the leader gates it now: in the name
    // of a principal with no rights, on the node's own account, from a
    // token bound to another zone, with a read-only capability.
    let mallory = task("user:mallory", "z1", Capabilities::ALL, None);
    let o = forward(
        &sender,
        target,
        write_tuple(mallory, "user:mallory", Relation::Owner),
    )
    .await;
    refused_as(
        &o.unwrap(),
        "access",
        "user:mallory may not change tuples of zone:z1",
    );
    let o = forward(
        &sender,
        target,
        write_tuple(Actor::Node, "user:mallory", Relation::Owner),
    )
    .await;
    refused_as(&o.unwrap(), "access", "on its own account");
    let bound = task("user:owner", "z2", Capabilities::ALL, Some("z2"));
    let o = forward(
        &sender,
        target,
        write_tuple(bound, "user:mallory", Relation::Owner),
    )
    .await;
    refused_as(&o.unwrap(), "access", "does not name zone z1");
    let reader = task(
        "user:owner",
        "z1",
        Capabilities::of(&[Permission::Read]),
        None,
    );
    let o = forward(
        &sender,
        target,
        write_tuple(reader, "user:mallory", Relation::Owner),
    )
    .await;
    // The owner holds admin; the capability alone is missing.
    refused_as(&o.unwrap(), "access", "user:owner may not change tuples");
    let o = forward(&sender, target, b"\x07garbage".to_vec()).await;
    refused_as(&o.unwrap(), "invalid", "undecodable forwarded write");
    // A node keeps a file open for itself only: an unlink that would leave
    // an orphan held by another node is refused.
    let orphan = Forwarded {
        zone: z1.clone(),
        actor: owner(),
        proposal: Proposal::Command(ZoneCommand::Orphan {
            parent: 1,
            name: "x".into(),
            holder: leader as u64,
            now: 0,
        }),
    };
    let o = forward(&sender, target, orphan.encode()).await;
    refused_as(&o.unwrap(), "access", "may not keep a file open for node");
    // The collector's bookkeeping is a node's own: a task may not send it.
    let collected = Forwarded {
        zone: z1.clone(),
        actor: owner(),
        proposal: Proposal::Command(ZoneCommand::Collected {
            hashes: vec![[0; 32]],
        }),
    };
    let o = forward(&sender, target, collected.encode()).await;
    refused_as(&o.unwrap(), "access", "only a node makes this change");

    // More writes in one call than a node sends: refused whole.
    let flood = ForwardedWrites {
        writes: vec![b"x".to_vec(); 257],
    };
    let channel = tls::channel(
        &sender,
        &target.addr.to_string(),
        &tls::node_name(leader as u64),
    )
    .await
    .unwrap();
    let s = RaftTransportClient::new(channel)
        .forward(flood)
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");

    // A client's connection (no certificate) cannot call it at all.
    let client = Dialer::Client(tls::client_config(&local::ca_cert(dir.path())).unwrap());
    let grant = write_tuple(owner(), "user:mallory", Relation::Owner);
    let s = forward(&client, target, grant).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

    // Nor does a proposal inside Raft get through, even in an honest batch.
    let node3 = heard_from_node3(&nodes).await;
    let mut proposal = forged_batch(3, 3, 1);
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgPropose);
    m.from = 3;
    m.to = 1;
    m.mut_entries().push(raft::prelude::Entry {
        data: b"forged".to_vec().into(),
        ..Default::default()
    });
    proposal.envelopes[0].message = m.write_to_bytes().unwrap();
    let ack = exchange(&node3, &nodes[0], proposal).await.unwrap();
    assert_eq!(ack.delivered, 0, "{ack:?}");
    assert!(
        ack.refused[0]
            .reason
            .contains("a proposal from the network"),
        "{ack:?}"
    );

    // On every node: alice reads (the control applied everywhere), mallory
    // owns nothing.
    let zone = ObjectRef::zone(&z1);
    let alice = Principal::parse("user:alice").unwrap();
    let mallory = Principal::parse("user:mallory").unwrap();
    for n in &nodes {
        let mut waited = 0;
        while !n
            .kernel
            .evaluate(&z1, &alice, &zone, Permission::Read)
            .unwrap()
            .allowed
        {
            assert!(
                waited < 1500,
                "node {} never applied the grant",
                n.kernel.node_id()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        let d = n
            .kernel
            .evaluate(&z1, &mallory, &zone, Permission::Admin)
            .unwrap();
        assert!(!d.allowed, "node {}: {d:?}", n.kernel.node_id());
    }
}

/// A snapshot is held in memory whole while it arrives: a node receives at
/// most two at once (a third is refused, not queued), and one for a zone
/// it does not serve is refused before any of its data is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_receives_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;
    let node3 = Dialer::Node(nodes[2].tls.clone());
    let to_node1 = || async {
        let channel = tls::channel(&node3, &nodes[0].addr.to_string(), &tls::node_name(1))
            .await
            .unwrap();
        RaftTransportClient::new(channel)
    };
    // A big snapshot's first chunk, then nothing: the stream stays open.
    let stalled = |zone: &str| {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 3;
        m.to = 1;
        m.term = 1;
        m.mut_snapshot().data = vec![0u8; 4 * nexus_runtime::node::snapshot::CHUNK].into();
        let chunks = nexus_runtime::node::snapshot::split(zone, (3, 0), 1, m, None).unwrap();
        let first = chunks.into_iter().next().unwrap();
        futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending())
    };
    let s = to_node1()
        .await
        .install_snapshot(stalled("z9"))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
    // Stalled receives pile up until two are held; the next is refused.
    // A call still open after a while was taken (it stalls) and is kept
    // open, so at most two can ever be pending when the refusal comes.
    let max = nexus_runtime::node::server::MAX_SNAPSHOT_RECEIVES;
    // Each call runs as a task of its own: a call still open keeps its
    // slot while the test goes on.
    let addr = nodes[0].addr.to_string();
    let attempt = || {
        let (dialer, addr, stream) = (node3.clone(), addr.clone(), stalled("z1"));
        tokio::spawn(async move {
            let channel = tls::channel(&dialer, &addr, &tls::node_name(1))
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            RaftTransportClient::new(channel)
                .install_snapshot(stream)
                .await
        })
    };
    type Call = tokio::task::JoinHandle<Result<tonic::Response<SnapshotAck>, tonic::Status>>;
    let mut held: Vec<Call> = Vec::new();
    let refused = loop {
        // More calls open than the bound: one of them is a refusal slow to
        // arrive on a busy machine (were the bound broken, none would come).
        if held.len() > max {
            let (answer, i) = {
                let (answer, i, _rest) = futures::future::select_all(held.iter_mut()).await;
                (answer, i)
            };
            held.remove(i);
            break answer.unwrap().unwrap_err();
        }
        let mut call = attempt();
        match tokio::time::timeout(Duration::from_secs(3), &mut call).await {
            Err(_) => held.push(call),
            Ok(answer) => break answer.unwrap().unwrap_err(),
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert_eq!(held.len(), max, "refused before the slots were full");
    // What the held receives took in is on disk, one chunk each (not in
    // memory): a part file per receive in the node's spool.
    let parts = || nexus_tests::spool_parts(nodes[0].kernel.home());
    let chunk = nexus_runtime::node::snapshot::CHUNK as u64;
    nexus_tests::eventually("the held chunks to reach the spool", || {
        (parts() == vec![chunk; max]).then_some(())
    })
    .await;
    // Abandoned receives give their slots back, and their files.
    for h in &held {
        h.abort();
    }
    nexus_tests::eventually("abandoned part files to go", || {
        parts().is_empty().then_some(())
    })
    .await;
    let mut taken = false;
    for _ in 0..100 {
        let mut call = attempt();
        match tokio::time::timeout(Duration::from_secs(3), &mut call).await {
            Err(_) => {
                call.abort();
                taken = true;
                break;
            }
            Ok(answer) => {
                let s = answer.unwrap().unwrap_err();
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(taken, "the slots of abandoned receives were never freed");
}
