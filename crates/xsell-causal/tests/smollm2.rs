//! SmolLM2-135M-Instruct (the GGUF installed by `make install`) against transformers.
//!
//! The model folder is `$XSELL_TEST_MODEL_DIR`, by default
//! `$(pg_config --sharedir)/extension/pg_xsell/models`.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;
use xsell_causal::{CausalLm, ChatMessage, GenOptions, LoadOptions, Prompt, Weights};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> PathBuf {
    let dir = match std::env::var_os("XSELL_TEST_MODEL_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = std::process::Command::new("pg_config")
                .arg("--sharedir")
                .output();
            let share = match out {
                Ok(o) if o.status.success() => {
                    String::from_utf8_lossy(&o.stdout).trim().to_string()
                }
                _ => panic!("pg_config not found: set XSELL_TEST_MODEL_DIR or run `make install`"),
            };
            PathBuf::from(share).join("extension/pg_xsell/models")
        }
    };
    let p = dir.join(MODEL);
    assert!(
        p.is_file(),
        "{} is missing: run `make install` (or set XSELL_TEST_MODEL_DIR)",
        p.display()
    );
    p
}

fn model(weights: Weights) -> &'static CausalLm {
    static HALF: OnceLock<CausalLm> = OnceLock::new();
    static FLOAT: OnceLock<CausalLm> = OnceLock::new();
    static QUANT: OnceLock<CausalLm> = OnceLock::new();
    let cell = match weights {
        Weights::Half => &HALF,
        Weights::Float => &FLOAT,
        Weights::Quantized => &QUANT,
    };
    cell.get_or_init(|| {
        let t = Instant::now();
        let lm = CausalLm::load(&model_path(), LoadOptions { weights }).unwrap();
        eprintln!(
            "loaded ({weights:?}) in {:.2}s, {} MB of weights",
            t.elapsed().as_secs_f64(),
            lm.memory_bytes() >> 20
        );
        lm
    })
}

fn reference() -> Value {
    json(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/reference/smollm2_loglik.json"),
    )
}

/// Returns (max relative loglik deviation, max absolute token deviation).
fn compare_with_reference(lm: &CausalLm) -> (f64, f64) {
    let r = reference();
    let pool = pool(2);
    let (mut max_rel, mut max_tok) = (0f64, 0f64);
    let items = r["items"].as_array().unwrap();
    let texts: Vec<&str> = items.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let batch = lm.token_logprobs_batch(&texts, &pool, &mut noop()).unwrap();
    for (it, scores) in items.iter().zip(&batch) {
        let text = it["text"].as_str().unwrap();
        let want_ids = ids(&it["input_ids"]);
        assert_eq!(
            lm.tokenize(text).unwrap(),
            want_ids,
            "token ids of {text:?}"
        );
        assert_eq!(it["bos"]["prefix_id"].as_u64().unwrap() as u32, lm.bos_id());
        let want = floats(&it["bos"]["token_logprobs"]);
        assert_eq!(scores.len(), want.len());
        for (s, w) in scores.iter().zip(&want) {
            max_tok = max_tok.max((s.logprob - w).abs());
        }
        let ll: f64 = scores.iter().map(|s| s.logprob).sum();
        let want_ll = it["bos"]["loglik"].as_f64().unwrap();
        let rel = ((ll - want_ll) / want_ll).abs();
        max_rel = max_rel.max(rel);
        assert!(rel < 5e-3, "{text:?}: {ll} vs {want_ll}");
    }
    (max_rel, max_tok)
}

#[test]
fn token_ids_and_logliks_match_the_reference() {
    // The default: dequantized to half precision (within 1e-3 relative; the bound
    // is 5e-3); the exact modes: dequantized to f32, or kept quantized with f32 tiles.
    for (weights, max_rel, max_tok) in [
        (Weights::Half, 1e-3, 3e-2),
        (Weights::Float, 1e-4, 2e-3),
        (Weights::Quantized, 1e-4, 2e-3),
    ] {
        let lm = model(weights);
        assert_eq!(lm.info().architecture, "llama");
        assert_eq!(lm.info().context_length, 8192);
        assert_eq!(lm.info().vocab, 49152);
        assert_eq!(lm.eos_ids(), &[2]);
        let (rel, tok) = compare_with_reference(lm);
        eprintln!(
            "{weights:?} weights ({} MB): max relative loglik deviation {rel:.2e}, max token logprob deviation {tok:.2e}",
            lm.memory_bytes() >> 20
        );
        assert!(rel < max_rel, "{weights:?}: {rel}");
        assert!(tok < max_tok, "{weights:?}: {tok}");
    }
    assert!(model(Weights::Quantized).memory_bytes() < 150 << 20);
    assert!(model(Weights::Half).memory_bytes() < model(Weights::Float).memory_bytes() * 6 / 10);
}

#[test]
fn conditional_scores_rank_and_chat_match_transformers() {
    // Exact weights: conditional scores to 1e-4 and the same greedy generation.
    let lm = model(Weights::Float);
    let r = json(&fixtures().join("smollm2_cond.json"));
    let pool = pool(2);
    for p in r["pairs"].as_array().unwrap() {
        let (ctx, cont) = (
            p["context"].as_str().unwrap(),
            p["continuation"].as_str().unwrap(),
        );
        let s = lm.loglik_cond(ctx, cont, &pool, &mut noop()).unwrap();
        let want = p["loglik"].as_f64().unwrap();
        assert_eq!(s.n_tokens, ids(&p["continuation_ids"]).len());
        assert!(
            close(s.loglik, want, 1e-4),
            "{ctx:?} {cont:?}: {} vs {want}",
            s.loglik
        );
        assert_eq!(
            s.is_greedy,
            ids(&p["greedy_ids"]) == ids(&p["continuation_ids"])
        );
    }
    let ctx = r["rank"]["context"].as_str().unwrap();
    let cands: Vec<&str> = r["rank"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["candidate"].as_str().unwrap())
        .collect();
    let mut calls = 0;
    let ranked = lm.rank(ctx, &cands, &pool, &mut || calls += 1).unwrap();
    assert!(calls >= 2);
    for (got, want) in ranked
        .iter()
        .zip(r["rank"]["candidates"].as_array().unwrap())
    {
        assert_eq!(got.n_tokens as u64, want["n_tokens"].as_u64().unwrap());
        assert!(
            close(got.loglik, want["loglik"].as_f64().unwrap(), 1e-4),
            "{got:?} {want}"
        );
    }
    // the plausible cross-sell wins
    assert!(ranked[0].loglik > ranked[1].loglik && ranked[0].loglik > ranked[3].loglik);
    let chat = &r["chat"];
    let msgs = [ChatMessage::new("user", chat["user"].as_str().unwrap())];
    assert_eq!(lm.chat_prompt_ids(&msgs).unwrap(), ids(&chat["prompt_ids"]));
    let opts = GenOptions {
        max_tokens: 12,
        ..GenOptions::default()
    };
    let g = lm
        .generate(
            Prompt::Text(chat["user"].as_str().unwrap()),
            &opts,
            &pool,
            &mut noop(),
        )
        .unwrap();
    let want = ids(&chat["output_ids"]);
    let stop = want.iter().position(|t| *t == 2).unwrap_or(want.len());
    assert_eq!(g.ids, want[..stop].to_vec());
    assert_eq!(g.text, chat["text"].as_str().unwrap());
    eprintln!("chat: {:?}", g.text);
    // The default half-precision weights: the same scores to a few hundredths of a nat
    // (one or two tokens each) and the same ranking.
    let half = model(Weights::Half);
    for p in r["pairs"].as_array().unwrap() {
        let (ctx, cont) = (
            p["context"].as_str().unwrap(),
            p["continuation"].as_str().unwrap(),
        );
        let s = half.loglik_cond(ctx, cont, &pool, &mut noop()).unwrap();
        let want = p["loglik"].as_f64().unwrap();
        assert!(
            close(s.loglik, want, 3e-2),
            "half {ctx:?} {cont:?}: {} vs {want}",
            s.loglik
        );
    }
    let ranked_half = half.rank(ctx, &cands, &pool, &mut noop()).unwrap();
    let order = |v: &[xsell_causal::ContinuationScore]| {
        let mut o: Vec<usize> = (0..v.len()).collect();
        o.sort_by(|&a, &b| v[b].loglik.total_cmp(&v[a].loglik));
        o
    };
    assert_eq!(order(&ranked_half), order(&ranked));
}

#[test]
fn long_texts_are_chunked_and_rolled_consistently() {
    let lm = model(Weights::Half);
    let pool = pool(2);
    let r = reference();
    let text: String = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
        .repeat(4);
    let n = lm.tokenize(&text).unwrap().len();
    assert!(n > 600, "{n}");
    // default: one window, processed in chunks of 512 tokens with a key/value cache
    let chunked = lm.token_logprobs(&text, &pool, &mut noop()).unwrap();
    let mut single = CausalLm::load(&model_path(), LoadOptions::default()).unwrap();
    single.set_batch_tokens(4096).unwrap();
    let whole = single.token_logprobs(&text, &pool, &mut noop()).unwrap();
    assert_eq!(chunked.len(), n);
    for (a, b) in chunked.iter().zip(&whole) {
        assert!(
            (a.logprob - b.logprob).abs() < 1e-3,
            "{} {} {}",
            a.pos,
            a.logprob,
            b.logprob
        );
    }
    // rolling windows of 256: first window identical, later ones see less context
    single.set_context_length(256).unwrap();
    let rolled = single.token_logprobs(&text, &pool, &mut noop()).unwrap();
    assert_eq!(rolled.len(), n);
    for k in 0..256 {
        assert!((rolled[k].logprob - whole[k].logprob).abs() < 1e-3);
    }
    let sum = |v: &[xsell_causal::TokenScore]| v.iter().map(|s| s.logprob).sum::<f64>();
    // repeated text is far more predictable with the full context
    assert!(
        sum(&whole) > sum(&rolled) + 10.0,
        "{} {}",
        sum(&whole),
        sum(&rolled)
    );
}

/// CPU seconds (user + system) used by this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 of stat are utime and stime (clock ticks); `after` starts at field 3
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn reviews() -> Vec<String> {
    let products = [
        "wireless earbuds",
        "coffee grinder",
        "yoga mat",
        "phone case",
        "desk lamp",
        "running shoes",
        "blender",
        "backpack",
        "water bottle",
        "laptop stand",
    ];
    let verdicts = [
        "are great, the battery lasts all day and the sound is clear.",
        "stopped working after two weeks, very disappointed with the quality.",
        "is exactly as described and arrived quickly. Would buy again!",
        "feels cheap but does the job for the price.",
        "is the best purchase I made this year, highly recommended to everyone.",
    ];
    (0..50)
        .map(|i| {
            format!(
                "The {} {}",
                products[i % 10],
                verdicts[(i * 7 + i / 10) % 5]
            )
        })
        .collect()
}

#[test]
#[ignore = "timing: run with --ignored --nocapture"]
fn throughput_of_short_reviews() {
    let revs = reviews();
    let texts: Vec<&str> = revs.iter().map(String::as_str).collect();
    for threads in [1, 2] {
        let pool = pool(threads);
        for keep in [Weights::Half, Weights::Float, Weights::Quantized] {
            let lm = model(keep);
            let n_tok: usize = texts.iter().map(|t| lm.tokenize(t).unwrap().len()).sum();
            let _ = lm.loglik_batch(&texts[..5], &pool, &mut noop()).unwrap(); // warm-up
            let (t, c) = (Instant::now(), cpu_seconds());
            let batch = lm.loglik_batch(&texts, &pool, &mut noop()).unwrap();
            let (tb, cb) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
            let (t, c) = (Instant::now(), cpu_seconds());
            let mut single = Vec::new();
            for text in &texts {
                single.push(lm.loglik(text, &pool, &mut noop()).unwrap());
            }
            let (ts, cs) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
            for (a, b) in batch.iter().zip(&single) {
                assert!((a - b).abs() < 1e-3 * b.abs().max(1.0));
            }
            eprintln!(
                "threads={threads} {keep:?}: {n_tok} tokens; loglik_batch {:.0} tok/s ({tb:.2}s wall, {cb:.2}s CPU), \
                 per-text loglik {:.0} tok/s ({ts:.2}s wall, {cs:.2}s CPU)",
                n_tok as f64 / tb,
                n_tok as f64 / ts
            );
        }
    }
}

#[test]
#[ignore = "timing: run with --ignored --nocapture"]
fn generation_speed() {
    for keep in [Weights::Half, Weights::Float, Weights::Quantized] {
        let lm = model(keep);
        let pool = pool(2);
        let (t, c) = (Instant::now(), cpu_seconds());
        let g = lm
            .generate(
                Prompt::Text("Write a short product description for wireless earbuds."),
                &GenOptions {
                    max_tokens: 48,
                    ..GenOptions::default()
                },
                &pool,
                &mut noop(),
            )
            .unwrap();
        let (dt, dc) = (t.elapsed().as_secs_f64(), cpu_seconds() - c);
        eprintln!(
            "generation {keep:?}: {} tokens in {dt:.2}s wall / {dc:.2}s CPU ({:.1} tok/s): {:?}",
            g.ids.len(),
            g.ids.len() as f64 / dt,
            g.text
        );
    }
}
