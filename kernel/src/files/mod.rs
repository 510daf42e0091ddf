//! Files: path parsing, the zone VFS (resolution across mounts and every
//! file operation), whole-file and whole-tree operations, the content store
//! (chunks by hash in an object store), the files open on this node (so
//! an unlinked file lives until closed), the write-back buffers of files
//! written on this node, the background collector of unreferenced chunks,
//! and fsck/GC.

pub mod changes;
pub mod check;
pub mod collect;
pub mod content;
pub(crate) mod extents;
pub mod open;
pub mod path;
pub mod tree;
pub mod vfs;
pub mod writeback;
