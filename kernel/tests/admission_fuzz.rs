//! Message admission under attack: arbitrary well-formed raft messages and
//! arbitrary bytes, claiming any sender and any term, stepped into a live
//! simulated group of three voters. No panic may escape a replica (raft-rs
//! panics on several shapes: admission stops them; what a lying member
//! can still provoke stops that replica alone, which reopens from disk),
//! and the group must still elect a leader and commit afterwards. Members may lie here
//! (Raft's safety assumes they do not; certificates decide who is a
//! member), so only liveness and the absence of panics are asserted.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]
// raft's protobuf messages are built field by field, as raft-rs does.
#![allow(clippy::field_reassign_with_default)]

use nexus_kernel::sim::network::Faults;
use nexus_kernel::sim::SimCluster;
use proptest::prelude::*;
use protobuf::{Message as _, ProtobufEnum};
use raft::prelude::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};

const VOTERS: [u64; 3] = [1, 2, 3];

fn small_or_any() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0..40u64,
        1 => any::<u64>(),
        1 => Just(u64::MAX - 1),
        1 => (1u64 << 48) - 2..(1u64 << 48) + 2,
    ]
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0..6u64, 0..4)
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        small_or_any(),
        0..20u64,
        0..3i32,
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(index, term, kind, data)| {
            let mut e = Entry::default();
            e.index = index;
            e.term = term;
            e.set_entry_type(EntryType::from_i32(kind).unwrap_or(EntryType::EntryNormal));
            e.data = data.into();
            e
        })
}

fn snapshot() -> impl Strategy<Value = Option<Snapshot>> {
    prop::option::of(
        (
            small_or_any(),
            0..20u64,
            ids(),
            ids(),
            ids(),
            ids(),
            any::<bool>(),
        )
            .prop_map(
                |(index, term, voters, learners, outgoing, next, auto_leave)| {
                    let mut cs = ConfState::default();
                    cs.voters = voters;
                    cs.learners = learners;
                    cs.voters_outgoing = outgoing;
                    cs.learners_next = next;
                    cs.auto_leave = auto_leave;
                    let mut s = Snapshot::default();
                    s.mut_metadata().index = index;
                    s.mut_metadata().term = term;
                    s.mut_metadata().set_conf_state(cs);
                    s
                },
            ),
    )
}

prop_compose! {
    fn message()(
        kind in 0..MessageType::values().len(),
        from in prop_oneof![4 => 1..4u64, 1 => 0..10u64],
        to in 1..4u64,
        term in small_or_any(),
        log_term in small_or_any(),
        index in small_or_any(),
        commit in small_or_any(),
        reject in any::<bool>(),
        reject_hint in small_or_any(),
        entries in prop::collection::vec(entry(), 0..4),
        snapshot in snapshot(),
        context in prop::collection::vec(any::<u8>(), 0..8),
    ) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::values()[kind]);
        m.from = from;
        m.to = to;
        m.term = term;
        m.log_term = log_term;
        m.index = index;
        m.commit = commit;
        m.reject = reject;
        m.reject_hint = reject_hint;
        m.entries = entries.into();
        if let Some(s) = snapshot {
            m.set_snapshot(s);
        }
        m.context = context.into();
        m
    }
}

fn elected(seed: u64) -> SimCluster {
    let mut c = SimCluster::new(seed, &VOTERS, &[], Faults::default()).unwrap();
    let led = c.run_until(20_000, |c| c.leader().is_some()).unwrap();
    assert!(led.is_some(), "no leader (seed {seed})");
    c
}

/// After the attack: the group still elects a leader and commits.
fn still_commits(c: &mut SimCluster) {
    let done = c.run_until(40_000, |c| c.leader().is_some()).unwrap();
    assert!(
        done.is_some(),
        "no leader after the attack (seed {})",
        c.seed
    );
    // Propose on whoever leads now and then, until one commits.
    let before = c.acked.len();
    for _ in 0..200 {
        if let Some(l) = c.leader() {
            c.propose_create(l);
        }
        if c.run_until(200, |c| c.acked.len() > before)
            .unwrap()
            .is_some()
        {
            return;
        }
    }
    panic!("nothing commits after the attack (seed {})", c.seed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn forged_messages_never_panic_a_replica(
        seed in 0..1000u64,
        attack in prop::collection::vec((message(), 0..4u64), 1..40),
    ) {
        let mut c = elected(seed);
        for (m, pause) in attack {
            let to = m.to;
            if c.inject(m).is_err() {
                // raft-rs panicked under a lying member: that replica
                // stops (the node does not) and reopens from disk.
                c.crash(to);
                c.restart(to).unwrap();
            }
            c.run(pause).unwrap();
        }
        still_commits(&mut c);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_replica(
        seed in 0..1000u64,
        blobs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..96), 1..40),
    ) {
        let mut c = elected(seed);
        for blob in blobs {
            if let Ok(mut m) = Message::parse_from_bytes(&blob) {
                // Addressed to a replica that exists, so it reaches one.
                m.to = 1 + m.to % 3;
                c.inject(m).unwrap();
                c.run(1).unwrap();
            }
        }
        still_commits(&mut c);
    }
}

#[test]
fn the_attacks_the_issue_reproduced_are_refused() {
    let mut c = elected(7);
    let leader = c.leader().unwrap();
    let victim = VOTERS.into_iter().find(|v| *v != leader).unwrap();
    let forged = |kind: MessageType, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(kind);
        m.from = leader;
        m.to = victim;
        m.term = term;
        m
    };
    // An empty proposal (raft-rs: "stepped empty MsgProp").
    let mut empty = forged(MessageType::MsgPropose, 0);
    empty.to = leader;
    empty.from = victim;
    c.inject(empty).unwrap();
    // A heartbeat with a term about to wrap, then an election.
    c.inject(forged(MessageType::MsgHeartbeat, u64::MAX - 1))
        .unwrap();
    c.inject(forged(MessageType::MsgHup, 0)).unwrap();
    assert_eq!(c.refused(leader) + c.refused(victim), 3);
    still_commits(&mut c);
}
