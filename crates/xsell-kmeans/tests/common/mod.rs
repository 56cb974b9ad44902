//! Helpers shared by the integration tests.
#![allow(dead_code)]

use xsell_kmeans::SplitMix64;

/// A rayon pool with `n` threads.
pub fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

/// `n` rows of `d` features around `centers` random centers in
/// [-scale, scale]^d with unit-variance Gaussian noise (Box-Muller).
pub fn blobs(n: usize, d: usize, centers: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut r = SplitMix64::new(seed);
    let c: Vec<f64> = (0..centers * d)
        .map(|_| (r.next_unit() * 2.0 - 1.0) * scale)
        .collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let j = r.below(centers as u64) as usize;
        for t in 0..d {
            let (u1, u2) = (r.next_unit(), r.next_unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            out.push(c[j * d + t] + z);
        }
    }
    out
}

/// Rows of `data` in a random order (Fisher-Yates with `seed`).
pub fn shuffle_rows(data: &[f64], d: usize, seed: u64) -> Vec<f64> {
    let n = data.len() / d;
    let mut idx: Vec<usize> = (0..n).collect();
    let mut r = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = r.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    idx.iter()
        .flat_map(|&i| data[i * d..(i + 1) * d].iter().copied())
        .collect()
}

/// No-op progress callback.
pub fn quiet() -> impl FnMut(&xsell_kmeans::Progress) {
    |_| {}
}
