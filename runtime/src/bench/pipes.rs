//! Pipe and timer benchmarks, each with a native baseline in the same run:
//! throughput between two agents through a pipe (vs `dd | dd` over a Linux
//! pipe), a one-byte ping-pong (vs two threads over Linux pipes), and many
//! agents sleeping on timers (vs as many tokio tasks).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nexus_kernel::Kernel;
use nexus_kernel::ZoneId;
use nexus_kernel::{Capabilities, Principal, Task};
use nexus_kernel::{PipeMode, PipeRead};

use crate::agent::host::Stdio as AgentStdio;
use crate::agent::host::{Host, RunLimits};
use crate::bench::{agent_zone, percentile, row, row_lower_better, Row};
use crate::ops::{OpError, OpResult};

fn fail(e: impl std::fmt::Display) -> OpError {
    OpError::Failed(format!("pipe benchmark: {e}"))
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

struct Bench {
    k: Arc<Kernel>,
    owner: Task,
    agent: Principal,
    zone: ZoneId,
}

impl Bench {
    fn task(&self) -> OpResult<Task> {
        Ok(self
            .k
            .spawn_task(self.agent.clone(), &self.zone, Capabilities::ALL)?)
    }

    /// Runs agents at the same time on `host`; fails if any fails.
    async fn together(&self, host: &Arc<Host>, guest: &Path, runs: Vec<Vec<String>>) -> OpResult {
        let pre = host.prepare(&host.load(guest)?)?;
        let jobs: Vec<_> = runs
            .into_iter()
            .map(|argv| {
                let (host, pre, k, task) = (host.clone(), pre.clone(), self.k.clone(), self.task());
                tokio::spawn(async move {
                    host.run(
                        &pre,
                        k,
                        task?,
                        &argv,
                        &[],
                        &RunLimits::default(),
                        AgentStdio::Inherit,
                    )
                    .await
                    .map_err(OpError::from)
                })
            })
            .collect();
        for j in jobs {
            match j.await.map_err(fail)?? {
                0 => {}
                code => return Err(fail(format!("an agent exited with {code}"))),
            }
        }
        Ok(())
    }
}

pub async fn pipes(
    k: &Arc<Kernel>,
    guest: &Path,
    scratch: &Path,
    scale: usize,
) -> OpResult<Vec<Row>> {
    let (zone, owner, agent) = agent_zone(k, "pipes").await?;
    let b = Bench {
        k: k.clone(),
        owner,
        agent,
        zone,
    };
    let host = Arc::new(Host::new(&scratch.join("components"), false, 64 << 20)?);
    tracing::info!("bench: pipe throughput");
    let mut rows = vec![throughput(&b, &host, guest, (1 << 30) / scale as u64).await?];
    tracing::info!("bench: ping-pong");
    rows.extend(ping_pong(&b, &host, guest, 20_000 / scale).await?);
    tracing::info!("bench: sleepers");
    rows.extend(sleepers(&b, guest, scratch, 10_000 / scale).await?);
    Ok(rows)
}

/// Two agents stream `bytes` through a pipe in 64 KiB writes.
async fn throughput(b: &Bench, host: &Arc<Host>, guest: &Path, bytes: u64) -> OpResult<Row> {
    b.k.mkpipe(&b.owner, "/stream", 1 << 20).await?;
    let g = guest.display().to_string();
    let t = Instant::now();
    b.together(
        host,
        guest,
        vec![
            strings(&[&g, "pipe-recv", "/stream"]),
            strings(&[&g, "pipe-send", "/stream", &bytes.to_string()]),
        ],
    )
    .await?;
    let nexus = bytes as f64 / t.elapsed().as_secs_f64();
    let through = b.k.pipe_stat(&b.owner, "/stream")?;
    if (through.bytes_in, through.bytes_out) != (bytes, bytes) {
        return Err(fail(format!(
            "{} bytes in and {} out of the pipe, expected {bytes}",
            through.bytes_in, through.bytes_out
        )));
    }
    // Baseline: two native processes over a Linux pipe, as `dd | dd`.
    let count = (bytes / (64 << 10)).to_string();
    let t = Instant::now();
    let mut src = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", &format!("count={count}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(fail)?;
    let pipe = src.stdout.take().ok_or_else(|| fail("dd has no stdout"))?;
    let sink = Command::new("dd")
        .args(["of=/dev/null", "bs=64k"])
        .stdin(pipe)
        .stderr(Stdio::null())
        .status()
        .map_err(fail)?;
    src.wait().map_err(fail)?;
    if !sink.success() {
        return Err(fail("dd failed"));
    }
    let linux = bytes as f64 / t.elapsed().as_secs_f64();
    Ok(row(
        "pipe throughput, 2 agents, 64 KiB writes (vs dd|dd)",
        nexus / (1 << 20) as f64,
        linux / (1 << 20) as f64,
        "MiB/s",
    ))
}

/// One-byte round trips between two agents over two pipes.
async fn ping_pong(b: &Bench, host: &Arc<Host>, guest: &Path, n: usize) -> OpResult<Vec<Row>> {
    b.k.mkpipe(&b.owner, "/ping", 4096).await?;
    b.k.mkpipe(&b.owner, "/pong", 4096).await?;
    let g = guest.display().to_string();
    b.together(
        host,
        guest,
        vec![
            strings(&[&g, "pong", "/ping", "/pong"]),
            strings(&[&g, "ping", "/ping", "/pong", &n.to_string(), "/rtt.txt"]),
        ],
    )
    .await?;
    let h = b.k.resolve(&b.owner, "/rtt.txt", true)?;
    let text = String::from_utf8_lossy(&b.k.read(&b.owner, &h, 0, 100).await?).into_owned();
    let ns: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [p50, p99] = ns[..] else {
        return Err(fail(format!("bad ping results {text:?}")));
    };
    let native = native_ping_pong(n)?;
    let mut r = row(
        "ping-pong 1 byte, 2 agents, 2 pipes (vs 2 threads, Linux pipes)",
        p50 / 1e3,
        percentile(&native, 0.5),
        "µs p50 round trip",
    );
    r.p50_us = Some(p50 / 1e3);
    r.p99_us = Some(p99 / 1e3);
    let mut base = row(
        "  baseline: 2 threads over Linux pipes",
        percentile(&native, 0.5),
        f64::NAN,
        "µs p50 round trip",
    );
    base.ratio = f64::NAN;
    base.p50_us = Some(percentile(&native, 0.5));
    base.p99_us = Some(percentile(&native, 0.99));
    Ok(vec![r, base])
}

fn native_ping_pong(n: usize) -> OpResult<Vec<Duration>> {
    let (mut ping_r, mut ping_w) = std::io::pipe().map_err(fail)?;
    let (mut pong_r, mut pong_w) = std::io::pipe().map_err(fail)?;
    let echo = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while ping_r.read_exact(&mut b).is_ok() {
            if pong_w.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut lat = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for i in 0..n {
        let t = Instant::now();
        ping_w.write_all(&[i as u8]).map_err(fail)?;
        pong_r.read_exact(&mut b).map_err(fail)?;
        lat.push(t.elapsed());
    }
    drop(ping_w);
    let _ = echo.join();
    lat.sort();
    Ok(lat)
}

/// `n` agents asleep on timers, due `spread` apart (zero: all at one
/// instant); how late each woke, and the memory they took while asleep.
/// Baseline: `n` tokio tasks doing the same.
async fn sleepers(b: &Bench, guest: &Path, scratch: &Path, n: usize) -> OpResult<Vec<Row>> {
    let host = Arc::new(Host::with_capacity(
        &scratch.join("components"),
        false,
        64 << 20,
        n as u32,
    )?);
    let mut rows = Vec::new();
    for (name, spread) in [
        ("due over 1 s", Duration::from_secs(1) / n as u32),
        ("all due at once", Duration::ZERO),
    ] {
        let (late, per_agent) = agents_asleep(b, &host, guest, n, spread).await?;
        let (native_late, native_mem) = tasks_asleep(n, spread).await;
        if rows.is_empty() {
            rows.push(row_lower_better(
                &format!("{n} agents asleep on timers: memory per agent (vs tokio task)"),
                per_agent,
                native_mem,
                "bytes resident",
            ));
        }
        let p99 = percentile(&late, 0.99);
        let native_p99 = percentile(&native_late, 0.99);
        let mut wake = row_lower_better(
            &format!("{n} agents asleep, {name}: wake-up lateness (vs tokio)"),
            p99,
            native_p99,
            "µs late, p99",
        );
        wake.p50_us = Some(percentile(&late, 0.5));
        wake.p99_us = Some(p99);
        rows.push(wake);
    }
    Ok(rows)
}

/// Runs the sleepers; returns their lateness and the resident memory per
/// agent while all were asleep.
async fn agents_asleep(
    b: &Bench,
    host: &Arc<Host>,
    guest: &Path,
    n: usize,
    spread: Duration,
) -> OpResult<(Vec<Duration>, f64)> {
    let pre = host.prepare(&host.load(guest)?)?;
    let pipe = format!("/late-{}", spread.as_nanos());
    b.k.mkpipe(&b.owner, &pipe, (n as u64 * 8).max(4096))
        .await?;
    let reports = b.k.pipe_open(&b.owner, &pipe, PipeMode::Read).await?;
    let before = rss();
    let timers_before = b.k.timers().pending();
    // Far enough ahead for every agent to be asleep first.
    let first = unix_ns() + 2_000_000_000 + n as u64 * 300_000;
    let g = guest.display().to_string();
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        let at = first + i as u64 * spread.as_nanos() as u64;
        let argv = strings(&[&g, "sleep-until", &at.to_string(), &pipe]);
        let (host, pre, k, task) = (host.clone(), pre.clone(), b.k.clone(), b.task()?);
        jobs.push(tokio::spawn(async move {
            host.run(
                &pre,
                k,
                task,
                &argv,
                &[],
                &RunLimits::default(),
                AgentStdio::Inherit,
            )
            .await
        }));
    }
    while b.k.timers().pending() < timers_before + n && unix_ns() < first {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asleep = b.k.timers().pending() - timers_before;
    let per_agent = rss().saturating_sub(before) as f64 / n as f64;
    for j in jobs {
        j.await.map_err(fail)??;
    }
    let mut buf = Vec::new();
    while let PipeRead::Data(d) = b.k.pipe_try_read(&b.owner, &reports, 1 << 20)? {
        if d.is_empty() {
            break;
        }
        buf.extend(d);
    }
    let mut late: Vec<Duration> = buf
        .chunks_exact(8)
        .map(|rec| Duration::from_nanos(u64::from_le_bytes(rec.try_into().unwrap_or_default())))
        .collect();
    if late.len() != n || asleep != n {
        return Err(fail(format!(
            "{} of {n} sleepers reported, {asleep} were asleep at once",
            late.len()
        )));
    }
    late.sort();
    Ok((late, per_agent))
}

async fn tasks_asleep(n: usize, spread: Duration) -> (Vec<Duration>, f64) {
    let before = rss();
    let first = unix_ns() + 1_000_000_000;
    let base = tokio::time::Instant::now() + Duration::from_nanos(first - unix_ns());
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            let offset = spread * i as u32;
            let at = first + offset.as_nanos() as u64;
            tokio::spawn(async move {
                tokio::time::sleep_until(base + offset).await;
                Duration::from_nanos(unix_ns().saturating_sub(at))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let per_task = rss().saturating_sub(before) as f64 / n as f64;
    let mut late = Vec::with_capacity(n);
    for j in jobs {
        late.push(j.await.unwrap_or_default());
    }
    late.sort();
    (late, per_task)
}
