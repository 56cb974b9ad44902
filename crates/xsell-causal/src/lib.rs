//! Causal language-model scoring and generation for pg_xsell.
//!
//! Loads decoder-only language models of the **llama** family (SmolLM/SmolLM2, Llama,
//! TinyLlama-style BPE models) and **GPT-2** from either a GGUF file (F32, F16, BF16,
//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and K-quant tensors, decoded with candle) or a Hugging Face
//! folder (`config.json` + `tokenizer.json` + `*.safetensors`), and evaluates them on CPU
//! with a forward pass that returns logits at every position:
//!
//! * [`CausalLm::token_logprobs`] / [`CausalLm::loglik`]: lm-evaluation-harness
//!   `loglikelihood_rolling` (every token scored, the first one conditioned on BOS, long
//!   texts in disjoint windows of the full context);
//! * [`CausalLm::loglik_cond`] and [`CausalLm::rank`]: harness `loglikelihood` of a
//!   continuation given a context (rank evaluates the shared context once);
//! * [`CausalLm::generate`]: greedy or seeded top-p sampling with a key/value cache and the
//!   model's ChatML chat template.
//!
//! Heavy work runs inside a caller-supplied [`rayon::ThreadPool`]; long work calls a
//! caller-supplied `interrupt` callback on the calling thread between batches, windows and
//! generated tokens (it may panic to cancel: no state is left half-updated). Nothing in
//! this crate panics on bad input or corrupt model files: errors are [`LmError`] values.

#![warn(missing_docs)]

mod error;
mod kernels;
mod loader;
mod model;
mod sample;
mod tokenizer;
mod weights;

pub use error::{LmError, Result};

use model::{KvCache, Seg, Transformer};
use rayon::ThreadPool;
use std::path::Path;
use tokenizer::Tok;

/// Default number of tokens packed into one forward pass (and chunk length of long
/// sequences); see [`CausalLm::set_batch_tokens`].
pub const DEFAULT_BATCH_TOKENS: usize = 512;

/// How the weights of GGUF block-quantized (Q4_0, Q4_1, Q8_0, K-quant, ...) and F16
/// tensors are held in memory. F32 and BF16 tensors and safetensors folders are always
/// held as f32. Activations are never quantized: every product accumulates in f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weights {
    /// Dequantized at load to IEEE half precision (F16 tensors as they are), widened to
    /// f32 in registers. The default: half the memory and memory traffic of f32, which is
    /// what bounds scoring a short text (a forward pass with few rows reads every weight
    /// once); rounding the dequantized values to 11 significant bits moves log-likelihoods
    /// by about 1e-4 relative.
    #[default]
    Half,
    /// Dequantized at load to f32: the exact dequantized values (scores equal to a float32
    /// reference up to summation order), twice the memory of [`Weights::Half`].
    Float,
    /// Kept block-quantized (about 6x smaller than f32 for Q4 models); tiles are
    /// dequantized to f32 on the fly during matrix products, so scores equal those of
    /// [`Weights::Float`] up to summation order, at a somewhat lower throughput.
    Quantized,
}

/// How to load a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// How quantized and F16 GGUF weights are held (see [`Weights`]).
    pub weights: Weights,
}

/// Description of a model file, as read by [`CausalLm::probe`] or after loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// Always `"causal_lm"`.
    pub kind: &'static str,
    /// `"gguf"` or `"safetensors"`.
    pub format: String,
    /// Architecture name (`"llama"`, `"gpt2"`).
    pub architecture: String,
    /// Number of parameters (tensor elements stored in the file; tied weights once).
    pub parameters: u64,
    /// Maximum context length in tokens.
    pub context_length: usize,
    /// Vocabulary size (rows of the token embedding).
    pub vocab: usize,
}

/// Score of one token of a text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// Index of the token in the text's token sequence (0-based).
    pub pos: usize,
    /// The token.
    pub token_id: u32,
    /// Natural log-probability of the token given BOS and the preceding tokens.
    pub logprob: f64,
    /// The most probable token at this position (first one on ties).
    pub greedy_id: u32,
}

/// Score of a continuation given a context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ContinuationScore {
    /// Sum of the natural log-probabilities of the continuation tokens (0 when empty).
    pub loglik: f64,
    /// Number of continuation tokens scored.
    pub n_tokens: usize,
    /// Whether every continuation token is the arg-max prediction (harness `is_greedy`).
    pub is_greedy: bool,
}

/// One message of a chat conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `"system"`, `"user"` or `"assistant"`.
    pub role: String,
    /// Message text (special-token strings in it are treated as plain text).
    pub content: String,
}

impl ChatMessage {
    /// Convenience constructor.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// What to generate from.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    /// A text: with [`GenOptions::chat_template`] it becomes one user message; otherwise
    /// it is tokenized as is (with BOS first when the model asks for it).
    Text(&'a str),
    /// A conversation, rendered with the model's chat template (required).
    Messages(&'a [ChatMessage]),
    /// Token ids used verbatim.
    Ids(&'a [u32]),
}

/// Generation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenOptions {
    /// Maximum number of new tokens.
    pub max_tokens: usize,
    /// Sampling temperature; 0 means greedy (arg-max) decoding.
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 disables it.
    pub top_p: f64,
    /// Seed of the sampler: the same seed, prompt and options give the same output.
    pub seed: u64,
    /// Wrap a [`Prompt::Text`] in the chat template as a user message.
    pub chat_template: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            chat_template: true,
        }
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence / end-of-turn token was produced (not included in the output).
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
    /// The context window is full.
    ContextFull,
}

/// Result of [`CausalLm::generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// Decoded text of the new tokens (special tokens skipped).
    pub text: String,
    /// The new token ids (without the stop token).
    pub ids: Vec<u32>,
    /// Number of prompt tokens fed to the model.
    pub prompt_tokens: usize,
    /// Why generation stopped.
    pub finish: FinishReason,
}

/// A loaded causal language model with its tokenizer. `Send + Sync`: share it freely;
/// all scoring and generation methods take `&self`.
pub struct CausalLm {
    net: Transformer,
    tok: Tok,
    info: ModelInfo,
    window: usize,
    batch_tokens: usize,
    /// The state after the BOS prefix alone, computed on first use: every text scored with
    /// the `loglikelihood_rolling` convention starts with it, so its key/value cache and
    /// next-token distribution are shared instead of recomputed per text.
    bos: std::sync::OnceLock<BosState>,
}

/// Key/value cache after `[BOS]` and the log-probabilities of the token that follows.
struct BosState {
    cache: KvCache,
    logprobs: Vec<f64>,
    greedy: u32,
}

/// One forward-pass job: score positions `score_from..input.len()` of `input`, position
/// `i` predicting `targets[i]`, optionally continuing a key/value cache.
struct Job<'a> {
    input: Vec<u32>,
    targets: Vec<u32>,
    score_from: usize,
    past: Option<&'a KvCache>,
}

impl CausalLm {
    /// Loads a model from a `.gguf` file or a Hugging Face folder.
    ///
    /// Errors: [`LmError::Io`] when unreadable, [`LmError::ModelFormat`] for truncated or
    /// inconsistent files, [`LmError::Unsupported`] for other architectures, tokenizers or
    /// tensor types, [`LmError::Tokenizer`] when the tokenizer cannot be built.
    pub fn load(path: &Path, opts: LoadOptions) -> Result<Self> {
        let loaded = match loader::classify(path)? {
            loader::Source::Gguf(p) => loader::load_gguf(&p, &opts)?,
            loader::Source::HfFolder(p) => loader::load_hf(&p)?,
        };
        let window = loaded.info.context_length.min(loaded.net.cfg.max_pos);
        if window < 2 {
            return Err(LmError::format("context length must be at least 2 tokens"));
        }
        Ok(CausalLm {
            net: loaded.net,
            tok: loaded.tok,
            info: loaded.info,
            window,
            batch_tokens: DEFAULT_BATCH_TOKENS,
            bos: std::sync::OnceLock::new(),
        })
    }

    /// Reads only the metadata (GGUF header / `config.json` and safetensors headers).
    pub fn probe(path: &Path) -> Result<ModelInfo> {
        match loader::classify(path)? {
            loader::Source::Gguf(p) => loader::probe_gguf(&p),
            loader::Source::HfFolder(p) => loader::probe_hf(&p),
        }
    }

    /// Description of the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Token every scored text is conditioned on: BOS, or EOS for models without BOS
    /// (GPT-2's `<|endoftext|>`), like the lm-evaluation-harness prefix token.
    pub fn bos_id(&self) -> u32 {
        self.tok.prefix_id
    }

    /// Tokens that end generation (EOS, end-of-turn such as `<|im_end|>`).
    pub fn eos_ids(&self) -> &[u32] {
        &self.tok.eos
    }

    /// Context window used for scoring and generation (the model's maximum by default).
    pub fn context_length(&self) -> usize {
        self.window
    }

    /// Sets a smaller context window (at least 2 tokens, at most the model's maximum):
    /// rolling windows and truncation then use it; it also bounds memory and time.
    pub fn set_context_length(&mut self, n: usize) -> Result<()> {
        let max = self.info.context_length.min(self.net.cfg.max_pos);
        if n < 2 || n > max {
            return Err(LmError::param(format!(
                "context length {n} must be between 2 and {max}"
            )));
        }
        self.window = n;
        Ok(())
    }

    /// Sets how many tokens go through the model in one forward pass (at least 1). Short
    /// texts are packed up to this many tokens; longer sequences are processed in chunks
    /// of it with a key/value cache. Larger values use the matrix kernels better but need
    /// more memory (activations and, for long texts, attention scores grow with it);
    /// results do not depend on it beyond float rounding.
    pub fn set_batch_tokens(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(LmError::param("batch_tokens must be at least 1"));
        }
        self.batch_tokens = n;
        Ok(())
    }

    /// Bytes of model weights held in memory.
    pub fn memory_bytes(&self) -> usize {
        let n = &self.net;
        let embed = n.embed.bytes();
        let blocks: usize = n
            .blocks
            .iter()
            .map(|b| b.qkv.bytes() + b.o.bytes() + b.up.bytes() + b.down.bytes())
            .sum();
        let head = if n.head.shares(&n.embed) {
            0
        } else {
            n.head.bytes()
        };
        embed + blocks + head + n.pos_embed.as_ref().map_or(0, |p| p.len() * 4)
    }

    /// Token ids of `text` (no BOS/EOS added; special-token strings are recognised).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tok.encode(text)
    }

    /// Text of token ids (special tokens included).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        self.tok.decode(ids, false)
    }

    /// Text of a single token (special tokens as written, partial UTF-8 sequences as
    /// U+FFFD).
    pub fn token_str(&self, id: u32) -> Result<String> {
        self.decode(&[id])
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let v = self.net.vocab().min(self.net.embed.rows());
        match ids.iter().find(|&&i| i as usize >= v) {
            Some(bad) => Err(LmError::param(format!(
                "token id {bad} is outside the vocabulary of {v}"
            ))),
            None => Ok(()),
        }
    }

    /// Per-token scores of `text`: lm-evaluation-harness `loglikelihood_rolling` with the
    /// BOS prefix token. Texts longer than [`context_length`](Self::context_length) are
    /// scored in disjoint windows, each conditioned on the full context of preceding
    /// tokens. An empty text has no tokens (log-likelihood 0).
    pub fn token_logprobs(
        &self,
        text: &str,
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<TokenScore>> {
        Ok(self
            .token_logprobs_batch(&[text], pool, interrupt)?
            .pop()
            .unwrap_or_default())
    }

    /// [`token_logprobs`](Self::token_logprobs) of many texts, packed into shared forward
    /// passes (much faster for short texts; results are identical).
    pub fn token_logprobs_batch(
        &self,
        texts: &[&str],
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<TokenScore>>> {
        let mut token_lists = Vec::with_capacity(texts.len());
        for t in texts {
            token_lists.push(self.tokenize(t)?);
        }
        let bos = if token_lists.iter().any(|t| !t.is_empty()) {
            Some(self.bos_state(pool, interrupt)?)
        } else {
            None
        };
        let mut jobs = Vec::new();
        let mut owners = Vec::new(); // (text index, index of the first scored token)
        let mut out: Vec<Vec<TokenScore>> = token_lists
            .iter()
            .map(|t| Vec::with_capacity(t.len()))
            .collect();
        for (ti, toks) in token_lists.iter().enumerate() {
            self.check_ids(toks)?;
            if let (Some(b), Some(&t0)) = (bos, toks.first()) {
                // The first token is scored from the shared BOS state.
                out[ti].push(TokenScore {
                    pos: 0,
                    token_id: t0,
                    logprob: b.logprobs[t0 as usize],
                    greedy_id: b.greedy,
                });
            }
            for (job, first) in self.rolling_jobs(toks, bos) {
                jobs.push(job);
                owners.push((ti, first));
            }
        }
        let results = self.run_jobs(&jobs, pool, interrupt)?;
        for ((ti, first), res) in owners.into_iter().zip(results) {
            for (k, (lp, greedy)) in res.into_iter().enumerate() {
                let pos = first + k;
                out[ti].push(TokenScore {
                    pos,
                    token_id: token_lists[ti][pos],
                    logprob: lp,
                    greedy_id: greedy,
                });
            }
        }
        Ok(out)
    }

    /// Sum of [`token_logprobs`](Self::token_logprobs) (0 for an empty text).
    pub fn loglik(
        &self,
        text: &str,
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<f64> {
        Ok(self
            .token_logprobs(text, pool, interrupt)?
            .iter()
            .map(|s| s.logprob)
            .sum())
    }

    /// [`loglik`](Self::loglik) of many texts in shared forward passes.
    pub fn loglik_batch(
        &self,
        texts: &[&str],
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<f64>> {
        Ok(self
            .token_logprobs_batch(texts, pool, interrupt)?
            .iter()
            .map(|v| v.iter().map(|s| s.logprob).sum())
            .collect())
    }

    /// Harness `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`: jobs
    /// and the index of the first token each one scores.
    ///
    /// The first window is `[BOS] + tokens`; its BOS position comes from `bos` (the first
    /// token's score is taken from it by the caller), so the job starts after it.
    fn rolling_jobs<'a>(&self, toks: &[u32], bos: Option<&'a BosState>) -> Vec<(Job<'a>, usize)> {
        let l = self.window;
        let mut jobs = Vec::new();
        if toks.is_empty() {
            return jobs;
        }
        let first = l.min(toks.len());
        match bos {
            Some(b) if first > 1 => jobs.push((
                Job {
                    input: toks[..first - 1].to_vec(),
                    targets: toks[1..first].to_vec(),
                    score_from: 0,
                    past: Some(&b.cache),
                },
                1,
            )),
            Some(_) => {}
            None => {
                let mut input = Vec::with_capacity(first);
                input.push(self.tok.prefix_id);
                input.extend_from_slice(&toks[..first - 1]);
                jobs.push((
                    Job {
                        input,
                        targets: toks[..first].to_vec(),
                        score_from: 0,
                        past: None,
                    },
                    0,
                ));
            }
        }
        let mut predicted = first;
        while predicted < toks.len() {
            let wpl = (toks.len() - predicted).min(l);
            let end = predicted + wpl;
            let seq = &toks[end - l - 1..end];
            jobs.push((
                Job {
                    input: seq[..l].to_vec(),
                    targets: seq[1..].to_vec(),
                    score_from: l - wpl,
                    past: None,
                },
                end - wpl,
            ));
            predicted += wpl;
        }
        jobs
    }

    /// Harness `_encode_pair`: trailing whitespace of the context moves to the
    /// continuation; continuation tokens are tokens(context + continuation) after the
    /// first len(tokens(context)) ones.
    fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let trimmed = context.trim_end();
        let cont = format!("{}{continuation}", &context[trimmed.len()..]);
        let ctx_ids = self.tok.encode(trimmed)?;
        let whole = self.tok.encode(&format!("{trimmed}{cont}"))?;
        let cont_ids = whole
            .get(ctx_ids.len()..)
            .map(<[u32]>::to_vec)
            .unwrap_or_default();
        self.check_ids(&ctx_ids)?;
        self.check_ids(&cont_ids)?;
        Ok((ctx_ids, cont_ids))
    }

    /// The harness job for BOS + context + continuation, left-truncated to the window.
    fn cond_job(&self, ctx_ids: &[u32], cont_ids: &[u32]) -> Result<Job<'static>> {
        let l = self.window;
        if cont_ids.len() > l {
            return Err(LmError::param(format!(
                "the continuation has {} tokens, more than the context window of {l}",
                cont_ids.len()
            )));
        }
        let mut seq = Vec::with_capacity(ctx_ids.len() + cont_ids.len() + 1);
        seq.push(self.tok.prefix_id);
        seq.extend_from_slice(ctx_ids);
        seq.extend_from_slice(cont_ids);
        if seq.len() > l + 1 {
            seq.drain(..seq.len() - (l + 1));
        }
        let n = seq.len() - 1;
        Ok(Job {
            input: seq[..n].to_vec(),
            targets: seq[1..].to_vec(),
            score_from: n - cont_ids.len(),
            past: None,
        })
    }

    /// Log-likelihood of `continuation` given `context` (lm-evaluation-harness
    /// `loglikelihood`): trailing spaces of the context move to the continuation, the
    /// continuation tokens are those of context+continuation after the context's, and they
    /// are conditioned on BOS + context tokens (BOS alone for an empty context; the
    /// sequence is left-truncated to the context window). An empty continuation scores 0.
    pub fn loglik_cond(
        &self,
        context: &str,
        continuation: &str,
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<ContinuationScore> {
        let (ctx, cont) = self.encode_pair(context, continuation)?;
        if cont.is_empty() {
            return Ok(ContinuationScore {
                loglik: 0.0,
                n_tokens: 0,
                is_greedy: true,
            });
        }
        let job = self.cond_job(&ctx, &cont)?;
        let res = self
            .run_jobs(std::slice::from_ref(&job), pool, interrupt)?
            .pop()
            .unwrap_or_default();
        Ok(summarize(&res, &cont))
    }

    /// Scores each candidate continuation of `context` like
    /// [`loglik_cond`](Self::loglik_cond), evaluating the shared context once (key/value
    /// cache) and the candidates together in packed batches. Results are in candidate
    /// order. When context + candidate exceed the window, that call falls back to
    /// independent left-truncated evaluation.
    pub fn rank(
        &self,
        context: &str,
        candidates: &[&str],
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<ContinuationScore>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut ctx_ids = None;
        let mut conts = Vec::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            // Tokenizing context + candidate for many candidates of a long context takes a
            // while: stay cancellable.
            if i % 16 == 15 {
                interrupt();
            }
            let (ctx, cont) = self.encode_pair(context, c)?;
            ctx_ids = Some(ctx);
            conts.push(cont);
        }
        let ctx_ids = ctx_ids.unwrap_or_default();
        let longest = conts.iter().map(Vec::len).max().unwrap_or(0);
        if ctx_ids.len() + longest > self.window {
            let mut jobs = Vec::new();
            let mut idx = Vec::new();
            for (i, cont) in conts.iter().enumerate() {
                if !cont.is_empty() {
                    jobs.push(self.cond_job(&ctx_ids, cont)?);
                    idx.push(i);
                }
            }
            let res = self.run_jobs(&jobs, pool, interrupt)?;
            let mut out = vec![
                ContinuationScore {
                    loglik: 0.0,
                    n_tokens: 0,
                    is_greedy: true
                };
                conts.len()
            ];
            for (i, r) in idx.into_iter().zip(res) {
                out[i] = summarize(&r, &conts[i]);
            }
            return Ok(out);
        }
        // Shared prefix: BOS + context, evaluated once.
        let mut prefix = Vec::with_capacity(ctx_ids.len() + 1);
        prefix.push(self.tok.prefix_id);
        prefix.extend_from_slice(&ctx_ids);
        let (cache, last) = self.prefill(&prefix, pool, interrupt)?;
        let threads = pool.current_num_threads();
        let logits = pool.install(|| self.net.logits_row(&last, threads));
        let (m, arg) = kernels::max_argmax(&logits)
            .ok_or_else(|| LmError::Compute("non-finite logits".into()))?;
        let lse = kernels::logsumexp_with_max(&logits, m);
        let mut jobs = Vec::new();
        let mut idx = Vec::new();
        for (i, cont) in conts.iter().enumerate() {
            if cont.len() > 1 {
                jobs.push(Job {
                    input: cont[..cont.len() - 1].to_vec(),
                    targets: cont[1..].to_vec(),
                    score_from: 0,
                    past: Some(&cache),
                });
                idx.push(i);
            }
        }
        let res = self.run_jobs(&jobs, pool, interrupt)?;
        let mut rest: Vec<Option<Vec<(f64, u32)>>> = vec![None; conts.len()];
        for (i, r) in idx.into_iter().zip(res) {
            rest[i] = Some(r);
        }
        let mut out = Vec::with_capacity(conts.len());
        for (cont, r) in conts.iter().zip(rest) {
            if cont.is_empty() {
                out.push(ContinuationScore {
                    loglik: 0.0,
                    n_tokens: 0,
                    is_greedy: true,
                });
                continue;
            }
            let mut all = vec![(logits[cont[0] as usize] as f64 - lse, arg as u32)];
            all.extend(r.unwrap_or_default());
            out.push(summarize(&all, cont));
        }
        Ok(out)
    }

    /// The shared state after `[BOS]` (computed once per loaded model).
    fn bos_state(&self, pool: &ThreadPool, interrupt: &mut dyn FnMut()) -> Result<&BosState> {
        if let Some(b) = self.bos.get() {
            return Ok(b);
        }
        let (cache, last) = self.prefill(&[self.tok.prefix_id], pool, interrupt)?;
        let threads = pool.current_num_threads();
        let logits = pool.install(|| self.net.logits_row(&last, threads));
        let (m, greedy) = kernels::max_argmax(&logits)
            .ok_or_else(|| LmError::Compute("non-finite logits".into()))?;
        let lse = kernels::logsumexp_with_max(&logits, m);
        let logprobs = logits.iter().map(|&x| x as f64 - lse).collect();
        let _ = self.bos.set(BosState {
            cache,
            logprobs,
            greedy: greedy as u32,
        });
        Ok(self.bos.get().expect("just set"))
    }

    /// Runs `tokens` (after an optional cache) through the model in chunks, returning the
    /// cache of all of them and the final hidden state of the last token.
    fn prefill(
        &self,
        tokens: &[u32],
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<(KvCache, Vec<f32>)> {
        self.prefill_from(KvCache::default(), tokens, pool, interrupt)
    }

    fn prefill_from(
        &self,
        mut cache: KvCache,
        tokens: &[u32],
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<(KvCache, Vec<f32>)> {
        let threads = pool.current_num_threads();
        let d = self.net.cfg.dim;
        let mut last = Vec::new();
        for chunk in tokens.chunks(self.batch_tokens) {
            interrupt();
            let out = pool.install(|| {
                self.net.forward(
                    &[Seg {
                        tokens: chunk,
                        past: Some(&cache),
                    }],
                    true,
                    threads,
                )
            })?;
            last = out.hidden[(chunk.len() - 1) * d..].to_vec();
            cache.append(out.kv.unwrap_or_default(), chunk.len());
        }
        if last.is_empty() {
            return Err(LmError::param(
                "cannot run the model on an empty token sequence",
            ));
        }
        Ok((cache, last))
    }

    /// Executes scoring jobs in packed batches; returns per job the (log-prob, arg-max)
    /// of each scored position.
    fn run_jobs(
        &self,
        jobs: &[Job<'_>],
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<(f64, u32)>>> {
        let threads = pool.current_num_threads();
        let mut out: Vec<Vec<(f64, u32)>> = Vec::with_capacity(jobs.len());
        let mut i = 0;
        while i < jobs.len() {
            if jobs[i].input.len() > self.batch_tokens {
                out.push(self.run_long_job(&jobs[i], pool, interrupt)?);
                i += 1;
                continue;
            }
            let mut j = i;
            let mut total = 0;
            while j < jobs.len()
                && jobs[j].input.len() <= self.batch_tokens
                && total + jobs[j].input.len() <= self.batch_tokens
            {
                total += jobs[j].input.len();
                j += 1;
            }
            let batch = &jobs[i..j];
            interrupt();
            let res = pool.install(|| -> Result<Vec<(f64, u32)>> {
                let segs: Vec<Seg<'_>> = batch
                    .iter()
                    .map(|b| Seg {
                        tokens: &b.input,
                        past: b.past,
                    })
                    .collect();
                let fwd = self.net.forward(&segs, false, threads)?;
                let mut req = Vec::new();
                let mut row = 0;
                for b in batch {
                    for k in b.score_from..b.input.len() {
                        req.push((row + k, b.targets[k]));
                    }
                    row += b.input.len();
                }
                self.net.score_rows(&fwd.hidden, &req, threads)
            })?;
            let mut it = res.into_iter();
            for b in batch {
                out.push(it.by_ref().take(b.input.len() - b.score_from).collect());
            }
            i = j;
        }
        Ok(out)
    }

    /// A job longer than one batch: chunks with a growing key/value cache.
    fn run_long_job(
        &self,
        job: &Job<'_>,
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<(f64, u32)>> {
        let threads = pool.current_num_threads();
        let mut cache = job.past.cloned().unwrap_or_default();
        let mut res = Vec::with_capacity(job.input.len() - job.score_from);
        let mut start = 0;
        while start < job.input.len() {
            let end = (start + self.batch_tokens).min(job.input.len());
            let chunk = &job.input[start..end];
            let need_kv = end < job.input.len();
            interrupt();
            let (part, kv) = pool.install(|| -> Result<_> {
                let fwd = self.net.forward(
                    &[Seg {
                        tokens: chunk,
                        past: Some(&cache),
                    }],
                    need_kv,
                    threads,
                )?;
                let req: Vec<(usize, u32)> = (start.max(job.score_from)..end)
                    .map(|k| (k - start, job.targets[k]))
                    .collect();
                Ok((self.net.score_rows(&fwd.hidden, &req, threads)?, fwd.kv))
            })?;
            res.extend(part);
            if let Some(kv) = kv {
                cache.append(kv, chunk.len());
            }
            start = end;
        }
        Ok(res)
    }

    /// Token ids of a chat conversation rendered with the model's ChatML template (with
    /// the template's default system message when the first message is not a system
    /// one), ending with the assistant generation prompt.
    pub fn chat_prompt_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let chat =
            self.tok.chat.as_ref().ok_or_else(|| {
                LmError::param("this model has no supported (ChatML) chat template")
            })?;
        if messages.is_empty() {
            return Err(LmError::param("a chat needs at least one message"));
        }
        let nl = self.tok.encode("\n")?;
        let mut ids = Vec::new();
        let push = |ids: &mut Vec<u32>, role: &str, content: &str| -> Result<()> {
            ids.push(chat.im_start);
            ids.extend(self.tok.encode_literal(&format!("{role}\n{content}"))?);
            ids.push(chat.im_end);
            ids.extend_from_slice(&nl);
            Ok(())
        };
        if messages[0].role != "system"
            && let Some(sys) = &chat.default_system
        {
            push(&mut ids, "system", sys)?;
        }
        for m in messages {
            push(&mut ids, &m.role, &m.content)?;
        }
        ids.push(chat.im_start);
        ids.extend(self.tok.encode("assistant\n")?);
        Ok(ids)
    }

    /// Generates a continuation of `prompt` with a key/value cache, stopping at an
    /// end-of-sequence/end-of-turn token, after `max_tokens`, or when the context window is
    /// full. Greedy when `temperature == 0`, else seeded temperature + top-p sampling
    /// (deterministic for a given seed). `interrupt` is called before every forward pass.
    pub fn generate(
        &self,
        prompt: Prompt<'_>,
        opts: &GenOptions,
        pool: &ThreadPool,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Generation> {
        if !(opts.temperature.is_finite() && opts.temperature >= 0.0) {
            return Err(LmError::param("temperature must be a finite number >= 0"));
        }
        if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
            return Err(LmError::param("top_p must be in (0, 1]"));
        }
        let mut ids = match prompt {
            Prompt::Text(t) if opts.chat_template => {
                self.chat_prompt_ids(&[ChatMessage::new("user", t)])?
            }
            Prompt::Text(t) => {
                let mut v = Vec::new();
                if self.tok.add_bos {
                    v.push(self.tok.prefix_id);
                }
                v.extend(self.tok.encode(t)?);
                v
            }
            Prompt::Messages(m) => self.chat_prompt_ids(m)?,
            Prompt::Ids(ids) => ids.to_vec(),
        };
        if ids.is_empty() {
            ids.push(self.tok.prefix_id);
        }
        self.check_ids(&ids)?;
        if ids.len() >= self.window {
            return Err(LmError::param(format!(
                "the prompt has {} tokens, the context window is {}",
                ids.len(),
                self.window
            )));
        }
        let prompt_tokens = ids.len();
        let threads = pool.current_num_threads();
        let mut rng = sample::SplitMix64::new(opts.seed);
        let mut out = Vec::new();
        let mut finish = FinishReason::Length;
        if opts.max_tokens > 0 {
            let (mut cache, mut last) = self.prefill(&ids, pool, interrupt)?;
            loop {
                let logits = pool.install(|| self.net.logits_row(&last, threads));
                let next = sample::sample(&logits, opts.temperature, opts.top_p, &mut rng)
                    .ok_or_else(|| LmError::Compute("non-finite logits".into()))?;
                if self.tok.eos.contains(&next) {
                    finish = FinishReason::Stop;
                    break;
                }
                out.push(next);
                if out.len() >= opts.max_tokens {
                    break;
                }
                if prompt_tokens + out.len() >= self.window {
                    finish = FinishReason::ContextFull;
                    break;
                }
                (cache, last) = self.prefill_from(cache, &[next], pool, interrupt)?;
            }
        }
        let text = self.tok.decode(&out, true)?;
        Ok(Generation {
            text,
            ids: out,
            prompt_tokens,
            finish,
        })
    }
}

fn summarize(res: &[(f64, u32)], cont: &[u32]) -> ContinuationScore {
    ContinuationScore {
        loglik: res.iter().map(|r| r.0).sum(),
        n_tokens: res.len(),
        is_greedy: res.iter().zip(cont).all(|(r, &t)| r.1 == t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_types_are_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CausalLm>();
        assert_send_sync::<LmError>();
    }

    #[test]
    fn defaults_and_errors_display() {
        let g = GenOptions::default();
        assert_eq!((g.temperature, g.top_p, g.chat_template), (0.0, 1.0, true));
        assert_eq!(LoadOptions::default().weights, Weights::Half);
        let e = LmError::InvalidParameter("x".into());
        assert_eq!(e.to_string(), "invalid parameter: x");
        assert!(
            LmError::ModelFormat("y".into())
                .to_string()
                .contains("corrupt")
        );
        let s = summarize(&[(-1.0, 3), (-0.5, 4)], &[3, 5]);
        assert_eq!((s.loglik, s.n_tokens, s.is_greedy), (-1.5, 2, false));
    }
}
