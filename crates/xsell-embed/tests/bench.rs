//! Timing of the embedding paths (ignored by default; run with
//! `cargo test -p xsell-embed --release --test bench -- --ignored --nocapture --test-threads 1`).
//!
//! Prints sentences/s and achieved GFLOP/s for 2,000 short product texts,
//! batched and one by one, for this crate's OpenBLAS forward pass and for
//! candle's stock `BertModel` (padded batches + masked mean pooling).

mod common;

use common::*;
use std::time::Instant;
use xsell_embed::{EmbedOptions, EmbeddingModel, LoadOptions};

/// 2,000 deterministic product-like texts of about 12 tokens.
fn product_texts(n: usize) -> Vec<String> {
    const ADJ: &[&str] = &[
        "wireless",
        "organic",
        "stainless",
        "portable",
        "ergonomic",
        "waterproof",
        "vintage",
        "compact",
        "premium",
        "lightweight",
        "foldable",
        "rechargeable",
    ];
    const MAT: &[&str] = &[
        "cotton",
        "steel",
        "bamboo",
        "leather",
        "ceramic",
        "glass",
        "wool",
        "silicone",
        "oak",
        "aluminium",
    ];
    const PROD: &[&str] = &[
        "water bottle",
        "office chair",
        "running shoes",
        "coffee maker",
        "backpack",
        "desk lamp",
        "phone case",
        "yoga mat",
        "kitchen knife",
        "bluetooth speaker",
        "t-shirt",
        "air fryer",
    ];
    const FEAT: &[&str] = &[
        "usb-c charging",
        "memory foam",
        "noise cancelling",
        "non-stick coating",
        "led display",
        "extra pockets",
        "quick dry fabric",
        "touch controls",
    ];
    const USE: &[&str] = &[
        "camping",
        "travel",
        "kids",
        "the office",
        "home gym",
        "hiking",
        "students",
        "gifts",
    ];
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut pick = |list: &[&'static str]| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        list[((s >> 33) as usize) % list.len()]
    };
    (0..n)
        .map(|_| {
            format!(
                "{} {} {} with {} for {}",
                pick(ADJ),
                pick(MAT),
                pick(PROD),
                pick(FEAT),
                pick(USE)
            )
        })
        .collect()
}

/// Forward-pass floating-point operations for sequences of the given lengths
/// (linear layers + attention products; MiniLM-L6: hidden 384, intermediate 1536, 6 layers).
fn flops(lens: &[usize]) -> f64 {
    let (h, i, layers) = (384.0f64, 1536.0f64, 6.0f64);
    lens.iter()
        .map(|&l| {
            let l = l as f64;
            layers * (2.0 * l * (4.0 * h * h + 2.0 * h * i) + 4.0 * l * l * h)
        })
        .sum()
}

fn report(what: &str, n: usize, secs: f64, fl: f64) {
    println!(
        "{what:<48} {:>8.1} sentences/s  {:>6.1} GFLOP/s  ({secs:.3} s)",
        n as f64 / secs,
        fl / secs / 1e9
    );
}

fn setup() -> (EmbeddingModel, Vec<String>, Vec<usize>, rayon::ThreadPool) {
    let m = EmbeddingModel::load(&minilm_dir()).unwrap();
    let texts = product_texts(2000);
    let lens: Vec<usize> = texts.iter().map(|t| m.tokenize(t).unwrap().len()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    m.embed_with(
        &[texts[0].as_str()],
        &EmbedOptions::default(),
        Some(&pool),
        &mut || {},
    )
    .unwrap();
    (m, texts, lens, pool)
}

#[test]
#[ignore]
fn bench_openblas_batched() {
    let (m, texts, lens, pool) = setup();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let fl = flops(&lens);
    println!(
        "2000 texts, mean {:.1} tokens; {:.2} GFLOP per pass over all texts; {}",
        lens.iter().sum::<usize>() as f64 / lens.len() as f64,
        fl / 1e9,
        xsell_blas::config()
    );
    for batch in [32, 128] {
        for (threads, use_pool) in [(2, true), (2, false), (1, false)] {
            let opts = EmbedOptions {
                batch_size: batch,
                threads,
            };
            let t = Instant::now();
            let out = m
                .embed_with(
                    &refs,
                    &opts,
                    if use_pool { Some(&pool) } else { None },
                    &mut || {},
                )
                .unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(out.len(), 2000);
            report(
                &format!("xsell-embed batched ({batch}), {threads} thr, pool={use_pool}"),
                2000,
                secs,
                fl,
            );
        }
    }
}

#[test]
#[ignore]
fn bench_openblas_per_row() {
    let (m, texts, lens, pool) = setup();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    for (threads, use_pool) in [(2, true), (2, false), (1, false)] {
        let opts = EmbedOptions {
            batch_size: 32,
            threads,
        };
        let n = 500;
        let t = Instant::now();
        for r in &refs[..n] {
            m.embed_with(
                &[r],
                &opts,
                if use_pool { Some(&pool) } else { None },
                &mut || {},
            )
            .unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        report(
            &format!("xsell-embed per-row, {threads} thr, pool={use_pool}"),
            n,
            secs,
            flops(&lens[..n]),
        );
    }
    // Weights copied into anonymous memory instead of mapped from the file.
    let copied = EmbeddingModel::load_with(&minilm_dir(), &LoadOptions { mmap: false }).unwrap();
    let n = 500;
    let t = Instant::now();
    for r in &refs[..n] {
        copied
            .embed_with(
                &[r],
                &EmbedOptions {
                    batch_size: 32,
                    threads: 1,
                },
                None,
                &mut || {},
            )
            .unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    report(
        "xsell-embed per-row, 1 thr, copied weights",
        n,
        secs,
        flops(&lens[..n]),
    );
}

#[test]
#[ignore]
fn bench_candle_stock_bert() {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};

    let dir = minilm_dir();
    let m = EmbeddingModel::load(&dir).unwrap();
    let cfg: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: the model file is not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
    }
    .unwrap();
    let bert = BertModel::load(vb, &cfg).unwrap();

    let texts = product_texts(2000);
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| m.tokenize(t).unwrap()).collect();
    let lens: Vec<usize> = ids.iter().map(|v| v.len()).collect();

    let run = |batch: &[&Vec<u32>]| -> Vec<Vec<f32>> {
        let max = batch.iter().map(|v| v.len()).max().unwrap();
        let mut flat = Vec::new();
        let mut mask = Vec::new();
        for v in batch {
            flat.extend(v.iter().copied());
            flat.extend(std::iter::repeat_n(0u32, max - v.len()));
            mask.extend(std::iter::repeat_n(1u32, v.len()));
            mask.extend(std::iter::repeat_n(0u32, max - v.len()));
        }
        let b = batch.len();
        let input = Tensor::from_vec(flat, (b, max), &Device::Cpu).unwrap();
        let types = input.zeros_like().unwrap();
        let mask = Tensor::from_vec(mask, (b, max), &Device::Cpu).unwrap();
        let out = bert.forward(&input, &types, Some(&mask)).unwrap(); // (b, max, 384)
        let maskf = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
        let summed = out.broadcast_mul(&maskf).unwrap().sum(1).unwrap();
        let counts = maskf.sum(1).unwrap();
        let mean = summed.broadcast_div(&counts).unwrap();
        let norm = mean.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap();
        mean.broadcast_div(&norm).unwrap().to_vec2::<f32>().unwrap()
    };

    // Sanity: candle agrees with this crate.
    let ours = m
        .embed(&[texts[0].as_str(), texts[1].as_str()], &mut || {})
        .unwrap();
    let theirs = run(&[&ids[0], &ids[1]]);
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(cosine(a, b) > 0.9999);
    }

    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let t = Instant::now();
    let mut padded = Vec::new();
    for chunk in order.chunks(32) {
        let batch: Vec<&Vec<u32>> = chunk.iter().map(|&i| &ids[i]).collect();
        let max = batch.iter().map(|v| v.len()).max().unwrap();
        padded.extend(std::iter::repeat_n(max, batch.len()));
        run(&batch);
    }
    let secs = t.elapsed().as_secs_f64();
    report(
        "candle stock BertModel batched (32, padded)",
        2000,
        secs,
        flops(&padded),
    );
    let n = 300;
    let t = Instant::now();
    for v in &ids[..n] {
        run(&[v]);
    }
    let secs = t.elapsed().as_secs_f64();
    report("candle stock BertModel per-row", n, secs, flops(&lens[..n]));
}
