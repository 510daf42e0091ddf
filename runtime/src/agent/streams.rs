//! `wasi:io` streams over kernel file handles. A read or write is a kernel
//! call, finished on the spot when it need not wait (a buffered write, a
//! read of an inline file), else run as its own tokio task that the
//! stream's pollable waits on: a guest blocked on a stream never spins (no
//! busy waiting), and at most one call is in flight per stream with a
//! bounded buffer (invariant 7). A stream's buffer (the bytes read ahead,
//! or a write waiting in its task) is host memory the agent caused: it is
//! charged to the agent's budget while held, and a read or write that
//! would pass the budget fails with `quota`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use nexus_kernel::Handle;
use nexus_kernel::Kernel;
use nexus_kernel::KernelError;
use nexus_kernel::OpenFile;
use nexus_kernel::Task;
use tokio::task::JoinHandle;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

use super::budget::Charge;
use super::fs::stream_failure;

/// A file a stream works on: its handle, and the hold that keeps it open.
pub type FileRef = (Handle, Option<Arc<OpenFile>>);

/// Bytes fetched or accepted per kernel call at most.
pub const STREAM_CHUNK: usize = 1 << 20;

type Call<T> = Pin<Box<dyn Future<Output = Result<T, KernelError>> + Send>>;
type Running<T> = JoinHandle<Result<T, KernelError>>;

/// Finishes `call` now if it can without waiting; otherwise hands it,
/// as it stands, to a task (a spawn per call costs more than most buffered
/// writes themselves).
fn now_or_spawn<T: Send + 'static>(
    mut call: Call<T>,
) -> Result<Result<T, KernelError>, Running<T>> {
    match (&mut call).now_or_never() {
        Some(r) => Ok(r),
        None => Err(tokio::spawn(call)),
    }
}

enum ReadState {
    Idle,
    Pending(JoinHandle<Result<Bytes, KernelError>>),
    Ready(Bytes),
    Failed(KernelError),
    Closed,
}

/// A stream over a descriptor not open for reading: created, as stock
/// creates it, and every read fails as a read on the descriptor does.
pub struct UnreadableStream;

#[wasmtime_wasi::async_trait]
impl Pollable for UnreadableStream {
    async fn ready(&mut self) {}
}

impl InputStream for UnreadableStream {
    fn read(&mut self, _: usize) -> StreamResult<Bytes> {
        let refused = super::bindings::wasi::filesystem::types::ErrorCode::BadDescriptor;
        Err(StreamError::LastOperationFailed(wasmtime::Error::new(
            refused,
        )))
    }
}

/// Reads a file sequentially from an offset.
pub struct KernelInputStream {
    kernel: Arc<Kernel>,
    task: Task,
    handle: Handle,
    offset: u64,
    state: ReadState,
    /// The bytes in flight or read ahead, charged to the agent.
    held: Charge,
    /// Keeps the file open (alive past an unlink) while the stream lives.
    _open: Option<Arc<OpenFile>>,
}

impl KernelInputStream {
    pub fn new(kernel: Arc<Kernel>, task: Task, file: FileRef, offset: u64, held: Charge) -> Self {
        KernelInputStream {
            kernel,
            task,
            handle: file.0,
            offset,
            state: ReadState::Idle,
            held,
            _open: file.1,
        }
    }

    fn start(&mut self) {
        if let Err(over) = self
            .held
            .resize(STREAM_CHUNK as u64, "a file stream's read buffer")
        {
            self.state = ReadState::Failed(over);
            return;
        }
        let (k, t, h, off) = (
            self.kernel.clone(),
            self.task.clone(),
            self.handle.clone(),
            self.offset,
        );
        match now_or_spawn(Box::pin(async move {
            k.read(&t, &h, off, STREAM_CHUNK as u64).await
        })) {
            Ok(r) => self.settle(Ok(r)),
            Err(running) => self.state = ReadState::Pending(running),
        }
    }

    fn settle(&mut self, r: Result<Result<Bytes, KernelError>, tokio::task::JoinError>) {
        self.state = match r {
            Ok(Ok(b)) if b.is_empty() => ReadState::Closed,
            Ok(Ok(b)) => ReadState::Ready(b),
            Ok(Err(e)) => ReadState::Failed(e),
            Err(e) => ReadState::Failed(KernelError::Storage(format!("read task: {e}"))),
        };
        self.held.shrink(self.buffered());
    }

    /// Bytes read ahead and not yet taken.
    fn buffered(&self) -> u64 {
        match &self.state {
            ReadState::Ready(b) => b.len() as u64,
            _ => 0,
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for KernelInputStream {
    async fn ready(&mut self) {
        if let ReadState::Idle = self.state {
            self.start();
        }
        if let ReadState::Pending(h) = &mut self.state {
            let r = h.await;
            self.settle(r);
        }
    }
}

impl InputStream for KernelInputStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if let ReadState::Pending(h) = &mut self.state {
            match h.now_or_never() {
                Some(r) => self.settle(r),
                None => return Ok(Bytes::new()),
            }
        }
        match std::mem::replace(&mut self.state, ReadState::Idle) {
            ReadState::Idle => {
                self.start();
                if matches!(
                    self.state,
                    ReadState::Ready(_) | ReadState::Failed(_) | ReadState::Closed
                ) {
                    return self.read(size);
                }
                Ok(Bytes::new())
            }
            ReadState::Ready(mut b) => {
                let out = b.split_to(size.min(b.len()));
                self.offset += out.len() as u64;
                if !b.is_empty() {
                    self.state = ReadState::Ready(b);
                }
                // A slice keeps the whole buffer alive: charged until the
                // last byte is taken.
                if self.buffered() == 0 {
                    self.held.shrink(0);
                }
                Ok(out)
            }
            ReadState::Failed(e) => {
                self.state = ReadState::Closed;
                Err(stream_failure(e))
            }
            ReadState::Closed => {
                self.state = ReadState::Closed;
                Err(StreamError::Closed)
            }
            ReadState::Pending(_) => unreachable!("settled above"),
        }
    }
}

/// Where an output stream's bytes land.
#[derive(Clone, Copy)]
pub enum Place {
    At(u64),
    Append,
}

/// Writes to a file at an offset (advancing) or at its end.
pub struct KernelOutputStream {
    kernel: Arc<Kernel>,
    task: Task,
    handle: Handle,
    place: Place,
    pending: Option<JoinHandle<Result<u64, KernelError>>>,
    failed: Option<KernelError>,
    /// The bytes of the write in flight, charged to the agent.
    held: Charge,
    /// Keeps the file open (alive past an unlink) while the stream lives.
    _open: Option<Arc<OpenFile>>,
}

impl KernelOutputStream {
    pub fn new(kernel: Arc<Kernel>, task: Task, file: FileRef, place: Place, held: Charge) -> Self {
        KernelOutputStream {
            kernel,
            task,
            handle: file.0,
            place,
            pending: None,
            failed: None,
            held,
            _open: file.1,
        }
    }

    fn settle(&mut self, r: Result<Result<u64, KernelError>, tokio::task::JoinError>) {
        self.held.shrink(0);
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.failed = Some(e),
            Err(e) => self.failed = Some(KernelError::Storage(format!("write task: {e}"))),
        }
    }

    /// Whether the write in flight (if any) has finished; records its error.
    fn poll_done(&mut self) -> bool {
        match &mut self.pending {
            None => true,
            Some(h) => match h.now_or_never() {
                Some(r) => {
                    self.pending = None;
                    self.settle(r);
                    true
                }
                None => false,
            },
        }
    }

    fn check_failed(&mut self) -> StreamResult<()> {
        match self.failed.take() {
            Some(e) => Err(stream_failure(e)),
            None => Ok(()),
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for KernelOutputStream {
    async fn ready(&mut self) {
        if let Some(h) = self.pending.take() {
            let r = h.await;
            self.settle(r);
        }
    }
}

impl OutputStream for KernelOutputStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if !self.poll_done() {
            return Err(StreamError::trap(
                "write without permission from check-write",
            ));
        }
        self.check_failed()?;
        if bytes.len() > STREAM_CHUNK {
            return Err(StreamError::trap("write larger than check-write permitted"));
        }
        self.held
            .resize(bytes.len() as u64, "a file stream's write")
            .map_err(stream_failure)?;
        let (k, t, h, place) = (
            self.kernel.clone(),
            self.task.clone(),
            self.handle.clone(),
            self.place,
        );
        if let Place::At(off) = &mut self.place {
            *off += bytes.len() as u64;
        }
        match now_or_spawn(Box::pin(async move {
            match place {
                Place::At(off) => k.write(&t, &h, off, &bytes).await,
                Place::Append => k.append(&t, &h, &bytes).await,
            }
        })) {
            Ok(r) => self.settle(Ok(r)),
            Err(running) => self.pending = Some(running),
        }
        Ok(())
    }

    /// A completed write is visible to every reader on the node; flushing
    /// waits for the write in flight (durability is the descriptor's
    /// `sync`).
    fn flush(&mut self) -> StreamResult<()> {
        self.check_failed()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if !self.poll_done() {
            return Ok(0);
        }
        self.check_failed()?;
        Ok(STREAM_CHUNK)
    }
}
