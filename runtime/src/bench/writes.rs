//! The write path: the bench guest's `writes` case (appends, random 4 KiB
//! pages, 1 MiB sequential writes, each ended by an fsync) on the kernel
//! and on stock wasmtime-wasi with a host directory, and how much the
//! content store grew for the bytes the files hold.

use std::path::Path;
use std::sync::Arc;

use nexus_kernel::{Capabilities, Kernel};

use super::agents::{fail, stock};
use crate::agent::host::{Host, RunLimits, Stdio};
use crate::bench::{row, row_lower_better, Row};
use crate::ops::OpResult;

const APPENDS: f64 = 5000.0;
const PAGES: f64 = 2000.0;
const SEQUENTIAL_MB: f64 = 32.0 * 1048576.0 / 1e6;

/// (appends/s, pages/s, sequential MB/s) from `append_ns random_ns sequential_ns`.
fn rates(results: &str) -> OpResult<[f64; 3]> {
    let ns: Vec<f64> = results
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match ns.as_slice() {
        [a, r, s] => Ok([
            APPENDS / (a / 1e9),
            PAGES / (r / 1e9),
            SEQUENTIAL_MB / (s / 1e9),
        ]),
        _ => Err(fail(format!("bad results {results:?}"))),
    }
}

/// Bytes of the files under `dir`, recursively.
fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => disk_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

pub async fn writes(k: &Arc<Kernel>, guest: &Path, scratch: &Path) -> OpResult<Vec<Row>> {
    let (zone, owner, bench) = crate::bench::agent_zone(k, "writes").await?;
    let host = Host::new(&scratch.join("components"), false, 64 << 20)?;
    let pre = host.prepare(&host.load(guest)?)?;
    k.mkdir(&owner, "/w").await?;
    let store = Path::new(&k.content().location).to_owned();
    k.collect_garbage().await?;
    let before = disk_bytes(&store);
    let args = ["bench", "writes", "/w"].map(str::to_owned);
    let task = k.spawn_task(bench, &zone, Capabilities::ALL)?;
    let code = host
        .run(
            &pre,
            k.clone(),
            task,
            &args,
            &[],
            &RunLimits::default(),
            Stdio::Inherit,
        )
        .await?;
    if code != 0 {
        return Err(fail(format!("the writes guest exited {code}")));
    }
    let h = k.resolve(&owner, "/w/writes.txt", true)?;
    let nexus = rates(&String::from_utf8_lossy(
        &k.read(&owner, &h, 0, 1024).await?,
    ))?;
    k.collect_garbage().await?;
    let grown = disk_bytes(&store).saturating_sub(before);

    let dir = scratch.join("stock-writes");
    std::fs::create_dir_all(dir.join("w")).map_err(fail)?;
    let stock = if stock::run(guest, &dir, &["bench", "writes", "/w"])? {
        Some(rates(
            &std::fs::read_to_string(dir.join("w/writes.txt")).map_err(fail)?,
        )?)
    } else {
        None
    };
    let live = disk_bytes(&dir.join("w")).max(1);
    let base = |i: usize| stock.map_or(f64::NAN, |s| s[i]);
    let mut rows = vec![
        row(
            "guest 62-byte appends, 5,000 + fsync (vs stock)",
            nexus[0],
            base(0),
            "appends/s",
        ),
        row(
            "guest random 4 KiB writes into 8 MiB + fsync (vs stock)",
            nexus[1],
            base(1),
            "writes/s",
        ),
        row(
            "guest 1 MiB sequential writes, 32 MiB + fsync (vs stock)",
            nexus[2],
            base(2),
            "MB/s",
        ),
    ];
    rows.push(row_lower_better(
        "content store growth for the files written (vs their bytes)",
        grown as f64 / 1e6,
        if stock.is_some() {
            live as f64 / 1e6
        } else {
            f64::NAN
        },
        "MB",
    ));
    Ok(rows)
}
