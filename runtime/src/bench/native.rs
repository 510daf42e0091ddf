//! Native agents: the same Python program in the same hardened container,
//! once with its zone at /mnt/nexus (FUSE, served by the kernel) and once
//! with a plain host directory bind-mounted there (the baseline); and the
//! time from asking for a run to the agent's first line, both ways.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::{Capabilities, Kernel};
use tokio::sync::mpsc;

use super::{agent_zone, row, row_lower_better, Row};
use crate::agent::budget::{NodeMemory, NODE_HOST_MEMORY};
use crate::native::container::{self, Container};
use crate::native::{self, Isolation, NativeLimits, NativeSpec};
use crate::ops::{OpError, OpResult, Output};

/// The workload, run inside the container; prints its rates as JSON.
const WORKLOAD: &str = r#"
import json, os, sys, time
n, m = int(sys.argv[1]), int(sys.argv[2])
os.makedirs("b", exist_ok=True)
small, big = os.urandom(4096), os.urandom(1 << 20)
def rate(count, f):
    t = time.perf_counter(); f(); return count / (time.perf_counter() - t)
def creates():
    for i in range(n):
        with open(f"b/f{i}", "wb") as f: f.write(small)
def stats():
    for _ in range(4):
        for i in range(n): os.stat(f"b/f{i}")
def reads():
    for i in range(n):
        with open(f"b/f{i}", "rb") as f: f.read()
def big_writes():
    for i in range(m):
        with open(f"b/big{i}", "wb") as f: f.write(big)
def big_reads():
    for i in range(m):
        with open(f"b/big{i}", "rb") as f: f.read()
print(json.dumps({
    "create + 4 KiB write": rate(n, creates),
    "stat": rate(4 * n, stats),
    "4 KiB read": rate(n, reads),
    "1 MiB write": rate(m, big_writes),
    "1 MiB read": rate(m, big_reads),
}))
"#;

/// How a run is made: through Nexus, or the baseline's plain bind mount.
#[derive(Clone, Copy)]
enum Way {
    Nexus,
    Plain,
}

/// Runs `command` one way; its stdout and the time to its first byte.
async fn once(
    kernel: &Arc<Kernel>,
    task: &nexus_kernel::Task,
    image: &str,
    plain_dir: &Path,
    way: Way,
    command: Vec<String>,
) -> OpResult<(String, Duration)> {
    let (tx, mut rx) = mpsc::channel(64);
    let started = Instant::now();
    let collect = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut first = None;
        while let Some(chunk) = rx.recv().await {
            if let Output::Stdout(b) = chunk {
                first.get_or_insert_with(|| started.elapsed());
                out.extend(b);
            }
        }
        (out, first)
    });
    let code = match way {
        Way::Nexus => {
            let spec = NativeSpec {
                isolation: Isolation::Container {
                    image: image.to_owned(),
                    cpus: None,
                },
                command,
            };
            let limits = NativeLimits {
                timeout: None,
                memory: native::DEFAULT_MEMORY,
                node_memory: NodeMemory::new(NODE_HOST_MEMORY),
            };
            let io = native::NativeIo {
                output: Some(&tx),
                stdin: None,
            };
            native::run(kernel, task.clone(), &spec, &[], limits, io).await?
        }
        Way::Plain => {
            let docker = container::engine().await?;
            let c = Container {
                run_id: &format!("bench-{:08x}", rand::random::<u32>()),
                home: plain_dir,
                image,
                command: &command,
                env: &[],
                memory: native::DEFAULT_MEMORY,
                cpus: None,
                zone_dir: plain_dir,
            };
            match container::run(&docker, c, None, Some(&tx), None).await? {
                native::Outcome::Exited(code) => Some(code),
                _ => None,
            }
        }
    };
    drop(tx);
    let (out, first) = collect
        .await
        .map_err(|e| OpError::Failed(format!("bench output: {e}")))?;
    let out = String::from_utf8_lossy(&out).into_owned();
    if code != Some(0) {
        return Err(OpError::Failed(format!(
            "native bench run ended with {code:?}: {out}"
        )));
    }
    Ok((out, first.unwrap_or_else(|| started.elapsed())))
}

pub(crate) async fn native(
    kernel: &Arc<Kernel>,
    image: &str,
    dir: &Path,
    scale: usize,
) -> OpResult<Vec<Row>> {
    let (zone, _, agent) = agent_zone(kernel, "native").await?;
    let task = kernel.spawn_task(agent, &zone, Capabilities::ALL)?;
    let plain = dir.join("native-plain");
    std::fs::create_dir_all(&plain).map_err(|e| OpError::local(plain.display().to_string(), e))?;
    // The container's user (nobody) writes there, as in the zone.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| OpError::local(plain.display().to_string(), e))?;

    let (n, m) = (2000 / scale, 64 / scale.min(8));
    let workload = |n: usize, m: usize| -> Vec<String> {
        ["python3", "-c", WORKLOAD]
            .iter()
            .map(|s| s.to_string())
            .chain([n.to_string(), m.to_string()])
            .collect()
    };
    let mut rates = Vec::new();
    for way in [Way::Nexus, Way::Plain] {
        let (out, _) = once(kernel, &task, image, &plain, way, workload(n, m)).await?;
        let parsed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(out.trim())
                .map_err(|e| OpError::Failed(format!("native bench output {out:?}: {e}")))?;
        rates.push(parsed);
    }
    let mut rows = Vec::new();
    for (name, nexus) in &rates[0] {
        let baseline = rates[1]
            .get(name)
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN);
        rows.push(row(
            &format!("native {name} (/mnt/nexus vs bind mount)"),
            nexus.as_f64().unwrap_or(f64::NAN),
            baseline,
            "ops/s",
        ));
    }
    // Start to first line: the median of a few runs each way.
    let hello = || -> Vec<String> { vec!["python3".into(), "-c".into(), "print('ready')".into()] };
    let mut starts = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (i, way) in [Way::Nexus, Way::Plain].into_iter().enumerate() {
            let (_, first) = once(kernel, &task, image, &plain, way, hello()).await?;
            starts[i].push(first);
        }
    }
    for s in &mut starts {
        s.sort();
    }
    let median = |s: &[Duration]| s[s.len() / 2].as_secs_f64() * 1e3;
    rows.push(row_lower_better(
        "native start to first line (nexus run --image vs docker run)",
        median(&starts[0]),
        median(&starts[1]),
        "ms",
    ));
    Ok(rows)
}
