//! Cluster benchmarks: three nodes in this process, each with its own data
//! directory, talking Raft over real gRPC on loopback (`GrpcTransport` and
//! the node server, as `nexus node start` runs them). Creates through the
//! leader with 1 and 64 concurrent clients (baseline: the same storm on a
//! one-node embedded zone in the same run), the same creates made on a
//! follower, which forwards each to the leader (baseline: on the leader),
//! stat on a follower (baseline: the leader), the time a fourth, empty node takes to join the zone
//! (`add-replica`; the log is compacted by then, so it catches up by a
//! streamed snapshot), and the time from stopping the leader to a write
//! accepted by the new one.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::OpenOptions;
use nexus_kernel::{Capabilities, Task};
use nexus_kernel::{Kernel, KernelConfig, ObjectStoreConfig};
use nexus_kernel::{MemberInfo, Role};
use nexus_kernel::{ReplicaId, ZoneId};

use crate::bench::{create_storm, percentile, row, row_lower_better, Row};
use crate::node::local::{self, LocalNode};
use crate::node::NODE_TICK;
use crate::ops::{OpError, OpResult};

fn fail(e: impl std::fmt::Display) -> OpError {
    OpError::Failed(format!("cluster benchmark: {e}"))
}

pub async fn cluster(scratch: &Path, scale: usize) -> OpResult<Vec<Row>> {
    let dir = scratch.join("cluster");
    let mut nodes = local::start(&dir, 4, |cfg| {
        cfg.driver.tick = NODE_TICK;
        cfg.object_store = ObjectStoreConfig::Shared(dir.join("content"));
        // Compact within the run, so the newcomer needs a snapshot.
        cfg.log_retention.compact_after = 10_000 / scale as u64;
        cfg.log_retention.keep_entries = 2_000 / scale as u64;
    })
    .await?;
    let zone = ZoneId::new("bench")?;
    let me = crate::session::operator();
    let (replicas, leader) = zone_on(&nodes, &zone, 3).await?;
    let task =
        |k: &Kernel| -> OpResult<Task> { Ok(k.spawn_task(me.clone(), &zone, Capabilities::ALL)?) };
    let li = (leader - 1) as usize;
    let lk = nodes[li].kernel.clone();
    let lt = task(&lk)?;

    // The same storm on a one-node zone in this run: the baseline.
    let single = Arc::new(Kernel::open(KernelConfig::embedded(dir.join("single")))?);
    single.create_zone(&me, &zone).await?;
    let st = task(&single)?;

    let mut rows = Vec::new();
    let mut on_leader = Vec::new();
    let n = 20_000 / scale as u64;
    for callers in [1u64, 64] {
        let per = if callers == 1 { n / 10 } else { n / callers };
        let (rate, lat) = create_storm(&lk, &lt, &format!("/c{callers}"), callers, per).await?;
        on_leader.push((callers, per, rate));
        let (base, _) = create_storm(&single, &st, &format!("/c{callers}"), callers, per).await?;
        let mut r = row(
            &format!("3 nodes: creates, {callers} client(s) (vs 1 node)"),
            rate,
            base,
            "creates/s",
        );
        r.p50_us = Some(percentile(&lat, 0.5));
        r.p99_us = Some(percentile(&lat, 0.99));
        rows.push(r);
    }
    single.shutdown().await?;

    // The same creates made on a follower: each goes to the leader's node
    // and is answered once the follower has applied it.
    let fi = (li + 1) % 3; // a follower among the first three
    let fk = nodes[fi].kernel.clone();
    let ft = task(&fk)?;
    for (callers, per, leader_rate) in on_leader {
        let dir = format!("/f{callers}");
        let (rate, lat) = create_storm(&fk, &ft, &dir, callers, per).await?;
        let mut r = row(
            &format!("3 nodes: creates, {callers} client(s) on a follower (vs on the leader)"),
            rate,
            leader_rate,
            "creates/s",
        );
        r.p50_us = Some(percentile(&lat, 0.5));
        r.p99_us = Some(percentile(&lat, 0.99));
        rows.push(r);
    }

    // Stat of a hot file on a follower, served by its own replica.
    lk.open_path(&lt, "/hot", OpenOptions::CREATE).await?;
    let until = Instant::now() + Duration::from_secs(10);
    while fk.stat(&ft, "/hot").is_err() {
        if Instant::now() > until {
            return Err(fail("the follower never saw /hot"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = 400_000 / scale;
    let follower = stat_rate(&fk, &ft, stats)?;
    let on_leader = stat_rate(&lk, &lt, stats)?;
    rows.push(row(
        "3 nodes: stat of a hot file on a follower (vs on the leader)",
        follower,
        on_leader,
        "ops/s",
    ));

    // An empty fourth node joins: learner, catch-up, promotion.
    let t = Instant::now();
    let joined = nodes[3]
        .kernel
        .join_running_zone(&zone, replicas, Role::Voter)
        .await?;
    let info = MemberInfo {
        role: Role::Voter,
        incarnation: joined.incarnation,
    };
    lk.add_replica(&lt, 4, info).await?;
    let joined = t.elapsed();
    let state = nodes[li].net.snapshot_bytes();
    rows.push(timing(
        &format!(
            "3 nodes: an empty 4th node added (catch-up by a {:.1} MiB snapshot) → voter",
            state as f64 / (1 << 20) as f64
        ),
        joined,
    ));

    // Failover: stop the leader (off the network, zones stopped), then
    // write through a survivor until the new leader accepts it.
    // The clock starts when the leader is told to stop: its replicas
    // fall silent from that moment, and stopping it takes time of its own.
    let t = Instant::now();
    nodes[li].kill().await?;
    let sk = nodes[fi].kernel.clone();
    let mut i = 0;
    loop {
        i += 1;
        match sk.mkdir(&ft, &format!("/after-{i}")).await {
            Ok(_) => break,
            Err(e) if t.elapsed() > Duration::from_secs(30) => return Err(fail(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    rows.push(timing(
        "3 nodes: leader stopped → a write accepted by the new leader",
        t.elapsed(),
    ));
    for n in nodes.iter_mut().filter(|n| n.is_alive()) {
        n.kill().await?;
    }
    Ok(rows)
}

/// Zone `zone` on nodes 1..=`voters`, every one a voter, created by the
/// operator through node 1; its replicas and the node id of its leader.
pub(crate) async fn zone_on(
    nodes: &[LocalNode],
    zone: &ZoneId,
    voters: u64,
) -> OpResult<(Vec<(ReplicaId, Role)>, ReplicaId)> {
    let me = crate::session::operator();
    let replicas: Vec<_> = (1..=voters).map(|id| (id, Role::Voter)).collect();
    for n in &nodes[1..voters as usize] {
        n.kernel.join_zone(zone, replicas.clone()).await?;
    }
    let first = &nodes[0].kernel;
    first.create_zone_on(&me, zone, replicas.clone()).await?;
    let task = first.spawn_task(me, zone, Capabilities::ALL)?;
    let leader = first.zone_status(&task).await?.leader;
    Ok((replicas, leader))
}

/// A duration with no baseline to compare against.
fn timing(name: &str, took: Duration) -> Row {
    let mut r = row_lower_better(name, took.as_secs_f64() * 1e3, f64::NAN, "ms");
    r.ratio = f64::NAN;
    r
}

/// Stats of `/hot` from every core.
fn stat_rate(k: &Kernel, t: &Task, n: usize) -> OpResult<f64> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = n / threads;
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> OpResult<()> {
                    for _ in 0..per {
                        std::hint::black_box(k.stat(t, "/hot")?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| fail("a stat thread panicked"))??;
        }
        Ok::<_, OpError>(())
    })?;
    Ok((per * threads) as f64 / started.elapsed().as_secs_f64())
}
