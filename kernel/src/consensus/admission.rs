//! What a replica takes from the network, checked before raft-rs sees it.
//!
//! raft-rs trusts its caller: some message types are meant only for the
//! local node (a campaign order, a heartbeat order, a report of an
//! unreachable peer), and some shapes make it panic (an empty proposal, a
//! read-index request without its context, a term that wraps u64, an
//! append that rewrites committed entries). A peer's message passes
//! [`check`] (its type and shape; the kernel runs it on arrival, so the
//! sender hears of a refusal) and [`check_against`] (against the replica's
//! own state, on the replica's thread, just before raft-rs steps it).
//! Who may send at all (a certified node, a member of the group) is
//! decided before either: by the transport and by `Kernel::deliver`.

use raft::prelude::{ConfState, Message, MessageType};

/// No term at or above this is taken from the network: a term that grows
/// by one per election can never reach it, and a term near u64::MAX would
/// wrap at the next election.
pub const MAX_TERM: u64 = 1 << 48;
/// A message may be at most this many terms ahead of the replica's own
/// (once the replica has a term): a million elections.
pub const MAX_TERM_AHEAD: u64 = 1 << 20;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refuse(why: impl Into<String>) -> Result<(), Refused> {
    Err(Refused(why.into()))
}

/// The message's type and shape, whatever the replica's state.
pub fn check(m: &Message) -> Result<(), Refused> {
    use MessageType::*;
    let kind = m.get_msg_type();
    if m.from == 0 || m.to == 0 {
        return refuse(format!("{kind:?} with node id 0"));
    }
    if m.from == m.to {
        return refuse(format!("{kind:?} from node {} to itself", m.from));
    }
    if m.term >= MAX_TERM {
        return refuse(format!(
            "{kind:?} with term {} (at most {MAX_TERM})",
            m.term
        ));
    }
    // Writes reach a leader through the forwarding call, where the leader
    // gates them as their caller (`consensus::forward`), never inside Raft:
    // a proposal from the network would be appended unchecked.
    if kind == MsgPropose {
        return refuse("a proposal from the network (writes are forwarded to the leader's node)");
    }
    // A follower forwards read requests without a term; everything else a
    // replica sends carries its term (raft-rs panics answering a vote
    // request without one).
    if (kind == MsgReadIndex) != (m.term == 0) {
        return refuse(format!("{kind:?} with term {}", m.term));
    }
    match kind {
        // Orders and reports a node gives its own replica, never a peer's.
        MsgHup | MsgBeat | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum => {
            refuse(format!("{kind:?} is local to a node"))
        }
        // raft-rs reads the request's context from its first entry.
        MsgReadIndex if m.entries.len() != 1 => {
            refuse(format!("a read index with {} entries", m.entries.len()))
        }
        // Snapshots come whole, checked, on the snapshot call: a snapshot
        // message must carry one.
        MsgSnapshot if !m.has_snapshot() => refuse("a snapshot message without a snapshot"),
        MsgSnapshot => conf_state_sane(m.get_snapshot().get_metadata().get_conf_state()),
        MsgAppend if !entries_follow(m) => refuse("an append whose entries are not consecutive"),
        _ => Ok(()),
    }
}

/// A snapshot's configuration is one raft-rs can restore (it panics on
/// one it cannot): voters, no id 0, no id twice, nobody both voter and
/// learner, the joint parts consistent.
fn conf_state_sane(cs: &ConfState) -> Result<(), Refused> {
    let bad = |why: &str| refuse(format!("a snapshot whose configuration {why}: {cs:?}"));
    if cs.voters.is_empty() {
        return bad("has no voters");
    }
    let mut seen = std::collections::HashSet::new();
    for id in cs.voters.iter().chain(&cs.learners) {
        if *id == 0 || !seen.insert(*id) {
            return bad("names a node twice or node 0");
        }
    }
    let mut outgoing = std::collections::HashSet::new();
    for id in &cs.voters_outgoing {
        if *id == 0 || !outgoing.insert(*id) || cs.learners.contains(id) {
            return bad("has a bad outgoing voter");
        }
    }
    for id in &cs.learners_next {
        if !outgoing.contains(id) || cs.voters.contains(id) || cs.learners.contains(id) {
            return bad("has a bad next learner");
        }
    }
    if outgoing.is_empty() && cs.auto_leave {
        return bad("leaves a joint state it is not in");
    }
    Ok(())
}

/// An append's entries follow its `index` one by one, with terms that
/// never go down and never exceed the message's.
fn entries_follow(m: &Message) -> bool {
    let mut index = m.index;
    let mut term = m.log_term;
    for e in m.entries.iter() {
        let (Some(next), true) = (index.checked_add(1), e.term >= term && e.term <= m.term) else {
            return false;
        };
        if e.index != next {
            return false;
        }
        index = next;
        term = e.term;
    }
    true
}

/// What a replica knows of itself, to judge a message by.
pub struct Own<F: Fn(u64) -> Option<u64>> {
    pub term: u64,
    pub last_index: u64,
    pub committed: u64,
    pub leads: bool,
    /// The term of its log entry `i` (None if it does not have it).
    pub term_at: F,
}

/// What the replica's own state tells about the message.
pub fn check_against<F: Fn(u64) -> Option<u64>>(m: &Message, own: &Own<F>) -> Result<(), Refused> {
    let kind = m.get_msg_type();
    let Own {
        term,
        last_index,
        committed,
        leads,
        ref term_at,
    } = *own;
    if term > 0 && m.term > term.saturating_add(MAX_TERM_AHEAD) {
        return refuse(format!(
            "{kind:?} with term {}, more than {MAX_TERM_AHEAD} ahead of this replica's {term}",
            m.term
        ));
    }
    match kind {
        // A follower hands a transfer request on to its leader; one
        // handed on twice makes raft-rs panic.
        MessageType::MsgTransferLeader if !leads => {
            refuse("a leadership transfer for a replica that does not lead")
        }
        // A follower cannot have matched entries its leader does not have
        // (raft-rs would commit past its own log, and panic).
        MessageType::MsgAppendResponse if !m.reject && m.index > last_index => refuse(format!(
            "an append acknowledged up to {}, past this replica's log ({last_index})",
            m.index
        )),
        // A leader never tells a follower of a commit beyond the entries it
        // acknowledged: such a heartbeat was meant for an earlier replica
        // of this node (removed, then added again empty), still on its way.
        MessageType::MsgHeartbeat if m.commit > last_index => refuse(format!(
            "a heartbeat committing {} past this replica's log ({last_index}): stale",
            m.commit
        )),
        MessageType::MsgAppend if m.term >= term => {
            for e in m.entries.iter().take_while(|e| e.index <= committed) {
                if term_at(e.index).is_some_and(|t| t != e.term) {
                    return refuse(format!(
                        "an append rewriting committed entry {} (term {} here, {} sent)",
                        e.index,
                        term_at(e.index).unwrap_or_default(),
                        e.term
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
// raft's protobuf messages are built field by field, as raft-rs does.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn msg(kind: MessageType, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = 2;
        m.to = 1;
        m.term = term;
        m
    }

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    #[test]
    fn local_orders_and_panicking_shapes_are_refused() {
        for kind in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
        ] {
            assert!(check(&msg(kind, 1)).is_err(), "{kind:?}");
        }
        let mut proposal = msg(MessageType::MsgPropose, 0);
        assert!(check(&proposal).is_err(), "an empty proposal");
        proposal.mut_entries().push(Entry::default());
        assert!(check(&proposal).is_err(), "a proposal from the network");
        assert!(check(&msg(MessageType::MsgReadIndex, 0)).is_err());
        assert!(check(&msg(MessageType::MsgRequestVote, 0)).is_err());
        assert!(check(&msg(MessageType::MsgSnapshot, 3)).is_err());
        assert!(check(&msg(MessageType::MsgHeartbeat, u64::MAX - 1)).is_err());
        let mut own = msg(MessageType::MsgHeartbeat, 3);
        own.from = 1;
        assert!(check(&own).is_err());
        assert!(check(&msg(MessageType::MsgHeartbeat, 3)).is_ok());
        assert!(check(&msg(MessageType::MsgRequestVote, 3)).is_ok());
    }

    #[test]
    fn appends_must_be_consecutive_and_keep_committed_entries() {
        let mut m = msg(MessageType::MsgAppend, 3);
        m.index = 5;
        m.log_term = 2;
        m.entries = vec![entry(6, 2), entry(7, 3)].into();
        assert!(check(&m).is_ok());
        m.entries = vec![entry(6, 2), entry(8, 3)].into();
        assert!(check(&m).is_err());
        m.entries = vec![entry(6, 4)].into();
        assert!(
            check(&m).is_err(),
            "an entry from a later term than the message"
        );
        // Entry 6 is committed here with term 1: the append would rewrite it.
        m.entries = vec![entry(6, 2)].into();
        let own = |committed| Own {
            term: 3,
            last_index: 6,
            committed,
            leads: false,
            term_at: |i: u64| (i <= 6).then_some(1),
        };
        assert!(check_against(&m, &own(6)).is_err());
        assert!(check_against(&m, &own(5)).is_ok());
    }

    #[test]
    fn terms_far_ahead_are_refused_once_the_replica_has_one() {
        let own = |term| Own {
            term,
            last_index: 8,
            committed: 8,
            leads: false,
            term_at: |_| None,
        };
        let far = msg(MessageType::MsgRequestVote, 10 + MAX_TERM_AHEAD + 1);
        assert!(check_against(&far, &own(10)).is_err());
        assert!(check_against(&far, &own(0)).is_ok());
        let mut hb = msg(MessageType::MsgHeartbeat, 3);
        hb.commit = 9;
        assert!(check_against(&hb, &own(3)).is_err());
        let transfer = msg(MessageType::MsgTransferLeader, 3);
        assert!(check_against(&transfer, &own(3)).is_err());
    }
}
