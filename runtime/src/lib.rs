//! The Nexus runtime: the wasmtime host that runs agents on the kernel
//! (`agent`), and the commands of the `nexus` binary. A library so the
//! end-to-end tests can run agents in-process (e.g. on a virtual clock).

pub mod access_cmd;
pub mod agent;
pub mod audit_cmd;
pub mod bench;
mod bench_agents;
mod bench_cluster;
mod bench_pipes;
pub mod cli;
pub mod client;
pub mod error;
pub mod fs_cmd;
pub mod node;
pub mod node_cmd;
pub mod output;
pub mod pipe_cmd;
pub mod run_cmd;
pub mod session;
pub mod stress;
pub mod units;
pub mod zone_cmd;
