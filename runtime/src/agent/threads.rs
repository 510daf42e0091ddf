//! The threads agents run on: a tokio runtime of their own, apart from the
//! one that serves a node's client API and Raft links, its threads at a
//! lower scheduling priority (nice +[`AGENT_NICENESS`]). A node whose cores
//! are saturated by agents still answers its peers and clients: their
//! threads are different threads, and the OS gives them the CPU first.
//! Guests yield at every epoch tick (`host::Host::run`), so agents share
//! these threads fairly and a run that is stopped (its client gone, its
//! timeout passed) ends at the next tick even while it computes.
//!
//! Compiling a component is CPU work too: it runs on this runtime's
//! blocking threads, which have the same priority.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use super::host::RunError;

/// How much less CPU priority agent threads have than the node's own
/// (Linux nice units: +10 is about a tenth of the share of a thread at 0).
pub const AGENT_NICENESS: i32 = 10;

static AGENTS: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The agents' runtime, started on first use; it lives as long as the
/// process.
pub fn handle() -> Result<Handle, RunError> {
    let started = AGENTS.get_or_init(|| {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("nexus-agent")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match started {
        Ok(rt) => Ok(rt.handle().clone()),
        Err(e) => Err(RunError::Host(format!(
            "cannot start the agents' threads: {e}"
        ))),
    }
}

/// Raises the calling thread's niceness (on Linux, per thread).
fn lower_priority() {
    let me = rustix::thread::gettid();
    let now = rustix::process::getpriority_process(Some(me)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(me), now + AGENT_NICENESS) {
        tracing::warn!("agent threads run at the node's priority: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_threads_are_less_favoured_than_the_callers() {
        let mine = rustix::process::getpriority_process(None).unwrap();
        let theirs = handle()
            .unwrap()
            .block_on(async {
                tokio::spawn(async {
                    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
                })
                .await
            })
            .unwrap();
        assert_eq!(theirs, (mine + AGENT_NICENESS).min(19));
    }
}
