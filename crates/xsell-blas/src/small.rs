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
//!
//! The weights may be `f32` or IEEE half precision ([`F16`]): a product with few rows reads
//! every weight once for a handful of multiply-adds, so it is bound by memory traffic, and
//! half-precision weights halve it (a small model then fits in the last-level cache). They
//! are widened to `f32` in registers (F16C / AVX-512 conversions); activations and
//! accumulation stay `f32`.

use crate::BlasError;

/// An IEEE 754 half-precision value (its bit pattern), as stored for weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct F16(pub u16);

impl F16 {
    /// The nearest half-precision value (round to nearest, ties to even; overflow gives
    /// ±Infinity, NaN stays NaN).
    pub fn from_f32(x: f32) -> F16 {
        let b = x.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32;
        let man = b & 0x7f_ffff;
        if exp == 0xff {
            return F16(sign | 0x7c00 | if man != 0 { 0x200 } else { 0 });
        }
        let e = exp - 127 + 15;
        if e >= 0x1f {
            return F16(sign | 0x7c00);
        }
        if e <= 0 {
            // Subnormal half (or zero): shift the full significand into place and round.
            if e < -10 {
                return F16(sign);
            }
            let m = man | 0x80_0000;
            let shift = (14 - e) as u32;
            let half = 1u32 << (shift - 1);
            let rest = m & ((1u32 << shift) - 1);
            let mut h = m >> shift;
            if rest > half || (rest == half && h & 1 == 1) {
                h += 1;
            }
            return F16(sign | h as u16);
        }
        let mut h = ((e as u32) << 10) | (man >> 13);
        let rest = man & 0x1fff;
        if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
            h += 1; // may carry into the exponent, up to Infinity: still correct
        }
        F16(sign | h as u16)
    }

    /// The value as `f32` (exact).
    pub fn to_f32(self) -> f32 {
        let h = self.0 as u32;
        let sign = (h & 0x8000) << 16;
        let exp = (h >> 10) & 0x1f;
        let man = h & 0x3ff;
        let bits = match exp {
            0 if man == 0 => sign,
            0 => {
                // Subnormal: normalise.
                let shift = man.leading_zeros() - 21;
                let man = (man << shift) & 0x3ff;
                sign | ((113 - shift) << 23) | (man << 13)
            }
            0x1f => sign | 0x7f80_0000 | (man << 13),
            _ => sign | ((exp + 112) << 23) | (man << 13),
        };
        f32::from_bits(bits)
    }
}

/// Widens half-precision values to `f32`: `out[i] = src[i]` for `i < min(len)` (F16C or
/// AVX-512 conversions when the CPU has them).
pub fn widen_f16(src: &[F16], out: &mut [f32]) {
    let n = src.len().min(out.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: F16C checked; 8-value groups below n are in bounds of both slices.
            done = unsafe { widen_f16c(src.as_ptr(), out.as_mut_ptr(), n) };
        }
    }
    for (o, h) in out[done..n].iter_mut().zip(&src[done..n]) {
        *o = h.to_f32();
    }
}

/// Converts the first `n & !7` values; returns how many. Safety: F16C available and both
/// pointers valid for `n` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_f16c(src: *const F16, out: *mut f32, n: usize) -> usize {
    use std::arch::x86_64::*;
    let n8 = n & !7;
    let mut i = 0;
    while i < n8 {
        // SAFETY: i + 8 <= n for both pointers.
        unsafe {
            let h = _mm_loadu_si128(src.add(i) as *const __m128i);
            _mm256_storeu_ps(out.add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    n8
}

/// A weight element type of the small-row kernels: `f32` or [`F16`].
pub trait Weight: Copy + Send + Sync + private::Sealed {
    #[doc(hidden)]
    const HALF: bool;
    /// The value as `f32`.
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    const HALF: bool = false;
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for F16 {
    const HALF: bool = true;
    #[inline]
    fn to_f32(self) -> f32 {
        F16::to_f32(self)
    }
}

mod private {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::F16 {}
}

/// Which kernel [`sgemm_nt_small`] uses on this CPU: `"avx512"`, `"avx2"` or `"scalar"`.
pub fn small_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if has_avx2() {
            return "avx2";
        }
    }
    "scalar"
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// `dst[i·ld + j] = (accumulate ? dst[i·ld + j] : 0) + Σ_p x[i·k + p] · w[j·k + p]`
/// for `i < m`, `j < n`, with `f32` or [`F16`] weights.
///
/// Single-threaded; callers split the `n` output columns (weight rows) across threads.
/// Shapes are checked: a slice too short for its matrix or `ld < n` is an error and
/// nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_nt_small<W: Weight>(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[W],
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
pub unsafe fn sgemm_nt_small_unchecked<W: Weight>(
    m: usize,
    n: usize,
    k: usize,
    x: *const f32,
    w: *const W,
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
            unsafe { avx512::block::<W>(m, n, k, x, w, dst, ld, accumulate) };
            return;
        }
        if has_avx2() {
            // SAFETY: CPU features checked; pointers forwarded from the caller.
            unsafe { avx2::block::<W>(m, n, k, x, w, dst, ld, accumulate) };
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { block_scalar::<W>(m, n, k, x, w, dst, ld, accumulate) }
}

/// Portable kernel (same contract as [`sgemm_nt_small_unchecked`]).
#[allow(clippy::too_many_arguments)]
unsafe fn block_scalar<W: Weight>(
    m: usize,
    rows: usize,
    k: usize,
    x: *const f32,
    w: *const W,
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
                    s += a * b.to_f32();
                }
                let d = dst.add(i * ld + j);
                *d = if acc { *d + s } else { s };
            }
        }
    }
}

/// Dispatches `tile::<R, C, W>(args)` on the run-time tile shape `(r, c)`.
macro_rules! tiles {
    ($w:ty; $r:expr, $c:expr, $args:tt; $($R:literal),*; $($C:literal),*) => {
        tiles!(@rows $w; $r, $c, $args; [$($R),*]; [$($C),*])
    };
    (@rows $w:ty; $r:expr, $c:expr, $args:tt; [$($R:literal),*]; $cs:tt) => {
        match $r { $( $R => tiles!(@cols $w; $R, $c, $args; $cs), )* _ => unreachable!() }
    };
    (@cols $w:ty; $R:literal, $c:expr, $args:tt; [$($C:literal),*]) => {
        match $c { $( $C => tile::<$R, $C, $w> $args, )* _ => unreachable!() }
    };
}

/// The kernel with 256-bit vectors: tiles of 4 weight rows x 3 activation rows.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Weight;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 8 weights at `w` as f32 (widened from half precision for `F16`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8<W: Weight>(w: *const W) -> __m256 {
        // SAFETY: the caller guarantees 8 readable weights.
        unsafe {
            if W::HALF {
                _mm256_cvtph_ps(_mm_loadu_si128(w as *const __m128i))
            } else {
                _mm256_loadu_ps(w as *const f32)
            }
        }
    }

    /// R weight rows x C activation rows; 12 accumulators + 3 + 1 registers at most.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const R: usize, const C: usize, W: Weight>(
        x: *const f32,
        w: *const W,
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
                    let wv = load8(w.add(a * k + p));
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
                        s += *x.add(i * k + t) * (*w.add(a * k + t)).to_f32();
                    }
                    let d = dst.add(i * ld + a);
                    *d = if accumulate { *d + s } else { s };
                }
            }
        }
    }

    /// Safety: as `super::sgemm_nt_small_unchecked`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block<W: Weight>(
        m: usize,
        rows: usize,
        k: usize,
        x: *const f32,
        w: *const W,
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
                    tiles!(W; r, c, (xp, wp, k, dp, ld, acc); 1, 2, 3, 4; 1, 2, 3);
                }
                i += c;
            }
            j += r;
        }
    }
}

/// The kernel with 512-bit vectors: tiles of 4 weight rows x 6 activation rows (24
/// accumulators of the 32 registers), masked loads for a ragged `k`.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Weight;
    use std::arch::x86_64::*;

    /// The 16 weights at `w` as f32 (widened from half precision for `F16`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16<W: Weight>(w: *const W) -> __m512 {
        // SAFETY: the caller guarantees 16 readable weights.
        unsafe {
            if W::HALF {
                _mm512_cvtph_ps(_mm256_loadu_si256(w as *const __m256i))
            } else {
                _mm512_loadu_ps(w as *const f32)
            }
        }
    }

    /// The first `n < 16` weights at `w` as f32, zeros after.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_tail<W: Weight>(w: *const W, n: usize) -> __m512 {
        let mut buf = [0f32; 16];
        for (t, b) in buf.iter_mut().enumerate().take(n) {
            // SAFETY: the caller guarantees n readable weights.
            *b = unsafe { *w.add(t) }.to_f32();
        }
        // SAFETY: buf holds 16 floats.
        unsafe { _mm512_loadu_ps(buf.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const C: usize, W: Weight>(
        x: *const f32,
        w: *const W,
        k: usize,
        dst: *mut f32,
        ld: usize,
        accumulate: bool,
        prefetch: *const u8,
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
                        _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(line * 64) as *const i8);
                        line += 1;
                    }
                }
                let mut xv = [_mm512_setzero_ps(); C];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(x.add(i * k + p));
                }
                for (a, row) in acc.iter_mut().enumerate() {
                    let wv = load16(w.add(a * k + p));
                    for (i, ac) in row.iter_mut().enumerate() {
                        *ac = _mm512_fmadd_ps(wv, xv[i], *ac);
                    }
                }
                p += 16;
            }
            if kv < k {
                let mask: __mmask16 = ((1u32 << (k - kv)) - 1) as u16;
                let mut xv = [_mm512_setzero_ps(); C];
                for (i, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(mask, x.add(i * k + kv));
                }
                for (a, row) in acc.iter_mut().enumerate() {
                    let wv = load_tail(w.add(a * k + kv), k - kv);
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

    /// Safety: as `super::sgemm_nt_small_unchecked`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block<W: Weight>(
        m: usize,
        rows: usize,
        k: usize,
        x: *const f32,
        w: *const W,
        dst: *mut f32,
        ld: usize,
        acc: bool,
    ) {
        let elem = std::mem::size_of::<W>();
        let tiles_per_block = m.div_ceil(6);
        let mut j = 0;
        while j < rows {
            let r = (rows - j).min(4);
            // Prefetch the weight block after the next one, spread over this block's tiles.
            let ahead = j + 8;
            let block_lines = if ahead < rows {
                ((rows - ahead).min(4) * k * elem).div_ceil(64)
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
                let pf = (w as *const u8).wrapping_add(ahead * k * elem + first * 64);
                // SAFETY: i + c <= m and j + r <= rows.
                unsafe {
                    let (xp, wp, dp) = (x.add(i * k), w.add(j * k), dst.add(i * ld + j));
                    tiles!(W; r, c, (xp, wp, k, dp, ld, acc, pf, lines, per_step); 1, 2, 3, 4; 1, 2, 3, 4, 5, 6);
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

    fn naive<W: Weight>(m: usize, n: usize, k: usize, x: &[f32], w: &[W]) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p].to_f32() as f64)
                    .sum();
            }
        }
        out
    }

    type Kernel<W> = unsafe fn(usize, usize, usize, *const f32, *const W, *mut f32, usize, bool);

    /// Every kernel this CPU can run, with its name.
    fn kernels<W: Weight>() -> Vec<(&'static str, Kernel<W>)> {
        let mut v: Vec<(&'static str, Kernel<W>)> = vec![("scalar", block_scalar::<W>)];
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                v.push(("avx2", avx2::block::<W>));
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(("avx512", avx512::block::<W>));
            }
        }
        v
    }

    fn check_all<W: Weight>(conv: impl Fn(f32) -> W) {
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
            let w: Vec<W> = (0..n * k)
                .map(|i| conv(((i * 13 % 11) as f32 - 5.0) / 4.0))
                .collect();
            let want = naive(m, n, k, &x, &w);
            let ld = n + 3;
            for (name, kernel) in kernels::<W>() {
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
    fn every_kernel_matches_a_naive_product() {
        check_all::<f32>(|v| v);
    }

    #[test]
    fn every_half_precision_kernel_matches_a_naive_product() {
        check_all::<F16>(F16::from_f32);
    }

    #[test]
    fn half_precision_conversions_round_to_nearest_even() {
        for (x, bits) in [
            (0.0f32, 0x0000u16),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.5, 0xc100),
            (65504.0, 0x7bff),
            (65520.0, 0x7c00), // rounds up to Infinity
            (1e-8, 0x0000),
            (6.0e-8, 0x0001), // smallest subnormal
            (f32::INFINITY, 0x7c00),
            (1.0 + 1.0 / 2048.0, 0x3c00), // a tie rounds to even
            (1.0 + 3.0 / 2048.0, 0x3c02),
        ] {
            assert_eq!(F16::from_f32(x).0, bits, "{x}");
        }
        assert!(F16::from_f32(f32::NAN).to_f32().is_nan());
        // Every finite half converts to f32 and back to itself.
        for h in 0..=0xffffu16 {
            let f = F16(h).to_f32();
            if f.is_finite() {
                assert_eq!(F16::from_f32(f).0, h, "{h:#06x} -> {f}");
            }
        }
        assert_eq!(F16(0x7c00).to_f32(), f32::INFINITY);
        assert_eq!(F16(0x0001).to_f32(), 2f32.powi(-24));
    }

    #[test]
    fn widening_matches_the_scalar_conversion() {
        let src: Vec<F16> = (0..1000u32).map(|i| F16((i * 65) as u16)).collect();
        let mut out = vec![7f32; 1003];
        widen_f16(&src, &mut out);
        for (h, o) in src.iter().zip(&out) {
            assert!(
                h.to_f32() == *o || (o.is_nan() && h.to_f32().is_nan()),
                "{h:?}"
            );
        }
        assert_eq!(out[1000..], [7.0; 3]);
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
