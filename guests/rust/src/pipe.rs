//! Pipes (DT_PIPE): bounded ring buffers in the agent's zone.
//!
//! A pipe can also be used with plain `std::fs` (open its path and read or
//! write, like a FIFO); this module adds non-blocking calls, pollables that
//! wait together with timers and other streams, `sync` and `stat`.

use std::fmt;
use std::io;

use crate::bindings::nexus::kernel::pipe as wit;
use crate::bindings::wasi::filesystem::types::ErrorCode;
use crate::Pollable;

/// A pipe error: the kernel's `wasi:filesystem` error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error(pub ErrorCode);

impl Error {
    /// The pipe is empty (read) or full (write) and the call would wait.
    pub fn is_would_block(&self) -> bool {
        self.0 == ErrorCode::WouldBlock
    }

    /// Every reader has closed (write).
    pub fn is_broken_pipe(&self) -> bool {
        self.0 == ErrorCode::Pipe
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.name())
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.0 {
            ErrorCode::WouldBlock => io::ErrorKind::WouldBlock,
            ErrorCode::Pipe => io::ErrorKind::BrokenPipe,
            ErrorCode::NoEntry => io::ErrorKind::NotFound,
            ErrorCode::Access | ErrorCode::NotPermitted => io::ErrorKind::PermissionDenied,
            ErrorCode::Exist => io::ErrorKind::AlreadyExists,
            ErrorCode::Invalid => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Which end to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Read,
    Write,
}

/// A pipe's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub capacity: u64,
    pub occupancy: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub readers: u32,
    pub writers: u32,
    /// Bytes written since the kernel last saved the pipe.
    pub unsynced: u64,
}

/// Creates a pipe at `path` holding at most `capacity` bytes.
pub fn create(path: &str, capacity: u64) -> Result<()> {
    wit::create(path, capacity).map_err(Error)
}

/// An attached end of a pipe; dropping it (or [`Pipe::close`]) detaches.
pub struct Pipe {
    end: wit::PipeEnd,
}

impl Pipe {
    pub fn open(path: &str, mode: Mode) -> Result<Pipe> {
        let mode = match mode {
            Mode::Read => wit::Mode::Read,
            Mode::Write => wit::Mode::Write,
        };
        Ok(Pipe {
            end: wit::PipeEnd::open(path, mode).map_err(Error)?,
        })
    }

    /// Opens the read end.
    pub fn reader(path: &str) -> Result<Pipe> {
        Self::open(path, Mode::Read)
    }

    /// Opens the write end.
    pub fn writer(path: &str) -> Result<Pipe> {
        Self::open(path, Mode::Write)
    }

    /// Up to `len` bytes, waiting for some; `None` at end-of-file.
    pub fn read(&self, len: usize) -> Result<Option<Vec<u8>>> {
        let d = self.end.blocking_read(len as u64).map_err(Error)?;
        Ok((!d.is_empty() || len == 0).then_some(d))
    }

    /// Up to `len` bytes without waiting: an error that
    /// [`is_would_block`](Error::is_would_block) when empty, `None` at end-of-file.
    pub fn try_read(&self, len: usize) -> Result<Option<Vec<u8>>> {
        let d = self.end.read(len as u64).map_err(Error)?;
        Ok((!d.is_empty() || len == 0).then_some(d))
    }

    /// Writes all of `data`, waiting for room.
    pub fn write_all(&self, data: &[u8]) -> Result<()> {
        self.end.blocking_write(data).map_err(Error)
    }

    /// Writes without waiting; returns the bytes taken.
    pub fn try_write(&self, data: &[u8]) -> Result<usize> {
        self.end.write(data).map(|n| n as usize).map_err(Error)
    }

    /// Ready when a read or write can make progress; wait on it with
    /// [`Pollable::block`] or together with others with [`crate::poll`].
    pub fn subscribe(&self) -> Pollable {
        self.end.subscribe()
    }

    /// Makes every byte written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.end.sync().map_err(Error)
    }

    pub fn stat(&self) -> Stat {
        let s = self.end.stat();
        Stat {
            capacity: s.capacity,
            occupancy: s.occupancy,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            readers: s.readers,
            writers: s.writers,
            unsynced: s.unsynced,
        }
    }

    /// The largest write that is never split or interleaved.
    pub fn atomic_size(&self) -> usize {
        self.end.atomic_size() as usize
    }

    /// Detaches this end (readers see end-of-file once every writer has).
    pub fn close(self) {}
}

impl io::Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pipe::read(self, buf.len())? {
            Some(d) => {
                buf[..d.len()].copy_from_slice(&d);
                Ok(d.len())
            }
            None => Ok(0),
        }
    }
}

impl io::Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
