//! Behaviour of `fit`: determinism, Hamerly == Lloyd, edge cases, errors,
//! progress and cancellation.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::{blobs, pool, quiet, shuffle_rows};
use xsell_kmeans::{
    Algorithm, Init, KMeansError, MAX_K, Model, Params, Progress, fit, relabel_by_size,
};

fn fit_q(data: Vec<f64>, d: usize, p: &Params, threads: usize) -> Model {
    fit(data, d, p, &pool(threads), &mut quiet()).unwrap()
}

fn assert_models_close(a: &Model, b: &Model, rel: f64, what: &str) {
    assert_eq!((a.k, a.dims, a.n_rows), (b.k, b.dims, b.n_rows), "{what}");
    assert_eq!(a.sizes, b.sizes, "{what}: sizes");
    assert_eq!(a.iterations, b.iterations, "{what}: iterations");
    assert_eq!(a.converged, b.converged, "{what}: converged");
    let scale = a.centroids.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (x, y) in a.centroids.iter().zip(&b.centroids) {
        assert!((x - y).abs() <= rel * scale, "{what}: centroid {x} vs {y}");
    }
    assert!(
        (a.inertia - b.inertia).abs() <= rel * a.inertia.max(1.0),
        "{what}: inertia {} vs {}",
        a.inertia,
        b.inertia
    );
}

#[test]
fn bit_identical_for_any_row_order_and_pool_size() {
    let d = 5;
    let mut data = blobs(20_000, d, 6, 8.0, 1);
    // Duplicates and signed zeros must not matter either.
    let dup: Vec<f64> = data[..50 * d].to_vec();
    data.extend_from_slice(&dup);
    for v in data.iter_mut().step_by(97) {
        *v = 0.0;
    }
    let mut flipped = shuffle_rows(&data, d, 7);
    for v in flipped.iter_mut() {
        if *v == 0.0 {
            *v = -0.0;
        }
    }
    let reversed: Vec<f64> = data.chunks(d).rev().flatten().copied().collect();
    for (init, algorithm, n_init) in [
        (Init::KMeansPlusPlus, Algorithm::Hamerly, 1),
        (Init::KMeansPlusPlus, Algorithm::Lloyd, 2),
        (Init::Random, Algorithm::Hamerly, 3),
    ] {
        let p = Params {
            init,
            algorithm,
            n_init,
            seed: 42,
            ..Params::new(7)
        };
        let reference = fit_q(data.clone(), d, &p, 1).to_json();
        assert_eq!(
            fit_q(flipped.clone(), d, &p, 3).to_json(),
            reference,
            "{p:?}"
        );
        assert_eq!(
            fit_q(reversed.clone(), d, &p, 2).to_json(),
            reference,
            "{p:?}"
        );
        assert_eq!(fit_q(data.clone(), d, &p, 4).to_json(), reference, "{p:?}");
    }
}

#[test]
fn seed_is_used() {
    let d = 3;
    let data = blobs(3000, d, 12, 5.0, 3);
    let a = fit_q(
        data.clone(),
        d,
        &Params {
            seed: 1,
            ..Params::new(12)
        },
        2,
    );
    let b = fit_q(
        data.clone(),
        d,
        &Params {
            seed: 1,
            ..Params::new(12)
        },
        2,
    );
    assert_eq!(a, b);
    let differs = (2..6).any(|s| {
        fit_q(
            data.clone(),
            d,
            &Params {
                seed: s,
                ..Params::new(12)
            },
            2,
        ) != a
    });
    assert!(
        differs,
        "different seeds should (almost surely) give a different model"
    );
    assert_eq!(a.seed, 1);
}

#[test]
fn hamerly_equals_lloyd() {
    for (n, d, centers, k, scale, seed) in [
        (4000, 2, 5, 5, 6.0, 1),
        (5000, 4, 8, 8, 2.0, 2),    // heavy overlap
        (6000, 3, 30, 24, 10.0, 3), // k > 16: tightened upper bounds
        (3000, 7, 4, 1, 3.0, 4),    // k = 1
        (2000, 16, 40, 40, 20.0, 5),
    ] {
        let data = blobs(n, d, centers, scale, seed);
        for init in [Init::KMeansPlusPlus, Init::Random] {
            let mk = |algorithm| Params {
                init: init.clone(),
                algorithm,
                tol: 1e-6,
                ..Params::new(k)
            };
            let l = fit_q(data.clone(), d, &mk(Algorithm::Lloyd), 2);
            let h = fit_q(data.clone(), d, &mk(Algorithm::Hamerly), 2);
            let what = format!("n={n} d={d} k={k} {init:?}");
            assert_models_close(&l, &h, 1e-10, &what);
            assert_eq!(l.algorithm, "lloyd");
            assert_eq!(h.algorithm, "hamerly");
            for row in data.chunks(d) {
                assert_eq!(l.assign(row).unwrap().0, h.assign(row).unwrap().0, "{what}");
            }
        }
    }
}

#[test]
fn result_is_a_fixed_point_with_consistent_sizes_and_inertia() {
    let d = 3;
    let data = blobs(5000, d, 4, 10.0, 9);
    let p = Params {
        tol: 0.0,
        ..Params::new(4)
    };
    let m = fit_q(data.clone(), d, &p, 2);
    assert!(m.converged);
    let mut sizes = vec![0u64; 4];
    let mut sums = vec![0.0; 4 * d];
    let mut inertia = 0.0;
    for row in data.chunks(d) {
        let (j, dist) = m.assign(row).unwrap();
        sizes[j] += 1;
        inertia += dist;
        for t in 0..d {
            sums[j * d + t] += row[t];
        }
    }
    assert_eq!(m.sizes, sizes);
    assert!(m.sizes.windows(2).all(|w| w[0] >= w[1]), "size order");
    assert!((m.inertia - inertia).abs() <= 1e-9 * inertia);
    for j in 0..4 {
        for t in 0..d {
            let mean = sums[j * d + t] / sizes[j] as f64;
            assert!((m.centroids[j * d + t] - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
        }
    }
    assert_eq!(m.n_rows, 5000);
    assert_eq!(Model::from_json(&m.to_json()).unwrap(), m);
}

#[test]
fn k_one_is_the_mean() {
    let data = vec![1.0, 2.0, 3.0, 6.0, 5.0, 10.0, 7.0, -2.0];
    let m = fit_q(data, 2, &Params::new(1), 1);
    assert!((m.centroids[0] - 4.0).abs() < 1e-12 && (m.centroids[1] - 4.0).abs() < 1e-12);
    assert_eq!(m.sizes, vec![4]);
    assert_eq!(
        m.iterations, 2,
        "first iteration moves to the mean, second is stable"
    );
    assert!(m.converged);
    assert!((m.inertia - (13.0 + 5.0 + 37.0 + 45.0)).abs() < 1e-9);
}

#[test]
fn k_equal_to_distinct_points() {
    // 3 distinct points with multiplicities 5, 3, 1.
    let mut data = Vec::new();
    for _ in 0..5 {
        data.extend_from_slice(&[0.0, 0.0]);
    }
    for _ in 0..3 {
        data.extend_from_slice(&[4.0, 1.0]);
    }
    data.extend_from_slice(&[-3.0, 7.0]);
    for init in [Init::KMeansPlusPlus, Init::Random] {
        let m = fit_q(
            data.clone(),
            2,
            &Params {
                init,
                ..Params::new(3)
            },
            2,
        );
        assert_eq!(m.sizes, vec![5, 3, 1]);
        assert_eq!(m.centroids, vec![0.0, 0.0, 4.0, 1.0, -3.0, 7.0]);
        assert_eq!(m.inertia, 0.0);
    }
    let e = fit(data, 2, &Params::new(4), &pool(1), &mut quiet()).unwrap_err();
    assert_eq!(e, KMeansError::TooFewDistinctPoints { k: 4, distinct: 3 });
    assert_eq!(e.to_string(), "k=4 but only 3 distinct points");
}

#[test]
fn empty_clusters_are_relocated() {
    // Two identical initial centers: the second one gets no rows in the
    // first iteration (ties go to the first) and must be relocated to the
    // row farthest from its center, here the outlier at (50, 50).
    let mut data = Vec::new();
    for i in 0..20 {
        data.extend_from_slice(&[i as f64 * 0.1, 0.0]);
    }
    for i in 0..20 {
        data.extend_from_slice(&[10.0 + i as f64 * 0.1, 0.0]);
    }
    data.extend_from_slice(&[50.0, 50.0]);
    let init = vec![0.0, 0.0, 0.0, 0.0, 10.0, 0.0];
    for algorithm in [Algorithm::Lloyd, Algorithm::Hamerly] {
        let p = Params {
            init: Init::Explicit(init.clone()),
            algorithm,
            ..Params::new(3)
        };
        let m = fit_q(data.clone(), 2, &p, 2);
        assert_eq!(m.sizes, vec![20, 20, 1], "{algorithm}");
        assert_eq!(m.centroid(2), &[50.0, 50.0]);
        assert!(m.converged);
    }
}

#[test]
fn max_iter_limits_and_final_assignment() {
    let d = 2;
    let data = blobs(3000, d, 6, 3.0, 11);
    let p = Params {
        max_iter: 1,
        tol: 0.0,
        init: Init::Random,
        ..Params::new(6)
    };
    for algorithm in [Algorithm::Lloyd, Algorithm::Hamerly] {
        let m = fit_q(
            data.clone(),
            d,
            &Params {
                algorithm,
                ..p.clone()
            },
            2,
        );
        assert_eq!(m.iterations, 1);
        assert!(!m.converged);
        // Labels (hence sizes and inertia) match the final centroids.
        let mut sizes = vec![0u64; 6];
        let mut inertia = 0.0;
        for row in data.chunks(d) {
            let (j, dist) = m.assign(row).unwrap();
            sizes[j] += 1;
            inertia += dist;
        }
        assert_eq!(m.sizes, sizes);
        assert!((m.inertia - inertia).abs() <= 1e-9 * inertia);
    }
}

#[test]
fn n_init_keeps_the_best_run() {
    let d = 2;
    let data = blobs(2000, d, 15, 10.0, 12);
    for seed in 0..4 {
        let one = fit_q(
            data.clone(),
            d,
            &Params {
                seed,
                ..Params::new(15)
            },
            2,
        );
        let five = fit_q(
            data.clone(),
            d,
            &Params {
                seed,
                n_init: 5,
                ..Params::new(15)
            },
            2,
        );
        // Run 0 of the five is the single run.
        assert!(five.inertia <= one.inertia, "seed {seed}");
    }
}

#[test]
fn explicit_init_ignores_n_init() {
    let d = 2;
    let data = blobs(500, d, 3, 5.0, 13);
    let init = data[..3 * d].to_vec();
    let a = fit_q(
        data.clone(),
        d,
        &Params {
            init: Init::Explicit(init.clone()),
            ..Params::new(3)
        },
        1,
    );
    let b = fit_q(
        data,
        d,
        &Params {
            init: Init::Explicit(init),
            n_init: 10,
            seed: 99,
            ..Params::new(3)
        },
        1,
    );
    assert_eq!(a.centroids, b.centroids);
    assert_eq!(b.init, "explicit");
}

#[test]
fn errors_are_specific() {
    let p1 = pool(1);
    let e = |data: Vec<f64>, d: usize, p: Params| fit(data, d, &p, &p1, &mut quiet()).unwrap_err();
    assert!(matches!(
        e(vec![1.0], 1, Params::new(0)),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        e(vec![1.0], 0, Params::new(1)),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        e(vec![1.0], 1, Params::new(MAX_K + 1)),
        KMeansError::LimitExceeded(_)
    ));
    assert_eq!(e(vec![], 3, Params::new(1)), KMeansError::EmptyInput);
    assert!(matches!(
        e(vec![1.0; 5], 2, Params::new(1)),
        KMeansError::InvalidShape(_)
    ));
    let bad = |f: &dyn Fn(&mut Params)| {
        let mut p = Params::new(2);
        f(&mut p);
        e(vec![0.0, 1.0, 2.0, 3.0], 1, p)
    };
    assert!(matches!(
        bad(&|p| p.max_iter = 0),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        bad(&|p| p.tol = -1e-3),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        bad(&|p| p.tol = f64::INFINITY),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        bad(&|p| p.n_init = 0),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        bad(&|p| p.init = Init::Explicit(vec![1.0; 3])),
        KMeansError::InvalidShape(_)
    ));
    assert!(matches!(
        bad(&|p| p.init = Init::Explicit(vec![1.0, f64::NAN])),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        bad(&|p| p.init = Init::Explicit(vec![1.0, 1e300])),
        KMeansError::InvalidParameter(_)
    ));

    // Non-finite values: the row index refers to the caller's order.
    let d = 3;
    let mut data = blobs(1000, d, 2, 1.0, 1);
    data[17 * d + 2] = f64::NAN;
    assert_eq!(
        e(data.clone(), d, Params::new(2)),
        KMeansError::NonFinite { row: 17, column: 2 }
    );
    data[17 * d + 2] = 0.0;
    data[400 * d] = f64::NEG_INFINITY;
    assert_eq!(
        e(data.clone(), d, Params::new(2)),
        KMeansError::NonFinite {
            row: 400,
            column: 0
        }
    );
    data[400 * d] = 1e200;
    let err = e(data.clone(), d, Params::new(2));
    assert!(
        matches!(
            err,
            KMeansError::ValueTooLarge {
                row: 400,
                column: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("row 400"));
    let msg = KMeansError::NonFinite { row: 17, column: 2 }.to_string();
    assert!(msg.contains("row 17") && msg.contains("column 2"), "{msg}");
}

#[test]
fn progress_is_reported_on_the_calling_thread() {
    let d = 4;
    let data = blobs(40_000, d, 5, 5.0, 21);
    let caller = std::thread::current().id();
    let mut phases: Vec<&'static str> = Vec::new();
    let mut end_of_iterations = 0;
    let mut ok = true;
    let m = fit(
        data,
        d,
        &Params {
            n_init: 2,
            ..Params::new(5)
        },
        &pool(3),
        &mut |p: &Progress| {
            ok &= std::thread::current().id() == caller;
            ok &= p.rows_done <= p.rows_total;
            ok &= p.n_runs == 2 && p.run < 2 && p.max_iter == 300;
            if phases.last() != Some(&p.phase) {
                phases.push(p.phase);
            }
            if p.center_shift.is_some() {
                end_of_iterations += 1;
            }
        },
    )
    .unwrap();
    assert!(ok);
    for ph in ["canonicalize", "seeding", "iteration", "finalize"] {
        assert!(phases.contains(&ph), "{ph} missing from {phases:?}");
    }
    assert!(end_of_iterations >= m.iterations);
}

#[test]
fn panicking_callback_cancels_cleanly() {
    let d = 3;
    let data = blobs(30_000, d, 4, 5.0, 22);
    let p = pool(2);
    let r = catch_unwind(AssertUnwindSafe(|| {
        fit(
            data.clone(),
            d,
            &Params::new(4),
            &p,
            &mut |pr: &Progress| {
                if pr.phase == "iteration" {
                    panic!("canceled");
                }
            },
        )
    }));
    assert!(r.is_err());
    // The pool is still usable.
    assert_eq!(
        fit(data, d, &Params::new(4), &p, &mut quiet()).unwrap().k,
        4
    );
}

#[test]
fn relabel_is_deterministic_on_ties() {
    let mut c = vec![3.0, 1.0, 2.0];
    let mut s = vec![4, 4, 4];
    assert_eq!(relabel_by_size(&mut c, &mut s, 1), vec![2, 0, 1]);
    assert_eq!(c, vec![1.0, 2.0, 3.0]);
}
