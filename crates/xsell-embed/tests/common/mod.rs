//! Shared helpers of the integration tests: locating the installed model and
//! reading the reference fixtures.

#![allow(dead_code)]

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The folder holding the installed models: `$XSELL_TEST_MODEL_DIR`, else
/// `$(pg_config --sharedir)/extension/pg_xsell/models`.
pub fn models_dir() -> PathBuf {
    if let Ok(d) = std::env::var("XSELL_TEST_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let share = std::process::Command::new("pg_config")
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "/usr/share/postgresql/15".to_string());
    PathBuf::from(share).join("extension/pg_xsell/models")
}

/// The installed all-MiniLM-L6-v2 folder; panics (failing the test) with a hint when missing.
pub fn minilm_dir() -> PathBuf {
    let dir = models_dir().join("all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file() && dir.join("tokenizer.json").is_file(),
        "the all-MiniLM-L6-v2 model is not installed at {} — run `make install` (or set XSELL_TEST_MODEL_DIR)",
        dir.display()
    );
    dir
}

/// One reference text.
#[derive(Deserialize, Debug, Clone)]
pub struct Item {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub n_tokens: usize,
    #[serde(default)]
    pub n_tokens_untruncated: Option<usize>,
    pub embedding: Vec<f32>,
    #[serde(default)]
    pub cls_embedding: Option<Vec<f32>>,
    #[serde(default)]
    pub max_embedding: Option<Vec<f32>>,
}

/// A fixture file.
#[derive(Deserialize, Debug)]
pub struct Fixture {
    pub max_seq_length: usize,
    pub items: Vec<Item>,
}

fn read_fixture(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()))
}

/// The 10 reference texts of the project (`tests/fixtures/reference/minilm_embeddings.json`).
pub fn reference() -> Fixture {
    read_fixture(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/reference/minilm_embeddings.json"),
    )
}

/// The edge cases of this crate (`tests/fixtures/minilm_extra.json`, made by
/// `scripts/fixtures/gen_minilm_fixture.py`).
pub fn extra() -> Fixture {
    read_fixture(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_extra.json"))
}

/// Cosine similarity computed in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Largest absolute element difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A private copy of a model folder: every file symlinked except those in `replace`
/// (relative path, content), written as real files.
pub fn model_variant(name: &str, src: &Path, replace: &[(&str, Vec<u8>)]) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("xsell-embed-it-{}-{name}", std::process::id()))
        .join("model");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "sentence_bert_config.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        if replace.iter().any(|(r, _)| *r == f) || !src.join(f).exists() {
            continue;
        }
        std::os::unix::fs::symlink(src.join(f), dir.join(f)).unwrap();
    }
    for (f, content) in replace {
        std::fs::write(dir.join(f), content).unwrap();
    }
    dir
}
