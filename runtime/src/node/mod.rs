//! A runtime node among others: the Raft transport between nodes over
//! gRPC (tonic), always in mutual TLS (`tls`). One long-lived stream per
//! peer carries every shared zone's messages in batches.

pub mod api;
pub mod forward;
pub mod local;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod transport;

/// A node's Raft tick: heartbeats every tick, an election after 10–20
/// ticks without a leader, so a new leader within about a second.
pub const NODE_TICK: std::time::Duration = std::time::Duration::from_millis(50);
