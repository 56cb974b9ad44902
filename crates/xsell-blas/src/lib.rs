//! Minimal, safe wrapper over the system OpenBLAS single-precision matrix
//! multiply (`cblas_sgemm`, row-major) plus OpenBLAS thread control, and the
//! small-row kernels ([`sgemm_nt_small`]) used when only a few activation rows
//! (one short text) meet a weight matrix.
//!
//! The crate links the shared system library `libopenblas.so` (Debian package
//! `libopenblas-dev`; the 32-bit-integer interface). Every call checks its
//! dimensions and slice lengths before reaching C, so a wrong shape is reported
//! as a [`BlasError`] instead of reading or writing out of bounds.
//!
//! Thread count: OpenBLAS keeps one process-wide setting, see [`set_threads`].
//! Calls that are too small for threading run on the calling thread; larger ones
//! use OpenBLAS's own worker threads and return when the product is complete.

mod small;

pub use small::{F16, Weight, sgemm_nt_small, sgemm_nt_small_unchecked, small_kernel, widen_f16};

use std::ffi::CStr;
use std::fmt;
use std::os::raw::{c_char, c_int};

/// A raw output pointer that may cross into rayon tasks.
///
/// The parallel matrix kernels (here and in the model crates) split one output
/// buffer into disjoint column or row ranges and let each task write its own
/// range; a `&mut [f32]` cannot be shared that way, a pointer can. Whoever
/// builds one promises that concurrent tasks never write the same element and
/// that the buffer outlives them.
#[derive(Clone, Copy, Debug)]
pub struct SendPtr<T>(pub *mut T);

// SAFETY: see the type's contract: tasks write disjoint ranges of a buffer that
// outlives them.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that a closure captures the whole `Send`
    /// wrapper rather than its non-`Send` field).
    #[inline]
    pub fn get(self) -> *mut T {
        self.0
    }
}

const CBLAS_ROW_MAJOR: c_int = 101;
const CBLAS_NO_TRANS: c_int = 111;
const CBLAS_TRANS: c_int = 112;

unsafe extern "C" {
    fn cblas_sgemm(
        order: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(num_threads: c_int);
    fn openblas_get_num_threads() -> c_int;
    fn openblas_get_config() -> *const c_char;
    fn openblas_get_corename() -> *const c_char;
}

/// Whether an operand of [`sgemm`] is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored (row-major).
    No,
    /// Use the transpose of the stored matrix.
    Yes,
}

/// Errors reported by this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlasError {
    /// A dimension or leading dimension does not fit the 32-bit BLAS interface.
    DimensionTooLarge {
        /// Which argument (`m`, `n`, `k`, `lda`, `ldb`, `ldc`).
        what: &'static str,
        /// The value given.
        value: usize,
    },
    /// A leading dimension is smaller than the row length it must span.
    LeadingDimension {
        /// Which argument (`lda`, `ldb`, `ldc`).
        what: &'static str,
        /// The value given.
        value: usize,
        /// The smallest valid value.
        min: usize,
    },
    /// A slice is shorter than the matrix it must hold.
    SliceTooShort {
        /// Which operand (`a`, `b`, `c`).
        what: &'static str,
        /// The slice length given.
        len: usize,
        /// The length needed.
        needed: usize,
    },
    /// A thread count of zero was requested.
    InvalidThreads,
}

impl fmt::Display for BlasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlasError::DimensionTooLarge { what, value } => write!(
                f,
                "sgemm: {what} = {value} exceeds the 32-bit BLAS limit {}",
                i32::MAX
            ),
            BlasError::LeadingDimension { what, value, min } => {
                write!(
                    f,
                    "sgemm: {what} = {value} is smaller than the required {min}"
                )
            }
            BlasError::SliceTooShort { what, len, needed } => write!(
                f,
                "sgemm: matrix {what} needs {needed} elements but the slice holds {len}"
            ),
            BlasError::InvalidThreads => write!(f, "the BLAS thread count must be at least 1"),
        }
    }
}

impl std::error::Error for BlasError {}

fn to_int(what: &'static str, value: usize) -> Result<c_int, BlasError> {
    c_int::try_from(value).map_err(|_| BlasError::DimensionTooLarge { what, value })
}

/// Checks one row-major operand of `rows` x `cols` stored with leading dimension `ld`.
fn check_operand(
    what: &'static str,
    ld_name: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), BlasError> {
    let min = cols.max(1);
    if ld < min {
        return Err(BlasError::LeadingDimension {
            what: ld_name,
            value: ld,
            min,
        });
    }
    let needed = if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1)
            .checked_mul(ld)
            .and_then(|v| v.checked_add(cols))
            .ok_or(BlasError::DimensionTooLarge {
                what: ld_name,
                value: ld,
            })?
    };
    if len < needed {
        return Err(BlasError::SliceTooShort { what, len, needed });
    }
    Ok(())
}

/// Row-major single-precision matrix multiply: `C = alpha * op(A) * op(B) + beta * C`.
///
/// `op(A)` is `m` x `k`, `op(B)` is `k` x `n` and `C` is `m` x `n`. When
/// `trans_a` is [`Transpose::No`], `a` holds an `m` x `k` matrix with row stride
/// `lda`; with [`Transpose::Yes`] it holds the `k` x `m` matrix whose transpose is
/// used. Likewise for `b`. `ldc` is the row stride of `c`. With `beta == 0` the
/// previous content of `c` is ignored (it may even hold NaN).
///
/// Returns an error (and touches nothing) when a dimension does not fit the
/// 32-bit BLAS interface, a leading dimension is too small, or a slice is too
/// short for the shape it must hold.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: Transpose,
    trans_b: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) -> Result<(), BlasError> {
    let (a_rows, a_cols) = match trans_a {
        Transpose::No => (m, k),
        Transpose::Yes => (k, m),
    };
    let (b_rows, b_cols) = match trans_b {
        Transpose::No => (k, n),
        Transpose::Yes => (n, k),
    };
    check_operand("a", "lda", a.len(), a_rows, a_cols, lda)?;
    check_operand("b", "ldb", b.len(), b_rows, b_cols, ldb)?;
    check_operand("c", "ldc", c.len(), m, n, ldc)?;
    let (mi, ni, ki) = (to_int("m", m)?, to_int("n", n)?, to_int("k", k)?);
    let (ldai, ldbi, ldci) = (
        to_int("lda", lda)?,
        to_int("ldb", ldb)?,
        to_int("ldc", ldc)?,
    );
    if m == 0 || n == 0 {
        return Ok(());
    }
    let ta = if trans_a == Transpose::Yes {
        CBLAS_TRANS
    } else {
        CBLAS_NO_TRANS
    };
    let tb = if trans_b == Transpose::Yes {
        CBLAS_TRANS
    } else {
        CBLAS_NO_TRANS
    };
    // SAFETY: every operand was checked above to hold the full strided matrix
    // that BLAS reads (a, b) or writes (c); the dimensions fit in c_int and the
    // leading dimensions satisfy the BLAS requirements, so OpenBLAS stays in bounds.
    // `c` is an exclusive borrow, so it cannot alias `a` or `b`.
    unsafe {
        cblas_sgemm(
            CBLAS_ROW_MAJOR,
            ta,
            tb,
            mi,
            ni,
            ki,
            alpha,
            a.as_ptr(),
            ldai,
            b.as_ptr(),
            ldbi,
            beta,
            c.as_mut_ptr(),
            ldci,
        );
    }
    Ok(())
}

/// Sets the number of threads OpenBLAS uses for later calls (process-wide).
///
/// OpenBLAS caps the value at the thread count it was built for
/// (see [`threads`] for the effective value). Zero is rejected.
pub fn set_threads(n: usize) -> Result<(), BlasError> {
    if n == 0 {
        return Err(BlasError::InvalidThreads);
    }
    let n = c_int::try_from(n).unwrap_or(c_int::MAX);
    // SAFETY: plain setter of an OpenBLAS global; any positive value is accepted.
    unsafe { openblas_set_num_threads(n) };
    Ok(())
}

/// The number of threads OpenBLAS currently uses (at least 1).
pub fn threads() -> usize {
    // SAFETY: plain getter of an OpenBLAS global.
    let n = unsafe { openblas_get_num_threads() };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn c_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: OpenBLAS returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The OpenBLAS build description, e.g. `"OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"`.
pub fn config() -> String {
    // SAFETY: returns a static string owned by OpenBLAS.
    c_str(unsafe { openblas_get_config() })
}

/// The CPU kernel family OpenBLAS selected at run time, e.g. `"Zen"` or `"Haswell"`.
pub fn core_name() -> String {
    // SAFETY: returns a static string owned by OpenBLAS.
    c_str(unsafe { openblas_get_corename() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Serialises the tests that change the process-wide thread count.
    static THREADS: Mutex<()> = Mutex::new(());

    /// Deterministic pseudo-random values in [-1, 1).
    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn naive(
        ta: Transpose,
        tb: Transpose,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if ta == Transpose::No {
                        a[i * lda + p]
                    } else {
                        a[p * lda + i]
                    };
                    let bv = if tb == Transpose::No {
                        b[p * ldb + j]
                    } else {
                        b[j * ldb + p]
                    };
                    s += av as f64 * bv as f64;
                }
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * ldc + j]
                };
                c[i * ldc + j] = alpha * s as f32 + old;
            }
        }
    }

    #[test]
    fn matches_naive_for_all_transpositions_and_strides() {
        let (m, n, k) = (37, 29, 53);
        for &ta in &[Transpose::No, Transpose::Yes] {
            for &tb in &[Transpose::No, Transpose::Yes] {
                let (ar, ac) = if ta == Transpose::No { (m, k) } else { (k, m) };
                let (br, bc) = if tb == Transpose::No { (k, n) } else { (n, k) };
                let (lda, ldb, ldc) = (ac + 3, bc + 1, n + 5);
                let a = fill(ar * lda, 1);
                let b = fill(br * ldb, 2);
                let c0 = fill(m * ldc, 3);
                let mut c1 = c0.clone();
                let mut c2 = c0.clone();
                sgemm(ta, tb, m, n, k, 0.75, &a, lda, &b, ldb, 0.5, &mut c1, ldc).unwrap();
                naive(ta, tb, m, n, k, 0.75, &a, lda, &b, ldb, 0.5, &mut c2, ldc);
                for i in 0..m {
                    for j in 0..n {
                        let (x, y) = (c1[i * ldc + j], c2[i * ldc + j]);
                        assert!((x - y).abs() < 1e-4, "{ta:?}/{tb:?} ({i},{j}): {x} vs {y}");
                    }
                    // Padding columns beyond n are untouched.
                    for j in n..ldc {
                        assert_eq!(c1[i * ldc + j], c0[i * ldc + j]);
                    }
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let a = [1.0, 2.0, 3.0, 4.0]; // 2x2
        let b = [5.0, 6.0, 7.0, 8.0]; // 2x2
        let mut c = [f32::NAN; 4];
        sgemm(
            Transpose::No,
            Transpose::No,
            2,
            2,
            2,
            1.0,
            &a,
            2,
            &b,
            2,
            0.0,
            &mut c,
            2,
        )
        .unwrap();
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn larger_product_uses_threads_and_stays_correct() {
        let (m, n, k) = (300, 257, 190);
        let a = fill(m * k, 4);
        let b = fill(n * k, 5);
        let mut c = vec![0.0; m * n];
        let mut r = vec![0.0; m * n];
        let _g = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        for t in [1, 2] {
            set_threads(t).unwrap();
            sgemm(
                Transpose::No,
                Transpose::Yes,
                m,
                n,
                k,
                1.0,
                &a,
                k,
                &b,
                k,
                0.0,
                &mut c,
                n,
            )
            .unwrap();
            naive(
                Transpose::No,
                Transpose::Yes,
                m,
                n,
                k,
                1.0,
                &a,
                k,
                &b,
                k,
                0.0,
                &mut r,
                n,
            );
            let max = c
                .iter()
                .zip(&r)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(max < 1e-3, "threads={t}: max diff {max}");
        }
    }

    #[test]
    fn rejects_bad_shapes_without_touching_c() {
        let a = vec![1.0; 6];
        let b = vec![1.0; 6];
        let mut c = vec![7.0; 4];
        let e = sgemm(
            Transpose::No,
            Transpose::No,
            2,
            2,
            4,
            1.0,
            &a,
            4,
            &b,
            2,
            0.0,
            &mut c,
            2,
        );
        assert!(
            matches!(
                e,
                Err(BlasError::SliceTooShort {
                    what: "a",
                    needed: 8,
                    ..
                })
            ),
            "{e:?}"
        );
        let e = sgemm(
            Transpose::No,
            Transpose::No,
            2,
            2,
            3,
            1.0,
            &a,
            2,
            &b,
            2,
            0.0,
            &mut c,
            2,
        );
        assert!(
            matches!(
                e,
                Err(BlasError::LeadingDimension {
                    what: "lda",
                    min: 3,
                    ..
                })
            ),
            "{e:?}"
        );
        let e = sgemm(
            Transpose::No,
            Transpose::Yes,
            2,
            2,
            3,
            1.0,
            &a,
            3,
            &b,
            3,
            0.0,
            &mut c,
            1,
        );
        assert!(
            matches!(e, Err(BlasError::LeadingDimension { what: "ldc", .. })),
            "{e:?}"
        );
        let mut short = vec![0.0; 3];
        let e = sgemm(
            Transpose::No,
            Transpose::Yes,
            2,
            2,
            3,
            1.0,
            &a,
            3,
            &b,
            3,
            0.0,
            &mut short,
            2,
        );
        assert!(
            matches!(e, Err(BlasError::SliceTooShort { what: "c", .. })),
            "{e:?}"
        );
        let huge = (i32::MAX as usize) + 1;
        let e = sgemm(
            Transpose::No,
            Transpose::No,
            0,
            0,
            0,
            1.0,
            &a,
            huge,
            &b,
            1,
            0.0,
            &mut c,
            1,
        );
        assert!(
            matches!(e, Err(BlasError::DimensionTooLarge { what: "lda", .. })),
            "{e:?}"
        );
        assert_eq!(c, vec![7.0; 4]);
        assert!(e.unwrap_err().to_string().contains("lda"));
    }

    #[test]
    fn empty_dimensions_are_fine() {
        let mut c = vec![3.0; 4];
        // k = 0: C = beta * C.
        sgemm(
            Transpose::No,
            Transpose::No,
            2,
            2,
            0,
            1.0,
            &[],
            1,
            &[],
            2,
            0.5,
            &mut c,
            2,
        )
        .unwrap();
        assert_eq!(c, vec![1.5; 4]);
        sgemm(
            Transpose::No,
            Transpose::No,
            0,
            2,
            3,
            1.0,
            &[],
            3,
            &[0.0; 6],
            2,
            0.0,
            &mut [],
            2,
        )
        .unwrap();
    }

    #[test]
    fn thread_control_and_config() {
        let _g = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(set_threads(0), Err(BlasError::InvalidThreads));
        set_threads(1).unwrap();
        assert_eq!(threads(), 1);
        set_threads(2).unwrap();
        assert!(threads() >= 1 && threads() <= 2);
        assert!(config().contains("OpenBLAS"), "{}", config());
        assert!(!core_name().is_empty());
    }
}
