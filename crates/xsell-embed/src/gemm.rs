//! Matrix product for few rows (a short text embedded on its own):
//! `out[i, j] += sum_p x[i, p] * w[j, p]` with `w` the `[n, k]` weight matrix.
//!
//! OpenBLAS packs the whole weight matrix into a buffer on every call, which
//! dominates when only a handful of token rows are multiplied. xsell-blas's
//! small-row kernels ([`xsell_blas::sgemm_nt_small`]: AVX-512, AVX2 or scalar,
//! chosen at run time) read the weights in place, once; this module splits the
//! output columns over the compute pool.

use crate::EmbedError;
use rayon::ThreadPool;
use rayon::prelude::*;
use xsell_blas::SendPtr;

/// Products with at most this many rows use the small-row kernel.
pub(crate) const SMALL_M_MAX: usize = 48;

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
pub(crate) fn xwt_add<W: xsell_blas::Weight>(
    pool: Option<&ThreadPool>,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
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
    let dst = SendPtr(out.as_mut_ptr());
    // SAFETY: the shapes were checked above; each call covers the columns j0..j0+nj of
    // the m output rows, and parallel tasks get disjoint column ranges.
    let run = |j0: usize, nj: usize| unsafe {
        xsell_blas::sgemm_nt_small_unchecked(
            m,
            nj,
            k,
            x.as_ptr(),
            w.as_ptr().add(j0 * k),
            dst.get().add(j0),
            ldo,
            true,
        )
    };
    match pool {
        Some(p) if p.current_num_threads() > 1 && n >= 2 * COLS_PER_TASK => {
            p.install(|| {
                (0..n.div_ceil(COLS_PER_TASK))
                    .into_par_iter()
                    .for_each(|t| {
                        let j0 = t * COLS_PER_TASK;
                        run(j0, COLS_PER_TASK.min(n - j0));
                    })
            });
        }
        _ => run(0, n),
    }
    Ok(())
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
