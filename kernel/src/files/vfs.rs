//! The zone VFS: path resolution from a zone root, across DT_MOUNT entries,
//! and every file operation, as methods on [`Kernel`].
//!
//! Reads are served from the local replica's applied state, with this
//! node's buffered writes laid over it. Metadata changes become
//! [`ZoneCommand`]s through the zone's Raft log; a file's content writes
//! go to its write-back buffer (`files/writeback.rs`), whose write-out
//! uploads the chunks before the command that names them is proposed. A
//! content change commits only against the inode version it was planned
//! from, and is re-planned on conflict, so concurrent writers never lose
//! each other's bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::access::identity::{Permission, Task};
use crate::access::rebac::ObjectRef;
use crate::error::{KernelError, Result};
use crate::files::changes;
use crate::files::content::{ContentStore, CHUNK_SIZE, INLINE_MAX};
use crate::files::path::{self, Step};
use crate::files::writeback::Room;
use crate::kernel::{Kernel, Zone};
use crate::types::now;
use crate::types::{ChunkRef, DirListing, FileKind, Ino, Inode, InodeBody, Stat, ZoneId, ROOT_INO};
use crate::zone::command::{Applied, NewInode, Patches, ZoneCommand};

/// Largest file size accepted (1 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// Most bytes one read returns (a short read, like POSIX, beyond that).
pub const MAX_READ: u64 = 16 << 20;
/// Most entries one readdir page returns.
pub const MAX_PAGE: usize = 4096;
/// Attempts at a content change before reporting a conflict.
pub(crate) const MAX_ATTEMPTS: usize = 64;

/// One async lock per inode being written on this node: its writers (and
/// its write-out) queue instead of failing each other's version checks,
/// which remain the guard against writers on other nodes.
#[derive(Default)]
pub(crate) struct InodeLocks(std::sync::Mutex<HashMap<(ZoneId, Ino), InodeLock>>);

type InodeLock = Arc<tokio::sync::Mutex<()>>;

impl InodeLocks {
    pub(crate) async fn lock(&self, zone: &ZoneId, ino: Ino) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds or waits for, keeping the map small.
            if locks.len() > 1024 {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry((zone.clone(), ino)).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The lock of an inode if nobody holds it now.
    pub(crate) fn try_lock(
        &self,
        zone: &ZoneId,
        ino: Ino,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry((zone.clone(), ino)).or_default().clone()
        };
        lock.try_lock_owned().ok()
    }
}

/// A path and where it starts: the root of the task's zone (a `&str` is
/// such a path), or a directory it may not climb above (a WASI
/// descriptor's: `..` past it, or a symbolic link leading out of it, is
/// `not-permitted`, as `openat` beneath a directory). A directory is
/// named by its inode, not its path: a descriptor keeps working on its
/// directory after a rename, and one whose directory was removed finds
/// nothing.
#[derive(Clone, Copy)]
pub struct At<'a> {
    base: Option<&'a Handle>,
    path: &'a str,
}

impl<'a> At<'a> {
    pub fn under(dir: &'a Handle, path: &'a str) -> Self {
        At {
            base: Some(dir),
            path,
        }
    }

    fn with_path(self, path: &'a str) -> Self {
        At { path, ..self }
    }

    /// The path for messages and the audit log: from the zone root.
    pub fn shown(&self) -> std::borrow::Cow<'a, str> {
        match self.base {
            None => self.path.into(),
            Some(b) => format!("{}/{}", b.path.trim_end_matches('/'), self.path).into(),
        }
    }
}

impl<'a> From<&'a str> for At<'a> {
    fn from(path: &'a str) -> Self {
        At { base: None, path }
    }
}

impl<'a> From<&'a String> for At<'a> {
    fn from(path: &'a String) -> Self {
        At::from(path.as_str())
    }
}

/// An open file or directory: a zone and an inode in it.
#[derive(Clone)]
pub struct Handle {
    zone: Arc<Zone>,
    pub ino: Ino,
    pub kind: FileKind,
    /// The path it was opened by, for messages and the audit log.
    path: Arc<str>,
}

impl Handle {
    pub fn zone_id(&self) -> &ZoneId {
        &self.zone.id
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub(crate) fn zone(&self) -> &Arc<Zone> {
        &self.zone
    }

    /// The ReBAC object this handle names.
    pub fn object(&self) -> ObjectRef {
        ObjectRef::inode(self.kind, self.ino)
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Handle({}:{} {:?})", self.zone.id, self.ino, self.kind)
    }
}

/// How `open` treats a missing or existing file.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Intends to read (the default when neither read nor write is set).
    pub read: bool,
    /// Intends to write.
    pub write: bool,
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
    pub directory: bool,
}

impl OpenOptions {
    /// Open for writing, creating the file if it is missing.
    pub const CREATE: OpenOptions = OpenOptions {
        read: false,
        write: true,
        create: true,
        exclusive: false,
        truncate: false,
        directory: false,
    };
    /// Open for writing a file that must not exist yet.
    pub const CREATE_NEW: OpenOptions = OpenOptions {
        exclusive: true,
        ..OpenOptions::CREATE
    };
}

/// A directory and a name in it.
type Entry<'a> = (Handle, &'a str);

/// Where a write lands.
#[derive(Clone, Copy)]
enum Lands {
    Offset(u64),
    End,
}

/// One page of a directory listing; pass `next` back to continue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirPage {
    pub entries: Vec<DirListing>,
    pub next: Option<String>,
}

fn with_path(e: KernelError, p: &str) -> KernelError {
    match e {
        KernelError::NotFound(_) => KernelError::NotFound(p.to_owned()),
        KernelError::Exist(_) => KernelError::Exist(p.to_owned()),
        KernelError::NotDirectory(_) => KernelError::NotDirectory(p.to_owned()),
        KernelError::IsDirectory(_) => KernelError::IsDirectory(p.to_owned()),
        KernelError::NotEmpty(_) => KernelError::NotEmpty(p.to_owned()),
        other => other,
    }
}

/// A path step that outlives the string it was parsed from.
fn owned_step(step: Step<'_>) -> Option<String> {
    match step {
        Step::Name(n) => Some(n.to_owned()),
        Step::Parent => None,
    }
}

fn fresh_ino() -> Ino {
    loop {
        let ino: u64 = rand::random::<u64>() >> 1;
        if ino > ROOT_INO {
            return ino;
        }
    }
}

impl Kernel {
    fn handle(&self, zone: Arc<Zone>, ino: Ino, kind: FileKind, path: &str) -> Handle {
        Handle {
            zone,
            ino,
            kind,
            path: path.into(),
        }
    }

    /// Asks the gate whether `task` may `perm` the inode behind `h`.
    /// Asks the gate whether `task` may `perm` the inode behind `h`, for an
    /// operation on `path` (what the audit log records). A handle whose
    /// inode is gone gets `no-entry`, as it would without a gate.
    pub(crate) fn gate(
        &self,
        task: &Task,
        h: &Handle,
        perm: Permission,
        op: &str,
        path: &str,
    ) -> Result<()> {
        match self.require(task, &h.zone.id, &h.object(), perm, op, path) {
            Err(KernelError::Access(_)) if h.zone.state.inode(h.ino)?.is_none() => {
                Err(KernelError::NotFound(path.to_owned()))
            }
            r => r,
        }
    }

    /// The root directory of `zone`.
    /// Not checked for existence: every zone gets its root in the same
    /// command that records its owner, and a lookup in a missing root
    /// reports `no-entry` anyway. (Checking cost a read on every path.)
    fn root(&self, zone: &ZoneId) -> Result<Handle> {
        Ok(self.handle(self.zone(zone)?, ROOT_INO, FileKind::Dir, "/"))
    }

    /// Resolves `p` from the root of the task's zone. `..` steps back to
    /// the directory it came from and stays at that root (invariant 4). A
    /// DT_MOUNT or a symbolic link in the middle of a path is always
    /// followed, a final one only if `follow` (or `p` ends in `/`);
    /// crossing a mount needs `enter` on the target zone. A link's target
    /// is resolved from the directory holding the link, an absolute one
    /// from the root of the link's zone: a link never leads out of the
    /// zones the walk may enter. Past `MAX_LINKS_FOLLOWED` links, `loop`.
    ///
    /// From a directory (`At::under`), the walk starts at its inode and
    /// may not leave it: `..` past it, an absolute path or a link with an
    /// absolute target is `not-permitted`.
    pub fn resolve<'a>(&self, task: &Task, at: impl Into<At<'a>>, follow: bool) -> Result<Handle> {
        let at = at.into();
        let shown = at.shown();
        let p: &str = &shown;
        let follow = follow || path::names_dir(at.path);
        let beneath = |what: &str| KernelError::NotPermitted(format!("{p}: {what}"));
        let mut todo: VecDeque<Option<String>> =
            path::parse(at.path)?.into_iter().map(owned_step).collect();
        let mut stack = match at.base {
            None => vec![self.root(task.zone())?],
            Some(_) if at.path.starts_with('/') => {
                return Err(beneath("an absolute path from a directory"))
            }
            Some(dir) => vec![dir.clone()],
        };
        let mut links = 0;
        while let Some(step) = todo.pop_front() {
            let top = stack.last().expect("never empty").clone();
            if top.kind != FileKind::Dir {
                return Err(KernelError::NotDirectory(p.to_owned()));
            }
            let Some(name) = step else {
                match (stack.len(), at.base) {
                    (1, Some(_)) => return Err(beneath("`..` above the directory")),
                    (1, None) => {}
                    _ => drop(stack.pop()),
                }
                continue;
            };
            let d = top
                .zone
                .state
                .dentry(top.ino, &name)?
                .ok_or_else(|| KernelError::NotFound(p.to_owned()))?;
            let last = todo.is_empty();
            match d.kind {
                FileKind::Mount if !last || follow => {
                    stack.push(self.cross_mount(task, &top.zone, d.ino, p)?);
                }
                FileKind::Symlink if !last || follow => {
                    links += 1;
                    if links > path::MAX_LINKS_FOLLOWED {
                        return Err(KernelError::Loop(p.to_owned()));
                    }
                    let target = self.link_target(&top.zone, d.ino)?;
                    if target.starts_with('/') && at.base.is_some() {
                        return Err(beneath("a link to an absolute path"));
                    }
                    if target.starts_with('/') {
                        // The first handle of the link's zone on the walk
                        // is that zone's root.
                        let root = stack
                            .iter()
                            .position(|h| h.zone.id == top.zone.id)
                            .unwrap_or(0);
                        stack.truncate(root + 1);
                    }
                    for step in path::parse(&target)?.into_iter().rev() {
                        todo.push_front(owned_step(step));
                    }
                }
                _ => stack.push(self.handle(top.zone.clone(), d.ino, d.kind, p)),
            }
        }
        let mut found = stack.pop().expect("never empty");
        path::check_dir_suffix(at.path, found.kind)?;
        found.path = p.into();
        Ok(found)
    }

    /// What the symbolic link `ino` of `zone` points to.
    fn link_target(&self, zone: &Zone, ino: Ino) -> Result<String> {
        match self.inode(zone, ino)?.body {
            InodeBody::Symlink { target } => Ok(target),
            _ => Err(KernelError::Corrupt(format!("inode {ino} is not a link"))),
        }
    }

    /// Makes a symbolic link at `p` pointing to `target`, stored as given
    /// and resolved whenever it is followed. Needs `write` on the directory.
    pub async fn symlink<'a>(
        &self,
        task: &Task,
        target: &str,
        p: impl Into<At<'a>>,
    ) -> Result<Handle> {
        let at = p.into();
        let r = match path::check_link_target(target) {
            Ok(()) => {
                let new = NewInode::Symlink {
                    target: target.to_owned(),
                };
                self.make(task, at, new).await
            }
            Err(e) => Err(e),
        };
        self.audited(task, task.zone(), "symlink", &at.shown(), r)
    }

    /// What the symbolic link at `p` points to (`invalid` if `p` is not
    /// one, as POSIX `readlink`). Needs `read` on the link.
    pub fn readlink<'a>(&self, task: &Task, p: impl Into<At<'a>>) -> Result<String> {
        let at = p.into();
        let shown = at.shown();
        let p: &str = &shown;
        let h = self.resolve(task, at, false)?;
        if h.kind != FileKind::Symlink {
            return Err(KernelError::Invalid(format!("{p} is not a symbolic link")));
        }
        self.gate(task, &h, Permission::Read, "readlink", p)?;
        self.link_target(&h.zone, h.ino)
    }

    fn cross_mount(&self, task: &Task, zone: &Arc<Zone>, ino: Ino, p: &str) -> Result<Handle> {
        let inode = self.inode(zone, ino)?;
        let InodeBody::Mount { target } = inode.body else {
            return Err(KernelError::Corrupt(format!("inode {ino} is not a mount")));
        };
        self.must_reach(task, &target, "enter", p)?;
        if self.zone_record(&target).is_ok() {
            self.require(
                task,
                &target,
                &ObjectRef::zone(&target),
                Permission::Enter,
                "enter",
                p,
            )?;
        }
        match self.root(&target) {
            Err(KernelError::ZoneNotFound(z)) => Err(KernelError::NotFound(format!(
                "mount target zone {z} is not served on this node"
            ))),
            other => other,
        }
    }

    fn inode(&self, zone: &Zone, ino: Ino) -> Result<Inode> {
        zone.state
            .inode(ino)?
            .ok_or_else(|| KernelError::NotFound(format!("inode {ino} (removed)")))
    }

    /// The parent directory handle and final name of `p`.
    fn parent_of<'p>(&self, task: &Task, at: At<'p>) -> Result<(Handle, &'p str)> {
        let (parent, name) = path::split_parent(at.path)?;
        let dir = self.resolve(task, at.with_path(parent), true)?;
        if dir.kind != FileKind::Dir {
            return Err(KernelError::NotDirectory(parent.to_owned()));
        }
        Ok((dir, name))
    }

    pub fn stat(&self, task: &Task, p: &str) -> Result<Stat> {
        let h = self.resolve(task, p, true)?;
        self.stat_handle(task, &h)
    }

    /// `stat` with the gate skipped: the baseline that measures what the
    /// gate costs. Compiled only with the `gate-off-baseline` feature.
    #[cfg(feature = "gate-off-baseline")]
    pub fn stat_without_gate(&self, task: &Task, p: &str) -> Result<Stat> {
        let h = self.resolve(task, p, true)?;
        Ok(Stat::of(&h.zone.id, &self.current(&h)?))
    }

    /// Stat without crossing a final DT_MOUNT (shows the mount entry itself).
    pub fn lstat(&self, task: &Task, p: &str) -> Result<Stat> {
        let h = self.resolve(task, p, false)?;
        self.stat_handle(task, &h)
    }

    pub fn stat_handle(&self, task: &Task, h: &Handle) -> Result<Stat> {
        self.gate(task, h, Permission::Read, "stat", &h.path)?;
        Ok(Stat::of(&h.zone.id, &self.current(h)?))
    }

    /// The inode behind `h` as readers on this node see it (buffered
    /// writes included).
    fn current(&self, h: &Handle) -> Result<Inode> {
        // The buffer first, as `read` does: a write-out committing in
        // between is then seen twice, never missed.
        let pending = self.writeback.pending(&h.zone.id, h.ino, 0, 0);
        let mut inode = self.inode(&h.zone, h.ino)?;
        if let Some(p) = pending {
            p.apply(&mut inode);
        }
        Ok(inode)
    }

    async fn create_in(
        &self,
        task: &Task,
        dir: &Handle,
        name: &str,
        new: NewInode,
        p: &str,
    ) -> Result<Inode> {
        path::check_new_name(name)?;
        self.gate(task, dir, Permission::Write, "create", p)?;
        loop {
            let cmd = ZoneCommand::Create {
                parent: dir.ino,
                name: name.to_owned(),
                ino: fresh_ino(),
                new: new.clone(),
                now: now(),
            };
            match dir.zone.propose(&task.actor(), cmd).await {
                Ok(Applied::Inode(inode)) => return Ok(inode),
                Ok(Applied::Done) => {
                    return Err(KernelError::Corrupt("create returned no inode".into()))
                }
                // The random inode number was taken: draw another.
                Err(KernelError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn mkdir<'a>(&self, task: &Task, p: impl Into<At<'a>>) -> Result<Handle> {
        let at = p.into();
        let r = self.make(task, at, NewInode::Dir).await;
        self.audited(task, task.zone(), "mkdir", &at.shown(), r)
    }

    /// Creates an inode at `p` in its parent directory.
    async fn make(&self, task: &Task, at: At<'_>, new: NewInode) -> Result<Handle> {
        let shown = at.shown();
        let p: &str = &shown;
        // As POSIX `open("new/", O_CREAT)`: a file is never made at a
        // path that names a directory.
        if new == NewInode::Regular && path::names_dir(at.path) {
            return Err(KernelError::IsDirectory(p.to_owned()));
        }
        let (dir, name) = self.parent_of(task, at)?;
        let inode = self
            .create_in(task, &dir, name, new, p)
            .await
            .map_err(|e| with_path(e, p))?;
        Ok(self.handle(dir.zone, inode.ino, inode.kind(), p))
    }

    /// Creates each missing directory along `p`.
    pub async fn mkdir_all(&self, task: &Task, p: &str) -> Result<Handle> {
        let mut cur = String::new();
        let mut last = self.root(task.zone())?;
        for step in path::parse(p)? {
            let Step::Name(name) = step else {
                return Err(KernelError::Invalid(format!(
                    "{p}: `..` in a path to create"
                )));
            };
            cur.push('/');
            cur.push_str(name);
            last = match self.resolve(task, &cur, true) {
                Ok(h) if h.kind == FileKind::Dir => h,
                Ok(_) => return Err(KernelError::NotDirectory(cur)),
                Err(KernelError::NotFound(_)) => match self.mkdir(task, &cur).await {
                    Err(KernelError::Exist(_)) => self.resolve(task, &cur, true)?,
                    other => other?,
                },
                Err(e) => return Err(e),
            };
        }
        Ok(last)
    }

    /// Creates a DT_PIPE inode (capacity already validated by `mkpipe`).
    pub(crate) async fn make_pipe(&self, task: &Task, p: &str, capacity: u64) -> Result<Handle> {
        self.make(task, p.into(), NewInode::Pipe { capacity }).await
    }

    /// Links zone `target` at `p`. Refused over an existing entry; needs
    /// `enter` on the target zone as well as `write` on the directory.
    pub async fn mount(&self, task: &Task, p: &str, target: &ZoneId) -> Result<Handle> {
        self.may_mount(task, target, p)?;
        let new = NewInode::Mount {
            target: target.clone(),
        };
        let r = self.make(task, p.into(), new).await;
        self.audited(task, task.zone(), "mount", p, r)
    }

    /// Refuses a mount of zone `target` at `p` unless the token binding
    /// `task` names the zone and the task may `enter` it.
    pub(crate) fn may_mount(&self, task: &Task, target: &ZoneId, p: &str) -> Result<()> {
        self.zone_record(target)?;
        self.must_reach(task, target, "mount", p)?;
        self.require(
            task,
            target,
            &ObjectRef::zone(target),
            Permission::Enter,
            "mount",
            p,
        )
    }

    /// Refuses (and audits) `op` at `p` leading `task` into zone `target`
    /// unless the token binding the task names it.
    pub(crate) fn must_reach(&self, task: &Task, target: &ZoneId, op: &str, p: &str) -> Result<()> {
        if task.may_reach(target) {
            return Ok(());
        }
        self.audit(task, target, op, p, "denied");
        Err(KernelError::Access(format!(
            "{p}: the token binding this task to zone {} does not name zone {target}",
            task.zone()
        )))
    }

    /// Opens `p`, creating a regular file if asked. Opening an existing
    /// entry needs `read` and/or `write` on it, as `opts` intends; creating
    /// needs `write` on the directory.
    pub async fn open_path<'a>(
        &self,
        task: &Task,
        p: impl Into<At<'a>>,
        opts: OpenOptions,
    ) -> Result<Handle> {
        let at = p.into();
        let shown = at.shown();
        let p: &str = &shown;
        let existing = match self.resolve(task, at, true) {
            Ok(_) if opts.create && opts.exclusive => return Err(KernelError::Exist(p.to_owned())),
            Ok(h) => Some(h),
            Err(KernelError::NotFound(_)) if opts.create && !opts.directory => None,
            Err(e) => return Err(e),
        };
        let h = match existing {
            Some(h) => {
                if opts.read || !opts.write {
                    self.gate(task, &h, Permission::Read, "open", p)?;
                }
                if opts.write || opts.truncate {
                    self.gate(task, &h, Permission::Write, "open for writing", p)?;
                }
                h
            }
            None => match self.make(task, at, NewInode::Regular).await {
                Ok(h) => {
                    self.audit(task, task.zone(), "create", p, "ok");
                    h
                }
                // Lost a race with another creator: open theirs.
                Err(KernelError::Exist(_)) if !opts.exclusive => self.resolve(task, at, true)?,
                Err(e) => return self.audited(task, task.zone(), "create", p, Err(e)),
            },
        };
        if opts.directory && h.kind != FileKind::Dir {
            return Err(KernelError::NotDirectory(p.to_owned()));
        }
        // As on POSIX, truncating a FIFO on open means nothing.
        if opts.truncate && h.kind != FileKind::Pipe {
            if h.kind == FileKind::Dir {
                return Err(KernelError::IsDirectory(p.to_owned()));
            }
            self.truncate(task, &h, 0).await?;
        }
        Ok(h)
    }

    /// Reads up to `len` bytes at `offset` (at most [`MAX_READ`]); short at
    /// EOF. This node's buffered writes are read too.
    pub async fn read(&self, task: &Task, h: &Handle, offset: u64, len: u64) -> Result<Bytes> {
        self.read_view(task, h, offset, len, true).await
    }

    /// `read` of the committed content only, without this node's buffered
    /// writes: after `linearize` (which writes this node's buffers of the
    /// zone out first), a read no other node can contradict later.
    pub async fn read_linearized(
        &self,
        task: &Task,
        h: &Handle,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        self.read_view(task, h, offset, len, false).await
    }

    async fn read_view(
        &self,
        task: &Task,
        h: &Handle,
        offset: u64,
        len: u64,
        buffered: bool,
    ) -> Result<Bytes> {
        self.gate(task, h, Permission::Read, "read", &h.path)?;
        let want = offset.saturating_add(len.min(MAX_READ));
        // The buffer first: a write-out that commits in between is then
        // read twice (the same bytes), never missed.
        let pending = buffered
            .then(|| self.writeback.pending(&h.zone.id, h.ino, offset, want))
            .flatten();
        let inode = self.regular(h)?;
        let size = inode.size.max(pending.as_ref().map_or(0, |p| p.end));
        if offset >= size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = size.min(want);
        let _guard = self.content.write_guard().await;
        let mut out = read_committed(&self.content, h, &inode, offset, end.min(inode.size)).await?;
        out.resize((end - offset) as usize, 0);
        if let Some(p) = pending {
            p.extents.overlay(offset, &mut out);
        }
        Ok(out.into())
    }

    fn regular(&self, h: &Handle) -> Result<Inode> {
        let inode = self.inode(&h.zone, h.ino)?;
        match inode.body {
            InodeBody::Regular { .. } => Ok(inode),
            InodeBody::Dir { .. } => Err(KernelError::IsDirectory(format!("inode {}", h.ino))),
            _ => Err(KernelError::Unsupported(format!(
                "inode {} is a {}; byte I/O arrives with its issue",
                h.ino,
                inode.kind().as_str()
            ))),
        }
    }

    /// Writes `data` at `offset`; returns the bytes written (all of them).
    pub async fn write(&self, task: &Task, h: &Handle, offset: u64, data: &[u8]) -> Result<u64> {
        self.gate(task, h, Permission::Write, "write", &h.path)?;
        let r = self
            .change_content(task, h, Lands::Offset(offset), data)
            .await;
        self.audited(
            task,
            task.zone(),
            "write",
            &h.path,
            r.map(|_| data.len() as u64),
        )
    }

    /// Appends `data` atomically at the end; returns the offset it landed at.
    pub async fn append(&self, task: &Task, h: &Handle, data: &[u8]) -> Result<u64> {
        self.gate(task, h, Permission::Write, "append", &h.path)?;
        let r = self.change_content(task, h, Lands::End, data).await;
        self.audited(task, task.zone(), "append", &h.path, r)
    }

    /// Buffers a write (see `files/writeback.rs`); a file or node whose
    /// buffer is full is written out first.
    async fn change_content(&self, task: &Task, h: &Handle, at: Lands, data: &[u8]) -> Result<u64> {
        let _writer = self.lock_inode(&h.zone.id, h.ino).await;
        self.writeback.take_failure(&h.zone.id, h.ino)?;
        let len = data.len() as u64;
        // The buffer first (a write-out may be committing behind us).
        let pending = self.writeback.pending(&h.zone.id, h.ino, 0, 0);
        let mut inode = self.regular(h)?;
        let committed = inode.size;
        if let Some(p) = pending {
            p.apply(&mut inode);
        }
        let offset = match at {
            Lands::Offset(o) => o,
            Lands::End => inode.size,
        };
        if offset
            .checked_add(len)
            .is_none_or(|end| end > MAX_FILE_SIZE)
        {
            return Err(KernelError::FileTooLarge(format!(
                "write ending past {MAX_FILE_SIZE} bytes"
            )));
        }
        // A write the zone's quota will refuse is refused now (the log has
        // the last word at write-out), counting what this file's buffer
        // already grows. A zone without a byte quota pays one read here.
        let grows = (offset + len).max(inode.size).saturating_sub(committed);
        if grows > 0 && h.zone.state.quota()?.bytes.is_some() {
            let (usage, quota) = h.zone.state.usage()?;
            let mut after = usage;
            after.bytes = after.bytes.saturating_add(grows);
            after.check(&usage, &quota)?;
        }
        if len == 0 {
            return Ok(offset);
        }
        // In pieces of at most a chunk, so no write holds more than the
        // buffers' bounds, however large it is.
        let (mut at, by) = (offset, task.actor());
        for piece in data.chunks(CHUNK_SIZE as usize) {
            match self
                .writeback
                .room(&h.zone.id, h.ino, &by, piece.len() as u64)
            {
                Room::Fits => {}
                Room::FileFull => self.writeback.write_out_behind(h).await?,
                Room::NodeFull => self.writeback.write_out(h).await?,
                Room::WriterFull => {
                    self.writeback.write_out(h).await?;
                    self.writeback.write_out_others(&by, h).await;
                }
            }
            self.writeback.record(h, by.clone(), at, piece, now());
            at += piece.len() as u64;
        }
        let by = changes::calling_mount();
        self.changes
            .publish_one(&h.zone.id, changes::Changed::Content(h.ino), by);
        self.start_background();
        Ok(offset)
    }

    /// Writes out every file whose last writer is one of `tasks` (a run
    /// ends so: what its agents wrote is durable and visible on every
    /// node when the run reports its exit).
    pub async fn write_out_for(&self, tasks: &[Task]) -> Result<()> {
        let actors: Vec<_> = tasks.iter().map(Task::actor).collect();
        self.writeback.flush_written_by(&actors).await?;
        self.make_durable().await
    }

    /// Makes the writes to the file behind `h` durable (`fsync`): writes
    /// out its buffer, or reports the failure of an earlier write-out, and
    /// flushes the metadata, so the file's name, its directory's entries
    /// and every earlier command of the node are durable too (a directory
    /// is synced so).
    pub async fn sync(&self, task: &Task, h: &Handle) -> Result<()> {
        self.gate(task, h, Permission::Read, "sync", &h.path)?;
        if h.kind == FileKind::Regular {
            let _writer = self.lock_inode(&h.zone.id, h.ino).await;
            self.writeback.write_out(h).await?;
        }
        self.make_durable().await
    }

    /// Sets the file's size, dropping or zero-extending its tail.
    pub async fn truncate(&self, task: &Task, h: &Handle, size: u64) -> Result<()> {
        self.gate(task, h, Permission::Write, "truncate", &h.path)?;
        let r = self.set_size(task, h, size).await;
        self.audited(task, task.zone(), "truncate", &h.path, r)
    }

    async fn set_size(&self, task: &Task, h: &Handle, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(KernelError::FileTooLarge(format!("{size} bytes")));
        }
        let _writer = self.lock_inode(&h.zone.id, h.ino).await;
        self.writeback.write_out(h).await?;
        let _guard = self.content.write_guard().await;
        for _ in 0..MAX_ATTEMPTS {
            let inode = self.regular(h)?;
            if inode.size == size {
                // As POSIX truncate: an unchanged size changes nothing, not
                // even the times (so O_TRUNC on a new file costs no commit).
                return Ok(());
            }
            let inline = match &inode.body {
                InodeBody::Regular { inline } => inline.clone(),
                _ => None,
            };
            let cmd = if size <= INLINE_MAX {
                let mut buf =
                    read_committed(&self.content, h, &inode, 0, size.min(inode.size)).await?;
                buf.resize(size as usize, 0);
                set_content(&inode, size, Layout::Inline(buf), now())
            } else if let Some(bytes) = inline {
                let chunks = if bytes.is_empty() {
                    Vec::new()
                } else {
                    vec![(0, self.content.put(bytes.into()).await?)]
                };
                let layout = Layout::Chunks {
                    chunks,
                    drop_from: None,
                    patches: Patches::Keep,
                };
                set_content(&inode, size, layout, now())
            } else {
                let keep = size.div_ceil(CHUNK_SIZE);
                let cut = size % CHUNK_SIZE;
                let mut chunks = Vec::new();
                if cut != 0 {
                    let idx = size / CHUNK_SIZE;
                    if let Some((_, c)) = h.zone.state.chunks(h.ino, idx, idx + 1)?.first() {
                        if c.len as u64 > cut {
                            let bytes = self.content.get_range(c, 0..cut).await?;
                            chunks.push((idx, self.content.put(bytes).await?));
                        }
                    }
                }
                // Patches past the new end go with it (the state drops them).
                let layout = Layout::Chunks {
                    chunks,
                    drop_from: Some(keep),
                    patches: Patches::Keep,
                };
                set_content(&inode, size, layout, now())
            };
            match h.zone.propose(&task.actor(), cmd).await {
                Ok(_) => return Ok(()),
                Err(KernelError::Conflict(_)) => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(KernelError::Conflict(h.ino))
    }

    pub async fn set_times(
        &self,
        task: &Task,
        h: &Handle,
        atime: Option<i64>,
        mtime: Option<i64>,
    ) -> Result<Stat> {
        self.gate(task, h, Permission::Write, "set-times", &h.path)?;
        if h.kind == FileKind::Regular {
            // Buffered writes first, or their write-out would set the
            // mtime after this.
            self.writeback.flush(h).await?;
        }
        let cmd = ZoneCommand::SetTimes {
            ino: h.ino,
            atime,
            mtime,
            now: now(),
        };
        let r = match h.zone.propose(&task.actor(), cmd).await {
            Ok(Applied::Inode(inode)) => Ok(Stat::of(&h.zone.id, &inode)),
            Ok(Applied::Done) => Err(KernelError::Corrupt("set-times returned no inode".into())),
            Err(e) => Err(e),
        };
        self.audited(task, task.zone(), "set-times", &h.path, r)
    }

    /// The entry `name` in `dir`, without following a mount, if it exists.
    fn child(&self, dir: &Handle, name: &str, p: &str) -> Result<Option<Handle>> {
        Ok(dir
            .zone
            .state
            .dentry(dir.ino, name)?
            .map(|d| self.handle(dir.zone.clone(), d.ino, d.kind, p)))
    }

    /// Renames atomically, replacing a compatible target. Both ends must be
    /// in the same zone. Needs `write` on both directories, on the entry
    /// moved and on the entry replaced.
    pub async fn rename<'a, 'b>(
        &self,
        task: &Task,
        from: impl Into<At<'a>>,
        to: impl Into<At<'b>>,
    ) -> Result<()> {
        let (from, to) = (from.into(), to.into());
        let r = self.rename_gated(task, from, to).await;
        let shown = format!("{} -> {}", from.shown(), to.shown());
        self.audited(task, task.zone(), "rename", &shown, r)
    }

    async fn rename_gated(&self, task: &Task, from_at: At<'_>, to_at: At<'_>) -> Result<()> {
        let (from_shown, to_shown) = (from_at.shown(), to_at.shown());
        let (from, to): (&str, &str) = (&from_shown, &to_shown);
        let ((src, src_name), (dst, dst_name)) = self.two_ends(task, from_at, to_at)?;
        self.gate(task, &src, Permission::Write, "rename", from)?;
        self.gate(task, &dst, Permission::Write, "rename", to)?;
        if let Some(moved) = self.child(&src, src_name, from)? {
            path::check_dir_suffix(from_at.path, moved.kind)?;
            path::check_dir_suffix(to_at.path, moved.kind)?;
            self.gate(task, &moved, Permission::Write, "rename", from)?;
        }
        let replaced = self.child(&dst, dst_name, to)?;
        if let Some(replaced) = &replaced {
            self.gate(task, replaced, Permission::Write, "rename", to)?;
        }
        // A replaced file open on this node keeps its content for its
        // readers.
        let kept = replaced.as_ref().filter(|r| self.held_here(r)).cloned();
        let (src_parent, dst_parent, now) = (src.ino, dst.ino, now());
        let (src_name, dst_name) = (src_name.to_owned(), dst_name.to_owned());
        let cmd = match kept {
            Some(_) => ZoneCommand::Replace {
                src_parent,
                src_name: src_name.clone(),
                dst_parent,
                dst_name,
                holder: self.node_id(),
                now,
            },
            None => ZoneCommand::Rename {
                src_parent,
                src_name: src_name.clone(),
                dst_parent,
                dst_name,
                now,
            },
        };
        src.zone
            .propose(&task.actor(), cmd)
            .await
            .map_err(|e| match e {
                KernelError::NotFound(n) if n == src_name => KernelError::NotFound(from.to_owned()),
                KernelError::Invalid(m) => KernelError::Invalid(m),
                other => with_path(other, to),
            })?;
        self.after_unlink(kept, replaced);
        Ok(())
    }

    /// The parent directories and final names of `from` and `to`, which
    /// must be in one zone (the two ends of a rename or a link).
    fn two_ends<'a, 'b>(
        &self,
        task: &Task,
        from: At<'a>,
        to: At<'b>,
    ) -> Result<(Entry<'a>, Entry<'b>)> {
        let (src, src_name) = self.parent_of(task, from)?;
        let (dst, dst_name) = self.parent_of(task, to)?;
        if src.zone.id != dst.zone.id {
            return Err(KernelError::CrossZone(format!(
                "{} is in zone {}, {} in zone {}",
                from.shown(),
                src.zone.id,
                to.shown(),
                dst.zone.id
            )));
        }
        Ok(((src, src_name), (dst, dst_name)))
    }

    /// Gives the file or symbolic link at `from` another name, `to` (a
    /// hard link): one inode, its content and its grants (which it
    /// inherits from the directory of one of its names), under both; the
    /// content goes with the last name. Needs `write` on the directory
    /// gaining the name and on the entry linked; both in one zone.
    pub async fn link<'a, 'b>(
        &self,
        task: &Task,
        from: impl Into<At<'a>>,
        to: impl Into<At<'b>>,
    ) -> Result<()> {
        let (from, to) = (from.into(), to.into());
        let r = self.link_gated(task, from, to).await;
        let shown = format!("{} -> {}", from.shown(), to.shown());
        self.audited(task, task.zone(), "link", &shown, r)
    }

    async fn link_gated(&self, task: &Task, from_at: At<'_>, to_at: At<'_>) -> Result<()> {
        let (from_shown, to_shown) = (from_at.shown(), to_at.shown());
        let (from, to): (&str, &str) = (&from_shown, &to_shown);
        let ((src, src_name), (dst, dst_name)) = self.two_ends(task, from_at, to_at)?;
        let linked = self
            .child(&src, src_name, from)?
            .ok_or_else(|| KernelError::NotFound(from.to_owned()))?;
        path::check_dir_suffix(from_at.path, linked.kind)?;
        if path::names_dir(to_at.path) {
            return Err(KernelError::NotDirectory(to.to_owned()));
        }
        self.gate(task, &dst, Permission::Write, "link", to)?;
        self.gate(task, &linked, Permission::Write, "link", from)?;
        let cmd = ZoneCommand::Link {
            src_parent: src.ino,
            src_name: src_name.to_owned(),
            dst_parent: dst.ino,
            dst_name: dst_name.to_owned(),
            now: now(),
        };
        src.zone
            .propose(&task.actor(), cmd)
            .await
            .map(drop)
            .map_err(|e| with_path(e, to))
    }

    /// Whether `h` is a regular file open on this node (which an unlink
    /// or a replacing rename keeps as an orphan).
    fn held_here(&self, h: &Handle) -> bool {
        h.kind == FileKind::Regular && self.open_files.is_open(&h.zone.id, h.ino)
    }

    /// After a name went: a `kept` orphan closed meanwhile is reaped now
    /// (nothing else would); a `gone` pipe's ends are woken.
    fn after_unlink(&self, kept: Option<Handle>, gone: Option<Handle>) {
        match (kept, gone) {
            (Some(k), _) if !self.open_files.is_open(&k.zone.id, k.ino) => {
                crate::files::open::reap_if_orphan(k.zone, k.ino)
            }
            (None, Some(gone)) => self.pipes.removed(&gone),
            _ => {}
        }
    }

    /// Removes a file, pipe or mount entry (never a directory).
    pub async fn unlink<'a>(&self, task: &Task, p: impl Into<At<'a>>) -> Result<()> {
        let at = p.into();
        let r = self.remove(task, at, false).await;
        self.audited(task, task.zone(), "unlink", &at.shown(), r)
    }

    /// Removes an empty directory.
    pub async fn rmdir<'a>(&self, task: &Task, p: impl Into<At<'a>>) -> Result<()> {
        let at = p.into();
        let r = self.remove(task, at, true).await;
        self.audited(task, task.zone(), "rmdir", &at.shown(), r)
    }

    /// Needs `write` on the directory and on the entry removed.
    async fn remove(&self, task: &Task, at: At<'_>, dir: bool) -> Result<()> {
        let op = if dir { "rmdir" } else { "unlink" };
        let shown = at.shown();
        let p: &str = &shown;
        if path::parse(at.path)?.is_empty() {
            return Err(match at.base {
                None => KernelError::Busy(format!("{p} is the zone root")),
                Some(_) => KernelError::Invalid(format!("{p} names the directory itself")),
            });
        }
        let (parent, name) = self.parent_of(task, at)?;
        self.gate(task, &parent, Permission::Write, op, p)?;
        let target = self.child(&parent, name, p)?;
        if let Some(target) = &target {
            path::check_dir_suffix(at.path, target.kind)?;
            self.gate(task, target, Permission::Write, op, p)?;
        }
        // A regular file open on this node loses its name, not its content.
        let open = target
            .as_ref()
            .filter(|t| !dir && self.held_here(t))
            .cloned();
        let cmd = match open {
            Some(_) => ZoneCommand::Orphan {
                parent: parent.ino,
                name: name.to_owned(),
                holder: self.node_id(),
                now: now(),
            },
            None => ZoneCommand::Remove {
                parent: parent.ino,
                name: name.to_owned(),
                dir,
                now: now(),
            },
        };
        parent
            .zone
            .propose(&task.actor(), cmd)
            .await
            .map_err(|e| with_path(e, p))?;
        // Its buffered writes go with the inode (not with a name of a file
        // that has another).
        if let (None, Some(t)) = (&open, &target) {
            if t.zone.state.inode(t.ino)?.is_none() {
                self.writeback.discard(&t.zone.id, t.ino);
                self.start_background();
            }
        }
        self.after_unlink(open, target);
        Ok(())
    }

    /// One page of the directory at `p`, in name order, after `cursor`.
    pub fn readdir(
        &self,
        task: &Task,
        p: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DirPage> {
        let h = self.resolve(task, p, true)?;
        self.readdir_handle(task, &h, cursor, limit)
    }

    pub fn readdir_handle(
        &self,
        task: &Task,
        h: &Handle,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DirPage> {
        if h.kind != FileKind::Dir {
            return Err(KernelError::NotDirectory(h.path.to_string()));
        }
        match self.gate(task, h, Permission::Read, "readdir", &h.path) {
            // A directory removed while open lists nothing (as POSIX): it
            // was gated when opened, and holds no entries now.
            Err(KernelError::NotFound(_)) if h.zone.state.inode(h.ino)?.is_none() => {
                return Ok(DirPage {
                    entries: Vec::new(),
                    next: None,
                })
            }
            r => r?,
        }
        let limit = limit.clamp(1, MAX_PAGE);
        let entries = h.zone.state.list(h.ino, cursor, limit)?;
        let next = (entries.len() == limit).then(|| entries[limit - 1].name.clone());
        Ok(DirPage { entries, next })
    }
}

/// A content change of `inode` to `size` bytes, valid only against the
/// version it was planned from.
pub(crate) fn set_content(
    inode: &Inode,
    size: u64,
    layout: Layout,
    now: crate::types::Timestamp,
) -> ZoneCommand {
    let (inline, chunks, drop_from, patches) = match layout {
        Layout::Inline(bytes) => (Some(bytes), Vec::new(), None, Patches::Clear),
        Layout::Chunks {
            chunks,
            drop_from,
            patches,
        } => (None, chunks, drop_from, patches),
    };
    ZoneCommand::SetContent {
        ino: inode.ino,
        expect_version: inode.version,
        size,
        inline,
        chunks,
        drop_from,
        patches,
        now,
    }
}

/// Where a content change puts a file's bytes.
pub(crate) enum Layout {
    /// In its inode (it is at most `INLINE_MAX` bytes).
    Inline(Vec<u8>),
    /// In chunks, these (re)placed, every one from `drop_from` on dropped,
    /// with its patches changed so.
    Chunks {
        chunks: Vec<(u64, ChunkRef)>,
        drop_from: Option<u64>,
        patches: Patches,
    },
}

/// The committed bytes `[lo, hi)` of a regular file (`hi` within its
/// size): from its inode if inline, else from its chunks, fetched at once
/// (holes read as zeros), with its patches over them. The chunk map and the
/// patches are read from one version of the file (a write-out committing
/// in between is read again). The caller holds the content store's write
/// guard.
pub(crate) async fn read_committed(
    content: &ContentStore,
    h: &Handle,
    inode: &Inode,
    lo: u64,
    hi: u64,
) -> Result<Vec<u8>> {
    if lo >= hi {
        return Ok(Vec::new());
    }
    if let InodeBody::Regular {
        inline: Some(bytes),
    } = &inode.body
    {
        let top = (hi as usize).min(bytes.len());
        let mut out = bytes[(lo as usize).min(top)..top].to_vec();
        out.resize((hi - lo) as usize, 0);
        return Ok(out);
    }
    let state = &h.zone.state;
    let version = || Ok::<_, KernelError>(state.inode(h.ino)?.map(|i| i.version));
    let (mut chunks, mut patches);
    let mut attempts = 0;
    loop {
        let before = version()?;
        chunks = state.chunks(h.ino, lo / CHUNK_SIZE, (hi - 1) / CHUNK_SIZE + 1)?;
        patches = state.patches(h.ino)?;
        attempts += 1;
        // A writer that never stops gets a read of mixed versions, as a
        // read racing writes may see on any filesystem.
        if version()? == before || attempts == MAX_ATTEMPTS {
            break;
        }
    }
    let mut out = vec![0u8; (hi - lo) as usize];
    let fetches =
        chunks.iter().map(|(idx, chunk)| {
            let start = idx * CHUNK_SIZE;
            let from = lo.max(start) - start;
            let to = hi.min(start + CHUNK_SIZE) - start;
            async move {
                Ok::<_, KernelError>((start + from, content.get_range(chunk, from..to).await?))
            }
        });
    for (at, bytes) in futures::future::try_join_all(fetches).await? {
        let pos = (at - lo) as usize;
        out[pos..pos + bytes.len()].copy_from_slice(&bytes);
    }
    patches.overlay(lo, &mut out);
    Ok(out)
}
