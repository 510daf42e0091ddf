//! The Nexus kernel. See ARCHITECTURE.md at the repository root.

pub mod command;
pub mod error;
pub mod path;
pub mod raftstore;
pub mod replica;
pub mod sim;
pub mod state;
pub mod transport;
pub mod types;

pub use error::{ErrorCode, KernelError, Result};
