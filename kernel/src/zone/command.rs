//! The typed commands a zone's Raft log carries. Everything nondeterministic
//! (timestamps, inode numbers, content hashes) is chosen by the proposer and
//! travels inside the command (invariant 2).

use serde::{Deserialize, Serialize};

use crate::access::rebac::{ObjectRef, Tuple};
use crate::access::secret::SecretHeader;
use crate::types::{ChunkRef, Ino, Inode, ReplicaId, Timestamp, ZoneId};
use crate::zone::pipe_record::Checkpoint;
use crate::zone::usage::ZoneQuota;

/// What kind of inode `Create` makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NewInode {
    Dir,
    Regular,
    Mount {
        target: ZoneId,
    },
    Pipe {
        capacity: u64,
    },
    /// A symbolic link to `target` (checked by `files::path::check_link_target`).
    Symlink {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZoneCommand {
    /// Creates the root directory and records the zone's owners; a no-op
    /// once the root exists.
    Init { now: Timestamp, owners: Vec<Tuple> },
    /// Adds and removes relation tuples (ReBAC), atomically.
    WriteTuples {
        insert: Vec<Tuple>,
        delete: Vec<Tuple>,
    },
    Create {
        parent: Ino,
        name: String,
        ino: Ino,
        new: NewInode,
        now: Timestamp,
    },
    /// Replaces a regular file's content layout. Applies only if the inode's
    /// version still equals `expect_version`; otherwise the proposer retries.
    SetContent {
        ino: Ino,
        expect_version: u64,
        size: u64,
        /// `Some`: the file becomes inline and every chunk is dropped.
        #[serde(with = "serde_bytes")]
        inline: Option<Vec<u8>>,
        /// Chunks to (re)place, by chunk index.
        chunks: Vec<(u64, ChunkRef)>,
        /// Drop every chunk with index >= this (truncation).
        drop_from: Option<u64>,
        /// What becomes of the file's patches (bytes kept in the state
        /// over its chunks). Patches past `size` are always dropped.
        patches: Patches,
        now: Timestamp,
    },
    Rename {
        src_parent: Ino,
        src_name: String,
        dst_parent: Ino,
        dst_name: String,
        now: Timestamp,
    },
    /// Removes a name. `dir` selects rmdir semantics.
    Remove {
        parent: Ino,
        name: String,
        dir: bool,
        now: Timestamp,
    },
    /// Records a pipe's change since its previous checkpoint.
    PipeCheckpoint { ino: Ino, checkpoint: Checkpoint },
    SetTimes {
        ino: Ino,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
        now: Timestamp,
    },
    /// Refuses a token of this zone (by id) from now on, on every node
    /// serving the zone. (New variants go last: entries are encoded by
    /// variant index.)
    RevokeToken { id: String },
    /// Removes a regular file's name but keeps the file, open on node
    /// `holder`, as an orphan until that node reaps it (POSIX: an unlinked
    /// file lives until its last descriptor closes).
    Orphan {
        parent: Ino,
        name: String,
        holder: ReplicaId,
        now: Timestamp,
    },
    /// Deletes an orphan (a no-op for anything else).
    Reap { ino: Ino },
    /// A rename whose replaced regular file, open on node `holder`, is kept
    /// as an orphan rather than deleted (a reader of the old file goes on
    /// reading it, as on POSIX).
    Replace {
        src_parent: Ino,
        src_name: String,
        dst_parent: Ino,
        dst_name: String,
        holder: ReplicaId,
        now: Timestamp,
    },
    /// Sets what the zone may hold (bytes, inodes); growth past it is
    /// refused from the next command on.
    SetQuota { quota: ZoneQuota },
    /// A node's collector has dealt with these unreferenced chunks (deleted
    /// them from its store, or found another zone naming them): they leave
    /// the zone's list of unreferenced chunks.
    Collected { hashes: Vec<[u8; 32]> },
    /// Sets the headers the kernel adds to requests to `destination` (a
    /// `host:` object); none removes them.
    SetSecret {
        destination: ObjectRef,
        headers: Vec<SecretHeader>,
    },
    /// Gives the file or link `src_name` of `src_parent` another name
    /// (a hard link): the same inode, its grants and content.
    Link {
        src_parent: Ino,
        src_name: String,
        dst_parent: Ino,
        dst_name: String,
        now: Timestamp,
    },
}

impl ZoneCommand {
    /// Whether the proposer must hear of this command only once it is
    /// durable (flushed), even in a zone of one voter. File commands follow
    /// POSIX: visible at once, durable at `sync`, at a run's end and
    /// within sled's flush interval (ARCHITECTURE.md, invariant 25).
    /// Access control, quotas and secrets are durable when acknowledged: a
    /// revocation lost to a crash would grant again what was taken away.
    pub fn durable_when_acknowledged(&self) -> bool {
        match self {
            ZoneCommand::Init { .. }
            | ZoneCommand::WriteTuples { .. }
            | ZoneCommand::RevokeToken { .. }
            | ZoneCommand::SetQuota { .. }
            | ZoneCommand::SetSecret { .. } => true,
            ZoneCommand::Create { .. }
            | ZoneCommand::SetContent { .. }
            | ZoneCommand::Rename { .. }
            | ZoneCommand::Remove { .. }
            | ZoneCommand::PipeCheckpoint { .. }
            | ZoneCommand::SetTimes { .. }
            | ZoneCommand::Orphan { .. }
            | ZoneCommand::Reap { .. }
            | ZoneCommand::Replace { .. }
            | ZoneCommand::Collected { .. }
            | ZoneCommand::Link { .. } => false,
        }
    }
}

/// What changed in a zone, as readers of its files see it (the change
/// feed, `files/changes.rs`, carries it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// The name `name` in directory `dir` appeared, went, or now names
    /// another inode.
    Entry { dir: Ino, name: String },
    /// A file's bytes (and so its size and times).
    Content(Ino),
    /// An inode's attributes only (times; a directory's after its entries
    /// changed).
    Attrs(Ino),
    /// Anything: grants changed (what may be looked up or read), or a
    /// snapshot replaced the state.
    Everything,
}

impl ZoneCommand {
    /// What applying this command changes that a reader of the zone's
    /// files can see (`files::changes`): names, bytes, attributes; or
    /// everything, when grants change what may be seen at all.
    pub(crate) fn changes(&self) -> Vec<Changed> {
        use ZoneCommand as C;
        let entry = |dir: &Ino, name: &str| Changed::Entry {
            dir: *dir,
            name: name.to_owned(),
        };
        match self {
            C::Create { parent, name, .. }
            | C::Remove { parent, name, .. }
            | C::Orphan { parent, name, .. } => {
                vec![entry(parent, name), Changed::Attrs(*parent)]
            }
            C::Rename {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                ..
            }
            | C::Replace {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                ..
            } => vec![
                entry(src_parent, src_name),
                entry(dst_parent, dst_name),
                Changed::Attrs(*src_parent),
                Changed::Attrs(*dst_parent),
            ],
            C::Link {
                dst_parent,
                dst_name,
                ..
            } => vec![entry(dst_parent, dst_name), Changed::Attrs(*dst_parent)],
            C::SetContent { ino, .. } => vec![Changed::Content(*ino)],
            C::SetTimes { ino, .. } => vec![Changed::Attrs(*ino)],
            C::WriteTuples { .. } | C::RevokeToken { .. } => vec![Changed::Everything],
            C::Init { .. }
            | C::PipeCheckpoint { .. }
            | C::Reap { .. }
            | C::SetQuota { .. }
            | C::Collected { .. }
            | C::SetSecret { .. } => Vec::new(),
        }
    }
}

/// What a `SetContent` does to a file's patches: the bytes of small
/// write-outs, kept in the zone's state over the file's chunks (at most
/// `files::content::PATCH_MAX` per file) so that a small `fsync` costs one
/// log commit, not a chunk rewrite (ARCHITECTURE.md, `files/writeback.rs`,
/// "Why patches").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Patches {
    Keep,
    /// Lays these over the file, over its older patches.
    Add(Vec<Patch>),
    /// Drops them all (the chunks now hold their bytes, or the file is
    /// inline).
    Clear,
}

/// Bytes at an offset of a file. Encoded as bytes, not as a sequence of
/// numbers (the same wire format in postcard, without a visit per byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    pub at: u64,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// What applying a command produced, returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    Inode(Inode),
}

impl ZoneCommand {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("commands always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes encoded as bytes keep postcard's wire format for a sequence
    /// of `u8`: logs and states written before read the same.
    #[test]
    fn byte_fields_keep_their_wire_format() {
        let bytes = vec![0u8, 1, 127, 128, 255];
        let patch = Patch {
            at: 300,
            bytes: bytes.clone(),
        };
        assert_eq!(
            postcard::to_allocvec(&patch).unwrap(),
            postcard::to_allocvec(&(300u64, bytes.clone())).unwrap()
        );
        #[derive(Serialize)]
        struct Plain(Option<Vec<u8>>);
        let body = crate::types::InodeBody::Regular {
            inline: Some(bytes.clone()),
        };
        let mut plain = postcard::to_allocvec(&1u8).unwrap(); // the variant
        plain.extend(postcard::to_allocvec(&Plain(Some(bytes))).unwrap());
        assert_eq!(postcard::to_allocvec(&body).unwrap(), plain);
    }
}
