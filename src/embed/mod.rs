//! Sentence embeddings and intent scoring: `xsell.embed`, `xsell.embed_batch`,
//! `xsell.cosine_similarity`, `xsell.intent_scores`, `xsell.top_intent`.
//!
//! The model code lives in the pure crate `xsell-embed` (BERT forward pass on OpenBLAS
//! sgemm, sentence-transformers tokenisation, pooling and normalisation); this module
//! resolves model names through the registry, caches loaded models and label embeddings
//! per backend, and maps errors to SQLSTATEs.

use crate::common::{Code, LazyJsonb, Options, check_interrupts, pool, raise};
use crate::models::{self, Kind, Loaded, ModelCache};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use xsell_embed::{EmbedError, EmbedOptions, EmbeddingModel};

thread_local! {
    static MODELS: RefCell<ModelCache<EmbeddingModel>> = RefCell::new(ModelCache::default());
    static LABELS: RefCell<LabelCache> = RefCell::new(LabelCache::default());
}

/// Label embeddings of the intent functions, per (model name, load generation, label).
#[derive(Default)]
struct LabelCache {
    map: HashMap<(String, u64, String), Arc<[f32]>>,
}

/// Labels kept per backend before the cache is emptied.
const MAX_CACHED_LABELS: usize = 100_000;

/// Default softmax temperature of the intent functions.
pub const DEFAULT_TEMPERATURE: f64 = 0.05;

/// Maps an embedding error to an SQL error.
pub fn embed_error(e: EmbedError) -> ! {
    let code = match &e {
        EmbedError::ModelNotFound { .. } => Code::ERRCODE_UNDEFINED_FILE,
        EmbedError::Config { .. } => Code::ERRCODE_CONFIG_FILE_ERROR,
        EmbedError::ModelFormat { .. } => Code::ERRCODE_DATA_CORRUPTED,
        EmbedError::Tokenizer { .. } => Code::ERRCODE_DATA_EXCEPTION,
        EmbedError::Unsupported { .. } => Code::ERRCODE_FEATURE_NOT_SUPPORTED,
        EmbedError::InvalidParameter { .. } => Code::ERRCODE_INVALID_PARAMETER_VALUE,
        EmbedError::Io { .. } => Code::ERRCODE_IO_ERROR,
        EmbedError::Blas(_) => Code::ERRCODE_INTERNAL_ERROR,
    };
    raise(code, e.to_string())
}

/// The model of that name (or `xsell.embedding_model`), loaded once per backend.
fn model(name: Option<&str>) -> (String, Loaded<EmbeddingModel>) {
    let name = match name {
        Some(n) => n.to_string(),
        None => crate::guc::string(&crate::guc::EMBEDDING_MODEL),
    };
    let r = models::resolve_kind(&name, Kind::Embedding);
    let loaded = models::with_cache(&MODELS, |c| {
        c.get(&name, &r, |p| EmbeddingModel::load(p).unwrap_or_else(|e| embed_error(e)))
    });
    (name, loaded)
}

/// Embeds texts with the backend's compute pool; checks for cancel between mini-batches.
fn run(m: &EmbeddingModel, texts: &[&str]) -> Vec<Vec<f32>> {
    let pool = pool();
    let opts = EmbedOptions { batch_size: 32, threads: pool.current_num_threads().max(1) };
    m.embed_with(texts, &opts, Some(&pool), &mut check_interrupts).unwrap_or_else(|e| embed_error(e))
}

fn embed_text(text: &str, name: Option<&str>) -> Vec<f32> {
    let (_, m) = model(name);
    run(&m.model, &[text]).pop().unwrap_or_default()
}

/// `xsell.embed(text)`: the sentence embedding of a text with `xsell.embedding_model`.
#[pg_extern(stable, strict, parallel_safe, name = "embed")]
fn embed(text: &str) -> Vec<f32> {
    embed_text(text, None)
}

/// `xsell.embed(text, model)`.
#[pg_extern(stable, strict, parallel_safe, name = "embed")]
fn embed_model(text: &str, model: &str) -> Vec<f32> {
    embed_text(text, Some(model))
}

fn embed_many(
    texts: Vec<Option<String>>,
    name: Option<&str>,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let (_, m) = model(name);
    let present: Vec<&str> = texts.iter().flatten().map(String::as_str).collect();
    crate::common::progress(|| format!("embedding {} texts", present.len()));
    let mut vectors = run(&m.model, &present).into_iter();
    let rows: Vec<(i32, Option<Vec<f32>>)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (i as i32 + 1, t.as_ref().and_then(|_| vectors.next())))
        .collect();
    TableIterator::new(rows)
}

/// `xsell.embed_batch(texts)`: one row per array element, length-sorted mini-batches.
#[pg_extern(stable, strict, parallel_safe, name = "embed_batch")]
fn embed_batch(
    texts: Vec<Option<String>>,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    embed_many(texts, None)
}

/// `xsell.embed_batch(texts, model)`.
#[pg_extern(stable, strict, parallel_safe, name = "embed_batch")]
fn embed_batch_model(
    texts: Vec<Option<String>>,
    model: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    embed_many(texts, Some(model))
}

/// Cosine similarity in f64; 0 when either vector is all zeros (as scikit-learn).
fn cosine<T: Copy + Into<f64>>(a: &[Option<T>], b: &[Option<T>]) -> f64 {
    if a.len() != b.len() {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("vectors have different dimensions ({} and {})", a.len(), b.len()),
        );
    }
    if a.is_empty() {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "vectors must not be empty");
    }
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (Some(x), Some(y)) = (x, y) else {
            raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "vectors must not contain NULL elements");
        };
        let (x, y): (f64, f64) = ((*x).into(), (*y).into());
        if !x.is_finite() || !y.is_finite() {
            raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "vectors must not contain NaN or Infinity");
        }
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa.sqrt() * bb.sqrt()) }
}

/// `xsell.cosine_similarity(real[], real[])`.
#[pg_extern(immutable, strict, parallel_safe, name = "cosine_similarity")]
fn cosine_similarity(a: Vec<Option<f32>>, b: Vec<Option<f32>>) -> f64 {
    cosine(&a, &b)
}

/// `xsell.cosine_similarity(float8[], float8[])`.
#[pg_extern(immutable, strict, parallel_safe, name = "cosine_similarity")]
fn cosine_similarity_f64(a: Vec<Option<f64>>, b: Vec<Option<f64>>) -> f64 {
    cosine(&a, &b)
}

/// Parsed options of the intent functions.
struct IntentOptions {
    temperature: f64,
    model: Option<String>,
}

fn intent_options(options: &LazyJsonb) -> IntentOptions {
    let map = options.parse("intent options");
    let mut o = Options::new(&map, "intent");
    let temperature = o.float("temperature", DEFAULT_TEMPERATURE, 1e-6, 1e6);
    let model = o.string("model").map(str::to_string);
    o.finish();
    IntentOptions { temperature, model }
}

/// Softmax over cosine similarity / temperature of `text` to each label; scores in label
/// order.
fn score_labels(text: &str, labels: &[Option<String>], opts: &IntentOptions) -> Vec<f64> {
    if labels.is_empty() {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, "labels must not be empty");
    }
    let labels: Vec<&str> = labels
        .iter()
        .map(|l| {
            l.as_deref()
                .unwrap_or_else(|| raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, "labels must not contain NULL"))
        })
        .collect();
    let (name, m) = model(opts.model.as_deref());
    let key = |l: &str| (name.clone(), m.generation, l.to_string());
    // Embed the labels this backend has not seen yet (once per model load), then the text.
    let missing: Vec<&str> = LABELS.with(|c| {
        let c = c.borrow();
        let mut seen = std::collections::HashSet::new();
        labels.iter().copied().filter(|l| !c.map.contains_key(&key(l)) && seen.insert(*l)).collect()
    });
    if !missing.is_empty() {
        let vecs = run(&m.model, &missing);
        LABELS.with(|c| {
            let mut c = c.borrow_mut();
            if c.map.len() + missing.len() > MAX_CACHED_LABELS {
                c.map.clear();
            }
            for (l, v) in missing.iter().zip(vecs) {
                c.map.insert(key(l), Arc::from(v));
            }
        });
    }
    let t = run(&m.model, &[text]).pop().unwrap_or_default();
    let label_vecs: Vec<Arc<[f32]>> = LABELS.with(|c| {
        let c = c.borrow();
        labels
            .iter()
            .map(|l| match c.map.get(&key(l)) {
                Some(v) => v.clone(),
                None => raise(Code::ERRCODE_INTERNAL_ERROR, "label embedding missing from the cache"),
            })
            .collect()
    });
    let logits: Vec<f64> = label_vecs
        .iter()
        .map(|v| {
            let sim: f64 = v.iter().zip(&t).map(|(a, b)| *a as f64 * *b as f64).sum();
            let (na, nb): (f64, f64) = (
                v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt(),
                t.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt(),
            );
            let cos = if na == 0.0 || nb == 0.0 { 0.0 } else { sim / (na * nb) };
            cos / opts.temperature
        })
        .collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// Label indexes by descending score, ties in label order.
fn ranked(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// `xsell.intent_scores(text, labels, options)`.
#[pg_extern(stable, strict, parallel_safe)]
fn intent_scores(
    text: &str,
    labels: Vec<Option<String>>,
    options: default!(LazyJsonb, "'{}'"),
) -> TableIterator<'static, (name!(label, String), name!(score, f64))> {
    let opts = intent_options(&options);
    let scores = score_labels(text, &labels, &opts);
    let rows: Vec<(String, f64)> = ranked(&scores)
        .into_iter()
        .map(|i| (labels[i].clone().unwrap_or_default(), scores[i]))
        .collect();
    TableIterator::new(rows)
}

/// `xsell.top_intent(text, labels, options)`.
#[pg_extern(stable, strict, parallel_safe)]
fn top_intent(text: &str, labels: Vec<Option<String>>, options: default!(LazyJsonb, "'{}'")) -> String {
    let opts = intent_options(&options);
    let scores = score_labels(text, &labels, &opts);
    labels[ranked(&scores)[0]].clone().unwrap_or_default()
}

extension_sql_file!(
    "../../sql/embed.sql",
    name = "comment_embed",
    requires = [embed, embed_model, embed_batch, embed_batch_model, cosine_similarity, cosine_similarity_f64, intent_scores, top_intent]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn cos(sql: &str) -> f64 {
        Spi::get_one::<f64>(sql).unwrap().unwrap()
    }

    #[pg_test]
    fn embed_is_unit_length_and_384_dims() {
        let n = Spi::get_one::<i32>("SELECT array_length(xsell.embed('running shoes'), 1)").unwrap().unwrap();
        assert_eq!(n, 384);
        let norm = cos("SELECT sqrt(sum(x * x)) FROM unnest(xsell.embed('running shoes')::float8[]) x");
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[pg_test]
    fn batch_equals_per_row() {
        let c = cos(
            "SELECT min(xsell.cosine_similarity(b.embedding, xsell.embed(t.t))) \
             FROM unnest(ARRAY['a red dress', 'wireless earbuds with noise cancelling', '']) WITH ORDINALITY t(t, ord) \
             JOIN xsell.embed_batch(ARRAY['a red dress', 'wireless earbuds with noise cancelling', '']) b USING (ord)",
        );
        assert!(c > 0.99999, "{c}");
    }

    #[pg_test]
    fn intent_scores_sum_to_one_and_pick_the_right_label() {
        let s = cos(
            "SELECT sum(score) FROM xsell.intent_scores('trail running shoes size 44', \
             ARRAY['running shoes and fitness gear', 'kitchen appliances', 'baby clothes'])",
        );
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        let top = Spi::get_one::<String>(
            "SELECT xsell.top_intent('a blender for smoothies', \
             ARRAY['running shoes and fitness gear', 'kitchen appliances', 'baby clothes'])",
        )
        .unwrap()
        .unwrap();
        assert_eq!(top, "kitchen appliances");
    }

    /// The project's sentence-transformers reference (tests/fixtures/reference): every
    /// vector from SQL within cosine 0.9999 of the reference.
    #[pg_test]
    fn matches_sentence_transformers_reference() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/reference/minilm_embeddings.json")).unwrap();
        let items = fixture["items"].as_array().unwrap();
        assert!(items.len() >= 10);
        for it in items {
            let text = it["text"].as_str().unwrap();
            let want: Vec<f64> = it["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let c = Spi::get_one_with_args::<f64>(
                "SELECT xsell.cosine_similarity(xsell.embed($1)::float8[], $2)",
                &[text.into(), want.into()],
            )
            .unwrap()
            .unwrap();
            assert!(c >= 0.9999, "{text}: cosine {c}");
        }
    }

    #[pg_test(error = "invalid model name \"../etc\": a model name is a name, not a path")]
    fn path_names_are_refused() {
        Spi::run("SELECT xsell.embed('x', '../etc')").unwrap();
    }

    #[pg_test(error = "model \"no-such-model\" is not installed")]
    fn unknown_models_are_errors() {
        Spi::run("SELECT xsell.embed('x', 'no-such-model')").unwrap();
    }

    #[pg_test(error = "vectors have different dimensions (2 and 3)")]
    fn ragged_vectors_are_errors() {
        Spi::run("SELECT xsell.cosine_similarity(ARRAY[1,2]::real[], ARRAY[1,2,3]::real[])").unwrap();
    }
}
