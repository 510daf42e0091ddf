//! Agents as WebAssembly components, with the kernel as their only I/O.

mod bindings;
pub mod budget;
pub mod fs;
pub mod host;
pub mod http;
pub mod pipe;
pub mod sockets;
pub mod state;
mod streams;
pub mod threads;
pub mod timer;
