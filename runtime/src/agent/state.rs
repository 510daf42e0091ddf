//! The per-task store data: the task's bound identity, the kernel it talks
//! to, its resource table, and its limits. One `Store` per task.

use std::sync::Arc;

use nexus_kernel::Kernel;
use nexus_kernel::Task;
use nexus_kernel::TaskTimers;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::nexus::kernel::identity;

/// What a task may grow, at most (invariant 7).
#[derive(Debug, Clone)]
pub struct TaskLimits {
    pub max_descriptors: usize,
}

pub struct AgentState {
    /// wasmtime-wasi's context, used for cli, clocks and random only; it
    /// has no preopens and no sockets are linked.
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub kernel: Arc<Kernel>,
    pub task: Task,
    pub limits: TaskLimits,
    pub open_descriptors: usize,
    /// Host memory the task makes the node hold (its memory limit, inside
    /// the node's budget for every agent)...
    pub host_memory: Arc<super::budget::HostMemory>,
    /// ...of which the pipe rings it has ends of.
    pub pipe_budget: Arc<super::pipe::PipeBudget>,
    /// The task's timers on the kernel's driver (counted and bounded).
    pub timers: TaskTimers,
    /// Its HTTP requests' limits, counters and notices.
    pub egress: super::http::Egress,
    pub store_limits: StoreLimits,
}

impl WasiView for AgentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_io::IoView for AgentState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl AgentState {
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.store_limits
    }
}

impl identity::Host for AgentState {
    fn whoami(&mut self) -> wasmtime::Result<identity::WhoamiInfo> {
        Ok(identity::WhoamiInfo {
            pid: self.task.pid(),
            principal: self.task.principal().to_string(),
            zone: self.task.zone().to_string(),
        })
    }
}
