//! The wasmtime host: one shared `Engine` (pooling allocator, copy-on-write
//! memory images, epoch interruption), compiled components cached on disk
//! by content hash, a linker holding only what Nexus serves, and `run`.
//!
//! The linker never contains wasmtime-wasi's filesystem, sockets or http
//! (invariant 13): `wasi:filesystem` is `agent::fs` on the kernel; `wasi:cli`,
//! `wasi:clocks`, `wasi:random` and `wasi:io` are wasmtime-wasi's.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_kernel::Kernel;
use nexus_kernel::Task;
use nexus_kernel::DEFAULT_TIMER_LIMIT;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder,
    UpdateDeadline,
};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, StdoutStream};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::{cli, clocks, random, CommandPre};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::bindings;
use super::budget::{HostMemory, NodeMemory, NODE_HOST_MEMORY};
use super::http::{Egress, EgressLimits, Notices, Traffic};
use super::state::{AgentState, TaskLimits};

/// Agents one host runs at once from its pool of pre-reserved slots.
pub const POOLED_AGENTS: u32 = 64;

/// How often the epoch advances: the granularity of `--timeout`, and how
/// long a computing guest keeps its thread before it yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors at the runtime boundary, mapped once to CLI messages.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}: not a WebAssembly file (no \\0asm header)")]
    NotWasm(String),
    #[error("{0}: a core wasm module that is not a WASI preview 1 command: {1}")]
    CoreModule(String, String),
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load the component: {0}")]
    Compile(String),
    #[error("the agent imports something Nexus does not provide: {0}")]
    MissingImport(String),
    #[error("agent killed: ran past its {0:?} timeout")]
    Timeout(Duration),
    #[error("agent killed: out of fuel")]
    OutOfFuel,
    #[error("agent trapped: {0}")]
    Trap(String),
    /// The preview 1 adapter Nexus wraps a wasip1 module with failed one of
    /// its own assertions: its state was overwritten.
    #[error("agent trapped in the WASI preview 1 adapter, whose state the module overwrote ({0})")]
    AdapterAsserted(String),
    #[error("runtime: {0}")]
    Host(String),
}

/// Where an agent's standard streams go.
pub enum Stdio {
    /// This process's own.
    Inherit,
    /// Pipes the caller holds the other ends of (`nexus run --node`
    /// streams them to and from the client); no stdin reads as empty.
    Streams {
        stdin: Option<tokio::io::DuplexStream>,
        stdout: tokio::io::DuplexStream,
        stderr: tokio::io::DuplexStream,
    },
}

/// Resources (descriptors, streams, pollables, fields, ...) one agent may
/// hold at once: each is a host allocation the guest asked for.
const MAX_RESOURCES: usize = 1 << 16;

/// Bytes a guest may write to a captured stream before it waits for the
/// reader.
const STREAM_BUDGET: usize = 64 * 1024;

/// What one run may use.
#[derive(Debug, Clone)]
pub struct RunLimits {
    pub timeout: Option<Duration>,
    pub memory: usize,
    pub fuel: Option<u64>,
    pub max_descriptors: usize,
    pub max_timers: usize,
    /// Host memory every agent of this node holds together (an agent's
    /// own share is `memory`).
    pub node_memory: Arc<NodeMemory>,
    /// What its HTTP requests may use.
    pub egress: EgressLimits,
    /// Its HTTP traffic so far, shared by the run's agents (a clone of
    /// these limits runs each one).
    pub traffic: Arc<Traffic>,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            timeout: None,
            memory: 256 << 20,
            fuel: None,
            max_descriptors: 1024,
            max_timers: DEFAULT_TIMER_LIMIT,
            node_memory: NodeMemory::new(NODE_HOST_MEMORY),
            egress: EgressLimits::default(),
            traffic: Arc::default(),
        }
    }
}

/// The shared engine and linker of a node.
pub struct Host {
    engine: Engine,
    linker: Linker<AgentState>,
    cache_dir: PathBuf,
    _ticker: std::thread::JoinHandle<()>,
}

fn host_err(e: impl std::fmt::Display) -> RunError {
    RunError::Host(e.to_string())
}

impl Host {
    /// `fuel` turns on deterministic fuel metering for every store of this
    /// engine (it costs some speed, so it is off unless asked for).
    pub fn new(cache_dir: &Path, fuel: bool, memory: usize) -> Result<Self, RunError> {
        Self::with_capacity(cache_dir, fuel, memory, POOLED_AGENTS)
    }

    /// A host for up to `agents` agents at once: pooled slots (fast
    /// instantiation, address space reserved up front) up to
    /// [`POOLED_AGENTS`], memory mapped on demand beyond that.
    pub fn with_capacity(
        cache_dir: &Path,
        fuel: bool,
        memory: usize,
        agents: u32,
    ) -> Result<Self, RunError> {
        let mut cfg = Config::new();
        let strategy = if agents <= POOLED_AGENTS {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(agents)
                .total_core_instances(agents * 4)
                .total_memories(agents)
                .total_tables(agents * 4)
                .max_memory_size(memory);
            InstanceAllocationStrategy::Pooling(pool)
        } else {
            // Thousands of agents: each linear memory one plain mapping that
            // grows by moving, no reserved address space, no guard region,
            // no copy-on-write image, so a host of 10,000 agents stays well
            // inside the kernel's limit on mappings per process.
            cfg.memory_reservation(0)
                .memory_guard_size(0)
                .guard_before_linear_memory(false)
                .memory_may_move(true);
            InstanceAllocationStrategy::OnDemand
        };
        cfg.epoch_interruption(true)
            .consume_fuel(fuel)
            .memory_init_cow(agents <= POOLED_AGENTS)
            .allocation_strategy(strategy);
        let engine = Engine::new(&cfg).map_err(host_err)?;
        let ticker = {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("nexus-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                })
                .map_err(host_err)?
        };
        let linker = Self::linker(&engine).map_err(host_err)?;
        std::fs::create_dir_all(cache_dir).map_err(host_err)?;
        Ok(Host {
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
            _ticker: ticker,
        })
    }

    fn linker(engine: &Engine) -> wasmtime::Result<Linker<AgentState>> {
        let mut l = Linker::new(engine);
        wasmtime_wasi_io::add_to_linker_async(&mut l)?;
        clocks::wall_clock::add_to_linker::<AgentState, WasiClocks>(&mut l, AgentState::clocks)?;
        // The monotonic clock and its subscriptions: the kernel's timer driver.
        bindings::wasi::clocks::monotonic_clock::add_to_linker::<AgentState, HasSelf<AgentState>>(
            &mut l,
            |s| s,
        )?;
        random::random::add_to_linker::<AgentState, WasiRandom>(&mut l, AgentState::random)?;
        random::insecure::add_to_linker::<AgentState, WasiRandom>(&mut l, AgentState::random)?;
        random::insecure_seed::add_to_linker::<AgentState, WasiRandom>(&mut l, AgentState::random)?;
        cli::exit::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::environment::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::stdin::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::stdout::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::stderr::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::terminal_input::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::terminal_output::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::terminal_stdin::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::terminal_stdout::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        cli::terminal_stderr::add_to_linker::<AgentState, WasiCli>(&mut l, AgentState::cli)?;
        bindings::wasi::filesystem::types::add_to_linker::<AgentState, HasSelf<AgentState>>(
            &mut l,
            |s| s,
        )?;
        bindings::wasi::filesystem::preopens::add_to_linker::<AgentState, HasSelf<AgentState>>(
            &mut l,
            |s| s,
        )?;
        bindings::nexus::kernel::identity::add_to_linker::<AgentState, HasSelf<AgentState>>(
            &mut l,
            |s| s,
        )?;
        bindings::nexus::kernel::pipe::add_to_linker::<AgentState, HasSelf<AgentState>>(
            &mut l,
            |s| s,
        )?;
        bindings::nexus::kernel::timer::add_to_linker::<AgentState, HasSelf<AgentState>>(
            &mut l,
            |s| s,
        )?;
        // Present, and denying every call (see `agent::sockets`).
        use bindings::wasi::sockets as net;
        type Me = HasSelf<AgentState>;
        net::network::add_to_linker::<AgentState, Me>(&mut l, &Default::default(), |s| s)?;
        net::instance_network::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        net::tcp::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        net::tcp_create_socket::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        net::udp::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        net::udp_create_socket::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        net::ip_name_lookup::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        // Present for agents that import it, refusing every request (`agent::http`).
        bindings::wasi::http::types::add_to_linker::<AgentState, Me>(
            &mut l,
            &Default::default(),
            |s| s,
        )?;
        bindings::wasi::http::outgoing_handler::add_to_linker::<AgentState, Me>(&mut l, |s| s)?;
        Ok(l)
    }

    /// Loads a component, compiling it only if this engine has not compiled
    /// these exact bytes before (cache keyed by content hash and engine).
    pub fn load(&self, path: &Path) -> Result<Component, RunError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RunError::Read {
            path: shown.clone(),
            source,
        })?;
        self.load_bytes(bytes, shown)
    }

    /// Where this engine's compilation of `bytes` is cached.
    fn cached_path(&self, bytes: &[u8]) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let key = format!(
            "{}-{:016x}.cwasm",
            blake3::hash(bytes).to_hex(),
            engine_hash.finish()
        );
        self.cache_dir.join(key)
    }

    /// Whether loading `bytes` would find them compiled already.
    pub fn is_compiled(&self, bytes: &[u8]) -> bool {
        self.cached_path(bytes).exists()
    }

    /// [`load`](Self::load) for bytes in hand (`shown` names them in errors).
    pub fn load_bytes(&self, bytes: Vec<u8>, shown: String) -> Result<Component, RunError> {
        let core_module = match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => true,
            Some([0, b'a', b's', b'm', ..]) => false,
            _ => return Err(RunError::NotWasm(shown)),
        };
        let cached = self.cached_path(&bytes);
        if cached.exists() {
            // SAFETY: the file was written by `Component::serialize` of this
            // same engine configuration (the hash is in its name), in the
            // node's private data directory.
            #[allow(unsafe_code)]
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, &cached) } {
                return Ok(c);
            }
        }
        let component_bytes = if core_module {
            // A wasm32-wasip1 module: wrap it with the preview1 command
            // adapter, so it runs on the same WASI 0.2 imports (and the
            // same kernel filesystem) as any component.
            wit_component::ComponentEncoder::default()
                .validate(true)
                .module(&bytes)
                .and_then(|e| {
                    e.adapter(
                        "wasi_snapshot_preview1",
                        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
                    )
                })
                .and_then(|mut e| e.encode())
                .map_err(|e| RunError::CoreModule(shown.clone(), format!("{e:#}")))?
        } else {
            bytes
        };
        let component = Component::new(&self.engine, &component_bytes)
            .map_err(|e| RunError::Compile(format!("{e:#}")))?;
        if let Ok(artifact) = component.serialize() {
            let tmp = cached.with_extension("tmp");
            if std::fs::write(&tmp, artifact).is_ok() {
                let _ = std::fs::rename(&tmp, &cached);
            }
        }
        Ok(component)
    }

    /// Links `component` once; every run then only instantiates it.
    pub fn prepare(&self, component: &Component) -> Result<CommandPre<AgentState>, RunError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| RunError::MissingImport(format!("{e:#}")))?;
        CommandPre::new(pre)
            .map_err(|e| RunError::Compile(format!("not a command component: {e:#}")))
    }

    /// Runs a prepared component as `task` to completion, its standard
    /// streams given by `stdio`; returns its exit code.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        pre: &CommandPre<AgentState>,
        kernel: Arc<Kernel>,
        task: Task,
        args: &[String],
        env: &[(String, String)],
        limits: &RunLimits,
        stdio: Stdio,
    ) -> Result<i32, RunError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(args).envs(env);
        let notices = match stdio {
            Stdio::Inherit => {
                wasi.inherit_stdin().inherit_stdout().inherit_stderr();
                Notices::new(Box::new(tokio::io::stderr()))
            }
            Stdio::Streams {
                stdin,
                stdout,
                stderr,
            } => {
                // Without a stdin it reads end-of-file.
                if let Some(stdin) = stdin {
                    wasi.stdin(AsyncStdinStream::new(stdin));
                }
                let stderr = AsyncStdoutStream::new(STREAM_BUDGET, stderr);
                let notices = Notices::new(stderr.async_stream());
                wasi.stdout(AsyncStdoutStream::new(STREAM_BUDGET, stdout))
                    .stderr(stderr);
                notices
            }
        };
        let timers = kernel.timers().for_task(limits.max_timers);
        let host_memory = HostMemory::new(limits.memory as u64, limits.node_memory.clone());
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let state = AgentState {
            wasi: wasi.build(),
            table,
            kernel,
            task,
            limits: TaskLimits {
                max_descriptors: limits.max_descriptors,
            },
            open_descriptors: 0,
            pipe_budget: super::pipe::PipeBudget::new(host_memory.clone()),
            host_memory,
            timers,
            egress: Egress::new(limits.egress.clone(), limits.traffic.clone(), notices),
            store_limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory)
                .instances(64)
                .tables(256)
                .table_elements(1 << 20)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(AgentState::limiter);
        // At every epoch tick a computing guest yields its thread to the
        // other agents (and lets a stopped run end); past its timeout it
        // traps.
        let deadline = limits.timeout.map(|t| std::time::Instant::now() + t);
        store.epoch_deadline_callback(move |_| match deadline {
            Some(d) if std::time::Instant::now() >= d => Ok(UpdateDeadline::Interrupt),
            _ => Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            )),
        });
        store.set_epoch_deadline(1);
        if let Some(fuel) = limits.fuel {
            store.set_fuel(fuel).map_err(host_err)?;
        }
        let running = async {
            let cmd = pre.instantiate_async(&mut store).await?;
            cmd.wasi_cli_run().call_run(&mut store).await
        };
        // The epoch deadline stops a guest that is computing; a guest blocked
        // in the host (a pipe, a timer) is stopped here, and dropping its
        // store cancels its timers and detaches its pipe ends.
        let outcome = match limits.timeout {
            None => running.await,
            Some(t) => match tokio::time::timeout(t + EPOCH_TICK, running).await {
                Ok(r) => r,
                Err(_) => return Err(RunError::Timeout(t)),
            },
        };
        match outcome {
            Ok(Ok(())) => Ok(0),
            Ok(Err(())) => Ok(1),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    return Ok(exit.0);
                }
                match e.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => {
                        Err(RunError::Timeout(limits.timeout.unwrap_or_default()))
                    }
                    Some(wasmtime::Trap::OutOfFuel) => Err(RunError::OutOfFuel),
                    _ if adapter_asserted(&e) => {
                        Err(RunError::AdapterAsserted(e.root_cause().to_string()))
                    }
                    _ => Err(RunError::Trap(format!("{e:#}"))),
                }
            }
        }
    }
}

/// Whether a trap is the preview 1 adapter's own assertion failing (its
/// frames keep their names in the backtrace). The known cause is a module
/// whose wasi-libc predates 2023: at its first `malloc` it claims the
/// memory up to the end of linear memory, which includes the pages the
/// adapter grew for its state, and then writes over them.
fn adapter_asserted(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<wasmtime::WasmBacktrace>()
        .is_some_and(|bt| {
            bt.frames().iter().any(|f| {
                // The name as the name section has it: mangled, so matched by
                // its parts.
                f.func_name().is_some_and(|n| {
                    n.contains("wasi_snapshot_preview1") && n.contains("assert_fail")
                })
            })
        })
}
