//! One replica of one zone: a raft-rs `RawNode` over [`SledRaftStorage`] plus
//! the zone state machine. Like raft-rs itself, it does no I/O beyond its own
//! sled tree: messages go out as values, time comes in as `tick()`. The
//! threaded driver and the deterministic simulation both drive this core.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use protobuf::Message as _;
use raft::prelude::*;
use raft::StateRole;

use crate::consensus::admission;
use crate::consensus::raftstore::{SledRaftStorage, SnapshotInstall};
use crate::consensus::snapshot::{self, Spooled};
use crate::error::{KernelError, Result};
use crate::types::ReplicaId;
use crate::zone::command::{Applied, ZoneCommand};
use crate::zone::state::ZoneState;

/// How a replica participates in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Votes, keeps the log, runs the state machine, may lead.
    Voter,
    /// Votes and keeps the log; no state machine, never campaigns.
    Witness,
}

/// A member of a zone's group: its role, and which replica on its node it
/// is. Replica ids are node ids, so a node removed and added again keeps
/// its id; the incarnation (random, chosen when the node's replica is
/// created; 0 for a group's first members, whose replicas were created
/// together) tells the new replica's messages from the old one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    pub role: Role,
    pub incarnation: u64,
}

impl MemberInfo {
    pub fn first(role: Role) -> Self {
        MemberInfo {
            role,
            incarnation: 0,
        }
    }

    /// How a conf change describes the replica it adds.
    pub fn to_context(self) -> Vec<u8> {
        postcard::to_allocvec(&self).unwrap_or_default()
    }

    fn from_context(ctx: &[u8]) -> Self {
        postcard::from_bytes(ctx).unwrap_or(MemberInfo::first(Role::Voter))
    }
}

/// The members of a zone's group (voters and learners, with their roles) as
/// this replica knows them, including members added by conf changes it has
/// appended but not yet applied. Shared with the kernel, which admits peers'
/// messages by it; the driver thread updates it.
#[derive(Clone, Default)]
pub struct Members(Arc<RwLock<BTreeMap<ReplicaId, MemberInfo>>>);

impl Members {
    #[cfg(any(test, feature = "sim"))]
    pub fn contains(&self, id: ReplicaId) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
    }

    pub fn role(&self, id: ReplicaId) -> Option<Role> {
        self.info(id).map(|m| m.role)
    }

    pub fn info(&self, id: ReplicaId) -> Option<MemberInfo> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn set(&self, members: BTreeMap<ReplicaId, MemberInfo>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = members;
    }
}

/// The nodes a conf change adds, as its context describes them.
fn additions(e: &Entry) -> Vec<(ReplicaId, MemberInfo)> {
    match decode_conf_change(e) {
        Ok(cc) => {
            let info = MemberInfo::from_context(&cc.context);
            cc.changes
                .iter()
                .filter(|c| c.get_change_type() != ConfChangeType::RemoveNode)
                .map(|c| (c.node_id, info))
                .collect()
        }
        Err(_) => Vec::new(),
    }
}

fn decode_conf_change(e: &Entry) -> Result<ConfChangeV2> {
    let corrupt =
        |err: protobuf::ProtobufError| KernelError::Corrupt(format!("conf change: {err}"));
    if e.get_entry_type() == EntryType::EntryConfChange {
        let cc = ConfChange::parse_from_bytes(&e.data).map_err(corrupt)?;
        let mut single = ConfChangeSingle::default();
        single.set_change_type(cc.get_change_type());
        single.node_id = cc.node_id;
        let mut v2 = ConfChangeV2::default();
        v2.set_changes(vec![single].into());
        v2.context = cc.context;
        Ok(v2)
    } else {
        ConfChangeV2::parse_from_bytes(&e.data).map_err(corrupt)
    }
}

/// Tunables of one replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: ReplicaId,
    pub role: Role,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Fix the randomized election timeout to `[min, min + 1)` ticks so a
    /// simulation is reproducible (raft-rs otherwise draws from thread_rng).
    pub fixed_election_timeout: Option<usize>,
    /// Compact the log once this many applied entries sit before the tail kept.
    pub compact_after: u64,
    /// Entries kept behind the applied index after compaction, for slow followers.
    pub keep_entries: u64,
    /// Where snapshots received into a spool are, and how they install.
    pub snapshots: SnapshotInstall,
}

impl ReplicaConfig {
    pub fn new(id: ReplicaId, role: Role) -> Self {
        ReplicaConfig {
            id,
            role,
            election_tick: 10,
            heartbeat_tick: 2,
            fixed_election_timeout: None,
            compact_after: 20_000,
            keep_entries: 5_000,
            snapshots: SnapshotInstall::default(),
        }
    }
}

/// What one pass of the Ready loop produced for the caller.
#[derive(Default)]
pub struct ReadyOutput {
    /// Messages for other replicas, in the order raft-rs emitted them.
    pub messages: Vec<Message>,
    /// Results of applied entries that carried a proposal id: (id, the
    /// entry's index, result).
    pub results: Vec<(u64, u64, Result<Applied>)>,
    /// Commands applied (refused ones left out), in order, with their
    /// proposal id if they carried one: what the change feed is told.
    pub commands: Vec<(Option<u64>, ZoneCommand)>,
    /// Whether this pass installed a snapshot.
    pub installed_snapshot: bool,
    /// Answered ReadIndex requests: (request id, index to wait for).
    pub reads: Vec<(u64, u64)>,
    /// Whether this pass applied a membership change.
    pub membership_changed: bool,
}

pub struct Replica {
    raw: RawNode<SledRaftStorage>,
    db: sled::Db,
    tree: sled::Tree,
    state: ZoneState,
    cfg: ReplicaConfig,
    members: Members,
    /// Nodes added by appended, not yet applied, conf changes.
    pending_adds: Vec<(u64, ReplicaId, MemberInfo)>,
    /// Peers' messages refused by admission.
    refused: u64,
    /// Spooled snapshots raft-rs took, until a Ready installs them.
    spooled: Vec<Spooled>,
    /// raft-rs panicked stepping a message: its memory is not to be
    /// trusted, the replica must be reopened.
    poisoned: bool,
    /// A command proposed since the last flush must be durable when its
    /// proposer hears of it (see [`Replica::must_flush`]).
    flush_due: bool,
}

impl Replica {
    /// Opens (or creates) the replica stored in `tree`. A new group starts
    /// with `initial` (all voters) as its configuration on every member; a
    /// replica added later to a running group starts from the same initial
    /// configuration (without itself) and learns the rest from the log or
    /// a snapshot.
    pub fn open(
        db: sled::Db,
        tree: sled::Tree,
        cfg: ReplicaConfig,
        initial: &[(ReplicaId, Role)],
    ) -> Result<Self> {
        let state = ZoneState::new(tree.clone());
        let sm = (cfg.role == Role::Voter).then(|| state.clone());
        let storage = SledRaftStorage::open(tree.clone(), sm, initial, cfg.snapshots.clone())?;
        let mut rc = Config::new(cfg.id);
        rc.heartbeat_tick = cfg.heartbeat_tick;
        rc.election_tick = cfg.election_tick;
        rc.applied = state.applied_index()?.min(storage.hard_state().commit);
        rc.pre_vote = true;
        rc.check_quorum = true;
        rc.max_size_per_msg = 1 << 20;
        rc.max_inflight_msgs = 256;
        match (cfg.role, cfg.fixed_election_timeout) {
            // A witness never campaigns: its timeout is out of reach.
            (Role::Witness, _) => {
                rc.min_election_tick = usize::MAX / 4;
                rc.max_election_tick = usize::MAX / 4 + 1;
            }
            (Role::Voter, Some(t)) => {
                rc.min_election_tick = t.max(cfg.election_tick);
                rc.max_election_tick = rc.min_election_tick + 1;
            }
            (Role::Voter, None) => {}
        }
        rc.validate()
            .map_err(|e| KernelError::Invalid(format!("raft config: {e}")))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw =
            RawNode::new(&rc, storage, &logger).map_err(|e| KernelError::Storage(e.to_string()))?;
        let mut replica = Replica {
            raw,
            db,
            tree,
            state,
            cfg,
            members: Members::default(),
            pending_adds: Vec::new(),
            refused: 0,
            spooled: Vec::new(),
            poisoned: false,
            flush_due: false,
        };
        replica.publish_members();
        Ok(replica)
    }

    /// The group's members as this replica knows them (updated as conf
    /// changes are appended and applied).
    pub fn members(&self) -> Members {
        self.members.clone()
    }

    fn publish_members(&mut self) {
        let applied = self.raw.raft.raft_log.applied;
        self.pending_adds.retain(|(index, _, _)| *index > applied);
        let mut members = self.raw.store().roster().clone();
        for (_, node, info) in &self.pending_adds {
            members.entry(*node).or_insert(*info);
        }
        self.members.set(members);
    }

    pub fn id(&self) -> ReplicaId {
        self.cfg.id
    }

    #[cfg(any(test, feature = "sim"))]
    pub fn state(&self) -> &ZoneState {
        &self.state
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> ReplicaId {
        self.raw.raft.leader_id
    }

    #[cfg(any(test, feature = "sim"))]
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    #[cfg(any(test, feature = "sim"))]
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn applied_index(&self) -> u64 {
        self.raw.raft.raft_log.applied
    }

    /// This replica's view of the group, for `nexus zone status`.
    pub fn status(&self) -> crate::consensus::driver::ZoneStatus {
        let raft = &self.raw.raft;
        let commit = raft.raft_log.committed;
        let mut progress: Vec<_> = if self.is_leader() {
            raft.prs()
                .iter()
                .map(|(id, pr)| crate::consensus::driver::ReplicaProgress {
                    replica: *id,
                    matched: pr.matched,
                    lag: commit.saturating_sub(pr.matched),
                })
                .collect()
        } else {
            Vec::new()
        };
        progress.sort_by_key(|p| p.replica);
        let cs = self.raw.store().conf_state();
        let mut voters = cs.voters.clone();
        voters.sort_unstable();
        let mut learners = cs.learners.clone();
        learners.sort_unstable();
        let witnesses = self
            .raw
            .store()
            .roster()
            .iter()
            .filter(|(_, m)| m.role == Role::Witness)
            .map(|(id, _)| *id)
            .collect();
        crate::consensus::driver::ZoneStatus {
            replica: self.cfg.id,
            role: match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            }
            .to_owned(),
            leader: raft.leader_id,
            term: raft.term,
            commit,
            applied: raft.raft_log.applied,
            voters,
            learners,
            witnesses,
            progress,
        }
    }

    /// Whether this replica may stop ticking after `idle_ticks` ticks with
    /// no activity (an idle zone sends nothing, not even heartbeats). Only
    /// a settled group sleeps: a leader whose every member has the whole
    /// log and whose log is committed, or a follower that knows its leader
    /// and has applied what it committed. Followers fall asleep first
    /// (after 10 election timeouts, while heartbeats still come), the leader
    /// later (20), so no follower's election timer runs out meanwhile. Any
    /// activity wakes a replica: a proposal, a read index, a message other
    /// than a heartbeat.
    pub fn may_sleep(&self, idle_ticks: u64) -> bool {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        let committed = raft.raft_log.committed;
        let timeouts = idle_ticks / self.cfg.election_tick.max(1) as u64;
        match raft.state {
            StateRole::Leader => {
                timeouts >= 20
                    && committed == last
                    && raft.prs().iter().all(|(_, pr)| pr.matched == last)
            }
            StateRole::Follower => {
                timeouts >= 10 && raft.leader_id != 0 && raft.raft_log.applied == committed
            }
            StateRole::Candidate | StateRole::PreCandidate => false,
        }
    }

    #[cfg(any(test, feature = "sim"))]
    pub fn first_log_index(&self) -> u64 {
        self.raw.store().first()
    }

    /// Whether this replica alone is a quorum (the embedded single-node case).
    pub fn is_sole_voter(&self) -> bool {
        let cs = self.raw.store().conf_state();
        cs.voters == [self.cfg.id] && cs.learners.is_empty()
    }

    pub fn campaign(&mut self) -> Result<()> {
        self.raw
            .campaign()
            .map_err(|e| KernelError::Unavailable(format!("campaign: {e}")))
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    /// Steps a peer's message, if it passes admission (its shape, and
    /// against this replica's term and log); a refused one is dropped and
    /// counted, and raft-rs never sees it.
    pub fn step(&mut self, msg: Message) -> Result<()> {
        self.admit_and_step(msg, false)
    }

    /// Steps a MsgSnapshot whose payload was received into the spool
    /// (checked whole there); the message carries a marker naming it.
    pub fn step_spooled(&mut self, mut msg: Message, spooled: Spooled) -> Result<()> {
        let marker = spooled.marker();
        msg.mut_snapshot().data = marker.clone().into();
        self.admit_and_step(msg, true)?;
        // Kept only if raft-rs took it: the next Ready installs it.
        let taken = self.raw.raft.raft_log.unstable_snapshot().as_ref();
        if taken.is_some_and(|s| s.data[..] == marker[..]) {
            self.spooled.push(spooled);
        }
        Ok(())
    }

    fn admit_and_step(&mut self, msg: Message, spooled: bool) -> Result<()> {
        let admitted = admission::check(&msg).and_then(|()| {
            let raft = &self.raw.raft;
            let own = admission::Own {
                term: raft.term,
                last_index: raft.raft_log.last_index(),
                committed: raft.raft_log.committed,
                leads: raft.state == StateRole::Leader,
                term_at: |i| raft.raft_log.term(i).ok(),
            };
            admission::check_against(&msg, &own)
        });
        let admitted = admitted.and_then(|()| {
            let data = &msg.get_snapshot().data;
            let garbled = msg.get_msg_type() == MessageType::MsgSnapshot
                && match spooled {
                    true => snapshot::spooled_name(data).is_none(),
                    false => !snapshot::decodes(data),
                };
            match garbled {
                true => Err(admission::Refused("a snapshot that does not decode".into())),
                false => Ok(()),
            }
        });
        if let Err(refused) = admitted {
            self.refused += 1;
            tracing::debug!(from = msg.from, "refused a raft message: {refused}");
            return Ok(());
        }
        let from = msg.from;
        // Admission stops every shape raft-rs is known to panic on, but a
        // lying member (one with a valid certificate) can still drive it
        // into states it asserts against. Such a panic stops this replica,
        // never the node: raft-rs changes only memory while stepping (the
        // Ready loop persists), so the replica reopens from its last
        // durable state.
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.raw.step(msg)));
        let Ok(stepped) = stepped else {
            self.poisoned = true;
            return Err(KernelError::Storage(format!(
                "a message from node {from} made raft-rs panic: this replica stops and \
                 reopens from its durable state"
            )));
        };
        match stepped {
            Ok(()) => Ok(()),
            // The replica's storage failed: that is this node's problem.
            Err(e @ (raft::Error::Io(_) | raft::Error::Store(_))) => {
                Err(KernelError::Storage(format!("raft step: {e}")))
            }
            // Anything else is the message's: from a peer that is not (or no
            // longer) in the group, a proposal for a follower, a conf change
            // that does not decode or apply. Refused like the rest.
            Err(e) => {
                self.refused += 1;
                tracing::debug!("raft refused a peer's message: {e}");
                Ok(())
            }
        }
    }

    /// Whether raft-rs panicked in this replica (it must be reopened).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Peers' messages refused by admission so far.
    #[cfg(feature = "sim")]
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Only a leader hands raft-rs a proposal: a follower's raft-rs would
    /// forward it inside Raft, which peers refuse (see `consensus::forward`).
    fn must_lead(&self) -> Result<()> {
        if self.is_leader() {
            return Ok(());
        }
        Err(KernelError::Unavailable(format!(
            "replica {} does not lead (leader: {})",
            self.id(),
            self.leader_id()
        )))
    }

    /// Proposes a command tagged with `id`; its result comes back from a
    /// later [`Replica::on_ready`] on whichever replica applies it with that id.
    pub fn propose(&mut self, id: u64, cmd: &ZoneCommand) -> Result<()> {
        self.must_lead()?;
        self.raw
            .propose(id.to_be_bytes().to_vec(), cmd.encode())
            .map_err(|e| KernelError::Unavailable(format!("no leader to take the write ({e})")))?;
        self.flush_due |= cmd.durable_when_acknowledged();
        Ok(())
    }

    /// Proposes a membership change tagged with `id` (its result comes back
    /// like a command's).
    pub fn propose_conf_change(&mut self, id: u64, cc: ConfChange) -> Result<()> {
        self.must_lead()?;
        self.raw
            .propose_conf_change(id.to_be_bytes().to_vec(), cc)
            .map_err(|e| KernelError::Unavailable(format!("membership change refused: {e}")))
    }

    /// Asks raft to hand leadership to `to` (which must be caught up).
    pub fn transfer_leader(&mut self, to: ReplicaId) {
        self.raw.transfer_leader(to);
    }

    /// Asks for the commit index as of now, confirmed by a quorum (raft's
    /// ReadIndex); the answer comes out of a later `on_ready` under `id`.
    pub fn read_index(&mut self, id: u64) {
        self.raw.read_index(id.to_be_bytes().to_vec());
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// One pass of the Ready loop: send, persist (one batch, one flush),
    /// send persisted messages, apply, advance.
    pub fn on_ready(&mut self) -> Result<ReadyOutput> {
        let mut early = Vec::new();
        let mut out = self.on_ready_sending(&mut |m| early.extend(m))?;
        early.append(&mut out.messages);
        out.messages = early;
        Ok(out)
    }

    /// [`on_ready`](Self::on_ready), handing the messages raft-rs allows to
    /// leave before this replica persists (a leader's appends to its
    /// followers) to `send_now` first, so the followers' flushes overlap the
    /// leader's own. `ReadyOutput::messages` holds the rest.
    pub fn on_ready_sending(
        &mut self,
        send_now: &mut dyn FnMut(Vec<Message>),
    ) -> Result<ReadyOutput> {
        // Installed (or replaced) by this pass: the files go after it. If
        // it fails, an install may need one when the zone reopens.
        let spooled = std::mem::take(&mut self.spooled);
        let out = self.ready_pass(send_now);
        if out.is_err() {
            spooled.into_iter().for_each(Spooled::keep);
        }
        out
    }

    fn ready_pass(&mut self, send_now: &mut dyn FnMut(Vec<Message>)) -> Result<ReadyOutput> {
        let mut out = ReadyOutput::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        let early = rd.take_messages();
        if !early.is_empty() {
            send_now(early);
        }
        for rs in rd.take_read_states() {
            if let Ok(id) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                out.reads.push((u64::from_be_bytes(id), rs.index));
            }
        }

        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        let mut batch = sled::Batch::default();
        self.raw
            .mut_store()
            .stage_ready(&mut batch, snapshot.as_ref(), rd.entries(), rd.hs())?;
        let mut appended_conf_change = false;
        for e in rd.entries() {
            if e.get_entry_type() != EntryType::EntryNormal {
                appended_conf_change = true;
                let adds = additions(e).into_iter();
                self.pending_adds
                    .extend(adds.map(|(node, info)| (e.index, node, info)));
            }
        }
        self.tree.apply_batch(batch)?;
        if snapshot.is_some() || (rd.must_sync() && self.must_flush(appended_conf_change)) {
            self.db.flush()?;
            self.flush_due = false;
        }
        out.installed_snapshot = snapshot.is_some();

        self.apply(rd.take_committed_entries(), &mut out)?;
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), &mut out)?;
        self.raw.advance_apply();
        if appended_conf_change || out.membership_changed || snapshot.is_some() {
            self.publish_members();
        }
        self.maybe_compact()?;
        Ok(out)
    }

    /// Whether this Ready's log writes must reach the disk before its
    /// entries commit. Raft needs it whenever another replica counts this
    /// one's log towards a quorum. A sole voter's log and state are one
    /// sled database, which recovers a prefix of its writes (it reads its
    /// log in order and stops at the first torn batch): after a crash the
    /// zone is as it was at some earlier point, never inconsistent, so its
    /// file commands are acknowledged before the flush (POSIX: durable at
    /// `sync`, which flushes). Membership changes and commands that must be
    /// durable when acknowledged are flushed at once.
    fn must_flush(&self, appended_conf_change: bool) -> bool {
        self.flush_due || appended_conf_change || !self.is_sole_voter()
    }

    /// Tells raft-rs whether the snapshot for `to` arrived. After a failure
    /// the leader sends another; after a success it resumes appending (if
    /// the snapshot was lost anyway, the follower's rejection brings it back).
    pub fn report_snapshot(&mut self, to: ReplicaId, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.raw.report_snapshot(to, status);
    }

    /// Applies committed entries in one atomic batch (see [`Applier`]).
    fn apply(&mut self, entries: Vec<Entry>, out: &mut ReadyOutput) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let state = self.state.clone();
        let mut applier = state.applier();
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() || self.cfg.role == Role::Witness => {
                    applier.mark_applied(e.index);
                }
                EntryType::EntryNormal => {
                    let id = <[u8; 8]>::try_from(e.context.as_ref()).map(u64::from_be_bytes);
                    let result = match ZoneCommand::decode(&e.data) {
                        Ok(cmd) => {
                            let result = applier.apply(e.index, &cmd);
                            if result.is_ok() {
                                out.commands.push((id.ok(), cmd));
                            }
                            result
                        }
                        Err(err) => {
                            applier.mark_applied(e.index);
                            Err(KernelError::Corrupt(format!("undecodable command: {err}")))
                        }
                    };
                    if let Ok(id) = id {
                        out.results.push((id, e.index, result));
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    // A change raft refuses (adding a member twice, removing
                    // one that is not there) is refused identically on every
                    // replica: the caller hears why, the replica goes on.
                    let result = self.apply_conf_change(&e);
                    out.membership_changed |= result.is_ok();
                    applier.mark_applied(e.index);
                    if let Ok(id) = <[u8; 8]>::try_from(e.context.as_ref()) {
                        out.results.push((
                            u64::from_be_bytes(id),
                            e.index,
                            result.map(|()| Applied::Done),
                        ));
                    }
                }
            }
        }
        applier.commit()
    }

    fn apply_conf_change(&mut self, e: &Entry) -> Result<()> {
        let cc = decode_conf_change(e)?;
        let cs = self
            .raw
            .apply_conf_change(&cc)
            .map_err(|err| KernelError::Invalid(format!("membership change: {err}")))?;
        let added = MemberInfo::from_context(&cc.context);
        let known = self.raw.store().roster().clone();
        // The change describes the members it names; the others keep
        // what the changes that added them said.
        let named: Vec<u64> = cc.changes.iter().map(|c| c.node_id).collect();
        let roster = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners_next)
            .map(|id| match known.get(id) {
                Some(k) if !named.contains(id) => (*id, *k),
                _ => (*id, added),
            })
            .collect();
        self.raw.mut_store().set_conf_state(cs, roster)
    }

    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.raw.raft.raft_log.applied;
        let first = self.raw.store().first();
        if applied >= first + self.cfg.compact_after + self.cfg.keep_entries {
            self.raw
                .mut_store()
                .compact(applied - self.cfg.keep_entries)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_heartbeat_for_an_earlier_replica_of_this_node_is_dropped() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("z").unwrap();
        let members = [(1, Role::Voter), (2, Role::Voter)];
        let mut r = Replica::open(db, tree, ReplicaConfig::new(2, Role::Voter), &members).unwrap();
        let mut hb = Message::default();
        hb.set_msg_type(MessageType::MsgHeartbeat);
        hb.from = 1;
        hb.to = 2;
        hb.term = 3;
        hb.commit = 40;
        r.step(hb.clone()).unwrap();
        while r.has_ready() {
            r.on_ready().unwrap();
        }
        assert_eq!(r.commit_index(), 0);
        // The same heartbeat within the log is taken.
        hb.commit = 0;
        r.step(hb).unwrap();
        assert_eq!(r.leader_id(), 1);
    }

    #[test]
    fn a_sole_voter_flushes_only_what_must_be_durable_when_acknowledged() {
        let ready = |r: &mut Replica| {
            while r.has_ready() {
                r.on_ready().unwrap();
            }
        };
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("z").unwrap();
        let mut r = Replica::open(
            db,
            tree,
            ReplicaConfig::new(1, Role::Voter),
            &[(1, Role::Voter)],
        )
        .unwrap();
        r.campaign().unwrap();
        ready(&mut r);
        assert!(r.is_leader() && r.is_sole_voter());
        let unlink = ZoneCommand::Remove {
            parent: 1,
            name: "x".into(),
            dir: false,
            now: 0,
        };
        r.propose(1, &unlink).unwrap();
        assert!(!r.must_flush(false), "a file command waits for sync");
        assert!(r.must_flush(true), "a membership change never waits");
        ready(&mut r);
        let revoke = ZoneCommand::RevokeToken { id: "t".into() };
        r.propose(2, &revoke).unwrap();
        assert!(
            r.must_flush(false),
            "a revocation is durable when acknowledged"
        );
        ready(&mut r);
        assert!(!r.must_flush(false), "flushed with its Ready");

        // Two voters: every Ready's log writes are flushed.
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("z").unwrap();
        let members = [(1, Role::Voter), (2, Role::Voter)];
        let r = Replica::open(db, tree, ReplicaConfig::new(1, Role::Voter), &members).unwrap();
        assert!(r.must_flush(false));
    }

    #[test]
    fn a_spool_marker_from_the_wire_is_refused_and_a_whole_payload_installs() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("z").unwrap();
        let members = [(1, Role::Voter), (2, Role::Voter)];
        let mut r = Replica::open(db, tree, ReplicaConfig::new(2, Role::Voter), &members).unwrap();
        let snapshot_with = |data: Vec<u8>| {
            let mut m = Message::default();
            m.set_msg_type(MessageType::MsgSnapshot);
            m.from = 1;
            m.to = 2;
            m.term = 5;
            let meta = m.mut_snapshot().mut_metadata();
            meta.index = 10;
            meta.term = 5;
            meta.set_conf_state(ConfState::from((vec![1, 2], vec![])));
            m.mut_snapshot().data = data.into();
            m
        };
        let settle = |r: &mut Replica, m: Message| {
            r.step(m).unwrap();
            while r.has_ready() {
                r.on_ready().unwrap();
            }
            r.commit_index()
        };
        // A peer naming a spool file (it never can: only the node's own
        // receive sets a marker) is refused like any undecodable payload.
        let forged = snapshot_with(snapshot::marker_of("z~1-1.snap"));
        assert_eq!(settle(&mut r, forged), 0);
        let roster: crate::consensus::raftstore::Roster = members
            .iter()
            .map(|(id, role)| (*id, MemberInfo::first(*role)))
            .collect();
        let mut w = snapshot::SnapshotWriter::new(Vec::new(), &roster).unwrap();
        w.pair(b"s\x01k", b"v").unwrap();
        assert_eq!(settle(&mut r, snapshot_with(w.finish().unwrap())), 10);
        assert_eq!(
            r.state().dump().unwrap().len(),
            2,
            "the record and the applied index"
        );
    }
}
