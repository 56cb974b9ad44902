//! Timing benchmark (ignored by default). Run with:
//! `cargo test -p xsell-fpgrowth --release --test timing -- --ignored --nocapture`
//! Optional: `XSELL_FP_BASKETS=1000000` (default 100000), `XSELL_FP_THREADS=4` (default 2).

use std::time::Instant;
use xsell_fpgrowth::{Baskets, MineOptions, Recommender, mine, recommend, rules};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` baskets over 500 items with Zipf(1.0) popularity, about 5 distinct items per basket, and
/// planted correlations: 3 -> 17, {10, 20} -> 42, 7 -> {30, 31}.
fn zipf_baskets(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let n_items = 500;
    let w: Vec<f64> = (0..n_items).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    let total: f64 = w.iter().sum();
    let mut cdf = Vec::with_capacity(n_items);
    let mut acc = 0.0;
    for x in &w {
        acc += x / total;
        cdf.push(acc);
    }
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            // size 1..=12, mean about 5
            let mut size = 1;
            while size < 12 && r.unit() < 0.8 {
                size += 1;
            }
            let mut b: Vec<u32> = (0..size)
                .map(|_| {
                    let u = r.unit();
                    cdf.partition_point(|&c| c < u).min(n_items - 1) as u32
                })
                .collect();
            if b.contains(&3) && r.unit() < 0.6 {
                b.push(17);
            }
            if b.contains(&10) && b.contains(&20) && r.unit() < 0.7 {
                b.push(42);
            }
            if b.contains(&7) && r.unit() < 0.5 {
                b.extend([30, 31]);
            }
            b
        })
        .collect()
}

/// CPU time of all threads of this process, in ms (Linux; 0 elsewhere). Reported next to wall
/// time because the build machine is shared.
fn cpu_ms() -> f64 {
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
        / 1e6
}

#[test]
#[ignore]
fn timing_zipf() {
    let n: usize = std::env::var("XSELL_FP_BASKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let threads: usize = std::env::var("XSELL_FP_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let data = zipf_baskets(n, 42);
    let names: Vec<String> = (0..500).map(|i| format!("sku-{i:04}")).collect();

    let t = Instant::now();
    let mut b: Baskets<String> = Baskets::new();
    for bk in &data {
        b.add_borrowed(bk.iter().map(|&i| names[i as usize].as_str()))
            .unwrap();
    }
    let t_collect = t.elapsed();
    let t = Instant::now();
    let bytes = b.to_bytes();
    let t_ser = t.elapsed();
    let t = Instant::now();
    let back = Baskets::<String>::from_bytes(&bytes).unwrap();
    let t_de = t.elapsed();
    assert_eq!(back.n_baskets(), n as u64);
    println!(
        "{n} baskets, {} entries ({:.2}/basket), {threads} threads: collect {:.1} ms, state {:.1} MB \
         (approx_bytes), serialized {:.1} MB in {:.1} ms, deserialized in {:.1} ms",
        b.n_entries(),
        b.n_entries() as f64 / n as f64,
        t_collect.as_secs_f64() * 1e3,
        b.approx_bytes() as f64 / 1e6,
        bytes.len() as f64 / 1e6,
        t_ser.as_secs_f64() * 1e3,
        t_de.as_secs_f64() * 1e3,
    );

    for ms in [0.005, 0.001] {
        let mut calls = 0u32;
        let opts = MineOptions::default();
        // best of three; phase start times (ms) of the last run from the progress reports
        let mut best = f64::MAX;
        let mut model = None;
        let mut phases: Vec<(&'static str, f64)> = Vec::new();
        let mut best_cpu = f64::MAX;
        for _ in 0..3 {
            phases.clear();
            let c0 = cpu_ms();
            let t = Instant::now();
            let m = mine(&b, ms, &opts, &pool, &mut |p| {
                calls += 1;
                if phases.last().map(|l| l.0) != Some(p.phase.name()) {
                    phases.push((p.phase.name(), p.elapsed.as_secs_f64() * 1e3));
                }
            })
            .unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu_ms() - c0);
            model = Some(m);
        }
        println!("  phases seen at (ms): {phases:?}");
        let model = model.unwrap();
        let by_len = (1..=4)
            .map(|l| model.itemsets.iter().filter(|s| s.items.len() == l).count())
            .collect::<Vec<_>>();
        let t = Instant::now();
        let rs = rules(&model, 0.1, 0.0, 10_000_000, &mut |_| {}).unwrap();
        let t_rules = t.elapsed();
        let t = Instant::now();
        let all_rules = rules(&model, 0.0, 0.0, 10_000_000, &mut |_| {}).unwrap();
        let t_all_rules = t.elapsed();
        // recommend latency over many carts drawn from the data
        let carts: Vec<Vec<String>> = data
            .iter()
            .step_by(97)
            .take(1000)
            .map(|bk| bk.iter().map(|&i| names[i as usize].clone()).collect())
            .collect();
        let t = Instant::now();
        let mut n_recs = 0;
        for c in &carts {
            n_recs += recommend(c, &model, 10, 0.1).unwrap().len();
        }
        let per_call = t.elapsed().as_secs_f64() / carts.len() as f64;
        let t = Instant::now();
        let prepared = Recommender::new(&model);
        let t_index = t.elapsed();
        for c in &carts {
            assert_eq!(
                prepared.recommend(c, 10, 0.1).unwrap().len(),
                recommend(c, &model, 10, 0.1).unwrap().len()
            );
        }
        let t = Instant::now();
        for c in &carts {
            n_recs -= prepared.recommend(c, 10, 0.1).unwrap().len();
        }
        assert_eq!(n_recs, 0);
        let per_call_prepared = t.elapsed().as_secs_f64() / carts.len() as f64;
        println!(
            "  Recommender: index built in {:.2} ms ({:.2} MB), {:.1} us/call",
            t_index.as_secs_f64() * 1e3,
            prepared.approx_bytes() as f64 / 1e6,
            per_call_prepared * 1e6
        );
        let n_recs: usize = carts
            .iter()
            .map(|c| recommend(c, &model, 10, 0.1).unwrap().len())
            .sum();
        println!(
            "min_support {ms}: mine {:.1} ms wall, {best_cpu:.1} ms cpu ({} itemsets by length {:?}, {calls} progress calls); \
             rules(conf>=0.1) {:.1} ms -> {} rules; all rules {:.1} ms -> {}; recommend {:.1} us/call \
             ({:.1} recs/cart)",
            best * 1e3,
            model.itemsets.len(),
            by_len,
            t_rules.as_secs_f64() * 1e3,
            rs.len(),
            t_all_rules.as_secs_f64() * 1e3,
            all_rules.len(),
            per_call * 1e6,
            n_recs as f64 / carts.len() as f64,
        );
        // planted rule is found
        if ms == 0.005 {
            assert!(
                rs.iter()
                    .any(|r| r.antecedent == ["sku-0003"] && r.consequent == ["sku-0017"])
            );
        }
    }
}
