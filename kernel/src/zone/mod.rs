//! The zone state machine: the commands of a zone's log, the state they
//! build in sled, and their deterministic application (including a pipe's
//! replicated image). It imports nothing of the live kernel: no clock, no
//! randomness, no content store, no network.

pub mod command;
pub mod pipe_record;
pub mod state;
pub mod usage;
