//! Silhouette score and the seeded reservoir sample.

mod common;

use common::{blobs, pool, quiet, shuffle_rows};
use xsell_kmeans::{KMeansError, Reservoir, RowHasher, silhouette};

#[test]
fn silhouette_by_hand() {
    // Points on a line: A = {0, 1}, B = {10, 11, 13}, C = {30}.
    let data = [0.0, 1.0, 10.0, 11.0, 13.0, 30.0];
    let labels = [0, 0, 1, 1, 1, 2];
    let s = |a: f64, b: f64| (b - a) / a.max(b);
    let expected = [
        s(1.0, (10.0 + 11.0 + 13.0) / 3.0),
        s(1.0, (9.0 + 10.0 + 12.0) / 3.0),
        s((1.0 + 3.0) / 2.0, (10.0 + 9.0) / 2.0),
        s((1.0 + 2.0) / 2.0, (11.0 + 10.0) / 2.0),
        s((3.0 + 2.0) / 2.0, (13.0 + 12.0) / 2.0),
        0.0, // singleton cluster
    ];
    let mean = expected.iter().sum::<f64>() / 6.0;
    for threads in [1, 3] {
        let got = silhouette(&data, 1, &labels, &pool(threads), &mut quiet()).unwrap();
        assert!((got - mean).abs() < 1e-12, "{got} vs {mean}");
    }
    // Duplicate points in two clusters: a = b = 0 gives s = 0.
    let got = silhouette(
        &[0.0, 0.0, 0.0, 0.0],
        1,
        &[0, 0, 1, 1],
        &pool(1),
        &mut quiet(),
    )
    .unwrap();
    assert_eq!(got, 0.0);
}

#[test]
fn silhouette_is_thread_independent_and_reports_progress() {
    let d = 3;
    let data = blobs(1500, d, 4, 6.0, 1);
    let labels: Vec<u32> = (0..1500).map(|i| (i % 4) as u32).collect();
    let a = silhouette(&data, d, &labels, &pool(1), &mut quiet()).unwrap();
    let mut calls = 0;
    let b = silhouette(&data, d, &labels, &pool(3), &mut |p| {
        assert_eq!(p.phase, "silhouette");
        calls += 1;
    })
    .unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    assert!(calls >= 2);
    assert!(
        a.abs() < 0.2,
        "random labels give a silhouette near 0, got {a}"
    );
}

#[test]
fn silhouette_errors() {
    let p = pool(1);
    let e = |data: &[f64], d: usize, labels: &[u32]| {
        silhouette(data, d, labels, &p, &mut quiet()).unwrap_err()
    };
    assert!(matches!(
        e(&[1.0, 2.0, 3.0], 1, &[0, 0, 0]),
        KMeansError::InvalidLabels(_)
    ));
    assert!(matches!(
        e(&[1.0, 2.0, 3.0], 1, &[0, 1, 2]),
        KMeansError::InvalidLabels(_)
    ));
    assert!(matches!(
        e(&[1.0, 2.0, 3.0], 1, &[0, 1]),
        KMeansError::InvalidShape(_)
    ));
    assert!(matches!(
        e(&[1.0, 2.0, 3.0], 0, &[0, 1, 1]),
        KMeansError::InvalidParameter(_)
    ));
    assert_eq!(e(&[], 2, &[]), KMeansError::EmptyInput);
    assert_eq!(
        e(&[1.0, f64::NAN, 3.0], 1, &[0, 1, 1]),
        KMeansError::NonFinite { row: 1, column: 0 }
    );
    assert!(matches!(
        e(&[1.0, 1e300, 3.0], 1, &[0, 1, 1]),
        KMeansError::ValueTooLarge { row: 1, .. }
    ));
}

fn fill(r: &mut Reservoir, data: &[f64], labels: &[u32], d: usize) {
    for (row, &l) in data.chunks(d).zip(labels) {
        r.add(row, l).unwrap();
    }
}

#[test]
fn reservoir_is_order_independent_and_keeps_the_smallest_keys() {
    let d = 2;
    let n = 3000;
    let data = blobs(n, d, 3, 5.0, 2);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
    let mut a = Reservoir::new(100, d, 7, 3).unwrap();
    fill(&mut a, &data, &labels, d);
    assert_eq!(a.len(), 100);

    // Brute force: the 100 smallest keys.
    let mut keyed: Vec<(u64, u32, Vec<f64>)> = data
        .chunks(d)
        .zip(&labels)
        .map(|(r, &l)| {
            let mut h = RowHasher::new(7, 3);
            for &v in r {
                h.push(v);
            }
            h.push(l as f64);
            (h.finish(), l, r.to_vec())
        })
        .collect();
    keyed.sort_by_key(|x| x.0);
    let (sample, sample_labels) = a.clone().into_sample();
    let expected: Vec<f64> = keyed[..100].iter().flat_map(|e| e.2.clone()).collect();
    let expected_labels: Vec<u32> = keyed[..100].iter().map(|e| e.1).collect();
    assert_eq!(sample, expected);
    assert_eq!(sample_labels, expected_labels);

    // Shuffled input, and partial reservoirs merged in another order.
    let perm_data = shuffle_rows(
        &data
            .chunks(d)
            .zip(&labels)
            .flat_map(|(r, &l)| [r[0], r[1], l as f64])
            .collect::<Vec<_>>(),
        3,
        5,
    );
    let (pd, pl): (Vec<f64>, Vec<u32>) = {
        let mut pd = Vec::new();
        let mut pl = Vec::new();
        for r in perm_data.chunks(3) {
            pd.extend_from_slice(&r[..2]);
            pl.push(r[2] as u32);
        }
        (pd, pl)
    };
    let mut b1 = Reservoir::new(100, d, 7, 3).unwrap();
    let mut b2 = Reservoir::new(100, d, 7, 3).unwrap();
    fill(&mut b1, &pd[..1000 * d], &pl[..1000], d);
    fill(&mut b2, &pd[1000 * d..], &pl[1000..], d);
    b2.merge(&b1).unwrap();
    assert_eq!(b2.into_sample(), (expected, expected_labels));

    // serde round trip
    let json = serde_json::to_string(&a).unwrap();
    let back: Reservoir = serde_json::from_str(&json).unwrap();
    back.validate().unwrap();
    assert_eq!(back.into_sample(), a.clone().into_sample());
}

#[test]
fn reservoir_errors_and_small_inputs() {
    let mut r = Reservoir::new(10, 2, 0, 0).unwrap();
    assert!(r.is_empty());
    r.add(&[1.0, 2.0], 1).unwrap();
    r.add(&[-0.0, 2.0], 1).unwrap();
    assert_eq!(r.len(), 2);
    let (data, labels) = r.clone().into_sample();
    assert_eq!(labels, vec![1, 1]);
    assert!(data.iter().all(|v| v.to_bits() != (-0.0f64).to_bits()));
    assert_eq!(
        r.add(&[1.0], 0).unwrap_err(),
        KMeansError::DimensionMismatch {
            expected: 2,
            got: 1
        }
    );
    assert!(matches!(
        r.add(&[1.0, f64::INFINITY], 0).unwrap_err(),
        KMeansError::NonFinite { .. }
    ));
    assert!(matches!(
        r.merge(&Reservoir::new(10, 2, 1, 0).unwrap()).unwrap_err(),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        Reservoir::new(0, 2, 0, 0).unwrap_err(),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        Reservoir::new(5, 0, 0, 0).unwrap_err(),
        KMeansError::InvalidParameter(_)
    ));
    assert!(matches!(
        Reservoir::new(1 << 25, 1, 0, 0).unwrap_err(),
        KMeansError::LimitExceeded(_)
    ));
    assert!(matches!(
        Reservoir::new(1 << 20, 1 << 10, 0, 0).unwrap_err(),
        KMeansError::LimitExceeded(_)
    ));
}

#[test]
fn silhouette_on_a_reservoir_sample() {
    let d = 2;
    let data = blobs(5000, d, 3, 20.0, 3);
    let pl = pool(2);
    let m = xsell_kmeans::fit(
        data.clone(),
        d,
        &xsell_kmeans::Params::new(3),
        &pl,
        &mut quiet(),
    )
    .unwrap();
    let mut r = Reservoir::new(600, d, 1, 1).unwrap();
    for row in data.chunks(d) {
        r.add(row, m.assign(row).unwrap().0 as u32).unwrap();
    }
    let (sample, labels) = r.into_sample();
    let s = silhouette(&sample, d, &labels, &pl, &mut quiet()).unwrap();
    assert!(s > 0.5, "well separated blobs should score high, got {s}");
}
