//! Numerical kernels on plain `f32` slices.
//!
//! The element-wise kernels are written as simple loops over fixed-width lanes and
//! compiled twice: once for the baseline target and once with AVX2+FMA enabled, chosen at
//! run time (the extension must run on any x86-64, so no compile-time `target-cpu`).
//! Matrix products go through the `gemm` crate (the engine candle uses on CPU), which
//! dispatches on CPU features at run time too and runs on the current rayon pool; products
//! with few activation rows use xsell-blas's unpacked small-row kernels instead.

use gemm::Parallelism;
use xsell_blas::SendPtr;

/// True when the running CPU has AVX2 and FMA (std caches the detection).
#[inline]
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `pub fn $name` that runs `$body::<true>` under AVX2+FMA when available and
/// `$body::<false>` otherwise.
macro_rules! dispatch {
    ($(#[$m:meta])* fn $name:ident / $avx:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty = $body:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn $avx($($arg: $ty),*) -> $ret {
            $body::<true>($($arg),*)
        }
        $(#[$m])*
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if has_avx2() {
                    // SAFETY: the CPU supports the features the function was compiled for.
                    return unsafe { $avx($($arg),*) };
                }
            }
            $body::<false>($($arg),*)
        }
    };
}

const LANES: usize = 8;

#[inline(always)]
fn fma<const F: bool>(a: f32, b: f32, c: f32) -> f32 {
    if F { a.mul_add(b, c) } else { a * b + c }
}

/// exp(x) for f32, branch-free so that it vectorises (Cephes `expf` polynomial, about
/// 2 ulp over the clamped range [-87.3, 88.7]).
#[inline(always)]
fn fast_exp<const F: bool>(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let fx = fma::<F>(x, std::f32::consts::LOG2_E, 0.5).floor();
    let r = fma::<F>(fx, -0.693_359_4, x);
    let r = fma::<F>(fx, 2.121_944_4e-4, r);
    let r2 = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = fma::<F>(p, r, 1.398_199_9e-3);
    p = fma::<F>(p, r, 8.333_452e-3);
    p = fma::<F>(p, r, 4.166_579_6e-2);
    p = fma::<F>(p, r, 1.666_666_5e-1);
    p = fma::<F>(p, r, 5e-1);
    let y = fma::<F>(p, r2, r) + 1.0;
    let n = fx as i32;
    y * f32::from_bits(((n + 127) as u32) << 23)
}

#[inline(always)]
fn sum_exp_body<const F: bool>(x: &[f32], shift: f32) -> f64 {
    // f32 lanes over blocks of 256 values, folded into f64: the relative error stays
    // around 1e-7 whatever the length.
    let mut total = 0f64;
    for block in x.chunks(256) {
        let mut acc = [0f32; LANES];
        let mut it = block.chunks_exact(LANES);
        for c in &mut it {
            for l in 0..LANES {
                acc[l] += fast_exp::<F>(c[l] - shift);
            }
        }
        let mut s = 0f32;
        for v in it.remainder() {
            s += fast_exp::<F>(v - shift);
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + s as f64;
    }
    total
}
dispatch!(
    /// Sum over `x` of exp(x - shift), accumulated in f64.
    fn sum_exp / sum_exp_avx(x: &[f32], shift: f32) -> f64 = sum_exp_body
);

#[inline(always)]
fn max_body<const F: bool>(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(it.remainder()) {
        if v > m {
            m = v;
        }
    }
    m
}
dispatch!(
    /// Maximum of `x` (NaNs are ignored; -inf for an empty slice).
    fn max / max_avx(x: &[f32]) -> f32 = max_body
);

/// Maximum value and the index of its first occurrence (like `torch.argmax`).
/// Returns `None` for an empty slice or when the maximum is not finite.
pub(crate) fn max_argmax(x: &[f32]) -> Option<(f32, usize)> {
    let m = max(x);
    if !m.is_finite() {
        return None;
    }
    let idx = x.iter().position(|&v| v == m)?;
    Some((m, idx))
}

/// log Σ exp(x), stable, accumulated in f64. `max` must be `max(x)`.
pub(crate) fn logsumexp_with_max(x: &[f32], max: f32) -> f64 {
    max as f64 + sum_exp(x, max).ln()
}

#[inline(always)]
fn softmax_body<const F: bool>(x: &mut [f32]) {
    let m = max_body::<F>(x);
    let mut s = 0f32;
    for v in x.iter_mut() {
        *v = fast_exp::<F>(*v - m);
        s += *v;
    }
    let inv = 1.0 / s;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
dispatch!(
    /// In-place softmax of a row (must contain a finite value).
    fn softmax / softmax_avx(x: &mut [f32]) -> () = softmax_body
);

#[inline(always)]
fn silu_mul_body<const F: bool>(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + fast_exp::<F>(-g)) * u;
    }
}
dispatch!(
    /// out = silu(gate) * up, element-wise.
    fn silu_mul / silu_mul_avx(gate: &[f32], up: &[f32], out: &mut [f32]) -> () = silu_mul_body
);

#[inline(always)]
fn gelu_tanh_body<const F: bool>(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x.iter_mut() {
        let u = *v;
        let y = C * fma::<F>(0.044715 * u * u, u, u);
        // tanh(y) = 1 - 2 / (exp(2y) + 1)
        let t = 1.0 - 2.0 / (fast_exp::<F>(2.0 * y) + 1.0);
        *v = 0.5 * u * (1.0 + t);
    }
}
dispatch!(
    /// GELU, tanh approximation (`gelu_new`, `gelu_pytorch_tanh`), in place.
    fn gelu_tanh / gelu_tanh_avx(x: &mut [f32]) -> () = gelu_tanh_body
);

/// erf(x): Taylor series for |x| < 0.5, Abramowitz & Stegun 7.1.26 elsewhere (absolute
/// error below 2e-7, i.e. at f32 resolution).
fn erf(x: f32) -> f32 {
    let z = x as f64;
    if z.abs() < 0.5 {
        let z2 = z * z;
        let (mut term, mut sum) = (z, z);
        for n in 1..12 {
            term *= -z2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        return (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32;
    }
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-z * z).exp();
    (if z < 0.0 { -y } else { y }) as f32
}

/// Exact GELU 0.5·x·(1 + erf(x/√2)), in place.
pub(crate) fn gelu_erf(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// ReLU in place.
pub(crate) fn relu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = v.max(0.0);
    }
}

/// SiLU in place.
pub(crate) fn silu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + (-*v).exp();
    }
}

/// RMS normalisation of one row: out = w · x / sqrt(mean(x²) + eps).
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let inv = 1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

/// Layer normalisation of one row: out = w · (x - mean) / sqrt(var + eps) + b.
pub(crate) fn layer_norm(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>()
        / n;
    let inv = 1.0 / ((var as f32) + eps).sqrt();
    let mean = mean as f32;
    for (((o, &v), &g), &bb) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (v - mean) * inv * g + bb;
    }
}

/// A read-only strided matrix view: element (i, j) is `data[off + i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

/// The extent (one past the last element) of a `rows x cols` view.
fn extent(off: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        off
    } else {
        off + (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// dst[m, n] (row stride `dst_rs`, starting at `dst_off`) = (`accumulate` ? dst : 0)
/// + scale · lhs[m, k] · rhs[k, n].
///
/// Bounds of every view are checked before calling the (unsafe) `gemm` kernel, so a
/// mistake panics instead of corrupting memory. `threads > 1` lets `gemm` split the work
/// on the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_off: usize,
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    scale: f32,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        extent(dst_off, m, n, dst_rs, 1) <= dst.len(),
        "matmul: dst out of bounds"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[dst_off + i * dst_rs..dst_off + i * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        extent(lhs.off, m, k, lhs.rs, lhs.cs) <= lhs.data.len(),
        "matmul: lhs out of bounds"
    );
    assert!(
        extent(rhs.off, k, n, rhs.rs, rhs.cs) <= rhs.data.len(),
        "matmul: rhs out of bounds"
    );
    // SAFETY: all three views were bounds-checked above; dst is exclusively borrowed.
    unsafe {
        matmul_unchecked(
            m,
            n,
            k,
            dst.as_mut_ptr().add(dst_off),
            dst_rs,
            accumulate,
            lhs.data.as_ptr().add(lhs.off),
            lhs.rs,
            lhs.cs,
            rhs.data.as_ptr().add(rhs.off),
            rhs.rs,
            rhs.cs,
            scale,
            threads,
        )
    }
}

/// Raw `gemm` call. Safety: the caller guarantees every accessed element is in bounds and
/// that no other thread writes the same `dst` elements concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul_unchecked(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
    scale: f32,
    threads: usize,
) {
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0f32,
            scale,
            false,
            false,
            false,
            par,
        )
    }
}

/// Below this many activation rows, [`matmul_small`] beats packing-based `gemm`.
pub(crate) const SMALL_M: usize = 24;

/// dst[i, j] (+)= Σ_p x[i, p] · w[j, p] for `i < m`, `j < rows`, where `x` is `m x k` and
/// `w` is `rows x k`, both row-major and contiguous, and dst element (i, j) is
/// `dst[dst_off + i*ld + j]`.
///
/// A register-tiled dot-product kernel for few activation rows (short texts, generation):
/// unlike `gemm` it streams the weights once without packing them. Weight rows are split
/// over the current rayon pool when `threads > 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_small<W: xsell_blas::Weight>(
    m: usize,
    rows: usize,
    k: usize,
    x: &[f32],
    w: &[W],
    dst: &mut [f32],
    dst_off: usize,
    ld: usize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || rows == 0 {
        return;
    }
    assert!(
        x.len() >= m * k && w.len() >= rows * k,
        "matmul_small: input out of bounds"
    );
    assert!(
        rows <= ld && extent(dst_off, m, rows, ld, 1) <= dst.len(),
        "matmul_small: dst out of bounds"
    );
    let p = SendPtr(dst.as_mut_ptr());
    // SAFETY (both closures): bounds asserted above; tasks cover disjoint column ranges.
    let run = |j0: usize, j1: usize| unsafe {
        xsell_blas::sgemm_nt_small_unchecked(
            m,
            j1 - j0,
            k,
            x.as_ptr(),
            w.as_ptr().add(j0 * k),
            p.get().add(dst_off + j0),
            ld,
            accumulate,
        )
    };
    let tasks = if threads > 1 {
        (threads * 4).min(rows.div_ceil(16))
    } else {
        1
    };
    if tasks <= 1 {
        run(0, rows);
    } else {
        use rayon::prelude::*;
        let per = rows.div_ceil(tasks).next_multiple_of(4);
        (0..rows.div_ceil(per))
            .into_par_iter()
            .for_each(|t| run(t * per, ((t + 1) * per).min(rows)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate() {
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            for got in [fast_exp::<false>(x) as f64, fast_exp::<true>(x) as f64] {
                assert!(
                    ((got - want) / want).abs() < 4e-7,
                    "x={x} got={got} want={want}"
                );
            }
        }
        assert!(fast_exp::<false>(-1000.0) < 1e-37);
    }

    #[test]
    fn max_sum_exp_match_naive() {
        let a: Vec<f32> = (0..1003)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let m = max(&a);
        assert_eq!(m, a.iter().cloned().fold(f32::MIN, f32::max));
        let (m2, i) = max_argmax(&a).unwrap();
        assert_eq!(m2, m);
        assert_eq!(a[i], m);
        assert!(a[..i].iter().all(|&v| v < m));
        let lse = logsumexp_with_max(&a, m);
        let naive: f64 = a.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        assert!((lse - naive).abs() < 1e-6, "{lse} {naive}");
        assert!(max_argmax(&[]).is_none());
        assert!(max_argmax(&[f32::NAN, f32::NAN]).is_none());
    }

    #[test]
    fn activations_and_norms() {
        let x: Vec<f32> = (-40..40).map(|i| i as f32 * 0.25).collect();
        let mut g = x.clone();
        gelu_tanh(&mut g);
        for (&v, &y) in x.iter().zip(&g) {
            let v64 = v as f64;
            let want = 0.5
                * v64
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (v64 + 0.044715 * v64.powi(3)))
                        .tanh());
            assert!(
                (y as f64 - want).abs() < 2e-6 * want.abs().max(1.0),
                "{v} {y} {want}"
            );
        }
        let mut e = x.clone();
        gelu_erf(&mut e);
        // erf reference points
        for (v, want) in [
            (0.5f32, 0.520_499_877_8f64),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265_0),
            (0.1, 0.112_462_916_0),
        ] {
            assert!((erf(v) as f64 - want).abs() < 2e-7, "erf({v})");
        }
        let ones = vec![1.0f32; 80];
        let mut out = vec![0f32; 80];
        silu_mul(&x, &ones, &mut out);
        for (&v, &y) in x.iter().zip(&out) {
            let want = v as f64 / (1.0 + (-(v as f64)).exp());
            assert!((y as f64 - want).abs() < 1e-6 * want.abs().max(1.0));
        }
        let mut s = x.clone();
        silu(&mut s);
        assert!((s[60] - out[60]).abs() < 1e-6);
        let mut r = x.clone();
        relu(&mut r);
        assert_eq!(r[0], 0.0);
        assert_eq!(r[79], x[79]);
        let mut sm = vec![1.0f32, 2.0, 3.0];
        softmax(&mut sm);
        let z: f64 = (1f64).exp() + (2f64).exp() + (3f64).exp();
        assert!((sm[2] as f64 - (3f64).exp() / z).abs() < 1e-6);
        let w = vec![2.0f32; 4];
        let mut o = vec![0f32; 4];
        rms_norm(&[1.0, -1.0, 1.0, -1.0], &w, 0.0, &mut o);
        assert!((o[0] - 2.0).abs() < 1e-6 && (o[1] + 2.0).abs() < 1e-6);
        layer_norm(&[1.0, 2.0, 3.0, 4.0], &[1.0; 4], &[0.5; 4], 0.0, &mut o);
        assert!((o[0] - (0.5 - 1.5 / 1.25f32.sqrt())).abs() < 1e-5);
    }

    #[test]
    fn matmul_matches_naive_with_strides() {
        let (m, n, k) = (5, 7, 9);
        let a: Vec<f32> = (0..m * 12).map(|i| (i % 13) as f32 - 6.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
        // lhs: rows of stride 12, offset 2; rhs = w^T (w is n x k row-major)
        let mut dst = vec![1.0f32; m * 10];
        matmul(
            m,
            n,
            k,
            &mut dst,
            1,
            10,
            true,
            MatRef {
                data: &a,
                off: 2,
                rs: 12,
                cs: 1,
            },
            MatRef {
                data: &w,
                off: 0,
                rs: 1,
                cs: k,
            },
            0.5,
            1,
        );
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| a[2 + i * 12 + p] * w[j * k + p]).sum();
                assert!((dst[1 + i * 10 + j] - (1.0 + 0.5 * s)).abs() < 1e-4);
            }
        }
        assert_eq!(dst[0], 1.0);
    }

    #[test]
    fn matmul_small_matches_gemm() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (m, rows, k) in [
            (1, 1, 1),
            (5, 7, 9),
            (3, 37, 64),
            (24, 130, 576),
            (2, 4, 13),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let w: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 13 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let ld = rows + 3;
            for acc in [false, true] {
                for threads in [1, 2] {
                    let mut a = vec![0.5f32; m * ld + 1];
                    let mut b = a.clone();
                    pool.install(|| matmul_small(m, rows, k, &x, &w, &mut a, 1, ld, acc, threads));
                    matmul(
                        m,
                        rows,
                        k,
                        &mut b,
                        1,
                        ld,
                        acc,
                        MatRef {
                            data: &x,
                            off: 0,
                            rs: k,
                            cs: 1,
                        },
                        MatRef {
                            data: &w,
                            off: 0,
                            rs: 1,
                            cs: k,
                        },
                        1.0,
                        1,
                    );
                    for (u, v) in a.iter().zip(&b) {
                        assert!(
                            (u - v).abs() < 1e-4 * v.abs().max(1.0),
                            "{m} {rows} {k}: {u} {v}"
                        );
                    }
                    assert_eq!(a[0], 0.5);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn matmul_checks_bounds() {
        let mut dst = vec![0f32; 3];
        matmul(
            2,
            2,
            2,
            &mut dst,
            0,
            2,
            false,
            MatRef {
                data: &[1.0; 4],
                off: 0,
                rs: 2,
                cs: 1,
            },
            MatRef {
                data: &[1.0; 4],
                off: 0,
                rs: 2,
                cs: 1,
            },
            1.0,
            1,
        );
    }
}
