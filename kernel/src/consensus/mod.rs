//! Consensus: each zone a Raft group (raft-rs). Storage of the log in
//! sled, the replica core (Ready loop, witness role, conf changes), the
//! driver thread that owns it, membership changes, and the transport
//! trait the node plugs a network into. No I/O but the zone's own sled
//! tree and the transport.

pub mod admission;
pub mod driver;
pub mod forward;
pub mod membership;
pub mod raftstore;
pub mod replica;
pub mod snapshot;
pub mod transport;
