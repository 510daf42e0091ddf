//! Egress: an agent's GETs (`examples/fetch --times N`) to a loopback
//! HTTP server through the kernel (gate, resolution, audit, limits), and
//! the same guest on stock wasmtime-wasi-http (`stock-baseline` builds
//! only) against the same server, in the same run. Requests per second and
//! the guest's own p50/p99 latency.
//!
//! The server is the benchmark's fixture, the same for both sides: it
//! reads a request's head and answers `ok`, closing the connection (both
//! clients open one connection per request).

use std::path::Path;
use std::sync::Arc;

use nexus_kernel::{Kernel, ObjectRef, Relation, Subject, Tuple};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::host::{Host, RunLimits, Stdio};
use crate::bench::agents::fail;
use crate::bench::{row, Row};
use crate::ops::OpResult;

/// Serves `ok` to every request on a loopback port, until dropped.
struct Server {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server() -> OpResult<Server> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(fail)?;
    let port = listener.local_addr().map_err(fail)?.port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(Server { port, task })
}

/// (requests/s, p50 µs, p99 µs) from the guest's `requests N total_us T
/// p50_us X p99_us Y` line.
fn parse(out: &str) -> OpResult<(f64, f64, f64)> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let field = |name: &str| -> OpResult<f64> {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| fail(format!("no {name} in the guest's output {out:?}")))
    };
    let n = field("requests")?;
    Ok((
        n / (field("total_us")? / 1e6),
        field("p50_us")?,
        field("p99_us")?,
    ))
}

pub async fn egress(
    k: &Arc<Kernel>,
    fetch: &Path,
    scratch: &Path,
    scale: usize,
) -> OpResult<Vec<Row>> {
    let server = server().await?;
    let (zone, owner, agent) = crate::bench::agent_zone(k, "egress").await?;
    let grant = Tuple {
        object: ObjectRef::parse(&format!("host:http://127.0.0.1:{}", server.port))?,
        relation: Relation::Fetch,
        subject: Subject::Principal(agent.clone()),
    };
    k.write_tuples(&owner, vec![grant], vec![]).await?;
    let n = (2000 / scale).to_string();
    let url = format!("http://127.0.0.1:{}/", server.port);
    let argv = ["fetch", url.as_str(), "--times", n.as_str()].map(String::from);

    let host = Host::new(&scratch.join("components-egress"), false, 64 << 20)?;
    let pre = host.prepare(&host.load(fetch)?)?;
    let task = k.spawn_task(agent, &zone, nexus_kernel::Capabilities::ALL)?;
    let (out_w, mut out_r) = tokio::io::duplex(1 << 16);
    let (err_w, _err_r) = tokio::io::duplex(1 << 16);
    let stdio = Stdio::Streams {
        stdin: None,
        stdout: out_w,
        stderr: err_w,
    };
    let code = host
        .run(
            &pre,
            k.clone(),
            task,
            &argv,
            &[],
            &RunLimits::default(),
            stdio,
        )
        .await?;
    let mut out = String::new();
    out_r.read_to_string(&mut out).await.map_err(fail)?;
    if code != 0 {
        return Err(fail(format!("the fetch agent exited with {code}: {out}")));
    }
    let (rps, p50, p99) = parse(&out)?;
    let base = stock::fetch(fetch, &argv).await?;
    let mut r = row(
        "agent HTTP GETs to loopback (vs stock wasmtime-wasi-http)",
        rps,
        base.map_or(f64::NAN, |b| b.0),
        "requests/s",
    );
    r.p50_us = Some(p50);
    r.p99_us = Some(p99);
    let mut rows = vec![r];
    if let Some((_, p50, p99)) = base {
        let mut b = row(
            "  the same on stock wasmtime-wasi-http",
            f64::NAN,
            f64::NAN,
            "requests/s",
        );
        b.p50_us = Some(p50);
        b.p99_us = Some(p99);
        rows.push(b);
    }
    Ok(rows)
}

#[cfg(feature = "stock-baseline")]
mod stock {
    //! The guest on wasmtime-wasi plus wasmtime-wasi-http's default
    //! outgoing handler: the baseline, only in benchmark builds.

    use std::path::Path;

    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::p2::bindings::CommandPre;
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
    use wasmtime_wasi::WasiCtxBuilder;

    use crate::bench::agents::fail;
    use crate::bench::agents::stock::Stock;
    use crate::ops::OpResult;

    pub async fn fetch(guest: &Path, argv: &[String]) -> OpResult<Option<(f64, f64, f64)>> {
        let engine = Engine::new(&Config::new()).map_err(fail)?;
        let mut linker = Linker::<Stock>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(fail)?;
        let component = Component::from_file(&engine, guest).map_err(fail)?;
        let pre =
            CommandPre::new(linker.instantiate_pre(&component).map_err(fail)?).map_err(fail)?;
        let stdout = MemoryOutputPipe::new(1 << 16);
        let mut b = WasiCtxBuilder::new();
        b.args(argv).stdout(stdout.clone());
        let mut store = Store::new(&engine, Stock::new(b.build()));
        let cmd = pre.instantiate_async(&mut store).await.map_err(fail)?;
        cmd.wasi_cli_run()
            .call_run(&mut store)
            .await
            .map_err(fail)?
            .map_err(|()| fail("the stock fetch failed"))?;
        let out = String::from_utf8_lossy(&stdout.contents()).into_owned();
        super::parse(&out).map(Some)
    }
}

#[cfg(not(feature = "stock-baseline"))]
mod stock {
    use std::path::Path;

    use crate::ops::OpResult;

    /// No baseline in a normal build: it needs wasmtime-wasi-http.
    pub async fn fetch(_: &Path, _: &[String]) -> OpResult<Option<(f64, f64, f64)>> {
        Ok(None)
    }
}
