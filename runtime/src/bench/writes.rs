//! The write path: the bench guest's `writes` case (appends, random 4 KiB
//! pages, 1 MiB sequential writes, each ended by an fsync) on the kernel
//! and on stock wasmtime-wasi with a host directory, and how much the
//! content store grew for the bytes the files hold; and the SQLite
//! workload of `guests/sqlite` (Python's sqlite3, built with
//! componentize-py) the same two ways.

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

/// A guest run on the kernel and on stock, the same way.
struct Case<'a> {
    guest: &'a Path,
    /// A wasip1 core module: the kernel wraps it with the preview1
    /// adapter, stock runs it on its own preview1 implementation.
    p1: bool,
    /// Zone name and scratch directory name.
    name: &'a str,
    /// The guest's arguments; it writes its results under `dir`.
    argv: &'a [&'a str],
    dir: &'a str,
    results: &'a str,
}

/// What a case gave: its results on the kernel, on stock (if this build
/// has the baseline), the content store's growth on the kernel (after a
/// collector round) and the bytes stock's directory holds.
struct Ran {
    nexus: String,
    stock: Option<String>,
    grown: u64,
    live: u64,
}

async fn run_both(k: &Arc<Kernel>, scratch: &Path, c: &Case<'_>) -> OpResult<Ran> {
    let (zone, owner, bench) = crate::bench::agent_zone(k, c.name).await?;
    let host = Host::new(&scratch.join("components"), false, 256 << 20)?;
    let pre = host.prepare(&host.load(c.guest)?)?;
    k.mkdir(&owner, c.dir).await?;
    let store = Path::new(&k.content().location).to_owned();
    k.collect_garbage().await?;
    let before = disk_bytes(&store);
    let args: Vec<String> = c.argv.iter().map(|a| (*a).to_owned()).collect();
    let task = k.spawn_task(bench, &zone, Capabilities::ALL)?;
    let limits = RunLimits::default();
    let code = host
        .run(&pre, k.clone(), task, &args, &[], &limits, Stdio::Inherit)
        .await?;
    if code != 0 {
        return Err(fail(format!("the {} guest exited {code}", c.name)));
    }
    let results = format!("{}/{}", c.dir, c.results);
    let h = k.resolve(&owner, &results, true)?;
    let nexus = String::from_utf8_lossy(&k.read(&owner, &h, 0, 1024).await?).into_owned();
    k.collect_garbage().await?;
    let grown = disk_bytes(&store).saturating_sub(before);

    let root = scratch.join(format!("stock-{}", c.name));
    let dir = root.join(c.dir.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let ran = if c.p1 {
        stock::run_p1(c.guest, &root, c.argv)?
    } else {
        stock::run(c.guest, &root, c.argv)?
    };
    let stock = if ran {
        Some(std::fs::read_to_string(dir.join(c.results)).map_err(fail)?)
    } else {
        None
    };
    Ok(Ran {
        nexus,
        stock,
        grown,
        live: disk_bytes(&dir),
    })
}

/// The `writes` case; rows labelled with `label`.
async fn case(
    k: &Arc<Kernel>,
    guest: &Path,
    p1: bool,
    scratch: &Path,
    label: &str,
) -> OpResult<(Vec<Row>, u64, u64)> {
    let case = Case {
        guest,
        p1,
        name: if p1 { "writes-p1" } else { "writes" },
        argv: &["bench", "writes", "/w"],
        dir: "/w",
        results: "writes.txt",
    };
    let ran = run_both(k, scratch, &case).await?;
    let nexus = rates(&ran.nexus)?;
    let stock = ran.stock.as_deref().map(rates).transpose()?;
    let base = |i: usize| stock.map_or(f64::NAN, |s| s[i]);
    let rows = vec![
        row(
            &format!("{label} 62-byte appends, 5,000 + fsync"),
            nexus[0],
            base(0),
            "appends/s",
        ),
        row(
            &format!("{label} random 4 KiB writes into 8 MiB + fsync"),
            nexus[1],
            base(1),
            "writes/s",
        ),
        row(
            &format!("{label} 1 MiB writes, 32 MiB + fsync"),
            nexus[2],
            base(2),
            "MB/s",
        ),
    ];
    Ok((rows, ran.grown, ran.live))
}

pub async fn writes(
    k: &Arc<Kernel>,
    guest: &Path,
    guest_p1: Option<&Path>,
    scratch: &Path,
) -> OpResult<Vec<Row>> {
    let (mut rows, grown, live) = case(k, guest, false, scratch, "guest").await?;
    rows.push(row_lower_better(
        "content store growth for the files written (vs their bytes on disk)",
        grown as f64 / 1e6,
        if live > 0 {
            live as f64 / 1e6
        } else {
            f64::NAN
        },
        "MB",
    ));
    if let Some(p1) = guest_p1 {
        rows.extend(case(k, p1, true, scratch, "guest (wasip1)").await?.0);
    }
    Ok(rows)
}

/// The SQLite workload: (total ns, autocommit ns, database bytes).
fn sqlite_results(results: &str) -> OpResult<[f64; 3]> {
    let v: Vec<f64> = results
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match v.as_slice() {
        [t, a, b] => Ok([*t, *a, *b]),
        _ => Err(fail(format!("bad sqlite results {results:?}"))),
    }
}

pub async fn sqlite(k: &Arc<Kernel>, guest: &Path, scratch: &Path) -> OpResult<Vec<Row>> {
    let case = Case {
        guest,
        p1: false,
        name: "sqlite",
        argv: &["sqlite", "/s"],
        dir: "/s",
        results: "sqlite.txt",
    };
    let ran = run_both(k, scratch, &case).await?;
    let nexus = sqlite_results(&ran.nexus)?;
    let stock = ran.stock.as_deref().map(sqlite_results).transpose()?;
    let base = |i: usize| stock.map_or(f64::NAN, |s| s[i]);
    Ok(vec![
        row_lower_better(
            "Python sqlite3 workload (componentize-py), wall time",
            nexus[0] / 1e6,
            base(0) / 1e6,
            "ms",
        ),
        row_lower_better(
            "  of which 200 autocommit inserts, each",
            nexus[1] / 200.0 / 1e6,
            base(1) / 200.0 / 1e6,
            "ms",
        ),
        row_lower_better(
            "  content store growth (vs the database's size)",
            ran.grown as f64 / 1e6,
            nexus[2] / 1e6,
            "MB",
        ),
    ])
}
