//! Feature standardization with scikit-learn `StandardScaler` semantics.
//!
//! The fitting state ([`ScalerState`]) is a single-pass, numerically stable accumulator:
//! Welford's update per value and Chan et al.'s pairwise merge for partial states, so it can be
//! driven row by row by a PostgreSQL aggregate and combined across parallel workers.
//!
//! Semantics, matching `sklearn.preprocessing.StandardScaler().fit(X)`:
//! - `mean` is the per-feature mean, `var` the *population* variance (ddof = 0),
//!   `scale = sqrt(var)`;
//! - a constant (or numerically constant) feature gets `scale = 1`, using scikit-learn's own test
//!   (`var <= n·eps·var + (n·mean·eps)²`);
//! - missing values (`None` or NaN) are ignored per feature, so every feature has its own
//!   `count` (scikit-learn's per-feature `n_samples_seen_`); a feature that was never seen has
//!   no mean and no scale and transforms to missing;
//! - ±Infinity is rejected: it would make the mean and variance meaningless.
//!
//! [`Scaler`] is the fitted, immutable result with [`Scaler::scale`] / [`Scaler::unscale`]
//! and a readable JSON form (`{"n":..,"mean":[..],"scale":[..],"var":[..],"count":[..]}`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Errors raised while fitting or applying a scaler. Each variant maps to one SQLSTATE in the
/// SQL layer.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalerError {
    /// A row has a different number of features than the rows before it, or than the scaler.
    DimensionMismatch { expected: usize, got: usize },
    /// A row with zero features.
    EmptyRow,
    /// A feature value is +Infinity or -Infinity.
    NonFinite { feature: usize, value: f64 },
    /// A serialized state or a scaler value is malformed.
    Invalid(String),
}

impl fmt::Display for ScalerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScalerError::DimensionMismatch { expected, got } => {
                write!(f, "expected {expected} features, got {got}")
            }
            ScalerError::EmptyRow => write!(f, "a feature array must have at least one element"),
            ScalerError::NonFinite { feature, value } => write!(
                f,
                "feature {} is {value}: infinite values cannot be standardized",
                feature + 1
            ),
            ScalerError::Invalid(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for ScalerError {}

/// Running moments of a stream of feature rows (the aggregate's transition state).
#[derive(Debug, Clone, Default)]
pub struct ScalerState {
    /// Number of rows added (rows, not values: a row of all-missing values still counts).
    pub rows: u64,
    /// Per-feature number of values seen (missing values excluded).
    pub count: Vec<u64>,
    /// Per-feature running mean.
    pub mean: Vec<f64>,
    /// Per-feature running sum of squared deviations from the mean (Welford's M2).
    pub m2: Vec<f64>,
    /// Complete rows not yet folded into the moments, summarised per feature as shifted sums
    /// over the current block: `shift` is the block's first row, `s1` = Σ(x − shift) and
    /// `s2` = Σ(x − shift)² over `block_rows` rows. Every [`BLOCK_ROWS`] rows the block is
    /// folded in (block mean = shift + s1/n, M2 = s2 − s1²/n, then Chan's merge). Shifting by
    /// a value of the data keeps the sums of the order of the spread, so this is as stable as
    /// a two-pass computation of the block, needs no copy of the rows and vectorises across
    /// features.
    shift: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    block_rows: u64,
}

/// Rows buffered before a block is folded into the running moments.
pub const BLOCK_ROWS: usize = 128;

impl ScalerState {
    /// An empty state. Its dimension is fixed by the first row added or merged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of features, 0 while no row has been seen.
    pub fn dims(&self) -> usize {
        self.mean.len()
    }

    fn ensure_dims(&mut self, d: usize) -> Result<(), ScalerError> {
        if d == 0 {
            return Err(ScalerError::EmptyRow);
        }
        if self.mean.is_empty() {
            self.count = vec![0; d];
            self.mean = vec![0.0; d];
            self.m2 = vec![0.0; d];
            self.shift = vec![0.0; d];
            self.s1 = vec![0.0; d];
            self.s2 = vec![0.0; d];
        } else if self.mean.len() != d {
            return Err(ScalerError::DimensionMismatch { expected: self.mean.len(), got: d });
        }
        Ok(())
    }

    /// Adds one row of complete values (no missing values; NaN is still treated as missing).
    ///
    /// This is the fast path used when a SQL array has no NULL elements.
    pub fn add_dense(&mut self, row: &[f64]) -> Result<(), ScalerError> {
        self.ensure_dims(row.len())?;
        if row.iter().all(|v| v.is_finite()) {
            // The common case: a complete row goes into the block's shifted sums.
            self.rows += 1;
            if self.block_rows == 0 {
                self.shift.copy_from_slice(row);
            }
            for (((s1, s2), &c), &x) in self.s1.iter_mut().zip(self.s2.iter_mut()).zip(&self.shift).zip(row) {
                let dx = x - c;
                *s1 += dx;
                *s2 += dx * dx;
            }
            self.block_rows += 1;
            if self.block_rows >= BLOCK_ROWS as u64 {
                self.flush();
            }
            return Ok(());
        }
        if let Some((feature, &value)) = row.iter().enumerate().find(|(_, v)| v.is_infinite()) {
            return Err(ScalerError::NonFinite { feature, value });
        }
        self.rows += 1;
        for (j, &x) in row.iter().enumerate() {
            if !x.is_nan() {
                self.push_value(j, x);
            }
        }
        Ok(())
    }

    /// Folds the current block of complete rows into the moments (block mean and M2 from the
    /// shifted sums, then Chan's pairwise update per feature).
    pub fn flush(&mut self) {
        let nb = self.block_rows;
        if nb == 0 {
            return;
        }
        let inv = 1.0 / nb as f64;
        for j in 0..self.dims() {
            let d1 = self.s1[j] * inv;
            let m2 = (self.s2[j] - self.s1[j] * d1).max(0.0);
            let mean = self.shift[j] + d1;
            self.s1[j] = 0.0;
            self.s2[j] = 0.0;
            self.merge_feature(j, nb, mean, m2);
        }
        self.block_rows = 0;
    }

    /// Chan's pairwise update of feature `j` with a partial (count, mean, M2).
    #[inline]
    fn merge_feature(&mut self, j: usize, nb: u64, mean_b: f64, m2_b: f64) {
        if nb == 0 {
            return;
        }
        let na = self.count[j];
        if na == 0 {
            self.count[j] = nb;
            self.mean[j] = mean_b;
            self.m2[j] = m2_b;
            return;
        }
        let n = na + nb;
        let (fa, fb, f) = (na as f64, nb as f64, n as f64);
        let delta = mean_b - self.mean[j];
        self.mean[j] += delta * (fb / f);
        self.m2[j] += m2_b + delta * delta * (fa * fb / f);
        self.count[j] = n;
    }

    /// Adds one row that may contain missing values (`None` or NaN), ignored per feature.
    pub fn add(&mut self, row: &[Option<f64>]) -> Result<(), ScalerError> {
        self.ensure_dims(row.len())?;
        if let Some((feature, value)) = row
            .iter()
            .enumerate()
            .find_map(|(j, v)| v.filter(|x| x.is_infinite()).map(|x| (j, x)))
        {
            return Err(ScalerError::NonFinite { feature, value });
        }
        self.rows += 1;
        for (j, v) in row.iter().enumerate() {
            if let Some(x) = v.filter(|x| !x.is_nan()) {
                self.push_value(j, x);
            }
        }
        Ok(())
    }

    #[inline]
    fn push_value(&mut self, j: usize, x: f64) {
        self.count[j] += 1;
        let delta = x - self.mean[j];
        self.mean[j] += delta / self.count[j] as f64;
        self.m2[j] += delta * (x - self.mean[j]);
    }

    /// Merges another partial state into this one (Chan, Golub & LeVeque's pairwise update).
    /// Merging is what parallel workers' partial aggregates go through.
    pub fn merge(&mut self, other: &ScalerState) -> Result<(), ScalerError> {
        let mut other = other.clone();
        other.flush();
        self.flush();
        if other.dims() == 0 {
            self.rows += other.rows;
            return Ok(());
        }
        if self.dims() == 0 {
            let rows = self.rows;
            *self = other;
            self.rows += rows;
            return Ok(());
        }
        if self.dims() != other.dims() {
            return Err(ScalerError::DimensionMismatch { expected: self.dims(), got: other.dims() });
        }
        self.rows += other.rows;
        for j in 0..self.dims() {
            self.merge_feature(j, other.count[j], other.mean[j], other.m2[j]);
        }
        Ok(())
    }

    /// Serializes the state to a compact little-endian byte string (for parallel aggregation).
    pub fn to_bytes(&mut self) -> Vec<u8> {
        self.flush();
        let d = self.dims();
        let mut out = Vec::with_capacity(16 + d * 24);
        out.extend_from_slice(&self.rows.to_le_bytes());
        out.extend_from_slice(&(d as u64).to_le_bytes());
        for j in 0..d {
            out.extend_from_slice(&self.count[j].to_le_bytes());
            out.extend_from_slice(&self.mean[j].to_le_bytes());
            out.extend_from_slice(&self.m2[j].to_le_bytes());
        }
        out
    }

    /// Inverse of [`ScalerState::to_bytes`]; rejects truncated or inconsistent input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ScalerError> {
        let bad = || ScalerError::Invalid("malformed serialized scaler state".into());
        let word = |i: usize| -> Result<[u8; 8], ScalerError> {
            bytes.get(i * 8..i * 8 + 8).and_then(|s| s.try_into().ok()).ok_or_else(bad)
        };
        let rows = u64::from_le_bytes(word(0)?);
        let d = u64::from_le_bytes(word(1)?) as usize;
        if bytes.len() != 16 + d.checked_mul(24).ok_or_else(bad)? {
            return Err(bad());
        }
        let mut st = ScalerState { rows, ..Default::default() };
        for j in 0..d {
            st.count.push(u64::from_le_bytes(word(2 + 3 * j)?));
            st.mean.push(f64::from_le_bytes(word(3 + 3 * j)?));
            st.m2.push(f64::from_le_bytes(word(4 + 3 * j)?));
        }
        Ok(st)
    }

    /// The fitted scaler, or `None` when no row was ever added.
    pub fn finish(&mut self) -> Option<Scaler> {
        self.flush();
        if self.dims() == 0 {
            return None;
        }
        let eps = f64::EPSILON;
        let d = self.dims();
        let mut mean = Vec::with_capacity(d);
        let mut var = Vec::with_capacity(d);
        let mut scale = Vec::with_capacity(d);
        for j in 0..d {
            let n = self.count[j];
            if n == 0 {
                mean.push(None);
                var.push(None);
                scale.push(None);
                continue;
            }
            let m = self.mean[j];
            let v = (self.m2[j] / n as f64).max(0.0);
            // scikit-learn's _is_constant_feature: var <= n*eps*var + (n*mean*eps)^2
            let nf = n as f64;
            let upper = nf * eps * v + (nf * m * eps).powi(2);
            let s = if v <= upper { 1.0 } else { v.sqrt() };
            mean.push(Some(m));
            var.push(Some(v));
            scale.push(Some(s));
        }
        Some(Scaler { n: self.rows, mean, scale, var, count: self.count.clone() })
    }
}

/// A fitted standard scaler. `None` entries belong to features that had no value at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    /// Rows the scaler was fitted on.
    pub n: u64,
    /// Per-feature mean.
    pub mean: Vec<Option<f64>>,
    /// Per-feature scale (population standard deviation, 1 for constant features).
    pub scale: Vec<Option<f64>>,
    /// Per-feature population variance.
    pub var: Vec<Option<f64>>,
    /// Per-feature count of non-missing values.
    pub count: Vec<u64>,
}

impl Scaler {
    /// Number of features.
    pub fn dims(&self) -> usize {
        self.mean.len()
    }

    /// Checks a scaler that came from outside (text input): consistent lengths, finite numbers,
    /// positive scales, non-negative variances, counts not above `n`, and a mean exactly where
    /// the count is positive.
    pub fn validate(&self) -> Result<(), ScalerError> {
        let d = self.mean.len();
        let inv = |m: String| Err(ScalerError::Invalid(m));
        if d == 0 {
            return inv("a scaler needs at least one feature".into());
        }
        if self.scale.len() != d || self.var.len() != d || self.count.len() != d {
            return inv(format!(
                "mean, scale, var and count must have the same length (got {}, {}, {}, {})",
                d,
                self.scale.len(),
                self.var.len(),
                self.count.len()
            ));
        }
        for j in 0..d {
            let f = j + 1;
            if self.count[j] > self.n {
                return inv(format!("count of feature {f} ({}) exceeds n ({})", self.count[j], self.n));
            }
            let present = (self.mean[j], self.scale[j], self.var[j]);
            match (self.count[j], present) {
                (0, (None, None, None)) => {}
                (0, _) => return inv(format!("feature {f} has count 0 but a mean, scale or var")),
                (_, (Some(m), Some(s), Some(v))) => {
                    if !m.is_finite() || !s.is_finite() || !v.is_finite() {
                        return inv(format!("feature {f} has a non-finite mean, scale or var"));
                    }
                    if s <= 0.0 {
                        return inv(format!("scale of feature {f} must be positive, got {s}"));
                    }
                    if v < 0.0 {
                        return inv(format!("var of feature {f} must not be negative, got {v}"));
                    }
                }
                _ => return inv(format!("feature {f} has a count but lacks its mean, scale or var")),
            }
        }
        Ok(())
    }

    /// Parses and validates the JSON text form.
    pub fn from_json(text: &str) -> Result<Self, ScalerError> {
        let s: Scaler = serde_json::from_str(text)
            .map_err(|e| ScalerError::Invalid(format!("not a valid scaler JSON document: {e}")))?;
        s.validate()?;
        Ok(s)
    }

    /// The JSON text form (shortest round-trip float formatting).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Scaler always serializes")
    }

    fn check_len(&self, len: usize) -> Result<(), ScalerError> {
        if len != self.dims() {
            return Err(ScalerError::DimensionMismatch { expected: self.dims(), got: len });
        }
        Ok(())
    }

    /// `z = (x - mean) / scale` per feature. Missing values (and features the scaler never
    /// saw) stay missing; infinite input is an error.
    pub fn scale(&self, x: &[Option<f64>]) -> Result<Vec<Option<f64>>, ScalerError> {
        self.check_len(x.len())?;
        self.apply(x, |v, m, s| (v - m) / s)
    }

    /// `x = z * scale + mean` per feature, the inverse of [`Scaler::scale`].
    pub fn unscale(&self, z: &[Option<f64>]) -> Result<Vec<Option<f64>>, ScalerError> {
        self.check_len(z.len())?;
        self.apply(z, |v, m, s| v * s + m)
    }

    fn apply(
        &self,
        x: &[Option<f64>],
        f: impl Fn(f64, f64, f64) -> f64,
    ) -> Result<Vec<Option<f64>>, ScalerError> {
        x.iter()
            .enumerate()
            .map(|(j, v)| match (v, self.mean[j], self.scale[j]) {
                (Some(v), _, _) if v.is_infinite() => {
                    Err(ScalerError::NonFinite { feature: j, value: *v })
                }
                (Some(v), Some(m), Some(s)) if !v.is_nan() => Ok(Some(f(*v, m, s))),
                _ => Ok(None),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(rows: &[Vec<f64>]) -> Scaler {
        let mut st = ScalerState::new();
        for r in rows {
            st.add_dense(r).unwrap();
        }
        st.finish().unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn population_moments_and_constant_feature() {
        let s = fit(&[vec![1.0, 5.0], vec![2.0, 5.0], vec![3.0, 5.0], vec![4.0, 5.0]]);
        assert_eq!(s.n, 4);
        assert_eq!(s.mean, vec![Some(2.5), Some(5.0)]);
        assert_eq!(s.var[0], Some(1.25)); // ddof = 0
        assert!(close(s.scale[0].unwrap(), 1.25f64.sqrt(), 1e-15));
        assert_eq!(s.var[1], Some(0.0));
        assert_eq!(s.scale[1], Some(1.0)); // zero variance -> scale 1
        let z = s.scale(&[Some(4.0), Some(5.0)]).unwrap();
        assert!(close(z[0].unwrap(), 1.5 / 1.25f64.sqrt(), 1e-15));
        assert_eq!(z[1], Some(0.0));
    }

    #[test]
    fn near_constant_feature_gets_unit_scale_like_sklearn() {
        // 0.1 represented inexactly: var is tiny but non-zero through rounding.
        let rows: Vec<Vec<f64>> = (0..1000).map(|_| vec![0.1 + 0.2 - 0.2]).collect();
        let s = fit(&rows);
        assert_eq!(s.scale[0], Some(1.0));
    }

    #[test]
    fn missing_values_are_ignored_per_feature() {
        let mut st = ScalerState::new();
        st.add(&[Some(1.0), None]).unwrap();
        st.add(&[Some(3.0), Some(10.0)]).unwrap();
        st.add_dense(&[f64::NAN, 20.0]).unwrap();
        st.add(&[None, None]).unwrap();
        let s = st.finish().unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.count, vec![2, 2]);
        assert_eq!(s.mean, vec![Some(2.0), Some(15.0)]);
        assert_eq!(s.var, vec![Some(1.0), Some(25.0)]);
        let z = s.scale(&[None, Some(f64::NAN)]).unwrap();
        assert_eq!(z, vec![None, None]);
    }

    #[test]
    fn feature_never_seen_transforms_to_missing() {
        let mut st = ScalerState::new();
        st.add(&[Some(1.0), None]).unwrap();
        st.add(&[Some(2.0), None]).unwrap();
        let s = st.finish().unwrap();
        assert_eq!(s.mean[1], None);
        assert_eq!(s.scale(&[Some(1.0), Some(7.0)]).unwrap()[1], None);
        s.validate().unwrap();
        assert_eq!(Scaler::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn errors() {
        let mut st = ScalerState::new();
        assert_eq!(st.add_dense(&[]), Err(ScalerError::EmptyRow));
        st.add_dense(&[1.0, 2.0]).unwrap();
        let e = st.add_dense(&[1.0, 2.0, 3.0]).unwrap_err();
        assert_eq!(e.to_string(), "expected 2 features, got 3");
        let e = st.add(&[Some(f64::INFINITY), None]).unwrap_err();
        assert!(e.to_string().contains("feature 1 is inf"), "{e}");
        assert_eq!(st.rows, 1, "a rejected row must not be counted");
        let s = st.finish().unwrap();
        assert!(s.scale(&[Some(1.0)]).is_err());
        assert!(s.unscale(&[Some(f64::NEG_INFINITY), None]).is_err());
        assert!(ScalerState::new().finish().is_none());
        // rows buffered in a block are part of every result
        let mut st = ScalerState::new();
        for i in 0..(BLOCK_ROWS + 3) {
            st.add_dense(&[i as f64]).unwrap();
        }
        let s = st.finish().unwrap();
        assert_eq!(s.count, vec![(BLOCK_ROWS + 3) as u64]);
        assert_eq!(s.mean[0], Some((BLOCK_ROWS + 2) as f64 / 2.0));
    }

    #[test]
    fn unscale_inverts_scale() {
        let rows: Vec<Vec<f64>> =
            (0..50).map(|i| vec![i as f64 * 0.37 - 3.0, (i * i) as f64, 1e6 + i as f64]).collect();
        let s = fit(&rows);
        for r in &rows {
            let x: Vec<Option<f64>> = r.iter().map(|&v| Some(v)).collect();
            let back = s.unscale(&s.scale(&x).unwrap()).unwrap();
            for (a, b) in back.iter().zip(r) {
                assert!(close(a.unwrap(), *b, 1e-12));
            }
        }
    }

    /// Deterministic pseudo-random values without a dependency.
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64) / (1u64 << 53) as f64
    }

    #[test]
    fn dense_blocks_are_as_accurate_as_two_pass() {
        // Complete rows take the shifted-sum block path: a large offset, a small spread, an
        // outlier as the first row of a block, and a partial last block; mixed with rows
        // that have missing values (the per-value path) in between.
        let mut seed = 11;
        let n = 3 * BLOCK_ROWS + 57;
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let spike = if i == BLOCK_ROWS { 1e4 } else { 0.0 };
                vec![1e9 + spike + lcg(&mut seed), -3.5 + 1e-3 * lcg(&mut seed), 42.0]
            })
            .collect();
        let mut st = ScalerState::new();
        for (i, r) in rows.iter().enumerate() {
            st.add_dense(r).unwrap();
            if i % 50 == 7 {
                st.add(&[None, None, Some(42.0)]).unwrap();
            }
        }
        let s = st.finish().unwrap();
        for j in 0..2 {
            let vals: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            assert!(close(s.mean[j].unwrap(), m, 1e-15), "feature {j}: mean {} vs {m}", s.mean[j].unwrap());
            assert!((s.var[j].unwrap() - v).abs() <= 1e-11 * v, "feature {j}: var {} vs {v}", s.var[j].unwrap());
        }
        assert_eq!(s.var[2], Some(0.0));
        assert_eq!(s.scale[2], Some(1.0));
    }

    #[test]
    fn merge_of_partials_equals_single_pass_and_two_pass_reference() {
        let mut seed = 7;
        let rows: Vec<Vec<Option<f64>>> = (0..2000)
            .map(|_| {
                (0..4)
                    .map(|j| {
                        let u = lcg(&mut seed);
                        if u < 0.05 { None } else { Some(1e8 + ((j + 1) as f64) * 1000.0 * lcg(&mut seed)) }
                    })
                    .collect()
            })
            .collect();
        let mut whole = ScalerState::new();
        for r in &rows {
            whole.add(r).unwrap();
        }
        // Uneven partition, merged in a tree, through the byte form.
        let mut parts = Vec::new();
        for chunk in rows.chunks(333) {
            let mut p = ScalerState::new();
            for r in chunk {
                p.add(r).unwrap();
            }
            parts.push(ScalerState::from_bytes(&p.to_bytes()).unwrap());
        }
        parts.push(ScalerState::new()); // an empty partial (a worker that saw no rows)
        let mut merged = ScalerState::new();
        for p in parts.iter().rev() {
            merged.merge(p).unwrap();
        }
        let (a, b) = (whole.finish().unwrap(), merged.finish().unwrap());
        assert_eq!(a.n, b.n);
        assert_eq!(a.count, b.count);
        for j in 0..4 {
            // two-pass reference
            let vals: Vec<f64> = rows.iter().filter_map(|r| r[j]).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / vals.len() as f64;
            assert!(close(a.mean[j].unwrap(), m, 1e-14));
            assert!(close(a.var[j].unwrap(), v, 1e-9), "{} vs {v}", a.var[j].unwrap());
            assert!(close(a.mean[j].unwrap(), b.mean[j].unwrap(), 1e-14));
            let (va, vb) = (a.var[j].unwrap(), b.var[j].unwrap());
            // Offset 1e8 with spread ~1e3: conditioning limits agreement to ~eps * 1e5.
            assert!(close(va, vb, 1e-10), "feature {j}: {va} vs {vb}");
        }
    }

    #[test]
    fn merge_rejects_mismatched_dims_and_bytes_reject_garbage() {
        let mut a = ScalerState::new();
        a.add_dense(&[1.0]).unwrap();
        let mut b = ScalerState::new();
        b.add_dense(&[1.0, 2.0]).unwrap();
        b.flush();
        assert!(a.merge(&b).is_err());
        assert!(ScalerState::from_bytes(&[1, 2, 3]).is_err());
        let mut bytes = b.to_bytes();
        bytes.pop();
        assert!(ScalerState::from_bytes(&bytes).is_err());
        let mut huge = b.to_bytes();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(ScalerState::from_bytes(&huge).is_err());
    }

    #[test]
    fn json_form_validates() {
        let s = fit(&[vec![1.0, 2.0], vec![3.0, 6.0]]);
        let text = s.to_json();
        assert_eq!(
            text,
            r#"{"n":2,"mean":[2.0,4.0],"scale":[1.0,2.0],"var":[1.0,4.0],"count":[2,2]}"#
        );
        assert_eq!(Scaler::from_json(&text).unwrap(), s);
        for bad in [
            r#"{"n":2,"mean":[2.0],"scale":[1.0,2.0],"var":[1.0,4.0],"count":[2,2]}"#,
            r#"{"n":2,"mean":[2.0,4.0],"scale":[0.0,2.0],"var":[1.0,4.0],"count":[2,2]}"#,
            r#"{"n":1,"mean":[2.0,4.0],"scale":[1.0,2.0],"var":[1.0,4.0],"count":[2,2]}"#,
            r#"{"n":2,"mean":[],"scale":[],"var":[],"count":[]}"#,
            r#"{"n":2,"mean":[2.0,4.0],"scale":[1.0,2.0],"var":[1.0,-4.0],"count":[2,2]}"#,
            r#"not json"#,
        ] {
            assert!(Scaler::from_json(bad).is_err(), "{bad}");
        }
    }
}
