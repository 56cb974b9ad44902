//! Correctness of xsell-embed against sentence-transformers on the installed
//! all-MiniLM-L6-v2 (fails with a hint to run `make install` when it is missing).

mod common;

use common::*;
use std::sync::OnceLock;
use xsell_embed::{EmbedError, EmbedOptions, EmbeddingModel, LoadOptions, PoolingMode, probe};

const MIN_COSINE: f64 = 0.9999;

fn model() -> &'static EmbeddingModel {
    static M: OnceLock<EmbeddingModel> = OnceLock::new();
    M.get_or_init(|| EmbeddingModel::load(&minilm_dir()).expect("load all-MiniLM-L6-v2"))
}

fn pool2() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn check_items(items: &[Item], got: &[Vec<f32>], what: &str) {
    assert_eq!(items.len(), got.len());
    for (it, v) in items.iter().zip(got) {
        assert_eq!(v.len(), 384, "{what}: {:?}", it.text);
        let c = cosine(v, &it.embedding);
        assert!(
            c >= MIN_COSINE,
            "{what}: cosine {c} < {MIN_COSINE} for {:?}",
            it.text
        );
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{what}: norm {norm}");
    }
}

#[test]
fn reference_token_ids_are_identical() {
    let m = model();
    for it in reference().items.iter().chain(extra().items.iter()) {
        let ids = m.tokenize(&it.text).unwrap();
        assert_eq!(ids, it.input_ids, "token ids of {:?}", it.text);
        assert_eq!(ids.len(), it.n_tokens);
    }
}

#[test]
fn reference_embeddings_batched_and_per_row() {
    let m = model();
    let fx = reference();
    assert_eq!(fx.max_seq_length, m.max_tokens());
    let texts: Vec<&str> = fx.items.iter().map(|i| i.text.as_str()).collect();
    let batched = m.embed(&texts, &mut || {}).unwrap();
    check_items(&fx.items, &batched, "batched");
    let single: Vec<Vec<f32>> = texts.iter().map(|t| m.embed_one(t).unwrap()).collect();
    check_items(&fx.items, &single, "per-row");
    let mut worst = 1.0f64;
    for (it, v) in fx.items.iter().zip(&batched) {
        worst = worst.min(cosine(v, &it.embedding));
    }
    eprintln!("reference: min cosine vs sentence-transformers = {worst:.9}");
}

#[test]
fn edge_cases_match_sentence_transformers() {
    let m = model();
    let fx = extra();
    let texts: Vec<&str> = fx.items.iter().map(|i| i.text.as_str()).collect();
    assert_eq!(texts[0], "", "the fixture starts with the empty string");
    assert_eq!(m.tokenize("").unwrap(), vec![101, 102]);
    let long = fx
        .items
        .iter()
        .find(|i| i.n_tokens_untruncated.unwrap_or(0) > 256)
        .expect("a long text");
    assert_eq!(long.n_tokens, 256);
    assert_eq!(m.tokenize(&long.text).unwrap().len(), 256);
    assert_eq!(
        *m.tokenize(&long.text).unwrap().last().unwrap(),
        102,
        "[SEP] kept after truncation"
    );

    let batched = m.embed(&texts, &mut || {}).unwrap();
    check_items(&fx.items, &batched, "extra batched");
    for (it, want) in fx.items.iter().zip(&batched) {
        let one = m.embed_one(&it.text).unwrap();
        // A text embedded on its own uses half-precision weight copies (products with
        // few rows are bound by memory traffic); batches use the f32 weights.
        assert!(
            max_abs_diff(&one, want) < 2e-4 && cosine(&one, want) > 0.99999,
            "per-row differs from batched for {:?}",
            it.text
        );
    }
    let mut worst = 1.0f64;
    for (it, v) in fx.items.iter().zip(&batched) {
        worst = worst.min(cosine(v, &it.embedding));
    }
    eprintln!("edge cases: min cosine vs sentence-transformers = {worst:.9}");
}

#[test]
fn batch_size_threads_and_pool_do_not_change_results() {
    let m = model();
    let mut texts: Vec<String> = reference().items.iter().map(|i| i.text.clone()).collect();
    texts.extend(extra().items.iter().map(|i| i.text.clone()));
    let texts: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let base = m
        .embed_with(
            &texts,
            &EmbedOptions {
                batch_size: 32,
                threads: 1,
            },
            None,
            &mut || {},
        )
        .unwrap();
    let pool = pool2();
    for (opts, p) in [
        (
            EmbedOptions {
                batch_size: 1,
                threads: 1,
            },
            None,
        ),
        (
            EmbedOptions {
                batch_size: 3,
                threads: 2,
            },
            None,
        ),
        (
            EmbedOptions {
                batch_size: 7,
                threads: 1,
            },
            Some(&pool),
        ),
        (
            EmbedOptions {
                batch_size: 64,
                threads: 1,
            },
            Some(&pool),
        ),
    ] {
        let got = m.embed_with(&texts, &opts, p, &mut || {}).unwrap();
        for ((a, b), t) in got.iter().zip(&base).zip(&texts) {
            let d = max_abs_diff(a, b);
            // Up to the rounding of the half-precision weights that mini-batches of at
            // most 48 tokens use.
            assert!(
                d < 2e-4,
                "{opts:?} pool={}: diff {d} for {t:?}",
                p.is_some()
            );
        }
    }
}

#[test]
fn interrupt_is_called_per_mini_batch_and_may_unwind() {
    let m = model();
    let texts: Vec<String> = (0..10).map(|i| format!("product number {i}")).collect();
    let texts: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let mut calls = 0;
    let out = m
        .embed_with(
            &texts,
            &EmbedOptions {
                batch_size: 4,
                threads: 1,
            },
            None,
            &mut || calls += 1,
        )
        .unwrap();
    assert_eq!(out.len(), 10);
    assert_eq!(calls, 3, "one call before each of the 3 mini-batches");

    // Tokenising many texts also checks in every 256 texts.
    let many: Vec<&str> = vec!["x"; 600];
    let mut calls = 0;
    m.embed_with(
        &many,
        &EmbedOptions {
            batch_size: 600,
            threads: 1,
        },
        None,
        &mut || calls += 1,
    )
    .unwrap();
    assert_eq!(calls, 2 + 1);

    // A panicking callback (what PostgreSQL cancellation does) unwinds cleanly.
    let pool = pool2();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut n = 0;
        let _ = m.embed_with(
            &texts,
            &EmbedOptions {
                batch_size: 2,
                threads: 1,
            },
            Some(&pool),
            &mut || {
                n += 1;
                if n == 2 {
                    panic!("query canceled");
                }
            },
        );
    }));
    assert!(r.is_err());
    let again = m
        .embed_with(&texts, &EmbedOptions::default(), Some(&pool), &mut || {})
        .unwrap();
    assert!(
        max_abs_diff(&again[3], &out[3]) < 2e-4,
        "the model still works after an unwind"
    );
}

#[test]
fn probe_and_accessors() {
    let dir = minilm_dir();
    let info = probe(&dir).unwrap();
    assert_eq!(info.name, "all-MiniLM-L6-v2");
    assert_eq!((info.kind, info.format), ("embedding", "safetensors"));
    assert_eq!(
        info.parameters, 22_713_216,
        "sentence-transformers reports 22,713,216 parameters"
    );
    assert_eq!((info.dims, info.max_tokens), (384, 256));
    assert_eq!(info.pooling, "mean");
    assert!(info.normalized);
    let m = model();
    assert_eq!(m.info(), &info);
    assert_eq!(
        (m.dims(), m.max_tokens(), m.parameters()),
        (384, 256, 22_713_216)
    );
    assert_eq!(m.pooling(), &[PoolingMode::Mean]);
    assert!(m.normalizes());
    assert!(m.is_memory_mapped());
    assert!(m.embed(&[], &mut || {}).unwrap().is_empty());
}

#[test]
fn copied_weights_equal_mapped_weights() {
    let copied = EmbeddingModel::load_with(&minilm_dir(), &LoadOptions { mmap: false }).unwrap();
    assert!(!copied.is_memory_mapped());
    let texts = ["wireless earbuds", "", "Crème brûlée"];
    let a = copied.embed(&texts, &mut || {}).unwrap();
    let b = model().embed(&texts, &mut || {}).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(max_abs_diff(x, y) < 1e-6);
    }
}

#[test]
fn cls_and_max_pooling_match_reference() {
    let src = minilm_dir();
    let fx = extra();
    let texts: Vec<&str> = fx.items.iter().map(|i| i.text.as_str()).collect();
    for (mode, cfg) in [
        (
            PoolingMode::Cls,
            r#"{"word_embedding_dimension":384,"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":false}"#,
        ),
        (
            PoolingMode::Max,
            r#"{"word_embedding_dimension":384,"pooling_mode_max_tokens":true,"pooling_mode_mean_tokens":false}"#,
        ),
    ] {
        let dir = model_variant(
            mode.name(),
            &src,
            &[("1_Pooling/config.json", cfg.as_bytes().to_vec())],
        );
        let m = EmbeddingModel::load(&dir).unwrap();
        assert_eq!(m.pooling(), &[mode]);
        assert_eq!(probe(&dir).unwrap().pooling, mode.name());
        let got = m.embed(&texts, &mut || {}).unwrap();
        for (it, v) in fx.items.iter().zip(&got) {
            let want = if mode == PoolingMode::Cls {
                it.cls_embedding.as_ref()
            } else {
                it.max_embedding.as_ref()
            };
            let c = cosine(v, want.unwrap());
            assert!(c >= MIN_COSINE, "{mode:?}: cosine {c} for {:?}", it.text);
        }
    }
    // Two modes are concatenated (cls then mean), normalised together.
    let cfg = r#"{"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":true}"#;
    let dir = model_variant(
        "clsmean",
        &src,
        &[("1_Pooling/config.json", cfg.as_bytes().to_vec())],
    );
    let m = EmbeddingModel::load(&dir).unwrap();
    assert_eq!(m.dims(), 768);
    let v = m.embed_one("wireless earbuds").unwrap();
    assert_eq!(v.len(), 768);
    let n: f32 = v.iter().map(|x| x * x).sum();
    assert!((n - 1.0).abs() < 1e-5);
}

#[test]
fn normalisation_follows_modules_json() {
    let src = minilm_dir();
    let modules =
        br#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
        {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#;
    let dir = model_variant("nonorm", &src, &[("modules.json", modules.to_vec())]);
    let m = EmbeddingModel::load(&dir).unwrap();
    assert!(!m.normalizes());
    let v = m
        .embed_one("wireless earbuds with noise cancelling")
        .unwrap();
    let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (n - 1.0).abs() > 0.01,
        "unnormalised mean pooling has norm {n}"
    );
    let want = &reference().items[0].embedding;
    assert!(
        cosine(&v, want) >= MIN_COSINE,
        "same direction as the normalised vector"
    );
}

#[test]
fn bad_inputs_and_corrupt_folders_are_errors() {
    let m = model();
    let opts = EmbedOptions::default();
    let e = m
        .embed_ids_with(&[&[101, 40000, 102]], &opts, None, &mut || {})
        .unwrap_err();
    assert!(
        matches!(e, EmbedError::InvalidParameter { .. }) && e.to_string().contains("vocabulary"),
        "{e}"
    );
    let e = m
        .embed_ids_with(&[&[]], &opts, None, &mut || {})
        .unwrap_err();
    assert!(matches!(e, EmbedError::InvalidParameter { .. }), "{e}");
    let long = vec![1000u32; 257];
    let e = m
        .embed_ids_with(&[&long], &opts, None, &mut || {})
        .unwrap_err();
    assert!(matches!(e, EmbedError::InvalidParameter { .. }), "{e}");
    let e = m
        .embed_with(
            &["x"],
            &EmbedOptions {
                batch_size: 0,
                threads: 1,
            },
            None,
            &mut || {},
        )
        .unwrap_err();
    assert!(matches!(e, EmbedError::InvalidParameter { .. }), "{e}");
    let ids = m.tokenize("wireless earbuds").unwrap();
    let via_ids = m.embed_ids_with(&[&ids], &opts, None, &mut || {}).unwrap();
    assert!(max_abs_diff(&via_ids[0], &m.embed_one("wireless earbuds").unwrap()) < 1e-6);

    let src = minilm_dir();
    let weights = std::fs::read(src.join("model.safetensors")).unwrap();

    // Truncated weights file.
    let dir = model_variant(
        "trunc",
        &src,
        &[("model.safetensors", weights[..weights.len() / 2].to_vec())],
    );
    let e = EmbeddingModel::load(&dir).unwrap_err();
    assert!(matches!(e, EmbedError::ModelFormat { .. }), "{e}");
    assert!(matches!(probe(&dir), Err(EmbedError::ModelFormat { .. })));
    // Header cut in the middle.
    let dir = model_variant(
        "trunc2",
        &src,
        &[("model.safetensors", weights[..100].to_vec())],
    );
    assert!(matches!(
        EmbeddingModel::load(&dir),
        Err(EmbedError::ModelFormat { .. })
    ));
    // Garbage.
    let dir = model_variant("garbage", &src, &[("model.safetensors", vec![0xAB; 4096])]);
    assert!(matches!(
        EmbeddingModel::load(&dir),
        Err(EmbedError::ModelFormat { .. })
    ));
    // Config that does not match the weights.
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1024");
    let dir = model_variant("mismatch", &src, &[("config.json", cfg.into_bytes())]);
    let e = EmbeddingModel::load(&dir).unwrap_err();
    assert!(
        matches!(e, EmbedError::ModelFormat { .. }) && e.to_string().contains("shape"),
        "{e}"
    );
    // Broken tokenizer.
    let dir = model_variant(
        "tok",
        &src,
        &[(
            "tokenizer.json",
            b"{\"version\": \"1.0\", \"model\": 5}".to_vec(),
        )],
    );
    assert!(matches!(
        EmbeddingModel::load(&dir),
        Err(EmbedError::Tokenizer { .. })
    ));
    // Missing files / folder.
    let dir = model_variant("notok", &src, &[]);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let e = EmbeddingModel::load(&dir).unwrap_err();
    assert!(matches!(e, EmbedError::ModelNotFound { .. }), "{e}");
    assert!(matches!(probe(&dir), Err(EmbedError::ModelNotFound { .. })));
    let e = EmbeddingModel::load(&src.join("no-such-model")).unwrap_err();
    assert!(
        matches!(e, EmbedError::ModelNotFound { .. }) && e.to_string().contains("no-such-model"),
        "{e}"
    );
}
