//! A runtime node among others: the Raft transport between nodes over
//! gRPC (tonic). One long-lived stream per peer carries every shared zone's
//! messages in batches.

pub mod api;
pub mod local;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod transport;
