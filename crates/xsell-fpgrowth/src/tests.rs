//! Unit tests: hand-checked examples, a brute-force reference, state handling and errors.

use crate::progress::sort_with_ticks;
use crate::*;
use std::collections::{BTreeSet, HashMap};

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn collect(baskets: &[&[&str]]) -> Baskets<String> {
    let mut b = Baskets::new();
    for bk in baskets {
        b.add(s(bk)).unwrap();
    }
    b
}

fn mine1<K: ItemKey>(b: &Baskets<K>, ms: f64, max_len: usize) -> Itemsets<K> {
    mine(
        b,
        ms,
        &MineOptions {
            max_len,
            ..Default::default()
        },
        &pool(2),
        &mut |_| {},
    )
    .unwrap()
}

fn as_map<K: ItemKey>(m: &Itemsets<K>) -> HashMap<Vec<K>, u64> {
    m.itemsets
        .iter()
        .map(|s| (s.items.clone(), s.count))
        .collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random baskets over `n_items` items with skewed popularity, duplicates and empty baskets.
fn random_baskets(seed: u64, n: usize, n_items: u64, max_size: u64) -> Vec<Vec<i64>> {
    let mut r = Rng(seed);
    (0..n)
        .map(|_| {
            let len = r.below(max_size + 1);
            (0..len)
                .map(|_| {
                    // skew: min of two uniforms
                    r.below(n_items).min(r.below(n_items)) as i64
                })
                .collect()
        })
        .collect()
}

/// Reference: count every subset (up to max_len) of every basket, then apply mlxtend's
/// membership rule.
fn brute_force(baskets: &[Vec<i64>], ms: f64, max_len: usize) -> HashMap<Vec<i64>, u64> {
    let n = baskets.len() as u64;
    let sets: Vec<Vec<i64>> = baskets
        .iter()
        .map(|b| {
            b.iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        })
        .collect();
    let mut counts: HashMap<Vec<i64>, u64> = HashMap::new();
    for b in &sets {
        let l = b.len();
        for mask in 1u32..(1 << l) {
            if mask.count_ones() as usize > max_len {
                continue;
            }
            let sub: Vec<i64> = (0..l)
                .filter(|j| mask >> j & 1 == 1)
                .map(|j| b[j])
                .collect();
            *counts.entry(sub).or_default() += 1;
        }
    }
    let d = min_count(ms, n);
    let ceil = (ms * n as f64).ceil() as u64;
    // mlxtend's single-path shortcut: frequent parts of all baskets form a chain
    let freq: BTreeSet<i64> = counts
        .iter()
        .filter(|(k, c)| k.len() == 1 && **c >= d)
        .map(|(k, _)| k[0])
        .collect();
    let mut parts: Vec<BTreeSet<i64>> = sets
        .iter()
        .map(|b| {
            b.iter()
                .copied()
                .filter(|i| freq.contains(i))
                .collect::<BTreeSet<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect();
    parts.sort_by_key(|p| p.len());
    let chain = parts.windows(2).all(|w| w[0].is_subset(&w[1]));
    counts
        .into_iter()
        .filter(|(k, c)| *c >= d && (k.len() == 1 || chain || *c >= ceil))
        .collect()
}

#[test]
fn min_count_matches_division() {
    assert_eq!(min_count(0.07, 100), 7);
    assert_eq!(min_count(0.5, 3), 2);
    assert_eq!(min_count(1.0, 10), 10);
    assert_eq!(min_count(1e-12, 10), 1);
    assert_eq!(min_count(0.4, 5), 2);
    assert_eq!(min_count(0.5, 0), 1);
    for n in 1..300u64 {
        for k in 1..=20 {
            let ms = k as f64 / 20.0 * 0.999 + 0.0001;
            let c = min_count(ms, n);
            assert!(c as f64 / n as f64 >= ms, "n={n} ms={ms} c={c}");
            assert!(c == 1 || ((c - 1) as f64 / n as f64) < ms);
        }
    }
}

#[test]
fn tiny_hand_checked() {
    let b = collect(&[&["a", "b", "c"], &["a", "b"], &["a", "c"], &["b"], &[]]);
    assert_eq!(b.n_baskets(), 5);
    let m = mine1(&b, 0.4, 4);
    let got: Vec<(Vec<String>, u64)> = m
        .itemsets
        .iter()
        .map(|s| (s.items.clone(), s.count))
        .collect();
    assert_eq!(
        got,
        vec![
            (s(&["a"]), 3),
            (s(&["b"]), 3),
            (s(&["c"]), 2),
            (s(&["a", "b"]), 2),
            (s(&["a", "c"]), 2),
        ]
    );
    assert_eq!(m.n_baskets, 5);
    assert_eq!(m.min_support, 0.4);
    assert_eq!(m.max_len, 4);
    m.validate().unwrap();
    // lower support: everything that occurs
    let m = mine1(&b, 0.2, 4);
    let map = as_map(&m);
    assert_eq!(map.len(), 7);
    assert_eq!(map[&s(&["a", "b", "c"])], 1);
    assert_eq!(map[&s(&["b", "c"])], 1);
}

#[test]
fn duplicates_count_once_and_empty_baskets_count() {
    let mut b: Baskets<String> = Baskets::new();
    b.add(s(&["x", "x", "y", "x"])).unwrap();
    b.add(Vec::<String>::new()).unwrap();
    b.add_borrowed(["y", "y"]).unwrap();
    b.add_borrowed(Vec::<&str>::new()).unwrap();
    assert_eq!(b.n_baskets(), 4);
    assert_eq!(b.n_items(), 2);
    assert_eq!(b.n_entries(), 3);
    let m = mine1(&b, 0.25, 3);
    let map = as_map(&m);
    assert_eq!(map[&s(&["x"])], 1);
    assert_eq!(map[&s(&["y"])], 2);
    assert_eq!(map[&s(&["x", "y"])], 1);
    // 2 of 4 baskets: support 0.5; the empty baskets lower it
    let m = mine1(&b, 0.5, 3);
    assert_eq!(as_map(&m), HashMap::from([(s(&["y"]), 2)]));
    // only empty baskets
    let mut e: Baskets<i64> = Baskets::new();
    e.add([]).unwrap();
    let m = mine1(&e, 0.1, 3);
    assert_eq!(m.n_baskets, 1);
    assert!(m.itemsets.is_empty());
    // no baskets at all
    let m = mine1(&Baskets::<i64>::new(), 0.1, 3);
    assert_eq!(m.n_baskets, 0);
    assert!(m.itemsets.is_empty());
}

#[test]
fn matches_brute_force_on_random_data() {
    let mut checked = 0;
    for seed in 0..12u64 {
        let data = random_baskets(seed, 200 + 37 * seed as usize, 12 + seed, 7);
        let mut b: Baskets<i64> = Baskets::new();
        for bk in &data {
            b.add(bk.iter().copied()).unwrap();
        }
        for &ms in &[0.01, 0.03, 0.05, 0.07, 0.1, 0.2, 0.5] {
            for &max_len in &[1usize, 2, 3, 4, 7] {
                let m = mine1(&b, ms, max_len);
                m.validate().unwrap();
                let expect = brute_force(&data, ms, max_len);
                assert_eq!(as_map(&m), expect, "seed {seed} ms {ms} max_len {max_len}");
                assert!(m.itemsets.iter().all(|s| s.items.len() <= max_len));
                let mut sorted = m.clone();
                sorted.sort_canonical();
                assert_eq!(sorted, m, "canonical order");
                checked += expect.len();
            }
        }
    }
    assert!(checked > 10_000, "too few itemsets checked: {checked}");
}

#[test]
fn mlxtend_ceil_quirk_and_chain_shortcut() {
    // 0.07 * 100 = 7.000000000000001, so mlxtend's conditional trees need a count of 8 while
    // a single item needs 7 (7/100 >= 0.07).
    let mut baskets: Vec<Vec<i64>> = Vec::new();
    for _ in 0..7 {
        baskets.push(vec![1, 2]);
    }
    for _ in 0..5 {
        baskets.push(vec![1]);
    }
    for _ in 0..3 {
        baskets.push(vec![3]);
    }
    for _ in 0..85 {
        baskets.push(vec![]);
    }
    // {1},{2},{3} and {1,2}: not a chain ({3} is incomparable with {1,2})
    let mut baskets_nc = baskets.clone();
    baskets_nc.truncate(96);
    baskets_nc.extend(std::iter::repeat_n(vec![3], 4));
    let b = collect_i64(&baskets_nc);
    assert_eq!(b.n_baskets(), 100);
    let m = as_map(&mine1(&b, 0.07, 4));
    assert_eq!(m.get(&vec![2]), Some(&7));
    assert_eq!(m.get(&vec![3]), Some(&7));
    assert_eq!(
        m.get(&vec![1, 2]),
        None,
        "pair of count 7 is below ceil(0.07*100) = 8"
    );
    assert_eq!(m, brute_force(&baskets_nc, 0.07, 4));
    // Chain: frequent parts are {1,2} (x7), {1} (x5): mlxtend's single-path shortcut keeps {1,2}.
    let b = collect_i64(&baskets);
    let m = as_map(&mine1(&b, 0.07, 4));
    assert_eq!(m.get(&vec![1, 2]), Some(&7));
    assert_eq!(m, brute_force(&baskets, 0.07, 4));
}

fn collect_i64(data: &[Vec<i64>]) -> Baskets<i64> {
    let mut b = Baskets::new();
    for bk in data {
        b.add(bk.iter().copied()).unwrap();
    }
    b
}

#[test]
fn deep_single_path_combinations() {
    // one basket of 12 items repeated: a single-path tree; all 2^12 - 1 subsets are frequent
    let items: Vec<i64> = (0..12).collect();
    let data = vec![items.clone(); 5];
    let b = collect_i64(&data);
    let m = mine1(&b, 0.5, 12);
    assert_eq!(m.itemsets.len(), 4095);
    assert!(m.itemsets.iter().all(|s| s.count == 5));
    let m = mine1(&b, 0.5, 3);
    assert_eq!(m.itemsets.len(), 12 + 66 + 220);
    // and the same inside a conditional tree (prefix item 100 in fewer baskets)
    let mut data2 = data.clone();
    data2.push(vec![100]);
    for _ in 0..3 {
        let mut v = items.clone();
        v.push(100);
        data2.push(v);
    }
    let b = collect_i64(&data2);
    assert_eq!(as_map(&mine1(&b, 0.3, 4)), brute_force(&data2, 0.3, 4));
}

#[test]
fn merge_equals_single_collector() {
    let data = random_baskets(99, 900, 30, 6);
    let single = collect_i64(&data);
    let mut parts: Vec<Baskets<i64>> = (0..3).map(|_| Baskets::new()).collect();
    for (i, bk) in data.iter().enumerate() {
        parts[(i * 7 + i / 3) % 3].add(bk.iter().copied()).unwrap();
    }
    let mut merged = Baskets::new();
    let mut parts = parts.into_iter().rev();
    let first = parts.next().unwrap();
    merged.merge(Baskets::new()).unwrap();
    merged.merge(first).unwrap();
    for p in parts {
        merged.merge(p).unwrap();
    }
    merged.merge(Baskets::new()).unwrap();
    assert_eq!(merged.n_baskets(), single.n_baskets());
    assert_eq!(merged.n_entries(), single.n_entries());
    let canon = |b: &Baskets<i64>| {
        let mut v: Vec<Vec<i64>> = b
            .iter()
            .map(|bk| {
                let mut x: Vec<i64> = bk.into_iter().copied().collect();
                x.sort();
                x
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(canon(&merged), canon(&single));
    for ms in [0.01, 0.05] {
        assert_eq!(mine1(&merged, ms, 4), mine1(&single, ms, 4));
    }
    // merged ids in a different order than the receiver's: baskets stay sorted
    let mut a = collect(&[&["z", "y"]]);
    let b2 = collect(&[&["y", "a", "z"], &["a"]]);
    a.merge(b2).unwrap();
    let m = mine1(&a, 0.5, 3);
    assert_eq!(as_map(&m)[&s(&["y", "z"])], 2);
    assert_eq!(as_map(&m)[&s(&["a"])], 2);
    assert_eq!(a.roundtrip_count(), 3);
}

impl Baskets<String> {
    /// test helper: round-trips through bytes and returns the basket count
    fn roundtrip_count(&self) -> u64 {
        Baskets::<String>::from_bytes(&self.to_bytes())
            .unwrap()
            .n_baskets()
    }
}

#[test]
fn bytes_round_trip() {
    let data = random_baskets(5, 500, 300, 6);
    let b = collect_i64(&data);
    let bytes = b.to_bytes();
    let back = Baskets::<i64>::from_bytes(&bytes).unwrap();
    assert_eq!(back.n_baskets(), b.n_baskets());
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(mine1(&back, 0.01, 3), mine1(&b, 0.01, 3));
    let bs = collect(&[&["é", "ß", "a"], &[], &["a"], &["x"; 3]]);
    let bytes = bs.to_bytes();
    let back = Baskets::<String>::from_bytes(&bytes).unwrap();
    assert_eq!(back.n_baskets(), 4);
    assert_eq!(mine1(&back, 0.25, 3), mine1(&bs, 0.25, 3));
    // empty collector
    let e = Baskets::<String>::new();
    assert_eq!(
        Baskets::<String>::from_bytes(&e.to_bytes())
            .unwrap()
            .n_baskets(),
        0
    );
    // compact: a 500-basket state with ~1500 entries fits in a few KB
    assert!(b.to_bytes().len() < 8 * 1024, "{}", b.to_bytes().len());
    assert!(b.approx_bytes() > b.n_entries() as usize * 4);
}

#[test]
fn corrupt_bytes_are_errors() {
    let b = collect(&[&["a", "b"], &["b", "c", "d"], &[], &["a"]]);
    let bytes = b.to_bytes();
    for cut in 0..bytes.len() {
        let r = Baskets::<String>::from_bytes(&bytes[..cut]);
        assert!(
            matches!(r, Err(FpError::CorruptData(_))),
            "prefix {cut} accepted"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Baskets::<String>::from_bytes(&trailing),
        Err(FpError::CorruptData(_))
    ));
    // wrong key type
    let err = Baskets::<i64>::from_bytes(&bytes).unwrap_err();
    assert!(err.to_string().contains("bigint"), "{err}");
    let mut v = bytes.clone();
    v[4] = 9;
    assert!(
        Baskets::<String>::from_bytes(&v)
            .unwrap_err()
            .to_string()
            .contains("version")
    );
    let mut v = bytes.clone();
    v[0] = b'Y';
    assert!(
        Baskets::<String>::from_bytes(&v)
            .unwrap_err()
            .to_string()
            .contains("magic")
    );
    assert!(Baskets::<String>::from_bytes(b"garbage").is_err());
    // random byte flips: never a panic, and accepted states are internally consistent
    let mut r = Rng(7);
    let mut rejected = 0;
    for _ in 0..5000 {
        let mut v = bytes.clone();
        for _ in 0..1 + r.below(3) {
            let i = r.below(v.len() as u64) as usize;
            v[i] ^= 1 << r.below(8);
        }
        match Baskets::<String>::from_bytes(&v) {
            Ok(x) => {
                let _ = mine1(&x, 0.25, 3);
            }
            Err(FpError::CorruptData(_)) => rejected += 1,
            Err(e) => panic!("unexpected error class {e}"),
        }
    }
    assert!(rejected > 1000, "{rejected}");
    // a huge declared dictionary does not allocate
    let mut v = b"XSFB\x01\x02".to_vec();
    v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(Baskets::<String>::from_bytes(&v).is_err());
    // duplicate dictionary key
    let v = b"XSFB\x01\x02\x02\x01a\x01a\x00".to_vec();
    assert!(
        Baskets::<String>::from_bytes(&v)
            .unwrap_err()
            .to_string()
            .contains("duplicate")
    );
    // unsorted basket ids (delta 0)
    let v = b"XSFB\x01\x02\x02\x01a\x01b\x01\x02\x00\x00".to_vec();
    assert!(
        Baskets::<String>::from_bytes(&v)
            .unwrap_err()
            .to_string()
            .contains("increasing")
    );
    let v = b"XSFB\x01\x02\x02\x01a\x01b\x01\x02\x00\x01".to_vec();
    assert_eq!(Baskets::<String>::from_bytes(&v).unwrap().n_entries(), 2);
}

#[test]
fn parameter_errors_and_limits() {
    let b = collect(&[&["a", "b"], &["a", "b", "c"], &["a"]]);
    let p = pool(1);
    for ms in [0.0, -0.1, 1.0000001, f64::NAN, f64::INFINITY] {
        let e = mine(&b, ms, &MineOptions::default(), &p, &mut |_| {}).unwrap_err();
        assert!(matches!(e, FpError::InvalidParameter(_)), "{ms}: {e}");
    }
    let e = mine(
        &b,
        0.5,
        &MineOptions {
            max_len: 0,
            ..Default::default()
        },
        &p,
        &mut |_| {},
    );
    assert!(matches!(e, Err(FpError::InvalidParameter(_))));
    let e = mine(
        &b,
        0.5,
        &MineOptions {
            max_itemsets: 0,
            ..Default::default()
        },
        &p,
        &mut |_| {},
    );
    assert!(matches!(e, Err(FpError::InvalidParameter(_))));
    // min_support = 1 is allowed
    let m = mine(&b, 1.0, &MineOptions::default(), &p, &mut |_| {}).unwrap();
    assert_eq!(as_map(&m), HashMap::from([(s(&["a"]), 3)]));
    // 0.3: a, b, ab, c?, ... a=3 b=2 c=1 ab=2 ac=1 bc=1 abc=1 -> everything (7 itemsets)
    let opts = |max_itemsets| MineOptions {
        max_len: 4,
        max_itemsets,
    };
    assert_eq!(
        mine(&b, 0.3, &opts(7), &p, &mut |_| {})
            .unwrap()
            .itemsets
            .len(),
        7
    );
    let e = mine(&b, 0.3, &opts(6), &p, &mut |_| {}).unwrap_err();
    match &e {
        FpError::LimitExceeded(m) => {
            assert!(m.contains("min_support") && m.contains("max_len"), "{m}")
        }
        other => panic!("{other}"),
    }
    // limit hit inside a big single path and inside conditional trees
    let data = vec![(0..20).collect::<Vec<i64>>(); 3];
    let bi = collect_i64(&data);
    let e = mine(
        &bi,
        0.5,
        &MineOptions {
            max_len: 20,
            max_itemsets: 100_000,
        },
        &p,
        &mut |_| {},
    );
    assert!(matches!(e, Err(FpError::LimitExceeded(_))));
    let data = random_baskets(3, 2000, 40, 10);
    let bi = collect_i64(&data);
    let full = mine(
        &bi,
        0.001,
        &MineOptions {
            max_len: 5,
            max_itemsets: 10_000_000,
        },
        &pool(2),
        &mut |_| {},
    )
    .unwrap();
    let k = full.itemsets.len();
    assert!(k > 1000);
    let ok = mine(
        &bi,
        0.001,
        &MineOptions {
            max_len: 5,
            max_itemsets: k,
        },
        &pool(2),
        &mut |_| {},
    );
    assert_eq!(ok.unwrap(), full);
    let e = mine(
        &bi,
        0.001,
        &MineOptions {
            max_len: 5,
            max_itemsets: k - 1,
        },
        &pool(2),
        &mut |_| {},
    );
    assert!(matches!(e, Err(FpError::LimitExceeded(_))));
}

#[test]
fn progress_is_reported_and_a_panicking_callback_cancels() {
    let data = random_baskets(11, 20_000, 60, 8);
    let b = collect_i64(&data);
    let p = pool(2);
    let caller = std::thread::current().id();
    let mut calls = 0;
    let mut phases = BTreeSet::new();
    let m = mine(&b, 0.002, &MineOptions::default(), &p, &mut |pr| {
        assert_eq!(
            std::thread::current().id(),
            caller,
            "progress on a worker thread"
        );
        calls += 1;
        phases.insert(pr.phase.name());
    })
    .unwrap();
    assert!(calls >= 2, "{calls}");
    assert!(phases.contains("finishing"), "{phases:?}");
    // cancel on the first call: the panic payload comes back unchanged, no result
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mine(&b, 0.002, &MineOptions::default(), &p, &mut |_| {
            std::panic::panic_any(42u32)
        })
    }));
    assert_eq!(*r.unwrap_err().downcast::<u32>().unwrap(), 42);
    // the pool is still usable and results unchanged
    assert_eq!(
        mine(&b, 0.002, &MineOptions::default(), &p, &mut |_| {}).unwrap(),
        m
    );
    // called from inside the pool (even a single-thread pool): no deadlock, same result
    let p1 = pool(1);
    let inner = p1.install(|| mine(&b, 0.002, &MineOptions::default(), &p1, &mut |_| {}).unwrap());
    assert_eq!(inner, m);
    // rules progress, and cancellation
    let mut rcalls = 0;
    let rs = rules(&m, 0.0, 0.0, 10_000_000, &mut |pr| {
        rcalls += 1;
        assert!(matches!(
            pr.phase,
            Phase::GeneratingRules | Phase::SortingRules
        ));
    })
    .unwrap();
    assert!(rcalls >= 2 && !rs.is_empty());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rules(&m, 0.0, 0.0, 10_000_000, &mut |_| panic!("cancel"))
    }));
    assert!(r.is_err());
}

fn rule_key(r: &Rule<String>) -> (Vec<String>, Vec<String>) {
    (r.antecedent.clone(), r.consequent.clone())
}

#[test]
fn rules_hand_checked() {
    let b = collect(&[&["a", "b", "c"], &["a", "b"], &["a", "c"], &["b"], &[]]);
    let m = mine1(&b, 0.4, 4);
    let r = rules(&m, 0.0, 0.0, 100, &mut |_| {}).unwrap();
    let keys: Vec<_> = r.iter().map(rule_key).collect();
    // c -> a: conf 1, lift 1/0.6; a -> c: conf 2/3, lift (2/3)/0.4 (equal in exact arithmetic,
    // one ulp lower in f64); a->b, b->a: lift (2/3)/0.6
    assert_eq!(
        keys,
        vec![
            (s(&["c"]), s(&["a"])),
            (s(&["a"]), s(&["c"])),
            (s(&["a"]), s(&["b"])),
            (s(&["b"]), s(&["a"])),
        ]
    );
    assert!(r[0].lift > r[1].lift && r[0].lift - r[1].lift < 1e-15);
    let ca = &r[0];
    assert_eq!(ca.count, 2);
    assert_eq!(ca.confidence, 1.0);
    assert_eq!(ca.conviction, f64::INFINITY);
    assert!((ca.lift - 1.0 / 0.6).abs() < 1e-15);
    assert!((ca.leverage - (0.4 - 0.4 * 0.6)).abs() < 1e-15);
    assert_eq!(ca.antecedent_support, 0.4);
    assert_eq!(ca.consequent_support, 0.6);
    assert_eq!(ca.support, 0.4);
    assert!((ca.jaccard - 0.4 / 0.6).abs() < 1e-15);
    let ac = &r[1];
    assert!((ac.conviction - (1.0 - 0.4) / (1.0 - 2.0 / 3.0)).abs() < 1e-12);
    assert!((ac.kulczynski - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-15);
    assert!((ac.certainty - (2.0 / 3.0 - 0.4) / 0.6).abs() < 1e-15);
    let z = (0.4 - 0.6 * 0.4) / f64::max(0.4 * (1.0 - 0.6), 0.6 * (0.4 - 0.4));
    assert!((ac.zhangs_metric - z).abs() < 1e-15);
    // thresholds
    let r = rules(&m, 0.7, 0.0, 100, &mut |_| {}).unwrap();
    assert_eq!(
        r.iter().map(rule_key).collect::<Vec<_>>(),
        vec![(s(&["c"]), s(&["a"]))]
    );
    let r = rules(&m, 0.0, 1.5, 100, &mut |_| {}).unwrap();
    assert_eq!(r.len(), 2);
    let r = rules(&m, 0.0, 1.7, 100, &mut |_| {}).unwrap();
    assert!(r.is_empty());
    // three-item itemset: all 6 splits
    let m = mine1(&b, 0.2, 4);
    let r = rules(&m, 0.0, 0.0, 100, &mut |_| {}).unwrap();
    let from_abc = r
        .iter()
        .filter(|x| x.antecedent.len() + x.consequent.len() == 3)
        .count();
    assert_eq!(from_abc, 6);
    assert_eq!(r.len(), 6 + 3 * 2);
    // ordering: lift desc, then confidence desc, then antecedent, consequent
    for w in r.windows(2) {
        let ord = w[1]
            .lift
            .total_cmp(&w[0].lift)
            .then(w[1].confidence.total_cmp(&w[0].confidence))
            .then(w[0].antecedent.cmp(&w[1].antecedent))
            .then(w[0].consequent.cmp(&w[1].consequent));
        assert_eq!(ord, std::cmp::Ordering::Less, "{:?} then {:?}", w[0], w[1]);
    }
    // max_rules
    assert!(matches!(
        rules(&m, 0.0, 0.0, 11, &mut |_| {}),
        Err(FpError::LimitExceeded(_))
    ));
    assert_eq!(rules(&m, 0.0, 0.0, 12, &mut |_| {}).unwrap().len(), 12);
}

#[test]
fn rules_errors() {
    let b = collect(&[&["a", "b"], &["a", "b"], &["a"]]);
    let m = mine1(&b, 0.5, 3);
    for c in [f64::NAN, -0.01, 1.01] {
        assert!(matches!(
            rules(&m, c, 0.0, 10, &mut |_| {}),
            Err(FpError::InvalidParameter(_))
        ));
        assert!(matches!(
            recommend(&s(&["a"]), &m, 3, c),
            Err(FpError::InvalidParameter(_))
        ));
    }
    for l in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            rules(&m, 0.5, l, 10, &mut |_| {}),
            Err(FpError::InvalidParameter(_))
        ));
    }
    assert!(matches!(
        rules(&m, 0.5, 0.0, 0, &mut |_| {}),
        Err(FpError::InvalidParameter(_))
    ));
    // a model lacking a subset
    let mut broken = m.clone();
    broken.itemsets.retain(|s| s.items != vec!["b".to_string()]);
    broken.validate().unwrap();
    let e = rules(&broken, 0.0, 0.0, 10, &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, FpError::InvalidModel(_)) && e.to_string().contains("\"b\""),
        "{e}"
    );
    let e = recommend(&s(&["a"]), &broken, 3, 0.0).unwrap_err();
    assert!(matches!(e, FpError::InvalidModel(_)), "{e}");
    let e = Recommender::new(&broken)
        .recommend(&s(&["a"]), 3, 0.0)
        .unwrap_err();
    assert!(matches!(e, FpError::InvalidModel(_)), "{e}");
    let mut broken2 = m.clone();
    broken2
        .itemsets
        .retain(|s| s.items != vec!["a".to_string()]);
    let e = Recommender::new(&broken2)
        .recommend(&s(&["b"]), 3, 0.0)
        .unwrap_err();
    assert!(
        matches!(e, FpError::InvalidModel(_)) && e.to_string().contains("\"a\""),
        "{e}"
    );
    assert!(recommend(&s(&["b"]), &broken2, 3, 0.0).is_err());
    assert!(matches!(
        Recommender::new(&m).recommend(&s(&["a"]), 3, f64::NAN),
        Err(FpError::InvalidParameter(_))
    ));
    // rules of an empty model
    let empty = mine1(&Baskets::<String>::new(), 0.5, 3);
    assert!(rules(&empty, 0.0, 0.0, 10, &mut |_| {}).unwrap().is_empty());
}

#[test]
fn recommend_hand_checked() {
    // bread -> milk strong; {bread, jam} -> butter strong; butter alone weaker
    let mut data: Vec<&[&str]> = Vec::new();
    data.extend(std::iter::repeat_n(&["bread", "milk"][..], 6));
    data.extend(std::iter::repeat_n(&["bread", "jam", "butter"][..], 4));
    data.extend(std::iter::repeat_n(&["bread", "jam"][..], 1));
    data.extend(std::iter::repeat_n(&["butter", "eggs"][..], 5));
    data.extend(std::iter::repeat_n(&["eggs"][..], 4));
    let b = collect(&data);
    let m = mine1(&b, 0.05, 4);
    let rec = recommend(&s(&["bread", "jam"]), &m, 10, 0.0).unwrap();
    let items: Vec<&str> = rec.iter().map(|r| r.item.as_str()).collect();
    assert!(!items.contains(&"bread") && !items.contains(&"jam"));
    // butter: {jam} -> butter conf 4/5 vs {bread,jam} -> butter 4/5 vs bread -> butter 4/11:
    // tie on confidence and lift -> shorter antecedent {jam}
    let butter = rec.iter().find(|r| r.item == "butter").unwrap();
    assert!((butter.confidence - 0.8).abs() < 1e-12);
    assert_eq!(butter.score, butter.confidence);
    assert_eq!(butter.because, s(&["jam"]));
    assert!((butter.support - 4.0 / 20.0).abs() < 1e-15);
    // milk: bread -> milk conf 6/11
    let milk = rec.iter().find(|r| r.item == "milk").unwrap();
    assert_eq!(milk.because, s(&["bread"]));
    assert!((milk.confidence - 6.0 / 11.0).abs() < 1e-12);
    assert_eq!(items[0], "butter");
    assert_eq!(items[1], "milk");
    // eggs only via butter (not in cart): not recommended
    assert!(!items.contains(&"eggs"));
    // values identical to the rules' values
    let rs = rules(&m, 0.0, 0.0, 1000, &mut |_| {}).unwrap();
    let r = rs
        .iter()
        .find(|r| r.antecedent == s(&["jam"]) && r.consequent == s(&["butter"]))
        .unwrap();
    assert_eq!(r.confidence, butter.confidence);
    assert_eq!(r.lift, butter.lift);
    // n and min_confidence
    assert_eq!(
        recommend(&s(&["bread", "jam"]), &m, 1, 0.0).unwrap().len(),
        1
    );
    let rec = recommend(&s(&["bread", "jam", "jam"]), &m, 10, 0.7).unwrap();
    assert_eq!(
        rec.iter().map(|r| r.item.as_str()).collect::<Vec<_>>(),
        vec!["butter"]
    );
    assert!(recommend(&s(&["bread"]), &m, 0, 0.0).unwrap().is_empty());
    assert!(recommend(&[], &m, 5, 0.0).unwrap().is_empty());
    assert!(recommend(&s(&["unknown"]), &m, 5, 0.0).unwrap().is_empty());
    // unknown items in the cart are ignored
    let rec2 = recommend(&s(&["bread", "jam", "zzz"]), &m, 10, 0.0).unwrap();
    assert_eq!(rec2, recommend(&s(&["jam", "bread"]), &m, 10, 0.0).unwrap());
    // the prepared index gives the same answers
    let prepared = Recommender::new(&m);
    for cart in [
        &["bread", "jam", "zzz"][..],
        &["bread"],
        &["jam", "jam"],
        &[],
        &["eggs", "butter"],
    ] {
        for (top, c) in [(10, 0.0), (1, 0.0), (10, 0.7), (0, 0.0)] {
            assert_eq!(
                prepared.recommend(&s(cart), top, c).unwrap(),
                recommend(&s(cart), &m, top, c).unwrap()
            );
        }
    }
}

#[test]
fn recommend_agrees_with_rules_on_random_data() {
    let data = random_baskets(21, 3000, 25, 6);
    let b = collect_i64(&data);
    let m = mine1(&b, 0.01, 4);
    let rs = rules(&m, 0.0, 0.0, 10_000_000, &mut |_| {}).unwrap();
    let prepared = Recommender::new(&m);
    assert!(prepared.approx_bytes() > 1000);
    let mut r = Rng(3);
    for _ in 0..50 {
        let cart: Vec<i64> = (0..1 + r.below(4)).map(|_| r.below(25) as i64).collect();
        let rec = recommend(&cart, &m, 100, 0.1).unwrap();
        // expected: best single-consequent rule per item among rules with antecedent in cart
        let mut best: HashMap<i64, &Rule<i64>> = HashMap::new();
        for x in rs.iter().filter(|x| {
            x.consequent.len() == 1
                && !cart.contains(&x.consequent[0])
                && x.antecedent.iter().all(|a| cart.contains(a))
                && x.confidence >= 0.1
        }) {
            let y = x.consequent[0];
            let better = match best.get(&y) {
                None => true,
                Some(b) => {
                    x.confidence
                        .total_cmp(&b.confidence)
                        .then(x.lift.total_cmp(&b.lift))
                        .then(b.antecedent.len().cmp(&x.antecedent.len()))
                        .then(b.antecedent.cmp(&x.antecedent))
                        == std::cmp::Ordering::Greater
                }
            };
            if better {
                best.insert(y, x);
            }
        }
        assert_eq!(rec.len(), best.len(), "cart {cart:?}");
        assert_eq!(
            prepared.recommend(&cart, 100, 0.1).unwrap(),
            rec,
            "cart {cart:?}"
        );
        for top in [0, 1, 3] {
            assert_eq!(
                prepared.recommend(&cart, top, 0.3).unwrap(),
                recommend(&cart, &m, top, 0.3).unwrap()
            );
        }
        for w in rec.windows(2) {
            assert!(
                (w[0].score, w[0].lift) > (w[1].score, w[1].lift)
                    || ((w[0].score, w[0].lift) == (w[1].score, w[1].lift)
                        && w[0].item < w[1].item)
            );
        }
        for x in &rec {
            let e = best[&x.item];
            assert_eq!(
                (x.confidence, x.lift, &x.because),
                (e.confidence, e.lift, &e.antecedent)
            );
        }
    }
}

#[test]
fn validate_and_json() {
    let b = collect(&[&["a", "b"], &["a", "b"], &["a"], &[]]);
    let m = mine1(&b, 0.5, 3);
    let json = m.to_json();
    assert_eq!(
        json,
        r#"{"n_baskets":4,"min_support":0.5,"max_len":3,"itemsets":[{"items":["a"],"count":3},{"items":["b"],"count":2},{"items":["a","b"],"count":2}]}"#
    );
    assert_eq!(Itemsets::<String>::from_json(&json).unwrap(), m);
    let bi = collect_i64(&[vec![5, -3], vec![-3]]);
    let mi = mine1(&bi, 0.5, 2);
    assert_eq!(Itemsets::<i64>::from_json(&mi.to_json()).unwrap(), mi);
    assert!(mi.to_json().contains(r#"{"items":[-3,5],"count":1}"#));

    let bad = |f: &dyn Fn(&mut Itemsets<String>), needle: &str| {
        let mut x = m.clone();
        f(&mut x);
        let e = x.validate().unwrap_err();
        assert!(matches!(e, FpError::InvalidModel(_)));
        assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        assert!(Itemsets::<String>::from_json(&x.to_json()).is_err());
    };
    bad(&|x| x.itemsets[2].items.reverse(), "sorted");
    bad(&|x| x.itemsets[2].items = s(&["a", "a"]), "twice");
    bad(&|x| x.itemsets[0].count = 5, "above n_baskets");
    bad(&|x| x.itemsets[0].count = 0, "count 0");
    bad(&|x| x.itemsets[1].count = 1, "below min_support");
    bad(&|x| x.itemsets.push(x.itemsets[1].clone()), "same itemset");
    bad(&|x| x.itemsets[0].items.clear(), "empty");
    bad(&|x| x.max_len = 1, "max_len");
    bad(&|x| x.max_len = 0, "max_len");
    bad(&|x| x.min_support = 0.0, "min_support");
    bad(&|x| x.min_support = 1.5, "min_support");
    bad(&|x| x.n_baskets = 0, "n_baskets");
    for text in [
        "",
        "{}",
        "[1,2]",
        r#"{"n_baskets":-1,"min_support":0.5,"max_len":3,"itemsets":[]}"#,
        r#"{"n_baskets":4,"min_support":"x","max_len":3,"itemsets":[]}"#,
        r#"{"n_baskets":4,"min_support":0.5,"max_len":3,"itemsets":[{"items":[1],"count":3}]}"#,
        r#"{"n_baskets":4,"min_support":0.5,"max_len":3,"itemsets":[{"items":["a"]}]}"#,
    ] {
        let e = Itemsets::<String>::from_json(text).unwrap_err();
        assert!(matches!(e, FpError::InvalidModel(_)), "{text}: {e}");
    }
    // unknown fields are ignored (the SQL layer may add its own)
    let t = r#"{"version":1,"n_baskets":4,"min_support":0.5,"max_len":3,"itemsets":[]}"#;
    assert!(Itemsets::<String>::from_json(t).unwrap().is_empty());
}

#[test]
fn sort_with_ticks_is_a_stable_sort() {
    let mut r = Rng(1);
    for n in [0usize, 1, 5, 40_000, 100_001] {
        let v: Vec<(u64, usize)> = (0..n).map(|i| (r.below(50), i)).collect();
        let mut expect = v.clone();
        expect.sort_by_key(|x| x.0);
        let mut ticks = 0;
        let got = sort_with_ticks(
            v,
            &|a: &(u64, usize), b: &(u64, usize)| a.0.cmp(&b.0),
            &mut |_, _| ticks += 1,
        );
        assert_eq!(got, expect);
        if n > 40_000 {
            assert!(ticks > 2);
        }
    }
}

#[test]
fn error_messages() {
    let e = FpError::LimitExceeded("too many".into());
    assert_eq!(e.to_string(), "limit exceeded: too many");
    assert_eq!(e.message(), "too many");
    let e: Box<dyn std::error::Error> = Box::new(FpError::CorruptData("x".into()));
    assert!(e.to_string().contains("corrupt"));
}
