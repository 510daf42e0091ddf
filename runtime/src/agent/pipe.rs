//! DT_PIPE for agents: `wasi:io` streams over an attached pipe end (what a
//! pipe opened with `wasi:filesystem` reads and writes through), and the
//! `nexus:kernel/pipe` interface. Every call runs as the task, so the gate
//! decides each read and write.

use std::sync::Arc;

use bytes::Bytes;
use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::Task;
use nexus_kernel::{PipeEnd, PipeMode, PipeRead};
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{subscribe, DynPollable, Pollable};
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

use super::bindings::nexus::kernel::pipe::{self as wit, ErrorCode, Mode, PipeStat};
use super::budget::{Charge, HostMemory};
use super::fs::{code, stream_failure, FsError};
use super::state::AgentState;
use super::streams::STREAM_CHUNK;

type FsResult<T> = Result<T, FsError>;

fn fs_err(e: KernelError) -> FsError {
    code(&e).into()
}

/// A pipe error as a stream error: a broken pipe is the stream closing
/// (what libc reports as EPIPE); anything else the guest can inspect with
/// `filesystem-error-code`.
fn stream_err(e: KernelError) -> StreamError {
    match e {
        KernelError::BrokenPipe(_) => StreamError::Closed,
        e => stream_failure(e),
    }
}

/// The read side of a pipe as an input stream.
pub struct PipeInputStream {
    kernel: Arc<Kernel>,
    task: Task,
    end: HeldEnd,
}

impl PipeInputStream {
    pub fn new(kernel: Arc<Kernel>, task: Task, end: HeldEnd) -> Self {
        PipeInputStream { kernel, task, end }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeInputStream {
    async fn ready(&mut self) {
        self.end.ready().await
    }
}

impl InputStream for PipeInputStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self
            .kernel
            .pipe_try_read(&self.task, &self.end, size.min(STREAM_CHUNK))
        {
            Ok(PipeRead::Data(d)) => Ok(d.into()),
            Ok(PipeRead::WouldBlock) => Ok(Bytes::new()),
            Ok(PipeRead::EndOfFile) => Err(StreamError::Closed),
            Err(e) => Err(stream_err(e)),
        }
    }
}

/// The write side of a pipe as an output stream. `check-write` grants the
/// ring's free space, at least an atomic write's worth (nothing when the
/// ring is full); bytes a concurrent writer's race left without room
/// wait in `pending` (at most one grant's worth) and go out on the next call
/// or when the stream's pollable is awaited. `blocking-write-and-flush`
/// (what libc's `write` uses) puts each call's bytes in the ring whole when
/// they fit the atomic size, and returns as soon as they are in.
pub struct PipeOutputStream {
    kernel: Arc<Kernel>,
    task: Task,
    end: HeldEnd,
    pending: Vec<u8>,
}

impl PipeOutputStream {
    pub fn new(kernel: Arc<Kernel>, task: Task, end: HeldEnd) -> Self {
        PipeOutputStream {
            kernel,
            task,
            end,
            pending: Vec::new(),
        }
    }

    /// Moves pending bytes into the ring as far as the ring allows.
    fn push_pending(&mut self) -> Result<(), KernelError> {
        while !self.pending.is_empty() {
            let n = self
                .kernel
                .pipe_try_write(&self.task, &self.end, &self.pending)?;
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
        }
        Ok(())
    }

    /// Waits until every pending byte is in the ring.
    async fn drain_pending(&mut self) -> StreamResult<()> {
        loop {
            self.push_pending().map_err(stream_err)?;
            if self.pending.is_empty() {
                return Ok(());
            }
            self.end.ready().await;
        }
    }

    /// Room a write may use now: 0 while bytes are pending or the ring is
    /// full, else the ring's free space but never less than an atomic
    /// write. libc's `write` asks `check-write` and writes only what it is
    /// granted, so granting a sliver would split a small write (invariant
    /// 16); granted in full, a write up to the atomic size goes into the
    /// ring whole (the kernel takes it all or nothing), waiting in
    /// `pending` until it fits.
    fn permit(&mut self) -> Result<usize, KernelError> {
        self.push_pending()?;
        if !self.pending.is_empty() {
            return Ok(0);
        }
        match self.end.room()? {
            0 => Ok(0),
            room => Ok(room.max(self.end.atomic()).min(STREAM_CHUNK)),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PipeOutputStream {
    async fn ready(&mut self) {
        loop {
            match self.permit() {
                Ok(0) => self.end.ready().await,
                // Room, or an error the next call reports.
                _ => return,
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for PipeOutputStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.pending.len() + bytes.len() > STREAM_CHUNK {
            return Err(StreamError::trap("write larger than check-write permitted"));
        }
        self.pending.extend_from_slice(&bytes);
        self.push_pending().map_err(stream_err)
    }

    /// Bytes in the ring are visible to readers at once; flushing only
    /// pushes what is pending (the pollable waits for that). Durability is
    /// `sync` (descriptor or pipe interface), not flush.
    fn flush(&mut self) -> StreamResult<()> {
        self.push_pending().map_err(stream_err)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.permit().map_err(stream_err)
    }

    /// Unlike the default, does not wait for room for a *next* write after
    /// this one's bytes are in the ring: a writer filling a pipe nobody
    /// reads yet is not blocked by its last write.
    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.pending.extend_from_slice(&bytes);
        self.drain_pending().await
    }

    /// Waits for the flush (pending bytes into the ring), then reports the
    /// room there is, possibly none: `blocking-flush` (libc's `write` ends
    /// with one) must not wait for room nobody asked for.
    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.drain_pending().await?;
        self.check_write()
    }
}

/// What a `pipe-end` resource is in the table.
pub type PipeEndResource = HeldEnd;

/// An attached end, charged to its task's pipe budget for as long as the
/// end and every stream made from it live.
pub type HeldEnd = Arc<ChargedEnd>;

pub struct ChargedEnd {
    end: PipeEnd,
    _charge: EndCharge,
}

impl std::ops::Deref for ChargedEnd {
    type Target = PipeEnd;

    fn deref(&self) -> &PipeEnd {
        &self.end
    }
}

type Held = std::collections::HashMap<(nexus_kernel::ZoneId, u64), (Charge, usize)>;

/// The pipe rings a task holds: the capacity of every distinct pipe it has
/// an end of is charged to its host memory (a ring lives in the node's
/// memory, outside the agent's own), once however many ends it has.
pub struct PipeBudget {
    memory: Arc<HostMemory>,
    held: std::sync::Mutex<Held>,
}

impl PipeBudget {
    pub fn new(memory: Arc<HostMemory>) -> Arc<Self> {
        Arc::new(PipeBudget {
            memory,
            held: Default::default(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `end`, with its pipe charged (once per pipe, however many ends);
    /// refused past the budget.
    pub fn hold(self: &Arc<Self>, end: PipeEnd) -> Result<ChargedEnd, KernelError> {
        let charge = self.charge(&end)?;
        Ok(ChargedEnd {
            end,
            _charge: charge,
        })
    }

    fn charge(self: &Arc<Self>, end: &PipeEnd) -> Result<EndCharge, KernelError> {
        let key = (end.handle().zone_id().clone(), end.handle().ino);
        let mut held = self.held();
        if let Some((_, n)) = held.get_mut(&key) {
            *n += 1;
        } else {
            let ring = self.memory.charge(end.capacity() as u64, "a pipe ring")?;
            held.insert(key.clone(), (ring, 1));
        }
        Ok(EndCharge {
            budget: self.clone(),
            key,
        })
    }
}

/// One end's share of its pipe's charge.
struct EndCharge {
    budget: Arc<PipeBudget>,
    key: (nexus_kernel::ZoneId, u64),
}

impl Drop for EndCharge {
    fn drop(&mut self) {
        let mut held = self.budget.held();
        if let Some((_, n)) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

fn to_wit_stat(s: nexus_kernel::PipeStat) -> PipeStat {
    PipeStat {
        capacity: s.capacity,
        occupancy: s.occupancy,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        readers: s.readers,
        writers: s.writers,
        unsynced: s.unsynced,
    }
}

impl AgentState {
    fn end(&self, r: &Resource<PipeEndResource>) -> FsResult<HeldEnd> {
        Ok(self.table.get(r).map_err(FsError::trap)?.clone())
    }

    /// An attached end, charged to the task's pipe budget.
    pub(super) fn hold_end(&self, end: PipeEnd) -> Result<HeldEnd, KernelError> {
        Ok(Arc::new(self.pipe_budget.hold(end)?))
    }

    /// Adds an attached end, within the task's descriptor limit (an end
    /// holds the pipe's ring in memory, so it counts as a descriptor) and
    /// its pipe budget.
    fn push_end(&mut self, end: PipeEnd) -> FsResult<Resource<PipeEndResource>> {
        if self.open_descriptors >= self.limits.max_descriptors {
            return Err(ErrorCode::InsufficientMemory.into());
        }
        let end = self.hold_end(end).map_err(fs_err)?;
        let r = self.table.push(end).map_err(FsError::trap)?;
        self.open_descriptors += 1;
        Ok(r)
    }
}

impl wit::Host for AgentState {
    async fn create(&mut self, path: String, capacity: u64) -> FsResult<()> {
        self.kernel
            .mkpipe(&self.task, &path, capacity)
            .await
            .map(|_| ())
            .map_err(fs_err)
    }
}

impl wit::HostPipeEnd for AgentState {
    async fn open(&mut self, path: String, mode: Mode) -> FsResult<Resource<PipeEndResource>> {
        let mode = match mode {
            Mode::Read => PipeMode::Read,
            Mode::Write => PipeMode::Write,
        };
        let end = self
            .kernel
            .pipe_open(&self.task, &path, mode)
            .await
            .map_err(fs_err)?;
        self.push_end(end)
    }

    async fn read(&mut self, r: Resource<PipeEndResource>, len: u64) -> FsResult<Vec<u8>> {
        let end = self.end(&r)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(STREAM_CHUNK);
        match self.kernel.pipe_try_read(&self.task, &end, len) {
            Ok(PipeRead::Data(d)) => Ok(d),
            Ok(PipeRead::EndOfFile) => Ok(Vec::new()),
            Ok(PipeRead::WouldBlock) => Err(ErrorCode::WouldBlock.into()),
            Err(e) => Err(fs_err(e)),
        }
    }

    async fn blocking_read(&mut self, r: Resource<PipeEndResource>, len: u64) -> FsResult<Vec<u8>> {
        let end = self.end(&r)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(STREAM_CHUNK);
        match self.kernel.pipe_read(&self.task, &end, len).await {
            Ok(d) => Ok(d.unwrap_or_default()),
            Err(e) => Err(fs_err(e)),
        }
    }

    async fn write(&mut self, r: Resource<PipeEndResource>, data: Vec<u8>) -> FsResult<u64> {
        let end = self.end(&r)?;
        match self.kernel.pipe_try_write(&self.task, &end, &data) {
            Ok(0) if !data.is_empty() => Err(ErrorCode::WouldBlock.into()),
            Ok(n) => Ok(n as u64),
            Err(e) => Err(fs_err(e)),
        }
    }

    async fn blocking_write(
        &mut self,
        r: Resource<PipeEndResource>,
        data: Vec<u8>,
    ) -> FsResult<()> {
        let end = self.end(&r)?;
        self.kernel
            .pipe_write_all(&self.task, &end, &data)
            .await
            .map_err(fs_err)
    }

    async fn subscribe(
        &mut self,
        r: Resource<PipeEndResource>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let end = self.table.get(&r)?.clone();
        let waiter = self.table.push(EndReady(end))?;
        subscribe(&mut self.table, waiter)
    }

    async fn sync(&mut self, r: Resource<PipeEndResource>) -> FsResult<()> {
        let end = self.end(&r)?;
        self.kernel
            .pipe_sync(&self.task, &end)
            .await
            .map_err(fs_err)
    }

    async fn stat(&mut self, r: Resource<PipeEndResource>) -> wasmtime::Result<PipeStat> {
        Ok(to_wit_stat(self.table.get(&r)?.stat()))
    }

    async fn atomic_size(&mut self, r: Resource<PipeEndResource>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&r)?.atomic() as u64)
    }

    async fn drop(&mut self, r: Resource<PipeEndResource>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        self.open_descriptors = self.open_descriptors.saturating_sub(1);
        Ok(())
    }
}

/// A pollable over a pipe end (its own table entry, so the end itself can
/// be dropped while a pollable made from it lives on).
struct EndReady(HeldEnd);

#[wasmtime_wasi::async_trait]
impl Pollable for EndReady {
    async fn ready(&mut self) {
        self.0.ready().await
    }
}
