//! Timing of the benchmark configuration (run explicitly):
//!
//! ```text
//! cargo test -p xsell-kmeans --release --test bench -- --ignored --nocapture
//! ```
//!
//! 1,000,000 x 16 rows drawn like scikit-learn's `make_blobs(centers=8)`
//! (centers uniform in [-10, 10]^16, unit standard deviation), k = 8,
//! k-means++, n_init = 1, on a pool with one thread per CPU. The time
//! includes canonicalisation (hashing and sorting the rows).
//!
//! Environment: `XSELL_KMEANS_BENCH_DATA` (raw f64 file, see
//! `bench/sklearn_bench.py`), `XSELL_KMEANS_BENCH_ALGO` (`lloyd` or
//! `hamerly` only), `XSELL_KMEANS_BENCH_SEED`, `XSELL_KMEANS_BENCH_VERBOSE`
//! (per-iteration CPU times).

use std::time::Instant;

use xsell_kmeans::{Algorithm, Params, SplitMix64, fit};

/// CPU time of all threads of this process in seconds (sum of
/// `/proc/self/task/*/schedstat`, nanosecond resolution; Linux only, 0
/// elsewhere).
fn cpu_time() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1e9
}

fn blobs(n: usize, d: usize, centers: usize, seed: u64, std: f64) -> Vec<f64> {
    let mut r = SplitMix64::new(seed);
    let c: Vec<f64> = (0..centers * d)
        .map(|_| r.next_unit() * 20.0 - 10.0)
        .collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let j = r.below(centers as u64) as usize;
        for t in 0..d {
            // Box-Muller
            let (u1, u2) = (r.next_unit(), r.next_unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            out.push(c[j * d + t] + std * z);
        }
    }
    out
}

/// Raw little-endian f64 file (16 columns) named by `XSELL_KMEANS_BENCH_DATA`
/// (written by `bench/sklearn_bench.py`, which times scikit-learn on the
/// same rows).
fn external_data() -> Option<Vec<f64>> {
    let path = std::env::var("XSELL_KMEANS_BENCH_DATA").ok()?;
    let bytes = std::fs::read(&path).expect("readable bench data");
    Some(
        bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    )
}

#[test]
#[ignore]
fn bench_1m_x16_k8() {
    let (n, d, k) = (1_000_000, 16, 8);
    // With XSELL_KMEANS_BENCH_DATA, only the external data set is timed.
    let sets = match external_data() {
        Some(x) => vec![("external", x)],
        None => vec![
            ("blobs std=1", blobs(n, d, k, 42, 1.0)),
            ("blobs std=8", blobs(n, d, k, 42, 8.0)),
        ],
    };
    let threads = std::thread::available_parallelism().map_or(2, |v| v.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    for (name, data) in &sets {
        let n = data.len() / d;
        for algorithm in [Algorithm::Hamerly, Algorithm::Lloyd] {
            if std::env::var("XSELL_KMEANS_BENCH_ALGO").is_ok_and(|a| a != algorithm.name()) {
                continue;
            }
            let seed = std::env::var("XSELL_KMEANS_BENCH_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let params = Params {
                algorithm,
                seed,
                ..Params::new(k)
            };
            let input = data.clone();
            let verbose = std::env::var("XSELL_KMEANS_BENCH_VERBOSE").is_ok();
            let mut it_cpu = 0.0;
            let mut calls = 0u64;
            let mut max_gap = (0f64, "");
            let mut phases: Vec<(&'static str, f64, f64)> = Vec::new();
            let mut last = Instant::now();
            let mut last_cpu = cpu_time();
            let cpu0 = last_cpu;
            let t0 = Instant::now();
            let m = fit(input, d, &params, &pool, &mut |p| {
                calls += 1;
                let gap = last.elapsed().as_secs_f64();
                if gap > max_gap.0 {
                    max_gap = (gap, p.phase);
                }
                let cpu = cpu_time();
                if verbose && p.phase == "iteration" {
                    it_cpu += cpu - last_cpu;
                    if let Some(shift) = p.center_shift {
                        eprintln!(
                            "  iteration {}: {:.1} ms CPU, shift {shift:.3e}",
                            p.iteration,
                            it_cpu * 1e3
                        );
                        it_cpu = 0.0;
                    }
                }
                match phases.last_mut() {
                    Some((ph, t, c)) if *ph == p.phase => {
                        *t += gap;
                        *c += cpu - last_cpu;
                    }
                    _ => phases.push((p.phase, gap, cpu - last_cpu)),
                }
                last_cpu = cpu;
                last = Instant::now();
            })
            .unwrap();
            let el = t0.elapsed().as_secs_f64();
            let cpu = cpu_time() - cpu0;
            println!(
                "{name} / {algorithm}: {n}x{d} k={k} threads={threads}: {el:.3} s wall, {cpu:.2} s CPU, {} iterations, inertia {:.6e}, \
             {calls} progress calls, max gap {:.1} ms ({})",
                m.iterations,
                m.inertia,
                max_gap.0 * 1e3,
                max_gap.1
            );
            let summary: Vec<String> = phases
                .iter()
                .map(|(p, t, c)| format!("{p} {:.0} ms ({:.0} ms CPU)", t * 1e3, c * 1e3))
                .collect();
            println!("  phases: {}", summary.join(", "));
            assert_eq!(m.sizes.iter().sum::<u64>(), n as u64);
        }
    }
}
