//! Timers from the kernel's timer driver: counted against the agent's
//! limit, cancelled when it ends. `std::thread::sleep` goes through the same
//! driver (as a `wasi:clocks` subscription).

use std::fmt;
use std::time::Duration;

use crate::bindings::nexus::kernel::timer as wit;
use crate::bindings::wasi::clocks::monotonic_clock;
use crate::Pollable;

/// The agent already holds its limit of live timers, or a bad argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    TooManyTimers,
    Invalid,
}

impl From<wit::TimerError> for Error {
    fn from(e: wit::TimerError) -> Error {
        match e {
            wit::TimerError::TooManyTimers => Error::TooManyTimers,
            wit::TimerError::Invalid => Error::Invalid,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::TooManyTimers => "too many timers",
            Error::Invalid => "invalid timer argument",
        })
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The kernel's monotonic clock, in nanoseconds.
pub fn now() -> u64 {
    monotonic_clock::now()
}

/// A pollable ready `d` from now.
pub fn after(d: Duration) -> Result<Pollable> {
    Ok(wit::sleep(nanos(d))?)
}

/// A pollable ready when [`now`] reaches `at`.
pub fn deadline(at: u64) -> Result<Pollable> {
    Ok(wit::deadline(at)?)
}

/// Blocks for `d`.
pub fn sleep(d: Duration) -> Result<()> {
    after(d)?.block();
    Ok(())
}

/// Live timers this agent holds, and its limit.
pub fn usage() -> (u32, u32) {
    wit::usage()
}

/// A tick every `period` that never drifts.
pub struct Interval {
    inner: wit::Interval,
}

impl Interval {
    pub fn new(period: Duration) -> Result<Interval> {
        Ok(Interval {
            inner: wit::Interval::create(nanos(period))?,
        })
    }

    /// Ready at the next tick not yet taken.
    pub fn subscribe(&self) -> Result<Pollable> {
        Ok(self.inner.subscribe()?)
    }

    /// Ticks come due since the last call (0 if none).
    pub fn take_ticks(&self) -> u64 {
        self.inner.take_ticks()
    }

    /// Waits for the next tick; returns how many came due (more than one
    /// if the agent fell behind).
    pub fn tick(&self) -> Result<u64> {
        loop {
            let n = self.take_ticks();
            if n > 0 {
                return Ok(n);
            }
            self.subscribe()?.block();
        }
    }
}
