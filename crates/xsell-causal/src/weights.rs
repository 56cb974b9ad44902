//! Weight matrices (dense f32 or GGML block-quantized) and linear layers.
//!
//! Quantized matrices keep their GGML blocks in memory. A product with activations
//! dequantizes tiles of rows (with candle's block decoders) into a small per-task buffer
//! and multiplies them with `gemm`, in parallel on the caller's rayon pool. The numbers
//! are therefore exactly those of the dequantized model (activations are not quantized),
//! only memory is saved. candle's own `QMatMul` is not used: on CPU it runs on a private,
//! affinity-pinned global thread pool (not the caller's) and its SIMD kernels are only
//! compiled in with a compile-time `target-cpu`, so it is several times slower here.

use crate::error::{LmError, Result};
use crate::kernels::{self, MatRef};
use candle_core::quantized::GgmlDType;
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use rayon::prelude::*;
use std::sync::Arc;
use xsell_blas::{F16, SendPtr};

/// Typed GGML blocks of a quantized matrix.
enum QBlocks {
    Q4_0(Vec<BlockQ4_0>),
    Q4_1(Vec<BlockQ4_1>),
    Q5_0(Vec<BlockQ5_0>),
    Q5_1(Vec<BlockQ5_1>),
    Q8_0(Vec<BlockQ8_0>),
    Q2K(Vec<BlockQ2K>),
    Q3K(Vec<BlockQ3K>),
    Q4K(Vec<BlockQ4K>),
    Q5K(Vec<BlockQ5K>),
    Q6K(Vec<BlockQ6K>),
}

/// Copies raw little-endian GGML block bytes into a typed vector.
fn blocks_from_bytes<T: GgmlType>(bytes: &[u8]) -> Result<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if size != T::DTYPE.type_size() {
        return Err(LmError::Unsupported(format!(
            "GGML block layout of {:?} differs from this build",
            T::DTYPE
        )));
    }
    if !bytes.len().is_multiple_of(size) {
        return Err(LmError::format(format!(
            "{:?} tensor data is {} bytes, not a whole number of {size}-byte blocks",
            T::DTYPE,
            bytes.len()
        )));
    }
    let n = bytes.len() / size;
    let mut v: Vec<T> = Vec::with_capacity(n);
    // SAFETY: the GGML block types are `repr(C)` structs of integers, f16 and byte arrays:
    // every bit pattern is a valid value. Exactly n * size bytes are written, then the
    // length is set.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr() as *mut u8, bytes.len());
        v.set_len(n);
    }
    Ok(v)
}

/// A `rows x cols` matrix stored as GGML quantized blocks, row-major.
pub(crate) struct QuantMatrix {
    rows: usize,
    cols: usize,
    blocks: QBlocks,
}

macro_rules! with_blocks {
    ($b:expr, $v:ident => $e:expr) => {
        match $b {
            QBlocks::Q4_0($v) => $e,
            QBlocks::Q4_1($v) => $e,
            QBlocks::Q5_0($v) => $e,
            QBlocks::Q5_1($v) => $e,
            QBlocks::Q8_0($v) => $e,
            QBlocks::Q2K($v) => $e,
            QBlocks::Q3K($v) => $e,
            QBlocks::Q4K($v) => $e,
            QBlocks::Q5K($v) => $e,
            QBlocks::Q6K($v) => $e,
        }
    };
}

fn dequant_rows<T: GgmlType>(blocks: &[T], cols: usize, r0: usize, r1: usize, out: &mut [f32]) {
    let bpr = cols / T::BLCK_SIZE;
    let (blocks, out) = (&blocks[r0 * bpr..r1 * bpr], &mut out[..(r1 - r0) * cols]);
    match T::DTYPE {
        GgmlDType::Q4_0 => decode::q4_0(bytes_of(blocks), out),
        GgmlDType::Q4_1 => decode::q4_1(bytes_of(blocks), out),
        GgmlDType::Q8_0 => decode::q8_0(bytes_of(blocks), out),
        _ => T::to_float(blocks, out),
    }
}

/// The bytes of a slice of GGML blocks (their in-memory layout is the GGUF layout).
fn bytes_of<T: GgmlType>(blocks: &[T]) -> &[u8] {
    // SAFETY: GGML block types are padding-free `repr(C)` structs of plain data, so every
    // byte of the slice is initialised; the length is the slice's size in bytes.
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(blocks))
    }
}

/// Fast decoders of the most common GGML block types, bit-identical to candle's
/// `to_float` (same f32 operations, vectorised with AVX2 when available).
mod decode {
    use half::f16;

    #[inline]
    fn f16_at(b: &[u8], i: usize) -> f32 {
        f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
    }

    #[cfg(target_arch = "x86_64")]
    fn avx2() -> bool {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    fn avx2() -> bool {
        false
    }

    /// Q4_0: 2-byte f16 scale d, 16 bytes of nibbles; value = (q - 8) * d.
    pub(super) fn q4_0(bytes: &[u8], out: &mut [f32]) {
        let nb = (bytes.len() / 18).min(out.len() / 32);
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2 is available; nb blocks fit both slices.
            return unsafe { x86::q4(bytes, out, nb, 18, false) };
        }
        for b in 0..nb {
            let blk = &bytes[b * 18..(b + 1) * 18];
            let d = f16_at(blk, 0);
            for j in 0..16 {
                out[b * 32 + j] = ((blk[2 + j] & 0x0F) as i16 - 8) as f32 * d;
                out[b * 32 + j + 16] = ((blk[2 + j] >> 4) as i16 - 8) as f32 * d;
            }
        }
    }

    /// Q4_1: f16 d, f16 m, 16 bytes of nibbles; value = q * d + m.
    pub(super) fn q4_1(bytes: &[u8], out: &mut [f32]) {
        let nb = (bytes.len() / 20).min(out.len() / 32);
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2 is available; nb blocks fit both slices.
            return unsafe { x86::q4(bytes, out, nb, 20, true) };
        }
        for b in 0..nb {
            let blk = &bytes[b * 20..(b + 1) * 20];
            let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
            for j in 0..16 {
                out[b * 32 + j] = (blk[4 + j] & 0x0F) as f32 * d + m;
                out[b * 32 + j + 16] = (blk[4 + j] >> 4) as f32 * d + m;
            }
        }
    }

    /// Q8_0: f16 d, 32 signed bytes; value = q * d.
    pub(super) fn q8_0(bytes: &[u8], out: &mut [f32]) {
        let nb = (bytes.len() / 34).min(out.len() / 32);
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2 is available; nb blocks fit both slices.
            return unsafe { x86::q8_0(bytes, out, nb) };
        }
        for b in 0..nb {
            let blk = &bytes[b * 34..(b + 1) * 34];
            let d = f16_at(blk, 0);
            for j in 0..32 {
                out[b * 32 + j] = (blk[2 + j] as i8) as f32 * d;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::f16_at;
        use std::arch::x86_64::*;

        /// Q4_0 (`size` 18, no min) or Q4_1 (`size` 20, with min). Safety: AVX2
        /// available, `bytes` holds `nb * size` bytes and `out` `nb * 32` values.
        #[target_feature(enable = "avx2")]
        pub(in super::super) unsafe fn q4(
            bytes: &[u8],
            out: &mut [f32],
            nb: usize,
            size: usize,
            with_min: bool,
        ) {
            let mask = _mm_set1_epi8(0x0F);
            let eight = _mm256_set1_epi32(8);
            for b in 0..nb {
                let blk = &bytes[b * size..(b + 1) * size];
                let d = _mm256_set1_ps(f16_at(blk, 0));
                let m = _mm256_set1_ps(if with_min { f16_at(blk, 2) } else { 0.0 });
                let qoff = if with_min { 4 } else { 2 };
                // SAFETY: 16 bytes at qoff are inside blk; 32 outputs at b*32 are inside out.
                unsafe {
                    let qs = _mm_loadu_si128(blk.as_ptr().add(qoff) as *const __m128i);
                    let lo = _mm_and_si128(qs, mask);
                    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
                    let dst = out.as_mut_ptr().add(b * 32);
                    for (h, v) in [lo, hi].into_iter().enumerate() {
                        for part in 0..2 {
                            let bytes8 = if part == 0 { v } else { _mm_srli_si128(v, 8) };
                            let mut q = _mm256_cvtepu8_epi32(bytes8);
                            if !with_min {
                                q = _mm256_sub_epi32(q, eight);
                            }
                            let f = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
                            let f = if with_min { _mm256_add_ps(f, m) } else { f };
                            _mm256_storeu_ps(dst.add(h * 16 + part * 8), f);
                        }
                    }
                }
            }
        }

        /// Safety: AVX2 available, `bytes` holds `nb * 34` bytes and `out` `nb * 32` values.
        #[target_feature(enable = "avx2")]
        pub(in super::super) unsafe fn q8_0(bytes: &[u8], out: &mut [f32], nb: usize) {
            for b in 0..nb {
                let blk = &bytes[b * 34..(b + 1) * 34];
                let d = _mm256_set1_ps(f16_at(blk, 0));
                // SAFETY: 32 bytes at offset 2 are inside blk; 32 outputs inside out.
                unsafe {
                    let dst = out.as_mut_ptr().add(b * 32);
                    for part in 0..4 {
                        let q8 = _mm_loadl_epi64(blk.as_ptr().add(2 + part * 8) as *const __m128i);
                        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d);
                        _mm256_storeu_ps(dst.add(part * 8), f);
                    }
                }
            }
        }
    }
}

impl QuantMatrix {
    /// Whether `dtype` is a block-quantized type this module can keep in memory.
    pub(crate) fn supports(dtype: GgmlDType) -> bool {
        use GgmlDType::*;
        matches!(
            dtype,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K
        )
    }

    /// Builds a matrix from the raw GGUF bytes of a `rows x cols` tensor.
    pub(crate) fn from_bytes(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self> {
        let bs = dtype.block_size();
        if !cols.is_multiple_of(bs) {
            return Err(LmError::format(format!(
                "row length {cols} is not a multiple of the {dtype:?} block size {bs}"
            )));
        }
        let want = rows
            .checked_mul(cols / bs)
            .and_then(|b| b.checked_mul(dtype.type_size()))
            .ok_or_else(|| LmError::format("tensor size overflows"))?;
        if bytes.len() != want {
            return Err(LmError::format(format!(
                "{dtype:?} tensor of {rows}x{cols} needs {want} bytes, got {}",
                bytes.len()
            )));
        }
        let blocks = match dtype {
            GgmlDType::Q4_0 => QBlocks::Q4_0(blocks_from_bytes(bytes)?),
            GgmlDType::Q4_1 => QBlocks::Q4_1(blocks_from_bytes(bytes)?),
            GgmlDType::Q5_0 => QBlocks::Q5_0(blocks_from_bytes(bytes)?),
            GgmlDType::Q5_1 => QBlocks::Q5_1(blocks_from_bytes(bytes)?),
            GgmlDType::Q8_0 => QBlocks::Q8_0(blocks_from_bytes(bytes)?),
            GgmlDType::Q2K => QBlocks::Q2K(blocks_from_bytes(bytes)?),
            GgmlDType::Q3K => QBlocks::Q3K(blocks_from_bytes(bytes)?),
            GgmlDType::Q4K => QBlocks::Q4K(blocks_from_bytes(bytes)?),
            GgmlDType::Q5K => QBlocks::Q5K(blocks_from_bytes(bytes)?),
            GgmlDType::Q6K => QBlocks::Q6K(blocks_from_bytes(bytes)?),
            other => {
                return Err(LmError::Unsupported(format!(
                    "cannot keep {other:?} tensors quantized"
                )));
            }
        };
        Ok(QuantMatrix { rows, cols, blocks })
    }

    /// Dequantizes rows `r0..r1` into `out` (at least `(r1 - r0) * cols` long).
    fn dequant(&self, r0: usize, r1: usize, out: &mut [f32]) {
        with_blocks!(&self.blocks, b => dequant_rows(b, self.cols, r0, r1, out))
    }

    fn bytes(&self) -> usize {
        with_blocks!(&self.blocks, b => std::mem::size_of_val(b.as_slice()))
    }
}

/// A weight matrix of shape `rows x cols` (PyTorch `Linear` convention: out x in).
pub(crate) enum Weight {
    /// Dense row-major f32.
    F32 {
        data: Vec<f32>,
        rows: usize,
        cols: usize,
    },
    /// Dense row-major IEEE half precision (widened to f32 in registers).
    F16 {
        data: Vec<F16>,
        rows: usize,
        cols: usize,
    },
    /// GGML block-quantized.
    Quant(QuantMatrix),
}

impl Weight {
    /// Dense weight from row-major data; checks the length.
    pub(crate) fn dense(data: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(LmError::format(format!(
                "weight has {} values, expected {rows}x{cols}",
                data.len()
            )));
        }
        Ok(Weight::F32 { data, rows, cols })
    }

    pub(crate) fn rows(&self) -> usize {
        match self {
            Weight::F32 { rows, .. } | Weight::F16 { rows, .. } => *rows,
            Weight::Quant(q) => q.rows,
        }
    }

    pub(crate) fn cols(&self) -> usize {
        match self {
            Weight::F32 { cols, .. } | Weight::F16 { cols, .. } => *cols,
            Weight::Quant(q) => q.cols,
        }
    }

    /// Bytes held in memory.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Weight::F32 { data, .. } => data.len() * 4,
            Weight::F16 { data, .. } => data.len() * 2,
            Weight::Quant(q) => q.bytes(),
        }
    }

    /// Copies row `r` (dequantized) into `out` (`cols` long).
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        match self {
            Weight::F32 { data, cols, .. } => out.copy_from_slice(&data[r * cols..(r + 1) * cols]),
            Weight::F16 { data, cols, .. } => {
                xsell_blas::widen_f16(&data[r * cols..(r + 1) * cols], out)
            }
            Weight::Quant(q) => q.dequant(r, r + 1, out),
        }
    }

    /// dst[:, col_off .. col_off + rows] (+)= x[n, cols] · selfᵀ, `dst` has row stride `ld`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_t(
        &self,
        x: &[f32],
        n: usize,
        dst: &mut [f32],
        ld: usize,
        col_off: usize,
        accumulate: bool,
        threads: usize,
    ) {
        self.matmul_t_rows(x, n, 0, self.rows(), dst, ld, col_off, accumulate, threads)
    }

    /// Like [`Weight::matmul_t`] for weight rows `r0..r1` only (output columns
    /// `col_off .. col_off + r1 - r0`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_t_rows(
        &self,
        x: &[f32],
        n: usize,
        r0: usize,
        r1: usize,
        dst: &mut [f32],
        ld: usize,
        col_off: usize,
        accumulate: bool,
        threads: usize,
    ) {
        let cols = self.cols();
        assert!(
            r0 <= r1 && r1 <= self.rows(),
            "matmul_t_rows: row range out of bounds"
        );
        let rows = r1 - r0;
        match self {
            Weight::F32 { data, .. } if n < kernels::SMALL_M => kernels::matmul_small(
                n,
                rows,
                cols,
                x,
                &data[r0 * cols..r1 * cols],
                dst,
                col_off,
                ld,
                accumulate,
                threads,
            ),
            Weight::F32 { data, .. } => kernels::matmul(
                n,
                rows,
                cols,
                dst,
                col_off,
                ld,
                accumulate,
                MatRef {
                    data: x,
                    off: 0,
                    rs: cols,
                    cs: 1,
                },
                MatRef {
                    data,
                    off: r0 * cols,
                    rs: 1,
                    cs: cols,
                },
                1.0,
                threads,
            ),
            Weight::F16 { data, .. } if n < kernels::SMALL_M => kernels::matmul_small(
                n,
                rows,
                cols,
                x,
                &data[r0 * cols..r1 * cols],
                dst,
                col_off,
                ld,
                accumulate,
                threads,
            ),
            Weight::F16 { .. } | Weight::Quant(_) => {
                if n == 0 || rows == 0 {
                    return;
                }
                assert!(x.len() >= n * cols, "matmul_t: input too short");
                assert!(
                    col_off + rows <= ld && (n - 1) * ld + ld <= dst.len(),
                    "matmul_t: dst out of bounds"
                );
                // Tiles of rows: enough of them to balance the pool, each small enough to
                // stay in L2 while it is multiplied with the activations.
                // For few activation rows the kernel is a dot-product sweep: keep the tile in L1.
                let budget = if n < kernels::SMALL_M { 8192 } else { 16384 };
                let tile = (budget / cols.max(1)).clamp(4, 256).min(rows);
                let n_tiles = rows.div_ceil(tile);
                let dst_ptr = SendPtr(dst.as_mut_ptr());
                (0..n_tiles).into_par_iter().for_each_init(
                    || vec![0f32; tile * cols],
                    |buf, t| {
                        let t0 = t * tile;
                        let t1 = (t0 + tile).min(rows);
                        match self {
                            Weight::F16 { data, .. } => xsell_blas::widen_f16(
                                &data[(r0 + t0) * cols..(r0 + t1) * cols],
                                buf,
                            ),
                            Weight::Quant(q) => q.dequant(r0 + t0, r0 + t1, buf),
                            Weight::F32 { .. } => {
                                unreachable!("dense f32 weights are multiplied in place")
                            }
                        }
                        // SAFETY: bounds were asserted above (weight rows t0..t1 of the range
                        // map to dst columns col_off+t0..col_off+t1 < ld, n rows); tiles
                        // write disjoint columns, so no two tasks touch the same element.
                        unsafe {
                            if n < kernels::SMALL_M {
                                xsell_blas::sgemm_nt_small_unchecked(
                                    n,
                                    t1 - t0,
                                    cols,
                                    x.as_ptr(),
                                    buf.as_ptr(),
                                    dst_ptr.get().add(col_off + t0),
                                    ld,
                                    accumulate,
                                );
                            } else {
                                kernels::matmul_unchecked(
                                    n,
                                    t1 - t0,
                                    cols,
                                    dst_ptr.get().add(col_off + t0),
                                    ld,
                                    accumulate,
                                    x.as_ptr(),
                                    cols,
                                    1,
                                    buf.as_ptr(),
                                    1,
                                    cols,
                                    1.0,
                                    1,
                                )
                            }
                        }
                    },
                );
            }
        }
    }
}

/// One block of output columns of a [`Linear`].
pub(crate) struct LinearPart {
    pub w: Arc<Weight>,
    pub bias: Option<Vec<f32>>,
}

/// A linear layer whose output columns are the concatenation of its parts (used to run
/// q/k/v or gate/up projections as one layer without copying weights).
pub(crate) struct Linear {
    parts: Vec<(LinearPart, usize)>,
    out_dim: usize,
    in_dim: usize,
}

impl Linear {
    /// Builds a layer; every part must have `in_dim` columns and a bias of its row count.
    pub(crate) fn new(parts: Vec<LinearPart>, in_dim: usize) -> Result<Self> {
        let mut off = 0;
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            if p.w.cols() != in_dim {
                return Err(LmError::format(format!(
                    "weight has {} input columns, expected {in_dim}",
                    p.w.cols()
                )));
            }
            if let Some(b) = &p.bias
                && b.len() != p.w.rows()
            {
                return Err(LmError::format(format!(
                    "bias has {} values, expected {}",
                    b.len(),
                    p.w.rows()
                )));
            }
            let rows = p.w.rows();
            out.push((p, off));
            off += rows;
        }
        Ok(Linear {
            parts: out,
            out_dim: off,
            in_dim,
        })
    }

    pub(crate) fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Whether one of the parts is the weight `w` itself (tied embeddings).
    pub(crate) fn shares(&self, w: &Arc<Weight>) -> bool {
        self.parts.iter().any(|(p, _)| Arc::ptr_eq(&p.w, w))
    }

    pub(crate) fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Bytes of weights held (shared weights are counted by each holder).
    pub(crate) fn bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|(p, _)| p.w.bytes() + p.bias.as_ref().map_or(0, |b| b.len() * 4))
            .sum()
    }

    /// y[n, out_dim] = x[n, in_dim] · Wᵀ + b, or y += ... when `accumulate`.
    pub(crate) fn forward_into(
        &self,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        accumulate: bool,
        threads: usize,
    ) {
        for (p, off) in &self.parts {
            p.w.matmul_t(x, n, y, self.out_dim, *off, accumulate, threads);
            if let Some(b) = &p.bias {
                for row in y.chunks_exact_mut(self.out_dim).take(n) {
                    for (v, bb) in row[*off..*off + b.len()].iter_mut().zip(b) {
                        *v += bb;
                    }
                }
            }
        }
    }

    /// Output columns `c0..c1` only: y[n, c1 - c0] = x · W[c0..c1]ᵀ + b[c0..c1].
    pub(crate) fn forward_cols(
        &self,
        x: &[f32],
        n: usize,
        c0: usize,
        c1: usize,
        y: &mut [f32],
        threads: usize,
    ) {
        let width = c1 - c0;
        for (p, off) in &self.parts {
            let (lo, hi) = (c0.max(*off), c1.min(off + p.w.rows()));
            if lo >= hi {
                continue;
            }
            p.w.matmul_t_rows(x, n, lo - off, hi - off, y, width, lo - c0, false, threads);
            if let Some(b) = &p.bias {
                for row in y.chunks_exact_mut(width).take(n) {
                    for (v, bb) in row[lo - c0..hi - c0].iter_mut().zip(&b[lo - off..hi - off]) {
                        *v += bb;
                    }
                }
            }
        }
    }

    /// Allocating version of [`Linear::forward_into`].
    pub(crate) fn forward(&self, x: &[f32], n: usize, threads: usize) -> Vec<f32> {
        debug_assert!(x.len() >= n * self.in_dim);
        let mut y = vec![0f32; n * self.out_dim];
        self.forward_into(x, n, &mut y, false, threads);
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn quantized(rows: usize, cols: usize, dtype: GgmlDType) -> (QuantMatrix, Vec<f32>) {
        let vals: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1000) as f32 / 500.0 - 1.0) * 0.8)
            .collect();
        let t = Tensor::from_vec(vals, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let bytes = q.data().unwrap().to_vec();
        (
            QuantMatrix::from_bytes(dtype, rows, cols, &bytes).unwrap(),
            deq,
        )
    }

    #[test]
    fn quantized_matmul_equals_dense_dequantized() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q5_1,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let (rows, cols) = (70, 256);
            let (q, deq) = quantized(rows, cols, dtype);
            let wq = Weight::Quant(q);
            let wd = Weight::dense(deq.clone(), rows, cols).unwrap();
            let n = 3;
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
                .collect();
            let mut a = vec![0f32; n * (rows + 5)];
            let mut b = vec![0f32; n * (rows + 5)];
            pool.install(|| {
                wq.matmul_t(&x, n, &mut a, rows + 5, 5, false, 2);
                wd.matmul_t(&x, n, &mut b, rows + 5, 5, false, 2);
            });
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-4, "{dtype:?}: {u} vs {v}");
            }
            assert!(a[5] != 0.0);
            let mut row = vec![0f32; cols];
            wq.row_into(3, &mut row);
            assert_eq!(&row[..], &deq[3 * cols..4 * cols]);
            assert!(wq.bytes() < wd.bytes() / 3);
        }
    }

    #[test]
    fn fast_decoders_are_bit_identical_to_candle() {
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (rows, cols) = (9, 96);
            let vals: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919 % 1013) as f32 - 500.0) * 0.013)
                .collect();
            let t = Tensor::from_vec(vals, (rows, cols), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, dtype).unwrap();
            let want: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let bytes = q.data().unwrap().to_vec();
            let mut fast = vec![0f32; rows * cols];
            let mut scalar = vec![0f32; rows * cols];
            match dtype {
                GgmlDType::Q4_0 => {
                    decode::q4_0(&bytes, &mut fast);
                    scalar_q4_0(&bytes, &mut scalar);
                }
                GgmlDType::Q4_1 => {
                    decode::q4_1(&bytes, &mut fast);
                    scalar_q4_1(&bytes, &mut scalar);
                }
                _ => {
                    decode::q8_0(&bytes, &mut fast);
                    scalar_q8_0(&bytes, &mut scalar);
                }
            }
            for ((a, b), c) in fast.iter().zip(&want).zip(&scalar) {
                assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?}");
                assert_eq!(c.to_bits(), b.to_bits(), "{dtype:?} scalar");
            }
        }
    }

    // The portable decoders, reached directly (the public ones pick AVX2 when present).
    fn scalar_q4_0(b: &[u8], o: &mut [f32]) {
        for (blk, out) in b.chunks_exact(18).zip(o.chunks_exact_mut(32)) {
            let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
            for j in 0..16 {
                out[j] = ((blk[2 + j] & 0x0F) as i16 - 8) as f32 * d;
                out[j + 16] = ((blk[2 + j] >> 4) as i16 - 8) as f32 * d;
            }
        }
    }
    fn scalar_q4_1(b: &[u8], o: &mut [f32]) {
        for (blk, out) in b.chunks_exact(20).zip(o.chunks_exact_mut(32)) {
            let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
            let m = half::f16::from_bits(u16::from_le_bytes([blk[2], blk[3]])).to_f32();
            for j in 0..16 {
                out[j] = (blk[4 + j] & 0x0F) as f32 * d + m;
                out[j + 16] = (blk[4 + j] >> 4) as f32 * d + m;
            }
        }
    }
    fn scalar_q8_0(b: &[u8], o: &mut [f32]) {
        for (blk, out) in b.chunks_exact(34).zip(o.chunks_exact_mut(32)) {
            let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
            for j in 0..32 {
                out[j] = (blk[2 + j] as i8) as f32 * d;
            }
        }
    }

    #[test]
    fn bad_quantized_bytes_are_errors() {
        assert!(matches!(
            QuantMatrix::from_bytes(GgmlDType::Q4_0, 2, 32, &[0u8; 35]),
            Err(LmError::ModelFormat(_))
        ));
        assert!(matches!(
            QuantMatrix::from_bytes(GgmlDType::Q4_0, 2, 30, &[0u8; 36]),
            Err(LmError::ModelFormat(_))
        ));
        assert!(QuantMatrix::from_bytes(GgmlDType::Q4_0, 2, 32, &[0u8; 36]).is_ok());
    }

    #[test]
    fn linear_parts_and_bias() {
        let w1 = Arc::new(Weight::dense(vec![1.0, 0.0, 0.0, 1.0], 2, 2).unwrap());
        let w2 = Arc::new(Weight::dense(vec![1.0, 1.0], 1, 2).unwrap());
        let lin = Linear::new(
            vec![
                LinearPart { w: w1, bias: None },
                LinearPart {
                    w: w2,
                    bias: Some(vec![10.0]),
                },
            ],
            2,
        )
        .unwrap();
        assert_eq!(lin.out_dim(), 3);
        let y = lin.forward(&[1.0, 2.0, 3.0, 4.0], 2, 1);
        assert_eq!(y, vec![1.0, 2.0, 13.0, 3.0, 4.0, 17.0]);
        let bad = Linear::new(
            vec![LinearPart {
                w: Arc::new(Weight::dense(vec![1.0; 3], 1, 3).unwrap()),
                bias: None,
            }],
            2,
        );
        assert!(bad.is_err());
        assert!(Weight::dense(vec![1.0; 3], 2, 2).is_err());
    }
}
