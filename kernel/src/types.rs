//! Plain data shared by every layer: zone ids, inodes, directory entries.

use serde::{Deserialize, Serialize};

use crate::error::{KernelError, Result};

/// Inode number, unique within its zone. Chosen by the proposer (brief,
/// invariant 2), so the state machine never allocates.
pub type Ino = u64;

/// Every zone's root directory.
pub const ROOT_INO: Ino = 1;

/// A Raft replica id inside one zone's group.
pub type ReplicaId = u64;

/// Nanoseconds since the Unix epoch. Chosen by the proposer.
pub type Timestamp = i64;

/// A zone's name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ZoneId(String);

impl ZoneId {
    pub fn new(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            Ok(ZoneId(name.to_owned()))
        } else {
            Err(KernelError::Invalid(format!(
                "zone name {name:?}: use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with '.')"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ZoneId {
    type Err = KernelError;

    fn from_str(name: &str) -> Result<Self> {
        ZoneId::new(name)
    }
}

impl std::fmt::Display for ZoneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The inode types (`d_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// DT_DIR
    Dir,
    /// DT_REG
    #[serde(rename = "file")]
    Regular,
    /// DT_MOUNT: a link to another zone's root.
    Mount,
    /// DT_PIPE: a bounded ring buffer (behaviour arrives with the pipes issue).
    Pipe,
    /// DT_LNK: a symbolic link, resolved by the kernel inside its zone.
    Symlink,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Dir => "dir",
            FileKind::Regular => "file",
            FileKind::Mount => "mount",
            FileKind::Pipe => "pipe",
            FileKind::Symlink => "symlink",
        }
    }
}

/// A content chunk: its BLAKE3 hash and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: [u8; 32],
    pub len: u32,
}

/// What an inode holds besides its attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InodeBody {
    Dir {
        entries: u64,
    },
    /// `inline` holds a small file's bytes; `None` means the bytes live in chunks.
    Regular {
        #[serde(with = "serde_bytes")]
        inline: Option<Vec<u8>>,
    },
    Mount {
        target: ZoneId,
    },
    Pipe {
        capacity: u64,
    },
    /// What a symbolic link points to (a path, never resolved here).
    Symlink {
        target: String,
    },
}

/// One inode. There are no hard links, so every inode but the root has
/// exactly one parent, which rename keeps current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub ino: Ino,
    pub parent: Ino,
    pub size: u64,
    /// Bumped by every content change; writers commit against it (optimistic concurrency).
    pub version: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub body: InodeBody,
}

impl Inode {
    pub fn kind(&self) -> FileKind {
        match self.body {
            InodeBody::Dir { .. } => FileKind::Dir,
            InodeBody::Regular { .. } => FileKind::Regular,
            InodeBody::Mount { .. } => FileKind::Mount,
            InodeBody::Pipe { .. } => FileKind::Pipe,
            InodeBody::Symlink { .. } => FileKind::Symlink,
        }
    }
}

/// A directory entry as stored: name -> inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dentry {
    pub ino: Ino,
    pub kind: FileKind,
}

/// What `stat` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub zone: ZoneId,
    pub ino: Ino,
    pub kind: FileKind,
    pub size: u64,
    pub version: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// For DT_MOUNT: the zone it links to.
    pub mount_target: Option<ZoneId>,
    /// For DT_PIPE: the ring's capacity in bytes.
    pub pipe_capacity: Option<u64>,
}

impl Stat {
    pub fn of(zone: &ZoneId, inode: &Inode) -> Stat {
        Stat {
            zone: zone.clone(),
            ino: inode.ino,
            kind: inode.kind(),
            size: inode.size,
            version: inode.version,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            mount_target: match &inode.body {
                InodeBody::Mount { target } => Some(target.clone()),
                _ => None,
            },
            pipe_capacity: match inode.body {
                InodeBody::Pipe { capacity } => Some(capacity),
                _ => None,
            },
        }
    }
}

/// One entry of a readdir page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    pub name: String,
    pub ino: Ino,
    pub kind: FileKind,
}

/// The wall clock, in nanoseconds since the Unix epoch (for proposers and
/// records; the state machine never reads it).
pub fn now() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as Timestamp)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_names_are_validated() {
        assert!(ZoneId::new("z1").is_ok());
        assert!(ZoneId::new("team-a.prod_2").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65), "z\0"] {
            assert!(ZoneId::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
