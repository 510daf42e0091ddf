//! A node whose cores agents saturate: `zone status` through its client
//! API, and the Raft heartbeat round to it (a linearizable read on the
//! leader, which the busy follower must answer), with [`SPINNERS`] agents
//! spinning in tight loops on it (started by a client of the node, as
//! `nexus run --node` does), against the same with no agent, in the same
//! run. The nodes live in this process (`node::local`), so the agents
//! share a process with both of them: the split measured, the agents'
//! threads against the node's own, is the one `nexus node start` has.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::Capabilities;
use nexus_kernel::ObjectStoreConfig;
use nexus_kernel::ZoneId;

use crate::bench::cluster::zone_on;
use crate::bench::{percentile, row_lower_better, Row};
use crate::node::{local, tls, NODE_TICK};
use crate::ops::remote::Remote;
use crate::ops::{AgentSpec, OpError, OpResult, Ops, Output, RunIo, RunSpec};

/// Spinning agents on the busy node.
pub const SPINNERS: usize = 4;

fn fail(e: impl std::fmt::Display) -> OpError {
    OpError::Failed(format!("busy-node benchmark: {e}"))
}

/// Latencies of `n` rounds of `op`, sorted.
async fn latencies<F, Fut>(n: usize, mut op: F) -> OpResult<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = OpResult<()>>,
{
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        op().await?;
        lat.push(t.elapsed());
        // Paced, as a monitor or a peer would call.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lat.sort();
    Ok(lat)
}

fn mean_ms(lat: &[Duration]) -> f64 {
    lat.iter().sum::<Duration>().as_secs_f64() * 1e3 / lat.len() as f64
}

fn compared(name: &str, busy: &[Duration], idle: &[Duration]) -> Row {
    let mut r = row_lower_better(name, mean_ms(busy), mean_ms(idle), "ms");
    r.p50_us = Some(percentile(busy, 0.5));
    r.p99_us = Some(percentile(busy, 0.99));
    r
}

pub async fn busy(guest: &Path, scratch: &Path, scale: usize) -> OpResult<Vec<Row>> {
    let dir = scratch.join("busy");
    let mut nodes = local::start(&dir, 2, |cfg| {
        cfg.driver.tick = NODE_TICK;
        cfg.object_store = ObjectStoreConfig::Shared(dir.join("content"));
    })
    .await?;
    let zone = ZoneId::new("busy")?;
    let me = crate::session::operator();
    let (_, leader) = zone_on(&nodes, &zone, 2).await?;
    let (li, fi) = if leader == 1 { (0, 1) } else { (1, 0) };
    let (lk, busy) = (nodes[li].kernel.clone(), &nodes[fi]);
    let lt = lk.spawn_task(me.clone(), &zone, Capabilities::ALL)?;
    let (token, _) = busy.kernel.tokens().issue(
        me.clone(),
        zone.clone(),
        Vec::new(),
        Capabilities::ALL,
        3600,
    )?;
    let client = tls::client_config(&local::ca_cert(&dir))?;
    let addr = busy.addr.to_string();
    let api = Remote::connect(&addr, &token, client.clone()).await?;

    let n = 500 / scale;
    let status = || async { api.zone_status(zone.as_str()).await.map(|_| ()) };
    let heartbeat = || async { Ok(lk.linearize(&lt).await?) };
    let idle_status = latencies(n, status).await?;
    let idle_heartbeat = latencies(n, heartbeat).await?;

    // The spinners, through the busy node's client API.
    let code = std::fs::read(guest).map_err(|e| OpError::local(guest.display().to_string(), e))?;
    let agents = (0..SPINNERS)
        .map(|_| AgentSpec {
            name: "bench.wasm".into(),
            code: code.clone(),
            args: vec!["spin".into()],
        })
        .collect();
    let spec = RunSpec {
        zone: zone.to_string(),
        agents,
        native: None,
        env: Vec::new(),
        timeout: None,
        memory: None,
        fuel: None,
    };
    let runner = Arc::new(Remote::connect(&addr, &token, client).await?);
    let (output, mut said) = tokio::sync::mpsc::channel(64);
    let run = tokio::spawn(async move {
        let io = RunIo::Stream {
            output,
            stdin: None,
        };
        runner.run(spec, io).await
    });
    let mut spinning = 0;
    while spinning < SPINNERS {
        match said.recv().await {
            Some(Output::Stdout(b)) => spinning += b.split(|c| *c == b'\n').count() - 1,
            Some(Output::Stderr(b)) => return Err(fail(String::from_utf8_lossy(&b))),
            None => return Err(fail(format!("the spinners ended: {:?}", run.await))),
        }
    }
    let busy_status = latencies(n, status).await?;
    let busy_heartbeat = latencies(n, heartbeat).await?;
    // The client goes: the node stops its agents.
    run.abort();
    drop(said);

    let rows = vec![
        compared(
            &format!("{SPINNERS} spinning agents: zone status via the node (vs idle)"),
            &busy_status,
            &idle_status,
        ),
        compared(
            &format!("{SPINNERS} spinning agents: heartbeat round to the node (vs idle)"),
            &busy_heartbeat,
            &idle_heartbeat,
        ),
    ];
    for n in nodes.iter_mut() {
        n.kill().await?;
    }
    Ok(rows)
}
