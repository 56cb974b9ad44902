//! The decoder-only transformer (llama family and GPT-2) with logits at every position.
//!
//! Activations are row-major `[tokens, features]` f32 buffers. A forward pass takes a
//! list of *segments*: independent token sequences, each optionally continuing a
//! key/value cache. All their tokens go through the linear layers as one matrix (no
//! padding is ever computed) and attention is evaluated per (segment, head) with a causal
//! mask, so packing many short texts into one pass is exactly equivalent to running them
//! one by one, and a right-padded batch needs no attention mask at all.

use crate::error::{LmError, Result};
use crate::kernels::{self, MatRef};
use crate::weights::{Linear, Weight};
use rayon::prelude::*;
use std::sync::Arc;

/// Model family: decides position encoding, normalisation and MLP shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// Llama: RMSNorm, rotary positions (rotate-half layout), SwiGLU MLP, GQA.
    Llama,
    /// GPT-2: LayerNorm with bias, learned absolute positions, GELU MLP.
    Gpt2,
}

/// Activation of a non-gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    GeluTanh,
    GeluErf,
    Relu,
    Silu,
}

/// MLP variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MlpKind {
    /// `down(silu(gate(x)) * up(x))`; the up-projection layer holds the gate part first.
    SwiGlu,
    /// `down(act(up(x)))`.
    Plain(Act),
}

/// Normalisation layer.
pub(crate) enum Norm {
    Rms { w: Vec<f32>, eps: f32 },
    Layer { w: Vec<f32>, b: Vec<f32>, eps: f32 },
}

impl Norm {
    fn check(&self, dim: usize) -> Result<()> {
        let ok = match self {
            Norm::Rms { w, .. } => w.len() == dim,
            Norm::Layer { w, b, .. } => w.len() == dim && b.len() == dim,
        };
        if ok {
            Ok(())
        } else {
            Err(LmError::format(format!("norm weight is not of size {dim}")))
        }
    }

    fn apply_rows(&self, x: &[f32], out: &mut [f32], dim: usize) {
        let f = |(xi, oi): (&[f32], &mut [f32])| match self {
            Norm::Rms { w, eps } => kernels::rms_norm(xi, w, *eps, oi),
            Norm::Layer { w, b, eps } => kernels::layer_norm(xi, w, b, *eps, oi),
        };
        if x.len() / dim >= 64 {
            x.par_chunks_exact(dim)
                .zip(out.par_chunks_exact_mut(dim))
                .for_each(f);
        } else {
            x.chunks_exact(dim)
                .zip(out.chunks_exact_mut(dim))
                .for_each(f);
        }
    }
}

/// Hyper-parameters of a loaded model.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub family: Family,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Maximum number of positions (context length).
    pub max_pos: usize,
    /// Attention logits scale (usually 1/sqrt(head_dim)).
    pub attn_scale: f32,
    /// GPT-2 `scale_attn_by_inverse_layer_idx`.
    pub scale_by_layer: bool,
    pub mlp: MlpKind,
}

/// One transformer block.
pub(crate) struct Block {
    pub attn_norm: Norm,
    /// q | k | v projection (output columns in that order).
    pub qkv: Linear,
    pub o: Linear,
    pub ffn_norm: Norm,
    /// gate | up (SwiGLU) or fc (plain).
    pub up: Linear,
    pub down: Linear,
}

/// The whole network.
pub(crate) struct Transformer {
    pub cfg: Config,
    pub embed: Arc<Weight>,
    /// Learned absolute positions, `[max_pos, dim]` (GPT-2).
    pub pos_embed: Option<Vec<f32>>,
    pub blocks: Vec<Block>,
    pub final_norm: Norm,
    pub head: Linear,
    /// Rotary inverse frequencies (`head_dim / 2` values); empty without rope.
    pub rope_inv_freq: Vec<f32>,
}

/// Keys and values of already-processed tokens, one `[len, n_kv_heads*head_dim]` pair of
/// buffers per layer (keys are stored after the rotary embedding).
#[derive(Clone, Default)]
pub(crate) struct KvCache {
    pub len: usize,
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl KvCache {
    /// Appends the keys/values collected by [`Transformer::forward`].
    pub(crate) fn append(&mut self, kv: Vec<(Vec<f32>, Vec<f32>)>, rows: usize) {
        if self.layers.is_empty() {
            self.layers = kv;
        } else {
            for (dst, src) in self.layers.iter_mut().zip(kv) {
                dst.0.extend_from_slice(&src.0);
                dst.1.extend_from_slice(&src.1);
            }
        }
        self.len += rows;
    }
}

/// One token sequence of a forward pass.
pub(crate) struct Seg<'a> {
    pub tokens: &'a [u32],
    pub past: Option<&'a KvCache>,
}

/// Result of a forward pass.
pub(crate) struct FwdOut {
    /// `[tokens, dim]` hidden states after the final norm.
    pub hidden: Vec<f32>,
    /// Per layer `(keys, values)` of every token, when requested.
    pub kv: Option<Vec<(Vec<f32>, Vec<f32>)>>,
}

impl Transformer {
    /// Checks the shapes of every weight against the configuration.
    pub(crate) fn validate(&self) -> Result<()> {
        let c = &self.cfg;
        let q = c.n_heads * c.head_dim;
        let kv = c.n_kv_heads * c.head_dim;
        if self.embed.cols() != c.dim {
            return Err(LmError::format(
                "embedding width differs from the model width",
            ));
        }
        if self.head.out_dim() == 0 {
            return Err(LmError::format("empty output layer"));
        }
        if let Some(p) = &self.pos_embed
            && p.len() != c.max_pos * c.dim
        {
            return Err(LmError::format("position embedding has the wrong shape"));
        }
        if self.blocks.len() != c.n_layers {
            return Err(LmError::format("wrong number of layers"));
        }
        for b in &self.blocks {
            b.attn_norm.check(c.dim)?;
            b.ffn_norm.check(c.dim)?;
            if b.qkv.out_dim() != q + 2 * kv || b.o.out_dim() != c.dim || b.down.out_dim() != c.dim
            {
                return Err(LmError::format(
                    "attention or MLP projection has the wrong shape",
                ));
            }
            let ffn = match c.mlp {
                MlpKind::SwiGlu => b.up.out_dim() / 2,
                MlpKind::Plain(_) => b.up.out_dim(),
            };
            if ffn == 0
                || b.down.in_dim() != ffn
                || (c.mlp == MlpKind::SwiGlu && b.up.out_dim() % 2 != 0)
            {
                return Err(LmError::format("MLP projections have inconsistent shapes"));
            }
        }
        self.final_norm.check(c.dim)?;
        if c.family == Family::Llama && self.rope_inv_freq.len() != c.head_dim / 2 {
            return Err(LmError::format("rotary table has the wrong size"));
        }
        Ok(())
    }

    /// Number of output logits (vocabulary rows of the output layer).
    pub(crate) fn vocab(&self) -> usize {
        self.head.out_dim()
    }

    /// Runs the network over `segs`; must be called inside the caller's pool.
    /// `threads` is the pool size (used to split matrix products).
    pub(crate) fn forward(
        &self,
        segs: &[Seg<'_>],
        collect_kv: bool,
        threads: usize,
    ) -> Result<FwdOut> {
        let c = &self.cfg;
        let (d, hd) = (c.dim, c.head_dim);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let vocab = self.embed.rows();

        // Row layout and positions.
        let mut starts = Vec::with_capacity(segs.len());
        let mut pos = Vec::new();
        for s in segs {
            starts.push(pos.len());
            let past = s.past.map_or(0, |p| p.len);
            if let Some(p) = s.past
                && !p.layers.is_empty()
                && p.layers.len() != c.n_layers
            {
                return Err(LmError::Compute("key/value cache of another model".into()));
            }
            if past + s.tokens.len() > c.max_pos {
                return Err(LmError::param(format!(
                    "sequence of {} tokens exceeds the model context of {}",
                    past + s.tokens.len(),
                    c.max_pos
                )));
            }
            pos.extend(past..past + s.tokens.len());
        }
        let n = pos.len();
        let tokens: Vec<u32> = segs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(LmError::param(format!(
                "token id {bad} outside the vocabulary of {vocab}"
            )));
        }

        // Embeddings.
        let mut x = vec![0f32; n * d];
        for (r, &t) in tokens.iter().enumerate() {
            let row = &mut x[r * d..(r + 1) * d];
            self.embed.row_into(t as usize, row);
            if let Some(pe) = &self.pos_embed {
                for (v, p) in row.iter_mut().zip(&pe[pos[r] * d..(pos[r] + 1) * d]) {
                    *v += p;
                }
            }
        }

        // Rotary tables for every row (f32 angles like transformers).
        let half = self.rope_inv_freq.len();
        let mut cos = vec![0f32; n * half];
        let mut sin = vec![0f32; n * half];
        for (r, &p) in pos.iter().enumerate() {
            for (i, &f) in self.rope_inv_freq.iter().enumerate() {
                let a = p as f32 * f;
                cos[r * half + i] = a.cos();
                sin[r * half + i] = a.sin();
            }
        }

        let mut h = vec![0f32; n * d];
        let mut kv_out = if collect_kv {
            Some(Vec::with_capacity(c.n_layers))
        } else {
            None
        };
        for (li, b) in self.blocks.iter().enumerate() {
            b.attn_norm.apply_rows(&x, &mut h, d);
            let mut qkv = b.qkv.forward(&h, n, threads);
            if half > 0 {
                let heads = c.n_heads + c.n_kv_heads;
                for (r, row) in qkv.chunks_exact_mut(qkv_dim).enumerate() {
                    let (cr, sr) = (
                        &cos[r * half..(r + 1) * half],
                        &sin[r * half..(r + 1) * half],
                    );
                    for head in row[..heads * hd].chunks_exact_mut(hd) {
                        let (a, bb) = head.split_at_mut(half);
                        for i in 0..half {
                            let (x1, x2) = (a[i], bb[i]);
                            a[i] = x1 * cr[i] - x2 * sr[i];
                            bb[i] = x2 * cr[i] + x1 * sr[i];
                        }
                    }
                }
            }
            let mut scale = c.attn_scale;
            if c.scale_by_layer {
                scale /= (li + 1) as f32;
            }
            let att = self.attention(segs, &starts, &qkv, li, scale);
            b.o.forward_into(&att, n, &mut x, true, threads);
            drop(att);
            if let Some(out) = kv_out.as_mut() {
                let mut k = Vec::with_capacity(n * kv_dim);
                let mut v = Vec::with_capacity(n * kv_dim);
                for row in qkv.chunks_exact(qkv_dim) {
                    k.extend_from_slice(&row[q_dim..q_dim + kv_dim]);
                    v.extend_from_slice(&row[q_dim + kv_dim..]);
                }
                out.push((k, v));
            }
            drop(qkv);

            b.ffn_norm.apply_rows(&x, &mut h, d);
            let mut u = b.up.forward(&h, n, threads);
            let a = match c.mlp {
                MlpKind::SwiGlu => {
                    let ffn = b.up.out_dim() / 2;
                    let mut a = vec![0f32; n * ffn];
                    let f = |(ur, ar): (&[f32], &mut [f32])| {
                        let (g, up) = ur.split_at(ffn);
                        kernels::silu_mul(g, up, ar)
                    };
                    if n >= 16 {
                        u.par_chunks_exact(2 * ffn)
                            .zip(a.par_chunks_exact_mut(ffn))
                            .for_each(f);
                    } else {
                        u.chunks_exact(2 * ffn)
                            .zip(a.chunks_exact_mut(ffn))
                            .for_each(f);
                    }
                    a
                }
                MlpKind::Plain(act) => {
                    let f = |r: &mut [f32]| match act {
                        Act::GeluTanh => kernels::gelu_tanh(r),
                        Act::GeluErf => kernels::gelu_erf(r),
                        Act::Relu => kernels::relu(r),
                        Act::Silu => kernels::silu(r),
                    };
                    let w = b.up.out_dim();
                    if n >= 16 {
                        u.par_chunks_exact_mut(w).for_each(f);
                    } else {
                        u.chunks_exact_mut(w).for_each(f);
                    }
                    u
                }
            };
            b.down.forward_into(&a, n, &mut x, true, threads);
        }
        self.final_norm.apply_rows(&x, &mut h, d);
        if h.iter().any(|v| !v.is_finite()) {
            return Err(LmError::Compute(
                "the model produced non-finite activations".into(),
            ));
        }
        Ok(FwdOut {
            hidden: h,
            kv: kv_out,
        })
    }

    /// Causal multi-head attention of every segment; returns `[tokens, n_heads*head_dim]`.
    fn attention(
        &self,
        segs: &[Seg<'_>],
        starts: &[usize],
        qkv: &[f32],
        layer: usize,
        scale: f32,
    ) -> Vec<f32> {
        let c = &self.cfg;
        let hd = c.head_dim;
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let qkv_dim = q_dim + 2 * kv_dim;
        let group = c.n_heads / c.n_kv_heads;
        let n_rows: usize = segs.iter().map(|s| s.tokens.len()).sum();
        let tasks: Vec<(usize, usize)> = (0..segs.len())
            .filter(|&s| !segs[s].tokens.is_empty())
            .flat_map(|s| (0..c.n_heads).map(move |h| (s, h)))
            .collect();
        let results: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(s, h)| {
                let seg = &segs[s];
                let t = seg.tokens.len();
                let row0 = starts[s];
                let g = h / group;
                let (past_k, past_v, cl): (&[f32], &[f32], usize) = match seg.past {
                    Some(p) if p.len > 0 => (&p.layers[layer].0, &p.layers[layer].1, p.len),
                    _ => (&[], &[], 0),
                };
                let keys = cl + t;
                let q = MatRef {
                    data: qkv,
                    off: row0 * qkv_dim + h * hd,
                    rs: qkv_dim,
                    cs: 1,
                };
                let mut sc = vec![0f32; t * keys];
                if cl > 0 {
                    kernels::matmul(
                        t,
                        cl,
                        hd,
                        &mut sc,
                        0,
                        keys,
                        false,
                        q,
                        MatRef {
                            data: past_k,
                            off: g * hd,
                            rs: 1,
                            cs: kv_dim,
                        },
                        scale,
                        1,
                    );
                }
                kernels::matmul(
                    t,
                    t,
                    hd,
                    &mut sc,
                    cl,
                    keys,
                    false,
                    q,
                    MatRef {
                        data: qkv,
                        off: row0 * qkv_dim + q_dim + g * hd,
                        rs: 1,
                        cs: qkv_dim,
                    },
                    scale,
                    1,
                );
                for (i, row) in sc.chunks_exact_mut(keys).enumerate() {
                    let valid = cl + i + 1;
                    kernels::softmax(&mut row[..valid]);
                    row[valid..].fill(0.0);
                }
                let mut out = vec![0f32; t * hd];
                if cl > 0 {
                    kernels::matmul(
                        t,
                        hd,
                        cl,
                        &mut out,
                        0,
                        hd,
                        false,
                        MatRef {
                            data: &sc,
                            off: 0,
                            rs: keys,
                            cs: 1,
                        },
                        MatRef {
                            data: past_v,
                            off: g * hd,
                            rs: kv_dim,
                            cs: 1,
                        },
                        1.0,
                        1,
                    );
                }
                kernels::matmul(
                    t,
                    hd,
                    t,
                    &mut out,
                    0,
                    hd,
                    cl > 0,
                    MatRef {
                        data: &sc,
                        off: cl,
                        rs: keys,
                        cs: 1,
                    },
                    MatRef {
                        data: qkv,
                        off: row0 * qkv_dim + q_dim + kv_dim + g * hd,
                        rs: qkv_dim,
                        cs: 1,
                    },
                    1.0,
                    1,
                );
                out
            })
            .collect();
        let mut att = vec![0f32; n_rows * q_dim];
        for (&(s, h), out) in tasks.iter().zip(results) {
            let row0 = starts[s];
            for (i, o) in out.chunks_exact(hd).enumerate() {
                let at = (row0 + i) * q_dim + h * hd;
                att[at..at + hd].copy_from_slice(o);
            }
        }
        att
    }

    /// Log-probability of `target` and the arg-max token for each requested hidden row.
    ///
    /// Logits are produced for up to 512 rows at a time, one block of 4096 vocabulary
    /// entries after the other, with an online log-sum-exp in f64 (running max, rescaled
    /// sum, arg-max and the target's logit): neither a `[tokens, vocab]` matrix nor any
    /// f64 copy of the logits is ever materialised, and the output weights are streamed
    /// once per 512 rows.
    pub(crate) fn score_rows(
        &self,
        hidden: &[f32],
        req: &[(usize, u32)],
        threads: usize,
    ) -> Result<Vec<(f64, u32)>> {
        const ROWS: usize = 512;
        const COLS: usize = 4096;
        #[derive(Clone, Copy)]
        struct St {
            m: f32,
            s: f64,
            arg: u32,
            tgt: f32,
        }
        let d = self.cfg.dim;
        let v = self.vocab();
        let mut out = Vec::with_capacity(req.len());
        for chunk in req.chunks(ROWS) {
            let r = chunk.len();
            let mut x = vec![0f32; r * d];
            for (i, &(row, _)) in chunk.iter().enumerate() {
                x[i * d..(i + 1) * d].copy_from_slice(&hidden[row * d..(row + 1) * d]);
            }
            let mut st = vec![
                St {
                    m: f32::NEG_INFINITY,
                    s: 0.0,
                    arg: 0,
                    tgt: f32::NAN
                };
                r
            ];
            let mut logits = vec![0f32; r * COLS.min(v)];
            for c0 in (0..v).step_by(COLS) {
                let c1 = (c0 + COLS).min(v);
                let w = c1 - c0;
                let block = &mut logits[..r * w];
                self.head.forward_cols(&x, r, c0, c1, block, threads);
                let update = |((lr, s), &(_, target)): ((&[f32], &mut St), &(usize, u32))| {
                    let bm = kernels::max(lr);
                    if bm > s.m {
                        s.s *= ((s.m - bm) as f64).exp();
                        s.m = bm;
                        s.arg = (c0 + lr.iter().position(|&q| q == bm).unwrap_or(0)) as u32;
                    }
                    s.s += kernels::sum_exp(lr, s.m);
                    let t = target as usize;
                    if (c0..c1).contains(&t) {
                        s.tgt = lr[t - c0];
                    }
                };
                if r >= 8 {
                    block
                        .par_chunks_exact(w)
                        .zip(st.par_iter_mut())
                        .zip(chunk.par_iter())
                        .for_each(update);
                } else {
                    block
                        .chunks_exact(w)
                        .zip(st.iter_mut())
                        .zip(chunk.iter())
                        .for_each(update);
                }
            }
            for s in st {
                let lp = s.tgt as f64 - (s.m as f64 + s.s.ln());
                if !(lp.is_finite() && s.m.is_finite()) {
                    return Err(LmError::Compute(
                        "non-finite logits or token outside the output vocabulary".into(),
                    ));
                }
                out.push((lp, s.arg));
            }
        }
        Ok(out)
    }

    /// Full logits of one hidden row.
    pub(crate) fn logits_row(&self, hidden_row: &[f32], threads: usize) -> Vec<f32> {
        self.head.forward(hidden_row, 1, threads)
    }
}
