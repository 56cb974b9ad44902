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
