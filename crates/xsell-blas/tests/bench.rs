//! Throughput of `sgemm` on transformer-shaped products (ignored by default; run with
//! `cargo test -p xsell-blas --release --test bench -- --ignored --nocapture`).

use std::time::Instant;
use xsell_blas::{Transpose, sgemm};

/// `C[m, n] = X[m, k] * W^T` with `W` stored `[n, k]`, cycling through enough
/// distinct weight matrices (about 48 MB) that they stream from memory like a
/// real model's layers, in both operand orders.
#[test]
#[ignore]
fn bench_sgemm_shapes() {
    println!(
        "{} (core {})",
        xsell_blas::config(),
        xsell_blas::core_name()
    );
    for threads in [1, 2] {
        xsell_blas::set_threads(threads).unwrap();
        for (m, n, k) in [
            (13, 384, 384),
            (13, 1536, 384),
            (416, 384, 384),
            (416, 1536, 384),
            (416, 384, 1536),
            (2048, 2048, 2048),
        ] {
            let copies = (48_000_000 / (n * k * 4)).max(1);
            let ws: Vec<Vec<f32>> = (0..copies)
                .map(|i| vec![0.25f32 + i as f32 * 0.0; n * k])
                .collect();
            let x = vec![0.5f32; m * k];
            let mut c = vec![0.0f32; m * n];
            let flop = 2.0 * (m * n * k) as f64;
            let reps = ((1e10 / flop) as usize).clamp(copies, 20_000);
            for swapped in [false, true] {
                let t = Instant::now();
                for r in 0..reps {
                    let w = &ws[r % copies];
                    if swapped {
                        // C^T[n, m] = W[n, k] * X^T
                        sgemm(
                            Transpose::No,
                            Transpose::Yes,
                            n,
                            m,
                            k,
                            1.0,
                            w,
                            k,
                            &x,
                            k,
                            0.0,
                            &mut c,
                            m,
                        )
                        .unwrap();
                    } else {
                        sgemm(
                            Transpose::No,
                            Transpose::Yes,
                            m,
                            n,
                            k,
                            1.0,
                            &x,
                            k,
                            w,
                            k,
                            0.0,
                            &mut c,
                            n,
                        )
                        .unwrap();
                    }
                }
                let s = t.elapsed().as_secs_f64();
                assert_eq!(c[0], 0.125 * k as f32);
                println!(
                    "threads {threads} m={m:5} n={n:5} k={k:5} {}: {:7.1} GFLOP/s",
                    if swapped { "W*X^T" } else { "X*W^T" },
                    flop * reps as f64 / s / 1e9
                );
            }
        }
    }
}

/// The small-row kernels with f32 and half-precision weights on the shapes of one short
/// text: MiniLM (12 tokens, 384 / 1536 wide, ~44 MB of f32 weights in all) and SmolLM2
/// (16 tokens, 576 / 1536 wide, weights well beyond the last-level cache), on 1 and 2
/// threads (output columns split in two halves).
#[test]
#[ignore]
fn bench_small_rows_f32_vs_f16() {
    use xsell_blas::{F16, Weight, sgemm_nt_small};
    fn run<W: Weight>(
        m: usize,
        n: usize,
        k: usize,
        ws: &[Vec<W>],
        threads: usize,
        reps: usize,
    ) -> f64 {
        let x = vec![0.01f32; m * k];
        let mut dst = vec![0f32; m * n];
        let t = Instant::now();
        for r in 0..reps {
            let w = &ws[r % ws.len()];
            if threads == 1 {
                sgemm_nt_small(m, n, k, &x, w, &mut dst, n, false).unwrap();
            } else {
                let half = n / 2;
                let (lo, hi) = w.split_at(half * k);
                let mut a = vec![0f32; m * half];
                let mut b = vec![0f32; m * (n - half)];
                std::thread::scope(|s| {
                    s.spawn(|| sgemm_nt_small(m, half, k, &x, lo, &mut a, half, false).unwrap());
                    sgemm_nt_small(m, n - half, k, &x, hi, &mut b, n - half, false).unwrap();
                });
            }
        }
        2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9
    }
    println!("small-row kernel: {}", xsell_blas::small_kernel());
    for (label, m, n, k, total) in [
        ("MiniLM", 12, 1536, 384, 44usize << 20),
        ("SmolLM2", 16, 1536, 576, 400 << 20),
    ] {
        let copies = (total / (n * k * 4)).max(1);
        let w32: Vec<Vec<f32>> = (0..copies)
            .map(|c| (0..n * k).map(|i| ((i + c) % 7) as f32 * 0.1).collect())
            .collect();
        let w16: Vec<Vec<F16>> = w32
            .iter()
            .map(|w| w.iter().map(|&v| F16::from_f32(v)).collect())
            .collect();
        let reps = 4 * copies;
        for threads in [1, 2] {
            let (a, b) = (
                run(m, n, k, &w32, threads, reps),
                run(m, n, k, &w16, threads, reps),
            );
            println!(
                "{label} m={m} n={n} k={k}, {threads} thread(s): f32 weights {a:6.1} GFLOP/s, f16 weights {b:6.1} GFLOP/s"
            );
        }
    }
}
