//! Progress reporting and the "work on the pool, report on the caller" runner.

use std::any::Any;
use std::cmp::Ordering;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering as AtOrd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Interval at which long operations invoke the progress callback.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(20);

/// The stage a long operation is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Counting item frequencies over all baskets ([`crate::mine`]).
    CountingItems,
    /// Building the FP-tree from the frequent items of each basket ([`crate::mine`]).
    BuildingTree,
    /// Growing frequent itemsets from conditional FP-trees ([`crate::mine`]); `done`/`total`
    /// count frequent single items whose conditional trees have been mined.
    Mining,
    /// Sorting and converting the frequent itemsets ([`crate::mine`]).
    Finishing,
    /// Enumerating candidate rules ([`crate::rules`]); `done`/`total` count itemsets.
    GeneratingRules,
    /// Sorting the selected rules ([`crate::rules`]); `done`/`total` count merge steps.
    SortingRules,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::CountingItems,
            1 => Phase::BuildingTree,
            2 => Phase::Mining,
            3 => Phase::Finishing,
            4 => Phase::GeneratingRules,
            _ => Phase::SortingRules,
        }
    }

    /// A short lowercase name of the phase, e.g. `"mining"`, for log messages.
    pub fn name(self) -> &'static str {
        match self {
            Phase::CountingItems => "counting items",
            Phase::BuildingTree => "building FP-tree",
            Phase::Mining => "mining",
            Phase::Finishing => "finishing",
            Phase::GeneratingRules => "generating rules",
            Phase::SortingRules => "sorting rules",
        }
    }
}

/// A progress report passed to the caller's callback.
///
/// The callback is always invoked on the thread that called the long operation (never on a
/// rayon worker), about every [`PROGRESS_INTERVAL`] while work is running, and at least once
/// per call. It may panic to cancel the operation (a PostgreSQL query cancel surfaces as a
/// panic in pgrx): the operation then signals its workers to stop, waits for them, and
/// re-raises the same panic payload; no state visible to the caller is left inconsistent.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Current stage.
    pub phase: Phase,
    /// Units of work done in this stage (see [`Phase`] for the unit; 0 when not measured).
    pub done: u64,
    /// Units of work in this stage (0 when not known).
    pub total: u64,
    /// Results found so far (frequent itemsets while mining, rules while generating rules).
    pub found: u64,
    /// Time since the operation started.
    pub elapsed: Duration,
}

/// Counters shared between the workers and the reporting thread.
pub(crate) struct Shared {
    phase: AtomicU8,
    pub(crate) done: AtomicU64,
    total: AtomicU64,
    pub(crate) found: AtomicU64,
    cancel: AtomicBool,
}

impl Shared {
    pub(crate) fn new(phase: Phase) -> Self {
        Shared {
            phase: AtomicU8::new(phase as u8),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            found: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase, total: u64) {
        self.done.store(0, AtOrd::Relaxed);
        self.total.store(total, AtOrd::Relaxed);
        self.phase.store(phase as u8, AtOrd::Relaxed);
    }

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(AtOrd::Relaxed)
    }

    fn snapshot(&self, start: Instant) -> Progress {
        Progress {
            phase: Phase::from_u8(self.phase.load(AtOrd::Relaxed)),
            done: self.done.load(AtOrd::Relaxed),
            total: self.total.load(AtOrd::Relaxed),
            found: self.found.load(AtOrd::Relaxed),
            elapsed: start.elapsed(),
        }
    }
}

/// Runs `job` on `pool` while the calling thread reports progress from `shared` every
/// [`PROGRESS_INTERVAL`] (inline, when the caller is itself a thread of `pool`). If the callback panics, `shared` is marked cancelled (the job is
/// expected to notice and return early), the job is awaited, and the panic is resumed.
pub(crate) fn run_on_pool<R: Send>(
    pool: &rayon::ThreadPool,
    shared: &Shared,
    progress: &mut dyn FnMut(&Progress),
    job: impl FnOnce() -> R + Send,
) -> R {
    let start = Instant::now();
    if pool.current_thread_index().is_some() {
        // Called from a thread of `pool` itself: waiting here for a job queued on the same
        // pool could deadlock it, so the job runs inline (progress only before and after).
        progress(&shared.snapshot(start));
        let r = job();
        progress(&shared.snapshot(start));
        return r;
    }
    let (tx, rx) = mpsc::sync_channel::<R>(1);
    let mut payload: Option<Box<dyn Any + Send>> = None;
    let mut result: Option<R> = None;
    pool.in_place_scope(|scope| {
        scope.spawn(move |_| {
            let r = job();
            let _ = tx.send(r);
        });
        loop {
            if payload.is_none() {
                let snap = shared.snapshot(start);
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| progress(&snap))) {
                    shared.cancel.store(true, AtOrd::Relaxed);
                    payload = Some(p);
                }
            }
            match rx.recv_timeout(PROGRESS_INTERVAL) {
                Ok(r) => {
                    result = Some(r);
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // the job panicked; the scope re-raises that panic when it ends
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    if let Some(p) = payload {
        resume_unwind(p);
    }
    let final_snap = shared.snapshot(start);
    progress(&final_snap);
    match result {
        Some(r) => r,
        // Only reachable if the job panicked, and then in_place_scope has already re-raised
        // that panic before returning.
        None => unreachable!("pool job ended without a result"),
    }
}

/// A rate limiter for progress calls made directly on the calling thread.
pub(crate) struct Ticker {
    start: Instant,
    last: Instant,
}

impl Ticker {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Ticker {
            start: now,
            last: now,
        }
    }

    /// Calls `progress` if [`PROGRESS_INTERVAL`] has passed since the last call (or `force`).
    pub(crate) fn tick(
        &mut self,
        force: bool,
        progress: &mut dyn FnMut(&Progress),
        phase: Phase,
        done: u64,
        total: u64,
        found: u64,
    ) {
        let now = Instant::now();
        if force || now.duration_since(self.last) >= PROGRESS_INTERVAL {
            self.last = now;
            progress(&Progress {
                phase,
                done,
                total,
                found,
                elapsed: now - self.start,
            });
        }
    }
}

/// Stable merge sort that calls `tick(done, total)` between bounded amounts of work (so the
/// calling thread can report progress and be cancelled during a sort of millions of values).
pub(crate) fn sort_with_ticks<T>(
    v: Vec<T>,
    cmp: &impl Fn(&T, &T) -> Ordering,
    tick: &mut dyn FnMut(u64, u64),
) -> Vec<T> {
    const RUN: usize = 1 << 15;
    if v.len() <= RUN {
        let mut v = v;
        v.sort_by(cmp);
        return v;
    }
    let n = v.len();
    let mut runs: Vec<Vec<T>> = Vec::with_capacity(n.div_ceil(RUN));
    let mut it = v.into_iter();
    loop {
        let mut run: Vec<T> = it.by_ref().take(RUN).collect();
        if run.is_empty() {
            break;
        }
        run.sort_by(cmp);
        runs.push(run);
        tick(runs.len() as u64, n.div_ceil(RUN) as u64);
    }
    let passes = (usize::BITS - (runs.len() - 1).leading_zeros()) as u64;
    let mut pass = 0;
    while runs.len() > 1 {
        pass += 1;
        let mut next = Vec::with_capacity(runs.len().div_ceil(2));
        let mut drain = runs.into_iter();
        while let Some(a) = drain.next() {
            match drain.next() {
                None => next.push(a),
                Some(b) => {
                    let mut out = Vec::with_capacity(a.len() + b.len());
                    let mut a = a.into_iter().peekable();
                    let mut b = b.into_iter().peekable();
                    loop {
                        let take_a = match (a.peek(), b.peek()) {
                            (Some(x), Some(y)) => cmp(y, x) != Ordering::Less,
                            (Some(_), None) => true,
                            (None, Some(_)) => false,
                            (None, None) => break,
                        };
                        let item = if take_a { a.next() } else { b.next() };
                        if let Some(item) = item {
                            out.push(item);
                        }
                        if out.len() % RUN == 0 {
                            tick(pass, passes);
                        }
                    }
                    next.push(out);
                }
            }
        }
        runs = next;
    }
    runs.pop().unwrap_or_default()
}
