//! The Nexus kernel. See ARCHITECTURE.md at the repository root.
//!
//! Subsystems, each a folder: `consensus` (Raft groups), `zone` (the
//! deterministic state machine), `files` (VFS, content, fsck/GC), `access`
//! (identity, ReBAC, gate, tokens, audit), `ipc` (pipes, timers); `kernel`
//! ties them into a node's [`Kernel`]. The subsystems are crate-private:
//! what other crates use is exported here, at the root (and the ReBAC
//! evaluator, for its model test, and the simulation harness, behind the
//! `sim` feature).

pub mod access;
pub(crate) mod consensus;
pub(crate) mod error;
pub(crate) mod files;
pub(crate) mod ipc;
pub(crate) mod kernel;
#[cfg(feature = "sim")]
pub mod sim;
pub(crate) mod types;
pub(crate) mod zone;

pub use access::audit::{AuditRecord, AuditSink, RecordStore, StoredRecord};
pub use access::egress::{EgressPass, SecretRow};
pub use access::gate::{Issuer, AUDIT_PAGE};
pub use access::host::{Destination, Host as DestinationHost, Scheme};
pub use access::identity::{Capabilities, Permission, Pid, Principal, Task};
pub use access::rebac::{Namespace, ObjectRef, Relation, Subject, Tuple};
pub use access::secret::SecretHeader;
pub use access::token::keys as issuer_keys;
pub use access::token::{Claims, MAX_TTL};
pub use consensus::driver::{ReplicaProgress, ZoneStatus};
/// The wire format of a write a follower forwards to its zone's leader.
pub use consensus::forward::{Actor, Forwarded, MemberChange, Outcome, Proposal};
pub use consensus::replica::{MemberInfo, Role};
/// What a transport needs to receive a snapshot into the spool.
pub use consensus::snapshot::{SnapshotWriter, SpoolDir, SpoolWriter, Spooled};
pub use consensus::transport::{ForwardReply, Transport};
pub use error::{ErrorCode, KernelError, Result};
pub use files::changes::{from_mount, Change, ChangeFeed, Changed};
pub use files::check::CheckReport;
pub use files::content::{GcReport, CHUNK_SIZE, INLINE_MAX};
pub use files::open::OpenFile;
pub use files::vfs::{At, Handle, OpenOptions};
pub use ipc::pipe::{Attached, PipeEnd, PipeMode, PipeRead, PipeStat, PIPE_BUF};
pub use ipc::timer::{TaskTimers, Timer, TimerError, DEFAULT_TIMER_LIMIT};
pub use kernel::{Kernel, KernelConfig, ObjectStoreConfig, ZoneRecord};
pub use types::{now, DirListing, FileKind, ReplicaId, Stat, ZoneId};
pub use zone::command::{Applied, ZoneCommand};
pub use zone::usage::{ZoneQuota, ZoneUsage};
