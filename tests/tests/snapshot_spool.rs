//! Incoming snapshots are received to disk: a peer streaming large
//! snapshots costs the node a chunk of memory per receive, not the
//! snapshot. A test binary of its own, so the process's resident memory
//! is this test's alone.

use nexus_proto::transport::raft_transport_client::RaftTransportClient;
use nexus_proto::transport::{SnapshotChunk, SnapshotHeader};
use nexus_runtime::node::snapshot::CHUNK;
use nexus_runtime::node::tls::{self, Dialer};
use nexus_tests::eventually;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_large_snapshots_being_received_stay_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nexus_tests::three_nodes(dir.path()).await;

    // Node 3 streams two snapshots of 256 MiB to node 1, all but their last
    // chunk, then holds both streams open.
    const SIZE: u64 = 256 << 20;
    let sent = SIZE - CHUNK as u64;
    let stream = || {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = 3;
        m.to = 1;
        m.term = 1;
        let header = SnapshotHeader {
            zone: "z1".into(),
            from_node: 3,
            to_node: 1,
            message: m.write_to_bytes().unwrap(),
            size: SIZE,
            blake3: vec![0; 32],
            incarnation: 0,
        };
        let zeros = vec![0u8; CHUNK];
        let crc = crc32fast::hash(&zeros);
        let chunks = (0..sent / CHUNK as u64).map(move |i| SnapshotChunk {
            header: (i == 0).then(|| header.clone()),
            offset: i * CHUNK as u64,
            data: zeros.clone(),
            crc32: crc,
        });
        futures::StreamExt::chain(futures::stream::iter(chunks), futures::stream::pending())
    };
    let before = rss();
    let node3 = Dialer::Node(nodes[2].tls.clone());
    let addr = nodes[0].addr.to_string();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (dialer, addr, stream) = (node3.clone(), addr.clone(), stream());
            tokio::spawn(async move {
                let channel = tls::channel(&dialer, &addr, &tls::node_name(1))
                    .await
                    .unwrap();
                RaftTransportClient::new(channel)
                    .install_snapshot(stream)
                    .await
            })
        })
        .collect();
    let parts = || nexus_tests::spool_parts(nodes[0].kernel.home());
    let mut peak = 0;
    eventually("both receives to reach the spool", || {
        peak = peak.max(rss());
        (parts() == vec![sent; 2]).then_some(())
    })
    .await;
    let grown = peak.max(rss()).saturating_sub(before);
    eprintln!(
        "two receives of {} MiB each held: resident memory grew by {} MiB",
        sent >> 20,
        grown >> 20
    );
    // Held in memory, the two would add 510 MiB.
    assert!(
        grown < 128 << 20,
        "resident memory grew by {} MiB while receiving",
        grown >> 20
    );
    for call in &calls {
        call.abort();
    }
    eventually("abandoned part files to go", || {
        parts().is_empty().then_some(())
    })
    .await;
}
