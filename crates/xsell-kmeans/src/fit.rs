//! In-memory K-means with scikit-learn semantics: canonicalisation, seeding,
//! Lloyd/Hamerly iterations, and the public [`fit`] entry point.

use std::cmp::Ordering;
use std::collections::HashSet;

use rayon::ThreadPool;
use rayon::prelude::*;

use crate::error::{KMeansError, Result};
use crate::exec::{CHUNK_VALUES, Exec, Layout, Progress};
use crate::hash::{SplitMix64, canonical_bits, mix64, run_seed};
use crate::kernel::{LANES, Packed, argmin, argmin2, sq_dist};
use crate::model::Model;
use crate::params::{Algorithm, Init, Params};

/// Largest magnitude accepted in input rows of dimensionality `d`:
/// `1e140 / sqrt(d)`. Squared distances and inertia sums of up to ~1e20 rows
/// stay finite below it.
pub fn value_limit(d: usize) -> f64 {
    1e140 / (d.max(1) as f64).sqrt()
}

/// Relative safety margin of the Hamerly bounds: a generous multiple of the
/// rounding error of a `d`-term squared distance and its square root.
fn margin(d: usize) -> f64 {
    (d as f64 + 16.0) * 4.0 * f64::EPSILON
}

/// Lexicographic total order of two rows (via `f64::total_cmp`).
pub(crate) fn cmp_rows(a: &[f64], b: &[f64]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.total_cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Hash defining the canonical row order (fast, four independent
/// multiply-xor lanes and a strong final mix; not [`row_hash`], whose
/// sequential chain is slower). `-0.0` hashes like `+0.0`.
#[inline]
fn canon_key(row: &[f64]) -> u64 {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut a: [u64; 4] = [
        0x243F_6A88_85A3_08D3,
        0x1319_8A2E_0370_7344,
        0xA409_3822_299F_31D0,
        0x082E_FA98_EC4E_6C89,
    ];
    let mut ch = row.chunks_exact(4);
    for c in &mut ch {
        for l in 0..4 {
            a[l] = (a[l] ^ canonical_bits(c[l])).wrapping_mul(M);
        }
    }
    for (l, v) in ch.remainder().iter().enumerate() {
        a[l] = (a[l] ^ canonical_bits(*v)).wrapping_mul(M);
    }
    mix64(a[0] ^ mix64(a[1] ^ mix64(a[2] ^ mix64(a[3] ^ row.len() as u64))))
}

/// Hash keys `(canon_key, input index)` of a chunk, or the first bad value.
type HashedChunk = (Vec<(u64, usize)>, Option<KMeansError>);
/// A bucket's rows and keys during canonicalisation.
type BucketMut<'a> = (&'a mut [f64], &'a mut [(u64, usize)]);

/// Validate values of `data` (finite, below [`value_limit`]) and sort the
/// rows into the canonical order: ascending `canon_key(row)`, ties by
/// content; `-0.0` becomes `+0.0`. Returns the sorted data, for each
/// canonical position the input index of the row, and the rows' statistics
/// (distinct count, moments; merged in bucket order, so deterministic).
pub(crate) fn canonicalize(
    data: Vec<f64>,
    d: usize,
    exec: &mut Exec,
) -> Result<(Vec<f64>, Vec<usize>, RowStats)> {
    let n = data.len() / d;
    let lay = Layout::new(n, d);
    let rpc = lay.rows_per_chunk;
    let limit = value_limit(d);
    exec.state.phase = "canonicalize";
    exec.state.iteration = 0;
    let mut keys: Vec<(u64, usize)> = Vec::with_capacity(n);
    let mut err: Option<KMeansError> = None;
    exec.batched(&lay, "hash", |pool, r| {
        if err.is_some() {
            return;
        }
        let base = lay.rows(r.clone()).start;
        let vals = &data[lay.values(r)];
        let parts: Vec<HashedChunk> = pool.install(|| {
            vals.par_chunks(rpc * d)
                .enumerate()
                .map(|(ci, chunk)| {
                    let row0 = base + ci * rpc;
                    let mut ks = Vec::with_capacity(chunk.len() / d);
                    for (i, row) in chunk.chunks_exact(d).enumerate() {
                        let ok = row.iter().fold(true, |ok, v| ok & (v.abs() <= limit));
                        if !ok {
                            let c = row
                                .iter()
                                .position(|v| !v.is_finite() || v.abs() > limit)
                                .unwrap_or(0);
                            let v = row[c];
                            let row = (row0 + i) as u64;
                            let e = if v.is_finite() {
                                KMeansError::ValueTooLarge {
                                    row,
                                    column: c,
                                    value: v,
                                    limit,
                                }
                            } else {
                                KMeansError::NonFinite { row, column: c }
                            };
                            return (ks, Some(e));
                        }
                        ks.push((canon_key(row), row0 + i));
                    }
                    (ks, None)
                })
                .collect()
        });
        for (ks, e) in parts {
            if err.is_some() {
                break;
            }
            match e {
                Some(e) => err = Some(e),
                None => keys.extend(ks),
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }

    // In-place radix partition of the rows by the top key bits (American
    // flag sort: no second copy of the data), then sort every bucket by
    // (key, content) in parallel batches. The result is the unique total
    // order (key, content); rows comparing equal are identical, so the order
    // among them is irrelevant.
    let mut data = data;
    let bits: u32 = if n <= 2048 {
        0
    } else {
        (n / 512).next_power_of_two().trailing_zeros().min(20)
    };
    let nb = 1usize << bits;
    let bucket = |h: u64| {
        if bits == 0 {
            0
        } else {
            (h >> (64 - bits)) as usize
        }
    };
    let mut starts = vec![0usize; nb + 1];
    for (i, &(h, _)) in keys.iter().enumerate() {
        starts[bucket(h) + 1] += 1;
        if i & 0xFFFF == 0 {
            exec.tick();
        }
    }
    for b in 0..nb {
        starts[b + 1] += starts[b];
    }
    let mut heads = starts.clone();
    let mut moved = 0usize;
    for b in 0..nb {
        let end = starts[b + 1];
        while heads[b] < end {
            let i = heads[b];
            let t = bucket(keys[i].0);
            if t == b {
                heads[b] += 1;
                continue;
            }
            let j = heads[t];
            heads[t] += 1;
            // i < j: row j has not been placed yet.
            let (lo, hi) = data.split_at_mut(j * d);
            lo[i * d..(i + 1) * d].swap_with_slice(&mut hi[..d]);
            keys.swap(i, j);
            moved += 1;
            if moved & 0xFFFF == 0 {
                exec.tick();
            }
        }
    }
    let mut stats = RowStats::default();
    {
        let mut parts: Vec<BucketMut> = Vec::with_capacity(nb);
        let mut rest_d = &mut data[..];
        let mut rest_k = &mut keys[..];
        for b in 0..nb {
            let m = starts[b + 1] - starts[b];
            let (bd, rd) = rest_d.split_at_mut(m * d);
            let (bk, rk) = rest_k.split_at_mut(m);
            parts.push((bd, bk));
            rest_d = rd;
            rest_k = rk;
        }
        exec.batched_n(nb, n / nb, n, "sort", &mut |pool, r| {
            let st: Vec<RowStats> = pool.install(|| {
                parts[r]
                    .par_iter_mut()
                    .map(|(rows, ks)| sort_bucket(rows, ks, d))
                    .collect()
            });
            for b in &st {
                stats.merge(b);
            }
        });
    }
    Ok((data, keys.into_iter().map(|(_, i)| i).collect(), stats))
}

/// Distinct-row count and per-feature moments of a range of rows.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowStats {
    pub n: usize,
    pub distinct: usize,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl RowStats {
    /// Chan et al.'s pairwise combination (`self` first, then `o`).
    fn merge(&mut self, o: &RowStats) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = o.clone();
            return;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let nt = na + nb;
        for j in 0..self.mean.len() {
            let delta = o.mean[j] - self.mean[j];
            self.mean[j] += delta * (nb / nt);
            self.m2[j] += o.m2[j] + delta * delta * (na * nb / nt);
        }
        self.n += o.n;
        self.distinct += o.distinct;
    }

    /// `mean(per-feature population variance)`.
    pub fn mean_variance(&self) -> f64 {
        if self.n == 0 || self.m2.is_empty() {
            return 0.0;
        }
        self.m2.iter().map(|s| s / self.n as f64).sum::<f64>() / self.m2.len() as f64
    }
}

/// Sort one bucket (rows and their (key, input index) pairs) by (key,
/// content), turning `-0.0` into `+0.0`; returns the bucket's statistics
/// (identical rows have identical keys, so they share a bucket and the
/// distinct count is a sum over buckets).
fn sort_bucket(rows: &mut [f64], ks: &mut [(u64, usize)], d: usize) -> RowStats {
    let m = ks.len();
    if m == 0 {
        return RowStats {
            mean: vec![0.0; d],
            m2: vec![0.0; d],
            ..RowStats::default()
        };
    }
    let mut perm: Vec<usize> = (0..m).collect();
    perm.sort_unstable_by(|&a, &b| {
        ks[a]
            .0
            .cmp(&ks[b].0)
            .then_with(|| cmp_rows(&rows[a * d..(a + 1) * d], &rows[b * d..(b + 1) * d]))
    });
    let old_rows = rows.to_vec();
    let old_ks = ks.to_vec();
    for (dst, &p) in perm.iter().enumerate() {
        for (o, v) in rows[dst * d..(dst + 1) * d]
            .iter_mut()
            .zip(&old_rows[p * d..(p + 1) * d])
        {
            *o = v + 0.0; // -0.0 -> +0.0
        }
        ks[dst] = old_ks[p];
    }
    // Two-pass moments within the (cache-resident) bucket.
    let mut mean = vec![0.0; d];
    let mut distinct = 0;
    for (i, r) in rows.chunks_exact(d).enumerate() {
        if i == 0 || r != &rows[(i - 1) * d..i * d] {
            distinct += 1;
        }
        for (a, v) in mean.iter_mut().zip(r) {
            *a += v;
        }
    }
    for a in mean.iter_mut() {
        *a /= m as f64;
    }
    let mut m2 = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        for ((a, v), mu) in m2.iter_mut().zip(r).zip(&mean) {
            let t = v - mu;
            *a += t * t;
        }
    }
    RowStats {
        n: m,
        distinct,
        mean,
        m2,
    }
}

/// scikit-learn's `_tolerance`: `tol * mean(per-feature variance)` (population
/// variance; weighted when `w` is non-empty). Two passes over fixed chunks.
pub(crate) fn tolerance(data: &[f64], w: &[f64], lay: &Layout, tol: f64, exec: &mut Exec) -> f64 {
    if tol == 0.0 {
        return 0.0;
    }
    let d = lay.d;
    let rpc = lay.rows_per_chunk;
    let chunk_w = |i: usize, base: usize, len: usize| -> &[f64] {
        if w.is_empty() {
            &[]
        } else {
            &w[base + i * rpc..base + i * rpc + len]
        }
    };
    let mut sum = vec![0.0; d];
    let mut wtot = 0.0;
    exec.batched(lay, "moments", |pool, r| {
        let base = lay.rows(r.clone()).start;
        let vals = &data[lay.values(r)];
        let parts: Vec<(Vec<f64>, f64)> = pool.install(|| {
            vals.par_chunks(rpc * d)
                .enumerate()
                .map(|(i, c)| {
                    let cw = chunk_w(i, base, c.len() / d);
                    let mut s = vec![0.0; d];
                    let mut ws = 0.0;
                    for (j, row) in c.chunks_exact(d).enumerate() {
                        let wi = if cw.is_empty() { 1.0 } else { cw[j] };
                        for (a, x) in s.iter_mut().zip(row) {
                            *a += wi * x;
                        }
                        ws += wi;
                    }
                    (s, ws)
                })
                .collect()
        });
        for (s, ws) in parts {
            for (a, b) in sum.iter_mut().zip(&s) {
                *a += b;
            }
            wtot += ws;
        }
    });
    let mean: Vec<f64> = sum.iter().map(|s| s / wtot).collect();
    let mut ss = vec![0.0; d];
    exec.batched(lay, "moments", |pool, r| {
        let base = lay.rows(r.clone()).start;
        let vals = &data[lay.values(r)];
        let mean = &mean;
        let parts: Vec<Vec<f64>> = pool.install(|| {
            vals.par_chunks(rpc * d)
                .enumerate()
                .map(|(i, c)| {
                    let cw = chunk_w(i, base, c.len() / d);
                    let mut s = vec![0.0; d];
                    for (j, row) in c.chunks_exact(d).enumerate() {
                        let wi = if cw.is_empty() { 1.0 } else { cw[j] };
                        for ((a, x), m) in s.iter_mut().zip(row).zip(mean) {
                            let t = x - m;
                            *a += wi * t * t;
                        }
                    }
                    s
                })
                .collect()
        });
        for s in parts {
            for (a, b) in ss.iter_mut().zip(&s) {
                *a += b;
            }
        }
    });
    let mean_var = ss.iter().map(|s| s / wtot).sum::<f64>() / d as f64;
    mean_var * tol
}

/// Weight of row `i` of a chunk (`cw` empty = unweighted).
#[inline(always)]
fn wt(cw: &[f64], i: usize) -> f64 {
    if cw.is_empty() { 1.0 } else { cw[i] }
}

/// Position of the first row (canonical order) that equals none of `centers`.
fn first_new_row(data: &[f64], d: usize, centers: &[f64], pool: &ThreadPool) -> usize {
    pool.install(|| {
        data.par_chunks(d)
            .position_first(|r| !centers.chunks_exact(d).any(|c| c == r))
    })
    .unwrap_or(0)
}

/// scikit-learn's greedy k-means++ (`_kmeans_plusplus`) over canonically
/// ordered data, drawing from `rng`. `w` empty = unweighted.
pub(crate) fn kmeans_plus_plus(
    data: &[f64],
    w: &[f64],
    lay: &Layout,
    k: usize,
    rng: &mut SplitMix64,
    exec: &mut Exec,
) -> Vec<f64> {
    let (n, d, rpc) = (lay.n, lay.d, lay.rows_per_chunk);
    let n_trials = 2 + (k as f64).ln().floor() as usize;
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let mut centers: Vec<f64> = Vec::with_capacity(k * d);

    // First center: uniform (weighted: proportional to the weight).
    let first = if w.is_empty() {
        rng.below(n as u64) as usize
    } else {
        let total: f64 = w.iter().sum();
        let r = rng.next_unit() * total;
        let mut acc = 0.0;
        let mut pick = n - 1;
        for (i, &wi) in w.iter().enumerate() {
            acc += wi;
            if acc >= r && wi > 0.0 {
                pick = i;
                break;
            }
        }
        pick
    };
    centers.extend_from_slice(row(first));
    if k == 1 {
        return centers;
    }

    let mut closest = vec![0.0f64; n];
    let mut csum = vec![0.0f64; lay.n_chunks];
    {
        let c0 = row(first).to_vec();
        exec.batched(lay, "pp-init", |pool, r| {
            let base = lay.rows(r.clone()).start;
            let c0 = &c0;
            let vals = &data[lay.values(r.clone())];
            let cl = &mut closest[lay.rows(r.clone())];
            let parts: Vec<f64> = pool.install(|| {
                vals.par_chunks(rpc * d)
                    .zip(cl.par_chunks_mut(rpc))
                    .enumerate()
                    .map(|(i, (x, cl))| {
                        let cw = if w.is_empty() {
                            &[][..]
                        } else {
                            &w[base + i * rpc..base + i * rpc + cl.len()]
                        };
                        let mut s = 0.0;
                        for (j, (xr, c)) in x.chunks_exact(d).zip(cl.iter_mut()).enumerate() {
                            *c = sq_dist(xr, c0);
                            s += wt(cw, j) * *c;
                        }
                        s
                    })
                    .collect()
            });
            csum[r].copy_from_slice(&parts);
        });
    }

    let mut pending: Option<Vec<f64>> = None;
    for _c in 1..k {
        let pot = csum.iter().fold(0.0, |a, b| a + b);
        let cand_idx: Vec<usize> = if pot > 0.0 && pot.is_finite() {
            (0..n_trials)
                .map(|_| {
                    let r = rng.next_unit() * pot;
                    search_potential(r, &csum, data, w, &closest, pending.as_deref(), lay)
                })
                .collect()
        } else {
            // All rows coincide with chosen centers up to underflow: take the
            // first row that is not already a center.
            vec![first_new_row(data, d, &centers, exec.pool)]
        };
        let t = cand_idx.len();
        let mut cand = Vec::with_capacity(t * d);
        for &i in &cand_idx {
            cand.extend_from_slice(row(i));
        }
        // Candidates plus (last) the pending center, evaluated together.
        let has_p = pending.is_some();
        let mut block = cand.clone();
        if let Some(p) = &pending {
            block.extend_from_slice(p);
        }
        let packed = Packed::new(&block, t + has_p as usize, d);
        let mut parts_all: Vec<Vec<f64>> = Vec::with_capacity(lay.n_chunks);
        exec.batched(lay, "pp-step", |pool, r| {
            let base = lay.rows(r.clone()).start;
            let vals = &data[lay.values(r.clone())];
            let cl = &mut closest[lay.rows(r)];
            let packed = &packed;
            let parts: Vec<Vec<f64>> = pool.install(|| {
                vals.par_chunks(rpc * d)
                    .zip(cl.par_chunks_mut(rpc))
                    .enumerate()
                    .map(|(i, (x, cl))| {
                        let cw = if w.is_empty() {
                            &[][..]
                        } else {
                            &w[base + i * rpc..base + i * rpc + cl.len()]
                        };
                        let mut part = vec![0.0; t];
                        let mut b0 = vec![0.0; packed.buf_len()];
                        let mut b1 = vec![0.0; packed.buf_len()];
                        let mut visit = |j: usize, buf: &[f64], c: &mut f64| {
                            if has_p && buf[t] < *c {
                                *c = buf[t];
                            }
                            let wi = wt(cw, j);
                            for (a, &b) in part.iter_mut().zip(&buf[..t]) {
                                *a += wi * if b < *c { b } else { *c };
                            }
                        };
                        let m = cl.len();
                        let mut j = 0;
                        while j + 1 < m {
                            packed.all_dists2(
                                &x[j * d..(j + 1) * d],
                                &x[(j + 1) * d..(j + 2) * d],
                                &mut b0,
                                &mut b1,
                            );
                            visit(j, &b0, &mut cl[j]);
                            visit(j + 1, &b1, &mut cl[j + 1]);
                            j += 2;
                        }
                        if j < m {
                            packed.all_dists(&x[j * d..(j + 1) * d], &mut b0);
                            visit(j, &b0, &mut cl[j]);
                        }
                        part
                    })
                    .collect()
            });
            parts_all.extend(parts);
        });
        let mut cand_pot = vec![0.0; t];
        for p in &parts_all {
            for (a, b) in cand_pot.iter_mut().zip(p) {
                *a += b;
            }
        }
        let (best, _) = argmin(&cand_pot);
        for (cs, p) in csum.iter_mut().zip(&parts_all) {
            *cs = p[best];
        }
        let chosen = cand[best * d..(best + 1) * d].to_vec();
        centers.extend_from_slice(&chosen);
        pending = Some(chosen);
    }
    centers
}

/// `searchsorted(cumsum(w * closest), r, side='left')` over canonical order,
/// with `closest` lazily updated by `pending`, using per-chunk sums `csum`.
fn search_potential(
    r: f64,
    csum: &[f64],
    data: &[f64],
    w: &[f64],
    closest: &[f64],
    pending: Option<&[f64]>,
    lay: &Layout,
) -> usize {
    let d = lay.d;
    let mut acc = 0.0;
    let mut target: Option<(usize, f64)> = None;
    let mut last_pos: Option<usize> = None;
    for (c, &s) in csum.iter().enumerate() {
        if s > 0.0 {
            last_pos = Some(c);
        }
        let next = acc + s;
        if next >= r && s > 0.0 {
            target = Some((c, r - acc));
            break;
        }
        acc = next;
    }
    let (c, t) = match target {
        Some(x) => x,
        None => (last_pos.unwrap_or(0), f64::INFINITY),
    };
    let rows = lay.rows(c..c + 1);
    let mut s = 0.0;
    let mut last = rows.start;
    for i in rows {
        let mut v = closest[i];
        if let Some(p) = pending {
            let dp = sq_dist(&data[i * d..(i + 1) * d], p);
            if dp < v {
                v = dp;
            }
        }
        let v = if w.is_empty() { v } else { w[i] * v };
        s += v;
        if v > 0.0 {
            last = i;
            if s >= t {
                return i;
            }
        }
    }
    last
}

/// `k` rows at distinct positions drawn uniformly (Floyd's algorithm).
pub(crate) fn random_init(
    data: &[f64],
    n: usize,
    d: usize,
    k: usize,
    rng: &mut SplitMix64,
) -> Vec<f64> {
    let mut set = HashSet::with_capacity(k);
    let mut centers = Vec::with_capacity(k * d);
    for j in (n - k)..n {
        let t = rng.below(j as u64 + 1) as usize;
        let pick = if set.contains(&t) { j } else { t };
        set.insert(pick);
        centers.extend_from_slice(&data[pick * d..(pick + 1) * d]);
    }
    centers
}

/// Per-row state of one chunk: labels and, for Hamerly, the upper bound on
/// the distance to the assigned centroid and the lower bound on the distance
/// to every other centroid (empty slices for Lloyd).
struct ChunkState<'s> {
    labels: &'s mut [u32],
    upper: &'s mut [f64],
    lower: &'s mut [f64],
}

/// Split the row states of a batch into per-chunk states.
fn split_states<'s>(
    labels: &'s mut [u32],
    upper: &'s mut [f64],
    lower: &'s mut [f64],
    rpc: usize,
) -> Vec<ChunkState<'s>> {
    let bounded = !upper.is_empty();
    let mut uc = upper.chunks_mut(rpc);
    let mut lc = lower.chunks_mut(rpc);
    labels
        .chunks_mut(rpc)
        .map(|l| {
            let (u, lo) = if bounded {
                (uc.next().unwrap_or_default(), lc.next().unwrap_or_default())
            } else {
                (<&mut [f64]>::default(), <&mut [f64]>::default())
            };
            ChunkState {
                labels: l,
                upper: u,
                lower: lo,
            }
        })
        .collect()
}

/// The bound arrays of a row range (empty when there are none).
fn bound_range(v: &mut [f64], rows: std::ops::Range<usize>) -> &mut [f64] {
    if v.is_empty() { v } else { &mut v[rows] }
}

/// Per-iteration inputs of the assignment kernel.
struct Ctx<'a> {
    k: usize,
    d: usize,
    centers: &'a [f64],
    packed: &'a Packed,
    /// Hamerly pruning data (valid bounds w.r.t. the previous centers).
    skip: Option<Bounds<'a>>,
    /// Whether full evaluations must (re)initialise the bounds.
    keep_bounds: bool,
    m: f64,
}

struct Bounds<'a> {
    shift_up: &'a [f64],
    max_other: &'a [f64],
    s_half: &'a [f64],
}

impl Ctx<'_> {
    /// Hamerly test: keep the current label `a` if the (updated) bounds
    /// prove it is still the nearest centroid. Updates the bounds; `false`
    /// when a full evaluation is needed. For many clusters the upper bound is
    /// first tightened to the exact distance (one distance instead of `k`).
    #[inline(always)]
    fn try_skip(&self, b: &Bounds, x: &[f64], a: usize, upper: &mut f64, lower: &mut f64) -> bool {
        let m = self.m;
        let u = (*upper + b.shift_up[a]) * (1.0 + m);
        let l = ((*lower - b.max_other[a]) * (1.0 - m)).max(0.0);
        let z = l.max(b.s_half[a]) * (1.0 - m);
        *lower = l;
        *upper = u;
        if u * (1.0 + m) < z {
            return true;
        }
        if self.k <= 2 * LANES {
            return false;
        }
        let d = self.d;
        let u2 = sq_dist(x, &self.centers[a * d..(a + 1) * d]).sqrt() * (1.0 + m);
        *upper = u2;
        u2 * (1.0 + m) < z
    }

    /// Set row `i`'s label (and squared distances to the nearest and second
    /// nearest centroid, for the bounds) from its distance vector; returns
    /// whether the label changed.
    #[inline(always)]
    fn finish(&self, cs: &mut ChunkState, i: usize, dist: &[f64]) -> bool {
        let old = cs.labels[i];
        let new = if self.keep_bounds {
            let (a, b1, b2) = argmin2(&dist[..self.k]);
            cs.upper[i] = b1;
            cs.lower[i] = b2;
            a as u32
        } else {
            argmin(&dist[..self.k]).0 as u32
        };
        cs.labels[i] = new;
        new != old
    }

    /// Assign every row of a chunk to its nearest centroid (first index on
    /// ties). Rows needing a full evaluation are evaluated two at a time.
    /// Returns the number of such rows; the rows whose label changed are
    /// appended to `changed` as (row, old label), in row order.
    fn assign_rows(&self, x: &[f64], cs: &mut ChunkState, changed: &mut Vec<(usize, u32)>) -> u64 {
        let d = self.d;
        let n = cs.labels.len();
        let bl = self.packed.buf_len();
        let mut b0 = vec![0.0; bl];
        let mut b1 = vec![0.0; bl];
        let mut todo: Vec<usize> = Vec::with_capacity(n);
        match &self.skip {
            None => todo.extend(0..n),
            Some(b) => {
                // Branch-free compaction of the rows needing a full evaluation.
                todo.resize(n, 0);
                let mut cnt = 0;
                for (i, xr) in x.chunks_exact(d).enumerate() {
                    todo[cnt] = i;
                    let a = cs.labels[i] as usize;
                    cnt += !self.try_skip(b, xr, a, &mut cs.upper[i], &mut cs.lower[i]) as usize;
                }
                todo.truncate(cnt);
            }
        }
        let mut pairs = todo.chunks_exact(2);
        for p in &mut pairs {
            let (i, j) = (p[0], p[1]);
            self.packed.all_dists2(
                &x[i * d..(i + 1) * d],
                &x[j * d..(j + 1) * d],
                &mut b0,
                &mut b1,
            );
            let (oi, oj) = (cs.labels[i], cs.labels[j]);
            if self.finish(cs, i, &b0) {
                changed.push((i, oi));
            }
            if self.finish(cs, j, &b1) {
                changed.push((j, oj));
            }
        }
        if let [i] = *pairs.remainder() {
            self.packed.all_dists(&x[i * d..(i + 1) * d], &mut b0);
            let oi = cs.labels[i];
            if self.finish(cs, i, &b0) {
                changed.push((i, oi));
            }
        }
        if self.keep_bounds {
            // Squared distances -> distance bounds (vectorised when all rows
            // were evaluated).
            let (up, lo) = (1.0 + self.m, 1.0 - self.m);
            if todo.len() == n {
                for v in cs.upper.iter_mut() {
                    *v = v.sqrt() * up;
                }
                for v in cs.lower.iter_mut() {
                    *v = v.sqrt() * lo;
                }
            } else {
                for &i in &todo {
                    cs.upper[i] = cs.upper[i].sqrt() * up;
                    cs.lower[i] = cs.lower[i].sqrt() * lo;
                }
            }
        }
        todo.len() as u64
    }
}

struct StepPart {
    /// Per-cluster coordinate sums (full mode) or their changes (delta mode).
    sums: Vec<f64>,
    wsum: Vec<f64>,
    counts: Vec<i64>,
    changed: u64,
    full: u64,
}

/// E-step of one chunk plus its contribution to the M-step: in full mode
/// (Lloyd) the sums of all rows by label; in delta mode (Hamerly, whose sums
/// persist across iterations) only the rows whose label changed, added to
/// their new cluster and removed from their old one. Accumulation is in row
/// order, so the result does not depend on the thread count.
fn chunk_step(ctx: &Ctx, x: &[f64], cs: &mut ChunkState, cw: &[f64], delta: bool) -> StepPart {
    let (k, d) = (ctx.k, ctx.d);
    let mut sums = vec![0.0; k * d];
    let mut wsum = vec![0.0; k];
    let mut counts = vec![0i64; k];
    let mut changed = Vec::new();
    let full = ctx.assign_rows(x, cs, &mut changed);
    let mut add = |i: usize, a: usize, sign: f64| {
        let xr = &x[i * d..(i + 1) * d];
        let dst = &mut sums[a * d..(a + 1) * d];
        if cw.is_empty() {
            if sign > 0.0 {
                for (o, v) in dst.iter_mut().zip(xr) {
                    *o += v;
                }
            } else {
                for (o, v) in dst.iter_mut().zip(xr) {
                    *o -= v;
                }
            }
            wsum[a] += sign;
        } else {
            let wi = cw[i] * sign;
            for (o, v) in dst.iter_mut().zip(xr) {
                *o += v * wi;
            }
            wsum[a] += wi;
        }
        counts[a] += sign as i64;
    };
    if delta {
        for &(i, old) in &changed {
            add(i, cs.labels[i] as usize, 1.0);
            if old != u32::MAX {
                add(i, old as usize, -1.0);
            }
        }
    } else {
        for (i, &a) in cs.labels.iter().enumerate() {
            add(i, a as usize, 1.0);
        }
    }
    StepPart {
        sums,
        wsum,
        counts,
        changed: changed.len() as u64,
        full,
    }
}

/// Result of one run.
#[derive(Debug, Clone)]
pub(crate) struct RunOutput {
    pub centers: Vec<f64>,
    pub inertia: f64,
    pub sizes: Vec<u64>,
    pub n_iter: usize,
    pub converged: bool,
}

/// Weighted chunk slice helper.
#[inline]
fn chunk_weights(w: &[f64], base: usize, rpc: usize, i: usize, len: usize) -> &[f64] {
    if w.is_empty() {
        &[]
    } else {
        &w[base + i * rpc..base + i * rpc + len]
    }
}

/// One K-means run from `centers` (scikit-learn's `_kmeans_single_lloyd`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_kmeans(
    data: &[f64],
    w: &[f64],
    lay: &Layout,
    mut centers: Vec<f64>,
    k: usize,
    max_iter: usize,
    tol_abs: f64,
    algorithm: Algorithm,
    exec: &mut Exec,
) -> RunOutput {
    let (n, d, rpc) = (lay.n, lay.d, lay.rows_per_chunk);
    let m = margin(d);
    let hamerly = algorithm == Algorithm::Hamerly && k > 1;
    let mut labels = vec![u32::MAX; n];
    let nb = if hamerly { n } else { 0 };
    let mut upper = vec![0.0f64; nb];
    let mut lower = vec![0.0f64; nb];
    let mut bounds_valid = false;
    let mut use_bounds = true;
    let mut since_probe = 0usize;
    let mut shift_up = vec![0.0; k];
    let mut max_other = vec![0.0; k];
    let mut s_half = vec![0.0; k];
    let mut strict = false;
    let mut converged = false;
    let mut n_iter = 0;
    // Per-cluster sums, weights and row counts; for Hamerly they persist
    // and are updated with the changes of each iteration.
    let mut sums = vec![0.0; k * d];
    let mut wsum = vec![0.0; k];
    let mut counts = vec![0i64; k];

    for it in 0..max_iter {
        exec.state.phase = "iteration";
        exec.state.iteration = it + 1;
        exec.state.center_shift = None;
        exec.state.inertia = None;
        exec.state.converged = false;
        let packed = Packed::new(&centers, k, d);
        let ctx = Ctx {
            k,
            d,
            centers: &centers,
            packed: &packed,
            skip: (hamerly && bounds_valid && use_bounds).then_some(Bounds {
                shift_up: &shift_up,
                max_other: &max_other,
                s_half: &s_half,
            }),
            keep_bounds: hamerly,
            m,
        };
        let used_bounds = ctx.skip.is_some();
        let kind = if used_bounds {
            "iter-bounded"
        } else {
            "iter-full"
        };
        if !hamerly {
            sums.iter_mut().for_each(|v| *v = 0.0);
            wsum.iter_mut().for_each(|v| *v = 0.0);
            counts.iter_mut().for_each(|v| *v = 0);
        }
        let mut changed = 0u64;
        let mut full = 0u64;
        exec.batched(lay, kind, |pool, r| {
            let base = lay.rows(r.clone()).start;
            let vals = &data[lay.values(r.clone())];
            let rows = lay.rows(r);
            let states = split_states(
                &mut labels[rows.clone()],
                bound_range(&mut upper, rows.clone()),
                bound_range(&mut lower, rows),
                rpc,
            );
            let ctx = &ctx;
            let parts: Vec<StepPart> = pool.install(|| {
                vals.par_chunks(rpc * d)
                    .zip(states.into_par_iter())
                    .enumerate()
                    .map(|(i, (x, mut cs))| {
                        let cw = chunk_weights(w, base, rpc, i, cs.labels.len());
                        chunk_step(ctx, x, &mut cs, cw, hamerly)
                    })
                    .collect()
            });
            for p in parts {
                for (a, b) in sums.iter_mut().zip(&p.sums) {
                    *a += b;
                }
                for (a, b) in wsum.iter_mut().zip(&p.wsum) {
                    *a += b;
                }
                for (a, b) in counts.iter_mut().zip(&p.counts) {
                    *a += b;
                }
                changed += p.changed;
                full += p.full;
            }
        });
        // Adaptive Hamerly: testing the bounds costs about half a full
        // evaluation of every row, so when they pruned less than half of the
        // rows (early iterations, heavily overlapping clusters) the next
        // iterations evaluate every row (refreshing the bounds) without
        // testing them; the bounds are tried again every fourth iteration.
        // Either way every row gets its exact nearest centroid.
        if hamerly {
            if used_bounds {
                use_bounds = (full as f64) < 0.5 * n as f64;
                since_probe = 0;
            } else {
                since_probe += 1;
                use_bounds = since_probe >= 3;
            }
        }
        bounds_valid = hamerly;

        // A cluster without rows has exactly zero sums (no delta residue).
        for j in 0..k {
            if counts[j] == 0 {
                wsum[j] = 0.0;
                sums[j * d..(j + 1) * d].iter_mut().for_each(|v| *v = 0.0);
            }
        }
        let new_centers = if counts.contains(&0) {
            // Relocation only affects this iteration's centers, not the
            // persistent (label-consistent) sums.
            let (mut s2, mut w2, mut c2) = (sums.clone(), wsum.clone(), counts.clone());
            relocate_empty(
                data, w, lay, &centers, &labels, &mut s2, &mut w2, &mut c2, exec,
            );
            average_centers(&s2, &w2, &c2, k, d)
        } else {
            average_centers(&sums, &wsum, &counts, k, d)
        };
        let mut shift_tot = 0.0;
        let mut shifts = vec![0.0; k];
        for j in 0..k {
            let s = sq_dist(
                &new_centers[j * d..(j + 1) * d],
                &centers[j * d..(j + 1) * d],
            )
            .sqrt();
            shifts[j] = s;
            shift_tot += s * s;
        }
        if hamerly {
            for j in 0..k {
                shift_up[j] = shifts[j] * (1.0 + m);
            }
            let (top, top_v, second_v) = {
                let mut t = 0;
                let mut b1 = f64::NEG_INFINITY;
                let mut b2 = f64::NEG_INFINITY;
                for (j, &v) in shift_up.iter().enumerate() {
                    if v > b1 {
                        b2 = b1;
                        b1 = v;
                        t = j;
                    } else if v > b2 {
                        b2 = v;
                    }
                }
                (t, b1, b2.max(0.0))
            };
            for (j, mo) in max_other.iter_mut().enumerate() {
                *mo = if j == top { second_v } else { top_v };
            }
            half_min_center_dist(&new_centers, k, d, m, &mut s_half, exec);
        }
        centers = new_centers;
        n_iter = it + 1;
        exec.state.center_shift = Some(shift_tot);
        if changed == 0 {
            strict = true;
            converged = true;
        } else if shift_tot <= tol_abs {
            converged = true;
        }
        exec.state.converged = converged;
        exec.report();
        if converged {
            break;
        }
    }

    // Final E-step (unless strictly converged), sizes and inertia.
    exec.state.phase = "finalize";
    exec.state.center_shift = None;
    let packed = Packed::new(&centers, k, d);
    let ctx = Ctx {
        k,
        d,
        centers: &centers,
        packed: &packed,
        skip: (hamerly && bounds_valid).then_some(Bounds {
            shift_up: &shift_up,
            max_other: &max_other,
            s_half: &s_half,
        }),
        keep_bounds: hamerly,
        m,
    };
    let relabel = !strict;
    let mut sizes = vec![0u64; k];
    let mut inertia = 0.0;
    exec.batched(lay, "final", |pool, r| {
        let base = lay.rows(r.clone()).start;
        let vals = &data[lay.values(r.clone())];
        let rows = lay.rows(r);
        let states = split_states(
            &mut labels[rows.clone()],
            bound_range(&mut upper, rows.clone()),
            bound_range(&mut lower, rows),
            rpc,
        );
        let ctx = &ctx;
        let parts: Vec<(Vec<u64>, f64)> = pool.install(|| {
            vals.par_chunks(rpc * d)
                .zip(states.into_par_iter())
                .enumerate()
                .map(|(i, (x, mut cs))| {
                    let cw = chunk_weights(w, base, rpc, i, cs.labels.len());
                    let mut counts = vec![0u64; k];
                    let mut inert = 0.0;
                    if relabel {
                        ctx.assign_rows(x, &mut cs, &mut Vec::new());
                    }
                    for (j, (xr, &a)) in x.chunks_exact(d).zip(cs.labels.iter()).enumerate() {
                        let a = a as usize;
                        let dist = sq_dist(xr, &ctx.centers[a * d..(a + 1) * d]);
                        inert += if cw.is_empty() { dist } else { dist * cw[j] };
                        counts[a] += 1;
                    }
                    (counts, inert)
                })
                .collect()
        });
        for (c, i) in parts {
            for (a, b) in sizes.iter_mut().zip(&c) {
                *a += b;
            }
            inertia += i;
        }
    });
    exec.state.inertia = Some(inertia);
    exec.report();
    RunOutput {
        centers,
        inertia,
        sizes,
        n_iter,
        converged,
    }
}

/// `out[j] = 0.5 * min_{j' != j} ||c_j - c_j'||`, deflated by the margin
/// (`O(k² d)`, parallel, with progress reports for large `k`).
fn half_min_center_dist(c: &[f64], k: usize, d: usize, m: f64, out: &mut [f64], exec: &mut Exec) {
    let per = (CHUNK_VALUES / (k * d).max(1)).max(1);
    let n_items = k.div_ceil(per);
    exec.batched_n(n_items, per, k, "center-dist", &mut |pool, r| {
        let lo = r.start * per;
        let hi = (r.end * per).min(k);
        pool.install(|| {
            out[lo..hi].par_iter_mut().enumerate().for_each(|(i, o)| {
                let a = lo + i;
                let ca = &c[a * d..(a + 1) * d];
                let mut best = f64::INFINITY;
                for (b, cb) in c.chunks_exact(d).enumerate() {
                    if b != a {
                        let v = sq_dist(ca, cb);
                        if v < best {
                            best = v;
                        }
                    }
                }
                *o = 0.5 * best.sqrt() * (1.0 - m);
            })
        });
    });
}

/// scikit-learn's `_average_centers`: `sums / weight` (as multiplication by
/// the reciprocal); a cluster without rows takes the centroid of the
/// heaviest cluster (first one on ties).
pub(crate) fn average_centers(
    sums: &[f64],
    wsum: &[f64],
    counts: &[i64],
    k: usize,
    d: usize,
) -> Vec<f64> {
    let mut c = sums.to_vec();
    let mut argmax = 0;
    for j in 1..k {
        if wsum[j] > wsum[argmax] {
            argmax = j;
        }
    }
    for j in 0..k {
        if counts[j] > 0 {
            let alpha = 1.0 / wsum[j];
            for v in &mut c[j * d..(j + 1) * d] {
                *v *= alpha;
            }
        }
    }
    if counts[argmax] > 0 {
        let src = c[argmax * d..(argmax + 1) * d].to_vec();
        for j in 0..k {
            if counts[j] <= 0 {
                c[j * d..(j + 1) * d].copy_from_slice(&src);
            }
        }
    }
    c
}

/// scikit-learn's `_relocate_empty_clusters_dense`: the empty clusters (in
/// increasing index order) receive the rows farthest from their assigned
/// (old) centroid, in decreasing distance order (ties: canonical row order);
/// each such row is removed from its old cluster's sum. Nothing happens when
/// every row coincides with its centroid.
#[allow(clippy::too_many_arguments)]
fn relocate_empty(
    data: &[f64],
    w: &[f64],
    lay: &Layout,
    old: &[f64],
    labels: &[u32],
    sums: &mut [f64],
    wsum: &mut [f64],
    counts: &mut [i64],
    exec: &mut Exec,
) {
    let d = lay.d;
    let rpc = lay.rows_per_chunk;
    let empty: Vec<usize> = (0..counts.len()).filter(|&j| counts[j] == 0).collect();
    let ne = empty.len();
    // Top `ne` rows by (distance desc, index asc).
    let better = |a: &(f64, usize), b: &(f64, usize)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
    let mut top: Vec<(f64, usize)> = Vec::new();
    exec.batched(lay, "relocate", |pool, r| {
        let base = lay.rows(r.clone()).start;
        let vals = &data[lay.values(r)];
        let parts: Vec<Vec<(f64, usize)>> = pool.install(|| {
            vals.par_chunks(rpc * d)
                .enumerate()
                .map(|(i, x)| {
                    let mut t: Vec<(f64, usize)> = Vec::with_capacity(ne + 1);
                    for (j, xr) in x.chunks_exact(d).enumerate() {
                        let idx = base + i * rpc + j;
                        let a = labels[idx] as usize;
                        let e = (sq_dist(xr, &old[a * d..(a + 1) * d]), idx);
                        if t.len() < ne || better(&e, t.last().unwrap()) {
                            let p = t.iter().position(|q| better(&e, q)).unwrap_or(t.len());
                            t.insert(p, e);
                            t.truncate(ne);
                        }
                    }
                    t
                })
                .collect()
        });
        for p in parts {
            top.extend(p);
        }
        top.sort_by(|a, b| {
            if better(a, b) {
                Ordering::Less
            } else if better(b, a) {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        });
        top.truncate(ne);
    });
    if top.is_empty() || top[0].0 == 0.0 {
        return;
    }
    for (&new_id, &(_, far)) in empty.iter().zip(&top) {
        let wi = if w.is_empty() { 1.0 } else { w[far] };
        let old_id = labels[far] as usize;
        let x = &data[far * d..(far + 1) * d];
        for t in 0..d {
            sums[old_id * d + t] -= x[t] * wi;
            sums[new_id * d + t] = x[t] * wi;
        }
        wsum[new_id] = wi;
        wsum[old_id] -= wi;
        counts[new_id] = 1;
        counts[old_id] -= 1;
    }
}

/// Fit K-means to `n` rows of `d` features (`data`: `n * d` values,
/// row-major; consumed to avoid a copy).
///
/// Semantics are scikit-learn's `KMeans(n_clusters=k, init, n_init,
/// max_iter, tol, algorithm="lloyd")`:
///
/// 1. **Canonicalisation.** Values are checked (finite, magnitude below
///    `1e140/sqrt(d)`), `-0.0` becomes `+0.0`, and rows are sorted by a
///    content hash, then content. Everything after this works on the
///    canonical order with fixed-size chunks reduced in a fixed order, so
///    the model is **bit-identical for any row order and any pool size**.
/// 2. **Checks.** At least `k` distinct rows are required.
/// 3. **Tolerance.** `tol_abs = tol * mean(per-feature population variance)`.
/// 4. **Runs.** For each of `n_init` runs (1 with [`Init::Explicit`]), with
///    a seed derived from `params.seed` and the run number: initial centers
///    ([`Init`]), then iterations of: assign every row to its nearest
///    centroid (first on ties); new centroid = mean of its rows; empty
///    clusters are relocated to the rows farthest from their centroid (see
///    below); `center_shift_tot` = sum over clusters of the squared centroid
///    shift. Stop when no label changed (strict convergence) or
///    `center_shift_tot <= tol_abs`; otherwise after `max_iter` iterations.
///    Unless strictly converged, a final assignment makes labels match the
///    final centroids. `inertia` = sum of squared distances of rows to their
///    centroid; `iterations` counts the iterations run (as sklearn's
///    `n_iter_`). The run with the lowest inertia is kept (earliest on ties).
/// 5. **Relabelling.** Clusters are renumbered by decreasing size (see
///    [`crate::relabel_by_size`]), so cluster ids differ from sklearn's
///    (which keep the order of the initial centers).
///
/// **Empty clusters** (scikit-learn's rule): when an iteration leaves
/// clusters without rows, the empty clusters, in increasing id order, are
/// moved onto the rows with the largest distance to their current centroid
/// (in decreasing distance order, ties by canonical order), each such row
/// being removed from the mean of its old cluster (for that iteration's
/// centroids only; labels are not changed). If a cluster still has no rows
/// it takes the centroid of the largest cluster.
///
/// **Differences from scikit-learn.** Random draws come from this crate's
/// own generator ([`crate::SplitMix64`] over the canonical order), so
/// k-means++/random initialisations match sklearn's only in distribution.
/// Distances are computed directly as `Σ (x - c)²` (sklearn uses
/// `‖x‖² - 2x·c + ‖c‖²` on centred data), which can only matter for rows
/// equidistant from two centroids up to rounding.
///
/// **Memory.** The data are sorted in place; the extra memory is about
/// 40 bytes per row (sort keys, labels, Hamerly bounds, k-means++ distances).
///
/// `progress` is called on the calling thread regularly (see [`Progress`]);
/// it may panic to abort. Heavy work runs on `pool` only.
///
/// # Errors
/// * [`KMeansError::InvalidParameter`] / [`KMeansError::LimitExceeded`]: see
///   [`Params::validate_for_dims`]; also `d = 0`.
/// * [`KMeansError::InvalidShape`]: `data.len()` not a multiple of `d`, or
///   explicit centroids not `k * d` values.
/// * [`KMeansError::EmptyInput`]: no rows.
/// * [`KMeansError::NonFinite`] / [`KMeansError::ValueTooLarge`]: bad value
///   (the row index refers to the input order).
/// * [`KMeansError::TooFewDistinctPoints`]: fewer than `k` distinct rows.
pub fn fit(
    data: Vec<f64>,
    d: usize,
    params: &Params,
    pool: &ThreadPool,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Model> {
    params.validate_for_dims(d)?;
    if !data.len().is_multiple_of(d) {
        return Err(KMeansError::InvalidShape(format!(
            "data has {} values, which is not a multiple of d={d}",
            data.len()
        )));
    }
    let n = data.len() / d;
    if n == 0 {
        return Err(KMeansError::EmptyInput);
    }
    let k = params.k;
    let limit = value_limit(d);
    if let Init::Explicit(c) = &params.init
        && let Some(i) = c.iter().position(|v| v.abs() > limit)
    {
        return Err(KMeansError::InvalidParameter(format!(
            "explicit init centroid {} column {}: value {:e} exceeds the limit {limit:e}",
            i / d,
            i % d,
            c[i]
        )));
    }
    let runs = if matches!(params.init, Init::Explicit(_)) {
        1
    } else {
        params.n_init
    };
    let mut exec = Exec::new(pool, progress);
    exec.state.n_runs = runs;
    exec.state.max_iter = params.max_iter;
    let (data, _, stats) = canonicalize(data, d, &mut exec)?;
    let lay = Layout::new(n, d);
    if stats.distinct < k {
        return Err(KMeansError::TooFewDistinctPoints {
            k,
            distinct: stats.distinct,
        });
    }
    let tol_abs = if params.tol == 0.0 {
        0.0
    } else {
        params.tol * stats.mean_variance()
    };

    let mut best: Option<RunOutput> = None;
    for run in 0..runs {
        exec.state.run = run;
        exec.state.phase = "seeding";
        exec.state.iteration = 0;
        exec.state.inertia = None;
        exec.state.center_shift = None;
        exec.report();
        let mut rng = SplitMix64::new(run_seed(params.seed, run));
        let init = match &params.init {
            Init::KMeansPlusPlus => kmeans_plus_plus(&data, &[], &lay, k, &mut rng, &mut exec),
            Init::Random => random_init(&data, n, d, k, &mut rng),
            Init::Explicit(c) => c.clone(),
        };
        let out = run_kmeans(
            &data,
            &[],
            &lay,
            init,
            k,
            params.max_iter,
            tol_abs,
            params.algorithm,
            &mut exec,
        );
        if best.as_ref().is_none_or(|b| out.inertia < b.inertia) {
            best = Some(out);
        }
    }
    let b = best.expect("at least one run");
    let mut model = Model {
        k,
        dims: d,
        n_rows: n as u64,
        centroids: b.centers,
        sizes: b.sizes,
        inertia: b.inertia,
        iterations: b.n_iter,
        converged: b.converged,
        seed: params.seed,
        algorithm: params.algorithm.name().to_string(),
        init: params.init.name().to_string(),
    };
    model.relabel_by_size();
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    }

    fn random_rows(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut r = SplitMix64::new(seed);
        (0..n * d).map(|_| (r.below(7) as f64) - 3.0).collect()
    }

    #[test]
    fn canonicalize_sorts_counts_and_is_order_independent() {
        let (n, d) = (5000, 3);
        let mut data = random_rows(n, d, 1); // small integers: many duplicates
        data[5] = -0.0;
        let p = pool(2);
        let mut cb = |_: &Progress| {};
        let mut exec = Exec::new(&p, &mut cb);
        let (sorted, order, stats) = canonicalize(data.clone(), d, &mut exec).unwrap();
        // A permutation of the input rows, recorded by `order`.
        for (i, &o) in order.iter().enumerate() {
            let a = &sorted[i * d..(i + 1) * d];
            let b = &data[o * d..(o + 1) * d];
            assert!(a.iter().zip(b).all(|(x, y)| x == y));
        }
        let mut seen = order.clone();
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(sorted.iter().all(|v| v.to_bits() != (-0.0f64).to_bits()));
        // Sorted by (key, content).
        for i in 1..n {
            let (a, b) = (&sorted[(i - 1) * d..i * d], &sorted[i * d..(i + 1) * d]);
            let o = canon_key(a).cmp(&canon_key(b)).then_with(|| cmp_rows(a, b));
            assert_ne!(o, Ordering::Greater);
        }
        // Statistics.
        let mut rows: Vec<Vec<u64>> = data
            .chunks(d)
            .map(|r| r.iter().map(|v| (v + 0.0).to_bits()).collect())
            .collect();
        rows.sort();
        rows.dedup();
        assert_eq!(stats.distinct, rows.len());
        assert_eq!(stats.n, n);
        let mut mv = 0.0;
        for t in 0..d {
            let mean = data.chunks(d).map(|r| r[t]).sum::<f64>() / n as f64;
            mv += data.chunks(d).map(|r| (r[t] - mean).powi(2)).sum::<f64>() / n as f64;
        }
        assert!((stats.mean_variance() - mv / d as f64).abs() < 1e-12);
        // Any input order and pool size gives the same canonical data.
        let rev: Vec<f64> = data.chunks(d).rev().flatten().copied().collect();
        let p3 = pool(3);
        let mut cb3 = |_: &Progress| {};
        let mut exec3 = Exec::new(&p3, &mut cb3);
        let (sorted2, _, stats2) = canonicalize(rev, d, &mut exec3).unwrap();
        assert_eq!(sorted, sorted2);
        assert_eq!(stats.distinct, stats2.distinct);
        assert_eq!(
            stats.mean_variance().to_bits(),
            stats2.mean_variance().to_bits()
        );
    }

    #[test]
    fn kmeans_plus_plus_spreads_over_separated_groups() {
        let d = 2;
        let mut data = Vec::new();
        for g in 0..4 {
            for i in 0..50 {
                data.extend_from_slice(&[
                    g as f64 * 1000.0 + (i % 5) as f64 * 0.01,
                    (i / 5) as f64 * 0.01,
                ]);
            }
        }
        let p = pool(2);
        let lay = Layout::new(200, d);
        for seed in 0..20 {
            let mut cb = |_: &Progress| {};
            let mut exec = Exec::new(&p, &mut cb);
            let mut rng = SplitMix64::new(seed);
            let c = kmeans_plus_plus(&data, &[], &lay, 4, &mut rng, &mut exec);
            let mut groups: Vec<i64> = c
                .chunks(d)
                .map(|r| (r[0] / 1000.0).round() as i64)
                .collect();
            groups.sort();
            assert_eq!(groups, vec![0, 1, 2, 3], "seed {seed}");
            // Weighted: a zero-weight group is never chosen.
            let w: Vec<f64> = (0..200).map(|i| if i < 50 { 0.0 } else { 1.0 }).collect();
            let c = kmeans_plus_plus(&data, &w, &lay, 3, &mut rng, &mut exec);
            assert!(c.chunks(d).all(|r| r[0] > 500.0), "seed {seed}");
        }
    }

    #[test]
    fn random_init_picks_distinct_positions() {
        let data: Vec<f64> = (0..10).map(|i| i as f64).collect();
        for seed in 0..50 {
            let mut rng = SplitMix64::new(seed);
            let mut c = random_init(&data, 10, 1, 10, &mut rng);
            c.sort_by(f64::total_cmp);
            assert_eq!(c, data);
        }
    }

    #[test]
    fn average_centers_fills_empty_clusters_from_the_largest() {
        let sums = [2.0, 4.0, 0.0, 0.0, 9.0, 3.0];
        let c = average_centers(&sums, &[2.0, 0.0, 3.0], &[2, 0, 3], 3, 2);
        assert_eq!(c, vec![1.0, 2.0, 3.0, 1.0, 3.0, 1.0]);
    }

    #[test]
    fn canon_key_ignores_zero_sign() {
        assert_eq!(
            canon_key(&[0.0, 1.0, 2.0, 3.0, 4.0]),
            canon_key(&[-0.0, 1.0, 2.0, 3.0, 4.0])
        );
        assert_ne!(canon_key(&[1.0, 2.0]), canon_key(&[2.0, 1.0]));
        assert_ne!(canon_key(&[1.0]), canon_key(&[1.0, 0.0]));
    }
}
