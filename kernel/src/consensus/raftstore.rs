//! `raft::Storage` on sled. The log shares the zone's tree with the state
//! machine, under the `r` prefix:
//!
//! | key            | value                                  |
//! |----------------|----------------------------------------|
//! | `r\0hs`        | HardState                              |
//! | `r\0cs`        | ConfState                              |
//! | `r\0trunc`     | (index, term) of the last compacted entry |
//! | `r\0roles`     | each member's role and incarnation      |
//! | `r\1` + be64 i | Entry i                                |
//!
//! Everything one Ready asks to persist goes into ONE `sled::Batch`, followed
//! by one flush, so a crash never leaves `commit` beyond the log and many
//! proposals share one flush (group commit).
//!
//! The one exception is a spooled snapshot larger than
//! [`SnapshotInstall::one_batch_up_to`]: it is written in steps of bounded
//! size under a durable note (`r\0installing`) naming its spool file, so a
//! crash part-way is finished at the next open, and only the final step
//! (log reset, hard state, applied index, the note's removal) shares the
//! Ready's batch. While it is being written, this replica's local reads
//! may see the state part-installed; its applied index moves only at the
//! end, so reads that wait for an index (linearizable ones) never do.

use protobuf::Message as _;
use raft::prelude::*;
use raft::{GetEntriesContext, RaftState, StorageError};

use std::collections::BTreeMap;
use std::io::Read;

use crate::consensus::replica::{MemberInfo, Role};
use crate::consensus::snapshot::{self, SnapshotReader, SnapshotWriter, SpoolDir};
use crate::error::{KernelError, Result};
use crate::types::ReplicaId;
use crate::zone::state::{keys, ZoneState};

const HS: &[u8] = b"r\x00hs";
const CS: &[u8] = b"r\x00cs";
const TRUNC: &[u8] = b"r\x00trunc";
const ROLES: &[u8] = b"r\x00roles";
const INSTALLING: &[u8] = b"r\x00installing";
/// Bytes of one step of a snapshot installed in steps.
const INSTALL_STEP: usize = 4 << 20;

/// Each member's role and incarnation, by node id.
pub type Roster = BTreeMap<ReplicaId, MemberInfo>;

fn entry_key(index: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = b'r';
    k[1] = 1;
    k[2..].copy_from_slice(&index.to_be_bytes());
    k
}

fn pb_err(e: protobuf::ProtobufError) -> KernelError {
    KernelError::Corrupt(format!("raft record: {e}"))
}

fn to_raft(e: KernelError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

/// How this replica installs snapshots received into a spool.
#[derive(Clone, Debug)]
pub struct SnapshotInstall {
    /// Where spooled snapshots are (none: only snapshots carried whole in
    /// their message are taken).
    pub spool: Option<SpoolDir>,
    /// A spooled snapshot up to this size is installed in the Ready's one
    /// batch (atomically, holding it in memory once); a larger one in
    /// steps.
    pub one_batch_up_to: u64,
}

impl Default for SnapshotInstall {
    fn default() -> Self {
        SnapshotInstall {
            spool: None,
            one_batch_up_to: 64 << 20,
        }
    }
}

/// Removals and insertions applied in batches of bounded size.
struct Steps<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    bytes: usize,
}

impl Steps<'_> {
    fn remove(&mut self, key: sled::IVec) -> Result<()> {
        self.bytes += key.len();
        self.batch.remove(key);
        self.maybe_apply()
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.bytes += key.len() + value.len();
        self.batch.insert(key, value);
        self.maybe_apply()
    }

    fn maybe_apply(&mut self) -> Result<()> {
        if self.bytes >= INSTALL_STEP {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<()> {
        self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        self.bytes = 0;
        Ok(())
    }
}

pub struct SledRaftStorage {
    tree: sled::Tree,
    /// `None` on a witness: it keeps the log but has no state machine.
    state: Option<ZoneState>,
    hs: HardState,
    cs: ConfState,
    roster: Roster,
    trunc_index: u64,
    trunc_term: u64,
    last_index: u64,
    install: SnapshotInstall,
}

impl SledRaftStorage {
    /// Opens the log in `tree`. On a brand-new tree, records `initial` (all
    /// voters) as the configuration: every replica of a group starts from
    /// the same one. An install a crash cut short is finished here.
    pub fn open(
        tree: sled::Tree,
        state: Option<ZoneState>,
        initial: &[(ReplicaId, Role)],
        install: SnapshotInstall,
    ) -> Result<Self> {
        let hs = match tree.get(HS)? {
            Some(v) => HardState::parse_from_bytes(&v).map_err(pb_err)?,
            None => HardState::default(),
        };
        let cs = match tree.get(CS)? {
            Some(v) => ConfState::parse_from_bytes(&v).map_err(pb_err)?,
            None => {
                let voters = initial.iter().map(|(id, _)| *id).collect::<Vec<_>>();
                let cs = ConfState::from((voters, vec![]));
                tree.insert(CS, cs.write_to_bytes().map_err(pb_err)?)?;
                cs
            }
        };
        let roster = match tree.get(ROLES)? {
            Some(v) => postcard::from_bytes(&v)?,
            None => {
                let roster: Roster = initial
                    .iter()
                    .map(|(id, role)| (*id, MemberInfo::first(*role)))
                    .collect();
                tree.insert(ROLES, postcard::to_allocvec(&roster)?)?;
                roster
            }
        };
        let (trunc_index, trunc_term) = match tree.get(TRUNC)? {
            Some(v) => postcard::from_bytes(&v)?,
            None => (0, 0),
        };
        let last_index = match tree.scan_prefix(b"r\x01").next_back() {
            Some(kv) => u64::from_be_bytes(kv?.0[2..].try_into().expect("8-byte index")),
            None => trunc_index,
        };
        let mut storage = SledRaftStorage {
            tree,
            state,
            hs,
            cs,
            roster,
            trunc_index,
            trunc_term,
            last_index,
            install,
        };
        storage.finish_interrupted_install()?;
        Ok(storage)
    }

    /// Redoes the install a crash interrupted, from its spool file.
    fn finish_interrupted_install(&mut self) -> Result<()> {
        let Some(note) = self.tree.get(INSTALLING)? else {
            return Ok(());
        };
        let (meta, name): (Vec<u8>, String) = postcard::from_bytes(&note)?;
        let mut snap = Snapshot::default();
        snap.set_metadata(SnapshotMetadata::parse_from_bytes(&meta).map_err(pb_err)?);
        snap.data = snapshot::marker_of(&name).into();
        tracing::info!(
            index = snap.get_metadata().index,
            "finishing an interrupted snapshot install"
        );
        let mut batch = sled::Batch::default();
        self.stage_snapshot(&mut batch, &snap)?;
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        if let Some(spool) = &self.install.spool {
            spool.remove(&name)?;
        }
        Ok(())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hs
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.cs
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn first(&self) -> u64 {
        self.trunc_index + 1
    }

    /// Stages one Ready's durable writes in `batch`: an incoming snapshot
    /// (installed over state and log), new entries (truncating any
    /// conflicting suffix), and the hard state.
    pub fn stage_ready(
        &mut self,
        batch: &mut sled::Batch,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<()> {
        if let Some(snap) = snapshot {
            self.stage_snapshot(batch, snap)?;
        }
        if let Some(first) = entries.first() {
            // Raft may overwrite a suffix: drop entries past the new tail.
            let new_last = entries.last().expect("non-empty").index;
            for idx in (new_last + 1)..=self.last_index.max(new_last) {
                batch.remove(&entry_key(idx));
            }
            for e in entries {
                batch.insert(&entry_key(e.index), e.write_to_bytes().map_err(pb_err)?);
            }
            debug_assert!(
                first.index > self.trunc_index,
                "append below the compaction point"
            );
            self.last_index = new_last;
        }
        if let Some(hs) = hs {
            self.hs = hs.clone();
            batch.insert(HS, hs.write_to_bytes().map_err(pb_err)?);
        }
        Ok(())
    }

    fn stage_snapshot(&mut self, batch: &mut sled::Batch, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        for kv in self.tree.scan_prefix(b"r\x01") {
            batch.remove(kv?.0);
        }
        self.roster = match snapshot::spooled_name(&snap.data) {
            None => self.fill_one_batch(batch, &snap.data[..])?,
            Some(name) => {
                let spool = self.install.spool.as_ref().ok_or_else(|| {
                    KernelError::Corrupt(
                        "a spooled snapshot reached a replica with no spool".into(),
                    )
                })?;
                let (len, file) = spool.reader(name)?;
                if len <= self.install.one_batch_up_to {
                    self.fill_one_batch(batch, file)?
                } else {
                    // A durable note first: from here a crash is redone.
                    let note = (meta.write_to_bytes().map_err(pb_err)?, name);
                    self.tree
                        .insert(INSTALLING, postcard::to_allocvec(&note)?)?;
                    self.tree.flush()?;
                    self.fill_in_steps(file)?
                }
            }
        };
        batch.remove(INSTALLING);
        batch.insert(ROLES, postcard::to_allocvec(&self.roster)?);
        // The snapshot's own applied index rides in its pairs; a witness
        // records it directly.
        batch.insert(crate::zone::state::keys::APPLIED, &meta.index.to_be_bytes());
        self.trunc_index = meta.index;
        self.trunc_term = meta.term;
        self.last_index = meta.index;
        self.hs.term = self.hs.term.max(meta.term);
        self.hs.commit = meta.index;
        self.cs = meta.get_conf_state().clone();
        batch.insert(TRUNC, postcard::to_allocvec(&(meta.index, meta.term))?);
        batch.insert(HS, self.hs.write_to_bytes().map_err(pb_err)?);
        batch.insert(CS, self.cs.write_to_bytes().map_err(pb_err)?);
        Ok(())
    }

    /// Stages in `batch` the replacement of the state by the payload's
    /// records; returns the payload's roster. A witness keeps no state.
    fn fill_one_batch(&self, batch: &mut sled::Batch, payload: impl Read) -> Result<Roster> {
        let (roster, mut records) = SnapshotReader::open(payload)?;
        if self.state.is_some() {
            for kv in self.tree.scan_prefix(keys::STATE_PREFIX) {
                batch.remove(kv?.0);
            }
            while let Some((k, v)) = records.pair()? {
                batch.insert(k, v);
            }
        }
        Ok(roster)
    }

    /// Replaces the state by the payload's records in steps of bounded
    /// size, all but the applied index (which the final batch sets).
    fn fill_in_steps(&self, payload: impl Read) -> Result<Roster> {
        let (roster, mut records) = SnapshotReader::open(payload)?;
        if self.state.is_none() {
            return Ok(roster);
        }
        let mut steps = Steps {
            tree: &self.tree,
            batch: sled::Batch::default(),
            bytes: 0,
        };
        for kv in self.tree.scan_prefix(keys::STATE_PREFIX) {
            let key = kv?.0;
            if key != keys::APPLIED {
                steps.remove(key)?;
            }
        }
        // Every removal lands before the first insertion of the same key.
        steps.apply()?;
        while let Some((k, v)) = records.pair()? {
            if k != keys::APPLIED {
                steps.insert(k, v)?;
            }
        }
        steps.apply()?;
        Ok(roster)
    }

    /// Records a configuration produced by an applied conf change.
    pub fn set_conf_state(&mut self, cs: ConfState, roster: Roster) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(CS, cs.write_to_bytes().map_err(pb_err)?);
        batch.insert(ROLES, postcard::to_allocvec(&roster)?);
        self.tree.apply_batch(batch)?;
        self.cs = cs;
        self.roster = roster;
        Ok(())
    }

    /// Records a commit index learned after the Ready was persisted. It needs
    /// no flush of its own: commit can always be re-learned from the leader,
    /// and it never exceeds the already flushed log.
    pub fn set_commit(&mut self, commit: u64) -> Result<()> {
        self.hs.commit = commit;
        self.tree
            .insert(HS, self.hs.write_to_bytes().map_err(pb_err)?)?;
        Ok(())
    }

    /// Discards entries up to and including `index` (which must be applied).
    pub fn compact(&mut self, index: u64) -> Result<()> {
        if index <= self.trunc_index {
            return Ok(());
        }
        assert!(index <= self.last_index, "compact past the end of the log");
        let term = self.term_of(index)?;
        let mut batch = sled::Batch::default();
        for kv in self
            .tree
            .range(entry_key(self.trunc_index + 1)..=entry_key(index))
        {
            batch.remove(kv?.0);
        }
        batch.insert(TRUNC, postcard::to_allocvec(&(index, term))?);
        self.tree.apply_batch(batch)?;
        self.trunc_index = index;
        self.trunc_term = term;
        Ok(())
    }

    fn term_of(&self, idx: u64) -> Result<u64> {
        match self.tree.get(entry_key(idx))? {
            Some(v) => Ok(Entry::parse_from_bytes(&v).map_err(pb_err)?.term),
            None => Err(KernelError::Corrupt(format!("raft entry {idx} missing"))),
        }
    }
}

impl Storage for SledRaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hs.clone(), self.cs.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.trunc_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        for kv in self.tree.range(entry_key(low)..entry_key(high)) {
            let (_, v) = kv.map_err(|e| to_raft(e.into()))?;
            let e = Entry::parse_from_bytes(&v).map_err(|e| to_raft(pb_err(e)))?;
            size += e.compute_size() as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.trunc_index {
            return Ok(self.trunc_term);
        }
        if idx < self.trunc_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        self.term_of(idx).map_err(to_raft)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.trunc_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    /// Builds a snapshot of the state machine as applied now. Only replicas
    /// with a state machine lead, so a witness is never asked.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let state = self.state.as_ref().ok_or(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))?;
        let applied = state.applied_index().map_err(to_raft)?;
        if applied < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let payload = || -> Result<Vec<u8>> {
            let mut w = SnapshotWriter::new(Vec::new(), &self.roster)?;
            for kv in state.pairs() {
                let (k, v) = kv?;
                w.pair(&k, &v)?;
            }
            w.finish()
        };
        let mut snap = Snapshot {
            data: payload().map_err(to_raft)?.into(),
            ..Snapshot::default()
        };
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = self.term(applied)?;
        meta.set_conf_state(self.cs.clone());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Entry::default()
        }
    }

    fn members() -> Vec<(ReplicaId, Role)> {
        vec![(1, Role::Voter), (2, Role::Voter), (3, Role::Voter)]
    }

    fn conf() -> ConfState {
        ConfState::from((vec![1, 2, 3], vec![]))
    }

    #[test]
    fn restart_recovers_log_hard_state_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let mut s = SledRaftStorage::open(
                db.open_tree("z").unwrap(),
                None,
                &members(),
                SnapshotInstall::default(),
            )
            .unwrap();
            let mut b = sled::Batch::default();
            let hs = HardState {
                term: 2,
                commit: 3,
                vote: 1,
                ..HardState::default()
            };
            s.stage_ready(
                &mut b,
                None,
                &[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)],
                Some(&hs),
            )
            .unwrap();
            db.open_tree("z").unwrap().apply_batch(b).unwrap();
            s.compact(2).unwrap();
            db.flush().unwrap();
        }
        // sled's background threads may hold the directory's lock for a
        // moment after the handle above is dropped.
        let db = (0..100)
            .find_map(|_| {
                sled::open(dir.path())
                    .map_err(|_| std::thread::sleep(std::time::Duration::from_millis(10)))
                    .ok()
            })
            .expect("reopen the database");
        let s = SledRaftStorage::open(
            db.open_tree("z").unwrap(),
            None,
            &[],
            SnapshotInstall::default(),
        )
        .unwrap();
        assert_eq!(s.hard_state().commit, 3);
        assert_eq!(s.hard_state().vote, 1);
        assert_eq!(s.conf_state(), &conf());
        assert_eq!(Storage::first_index(&s).unwrap(), 3);
        assert_eq!(Storage::last_index(&s).unwrap(), 4);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(s.term(1).is_err());
        let got = s
            .entries(3, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn a_conflicting_append_truncates_the_suffix() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("z").unwrap();
        let mut s =
            SledRaftStorage::open(tree.clone(), None, &members(), SnapshotInstall::default())
                .unwrap();
        let mut b = sled::Batch::default();
        s.stage_ready(&mut b, None, &[entry(1, 1), entry(2, 1), entry(3, 1)], None)
            .unwrap();
        tree.apply_batch(b).unwrap();
        let mut b = sled::Batch::default();
        s.stage_ready(&mut b, None, &[entry(2, 2)], None).unwrap();
        tree.apply_batch(b).unwrap();
        assert_eq!(Storage::last_index(&s).unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(s
            .entries(3, 4, None, GetEntriesContext::empty(false))
            .is_err());
        let reopened =
            SledRaftStorage::open(tree, None, &members(), SnapshotInstall::default()).unwrap();
        assert_eq!(Storage::last_index(&reopened).unwrap(), 2);
    }

    /// A spooled snapshot with `pairs` at (index 100, term 3).
    fn spooled_snapshot(
        spool: &SpoolDir,
        pairs: &[(Vec<u8>, Vec<u8>)],
    ) -> (Snapshot, snapshot::Spooled) {
        let roster: Roster = members()
            .into_iter()
            .map(|(id, role)| (id, MemberInfo::first(role)))
            .collect();
        let mut w = SnapshotWriter::new(Vec::new(), &roster).unwrap();
        for (k, v) in pairs {
            w.pair(k, v).unwrap();
        }
        let mut file = spool.create("z").unwrap();
        file.write(&w.finish().unwrap()).unwrap();
        let spooled = file.finish().unwrap();
        let mut snap = Snapshot {
            data: spooled.marker().into(),
            ..Snapshot::default()
        };
        snap.mut_metadata().index = 100;
        snap.mut_metadata().term = 3;
        snap.mut_metadata().set_conf_state(conf());
        (snap, spooled)
    }

    fn state_of(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        ZoneState::new(tree.clone()).dump().unwrap()
    }

    #[test]
    fn a_large_spooled_snapshot_installs_in_steps_and_a_crash_part_way_is_finished_at_open() {
        let home = tempfile::tempdir().unwrap();
        let spool = SpoolDir::open(home.path()).unwrap();
        let install = SnapshotInstall {
            spool: Some(spool.clone()),
            one_batch_up_to: 0,
        };
        // 12 MiB of records: three steps.
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..48u32)
            .map(|i| {
                (
                    format!("s\x01k{i:02}").into_bytes(),
                    vec![i as u8; 256 << 10],
                )
            })
            .collect();
        pairs.push((keys::APPLIED.to_vec(), 100u64.to_be_bytes().to_vec()));
        pairs.sort();
        let open = |tree: &sled::Tree| {
            let state = Some(ZoneState::new(tree.clone()));
            SledRaftStorage::open(tree.clone(), state, &members(), install.clone()).unwrap()
        };
        let db = sled::Config::new().temporary(true).open().unwrap();
        let files = || std::fs::read_dir(spool.path()).unwrap().count();

        // Installed whole: the old state and log are gone, the new state is
        // the snapshot's, and its file goes with its handle.
        let tree = db.open_tree("whole").unwrap();
        tree.insert(b"s\x01old", b"x").unwrap();
        tree.insert(b"s\x01k07", b"old value").unwrap();
        let mut s = open(&tree);
        let mut b = sled::Batch::default();
        s.stage_ready(&mut b, None, &[entry(1, 1), entry(2, 1)], None)
            .unwrap();
        tree.apply_batch(b).unwrap();
        let (snap, spooled) = spooled_snapshot(&spool, &pairs);
        let mut b = sled::Batch::default();
        s.stage_ready(&mut b, Some(&snap), &[], None).unwrap();
        tree.apply_batch(b).unwrap();
        drop(spooled);
        assert_eq!(state_of(&tree), pairs);
        assert_eq!(Storage::first_index(&s).unwrap(), 101);
        assert_eq!(s.hard_state().commit, 100);
        assert!(tree.get(INSTALLING).unwrap().is_none());
        assert_eq!(files(), 0);

        // Cut short after the steps, before the Ready's batch: the note
        // and the file remain, and the next open finishes the install.
        let tree = db.open_tree("cut").unwrap();
        tree.insert(b"s\x01old", b"x").unwrap();
        let mut s = open(&tree);
        let (snap, spooled) = spooled_snapshot(&spool, &pairs);
        let mut b = sled::Batch::default();
        s.stage_ready(&mut b, Some(&snap), &[], None).unwrap();
        drop(b);
        spooled.keep();
        assert!(tree.get(INSTALLING).unwrap().is_some());
        assert_ne!(ZoneState::new(tree.clone()).applied_index().unwrap(), 100);
        let s = open(&tree);
        assert_eq!(state_of(&tree), pairs);
        assert_eq!(s.hard_state().commit, 100);
        assert_eq!(Storage::first_index(&s).unwrap(), 101);
        assert!(tree.get(INSTALLING).unwrap().is_none());
        assert_eq!(files(), 0);

        // Within the one-batch bound, the same snapshot installs atomically.
        let tree = db.open_tree("one").unwrap();
        let state = Some(ZoneState::new(tree.clone()));
        let mut s = SledRaftStorage::open(
            tree.clone(),
            state,
            &members(),
            SnapshotInstall {
                spool: Some(spool.clone()),
                one_batch_up_to: u64::MAX,
            },
        )
        .unwrap();
        let (snap, _spooled) = spooled_snapshot(&spool, &pairs);
        let mut b = sled::Batch::default();
        s.stage_ready(&mut b, Some(&snap), &[], None).unwrap();
        assert!(state_of(&tree).is_empty(), "nothing lands before the batch");
        tree.apply_batch(b).unwrap();
        assert_eq!(state_of(&tree), pairs);
    }
}
