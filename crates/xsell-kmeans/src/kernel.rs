//! Distance kernels.
//!
//! [`sq_dist`] defines *the* squared Euclidean distance of this crate: the
//! sum of `(a[t] - b[t])^2` accumulated sequentially over `t`. The blocked
//! kernel [`Packed::all_dists`] evaluates exactly the same operations (one
//! SIMD lane per centroid, each lane accumulating sequentially over `t`), so
//! it returns bit-identical values while letting the compiler vectorise
//! across centroids. Because Rust never contracts `a*b + c` into an FMA on
//! its own, results do not depend on the target CPU features.

/// Number of centroids evaluated together by [`Packed`].
pub(crate) const LANES: usize = 8;

/// Squared Euclidean distance, accumulated sequentially over the coordinates.
/// `a` and `b` must have the same length (extra elements of the longer one
/// are ignored).
#[inline]
pub fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        let t = x - y;
        s += t * t;
    }
    s
}

/// Squared Euclidean distance with four interleaved accumulators (faster,
/// vectorisable; differs from [`sq_dist`] by rounding only). Used where exact
/// agreement with `sq_dist` is not needed (silhouette).
#[inline]
pub(crate) fn sq_dist_fast(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = x - y;
        tail += t * t;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `a < b ? a : b` (compiles to a branch-free `minsd`; no NaNs here).
#[inline(always)]
fn fmin(a: f64, b: f64) -> f64 {
    if a < b { a } else { b }
}

/// `a > b ? a : b` (branch-free `maxsd`).
#[inline(always)]
fn fmax(a: f64, b: f64) -> f64 {
    if a > b { a } else { b }
}

/// Index and value of the minimum of `v` (first index on ties); `v`
/// non-empty. Branch-free (distances are unpredictable).
#[inline]
pub(crate) fn argmin(v: &[f64]) -> (usize, f64) {
    let mut best = v[0];
    let mut idx = 0;
    for (j, &x) in v.iter().enumerate().skip(1) {
        let lt = x < best;
        idx = if lt { j } else { idx };
        best = fmin(x, best);
    }
    (idx, best)
}

/// Minimum (first index on ties) and the minimum of the other entries
/// (`+inf` when `v` has one element). Branch-free.
#[inline]
pub(crate) fn argmin2(v: &[f64]) -> (usize, f64, f64) {
    let mut b1 = f64::INFINITY;
    let mut b2 = f64::INFINITY;
    let mut idx = 0;
    for (j, &x) in v.iter().enumerate() {
        let lt = x < b1;
        idx = if lt { j } else { idx };
        // New second best: the old best if x beats it, else min(b2, x).
        b2 = fmin(b2, fmax(b1, x));
        b1 = fmin(x, b1);
    }
    (idx, b1, b2)
}

/// Centroids transposed into blocks of [`LANES`] for the blocked kernel:
/// block `b` stores, for each coordinate `t`, the `t`-th coordinate of
/// centroids `b*LANES .. b*LANES+LANES` contiguously (missing centroids of the
/// last block are zero-padded and ignored).
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    pub d: usize,
    blocks: usize,
    data: Vec<f64>,
}

impl Packed {
    /// Pack `k` centroids of `d` values (row-major `centers`).
    pub fn new(centers: &[f64], k: usize, d: usize) -> Self {
        let blocks = k.div_ceil(LANES);
        let mut data = vec![0.0; blocks * d * LANES];
        for j in 0..k {
            let (b, l) = (j / LANES, j % LANES);
            for t in 0..d {
                data[(b * d + t) * LANES + l] = centers[j * d + t];
            }
        }
        Packed { d, blocks, data }
    }

    /// Length of the buffer [`all_dists`](Packed::all_dists) writes.
    pub fn buf_len(&self) -> usize {
        self.blocks * LANES
    }

    /// Squared distances from `x` (length `d`) to every centroid, written to
    /// `out[..k]` (bit-identical to [`sq_dist`]); `out` must hold
    /// [`buf_len`](Packed::buf_len) values.
    #[inline]
    pub fn all_dists(&self, x: &[f64], out: &mut [f64]) {
        let d = self.d;
        let x = &x[..d];
        for (blk, o) in self
            .data
            .chunks_exact(d * LANES)
            .zip(out.chunks_exact_mut(LANES))
        {
            let mut acc = [0.0f64; LANES];
            for (c, &xt) in blk.chunks_exact(LANES).zip(x) {
                let c: &[f64; LANES] = c.try_into().unwrap();
                for l in 0..LANES {
                    let t = xt - c[l];
                    acc[l] += t * t;
                }
            }
            o.copy_from_slice(&acc);
        }
    }

    /// [`all_dists`](Packed::all_dists) for two rows at once (same results;
    /// the two independent accumulation chains run in parallel).
    #[inline]
    pub fn all_dists2(&self, x0: &[f64], x1: &[f64], out0: &mut [f64], out1: &mut [f64]) {
        let d = self.d;
        let (x0, x1) = (&x0[..d], &x1[..d]);
        for ((blk, o0), o1) in self
            .data
            .chunks_exact(d * LANES)
            .zip(out0.chunks_exact_mut(LANES))
            .zip(out1.chunks_exact_mut(LANES))
        {
            let mut a0 = [0.0f64; LANES];
            let mut a1 = [0.0f64; LANES];
            for ((c, &u), &v) in blk.chunks_exact(LANES).zip(x0).zip(x1) {
                let c: &[f64; LANES] = c.try_into().unwrap();
                for l in 0..LANES {
                    let t = u - c[l];
                    a0[l] += t * t;
                    let s = v - c[l];
                    a1[l] += s * s;
                }
            }
            o0.copy_from_slice(&a0);
            o1.copy_from_slice(&a1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::SplitMix64;

    #[test]
    fn packed_is_bit_identical_to_scalar() {
        let mut r = SplitMix64::new(1);
        for &(k, d) in &[(1, 1), (3, 5), (8, 16), (9, 3), (17, 33)] {
            let c: Vec<f64> = (0..k * d).map(|_| r.next_unit() * 100.0 - 50.0).collect();
            let p = Packed::new(&c, k, d);
            let mut buf = vec![0.0; p.buf_len()];
            for _ in 0..20 {
                let x: Vec<f64> = (0..d).map(|_| r.next_unit() * 1e3).collect();
                p.all_dists(&x, &mut buf);
                let y: Vec<f64> = x.iter().map(|v| v * 0.5 - 3.0).collect();
                let (mut b0, mut b1) = (vec![0.0; p.buf_len()], vec![0.0; p.buf_len()]);
                p.all_dists2(&y, &x, &mut b0, &mut b1);
                for j in 0..k {
                    let cj = &c[j * d..(j + 1) * d];
                    assert_eq!(buf[j].to_bits(), sq_dist(&x, cj).to_bits());
                    assert_eq!(b1[j].to_bits(), sq_dist(&x, cj).to_bits());
                    assert_eq!(b0[j].to_bits(), sq_dist(&y, cj).to_bits());
                }
            }
        }
    }

    #[test]
    fn argmins() {
        assert_eq!(argmin(&[3.0, 1.0, 1.0, 2.0]), (1, 1.0));
        assert_eq!(argmin2(&[3.0, 1.0, 1.0, 2.0]), (1, 1.0, 1.0));
        assert_eq!(argmin2(&[5.0]), (0, 5.0, f64::INFINITY));
        assert_eq!(argmin2(&[2.0, 4.0, 3.0]), (0, 2.0, 3.0));
    }

    #[test]
    fn fast_distance_close_to_exact() {
        let a: Vec<f64> = (0..13).map(|i| i as f64 * 0.37).collect();
        let b: Vec<f64> = (0..13).map(|i| (i * i) as f64 * 0.01).collect();
        let e = sq_dist(&a, &b);
        assert!((sq_dist_fast(&a, &b) - e).abs() <= 1e-12 * e);
        assert_eq!(sq_dist(&[1.0, 2.0], &[4.0, 6.0]), 25.0);
    }
}
