//! `nexus bench`: the kernel benchmarks of docs/benchmarks.md, each beside
//! its baseline measured in the same run on the same disk:
//! - hot stat/lookup vs a raw sled `get`;
//! - durable creates through Raft (1 and 64 callers) vs raw sled insert+flush;
//! - 4 KiB and 1 MiB file writes and reads vs plain files (write+fsync / read).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::identity::{Capabilities, Task};
use nexus_kernel::kernel::{Kernel, KernelConfig};
use nexus_kernel::types::ZoneId;
use nexus_kernel::vfs::OpenOptions;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::error::{CliError, CliResult};
use crate::output;

#[derive(Serialize)]
struct Row {
    name: String,
    nexus: f64,
    baseline: f64,
    unit: &'static str,
    /// nexus / baseline (higher is better for rates).
    ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_us: Option<f64>,
}

fn row(name: &str, nexus: f64, baseline: f64, unit: &'static str) -> Row {
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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn io(e: std::io::Error) -> CliError {
    CliError::local("bench directory", e)
}

pub async fn run(args: BenchArgs) -> CliResult {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempdir_in(&base).map_err(io)?;
    let scale = if args.quick { 10 } else { 1 };
    let kernel = Arc::new(Kernel::open(KernelConfig::embedded(
        scratch.path().join("nexus"),
    ))?);
    let raw =
        sled::open(scratch.path().join("raw-sled")).map_err(|e| CliError::Failed(e.to_string()))?;
    let zone = ZoneId::new("bench")?;
    let me = crate::session::operator();
    kernel.create_zone(&me, &zone).await?;
    let z = kernel.spawn_task(me, &zone, Capabilities::ALL)?;

    let mut rows = vec![stat(&kernel, &z, &raw, 2_000_000 / scale).await?];
    rows.extend(creates(&kernel, &z, &raw, 20_000 / scale as u64).await?);
    for (size, count) in [(4096usize, 4000 / scale), (1 << 20, 200 / scale)] {
        rows.extend(file_io(&kernel, &z, scratch.path(), size, count).await?);
    }
    kernel.shutdown().await?;
    if args.json {
        return output::json(&rows);
    }
    println!(
        "{:<44} {:>14} {:>14} {:>8} {:>9} {:>9}",
        "benchmark", "nexus", "baseline", "ratio", "p50 µs", "p99 µs"
    );
    for r in rows {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_default();
        println!(
            "{:<44} {:>14.0} {:>14.0} {:>8.2} {:>9} {:>9}   ({})",
            r.name,
            r.nexus,
            r.baseline,
            r.ratio,
            opt(r.p50_us),
            opt(r.p99_us),
            r.unit
        );
    }
    Ok(())
}

/// Hot-file stat from every core vs raw sled gets of one key.
async fn stat(k: &Arc<Kernel>, z: &Task, raw: &sled::Db, n: usize) -> CliResult<Row> {
    k.mkdir_all(z, "/bench/hot").await?;
    k.open_path(
        z,
        "/bench/hot/file.txt",
        OpenOptions {
            write: true,
            create: true,
            ..OpenOptions::default()
        },
    )
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
        .map_err(|e| CliError::Failed(e.to_string()))?;
    tree.insert(b"hot-key", vec![0u8; 64])
        .map_err(|e| CliError::Failed(e.to_string()))?;
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
async fn creates(k: &Arc<Kernel>, z: &Task, raw: &sled::Db, n: u64) -> CliResult<Vec<Row>> {
    let mut rows = Vec::new();
    for callers in [1u64, 64] {
        let dir = format!("/creates{callers}");
        k.mkdir(z, &dir).await?;
        let per = if callers == 1 { n / 10 } else { n / callers };
        let started = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (k, z, dir) = (k.clone(), z.clone(), dir.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per as usize);
                    for i in 0..per {
                        let t = Instant::now();
                        k.open_path(
                            &z,
                            &format!("{dir}/c{c}-{i}"),
                            OpenOptions {
                                write: true,
                                create: true,
                                exclusive: true,
                                ..OpenOptions::default()
                            },
                        )
                        .await?;
                        lat.push(t.elapsed());
                    }
                    Ok::<_, CliError>(lat)
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.map_err(|e| CliError::Failed(e.to_string()))??);
        }
        let nexus = lat.len() as f64 / started.elapsed().as_secs_f64();
        lat.sort();

        let tree = raw
            .open_tree(format!("creates{callers}"))
            .map_err(|e| CliError::Failed(e.to_string()))?;
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
) -> CliResult<Vec<Row>> {
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
            .open_path(
                z,
                &format!("{dir}/f{i}"),
                OpenOptions {
                    write: true,
                    create: true,
                    ..OpenOptions::default()
                },
            )
            .await?;
        k.write(z, &h, 0, &d).await?;
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
