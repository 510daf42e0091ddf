//! The simulation's network: seeded drop, delay and partition between
//! replicas in one process, stepped by the harness.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

use raft::prelude::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::consensus::transport::Transport;
use crate::types::{ReplicaId, ZoneId};

/// Fault settings of a [`SimNetwork`].
#[derive(Debug, Clone)]
pub struct Faults {
    /// Probability in [0, 1) that a message is lost.
    pub drop_rate: f64,
    /// Each message is delayed by a uniform number of steps in `[min_delay, max_delay]`.
    pub min_delay: u64,
    pub max_delay: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            drop_rate: 0.0,
            min_delay: 1,
            max_delay: 1,
        }
    }
}

struct Net {
    rng: ChaCha8Rng,
    faults: Faults,
    now: u64,
    seq: u64,
    cut: HashSet<(ReplicaId, ReplicaId)>,
    in_flight: BinaryHeap<Reverse<(u64, u64, MsgBox)>>,
    sent: u64,
    dropped: u64,
}

/// A message in flight, ordered only by the (time, seq) key around it.
struct MsgBox(Message);

impl PartialEq for MsgBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for MsgBox {}
impl PartialOrd for MsgBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MsgBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// A deterministic in-memory network for one zone's replicas. Every random
/// choice comes from one seeded generator, and time advances only when the
/// harness says so, so a seed replays a run exactly.
pub struct SimNetwork {
    net: Mutex<Net>,
}

impl SimNetwork {
    pub fn new(seed: u64, faults: Faults) -> Self {
        SimNetwork {
            net: Mutex::new(Net {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults,
                now: 0,
                seq: 0,
                cut: HashSet::new(),
                in_flight: BinaryHeap::new(),
                sent: 0,
                dropped: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Net> {
        self.net.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: ReplicaId, b: ReplicaId) {
        let mut n = self.lock();
        n.cut.insert((a, b));
        n.cut.insert((b, a));
    }

    /// Cuts `id` off from every replica in `others`.
    pub fn isolate(&self, id: ReplicaId, others: impl IntoIterator<Item = ReplicaId>) {
        for o in others {
            if o != id {
                self.cut(id, o);
            }
        }
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Advances time by one step and returns the messages now due, in a
    /// deterministic order. Messages across a cut link are lost on delivery.
    pub fn deliver(&self) -> Vec<Message> {
        let mut n = self.lock();
        n.now += 1;
        let mut due = Vec::new();
        while let Some(Reverse((at, _, _))) = n.in_flight.peek() {
            if *at > n.now {
                break;
            }
            let Reverse((_, _, MsgBox(m))) = n.in_flight.pop().expect("peeked");
            if n.cut.contains(&(m.from, m.to)) {
                n.dropped += 1;
            } else {
                due.push(m);
            }
        }
        due
    }

    /// (sent, dropped) so far.
    pub fn counters(&self) -> (u64, u64) {
        let n = self.lock();
        (n.sent, n.dropped)
    }
}

impl Transport for SimNetwork {
    fn send(&self, _zone: &ZoneId, mut msgs: Vec<Message>) {
        // raft-rs may emit messages for different peers in hash-map order;
        // a stable sort by recipient keeps each peer's own order and makes
        // the interleaving independent of the hasher.
        msgs.sort_by_key(|m| m.to);
        let mut n = self.lock();
        for m in msgs {
            n.sent += 1;
            if n.cut.contains(&(m.from, m.to)) {
                n.dropped += 1;
                continue;
            }
            let drop_rate = n.faults.drop_rate;
            if drop_rate > 0.0 && n.rng.gen_bool(drop_rate) {
                n.dropped += 1;
                continue;
            }
            let (lo, hi) = (
                n.faults.min_delay,
                n.faults.max_delay.max(n.faults.min_delay),
            );
            let at = n.now + n.rng.gen_range(lo..=hi);
            n.seq += 1;
            let seq = n.seq;
            n.in_flight.push(Reverse((at, seq, MsgBox(m))));
        }
    }
}
