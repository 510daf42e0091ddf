//! Write-back: the writes to a regular file on this node land in a buffer
//! of dirty extents, and reach the content store and the zone's log later,
//! coalesced, as one `SetContent` per file per write-out.
//!
//! Why a buffer and not smaller chunks: the cost the guests paid was one
//! Raft commit and one whole-chunk rewrite per `write` call (a 62-byte
//! append stored 1 MiB). Smaller chunks would cut the rewrite, not the
//! commit, and would multiply every large file's chunk list. The buffer
//! cuts both: a burst of writes to a file costs one commit and one rewrite
//! of each chunk it touched, whatever the number of calls.
//!
//! Why two buffers per file: a file whose buffer passes [`FILE_DIRTY_MAX`]
//! is written out behind its writer (the chunks hashed, stored and made
//! durable, then the commit) while the writer fills a fresh buffer; the
//! writer waits only if it fills that one too before the write-out ends.
//! A large sequential write so keeps the disk and the writer busy at once,
//! as the page cache's background write-back does, instead of taking
//! turns. At most one write-out per file is in progress (its write-out
//! lock), so commits of one file stay in order; a file holds at most two
//! buffers' worth.
//!
//! The contract (ARCHITECTURE.md, "Durability"):
//! - a write is visible at once to every reader on this node (reads and
//!   stats overlay the buffer on the committed state);
//! - it is durable once written out: at `sync`, when the file's buffer
//!   passes [`FILE_DIRTY_MAX`] (once that write-out behind the writer
//!   commits), its writer's [`WRITER_DIRTY_MAX`] or the node's
//!   [`NODE_DIRTY_MAX`], at
//!   a truncate or set-times of the file, at a whole-file put's commit, at
//!   shutdown, and at most [`FLUSH_INTERVAL`] after it was made;
//! - other nodes see it once it is written out.
//!
//! A write-out runs as the task that wrote (the leader gates it again).
//! If it fails for good (the grant was revoked, the zone is out of space)
//! the file's buffered bytes are dropped and the failure is reported once,
//! to the file's next write or `sync` on this node, as POSIX reports a
//! failed write-back at `fsync`; a failure that may pass (no leader, a
//! store error) keeps the bytes (under any written since) and is retried.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::OwnedMutexGuard;

use crate::consensus::forward::Actor;
use crate::error::{KernelError, Result};
use crate::files::changes::{self, ChangeFeed};
use crate::files::content::{ContentStore, CHUNK_SIZE, INLINE_MAX, PATCH_MAX};
use crate::files::extents::Extents;
use crate::files::vfs::{read_committed, set_content, Handle, InodeLocks, Layout, MAX_ATTEMPTS};
use crate::types::{Ino, Inode, InodeBody, Timestamp, ZoneId};
use crate::zone::command::Patches;

/// The longest a write waits in the buffer before it is written out (by
/// default; `KernelConfig::flush_interval`).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A file's buffer is written out behind the writer that would pass this
/// (which then fills a fresh one).
pub const FILE_DIRTY_MAX: u64 = 8 << 20;
/// The buffers of the files one writer (a principal with its zone and
/// capabilities, as `Actor` names it) wrote last: past this it writes its
/// file out first, so no agent holds more than this of the node's buffer.
pub const WRITER_DIRTY_MAX: u64 = 64 << 20;
/// Files one round of the background write-out writes out at once, so
/// their commits share a Ready (each rebuilds only its own file's touched
/// chunks meanwhile).
const WRITE_OUTS_AT_ONCE: usize = 16;
/// All files' buffers together; past this a writer writes its file out
/// first, and the background write-out starts at once.
pub const NODE_DIRTY_MAX: u64 = 256 << 20;

type Key = (ZoneId, Ino);

/// A file's buffered bytes: those written since its last write-out began,
/// over those of the write-out in progress (until it commits).
#[derive(Default)]
struct Buffer {
    newer: Extents,
    /// Shared with the write-out in progress, which alone changes it.
    writing: Option<Arc<Extents>>,
}

impl Buffer {
    /// Bytes held, in both.
    fn held(&self) -> u64 {
        self.newer.bytes() + self.writing.as_ref().map_or(0, |w| w.bytes())
    }

    fn is_empty(&self) -> bool {
        self.held() == 0
    }

    /// One past the last byte held.
    fn end(&self) -> u64 {
        let writing = self.writing.as_ref().map_or(0, |w| w.end());
        self.newer.end().max(writing)
    }

    /// The bytes within `[lo, hi)` as readers see them (the newer over
    /// those being written out).
    fn view(&self, lo: u64, hi: u64) -> Extents {
        let mut out = self
            .writing
            .as_ref()
            .map_or_else(Extents::default, |w| w.clipped(lo, hi));
        out.layer(&self.newer.clipped(lo, hi));
        out
    }

    /// Hands the newer bytes to a write-out, or `None` if there are none.
    /// The caller holds the file's write-out lock, so none is in progress:
    /// bytes still marked as being written out belong to one abandoned
    /// before it ended (its task dropped: a cancelled caller, a runtime
    /// shutting down), and go back under the newer ones, to be written
    /// out again (the same bytes, if it did commit).
    fn begin(&mut self) -> Option<Arc<Extents>> {
        if let Some(abandoned) = self.writing.take() {
            self.put_back(&abandoned);
        }
        if self.newer.bytes() == 0 {
            return None;
        }
        let job = Arc::new(std::mem::take(&mut self.newer));
        self.writing = Some(job.clone());
        Some(job)
    }

    /// Ends the write-out of `job`: committed (or dropped), its bytes
    /// leave; kept (a failure that may pass), they go back under the
    /// newer ones for the next write-out.
    fn end_write_out(&mut self, job: &Arc<Extents>, keep: bool) {
        if !self.writing.as_ref().is_some_and(|w| Arc::ptr_eq(w, job)) {
            return; // Dropped meanwhile (the file is gone).
        }
        self.writing = None;
        if keep {
            self.put_back(job);
        }
    }

    /// Puts the bytes of a write-out that did not end back, under the
    /// newer ones.
    fn put_back(&mut self, older: &Extents) {
        let mut merged = older.clone();
        merged.layer(&self.newer);
        self.newer = merged;
    }
}

/// A write-out taken from a file's buffer.
struct Job {
    by: Actor,
    extents: Arc<Extents>,
    mtime: Timestamp,
}

/// One file's buffered writes.
struct DirtyFile {
    handle: Handle,
    /// The task that wrote them (the last one, if several did).
    by: Actor,
    buffer: Buffer,
    /// The last write's time: the file's mtime once written out.
    mtime: Timestamp,
}

#[derive(Default)]
struct Table {
    files: HashMap<Key, DirtyFile>,
    /// Write-outs that failed for good, reported once to the file's next
    /// write or sync.
    failed: HashMap<Key, KernelError>,
    /// Bytes held by every file's buffer.
    total: u64,
    /// Bytes held by the files each writer wrote last.
    by_writer: HashMap<Actor, u64>,
}

impl Table {
    /// Changes the entry of a file, if it has one, and its counts; an
    /// entry left empty is dropped.
    fn change<R>(&mut self, key: &Key, change: impl FnOnce(&mut DirtyFile) -> R) -> Option<R> {
        let file = self.files.get_mut(key)?;
        let (was_by, before) = (file.by.clone(), file.buffer.held());
        let r = change(file);
        let (by, after) = (file.by.clone(), file.buffer.held());
        if file.buffer.is_empty() {
            self.files.remove(key);
        }
        self.uncount(&was_by, before);
        self.count(&by, after);
        Some(r)
    }

    /// Drops a file's entry.
    fn remove(&mut self, key: &Key) {
        if let Some(f) = self.files.remove(key) {
            self.uncount(&f.by, f.buffer.held());
        }
    }

    /// Counts a file's buffer, of `bytes`, as `by`'s.
    fn count(&mut self, by: &Actor, bytes: u64) {
        if bytes > 0 {
            self.total += bytes;
            *self.by_writer.entry(by.clone()).or_default() += bytes;
        }
    }

    /// Stops counting a file's buffer, of `bytes`, as `by`'s.
    fn uncount(&mut self, by: &Actor, bytes: u64) {
        self.total -= bytes;
        if let Some(held) = self.by_writer.get_mut(by) {
            *held -= bytes;
            if *held == 0 {
                self.by_writer.remove(by);
            }
        }
    }
}

/// What a write finds in the buffers (see [`WriteBack::room`]).
pub(crate) enum Room {
    Fits,
    /// The file's: its buffer is written out behind the writer.
    FileFull,
    /// The node's: the writer writes its file out first.
    NodeFull,
    /// The writer's: it writes out its files first (the ones no other
    /// writer is busy with).
    WriterFull,
}

/// What a reader overlays on the committed state of a file.
pub(crate) struct Pending {
    /// One past the last buffered byte.
    pub end: u64,
    pub mtime: Timestamp,
    /// The buffered bytes within the range asked for.
    pub extents: Extents,
}

impl Pending {
    /// The file's size and times with the buffered writes.
    pub(crate) fn apply(&self, inode: &mut Inode) {
        if matches!(inode.body, InodeBody::Regular { .. }) {
            inode.size = inode.size.max(self.end);
            inode.mtime = inode.mtime.max(self.mtime);
            inode.ctime = inode.ctime.max(self.mtime);
        }
    }
}

/// The node's write-back buffers and their background write-out.
pub(crate) struct WriteBack {
    table: Mutex<Table>,
    content: Arc<ContentStore>,
    /// The files' writer locks (shared with the VFS).
    locks: Arc<InodeLocks>,
    /// Each file's write-out lock: held by its write-out in progress.
    outs: InodeLocks,
    flusher: OnceLock<()>,
    /// The runtime the kernel was opened on (not an agent's).
    rt: Option<tokio::runtime::Handle>,
    /// Wakes the background write-out before its interval (node over budget).
    wake: Arc<tokio::sync::Notify>,
    closed: AtomicBool,
    interval: Duration,
    /// Told when a failed write-out drops bytes readers saw.
    changes: ChangeFeed,
}

/// Whether a failed write-out may succeed later (the bytes are kept).
fn may_pass(e: &KernelError) -> bool {
    matches!(
        e,
        KernelError::Unavailable(_)
            | KernelError::Storage(_)
            | KernelError::Content(_)
            | KernelError::Busy(_)
            | KernelError::Conflict(_)
    )
}

impl WriteBack {
    pub(crate) fn new(
        content: Arc<ContentStore>,
        locks: Arc<InodeLocks>,
        interval: Duration,
        changes: ChangeFeed,
    ) -> Self {
        WriteBack {
            changes,
            table: Mutex::default(),
            content,
            locks,
            outs: InodeLocks::default(),
            flusher: OnceLock::new(),
            rt: tokio::runtime::Handle::try_current().ok(),
            wake: Arc::default(),
            closed: AtomicBool::new(false),
            interval,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The buffered state of a file, with its bytes within `[lo, hi)`.
    /// (Take it before reading the committed inode: a write-out
    /// committing in between is then seen twice, never missed.)
    pub(crate) fn pending(&self, zone: &ZoneId, ino: Ino, lo: u64, hi: u64) -> Option<Pending> {
        let table = self.table();
        let file = table.files.get(&(zone.clone(), ino))?;
        Some(Pending {
            end: file.buffer.end(),
            mtime: file.mtime,
            extents: file.buffer.view(lo, hi),
        })
    }

    /// The failure of an earlier write-out of this file, once.
    pub(crate) fn take_failure(&self, zone: &ZoneId, ino: Ino) -> Result<()> {
        match self.table().failed.remove(&(zone.clone(), ino)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether `len` more bytes for this file, by `by`, stay within the
    /// file's, the writer's and the node's budgets.
    pub(crate) fn room(&self, zone: &ZoneId, ino: Ino, by: &Actor, len: u64) -> Room {
        let table = self.table();
        let file = table
            .files
            .get(&(zone.clone(), ino))
            .map_or(0, |f| f.buffer.newer.bytes());
        let writer = table.by_writer.get(by).copied().unwrap_or(0);
        if writer + len > WRITER_DIRTY_MAX {
            Room::WriterFull
        } else if table.total + len > NODE_DIRTY_MAX {
            Room::NodeFull
        } else if file + len > FILE_DIRTY_MAX {
            Room::FileFull
        } else {
            Room::Fits
        }
    }

    /// Buffers `data` at `at` for the file behind `h`, written by `by`.
    /// The caller holds the file's writer lock and has checked the room.
    pub(crate) fn record(&self, h: &Handle, by: Actor, at: u64, data: &[u8], now: Timestamp) {
        let mut table = self.table();
        let key = (h.zone_id().clone(), h.ino);
        table.files.entry(key.clone()).or_insert_with(|| DirtyFile {
            handle: h.clone(),
            by: by.clone(),
            buffer: Buffer::default(),
            mtime: now,
        });
        table.change(&key, |file| {
            file.buffer.newer.write(at, data);
            file.by = by;
            file.mtime = file.mtime.max(now);
        });
        let over = table.total > NODE_DIRTY_MAX / 2;
        drop(table);
        if over {
            self.wake.notify_one();
        }
    }

    /// Drops a file's buffer (the file is gone).
    pub(crate) fn discard(&self, zone: &ZoneId, ino: Ino) {
        let mut table = self.table();
        let key = (zone.clone(), ino);
        table.remove(&key);
        table.failed.remove(&key);
    }

    /// Forgets every buffer of a zone (it was destroyed).
    pub(crate) fn forget_zone(&self, zone: &ZoneId) {
        let mut table = self.table();
        let gone: Vec<Key> = table
            .files
            .keys()
            .filter(|(z, _)| z == zone)
            .cloned()
            .collect();
        for key in gone {
            table.remove(&key);
        }
        table.failed.retain(|(z, _), _| z != zone);
    }

    /// Writes out the buffer of the file behind `h`, after the write-out
    /// in progress if there is one; the caller holds its writer lock. On
    /// success the buffer is gone; on a failure that may pass it is kept;
    /// otherwise it is dropped (and the error returned). A write-out
    /// behind the writer that failed for good is reported here.
    pub(crate) async fn write_out(&self, h: &Handle) -> Result<()> {
        match self.begin(h).await? {
            Some((_out, job)) => self.finish(h, job).await,
            None => Ok(()),
        }
    }

    /// Starts writing out the buffer of the file behind `h` and returns
    /// (waiting first for the write-out in progress, if there is one); the
    /// caller holds its writer lock. Its failure is reported to the file's
    /// next write or sync.
    pub(crate) async fn write_out_behind(self: &Arc<Self>, h: &Handle) -> Result<()> {
        let Some((out, job)) = self.begin(h).await? else {
            return Ok(());
        };
        let Some(rt) = self.runtime() else {
            return self.finish(h, job).await;
        };
        let (me, h) = (self.clone(), h.clone());
        rt.spawn(async move {
            if let Err(e) = me.finish(&h, job).await {
                me.report(&h, e);
            }
            drop(out);
        });
        Ok(())
    }

    /// Takes the file's write-out lock (after the write-out in progress,
    /// if any), reports a write-out behind the writer that failed for
    /// good, and hands the file's newer bytes to a new write-out, if it
    /// has any; the lock is held until the write-out ends.
    async fn begin(&self, h: &Handle) -> Result<Option<(OwnedMutexGuard<()>, Job)>> {
        let out = self.outs.lock(h.zone_id(), h.ino).await;
        self.take_failure(h.zone_id(), h.ino)?;
        let mut table = self.table();
        let Some(file) = table.files.get_mut(&(h.zone_id().clone(), h.ino)) else {
            return Ok(None);
        };
        let job = file.buffer.begin().map(|extents| Job {
            by: file.by.clone(),
            extents,
            mtime: file.mtime,
        });
        Ok(job.map(|job| (out, job)))
    }

    /// Commits a write-out and settles the buffer: its bytes leave on
    /// success, stay on a failure that may pass, and are dropped with the
    /// rest of the file's buffer otherwise (silently if the file is gone).
    async fn finish(&self, h: &Handle, job: Job) -> Result<()> {
        let r = self.commit(h, &job.by, &job.extents, job.mtime).await;
        let key = (h.zone_id().clone(), h.ino);
        let keep = matches!(&r, Err(e) if may_pass(e));
        let drop_all = r.is_err() && !keep;
        self.table().change(&key, |f| {
            f.buffer.end_write_out(&job.extents, keep);
            if drop_all {
                f.buffer = Buffer::default();
            }
        });
        if drop_all {
            // Readers saw those bytes; they are gone.
            let dropped = changes::Changed::Content(h.ino);
            self.changes.publish_one(h.zone_id(), dropped, None);
        }
        match r {
            Err(_) if drop_all && h.zone().state.inode(h.ino)?.is_none() => Ok(()),
            r => r,
        }
    }

    /// Logs a failed write-out and keeps a failure for good for the file's
    /// next write or sync.
    fn report(&self, h: &Handle, e: KernelError) {
        tracing::warn!(zone = %h.zone_id(), ino = h.ino, "write-out: {e}");
        if !may_pass(&e) {
            self.table().failed.insert((h.zone_id().clone(), h.ino), e);
        }
    }

    /// The kernel's runtime, or the caller's.
    fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.rt
            .clone()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
    }

    /// Plans and commits the buffered `extents` over the file's committed
    /// content, re-planning if a writer on another node got there first.
    async fn commit(
        &self,
        h: &Handle,
        by: &Actor,
        extents: &Extents,
        mtime: Timestamp,
    ) -> Result<()> {
        let _guard = self.content.write_guard().await;
        for _ in 0..MAX_ATTEMPTS {
            let inode = h
                .zone()
                .state
                .inode(h.ino)?
                .ok_or_else(|| KernelError::NotFound(format!("inode {} (removed)", h.ino)))?;
            let cmd = self.plan(h, &inode, extents, mtime).await?;
            match changes::as_write_out(h.zone().propose(by, cmd)).await {
                Ok(_) => return Ok(()),
                Err(KernelError::Conflict(_)) => tokio::task::yield_now().await,
                Err(e) => return Err(e),
            }
        }
        Err(KernelError::Conflict(h.ino))
    }

    /// The `SetContent` that lays `extents` over `inode`: inline if the
    /// result is small; else as patches if they and the file's patches
    /// stay within [`PATCH_MAX`] (one log entry, no chunk written); else
    /// each chunk the extents or the patches touch rebuilt (its stored
    /// bytes, fetched only if not covered, with the patches and the dirty
    /// bytes over them) and stored once, the patches then dropped.
    async fn plan(
        &self,
        h: &Handle,
        inode: &Inode,
        extents: &Extents,
        mtime: Timestamp,
    ) -> Result<crate::zone::command::ZoneCommand> {
        let size = inode.size.max(extents.end());
        let inline = match &inode.body {
            InodeBody::Regular { inline } => inline.clone(),
            _ => {
                return Err(KernelError::Invalid(format!(
                    "inode {} is not a file",
                    h.ino
                )))
            }
        };
        if size <= INLINE_MAX {
            let mut buf = read_committed(&self.content, h, inode, 0, inode.size.min(size)).await?;
            buf.resize(size as usize, 0);
            extents.overlay(0, &mut buf);
            return Ok(set_content(inode, size, Layout::Inline(buf), mtime));
        }
        // Leaving inline storage: the old bytes go under the new ones.
        let mut layered = match inline.as_deref() {
            Some(old) if !old.is_empty() => {
                let mut l = Extents::default();
                l.write(0, old);
                l.layer(extents);
                Some(l)
            }
            _ => None,
        };
        let patches = match inline {
            Some(_) => Extents::default(),
            None => h.zone().state.patches(h.ino)?,
        };
        let fresh = layered.as_ref().unwrap_or(extents);
        if patches.bytes() + fresh.bytes() <= PATCH_MAX {
            let layout = Layout::Chunks {
                chunks: Vec::new(),
                drop_from: None,
                patches: Patches::Add(fresh.to_patches()),
            };
            return Ok(set_content(inode, size, layout, mtime));
        }
        if patches.bytes() > 0 {
            let mut under = patches;
            under.layer(fresh);
            layered = Some(under);
        }
        let dirty = layered.as_ref().unwrap_or(extents);
        let mut rebuilt = Vec::new();
        for idx in dirty.blocks(CHUNK_SIZE) {
            let start = idx * CHUNK_SIZE;
            let stop = (start + CHUNK_SIZE).min(size);
            if dirty.covers(start, stop) {
                // Wholly rewritten: the dirty bytes alone, copied once.
                let mut buf = Vec::with_capacity((stop - start) as usize);
                for (_, piece) in dirty.pieces(start, stop) {
                    buf.extend_from_slice(piece);
                }
                rebuilt.push((idx, buf));
                continue;
            }
            let mut buf: Vec<u8> = match inline {
                Some(_) => Vec::new(),
                None => match h.zone().state.chunks(h.ino, idx, idx + 1)?.first() {
                    Some((_, chunk)) => self.content.get(chunk).await?.to_vec(),
                    None => Vec::new(),
                },
            };
            let dirty_end = dirty
                .pieces(start, stop)
                .last()
                .map_or(0, |(at, piece)| (at + piece.len() as u64 - start) as usize);
            if buf.len() < dirty_end {
                buf.resize(dirty_end, 0);
            }
            dirty.overlay(start, &mut buf);
            rebuilt.push((idx, buf));
        }
        // Stored together: their fsyncs overlap (at most 8 MiB of them,
        // the file's buffer bound, and the patches).
        let puts = rebuilt.into_iter().map(|(idx, buf)| async move {
            Ok::<_, KernelError>((idx, self.content.put(buf.into()).await?))
        });
        let layout = Layout::Chunks {
            chunks: futures::future::try_join_all(puts).await?,
            drop_from: None,
            patches: Patches::Clear,
        };
        Ok(set_content(inode, size, layout, mtime))
    }

    /// Writes out the file behind `h` under its writer lock.
    pub(crate) async fn flush(&self, h: &Handle) -> Result<()> {
        let _writer = self.locks.lock(h.zone_id(), h.ino).await;
        self.write_out(h).await
    }

    /// Writes out every buffered file. A failure for good is kept for the
    /// file's next write or sync; the first error is returned.
    pub(crate) async fn flush_all(&self) -> Result<()> {
        self.flush_where(|_| true).await
    }

    /// Writes out every buffered file of `zone` (before a linearizable
    /// read: it then sees every write a reader on this node could have
    /// seen). Only a failure that may pass is returned; one for good is
    /// kept for the writer, as in the background.
    pub(crate) async fn flush_zone(&self, zone: &ZoneId) -> Result<()> {
        match self.flush_where(|f| f.handle.zone_id() == zone).await {
            Err(e) if may_pass(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes out every file whose last writer is one of `actors`.
    pub(crate) async fn flush_written_by(&self, actors: &[Actor]) -> Result<()> {
        self.flush_where(|f| actors.contains(&f.by)).await
    }

    /// Writes out the other files `by` wrote last whose writer lock is
    /// free (the caller holds the lock of the file behind `h`; waiting for
    /// another could deadlock with its holder doing the same). A failure is
    /// kept for that file's next write or sync.
    pub(crate) async fn write_out_others(&self, by: &Actor, h: &Handle) {
        let _ = self
            .write_out_where(
                |f| &f.by == by && (f.handle.zone_id(), f.handle.ino) != (h.zone_id(), h.ino),
                false,
            )
            .await;
    }

    async fn flush_where(&self, which: impl Fn(&DirtyFile) -> bool) -> Result<()> {
        self.write_out_where(which, true).await
    }

    /// Writes out the files `which` picks, each under its writer lock:
    /// waiting for it, or skipping a file whose lock is held.
    async fn write_out_where(&self, which: impl Fn(&DirtyFile) -> bool, wait: bool) -> Result<()> {
        let handles: Vec<Handle> = self
            .table()
            .files
            .values()
            .filter(|f| which(f))
            .map(|f| f.handle.clone())
            .collect();
        // Several at once: their commits share a Ready (group commit).
        let results: Vec<(Handle, Result<()>)> = futures::stream::iter(handles)
            .map(|h| async move {
                let written = match wait {
                    true => self.flush(&h).await,
                    false => match self.locks.try_lock(h.zone_id(), h.ino) {
                        Some(_writer) => self.write_out(&h).await,
                        None => Ok(()),
                    },
                };
                (h, written)
            })
            .buffer_unordered(WRITE_OUTS_AT_ONCE)
            .collect()
            .await;
        let mut first_err = None;
        for (h, written) in results {
            if let Err(e) = written {
                self.report(&h, e.clone());
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Final write-out at shutdown; the background write-out stops.
    pub(crate) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        self.flush_all().await
    }

    /// Starts the background write-out (once), on the kernel's runtime.
    pub(crate) fn start(self: &Arc<Self>) {
        self.flusher.get_or_init(|| {
            let me: Weak<WriteBack> = Arc::downgrade(self);
            let wake = self.wake.clone();
            let interval = self.interval;
            let flusher = async move {
                loop {
                    let _ = tokio::time::timeout(interval, wake.notified()).await;
                    let Some(wb) = me.upgrade() else { return };
                    if wb.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    // Errors are logged and kept (see `flush_all`).
                    let _ = wb.flush_all().await;
                }
            };
            // Without a runtime (none here, none at open) writes are
            // written out at sync, when full, and at shutdown only.
            if let Some(rt) = self.runtime() {
                rt.spawn(flusher);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        /// A write-out begins (if none is in progress).
        Begin,
        /// The write-out in progress commits, or fails and is kept.
        End {
            committed: bool,
        },
        /// The write-out in progress is dropped before it ends, having
        /// committed or not.
        Abandon {
            committed: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..200, prop::collection::vec(any::<u8>(), 1..40))
                .prop_map(|(at, data)| Op::Write(at, data)),
            1 => Just(Op::Begin),
            1 => any::<bool>().prop_map(|committed| Op::End { committed }),
            1 => any::<bool>().prop_map(|committed| Op::Abandon { committed }),
        ]
    }

    proptest! {
        /// Whatever the order of writes, write-outs and their outcomes
        /// (abandoned ones included), the committed bytes with the
        /// buffer's view over them are the file as written, and the
        /// buffer holds each byte at most twice.
        #[test]
        fn two_buffers_show_the_file_as_written(ops in prop::collection::vec(op(), 0..60)) {
            const LEN: usize = 240;
            let (mut file, mut store) = (vec![0u8; LEN], vec![0u8; LEN]);
            let mut buffer = Buffer::default();
            let mut job: Option<Arc<Extents>> = None;
            for op in ops {
                match op {
                    Op::Write(at, data) => {
                        file[at as usize..at as usize + data.len()].copy_from_slice(&data);
                        buffer.newer.write(at, &data);
                    }
                    Op::Begin if job.is_none() => job = buffer.begin(),
                    Op::Begin => {}
                    Op::End { committed } => {
                        if let Some(j) = job.take() {
                            if committed {
                                j.overlay(0, &mut store);
                            }
                            buffer.end_write_out(&j, !committed);
                        }
                    }
                    Op::Abandon { committed } => {
                        if let Some(j) = job.take() {
                            if committed {
                                j.overlay(0, &mut store);
                            }
                        }
                    }
                }
                let mut seen = store.clone();
                buffer.view(0, LEN as u64).overlay(0, &mut seen);
                prop_assert_eq!(&seen, &file);
                prop_assert!(buffer.held() <= 2 * LEN as u64);
                prop_assert_eq!(buffer.is_empty(), buffer.held() == 0);
            }
            // Written out to the end, the store is the file.
            if let Some(j) = job.take() {
                j.overlay(0, &mut store);
                buffer.end_write_out(&j, false);
            }
            if let Some(j) = buffer.begin() {
                j.overlay(0, &mut store);
                buffer.end_write_out(&j, false);
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(store, file);
        }
    }

    #[test]
    fn a_write_out_dropped_meanwhile_changes_nothing_when_it_ends() {
        let mut buffer = Buffer::default();
        buffer.newer.write(0, b"old");
        let job = buffer.begin().expect("bytes to write out");
        buffer = Buffer::default();
        buffer.newer.write(10, b"new");
        buffer.end_write_out(&job, true);
        assert_eq!(buffer.held(), 3);
        assert!(buffer.writing.is_none());
    }
}
