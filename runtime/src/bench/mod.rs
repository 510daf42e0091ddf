//! `nexus bench`: the kernel benchmarks of docs/benchmarks.md, each beside
//! its baseline measured in the same run on the same disk:
//! - hot stat/lookup vs a raw sled `get`;
//! - durable creates through Raft (1 and 64 callers) vs raw sled insert+flush;
//! - 4 KiB and 1 MiB file writes and reads vs plain files (write+fsync / read).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::OpenOptions;
use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Permission, Principal, Task};
use nexus_kernel::{Kernel, KernelConfig};
use nexus_kernel::{ObjectRef, Relation, Subject, Tuple};
use serde::Serialize;

mod agents;
mod busy;
mod cluster;
mod egress;
mod native;
mod pipes;
mod transfer;
mod writes;

use crate::cli::BenchArgs;
use crate::ops::{OpError, OpResult};
use crate::output;

#[derive(Serialize)]
pub(crate) struct Row {
    name: String,
    nexus: f64,
    baseline: f64,
    unit: &'static str,
    /// nexus / baseline (higher is better for rates).
    pub(crate) ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_us: Option<f64>,
}

pub(crate) fn row(name: &str, nexus: f64, baseline: f64, unit: &'static str) -> Row {
    Row {
        name: name.into(),
        nexus,
        baseline,
        unit,
        ratio: nexus / baseline,
        p50_us: None,
        p99_us: None,
    }
}

/// A row where less is better (latency, memory): the ratio is baseline /
/// nexus, so above 1 still means nexus does better.
pub(crate) fn row_lower_better(name: &str, nexus: f64, baseline: f64, unit: &'static str) -> Row {
    Row {
        ratio: baseline / nexus,
        ..row(name, nexus, baseline, unit)
    }
}

/// A fresh zone `name` for agent benchmarks, owned by the operator, in
/// which `agent:bench` is an editor; returns the zone, an owner's task and
/// the agent's principal.
pub(crate) async fn agent_zone(k: &Kernel, name: &str) -> OpResult<(ZoneId, Task, Principal)> {
    let zone = ZoneId::new(name)?;
    let me = crate::session::operator();
    k.create_zone(&me, &zone).await?;
    let owner = k.spawn_task(me, &zone, Capabilities::ALL)?;
    let agent = Principal::parse("agent:bench")?;
    let grant = Tuple {
        object: ObjectRef::zone(&zone),
        relation: Relation::Editor,
        subject: Subject::Principal(agent.clone()),
    };
    k.write_tuples(&owner, vec![grant], vec![]).await?;
    Ok((zone, owner, agent))
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn io(e: std::io::Error) -> OpError {
    OpError::local("bench directory", e)
}

pub async fn run(args: BenchArgs) -> OpResult {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&base).map_err(io)?;
    let scale = if args.quick { 10 } else { 1 };
    let kernel = Arc::new(Kernel::open(KernelConfig::embedded(
        scratch.path().join("nexus"),
    ))?);
    let raw =
        sled::open(scratch.path().join("raw-sled")).map_err(|e| OpError::Failed(e.to_string()))?;
    let zone = ZoneId::new("bench")?;
    let me = crate::session::operator();
    kernel.create_zone(&me, &zone).await?;
    let z = kernel.spawn_task(me, &zone, Capabilities::ALL)?;

    let wanted = |group: &str| args.only.is_empty() || args.only.iter().any(|g| g == group);
    let mut rows = Vec::new();
    if wanted("kernel") {
        rows.push(stat(&kernel, &z, &raw, 2_000_000 / scale).await?);
        rows.extend(creates(&kernel, &z, &raw, 20_000 / scale as u64).await?);
        for (size, count) in [(4096usize, 4000 / scale), (1 << 20, 200 / scale)] {
            rows.extend(file_io(&kernel, &z, scratch.path(), size, count).await?);
        }
    }
    if wanted("gate") {
        rows.extend(gate(&kernel, scale).await?);
    }
    if let Some(guest) = &args.guest {
        let dir = scratch.path();
        if wanted("agents") {
            rows.extend(agents::agents(&kernel, guest, dir, scale).await?);
        }
        if wanted("pipes") {
            rows.extend(pipes::pipes(&kernel, guest, dir, scale).await?);
        }
        if wanted("writes") {
            rows.extend(writes::writes(&kernel, guest, args.guest_p1.as_deref(), dir).await?);
            if let Some(sqlite) = &args.guest_sqlite {
                rows.extend(writes::sqlite(&kernel, sqlite, dir).await?);
            }
        }
        if wanted("busy") {
            rows.extend(busy::busy(guest, dir, scale).await?);
        }
    }
    if wanted("cluster") {
        rows.extend(cluster::cluster(scratch.path(), scale).await?);
    }
    if wanted("transfer") {
        rows.extend(transfer::transfer(scratch.path(), scale).await?);
    }
    if let (Some(fetch), true) = (&args.guest_fetch, wanted("egress")) {
        rows.extend(egress::egress(&kernel, fetch, scratch.path(), scale).await?);
    }
    if let (Some(image), true) = (&args.native_image, wanted("native")) {
        rows.extend(native::native(&kernel, image, scratch.path(), scale).await?);
    }
    kernel.shutdown().await?;
    if args.json {
        return output::json(&rows);
    }
    println!(
        "{:<52} {:>12} {:>12} {:>8} {:>9} {:>9}",
        "benchmark", "nexus", "baseline", "ratio", "p50 µs", "p99 µs"
    );
    for r in rows {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_default();
        let num = |v: f64| {
            if v.is_nan() {
                "-".to_owned()
            } else {
                format!("{v:.0}")
            }
        };
        let ratio = if r.ratio.is_nan() {
            "-".to_owned()
        } else {
            format!("{:.2}", r.ratio)
        };
        println!(
            "{:<52} {:>12} {:>12} {:>8} {:>9} {:>9}   ({})",
            r.name,
            num(r.nexus),
            num(r.baseline),
            ratio,
            opt(r.p50_us),
            opt(r.p99_us),
            r.unit
        );
    }
    Ok(())
}

/// Hot-file stat from every core vs raw sled gets of one key.
async fn stat(k: &Arc<Kernel>, z: &Task, raw: &sled::Db, n: usize) -> OpResult<Row> {
    k.mkdir_all(z, "/bench/hot").await?;
    k.open_path(z, "/bench/hot/file.txt", OpenOptions::CREATE)
        .await?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = n / threads;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per {
                    std::hint::black_box(k.stat(z, "/bench/hot/file.txt").expect("stat"));
                }
            });
        }
    });
    let nexus = (per * threads) as f64 / started.elapsed().as_secs_f64();
    let tree = raw
        .open_tree("t")
        .map_err(|e| OpError::Failed(e.to_string()))?;
    tree.insert(b"hot-key", vec![0u8; 64])
        .map_err(|e| OpError::Failed(e.to_string()))?;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per {
                    std::hint::black_box(tree.get(b"hot-key").expect("get"));
                }
            });
        }
    });
    let baseline = (per * threads) as f64 / started.elapsed().as_secs_f64();
    Ok(row(
        &format!("stat hot file, {threads} threads (vs sled get)"),
        nexus,
        baseline,
        "ops/s",
    ))
}

/// Durable creates through Raft vs sled insert + flush, with 1 and 64 callers.
/// `callers` concurrent clients each creating `per` new files in `dir`
/// (made first); returns creates per second and the sorted latencies.
pub(crate) async fn create_storm(
    k: &Arc<Kernel>,
    z: &Task,
    dir: &str,
    callers: u64,
    per: u64,
) -> OpResult<(f64, Vec<Duration>)> {
    k.mkdir(z, dir).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (k, z, dir) = (k.clone(), z.clone(), dir.to_owned());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per as usize);
                for i in 0..per {
                    let t = Instant::now();
                    k.open_path(&z, &format!("{dir}/c{c}-{i}"), OpenOptions::CREATE_NEW)
                        .await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, OpError>(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.map_err(|e| OpError::Failed(e.to_string()))??);
    }
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    lat.sort();
    Ok((rate, lat))
}

async fn creates(k: &Arc<Kernel>, z: &Task, raw: &sled::Db, n: u64) -> OpResult<Vec<Row>> {
    let mut rows = Vec::new();
    for callers in [1u64, 64] {
        let per = if callers == 1 { n / 10 } else { n / callers };
        let (nexus, lat) = create_storm(k, z, &format!("/creates{callers}"), callers, per).await?;

        let tree = raw
            .open_tree(format!("creates{callers}"))
            .map_err(|e| OpError::Failed(e.to_string()))?;
        let started = Instant::now();
        let mut base_lat = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..callers)
                .map(|c| {
                    let tree = &tree;
                    s.spawn(move || {
                        let mut lat = Vec::new();
                        for i in 0..per {
                            let t = Instant::now();
                            tree.insert(format!("c{c}-{i}"), vec![0u8; 80])
                                .expect("insert");
                            tree.flush().expect("flush");
                            lat.push(t.elapsed());
                        }
                        lat
                    })
                })
                .collect();
            for h in handles {
                base_lat.extend(h.join().expect("baseline thread"));
            }
        });
        let baseline = base_lat.len() as f64 / started.elapsed().as_secs_f64();
        let mut r = row(
            &format!("durable creates, {callers} caller(s) (vs sled insert+flush)"),
            nexus,
            baseline,
            "creates/s",
        );
        r.p50_us = Some(percentile(&lat, 0.50));
        r.p99_us = Some(percentile(&lat, 0.99));
        rows.push(r);
    }
    Ok(rows)
}

/// Whole-file writes and reads of `size` bytes vs plain files on the same disk.
async fn file_io(
    k: &Arc<Kernel>,
    z: &Task,
    scratch: &std::path::Path,
    size: usize,
    count: usize,
) -> OpResult<Vec<Row>> {
    use std::io::Write;
    let label = if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    };
    let dir = format!("/io{size}");
    k.mkdir(z, &dir).await?;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u64).wrapping_mul(0x9E37_79B9) as u8 ^ (i >> 12) as u8)
        .collect();
    let mb = |n: usize, d: Duration| (n * size) as f64 / d.as_secs_f64() / 1e6;

    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        // Distinct content per file, so content addressing cannot deduplicate.
        let mut d = data.clone();
        d[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let h = k
            .open_path(z, &format!("{dir}/f{i}"), OpenOptions::CREATE)
            .await?;
        k.write(z, &h, 0, &d).await?;
        k.sync(z, &h).await?;
        handles.push(h);
    }
    let nexus_w = mb(count, started.elapsed());

    let plain = scratch.join(format!("plain{size}"));
    std::fs::create_dir_all(&plain).map_err(io)?;
    let started = Instant::now();
    for i in 0..count {
        let mut d = data.clone();
        d[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut f = std::fs::File::create(plain.join(format!("f{i}"))).map_err(io)?;
        f.write_all(&d).map_err(io)?;
        f.sync_data().map_err(io)?;
    }
    let plain_w = mb(count, started.elapsed());

    let started = Instant::now();
    for h in &handles {
        std::hint::black_box(k.read(z, h, 0, size as u64).await?);
    }
    let nexus_r = mb(count, started.elapsed());
    let started = Instant::now();
    for i in 0..count {
        std::hint::black_box(std::fs::read(plain.join(format!("f{i}"))).map_err(io)?);
    }
    let plain_r = mb(count, started.elapsed());
    Ok(vec![
        row(
            &format!("write {label} files (vs plain write+fsync)"),
            nexus_w,
            plain_w,
            "MB/s",
        ),
        row(
            &format!("read {label} files (vs plain read)"),
            nexus_r,
            plain_r,
            "MB/s",
        ),
    ])
}

/// Per-call latencies of `f`, sorted.
pub(crate) fn timed(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        lat.push(t.elapsed());
    }
    lat.sort();
    lat
}

fn latency_row(name: String, lat: &[Duration]) -> Row {
    let mean = lat.iter().sum::<Duration>().as_secs_f64() / lat.len() as f64;
    Row {
        name,
        nexus: 1.0 / mean,
        baseline: f64::NAN,
        unit: "checks/s",
        ratio: f64::NAN,
        p50_us: Some(percentile(lat, 0.50)),
        p99_us: Some(percentile(lat, 0.99)),
    }
}

fn rate(n: usize, f: impl FnMut()) -> f64 {
    let lat = timed(n, f);
    n as f64 / lat.iter().sum::<Duration>().as_secs_f64()
}

/// The gate: check latency over 100,000 tuples at inheritance depths 1, 3
/// and 5 (cached and uncached), token verification, and what the gate adds
/// to a stat.
async fn gate(k: &Arc<Kernel>, scale: usize) -> OpResult<Vec<Row>> {
    let zone = ZoneId::new("gate")?;
    let me = crate::session::operator();
    k.create_zone(&me, &zone).await?;
    let owner = k.spawn_task(me.clone(), &zone, Capabilities::ALL)?;
    let file = "/g1/g2/g3/g4/g5/file";
    k.mkdir_all(&owner, "/g1/g2/g3/g4/g5").await?;
    let create = OpenOptions::CREATE;
    k.open_path(&owner, file, create).await?;

    // 100,000 tuples: group memberships, plus grants to others on the chain.
    let subject = |s: &str| Subject::parse(s);
    let mut filler = Vec::new();
    for g in 0..999 {
        for u in 0..100 {
            filler.push(Tuple {
                object: ObjectRef::group(&format!("g{g}"))?,
                relation: Relation::Member,
                subject: subject(&format!("user:u{u}"))?,
            });
        }
    }
    let chain = [
        "/g1",
        "/g1/g2",
        "/g1/g2/g3",
        "/g1/g2/g3/g4",
        "/g1/g2/g3/g4/g5",
    ];
    for dir in chain {
        let (_, obj) = k.object_at(&owner, dir)?;
        for u in 0..20 {
            filler.push(Tuple {
                object: obj.clone(),
                relation: Relation::Viewer,
                subject: subject(&format!("user:other{u}"))?,
            });
        }
    }
    // The grants under test: depth d = d levels above the file.
    for (depth, dir) in [(1, chain[4]), (3, chain[2]), (5, chain[0])] {
        let (_, obj) = k.object_at(&owner, dir)?;
        filler.push(Tuple {
            object: obj,
            relation: Relation::Viewer,
            subject: subject(&format!("user:depth{depth}"))?,
        });
    }
    let total = filler.len();
    for batch in filler.chunks(2000) {
        k.write_tuples(&owner, batch.to_vec(), vec![]).await?;
    }
    let (_, target) = k.object_at(&owner, file)?;
    let mut rows = Vec::new();
    let n = 200_000 / scale;
    for depth in [1, 3, 5] {
        let who = Principal::parse(&format!("user:depth{depth}"))?;
        let task = k.spawn_task(who.clone(), &zone, Capabilities::ALL)?;
        if !k.check(&task, &zone, &target, Permission::Read)?.allowed {
            return Err(OpError::Failed(format!(
                "benchmark set-up: the depth-{depth} grant does not apply"
            )));
        }
        let uncached = timed(n / 4, || {
            std::hint::black_box(
                k.evaluate(&zone, &who, &target, Permission::Read)
                    .expect("check"),
            );
        });
        rows.push(latency_row(
            format!("check, depth {depth}, {total} tuples, uncached"),
            &uncached,
        ));
        let cached = timed(n, || {
            std::hint::black_box(
                k.check(&task, &zone, &target, Permission::Read)
                    .expect("check"),
            );
        });
        rows.push(latency_row(
            format!("check, depth {depth}, {total} tuples, cached"),
            &cached,
        ));
    }

    let (token, _) = k.tokens().issue(
        Principal::parse("agent:bench")?,
        zone.clone(),
        Vec::new(),
        Capabilities::ALL,
        3600,
    )?;
    let uncached = rate(n / 10, || {
        std::hint::black_box(k.tokens().verify_signature(&token).expect("verify"));
    });
    let cached = rate(n, || {
        std::hint::black_box(k.tokens().verify(&token).expect("verify"));
    });
    rows.push(row(
        "token verify, cached (vs uncached)",
        cached,
        uncached,
        "verifies/s",
    ));
    rows.push(stat_gate_cost(k, &owner, file, n)?);
    Ok(rows)
}

#[cfg(feature = "gate-off-baseline")]
fn stat_gate_cost(k: &Kernel, owner: &Task, file: &str, n: usize) -> OpResult<Row> {
    let gated = rate(n, || {
        std::hint::black_box(k.stat(owner, file).expect("stat"));
    });
    let ungated = rate(n, || {
        std::hint::black_box(k.stat_without_gate(owner, file).expect("stat"));
    });
    Ok(row(
        "stat with the gate (vs gate off), 1 thread",
        gated,
        ungated,
        "ops/s",
    ))
}

#[cfg(not(feature = "gate-off-baseline"))]
fn stat_gate_cost(k: &Kernel, owner: &Task, file: &str, n: usize) -> OpResult<Row> {
    let gated = rate(n, || {
        std::hint::black_box(k.stat(owner, file).expect("stat"));
    });
    let mut r = row(
        "stat with the gate, 1 thread (gate-off baseline: build with --features gate-off-baseline)",
        gated,
        f64::NAN,
        "ops/s",
    );
    r.ratio = f64::NAN;
    Ok(r)
}
