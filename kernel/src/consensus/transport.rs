//! How replicas of a zone reach each other. The kernel only ever hands
//! outgoing raft messages to a [`Transport`]; whoever receives them calls the
//! zone's `step`. Implementations: [`LocalOnly`] (the embedded node), the
//! runtime's gRPC transport, and the simulation's seeded in-memory network
//! (`sim::network`, feature `sim`).

use raft::prelude::Message;

use crate::types::ZoneId;

pub trait Transport: Send + Sync + 'static {
    /// Sends `msgs` (each names its recipient in `to`). Delivery is best
    /// effort: raft tolerates loss, duplication and reordering.
    fn send(&self, zone: &ZoneId, msgs: Vec<Message>);

    /// Whether this transport reports each snapshot's fate itself (through
    /// `Kernel::report_snapshot`) once it has been delivered or has failed.
    /// If not, a snapshot counts as delivered when it is handed over.
    fn reports_snapshots(&self) -> bool {
        false
    }

    /// This node's replica of `zone` is gone (removed, destroyed): what it
    /// queued must not reach peers, where it would pass for a later replica
    /// of the zone on this node.
    fn forget_zone(&self, _zone: &ZoneId) {}

    /// This node's replica of `zone` is `incarnation`: messages it sends
    /// say so, so that peers can tell them from an earlier replica's.
    fn register_zone(&self, _zone: &ZoneId, _incarnation: u64) {}
}

/// The transport of a node that shares its zones with nobody. A one-voter
/// group never addresses a peer, so a message here is a bug worth logging.
pub struct LocalOnly;

impl Transport for LocalOnly {
    fn send(&self, zone: &ZoneId, msgs: Vec<Message>) {
        for m in msgs {
            tracing::warn!(%zone, to = m.to, "dropping raft message: no peers on this node");
        }
    }
}
