//! The multi-pass building blocks: StepState, FeatureMoments, k-means||.

mod common;

use common::{blobs, pool, quiet, shuffle_rows};
use xsell_kmeans::{
    FeatureMoments, FirstCenter, Init, KMeansError, Params, StepState, center_shift_total, fit,
    parallel_sample, reduce_candidates, row_hash,
};

fn state_over(rows: &[f64], d: usize, centers: &[f64], k: usize) -> StepState {
    let mut s = StepState::new(k, d).unwrap();
    for r in rows.chunks(d) {
        s.add(r, centers).unwrap();
    }
    s
}

#[test]
fn step_state_accumulates_and_merges_associatively() {
    let d = 3;
    // Integer-valued data: all sums are exact, so merging is exactly
    // associative and commutative.
    let data: Vec<f64> = blobs(900, d, 3, 20.0, 1)
        .iter()
        .map(|v| v.round())
        .collect();
    let centers = data[..3 * d].to_vec();
    let (a, rest) = data.split_at(300 * d);
    let (b, c) = rest.split_at(250 * d);
    let (sa, sb, sc) = (
        state_over(a, d, &centers, 3),
        state_over(b, d, &centers, 3),
        state_over(c, d, &centers, 3),
    );
    let mut left = sa.clone();
    left.merge(&sb).unwrap();
    left.merge(&sc).unwrap();
    let mut bc = sb.clone();
    bc.merge(&sc).unwrap();
    let mut right = sa.clone();
    right.merge(&bc).unwrap();
    let mut swapped = sc.clone();
    swapped.merge(&sa).unwrap();
    swapped.merge(&sb).unwrap();
    let whole = state_over(&data, d, &centers, 3);
    assert_eq!(left, right);
    assert_eq!(left, swapped);
    assert_eq!(left, whole);
    assert_eq!(whole.n, 900);
    assert_eq!(whole.counts.iter().sum::<u64>(), 900);

    // Non-integer data: equal up to rounding.
    let data = blobs(600, d, 3, 5.0, 2);
    let s1 = state_over(&data, d, &centers, 3);
    let mut s2 = state_over(&data[..100 * d], d, &centers, 3);
    s2.merge(&state_over(&data[100 * d..], d, &centers, 3))
        .unwrap();
    assert_eq!(s1.counts, s2.counts);
    for (x, y) in s1.sums.iter().zip(&s2.sums) {
        assert!((x - y).abs() <= 1e-9 * (1.0 + x.abs()));
    }
    assert!((s1.inertia - s2.inertia).abs() <= 1e-9 * s1.inertia);
}

#[test]
fn step_state_semantics_and_errors() {
    let centers = [0.0, 0.0, 10.0, 0.0, 100.0, 100.0];
    let mut s = StepState::new(3, 2).unwrap();
    assert_eq!(s.add(&[1.0, 1.0], &centers).unwrap(), 0);
    assert_eq!(s.add(&[9.0, -1.0], &centers).unwrap(), 1);
    assert_eq!(s.add(&[11.0, 1.0], &centers).unwrap(), 1);
    assert_eq!(
        s.add(&[5.0, 0.0], &centers).unwrap(),
        0,
        "ties go to the first centroid"
    );
    assert_eq!(s.counts, vec![2, 2, 0]);
    assert_eq!(s.inertia, 2.0 + 2.0 + 2.0 + 25.0);
    // Cluster 2 got no rows: it keeps its previous centroid.
    assert_eq!(
        s.centroids(&centers).unwrap(),
        vec![3.0, 0.5, 10.0, 0.0, 100.0, 100.0]
    );

    assert_eq!(
        s.add(&[1.0], &centers).unwrap_err(),
        KMeansError::DimensionMismatch {
            expected: 2,
            got: 1
        }
    );
    assert_eq!(
        s.add(&[1.0, f64::NAN], &centers).unwrap_err(),
        KMeansError::NonFinite { row: 4, column: 1 }
    );
    assert!(matches!(
        s.add(&[1.0, 1.0], &centers[..4]).unwrap_err(),
        KMeansError::InvalidShape(_)
    ));
    assert_eq!(s.n, 4, "failed adds leave the state unchanged");
    assert!(matches!(
        s.centroids(&centers[..2]).unwrap_err(),
        KMeansError::InvalidShape(_)
    ));
    assert!(matches!(
        s.merge(&StepState::new(2, 2).unwrap()).unwrap_err(),
        KMeansError::InvalidShape(_)
    ));
    assert!(matches!(
        StepState::new(0, 2).unwrap_err(),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        StepState::new(2, 0).unwrap_err(),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        StepState::new(1 << 20, 1 << 10).unwrap_err(),
        KMeansError::LimitExceeded(_)
    ));

    // serde round trip + validation of tampered states
    let json = serde_json::to_string(&s).unwrap();
    let back: StepState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    back.validate().unwrap();
    let mut bad = s.clone();
    bad.n = 7;
    assert!(matches!(
        bad.validate().unwrap_err(),
        KMeansError::InvalidModel(_)
    ));
    let mut bad = s.clone();
    bad.sums.pop();
    assert!(matches!(
        bad.validate().unwrap_err(),
        KMeansError::InvalidModel(_)
    ));
    assert!(s.merge(&bad).is_err());

    assert_eq!(
        center_shift_total(&[0.0, 0.0, 1.0, 1.0], &[3.0, 4.0, 1.0, 2.0], 2).unwrap(),
        26.0
    );
    assert!(center_shift_total(&[0.0], &[0.0, 1.0], 1).is_err());
    assert!(center_shift_total(&[0.0], &[0.0], 0).is_err());
}

#[test]
fn streaming_lloyd_matches_fit() {
    // Lloyd passes driven through StepState reproduce fit() with the same
    // explicit init (no empty clusters on this data).
    let d = 3;
    let k = 4;
    let data = blobs(4000, d, 4, 6.0, 3);
    let init = data[..k * d].to_vec();
    let mut moments = FeatureMoments::new(d).unwrap();
    for r in data.chunks(d) {
        moments.add(r).unwrap();
    }
    let tol_abs = moments.tolerance(1e-4);
    let mut centers = init.clone();
    let mut iterations = 0;
    for _ in 0..300 {
        iterations += 1;
        let s = state_over(&data, d, &centers, k);
        let new = s.centroids(&centers).unwrap();
        let shift = center_shift_total(&centers, &new, d).unwrap();
        centers = new;
        if shift <= tol_abs {
            break;
        }
    }
    let m = fit(
        data.clone(),
        d,
        &Params {
            init: Init::Explicit(init),
            algorithm: xsell_kmeans::Algorithm::Lloyd,
            ..Params::new(k)
        },
        &pool(2),
        &mut quiet(),
    )
    .unwrap();
    // Both stop on the tolerance (fit may also stop on stable labels).
    assert!(
        (m.iterations as i64 - iterations as i64).abs() <= 1,
        "{} vs {iterations}",
        m.iterations
    );
    for c in centers.chunks(d) {
        let (j, dist) = m.assign(c).unwrap();
        assert!(
            dist < 1e-6,
            "centroid {c:?} not found in the model (nearest {:?})",
            m.centroid(j)
        );
    }
}

#[test]
fn feature_moments() {
    let d = 4;
    let data = blobs(1000, d, 3, 50.0, 4);
    let mut all = FeatureMoments::new(d).unwrap();
    for r in data.chunks(d) {
        all.add(r).unwrap();
    }
    let mut a = FeatureMoments::new(d).unwrap();
    let mut b = FeatureMoments::new(d).unwrap();
    for (i, r) in data.chunks(d).enumerate() {
        if i % 3 == 0 {
            a.add(r).unwrap()
        } else {
            b.add(r).unwrap()
        }
    }
    a.merge(&b).unwrap();
    a.merge(&FeatureMoments::new(d).unwrap()).unwrap();
    assert_eq!(a.n, 1000);
    // Two-pass reference.
    let n = 1000.0;
    for t in 0..d {
        let mean = data.chunks(d).map(|r| r[t]).sum::<f64>() / n;
        let var = data.chunks(d).map(|r| (r[t] - mean).powi(2)).sum::<f64>() / n;
        assert!((all.variances()[t] - var).abs() <= 1e-10 * var);
        assert!((a.variances()[t] - var).abs() <= 1e-10 * var);
    }
    let mean_var = all.variances().iter().sum::<f64>() / d as f64;
    assert!((all.tolerance(1e-4) - 1e-4 * mean_var).abs() <= 1e-12 * mean_var);
    assert_eq!(all.tolerance(0.0), 0.0);
    assert_eq!(FeatureMoments::new(2).unwrap().variances(), vec![0.0, 0.0]);
    assert!(all.add(&[1.0]).is_err());
    assert!(all.merge(&FeatureMoments::new(3).unwrap()).is_err());
    assert!(FeatureMoments::new(0).is_err());
}

#[test]
fn first_center_is_order_independent() {
    let d = 3;
    let data = blobs(500, d, 5, 5.0, 5);
    let pick = |rows: &[f64]| {
        let mut f = FirstCenter::new(9);
        for r in rows.chunks(d) {
            f.add(r).unwrap();
        }
        f
    };
    let expected = data
        .chunks(d)
        .min_by_key(|r| row_hash(9, 0, r))
        .unwrap()
        .to_vec();
    assert_eq!(pick(&data).into_row().unwrap(), expected);
    assert_eq!(
        pick(&shuffle_rows(&data, d, 1)).into_row().unwrap(),
        expected
    );
    let mut merged = pick(&data[300 * d..]);
    merged.merge(&pick(&data[..300 * d])).unwrap();
    merged.merge(&FirstCenter::new(9)).unwrap();
    assert_eq!(merged.into_row().unwrap(), expected);
    assert_eq!(FirstCenter::new(1).into_row(), None);
    let mut f = pick(&data);
    assert!(f.add(&[1.0]).is_err());
    assert!(f.add(&[]).is_err());
    assert!(f.merge(&FirstCenter::new(10)).is_err());
    // -0.0 and 0.0 are the same row.
    let mut z = FirstCenter::new(1);
    z.add(&[-0.0, 1.0]).unwrap();
    assert_eq!(z.into_row().unwrap()[0].to_bits(), 0.0f64.to_bits());
}

#[test]
fn parallel_sample_probabilities() {
    let d = 2;
    let data = blobs(20_000, d, 4, 10.0, 6);
    let centers = data[..d].to_vec();
    let phi: f64 = data
        .chunks(d)
        .map(|r| xsell_kmeans::nearest(r, &centers).unwrap().1)
        .sum();
    let l = 20.0;
    let expected: f64 = data
        .chunks(d)
        .map(|r| (l * xsell_kmeans::nearest(r, &centers).unwrap().1 / phi).min(1.0))
        .sum();
    let kept = data
        .chunks(d)
        .filter(|r| parallel_sample(r, &centers, phi, l, 3, 0).unwrap())
        .count() as f64;
    assert!(
        (kept - expected).abs() <= 5.0 * expected.sqrt() + 1.0,
        "kept {kept}, expected {expected}"
    );
    // Decisions are a pure function of the row: other rounds or seeds differ.
    let kept1: Vec<bool> = data
        .chunks(d)
        .map(|r| parallel_sample(r, &centers, phi, l, 3, 1).unwrap())
        .collect();
    let kept0: Vec<bool> = data
        .chunks(d)
        .map(|r| parallel_sample(r, &centers, phi, l, 3, 0).unwrap())
        .collect();
    assert_ne!(kept0, kept1);
    assert!(
        !parallel_sample(&centers, &centers, phi, l, 3, 0).unwrap(),
        "a center is never resampled"
    );
    assert!(!parallel_sample(&data[2..4], &centers, 0.0, l, 3, 0).unwrap());
    assert!(
        parallel_sample(&[1e6, 1e6], &centers, 1.0, 1.0, 3, 0).unwrap(),
        "probability capped at 1"
    );
    assert!(matches!(
        parallel_sample(&[1.0, 1.0], &centers, -1.0, l, 0, 0),
        Err(KMeansError::InvalidParameter(_))
    ));
    assert!(matches!(
        parallel_sample(&[1.0, 1.0], &centers, 1.0, 0.0, 0, 0),
        Err(KMeansError::InvalidParameter(_))
    ));
    assert!(parallel_sample(&[1.0, 1.0, 1.0], &centers, 1.0, 1.0, 0, 0).is_err());
    assert!(parallel_sample(&[f64::NAN, 1.0], &centers, 1.0, 1.0, 0, 0).is_err());
}

/// k-means|| (5 rounds, l = 2k) as the SQL layer drives it.
fn kmeans_parallel_init(data: &[f64], d: usize, k: usize, seed: u64) -> Vec<f64> {
    let mut first = FirstCenter::new(seed);
    for r in data.chunks(d) {
        first.add(r).unwrap();
    }
    let mut cands = first.into_row().unwrap();
    let l = 2.0 * k as f64;
    for round in 0..5 {
        let m = cands.len() / d;
        let phi = state_over(data, d, &cands, m).inertia;
        let new: Vec<f64> = data
            .chunks(d)
            .filter(|r| parallel_sample(r, &cands, phi, l, seed, round).unwrap())
            .flatten()
            .copied()
            .collect();
        cands.extend(new);
    }
    let m = cands.len() / d;
    let weights: Vec<f64> = state_over(data, d, &cands, m)
        .counts
        .iter()
        .map(|&c| c as f64)
        .collect();
    reduce_candidates(&cands, &weights, d, k, seed, &pool(2), &mut quiet()).unwrap()
}

#[test]
fn kmeans_parallel_end_to_end() {
    let (d, k) = (4, 6);
    let data = blobs(8000, d, k, 10.0, 7);
    let init = kmeans_parallel_init(&data, d, k, 1);
    assert_eq!(init.len(), k * d);
    // Same init from shuffled rows.
    assert_eq!(
        kmeans_parallel_init(&shuffle_rows(&data, d, 3), d, k, 1),
        init
    );
    let from_par = fit(
        data.clone(),
        d,
        &Params {
            init: Init::Explicit(init),
            ..Params::new(k)
        },
        &pool(2),
        &mut quiet(),
    )
    .unwrap();
    let best = fit(
        data,
        d,
        &Params {
            n_init: 5,
            ..Params::new(k)
        },
        &pool(2),
        &mut quiet(),
    )
    .unwrap();
    assert!(
        from_par.inertia <= best.inertia * 1.01,
        "{} vs {}",
        from_par.inertia,
        best.inertia
    );
}

#[test]
fn reduce_candidates_is_order_and_thread_independent() {
    let (d, k) = (3, 5);
    let cands = blobs(400, d, 5, 8.0, 8);
    let weights: Vec<f64> = (0..400).map(|i| (i % 7) as f64).collect();
    let r1 = reduce_candidates(&cands, &weights, d, k, 4, &pool(1), &mut quiet()).unwrap();
    // Shuffle (candidate, weight) pairs together; 3 threads.
    let mut idx: Vec<usize> = (0..400).collect();
    idx.reverse();
    idx.swap(3, 200);
    let c2: Vec<f64> = idx
        .iter()
        .flat_map(|&i| cands[i * d..(i + 1) * d].to_vec())
        .collect();
    let w2: Vec<f64> = idx.iter().map(|&i| weights[i]).collect();
    assert_eq!(
        reduce_candidates(&c2, &w2, d, k, 4, &pool(3), &mut quiet()).unwrap(),
        r1
    );
    // Splitting a candidate into two copies with the same total weight.
    let mut c3 = cands.clone();
    let mut w3 = weights.clone();
    c3.extend_from_slice(&cands[d..2 * d]);
    w3[1] -= 0.5;
    w3.push(0.5);
    assert_eq!(
        reduce_candidates(&c3, &w3, d, k, 4, &pool(2), &mut quiet()).unwrap(),
        r1
    );
    // A different seed may give different centers but still k of them.
    assert_eq!(
        reduce_candidates(&cands, &weights, d, k, 5, &pool(2), &mut quiet())
            .unwrap()
            .len(),
        k * d
    );

    let p = pool(1);
    let err = |c: &[f64], w: &[f64], k: usize| {
        reduce_candidates(c, w, d, k, 0, &p, &mut quiet()).unwrap_err()
    };
    assert!(matches!(
        err(&cands, &weights[..10], k),
        KMeansError::InvalidShape(_)
    ));
    let mut neg = weights.clone();
    neg[3] = -1.0;
    assert!(matches!(
        err(&cands, &neg, k),
        KMeansError::InvalidParameter(_)
    ));
    assert_eq!(err(&cands, &vec![0.0; 400], k), KMeansError::EmptyInput);
    assert_eq!(
        err(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], &[1.0, 2.0], 2),
        KMeansError::TooFewDistinctPoints { k: 2, distinct: 1 }
    );
    assert!(matches!(
        err(&cands, &weights, 0),
        KMeansError::InvalidParameter(_)
    ));
}
