//! Matrix product for few rows (a short text embedded on its own):
//! `out[i, j] += sum_p x[i, p] * w[j, p]` with `w` the `[n, k]` weight matrix.
//!
//! OpenBLAS packs the whole weight matrix into a buffer on every call, which
//! dominates when only a handful of token rows are multiplied. This kernel reads
//! the weights in place, once, keeping 3 x 4 dot products in AVX registers. It is
//! compiled only for targets with AVX2 and FMA (e.g. `-C target-cpu=native` on a
//! current x86-64); elsewhere [`AVAILABLE`] is false and callers use `sgemm`.

use crate::EmbedError;
use rayon::ThreadPool;
use rayon::prelude::*;

/// Products with at most this many rows use this kernel (when [`AVAILABLE`]).
pub(crate) const SMALL_M_MAX: usize = 48;

/// Whether the AVX2/FMA kernel is compiled in.
pub(crate) const AVAILABLE: bool = cfg!(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
));

/// Output columns per parallel task (a multiple of the 4-column block).
const COLS_PER_TASK: usize = 64;

fn shape_err(what: &str) -> EmbedError {
    EmbedError::InvalidParameter {
        message: format!("small gemm: {what}"),
    }
}

/// `out[i * ldo + j] += x[i, :] . w[j, :]` for `i < m`, `j < n` (`x` is `[m, k]`,
/// `w` is `[n, k]`, both row-major and dense). With a pool, output columns are
/// split across its threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn xwt_add(
    pool: Option<&ThreadPool>,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
    ldo: usize,
) -> Result<(), EmbedError> {
    if ldo < n {
        return Err(shape_err("ldo < n"));
    }
    if x.len() < m * k || w.len() < n * k {
        return Err(shape_err("input slice too short"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if out.len() < (m - 1) * ldo + n {
        return Err(shape_err("output slice too short"));
    }
    match pool {
        Some(p) if p.current_num_threads() > 1 && n >= 2 * COLS_PER_TASK => {
            let tasks = n.div_ceil(COLS_PER_TASK);
            let parts: Vec<(usize, Vec<f32>)> = p.install(|| {
                (0..tasks)
                    .into_par_iter()
                    .map(|t| {
                        let j0 = t * COLS_PER_TASK;
                        let nj = COLS_PER_TASK.min(n - j0);
                        let mut part = vec![0.0f32; m * nj];
                        kernel(x, m, k, &w[j0 * k..(j0 + nj) * k], nj, &mut part, nj);
                        (j0, part)
                    })
                    .collect()
            });
            for (j0, part) in parts {
                let nj = part.len() / m;
                for i in 0..m {
                    let o = &mut out[i * ldo + j0..i * ldo + j0 + nj];
                    for (a, b) in o.iter_mut().zip(&part[i * nj..(i + 1) * nj]) {
                        *a += b;
                    }
                }
            }
        }
        _ => kernel(x, m, k, w, n, out, ldo),
    }
    Ok(())
}

/// Dispatches to the vector kernel or the scalar fallback; shapes are checked by the caller.
fn kernel(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32], ldo: usize) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the caller checked x.len() >= m*k, w.len() >= n*k and
        // out.len() >= (m-1)*ldo + n; the kernel touches only those elements.
        unsafe { avx::xwt_add(x.as_ptr(), m, k, w.as_ptr(), n, out.as_mut_ptr(), ldo) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        for i in 0..m {
            for j in 0..n {
                out[i * ldo + j] +=
                    crate::math::dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            }
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx {
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[inline(always)]
    fn hsum(v: __m256) -> f32 {
        // SAFETY: register-only intrinsics; the module is compiled only with AVX2.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// One block of `MI` rows of x times `NJ` rows of w.
    ///
    /// # Safety
    /// `x` must hold `MI` rows of `k` floats, `w` `NJ` rows of `k` floats, and
    /// `out` must be writable at `i * ldo + j` for `i < MI`, `j < NJ`.
    ///
    /// When `prefetch` is non-null, the `NJ * k` floats from it (the next weight
    /// block) are prefetched into the cache while this block is computed.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    unsafe fn block<const MI: usize, const NJ: usize>(
        x: *const f32,
        k: usize,
        w: *const f32,
        out: *mut f32,
        ldo: usize,
        prefetch: *const f32,
    ) {
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); NJ]; MI];
            let mut p = 0;
            while p + 8 <= k {
                if !prefetch.is_null() && p % 16 == 0 {
                    for j in 0..NJ {
                        // A hint only: prefetching never faults, even past the end.
                        _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(j * k + p).cast::<i8>());
                    }
                }
                let mut xv = [_mm256_setzero_ps(); MI];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.add(i * k + p));
                }
                for j in 0..NJ {
                    let wv = _mm256_loadu_ps(w.add(j * k + p));
                    for i in 0..MI {
                        acc[i][j] = _mm256_fmadd_ps(xv[i], wv, acc[i][j]);
                    }
                }
                p += 8;
            }
            for i in 0..MI {
                for j in 0..NJ {
                    let mut s = hsum(acc[i][j]);
                    for q in p..k {
                        s += *x.add(i * k + q) * *w.add(j * k + q);
                    }
                    *out.add(i * ldo + j) += s;
                }
            }
        }
    }

    /// Row blocks of 3 (then 2 or 1) of `x` against column blocks of 4 of `w`;
    /// the outer loop runs over `w` so that each weight row is read from memory once.
    ///
    /// # Safety
    /// `x`: `m * k` floats, `w`: `n * k` floats, `out`: `(m - 1) * ldo + n` floats.
    pub(super) unsafe fn xwt_add(
        x: *const f32,
        m: usize,
        k: usize,
        w: *const f32,
        n: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        unsafe {
            let mut j = 0;
            while j < n {
                let nj = (n - j).min(4);
                let wj = w.add(j * k);
                // Prefetch the next 4 weight rows during the first row block.
                let next = if j + 4 < n {
                    w.wrapping_add((j + 4) * k)
                } else {
                    std::ptr::null()
                };
                let mut i = 0;
                while i < m {
                    let mi = (m - i).min(3);
                    let xi = x.add(i * k);
                    let o = out.add(i * ldo + j);
                    let pf = if i == 0 { next } else { std::ptr::null() };
                    match (mi, nj) {
                        (3, 4) => block::<3, 4>(xi, k, wj, o, ldo, pf),
                        (3, 3) => block::<3, 3>(xi, k, wj, o, ldo, pf),
                        (3, 2) => block::<3, 2>(xi, k, wj, o, ldo, pf),
                        (3, _) => block::<3, 1>(xi, k, wj, o, ldo, pf),
                        (2, 4) => block::<2, 4>(xi, k, wj, o, ldo, pf),
                        (2, 3) => block::<2, 3>(xi, k, wj, o, ldo, pf),
                        (2, 2) => block::<2, 2>(xi, k, wj, o, ldo, pf),
                        (2, _) => block::<2, 1>(xi, k, wj, o, ldo, pf),
                        (_, 4) => block::<1, 4>(xi, k, wj, o, ldo, pf),
                        (_, 3) => block::<1, 3>(xi, k, wj, o, ldo, pf),
                        (_, 2) => block::<1, 2>(xi, k, wj, o, ldo, pf),
                        _ => block::<1, 1>(xi, k, wj, o, ldo, pf),
                    }
                    i += mi;
                }
                j += nj;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn check(m: usize, n: usize, k: usize, ldo: usize, pool: Option<&ThreadPool>) {
        let x = fill(m * k, 1);
        let w = fill(n * k, 2);
        let base = fill(m * ldo, 3);
        let mut out = base.clone();
        xwt_add(pool, &x, m, k, &w, n, &mut out, ldo).unwrap();
        for i in 0..m {
            for j in 0..ldo {
                let want = if j < n {
                    base[i * ldo + j]
                        + (0..k)
                            .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                            .sum::<f64>() as f32
                } else {
                    base[i * ldo + j]
                };
                let got = out[i * ldo + j];
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + k as f32).sqrt(),
                    "m{m} n{n} k{k} ({i},{j}): {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn matches_naive_on_all_block_shapes() {
        for m in 1..=7 {
            for n in 1..=9 {
                for k in [1, 7, 8, 17, 64] {
                    check(m, n, k, n + (m % 2), None);
                }
            }
        }
        check(13, 384, 384, 384, None);
        check(13, 384, 1536, 400, None);
    }

    #[test]
    fn pooled_split_matches() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        check(13, 1536, 384, 1536, Some(&pool));
        check(5, 200, 33, 210, Some(&pool));
        check(1, 129, 8, 129, Some(&pool));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut out = vec![0.0; 4];
        assert!(xwt_add(None, &[1.0; 4], 2, 2, &[1.0; 4], 2, &mut out, 1).is_err());
        assert!(xwt_add(None, &[1.0; 3], 2, 2, &[1.0; 4], 2, &mut out, 2).is_err());
        assert!(xwt_add(None, &[1.0; 4], 2, 2, &[1.0; 3], 2, &mut out, 2).is_err());
        assert!(xwt_add(None, &[1.0; 4], 2, 2, &[1.0; 4], 2, &mut out[..3], 2).is_err());
        xwt_add(None, &[1.0; 4], 2, 2, &[1.0; 4], 2, &mut out, 2).unwrap();
        assert_eq!(out, vec![2.0; 4]);
    }

    /// Kernel vs OpenBLAS for few rows (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn bench_small_m_vs_sgemm() {
        use std::time::Instant;
        xsell_blas::set_threads(1).unwrap();
        for (n, k) in [(384, 384), (1536, 384), (384, 1536)] {
            let copies = (48_000_000 / (n * k * 4)).max(1);
            let ws: Vec<Vec<f32>> = (0..copies).map(|i| fill(n * k, i as u64)).collect();
            for m in [1, 4, 8, 13, 16, 24, 32, 48, 64] {
                let x = fill(m * k, 9);
                let mut out = vec![0.0f32; m * n];
                let reps = (2e9 / (2.0 * (m * n * k) as f64)) as usize + copies;
                let t = Instant::now();
                for r in 0..reps {
                    xwt_add(None, &x, m, k, &ws[r % copies], n, &mut out, n).unwrap();
                }
                let a = t.elapsed().as_secs_f64();
                let t = Instant::now();
                for r in 0..reps {
                    xsell_blas::sgemm(
                        xsell_blas::Transpose::No,
                        xsell_blas::Transpose::Yes,
                        m,
                        n,
                        k,
                        1.0,
                        &x,
                        k,
                        &ws[r % copies],
                        k,
                        1.0,
                        &mut out,
                        n,
                    )
                    .unwrap();
                }
                let b = t.elapsed().as_secs_f64();
                let gf = 2.0 * (m * n * k * reps) as f64 / 1e9;
                println!(
                    "n={n:5} k={k:5} m={m:3}: kernel {:6.1} GFLOP/s, sgemm {:6.1} GFLOP/s",
                    gf / a,
                    gf / b
                );
            }
        }
    }
}
