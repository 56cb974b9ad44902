//! Element-wise kernels of the forward pass: sums, layer normalisation,
//! activations (erf-GELU, tanh-GELU, ReLU, SiLU), softmax.
//!
//! The loops are written so that the compiler vectorises them (independent lanes,
//! branch-free polynomials); results stay within a few f32 ulp of the exact functions.

/// Number of independent accumulators used by the reductions (one AVX register).
const LANES: usize = 8;

/// Fused multiply-add where the target has FMA instructions, `a * b + c` otherwise
/// (`f32::mul_add` without hardware FMA is a slow library call).
pub(crate) trait Fmadd {
    /// `self * b + c`.
    fn fmadd(self, b: f32, c: f32) -> f32;
}

impl Fmadd for f32 {
    #[inline(always)]
    fn fmadd(self, b: f32, c: f32) -> f32 {
        #[cfg(target_feature = "fma")]
        {
            self.mul_add(b, c)
        }
        #[cfg(not(target_feature = "fma"))]
        {
            self * b + c
        }
    }
}

/// Sum of a slice with 8 independent accumulators (vectorisable).
#[inline]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    let mut s = 0.0;
    for v in rest {
        s += v;
    }
    acc.iter().sum::<f32>() + s
}

/// Dot product with 8 independent accumulators (vectorisable).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = x[l].fmadd(y[l], acc[l]);
        }
    }
    let mut s = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    acc.iter().sum::<f32>() + s
}

/// `y += alpha * x` over the common length.
#[inline]
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv = alpha.fmadd(*xv, *yv);
    }
}

/// In-place layer normalisation of one row: `(x - mean) / sqrt(var + eps) * w + b`
/// (biased variance, as in PyTorch).
#[inline]
pub(crate) fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = sum(x) / n;
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] - mean;
            acc[l] = d.fmadd(d, acc[l]);
        }
    }
    let mut tail = 0.0;
    for v in rest {
        tail += (v - mean) * (v - mean);
    }
    let var = (acc.iter().sum::<f32>() + tail) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, wv), bv) in x.iter_mut().zip(w).zip(b) {
        *v = ((*v - mean) * inv).fmadd(*wv, *bv);
    }
}

/// Error function, single precision: the rational approximation used by Eigen and
/// XLA (absolute error below 5e-7; the argument is clamped to [-4, 4]).
#[inline]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.fmadd(-2.726_142e-10, 2.770_681_4e-8);
    p = x2.fmadd(p, -2.101_024e-6);
    p = x2.fmadd(p, -5.692_506_4e-5);
    p = x2.fmadd(p, -7.349_906_3e-4);
    p = x2.fmadd(p, -2.954_6e-3);
    p = x2.fmadd(p, -1.609_603_3e-2);
    let mut q = x2.fmadd(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.fmadd(q, -1.682_827e-3);
    q = x2.fmadd(q, -7.373_329e-3);
    q = x2.fmadd(q, -1.426_473_9e-2);
    x * p / q
}

/// Exponential, single precision (Cephes `expf`: relative error about 2e-7).
/// Returns 0 below -87.3 and saturates at `exp(88.3)` above; NaN stays NaN.
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.3, 88.3);
    let n = (xc * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.fmadd(2.121_944_4e-4, n.fmadd(-0.693_359_4, xc));
    let mut p = 1.987_569_1e-4f32;
    p = p.fmadd(r, 1.398_199_9e-3);
    p = p.fmadd(r, 8.333_452e-3);
    p = p.fmadd(r, 4.166_579_6e-2);
    p = p.fmadd(r, 1.666_666_5e-1);
    p = p.fmadd(r, 0.5);
    let y = (p * r).fmadd(r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let v = y * scale;
    if x < -87.3 {
        0.0
    } else if x.is_nan() {
        x
    } else {
        v
    }
}

/// Hidden activation functions of the supported models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact GELU: `x * (1 + erf(x / sqrt 2)) / 2` (HF `"gelu"`).
    GeluErf,
    /// Tanh-approximated GELU (HF `"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `x * sigmoid(x)` (HF `"silu"` / `"swish"`).
    Silu,
}

impl Activation {
    /// Maps a Hugging Face `hidden_act` name.
    pub(crate) fn from_name(name: &str) -> Option<Activation> {
        match name {
            "gelu" => Some(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            "silu" | "swish" => Some(Activation::Silu),
            _ => None,
        }
    }

    /// Applies the activation in place.
    pub(crate) fn apply(self, x: &mut [f32]) {
        match self {
            Activation::GeluErf => {
                for v in x.iter_mut() {
                    let t = *v;
                    *v = 0.5 * t * (1.0 + erf(t * std::f32::consts::FRAC_1_SQRT_2));
                }
            }
            Activation::GeluTanh => {
                // tanh(u) = 1 - 2 / (exp(2u) + 1)
                const C: f32 = 0.797_884_6; // sqrt(2 / pi)
                for v in x.iter_mut() {
                    let t = *v;
                    let u = C * (t + 0.044_715 * t * t * t);
                    let th = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
                    *v = 0.5 * t * (1.0 + th);
                }
            }
            Activation::Relu => {
                for v in x.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            Activation::Silu => {
                for v in x.iter_mut() {
                    let t = *v;
                    *v = t / (1.0 + exp(-t));
                }
            }
        }
    }
}

/// In-place softmax of one row (max-subtracted; an all `-inf` row becomes uniform NaN-free zeros).
#[inline]
pub(crate) fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference erf in f64 (Abramowitz-Stegun 7.1.26 is too coarse; use a series / continued fraction).
    fn erf64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            // Maclaurin series, converges quickly for |x| < 3.
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            loop {
                let add = term / (2.0 * n + 1.0);
                sum += add;
                if add.abs() < 1e-17 {
                    break;
                }
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction for erfc.
            let ax = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (ax + f);
            }
            let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn erf_is_accurate() {
        let mut worst = 0.0f64;
        for i in -6000..=6000 {
            let x = i as f64 / 1000.0;
            let e = (erf(x as f32) as f64 - erf64(x)).abs();
            worst = worst.max(e);
        }
        assert!(worst < 5e-7, "max |erf error| = {worst}");
        assert!((erf(10.0) - 1.0).abs() < 2e-7 && (erf(-10.0) + 1.0).abs() < 2e-7);
        assert!(erf(1e30).is_finite() && erf(f32::INFINITY) == erf(4.0));
        assert_eq!(erf(0.0), 0.0);
    }

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -8700..=8830 {
            let x = i as f32 / 100.0;
            let r = ((exp(x) as f64) / (x as f64).exp() - 1.0).abs();
            worst = worst.max(r);
        }
        assert!(worst < 5e-7, "max relative exp error = {worst}");
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn activations_match_definitions() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 / 8.0).collect();
        for (act, f) in [
            (
                Activation::GeluErf,
                (|x: f64| 0.5 * x * (1.0 + erf64(x / 2f64.sqrt()))) as fn(f64) -> f64,
            ),
            (Activation::GeluTanh, |x: f64| {
                0.5 * x
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
            }),
            (Activation::Relu, |x: f64| x.max(0.0)),
            (Activation::Silu, |x: f64| x / (1.0 + (-x).exp())),
        ] {
            let mut y = xs.clone();
            act.apply(&mut y);
            for (x, v) in xs.iter().zip(&y) {
                let want = f(*x as f64);
                assert!(
                    (*v as f64 - want).abs() < 2e-6 * (1.0 + want.abs()),
                    "{act:?}({x}) = {v}, want {want}"
                );
            }
        }
        assert_eq!(Activation::from_name("gelu"), Some(Activation::GeluErf));
        assert_eq!(
            Activation::from_name("gelu_pytorch_tanh"),
            Some(Activation::GeluTanh)
        );
        assert_eq!(Activation::from_name("swish"), Some(Activation::Silu));
        assert_eq!(Activation::from_name("mish"), None);
    }

    #[test]
    fn reductions_and_layer_norm() {
        let x: Vec<f32> = (0..21).map(|i| i as f32 * 0.5 - 3.0).collect();
        let naive: f32 = x.iter().sum();
        assert!((sum(&x) - naive).abs() < 1e-5);
        let naive_dot: f32 = x.iter().map(|v| v * v).sum();
        assert!((dot(&x, &x) - naive_dot).abs() < 1e-3);
        let mut y = vec![1.0; 21];
        axpy(2.0, &x, &mut y);
        assert_eq!(y[4], 1.0 + 2.0 * x[4]);

        let mut row = x.clone();
        let w = vec![2.0; 21];
        let b = vec![0.5; 21];
        layer_norm(&mut row, &w, &b, 1e-12);
        let mean = naive / 21.0;
        let var: f32 = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 21.0;
        for (r, v) in row.iter().zip(&x) {
            let want = (v - mean) / var.sqrt() * 2.0 + 0.5;
            assert!((r - want).abs() < 1e-5, "{r} vs {want}");
        }
    }

    #[test]
    fn softmax_rows() {
        let mut x = vec![1.0, 2.0, 3.0, 1000.0];
        softmax(&mut x);
        assert!((x[3] - 1.0).abs() < 1e-6 && x[0] < 1e-30);
        let mut y = vec![0.5, 0.5, 0.5];
        softmax(&mut y);
        for v in y {
            assert!((v - 1.0 / 3.0).abs() < 1e-7);
        }
        let mut z = vec![f32::NEG_INFINITY; 2];
        softmax(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
