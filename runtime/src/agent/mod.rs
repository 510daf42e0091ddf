//! Agents as WebAssembly components, with the kernel as their only I/O.

mod bindings;
pub mod fs;
pub mod host;
pub mod http;
pub mod pipe;
pub mod sockets;
pub mod state;
mod streams;
pub mod timer;
