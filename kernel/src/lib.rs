//! The Nexus kernel. See ARCHITECTURE.md at the repository root.

pub mod audit;
pub mod check;
pub mod command;
pub mod content;
pub mod driver;
pub mod error;
pub mod gate;
pub mod identity;
pub mod kernel;
pub mod membership;
pub mod path;
pub mod pipe;
pub mod raftstore;
pub mod rebac;
pub mod replica;
pub mod sim;
pub mod state;
pub mod timer;
pub mod token;
pub mod transport;
pub mod tree;
pub mod types;
pub mod vfs;

pub use error::{ErrorCode, KernelError, Result};
