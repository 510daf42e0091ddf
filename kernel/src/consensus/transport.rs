//! How replicas of a zone reach each other. The kernel only ever hands
//! outgoing raft messages to a [`Transport`]; whoever receives them calls the
//! zone's `step`. Implementations: [`LocalOnly`] (the embedded node), the
//! runtime's gRPC transport, and the simulation's seeded in-memory network
//! (`sim::network`, feature `sim`).

use std::future::Future;
use std::pin::Pin;

use raft::prelude::Message;

use crate::error::{KernelError, Result};
use crate::types::{ReplicaId, ZoneId};

/// The leader's encoded answer to a forwarded write, when it comes.
pub type ForwardReply = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + Send + 'static>>;

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

    /// Hands an encoded [`Forwarded`](crate::consensus::forward::Forwarded)
    /// write to node `leader`'s kernel (`Kernel::take_forwarded`) and
    /// returns its encoded answer. An error means the write's fate is
    /// unknown.
    fn forward(&self, leader: ReplicaId, _write: Vec<u8>) -> ForwardReply {
        Box::pin(async move {
            Err(KernelError::Unavailable(format!(
                "node {leader} leads the zone and this node has no network to reach it"
            )))
        })
    }
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
