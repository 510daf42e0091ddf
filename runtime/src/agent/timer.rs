//! Timers for agents, all owned by the kernel's timer driver:
//! `wasi:clocks/monotonic-clock` (its clock and subscriptions) and
//! `nexus:kernel/timer` (sleep, deadline, interval). Each pollable holds a
//! kernel [`Timer`], counted against the task's limit and cancelled when
//! dropped, so a task's timers all go with its store.

use std::time::Duration;

use nexus_kernel::{Timer, TimerError};
use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{subscribe, DynPollable, Pollable};

use super::bindings::nexus::kernel::timer::{self as wit, TimerError as WitTimerError};
use super::bindings::wasi::clocks::monotonic_clock;
use super::state::AgentState;

/// The monotonic clock's advertised resolution.
const RESOLUTION_NS: u64 = 1_000;

/// A kernel timer as a pollable.
struct TimerPollable {
    timer: Timer,
    /// A timer already due yields once first, so a guest polling it in a
    /// loop cannot starve the runtime's other tasks.
    yielded: bool,
}

#[wasmtime_wasi::async_trait]
impl Pollable for TimerPollable {
    async fn ready(&mut self) {
        if self.timer.fired() && !self.yielded {
            self.yielded = true;
            tokio::task::yield_now().await;
        }
        self.timer.wait().await
    }
}

impl AgentState {
    fn pollable(&mut self, timer: Timer) -> wasmtime::Result<Resource<DynPollable>> {
        let r = self.table.push(TimerPollable {
            timer,
            yielded: false,
        })?;
        subscribe(&mut self.table, r)
    }

    fn timer_pollable(
        &mut self,
        timer: Result<Timer, TimerError>,
    ) -> wasmtime::Result<Result<Resource<DynPollable>, WitTimerError>> {
        match timer {
            Ok(t) => Ok(Ok(self.pollable(t)?)),
            Err(TimerError::TooMany(_)) => Ok(Err(WitTimerError::TooManyTimers)),
        }
    }

    /// For `wasi:clocks`, whose subscriptions cannot fail: past the limit
    /// the task is stopped with a clear trap rather than given a timer
    /// the kernel does not count.
    fn clock_pollable(
        &mut self,
        timer: Result<Timer, TimerError>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        match timer {
            Ok(t) => self.pollable(t),
            Err(e) => Err(wasmtime::format_err!("{e}")),
        }
    }
}

impl monotonic_clock::Host for AgentState {
    async fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.timers.now())
    }

    async fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(RESOLUTION_NS)
    }

    async fn subscribe_instant(&mut self, at: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let t = self.timers.at(at);
        self.clock_pollable(t)
    }

    async fn subscribe_duration(&mut self, d: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let t = self.timers.after(Duration::from_nanos(d));
        self.clock_pollable(t)
    }
}

/// A periodic tick: tick `n` is due at `start + n * period`.
pub struct Interval {
    start: u64,
    period: u64,
    /// Ticks handed out by `take-ticks` so far.
    taken: u64,
}

impl Interval {
    fn due(&self, now: u64) -> u64 {
        (now.saturating_sub(self.start)) / self.period
    }
}

impl wit::Host for AgentState {
    async fn sleep(
        &mut self,
        d: u64,
    ) -> wasmtime::Result<Result<Resource<DynPollable>, WitTimerError>> {
        let t = self.timers.after(Duration::from_nanos(d));
        self.timer_pollable(t)
    }

    async fn deadline(
        &mut self,
        at: u64,
    ) -> wasmtime::Result<Result<Resource<DynPollable>, WitTimerError>> {
        let t = self.timers.at(at);
        self.timer_pollable(t)
    }

    async fn usage(&mut self) -> wasmtime::Result<(u32, u32)> {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok((clamp(self.timers.live()), clamp(self.timers.limit())))
    }
}

impl wit::HostInterval for AgentState {
    async fn create(
        &mut self,
        period: u64,
    ) -> wasmtime::Result<Result<Resource<Interval>, WitTimerError>> {
        if period == 0 {
            return Ok(Err(WitTimerError::Invalid));
        }
        let start = self.timers.now();
        Ok(Ok(self.table.push(Interval {
            start,
            period,
            taken: 0,
        })?))
    }

    async fn subscribe(
        &mut self,
        r: Resource<Interval>,
    ) -> wasmtime::Result<Result<Resource<DynPollable>, WitTimerError>> {
        let i = self.table.get(&r)?;
        let next = i
            .start
            .saturating_add(i.taken.saturating_add(1).saturating_mul(i.period));
        let t = self.timers.at(next);
        self.timer_pollable(t)
    }

    async fn take_ticks(&mut self, r: Resource<Interval>) -> wasmtime::Result<u64> {
        let now = self.timers.now();
        let i = self.table.get_mut(&r)?;
        let due = i.due(now);
        let fresh = due.saturating_sub(i.taken);
        i.taken = i.taken.max(due);
        Ok(fresh)
    }

    async fn drop(&mut self, r: Resource<Interval>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}
