//! `zone check` (fsck: metadata against itself and against content) and the
//! node-wide content GC.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::access::identity::{Permission, Task};
use crate::error::{KernelError, Result};
use crate::files::content::{hash_hex, GcReport, CHUNK_SIZE};
use crate::kernel::Kernel;
use crate::types::{FileKind, Ino, InodeBody, ROOT_INO};

/// What `check_zone` found. The zone is consistent iff `problems` is empty.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct CheckReport {
    pub zone: String,
    pub applied_index: u64,
    pub inodes: u64,
    pub directories: u64,
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Kernel {
    /// Checks every invariant of a zone's metadata, and that every chunk it
    /// references is stored with the right size (and, if `deep`, the right hash).
    /// Needs `admin` on the task's zone, which it checks.
    pub async fn check_zone(&self, task: &Task, deep: bool) -> Result<CheckReport> {
        let id = task.zone();
        self.require_on_zone(task, Permission::Admin, "check")?;
        let state = self.zone_state(id)?;
        let mut r = CheckReport {
            zone: id.to_string(),
            applied_index: state.applied_index()?,
            ..CheckReport::default()
        };
        let mut inodes = HashMap::new();
        for inode in state.all_inodes() {
            let inode = inode?;
            inodes.insert(inode.ino, inode);
        }
        r.inodes = inodes.len() as u64;
        // The usage the state machine keeps, against a count of the inodes.
        let mut counted = crate::zone::usage::ZoneUsage::default();
        for inode in inodes.values() {
            counted.change(None, Some(inode));
        }
        let (kept, _) = state.usage()?;
        if kept != counted {
            r.problems.push(format!(
                "usage recorded as {} bytes in {} inodes; the inodes hold {} bytes in {}",
                kept.bytes, kept.inodes, counted.bytes, counted.inodes
            ));
        }
        if !inodes.contains_key(&ROOT_INO) {
            r.problems.push("root directory missing".into());
        }
        let mut linked: HashMap<Ino, u32> = HashMap::new();
        let mut children: HashMap<Ino, u64> = HashMap::new();
        for d in state.all_dentries() {
            let (dir, name, entry) = d?;
            *children.entry(dir).or_default() += 1;
            *linked.entry(entry.ino).or_default() += 1;
            match inodes.get(&entry.ino) {
                None => r.problems.push(format!(
                    "entry {name:?} in dir {dir} names missing inode {}",
                    entry.ino
                )),
                Some(i) if i.kind() != entry.kind => r.problems.push(format!(
                    "entry {name:?} says {:?}, inode {} is {:?}",
                    entry.kind,
                    i.ino,
                    i.kind()
                )),
                Some(i)
                    if i.parent != dir && !state.names(i.ino)?.contains(&(dir, name.clone())) =>
                {
                    r.problems.push(format!(
                        "inode {} is linked from dir {dir} but records parent {}",
                        i.ino, i.parent
                    ))
                }
                Some(_) => {}
            }
        }
        // Files unlinked while open: no name, an orphan record instead.
        let mut orphans = HashMap::new();
        for o in state.orphans() {
            let (ino, holder) = o?;
            match inodes.get(&ino) {
                Some(i) if i.kind() == FileKind::Regular => {}
                Some(i) => r.problems.push(format!(
                    "orphan {ino} (held by node {holder}) is a {}, not a file",
                    i.kind().as_str()
                )),
                None => r.problems.push(format!(
                    "orphan {ino} (held by node {holder}) names a missing inode"
                )),
            }
            orphans.insert(ino, holder);
        }
        let mut chunk_map: HashMap<Ino, Vec<(u64, crate::types::ChunkRef)>> = HashMap::new();
        let mut named: HashMap<[u8; 32], u64> = HashMap::new();
        for c in state.all_chunks() {
            let (ino, idx, chunk) = c?;
            chunk_map.entry(ino).or_default().push((idx, chunk));
            *named.entry(chunk.hash).or_default() += 1;
        }
        // The reference counts the state machine keeps, against the map.
        for (hash, n) in &named {
            let kept = state.chunk_refs(hash)?;
            if kept != *n {
                r.problems.push(format!(
                    "chunk {} is named {n} times but counted {kept}",
                    hash_hex(hash)
                ));
            }
        }
        for hash in state.unreferenced(usize::MAX)? {
            if named.contains_key(&hash) {
                r.problems.push(format!(
                    "chunk {} is listed as unreferenced but named",
                    hash_hex(&hash)
                ));
            }
        }
        for (ino, inode) in &inodes {
            let links = linked.get(ino).copied().unwrap_or(0);
            // Every name an inode of several names has is an entry naming
            // it, and its parent is the directory of one of them.
            let names = state.names(*ino)?;
            for (dir, name) in &names {
                if state.dentry(*dir, name)?.map(|d| d.ino) != Some(*ino) {
                    r.problems.push(format!(
                        "inode {ino} records the name {name:?} in dir {dir}, which does not name it"
                    ));
                }
            }
            if !names.is_empty() && !names.iter().any(|(d, _)| *d == inode.parent) {
                r.problems.push(format!(
                    "inode {ino} records parent {} but has no name there",
                    inode.parent
                ));
            }
            let expected = match (orphans.contains_key(ino), names.len()) {
                (true, _) => 0,
                (false, n) => n.max(1) as u32,
            };
            if *ino != ROOT_INO && links != expected {
                r.problems.push(format!(
                    "inode {ino} has {links} directory entries, expected {expected}"
                ));
            }
            match &inode.body {
                InodeBody::Dir { entries } => {
                    r.directories += 1;
                    let actual = children.get(ino).copied().unwrap_or(0);
                    if *entries != actual {
                        r.problems
                            .push(format!("dir {ino} counts {entries} entries, has {actual}"));
                    }
                }
                InodeBody::Regular { inline } => {
                    r.files += 1;
                    r.bytes += inode.size;
                    let chunks = chunk_map.remove(ino).unwrap_or_default();
                    match inline {
                        Some(b) if b.len() as u64 != inode.size => r.problems.push(format!(
                            "file {ino}: inline {} bytes, size {}",
                            b.len(),
                            inode.size
                        )),
                        Some(_) if !chunks.is_empty() => {
                            r.problems.push(format!("file {ino}: inline and chunked"))
                        }
                        _ => {}
                    }
                    let patches = state.patches(*ino)?;
                    if patches.bytes() > 0 && (inline.is_some() || patches.end() > inode.size) {
                        r.problems.push(format!(
                            "file {ino}: patches to {} over an inline file or past its size {}",
                            patches.end(),
                            inode.size
                        ));
                    }
                    for (idx, chunk) in chunks {
                        r.chunks += 1;
                        if idx >= inode.size.div_ceil(CHUNK_SIZE) || chunk.len as u64 > CHUNK_SIZE {
                            r.problems.push(format!(
                                "file {ino}: chunk {idx} lies beyond its size {}",
                                inode.size
                            ));
                        }
                        let hex = hash_hex(&chunk.hash);
                        match self.content.stored_size(&chunk.hash).await? {
                            None => r.problems.push(format!(
                                "file {ino}: chunk {idx} ({hex}) missing from the content store"
                            )),
                            Some(n) if n != chunk.len as u64 => r.problems.push(format!(
                                "file {ino}: chunk {idx} ({hex}) stored {n} bytes, expected {}",
                                chunk.len
                            )),
                            Some(_) if deep && !self.content.verify(&chunk).await? => r
                                .problems
                                .push(format!("file {ino}: chunk {idx} ({hex}) fails its hash")),
                            Some(_) => {}
                        }
                    }
                }
                InodeBody::Mount { target } => {
                    if self.zone_record(target).is_err() {
                        r.problems
                            .push(format!("mount {ino} names zone {target}, not served here"));
                    }
                }
                InodeBody::Symlink { target } => {
                    if crate::files::path::check_link_target(target).is_err()
                        || inode.size != target.len() as u64
                    {
                        r.problems
                            .push(format!("symbolic link {ino}: bad target {target:?}"));
                    }
                }
                InodeBody::Pipe { capacity } => {
                    if let Some(rec) = state.pipe_record(*ino)? {
                        let unread = rec.write_pos.checked_sub(rec.read_pos);
                        if unread != Some(rec.data.len() as u64)
                            || rec.data.len() as u64 > *capacity
                        {
                            r.problems.push(format!(
                                "pipe {ino}: {} bytes held for positions {}..{} (capacity {capacity})",
                                rec.data.len(),
                                rec.read_pos,
                                rec.write_pos
                            ));
                        }
                    }
                }
            }
            if inode.kind() != FileKind::Dir
                && inode.kind() != FileKind::Regular
                && chunk_map.contains_key(ino)
            {
                r.problems.push(format!(
                    "{} {ino} has content chunks",
                    inode.kind().as_str()
                ));
            }
        }
        for ino in chunk_map.keys().filter(|i| !inodes.contains_key(i)) {
            r.problems
                .push(format!("chunks recorded for missing inode {ino}"));
        }
        Ok(r)
    }

    /// Deletes every content chunk no zone on this node references. It
    /// touches every zone, so it needs `admin` on each: `tasks` holds one
    /// task per zone of the node.
    pub async fn gc(&self, tasks: &[Task]) -> Result<GcReport> {
        self.reap_orphans().await?;
        if self.cfg.object_store.is_shared() {
            return Err(KernelError::Unsupported(
                "the object store is shared with other nodes, whose zones this node cannot see; \
                 garbage collection of a shared store is not supported yet"
                    .into(),
            ));
        }
        for z in self.zone_records()? {
            let task = tasks.iter().find(|t| t.zone() == &z.id).ok_or_else(|| {
                KernelError::Access(format!(
                    "garbage collection needs admin on every zone; none given for {}",
                    z.id
                ))
            })?;
            self.require_on_zone(task, Permission::Admin, "collect garbage from")?;
        }
        self.content
            .gc(|| {
                // Read under GC's exclusive lock: a zone created meanwhile counts too.
                let mut live = HashSet::new();
                for z in &self.zone_records()? {
                    for c in self.zone_state(&z.id)?.all_chunks() {
                        live.insert(c?.2.hash);
                    }
                }
                // What was read must be what a crash brings back (the
                // collector's rule): under the lock, names only go.
                self.make_durable_now()?;
                Ok(live)
            })
            .await
    }

    /// Reaps the orphans this node holds but no longer has open (it stopped
    /// with them open). Runs before garbage collection, whose chunks they
    /// hold.
    async fn reap_orphans(&self) -> Result<()> {
        let me = self.node_id();
        for z in self.zone_records()? {
            let zone = self.zone(&z.id)?;
            let stale: Vec<Ino> = zone
                .state
                .orphans()
                .filter_map(|o| match o {
                    Ok((ino, holder)) if holder == me && !self.open_files.is_open(&z.id, ino) => {
                        Some(Ok(ino))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_>>()?;
            for ino in stale {
                let reap = crate::zone::command::ZoneCommand::Reap { ino };
                zone.propose(&crate::consensus::forward::Actor::Node, reap)
                    .await?;
                tracing::info!(zone = %z.id, ino, "reaped an orphan left open by an earlier run");
            }
        }
        Ok(())
    }
}
