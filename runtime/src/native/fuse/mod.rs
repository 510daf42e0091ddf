//! A task's zone as a FUSE file system: what a native agent (a container at
//! isolation level 1, a host process at level 0) sees at `/mnt/nexus`.
//!
//! Every request is served by the kernel as the one task the mount was made
//! for (bound at spawn: the mount *is* the identity), so the gate decides
//! each operation and the audit log records it; a denial is `EACCES`. The
//! Linux kernel's own permission checks are off (no `default_permissions`):
//! modes and owners shown are nominal, the gate is the only judge.
//!
//! Requests arrive on FUSE's threads. Those on regular files (create,
//! open, read, write) are answered there: a hop to the runtime's workers
//! cost as much as the work (creates went from ~1,100 to ~1,600-1,900/s
//! at level 0), though a create or an `O_TRUNC` open then holds its FUSE
//! thread for its commit. The rest are answered from a task on the node's
//! tokio runtime, so a pipe read waiting for a writer, or a rename or
//! removal, holds no FUSE thread. Kernel errors map to errno once, in
//! `errno.rs`.
//!
//! Linux caches entries, attributes and regular files' pages, kept across
//! opens, and is told to drop them when the kernel reports a change this
//! mount did not make (another agent, another node: `watch.rs`); `TTL`
//! only bounds how long a missed report could go unnoticed.
//!
//! Deliberate differences from a local file system (ARCHITECTURE.md):
//! a pipe (DT_PIPE) shows as an empty regular file whose reads and writes
//! block like a FIFO's (a FUSE inode typed FIFO would be served by Linux's
//! own pipe code, bypassing the kernel), so `mkfifo` is refused; modes,
//! owners and `chmod`/`chown` are accepted and ignored; a hard link's
//! names show as separate nodes with one link each; there are no extended
//! attributes.

mod errno;
mod nodes;
mod watch;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use nexus_kernel::{DirListing, FileKind, Handle, Kernel, KernelError, OpenFile, OpenOptions};
use nexus_kernel::{PipeMode, PipeRead, Stat, Task};

use super::api;
use crate::agent::pipe::{ChargedEnd, PipeBudget};

pub use errno::errno;
use nodes::{Full, Nodes, ROOT};
pub use watch::Watcher;

/// How long the Linux kernel may trust an entry or attributes before
/// asking again. Changes are reported as they happen (`watch.rs`); this
/// bounds the life of a stale answer only if a report were lost.
const TTL: Duration = Duration::from_secs(60);
/// Files, directories and pipes open through one mount at once.
pub const MAX_OPEN: usize = 4096;
/// Directory entries fetched per kernel call.
const DIR_PAGE: usize = 512;
/// Largest write the Linux kernel sends in one request.
const MAX_WRITE: u32 = 1 << 20;
/// `O_NONBLOCK`, as Linux numbers it.
const O_NONBLOCK: i32 = 0o4000;
/// `O_APPEND`, `O_CREAT`, `O_EXCL`, `O_TRUNC`, as Linux numbers them.
const O_APPEND: i32 = 0o2000;
const O_EXCL: i32 = 0o200;
const O_TRUNC: i32 = 0o1000;
/// The type bits of a mode, and those of a regular file and a socket.
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFSOCK: u32 = 0o140000;

/// Whom every file appears to belong to (the agent's own user).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What one open (file, pipe or directory) holds.
enum Opened {
    File {
        handle: Handle,
        /// Keeps an unlinked file alive until released (POSIX).
        _open: Option<Arc<OpenFile>>,
        read: bool,
        write: bool,
        append: bool,
    },
    /// Ends charged to the agent's host memory (a ring lives in the
    /// node's memory, outside the container's).
    Pipe {
        reader: Option<ChargedEnd>,
        writer: Option<ChargedEnd>,
    },
    Dir {
        handle: Handle,
        listing: Mutex<Listing>,
    },
}

/// A directory's entries fetched so far, in name order.
#[derive(Default)]
struct Listing {
    entries: Vec<DirListing>,
    cursor: Option<String>,
    done: bool,
}

/// The zone of one task, served to FUSE.
pub struct ZoneFs {
    inner: Arc<Inner>,
}

struct Inner {
    kernel: Arc<Kernel>,
    task: Task,
    rt: tokio::runtime::Handle,
    owner: Owner,
    pipes: Arc<PipeBudget>,
    nodes: Mutex<Nodes>,
    open: Mutex<OpenTable>,
    /// The node of the kernel API socket (`api.rs`), once this process
    /// has bound it.
    socket: Mutex<Option<u64>>,
}

/// What keeps a `ZoneFs`'s caches true once it is mounted (`watch.rs`):
/// [`Watching::start`] it with the session's notifier.
pub struct Watching {
    inner: Arc<Inner>,
    changes: tokio::sync::broadcast::Receiver<Arc<[nexus_kernel::Change]>>,
}

#[derive(Default)]
struct OpenTable {
    next: u64,
    map: HashMap<u64, Arc<Opened>>,
}

type Reply<T> = Result<T, Errno>;

fn kerr(e: KernelError) -> Errno {
    errno(&e)
}

fn name_of(name: &OsStr) -> Reply<&str> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn time_of(ns: i64) -> SystemTime {
    match u64::try_from(ns) {
        Ok(ns) => UNIX_EPOCH + Duration::from_nanos(ns),
        Err(_) => UNIX_EPOCH,
    }
}

fn ns_of(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

impl ZoneFs {
    /// The file system, and what keeps its caches true once mounted.
    pub fn new(
        kernel: Arc<Kernel>,
        task: Task,
        rt: tokio::runtime::Handle,
        owner: Owner,
        pipes: Arc<PipeBudget>,
    ) -> (Self, Watching) {
        // Subscribed before anything is cached, so no change is missed.
        let changes = kernel.changes().subscribe();
        let mut nodes = Nodes::default();
        let root = kernel.resolve(&task, "/", true);
        let root = root.and_then(|h| kernel.stat_handle(&task, &h));
        nodes.show(ROOT, root.ok().map(|s| (s.zone, s.ino)));
        let inner = Arc::new(Inner {
            kernel,
            task,
            rt,
            owner,
            pipes,
            nodes: Mutex::new(nodes),
            open: Mutex::new(OpenTable::default()),
            socket: Mutex::new(None),
        });
        let watching = Watching {
            inner: inner.clone(),
            changes,
        };
        (ZoneFs { inner }, watching)
    }

    /// Runs `work` on the runtime and answers with what it returns.
    /// Runs `work` on this FUSE thread: for the calls on regular files,
    /// which never wait on another agent (a hop to the runtime's workers
    /// would cost more than the work).
    fn now<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let me = self.inner.task.pid();
        self.inner.rt.block_on(nexus_kernel::from_mount(me, work))
    }

    fn serve<F>(&self, work: impl FnOnce(Arc<Inner>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let me = self.inner.task.pid();
        let work = nexus_kernel::from_mount(me, work(self.inner.clone()));
        self.inner.rt.spawn(work);
    }
}

impl Inner {
    fn nodes(&self) -> std::sync::MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self) -> std::sync::MutexGuard<'_, OpenTable> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, node: INodeNo) -> Reply<String> {
        self.nodes().path(node.0).ok_or(Errno::ENOENT)
    }

    /// The zone path of `name` in `parent`; the API socket's reserved name
    /// is no zone file's (`EPERM` to make, move or remove one there).
    fn child_path(&self, parent: INodeNo, name: &OsStr) -> Reply<String> {
        let name = name_of(name)?;
        if is_socket_name(parent, name) {
            return Err(Errno::EPERM);
        }
        self.nodes().child_path(parent.0, name).ok_or(Errno::ENOENT)
    }

    fn opened(&self, fh: FileHandle) -> Reply<Arc<Opened>> {
        self.table().map.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn is_pipe(&self, fh: FileHandle) -> bool {
        self.opened(fh)
            .is_ok_and(|o| matches!(*o, Opened::Pipe { .. }))
    }

    fn keep(&self, opened: Opened) -> Reply<FileHandle> {
        let mut t = self.table();
        if t.map.len() >= MAX_OPEN {
            return Err(Errno::ENFILE);
        }
        t.next += 1;
        let fh = t.next;
        t.map.insert(fh, Arc::new(opened));
        Ok(FileHandle(fh))
    }

    fn attr(&self, s: &Stat) -> FileAttr {
        let (kind, perm, nlink) = match s.kind {
            FileKind::Dir | FileKind::Mount => (FileType::Directory, 0o755, 2),
            FileKind::Regular | FileKind::Pipe => (FileType::RegularFile, 0o644, 1),
            FileKind::Symlink => (FileType::Symlink, 0o777, 1),
        };
        // Zone roots share an inode number: another zone's inodes are
        // told apart by their zone, so tree walkers see no false loops.
        let ino = if s.zone == *self.task.zone() {
            s.ino
        } else {
            let h = blake3::hash(s.zone.as_str().as_bytes());
            let salt = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]));
            (s.ino ^ salt) >> 1
        };
        FileAttr {
            ino: INodeNo(ino),
            size: s.size,
            blocks: s.size.div_ceil(512),
            atime: time_of(s.atime),
            mtime: time_of(s.mtime),
            ctime: time_of(s.ctime),
            crtime: time_of(s.ctime),
            kind,
            perm,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn socket_node(&self) -> Option<u64> {
        *self.socket.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn socket_attr(&self, node: u64) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(node),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::Socket,
            perm: 0o666,
            nlink: 1,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// This process binding the API socket (`bind` makes its node through
    /// FUSE): the node is made here, never in the zone.
    fn bind_socket(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
    ) -> Option<Reply<FileAttr>> {
        if !name.to_str().is_some_and(|n| is_socket_name(parent, n)) {
            return None;
        }
        let ours = Path::new("/proc/self/task")
            .join(req.pid().to_string())
            .exists();
        if mode & S_IFMT != S_IFSOCK || !ours || self.socket_node().is_some() {
            return Some(Err(Errno::EPERM));
        }
        let id = match self.nodes().remember(parent.0, api::SOCKET_NAME, None) {
            Ok(id) => id,
            Err(Full) => return Some(Err(Errno::ENFILE)),
        };
        *self.socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        Some(Ok(self.socket_attr(id)))
    }

    /// `name` in `parent` was looked up (or made): its node and attributes.
    fn entry(&self, parent: INodeNo, name: &OsStr, s: &Stat) -> Reply<(FileAttr, u64)> {
        let name = name_of(name)?;
        let id = self
            .nodes()
            .remember(parent.0, name, Some((s.zone.clone(), s.ino)))
            .map_err(|Full| Errno::ENFILE)?;
        Ok((self.attr(s), id))
    }

    /// What `p` names as Linux sees it: a mount crossed into its zone, a
    /// symbolic link itself (Linux follows links, with `readlink`).
    fn stat_path(&self, p: &str) -> Reply<Stat> {
        let h = self.kernel.resolve(&self.task, p, false).map_err(kerr)?;
        let h = match h.kind {
            FileKind::Mount => self.kernel.resolve(&self.task, p, true).map_err(kerr)?,
            _ => h,
        };
        self.kernel.stat_handle(&self.task, &h).map_err(kerr)
    }

    /// The attributes of `node`, through its open file if there is one (an
    /// unlinked file still has them).
    fn getattr(&self, node: INodeNo, fh: Option<FileHandle>) -> Reply<FileAttr> {
        let via_handle = fh
            .and_then(|fh| self.opened(fh).ok())
            .and_then(|o| match &*o {
                Opened::File { handle, .. } | Opened::Dir { handle, .. } => Some(handle.clone()),
                Opened::Pipe { .. } => None,
            });
        if self.socket_node() == Some(node.0) {
            return Ok(self.socket_attr(node.0));
        }
        let s = match via_handle {
            Some(h) => self.kernel.stat_handle(&self.task, &h).map_err(kerr)?,
            None if node.0 == ROOT => self.stat_path("/")?,
            None => self.stat_path(&self.path(node)?)?,
        };
        Ok(self.attr(&s))
    }

    /// A handle to write `node` through: its open file's, else a new one.
    async fn writable(&self, node: INodeNo, fh: Option<FileHandle>) -> Reply<Handle> {
        if let Some(o) = fh.and_then(|fh| self.opened(fh).ok()) {
            if let Opened::File { handle, write, .. } = &*o {
                return if *write {
                    Ok(handle.clone())
                } else {
                    Err(Errno::EBADF)
                };
            }
        }
        let p = self.path(node)?;
        let opts = OpenOptions {
            write: true,
            ..OpenOptions::default()
        };
        self.kernel
            .open_path(&self.task, &p, opts)
            .await
            .map_err(kerr)
    }

    async fn setattr(
        &self,
        node: INodeNo,
        fh: Option<FileHandle>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Reply<FileAttr> {
        if let Some(size) = size {
            let h = self.writable(node, fh).await?;
            if h.kind == FileKind::Regular {
                self.kernel
                    .truncate(&self.task, &h, size)
                    .await
                    .map_err(kerr)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            let p = self.path(node)?;
            let h = self.kernel.resolve(&self.task, &p, true).map_err(kerr)?;
            self.kernel
                .set_times(&self.task, &h, atime.map(ns_of), mtime.map(ns_of))
                .await
                .map_err(kerr)?;
        }
        // Modes and owners mean nothing here: accepted, and left alone.
        self.getattr(node, fh)
    }

    async fn open(&self, node: INodeNo, flags: i32, create: Option<&str>) -> Reply<Opening> {
        let (read, write) = match OpenFlags(flags).acc_mode() {
            OpenAccMode::O_RDONLY => (true, false),
            OpenAccMode::O_WRONLY => (false, true),
            OpenAccMode::O_RDWR => (true, true),
        };
        let p = match create {
            Some(p) => p.to_owned(),
            None => self.path(node)?,
        };
        let opts = OpenOptions {
            read,
            write,
            create: create.is_some(),
            exclusive: create.is_some() && flags & O_EXCL != 0,
            truncate: flags & O_TRUNC != 0,
            directory: false,
        };
        let handle = self
            .kernel
            .open_path(&self.task, &p, opts)
            .await
            .map_err(kerr)?;
        let (opened, fopen) = match handle.kind {
            FileKind::Dir | FileKind::Mount if write => return Err(Errno::EISDIR),
            FileKind::Pipe => {
                let attach = |mode| {
                    let end = self.kernel.pipe_attach(&self.task, &handle, mode)?;
                    self.pipes.hold(end)
                };
                let reader = read.then(|| attach(PipeMode::Read)).transpose();
                let writer = write.then(|| attach(PipeMode::Write)).transpose();
                let opened = Opened::Pipe {
                    reader: reader.map_err(kerr)?,
                    writer: writer.map_err(kerr)?,
                };
                // Straight to the ring, never the page cache; no offsets.
                let fopen = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE;
                (opened, fopen)
            }
            _ => (
                Opened::File {
                    _open: self.kernel.hold_open(&handle),
                    handle: handle.clone(),
                    read,
                    write,
                    append: flags & O_APPEND != 0,
                },
                // Pages cached by earlier opens stay: another writer's
                // change drops them (`watch.rs`).
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
        };
        let stat = self.kernel.stat_handle(&self.task, &handle).map_err(kerr)?;
        Ok(Opening {
            fh: self.keep(opened)?,
            fopen,
            stat,
        })
    }

    async fn read(&self, fh: FileHandle, offset: u64, size: u32, flags: i32) -> Reply<Vec<u8>> {
        match &*self.opened(fh)? {
            Opened::File { handle, read, .. } => {
                if !read {
                    return Err(Errno::EBADF);
                }
                let bytes = self
                    .kernel
                    .read(&self.task, handle, offset, u64::from(size))
                    .await
                    .map_err(kerr)?;
                Ok(bytes.to_vec())
            }
            Opened::Pipe {
                reader: Some(end), ..
            } => {
                let max = size as usize;
                if flags & O_NONBLOCK != 0 {
                    match self.kernel.pipe_try_read(&self.task, end, max) {
                        Ok(PipeRead::Data(d)) => Ok(d),
                        Ok(PipeRead::EndOfFile) => Ok(Vec::new()),
                        Ok(PipeRead::WouldBlock) => Err(Errno::EAGAIN),
                        Err(e) => Err(kerr(e)),
                    }
                } else {
                    let got = self.kernel.pipe_read(&self.task, end, max).await;
                    Ok(got.map_err(kerr)?.unwrap_or_default())
                }
            }
            Opened::Pipe { reader: None, .. } => Err(Errno::EBADF),
            Opened::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    async fn write(&self, fh: FileHandle, offset: u64, data: &[u8], flags: i32) -> Reply<u32> {
        let n = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        match &*self.opened(fh)? {
            Opened::File {
                handle,
                write,
                append,
                ..
            } => {
                if !write {
                    return Err(Errno::EBADF);
                }
                // O_APPEND lands at the kernel's end of the file, not at
                // the size this host last saw (others append too).
                let r = if *append {
                    self.kernel.append(&self.task, handle, data).await
                } else {
                    self.kernel.write(&self.task, handle, offset, data).await
                };
                r.map_err(kerr)?;
                Ok(n)
            }
            Opened::Pipe {
                writer: Some(end), ..
            } => {
                if flags & O_NONBLOCK != 0 {
                    match self.kernel.pipe_try_write(&self.task, end, data) {
                        Ok(0) => Err(Errno::EAGAIN),
                        Ok(n) => Ok(n as u32),
                        Err(e) => Err(kerr(e)),
                    }
                } else {
                    self.kernel
                        .pipe_write_all(&self.task, end, data)
                        .await
                        .map_err(kerr)?;
                    Ok(n)
                }
            }
            Opened::Pipe { writer: None, .. } => Err(Errno::EBADF),
            Opened::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    async fn fsync(&self, fh: FileHandle) -> Reply<()> {
        match &*self.opened(fh)? {
            Opened::File { handle, .. } | Opened::Dir { handle, .. } => {
                self.kernel.sync(&self.task, handle).await
            }
            Opened::Pipe {
                writer: Some(end), ..
            }
            | Opened::Pipe {
                reader: Some(end), ..
            } => self.kernel.pipe_sync(&self.task, end).await,
            Opened::Pipe { .. } => Ok(()),
        }
        .map_err(kerr)
    }

    fn opendir(&self, node: INodeNo) -> Reply<FileHandle> {
        let p = self.path(node)?;
        let handle = self.kernel.resolve(&self.task, &p, true).map_err(kerr)?;
        if handle.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        // Listing is what the gate checks, on the first page.
        self.kernel
            .readdir_handle(&self.task, &handle, None, 1)
            .map_err(kerr)?;
        self.keep(Opened::Dir {
            handle,
            listing: Mutex::new(Listing::default()),
        })
    }

    /// Entries from `offset` (0 is `.`, 1 is `..`, then the listing), as
    /// many as the reply holds.
    fn readdir(
        &self,
        node: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> Reply<()> {
        let opened = self.opened(fh)?;
        let Opened::Dir { handle, listing } = &*opened else {
            return Err(Errno::ENOTDIR);
        };
        let mut at = offset;
        while at < 2 {
            let name = if at == 0 { "." } else { ".." };
            if reply.add(node, at + 1, FileType::Directory, name) {
                return Ok(());
            }
            at += 1;
        }
        let mut listing = listing.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let index = (at - 2) as usize;
            if index >= listing.entries.len() {
                if listing.done {
                    return Ok(());
                }
                let page = self
                    .kernel
                    .readdir_handle(&self.task, handle, listing.cursor.as_deref(), DIR_PAGE)
                    .map_err(kerr)?;
                listing.done = page.next.is_none();
                listing.cursor = page.next;
                listing.entries.extend(page.entries);
                continue;
            }
            let e = &listing.entries[index];
            if is_socket_name(node, &e.name) {
                // Shadowed by the API socket: not shown.
                at += 1;
                continue;
            }
            let kind = match e.kind {
                FileKind::Dir | FileKind::Mount => FileType::Directory,
                FileKind::Regular | FileKind::Pipe => FileType::RegularFile,
                FileKind::Symlink => FileType::Symlink,
            };
            if reply.add(INodeNo(e.ino), at + 1, kind, &e.name) {
                return Ok(());
            }
            at += 1;
        }
    }

    async fn mknod(&self, parent: INodeNo, name: &OsStr, mode: u32) -> Reply<(FileAttr, u64)> {
        let p = self.child_path(parent, name)?;
        match mode & S_IFMT {
            S_IFREG => {
                self.kernel
                    .open_path(&self.task, &p, OpenOptions::CREATE_NEW)
                    .await
                    .map_err(kerr)?;
            }
            // A FIFO node would be Linux's own pipe, not the kernel's:
            // pipes are made with `nexus pipe create` (or by an agent
            // through the kernel API), and then read and written here.
            _ => return Err(Errno::EPERM),
        }
        self.entry(parent, name, &self.stat_path(&p)?)
    }

    /// `ln -s TARGET NAME`: the target stored as given. Linux resolves an
    /// absolute one from the process's root, not the mount's.
    async fn symlink(
        &self,
        parent: INodeNo,
        name: &OsStr,
        target: &std::path::Path,
    ) -> Reply<(FileAttr, u64)> {
        let p = self.child_path(parent, name)?;
        let target = target.to_str().ok_or(Errno::EINVAL)?;
        self.kernel
            .symlink(&self.task, target, &p)
            .await
            .map_err(kerr)?;
        self.entry(parent, name, &self.stat_path(&p)?)
    }

    /// `ln FILE NAME`: the kernel's hard link (the same inode, its grants
    /// and content, under both names).
    async fn link(
        &self,
        node: INodeNo,
        new_parent: INodeNo,
        new_name: &OsStr,
    ) -> Reply<(FileAttr, u64)> {
        let from = self.path(node)?;
        let to = self.child_path(new_parent, new_name)?;
        self.kernel
            .link(&self.task, &from, &to)
            .await
            .map_err(kerr)?;
        self.entry(new_parent, new_name, &self.stat_path(&to)?)
    }

    fn readlink(&self, node: INodeNo) -> Reply<Vec<u8>> {
        let p = self.path(node)?;
        let target = self.kernel.readlink(&self.task, &p).map_err(kerr)?;
        Ok(target.into_bytes())
    }

    async fn mkdir(&self, parent: INodeNo, name: &OsStr) -> Reply<(FileAttr, u64)> {
        let p = self.child_path(parent, name)?;
        self.kernel.mkdir(&self.task, &p).await.map_err(kerr)?;
        self.entry(parent, name, &self.stat_path(&p)?)
    }

    async fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool) -> Reply<()> {
        let p = self.child_path(parent, name)?;
        let r = if dir {
            self.kernel.rmdir(&self.task, &p).await
        } else {
            self.kernel.unlink(&self.task, &p).await
        };
        r.map_err(kerr)?;
        self.nodes().detach(parent.0, name_of(name)?);
        Ok(())
    }

    async fn rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Reply<()> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && self.stat_path(&to).is_ok() {
            return Err(Errno::EEXIST);
        }
        self.kernel
            .rename(&self.task, &from, &to)
            .await
            .map_err(kerr)?;
        self.nodes()
            .rename(parent.0, name_of(name)?, new_parent.0, name_of(new_name)?);
        Ok(())
    }

    fn statfs(&self) -> (u64, u64, u64, u64) {
        const BLOCK: u64 = 4096;
        // Without a quota the zone is bounded by the node's disk, which a
        // native agent is not told about: it sees a large, mostly free
        // file system.
        let unlimited = (1u64 << 40) / BLOCK;
        match self.kernel.zone_usage(&self.task) {
            Ok((usage, quota)) => {
                let blocks = quota.bytes.map_or(unlimited, |b| b / BLOCK);
                let used = usage.bytes / BLOCK;
                let files = quota.inodes.unwrap_or(1 << 32);
                (
                    blocks,
                    blocks.saturating_sub(used),
                    files,
                    files.saturating_sub(usage.inodes),
                )
            }
            Err(_) => (unlimited, unlimited, 1 << 32, 1 << 32),
        }
    }
}

/// A file just opened: its handle, how FUSE should treat it, its stat.
struct Opening {
    fh: FileHandle,
    fopen: FopenFlags,
    stat: Stat,
}

impl fuser::Filesystem for ZoneFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Requests as large as the Linux kernel allows (a refusal keeps
        // its own, smaller, limit). Cached pages are dropped when the
        // kernel reports another writer's change (`watch.rs`), not when a
        // refreshed mtime differs (FUSE_AUTO_INVAL_DATA): this mount's own
        // writes change the mtime too, and must not drop their own pages.
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let inner = &self.inner;
        if name.to_str().is_some_and(|n| is_socket_name(parent, n)) {
            return match inner.socket_node() {
                Some(id) => {
                    // The same node every time: the bound socket lives on
                    // the Linux inode of this node id.
                    let _ = inner.nodes().remember(parent.0, api::SOCKET_NAME, None);
                    reply.entry(&TTL, &inner.socket_attr(id), Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            };
        }
        let r = inner
            .child_path(parent, name)
            .and_then(|p| inner.stat_path(&p))
            .and_then(|s| inner.entry(parent, name, &s));
        answer_entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.nodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inner.getattr(ino, fh) {
            Ok(attr) => reply.attr(&TTL, &FileAttr { ino, ..attr }),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.serve(move |inner| async move {
            match inner.setattr(ino, fh, size, atime, mtime).await {
                Ok(attr) => reply.attr(&TTL, &FileAttr { ino, ..attr }),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inner.readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = (link_name.to_owned(), target.to_owned());
        self.serve(move |inner| async move {
            answer_entry(reply, inner.symlink(parent, &name, &target).await)
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_owned();
        self.serve(move |inner| async move {
            answer_entry(reply, inner.link(ino, newparent, &newname).await)
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.inner.bind_socket(req, parent, name, mode) {
            Some(Ok(attr)) => return reply.entry(&TTL, &attr, Generation(0)),
            Some(Err(e)) => return reply.error(e),
            None => {}
        }
        let name = name.to_owned();
        self.serve(move |inner| async move {
            answer_entry(reply, inner.mknod(parent, &name, mode).await)
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name.to_owned();
        self.serve(
            move |inner| async move { answer_entry(reply, inner.mkdir(parent, &name).await) },
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.serve(move |inner| async move {
            answer_empty(reply, inner.remove(parent, &name, false).await)
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        self.serve(move |inner| async move {
            answer_empty(reply, inner.remove(parent, &name, true).await)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        self.serve(move |inner| async move {
            let r = inner
                .rename(parent, &name, newparent, &newname, flags)
                .await;
            answer_empty(reply, r)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.now(self.inner.open(ino, flags.0, None)) {
            Ok(o) => reply.opened(o.fh, o.fopen),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        // On this thread, as `open` (see the module docs).
        let inner = &self.inner;
        let made = self.now(async {
            let p = inner.child_path(parent, name)?;
            let o = inner.open(parent, flags, Some(&p)).await?;
            let (attr, id) = inner.entry(parent, name, &o.stat)?;
            Ok::<_, Errno>((
                o,
                FileAttr {
                    ino: INodeNo(id),
                    ..attr
                },
            ))
        });
        match made {
            Ok((o, attr)) => reply.created(&TTL, &attr, Generation(0), o.fh, o.fopen),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if !self.inner.is_pipe(fh) {
            return match self.now(self.inner.read(fh, offset, size, flags.0)) {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            };
        }
        // A pipe read may wait for a writer: never on a FUSE thread.
        self.serve(move |inner| async move {
            match inner.read(fh, offset, size, flags.0).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if !self.inner.is_pipe(fh) {
            return match self.now(self.inner.write(fh, offset, data, flags.0)) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            };
        }
        let data = data.to_vec();
        self.serve(move |inner| async move {
            match inner.write(fh, offset, &data, flags.0).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() promises no durability (fsync does): nothing to do, and
        // ENOSYS tells Linux never to ask again (a request less per close).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Dropping it detaches a pipe's ends and lets an unlinked file go.
        self.inner.table().map.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(move |inner| async move { answer_empty(reply, inner.fsync(fh).await) });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.inner.opendir(ino) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.inner.readdir(ino, fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.inner.table().map.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Creates, renames and removals are durable at a directory's fsync
        // (or a file's), as on a local file system.
        self.serve(move |inner| async move { answer_empty(reply, inner.fsync(fh).await) });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, free, files, ffree) = self.inner.statfs();
        reply.statfs(blocks, free, free, files, ffree, 4096, 255, 4096);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOTSUP);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOTSUP);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No file here is a terminal, or takes any other ioctl.
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Whether it exists; what may be done to it is the gate's answer
        // to the operation itself.
        match self.inner.getattr(ino, None) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// Whether `name` in `parent` is the API socket's reserved place.
fn is_socket_name(parent: INodeNo, name: &str) -> bool {
    parent.0 == ROOT && name == api::SOCKET_NAME
}

/// A new or looked-up entry: its node id as the attributes' inode.
fn answer_entry(reply: ReplyEntry, r: Reply<(FileAttr, u64)>) {
    match r {
        Ok((attr, id)) => {
            let attr = FileAttr {
                ino: INodeNo(id),
                ..attr
            };
            reply.entry(&TTL, &attr, Generation(0))
        }
        Err(e) => reply.error(e),
    }
}

fn answer_empty(reply: ReplyEmpty, r: Reply<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}
