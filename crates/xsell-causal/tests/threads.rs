//! Loading, scoring and generation start no threads of their own: all compute runs on
//! the caller's rayon pool (this binary holds a single test so the count is exact).

mod common;

use common::*;
use xsell_causal::{CausalLm, GenOptions, LoadOptions, Prompt, Weights};

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn compute_stays_on_the_callers_pool() {
    if !std::path::Path::new("/proc/self/task").is_dir() {
        return; // not Linux: nothing to count
    }
    let pool = pool(3);
    let before = os_threads(); // main, test and the 3 pool threads
    for (file, weights) in [
        ("tiny-llama.q4_1.gguf", Weights::Half),
        ("tiny-llama.q4_1.gguf", Weights::Float),
        ("tiny-llama.q4_1.gguf", Weights::Quantized),
        ("tiny-gpt2", Weights::Half),
    ] {
        let lm = CausalLm::load(&fixtures().join(file), LoadOptions { weights }).unwrap();
        assert_eq!(os_threads(), before, "loading {file} started threads");
        let mut calls = 0;
        let ll = lm
            .loglik_batch(
                &["Great blender, crushes ice in seconds.", "Terrible."],
                &pool,
                &mut || calls += 1,
            )
            .unwrap();
        assert!(ll.iter().all(|v| v.is_finite() && *v < 0.0));
        let opts = GenOptions {
            max_tokens: 4,
            chat_template: false,
            ..GenOptions::default()
        };
        lm.generate(Prompt::Text("Great"), &opts, &pool, &mut || calls += 1)
            .unwrap();
        assert!(calls >= 2);
        assert_eq!(
            os_threads(),
            before,
            "{file}: compute started threads besides the pool"
        );
    }
}
