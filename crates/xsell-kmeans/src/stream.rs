//! Building blocks for the scalable, multi-pass training path (one pass over
//! the data per aggregate): Lloyd steps with fixed-size state, feature
//! moments for the tolerance, and k-means|| (Bahmani et al., 2012) seeding
//! that does not depend on the order in which rows are seen.
//!
//! A typical driver:
//!
//! 1. `FeatureMoments` pass → `tol_abs = moments.tolerance(tol)`.
//! 2. `FirstCenter` pass → the first center `C = {c0}`.
//! 3. `StepState` pass with `C` → `phi = state.inertia`; then for
//!    `round in 0..R`: keep the rows for which
//!    [`parallel_sample`]`(row, C, phi, l, seed, round)` is true, append them
//!    to `C`, and recompute `phi` with a `StepState` pass.
//! 4. `StepState` pass with the candidates `C` → weights = `counts`;
//!    [`reduce_candidates`] → `k` initial centers.
//! 5. Lloyd passes: `StepState` with the current centers, `centroids()` →
//!    new centers, [`center_shift_total`] vs `tol_abs`, until convergence.

use rayon::ThreadPool;
use serde::{Deserialize, Serialize};

use crate::error::{KMeansError, Result};
use crate::exec::{Exec, Layout, Progress};
use crate::fit::{canonicalize, cmp_rows, kmeans_plus_plus, run_kmeans, tolerance};
use crate::hash::{SplitMix64, hash_to_unit, row_hash, run_seed};
use crate::kernel::sq_dist;
use crate::model::{check_row, nearest_unchecked};
use crate::params::{Algorithm, MAX_K};

/// Largest `k * d` accepted by the fixed-size states (64 Mi values).
pub const MAX_STATE_VALUES: usize = 1 << 26;

fn check_kd(k: usize, d: usize) -> Result<usize> {
    if k < 1 {
        return Err(KMeansError::InvalidParameter(
            "k must be at least 1 (got 0)".into(),
        ));
    }
    if d < 1 {
        return Err(KMeansError::InvalidParameter(
            "the number of dimensions d must be at least 1 (got 0)".into(),
        ));
    }
    if k > MAX_K {
        return Err(KMeansError::LimitExceeded(format!(
            "k={k} exceeds the maximum of {MAX_K} clusters"
        )));
    }
    match k.checked_mul(d) {
        Some(kd) if kd <= MAX_STATE_VALUES => Ok(kd),
        _ => Err(KMeansError::LimitExceeded(format!(
            "k*d = {k}*{d} exceeds the maximum of {MAX_STATE_VALUES} state values"
        ))),
    }
}

fn check_centers(centers: &[f64], k: usize, d: usize) -> Result<()> {
    if centers.len() != k * d {
        return Err(KMeansError::InvalidShape(format!(
            "expected k*d = {k}*{d} = {} centroid values, got {}",
            k * d,
            centers.len()
        )));
    }
    Ok(())
}

/// Aggregate state of one Lloyd pass over a stream of rows: per-cluster
/// sums and counts of the rows assigned to their nearest centroid, plus the
/// total squared distance (the inertia w.r.t. the pass's centroids).
///
/// Its size is fixed (`k * d + k + 2` numbers), [`merge`](StepState::merge)
/// combines partial states (e.g. of parallel workers) and it is
/// serde-serialisable, so it can serve as a SQL aggregate's transition
/// state. `counts` and `n` are exact; `sums` and `inertia` are plain `f64`
/// sums whose last bits depend on the order rows are added and merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// Number of clusters.
    pub k: usize,
    /// Number of features.
    pub d: usize,
    /// `k * d` per-cluster coordinate sums, row-major.
    pub sums: Vec<f64>,
    /// Rows assigned to each cluster.
    pub counts: Vec<u64>,
    /// Sum of squared distances from each row to its nearest centroid.
    pub inertia: f64,
    /// Rows added.
    pub n: u64,
}

impl StepState {
    /// An empty state for `k` clusters of `d` features.
    ///
    /// # Errors
    /// [`KMeansError::InvalidParameter`] if `k` or `d` is 0;
    /// [`KMeansError::LimitExceeded`] if `k > MAX_K` or `k * d >
    /// MAX_STATE_VALUES`.
    pub fn new(k: usize, d: usize) -> Result<Self> {
        let kd = check_kd(k, d)?;
        Ok(StepState {
            k,
            d,
            sums: vec![0.0; kd],
            counts: vec![0; k],
            inertia: 0.0,
            n: 0,
        })
    }

    /// Assign `row` to its nearest centroid among `centroids` (`k * d`
    /// values; first centroid on ties, same kernel as [`crate::fit`]) and
    /// accumulate it. Returns the cluster index.
    ///
    /// # Errors
    /// [`KMeansError::DimensionMismatch`] if `row.len() != d`;
    /// [`KMeansError::InvalidShape`] if `centroids.len() != k * d`;
    /// [`KMeansError::NonFinite`] if `row` has NaN/±Inf (`row` = number of
    /// rows this state had already accepted); [`KMeansError::InvalidModel`]
    /// if the state's vectors do not match `k` and `d`. The state is
    /// unchanged on error.
    pub fn add(&mut self, row: &[f64], centroids: &[f64]) -> Result<usize> {
        self.check_lengths()?;
        check_centers(centroids, self.k, self.d)?;
        check_row(row, self.d).map_err(|e| match e {
            KMeansError::NonFinite { column, .. } => KMeansError::NonFinite {
                row: self.n,
                column,
            },
            e => e,
        })?;
        let (a, dist) = nearest_unchecked(row, centroids, self.d);
        for (s, v) in self.sums[a * self.d..(a + 1) * self.d].iter_mut().zip(row) {
            *s += v;
        }
        self.counts[a] += 1;
        self.inertia += dist;
        self.n += 1;
        Ok(a)
    }

    /// Add the contents of `other` (same `k` and `d`) to `self`.
    ///
    /// # Errors
    /// [`KMeansError::InvalidShape`] if the shapes differ;
    /// [`KMeansError::InvalidModel`] if either state is inconsistent (see
    /// [`validate`](StepState::validate));
    /// [`KMeansError::LimitExceeded`] if a count would overflow `u64`.
    pub fn merge(&mut self, other: &StepState) -> Result<()> {
        self.check_lengths()?;
        if self.k != other.k || self.d != other.d {
            return Err(KMeansError::InvalidShape(format!(
                "cannot merge a k={} d={} state into a k={} d={} state",
                other.k, other.d, self.k, self.d
            )));
        }
        other.validate()?;
        let overflow = || KMeansError::LimitExceeded("row count overflows u64".into());
        let n = self.n.checked_add(other.n).ok_or_else(overflow)?;
        let mut counts = self.counts.clone();
        for (a, b) in counts.iter_mut().zip(&other.counts) {
            *a = a.checked_add(*b).ok_or_else(overflow)?;
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        self.counts = counts;
        self.inertia += other.inertia;
        self.n = n;
        Ok(())
    }

    /// The new centroids: the mean of each cluster's rows (computed as
    /// `sum * (1/count)`, like scikit-learn). A cluster that received no rows
    /// **keeps its previous centroid** from `previous` (`k * d` values) —
    /// unlike the in-memory [`crate::fit`], the streaming path does not
    /// relocate empty clusters.
    ///
    /// # Errors
    /// [`KMeansError::InvalidShape`] if `previous.len() != k * d`;
    /// [`KMeansError::InvalidModel`] if the state is inconsistent.
    pub fn centroids(&self, previous: &[f64]) -> Result<Vec<f64>> {
        self.check_lengths()?;
        check_centers(previous, self.k, self.d)?;
        let d = self.d;
        let mut out = previous.to_vec();
        for j in 0..self.k {
            if self.counts[j] > 0 {
                let alpha = 1.0 / self.counts[j] as f64;
                for (o, s) in out[j * d..(j + 1) * d]
                    .iter_mut()
                    .zip(&self.sums[j * d..(j + 1) * d])
                {
                    *o = s * alpha;
                }
            }
        }
        Ok(out)
    }

    /// O(1) consistency check of the vector lengths (the fields are public).
    fn check_lengths(&self) -> Result<()> {
        if self.k == 0
            || self.d == 0
            || self.counts.len() != self.k
            || self.sums.len() != self.k.saturating_mul(self.d)
        {
            return Err(KMeansError::InvalidModel(format!(
                "state for k={} d={} has {} sums and {} counts",
                self.k,
                self.d,
                self.sums.len(),
                self.counts.len()
            )));
        }
        Ok(())
    }

    /// Check a (deserialised) state: `k`, `d` within limits, vector lengths
    /// consistent, `sum(counts) == n`.
    ///
    /// # Errors
    /// [`KMeansError::InvalidModel`] describing the inconsistency.
    pub fn validate(&self) -> Result<()> {
        let kd = check_kd(self.k, self.d).map_err(|e| KMeansError::InvalidModel(e.to_string()))?;
        if self.sums.len() != kd || self.counts.len() != self.k {
            return Err(KMeansError::InvalidModel(format!(
                "state for k={} d={} has {} sums and {} counts",
                self.k,
                self.d,
                self.sums.len(),
                self.counts.len()
            )));
        }
        let total = self.counts.iter().try_fold(0u64, |a, &c| a.checked_add(c));
        if total != Some(self.n) {
            return Err(KMeansError::InvalidModel("counts do not sum to n".into()));
        }
        Ok(())
    }
}

/// Sum over clusters of the squared Euclidean shift between `old` and `new`
/// centroids (scikit-learn's `center_shift_tot`); compare it with the
/// absolute tolerance to decide convergence.
///
/// # Errors
/// [`KMeansError::InvalidShape`] if the lengths differ or are not a
/// multiple of `d`, or `d == 0`.
pub fn center_shift_total(old: &[f64], new: &[f64], d: usize) -> Result<f64> {
    if d == 0 || old.len() != new.len() || !old.len().is_multiple_of(d) {
        return Err(KMeansError::InvalidShape(format!(
            "cannot compare {} and {} centroid values of dimension {d}",
            old.len(),
            new.len()
        )));
    }
    Ok(old
        .chunks_exact(d)
        .zip(new.chunks_exact(d))
        .map(|(a, b)| sq_dist(a, b))
        .sum())
}

/// Streaming per-feature mean and population variance (Welford, with Chan
/// et al.'s parallel merge), for the relative tolerance of the streaming
/// path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMoments {
    /// Number of features.
    pub d: usize,
    /// Rows added.
    pub n: u64,
    /// Running mean of each feature.
    pub mean: Vec<f64>,
    /// Running sum of squared deviations from the mean, per feature.
    pub m2: Vec<f64>,
}

impl FeatureMoments {
    /// Empty moments for `d` features.
    ///
    /// # Errors
    /// [`KMeansError::InvalidParameter`] if `d == 0`;
    /// [`KMeansError::LimitExceeded`] if `d > MAX_STATE_VALUES`.
    pub fn new(d: usize) -> Result<Self> {
        check_kd(1, d)?;
        Ok(FeatureMoments {
            d,
            n: 0,
            mean: vec![0.0; d],
            m2: vec![0.0; d],
        })
    }

    /// Add one row.
    ///
    /// # Errors
    /// [`KMeansError::DimensionMismatch`] / [`KMeansError::NonFinite`] (with
    /// `row` = rows already added); the state is unchanged on error.
    pub fn add(&mut self, row: &[f64]) -> Result<()> {
        check_row(row, self.d).map_err(|e| match e {
            KMeansError::NonFinite { column, .. } => KMeansError::NonFinite {
                row: self.n,
                column,
            },
            e => e,
        })?;
        self.n += 1;
        let n = self.n as f64;
        for ((m, s), &x) in self.mean.iter_mut().zip(self.m2.iter_mut()).zip(row) {
            let delta = x - *m;
            *m += delta / n;
            *s += delta * (x - *m);
        }
        Ok(())
    }

    /// Combine with `other` (same `d`).
    ///
    /// # Errors
    /// [`KMeansError::InvalidShape`] if `d` differs.
    pub fn merge(&mut self, other: &FeatureMoments) -> Result<()> {
        if self.d != other.d || other.mean.len() != other.d || other.m2.len() != other.d {
            return Err(KMeansError::InvalidShape(format!(
                "cannot merge moments of {} features into {}",
                other.d, self.d
            )));
        }
        if other.n == 0 {
            return Ok(());
        }
        if self.n == 0 {
            *self = other.clone();
            return Ok(());
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        for j in 0..self.d {
            let delta = other.mean[j] - self.mean[j];
            self.mean[j] += delta * nb / n;
            self.m2[j] += other.m2[j] + delta * delta * na * nb / n;
        }
        self.n = self.n.saturating_add(other.n);
        Ok(())
    }

    /// Population variance (`ddof = 0`, like `numpy.var`) of each feature;
    /// zeros when no row was added.
    pub fn variances(&self) -> Vec<f64> {
        if self.n == 0 {
            return vec![0.0; self.d];
        }
        self.m2
            .iter()
            .map(|s| (s / self.n as f64).max(0.0))
            .collect()
    }

    /// scikit-learn's absolute tolerance: `tol * mean(variances())`.
    pub fn tolerance(&self, tol: f64) -> f64 {
        if tol == 0.0 {
            return 0.0;
        }
        let v = self.variances();
        tol * v.iter().sum::<f64>() / self.d as f64
    }
}

/// Order-independent choice of the first k-means|| center: the row with the
/// smallest `row_hash(seed, 0, row)`, ties broken by content
/// (lexicographic `f64::total_cmp`). Values are stored with `-0.0`
/// normalised to `+0.0`. Serde-serialisable aggregate state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirstCenter {
    /// The seed of the hash.
    pub seed: u64,
    /// Hash of the current best row (`None` before the first row).
    pub key: Option<u64>,
    /// The current best row (empty before the first row).
    pub row: Vec<f64>,
}

impl FirstCenter {
    /// An empty picker.
    pub fn new(seed: u64) -> Self {
        FirstCenter {
            seed,
            key: None,
            row: Vec::new(),
        }
    }

    fn offer(&mut self, key: u64, row: &[f64]) {
        let better = match self.key {
            None => true,
            Some(k) => key < k || (key == k && cmp_rows(row, &self.row).is_lt()),
        };
        if better {
            self.key = Some(key);
            self.row = row.iter().map(|v| v + 0.0).collect();
        }
    }

    /// Offer a row.
    ///
    /// # Errors
    /// [`KMeansError::DimensionMismatch`] if its length differs from earlier
    /// rows; [`KMeansError::InvalidParameter`] if it is empty;
    /// [`KMeansError::NonFinite`] (row 0) if it has NaN/±Inf.
    pub fn add(&mut self, row: &[f64]) -> Result<()> {
        if row.is_empty() {
            return Err(KMeansError::InvalidParameter("empty row".into()));
        }
        let d = if self.key.is_some() {
            self.row.len()
        } else {
            row.len()
        };
        check_row(row, d)?;
        self.offer(row_hash(self.seed, 0, row), row);
        Ok(())
    }

    /// Combine with another picker of the same seed.
    ///
    /// # Errors
    /// [`KMeansError::InvalidParameter`] if the seeds differ;
    /// [`KMeansError::DimensionMismatch`] if the rows' lengths differ.
    pub fn merge(&mut self, other: &FirstCenter) -> Result<()> {
        if self.seed != other.seed {
            return Err(KMeansError::InvalidParameter(format!(
                "cannot merge pickers with seeds {} and {}",
                self.seed, other.seed
            )));
        }
        if let Some(k) = other.key {
            if self.key.is_some() && self.row.len() != other.row.len() {
                return Err(KMeansError::DimensionMismatch {
                    expected: self.row.len(),
                    got: other.row.len(),
                });
            }
            self.offer(k, &other.row);
        }
        Ok(())
    }

    /// The chosen row, `None` if no row was offered.
    pub fn into_row(self) -> Option<Vec<f64>> {
        self.key.map(|_| self.row)
    }
}

/// k-means|| oversampling decision for one row in sampling round `round`
/// (0-based): keep the row with probability `min(1, l * D² / phi)`, where
/// `D²` is its squared distance to the nearest of `centers` (`m * d`
/// values, `d = row.len()`) and `phi` the total of `D²` over the data.
///
/// The coin is `hash_to_unit(row_hash(seed, round + 1, row)) < l*D²/phi`,
/// so the decision depends only on the row's content, not on the order rows
/// are seen (identical rows are kept or dropped together). Rows at distance
/// 0 (e.g. already chosen) are never kept; with `phi == 0` nothing is kept.
///
/// # Errors
/// [`KMeansError::InvalidShape`] if `row` is empty or `centers` is empty or
/// not a multiple of `row.len()`; [`KMeansError::NonFinite`] (row 0) for a
/// non-finite row; [`KMeansError::InvalidParameter`] if `phi` is negative
/// or not finite, or `l` is not a finite positive number.
pub fn parallel_sample(
    row: &[f64],
    centers: &[f64],
    phi: f64,
    l: f64,
    seed: u64,
    round: u32,
) -> Result<bool> {
    if !phi.is_finite() || phi < 0.0 {
        return Err(KMeansError::InvalidParameter(format!(
            "phi must be a finite number >= 0 (got {phi})"
        )));
    }
    if !l.is_finite() || l <= 0.0 {
        return Err(KMeansError::InvalidParameter(format!(
            "the oversampling factor l must be a finite number > 0 (got {l})"
        )));
    }
    let (_, dist) = crate::model::nearest(row, centers)?;
    if phi == 0.0 || dist == 0.0 {
        return Ok(false);
    }
    let p = l * dist / phi;
    Ok(hash_to_unit(row_hash(seed, round as u64 + 1, row)) < p)
}

/// Reduce weighted k-means|| candidates to `k` centers, as Spark MLlib does:
/// weighted k-means++ (scikit-learn's greedy variant, weights as sample
/// weights) followed by weighted Lloyd iterations (Hamerly, `max_iter =
/// 300`, `tol = 1e-4` relative to the weighted feature variance).
///
/// `cands` holds `m * d` values (row-major), `weights` `m` non-negative
/// weights (typically the number of data rows nearest to each candidate, i.e.
/// [`StepState::counts`] of a pass with the candidates as centroids).
/// Candidates with weight 0 are ignored, identical candidates are merged
/// (weights added), and the candidates are put in canonical order first, so
/// the result depends only on the multiset of (candidate, weight) pairs and
/// `seed`, not on their order or the pool size. The returned `k * d` values
/// are in the order the run produced them (not size-sorted).
///
/// # Errors
/// [`KMeansError::InvalidParameter`]: `d = 0`, `k = 0`, a negative or
/// non-finite weight; [`KMeansError::InvalidShape`]: `cands.len()` not
/// `weights.len() * d`; [`KMeansError::EmptyInput`]: no candidate with
/// positive weight; [`KMeansError::NonFinite`]/[`KMeansError::ValueTooLarge`]:
/// bad candidate value; [`KMeansError::TooFewDistinctPoints`]: fewer than
/// `k` distinct candidates with positive weight; [`KMeansError::LimitExceeded`].
pub fn reduce_candidates(
    cands: &[f64],
    weights: &[f64],
    d: usize,
    k: usize,
    seed: u64,
    pool: &ThreadPool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<f64>> {
    check_kd(k, d)?;
    if cands.len() != weights.len().saturating_mul(d) {
        return Err(KMeansError::InvalidShape(format!(
            "{} candidate values for {} weights of dimension {d}",
            cands.len(),
            weights.len()
        )));
    }
    if let Some(i) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
        return Err(KMeansError::InvalidParameter(format!(
            "weight {i} is {} (weights must be finite and >= 0)",
            weights[i]
        )));
    }
    let mut data = Vec::new();
    let mut w0 = Vec::new();
    for (row, &w) in cands.chunks_exact(d).zip(weights) {
        if w > 0.0 {
            data.extend_from_slice(row);
            w0.push(w);
        }
    }
    if w0.is_empty() {
        return Err(KMeansError::EmptyInput);
    }
    let mut exec = Exec::new(pool, progress);
    exec.state.phase = "reduce";
    let (sorted, order, _) = canonicalize(data, d, &mut exec)?;
    // Merge identical candidates (adjacent in canonical order).
    let mut uniq: Vec<f64> = Vec::with_capacity(sorted.len());
    let mut uw: Vec<f64> = Vec::with_capacity(order.len());
    for (i, row) in sorted.chunks_exact(d).enumerate() {
        let w = w0[order[i]];
        if i > 0 && row == &sorted[(i - 1) * d..i * d] {
            *uw.last_mut().unwrap() += w;
        } else {
            uniq.extend_from_slice(row);
            uw.push(w);
        }
    }
    let m = uw.len();
    if m < k {
        return Err(KMeansError::TooFewDistinctPoints { k, distinct: m });
    }
    let lay = Layout::new(m, d);
    let tol_abs = tolerance(&uniq, &uw, &lay, 1e-4, &mut exec);
    exec.state.phase = "reduce";
    let mut rng = SplitMix64::new(run_seed(seed ^ 0x7265_6475_6365_2121, 0));
    let init = kmeans_plus_plus(&uniq, &uw, &lay, k, &mut rng, &mut exec);
    let out = run_kmeans(
        &uniq,
        &uw,
        &lay,
        init,
        k,
        300,
        tol_abs,
        Algorithm::Hamerly,
        &mut exec,
    );
    Ok(out.centers)
}
