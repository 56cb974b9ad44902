//! Configuration parameters (`SET xsell.<name> = ...`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// `xsell.verbose`: NOTICE-level progress messages from long-running work (training passes,
/// mining, batched model inference).
pub static VERBOSE: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `xsell.threads`: compute threads a backend may use for one call (0 = one per CPU core).
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `xsell.max_fit_memory_mb`: the most memory an in-memory fit (`xsell.kmeans_fit`) may use
/// to hold its rows; beyond it the aggregate stops with a 54000 error pointing to
/// `xsell.kmeans_train`.
pub static MAX_FIT_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(2048);

/// `xsell.model_dir`: the folder models are read from (superuser only). Empty means the folder
/// `make install` fills, `$(pg_config --sharedir)/extension/pg_xsell/models`.
pub static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));

/// `xsell.embedding_model`: the model `xsell.embed` and the intent functions use by default.
pub static EMBEDDING_MODEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"all-MiniLM-L6-v2"));

/// `xsell.lm_model`: the causal language model the `xsell.lm_*` functions use by default.
pub static LM_MODEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"SmolLM2-135M-Instruct.Q4_1"));

/// `xsell.lm_max_tokens`: the most tokens one `xsell.lm_generate` call may generate.
pub static LM_MAX_TOKENS: GucSetting<i32> = GucSetting::<i32>::new(512);

/// Values of `xsell.lm_weights`: how quantized (and F16) GGUF weights are held in memory.
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LmWeights {
    /// Dequantized to half precision at load (the default).
    #[name = c"half"]
    Half,
    /// Dequantized to float32 at load: exact dequantized values, twice the memory.
    #[name = c"float"]
    Float,
    /// Kept block-quantized, dequantized tile by tile: exact, about 6x less memory than float.
    #[name = c"quantized"]
    Quantized,
}

impl From<LmWeights> for xsell_causal::Weights {
    fn from(w: LmWeights) -> Self {
        match w {
            LmWeights::Half => xsell_causal::Weights::Half,
            LmWeights::Float => xsell_causal::Weights::Float,
            LmWeights::Quantized => xsell_causal::Weights::Quantized,
        }
    }
}

/// `xsell.lm_weights`: how the causal LM's quantized GGUF weights are held in memory.
pub static LM_WEIGHTS: GucSetting<LmWeights> = GucSetting::<LmWeights>::new(LmWeights::Half);

pub fn init() {
    GucRegistry::define_string_guc(
        c"xsell.model_dir",
        c"Folder the pg_xsell model files are read from (superuser only).",
        c"Empty means $sharedir/extension/pg_xsell/models, which make install fills. Models are addressed by name inside this folder only.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"xsell.embedding_model",
        c"Default sentence-embedding model of xsell.embed, xsell.embed_batch and the intent functions.",
        c"A model name as listed by xsell.models().",
        &EMBEDDING_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"xsell.lm_model",
        c"Default causal language model of the xsell.lm_* functions.",
        c"A model name as listed by xsell.models() (a .gguf file may be named without its suffix).",
        &LM_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"xsell.lm_max_tokens",
        c"Most tokens one xsell.lm_generate call may generate.",
        c"Calls asking for more fail with an error instead of running for minutes.",
        &LM_MAX_TOKENS,
        1,
        1 << 16,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"xsell.lm_weights",
        c"How the causal LM's quantized GGUF weights are held in memory: half, float or quantized.",
        c"half (default): dequantized to half precision at load, the fastest for scoring short texts (log-likelihoods within about 1e-3 relative of float). float: dequantized to float32, exact, twice the memory. quantized: kept block-quantized and dequantized tile by tile, exact, about 6x less memory than float, somewhat slower.",
        &LM_WEIGHTS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"xsell.max_fit_memory_mb",
        c"Memory (MB) an in-memory fit such as xsell.kmeans_fit may use for its rows.",
        c"Beyond it the aggregate stops with an error that points to xsell.kmeans_train, which streams.",
        &MAX_FIT_MEMORY_MB,
        1,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"xsell.verbose",
        c"Report progress of long-running pg_xsell work as NOTICE messages.",
        c"When on, training passes, mining and batched inference emit NOTICE lines with their progress.",
        &VERBOSE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"xsell.threads",
        c"Compute threads one pg_xsell call may use (0 = one per CPU core).",
        c"Threads never call into PostgreSQL; the backend's own thread collects the results.",
        &THREADS,
        0,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: a static C string; called once from _PG_init.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"xsell".as_ptr()) };
}

/// Whether NOTICE progress is on.
pub fn verbose() -> bool {
    VERBOSE.get()
}

/// The value of a string GUC (empty when unset).
pub fn string(setting: &GucSetting<Option<CString>>) -> String {
    setting.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}
