//! BERT encoder forward pass in f32 over *packed* sequences.
//!
//! All tokens of a mini-batch are stacked into one `T x hidden` matrix (no
//! padding), so every linear layer is a single OpenBLAS `sgemm` over all `T`
//! tokens; self-attention runs per sequence. This is exactly the computation of
//! a padded batch with an attention mask (padded keys get zero weight, padded
//! rows are discarded), without the wasted work on padding.

use crate::EmbedError;
use crate::config::{BertConfig, PoolingMode};
use crate::gemm;
use crate::math;
use crate::weights::{self, Header, Slot, Weights};
use rayon::ThreadPool;
use rayon::prelude::*;
use std::path::Path;
use xsell_blas::{F16, Transpose, sgemm};

/// Sequences at least this long use `sgemm` for attention (on the calling
/// thread, so OpenBLAS threads it); shorter ones use direct loops, in parallel
/// across sequences when a pool is given.
const ATTENTION_GEMM_MIN: usize = 48;

/// Rows per parallel task of the element-wise kernels.
const ROWS_PER_TASK: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
struct LayerSlots {
    q_w: Slot,
    q_b: Slot,
    k_w: Slot,
    k_b: Slot,
    v_w: Slot,
    v_b: Slot,
    ao_w: Slot,
    ao_b: Slot,
    ln1_w: Slot,
    ln1_b: Slot,
    i_w: Slot,
    i_b: Slot,
    o_w: Slot,
    o_b: Slot,
    ln2_w: Slot,
    ln2_b: Slot,
}

/// A loaded BERT encoder.
#[derive(Debug)]
pub(crate) struct Bert {
    pub cfg: BertConfig,
    weights: Weights,
    word: Slot,
    pos: Slot,
    typ: Slot,
    emb_ln_w: Slot,
    emb_ln_b: Slot,
    layers: Vec<LayerSlots>,
    /// Half-precision copies of the layer weight matrices, made on the first product with
    /// few rows (see [`HalfWeights`]).
    half: std::sync::OnceLock<HalfWeights>,
}

/// IEEE half-precision copies of the encoder's weight matrices, keyed by the `Slot` of the
/// f32 original. A short text (one `xsell.embed` call) multiplies a dozen token rows with
/// every weight once, so the product is bound by memory traffic; in half precision
/// MiniLM's matrices (22 MB instead of 44) stay in the last-level cache from one call to
/// the next. Products with many rows (batches) use the f32 weights through BLAS.
#[derive(Debug, Default)]
struct HalfWeights {
    data: Vec<F16>,
    /// (f32 slot start, offset in `data`) of every weight matrix, sorted by slot start.
    index: Vec<(usize, usize)>,
}

impl HalfWeights {
    fn new(weights: &Weights, layers: &[LayerSlots]) -> Self {
        let mut h = HalfWeights::default();
        for l in layers {
            for s in [l.q_w, l.k_w, l.v_w, l.ao_w, l.i_w, l.o_w] {
                h.index.push((s.start, h.data.len()));
                h.data.extend(weights.get(s).iter().map(|&v| F16::from_f32(v)));
            }
        }
        h.index.sort_unstable();
        h
    }

    /// The half-precision copy of the matrix at `s`.
    fn get(&self, s: Slot) -> &[F16] {
        let i = self.index.binary_search_by_key(&s.start, |e| e.0).expect("a layer weight matrix");
        let off = self.index[i].1;
        &self.data[off..off + s.len]
    }
}

/// Reusable work buffers of the forward pass.
#[derive(Default)]
pub(crate) struct Scratch {
    /// Hidden states `[T, hidden]`; holds the encoder output after [`Bert::forward`].
    pub h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    h1: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
}

/// Names and shapes of the tensors the encoder needs, in load order.
fn tensor_list(prefix: &str, c: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (c.hidden, c.intermediate);
    let mut v = vec![
        (
            format!("{prefix}embeddings.word_embeddings.weight"),
            vec![c.vocab_size, h],
        ),
        (
            format!("{prefix}embeddings.position_embeddings.weight"),
            vec![c.max_positions, h],
        ),
        (
            format!("{prefix}embeddings.token_type_embeddings.weight"),
            vec![c.type_vocab_size, h],
        ),
        (format!("{prefix}embeddings.LayerNorm.weight"), vec![h]),
        (format!("{prefix}embeddings.LayerNorm.bias"), vec![h]),
    ];
    for l in 0..c.layers {
        let p = format!("{prefix}encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            v.push((format!("{p}{name}"), shape));
        }
    }
    v
}

/// Runs `f(first_row, rows)` over `data` split into rows of `width`, in the pool when given.
fn for_rows<F>(pool: Option<&ThreadPool>, data: &mut [f32], width: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if width == 0 {
        return;
    }
    match pool {
        Some(p) if data.len() > width * ROWS_PER_TASK => p.install(|| {
            data.par_chunks_mut(width * ROWS_PER_TASK)
                .enumerate()
                .for_each(|(i, chunk)| f(i * ROWS_PER_TASK, chunk));
        }),
        _ => f(0, data),
    }
}

impl Bert {
    /// Loads the encoder weights (tensor names with or without a `bert.` prefix).
    pub fn load(
        path: &Path,
        header: &Header,
        cfg: &BertConfig,
        mmap: bool,
    ) -> Result<Bert, EmbedError> {
        let prefix = if header
            .tensors
            .contains_key("embeddings.word_embeddings.weight")
        {
            ""
        } else if header
            .tensors
            .contains_key("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            return Err(EmbedError::ModelFormat {
                path: path.to_path_buf(),
                message: "no BERT embeddings.word_embeddings.weight tensor (not a BERT model?)"
                    .into(),
            });
        };
        let list = tensor_list(prefix, cfg);
        let (weights, slots) = weights::load(path, header, &list, mmap)?;
        let mut it = slots.into_iter();
        let mut next = || it.next().unwrap_or_default();
        let (word, pos, typ, emb_ln_w, emb_ln_b) = (next(), next(), next(), next(), next());
        let mut layers = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            layers.push(LayerSlots {
                q_w: next(),
                q_b: next(),
                k_w: next(),
                k_b: next(),
                v_w: next(),
                v_b: next(),
                ao_w: next(),
                ao_b: next(),
                ln1_w: next(),
                ln1_b: next(),
                i_w: next(),
                i_b: next(),
                o_w: next(),
                o_b: next(),
                ln2_w: next(),
                ln2_b: next(),
            });
        }
        Ok(Bert {
            cfg: cfg.clone(),
            weights,
            word,
            pos,
            typ,
            emb_ln_w,
            emb_ln_b,
            layers,
            half: std::sync::OnceLock::new(),
        })
    }

    /// Whether the weights are a zero-copy map of the file.
    pub fn is_mapped(&self) -> bool {
        self.weights.mapped
    }

    #[inline]
    fn w(&self, s: Slot) -> &[f32] {
        self.weights.get(s)
    }

    /// `out[T, n] = x[T, k] * W^T + b (+ residual)`, with `W` stored `[n, k]`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        pool: Option<&ThreadPool>,
        x: &[f32],
        t: usize,
        k: usize,
        n: usize,
        w: Slot,
        b: Slot,
        residual: Option<&[f32]>,
        out: &mut [f32],
    ) -> Result<(), EmbedError> {
        let bias = self.w(b);
        for_rows(pool, &mut out[..t * n], n, |row0, rows| {
            for (r, o) in rows.chunks_exact_mut(n).enumerate() {
                match residual {
                    Some(res) => {
                        let rr = &res[(row0 + r) * n..(row0 + r + 1) * n];
                        for ((ov, bv), rv) in o.iter_mut().zip(bias).zip(rr) {
                            *ov = bv + rv;
                        }
                    }
                    None => o.copy_from_slice(bias),
                }
            }
        });
        if t <= gemm::SMALL_M_MAX {
            let half = self.half.get_or_init(|| HalfWeights::new(&self.weights, &self.layers));
            gemm::xwt_add(pool, x, t, k, half.get(w), n, out, n)?;
        } else {
            sgemm(
                Transpose::No,
                Transpose::Yes,
                t,
                n,
                k,
                1.0,
                x,
                k,
                self.w(w),
                k,
                1.0,
                out,
                n,
            )?;
        }
        Ok(())
    }

    /// Runs the encoder over `seqs` (token ids; each 1..=max_positions long, ids
    /// validated by the caller). The output hidden states (`[T, hidden]`, the
    /// sequences' tokens one after the other) are left in `s.h`.
    pub fn forward(
        &self,
        seqs: &[&[u32]],
        pool: Option<&ThreadPool>,
        s: &mut Scratch,
    ) -> Result<(), EmbedError> {
        let c = &self.cfg;
        let (hd, inter) = (c.hidden, c.intermediate);
        let t: usize = seqs.iter().map(|q| q.len()).sum();
        let mut offsets = Vec::with_capacity(seqs.len() + 1);
        offsets.push(0usize);
        for q in seqs {
            if q.is_empty() || q.len() > c.max_positions {
                return Err(EmbedError::InvalidParameter {
                    message: format!(
                        "a sequence has {} tokens; allowed 1..={}",
                        q.len(),
                        c.max_positions
                    ),
                });
            }
            if let Some(&bad) = q.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(EmbedError::InvalidParameter {
                    message: format!(
                        "token id {bad} is outside the vocabulary of {} entries",
                        c.vocab_size
                    ),
                });
            }
            offsets.push(offsets.last().copied().unwrap_or(0) + q.len());
        }
        for buf in [
            &mut s.h, &mut s.q, &mut s.k, &mut s.v, &mut s.ctx, &mut s.h1,
        ] {
            buf.resize(t * hd, 0.0);
        }
        s.inter.resize(t * inter, 0.0);

        // Embeddings: word + token type 0, then + position, then LayerNorm.
        let (word, pos, typ) = (self.w(self.word), self.w(self.pos), self.w(self.typ));
        let (lnw, lnb) = (self.w(self.emb_ln_w), self.w(self.emb_ln_b));
        let typ0 = &typ[..hd];
        let mut row = 0;
        for q in seqs {
            for (p, &id) in q.iter().enumerate() {
                let id = id as usize;
                let out = &mut s.h[row * hd..(row + 1) * hd];
                let we = &word[id * hd..(id + 1) * hd];
                let pe = &pos[p * hd..(p + 1) * hd];
                for (((o, a), b), cc) in out.iter_mut().zip(we).zip(typ0).zip(pe) {
                    *o = (a + b) + cc;
                }
                row += 1;
            }
        }
        let eps = c.eps;
        for_rows(pool, &mut s.h, hd, |_, rows| {
            for r in rows.chunks_exact_mut(hd) {
                math::layer_norm(r, lnw, lnb, eps);
            }
        });

        for l in &self.layers {
            self.linear(pool, &s.h, t, hd, hd, l.q_w, l.q_b, None, &mut s.q)?;
            self.linear(pool, &s.h, t, hd, hd, l.k_w, l.k_b, None, &mut s.k)?;
            self.linear(pool, &s.h, t, hd, hd, l.v_w, l.v_b, None, &mut s.v)?;
            self.attention(pool, &offsets, s)?;
            self.linear(
                pool,
                &s.ctx,
                t,
                hd,
                hd,
                l.ao_w,
                l.ao_b,
                Some(&s.h),
                &mut s.h1,
            )?;
            let (w1, b1) = (self.w(l.ln1_w), self.w(l.ln1_b));
            for_rows(pool, &mut s.h1, hd, |_, rows| {
                for r in rows.chunks_exact_mut(hd) {
                    math::layer_norm(r, w1, b1, eps);
                }
            });
            self.linear(pool, &s.h1, t, hd, inter, l.i_w, l.i_b, None, &mut s.inter)?;
            let act = c.activation;
            for_rows(pool, &mut s.inter, inter, |_, rows| act.apply(rows));
            self.linear(
                pool,
                &s.inter,
                t,
                inter,
                hd,
                l.o_w,
                l.o_b,
                Some(&s.h1),
                &mut s.h,
            )?;
            let (w2, b2) = (self.w(l.ln2_w), self.w(l.ln2_b));
            for_rows(pool, &mut s.h, hd, |_, rows| {
                for r in rows.chunks_exact_mut(hd) {
                    math::layer_norm(r, w2, b2, eps);
                }
            });
        }
        Ok(())
    }

    /// Multi-head self-attention of every sequence: `s.ctx = softmax(QK^T/sqrt(d)) V` per head.
    fn attention(
        &self,
        pool: Option<&ThreadPool>,
        offsets: &[usize],
        s: &mut Scratch,
    ) -> Result<(), EmbedError> {
        let hd = self.cfg.hidden;
        let heads = self.cfg.heads;
        let d = hd / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let (q, k, v) = (&s.q, &s.k, &s.v);

        // Split the context buffer into one disjoint chunk per sequence.
        let mut chunks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(offsets.len());
        let mut rest: &mut [f32] = &mut s.ctx[..offsets.last().copied().unwrap_or(0) * hd];
        for w in offsets.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (head, tail) = rest.split_at_mut((b - a) * hd);
            chunks.push((a, b - a, head));
            rest = tail;
        }
        let (long, short): (Vec<_>, Vec<_>) =
            chunks.into_iter().partition(|c| c.1 >= ATTENTION_GEMM_MIN);

        let short_one = |(start, len, ctx): (usize, usize, &mut [f32])| {
            let (qs, ks, vs) = (&q[start * hd..], &k[start * hd..], &v[start * hd..]);
            let mut scores = vec![0.0f32; len];
            for h in 0..heads {
                let off = h * d;
                for i in 0..len {
                    let qi = &qs[i * hd + off..i * hd + off + d];
                    for (j, sc) in scores.iter_mut().enumerate() {
                        *sc = math::dot(qi, &ks[j * hd + off..j * hd + off + d]) * scale;
                    }
                    math::softmax(&mut scores);
                    let out = &mut ctx[i * hd + off..i * hd + off + d];
                    out.iter_mut().for_each(|o| *o = 0.0);
                    for (j, &p) in scores.iter().enumerate() {
                        math::axpy(p, &vs[j * hd + off..j * hd + off + d], out);
                    }
                }
            }
        };
        match pool {
            Some(p) if short.len() > 1 => p.install(|| short.into_par_iter().for_each(short_one)),
            _ => short.into_iter().for_each(short_one),
        }

        for (start, len, ctx) in long {
            s.scores.resize(len * len, 0.0);
            for h in 0..heads {
                let off = start * hd + h * d;
                sgemm(
                    Transpose::No,
                    Transpose::Yes,
                    len,
                    len,
                    d,
                    scale,
                    &q[off..],
                    hd,
                    &k[off..],
                    hd,
                    0.0,
                    &mut s.scores,
                    len,
                )?;
                for_rows(pool, &mut s.scores, len, |_, rows| {
                    for r in rows.chunks_exact_mut(len) {
                        math::softmax(r);
                    }
                });
                sgemm(
                    Transpose::No,
                    Transpose::No,
                    len,
                    d,
                    len,
                    1.0,
                    &s.scores,
                    len,
                    &v[off..],
                    hd,
                    0.0,
                    &mut ctx[h * d..],
                    hd,
                )?;
            }
        }
        Ok(())
    }
}

/// Pools the hidden states of each sequence (`offsets` delimit the rows of `h`)
/// into one vector per sequence: the `modes` concatenated, then optionally L2-normalised
/// (`x / max(||x||, 1e-12)`, as `torch.nn.functional.normalize`).
pub(crate) fn pool_rows(
    h: &[f32],
    hd: usize,
    lens: &[usize],
    modes: &[PoolingMode],
    normalize: bool,
) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut start = 0;
    for &len in lens {
        let rows = &h[start * hd..(start + len) * hd];
        start += len;
        let mut v = Vec::with_capacity(hd * modes.len());
        for m in modes {
            match m {
                PoolingMode::Cls => v.extend_from_slice(&rows[..hd]),
                PoolingMode::Max => {
                    let mut mx = rows[..hd].to_vec();
                    for r in rows.chunks_exact(hd).skip(1) {
                        for (a, b) in mx.iter_mut().zip(r) {
                            *a = a.max(*b);
                        }
                    }
                    v.extend_from_slice(&mx);
                }
                PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                    let mut sum = vec![0.0f32; hd];
                    for r in rows.chunks_exact(hd) {
                        for (a, b) in sum.iter_mut().zip(r) {
                            *a += b;
                        }
                    }
                    let div = if *m == PoolingMode::Mean {
                        len as f32
                    } else {
                        (len as f32).sqrt()
                    };
                    v.extend(sum.iter().map(|x| x / div));
                }
            }
        }
        if normalize {
            let norm = math::dot(&v, &v).sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
        }
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes() {
        // Two sequences of lengths 2 and 1, hidden 2.
        let h = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0];
        let p = pool_rows(
            &h,
            2,
            &[2, 1],
            &[PoolingMode::Cls, PoolingMode::Max, PoolingMode::Mean],
            false,
        );
        assert_eq!(p[0], vec![1.0, 2.0, 3.0, 2.0, 2.0, -1.0]);
        assert_eq!(p[1], vec![5.0, 6.0, 5.0, 6.0, 5.0, 6.0]);
        let p = pool_rows(&h, 2, &[2], &[PoolingMode::MeanSqrtLen], false);
        assert!((p[0][0] - 4.0 / 2f32.sqrt()).abs() < 1e-6);
        let p = pool_rows(&h, 2, &[2, 1], &[PoolingMode::Mean], true);
        let n: f32 = p[1].iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-6);
        assert!((p[1][0] - 5.0 / 61f32.sqrt()).abs() < 1e-6);
        // A zero vector stays zero instead of becoming NaN.
        let p = pool_rows(&[0.0, 0.0], 2, &[1], &[PoolingMode::Mean], true);
        assert_eq!(p[0], vec![0.0, 0.0]);
    }
}
