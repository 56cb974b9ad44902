//! Silhouette score and the seeded, order-independent reservoir sample used
//! to compute it on large tables.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::ThreadPool;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{KMeansError, Result};
use crate::exec::{Exec, Layout, Progress};
use crate::fit::{cmp_rows, value_limit};
use crate::hash::RowHasher;
use crate::kernel::sq_dist_fast;
use crate::model::check_row;
use crate::stream::MAX_STATE_VALUES;

/// Mean silhouette coefficient of a labelled data set, with scikit-learn's
/// `silhouette_score(X, labels, metric="euclidean")` semantics.
///
/// For row `i` in cluster `A`: `a(i)` = mean Euclidean distance to the other
/// rows of `A`; `b(i)` = smallest mean distance to the rows of another
/// cluster; `s(i) = (b - a) / max(a, b)`, with `s(i) = 0` when `A` has a
/// single row (and when `a = b = 0`). The score is the mean of `s(i)`.
/// Labels are arbitrary `u32` values (not necessarily `0..k`).
///
/// Exact, `O(n² d)`, parallel over fixed groups of rows on `pool`; progress
/// is reported between batches (phase `"silhouette"`). The result depends
/// on the row order only through floating-point rounding; pass rows in a
/// deterministic order (e.g. [`Reservoir::into_sample`]) for reproducible
/// bits.
///
/// # Errors
/// * [`KMeansError::InvalidParameter`]: `d = 0`.
/// * [`KMeansError::InvalidShape`]: `data.len()` is not `labels.len() * d`.
/// * [`KMeansError::EmptyInput`]: no rows.
/// * [`KMeansError::NonFinite`] / [`KMeansError::ValueTooLarge`]: bad value.
/// * [`KMeansError::InvalidLabels`]: fewer than 2 or more than `n - 1`
///   distinct labels.
pub fn silhouette(
    data: &[f64],
    d: usize,
    labels: &[u32],
    pool: &ThreadPool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<f64> {
    if d == 0 {
        return Err(KMeansError::InvalidParameter(
            "the number of dimensions d must be at least 1 (got 0)".into(),
        ));
    }
    if !data.len().is_multiple_of(d) || data.len() / d != labels.len() {
        return Err(KMeansError::InvalidShape(format!(
            "{} values of dimension {d} for {} labels",
            data.len(),
            labels.len()
        )));
    }
    let n = labels.len();
    if n == 0 {
        return Err(KMeansError::EmptyInput);
    }
    let limit = value_limit(d);
    for (i, row) in data.chunks_exact(d).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            if !v.is_finite() {
                return Err(KMeansError::NonFinite {
                    row: i as u64,
                    column: c,
                });
            }
            if v.abs() > limit {
                return Err(KMeansError::ValueTooLarge {
                    row: i as u64,
                    column: c,
                    value: v,
                    limit,
                });
            }
        }
    }
    let mut uniq: Vec<u32> = labels.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    let nl = uniq.len();
    if nl < 2 || nl > n - 1 {
        return Err(KMeansError::InvalidLabels(format!(
            "number of labels is {nl}; valid values are 2 to n_samples - 1 = {} (inclusive)",
            n.saturating_sub(1)
        )));
    }
    let dense: Vec<u32> = labels
        .iter()
        .map(|l| uniq.binary_search(l).expect("label present") as u32)
        .collect();
    let mut counts = vec![0u64; nl];
    for &l in &dense {
        counts[l as usize] += 1;
    }

    // Fixed groups of rows, ~4M distance terms each.
    let per_row = (n as u64).saturating_mul(d as u64).max(1);
    let rpt = ((1u64 << 22) / per_row).clamp(1, 4096) as usize;
    let lay = Layout::with_rows_per_chunk(n, d, rpt);
    let mut exec = Exec::new(pool, progress);
    exec.state.phase = "silhouette";
    let mut total = 0.0;
    let (dense, counts) = (&dense, &counts);
    exec.batched(&lay, "silhouette", |pool, r| {
        let parts: Vec<f64> = pool.install(|| {
            r.into_par_iter()
                .map(|c| {
                    let rows = lay.rows(c..c + 1);
                    let mut sums = vec![0.0f64; nl];
                    let mut acc = 0.0;
                    for i in rows {
                        sums.iter_mut().for_each(|s| *s = 0.0);
                        let xi = &data[i * d..(i + 1) * d];
                        for (xj, &lj) in data.chunks_exact(d).zip(dense) {
                            sums[lj as usize] += sq_dist_fast(xi, xj).sqrt();
                        }
                        let li = dense[i] as usize;
                        if counts[li] <= 1 {
                            continue; // s(i) = 0
                        }
                        let a = sums[li] / (counts[li] - 1) as f64;
                        let mut b = f64::INFINITY;
                        for (l, (&s, &c)) in sums.iter().zip(counts).enumerate() {
                            if l != li {
                                let m = s / c as f64;
                                if m < b {
                                    b = m;
                                }
                            }
                        }
                        let den = a.max(b);
                        if den > 0.0 {
                            acc += (b - a) / den;
                        }
                    }
                    acc
                })
                .collect()
        });
        for p in parts {
            total += p;
        }
    });
    Ok(total / n as f64)
}

/// Largest reservoir capacity accepted.
pub const MAX_RESERVOIR: usize = 1 << 24;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: u64,
    label: u32,
    row: Vec<f64>,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.key
            .cmp(&o.key)
            .then(self.label.cmp(&o.label))
            .then_with(|| cmp_rows(&self.row, &o.row))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Entry {}

/// A bounded, seeded, order-independent sample of labelled rows: keeps the
/// `m` (row, label) pairs with the smallest key
/// `row_hash(seed, tag, row ++ [label as f64])` (ties by label, then
/// content). Because the key depends only on the content, the sample is the
/// same whatever order rows are added or partial reservoirs merged; it is a
/// uniform random sample of the distinct (row, label) pairs (identical pairs
/// are kept or dropped together). Serde-serialisable (aggregate state);
/// memory is `O(m * d)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservoir {
    /// Capacity.
    pub m: usize,
    /// Number of features per row.
    pub d: usize,
    /// Hash seed.
    pub seed: u64,
    /// Hash tag (use a value distinct from other uses of the same seed).
    pub tag: u64,
    heap: BinaryHeap<Entry>,
}

impl Reservoir {
    /// An empty reservoir for up to `m` rows of `d` features.
    ///
    /// # Errors
    /// [`KMeansError::InvalidParameter`] if `m` or `d` is 0;
    /// [`KMeansError::LimitExceeded`] if `m > MAX_RESERVOIR` or `m * d >
    /// MAX_STATE_VALUES`.
    pub fn new(m: usize, d: usize, seed: u64, tag: u64) -> Result<Self> {
        if m == 0 || d == 0 {
            return Err(KMeansError::InvalidParameter(format!(
                "reservoir size and dimension must be at least 1 (got m={m}, d={d})"
            )));
        }
        if m > MAX_RESERVOIR || m.checked_mul(d).is_none_or(|v| v > MAX_STATE_VALUES) {
            return Err(KMeansError::LimitExceeded(format!(
                "a reservoir of {m} rows of {d} values exceeds the limits ({MAX_RESERVOIR} rows, {MAX_STATE_VALUES} values)"
            )));
        }
        Ok(Reservoir {
            m,
            d,
            seed,
            tag,
            heap: BinaryHeap::new(),
        })
    }

    fn offer(&mut self, e: Entry) {
        if self.heap.len() < self.m {
            self.heap.push(e);
        } else if let Some(mut top) = self.heap.peek_mut()
            && e < *top
        {
            *top = e;
        }
    }

    /// Offer a labelled row.
    ///
    /// # Errors
    /// [`KMeansError::DimensionMismatch`] / [`KMeansError::NonFinite`] (row 0).
    pub fn add(&mut self, row: &[f64], label: u32) -> Result<()> {
        check_row(row, self.d)?;
        let mut h = RowHasher::new(self.seed, self.tag);
        for &v in row {
            h.push(v);
        }
        h.push(label as f64);
        self.offer(Entry {
            key: h.finish(),
            label,
            row: row.iter().map(|v| v + 0.0).collect(),
        });
        Ok(())
    }

    /// Merge another reservoir with the same `m`, `d`, `seed` and `tag`.
    ///
    /// # Errors
    /// [`KMeansError::InvalidParameter`] if the parameters differ;
    /// [`KMeansError::InvalidModel`] if `other` is inconsistent.
    pub fn merge(&mut self, other: &Reservoir) -> Result<()> {
        if (self.m, self.d, self.seed, self.tag) != (other.m, other.d, other.seed, other.tag) {
            return Err(KMeansError::InvalidParameter(
                "cannot merge reservoirs with different m, d, seed or tag".into(),
            ));
        }
        other.validate()?;
        for e in other.heap.iter() {
            self.offer(e.clone());
        }
        Ok(())
    }

    /// Number of rows held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Check a (deserialised) reservoir: at most `m` entries of `d` finite values.
    ///
    /// # Errors
    /// [`KMeansError::InvalidModel`].
    pub fn validate(&self) -> Result<()> {
        if self.heap.len() > self.m {
            return Err(KMeansError::InvalidModel(format!(
                "reservoir holds {} rows but m={}",
                self.heap.len(),
                self.m
            )));
        }
        if self
            .heap
            .iter()
            .any(|e| e.row.len() != self.d || e.row.iter().any(|v| !v.is_finite()))
        {
            return Err(KMeansError::InvalidModel(format!(
                "reservoir rows must have {} finite values",
                self.d
            )));
        }
        Ok(())
    }

    /// The sample as (`len * d` values row-major, `len` labels), in
    /// ascending key order (deterministic).
    pub fn into_sample(self) -> (Vec<f64>, Vec<u32>) {
        let v = self.heap.into_sorted_vec();
        let mut data = Vec::with_capacity(v.len() * self.d);
        let mut labels = Vec::with_capacity(v.len());
        for e in v {
            data.extend_from_slice(&e.row);
            labels.push(e.label);
        }
        (data, labels)
    }
}
