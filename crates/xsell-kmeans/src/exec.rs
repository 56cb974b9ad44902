//! Execution plumbing: progress reporting, the fixed chunk layout that makes
//! parallel reductions deterministic, and batched execution on a caller-owned
//! rayon pool with callbacks on the calling thread in between.

use std::ops::Range;
use std::time::{Duration, Instant};

use rayon::ThreadPool;

/// A progress report, passed to the caller's callback.
///
/// The callback is always invoked on the thread that called into this crate
/// (never on a pool thread), before work starts, between batches of work
/// (roughly every 10–40 ms of work), and at the end of every iteration. It
/// may unwind (panic) to cancel: all state owned by the computation is then
/// dropped and nothing else is affected.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// What is being done: `"canonicalize"` (checking, hashing and sorting
    /// the rows, counting distinct rows and feature variances),
    /// `"seeding"` (k-means++ / random init), `"iteration"` (a Lloyd or Hamerly
    /// iteration), `"finalize"` (final assignment and inertia),
    /// `"silhouette"`, or `"reduce"` (k-means|| candidate reduction).
    pub phase: &'static str,
    /// 0-based index of the current run (restart) of `n_init`.
    pub run: usize,
    /// Total number of runs.
    pub n_runs: usize,
    /// 1-based iteration number within the run (0 outside `"iteration"`).
    pub iteration: usize,
    /// The run's iteration limit (`max_iter`).
    pub max_iter: usize,
    /// Rows processed so far in the current pass over the data.
    pub rows_done: u64,
    /// Rows in the current pass.
    pub rows_total: u64,
    /// Objective value when known: at the end of a run (phase `"finalize"`)
    /// the run's inertia; `None` otherwise.
    pub inertia: Option<f64>,
    /// Sum of squared centroid shifts of the iteration that just completed
    /// (`Some` only in the report issued at the end of an iteration).
    pub center_shift: Option<f64>,
    /// Whether the iteration just completed met a stopping criterion.
    pub converged: bool,
}

impl Progress {
    pub(crate) fn new(phase: &'static str) -> Self {
        Progress {
            phase,
            run: 0,
            n_runs: 1,
            iteration: 0,
            max_iter: 0,
            rows_done: 0,
            rows_total: 0,
            inertia: None,
            center_shift: None,
            converged: false,
        }
    }
}

/// Number of `f64` values per chunk. A chunk holds `max(1, CHUNK_VALUES / d)`
/// rows; the layout depends only on `(n, d)`, never on the thread count.
pub(crate) const CHUNK_VALUES: usize = 16 * 1024;

/// Fixed partition of `n` rows into chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub n: usize,
    pub d: usize,
    pub rows_per_chunk: usize,
    pub n_chunks: usize,
}

impl Layout {
    pub fn new(n: usize, d: usize) -> Self {
        Self::with_rows_per_chunk(n, d, (CHUNK_VALUES / d.max(1)).max(1))
    }

    pub fn with_rows_per_chunk(n: usize, d: usize, rows_per_chunk: usize) -> Self {
        let rows_per_chunk = rows_per_chunk.max(1);
        Layout {
            n,
            d,
            rows_per_chunk,
            n_chunks: n.div_ceil(rows_per_chunk),
        }
    }

    /// Rows covered by chunks `chunks`.
    #[inline]
    pub fn rows(&self, chunks: Range<usize>) -> Range<usize> {
        let s = (chunks.start * self.rows_per_chunk).min(self.n);
        let e = (chunks.end * self.rows_per_chunk).min(self.n);
        s..e
    }

    /// Values (row-major) covered by chunks `chunks`.
    #[inline]
    pub fn values(&self, chunks: Range<usize>) -> Range<usize> {
        let r = self.rows(chunks);
        r.start * self.d..r.end * self.d
    }
}

const BATCH_TARGET: f64 = 0.015; // seconds of work per batch
const TICK: Duration = Duration::from_millis(20);

/// Runs work on the pool in batches and reports progress in between.
pub(crate) struct Exec<'a> {
    pub pool: &'a ThreadPool,
    progress: &'a mut dyn FnMut(&Progress),
    pub state: Progress,
    /// Measured seconds per work item, per kind of pass.
    rates: Vec<(&'static str, f64)>,
    last_report: Instant,
}

impl<'a> Exec<'a> {
    pub fn new(pool: &'a ThreadPool, progress: &'a mut dyn FnMut(&Progress)) -> Self {
        Exec {
            pool,
            progress,
            state: Progress::new("canonicalize"),
            rates: Vec::new(),
            last_report: Instant::now(),
        }
    }

    /// Invoke the callback with the current state.
    pub fn report(&mut self) {
        (self.progress)(&self.state);
        self.last_report = Instant::now();
    }

    /// Invoke the callback if at least ~20 ms passed since the last report.
    /// For sequential loops: call it every few thousand elements.
    #[inline]
    pub fn tick(&mut self) {
        if self.last_report.elapsed() >= TICK {
            self.report();
        }
    }

    /// Process chunks `0..n_chunks` of `layout` in consecutive batches:
    /// `f(pool, chunk_range)` does the (parallel) work of one batch; progress
    /// is reported before the first and after every batch. Batches are sized
    /// from the measured speed of earlier passes of the same `kind` to take
    /// ~15 ms. Batch boundaries never influence results as long as `f`
    /// reduces per-chunk results in chunk order.
    pub fn batched(
        &mut self,
        layout: &Layout,
        kind: &'static str,
        mut f: impl FnMut(&ThreadPool, Range<usize>),
    ) {
        self.batched_n(
            layout.n_chunks,
            layout.rows_per_chunk,
            layout.n,
            kind,
            &mut f,
        )
    }

    /// Like [`batched`](Exec::batched) for an arbitrary number of work items
    /// with `rows_per_item` rows each (for progress accounting).
    pub fn batched_n(
        &mut self,
        n_items: usize,
        rows_per_item: usize,
        n_rows: usize,
        kind: &'static str,
        f: &mut dyn FnMut(&ThreadPool, Range<usize>),
    ) {
        self.state.rows_done = 0;
        self.state.rows_total = n_rows as u64;
        self.report();
        let threads = self.pool.current_num_threads().max(1);
        let slot = match self.rates.iter().position(|(k, _)| *k == kind) {
            Some(i) => i,
            None => {
                self.rates.push((kind, f64::NAN));
                self.rates.len() - 1
            }
        };
        let mut start = 0;
        while start < n_items {
            let rate = self.rates[slot].1;
            let b = if rate.is_finite() && rate > 0.0 {
                ((BATCH_TARGET / rate) as usize).max(1)
            } else {
                threads
            };
            let end = start + b.min(n_items - start);
            let t0 = Instant::now();
            f(self.pool, start..end);
            let per_item = t0.elapsed().as_secs_f64() / (end - start) as f64;
            let old = self.rates[slot].1;
            self.rates[slot].1 = if old.is_finite() {
                0.5 * (old + per_item)
            } else {
                per_item
            };
            self.state.rows_done = (end.saturating_mul(rows_per_item)).min(n_rows) as u64;
            self.report();
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_all_rows() {
        let l = Layout::new(100_000, 3);
        assert_eq!(l.rows_per_chunk, CHUNK_VALUES / 3);
        assert_eq!(l.n_chunks, 100_000usize.div_ceil(CHUNK_VALUES / 3));
        assert_eq!(l.rows(0..l.n_chunks), 0..100_000);
        assert_eq!(l.rows(l.n_chunks - 1..l.n_chunks).end, 100_000);
        assert_eq!(l.values(1..2), 3 * l.rows_per_chunk..6 * l.rows_per_chunk);
        let wide = Layout::new(5, CHUNK_VALUES * 2);
        assert_eq!((wide.rows_per_chunk, wide.n_chunks), (1, 5));
        assert_eq!(Layout::new(0, 4).n_chunks, 0);
    }

    #[test]
    fn batched_visits_every_chunk_once_in_order_and_reports() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let mut reports = Vec::new();
        let mut cb = |p: &Progress| reports.push((p.rows_done, p.rows_total));
        let mut exec = Exec::new(&pool, &mut cb);
        let lay = Layout::with_rows_per_chunk(1000, 1, 7);
        let mut seen = Vec::new();
        exec.batched(&lay, "test", |_, r| seen.extend(r));
        assert_eq!(seen, (0..lay.n_chunks).collect::<Vec<_>>());
        drop(exec);
        assert!(reports.len() >= 2);
        assert_eq!(reports.first(), Some(&(0, 1000)));
        assert_eq!(reports.last(), Some(&(1000, 1000)));
        assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
