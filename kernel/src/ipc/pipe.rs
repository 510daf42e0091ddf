//! DT_PIPE: bounded ring buffers living in the node's memory, checkpointed
//! through the zone's Raft log.
//!
//! The fast path never touches Raft: a write copies into the ring and wakes
//! readers, a read copies out and wakes writers. A *checkpoint* proposes
//! the change since the previous one (bytes appended and still unread, the
//! new read and write positions) as one `ZoneCommand::PipeCheckpoint`, so the
//! zone's replicated state always holds a consistent earlier image of the
//! ring. Checkpoints run on `sync`, when the last writer detaches, every
//! [`CHECKPOINT_INTERVAL`] while a pipe is dirty, and at clean shutdown.
//!
//! Durability contract (ARCHITECTURE.md, invariant 15): bytes written
//! before a `sync` returned survive a crash of the node; bytes read before a
//! checkpoint are never delivered again; bytes written or read after the
//! last checkpoint may be lost or delivered again after a crash (as with an
//! OS pipe, nothing survives that was not synced). A clean shutdown loses
//! nothing.
//!
//! Semantics (POSIX FIFO, minus the blocking `open`): a read of an empty
//! pipe waits while a writer is attached or none has ever been; once a
//! writer has attached and every writer has detached, an empty pipe reads
//! as end-of-file. A write waits while the ring is full; once a reader has
//! attached and every reader has detached, a write is a broken pipe. A write
//! of at most [`atomic size`](Pipe::atomic) bytes is never split, so
//! concurrent writers' records never interleave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::access::identity::{Permission, Pid, Task};
use crate::consensus::forward::Actor;
use crate::error::{KernelError, Result};
use crate::files::vfs::Handle;
use crate::kernel::{Kernel, Zone};
use crate::types::{FileKind, Ino, ZoneId};
use crate::zone::command::ZoneCommand;
use crate::zone::pipe_record::Checkpoint;

/// Smallest capacity a pipe may have.
pub const MIN_CAPACITY: u64 = 1;
/// Largest capacity a pipe may have (its ring is allocated when opened).
pub const MAX_CAPACITY: u64 = 16 << 20;
/// Writes up to this size are atomic (POSIX's PIPE_BUF), or up to the
/// capacity if that is smaller.
pub const PIPE_BUF: usize = 4096;
/// How often dirty pipes are checkpointed in the background.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// Which end of a pipe a handle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipeMode {
    Read,
    Write,
}

impl PipeMode {
    fn permission(self) -> Permission {
        match self {
            PipeMode::Read => Permission::Read,
            PipeMode::Write => Permission::Write,
        }
    }
}

/// What `nexus pipe stat` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeStat {
    pub zone: ZoneId,
    pub ino: Ino,
    pub capacity: u64,
    pub occupancy: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub readers: u32,
    pub writers: u32,
    /// Who is attached: one entry per open end.
    pub attached: Vec<Attached>,
    /// Bytes written since the last checkpoint (0 when nothing is pending).
    pub unsynced: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    pub pid: Pid,
    pub principal: String,
    pub mode: PipeMode,
}

/// The outcome of a non-blocking read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeRead {
    Data(Vec<u8>),
    /// Empty, and a writer may still come or is attached.
    WouldBlock,
    EndOfFile,
}

/// A fixed-size ring of bytes.
struct Ring {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl Ring {
    fn new(capacity: usize, initial: &[u8]) -> Ring {
        let mut ring = Ring {
            buf: vec![0; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        };
        ring.push(initial);
        ring
    }

    fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends `data`, which must fit.
    fn push(&mut self, data: &[u8]) {
        assert!(data.len() <= self.free(), "ring overflow");
        let cap = self.buf.len();
        let tail = (self.head + self.len) % cap.max(1);
        let first = data.len().min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        self.len += data.len();
    }

    /// Copies `n` bytes starting `skip` bytes after the head, without consuming.
    fn copy(&self, skip: usize, n: usize, out: &mut Vec<u8>) {
        assert!(skip + n <= self.len, "ring underflow");
        let cap = self.buf.len();
        let start = (self.head + skip) % cap.max(1);
        let first = n.min(cap - start);
        out.extend_from_slice(&self.buf[start..start + first]);
        out.extend_from_slice(&self.buf[..n - first]);
    }

    fn pop(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.len);
        let mut out = Vec::with_capacity(n);
        self.copy(0, n, &mut out);
        self.head = (self.head + n) % self.buf.len().max(1);
        self.len -= n;
        out
    }
}

/// The positions a checkpoint last made durable.
#[derive(Clone, Copy)]
struct Saved {
    read_pos: u64,
    write_pos: u64,
    had_writer: bool,
}

struct PipeState {
    ring: Ring,
    read_pos: u64,
    write_pos: u64,
    had_writer: bool,
    had_reader: bool,
    ends: Vec<(u64, Attached)>,
    next_end: u64,
    saved: Saved,
    /// The inode was removed: no more checkpoints; attached ends carry on.
    removed: bool,
}

impl PipeState {
    fn count(&self, mode: PipeMode) -> u32 {
        self.ends.iter().filter(|(_, a)| a.mode == mode).count() as u32
    }

    fn dirty(&self) -> bool {
        !self.removed
            && (self.saved.read_pos != self.read_pos
                || self.saved.write_pos != self.write_pos
                || self.saved.had_writer != self.had_writer)
    }

    fn broken(&self) -> bool {
        self.had_reader && self.count(PipeMode::Read) == 0
    }
}

/// One pipe's live state on this node.
pub struct Pipe {
    zone: Arc<Zone>,
    ino: Ino,
    capacity: usize,
    state: Mutex<PipeState>,
    readable: Notify,
    writable: Notify,
    /// One checkpoint at a time, so each follows the one before.
    checkpointing: tokio::sync::Mutex<()>,
}

impl Pipe {
    fn load(zone: Arc<Zone>, ino: Ino, capacity: u64) -> Result<Pipe> {
        let record = zone.state.pipe_record(ino)?.unwrap_or_default();
        let capacity = capacity.clamp(MIN_CAPACITY, MAX_CAPACITY) as usize;
        if record.data.len() > capacity {
            return Err(KernelError::Corrupt(format!(
                "pipe {ino} holds more than its capacity"
            )));
        }
        let saved = Saved {
            read_pos: record.read_pos,
            write_pos: record.write_pos,
            had_writer: record.had_writer,
        };
        Ok(Pipe {
            zone,
            ino,
            capacity,
            state: Mutex::new(PipeState {
                ring: Ring::new(capacity, &record.data),
                read_pos: record.read_pos,
                write_pos: record.write_pos,
                had_writer: record.had_writer,
                had_reader: false,
                ends: Vec::new(),
                next_end: 0,
                saved,
                removed: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            checkpointing: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The largest write that is never split.
    pub fn atomic(&self) -> usize {
        PIPE_BUF.min(self.capacity)
    }

    fn gone(&self) -> KernelError {
        KernelError::NotFound(format!("pipe {} was removed", self.ino))
    }

    fn try_read(&self, max: usize) -> Result<PipeRead> {
        let mut st = self.lock();
        if st.removed {
            return Err(self.gone());
        }
        if st.ring.len == 0 {
            return Ok(
                if max > 0 && st.had_writer && st.count(PipeMode::Write) == 0 {
                    PipeRead::EndOfFile
                } else if max == 0 {
                    PipeRead::Data(Vec::new())
                } else {
                    PipeRead::WouldBlock
                },
            );
        }
        let out = st.ring.pop(max);
        st.read_pos += out.len() as u64;
        drop(st);
        if !out.is_empty() {
            self.writable.notify_waiters();
        }
        Ok(PipeRead::Data(out))
    }

    /// Takes as much of `data` as the rule allows: all or nothing up to the
    /// atomic size, as much as fits beyond it. Returns the bytes taken.
    fn try_write(&self, data: &[u8]) -> Result<usize> {
        let mut st = self.lock();
        self.writable_state(&st)?;
        let free = st.ring.free();
        let n = if data.len() <= self.atomic() {
            if free < data.len() {
                0
            } else {
                data.len()
            }
        } else {
            free.min(data.len())
        };
        if n == 0 {
            return Ok(0);
        }
        st.ring.push(&data[..n]);
        st.write_pos += n as u64;
        drop(st);
        self.readable.notify_waiters();
        Ok(n)
    }

    /// Refuses writes to a removed or broken pipe.
    fn writable_state(&self, st: &PipeState) -> Result<()> {
        if st.removed {
            return Err(self.gone());
        }
        if st.broken() {
            return Err(KernelError::BrokenPipe(format!(
                "pipe {}: every reader has closed",
                self.ino
            )));
        }
        Ok(())
    }

    /// Whether a read would return now (data, end-of-file or an error).
    fn readable_now(&self) -> bool {
        let st = self.lock();
        st.removed || st.ring.len > 0 || (st.had_writer && st.count(PipeMode::Write) == 0)
    }

    /// Free bytes in the ring now; an error once the pipe is broken or
    /// removed.
    pub fn room(&self) -> Result<usize> {
        let st = self.lock();
        self.writable_state(&st)?;
        Ok(st.ring.free())
    }

    /// Whether a writer waiting for room should wake: room for a whole
    /// atomic write, or an error to report.
    fn writable_now(&self) -> bool {
        self.room().map_or(true, |free| free >= self.atomic())
    }

    /// Waits until `ready` holds, without missing a wake-up in between.
    async fn wait(&self, notify: &Notify, ready: impl Fn() -> bool) {
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready() {
                return;
            }
            notified.await;
        }
    }

    /// Proposes the change since the last checkpoint, if any.
    async fn checkpoint(&self) -> Result<()> {
        let _one = self.checkpointing.lock().await;
        let (cp, target) = {
            let st = self.lock();
            if !st.dirty() {
                return Ok(());
            }
            let appended_from = st.read_pos.max(st.saved.write_pos);
            let mut appended = Vec::with_capacity((st.write_pos - appended_from) as usize);
            st.ring.copy(
                (appended_from - st.read_pos) as usize,
                (st.write_pos - appended_from) as usize,
                &mut appended,
            );
            let target = Saved {
                read_pos: st.read_pos,
                write_pos: st.write_pos,
                had_writer: st.had_writer,
            };
            let cp = Checkpoint {
                base_write: st.saved.write_pos,
                read_pos: st.read_pos,
                write_pos: st.write_pos,
                had_writer: st.had_writer,
                appended,
            };
            (cp, target)
        };
        let r = self
            .zone
            .propose(
                &Actor::Node,
                ZoneCommand::PipeCheckpoint {
                    ino: self.ino,
                    checkpoint: cp,
                },
            )
            .await;
        let mut st = self.lock();
        match r {
            Ok(_) => {
                st.saved = target;
                Ok(())
            }
            Err(KernelError::NotFound(_)) => {
                st.removed = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn stat(&self) -> PipeStat {
        let st = self.lock();
        PipeStat {
            zone: self.zone.id.clone(),
            ino: self.ino,
            capacity: self.capacity as u64,
            occupancy: st.ring.len as u64,
            bytes_in: st.write_pos,
            bytes_out: st.read_pos,
            readers: st.count(PipeMode::Read),
            writers: st.count(PipeMode::Write),
            attached: st.ends.iter().map(|(_, a)| a.clone()).collect(),
            unsynced: if st.removed {
                0
            } else {
                st.write_pos - st.saved.write_pos
            },
        }
    }

    fn attach(&self, task: &Task, mode: PipeMode) -> u64 {
        let mut st = self.lock();
        let id = st.next_end;
        st.next_end += 1;
        st.ends.push((
            id,
            Attached {
                pid: task.pid(),
                principal: task.principal().to_string(),
                mode,
            },
        ));
        match mode {
            PipeMode::Read => st.had_reader = true,
            PipeMode::Write => st.had_writer = true,
        }
        id
    }

    fn detach(&self, id: u64) {
        self.lock().ends.retain(|(e, _)| *e != id);
        // Readers may now see end-of-file, writers a broken pipe.
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    fn idle(&self) -> bool {
        let st = self.lock();
        st.ends.is_empty() && !st.dirty()
    }
}

/// The pipes open on this node, and the background checkpointer.
pub(crate) struct PipeTable {
    open: Mutex<HashMap<(ZoneId, Ino), Arc<Pipe>>>,
    checkpointer: OnceLock<()>,
    /// The runtime the kernel was opened on: the checkpointer runs there,
    /// not on whatever runtime made the first pipe (an agent's, whose
    /// threads are busy with guests).
    rt: Option<tokio::runtime::Handle>,
    /// Held through each checkpoint round: `close` waits out a round in
    /// flight, whose pipes (and so the zones' storage) it holds.
    round: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

impl PipeTable {
    pub(crate) fn new() -> Self {
        PipeTable {
            open: Mutex::default(),
            checkpointer: OnceLock::new(),
            rt: tokio::runtime::Handle::try_current().ok(),
            round: tokio::sync::Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    fn pipes(&self) -> std::sync::MutexGuard<'_, HashMap<(ZoneId, Ino), Arc<Pipe>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checkpoints every dirty pipe; forgets idle ones (their rings are freed).
    pub(crate) async fn checkpoint_all(&self) -> Result<()> {
        let pipes: Vec<Arc<Pipe>> = self.pipes().values().cloned().collect();
        let mut first_err = None;
        for pipe in pipes {
            if let Err(e) = pipe.checkpoint().await {
                tracing::warn!(zone = %pipe.zone.id, ino = pipe.ino, "pipe checkpoint: {e}");
                first_err.get_or_insert(e);
            }
        }
        self.pipes().retain(|_, p| !p.idle());
        first_err.map_or(Ok(()), Err)
    }

    /// Final checkpoint at shutdown; the checkpointer stops and the table
    /// lets go of every pipe (and so of the zones' storage).
    pub(crate) async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let _round = self.round.lock().await;
        let r = self.checkpoint_all().await;
        self.pipes().clear();
        r
    }

    /// The inode behind `h` was removed: if it is a live pipe, its ends are
    /// woken and every further operation on them is `no-entry`.
    pub(crate) fn removed(&self, h: &Handle) {
        if h.kind != FileKind::Pipe {
            return;
        }
        if let Some(pipe) = self.pipes().remove(&(h.zone_id().clone(), h.ino)) {
            pipe.lock().removed = true;
            pipe.readable.notify_waiters();
            pipe.writable.notify_waiters();
        }
    }

    /// Forgets every pipe of a zone (it was destroyed).
    pub(crate) fn forget_zone(&self, zone: &ZoneId) {
        self.pipes().retain(|(z, _), _| z != zone);
    }

    fn start_checkpointer(self: &Arc<Self>) {
        self.checkpointer.get_or_init(|| {
            let table: Weak<PipeTable> = Arc::downgrade(self);
            let checkpointer = async move {
                let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(table) = table.upgrade() else { return };
                    let _round = table.round.lock().await;
                    if table.closed.load(Ordering::SeqCst) {
                        return;
                    }
                    // Errors are logged; the pipe stays dirty and is retried.
                    let _ = table.checkpoint_all().await;
                }
            };
            let rt = self
                .rt
                .clone()
                .unwrap_or_else(tokio::runtime::Handle::current);
            rt.spawn(checkpointer);
        });
    }
}

/// An attached end of a pipe. Dropping it detaches; the background
/// checkpointer saves what the end left within [`CHECKPOINT_INTERVAL`].
pub struct PipeEnd {
    pipe: Arc<Pipe>,
    handle: Handle,
    mode: PipeMode,
    id: u64,
}

impl std::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PipeEnd({:?} {:?})", self.handle, self.mode)
    }
}

impl PipeEnd {
    pub fn mode(&self) -> PipeMode {
        self.mode
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn atomic(&self) -> usize {
        self.pipe.atomic()
    }

    pub fn capacity(&self) -> usize {
        self.pipe.capacity
    }

    pub fn stat(&self) -> PipeStat {
        self.pipe.stat()
    }

    /// Free bytes in the ring now; see [`Pipe::room`].
    pub fn room(&self) -> Result<usize> {
        self.pipe.room()
    }

    /// Waits until this end can make progress: a read end until data or
    /// end-of-file, a write end until room for an atomic write or a broken
    /// pipe. Never fails; the next operation reports what happened.
    pub async fn ready(&self) {
        match self.mode {
            PipeMode::Read => {
                self.pipe
                    .wait(&self.pipe.readable, || self.pipe.readable_now())
                    .await
            }
            PipeMode::Write => {
                self.pipe
                    .wait(&self.pipe.writable, || self.pipe.writable_now())
                    .await
            }
        }
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.pipe.detach(self.id);
    }
}

impl Kernel {
    /// Creates a pipe at `p` holding at most `capacity` bytes.
    pub async fn mkpipe(&self, task: &Task, p: &str, capacity: u64) -> Result<Handle> {
        let r = if (MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            self.make_pipe(task, p, capacity).await
        } else {
            Err(KernelError::Invalid(format!(
                "pipe capacity {capacity} is outside {MIN_CAPACITY}..={MAX_CAPACITY} bytes"
            )))
        };
        self.audited(task, task.zone(), "mkpipe", p, r)
    }

    /// Opens the pipe at `p` as a reader (needs `read`) or writer (`write`).
    pub async fn pipe_open(&self, task: &Task, p: &str, mode: PipeMode) -> Result<PipeEnd> {
        let h = self.resolve(task, p, true)?;
        self.pipe_attach(task, &h, mode)
    }

    /// Attaches to the pipe behind an open handle.
    pub fn pipe_attach(&self, task: &Task, h: &Handle, mode: PipeMode) -> Result<PipeEnd> {
        let op = match mode {
            PipeMode::Read => "open pipe for reading",
            PipeMode::Write => "open pipe for writing",
        };
        self.gate(task, h, mode.permission(), op, h.path())?;
        let pipe = self.live_pipe(h)?;
        let id = pipe.attach(task, mode);
        self.pipes.start_checkpointer();
        Ok(PipeEnd {
            pipe,
            handle: h.clone(),
            mode,
            id,
        })
    }

    /// The live pipe behind `h`, loaded from its last checkpoint if it is
    /// not open on this node yet.
    fn live_pipe(&self, h: &Handle) -> Result<Arc<Pipe>> {
        if h.kind != FileKind::Pipe {
            return Err(KernelError::Invalid(format!("{} is not a pipe", h.path())));
        }
        let key = (h.zone_id().clone(), h.ino);
        let mut pipes = self.pipes.pipes();
        if let Some(p) = pipes.get(&key) {
            return Ok(p.clone());
        }
        let capacity = self.pipe_capacity(h)?;
        let pipe = Arc::new(Pipe::load(h.zone().clone(), h.ino, capacity)?);
        pipes.insert(key, pipe.clone());
        Ok(pipe)
    }

    fn end_gate(&self, task: &Task, end: &PipeEnd, want: PipeMode, op: &str) -> Result<()> {
        if end.mode != want {
            return Err(KernelError::Invalid(format!(
                "{}: this end is open for {}",
                end.handle.path(),
                if end.mode == PipeMode::Read {
                    "reading"
                } else {
                    "writing"
                }
            )));
        }
        self.gate(task, &end.handle, want.permission(), op, end.handle.path())
    }

    /// Reads up to `max` bytes without waiting.
    pub fn pipe_try_read(&self, task: &Task, end: &PipeEnd, max: usize) -> Result<PipeRead> {
        self.end_gate(task, end, PipeMode::Read, "read pipe")?;
        end.pipe.try_read(max)
    }

    /// Reads up to `max` bytes, waiting for some; `None` at end-of-file.
    pub async fn pipe_read(
        &self,
        task: &Task,
        end: &PipeEnd,
        max: usize,
    ) -> Result<Option<Vec<u8>>> {
        loop {
            match self.pipe_try_read(task, end, max)? {
                PipeRead::Data(d) => return Ok(Some(d)),
                PipeRead::EndOfFile => return Ok(None),
                PipeRead::WouldBlock => end.ready().await,
            }
        }
    }

    /// Writes what the atomicity rule allows without waiting; 0 means the
    /// caller would block.
    pub fn pipe_try_write(&self, task: &Task, end: &PipeEnd, data: &[u8]) -> Result<usize> {
        self.end_gate(task, end, PipeMode::Write, "write pipe")?;
        end.pipe.try_write(data)
    }

    /// Writes all of `data`, waiting for room as needed.
    pub async fn pipe_write_all(&self, task: &Task, end: &PipeEnd, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = self.pipe_try_write(task, end, data)?;
            data = &data[n..];
            if n == 0 {
                end.ready().await;
            }
        }
        Ok(())
    }

    /// Makes every byte written and read so far durable in the zone.
    pub async fn pipe_sync(&self, task: &Task, end: &PipeEnd) -> Result<()> {
        if end.pipe.lock().removed {
            return Err(end.pipe.gone());
        }
        let path = end.handle.path();
        self.gate(task, &end.handle, end.mode.permission(), "sync pipe", path)?;
        end.pipe.checkpoint().await
    }

    /// The state of the pipe at `p`: live if open on this node, else its
    /// last checkpoint.
    pub fn pipe_stat(&self, task: &Task, p: &str) -> Result<PipeStat> {
        let h = self.resolve(task, p, true)?;
        self.gate(task, &h, Permission::Read, "stat pipe", p)?;
        self.pipe_stat_handle(&h)
    }

    fn pipe_stat_handle(&self, h: &Handle) -> Result<PipeStat> {
        if h.kind != FileKind::Pipe {
            return Err(KernelError::Invalid(format!("{} is not a pipe", h.path())));
        }
        let live = self
            .pipes
            .pipes()
            .get(&(h.zone_id().clone(), h.ino))
            .cloned();
        if let Some(pipe) = live {
            return Ok(pipe.stat());
        }
        let capacity = self.pipe_capacity(h)?;
        let rec = h.zone().state.pipe_record(h.ino)?.unwrap_or_default();
        Ok(PipeStat {
            zone: h.zone_id().clone(),
            ino: h.ino,
            capacity,
            occupancy: rec.data.len() as u64,
            bytes_in: rec.write_pos,
            bytes_out: rec.read_pos,
            readers: 0,
            writers: 0,
            attached: Vec::new(),
            unsynced: 0,
        })
    }

    fn pipe_capacity(&self, h: &Handle) -> Result<u64> {
        match h.zone().state.inode(h.ino)?.map(|i| i.body) {
            Some(crate::types::InodeBody::Pipe { capacity }) => Ok(capacity),
            Some(_) => Err(KernelError::Invalid(format!("{} is not a pipe", h.path()))),
            None => Err(KernelError::NotFound(h.path().to_owned())),
        }
    }

    /// Every pipe under directory `dir` (recursively, not across mounts)
    /// that the task may read, with its state.
    pub fn pipe_list(&self, task: &Task, dir: &str) -> Result<Vec<(String, PipeStat)>> {
        let mut out = Vec::new();
        let mut todo = vec![dir.trim_end_matches('/').to_owned()];
        while let Some(d) = todo.pop() {
            let mut cursor = None;
            loop {
                let at = if d.is_empty() { "/" } else { &d };
                let page =
                    self.readdir(task, at, cursor.as_deref(), crate::files::vfs::MAX_PAGE)?;
                for e in &page.entries {
                    let p = format!("{d}/{}", e.name);
                    match e.kind {
                        FileKind::Dir => todo.push(p),
                        FileKind::Pipe => match self.pipe_stat(task, &p) {
                            Ok(s) => out.push((p, s)),
                            Err(KernelError::Access(_) | KernelError::NotFound(_)) => {}
                            Err(e) => return Err(e),
                        },
                        _ => {}
                    }
                }
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Checkpoints every dirty pipe on this node (clean shutdown, tests).
    pub async fn checkpoint_pipes(&self) -> Result<()> {
        self.pipes.checkpoint_all().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_around() {
        let mut r = Ring::new(8, b"abcdef");
        assert_eq!(r.pop(4), b"abcd");
        r.push(b"ghijk");
        assert_eq!(r.len, 7);
        let mut out = Vec::new();
        r.copy(1, 5, &mut out);
        assert_eq!(out, b"fghij");
        assert_eq!(r.pop(100), b"efghijk");
        assert_eq!(r.free(), 8);
    }
}
