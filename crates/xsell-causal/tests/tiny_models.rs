//! Tiny random-weight llama and GPT-2 models (HF folders and GGUF files made by
//! scripts/fixtures/gen_causal_fixtures.py) against transformers' float32 scores.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use xsell_causal::{
    CausalLm, ChatMessage, FinishReason, GenOptions, LmError, LoadOptions, Prompt, Weights,
};

const TOL: f64 = 1e-4;

fn reference() -> Value {
    json(&fixtures().join("tiny_reference.json"))
}

/// (model file, reference key, how the weights are held). The exact modes (Float,
/// Quantized) are compared with transformers tightly; F16 tensors are exact in Half mode
/// too. Half-precision copies of quantized weights are checked in
/// `half_precision_weights_stay_close_to_float`.
fn cases() -> Vec<(PathBuf, &'static str, Weights)> {
    let f = fixtures();
    vec![
        (f.join("tiny-llama"), "tiny-llama", Weights::Half),
        (f.join("tiny-gpt2"), "tiny-gpt2", Weights::Half),
        (f.join("tiny-llama.f32.gguf"), "tiny-llama", Weights::Half),
        (f.join("tiny-gpt2.f32.gguf"), "tiny-gpt2", Weights::Half),
        (
            f.join("tiny-llama.f16.gguf"),
            "tiny-llama.f16.gguf",
            Weights::Half,
        ),
        (
            f.join("tiny-llama.f16.gguf"),
            "tiny-llama.f16.gguf",
            Weights::Float,
        ),
        (
            f.join("tiny-llama.q8_0.gguf"),
            "tiny-llama.q8_0.gguf",
            Weights::Float,
        ),
        (
            f.join("tiny-llama.q4_0.gguf"),
            "tiny-llama.q4_0.gguf",
            Weights::Float,
        ),
        (
            f.join("tiny-llama.q4_1.gguf"),
            "tiny-llama.q4_1.gguf",
            Weights::Float,
        ),
        (
            f.join("tiny-llama.q8_0.gguf"),
            "tiny-llama.q8_0.gguf",
            Weights::Quantized,
        ),
        (
            f.join("tiny-llama.q4_0.gguf"),
            "tiny-llama.q4_0.gguf",
            Weights::Quantized,
        ),
        (
            f.join("tiny-llama.q4_1.gguf"),
            "tiny-llama.q4_1.gguf",
            Weights::Quantized,
        ),
    ]
}

fn load(path: &std::path::Path, weights: Weights) -> CausalLm {
    CausalLm::load(path, LoadOptions { weights })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Checks rolling per-token scores of every reference text.
fn check_texts(lm: &CausalLm, r: &Value, label: &str) {
    let pool = pool(2);
    let texts: Vec<&str> = r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    let batch = lm.token_logprobs_batch(&texts, &pool, &mut noop()).unwrap();
    for (t, got) in r["texts"].as_array().unwrap().iter().zip(&batch) {
        let text = t["text"].as_str().unwrap();
        let want_ids = ids(&t["input_ids"]);
        assert_eq!(
            lm.tokenize(text).unwrap(),
            want_ids,
            "{label}: ids of {text:?}"
        );
        let want_lp = floats(&t["token_logprobs"]);
        let want_greedy = ids(&t["greedy_ids"]);
        assert_eq!(got.len(), want_ids.len(), "{label}: {text:?}");
        for (k, s) in got.iter().enumerate() {
            assert_eq!(s.pos, k);
            assert_eq!(s.token_id, want_ids[k]);
            assert!(
                close(s.logprob, want_lp[k], TOL),
                "{label}: {text:?} token {k}: {} vs {}",
                s.logprob,
                want_lp[k]
            );
            assert_eq!(s.greedy_id, want_greedy[k], "{label}: {text:?} greedy {k}");
        }
        let ll = lm.loglik(text, &pool, &mut noop()).unwrap();
        assert!(
            close(ll, t["loglik"].as_f64().unwrap(), TOL),
            "{label}: loglik {text:?} {ll}"
        );
        if text.is_empty() {
            assert_eq!(ll, 0.0);
        }
    }
}

fn check_pairs(lm: &CausalLm, r: &Value, label: &str) {
    let pool = pool(2);
    for p in r["pairs"].as_array().unwrap() {
        let (ctx, cont) = (
            p["context"].as_str().unwrap(),
            p["continuation"].as_str().unwrap(),
        );
        let want = p["loglik"].as_f64().unwrap();
        let cont_ids = ids(&p["continuation_ids"]);
        let greedy = ids(&p["greedy_ids"]) == cont_ids;
        let s = lm.loglik_cond(ctx, cont, &pool, &mut noop()).unwrap();
        assert_eq!(s.n_tokens, cont_ids.len(), "{label}: {ctx:?}");
        assert!(
            close(s.loglik, want, TOL),
            "{label}: cond {ctx:?} {cont:?}: {} vs {want}",
            s.loglik
        );
        assert_eq!(s.is_greedy, greedy);
        // rank with a shared context: the same numbers as independent evaluation
        let ranked = lm
            .rank(ctx, &[cont, " and more", ""], &pool, &mut noop())
            .unwrap();
        assert!(
            close(ranked[0].loglik, want, TOL),
            "{label}: rank {ctx:?}: {} vs {want}",
            ranked[0].loglik
        );
        assert_eq!(ranked[0].n_tokens, cont_ids.len());
        let other = lm
            .loglik_cond(ctx, " and more", &pool, &mut noop())
            .unwrap();
        assert!(
            close(ranked[1].loglik, other.loglik, 1e-5),
            "{label}: {} vs {}",
            ranked[1].loglik,
            other.loglik
        );
        // an empty candidate: only the context's trailing whitespace (if any) is scored
        let empty = lm.loglik_cond(ctx, "", &pool, &mut noop()).unwrap();
        assert_eq!(ranked[2].n_tokens, empty.n_tokens);
        assert!(close(ranked[2].loglik, empty.loglik, 1e-5));
        assert_eq!(empty.n_tokens == 0, !ctx.ends_with(' '));
    }
}

fn check_generate(lm: &CausalLm, r: &Value, label: &str) {
    let pool = pool(2);
    for g in r["generate"].as_array().unwrap() {
        let prompt = ids(&g["prompt_ids"]);
        let want = ids(&g["output_ids"]);
        let opts = GenOptions {
            max_tokens: want.len(),
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            chat_template: false,
        };
        let out = lm
            .generate(Prompt::Ids(&prompt), &opts, &pool, &mut noop())
            .unwrap();
        let stop = want.iter().position(|t| lm.eos_ids().contains(t));
        match stop {
            Some(i) => {
                assert_eq!(out.ids, want[..i].to_vec(), "{label}");
                assert_eq!(out.finish, FinishReason::Stop);
            }
            None => {
                assert_eq!(out.ids, want, "{label}");
                assert_eq!(out.finish, FinishReason::Length);
            }
        }
        assert_eq!(out.prompt_tokens, prompt.len());
        assert_eq!(
            out.text,
            lm.decode(&out.ids).unwrap().replace("<|endoftext|>", "")
        );
    }
}

#[test]
fn every_format_matches_transformers() {
    let r = reference();
    for (path, key, weights) in cases() {
        let label = format!(
            "{} {weights:?}",
            path.file_name().unwrap().to_string_lossy()
        );
        let lm = load(&path, weights);
        let rr = &r["models"][key];
        check_texts(&lm, rr, &label);
        check_pairs(&lm, rr, &label);
        check_generate(&lm, rr, &label);
    }
}

#[test]
fn tiny_batch_chunking_uses_the_kv_cache_exactly() {
    // Forcing forward passes of 7 tokens exercises chunked prefill with a key/value cache
    // for every window and the packing of several texts per pass.
    let r = reference();
    for (path, key, weights) in [
        (fixtures().join("tiny-llama"), "tiny-llama", Weights::Half),
        (
            fixtures().join("tiny-gpt2.f32.gguf"),
            "tiny-gpt2",
            Weights::Half,
        ),
        (
            fixtures().join("tiny-llama.q4_1.gguf"),
            "tiny-llama.q4_1.gguf",
            Weights::Quantized,
        ),
    ] {
        let mut lm = load(&path, weights);
        for n in [1, 7, 30] {
            lm.set_batch_tokens(n).unwrap();
            let label = format!("{key} batch_tokens={n}");
            check_texts(&lm, &r["models"][key], &label);
            check_pairs(&lm, &r["models"][key], &label);
        }
        assert!(lm.set_batch_tokens(0).is_err());
    }
}

#[test]
fn smaller_window_rolls_like_the_harness() {
    let r = reference();
    let t = &r["models"]["tiny-llama"]["texts"][5];
    let text = t["text"].as_str().unwrap();
    let want = floats(&t["token_logprobs"]);
    let mut lm = load(&fixtures().join("tiny-llama"), Weights::Half);
    assert_eq!(lm.context_length(), 64);
    let pool = pool(1);
    let full = lm.token_logprobs(text, &pool, &mut noop()).unwrap();
    lm.set_context_length(16).unwrap();
    let small = lm.token_logprobs(text, &pool, &mut noop()).unwrap();
    assert_eq!(small.len(), full.len());
    // the first window conditions identically (BOS + up to 15 tokens)
    for k in 0..16 {
        assert!(close(small[k].logprob, want[k], TOL));
    }
    // later tokens see less context, so some scores differ
    let differ = (16..full.len())
        .filter(|&k| !close(small[k].logprob, full[k].logprob, 1e-3))
        .count();
    assert!(differ > full.len() / 2, "{differ}");
    assert!(lm.set_context_length(1).is_err());
    assert!(lm.set_context_length(65).is_err());
}

#[test]
fn chat_template_matches_transformers() {
    let r = reference();
    let lm = load(&fixtures().join("tiny-llama"), Weights::Half);
    let lm_gguf = load(&fixtures().join("tiny-llama.f32.gguf"), Weights::Half);
    for c in r["models"]["tiny-llama"]["chat"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        assert_eq!(lm.chat_prompt_ids(&msgs).unwrap(), ids(&c["ids"]));
        assert_eq!(lm_gguf.chat_prompt_ids(&msgs).unwrap(), ids(&c["ids"]));
    }
    // special-token strings in message contents stay literal text
    let inj = lm
        .chat_prompt_ids(&[ChatMessage::new("user", "<|im_end|>")])
        .unwrap();
    assert_eq!(inj.iter().filter(|&&t| t == 2).count(), 2, "{inj:?}");
    // GPT-2 has no chat template
    let g = load(&fixtures().join("tiny-gpt2"), Weights::Half);
    let e = g
        .chat_prompt_ids(&[ChatMessage::new("user", "hi")])
        .unwrap_err();
    assert!(matches!(e, LmError::InvalidParameter(_)), "{e}");
    let pool = pool(1);
    let e = g
        .generate(
            Prompt::Text("hi"),
            &GenOptions::default(),
            &pool,
            &mut noop(),
        )
        .unwrap_err();
    assert!(matches!(e, LmError::InvalidParameter(_)));
    assert!(lm.chat_prompt_ids(&[]).is_err());
    assert_eq!(lm.eos_ids(), &[2]);
    assert_eq!(lm.bos_id(), 1);
    assert_eq!(g.bos_id(), 0);
}

#[test]
fn sampling_is_seeded_and_validated() {
    let lm = load(&fixtures().join("tiny-llama"), Weights::Half);
    let pool = pool(2);
    let run = |seed: u64, t: f64, p: f64| {
        let o = GenOptions {
            max_tokens: 12,
            temperature: t,
            top_p: p,
            seed,
            chat_template: true,
        };
        lm.generate(Prompt::Text("Great blender"), &o, &pool, &mut noop())
            .unwrap()
    };
    let a = run(5, 1.0, 0.9);
    assert_eq!(a, run(5, 1.0, 0.9));
    let others: Vec<_> = (6..10).map(|s| run(s, 1.0, 0.9).ids).collect();
    assert!(
        others.iter().any(|o| *o != a.ids),
        "different seeds should usually differ"
    );
    // greedy ignores the seed
    assert_eq!(run(1, 0.0, 1.0), run(2, 0.0, 1.0));
    let msgs = [ChatMessage::new("user", "Great blender")];
    let o = GenOptions {
        max_tokens: 12,
        ..GenOptions::default()
    };
    let via_msgs = lm
        .generate(Prompt::Messages(&msgs), &o, &pool, &mut noop())
        .unwrap();
    assert_eq!(via_msgs, run(9, 0.0, 1.0));
    assert_eq!(
        via_msgs.prompt_tokens,
        lm.chat_prompt_ids(&msgs).unwrap().len()
    );
    for (t, p) in [(-1.0, 1.0), (f64::NAN, 1.0), (1.0, 0.0), (1.0, 1.5)] {
        let o = GenOptions {
            temperature: t,
            top_p: p,
            ..GenOptions::default()
        };
        let e = lm
            .generate(Prompt::Text("x"), &o, &pool, &mut noop())
            .unwrap_err();
        assert!(matches!(e, LmError::InvalidParameter(_)));
    }
    let zero = GenOptions {
        max_tokens: 0,
        ..GenOptions::default()
    };
    assert!(
        lm.generate(Prompt::Text("x"), &zero, &pool, &mut noop())
            .unwrap()
            .ids
            .is_empty()
    );
    // the context window bounds generation
    let long = GenOptions {
        max_tokens: 1000,
        temperature: 1.0,
        top_p: 1.0,
        seed: 3,
        chat_template: false,
    };
    let g = lm
        .generate(Prompt::Ids(&[5, 6, 7]), &long, &pool, &mut noop())
        .unwrap();
    assert!(g.ids.len() + 3 <= 64);
    if g.finish == FinishReason::ContextFull {
        assert_eq!(g.ids.len() + 3, 64);
    }
    assert!(matches!(
        g.finish,
        FinishReason::ContextFull | FinishReason::Stop
    ));
    let too_long: Vec<u32> = vec![5; 64];
    assert!(matches!(
        lm.generate(Prompt::Ids(&too_long), &o, &pool, &mut noop()),
        Err(LmError::InvalidParameter(_))
    ));
    assert!(matches!(
        lm.generate(Prompt::Ids(&[100000]), &o, &pool, &mut noop()),
        Err(LmError::InvalidParameter(_))
    ));
}

#[test]
fn interrupt_is_called_and_may_unwind() {
    let lm = load(&fixtures().join("tiny-llama"), Weights::Half);
    let pool = pool(2);
    let long = long_text();
    let mut calls = 0;
    let ll = lm.loglik(&long, &pool, &mut || calls += 1).unwrap();
    assert!(calls >= 2, "{calls}"); // several rolling windows at context 64 (one batch each when packed)
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut n = 0;
        lm.generate(
            Prompt::Ids(&[5, 6]),
            &GenOptions {
                max_tokens: 20,
                chat_template: false,
                ..GenOptions::default()
            },
            &pool,
            &mut || {
                n += 1;
                if n == 3 {
                    panic!("cancel requested");
                }
            },
        )
    }));
    assert!(res.is_err());
    // the model is still usable and gives the same result
    assert_eq!(lm.loglik(&long, &pool, &mut noop()).unwrap(), ll);
}

/// A text of several context windows.
fn long_text() -> String {
    let r = reference();
    r["models"]["tiny-llama"]["texts"][5]["text"]
        .as_str()
        .unwrap()
        .repeat(2)
}

#[test]
fn probe_reads_metadata() {
    let f = fixtures();
    let hf = CausalLm::probe(&f.join("tiny-llama")).unwrap();
    let gg = CausalLm::probe(&f.join("tiny-llama.f32.gguf")).unwrap();
    assert_eq!(hf.kind, "causal_lm");
    assert_eq!(
        (hf.format.as_str(), gg.format.as_str()),
        ("safetensors", "gguf")
    );
    assert_eq!(
        (hf.architecture.as_str(), hf.context_length, hf.vocab),
        ("llama", 64, 420)
    );
    // embeddings + head + 2 x (q, k, v, o, gate, up, down, 2 norms) + final norm
    let want = 420 * 32 * 2 + 2 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 32 * 64 + 2 * 32) + 32;
    assert_eq!(hf.parameters, want as u64);
    assert_eq!(gg.parameters, hf.parameters);
    assert_eq!((gg.context_length, gg.vocab), (64, 420));
    let g2 = CausalLm::probe(&f.join("tiny-gpt2")).unwrap();
    assert_eq!(
        (g2.architecture.as_str(), g2.context_length, g2.vocab),
        ("gpt2", 48, 380)
    );
    let lm = load(&f.join("tiny-gpt2"), Weights::Half);
    assert_eq!(lm.info(), &g2);
    assert_eq!(
        lm.info().parameters,
        CausalLm::probe(&f.join("tiny-gpt2.f32.gguf"))
            .unwrap()
            .parameters
    );
    let q = load(&f.join("tiny-llama.q4_0.gguf"), Weights::Quantized);
    let d = load(&f.join("tiny-llama.q4_0.gguf"), Weights::Half);
    assert!(
        q.memory_bytes() * 3 < d.memory_bytes(),
        "{} vs {}",
        q.memory_bytes(),
        d.memory_bytes()
    );
}

#[test]
fn tokenizer_roundtrip_and_token_strings() {
    for p in [
        "tiny-llama",
        "tiny-llama.f32.gguf",
        "tiny-gpt2",
        "tiny-gpt2.f32.gguf",
    ] {
        let lm = load(&fixtures().join(p), Weights::Half);
        let text = "Caf\u{e9} 1234 blender!";
        let ids = lm.tokenize(text).unwrap();
        assert_eq!(lm.decode(&ids).unwrap(), text, "{p}");
        let joined: String = ids
            .iter()
            .map(|&i| lm.token_str(i).unwrap())
            .collect::<Vec<_>>()
            .concat();
        assert!(joined.contains("blender"), "{p}: {joined}");
        assert!(lm.tokenize("").unwrap().is_empty());
        assert!(matches!(
            lm.decode(&[99999]),
            Err(LmError::InvalidParameter(_))
        ));
    }
    let lm = load(&fixtures().join("tiny-llama"), Weights::Half);
    // digits are split one by one (SmolLM pre-tokenizer)
    let ids = lm.tokenize("1234").unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(lm.token_str(1).unwrap(), "<|im_start|>");
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = std::env::temp_dir().join(format!("xsell-causal-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.gguf");
    assert!(matches!(
        CausalLm::load(&missing, LoadOptions::default()),
        Err(LmError::Io { .. })
    ));
    assert!(matches!(CausalLm::probe(&missing), Err(LmError::Io { .. })));
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"not a model at all").unwrap();
    assert!(matches!(
        CausalLm::load(&garbage, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    let tiny = dir.join("tiny.gguf");
    std::fs::write(&tiny, b"GG").unwrap();
    assert!(matches!(
        CausalLm::load(&tiny, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    let full = std::fs::read(fixtures().join("tiny-llama.q4_1.gguf")).unwrap();
    // truncations inside the header, the metadata, the tensor infos and the tensor data
    for cut in [8, 30, 1000, 20000, full.len() / 2, full.len() - 100] {
        let p = dir.join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &full[..cut]).unwrap();
        for weights in [Weights::Half, Weights::Float, Weights::Quantized] {
            match CausalLm::load(&p, LoadOptions { weights }) {
                Err(LmError::ModelFormat(m)) => assert!(!m.is_empty()),
                Err(e) => panic!("cut {cut}: unexpected error kind {e:?}"),
                Ok(_) => panic!("cut {cut}: truncated file loaded"),
            }
        }
    }
    // flipped bytes in the data region still load or fail cleanly
    let mut corrupt = full.clone();
    let n = corrupt.len();
    for b in &mut corrupt[n - 4000..n - 3000] {
        *b = 0xFF;
    }
    let p = dir.join("corrupt.gguf");
    std::fs::write(&p, &corrupt).unwrap();
    if let Ok(lm) = CausalLm::load(&p, LoadOptions::default()) {
        // NaN/inf weights surface as a compute error, not a panic
        let r = lm.loglik("Great blender", &pool(1), &mut noop());
        assert!(r.is_ok() || matches!(r, Err(LmError::Compute(_))));
    }
    // HF folders
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        CausalLm::load(&empty, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("tiny-llama").join(f), hf.join(f)).unwrap();
    }
    assert!(CausalLm::load(&hf, LoadOptions::default()).is_ok());
    let st = std::fs::read(hf.join("model.safetensors")).unwrap();
    std::fs::write(hf.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    assert!(matches!(
        CausalLm::load(&hf, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    assert!(matches!(
        CausalLm::probe(&hf),
        Ok(_) | Err(LmError::ModelFormat(_))
    ));
    std::fs::write(hf.join("model.safetensors"), &st).unwrap();
    let cfg = std::fs::read_to_string(hf.join("config.json")).unwrap();
    std::fs::write(
        hf.join("config.json"),
        cfg.replace("\"llama\"", "\"mamba\""),
    )
    .unwrap();
    assert!(matches!(
        CausalLm::load(&hf, LoadOptions::default()),
        Err(LmError::Unsupported(_))
    ));
    std::fs::write(
        hf.join("config.json"),
        cfg.replace("\"hidden_size\": 32", "\"hidden_size\": 48"),
    )
    .unwrap();
    assert!(matches!(
        CausalLm::load(&hf, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    std::fs::write(hf.join("config.json"), "{ not json").unwrap();
    assert!(matches!(
        CausalLm::load(&hf, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    std::fs::write(hf.join("config.json"), &cfg).unwrap();
    std::fs::remove_file(hf.join("tokenizer.json")).unwrap();
    assert!(matches!(
        CausalLm::load(&hf, LoadOptions::default()),
        Err(LmError::ModelFormat(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn half_precision_weights_stay_close_to_float() {
    // Quantized tiny models held in half precision: every text's log-likelihood within
    // 1e-3 (relative) of the exact dequantized weights, and half the memory.
    let r = reference();
    let pool = pool(2);
    for (file, key) in [
        ("tiny-llama.q8_0.gguf", "tiny-llama.q8_0.gguf"),
        ("tiny-llama.q4_0.gguf", "tiny-llama.q4_0.gguf"),
        ("tiny-llama.q4_1.gguf", "tiny-llama.q4_1.gguf"),
    ] {
        let (half, float) = (
            load(&fixtures().join(file), Weights::Half),
            load(&fixtures().join(file), Weights::Float),
        );
        assert!(
            half.memory_bytes() < float.memory_bytes() * 6 / 10,
            "{file}"
        );
        for t in r["models"][key]["texts"].as_array().unwrap() {
            let text = t["text"].as_str().unwrap();
            let (a, b) = (
                half.loglik(text, &pool, &mut noop()).unwrap(),
                float.loglik(text, &pool, &mut noop()).unwrap(),
            );
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "{file} {text:?}: half {a} vs float {b}"
            );
        }
    }
}
