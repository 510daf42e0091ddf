//! `nexus stress`: concurrent durable writes, each acknowledged on stdout
//! only after its commit returned. A crash test kills the process mid-storm
//! and checks that every acknowledged file is intact after restart.

use std::io::Write;
use std::sync::Arc;

use super::args::StressArgs;
use crate::ops::{OpError, OpResult, Ops};

/// The bytes of file `n`: distinct per file, so a mix-up is detected.
pub fn content(n: u64, size: usize) -> Vec<u8> {
    let seed = n.to_le_bytes();
    (0..size)
        .map(|i| seed[i % 8] ^ (i as u8).wrapping_mul(31))
        .collect()
}

pub async fn run(ops: &dyn Ops, args: StressArgs) -> OpResult {
    check(&args)?;
    let zone = args.zone.zone.as_str();
    ops.mkdir(zone, &args.dir, true).await?;
    storm(&args, |path, data| async move {
        ops.write_file(zone, &path, data).await
    })
    .await
}

fn check(args: &StressArgs) -> OpResult {
    if args.concurrency == 0 {
        return Err(OpError::Usage("--concurrency must be at least 1".into()));
    }
    Ok(())
}

/// The storm itself: `--concurrency` workers write `--count` files through
/// `write`, each acknowledged on stdout once `write` returned.
async fn storm<W, Fut>(args: &StressArgs, write: W) -> OpResult
where
    W: Fn(String, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = OpResult>,
{
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let workers = (0..args.concurrency).map(|_| {
        let (next, out, dir, write) = (next.clone(), out.clone(), args.dir.clone(), &write);
        async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= args.count {
                    return Ok::<_, OpError>(());
                }
                let path = format!("{}/f{n:08}", dir.trim_end_matches('/'));
                let data = content(n, args.size);
                let hash = blake3::hash(&data).to_hex();
                write(path.clone(), data).await?;
                let line = format!("ack {path} {hash}\n");
                let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
                o.write_all(line.as_bytes())
                    .and_then(|_| o.flush())
                    .map_err(|e| OpError::local("stdout", e))?;
            }
        }
    });
    futures::future::try_join_all(workers).await?;
    Ok(())
}
