//! The Nexus runtime: the wasmtime host that runs agents on the kernel
//! (`agent`), the operations layer every front-end shares (`ops`), the
//! node (`node`), the command line (`cli`) and the benchmark harness
//! (`bench`). A library so the end-to-end tests can run agents in-process
//! (e.g. on a virtual clock).

pub mod agent;
pub mod bench;
pub mod cli;
pub mod native;
pub mod node;
pub mod ops;
pub mod output;
pub mod session;
pub mod units;
