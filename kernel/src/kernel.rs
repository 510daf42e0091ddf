//! A node's kernel: its data directory, its zones and their drivers, and the
//! content store they share.
//!
//! Data directory layout (`NEXUS_HOME`):
//! - `meta/`: the sled database. Tree `catalog` lists zones; tree `zone:NAME`
//!   holds one zone's Raft log and state (its own keyspace, shared with no
//!   other zone).
//! - `content/`: chunks, when the object store is the local disk.
//! - `issuer.key`: the operator's token signing key (mode 0600), on the
//!   embedded default only; a cluster node refuses to start with one.
//! - `issuers`: the public keys whose tokens it accepts (`nexus issuer`).
//! - `records.db`: the audit log (SQLite), unless a PostgreSQL URL is set.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::access::audit::AuditSink;
use crate::access::gate::PermCache;
use crate::access::identity::{Permission, Principal, Task};
use crate::access::rebac::{ObjectRef, Relation, Subject, Tuple};
use crate::access::token::TokenAuthority;
use crate::consensus::driver::{DriverConfig, ZoneDriver};
use crate::consensus::forward::Actor;
use crate::consensus::raftstore::SnapshotInstall;
use crate::consensus::replica::{Members, Replica, ReplicaConfig, Role};
use crate::consensus::snapshot::{SpoolDir, SpoolWriter, Spooled};
use crate::consensus::transport::{LocalOnly, Transport};
use crate::error::{KernelError, Result};
use crate::files::changes::ChangeFeed;
use crate::files::collect::{Collector, RunningZones};
use crate::files::content::ContentStore;
use crate::files::vfs::InodeLocks;
use crate::files::writeback::WriteBack;
use crate::ipc::pipe::PipeTable;
use crate::ipc::timer::TimerDriver;
use crate::types::{now, Ino, ReplicaId, Timestamp, ZoneId};
use crate::zone::command::ZoneCommand;
use crate::zone::state::ZoneState;

/// Where file content lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreConfig {
    /// `$NEXUS_HOME/content` (the embedded default).
    Local,
    Memory,
    /// `file:///path`: a directory every node of a cluster mounts (so a
    /// chunk written on one node is readable on all).
    Shared(PathBuf),
    /// `s3://bucket/prefix`.
    S3(String),
}

impl ObjectStoreConfig {
    /// Parses `local`, `memory`, a `file:///` URL or an `s3://` URL.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "local" => Ok(ObjectStoreConfig::Local),
            "memory" => Ok(ObjectStoreConfig::Memory),
            url if url.starts_with("s3://") => Ok(ObjectStoreConfig::S3(url.to_owned())),
            url if url.starts_with("file:///") => Ok(ObjectStoreConfig::Shared(PathBuf::from(
                &url["file://".len()..],
            ))),
            other => Err(KernelError::Invalid(format!(
                "object store {other:?}: use `local`, `memory`, `file:///shared/dir` or `s3://bucket/prefix`"
            ))),
        }
    }

    /// Whether other nodes hold references to this store's chunks (then
    /// no single node can tell which chunks are garbage). An S3 prefix is
    /// taken to be this node's own; give nodes sharing a bucket one prefix
    /// each, or do not run `gc`.
    pub fn is_shared(&self) -> bool {
        matches!(self, ObjectStoreConfig::Shared(_))
    }
}

#[derive(Debug, Clone)]
pub struct KernelConfig {
    pub home: PathBuf,
    pub object_store: ObjectStoreConfig,
    pub driver: DriverConfig,
    /// This node's replica id in the zones it creates.
    pub replica_id: ReplicaId,
    /// Run the timer driver on a virtual clock (deterministic tests).
    pub virtual_clock: bool,
    /// A witness node: it serves zones only as a witness (`nexus node start
    /// --witness`), refusing to hold a voter's state.
    pub witness_only: bool,
    /// When zone logs are compacted (applied entries before the kept tail);
    /// a replica further behind than the log reaches catches up by snapshot.
    pub log_retention: LogRetention,
    /// Whether this data directory signs tokens with its own issuer key
    /// (the embedded default: the operator's machine). A cluster node does
    /// not: it holds issuers' public keys only.
    pub signs_tokens: bool,
    /// The longest a buffered file write waits before it is written out
    /// (`files/writeback.rs`).
    pub flush_interval: std::time::Duration,
    /// A snapshot received into the spool up to this size installs in one
    /// atomic batch; a larger one in steps of bounded memory
    /// (`consensus::raftstore`).
    pub snapshot_one_batch_up_to: u64,
}

/// How much Raft log a replica keeps (see [`ReplicaConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct LogRetention {
    pub compact_after: u64,
    pub keep_entries: u64,
}

impl Default for LogRetention {
    fn default() -> Self {
        let d = ReplicaConfig::new(0, Role::Voter);
        LogRetention {
            compact_after: d.compact_after,
            keep_entries: d.keep_entries,
        }
    }
}

impl KernelConfig {
    pub fn embedded(home: impl Into<PathBuf>) -> Self {
        KernelConfig {
            home: home.into(),
            object_store: ObjectStoreConfig::Local,
            driver: DriverConfig::default(),
            replica_id: 1,
            virtual_clock: false,
            witness_only: false,
            log_retention: LogRetention::default(),
            signs_tokens: true,
            flush_interval: crate::files::writeback::FLUSH_INTERVAL,
            snapshot_one_batch_up_to: SnapshotInstall::default().one_batch_up_to,
        }
    }
}

/// A zone's entry in the node catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRecord {
    pub id: ZoneId,
    pub created: Timestamp,
    /// The group's initial members and their roles (the current members
    /// are in the replica's configuration: `nexus zone status`).
    pub replicas: Vec<(ReplicaId, Role)>,
    /// Set when this node joined the group after it was created
    /// (`nexus zone add-replica`): its role there.
    pub joined_as: Option<Role>,
    /// Which replica of the zone on this node this is (random; see
    /// [`MemberInfo`](crate::consensus::replica::MemberInfo)); 0 in older records.
    pub incarnation: u64,
}

/// A catalog entry as written before `joined_as` existed.
#[derive(Deserialize)]
struct ZoneRecordV1 {
    id: ZoneId,
    created: Timestamp,
    replicas: Vec<(ReplicaId, Role)>,
}

impl ZoneRecord {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        match postcard::from_bytes(bytes) {
            Ok(r) => Ok(r),
            Err(e) => match postcard::from_bytes::<ZoneRecordV1>(bytes) {
                Ok(v1) => Ok(ZoneRecord {
                    id: v1.id,
                    created: v1.created,
                    replicas: v1.replicas,
                    joined_as: None,
                    incarnation: 0,
                }),
                Err(_) => Err(e.into()),
            },
        }
    }

    /// This node's role in the zone, if it serves it. A node that was one
    /// of the first replicas, was removed and joined again takes the role
    /// it joined with.
    pub(crate) fn role_of(&self, node: ReplicaId) -> Option<Role> {
        self.joined_as.or_else(|| {
            self.replicas
                .iter()
                .find(|(r, _)| *r == node)
                .map(|(_, role)| *role)
        })
    }
}

/// A zone served by this node: its driver (writes) and its state (reads).
pub struct Zone {
    pub id: ZoneId,
    pub state: ZoneState,
    pub(crate) driver: ZoneDriver,
    /// The group's members as this replica knows them.
    pub(crate) members: Members,
}

impl Zone {
    /// Appends `cmd` to the zone's log for `by` (through the leader's node
    /// when this replica follows) and waits until it is applied here.
    pub(crate) async fn propose(
        &self,
        by: &Actor,
        cmd: ZoneCommand,
    ) -> Result<crate::zone::command::Applied> {
        self.driver.propose(by, cmd).await
    }
}

pub struct Kernel {
    pub(crate) cfg: KernelConfig,
    db: sled::Db,
    catalog: sled::Tree,
    pub(crate) content: Arc<ContentStore>,
    zones: RunningZones,
    writers: Arc<InodeLocks>,
    /// Buffered file writes, written out in the background.
    pub(crate) writeback: Arc<WriteBack>,
    /// Deletes the chunks no file names any more, in the background.
    pub(crate) collector: Arc<Collector>,
    /// What changes, for front-ends that cache (`files/changes.rs`).
    pub(crate) changes: ChangeFeed,
    transport: Arc<dyn Transport>,
    pub(crate) next_pid: AtomicU64,
    pub(crate) perm_cache: Mutex<PermCache>,
    pub(crate) audit: OnceLock<AuditSink>,
    tokens: TokenAuthority,
    pub(crate) pipes: Arc<PipeTable>,
    /// Regular files open on this node (an unlinked one lives until closed).
    pub(crate) open_files: Arc<crate::files::open::OpenFiles>,
    timers: TimerDriver,
    /// Set by `shutdown`: no zone starts again in this process.
    closed: std::sync::atomic::AtomicBool,
    /// Where snapshots from peers are received (`<home>/snapshots`).
    spool: SpoolDir,
}

pub(crate) fn tree_name(zone: &ZoneId) -> String {
    format!("zone:{zone}")
}

/// Whether opening sled failed because another process holds its lock
/// (sled wraps the `EWOULDBLOCK` of the file lock in an error of its own).
fn held_by_another_process(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<std::io::Error>())
            .is_some_and(held_by_another_process)
        || e.to_string().contains("could not acquire lock")
}

/// How long opening waits for a data directory's lock: sled lets go of
/// it from background threads a moment after its last handle is dropped,
/// so a directory this process closed just now may still be locked.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// This data directory's id as a writer of content stores (random, kept
/// in `home/writer-id`): how a shared store tells its writers apart.
fn writer_id(home: &Path) -> Result<String> {
    let path = home.join("writer-id");
    let io = |e: std::io::Error| KernelError::Storage(format!("{}: {e}", path.display()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut f) => {
            use std::io::Write;
            let id = format!("{:032x}", rand::random::<u128>());
            f.write_all(id.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io)?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let id = std::fs::read_to_string(&path).map_err(io)?;
            let id = id.trim();
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(id.to_owned())
            } else {
                Err(KernelError::Corrupt(format!(
                    "{}: not a writer id",
                    path.display()
                )))
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// How often sled flushes the metadata by itself: the bound on how long
/// an acknowledged, unsynced file command of a zone of one voter may stay
/// off the disk (ARCHITECTURE.md invariant 25).
const METADATA_FLUSH_MS: u64 = 500;

/// Opens the metadata store under `home`, waiting out [`LOCK_GRACE`] for
/// its lock; `busy` if another process holds it.
fn open_meta(home: &Path) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(home.join("meta"))
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(Some(METADATA_FLUSH_MS));
    open_sled(&config, home)
}

/// Flushes `db` from a blocking thread. Not sled's `flush_async`: run on
/// sled's own small pool, concurrent ones deadlock with a batch being
/// applied (seen here: 32 writers' syncs; sled issue 1308).
pub(crate) async fn flush(db: &sled::Db) -> Result<()> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|e| KernelError::Storage(format!("flushing the metadata: {e}")))??;
    Ok(())
}

/// Opens sled as `config` says, waiting out [`LOCK_GRACE`] for its lock
/// (`home` names the directory in errors).
pub(crate) fn open_sled(config: &sled::Config, home: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if held_by_another_process(&io) => {
                if std::time::Instant::now() >= deadline {
                    return Err(KernelError::Busy(format!(
                        "data directory {} is in use by another nexus process",
                        home.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(other) => return Err(KernelError::Storage(format!("{}: {other}", home.display()))),
        }
    }
}

impl Kernel {
    /// Opens the node's data directory, creating it on first use. Only one
    /// process may hold a data directory at a time.
    pub fn open(cfg: KernelConfig) -> Result<Self> {
        Self::open_with_transport(cfg, Arc::new(LocalOnly))
    }

    /// Opens the data directory of a node whose zones reach their other
    /// replicas through `transport` (replica ids are node ids).
    pub fn open_with_transport(cfg: KernelConfig, transport: Arc<dyn Transport>) -> Result<Self> {
        std::fs::create_dir_all(&cfg.home)
            .map_err(|e| KernelError::Storage(format!("{}: {e}", cfg.home.display())))?;
        let db = open_meta(&cfg.home)?;
        let catalog = db.open_tree("catalog")?;
        let writer = writer_id(&cfg.home)?;
        let content = match &cfg.object_store {
            ObjectStoreConfig::Local => ContentStore::local(&cfg.home.join("content"), &writer)?,
            ObjectStoreConfig::Memory => ContentStore::memory(&writer),
            ObjectStoreConfig::Shared(dir) => ContentStore::local(dir, &writer)?,
            ObjectStoreConfig::S3(url) => ContentStore::s3(url, &writer)?,
        };
        let timers = if cfg.virtual_clock {
            TimerDriver::virtual_clock()
        } else {
            TimerDriver::real().map_err(|e| KernelError::Storage(format!("timer thread: {e}")))?
        };
        let tokens = TokenAuthority::open(&cfg.home, db.open_tree("revoked")?, cfg.signs_tokens)?;
        let spool = SpoolDir::open(&cfg.home)?;
        let content = Arc::new(content);
        let writers = Arc::new(InodeLocks::default());
        let changes = ChangeFeed::default();
        let writeback = Arc::new(WriteBack::new(
            content.clone(),
            writers.clone(),
            cfg.flush_interval,
            changes.clone(),
        ));
        let zones = RunningZones::default();
        let collector = Arc::new(Collector::new(
            content.clone(),
            zones.clone(),
            db.clone(),
            catalog.clone(),
            cfg.object_store.is_shared(),
            cfg.flush_interval,
        ));
        Ok(Kernel {
            cfg,
            tokens,
            next_pid: AtomicU64::new(1),
            perm_cache: Mutex::new(PermCache::new()),
            audit: OnceLock::new(),
            db,
            catalog,
            writeback,
            content,
            zones,
            collector,
            writers,
            transport,
            pipes: Arc::new(PipeTable::new()),
            open_files: Arc::default(),
            timers,
            closed: Default::default(),
            spool,
            changes,
        })
    }

    pub fn home(&self) -> &Path {
        &self.cfg.home
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// What changes in the zones this node serves, as it becomes visible
    /// here (`files/changes.rs`).
    pub fn changes(&self) -> &ChangeFeed {
        &self.changes
    }

    pub fn tokens(&self) -> &TokenAuthority {
        &self.tokens
    }

    /// The node's timer driver, which owns every task's timers.
    pub fn timers(&self) -> &TimerDriver {
        &self.timers
    }

    /// Starts recording denials and mutations in `sink` (once).
    pub fn attach_audit(&self, sink: AuditSink) -> Result<()> {
        self.audit
            .set(sink)
            .map_err(|_| KernelError::Invalid("an audit log is already attached".into()))
    }

    pub fn zone_records(&self) -> Result<Vec<ZoneRecord>> {
        self.catalog
            .iter()
            .map(|kv| ZoneRecord::decode(&kv?.1))
            .collect()
    }

    pub fn zone_record(&self, id: &ZoneId) -> Result<ZoneRecord> {
        match self.catalog.get(id.as_str())? {
            Some(v) => ZoneRecord::decode(&v),
            None => Err(KernelError::ZoneNotFound(id.clone())),
        }
    }

    /// Creates a zone whose group is this node alone, with an empty root,
    /// owned by `owner` (recorded with the root, in one command).
    pub async fn create_zone(&self, owner: &Principal, id: &ZoneId) -> Result<ZoneRecord> {
        let me = vec![(self.cfg.replica_id, Role::Voter)];
        self.create_zone_on(owner, id, me).await
    }

    /// Creates a zone whose Raft group is `replicas` (node ids and roles;
    /// this node among them). The other nodes must [`join_zone`] with the
    /// same list. Waits for the group to elect a leader and commit the root.
    ///
    /// [`join_zone`]: Kernel::join_zone
    pub async fn create_zone_on(
        &self,
        owner: &Principal,
        id: &ZoneId,
        replicas: Vec<(ReplicaId, Role)>,
    ) -> Result<ZoneRecord> {
        let record = self.record_zone(id, replicas, None, false).await?;
        let zone = self.zone(id)?;
        let owners = vec![Tuple {
            object: ObjectRef::zone(id),
            relation: Relation::Owner,
            subject: Subject::Principal(owner.clone()),
        }];
        let init = ZoneCommand::Init {
            now: record.created,
            owners,
        };
        // Until the group has a leader a proposal is dropped: retry.
        let deadline = std::time::Instant::now() + self.cfg.driver.propose_timeout;
        loop {
            match zone.propose(&Actor::Node, init.clone()).await {
                Err(KernelError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(self.cfg.driver.tick * 5).await;
                }
                other => {
                    other?;
                    return Ok(record);
                }
            }
        }
    }

    /// Records this node's replica of a zone created on another node with
    /// [`create_zone_on`](Kernel::create_zone_on); its state arrives by Raft.
    pub async fn join_zone(
        &self,
        id: &ZoneId,
        replicas: Vec<(ReplicaId, Role)>,
    ) -> Result<ZoneRecord> {
        let record = self.record_zone(id, replicas, None, true).await?;
        self.zone(id)?;
        Ok(record)
    }

    /// Whether this node would record a replica of `id` with this
    /// configuration (`join_zone` with `joining: None`,
    /// `join_running_zone` with `Some(role)`), without recording it: the
    /// node coordinating a creation asks every node first, so that one
    /// refusal leaves no replica behind on the others.
    pub fn check_join(
        &self,
        id: &ZoneId,
        replicas: &[(ReplicaId, Role)],
        joining: Option<Role>,
    ) -> Result<()> {
        self.check_record(id, replicas, joining)?;
        match self.zone_record(id) {
            Ok(existing) if existing.replicas == replicas && existing.joined_as == joining => {
                Ok(())
            }
            Ok(_) => Err(KernelError::ZoneExists(id.clone())),
            Err(KernelError::ZoneNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn check_record(
        &self,
        id: &ZoneId,
        replicas: &[(ReplicaId, Role)],
        joining: Option<Role>,
    ) -> Result<()> {
        let me = self.cfg.replica_id;
        let role = joining.or_else(|| replicas.iter().find(|(r, _)| *r == me).map(|(_, r)| *r));
        match role {
            None => {
                return Err(KernelError::Invalid(format!(
                    "zone {id}: node {me} is not among its replicas"
                )))
            }
            Some(Role::Voter) if self.cfg.witness_only => {
                return Err(KernelError::Invalid(format!(
                    "zone {id}: node {me} is a witness node; name it {me}w"
                )))
            }
            Some(_) => {}
        }
        if !replicas.iter().any(|(_, role)| *role == Role::Voter) {
            return Err(KernelError::Invalid(format!(
                "zone {id}: no voter among its replicas"
            )));
        }
        Ok(())
    }

    /// Writes a new zone's catalog entry (refused if the name is taken or
    /// this node is neither among the initial replicas nor `joining`).
    async fn record_zone(
        &self,
        id: &ZoneId,
        replicas: Vec<(ReplicaId, Role)>,
        joining: Option<Role>,
        repeatable: bool,
    ) -> Result<ZoneRecord> {
        self.check_record(id, &replicas, joining)?;
        let record = ZoneRecord {
            id: id.clone(),
            created: now(),
            replicas,
            joined_as: joining,
            incarnation: rand::random::<u64>() | 1,
        };
        let inserted = self.catalog.compare_and_swap(
            id.as_str(),
            None as Option<&[u8]>,
            Some(postcard::to_allocvec(&record)?),
        )?;
        if inserted.is_err() {
            // Joining again with the same configuration is a no-op, so a
            // zone creation that failed on another node can be retried.
            let existing = self.zone_record(id)?;
            if repeatable
                && existing.replicas == record.replicas
                && existing.joined_as == record.joined_as
            {
                return Ok(existing);
            }
            return Err(KernelError::ZoneExists(id.clone()));
        }
        flush(&self.db).await?;
        Ok(record)
    }

    /// Records this node's replica of a running zone it is being added to
    /// (`nexus zone add-replica`, before the conf change): `initial` is the
    /// group's first configuration, from which this replica replays the
    /// log (or which a snapshot replaces).
    pub async fn join_running_zone(
        &self,
        id: &ZoneId,
        initial: Vec<(ReplicaId, Role)>,
        role: Role,
    ) -> Result<ZoneRecord> {
        let record = self.record_zone(id, initial, Some(role), true).await?;
        self.zone(id)?;
        Ok(record)
    }

    /// Hands a Raft message from another node to the zone's driver. Refused
    /// unless this node serves the zone, the message is for this node, and
    /// its sender is a member of the zone's group as this replica knows it.
    /// A leader's messages (appends, heartbeats, snapshots) are taken from
    /// any peer: a replica that has not yet heard of a member's addition
    /// must still follow it once it leads, and Raft's terms decide whom to
    /// follow (the transport has proved the sender is a node of the
    /// cluster). `incarnation` is the sending replica's (0: not said): a
    /// message from an earlier replica of a member's node, removed since,
    /// is refused. Then the message must pass admission
    /// (`consensus::admission`).
    pub fn deliver(
        &self,
        zone: &ZoneId,
        msg: raft::prelude::Message,
        incarnation: u64,
    ) -> Result<()> {
        let z = self.admit_message(zone, &msg, incarnation)?;
        z.driver.step(msg)
    }

    /// Starts receiving a snapshot of `zone` from a peer into this node's
    /// spool (a file, never memory); the transport writes the payload to
    /// it, then [`Kernel::deliver_snapshot`] hands it over.
    pub fn snapshot_spool(&self, zone: &ZoneId) -> Result<SpoolWriter> {
        self.zone(zone)?;
        self.spool.create(zone.as_str())
    }

    /// [`Kernel::deliver`] for a MsgSnapshot whose payload arrived
    /// separately, complete and checked, in `spooled`; the replica installs
    /// it from the file.
    pub fn deliver_snapshot(
        &self,
        zone: &ZoneId,
        msg: raft::prelude::Message,
        incarnation: u64,
        spooled: Spooled,
    ) -> Result<()> {
        if msg.get_msg_type() != raft::prelude::MessageType::MsgSnapshot {
            return Err(KernelError::Invalid(format!(
                "zone {zone}: a spooled payload with a message that is not a snapshot"
            )));
        }
        let z = self.admit_message(zone, &msg, incarnation)?;
        z.driver.step_spooled(msg, spooled)
    }

    /// The checks both deliveries make; returns the zone.
    fn admit_message(
        &self,
        zone: &ZoneId,
        msg: &raft::prelude::Message,
        incarnation: u64,
    ) -> Result<Arc<Zone>> {
        use raft::prelude::MessageType::{MsgAppend, MsgHeartbeat, MsgSnapshot};
        if msg.to != self.cfg.replica_id {
            return Err(KernelError::Invalid(format!(
                "zone {zone}: a message for node {} reached node {}",
                msg.to, self.cfg.replica_id
            )));
        }
        let z = self.zone(zone)?;
        let from_leader = matches!(msg.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot);
        match z.members.info(msg.from) {
            Some(m) if m.incarnation != 0 && incarnation != 0 && m.incarnation != incarnation => {
                return Err(KernelError::Access(format!(
                    "zone {zone}: a message from an earlier replica of node {}",
                    msg.from
                )));
            }
            None if !from_leader => {
                return Err(KernelError::Access(format!(
                    "zone {zone}: node {} is not one of its replicas",
                    msg.from
                )));
            }
            _ => {}
        }
        // Its shape, before it is queued (the sender hears why); checks
        // against the replica's own state follow on its thread.
        crate::consensus::admission::check(msg)
            .map_err(|r| KernelError::Invalid(format!("zone {zone}: {r}")))?;
        Ok(z)
    }

    /// What became of a snapshot this node's replica of `zone` sent to `to`
    /// (for transports that stream snapshots and know when they land).
    pub fn report_snapshot(&self, zone: &ZoneId, to: ReplicaId, delivered: bool) {
        let running = self
            .zones
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(zone)
            .cloned();
        if let Some(z) = running {
            if let Err(e) = z.driver.report_snapshot(to, delivered) {
                tracing::warn!(%zone, to, "snapshot report lost: {e}");
            }
        }
    }

    /// This node's view of the task's zone group (leader, term, commit and
    /// applied index, each replica's lag). Needs `read` on the zone.
    pub async fn zone_status(&self, task: &Task) -> Result<crate::consensus::driver::ZoneStatus> {
        self.require_on_zone(task, Permission::Read, "status")?;
        self.zone(task.zone())?.driver.status().await
    }

    /// What the task's zone holds and may hold. Needs `read` on the zone.
    pub fn zone_usage(
        &self,
        task: &Task,
    ) -> Result<(crate::zone::usage::ZoneUsage, crate::zone::usage::ZoneQuota)> {
        self.require_on_zone(task, Permission::Read, "usage")?;
        self.zone(task.zone())?.state.usage()
    }

    /// Sets what the task's zone may hold, through its log (every replica
    /// refuses growth past it alike). Needs `admin` on the zone.
    pub async fn set_zone_quota(
        &self,
        task: &Task,
        quota: crate::zone::usage::ZoneQuota,
    ) -> Result<()> {
        self.require_on_zone(task, Permission::Admin, "set-quota")?;
        self.zone(task.zone())?
            .propose(&task.actor(), ZoneCommand::SetQuota { quota })
            .await?;
        let shown = format!("bytes {:?} inodes {:?}", quota.bytes, quota.inodes);
        self.audit(task, task.zone(), "set-quota", &shown, "ok");
        Ok(())
    }

    /// Makes the next read of the task's zone linearizable: waits until the
    /// local replica has applied all the group had committed now (ReadIndex
    /// through the leader). Reads are local, and fast, without it.
    pub async fn linearize(&self, task: &Task) -> Result<()> {
        // Writes buffered on this node are visible to its readers: they
        // are committed first, so what a linearizable read returns was
        // visible nowhere before it was in the log (invariant 25).
        self.writeback.flush_zone(task.zone()).await?;
        self.zone(task.zone())?.driver.linearize().await
    }

    /// This node's id (its replica id in every zone it serves).
    pub fn node_id(&self) -> ReplicaId {
        self.cfg.replica_id
    }

    /// The running zone `id`, starting its driver on first use.
    pub fn zone(&self, id: &ZoneId) -> Result<Arc<Zone>> {
        if let Some(z) = self.zones.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(z.clone());
        }
        let mut zones = self.zones.write().unwrap_or_else(|p| p.into_inner());
        if let Some(z) = zones.get(id) {
            return Ok(z.clone());
        }
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(KernelError::Unavailable(format!(
                "zone {id}: this node is shutting down"
            )));
        }
        let record = self.zone_record(id)?;
        let me = self.cfg.replica_id;
        let role = record
            .role_of(me)
            .ok_or_else(|| KernelError::ZoneNotFound(id.clone()))?;
        let tree = self.db.open_tree(tree_name(id))?;
        let mut rcfg = ReplicaConfig::new(me, role);
        rcfg.compact_after = self.cfg.log_retention.compact_after;
        rcfg.keep_entries = self.cfg.log_retention.keep_entries;
        rcfg.snapshots = SnapshotInstall {
            spool: Some(self.spool.clone()),
            one_batch_up_to: self.cfg.snapshot_one_batch_up_to,
        };
        let replica = Replica::open(self.db.clone(), tree.clone(), rcfg, &record.replicas)?;
        // An interrupted install finished with its file; the rest are stale.
        self.spool.sweep(id.as_str(), None)?;
        let members = replica.members();
        self.transport.register_zone(id, record.incarnation);
        let driver = ZoneDriver::spawn(
            id.clone(),
            replica,
            self.transport.clone(),
            self.cfg.driver.clone(),
            self.changes.clone(),
        )?;
        let zone = Arc::new(Zone {
            id: id.clone(),
            state: ZoneState::new(tree),
            driver,
            members,
        });
        zones.insert(id.clone(), zone.clone());
        Ok(zone)
    }

    /// The applied state of a zone, read straight from its tree (no driver).
    pub fn zone_state(&self, id: &ZoneId) -> Result<ZoneState> {
        self.zone_record(id)?;
        Ok(ZoneState::new(self.db.open_tree(tree_name(id))?))
    }

    /// Destroys the task's zone and all its metadata; needs `admin` on it.
    /// Refused while another zone mounts it. Its content goes at the next `gc`.
    pub fn destroy_zone(&self, task: &Task) -> Result<()> {
        self.may_destroy(task)?;
        let id = task.zone();
        self.drop_local_replica(id)?;
        self.audit(task, id, "destroy-zone", "/", "ok");
        Ok(())
    }

    /// Whether [`destroy_zone`](Self::destroy_zone) would go ahead: `admin`
    /// on the zone, and no other zone here mounts it.
    pub fn may_destroy(&self, task: &Task) -> Result<()> {
        let id = task.zone();
        self.require_on_zone(task, Permission::Admin, "destroy")?;
        for other in self.zone_records()? {
            if &other.id == id {
                continue;
            }
            for inode in self.zone_state(&other.id)?.all_inodes() {
                if let crate::types::InodeBody::Mount { target } = inode?.body {
                    if target == *id {
                        return Err(KernelError::Busy(format!(
                            "zone {id} is mounted in zone {}; remove that mount first",
                            other.id
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops this node's replica of `id` and deletes it: its catalog entry,
    /// its log and state, its pipes.
    pub(crate) fn drop_local_replica(&self, id: &ZoneId) -> Result<()> {
        let running = self
            .zones
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(zone) = running {
            // Open handles on the zone see it as stopped from here on.
            zone.driver.stop();
        }
        self.transport.forget_zone(id);
        self.pipes.forget_zone(id);
        self.writeback.forget_zone(id);
        self.catalog.remove(id.as_str())?;
        self.db.drop_tree(tree_name(id))?;
        self.db.flush()?;
        // A zone created later under this name starts its revisions afresh.
        self.forget_zone_decisions(id);
        Ok(())
    }

    /// Makes every command this node has applied durable: file commands of
    /// a zone of one voter are acknowledged before their flush (invariant
    /// 25), so `sync`, a run's end, the collector and every operation a
    /// user or client is told is done flush here.
    pub async fn make_durable(&self) -> Result<()> {
        flush(&self.db).await
    }

    /// [`Self::make_durable`], for a caller that may block (under a lock
    /// held across a closure).
    pub(crate) fn make_durable_now(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Starts the background write-out and collector (once; on the
    /// runtime the kernel was opened on).
    pub(crate) fn start_background(&self) {
        self.writeback.start();
        self.collector.start();
    }

    /// Runs one round of the collector now (see `files/collect.rs`).
    pub async fn collect_garbage(&self) -> Result<crate::files::collect::Collected> {
        self.collector.collect().await
    }

    /// Serializes this node's writers to one inode (see [`InodeLocks`]).
    pub(crate) async fn lock_inode(
        &self,
        zone: &ZoneId,
        ino: Ino,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        self.writers.lock(zone, ino).await
    }

    /// Clean shutdown: writes out every buffered file, checkpoints every
    /// open pipe, writes out the audit log, stops every zone driver,
    /// flushes.
    pub async fn shutdown(&self) -> Result<()> {
        let files = self.writeback.close().await;
        if let Err(e) = self.collector.collect().await {
            tracing::warn!("collecting unreferenced chunks at shutdown: {e}");
        }
        let pipes = self.pipes.close().await;
        if let Some(sink) = self.audit.get() {
            sink.close().await?;
        }
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_zones()?;
        files.and(pipes)
    }

    /// Stops every zone driver and flushes the metadata.
    fn stop_zones(&self) -> Result<()> {
        let zones: Vec<_> = self
            .zones
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, zone) in zones {
            zone.driver.stop();
        }
        self.db.flush()?;
        Ok(())
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.stop_zones();
    }
}
