//! Agreement with scikit-learn on the fixture produced by
//! `scripts/fixtures/gen_kmeans_fixture.py`.

use serde_json::Value;
use xsell_kmeans::{Algorithm, Init, Params, fit, silhouette};

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/kmeans_sklearn.json")).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(f64s).collect(),
        v => vec![v.as_f64().unwrap()],
    }
}

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

#[test]
fn explicit_init_matches_sklearn() {
    let fx = fixture();
    let d = fx["d"].as_u64().unwrap() as usize;
    let k = fx["k"].as_u64().unwrap() as usize;
    let data = f64s(&fx["data"]);
    let n = data.len() / d;
    for case in fx["explicit"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let sk_c = f64s(&case["centroids"]);
        let sk_inertia = case["inertia"].as_f64().unwrap();
        let sk_labels: Vec<usize> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        for algorithm in [Algorithm::Lloyd, Algorithm::Hamerly] {
            for threads in [1, 3] {
                let params = Params {
                    init: Init::Explicit(f64s(&case["init"])),
                    max_iter: case["max_iter"].as_u64().unwrap() as usize,
                    tol: case["tol"].as_f64().unwrap(),
                    algorithm,
                    ..Params::new(k)
                };
                let m = fit(data.clone(), d, &params, &pool(threads), &mut |_| {}).unwrap();
                // Map sklearn cluster j -> our cluster (ours are size-ordered).
                let perm: Vec<usize> = (0..k)
                    .map(|j| m.assign(&sk_c[j * d..(j + 1) * d]).unwrap().0)
                    .collect();
                let mut seen = perm.clone();
                seen.sort();
                seen.dedup();
                assert_eq!(seen.len(), k, "{name}: centroids do not match one to one");
                for j in 0..k {
                    for t in 0..d {
                        let (a, b) = (m.centroids[perm[j] * d + t], sk_c[j * d + t]);
                        assert!(
                            (a - b).abs() <= 1e-9,
                            "{name}: centroid {j}[{t}] {a} vs {b}"
                        );
                    }
                }
                assert!(
                    (m.inertia - sk_inertia).abs() <= 1e-9 * sk_inertia.max(1.0),
                    "{name}: inertia {} vs {sk_inertia}",
                    m.inertia
                );
                assert_eq!(
                    m.iterations as u64,
                    case["n_iter"].as_u64().unwrap(),
                    "{name}: n_iter"
                );
                let mut sizes = vec![0u64; k];
                for i in 0..n {
                    let ours = m.assign(&data[i * d..(i + 1) * d]).unwrap().0;
                    assert_eq!(ours, perm[sk_labels[i]], "{name}: label of row {i}");
                    sizes[ours] += 1;
                }
                assert_eq!(m.sizes, sizes, "{name}: sizes");
                assert!(
                    m.sizes.windows(2).all(|w| w[0] >= w[1]),
                    "{name}: size order"
                );
                assert_eq!(m.n_rows, n as u64);
                assert_eq!(m.init, "explicit");
            }
        }
    }
}

#[test]
fn kmeanspp_inertia_close_to_sklearn() {
    let fx = fixture();
    let d = fx["d"].as_u64().unwrap() as usize;
    let k = fx["k"].as_u64().unwrap() as usize;
    let data = f64s(&fx["data"]);
    let sk = fx["kmeanspp"]["inertia"].as_f64().unwrap();
    for seed in 0..5 {
        let params = Params {
            seed,
            ..Params::new(k)
        };
        let m = fit(data.clone(), d, &params, &pool(2), &mut |_| {}).unwrap();
        assert!(
            (m.inertia - sk).abs() <= 1e-3 * sk,
            "seed {seed}: inertia {} vs sklearn {sk}",
            m.inertia
        );
        assert!(m.converged);
        assert_eq!(m.init, "k-means++");
    }
    // With restarts we reach sklearn's best-of-10 optimum.
    let best = fx["kmeanspp"]["best_of_10_inertia"].as_f64().unwrap();
    let params = Params {
        n_init: 10,
        ..Params::new(k)
    };
    let m = fit(data, d, &params, &pool(2), &mut |_| {}).unwrap();
    assert!(
        (m.inertia - best).abs() <= 1e-9 * best,
        "{} vs {best}",
        m.inertia
    );
}

#[test]
fn silhouette_matches_sklearn() {
    let fx = fixture();
    let d = fx["d"].as_u64().unwrap() as usize;
    let data = f64s(&fx["data"]);
    let labels: Vec<u32> = fx["silhouette"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let sk = fx["silhouette"]["score"].as_f64().unwrap();
    for threads in [1, 3] {
        let s = silhouette(&data, d, &labels, &pool(threads), &mut |_| {}).unwrap();
        assert!((s - sk).abs() <= 1e-9, "{s} vs {sk}");
    }
    // Label values are arbitrary.
    let shifted: Vec<u32> = labels.iter().map(|l| l * 7 + 100).collect();
    let s = silhouette(&data, d, &shifted, &pool(2), &mut |_| {}).unwrap();
    assert!((s - sk).abs() <= 1e-9);
}
