//! The per-zone driver: a dedicated thread running the Ready loop of one
//! [`Replica`], fed by a bounded queue of proposals and peer messages.
//!
//! Everything queued when the loop wakes is taken before one `on_ready`, so
//! concurrent proposals share one log batch and one flush (group commit).
//! The thread owns the replica; sled calls block only this thread.
//!
//! Only a leader proposes. A write made on a follower goes to the leader's
//! node at the application layer (`consensus::forward`), never inside
//! Raft, and the follower answers once it has applied the entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::prelude::{Message, MessageType};
use tokio::sync::{mpsc, oneshot};

use crate::consensus::forward::{Actor, Forwarded, Outcome, Proposal};
use crate::consensus::replica::Replica;
use crate::consensus::snapshot::Spooled;
use crate::consensus::transport::Transport;
use crate::error::{KernelError, Result};
use crate::files::changes::{self, Change, ChangeFeed, Changed, Origin};
use crate::types::{ReplicaId, ZoneId};
use crate::zone::command::{Applied, ZoneCommand};

/// Most inputs taken into one Ready (bounds the batch and the latency).
const MAX_BATCH: usize = 4096;
/// Bound on queued inputs; callers wait when the zone is this far behind.
const QUEUE_DEPTH: usize = 16 * 1024;

enum Input {
    /// With the origin of the call proposing it (`files::changes`).
    Propose(Proposal, oneshot::Sender<Result<Proposed>>, Option<Origin>),
    Step(Message),
    StepSpooled(Message, Spooled),
    Status(oneshot::Sender<ZoneStatus>),
    ReadIndex(oneshot::Sender<Result<u64>>),
    TransferLeader(ReplicaId),
    SnapshotStatus(ReplicaId, bool),
}

/// What became of a proposal handed to this replica.
#[derive(Debug)]
pub enum Proposed {
    /// Committed at `index`; applying it produced `applied`.
    Applied { index: u64, applied: Applied },
    /// This replica does not lead; `leader` is the one it knows of (0: none).
    NotLeader(ReplicaId),
}

/// A replica's view of its zone's group (`nexus zone status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZoneStatus {
    /// This replica.
    pub replica: ReplicaId,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    /// The leader this replica knows of (0: none).
    pub leader: ReplicaId,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    /// Voters of the group, as this replica's configuration has them.
    pub voters: Vec<ReplicaId>,
    /// Members that receive the log but do not vote yet (catching up).
    pub learners: Vec<ReplicaId>,
    /// Members (voters or learners) that keep the log but no state.
    pub witnesses: Vec<ReplicaId>,
    /// On the leader: each replica's matched log index and lag behind
    /// the commit index.
    pub progress: Vec<ReplicaProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaProgress {
    pub replica: ReplicaId,
    pub matched: u64,
    pub lag: u64,
}

/// Timing of a driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub tick: Duration,
    /// How long a caller waits for its entry to apply before giving up.
    pub propose_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_millis(100),
            propose_timeout: Duration::from_secs(10),
        }
    }
}

/// A cheap handle to a running zone driver.
pub struct ZoneDriver {
    zone: ZoneId,
    applied: tokio::sync::watch::Receiver<u64>,
    /// This replica, and the leader it last knew of (0: none), kept by the
    /// driver thread: a follower forwards a write without first asking the
    /// thread who leads.
    me: ReplicaId,
    leader: Arc<AtomicU64>,
    tx: Mutex<Option<mpsc::Sender<Input>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Where a follower's writes go to the leader.
    transport: Arc<dyn Transport>,
    tick: Duration,
    propose_timeout: Duration,
}

impl ZoneDriver {
    pub fn spawn(
        zone: ZoneId,
        mut replica: Replica,
        transport: Arc<dyn Transport>,
        cfg: DriverConfig,
        feed: ChangeFeed,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        if replica.is_sole_voter() && !replica.is_leader() {
            // Alone in the group: no need to wait out an election timeout.
            replica.campaign()?;
            // Commit and apply everything the log holds before the zone
            // serves a read: after a crash the applied state may trail the
            // flushed log, and a read must never see less than was
            // acknowledged.
            while replica.has_ready() {
                replica.on_ready()?;
            }
        }
        let (applied_tx, applied) = tokio::sync::watch::channel(replica.applied_index());
        let me = replica.id();
        let leader = Arc::new(AtomicU64::new(replica.leader_id()));
        let name = format!("zone-{zone}");
        let z = zone.clone();
        let tick = cfg.tick;
        let (t, l) = (transport.clone(), leader.clone());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let tells = Tells {
                    applied: applied_tx,
                    known_leader: l,
                    feed,
                };
                run(z, replica, t, rx, tells, tick)
            })
            .map_err(|e| KernelError::Storage(format!("spawn zone driver: {e}")))?;
        Ok(ZoneDriver {
            zone,
            applied,
            me,
            leader,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            transport,
            tick,
            propose_timeout: cfg.propose_timeout,
        })
    }

    fn sender(&self) -> Result<mpsc::Sender<Input>> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| KernelError::Unavailable(format!("zone {} is stopped", self.zone)))
    }

    /// Proposes `cmd` for `by` and waits until it is applied locally;
    /// returns what applying it produced. Success means the entry is
    /// durable on a quorum.
    pub async fn propose(&self, by: &Actor, cmd: ZoneCommand) -> Result<Applied> {
        self.propose_for(by, Proposal::Command(cmd)).await
    }

    /// Proposes `proposal` here if this replica leads, or through the
    /// leader's node (which gates it again as `by`); waits until this
    /// replica has applied it. A leader that moves before taking the write
    /// is followed until the proposal timeout.
    pub async fn propose_for(&self, by: &Actor, proposal: Proposal) -> Result<Applied> {
        let deadline = Instant::now() + self.propose_timeout;
        let mut write = None;
        loop {
            let known = self.leader.load(Ordering::Relaxed);
            let leader = if known != 0 && known != self.me {
                known
            } else {
                match self.propose_here(proposal.clone()).await? {
                    Proposed::Applied { applied, .. } => return Ok(applied),
                    Proposed::NotLeader(leader) => leader,
                }
            };
            if leader != 0 {
                let write = write
                    .get_or_insert_with(|| {
                        Forwarded {
                            zone: self.zone.clone(),
                            actor: by.clone(),
                            proposal: proposal.clone(),
                        }
                        .encode()
                    })
                    .clone();
                let answer = match self.transport.forward(leader, write).await {
                    Ok(answer) => answer,
                    Err(e) => {
                        // That leader may be gone: the next write asks this
                        // replica again, which wakes a sleeping group, so it
                        // elects another.
                        self.forget_leader(leader);
                        return Err(e);
                    }
                };
                match Outcome::decode(&answer)? {
                    Outcome::Applied { index, applied } => {
                        self.wait_applied(index, self.propose_timeout).await?;
                        return Ok(applied);
                    }
                    Outcome::Failed { kind, detail } => return Err(Outcome::error(&kind, &detail)),
                    // It stepped down before taking the write: ask this
                    // replica again.
                    Outcome::NotLeader { .. } => self.forget_leader(leader),
                }
            }
            if Instant::now() >= deadline {
                return Err(KernelError::Unavailable(format!(
                    "zone {}: no leader took the write within {:?}; retry",
                    self.zone, self.propose_timeout
                )));
            }
            tokio::time::sleep(self.tick).await;
        }
    }

    /// Drops the hint that `leader` leads (unless the thread has moved on).
    fn forget_leader(&self, leader: ReplicaId) {
        let (r, c) = (Ordering::Relaxed, Ordering::Relaxed);
        let _ = self.leader.compare_exchange(leader, 0, r, c);
    }

    /// Proposes `proposal` if this replica leads (and waits until it
    /// applies); otherwise says who leads. Never forwards.
    pub(crate) async fn propose_here(&self, proposal: Proposal) -> Result<Proposed> {
        let (reply, rx) = oneshot::channel();
        let origin = changes::origin();
        self.submit(Input::Propose(proposal, reply, origin), rx)
            .await
    }

    /// Asks the group to hand leadership to `to`; returns at once (watch
    /// `status` for the outcome).
    pub async fn transfer_leader(&self, to: ReplicaId) -> Result<()> {
        self.sender()?
            .send(Input::TransferLeader(to))
            .await
            .map_err(|_| KernelError::Unavailable(format!("zone {} stopped", self.zone)))
    }

    async fn submit(
        &self,
        input: Input,
        rx: oneshot::Receiver<Result<Proposed>>,
    ) -> Result<Proposed> {
        self.sender()?
            .send(input)
            .await
            .map_err(|_| KernelError::Unavailable(format!("zone {} stopped", self.zone)))?;
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(KernelError::Unavailable(format!(
                "zone {}: the write was dropped (leader change); retry",
                self.zone
            ))),
            Err(_) => Err(KernelError::Unavailable(format!(
                "zone {}: no commit within {:?}",
                self.zone, self.propose_timeout
            ))),
        }
    }

    /// Waits until this replica has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|&a| a >= index)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(KernelError::Unavailable(format!(
                "zone {} stopped",
                self.zone
            ))),
            Err(_) => Err(KernelError::Unavailable(format!(
                "zone {} has not reached revision {index} within {timeout:?}",
                self.zone
            ))),
        }
    }

    /// Waits until this replica has applied everything the group had
    /// committed when the call was made, as confirmed by the leader
    /// (ReadIndex): a read after this sees every write acknowledged before it.
    pub async fn linearize(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Input::ReadIndex(reply))
            .await
            .map_err(|_| KernelError::Unavailable(format!("zone {} stopped", self.zone)))?;
        let index = match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) | Err(_) => {
                return Err(KernelError::Unavailable(format!(
                    "zone {}: no leader confirmed a read index within {:?}",
                    self.zone, self.propose_timeout
                )))
            }
        };
        self.wait_applied(index, self.propose_timeout).await
    }

    /// This replica's view of the group.
    pub async fn status(&self) -> Result<ZoneStatus> {
        let (reply, rx) = oneshot::channel();
        let stopped = || KernelError::Unavailable(format!("zone {} stopped", self.zone));
        self.sender()?
            .send(Input::Status(reply))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Tells the leader whether the snapshot it sent `to` arrived.
    pub fn report_snapshot(&self, to: ReplicaId, delivered: bool) -> Result<()> {
        self.sender()?
            .try_send(Input::SnapshotStatus(to, delivered))
            .map_err(|_| {
                KernelError::Unavailable(format!("zone {} is overloaded or stopped", self.zone))
            })
    }

    /// Hands a message from a peer replica to this zone.
    pub fn step(&self, msg: Message) -> Result<()> {
        self.sender()?.try_send(Input::Step(msg)).map_err(|_| {
            KernelError::Unavailable(format!("zone {} is overloaded or stopped", self.zone))
        })
    }

    /// Queues a MsgSnapshot whose payload is in the spool.
    pub fn step_spooled(&self, msg: Message, spooled: Spooled) -> Result<()> {
        self.sender()?
            .try_send(Input::StepSpooled(msg, spooled))
            .map_err(|_| {
                KernelError::Unavailable(format!("zone {} is overloaded or stopped", self.zone))
            })
    }

    /// Stops the driver after it drains what is queued; joins its thread.
    pub fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for ZoneDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Proposals awaiting their entry's application, by proposal id.
type Waiters = HashMap<u64, Waiter>;

struct Waiter {
    reply: oneshot::Sender<Result<Proposed>>,
    origin: Option<Origin>,
}

/// A message that is more than a heartbeat: the group is doing something.
fn is_traffic(m: &Message) -> bool {
    !matches!(
        m.get_msg_type(),
        MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
    )
}

/// Whether an input is activity that keeps (or gets) the zone awake.
fn wakes(input: &Input) -> bool {
    match input {
        Input::Step(m) | Input::StepSpooled(m, _) => is_traffic(m),
        Input::Status(_) => false,
        _ => true,
    }
}

/// Keeps `reply` until entry `id` applies, or answers at once if the
/// proposal was refused.
fn await_apply(
    waiters: &mut Waiters,
    id: u64,
    proposed: Result<()>,
    reply: oneshot::Sender<Result<Proposed>>,
    origin: Option<Origin>,
) {
    match proposed {
        Ok(()) => {
            waiters.insert(id, Waiter { reply, origin });
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}

/// What the driver's loop tells the rest of the node.
struct Tells {
    /// The applied index (`wait_applied`).
    applied: tokio::sync::watch::Sender<u64>,
    /// The leader it knows of (0: none).
    known_leader: Arc<AtomicU64>,
    /// What each applied command changed (`files/changes.rs`).
    feed: ChangeFeed,
}

fn run(
    zone: ZoneId,
    mut replica: Replica,
    transport: Arc<dyn Transport>,
    mut rx: mpsc::Receiver<Input>,
    tells: Tells,
    tick: Duration,
) {
    let Tells {
        applied,
        known_leader,
        feed,
    } = tells;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(%zone, "cannot start zone driver: {e}");
            return;
        }
    };
    // Waiters carry ids unique across the group: replica id in the top bits.
    let mut next_id = replica.id() << 48;
    let mut waiters: Waiters = HashMap::new();
    // ReadIndex requests awaiting the leader's confirmed commit index.
    let mut reads: HashMap<u64, oneshot::Sender<Result<u64>>> = HashMap::new();
    rt.block_on(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = true;
        let mut leader = replica.leader_id();
        // Ticks since the last activity; an idle, settled zone stops ticking.
        let mut idle: u64 = 0;
        while open {
            let mut batch = Vec::new();
            let asleep = waiters.is_empty() && reads.is_empty() && replica.may_sleep(idle);
            tokio::select! {
                _ = ticker.tick(), if !asleep => {
                    replica.tick();
                    idle += 1;
                }
                n = rx.recv_many(&mut batch, MAX_BATCH) => open = n > 0,
            }
            for input in batch {
                if wakes(&input) {
                    idle = 0;
                }
                match input {
                    // raft-rs would forward a follower's proposal inside
                    // Raft; the caller forwards it to the leader instead.
                    Input::Propose(_, reply, _) if !replica.is_leader() => {
                        let _ = reply.send(Ok(Proposed::NotLeader(replica.leader_id())));
                    }
                    Input::Propose(proposal, reply, origin) => {
                        next_id += 1;
                        let proposed = match proposal {
                            Proposal::Command(cmd) => replica.propose(next_id, &cmd),
                            Proposal::Membership { change, node, info } => replica
                                .propose_conf_change(
                                    next_id,
                                    Proposal::conf_change(change, node, info),
                                ),
                        };
                        await_apply(&mut waiters, next_id, proposed, reply, origin);
                    }
                    Input::TransferLeader(to) => replica.transfer_leader(to),
                    Input::SnapshotStatus(to, delivered) => replica.report_snapshot(to, delivered),
                    Input::ReadIndex(reply) => {
                        next_id += 1;
                        replica.read_index(next_id);
                        reads.insert(next_id, reply);
                    }
                    Input::Status(reply) => {
                        let _ = reply.send(replica.status());
                    }
                    Input::Step(m) => {
                        if let Err(e) = replica.step(m) {
                            tracing::error!(%zone, "raft step failed: {e}");
                        }
                    }
                    Input::StepSpooled(m, spooled) => {
                        if let Err(e) = replica.step_spooled(m, spooled) {
                            tracing::error!(%zone, "raft step failed: {e}");
                        }
                    }
                }
            }
            // Nothing more runs on a replica whose raft-rs panicked: the
            // zone stops here (callers are told it is stopped) and reopens
            // from its durable state when the node next opens it.
            if replica.is_poisoned() {
                tracing::error!(%zone, "zone stopped on this node: restart the node to reopen it");
                return;
            }
            while replica.has_ready() {
                let mut snapshots_sent = Vec::new();
                let mut send_now = |msgs: Vec<Message>| {
                    if msgs.iter().any(is_traffic) {
                        idle = 0;
                    }
                    snapshots_sent.extend(
                        msgs.iter()
                            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                            .map(|m| m.to),
                    );
                    transport.send(&zone, msgs);
                };
                let out = match replica.on_ready_sending(&mut send_now) {
                    Ok(out) => out,
                    Err(e) => {
                        // The log could not be persisted: this replica must
                        // stop rather than acknowledge anything further.
                        tracing::error!(%zone, "zone storage failed, stopping the replica: {e}");
                        for (_, w) in waiters.drain() {
                            let _ = w.reply.send(Err(e.clone()));
                        }
                        return;
                    }
                };
                snapshots_sent.extend(
                    out.messages
                        .iter()
                        .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                        .map(|m| m.to),
                );
                if !transport.reports_snapshots() {
                    for to in snapshots_sent {
                        replica.report_snapshot(to, true);
                    }
                }
                if out.messages.iter().any(is_traffic) {
                    idle = 0;
                }
                if !out.messages.is_empty() {
                    transport.send(&zone, out.messages);
                }
                // Published before the proposers hear: a change is in the
                // feed when the call that made it returns.
                publish(
                    &feed,
                    &zone,
                    out.installed_snapshot,
                    &out.commands,
                    &waiters,
                );
                for (id, index, result) in out.results {
                    if let Some(w) = waiters.remove(&id) {
                        let reply = result.map(|applied| Proposed::Applied { index, applied });
                        let _ = w.reply.send(reply);
                    }
                }
                for (id, index) in out.reads {
                    if let Some(r) = reads.remove(&id) {
                        let _ = r.send(Ok(index));
                    }
                }
            }
            applied.send_if_modified(|a| {
                let now = replica.applied_index();
                std::mem::replace(a, now) != now
            });
            waiters.retain(|_, w| !w.reply.is_closed());
            reads.retain(|_, r| !r.is_closed());
            // A proposal forwarded to a leader that is gone would wait out
            // its timeout: on a leader change, every waiter is told at once
            // that the outcome is unknown, so the caller can retry.
            if replica.leader_id() != leader {
                leader = replica.leader_id();
                known_leader.store(leader, Ordering::Relaxed);
                for (_, w) in waiters.drain() {
                    let _ = w.reply.send(Err(KernelError::Unavailable(format!(
                        "zone {zone}: the leader changed while this write was in flight; \
                         it may or may not have been applied"
                    ))));
                }
                for (_, r) in reads.drain() {
                    let _ = r.send(Err(KernelError::Unavailable(format!(
                        "zone {zone}: the leader changed during a linearizable read; retry"
                    ))));
                }
            }
        }
    });
}

/// Tells the change feed what a Ready pass applied. A write-out's commit
/// is left out: its bytes were published when they were buffered here.
fn publish(
    feed: &ChangeFeed,
    zone: &ZoneId,
    installed_snapshot: bool,
    commands: &[(Option<u64>, ZoneCommand)],
    waiters: &Waiters,
) {
    if !feed.wanted() {
        return;
    }
    let mut batch = Vec::new();
    let mut change = |by, what| {
        batch.push(Change {
            zone: zone.clone(),
            by,
            what,
        })
    };
    if installed_snapshot {
        change(None, Changed::Everything);
    }
    for (id, cmd) in commands {
        let origin = id.and_then(|id| waiters.get(&id)).and_then(|w| w.origin);
        if origin == Some(Origin::WriteOut) {
            continue;
        }
        for what in cmd.changes() {
            change(changes::mount_of(origin), what);
        }
    }
    feed.publish(batch);
}
