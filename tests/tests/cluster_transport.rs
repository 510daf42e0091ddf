//! The Raft transport over real gRPC on loopback: three kernels in this
//! process, each with its own data directory, `GrpcTransport` and server,
//! share a zone; a write through one is read on another; refusals.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_tests::eventually;
use std::time::{Duration, Instant};

use nexus_kernel::ErrorCode;
use nexus_kernel::Kernel;
use nexus_kernel::OpenOptions;
use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Principal};
use nexus_kernel::{MemberInfo, Role};
use nexus_runtime::node::local::{self, LocalNode};

/// Three (or `n`) nodes in this process, fast ticks, short timeouts.
async fn cluster(n: u64) -> (tempfile::TempDir, Vec<LocalNode>) {
    let dir = tempfile::tempdir().unwrap();
    let nodes = local::start(dir.path(), n, |cfg| {
        cfg.driver.tick = Duration::from_millis(20);
        cfg.driver.propose_timeout = Duration::from_secs(3);
    })
    .await
    .unwrap();
    (dir, nodes)
}

/// Zone z1 on every node, created through node 1, owned by user:owner.
async fn shared_zone(nodes: &[LocalNode]) -> (ZoneId, Principal) {
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    let replicas: Vec<_> = (1..=nodes.len() as u64)
        .map(|id| (id, Role::Voter))
        .collect();
    for n in &nodes[1..] {
        n.kernel.join_zone(&z1, replicas.clone()).await.unwrap();
    }
    nodes[0]
        .kernel
        .create_zone_on(&owner, &z1, replicas)
        .await
        .unwrap();
    (z1, owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_a_zone_over_grpc() {
    let (_dir, nodes) = cluster(3).await;
    let (z1, owner) = shared_zone(&nodes).await;
    let k1 = &nodes[0].kernel;

    // Write through node 1.
    let t1 = k1
        .spawn_task(owner.clone(), &z1, Capabilities::ALL)
        .unwrap();
    k1.mkdir(&t1, "/docs").await.unwrap();
    let h = k1
        .open_path(&t1, "/docs/a.txt", OpenOptions::CREATE)
        .await
        .unwrap();
    k1.write(&t1, &h, 0, b"replicated").await.unwrap();
    k1.sync(&t1, &h).await.unwrap();

    // Read on node 3, from its own replica.
    let k3 = &nodes[2].kernel;
    let t3 = k3
        .spawn_task(owner.clone(), &z1, Capabilities::ALL)
        .unwrap();
    let size = eventually("node 3 to apply the write", || {
        k3.stat(&t3, "/docs/a.txt")
            .ok()
            .filter(|s| s.size == 10)
            .map(|s| s.size)
    })
    .await;
    assert_eq!(size, 10);
    let h3 = k3.resolve(&t3, "/docs/a.txt", true).unwrap();
    assert_eq!(&k3.read(&t3, &h3, 0, 100).await.unwrap()[..], b"replicated");

    // A linearizable read on a follower sees every write acknowledged
    // before it, at once (ReadIndex through the leader, then local apply).
    for i in 0..20 {
        let p = format!("/docs/lin-{i}");
        k1.mkdir(&t1, &p).await.unwrap();
        k3.linearize(&t3).await.unwrap();
        k3.stat(&t3, &p)
            .expect("a linearizable read missed an acknowledged write");
    }

    // A write proposed on a follower is forwarded to the leader, not refused.
    let k2 = &nodes[1].kernel;
    let t2 = k2.spawn_task(owner, &z1, Capabilities::ALL).unwrap();
    k2.mkdir(&t2, "/from-node-2").await.unwrap();
    eventually("node 1 to see node 2's write", || {
        k1.stat(&t1, "/from-node-2").ok()
    })
    .await;
}

/// An unlinked file lives while it is open on the node that unlinked it;
/// opens are per node, so one unlinked through another node is gone here
/// too (as a file removed by another NFS client: ARCHITECTURE.md, the
/// deliberate differences).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_open_on_one_node_and_unlinked_through_another_is_gone() {
    let (_dir, nodes) = cluster(2).await;
    let (z1, owner) = shared_zone(&nodes).await;
    let (k1, k2) = (&nodes[0].kernel, &nodes[1].kernel);
    let t1 = k1
        .spawn_task(owner.clone(), &z1, Capabilities::ALL)
        .unwrap();
    let t2 = k2.spawn_task(owner, &z1, Capabilities::ALL).unwrap();
    for name in ["/here", "/there"] {
        let h = k1.open_path(&t1, name, OpenOptions::CREATE).await.unwrap();
        k1.write(&t1, &h, 0, b"content").await.unwrap();
        k1.sync(&t1, &h).await.unwrap();
    }
    let t2 = &t2;
    let open_on_2 = |name: &'static str| async move {
        eventually("node 2 to apply the file", || k2.stat(t2, name).ok()).await;
        let h = k2
            .open_path(t2, name, OpenOptions::default())
            .await
            .unwrap();
        let held = k2.hold_open(&h);
        (h, held)
    };
    // Unlinked through the node holding it open: it lives until closed.
    let (here, _held) = open_on_2("/here").await;
    k2.unlink(t2, "/here").await.unwrap();
    assert_eq!(&k2.read(t2, &here, 0, 64).await.unwrap()[..], b"content");
    // Unlinked through the other node: gone on this one once applied.
    let (there, _held) = open_on_2("/there").await;
    k1.unlink(&t1, "/there").await.unwrap();
    eventually("node 2 to apply the unlink", || k2.stat(t2, "/there").err()).await;
    let e = k2.read(t2, &there, 0, 64).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoEntry, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_unserved_zones_or_from_strangers_are_refused() {
    let (_dir, nodes) = cluster(2).await;
    let z1 = ZoneId::new("z1").unwrap();
    let k2 = &nodes[1].kernel;
    let mut msg = raft::prelude::Message {
        to: 2,
        from: 1,
        ..Default::default()
    };
    // Node 2 does not serve z1.
    let e = k2.deliver(&z1, msg.clone(), 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoEntry, "{e}");
    // A zone node 2 serves, but whose group does not include the sender.
    k2.join_zone(&z1, vec![(2, Role::Voter)]).await.unwrap();
    msg.from = 9;
    let e = k2.deliver(&z1, msg.clone(), 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Access, "{e}");
    // Addressed to another node.
    msg.from = 2;
    msg.to = 5;
    assert_eq!(
        k2.deliver(&z1, msg, 0).unwrap_err().code(),
        ErrorCode::Invalid
    );
    // Joining a zone this node is not part of is refused.
    let z2 = ZoneId::new("z2").unwrap();
    let e = k2.join_zone(&z2, vec![(1, Role::Voter)]).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivors_elect_a_new_leader_and_keep_every_acknowledged_write() {
    let (_dir, mut nodes) = cluster(3).await;
    let (z1, owner) = shared_zone(&nodes).await;
    let task = |k: &Kernel| k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
    let t1 = task(&nodes[0].kernel);
    let status = nodes[0].kernel.zone_status(&t1).await.unwrap();
    assert_eq!(status.voters, [1, 2, 3]);
    let leader = status.leader;
    assert!((1..=3).contains(&leader), "{status:?}");
    let lk = nodes[leader as usize - 1].kernel.clone();
    let lt = task(&lk);
    let mut acked = Vec::new();
    for i in 0..20 {
        lk.mkdir(&lt, &format!("/before-{i}")).await.unwrap();
        acked.push(format!("/before-{i}"));
    }
    let st = lk.zone_status(&lt).await.unwrap();
    assert_eq!(st.role, "leader");
    assert_eq!(st.progress.len(), 3, "{st:?}");

    nodes[leader as usize - 1].kill().await.unwrap();
    let survivor = if leader == 1 { 1 } else { 0 };
    let sk = nodes[survivor].kernel.clone();
    let st_task = task(&sk);
    let killed = Instant::now();
    // Writes through a survivor succeed again within a bounded time.
    loop {
        match sk.mkdir(&st_task, "/after").await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(10),
                    "no new leader: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    acked.push("/after".into());
    let failover = killed.elapsed();
    let st = sk.zone_status(&st_task).await.unwrap();
    assert_ne!(st.leader, leader, "{st:?}");
    assert!(st.term > status.term);
    // Every acknowledged write is on both survivors.
    for n in nodes.iter().filter(|n| n.is_alive()) {
        let t = task(&n.kernel);
        for p in &acked {
            eventually(p, || n.kernel.stat(&t, p).ok()).await;
        }
    }
    eprintln!("failover to a leader accepting writes: {failover:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_minority_cannot_commit_and_converges_after_healing() {
    let (_dir, nodes) = cluster(3).await;
    let (z1, owner) = shared_zone(&nodes).await;
    let task = |k: &Kernel| k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
    let (k1, k3) = (&nodes[0].kernel, &nodes[2].kernel);
    let (t1, t3) = (task(k1), task(k3));
    k1.mkdir(&t1, "/before").await.unwrap();
    eventually("node 3 to catch up", || k3.stat(&t3, "/before").ok()).await;

    // Cut node 3 off from both others, in both directions.
    nodes[2].net.cut(&[1, 2]);
    nodes[0].net.cut(&[3]);
    nodes[1].net.cut(&[3]);
    let minority = k3.mkdir(&t3, "/minority").await;
    assert!(minority.is_err(), "the minority committed: {minority:?}");
    // The majority commits (after electing a leader if node 3 led).
    let until = Instant::now() + Duration::from_secs(20);
    while let Err(e) = k1.mkdir(&t1, "/majority").await {
        if Instant::now() > until {
            let s1 = k1.zone_status(&t1).await;
            let s2 = nodes[1].kernel.zone_status(&task(&nodes[1].kernel)).await;
            panic!("the majority could not commit: {e}\nnode 1: {s1:?}\nnode 2: {s2:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        k3.stat(&t3, "/majority").is_err(),
        "the minority saw the write"
    );

    for n in &nodes {
        n.net.heal();
    }
    eventually("node 3 to converge", || k3.stat(&t3, "/majority").ok()).await;
    // All replicas agree: same applied state, and the minority's write was
    // never committed anywhere.
    let applied = |k: &Kernel| k.zone_state(&z1).unwrap().applied_index().unwrap();
    eventually("equal applied indexes", || {
        let a: Vec<u64> = nodes.iter().map(|n| applied(&n.kernel)).collect();
        (a[0] == a[1] && a[1] == a[2]).then_some(())
    })
    .await;
    for n in &nodes {
        let t = task(&n.kernel);
        assert!(n.kernel.stat(&t, "/minority").is_err());
        assert!(n.kernel.stat(&t, "/before").is_ok());
        let dump = n.kernel.zone_state(&z1).unwrap().dump().unwrap();
        let reference = k1.zone_state(&z1).unwrap().dump().unwrap();
        assert_eq!(dump, reference, "node {} diverged", n.kernel.node_id());
    }
}

mod linearizability {
    //! A recorded concurrent history of writes and linearizable reads on
    //! three nodes, checked against a register per key (Wing & Gong's
    //! search: pick any operation that could have taken effect first,
    //! recurse, backtrack; memoized on what is done and the value).

    use super::*;
    use nexus_kernel::Task;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    #[derive(Debug, Clone, Copy)]
    struct Op {
        invoke: u128,
        response: u128,
        /// `Some(v)`: wrote v; `None`: read `value`.
        write: Option<u64>,
        value: u64,
    }

    /// Whether `ops` (one key, starting at `initial`) are linearizable.
    fn linearizable(ops: &[Op], initial: u64) -> bool {
        assert!(ops.len() <= 64, "the search tracks at most 64 operations");
        fn search(ops: &[Op], done: u64, value: u64, seen: &mut HashSet<(u64, u64)>) -> bool {
            if done.count_ones() as usize == ops.len() {
                return true;
            }
            if !seen.insert((done, value)) {
                return false;
            }
            let pending = || (0..ops.len()).filter(|i| done & (1 << i) == 0);
            // Only an operation invoked before every pending one returned
            // can be next.
            let horizon = pending()
                .map(|i| ops[i].response)
                .min()
                .unwrap_or(u128::MAX);
            for i in pending().filter(|&i| ops[i].invoke <= horizon) {
                let next = match ops[i].write {
                    Some(v) => v,
                    None if ops[i].value == value => value,
                    None => continue,
                };
                if search(ops, done | 1 << i, next, seen) {
                    return true;
                }
            }
            false
        }
        search(ops, 0, initial, &mut HashSet::new())
    }

    #[test]
    fn the_checker_refuses_a_stale_read_and_accepts_concurrency() {
        let w = |invoke, response, v| Op {
            invoke,
            response,
            write: Some(v),
            value: v,
        };
        let r = |invoke, response, v| Op {
            invoke,
            response,
            write: None,
            value: v,
        };
        // A read after a write completed must see it.
        assert!(!linearizable(&[w(0, 10, 1), r(20, 30, 0)], 0));
        assert!(linearizable(&[w(0, 10, 1), r(20, 30, 1)], 0));
        // Overlapping: either value is fine.
        assert!(linearizable(&[w(0, 30, 1), r(10, 20, 0)], 0));
        assert!(linearizable(&[w(0, 30, 1), r(10, 20, 1)], 0));
        // Two reads may not see the write appear and then vanish.
        assert!(!linearizable(
            &[w(0, 100, 1), r(10, 20, 1), r(30, 40, 0)],
            0
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_concurrent_history_on_three_nodes_is_linearizable() {
        let seed: u64 = std::env::var("NEXUS_LIN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("NEXUS_LIN_SEED={seed}");
        let (_dir, nodes) = cluster(3).await;
        let (z1, owner) = shared_zone(&nodes).await;
        const KEYS: usize = 3;
        let t1 = nodes[0]
            .kernel
            .spawn_task(owner.clone(), &z1, Capabilities::ALL)
            .unwrap();
        for k in 0..KEYS {
            let h = nodes[0]
                .kernel
                .open_path(&t1, &format!("/k{k}"), OpenOptions::CREATE)
                .await
                .unwrap();
            nodes[0]
                .kernel
                .write(&t1, &h, 0, &0u64.to_be_bytes())
                .await
                .unwrap();
            nodes[0].kernel.sync(&t1, &h).await.unwrap();
        }
        let start = Instant::now();
        let mut clients = Vec::new();
        for c in 0..6u64 {
            let k = nodes[(c % 3) as usize].kernel.clone();
            let t: Task = k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ c);
            clients.push(tokio::spawn(async move {
                // The keys were created through node 1: see them here first.
                k.linearize(&t).await.unwrap();
                let mut history = Vec::new();
                for n in 0..12u64 {
                    let key = rng.gen_range(0..KEYS);
                    let path = format!("/k{key}");
                    let invoke = start.elapsed().as_nanos();
                    let h = k.resolve(&t, &path, true).unwrap();
                    let op = if rng.gen_bool(0.5) {
                        let v = (c + 1) * 1000 + n;
                        // Written out: a synced write is what other
                        // nodes see (a buffered one only its own).
                        k.write(&t, &h, 0, &v.to_be_bytes()).await.unwrap();
                        k.sync(&t, &h).await.unwrap();
                        (Some(v), v)
                    } else {
                        k.linearize(&t).await.unwrap();
                        let b = k.read_linearized(&t, &h, 0, 8).await.unwrap();
                        (None, u64::from_be_bytes(b[..].try_into().unwrap()))
                    };
                    let response = start.elapsed().as_nanos();
                    history.push((
                        key,
                        Op {
                            invoke,
                            response,
                            write: op.0,
                            value: op.1,
                        },
                    ));
                }
                history
            }));
        }
        let mut per_key: Vec<Vec<Op>> = vec![Vec::new(); KEYS];
        for c in clients {
            for (key, op) in c.await.unwrap() {
                per_key[key].push(op);
            }
        }
        for (key, ops) in per_key.iter().enumerate() {
            assert!(
                linearizable(ops, 0),
                "key /k{key} is not linearizable (NEXUS_LIN_SEED={seed}): {ops:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_catches_up_by_streamed_snapshots_and_damaged_ones_are_refused() {
    use nexus_runtime::node::snapshot::Fault;
    let dir = tempfile::tempdir().unwrap();
    let nodes = local::start(dir.path(), 3, |cfg| {
        cfg.driver.tick = Duration::from_millis(20);
        cfg.driver.propose_timeout = Duration::from_secs(3);
        // Compact early, so a newcomer's log is gone and it needs a snapshot.
        cfg.log_retention.compact_after = 50;
        cfg.log_retention.keep_entries = 10;
        // Snapshots are received into the spool; install them in steps.
        cfg.snapshot_one_batch_up_to = 64 << 10;
    })
    .await
    .unwrap();
    let z1 = ZoneId::new("z1").unwrap();
    let owner = Principal::parse("user:owner").unwrap();
    let first = vec![(1, Role::Voter), (2, Role::Voter)];
    nodes[1].kernel.join_zone(&z1, first.clone()).await.unwrap();
    nodes[0]
        .kernel
        .create_zone_on(&owner, &z1, first.clone())
        .await
        .unwrap();
    let task = |k: &Kernel| k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
    let k1 = &nodes[0].kernel;
    let t1 = task(k1);
    // ~600 KiB of state (3 KiB files are stored inline): three chunks.
    let body = |i: usize| vec![(i % 251) as u8; 3000];
    for i in 0..200 {
        let h = k1
            .open_path(&t1, &format!("/f{i}"), OpenOptions::CREATE)
            .await
            .unwrap();
        k1.write(&t1, &h, 0, &body(i)).await.unwrap();
        k1.sync(&t1, &h).await.unwrap();
    }
    let leader = k1.zone_status(&t1).await.unwrap().leader;
    let lk = &nodes[leader as usize - 1];
    let lt = task(&lk.kernel);

    // The first snapshot arrives corrupt and is refused; the leader sends
    // another, which node 3 installs.
    lk.net.damage_next_snapshot(Fault::Corrupt);
    let joined = nodes[2]
        .kernel
        .join_running_zone(&z1, first.clone(), Role::Voter)
        .await
        .unwrap();
    let info = MemberInfo {
        role: Role::Voter,
        incarnation: joined.incarnation,
    };
    lk.kernel.add_replica(&lt, 3, info).await.unwrap();
    // A message from an earlier replica of node 3 (another incarnation) is
    // refused; the group knows which replica it added.
    let mut stale = raft::prelude::Message {
        to: leader,
        from: 3,
        ..Default::default()
    };
    stale.set_msg_type(raft::prelude::MessageType::MsgAppendResponse);
    let e = lk
        .kernel
        .deliver(&z1, stale, joined.incarnation ^ 2)
        .unwrap_err();
    assert!(e.to_string().contains("earlier replica of node 3"), "{e}");
    let (delivered, failed) = eventually("the sender to hear the ack", || {
        let c = lk.net.snapshot_counts();
        (c.0 >= 1).then_some(c)
    })
    .await;
    assert!(failed >= 1, "{delivered} delivered, {failed} failed");
    let k3 = &nodes[2].kernel;
    let t3 = task(k3);
    k3.linearize(&t3).await.unwrap();
    let h = k3.resolve(&t3, "/f199", true).unwrap();
    assert_eq!(k3.read(&t3, &h, 0, 4096).await.unwrap(), body(199));

    // Cut node 3 off while the log moves on and is compacted; a truncated
    // snapshot is refused too, and then a whole one brings it back.
    for n in &nodes {
        n.net.cut(&[3]);
    }
    nodes[2].net.cut(&[1, 2]);
    for i in 200..300 {
        let h = lk
            .kernel
            .open_path(&lt, &format!("/f{i}"), OpenOptions::CREATE)
            .await
            .unwrap();
        lk.kernel.write(&lt, &h, 0, &body(i)).await.unwrap();
        lk.kernel.sync(&lt, &h).await.unwrap();
    }
    let before = lk.net.snapshot_counts();
    lk.net.damage_next_snapshot(Fault::Truncate);
    for n in &nodes {
        n.net.heal();
    }
    eventually("node 3 to catch up again", || {
        k3.resolve(&t3, "/f299", true).ok()
    })
    .await;
    // (The sender counts a delivery when the ack is back, just after node 3
    // installed it.)
    let after = eventually("the sender to hear the ack", || {
        let c = lk.net.snapshot_counts();
        (c.0 > before.0).then_some(c)
    })
    .await;
    assert!(after.1 > before.1, "the truncated snapshot was not refused");
    let applied = |k: &Kernel| k.zone_state(&z1).unwrap().applied_index().unwrap();
    eventually("equal applied indexes", || {
        let a: Vec<u64> = nodes.iter().map(|n| applied(&n.kernel)).collect();
        (a[0] == a[1] && a[1] == a[2]).then_some(())
    })
    .await;
    let reference = k1.zone_state(&z1).unwrap().dump().unwrap();
    for n in &nodes[1..] {
        let dump = n.kernel.zone_state(&z1).unwrap().dump().unwrap();
        assert_eq!(dump, reference, "node {} diverged", n.kernel.node_id());
    }
    // Installed snapshots leave nothing in the spool.
    let spool = k3.home().join("snapshots");
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(left.is_empty(), "left in {}: {left:?}", spool.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_zone_goes_quiet_and_wakes_on_demand() {
    let (_dir, mut nodes) = cluster(3).await;
    let (z1, owner) = shared_zone(&nodes).await;
    let task = |k: &Kernel| k.spawn_task(owner.clone(), &z1, Capabilities::ALL).unwrap();
    let k1 = nodes[0].kernel.clone();
    k1.mkdir(&task(&k1), "/a").await.unwrap();
    let sent = |nodes: &[LocalNode]| nodes.iter().map(|n| n.net.sent()).sum::<u64>();
    // Followers stop ticking after 10 election timeouts of idleness, the
    // leader after 20 (20 ms ticks, 10-tick timeouts: 2 s and 4 s); then
    // not even heartbeats flow.
    let quiet = eventually("the zone to go quiet", || {
        let before = sent(&nodes);
        std::thread::sleep(Duration::from_millis(500));
        (sent(&nodes) == before).then_some(())
    });
    tokio::time::timeout(Duration::from_secs(15), quiet)
        .await
        .expect("an idle zone kept sending");
    // A write through a follower wakes the group at once.
    let st = k1.zone_status(&task(&k1)).await.unwrap();
    let fi = (0..3).find(|i| *i as u64 + 1 != st.leader).unwrap();
    let fk = nodes[fi].kernel.clone();
    let t = Instant::now();
    fk.mkdir(&task(&fk), "/b").await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "waking took {:?}",
        t.elapsed()
    );

    // A leader that dies while its group sleeps is replaced once a
    // survivor has something to do.
    let quiet = eventually("the zone to go quiet again", || {
        let before = sent(&nodes);
        std::thread::sleep(Duration::from_millis(500));
        (sent(&nodes) == before).then_some(())
    });
    tokio::time::timeout(Duration::from_secs(15), quiet)
        .await
        .unwrap();
    let li = st.leader as usize - 1;
    nodes[li].kill().await.unwrap();
    let t = Instant::now();
    loop {
        match fk.mkdir(&task(&fk), "/after").await {
            Ok(_) => break,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(15), "no new leader: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    eprintln!(
        "a sleeping group replaced its dead leader in {:?}",
        t.elapsed()
    );
}
