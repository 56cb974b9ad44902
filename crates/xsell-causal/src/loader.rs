//! Loading models from GGUF files and Hugging Face safetensors folders.

use crate::error::{LmError, Result};
use crate::model::{Act, Block, Config, Family, MlpKind, Norm, Transformer};
use crate::tokenizer::{self, Tok};
use crate::weights::{Linear, LinearPart, QuantMatrix, Weight};
use crate::{LoadOptions, ModelInfo, Weights};
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, ggml_file::qtensor_from_ggml};
use candle_core::{DType, Device, Tensor};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xsell_blas::F16;

/// Upper bound on any dimension read from metadata (guards allocations on corrupt files).
const MAX_DIM: usize = 1 << 24;

/// A loaded model: network, tokenizer, description.
pub(crate) struct Loaded {
    pub net: Transformer,
    pub tok: Tok,
    pub info: ModelInfo,
}

/// Which kind of model a path holds.
pub(crate) enum Source {
    Gguf(PathBuf),
    HfFolder(PathBuf),
}

pub(crate) fn classify(path: &Path) -> Result<Source> {
    let meta = std::fs::metadata(path).map_err(|e| LmError::io(path, e))?;
    if meta.is_dir() {
        let cfg = path.join("config.json");
        if !cfg.is_file() {
            return Err(LmError::format(format!(
                "{} is a folder without config.json (expected a Hugging Face model folder)",
                path.display()
            )));
        }
        Ok(Source::HfFolder(path.to_path_buf()))
    } else {
        let mut magic = [0u8; 4];
        let mut f = File::open(path).map_err(|e| LmError::io(path, e))?;
        f.read_exact(&mut magic).map_err(|_| {
            LmError::format(format!("{} is too short to be a model", path.display()))
        })?;
        if &magic != b"GGUF" {
            return Err(LmError::format(format!(
                "{} is not a GGUF file (bad magic)",
                path.display()
            )));
        }
        Ok(Source::Gguf(path.to_path_buf()))
    }
}

fn cerr(ctx: &str) -> impl FnOnce(candle_core::Error) -> LmError + '_ {
    move |e| LmError::format(format!("{ctx}: {e}"))
}

fn check_dim(name: &str, v: usize) -> Result<usize> {
    if v == 0 || v > MAX_DIM {
        return Err(LmError::format(format!("{name} = {v} is out of range")));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// GGUF

struct Gguf {
    path: PathBuf,
    reader: BufReader<File>,
    content: Content,
    file_size: u64,
    arch: String,
}

fn value_usize(v: &Value) -> Option<usize> {
    match v {
        Value::U8(x) => Some(*x as usize),
        Value::U16(x) => Some(*x as usize),
        Value::U32(x) => Some(*x as usize),
        Value::U64(x) => usize::try_from(*x).ok(),
        Value::I8(x) => usize::try_from(*x).ok(),
        Value::I16(x) => usize::try_from(*x).ok(),
        Value::I32(x) => usize::try_from(*x).ok(),
        Value::I64(x) => usize::try_from(*x).ok(),
        _ => None,
    }
}

fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::F32(x) => Some(*x as f64),
        Value::F64(x) => Some(*x),
        other => value_usize(other).map(|u| u as f64),
    }
}

impl Gguf {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| LmError::io(path, e))?;
        let file_size = file.metadata().map_err(|e| LmError::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(cerr("cannot parse the GGUF header"))?;
        let arch = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(LmError::format("GGUF has no general.architecture")),
        };
        Ok(Gguf {
            path: path.to_path_buf(),
            reader,
            content,
            file_size,
            arch,
        })
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => value_usize(v)
                .map(Some)
                .ok_or_else(|| LmError::format(format!("metadata {key} is not an integer"))),
        }
    }
    fn arch_usize(&self, key: &str) -> Result<usize> {
        let k = format!("{}.{key}", self.arch);
        let v = self
            .usize_opt(&k)?
            .ok_or_else(|| LmError::format(format!("GGUF metadata {k} is missing")))?;
        check_dim(&k, v)
    }
    fn arch_f64(&self, key: &str) -> Result<Option<f64>> {
        let k = format!("{}.{key}", self.arch);
        match self.get(&k) {
            None => Ok(None),
            Some(v) => value_f64(v)
                .map(Some)
                .ok_or_else(|| LmError::format(format!("metadata {k} is not a number"))),
        }
    }
    fn string(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(LmError::format(format!(
                        "metadata {key} is not a string array"
                    ))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(LmError::format(format!("metadata {key} is not an array"))),
        }
    }
    fn ints(&self, key: &str) -> Option<Vec<i64>> {
        match self.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Some(*x as i64),
                    Value::U32(x) => Some(*x as i64),
                    Value::I64(x) => Some(*x),
                    Value::U8(x) => Some(*x as i64),
                    Value::I8(x) => Some(*x as i64),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.content.tensor_infos.get(name)
    }

    fn has(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    /// Raw bytes of a tensor, after checking its shape (PyTorch order) and extent.
    fn raw(&mut self, name: &str, shape: &[usize]) -> Result<(GgmlDType, Vec<u8>)> {
        let info = self
            .info(name)
            .ok_or_else(|| LmError::format(format!("GGUF tensor {name} is missing")))?;
        if info.shape.dims() != shape {
            return Err(LmError::format(format!(
                "GGUF tensor {name} has shape {:?}, expected {shape:?}",
                info.shape.dims()
            )));
        }
        let dtype = info.ggml_dtype;
        let elems: usize = shape.iter().product();
        let bs = dtype.block_size();
        if !elems.is_multiple_of(bs) {
            return Err(LmError::format(format!(
                "GGUF tensor {name}: {elems} values is not a multiple of the block size {bs}"
            )));
        }
        let size = (elems / bs) as u64 * dtype.type_size() as u64;
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .ok_or_else(|| LmError::format("tensor offset overflows"))?;
        if start
            .checked_add(size)
            .is_none_or(|end| end > self.file_size)
        {
            return Err(LmError::format(format!(
                "GGUF tensor {name} extends past the end of the file (truncated download?)"
            )));
        }
        let mut buf = vec![0u8; size as usize];
        self.reader
            .seek(SeekFrom::Start(start))
            .map_err(|e| LmError::io(&self.path, e))?;
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| LmError::io(&self.path, e))?;
        Ok((dtype, buf))
    }

    /// A tensor dequantized to f32, optionally with its rows un-permuted (llama q/k).
    fn f32(
        &mut self,
        name: &str,
        shape: &[usize],
        unpermute_heads: Option<usize>,
    ) -> Result<Vec<f32>> {
        let (dtype, raw) = self.raw(name, shape)?;
        let q = qtensor_from_ggml(dtype, &raw, shape.to_vec(), &Device::Cpu).map_err(cerr(name))?;
        let v: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(cerr(name))?;
        Ok(match unpermute_heads {
            Some(h) => unpermute_rows(&v, *shape.last().unwrap_or(&1), h)?,
            None => v,
        })
    }

    /// A weight matrix `[rows, cols]` held as `mode` asks (see [`Weights`]).
    fn weight(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        mode: Weights,
        unpermute_heads: Option<usize>,
    ) -> Result<Weight> {
        let dtype = self.info(name).map(|i| i.ggml_dtype);
        let quantized = dtype.is_some_and(QuantMatrix::supports);
        let half_tensor = dtype == Some(GgmlDType::F16);
        if (mode == Weights::Quantized && quantized) || (mode == Weights::Half && half_tensor) {
            let (dtype, raw) = self.raw(name, &[rows, cols])?;
            let raw = match unpermute_heads {
                Some(h) => unpermute_rows(&raw, raw.len() / rows, h)?,
                None => raw,
            };
            if half_tensor {
                let data = raw
                    .chunks_exact(2)
                    .map(|b| F16(u16::from_le_bytes([b[0], b[1]])))
                    .collect();
                return Ok(Weight::F16 { data, rows, cols });
            }
            return Ok(Weight::Quant(QuantMatrix::from_bytes(
                dtype, rows, cols, &raw,
            )?));
        }
        let dense = self.f32(name, &[rows, cols], unpermute_heads)?;
        if mode == Weights::Half && quantized {
            let data = dense.iter().map(|&v| F16::from_f32(v)).collect();
            return Ok(Weight::F16 { data, rows, cols });
        }
        Weight::dense(dense, rows, cols)
    }

    fn opt_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        unpermute_heads: Option<usize>,
    ) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.f32(name, shape, unpermute_heads).map(Some)
        } else {
            Ok(None)
        }
    }

    fn parameters(&self) -> u64 {
        self.content
            .tensor_infos
            .values()
            .map(|i| i.shape.elem_count() as u64)
            .sum()
    }
}

/// Undoes llama.cpp's q/k row permutation (`convert_hf_to_gguf.py` `permute`): GGUF row
/// `h*hd + 2i + s` is Hugging Face row `h*hd + s*hd/2 + i`. Works on rows of any item
/// type (f32 values or quantized bytes), `row_len` items per row.
fn unpermute_rows<T: Copy>(data: &[T], row_len: usize, n_heads: usize) -> Result<Vec<T>> {
    if row_len == 0 || !data.len().is_multiple_of(row_len) {
        return Err(LmError::format("cannot un-permute rows of a ragged tensor"));
    }
    let rows = data.len() / row_len;
    if n_heads == 0 || !rows.is_multiple_of(n_heads) || !(rows / n_heads).is_multiple_of(2) {
        return Err(LmError::format(
            "q/k rows are not a whole number of even-sized heads",
        ));
    }
    let hd = rows / n_heads;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..n_heads {
        for s in 0..2 {
            for i in 0..hd / 2 {
                let src = h * hd + 2 * i + s;
                out.extend_from_slice(&data[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    Ok(out)
}

fn rope_inv_freq(
    head_dim: usize,
    theta: f64,
    linear_factor: f64,
    freq_factors: Option<&[f32]>,
) -> Result<Vec<f32>> {
    if !(theta.is_finite() && theta > 0.0 && linear_factor.is_finite() && linear_factor > 0.0) {
        return Err(LmError::format(
            "invalid rope frequency base or scaling factor",
        ));
    }
    let half = head_dim / 2;
    if let Some(f) = freq_factors
        && f.len() != half
    {
        return Err(LmError::format("rope_freqs has the wrong size"));
    }
    let base = theta as f32;
    Ok((0..half)
        .map(|i| {
            // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32
            let mut f = 1.0f32 / base.powf((2 * i) as f32 / head_dim as f32);
            f /= linear_factor as f32;
            if let Some(ff) = freq_factors {
                f /= ff[i];
            }
            f
        })
        .collect())
}

fn llama_config(
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
    max_pos: usize,
) -> Result<Config> {
    if !n_heads.is_multiple_of(n_kv) {
        return Err(LmError::format(format!(
            "{n_heads} attention heads are not a multiple of {n_kv} key/value heads"
        )));
    }
    if !head_dim.is_multiple_of(2) {
        return Err(LmError::format(
            "head dimension must be even for rotary embeddings",
        ));
    }
    Ok(Config {
        family: Family::Llama,
        dim,
        n_layers,
        n_heads,
        n_kv_heads: n_kv,
        head_dim,
        max_pos,
        attn_scale: 1.0 / (head_dim as f32).sqrt(),
        scale_by_layer: false,
        mlp: MlpKind::SwiGlu,
    })
}

fn part(w: Weight, bias: Option<Vec<f32>>) -> LinearPart {
    LinearPart {
        w: Arc::new(w),
        bias,
    }
}

fn gguf_tokenizer(g: &Gguf) -> Result<Tok> {
    let model = g.string("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(LmError::Unsupported(format!(
            "GGUF tokenizer model '{model}' (only byte-level BPE 'gpt2' vocabularies are supported)"
        )));
    }
    let tokens = g
        .strings("tokenizer.ggml.tokens")?
        .ok_or_else(|| LmError::format("GGUF has no tokenizer.ggml.tokens"))?;
    let merges = g.strings("tokenizer.ggml.merges")?.unwrap_or_default();
    let types = g.ints("tokenizer.ggml.token_type");
    let tok = tokenizer::from_gguf_vocab(
        &tokens,
        types.as_deref(),
        &merges,
        g.string("tokenizer.ggml.pre"),
    )?;
    let id = |k: &str| -> Result<Option<u32>> {
        match g.usize_opt(k)? {
            Some(v) if v < tokens.len() => Ok(Some(v as u32)),
            Some(v) => Err(LmError::format(format!(
                "{k} = {v} is outside the vocabulary"
            ))),
            None => Ok(None),
        }
    };
    let bos = id("tokenizer.ggml.bos_token_id")?;
    let mut eos: Vec<u32> = id("tokenizer.ggml.eos_token_id")?.into_iter().collect();
    eos.extend(id("tokenizer.ggml.eot_token_id")?);
    let add_bos = matches!(
        g.get("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    Tok::new(tok, bos, eos, add_bos, g.string("tokenizer.chat_template"))
}

pub(crate) fn load_gguf(path: &Path, opts: &LoadOptions) -> Result<Loaded> {
    let mut g = Gguf::open(path)?;
    let keep = opts.weights;
    let arch = g.arch.clone();
    let tok = gguf_tokenizer(&g)?;
    let dim = g.arch_usize("embedding_length")?;
    let n_layers = g.arch_usize("block_count")?;
    let n_heads = g.arch_usize("attention.head_count")?;
    let max_pos = g.arch_usize("context_length")?;
    let ffn = g.arch_usize("feed_forward_length")?;
    let vocab = g
        .info("token_embd.weight")
        .map(|i| i.shape.dims().first().copied().unwrap_or(0))
        .ok_or_else(|| LmError::format("GGUF tensor token_embd.weight is missing"))?;
    check_dim("vocabulary", vocab)?;
    let net = match arch.as_str() {
        "llama" => {
            let n_kv = match g.usize_opt("llama.attention.head_count_kv")? {
                Some(v) => check_dim("llama.attention.head_count_kv", v)?,
                None => n_heads,
            };
            let head_dim = match g.usize_opt("llama.attention.key_length")? {
                Some(v) => check_dim("llama.attention.key_length", v)?,
                None => dim / n_heads,
            };
            if let Some(rd) = g.usize_opt("llama.rope.dimension_count")?
                && rd != head_dim
            {
                return Err(LmError::Unsupported(format!(
                    "partial rotary embeddings ({rd} of {head_dim} dims)"
                )));
            }
            let cfg = llama_config(dim, n_layers, n_heads, n_kv, head_dim, max_pos)?;
            let eps = g
                .arch_f64("attention.layer_norm_rms_epsilon")?
                .unwrap_or(1e-5) as f32;
            let theta = g.arch_f64("rope.freq_base")?.unwrap_or(10000.0);
            let factor = match g.string("llama.rope.scaling.type") {
                None | Some("none") => 1.0,
                Some("linear") => g.arch_f64("rope.scaling.factor")?.unwrap_or(1.0),
                Some(other) => return Err(LmError::Unsupported(format!("rope scaling '{other}'"))),
            };
            let freq_factors = g.opt_f32("rope_freqs.weight", &[head_dim / 2], None)?;
            let inv = rope_inv_freq(head_dim, theta, factor, freq_factors.as_deref())?;
            let (q, kv) = (n_heads * head_dim, n_kv * head_dim);
            let embed = Arc::new(g.weight("token_embd.weight", vocab, dim, keep, None)?);
            let mut blocks = Vec::with_capacity(n_layers);
            for i in 0..n_layers {
                let p = |s: &str| format!("blk.{i}.{s}");
                let attn_norm = Norm::Rms {
                    w: g.f32(&p("attn_norm.weight"), &[dim], None)?,
                    eps,
                };
                let wq = g.weight(&p("attn_q.weight"), q, dim, keep, Some(n_heads))?;
                let wk = g.weight(&p("attn_k.weight"), kv, dim, keep, Some(n_kv))?;
                let wv = g.weight(&p("attn_v.weight"), kv, dim, keep, None)?;
                let bq = g.opt_f32(&p("attn_q.bias"), &[q], Some(n_heads))?;
                let bk = g.opt_f32(&p("attn_k.bias"), &[kv], Some(n_kv))?;
                let bv = g.opt_f32(&p("attn_v.bias"), &[kv], None)?;
                let qkv = Linear::new(vec![part(wq, bq), part(wk, bk), part(wv, bv)], dim)?;
                let wo = g.weight(&p("attn_output.weight"), dim, q, keep, None)?;
                let bo = g.opt_f32(&p("attn_output.bias"), &[dim], None)?;
                let o = Linear::new(vec![part(wo, bo)], q)?;
                let ffn_norm = Norm::Rms {
                    w: g.f32(&p("ffn_norm.weight"), &[dim], None)?,
                    eps,
                };
                let gate = g.weight(&p("ffn_gate.weight"), ffn, dim, keep, None)?;
                let upw = g.weight(&p("ffn_up.weight"), ffn, dim, keep, None)?;
                let up = Linear::new(vec![part(gate, None), part(upw, None)], dim)?;
                let down = Linear::new(
                    vec![part(
                        g.weight(&p("ffn_down.weight"), dim, ffn, keep, None)?,
                        None,
                    )],
                    ffn,
                )?;
                blocks.push(Block {
                    attn_norm,
                    qkv,
                    o,
                    ffn_norm,
                    up,
                    down,
                });
            }
            let final_norm = Norm::Rms {
                w: g.f32("output_norm.weight", &[dim], None)?,
                eps,
            };
            let head_w = if g.has("output.weight") {
                Arc::new(g.weight("output.weight", vocab, dim, keep, None)?)
            } else {
                embed.clone()
            };
            let head = Linear::new(
                vec![LinearPart {
                    w: head_w,
                    bias: None,
                }],
                dim,
            )?;
            Transformer {
                cfg,
                embed,
                pos_embed: None,
                blocks,
                final_norm,
                head,
                rope_inv_freq: inv,
            }
        }
        "gpt2" => {
            let eps = g.arch_f64("attention.layer_norm_epsilon")?.unwrap_or(1e-5) as f32;
            if dim % n_heads != 0 {
                return Err(LmError::format(
                    "embedding width is not a multiple of the head count",
                ));
            }
            let cfg = Config {
                family: Family::Gpt2,
                dim,
                n_layers,
                n_heads,
                n_kv_heads: n_heads,
                head_dim: dim / n_heads,
                max_pos,
                attn_scale: 1.0 / ((dim / n_heads) as f32).sqrt(),
                scale_by_layer: false,
                mlp: MlpKind::Plain(Act::GeluTanh),
            };
            let embed = Arc::new(g.weight("token_embd.weight", vocab, dim, keep, None)?);
            let pos = g.f32("position_embd.weight", &[max_pos, dim], None)?;
            let mut blocks = Vec::with_capacity(n_layers);
            let ln = |g: &mut Gguf, name: &str| -> Result<Norm> {
                Ok(Norm::Layer {
                    w: g.f32(&format!("{name}.weight"), &[dim], None)?,
                    b: g.f32(&format!("{name}.bias"), &[dim], None)?,
                    eps,
                })
            };
            for i in 0..n_layers {
                let p = |s: &str| format!("blk.{i}.{s}");
                let attn_norm = ln(&mut g, &p("attn_norm"))?;
                let wqkv = g.weight(&p("attn_qkv.weight"), 3 * dim, dim, keep, None)?;
                let bqkv = g.opt_f32(&p("attn_qkv.bias"), &[3 * dim], None)?;
                let qkv = Linear::new(vec![part(wqkv, bqkv)], dim)?;
                let wo = g.weight(&p("attn_output.weight"), dim, dim, keep, None)?;
                let o = Linear::new(
                    vec![part(wo, g.opt_f32(&p("attn_output.bias"), &[dim], None)?)],
                    dim,
                )?;
                let ffn_norm = ln(&mut g, &p("ffn_norm"))?;
                let wu = g.weight(&p("ffn_up.weight"), ffn, dim, keep, None)?;
                let up = Linear::new(
                    vec![part(wu, g.opt_f32(&p("ffn_up.bias"), &[ffn], None)?)],
                    dim,
                )?;
                let wd = g.weight(&p("ffn_down.weight"), dim, ffn, keep, None)?;
                let down = Linear::new(
                    vec![part(wd, g.opt_f32(&p("ffn_down.bias"), &[dim], None)?)],
                    ffn,
                )?;
                blocks.push(Block {
                    attn_norm,
                    qkv,
                    o,
                    ffn_norm,
                    up,
                    down,
                });
            }
            let final_norm = ln(&mut g, "output_norm")?;
            let head_w = if g.has("output.weight") {
                Arc::new(g.weight("output.weight", vocab, dim, keep, None)?)
            } else {
                embed.clone()
            };
            let head = Linear::new(
                vec![LinearPart {
                    w: head_w,
                    bias: None,
                }],
                dim,
            )?;
            Transformer {
                cfg,
                embed,
                pos_embed: Some(pos),
                blocks,
                final_norm,
                head,
                rope_inv_freq: vec![],
            }
        }
        other => {
            return Err(LmError::Unsupported(format!(
                "GGUF architecture '{other}' (supported: llama, gpt2)"
            )));
        }
    };
    net.validate()?;
    let info = ModelInfo {
        kind: "causal_lm",
        format: "gguf".into(),
        architecture: arch,
        parameters: g.parameters(),
        context_length: max_pos,
        vocab,
    };
    Ok(Loaded { net, tok, info })
}

pub(crate) fn probe_gguf(path: &Path) -> Result<ModelInfo> {
    let g = Gguf::open(path)?;
    let arch = g.arch.clone();
    let vocab = match g.info("token_embd.weight") {
        Some(i) => i.shape.dims().first().copied().unwrap_or(0),
        None => g.strings("tokenizer.ggml.tokens")?.map_or(0, |t| t.len()),
    };
    Ok(ModelInfo {
        kind: "causal_lm",
        format: "gguf".into(),
        context_length: g.arch_usize("context_length")?,
        architecture: arch,
        parameters: g.parameters(),
        vocab,
    })
}

// ---------------------------------------------------------------------------------------
// Hugging Face folders

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LmError::format(format!("{}: {e}", path.display())))
}

fn read_json_opt(path: &Path) -> Result<Option<Json>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

struct HfConfig(Json);

impl HfConfig {
    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    LmError::format(format!("config.json: {key} is not a non-negative integer"))
                }),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .usize_opt(key)?
            .ok_or_else(|| LmError::format(format!("config.json: {key} is missing")))?;
        check_dim(key, v)
    }
    fn f64_opt(&self, key: &str) -> Option<f64> {
        self.0.get(key).and_then(Json::as_f64)
    }
    fn bool_or(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(Json::as_bool).unwrap_or(default)
    }
    fn str_opt(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Json::as_str)
    }
    fn ids(&self, key: &str) -> Vec<u32> {
        match self.0.get(key) {
            Some(Json::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(Json::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().map(|x| x as u32))
                .collect(),
            _ => vec![],
        }
    }
    fn model_type(&self) -> Result<String> {
        self.str_opt("model_type")
            .map(str::to_string)
            .ok_or_else(|| LmError::format("config.json has no model_type"))
    }
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| LmError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LmError::format(format!(
            "{} has no *.safetensors weights",
            dir.display()
        )));
    }
    Ok(files)
}

/// Reads a safetensors header (without the tensor data): name -> shape.
fn safetensors_header(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let mut f = File::open(path).map_err(|e| LmError::io(path, e))?;
    let len = f.metadata().map_err(|e| LmError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| LmError::format(format!("{} is truncated", path.display())))?;
    let n = u64::from_le_bytes(n);
    if n > len.saturating_sub(8) || n > 100 << 20 {
        return Err(LmError::format(format!(
            "{} has a corrupt header length",
            path.display()
        )));
    }
    let mut buf = vec![0u8; n as usize];
    f.read_exact(&mut buf).map_err(|e| LmError::io(path, e))?;
    let header: Json = serde_json::from_slice(&buf)
        .map_err(|e| LmError::format(format!("{}: {e}", path.display())))?;
    let obj = header
        .as_object()
        .ok_or_else(|| LmError::format("safetensors header is not an object"))?;
    let mut out = Vec::new();
    for (k, v) in obj {
        if k == "__metadata__" {
            continue;
        }
        let shape = v
            .get("shape")
            .and_then(Json::as_array)
            .ok_or_else(|| LmError::format(format!("safetensors entry {k} has no shape")))?
            .iter()
            .map(|d| d.as_u64().map(|x| x as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| LmError::format(format!("safetensors entry {k} has a bad shape")))?;
        out.push((k.clone(), shape));
    }
    Ok(out)
}

/// Tensors of an HF folder, converted to f32 on demand.
struct HfTensors(HashMap<String, Tensor>);

impl HfTensors {
    fn load(dir: &Path) -> Result<Self> {
        let mut all = HashMap::new();
        for f in safetensors_files(dir)? {
            let m = candle_core::safetensors::load(&f, &Device::Cpu)
                .map_err(|e| LmError::format(format!("{}: {e}", f.display())))?;
            all.extend(m);
        }
        Ok(HfTensors(all))
    }
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self
            .0
            .remove(name)
            .ok_or_else(|| LmError::format(format!("tensor {name} is missing")))?;
        if t.dims() != shape {
            return Err(LmError::format(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(cerr(name))
    }
    fn take_opt(&mut self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.has(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
    fn weight(&mut self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        Weight::dense(self.take(name, &[rows, cols])?, rows, cols)
    }
    /// A GPT-2 `Conv1D` weight (stored `[in, out]`) as an `[out, in]` weight.
    fn conv1d(&mut self, name: &str, inp: usize, out: usize) -> Result<Weight> {
        let w = self.take(name, &[inp, out])?;
        let mut t = vec![0f32; w.len()];
        for i in 0..inp {
            for o in 0..out {
                t[o * inp + i] = w[i * out + o];
            }
        }
        Weight::dense(t, out, inp)
    }
}

fn hf_tokenizer(dir: &Path, cfg: &HfConfig) -> Result<Tok> {
    let tpath = dir.join("tokenizer.json");
    if !tpath.is_file() {
        return Err(LmError::format(format!(
            "{} has no tokenizer.json",
            dir.display()
        )));
    }
    let tok = tokenizers::Tokenizer::from_file(&tpath)
        .map_err(|e| LmError::Tokenizer(format!("{}: {e}", tpath.display())))?;
    let tcfg = read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
    let gen_cfg = read_json_opt(&dir.join("generation_config.json"))?.unwrap_or(Json::Null);
    let token_id = |v: Option<&Json>| -> Option<u32> {
        let s = match v? {
            Json::String(s) => s.as_str(),
            Json::Object(o) => o.get("content")?.as_str()?,
            _ => return None,
        };
        tok.token_to_id(s)
    };
    let bos = cfg
        .ids("bos_token_id")
        .first()
        .copied()
        .or_else(|| token_id(tcfg.get("bos_token")));
    let mut eos = cfg.ids("eos_token_id");
    eos.extend(HfConfig(gen_cfg).ids("eos_token_id"));
    if eos.is_empty() {
        eos.extend(token_id(tcfg.get("eos_token")));
    }
    let mut seen = std::collections::HashSet::new();
    eos.retain(|e| seen.insert(*e));
    let add_bos = tcfg
        .get("add_bos_token")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let template = tcfg.get("chat_template").and_then(Json::as_str);
    Tok::new(tok, bos, eos, add_bos, template)
}

/// Rope inverse frequencies from an HF llama config (`rope_theta`/`rope_scaling` or the
/// transformers 5 `rope_parameters`).
fn hf_rope(cfg: &HfConfig, head_dim: usize) -> Result<Vec<f32>> {
    let params = cfg.0.get("rope_parameters").filter(|v| v.is_object());
    let scaling = cfg
        .0
        .get("rope_scaling")
        .filter(|v| v.is_object())
        .or(params);
    let theta = cfg
        .f64_opt("rope_theta")
        .or_else(|| {
            params
                .and_then(|p| p.get("rope_theta"))
                .and_then(Json::as_f64)
        })
        .unwrap_or(10000.0);
    let kind = scaling
        .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
        .and_then(Json::as_str)
        .unwrap_or("default");
    let get = |k: &str| scaling.and_then(|s| s.get(k)).and_then(Json::as_f64);
    match kind {
        "default" => rope_inv_freq(head_dim, theta, 1.0, None),
        "linear" => rope_inv_freq(head_dim, theta, get("factor").unwrap_or(1.0), None),
        "llama3" => {
            let factor = get("factor").unwrap_or(8.0);
            let low = get("low_freq_factor").unwrap_or(1.0);
            let high = get("high_freq_factor").unwrap_or(4.0);
            let old = get("original_max_position_embeddings").unwrap_or(8192.0);
            if !(factor > 0.0 && high > low && old > 0.0) {
                return Err(LmError::format("invalid llama3 rope scaling parameters"));
            }
            let base = rope_inv_freq(head_dim, theta, 1.0, None)?;
            let (low_wl, high_wl) = (old / low, old / high);
            Ok(base
                .into_iter()
                .map(|f| {
                    let f = f as f64;
                    let wl = 2.0 * std::f64::consts::PI / f;
                    let v = if wl < high_wl {
                        f
                    } else if wl > low_wl {
                        f / factor
                    } else {
                        let s = (old / wl - low) / (high - low);
                        (1.0 - s) * f / factor + s * f
                    };
                    v as f32
                })
                .collect())
        }
        other => Err(LmError::Unsupported(format!("rope scaling type '{other}'"))),
    }
}

fn hf_act(name: &str) -> Result<Act> {
    Ok(match name {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
        "gelu" => Act::GeluErf,
        "relu" => Act::Relu,
        "silu" | "swish" => Act::Silu,
        other => {
            return Err(LmError::Unsupported(format!(
                "activation function '{other}'"
            )));
        }
    })
}

pub(crate) fn load_hf(dir: &Path) -> Result<Loaded> {
    let cfg = HfConfig(read_json(&dir.join("config.json"))?);
    let mt = cfg.model_type()?;
    let tok = hf_tokenizer(dir, &cfg)?;
    let mut ts = HfTensors::load(dir)?;
    let vocab = cfg.usize("vocab_size")?;
    let net = match mt.as_str() {
        "llama" => {
            let dim = cfg.usize("hidden_size")?;
            let n_layers = cfg.usize("num_hidden_layers")?;
            let n_heads = cfg.usize("num_attention_heads")?;
            let n_kv = match cfg.usize_opt("num_key_value_heads")? {
                Some(v) => check_dim("num_key_value_heads", v)?,
                None => n_heads,
            };
            let head_dim = match cfg.usize_opt("head_dim")? {
                Some(v) => check_dim("head_dim", v)?,
                None => dim / n_heads,
            };
            let ffn = cfg.usize("intermediate_size")?;
            let max_pos = cfg.usize("max_position_embeddings")?;
            let eps = cfg.f64_opt("rms_norm_eps").unwrap_or(1e-6) as f32;
            let act = cfg.str_opt("hidden_act").unwrap_or("silu");
            if act != "silu" {
                return Err(LmError::Unsupported(format!("llama hidden_act '{act}'")));
            }
            let cfgm = llama_config(dim, n_layers, n_heads, n_kv, head_dim, max_pos)?;
            let inv = hf_rope(&cfg, head_dim)?;
            let attn_bias = cfg.bool_or("attention_bias", false);
            let mlp_bias = cfg.bool_or("mlp_bias", false);
            let (q, kv) = (n_heads * head_dim, n_kv * head_dim);
            let embed = Arc::new(ts.weight("model.embed_tokens.weight", vocab, dim)?);
            let mut blocks = Vec::with_capacity(n_layers);
            for i in 0..n_layers {
                let p = |s: &str| format!("model.layers.{i}.{s}");
                let lin = |ts: &mut HfTensors,
                           name: &str,
                           rows: usize,
                           cols: usize,
                           bias: bool|
                 -> Result<LinearPart> {
                    let w = ts.weight(&p(&format!("{name}.weight")), rows, cols)?;
                    let b = if bias {
                        Some(ts.take(&p(&format!("{name}.bias")), &[rows])?)
                    } else {
                        None
                    };
                    Ok(LinearPart {
                        w: Arc::new(w),
                        bias: b,
                    })
                };
                let attn_norm = Norm::Rms {
                    w: ts.take(&p("input_layernorm.weight"), &[dim])?,
                    eps,
                };
                let qkv = Linear::new(
                    vec![
                        lin(&mut ts, "self_attn.q_proj", q, dim, attn_bias)?,
                        lin(&mut ts, "self_attn.k_proj", kv, dim, attn_bias)?,
                        lin(&mut ts, "self_attn.v_proj", kv, dim, attn_bias)?,
                    ],
                    dim,
                )?;
                let o = Linear::new(
                    vec![lin(&mut ts, "self_attn.o_proj", dim, q, attn_bias)?],
                    q,
                )?;
                let ffn_norm = Norm::Rms {
                    w: ts.take(&p("post_attention_layernorm.weight"), &[dim])?,
                    eps,
                };
                let up = Linear::new(
                    vec![
                        lin(&mut ts, "mlp.gate_proj", ffn, dim, mlp_bias)?,
                        lin(&mut ts, "mlp.up_proj", ffn, dim, mlp_bias)?,
                    ],
                    dim,
                )?;
                let down = Linear::new(
                    vec![lin(&mut ts, "mlp.down_proj", dim, ffn, mlp_bias)?],
                    ffn,
                )?;
                blocks.push(Block {
                    attn_norm,
                    qkv,
                    o,
                    ffn_norm,
                    up,
                    down,
                });
            }
            let final_norm = Norm::Rms {
                w: ts.take("model.norm.weight", &[dim])?,
                eps,
            };
            let tie = cfg.bool_or("tie_word_embeddings", false);
            if !tie && !ts.has("lm_head.weight") {
                return Err(LmError::format(
                    "lm_head.weight is missing and embeddings are not tied",
                ));
            }
            let head_w = if tie {
                embed.clone()
            } else {
                Arc::new(ts.weight("lm_head.weight", vocab, dim)?)
            };
            let head = Linear::new(
                vec![LinearPart {
                    w: head_w,
                    bias: None,
                }],
                dim,
            )?;
            let net = Transformer {
                cfg: cfgm,
                embed,
                pos_embed: None,
                blocks,
                final_norm,
                head,
                rope_inv_freq: inv,
            };
            (net, max_pos)
        }
        "gpt2" => {
            let dim = cfg.usize("n_embd")?;
            let n_layers = cfg.usize("n_layer")?;
            let n_heads = cfg.usize("n_head")?;
            let max_pos = cfg.usize("n_positions")?;
            let ffn = match cfg.usize_opt("n_inner")? {
                Some(v) => check_dim("n_inner", v)?,
                None => 4 * dim,
            };
            let eps = cfg.f64_opt("layer_norm_epsilon").unwrap_or(1e-5) as f32;
            let act = hf_act(cfg.str_opt("activation_function").unwrap_or("gelu_new"))?;
            if dim % n_heads != 0 {
                return Err(LmError::format("n_embd is not a multiple of n_head"));
            }
            let hd = dim / n_heads;
            let cfgm = Config {
                family: Family::Gpt2,
                dim,
                n_layers,
                n_heads,
                n_kv_heads: n_heads,
                head_dim: hd,
                max_pos,
                attn_scale: if cfg.bool_or("scale_attn_weights", true) {
                    1.0 / (hd as f32).sqrt()
                } else {
                    1.0
                },
                scale_by_layer: cfg.bool_or("scale_attn_by_inverse_layer_idx", false),
                mlp: MlpKind::Plain(act),
            };
            let pre = if ts.has("transformer.wte.weight") {
                "transformer."
            } else {
                ""
            };
            let embed = Arc::new(ts.weight(&format!("{pre}wte.weight"), vocab, dim)?);
            let pos = ts.take(&format!("{pre}wpe.weight"), &[max_pos, dim])?;
            let ln = |ts: &mut HfTensors, name: &str| -> Result<Norm> {
                Ok(Norm::Layer {
                    w: ts.take(&format!("{name}.weight"), &[dim])?,
                    b: ts.take(&format!("{name}.bias"), &[dim])?,
                    eps,
                })
            };
            let mut blocks = Vec::with_capacity(n_layers);
            for i in 0..n_layers {
                let p = |s: &str| format!("{pre}h.{i}.{s}");
                let attn_norm = ln(&mut ts, &p("ln_1"))?;
                let wqkv = ts.conv1d(&p("attn.c_attn.weight"), dim, 3 * dim)?;
                let qkv = Linear::new(
                    vec![part(wqkv, ts.take_opt(&p("attn.c_attn.bias"), &[3 * dim])?)],
                    dim,
                )?;
                let wo = ts.conv1d(&p("attn.c_proj.weight"), dim, dim)?;
                let o = Linear::new(
                    vec![part(wo, ts.take_opt(&p("attn.c_proj.bias"), &[dim])?)],
                    dim,
                )?;
                let ffn_norm = ln(&mut ts, &p("ln_2"))?;
                let wu = ts.conv1d(&p("mlp.c_fc.weight"), dim, ffn)?;
                let up = Linear::new(
                    vec![part(wu, ts.take_opt(&p("mlp.c_fc.bias"), &[ffn])?)],
                    dim,
                )?;
                let wd = ts.conv1d(&p("mlp.c_proj.weight"), ffn, dim)?;
                let down = Linear::new(
                    vec![part(wd, ts.take_opt(&p("mlp.c_proj.bias"), &[dim])?)],
                    ffn,
                )?;
                blocks.push(Block {
                    attn_norm,
                    qkv,
                    o,
                    ffn_norm,
                    up,
                    down,
                });
            }
            let final_norm = ln(&mut ts, &format!("{pre}ln_f"))?;
            let tie = cfg.bool_or("tie_word_embeddings", true) || !ts.has("lm_head.weight");
            let head_w = if tie {
                embed.clone()
            } else {
                Arc::new(ts.weight("lm_head.weight", vocab, dim)?)
            };
            let head = Linear::new(
                vec![LinearPart {
                    w: head_w,
                    bias: None,
                }],
                dim,
            )?;
            let net = Transformer {
                cfg: cfgm,
                embed,
                pos_embed: Some(pos),
                blocks,
                final_norm,
                head,
                rope_inv_freq: vec![],
            };
            (net, max_pos)
        }
        other => {
            return Err(LmError::Unsupported(format!(
                "model_type '{other}' (supported: llama, gpt2)"
            )));
        }
    };
    let (net, max_pos) = net;
    net.validate()?;
    let info = ModelInfo {
        kind: "causal_lm",
        format: "safetensors".into(),
        architecture: mt,
        parameters: hf_parameters(dir)?,
        context_length: max_pos,
        vocab,
    };
    Ok(Loaded { net, tok, info })
}

/// Parameter count from the safetensors headers (non-persistent GPT-2 attention buffers
/// of old checkpoints excluded).
fn hf_parameters(dir: &Path) -> Result<u64> {
    let mut n = 0u64;
    for f in safetensors_files(dir)? {
        for (name, shape) in safetensors_header(&f)? {
            if name.ends_with("attn.bias") && shape.len() == 4 || name.ends_with("attn.masked_bias")
            {
                continue;
            }
            n += shape.iter().map(|&d| d as u64).product::<u64>();
        }
    }
    Ok(n)
}

pub(crate) fn probe_hf(dir: &Path) -> Result<ModelInfo> {
    let cfg = HfConfig(read_json(&dir.join("config.json"))?);
    let mt = cfg.model_type()?;
    let context_length = match mt.as_str() {
        "gpt2" => cfg.usize("n_positions")?,
        "llama" => cfg.usize("max_position_embeddings")?,
        other => {
            return Err(LmError::Unsupported(format!(
                "model_type '{other}' (supported: llama, gpt2)"
            )));
        }
    };
    Ok(ModelInfo {
        kind: "causal_lm",
        format: "safetensors".into(),
        architecture: mt,
        parameters: hf_parameters(dir)?,
        context_length,
        vocab: cfg.usize("vocab_size")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // 2 heads of dim 4, rows of length 1: HF rows 0..8
        let hf: Vec<u32> = (0..8).collect();
        // llama.cpp permute: reshape(n_head, 2, hd/2).swapaxes(1, 2)
        let mut gguf = Vec::new();
        for h in 0..2 {
            for i in 0..2 {
                for s in 0..2 {
                    gguf.push(hf[h * 4 + s * 2 + i]);
                }
            }
        }
        assert_eq!(gguf, vec![0, 2, 1, 3, 4, 6, 5, 7]);
        assert_eq!(unpermute_rows(&gguf, 1, 2).unwrap(), hf);
        assert!(unpermute_rows(&gguf, 1, 3).is_err());
        assert!(unpermute_rows(&gguf, 3, 2).is_err());
    }

    #[test]
    fn rope_frequencies() {
        let f = rope_inv_freq(4, 10000.0, 1.0, None).unwrap();
        assert_eq!(f.len(), 2);
        assert!((f[0] - 1.0).abs() < 1e-7 && (f[1] - 0.01).abs() < 1e-7);
        let f2 = rope_inv_freq(4, 10000.0, 2.0, Some(&[1.0, 4.0])).unwrap();
        assert!((f2[1] - 0.01 / 8.0).abs() < 1e-8);
        assert!(rope_inv_freq(4, -1.0, 1.0, None).is_err());
        let cfg = HfConfig(serde_json::json!({"rope_scaling": {"rope_type": "yarn"}}));
        assert!(matches!(hf_rope(&cfg, 4), Err(LmError::Unsupported(_))));
        let cfg = HfConfig(
            serde_json::json!({"rope_parameters": {"rope_theta": 100.0, "rope_type": "default"}}),
        );
        assert!((hf_rope(&cfg, 4).unwrap()[1] - 0.1).abs() < 1e-7);
        let cfg = HfConfig(
            serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}),
        );
        let f3 = hf_rope(&cfg, 128).unwrap();
        let base = rope_inv_freq(128, 500000.0, 1.0, None).unwrap();
        assert_eq!(f3[0], base[0]);
        assert!((f3[63] - base[63] / 8.0).abs() < 1e-12);
    }
}
