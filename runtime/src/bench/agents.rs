//! Agent benchmarks: warm spawn inside one process, cold `nexus run`
//! processes, and a guest's own timing of stat / 4 KiB read / 4 KiB write,
//! on the kernel and (with `--features stock-baseline`) on stock
//! wasmtime-wasi with the same files preopened from the host disk.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_kernel::Capabilities;
use nexus_kernel::Kernel;
use nexus_kernel::OpenOptions;

use crate::agent::host::{Host, RunLimits, Stdio};
use crate::bench::{percentile, row, Row};
use crate::ops::{OpError, OpResult};

pub(super) fn fail(e: impl std::fmt::Display) -> OpError {
    OpError::Failed(format!("agent benchmark: {e}"))
}

/// (stat, read, write) ops/s from a `results.txt` of nanoseconds.
fn rates(results: &str, n: usize) -> OpResult<[f64; 3]> {
    let ns: Vec<f64> = results
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    match ns.as_slice() {
        [s, r, w] => Ok([s, r, w].map(|t| n as f64 / (t / 1e9))),
        _ => Err(fail(format!("bad results {results:?}"))),
    }
}

pub async fn agents(
    k: &Arc<Kernel>,
    guest: &Path,
    scratch: &Path,
    scale: usize,
) -> OpResult<Vec<Row>> {
    let (zone, owner, bench) = crate::bench::agent_zone(k, "agents").await?;
    let host = Host::new(&scratch.join("components"), false, 64 << 20)?;
    let pre = host.prepare(&host.load(guest)?)?;
    let limits = RunLimits::default();
    let mut rows = Vec::new();

    // Warm spawn: instantiate and run a no-op agent to exit, in-process.
    let n = 2000 / scale;
    let noop = ["bench".to_owned(), "noop".to_owned()];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let task = k.spawn_task(bench.clone(), &zone, Capabilities::ALL)?;
        let t = Instant::now();
        host.run(&pre, k.clone(), task, &noop, &[], &limits, Stdio::Inherit)
            .await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let mean = lat.iter().sum::<Duration>().as_secs_f64() / n as f64;
    let mut r = row(
        "warm spawn + run a no-op agent, 1 at a time",
        1.0 / mean,
        f64::NAN,
        "agents/s",
    );
    r.ratio = f64::NAN;
    r.p50_us = Some(percentile(&lat, 0.5));
    r.p99_us = Some(percentile(&lat, 0.99));
    rows.push(r);

    // Cold: the whole `nexus run` process, compile cached, on its own data dir.
    let exe = std::env::current_exe().map_err(fail)?;
    let home = scratch.join("cold-home");
    let nexus = |args: &[&str]| {
        std::process::Command::new(&exe)
            .env("NEXUS_HOME", &home)
            .args(args)
            .output()
    };
    let guest_s = guest
        .to_str()
        .ok_or_else(|| fail("guest path is not UTF-8"))?;
    for setup in [
        &["zone", "create", "z1"][..],
        &["grant", "--zone", "z1", "agent:bench", "editor", "zone"],
        &["run", guest_s, "--zone", "z1", "--", "noop"],
    ] {
        let out = nexus(setup).map_err(fail)?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr)));
        }
    }
    let runs = 40 / scale.min(4);
    let mut cold = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = nexus(&["run", guest_s, "--zone", "z1", "--", "noop"]).map_err(fail)?;
        cold.push(t.elapsed());
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr)));
        }
    }
    cold.sort();
    let mut r = row(
        "cold `nexus run` process, cached compile",
        runs as f64 / cold.iter().sum::<Duration>().as_secs_f64(),
        f64::NAN,
        "runs/s",
    );
    r.ratio = f64::NAN;
    r.p50_us = Some(percentile(&cold, 0.5));
    r.p99_us = Some(percentile(&cold, 0.99));
    rows.push(r);

    // Guest file I/O on the kernel.
    let files = 2000 / scale;
    let block = vec![7u8; 4096];
    k.mkdir(&owner, "/io").await?;
    let create = OpenOptions::CREATE;
    for i in 0..files {
        let h = k.open_path(&owner, &format!("/io/f{i}"), create).await?;
        k.write(&owner, &h, 0, &block).await?;
    }
    let args = [
        "bench".to_owned(),
        "io".to_owned(),
        "/io".to_owned(),
        files.to_string(),
    ];
    let task = k.spawn_task(bench.clone(), &zone, Capabilities::ALL)?;
    let code = host
        .run(&pre, k.clone(), task, &args, &[], &limits, Stdio::Inherit)
        .await?;
    if code != 0 {
        return Err(fail(format!("the io guest exited {code}")));
    }
    let h = k.resolve(&owner, "/io/results.txt", true)?;
    let results = String::from_utf8_lossy(&k.read(&owner, &h, 0, 1024).await?).into_owned();
    let nexus_rates = rates(&results, files)?;
    let stock_rates = stock::io(guest, scratch, files)?;
    for (i, what) in ["stat", "read 4 KiB", "write 4 KiB"]
        .into_iter()
        .enumerate()
    {
        let name = format!("guest {what} of small files (vs stock wasmtime-wasi, host dir)");
        rows.push(row(
            &name,
            nexus_rates[i],
            stock_rates.map_or(f64::NAN, |s| s[i]),
            "ops/s",
        ));
    }
    Ok(rows)
}

#[cfg(feature = "stock-baseline")]
pub(super) mod stock {
    //! The same guest on stock wasmtime-wasi with a host directory
    //! preopened: the baseline, compiled only into benchmark builds.

    use std::path::Path;

    use wasmtime::component::{Component, Linker, ResourceTable};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::p1::WasiP1Ctx;
    use wasmtime_wasi::p2::bindings::CommandPre;
    use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

    use super::{fail, rates};
    use crate::ops::OpResult;

    /// Stock's store data: wasmtime-wasi's context (and, for the egress
    /// baseline, wasmtime-wasi-http's).
    pub(in crate::bench) struct Stock {
        ctx: WasiCtx,
        http: wasmtime_wasi_http::WasiHttpCtx,
        table: ResourceTable,
    }

    impl Stock {
        pub(in crate::bench) fn new(ctx: WasiCtx) -> Self {
            Stock {
                ctx,
                http: wasmtime_wasi_http::WasiHttpCtx::new(),
                table: ResourceTable::new(),
            }
        }
    }

    impl wasmtime_wasi_http::WasiHttpView for Stock {
        fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
            wasmtime_wasi_http::WasiHttpCtxView {
                ctx: &mut self.http,
                table: &mut self.table,
                hooks: Default::default(),
            }
        }
    }

    impl WasiView for Stock {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.ctx,
                table: &mut self.table,
            }
        }
    }

    /// Runs `guest` with `argv` and `dir` preopened as `/`; `false` when
    /// there is no baseline in this build.
    pub fn run(guest: &Path, dir: &Path, argv: &[&str]) -> OpResult<bool> {
        let engine = Engine::new(&Config::new()).map_err(fail)?;
        let mut linker = Linker::<Stock>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
        let component = Component::from_file(&engine, guest).map_err(fail)?;
        let pre =
            CommandPre::new(linker.instantiate_pre(&component).map_err(fail)?).map_err(fail)?;
        let mut b = WasiCtxBuilder::new();
        b.args(argv);
        b.preopened_dir(dir, "/", FsPerms::ReadWrite)
            .map_err(fail)?;
        let mut store = Store::new(&engine, Stock::new(b.build()));
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                let cmd = pre.instantiate_async(&mut store).await?;
                cmd.wasi_cli_run().call_run(&mut store).await
            })
        })
        .map_err(fail)?
        .map_err(|()| fail(format!("the stock guest failed: {argv:?}")))?;
        Ok(true)
    }

    /// Runs the wasip1 core module `guest` on wasmtime-wasi's own
    /// preview1 implementation, `dir` preopened as `/`.
    pub fn run_p1(guest: &Path, dir: &Path, argv: &[&str]) -> OpResult<bool> {
        let engine = Engine::new(&Config::new()).map_err(fail)?;
        let mut linker = wasmtime::Linker::<WasiP1Ctx>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx).map_err(fail)?;
        let module = wasmtime::Module::from_file(&engine, guest).map_err(fail)?;
        let mut b = WasiCtxBuilder::new();
        b.args(argv);
        b.preopened_dir(dir, "/", FsPerms::ReadWrite)
            .map_err(fail)?;
        let mut store = Store::new(&engine, b.build_p1());
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                let instance = linker.instantiate_async(&mut store, &module).await?;
                let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                start.call_async(&mut store, ()).await
            })
        })
        .map_err(fail)?;
        Ok(true)
    }

    pub fn io(guest: &Path, scratch: &Path, files: usize) -> OpResult<Option<[f64; 3]>> {
        let dir = scratch.join("stock");
        std::fs::create_dir_all(dir.join("io")).map_err(fail)?;
        for i in 0..files {
            std::fs::write(dir.join(format!("io/f{i}")), vec![7u8; 4096]).map_err(fail)?;
        }
        run(guest, &dir, &["bench", "io", "/io", &files.to_string()])?;
        let results = std::fs::read_to_string(dir.join("io/results.txt")).map_err(fail)?;
        Ok(Some(rates(&results, files)?))
    }
}

#[cfg(not(feature = "stock-baseline"))]
pub(super) mod stock {
    use std::path::Path;

    use crate::ops::OpResult;

    /// No baseline in a normal build: it needs wasmtime-wasi's host filesystem.
    pub fn run(_: &Path, _: &Path, _: &[&str]) -> OpResult<bool> {
        Ok(false)
    }

    /// No baseline in a normal build (as `run`).
    pub fn run_p1(_: &Path, _: &Path, _: &[&str]) -> OpResult<bool> {
        Ok(false)
    }

    /// No baseline in a normal build: it needs wasmtime-wasi's host filesystem.
    pub fn io(_: &Path, _: &Path, _: usize) -> OpResult<Option<[f64; 3]>> {
        Ok(None)
    }
}
