//! The transfer rows of `nexus bench`: `fs put` and `fs get` through a node
//! (a `nexus node` process on loopback, driven by `nexus --node` client
//! processes, exactly as a user runs them) against the same commands on the
//! embedded default in the same run; and the peak resident memory of the
//! node and of the client while a large sparse file goes through, against
//! the embedded command's.
//!
//! Peak RSS is the kernel's `VmHWM`: the node's is reset before each
//! transfer (`clear_refs`) and read after it; a client's is sampled while
//! it runs (it only grows, so the last sample is at most one interval
//! short of the peak).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{row, row_lower_better, Row};
use crate::ops::{OpError, OpResult};

/// How often a client's peak RSS is sampled.
const SAMPLE: Duration = Duration::from_millis(10);

fn io(what: &str) -> impl Fn(std::io::Error) -> OpError + '_ {
    move |e| OpError::local(what, e)
}

fn nexus() -> OpResult<PathBuf> {
    std::env::current_exe().map_err(io("the nexus binary"))
}

/// `nexus --home HOME ARGS`, its stdout; a failure is the bench's.
fn ok(home: &Path, args: &[&str]) -> OpResult<String> {
    let out = Command::new(nexus()?)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .map_err(io("nexus"))?;
    if !out.status.success() {
        return Err(OpError::Failed(format!(
            "nexus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A process's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Starts the peak of `pid` afresh.
fn reset_peak(pid: u32) -> OpResult {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(io("clear_refs"))
}

/// Runs `nexus --home HOME ARGS` to its end: how long it took and its
/// peak RSS.
fn measured(home: &Path, args: &[&str]) -> OpResult<(Duration, u64)> {
    let started = Instant::now();
    let mut child = Command::new(nexus()?)
        .arg("--home")
        .arg(home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("nexus"))?;
    let mut peak = 0;
    let status = loop {
        if let Some(p) = peak_rss(child.id()) {
            peak = peak.max(p);
        }
        match child.try_wait().map_err(io("nexus"))? {
            Some(status) => break status,
            None => std::thread::sleep(SAMPLE),
        }
    };
    let took = started.elapsed();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(OpError::Failed(format!("nexus {args:?}: {err}")));
    }
    Ok((took, peak))
}

/// A node process serving `home`, stopped on drop.
struct NodeProcess(Child);

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `len` bytes no two MiB of which are alike (so nothing deduplicates).
fn write_data(path: &Path, len: u64) -> OpResult {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io("data"))?);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut left = len;
    let mut block = vec![0u8; 1 << 20];
    while left > 0 {
        for b in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).map_err(io("data"))?;
        left -= n as u64;
    }
    f.flush().map_err(io("data"))
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub(crate) async fn transfer(dir: &Path, scale: usize) -> OpResult<Vec<Row>> {
    // Off the async threads: this drives processes and waits on them.
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || transfer_blocking(&dir, scale))
        .await
        .map_err(|e| OpError::Failed(format!("transfer bench: {e}")))?
}

fn transfer_blocking(dir: &Path, scale: usize) -> OpResult<Vec<Row>> {
    let node_home = dir.join("transfer-node");
    let embedded = dir.join("transfer-embedded");
    let token = ok(
        &node_home,
        &["token", "issue", "--zone", "t", "--ttl", "1h"],
    )?;
    let token = token.trim().to_owned();
    ok(&embedded, &["zone", "create", "t"])?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io("a free port"))?
        .to_string();
    let node = NodeProcess(
        Command::new(nexus()?)
            .arg("--home")
            .arg(&node_home)
            .args(["node", "start", "--id", "1", "--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("nexus node"))?,
    );
    let client = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--node".into(), addr.clone(), "--token".into()];
        v.push(token.clone());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    // The node may still be starting.
    let create = client(&["zone", "create", "t"]);
    let create: Vec<&str> = create.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = ok(&node_home, &create) {
        if Instant::now() > deadline {
            return Err(OpError::Failed(format!("the bench node: {e}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut rows = Vec::new();
    // Throughput: unique bytes, stored and read back.
    let data_len = (1u64 << 30) / scale as u64;
    let data = dir.join("transfer.bin");
    write_data(&data, data_len)?;
    let data_s = data.to_string_lossy().into_owned();
    let label = format!("{} MiB", data_len >> 20);
    let put = client(&["fs", "put", "--zone", "t", &data_s, "/data"]);
    let put: Vec<&str> = put.iter().map(String::as_str).collect();
    let (through, _) = measured(&node_home, &put)?;
    let (local, _) = measured(&embedded, &["fs", "put", "--zone", "t", &data_s, "/data"])?;
    rows.push(row(
        &format!("fs put {label} through a node (vs embedded)"),
        mb_per_s(data_len, through),
        mb_per_s(data_len, local),
        "MB/s",
    ));
    let get = client(&["fs", "get", "--zone", "t", "/data", "/dev/null"]);
    let get: Vec<&str> = get.iter().map(String::as_str).collect();
    let (through, _) = measured(&node_home, &get)?;
    let (local, _) = measured(
        &embedded,
        &["fs", "get", "--zone", "t", "/data", "/dev/null"],
    )?;
    rows.push(row(
        &format!("fs get {label} through a node (vs embedded)"),
        mb_per_s(data_len, through),
        mb_per_s(data_len, local),
        "MB/s",
    ));
    std::fs::remove_file(&data).map_err(io("data"))?;

    // Memory: a sparse file (its chunks are alike, so the store keeps one;
    // what is measured is the pipeline, not the disk).
    let sparse_len = (10u64 << 30) / scale as u64;
    let sparse = dir.join("sparse.bin");
    std::fs::File::create(&sparse)
        .and_then(|f| f.set_len(sparse_len))
        .map_err(io("sparse file"))?;
    let sparse_s = sparse.to_string_lossy().into_owned();
    let label = format!("{} GiB sparse", sparse_len >> 30);
    let pid = node.0.id();
    for (what, node_args, local_args) in [
        (
            "put",
            client(&["fs", "put", "--zone", "t", &sparse_s, "/sparse"]),
            vec!["fs", "put", "--zone", "t", &sparse_s, "/sparse"],
        ),
        (
            "get",
            client(&["fs", "get", "--zone", "t", "/sparse", "/dev/null"]),
            vec!["fs", "get", "--zone", "t", "/sparse", "/dev/null"],
        ),
    ] {
        let node_args: Vec<&str> = node_args.iter().map(String::as_str).collect();
        reset_peak(pid)?;
        let (through, client_peak) = measured(&node_home, &node_args)?;
        let node_peak = peak_rss(pid).unwrap_or(0);
        let (local, local_peak) = measured(&embedded, &local_args)?;
        rows.push(row(
            &format!("fs {what} {label} through a node (vs embedded)"),
            mb_per_s(sparse_len, through),
            mb_per_s(sparse_len, local),
            "MB/s",
        ));
        rows.push(row_lower_better(
            &format!("fs {what} {label}: client peak RSS (vs embedded)"),
            mib(client_peak),
            mib(local_peak),
            "MiB",
        ));
        rows.push(row_lower_better(
            &format!("fs {what} {label}: node peak RSS (vs embedded)"),
            mib(node_peak),
            mib(local_peak),
            "MiB",
        ));
    }
    std::fs::remove_file(&sparse).map_err(io("sparse file"))?;
    drop(node);
    Ok(rows)
}
