//! The operations layer: one typed method per kernel command, behind the
//! [`Ops`] trait. [`local::Local`] implements it once over a kernel in this
//! process (the embedded CLI calls it directly; a node's gRPC service is a
//! thin adapter over it); [`remote::Remote`] implements the same trait over
//! gRPC, so the CLI runs a command the same way whichever it holds. The CLI
//! only parses arguments and prints what a method returns.
//!
//! File and pipe bytes move as [`ByteStream`]s of bounded chunks, so a
//! transfer's memory stays bounded whatever the file's size.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use nexus_kernel::CheckReport;
use nexus_kernel::Claims;
use nexus_kernel::GcReport;
use nexus_kernel::PipeStat;
use nexus_kernel::Stat;
use nexus_kernel::StoredRecord;
use nexus_kernel::ZoneStatus;
use nexus_kernel::{ZoneQuota, ZoneUsage};
use serde::{Deserialize, Serialize};

pub mod error;
pub mod local;
pub mod remote;
pub mod run;
pub mod wire;

pub use error::{exit, OpError, OpResult};

/// Bytes per chunk of a transfer, both ways (the content store's chunk).
pub const TRANSFER_CHUNK: usize = nexus_kernel::CHUNK_SIZE as usize;

/// Bytes in bounded chunks, in order.
pub type ByteStream = BoxStream<'static, OpResult<Bytes>>;

/// A file's bytes on their way out: how many in all, and the chunks.
pub struct Download {
    pub total: u64,
    pub bytes: ByteStream,
}

/// Which part of a file a read wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub offset: u64,
    /// At most this many bytes; `None`: to the end.
    pub length: Option<u64>,
}

/// A replica in `--replicas` or `add-replica`: a node, voter or witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSpec {
    pub node: u64,
    pub witness: bool,
}

impl ReplicaSpec {
    /// `3` → voter 3, `3w` → witness 3.
    pub fn parse(spec: &str) -> OpResult<Self> {
        let (num, witness) = match spec.strip_suffix('w') {
            Some(n) => (n, true),
            None => (spec, false),
        };
        let node = num
            .parse()
            .map_err(|_| OpError::Usage(format!("replica {spec:?}: use node ids, e.g. 1,2,3w")))?;
        Ok(ReplicaSpec { node, witness })
    }
}

/// A row of `nexus zone list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneRow {
    pub name: String,
    pub created: i64,
    pub applied_index: u64,
    pub replicas: Vec<u64>,
}

/// A directory entry as `nexus fs ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub kind: String,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_target: Option<String>,
}

/// What a membership change left: the zone's status on the node that made
/// it, and anything the caller should know.
#[derive(Debug, Clone)]
pub struct Membership {
    pub status: ZoneStatus,
    pub warning: Option<String>,
}

/// `subject relation object`, as `nexus grant` takes them.
#[derive(Debug, Clone)]
pub struct TupleSpec {
    pub subject: String,
    pub relation: String,
    pub object: String,
}

/// What `grant`/`revoke` did: the tuple and the zone revision it made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    pub tuple: String,
    pub revision: u64,
    pub inserted: bool,
}

/// The arguments of `nexus check`.
#[derive(Debug, Clone)]
pub struct CheckQuery {
    pub subject: String,
    pub permission: String,
    pub object: String,
    pub at: Option<u64>,
}

/// A decision of `nexus check`, with its proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub subject: String,
    pub permission: String,
    pub object: String,
    pub allowed: bool,
    pub proof: Vec<String>,
}

/// A tuple of the zone, with the path of the inode it names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TupleRow {
    pub tuple: String,
    pub object: String,
    pub relation: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A token just issued, and what it says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Issued {
    pub token: String,
    #[serde(flatten)]
    pub claims: Claims,
}

/// A pipe under a directory, with its state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipeEntry {
    pub path: String,
    pub stat: PipeStat,
}

/// One agent of a run: its file's name (argv[0]), its bytes, its arguments.
pub struct AgentSpec {
    pub name: String,
    pub code: Vec<u8>,
    pub args: Vec<String>,
}

/// `nexus run`: the agents (the first, then its `--with` companions), or
/// one native agent, their environment and limits.
pub struct RunSpec {
    pub zone: String,
    pub agents: Vec<AgentSpec>,
    /// A native agent (a container or a host process) instead of `agents`.
    pub native: Option<crate::native::NativeSpec>,
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub fuel: Option<u64>,
}

/// Where a run's agents write their stdout and stderr.
pub enum RunIo {
    /// This process's own streams.
    Inherit,
    /// Chunks sent as they are written (a node streaming a run back); the
    /// run stops when the receiver goes away. `stdin`, if any, is the first
    /// agent's standard input (its end is end-of-file); the others read
    /// none.
    Stream {
        output: tokio::sync::mpsc::Sender<Output>,
        stdin: Option<ByteStream>,
    },
}

/// A chunk an agent wrote.
#[derive(Debug)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// A destination with secrets: its header names, never their values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretEntry {
    pub destination: String,
    pub headers: Vec<String>,
}

/// What a zone holds, and what it may hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageReport {
    pub usage: ZoneUsage,
    pub quota: ZoneQuota,
}

/// Every kernel command, typed. Paths are always inside `zone`.
#[tonic::async_trait]
pub trait Ops: Send + Sync {
    async fn zone_create(&self, zone: &str, replicas: &[ReplicaSpec]) -> OpResult;
    async fn zone_list(&self) -> OpResult<Vec<ZoneRow>>;
    async fn zone_status(&self, zone: &str) -> OpResult<ZoneStatus>;
    /// What the zone holds and may hold; with `set`, its quota is set
    /// first (needs admin).
    async fn zone_quota(&self, zone: &str, set: Option<ZoneQuota>) -> OpResult<UsageReport>;
    async fn zone_check(&self, zone: &str, deep: bool) -> OpResult<CheckReport>;
    async fn zone_destroy(&self, zone: &str) -> OpResult;
    async fn add_replica(&self, zone: &str, replica: ReplicaSpec) -> OpResult<Membership>;
    async fn remove_replica(&self, zone: &str, node: u64) -> OpResult<Membership>;
    async fn gc(&self) -> OpResult<GcReport>;
    /// The zone's audit records in the log of the node that answers
    /// (after record `after`, oldest first; or the newest `limit`).
    async fn audit_tail(
        &self,
        zone: &str,
        after: Option<i64>,
        limit: i64,
    ) -> OpResult<Vec<StoredRecord>>;

    async fn mkdir(&self, zone: &str, path: &str, parents: bool) -> OpResult;
    /// Creates or atomically replaces `path` with `data`; the bytes written.
    async fn put(&self, zone: &str, path: &str, data: ByteStream) -> OpResult<u64>;
    /// Writes `data` as the whole of a (new or existing) file, in place.
    async fn write_file(&self, zone: &str, path: &str, data: Vec<u8>) -> OpResult;
    async fn get(
        &self,
        zone: &str,
        path: &str,
        range: Range,
        linearizable: bool,
    ) -> OpResult<Download>;
    async fn stat(&self, zone: &str, path: &str, linearizable: bool) -> OpResult<Stat>;
    async fn list(&self, zone: &str, path: &str, linearizable: bool) -> OpResult<Vec<Entry>>;
    async fn remove(&self, zone: &str, path: &str, recursive: bool) -> OpResult;
    async fn rename(&self, zone: &str, from: &str, to: &str) -> OpResult;
    /// Another name, `to`, for the file or symbolic link `from` (a hard
    /// link: one inode, its content and grants).
    async fn link(&self, zone: &str, from: &str, to: &str) -> OpResult;
    /// A symbolic link at `path` to `target`, stored as given (an absolute
    /// target is taken from the zone root when followed).
    async fn symlink(&self, zone: &str, target: &str, path: &str) -> OpResult;
    /// What the symbolic link at `path` points to.
    async fn readlink(&self, zone: &str, path: &str) -> OpResult<String>;
    /// Links zone `target` at `path`; the mount entry's inode.
    async fn mount(&self, zone: &str, path: &str, target: &str) -> OpResult<u64>;

    async fn pipe_create(&self, zone: &str, path: &str, capacity: u64) -> OpResult;
    async fn pipe_stat(&self, zone: &str, path: &str) -> OpResult<PipeStat>;
    async fn pipe_list(&self, zone: &str, dir: &str) -> OpResult<Vec<PipeEntry>>;
    /// Reads (and consumes) the pipe: until it is empty, or with `follow`
    /// until every writer is gone.
    async fn pipe_cat(&self, zone: &str, path: &str, follow: bool) -> OpResult<ByteStream>;
    async fn pipe_remove(&self, zone: &str, path: &str) -> OpResult;

    async fn write_tuple(&self, zone: &str, tuple: TupleSpec, insert: bool) -> OpResult<Written>;
    async fn check(&self, zone: &str, query: CheckQuery) -> OpResult<Decision>;
    async fn tuples(&self, zone: &str) -> OpResult<Vec<TupleRow>>;
    /// Binds `headers` (`Name: value`) to `destination` for the kernel to
    /// add to agents' requests there; none removes them (admin). The zone
    /// revision with the change.
    async fn secret_set(&self, zone: &str, destination: &str, headers: &[String]) -> OpResult<u64>;
    /// The destinations with secrets and their header names (admin).
    async fn secret_list(&self, zone: &str) -> OpResult<Vec<SecretEntry>>;

    /// Signs a token for `principal` (default: the caller) in `zone`.
    /// Signs a token for `principal` (default: the caller) in `zone`,
    /// also reaching the zones in `reach` through mounts.
    async fn token_issue(
        &self,
        zone: &str,
        principal: Option<&str>,
        ttl: Duration,
        caps: &str,
        reach: &[String],
    ) -> OpResult<Issued>;
    async fn token_verify(&self, token: &str) -> OpResult<Claims>;
    /// Revokes a token: in `zone` (replicated, needs admin); without one,
    /// embedded: on this data directory (its operator); through a node:
    /// in the caller's token's zone. Returns the zone it was revoked in.
    async fn token_revoke(&self, zone: Option<&str>, id: &str) -> OpResult<Option<String>>;

    /// Runs the agents at the same time; the exit code `nexus run` ends
    /// with, or `None` if the receiver of their output went away first.
    async fn run(&self, spec: RunSpec, io: RunIo) -> OpResult<Option<i32>>;
}
