//! Seeded, reproducible simulation of one zone's Raft group: 3 voters and a
//! witness on real sled, over a network that drops, delays and partitions.
//! A failing run prints its seed; `NEXUS_SIM_SEED=N` replays it.

// Tests may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use nexus_kernel::sim::network::Faults;
use nexus_kernel::sim::{with_seed, SimCluster, TICK_EVERY};

const VOTERS: [u64; 3] = [1, 2, 3];
const WITNESS: [u64; 1] = [4];
/// Bound on an election, in steps: the longest fixed timeout (2x) plus slack.
const ELECTION_BOUND: u64 = 40 * TICK_EVERY;

fn cluster(seed: u64, faults: Faults) -> SimCluster {
    SimCluster::new(seed, &VOTERS, &WITNESS, faults).expect("cluster starts")
}

fn lossy() -> Faults {
    Faults {
        drop_rate: 0.05,
        min_delay: 1,
        max_delay: 8,
    }
}

fn settle(c: &mut SimCluster) {
    c.network().heal();
    c.network().set_faults(Faults::default());
    let done = c
        .run_until(20_000, |c| c.leader().is_some() && c.quiescent())
        .unwrap();
    assert!(done.is_some(), "cluster did not settle (seed {})", c.seed);
}

#[test]
fn elects_one_leader_and_never_the_witness() {
    for seed in 0..8 {
        with_seed(seed, |seed| {
            let mut c = cluster(seed, lossy());
            let steps = c
                .run_until(ELECTION_BOUND * 3, |c| c.leader().is_some())
                .unwrap();
            assert!(steps.is_some(), "no leader elected (seed {seed})");
            let leader = c.leader().unwrap();
            assert_ne!(leader, 4, "the witness must never lead");
        });
    }
}

#[test]
fn failover_after_the_leader_is_cut_off_loses_no_committed_entry() {
    with_seed(7, |seed| {
        let mut c = cluster(seed, Faults::default());
        c.run_until(ELECTION_BOUND, |c| c.leader().is_some())
            .unwrap()
            .expect("leader");
        let old = c.leader().unwrap();
        for _ in 0..30 {
            c.propose_create(old);
            c.step().unwrap();
        }
        c.run_until(500, |c| c.quiescent()).unwrap();
        let acked_before = c.acked.len();
        assert!(
            acked_before >= 25,
            "only {acked_before} of 30 acked on a clean network"
        );

        c.network().isolate(old, c.ids());
        let new = c
            .run_until(ELECTION_BOUND * 2, |c| c.leader().is_some_and(|l| l != old))
            .unwrap();
        assert!(
            new.is_some(),
            "no new leader after cutting off {old} (seed {seed})"
        );
        let new = c.leader().unwrap();
        assert_ne!(new, 4);
        // Writes to the cut-off leader cannot commit; writes to the new one do.
        let lost = c.propose_create(old);
        for _ in 0..30 {
            c.propose_create(new);
            c.step().unwrap();
        }
        settle(&mut c);
        assert!(c.acked.len() >= acked_before + 25);
        if let Some(name) = lost {
            assert!(
                !c.acked.contains(&name),
                "a minority write was acknowledged"
            );
        }
        c.check_converged().unwrap();
    });
}

#[test]
fn random_faults_crashes_and_partitions_lose_no_acknowledged_write() {
    for seed in 100..112 {
        with_seed(seed, |seed| {
            let mut c = cluster(seed, lossy());
            for _round in 0..6 {
                // A random fault for this round.
                let ids = c.ids();
                let victim = ids[c.random(ids.len() as u64) as usize];
                match c.random(3) {
                    0 => c.network().isolate(victim, ids.clone()),
                    1 => c.crash(victim),
                    _ => {}
                }
                for _ in 0..200 {
                    if let Some(l) = c.leader() {
                        if c.random(4) == 0 {
                            c.propose_create(l);
                        }
                    }
                    c.step().unwrap();
                }
                if !c.is_up(victim) {
                    c.restart(victim).unwrap();
                }
                c.network().heal();
            }
            settle(&mut c);
            let n = c
                .check_converged()
                .unwrap_or_else(|e| panic!("{e} (seed {seed})"));
            assert!(
                n > 20,
                "too few writes acknowledged to mean anything: {n} (seed {seed})"
            );
        });
    }
}

#[test]
fn a_lagging_replica_catches_up_from_a_snapshot() {
    with_seed(42, |seed| {
        let mut c = cluster(seed, Faults::default())
            .with_compaction(20, 5)
            .unwrap();
        c.run_until(ELECTION_BOUND, |c| c.leader().is_some())
            .unwrap()
            .expect("leader");
        let leader = c.leader().unwrap();
        let lagger = *c.voters().iter().find(|&&id| id != leader).unwrap();
        c.crash(lagger);
        for _ in 0..200 {
            if let Some(l) = c.leader() {
                c.propose_create(l);
            }
            c.step().unwrap();
        }
        c.run_until(2_000, |c| c.pending_is_empty()).unwrap();
        let first = c.replica(leader).unwrap().first_log_index();
        assert!(
            first > 50,
            "leader did not compact its log (first index {first})"
        );
        c.restart(lagger).unwrap();
        settle(&mut c);
        assert!(
            c.snapshots_installed(lagger) >= 1,
            "replica {lagger} caught up without a snapshot"
        );
        let n = c.check_converged().unwrap();
        assert!(n >= 150, "{n}");
    });
}

#[test]
fn a_seed_replays_the_same_run() {
    let fingerprint = |seed| {
        let mut c = cluster(seed, lossy());
        for _ in 0..600 {
            if let Some(l) = c.leader() {
                if c.random(3) == 0 {
                    c.propose_create(l);
                }
            }
            c.step().unwrap();
        }
        (c.trace.clone(), c.acked.clone(), c.network().counters())
    };
    let (a, b) = (fingerprint(9), fingerprint(9));
    assert_eq!(a, b, "same seed, different runs");
    assert!(a.1.len() > 10);
    assert_ne!(
        fingerprint(10).0,
        a.0,
        "different seeds gave identical traces"
    );
}
