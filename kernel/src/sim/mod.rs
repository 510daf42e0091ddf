//! A deterministic multi-replica harness for one zone's Raft group, in the
//! manner of raft-rs's own test `Network`: replicas are [`Replica`] cores on
//! real sled, messages travel a seeded [`SimNetwork`], and virtual time moves
//! only when the harness steps. The same seed replays the same run, so a
//! failure is reproduced from the seed it prints. Built with the `sim`
//! feature only (the kernel's own tests enable it).

pub mod network;

use std::collections::BTreeMap;
use std::path::PathBuf;

use raft::prelude::{Message, MessageType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::consensus::replica::{Replica, ReplicaConfig, Role};
use crate::consensus::transport::Transport;
use crate::error::Result;
use crate::types::{ReplicaId, ZoneId, ROOT_INO};
use crate::zone::command::{NewInode, ZoneCommand};
use crate::zone::state::StateDump;
use network::{Faults, SimNetwork};

/// Steps between two raft ticks.
pub const TICK_EVERY: u64 = 5;

struct SimNode {
    role: Role,
    dir: PathBuf,
    replica: Option<Replica>,
    snapshots_installed: u64,
}

/// A zone group of voters and witnesses in one process.
pub struct SimCluster {
    pub seed: u64,
    zone: ZoneId,
    net: SimNetwork,
    rng: ChaCha8Rng,
    _root: tempfile::TempDir,
    nodes: BTreeMap<ReplicaId, SimNode>,
    initial: Vec<(ReplicaId, Role)>,
    compact_after: u64,
    keep_entries: u64,
    now: u64,
    next_id: u64,
    next_ino: u64,
    /// proposal id -> (proposing replica, file name it creates)
    pending: BTreeMap<u64, (ReplicaId, String)>,
    /// File names whose creation the proposer saw succeed.
    pub acked: Vec<String>,
    /// The leader seen in each term (election safety: at most one).
    leaders: BTreeMap<u64, ReplicaId>,
    /// (step, leader, term, commit) per replica whenever it changes: the run's fingerprint.
    pub trace: Vec<(u64, ReplicaId, u64, u64)>,
    /// Messages were injected (`inject`): members may have lied.
    forged: bool,
}

fn scratch_dir() -> tempfile::TempDir {
    // fsync on tmpfs is cheap, which keeps long simulations fast.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

impl SimCluster {
    pub fn new(
        seed: u64,
        voters: &[ReplicaId],
        witnesses: &[ReplicaId],
        faults: Faults,
    ) -> Result<Self> {
        let root = scratch_dir();
        let mut initial: Vec<(ReplicaId, Role)> = voters
            .iter()
            .map(|id| (*id, Role::Voter))
            .chain(witnesses.iter().map(|id| (*id, Role::Witness)))
            .collect();
        initial.sort_unstable_by_key(|(id, _)| *id);
        let mut nodes = BTreeMap::new();
        for &id in voters.iter().chain(witnesses) {
            let role = if witnesses.contains(&id) {
                Role::Witness
            } else {
                Role::Voter
            };
            nodes.insert(
                id,
                SimNode {
                    role,
                    dir: root.path().join(format!("replica-{id}")),
                    replica: None,
                    snapshots_installed: 0,
                },
            );
        }
        let mut c = SimCluster {
            seed,
            zone: ZoneId::new("sim").expect("valid"),
            net: SimNetwork::new(seed, faults),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
            _root: root,
            nodes,
            initial,
            compact_after: 20_000,
            keep_entries: 5_000,
            now: 0,
            next_id: 1,
            next_ino: 100,
            pending: BTreeMap::new(),
            acked: Vec::new(),
            leaders: BTreeMap::new(),
            trace: Vec::new(),
            forged: false,
        };
        let ids: Vec<_> = c.nodes.keys().copied().collect();
        for id in ids {
            c.restart(id)?;
        }
        Ok(c)
    }

    /// Makes every replica compact aggressively (takes effect on restart).
    pub fn with_compaction(mut self, compact_after: u64, keep_entries: u64) -> Result<Self> {
        self.compact_after = compact_after;
        self.keep_entries = keep_entries;
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.crash(id);
            self.restart(id)?;
        }
        Ok(self)
    }

    pub fn network(&self) -> &SimNetwork {
        &self.net
    }

    pub fn ids(&self) -> Vec<ReplicaId> {
        self.nodes.keys().copied().collect()
    }

    pub fn voters(&self) -> Vec<ReplicaId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.role == Role::Voter)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops a replica abruptly; its sled files stay.
    pub fn crash(&mut self, id: ReplicaId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.replica = None;
        }
        self.pending.retain(|_, (p, _)| *p != id);
    }

    /// Starts a replica from what its sled files hold.
    pub fn restart(&mut self, id: ReplicaId) -> Result<()> {
        let node = self.nodes.get_mut(&id).expect("known replica");
        node.replica = None;
        // A replica crashed just now may still hold its lock a moment
        // (sled's threads let go after the handle).
        let db = crate::kernel::open_sled(&sled::Config::new().path(&node.dir), &node.dir)?;
        let tree = db.open_tree("zone")?;
        let mut cfg = ReplicaConfig::new(id, node.role);
        // Distinct fixed timeouts: reproducible, and split votes stay rare.
        cfg.fixed_election_timeout = Some(10 + 3 * id as usize);
        cfg.compact_after = self.compact_after;
        cfg.keep_entries = self.keep_entries;
        node.replica = Some(Replica::open(db, tree, cfg, &self.initial)?);
        Ok(())
    }

    pub fn is_up(&self, id: ReplicaId) -> bool {
        self.nodes[&id].replica.is_some()
    }

    pub fn replica(&self, id: ReplicaId) -> Option<&Replica> {
        self.nodes[&id].replica.as_ref()
    }

    pub fn snapshots_installed(&self, id: ReplicaId) -> u64 {
        self.nodes[&id].snapshots_installed
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<ReplicaId> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.replica.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.is_leader())
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| *id)
    }

    /// Proposes the creation of a fresh file on replica `on`. Returns its
    /// name if the replica accepted the proposal (it may still be lost).
    pub fn propose_create(&mut self, on: ReplicaId) -> Option<String> {
        let id = self.next_id;
        self.next_id += 1;
        self.next_ino += 1;
        let name = format!("f{id}");
        let cmd = ZoneCommand::Create {
            parent: ROOT_INO,
            name: name.clone(),
            ino: self.next_ino,
            new: NewInode::Regular,
            now: self.now as i64,
        };
        let replica = self.nodes.get_mut(&on)?.replica.as_mut()?;
        replica.propose(id, &cmd).ok()?;
        self.pending.insert(id, (on, name.clone()));
        Some(name)
    }

    fn bootstrap_root(&mut self) {
        // The first leader creates the root; later Inits are no-ops.
        if let Some(l) = self.leader() {
            let r = self.nodes.get_mut(&l).and_then(|n| n.replica.as_mut());
            if let Some(r) = r {
                if r.state().inode(ROOT_INO).ok().flatten().is_none() {
                    let _ = r.propose(
                        0,
                        &ZoneCommand::Init {
                            now: 0,
                            owners: vec![],
                        },
                    );
                }
            }
        }
    }

    /// One step of virtual time: deliver due messages, tick on schedule,
    /// then run every live replica's Ready loop.
    pub fn step(&mut self) -> Result<()> {
        self.now += 1;
        for m in self.net.deliver() {
            if let Some(r) = self.nodes.get_mut(&m.to).and_then(|n| n.replica.as_mut()) {
                r.step(m)?;
            }
        }
        let tick = self.now.is_multiple_of(TICK_EVERY);
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("known");
            let Some(r) = node.replica.as_mut() else {
                continue;
            };
            if tick {
                r.tick();
            }
            let out = r.on_ready()?;
            for m in &out.messages {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    r.report_snapshot(m.to, true);
                }
            }
            if out.installed_snapshot {
                node.snapshots_installed += 1;
            }
            let (term, commit, is_leader) = (r.term(), r.commit_index(), r.is_leader());
            self.net.send(&self.zone, out.messages);
            for (pid, _, result) in out.results {
                if let Some((proposer, name)) = self.pending.get(&pid) {
                    if *proposer == id {
                        if result.is_ok() {
                            self.acked.push(name.clone());
                        }
                        self.pending.remove(&pid);
                    }
                }
            }
            if is_leader && !self.forged {
                let prev = self.leaders.insert(term, id);
                assert!(
                    prev.is_none() || prev == Some(id),
                    "two leaders in term {term}: {prev:?} and {id} (seed {})",
                    self.seed
                );
                assert_eq!(
                    node.role,
                    Role::Voter,
                    "a witness became leader (seed {})",
                    self.seed
                );
            }
            if self
                .trace
                .iter()
                .rev()
                .find(|t| t.1 == id)
                .map(|t| (t.2, t.3))
                != Some((term, commit))
            {
                self.trace.push((self.now, id, term, commit));
            }
        }
        self.bootstrap_root();
        Ok(())
    }

    /// Steps `m` at its recipient as if it had come from the network (a
    /// forged or garbled message: admission tests). Raft's safety assumes
    /// honest members, so from now on the harness no longer asserts it
    /// (one leader per term); it still asserts that nothing panics.
    pub fn inject(&mut self, m: Message) -> Result<()> {
        self.forged = true;
        match self.nodes.get_mut(&m.to).and_then(|n| n.replica.as_mut()) {
            Some(r) => r.step(m),
            None => Ok(()),
        }
    }

    /// Messages `id`'s replica refused at admission so far.
    pub fn refused(&self, id: ReplicaId) -> u64 {
        self.replica(id).map_or(0, Replica::refused)
    }

    pub fn run(&mut self, steps: u64) -> Result<()> {
        for _ in 0..steps {
            self.step()?;
        }
        Ok(())
    }

    /// Steps until `pred` holds, at most `max` steps; returns the steps taken.
    pub fn run_until(
        &mut self,
        max: u64,
        mut pred: impl FnMut(&SimCluster) -> bool,
    ) -> Result<Option<u64>> {
        for n in 0..max {
            if pred(self) {
                return Ok(Some(n));
            }
            self.step()?;
        }
        Ok(pred(self).then_some(max))
    }

    /// A random number from the harness's own seeded generator.
    pub fn random(&mut self, below: u64) -> u64 {
        self.rng.gen_range(0..below)
    }

    /// Checks the end state: every live voter holds the same state, and every
    /// acknowledged create is in it. Returns the number of files checked.
    pub fn check_converged(&self) -> std::result::Result<usize, String> {
        let mut reference: Option<(ReplicaId, StateDump)> = None;
        for id in self.voters() {
            let Some(r) = self.replica(id) else { continue };
            let dump = r.state().dump().map_err(|e| e.to_string())?;
            for name in &self.acked {
                if r.state()
                    .dentry(ROOT_INO, name)
                    .map_err(|e| e.to_string())?
                    .is_none()
                {
                    return Err(format!("replica {id} lost acknowledged write {name}"));
                }
            }
            match &reference {
                None => reference = Some((id, dump)),
                Some((rid, d)) if *d != dump => {
                    return Err(format!("replicas {rid} and {id} diverge"));
                }
                Some(_) => {}
            }
        }
        Ok(self.acked.len())
    }

    /// Whether every proposal has come back, acknowledged or refused.
    pub fn pending_is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether every live replica has applied the same, latest commit.
    pub fn quiescent(&self) -> bool {
        let commits: Vec<_> = self
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| (r.commit_index(), r.state().applied_index().unwrap_or(0)))
            .collect();
        commits.windows(2).all(|w| w[0].0 == w[1].0) && commits.iter().all(|(c, a)| c == a)
    }
}

/// Runs `f` with a seed (from `NEXUS_SIM_SEED` if set, else `default`) and
/// prints the seed if it panics, so the failure can be replayed.
pub fn with_seed(default: u64, f: impl FnOnce(u64) + std::panic::UnwindSafe) {
    let seed = std::env::var("NEXUS_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    if let Err(panic) = std::panic::catch_unwind(move || f(seed)) {
        eprintln!("simulation failed with seed {seed}; replay with NEXUS_SIM_SEED={seed}");
        std::panic::resume_unwind(panic);
    }
}
