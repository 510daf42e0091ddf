//! The kernel timer driver: it owns every timer a task creates.
//!
//! Timers sit in one deadline-ordered queue. On the real clock a dedicated
//! thread sleeps until the earliest deadline (a condvar wait, so precise to
//! the OS's timer slack rather than an async runtime's millisecond wheel)
//! and fires what is due. On the virtual clock nothing runs by itself:
//! [`TimerDriver::advance`] moves time and fires due timers inline, so timer
//! tests are deterministic and instant.
//!
//! A task reaches the driver only through its [`TaskTimers`], which counts
//! its live timers against a limit (invariant 7). A [`Timer`] is cancelled
//! when dropped, so a task's timers all go when its store is dropped, whether
//! it ended or was killed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Live timers a task may hold at once.
pub const DEFAULT_TIMER_LIMIT: usize = 4096;

/// Nanoseconds on the driver's monotonic clock.
pub type Nanos = u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    #[error("too many timers: this task already holds its limit of {0}")]
    TooMany(usize),
}

/// One armed timer's shared state.
struct Entry {
    fired: AtomicBool,
    notify: Notify,
}

enum Clock {
    Real(Instant),
    Virtual(AtomicU64),
}

struct Queue {
    due: BTreeMap<(Nanos, u64), Arc<Entry>>,
    next_id: u64,
    stopping: bool,
}

struct Shared {
    clock: Clock,
    queue: Mutex<Queue>,
    wake: Condvar,
    fired_total: AtomicU64,
}

impl Shared {
    fn now(&self) -> Nanos {
        match &self.clock {
            Clock::Real(start) => start.elapsed().as_nanos() as Nanos,
            Clock::Virtual(now) => now.load(Ordering::SeqCst),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fires every timer due at `now`; returns the next deadline.
    fn fire_due(&self, queue: &mut Queue, now: Nanos) -> Option<Nanos> {
        while let Some(entry) = queue.due.first_entry() {
            if entry.key().0 > now {
                return Some(entry.key().0);
            }
            let e = entry.remove();
            e.fired.store(true, Ordering::Release);
            // A stored permit: the waiter may not be polling yet.
            e.notify.notify_one();
            self.fired_total.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}

/// The node's timer driver. Cheap to clone.
#[derive(Clone)]
pub struct TimerDriver {
    shared: Arc<Shared>,
    _thread: Option<Arc<DriverThread>>,
}

/// Stops the real clock's thread when the last driver handle goes.
struct DriverThread {
    shared: Arc<Shared>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        self.shared.queue().stopping = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl TimerDriver {
    fn with_clock(clock: Clock) -> Arc<Shared> {
        Arc::new(Shared {
            clock,
            queue: Mutex::new(Queue {
                due: BTreeMap::new(),
                next_id: 0,
                stopping: false,
            }),
            wake: Condvar::new(),
            fired_total: AtomicU64::new(0),
        })
    }

    /// A driver on the host's monotonic clock, with its own thread.
    pub fn real() -> std::io::Result<TimerDriver> {
        let shared = Self::with_clock(Clock::Real(Instant::now()));
        let runner = shared.clone();
        let handle = std::thread::Builder::new()
            .name("nexus-timers".into())
            .spawn(move || run(&runner))?;
        Ok(TimerDriver {
            _thread: Some(Arc::new(DriverThread {
                shared: shared.clone(),
                handle: Mutex::new(Some(handle)),
            })),
            shared,
        })
    }

    /// A driver on a virtual clock that only [`advance`](Self::advance) moves.
    pub fn virtual_clock() -> TimerDriver {
        TimerDriver {
            shared: Self::with_clock(Clock::Virtual(AtomicU64::new(0))),
            _thread: None,
        }
    }

    pub fn now(&self) -> Nanos {
        self.shared.now()
    }

    /// Moves a virtual clock forward and fires what became due.
    ///
    /// # Panics
    /// On the real clock: only tests drive time.
    pub fn advance(&self, by: Duration) {
        let Clock::Virtual(now) = &self.shared.clock else {
            panic!("advance on the real clock");
        };
        let mut q = self.shared.queue();
        let t = now.fetch_add(by.as_nanos() as u64, Ordering::SeqCst) + by.as_nanos() as u64;
        self.shared.fire_due(&mut q, t);
    }

    /// Timers armed and not yet fired or cancelled, over every task.
    pub fn pending(&self) -> usize {
        self.shared.queue().due.len()
    }

    /// Timers fired since the driver started.
    pub fn fired_total(&self) -> u64 {
        self.shared.fired_total.load(Ordering::Relaxed)
    }

    /// A fresh per-task view with `limit` live timers.
    pub fn for_task(&self, limit: usize) -> TaskTimers {
        TaskTimers {
            driver: self.clone(),
            live: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    fn arm(&self, deadline: Nanos, live: Arc<AtomicUsize>) -> Timer {
        let entry = Arc::new(Entry {
            fired: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let mut q = self.shared.queue();
        let id = q.next_id;
        q.next_id += 1;
        if deadline <= self.shared.now() {
            entry.fired.store(true, Ordering::Release);
            self.shared.fired_total.fetch_add(1, Ordering::Relaxed);
        } else {
            let earliest = q.due.first_key_value().map(|(k, _)| k.0);
            q.due.insert((deadline, id), entry.clone());
            if earliest.is_none_or(|e| deadline < e) {
                self.shared.wake.notify_one();
            }
        }
        Timer {
            driver: self.clone(),
            key: (deadline, id),
            entry,
            live,
        }
    }

    fn cancel(&self, key: (Nanos, u64)) {
        self.shared.queue().due.remove(&key);
    }
}

/// The real clock's thread: sleep until the earliest deadline, fire, repeat.
fn run(shared: &Shared) {
    let mut q = shared.queue();
    loop {
        if q.stopping {
            return;
        }
        let next = shared.fire_due(&mut q, shared.now());
        q = match next {
            None => shared.wake.wait(q).unwrap_or_else(|p| p.into_inner()),
            Some(at) => {
                let wait = Duration::from_nanos(at.saturating_sub(shared.now()));
                shared
                    .wake
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
    }
}

/// One task's access to the driver: counts its live timers.
pub struct TaskTimers {
    driver: TimerDriver,
    live: Arc<AtomicUsize>,
    limit: usize,
}

impl TaskTimers {
    pub fn now(&self) -> Nanos {
        self.driver.now()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Live timers this task holds.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// A timer that fires at `deadline` on the driver's clock.
    pub fn at(&self, deadline: Nanos) -> Result<Timer, TimerError> {
        let taken = self
            .live
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(TimerError::TooMany(self.limit));
        }
        Ok(self.driver.arm(deadline, self.live.clone()))
    }

    /// A timer that fires `d` from now.
    pub fn after(&self, d: Duration) -> Result<Timer, TimerError> {
        let d = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.at(self.now().saturating_add(d))
    }
}

/// An armed timer; dropping it cancels it.
pub struct Timer {
    driver: TimerDriver,
    key: (Nanos, u64),
    entry: Arc<Entry>,
    live: Arc<AtomicUsize>,
}

impl Timer {
    pub fn deadline(&self) -> Nanos {
        self.key.0
    }

    pub fn fired(&self) -> bool {
        self.entry.fired.load(Ordering::Acquire)
    }

    /// Waits until the timer fires.
    pub async fn wait(&self) {
        while !self.fired() {
            self.entry.notify.notified().await;
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.fired() {
            self.driver.cancel(self.key);
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Timer(at {} ns, fired {})", self.key.0, self.fired())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_fires_in_deadline_order_and_only_when_due() {
        let d = TimerDriver::virtual_clock();
        let t = d.for_task(10);
        let late = t.after(Duration::from_millis(30)).unwrap();
        let early = t.after(Duration::from_millis(10)).unwrap();
        d.advance(Duration::from_millis(9));
        assert!(!early.fired() && !late.fired());
        d.advance(Duration::from_millis(1));
        assert!(early.fired() && !late.fired());
        assert_eq!(d.pending(), 1);
        d.advance(Duration::from_secs(1));
        assert!(late.fired());
        assert_eq!(d.pending(), 0);
        assert_eq!(d.fired_total(), 2);
    }

    #[test]
    fn a_past_deadline_is_already_fired() {
        let d = TimerDriver::virtual_clock();
        d.advance(Duration::from_secs(5));
        let t = d.for_task(1).at(1_000).unwrap();
        assert!(t.fired());
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn the_limit_counts_live_timers_and_dropping_cancels() {
        let d = TimerDriver::virtual_clock();
        let task = d.for_task(3);
        let held: Vec<_> = (0..3)
            .map(|_| task.after(Duration::from_secs(1)).unwrap())
            .collect();
        assert_eq!(
            task.after(Duration::from_secs(1)).unwrap_err(),
            TimerError::TooMany(3)
        );
        // Another task is unaffected by this one's limit.
        let other = d.for_task(3);
        let _theirs = other.after(Duration::from_secs(1)).unwrap();
        assert_eq!(d.pending(), 4);
        drop(held);
        assert_eq!(task.live(), 0);
        assert_eq!(d.pending(), 1, "dropped timers are cancelled");
        task.after(Duration::from_secs(1)).unwrap();
    }

    #[tokio::test]
    async fn waiting_on_a_virtual_timer_wakes_when_time_moves() {
        let d = TimerDriver::virtual_clock();
        let timer = d.for_task(1).after(Duration::from_millis(5)).unwrap();
        let waiter = tokio::spawn(async move { timer.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        d.advance(Duration::from_millis(5));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn real_clock_fires_close_to_the_deadline() {
        let d = TimerDriver::real().unwrap();
        let task = d.for_task(10);
        let start = Instant::now();
        let timer = task.after(Duration::from_millis(20)).unwrap();
        timer.wait().await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(20), "fired early: {took:?}");
        assert!(took < Duration::from_millis(500), "fired late: {took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_real_timers_all_fire() {
        let d = TimerDriver::real().unwrap();
        let mut jobs = Vec::new();
        for i in 0..50u64 {
            let t = d.for_task(10);
            jobs.push(tokio::spawn(async move {
                let timer = t.after(Duration::from_millis(20 + (i * 7) % 30)).unwrap();
                timer.wait().await;
            }));
        }
        for j in jobs {
            tokio::time::timeout(Duration::from_secs(5), j)
                .await
                .expect("fired")
                .unwrap();
        }
    }
}
