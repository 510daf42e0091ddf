//! Writes a follower hands to its zone's leader, at the application layer.
//!
//! raft-rs would forward a follower's proposal inside Raft (`MsgPropose`),
//! and the leader would append whatever arrived: any member could write
//! anything in any caller's name, and a refusal could never reach the
//! caller. Instead, a follower's driver sends the write to the leader's node
//! as a [`Forwarded`]: the command and who asked for it ([`Actor`]). The
//! leader's kernel gates it again against its own state
//! (`Kernel::take_forwarded`), proposes it as its own, and answers with an
//! [`Outcome`]: the entry's index and what applying it produced. The
//! follower waits until it has applied that index, so its caller reads its
//! own write. Admission refuses `MsgPropose` from the network.

use raft::prelude::{ConfChange, ConfChangeType};
use serde::{Deserialize, Serialize};

use crate::access::identity::{Capabilities, Principal};
use crate::consensus::replica::MemberInfo;
use crate::error::{KernelError, Result};
use crate::types::{ReplicaId, ZoneId};
use crate::zone::command::{Applied, ZoneCommand};

/// Who a write is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A task, as its node's gate bound it at spawn (the leader rebuilds the
    /// task from this and checks the write as that task).
    Task {
        principal: Principal,
        zone: ZoneId,
        caps: Capabilities,
        reach: Option<Vec<ZoneId>>,
    },
    /// The node itself, as its certificate proves: the commands a node
    /// makes on its own account (a zone's first root, a pipe checkpoint).
    Node,
}

/// A membership change, as a conf change names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    AddLearner,
    AddVoter,
    Remove,
}

/// An entry to append to a zone's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proposal {
    Command(ZoneCommand),
    Membership {
        change: MemberChange,
        node: ReplicaId,
        info: MemberInfo,
    },
}

impl Proposal {
    /// The raft-rs conf change of a membership proposal.
    pub(crate) fn conf_change(
        change: MemberChange,
        node: ReplicaId,
        info: MemberInfo,
    ) -> ConfChange {
        let mut cc = ConfChange::default();
        cc.set_change_type(match change {
            MemberChange::AddLearner => ConfChangeType::AddLearnerNode,
            MemberChange::AddVoter => ConfChangeType::AddNode,
            MemberChange::Remove => ConfChangeType::RemoveNode,
        });
        cc.node_id = node;
        cc.context = info.to_context().into();
        cc
    }
}

/// A write a follower's node sends to the leader's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub zone: ZoneId,
    pub actor: Actor,
    pub proposal: Proposal,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Committed at `index` and applied on the leader.
    Applied { index: u64, applied: Applied },
    /// The node asked does not lead (any more); `leader` is the one it
    /// knows of (0: none).
    NotLeader { leader: ReplicaId },
    /// Refused or failed, as the kernel error of that kind and detail.
    Failed { kind: String, detail: String },
}

impl Forwarded {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a forwarded write always serializes")
    }

    /// Decodes what a peer sent; anything malformed is `invalid`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        postcard::from_bytes(bytes)
            .map_err(|e| KernelError::Invalid(format!("undecodable forwarded write: {e}")))
    }
}

impl Outcome {
    pub fn failed(e: &KernelError) -> Self {
        Outcome::Failed {
            kind: e.kind().to_owned(),
            detail: e.detail(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("an outcome always serializes")
    }

    /// Decodes the leader's answer. A failure of a kind this version does
    /// not know (or an answer that does not decode) is `unavailable`: the
    /// write's fate is unknown here.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let outcome: Outcome = postcard::from_bytes(bytes).map_err(|e| {
            KernelError::Unavailable(format!(
                "the leader's answer to a forwarded write does not decode ({e}); \
                 the write may or may not have been applied"
            ))
        })?;
        Ok(outcome)
    }

    /// The error a `Failed` outcome stands for.
    pub fn error(kind: &str, detail: &str) -> KernelError {
        KernelError::from_kind(kind, detail).unwrap_or_else(|| {
            KernelError::Unavailable(format!(
                "the leader answered a forwarded write with an unknown error {kind}: {detail}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Inode, InodeBody};

    #[test]
    fn a_forwarded_write_and_its_outcomes_survive_the_wire() {
        let w = Forwarded {
            zone: ZoneId::new("z1").unwrap(),
            actor: Actor::Task {
                principal: Principal::parse("user:alice").unwrap(),
                zone: ZoneId::new("z1").unwrap(),
                caps: Capabilities::of(&[crate::access::identity::Permission::Write]),
                reach: Some(vec![ZoneId::new("z2").unwrap()]),
            },
            proposal: Proposal::Command(ZoneCommand::RevokeToken { id: "t1".into() }),
        };
        assert_eq!(Forwarded::decode(&w.encode()).unwrap(), w);
        let inode = Inode {
            ino: 7,
            parent: 1,
            size: 0,
            version: 2,
            atime: 5,
            mtime: 5,
            ctime: 5,
            body: InodeBody::Regular { inline: None },
        };
        for o in [
            Outcome::Applied {
                index: 9,
                applied: Applied::Inode(inode),
            },
            Outcome::NotLeader { leader: 3 },
            Outcome::failed(&KernelError::Conflict(4)),
        ] {
            assert_eq!(Outcome::decode(&o.encode()).unwrap(), o);
        }
        let Outcome::Failed { kind, detail } = Outcome::failed(&KernelError::Conflict(4)) else {
            unreachable!()
        };
        assert_eq!(Outcome::error(&kind, &detail), KernelError::Conflict(4));
    }

    #[test]
    fn garbage_from_a_peer_is_an_error_not_a_panic() {
        for bytes in [&b""[..], &[0xff; 3][..], &[0, 200, 200, 200, 200, 200][..]] {
            assert!(matches!(
                Forwarded::decode(bytes),
                Err(KernelError::Invalid(_))
            ));
            assert!(matches!(
                Outcome::decode(bytes),
                Err(KernelError::Unavailable(_))
            ));
        }
    }
}
