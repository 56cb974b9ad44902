//! Matrix products with few activation rows: `dst = x · wᵀ` where `x` is `m x k` with
//! `m` small (the tokens of one short text) and `w` is an `n x k` weight matrix stored as
//! PyTorch's `Linear` stores it (output rows of `k` inputs, row-major).
//!
//! BLAS `sgemm` packs both operands into buffers on every call; with a dozen rows that
//! packing (a full extra pass over the weights) costs more than the product. These kernels
//! read each weight row in place, once, and keep a tile of dot products in registers:
//! 4 weight rows x 6 activation rows of 512-bit accumulators with AVX-512F (with software
//! prefetch of the weight block two blocks ahead, which the hardware prefetcher does not
//! anticipate), 4 x 3 of 256-bit ones with AVX2+FMA, and plain loops elsewhere. The choice
//! is made at run time from the CPU's features, so one build runs on any x86-64.

use crate::BlasError;

/// Which kernel [`sgemm_nt_small`] uses on this CPU: `"avx512"`, `"avx2"` or `"scalar"`.
pub fn small_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "scalar"
}

/// `dst[i·ld + j] = (accumulate ? dst[i·ld + j] : 0) + Σ_p x[i·k + p] · w[j·k + p]`
/// for `i < m`, `j < n`.
///
/// Single-threaded; callers split the `n` output columns (weight rows) across threads.
/// Shapes are checked: a slice too short for its matrix or `ld < n` is an error and
/// nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_nt_small(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[f32],
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
) -> Result<(), BlasError> {
    if ld < n.max(1) {
        return Err(BlasError::LeadingDimension {
            what: "ld",
            value: ld,
            min: n.max(1),
        });
    }
    let need = |what: &'static str, len: usize, needed: usize| {
        if len < needed {
            Err(BlasError::SliceTooShort { what, len, needed })
        } else {
            Ok(())
        }
    };
    need("x", x.len(), m * k)?;
    need("w", w.len(), n * k)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    need("dst", dst.len(), (m - 1) * ld + n)?;
    // SAFETY: every element the kernel touches was checked to lie in the slices above.
    unsafe {
        sgemm_nt_small_unchecked(
            m,
            n,
            k,
            x.as_ptr(),
            w.as_ptr(),
            dst.as_mut_ptr(),
            ld,
            accumulate,
        )
    };
    Ok(())
}

/// [`sgemm_nt_small`] on raw pointers, for callers that hand disjoint column ranges of one
/// output to several threads.
///
/// # Safety
/// `x` must be valid for `m·k` reads, `w` for `n·k` reads, and `dst + i·ld + j` for
/// reads and writes for every `i < m`, `j < n`, with no other thread writing those elements.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_nt_small_unchecked(
    m: usize,
    n: usize,
    k: usize,
    x: *const f32,
    w: *const f32,
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: CPU feature checked; pointers forwarded from the caller.
            unsafe { avx512::block(m, n, k, x, w, dst, ld, accumulate) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: CPU features checked; pointers forwarded from the caller.
            unsafe { avx2::block(m, n, k, x, w, dst, ld, accumulate) };
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { block_scalar(m, n, k, x, w, dst, ld, accumulate) }
}

/// Portable kernel (same contract as [`sgemm_nt_small_unchecked`]).
#[allow(clippy::too_many_arguments)]
unsafe fn block_scalar(
    m: usize,
    rows: usize,
    k: usize,
    x: *const f32,
    w: *const f32,
    dst: *mut f32,
    ld: usize,
    acc: bool,
) {
    for j in 0..rows {
        for i in 0..m {
            // SAFETY: in bounds per the function contract.
            unsafe {
                let xs = std::slice::from_raw_parts(x.add(i * k), k);
                let ws = std::slice::from_raw_parts(w.add(j * k), k);
                let mut s = 0f32;
                for (a, b) in xs.iter().zip(ws) {
                    s += a * b;
                }
                let d = dst.add(i * ld + j);
                *d = if acc { *d + s } else { s };
            }
        }
    }
}

/// The kernel with 256-bit vectors: tiles of 4 weight rows x 3 activation rows.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// R weight rows x C activation rows; 12 accumulators + 3 + 1 registers at most.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        dst: *mut f32,
        ld: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller guarantees C rows of x, R rows of w (k values each) and the
        // C x R destination elements are valid.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let kv = k & !7;
            let mut p = 0;
            while p < kv {
                let mut xv = [_mm256_setzero_ps(); C];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(x.add(i * k + p));
                }
                for (a, row) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(w.add(a * k + p));
                    for (i, ac) in row.iter_mut().enumerate() {
                        *ac = _mm256_fmadd_ps(wv, xv[i], *ac);
                    }
                }
                p += 8;
            }
            for (a, row) in acc.iter().enumerate() {
                for (i, ac) in row.iter().enumerate() {
                    let mut s = hsum(*ac);
                    for t in kv..k {
                        s += *x.add(i * k + t) * *w.add(a * k + t);
                    }
                    let d = dst.add(i * ld + a);
                    *d = if accumulate { *d + s } else { s };
                }
            }
        }
    }

    /// Safety: as `super::sgemm_nt_small_unchecked`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(
        m: usize,
        rows: usize,
        k: usize,
        x: *const f32,
        w: *const f32,
        dst: *mut f32,
        ld: usize,
        acc: bool,
    ) {
        let mut j = 0;
        while j < rows {
            let r = (rows - j).min(4);
            let mut i = 0;
            while i < m {
                let c = (m - i).min(3);
                // SAFETY: i + c <= m and j + r <= rows.
                unsafe {
                    let (xp, wp, dp) = (x.add(i * k), w.add(j * k), dst.add(i * ld + j));
                    match (r, c) {
                        (4, 3) => tile::<4, 3>(xp, wp, k, dp, ld, acc),
                        (4, 2) => tile::<4, 2>(xp, wp, k, dp, ld, acc),
                        (4, _) => tile::<4, 1>(xp, wp, k, dp, ld, acc),
                        (3, 3) => tile::<3, 3>(xp, wp, k, dp, ld, acc),
                        (3, 2) => tile::<3, 2>(xp, wp, k, dp, ld, acc),
                        (3, _) => tile::<3, 1>(xp, wp, k, dp, ld, acc),
                        (2, 3) => tile::<2, 3>(xp, wp, k, dp, ld, acc),
                        (2, 2) => tile::<2, 2>(xp, wp, k, dp, ld, acc),
                        (2, _) => tile::<2, 1>(xp, wp, k, dp, ld, acc),
                        (_, 3) => tile::<1, 3>(xp, wp, k, dp, ld, acc),
                        (_, 2) => tile::<1, 2>(xp, wp, k, dp, ld, acc),
                        (_, _) => tile::<1, 1>(xp, wp, k, dp, ld, acc),
                    }
                }
                i += c;
            }
            j += r;
        }
    }
}

/// The small-M kernel with 512-bit vectors: tiles of 4 weight rows x 6 activation rows
/// (24 accumulators of the 32 registers), masked loads for a ragged `k`.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        dst: *mut f32,
        ld: usize,
        accumulate: bool,
        prefetch: *const f32,
        pf_lines: usize,
        pf_per_step: usize,
    ) {
        // SAFETY: the caller guarantees C rows of x, R rows of w (k values each) and the
        // C x R destination elements are valid; `prefetch` is only a hint (never read).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            let kv = k & !15;
            let mut p = 0;
            let mut line = 0;
            while p < kv {
                for _ in 0..pf_per_step {
                    if line < pf_lines {
                        _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(line * 16) as *const i8);
                        line += 1;
                    }
                }
                let mut xv = [_mm512_setzero_ps(); C];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(x.add(i * k + p));
                }
                for (a, row) in acc.iter_mut().enumerate() {
                    let wv = _mm512_loadu_ps(w.add(a * k + p));
                    for (i, ac) in row.iter_mut().enumerate() {
                        *ac = _mm512_fmadd_ps(wv, xv[i], *ac);
                    }
                }
                p += 16;
            }
            if kv < k {
                let mask: __mmask16 = (1u32 << (k - kv)) as u16 - 1;
                let mut xv = [_mm512_setzero_ps(); C];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask, x.add(i * k + kv));
                }
                for (a, row) in acc.iter_mut().enumerate() {
                    let wv = _mm512_maskz_loadu_ps(mask, w.add(a * k + kv));
                    for (i, ac) in row.iter_mut().enumerate() {
                        *ac = _mm512_fmadd_ps(wv, xv[i], *ac);
                    }
                }
            }
            for (a, row) in acc.iter().enumerate() {
                for (i, ac) in row.iter().enumerate() {
                    let s = _mm512_reduce_add_ps(*ac);
                    let d = dst.add(i * ld + a);
                    *d = if accumulate { *d + s } else { s };
                }
            }
        }
    }

    macro_rules! tiles {
        ($r:expr, $c:expr, $args:tt; $($R:literal),*; $($C:literal),*) => {
            tiles!(@rows $r, $c, $args; [$($R),*]; [$($C),*])
        };
        (@rows $r:expr, $c:expr, $args:tt; [$($R:literal),*]; $cs:tt) => {
            match $r { $( $R => tiles!(@cols $R, $c, $args; $cs), )* _ => unreachable!() }
        };
        (@cols $R:literal, $c:expr, $args:tt; [$($C:literal),*]) => {
            match $c { $( $C => tile::<$R, $C> $args, )* _ => unreachable!() }
        };
    }

    /// Safety: as `super::sgemm_nt_small_unchecked`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(
        m: usize,
        rows: usize,
        k: usize,
        x: *const f32,
        w: *const f32,
        dst: *mut f32,
        ld: usize,
        acc: bool,
    ) {
        let tiles_per_block = m.div_ceil(6);
        let mut j = 0;
        while j < rows {
            let r = (rows - j).min(4);
            // Prefetch the weight block after the next one, spread over this block's tiles.
            let ahead = j + 8;
            let block_lines = if ahead < rows {
                ((rows - ahead).min(4) * k).div_ceil(16)
            } else {
                0
            };
            let share = block_lines.div_ceil(tiles_per_block);
            let per_step = share.div_ceil((k / 16).max(1));
            let mut i = 0;
            let mut t = 0;
            while i < m {
                let c = (m - i).min(6);
                let first = (t * share).min(block_lines);
                let lines = (block_lines - first).min(share);
                let pf = w.wrapping_add(ahead * k + first * 16);
                // SAFETY: i + c <= m and j + r <= rows.
                unsafe {
                    let (xp, wp, dp) = (x.add(i * k), w.add(j * k), dst.add(i * ld + j));
                    tiles!(r, c, (xp, wp, k, dp, ld, acc, pf, lines, per_step); 1, 2, 3, 4; 1, 2, 3, 4, 5, 6);
                }
                i += c;
                t += 1;
            }
            j += r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
            }
        }
        out
    }

    type Kernel = unsafe fn(usize, usize, usize, *const f32, *const f32, *mut f32, usize, bool);

    /// Every kernel this CPU can run, with its name.
    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut v: Vec<(&'static str, Kernel)> = vec![("scalar", block_scalar)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                v.push(("avx2", avx2::block));
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(("avx512", avx512::block));
            }
        }
        v
    }

    #[test]
    fn every_kernel_matches_a_naive_product() {
        // Ragged shapes: remainders of every tile size and of the vector width in k.
        for (m, n, k) in [
            (1, 1, 1),
            (5, 7, 9),
            (3, 37, 64),
            (7, 13, 17),
            (16, 130, 576),
            (24, 9, 100),
            (2, 4, 13),
            (13, 11, 31),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 13 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let want = naive(m, n, k, &x, &w);
            let ld = n + 3;
            for (name, kernel) in kernels() {
                for acc in [false, true] {
                    let mut dst = vec![0.5f32; m * ld + 1];
                    // SAFETY: dst holds m rows of ld >= n values after the first element.
                    unsafe {
                        kernel(
                            m,
                            n,
                            k,
                            x.as_ptr(),
                            w.as_ptr(),
                            dst.as_mut_ptr().add(1),
                            ld,
                            acc,
                        )
                    };
                    assert_eq!(dst[0], 0.5, "{name}: wrote before the output");
                    for i in 0..m {
                        for j in 0..ld {
                            let got = dst[1 + i * ld + j];
                            if j >= n {
                                assert_eq!(got, 0.5, "{name}: wrote outside the columns");
                                continue;
                            }
                            let v = want[i * n + j] + if acc { 0.5 } else { 0.0 };
                            assert!(
                                (got as f64 - v).abs() < 1e-4 * v.abs().max(1.0),
                                "{name} {m}x{n}x{k} ({i},{j}): {got} vs {v}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn shapes_are_checked() {
        let x = vec![1f32; 6];
        let w = vec![1f32; 6];
        let mut dst = vec![0f32; 4];
        assert!(matches!(
            sgemm_nt_small(2, 2, 3, &x, &w, &mut dst, 1, false),
            Err(BlasError::LeadingDimension { .. })
        ));
        assert!(matches!(
            sgemm_nt_small(3, 2, 3, &x, &w, &mut dst, 2, false),
            Err(BlasError::SliceTooShort { what: "x", .. })
        ));
        assert!(matches!(
            sgemm_nt_small(2, 3, 3, &x, &w, &mut dst, 3, false),
            Err(BlasError::SliceTooShort { what: "w", .. })
        ));
        assert!(matches!(
            sgemm_nt_small(2, 2, 3, &x, &w, &mut dst[..3], 2, false),
            Err(BlasError::SliceTooShort { what: "dst", .. })
        ));
        sgemm_nt_small(2, 2, 3, &x, &w, &mut dst, 2, false).unwrap();
        assert_eq!(dst, vec![3.0; 4]);
        assert!(["avx512", "avx2", "scalar"].contains(&small_kernel()));
    }
}
