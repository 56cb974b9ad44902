//! Sentence embeddings for BERT-family sentence-transformers models
//! (e.g. `all-MiniLM-L6-v2`), computed in f32 on the CPU.
//!
//! The semantics follow `sentence_transformers.SentenceTransformer.encode`:
//! WordPiece tokenisation with `[CLS]`/`[SEP]`, truncation to `max_seq_length`
//! tokens (specials included), the BERT encoder, the pooling configured in
//! `1_Pooling/config.json` (mean, CLS, max, mean-sqrt-len; several are
//! concatenated in sentence-transformers order) and L2 normalisation.
//!
//! The encoder is a hand-written forward pass whose linear layers are OpenBLAS
//! `sgemm` calls over all tokens of a mini-batch at once (sequences are packed
//! without padding; see [`EmbeddingModel::embed_with`]). Weights are read from
//! `model.safetensors` through a read-only memory map, so several processes
//! (PostgreSQL backends) share one copy in the page cache.
//!
//! Nothing here panics on bad input or a corrupt model folder: every failure is
//! an [`EmbedError`].

mod bert;
mod config;
mod gemm;
mod math;
mod weights;

pub use config::PoolingMode;

use rayon::ThreadPool;
use std::fmt;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Largest accepted mini-batch size (texts per forward pass).
pub const MAX_BATCH_SIZE: usize = 4096;

/// A mini-batch is also closed once it holds this many tokens (bounds memory for long texts).
pub const MAX_BATCH_TOKENS: usize = 4096;

/// Largest accepted thread count.
pub const MAX_THREADS: usize = 1024;

/// Texts tokenised between two calls of the interrupt callback.
const TOKENIZE_CHUNK: usize = 256;

/// Errors of this crate.
#[derive(Debug)]
pub enum EmbedError {
    /// The model folder or one of its required files does not exist.
    ModelNotFound {
        /// The missing path.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// A configuration file is malformed or holds an invalid value.
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights file is corrupt, truncated or does not match the configuration.
    ModelFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be loaded or failed on a text.
    Tokenizer {
        /// Details.
        message: String,
    },
    /// The model uses a feature this crate does not implement.
    Unsupported {
        /// Details.
        message: String,
    },
    /// An argument is out of range.
    InvalidParameter {
        /// Details.
        message: String,
    },
    /// Reading a file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// The BLAS layer rejected a call (an internal shape error).
    Blas(xsell_blas::BlasError),
}

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmbedError::ModelNotFound { path, message } => {
                write!(
                    f,
                    "embedding model not found: {}: {message}",
                    path.display()
                )
            }
            EmbedError::Config { path, message } => write!(
                f,
                "invalid model configuration {}: {message}",
                path.display()
            ),
            EmbedError::ModelFormat { path, message } => {
                write!(f, "corrupt model file {}: {message}", path.display())
            }
            EmbedError::Tokenizer { message } => write!(f, "tokenizer error: {message}"),
            EmbedError::Unsupported { message } => write!(f, "unsupported model: {message}"),
            EmbedError::InvalidParameter { message } => write!(f, "invalid parameter: {message}"),
            EmbedError::Io { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            EmbedError::Blas(e) => write!(f, "BLAS error: {e}"),
        }
    }
}

impl std::error::Error for EmbedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EmbedError::Io { source, .. } => Some(source),
            EmbedError::Blas(e) => Some(e),
            _ => None,
        }
    }
}

impl From<xsell_blas::BlasError> for EmbedError {
    fn from(e: xsell_blas::BlasError) -> Self {
        EmbedError::Blas(e)
    }
}

/// Summary of a model folder, as listed by `models()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The folder name (e.g. `"all-MiniLM-L6-v2"`).
    pub name: String,
    /// The folder.
    pub path: PathBuf,
    /// Always `"embedding"`.
    pub kind: &'static str,
    /// Always `"safetensors"`.
    pub format: &'static str,
    /// Number of floating-point parameters in `model.safetensors` (including
    /// tensors the encoder does not use, such as the BERT pooler; this is the
    /// count `sum(p.numel() for p in model.parameters())` reports).
    pub parameters: u64,
    /// Length of the output vectors.
    pub dims: usize,
    /// Tokens per text including `[CLS]`/`[SEP]`; longer texts are truncated.
    pub max_tokens: usize,
    /// Pooling, e.g. `"mean"` (several modes joined with `+`).
    pub pooling: String,
    /// Whether the output vectors are L2-normalised.
    pub normalized: bool,
}

fn folder_info(dir: &Path, cfg: &config::FolderConfig, parameters: u64) -> ModelInfo {
    ModelInfo {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: dir.to_path_buf(),
        kind: "embedding",
        format: "safetensors",
        parameters,
        dims: cfg.bert.hidden * cfg.pooling.len(),
        max_tokens: cfg.max_tokens,
        pooling: cfg
            .pooling
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join("+"),
        normalized: cfg.normalize,
    }
}

fn require_file(path: &Path) -> Result<(), EmbedError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(EmbedError::ModelNotFound {
            path: path.to_path_buf(),
            message: "required file is missing".into(),
        })
    }
}

/// Reads a model folder's configuration files and the (few-kilobyte) header of
/// `model.safetensors` — not the weights — and summarises the model.
///
/// Fails like [`EmbeddingModel::load`] on a missing folder, missing
/// `config.json`/`tokenizer.json`/`model.safetensors`, invalid configuration,
/// a corrupt safetensors header or an unsupported architecture.
pub fn probe(dir: &Path) -> Result<ModelInfo, EmbedError> {
    let cfg = config::read_folder(dir)?;
    require_file(&cfg.tokenizer)?;
    require_file(&cfg.weights)?;
    let header = weights::read_header(&cfg.weights)?;
    Ok(folder_info(dir, &cfg, header.float_parameters()))
}

/// How [`EmbeddingModel::load_with`] reads the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Map `model.safetensors` read-only instead of copying it (default `true`).
    /// Mapping shares the weights between processes; it requires F32 weights
    /// (others are converted into a private copy anyway) and a file that is not
    /// truncated or rewritten in place while mapped.
    pub mmap: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { mmap: true }
    }
}

/// Compute settings of [`EmbeddingModel::embed_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbedOptions {
    /// Texts per forward pass (default 32, 1..=[`MAX_BATCH_SIZE`]).
    pub batch_size: usize,
    /// OpenBLAS threads when no pool is given (default 1, 1..=[`MAX_THREADS`]).
    pub threads: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            batch_size: 32,
            threads: 1,
        }
    }
}

impl EmbedOptions {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), EmbedError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(EmbedError::InvalidParameter {
                message: format!(
                    "batch_size {} is out of range 1..={MAX_BATCH_SIZE}",
                    self.batch_size
                ),
            });
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(EmbedError::InvalidParameter {
                message: format!("threads {} is out of range 1..={MAX_THREADS}", self.threads),
            });
        }
        Ok(())
    }
}

/// A loaded sentence-embedding model. `Send + Sync`; [`embed`](Self::embed)
/// takes `&self`.
pub struct EmbeddingModel {
    info: ModelInfo,
    cfg: config::FolderConfig,
    bert: bert::Bert,
    tokenizer: Tokenizer,
    options: EmbedOptions,
}

impl fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("info", &self.info)
            .field("options", &self.options)
            .finish()
    }
}

impl EmbeddingModel {
    /// Loads a BERT-family sentence-transformers folder with default [`LoadOptions`].
    ///
    /// Reads `config.json`, `tokenizer.json`, `model.safetensors`, and when present
    /// `sentence_bert_config.json` (`max_seq_length`, capped at
    /// `max_position_embeddings`, which is also the fallback; `do_lower_case`),
    /// `modules.json` and the pooling folder's `config.json` (mean pooling when
    /// absent). Normalisation: when `modules.json` exists the vectors are
    /// L2-normalised exactly when it lists a `Normalize` module; without
    /// `modules.json` they are normalised (the usual sentence-transformers setup).
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Self::load_with(dir, &LoadOptions::default())
    }

    /// Loads a model folder (see [`load`](Self::load)) with explicit options.
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<Self, EmbedError> {
        let cfg = config::read_folder(dir)?;
        require_file(&cfg.tokenizer)?;
        require_file(&cfg.weights)?;
        let header = weights::read_header(&cfg.weights)?;
        let mut tokenizer =
            Tokenizer::from_file(&cfg.tokenizer).map_err(|e| EmbedError::Tokenizer {
                message: format!("cannot load {}: {e}", cfg.tokenizer.display()),
            })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: cfg.max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| EmbedError::Tokenizer {
                message: format!("cannot set truncation: {e}"),
            })?;
        tokenizer.with_padding(None);
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > cfg.bert.vocab_size {
            return Err(EmbedError::ModelFormat {
                path: cfg.tokenizer.clone(),
                message: format!(
                    "tokenizer has {vocab} tokens but the model only {}",
                    cfg.bert.vocab_size
                ),
            });
        }
        let bert = bert::Bert::load(&cfg.weights, &header, &cfg.bert, options.mmap)?;
        let info = folder_info(dir, &cfg, header.float_parameters());
        Ok(EmbeddingModel {
            info,
            cfg,
            bert,
            tokenizer,
            options: EmbedOptions::default(),
        })
    }

    /// The model summary (same as [`probe`]).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Length of the output vectors.
    pub fn dims(&self) -> usize {
        self.info.dims
    }

    /// Tokens per text including `[CLS]`/`[SEP]`; longer texts are truncated.
    pub fn max_tokens(&self) -> usize {
        self.cfg.max_tokens
    }

    /// Number of floating-point parameters in the weights file.
    pub fn parameters(&self) -> u64 {
        self.info.parameters
    }

    /// The pooling operations, concatenated in this order.
    pub fn pooling(&self) -> &[PoolingMode] {
        &self.cfg.pooling
    }

    /// Whether the output vectors are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.cfg.normalize
    }

    /// Whether the weights are a zero-copy memory map of the file.
    pub fn is_memory_mapped(&self) -> bool {
        self.bert.is_mapped()
    }

    /// The default compute settings used by [`embed`](Self::embed).
    pub fn options(&self) -> EmbedOptions {
        self.options
    }

    /// Changes the settings used by [`embed`](Self::embed); rejects out-of-range values.
    pub fn set_options(&mut self, options: EmbedOptions) -> Result<(), EmbedError> {
        options.validate()?;
        self.options = options;
        Ok(())
    }

    /// Token ids of `text` as the model sees them: `[CLS] ... [SEP]`, truncated to
    /// [`max_tokens`](Self::max_tokens) ids like sentence-transformers (the text
    /// is lower-cased first when `do_lower_case` is set). The empty string gives
    /// `[CLS] [SEP]`.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let enc = if self.cfg.lower_case {
            // Per-character lower-casing, as the tokenizers `Lowercase` normaliser
            // that sentence-transformers prepends for `do_lower_case`.
            let lower: String = text.chars().flat_map(char::to_lowercase).collect();
            self.tokenizer.encode_fast(lower, true)
        } else {
            self.tokenizer.encode_fast(text, true)
        }
        .map_err(|e| EmbedError::Tokenizer {
            message: e.to_string(),
        })?;
        let ids = enc.get_ids();
        if ids.is_empty() {
            return Err(EmbedError::Tokenizer {
                message: "the tokenizer produced no tokens (it adds no [CLS]/[SEP]?)".into(),
            });
        }
        Ok(ids[..ids.len().min(self.cfg.max_tokens)].to_vec())
    }

    /// Embeds `texts` with the model's [`options`](Self::options) and no thread pool;
    /// see [`embed_with`](Self::embed_with).
    pub fn embed(
        &self,
        texts: &[&str],
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_with(texts, &self.options, None, interrupt)
    }

    /// Embeds one text (one forward pass of one sequence).
    pub fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut v = self.embed_with(&[text], &self.options, None, &mut || {})?;
        v.pop().ok_or_else(|| EmbedError::InvalidParameter {
            message: "no output".into(),
        })
    }

    /// Embeds `texts`; the result has one vector of [`dims`](Self::dims) values per
    /// text, in input order.
    ///
    /// The texts are tokenised, sorted by token count (longest first) and cut
    /// into mini-batches of `options.batch_size` texts (a batch is also closed at
    /// [`MAX_BATCH_TOKENS`] tokens). Each mini-batch is one forward pass over its
    /// tokens packed together (no padding; identical to a padded, masked batch),
    /// followed by pooling and normalisation.
    ///
    /// Threads: with `pool`, OpenBLAS uses `pool.current_num_threads()` threads
    /// and the element-wise kernels, short-sequence attention and the small-input
    /// matrix kernel (mini-batches of at most 48 tokens) run in the pool; without
    /// it OpenBLAS uses `options.threads` threads and everything else runs on the
    /// calling thread. The OpenBLAS count is capped at the number of CPUs and is
    /// process-wide.
    ///
    /// `interrupt` is called on the calling thread before each mini-batch and
    /// every 256 texts during tokenisation; it may panic to abort (nothing is
    /// left in an inconsistent state). It is never called from worker threads.
    pub fn embed_with(
        &self,
        texts: &[&str],
        options: &EmbedOptions,
        pool: Option<&ThreadPool>,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        options.validate()?;
        let mut ids = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            if i % TOKENIZE_CHUNK == 0 && i > 0 {
                interrupt();
            }
            ids.push(self.tokenize(t)?);
        }
        let seqs: Vec<&[u32]> = ids.iter().map(|v| v.as_slice()).collect();
        self.embed_ids_with(&seqs, options, pool, interrupt)
    }

    /// Embeds already tokenised texts (ids as from [`tokenize`](Self::tokenize):
    /// 1..=[`max_tokens`](Self::max_tokens) ids each, every id inside the
    /// vocabulary); otherwise like [`embed_with`](Self::embed_with).
    pub fn embed_ids_with(
        &self,
        seqs: &[&[u32]],
        options: &EmbedOptions,
        pool: Option<&ThreadPool>,
        interrupt: &mut dyn FnMut(),
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        options.validate()?;
        if let Some(bad) = seqs
            .iter()
            .find(|s| s.is_empty() || s.len() > self.cfg.max_tokens)
        {
            return Err(EmbedError::InvalidParameter {
                message: format!(
                    "a token sequence has {} ids; allowed 1..={}",
                    bad.len(),
                    self.cfg.max_tokens
                ),
            });
        }
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // More BLAS threads than CPUs only adds contention (and OpenBLAS would
        // start up to 64 threads).
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = pool
            .map(|p| p.current_num_threads())
            .unwrap_or(options.threads)
            .clamp(1, cpus);
        xsell_blas::set_threads(threads)?;

        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].len()));
        let mut results: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
        let mut scratch = bert::Scratch::default();
        let mut pos = 0;
        while pos < order.len() {
            interrupt();
            let mut end = pos;
            let mut tokens = 0;
            while end < order.len() && end - pos < options.batch_size {
                let len = seqs[order[end]].len();
                if end > pos && tokens + len > MAX_BATCH_TOKENS {
                    break;
                }
                tokens += len;
                end += 1;
            }
            let batch: Vec<&[u32]> = order[pos..end].iter().map(|&i| seqs[i]).collect();
            self.bert.forward(&batch, pool, &mut scratch)?;
            let lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
            let pooled = bert::pool_rows(
                &scratch.h,
                self.cfg.bert.hidden,
                &lens,
                &self.cfg.pooling,
                self.cfg.normalize,
            );
            for (&i, v) in order[pos..end].iter().zip(pooled) {
                results[i] = v;
            }
            pos = end;
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(EmbedOptions::default().validate().is_ok());
        for bad in [
            EmbedOptions {
                batch_size: 0,
                threads: 1,
            },
            EmbedOptions {
                batch_size: MAX_BATCH_SIZE + 1,
                threads: 1,
            },
            EmbedOptions {
                batch_size: 8,
                threads: 0,
            },
            EmbedOptions {
                batch_size: 8,
                threads: MAX_THREADS + 1,
            },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(matches!(e, EmbedError::InvalidParameter { .. }), "{e}");
        }
    }

    #[test]
    fn errors_display_their_context() {
        let e = EmbedError::Io {
            path: PathBuf::from("/x/model.safetensors"),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        };
        assert!(e.to_string().contains("/x/model.safetensors") && e.to_string().contains("denied"));
        assert!(std::error::Error::source(&e).is_some());
        let e: EmbedError = xsell_blas::BlasError::InvalidThreads.into();
        assert!(e.to_string().starts_with("BLAS error"));
    }

    fn _assert_send_sync() {
        fn is<T: Send + Sync>() {}
        is::<EmbeddingModel>();
    }
}
