//! Reading the configuration files of a sentence-transformers model folder.

use crate::EmbedError;
use crate::math::Activation;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Upper bounds that keep every size computation far from overflow.
const MAX_HIDDEN: usize = 16_384;
const MAX_LAYERS: usize = 256;
const MAX_VOCAB: usize = 10_000_000;
const MAX_POSITIONS: usize = 1 << 20;

fn cfg_err(path: &Path, message: impl Into<String>) -> EmbedError {
    EmbedError::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads and parses a JSON file; `Ok(None)` when it does not exist.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, EmbedError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EmbedError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| cfg_err(path, format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
struct RawBertConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_act")]
    hidden_act: String,
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".to_string()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// Validated BERT hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub activation: Activation,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub eps: f32,
}

#[derive(Deserialize, Default)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    word_embedding_dimension: Option<usize>,
}

/// One pooling operation over the token vectors of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the tokens.
    Max,
    /// Mean over the tokens.
    Mean,
    /// Sum over the tokens divided by the square root of their number.
    MeanSqrtLen,
}

impl PoolingMode {
    /// The name used in listings (`"cls"`, `"max"`, `"mean"`, `"mean_sqrt_len"`).
    pub fn name(self) -> &'static str {
        match self {
            PoolingMode::Cls => "cls",
            PoolingMode::Max => "max",
            PoolingMode::Mean => "mean",
            PoolingMode::MeanSqrtLen => "mean_sqrt_len",
        }
    }
}

#[derive(Deserialize)]
struct RawSentenceConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize)]
struct RawModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

/// Everything read from the folder's configuration files.
#[derive(Debug, Clone)]
pub(crate) struct FolderConfig {
    pub bert: BertConfig,
    /// Pooling operations, concatenated in this order (sentence-transformers order).
    pub pooling: Vec<PoolingMode>,
    pub max_tokens: usize,
    pub lower_case: bool,
    pub normalize: bool,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
}

pub(crate) fn read_bert_config(path: &Path) -> Result<BertConfig, EmbedError> {
    let raw: RawBertConfig = read_json(path)?.ok_or_else(|| EmbedError::ModelNotFound {
        path: path.to_path_buf(),
        message: "config.json is missing".into(),
    })?;
    if let Some(t) = raw.model_type.as_deref()
        && t != "bert"
    {
        return Err(EmbedError::Unsupported {
            message: format!(
                "{}: model_type {t:?} is not supported (only \"bert\")",
                path.display()
            ),
        });
    }
    if let Some(p) = raw.position_embedding_type.as_deref()
        && p != "absolute"
    {
        return Err(EmbedError::Unsupported {
            message: format!(
                "{}: position_embedding_type {p:?} is not supported (only \"absolute\")",
                path.display()
            ),
        });
    }
    let activation =
        Activation::from_name(&raw.hidden_act).ok_or_else(|| EmbedError::Unsupported {
            message: format!(
                "{}: hidden_act {:?} is not supported",
                path.display(),
                raw.hidden_act
            ),
        })?;
    let check = |name: &str, v: usize, max: usize| {
        if v == 0 || v > max {
            Err(cfg_err(
                path,
                format!("{name} = {v} is out of range 1..={max}"),
            ))
        } else {
            Ok(())
        }
    };
    check("hidden_size", raw.hidden_size, MAX_HIDDEN)?;
    check("num_hidden_layers", raw.num_hidden_layers, MAX_LAYERS)?;
    check(
        "num_attention_heads",
        raw.num_attention_heads,
        raw.hidden_size,
    )?;
    check("intermediate_size", raw.intermediate_size, 8 * MAX_HIDDEN)?;
    check("vocab_size", raw.vocab_size, MAX_VOCAB)?;
    check(
        "max_position_embeddings",
        raw.max_position_embeddings,
        MAX_POSITIONS,
    )?;
    check("type_vocab_size", raw.type_vocab_size, 1024)?;
    if !raw.hidden_size.is_multiple_of(raw.num_attention_heads) {
        return Err(cfg_err(
            path,
            format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            ),
        ));
    }
    if !(raw.layer_norm_eps.is_finite() && raw.layer_norm_eps >= 0.0) {
        return Err(cfg_err(
            path,
            "layer_norm_eps must be a finite non-negative number",
        ));
    }
    Ok(BertConfig {
        vocab_size: raw.vocab_size,
        hidden: raw.hidden_size,
        layers: raw.num_hidden_layers,
        heads: raw.num_attention_heads,
        intermediate: raw.intermediate_size,
        activation,
        max_positions: raw.max_position_embeddings,
        type_vocab_size: raw.type_vocab_size,
        eps: raw.layer_norm_eps as f32,
    })
}

/// Reads the configuration of a model folder (no weights, no tokenizer).
pub(crate) fn read_folder(dir: &Path) -> Result<FolderConfig, EmbedError> {
    if !dir.is_dir() {
        return Err(EmbedError::ModelNotFound {
            path: dir.to_path_buf(),
            message: "model folder does not exist".into(),
        });
    }
    let bert = read_bert_config(&dir.join("config.json"))?;

    // modules.json: which sentence-transformers modules follow the transformer.
    let modules_path = dir.join("modules.json");
    let modules: Option<Vec<RawModule>> = read_json(&modules_path)?;
    let mut pooling_dir = dir.join("1_Pooling");
    let normalize = match &modules {
        None => true,
        Some(list) => {
            let mut normalize = false;
            for m in list {
                let kind = m.kind.rsplit('.').next().unwrap_or("");
                match kind {
                    "Transformer" => {}
                    "Pooling" => {
                        if !m.path.is_empty() {
                            pooling_dir = dir.join(&m.path);
                        }
                    }
                    "Normalize" => normalize = true,
                    other => {
                        return Err(EmbedError::Unsupported {
                            message: format!(
                                "{}: module {other:?} is not supported (only Transformer, Pooling, Normalize)",
                                modules_path.display()
                            ),
                        });
                    }
                }
            }
            normalize
        }
    };

    let pooling_path = pooling_dir.join("config.json");
    let raw: Option<RawPooling> = read_json(&pooling_path)?;
    let pooling = match raw {
        None => vec![PoolingMode::Mean],
        Some(p) => {
            if p.pooling_mode_weightedmean_tokens || p.pooling_mode_lasttoken {
                return Err(EmbedError::Unsupported {
                    message: format!(
                        "{}: weighted-mean and last-token pooling are not supported",
                        pooling_path.display()
                    ),
                });
            }
            if let Some(d) = p.word_embedding_dimension
                && d != bert.hidden
            {
                return Err(cfg_err(
                    &pooling_path,
                    format!(
                        "word_embedding_dimension {d} differs from hidden_size {}",
                        bert.hidden
                    ),
                ));
            }
            let mut modes = Vec::new();
            if p.pooling_mode_cls_token {
                modes.push(PoolingMode::Cls);
            }
            if p.pooling_mode_max_tokens {
                modes.push(PoolingMode::Max);
            }
            if p.pooling_mode_mean_tokens {
                modes.push(PoolingMode::Mean);
            }
            if p.pooling_mode_mean_sqrt_len_tokens {
                modes.push(PoolingMode::MeanSqrtLen);
            }
            if modes.is_empty() {
                return Err(cfg_err(&pooling_path, "no pooling mode is enabled"));
            }
            modes
        }
    };

    let st_path = dir.join("sentence_bert_config.json");
    let st: Option<RawSentenceConfig> = read_json(&st_path)?;
    let (max_seq, lower_case) = match st {
        Some(s) => (s.max_seq_length, s.do_lower_case),
        None => (None, false),
    };
    let max_tokens = match max_seq {
        Some(0) => return Err(cfg_err(&st_path, "max_seq_length must be positive")),
        Some(m) => m.min(bert.max_positions),
        None => bert.max_positions,
    };
    if max_tokens < 2 {
        return Err(cfg_err(
            &st_path,
            "at least 2 tokens ([CLS] and [SEP]) are needed",
        ));
    }
    Ok(FolderConfig {
        bert,
        pooling,
        max_tokens,
        lower_case,
        normalize,
        weights: dir.join("model.safetensors"),
        tokenizer: dir.join("tokenizer.json"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xsell-embed-cfg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        for (f, text) in files {
            std::fs::write(dir.join(f), text).unwrap();
        }
        dir
    }

    const BERT: &str = r#"{"model_type":"bert","vocab_size":100,"hidden_size":8,"num_hidden_layers":2,
        "num_attention_heads":2,"intermediate_size":16,"hidden_act":"gelu","max_position_embeddings":64,
        "type_vocab_size":2,"layer_norm_eps":1e-12,"position_embedding_type":"absolute"}"#;

    #[test]
    fn defaults_without_sentence_transformers_files() {
        let dir = folder("defaults", &[("config.json", BERT)]);
        let c = read_folder(&dir).unwrap();
        assert_eq!(c.pooling, vec![PoolingMode::Mean]);
        assert!(
            c.normalize,
            "normalise by default when modules.json is absent"
        );
        assert_eq!(c.max_tokens, 64, "falls back to max_position_embeddings");
        assert!(!c.lower_case);
        assert_eq!(c.bert.heads, 2);
        assert_eq!(c.bert.activation, Activation::GeluErf);
    }

    #[test]
    fn sentence_transformers_files_are_honoured() {
        let dir = folder(
            "st",
            &[
                ("config.json", BERT),
                (
                    "sentence_bert_config.json",
                    r#"{"max_seq_length": 16, "do_lower_case": true}"#,
                ),
                (
                    "1_Pooling/config.json",
                    r#"{"word_embedding_dimension":8,"pooling_mode_cls_token":true,"pooling_mode_max_tokens":true}"#,
                ),
                (
                    "modules.json",
                    r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                  {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
                ),
            ],
        );
        let c = read_folder(&dir).unwrap();
        assert_eq!(c.pooling, vec![PoolingMode::Cls, PoolingMode::Max]);
        assert!(
            !c.normalize,
            "modules.json without Normalize: no normalisation"
        );
        assert_eq!(c.max_tokens, 16);
        assert!(c.lower_case);
        // max_seq_length above the position table is capped.
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            r#"{"max_seq_length": 1000}"#,
        )
        .unwrap();
        assert_eq!(read_folder(&dir).unwrap().max_tokens, 64);
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},{"type":"sentence_transformers.models.Normalize","path":"2_Normalize"}]"#,
        )
        .unwrap();
        assert!(read_folder(&dir).unwrap().normalize);
    }

    #[test]
    fn invalid_configs_are_reported() {
        let cases: &[(&str, &str, &str)] = &[
            ("config.json", r#"{"model_type":"bert""#, "invalid JSON"),
            (
                "config.json",
                &BERT.replace("\"bert\"", "\"t5\""),
                "not supported",
            ),
            (
                "config.json",
                &BERT.replace("\"gelu\"", "\"mish\""),
                "hidden_act",
            ),
            (
                "config.json",
                &BERT.replace("\"num_attention_heads\":2", "\"num_attention_heads\":3"),
                "multiple",
            ),
            (
                "config.json",
                &BERT.replace("\"hidden_size\":8", "\"hidden_size\":0"),
                "hidden_size",
            ),
            (
                "config.json",
                &BERT.replace("\"absolute\"", "\"relative_key\""),
                "position_embedding_type",
            ),
            (
                "modules.json",
                r#"[{"type":"sentence_transformers.models.Dense","path":"2_Dense"}]"#,
                "Dense",
            ),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_lasttoken":true}"#,
                "last-token",
            ),
            (
                "1_Pooling/config.json",
                r#"{"pooling_mode_mean_tokens":false}"#,
                "no pooling",
            ),
            (
                "1_Pooling/config.json",
                r#"{"word_embedding_dimension":9,"pooling_mode_mean_tokens":true}"#,
                "differs",
            ),
            (
                "sentence_bert_config.json",
                r#"{"max_seq_length":0}"#,
                "positive",
            ),
        ];
        for (i, (file, text, what)) in cases.iter().enumerate() {
            let dir = folder(&format!("bad{i}"), &[("config.json", BERT), (file, text)]);
            let e = read_folder(&dir).unwrap_err();
            assert!(
                e.to_string().contains(what),
                "case {i}: {e} should mention {what}"
            );
        }
        let e = read_folder(Path::new("/nonexistent/xsell-model")).unwrap_err();
        assert!(matches!(e, EmbedError::ModelNotFound { .. }), "{e}");
        let dir = folder("noconfig", &[]);
        assert!(matches!(
            read_folder(&dir),
            Err(EmbedError::ModelNotFound { .. })
        ));
    }
}
