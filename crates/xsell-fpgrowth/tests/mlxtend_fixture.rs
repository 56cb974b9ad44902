//! Exactness against mlxtend 0.25: itemsets, supports and every rule metric of the fixture
//! written by `scripts/fixtures/gen_fpgrowth_fixture.py`.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use xsell_fpgrowth::{Baskets, MineOptions, Rule, mine, rules};

const FIXTURE: &str = include_str!("fixtures/fpgrowth_mlxtend.json");

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn load() -> (Value, Vec<Vec<String>>) {
    let doc: Value = serde_json::from_str(FIXTURE).unwrap();
    let baskets: Vec<Vec<String>> = doc["baskets"]
        .as_array()
        .unwrap()
        .iter()
        .map(strings)
        .collect();
    (doc, baskets)
}

fn metric(r: &Rule<String>, name: &str) -> f64 {
    match name {
        "antecedent_support" => r.antecedent_support,
        "consequent_support" => r.consequent_support,
        "support" => r.support,
        "confidence" => r.confidence,
        "lift" => r.lift,
        "leverage" => r.leverage,
        "conviction" => r.conviction,
        "zhangs_metric" => r.zhangs_metric,
        "jaccard" => r.jaccard,
        "certainty" => r.certainty,
        "kulczynski" => r.kulczynski,
        other => panic!("unknown metric {other}"),
    }
}

const METRICS: [&str; 11] = [
    "antecedent_support",
    "consequent_support",
    "support",
    "confidence",
    "lift",
    "leverage",
    "conviction",
    "zhangs_metric",
    "jaccard",
    "certainty",
    "kulczynski",
];

fn check_against(b: &Baskets<String>, doc: &Value) -> (usize, usize) {
    let n = doc["n_baskets"].as_u64().unwrap();
    assert_eq!(b.n_baskets(), n);
    let pool = pool();
    let (mut n_itemsets, mut n_rules) = (0, 0);
    for (ci, case) in doc["cases"].as_array().unwrap().iter().enumerate() {
        let ms = case["min_support"].as_f64().unwrap();
        let max_len = case["max_len"].as_u64().unwrap() as usize;
        let model = mine(
            b,
            ms,
            &MineOptions {
                max_len,
                ..Default::default()
            },
            &pool,
            &mut |_| {},
        )
        .unwrap();
        model.validate().unwrap();

        let expected: BTreeMap<Vec<String>, f64> = case["itemsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (strings(&s["items"]), s["support"].as_f64().unwrap()))
            .collect();
        let got: BTreeMap<Vec<String>, f64> = model
            .itemsets
            .iter()
            .map(|s| (s.items.clone(), model.support(s)))
            .collect();
        let ek: BTreeSet<_> = expected.keys().collect();
        let gk: BTreeSet<_> = got.keys().collect();
        assert_eq!(
            gk,
            ek,
            "case {ci}: itemsets differ; extra {:?}, missing {:?}",
            gk.difference(&ek).collect::<Vec<_>>(),
            ek.difference(&gk).collect::<Vec<_>>()
        );
        for (k, &sup) in &expected {
            assert_eq!(
                got[k].to_bits(),
                sup.to_bits(),
                "case {ci}: support of {k:?}"
            );
        }
        n_itemsets += expected.len();

        let min_conf = case["min_confidence"].as_f64().unwrap();
        let min_lift = case["min_lift"].as_f64().unwrap();
        let rs = rules(&model, min_conf, min_lift, 1_000_000, &mut |_| {}).unwrap();
        let got: BTreeMap<(Vec<String>, Vec<String>), &Rule<String>> = rs
            .iter()
            .map(|r| ((r.antecedent.clone(), r.consequent.clone()), r))
            .collect();
        assert_eq!(got.len(), rs.len(), "case {ci}: duplicate rules");
        let exp_rules = case["rules"].as_array().unwrap();
        let exp_keys: BTreeSet<(Vec<String>, Vec<String>)> = exp_rules
            .iter()
            .map(|r| (strings(&r["antecedent"]), strings(&r["consequent"])))
            .collect();
        let got_keys: BTreeSet<_> = got.keys().cloned().collect();
        assert_eq!(got_keys, exp_keys, "case {ci}: rule sets differ");
        for er in exp_rules {
            let key = (strings(&er["antecedent"]), strings(&er["consequent"]));
            let r = got[&key];
            for m in METRICS {
                let want = match &er[m] {
                    Value::Null => f64::INFINITY,
                    v => v.as_f64().unwrap(),
                };
                let have = metric(r, m);
                if want.is_infinite() {
                    assert_eq!(have, want, "case {ci} {key:?} {m}");
                } else {
                    assert!(
                        (have - want).abs() <= 1e-12,
                        "case {ci} {key:?} {m}: {have} vs {want}"
                    );
                    // same operations in the same order: bit-for-bit equal
                    assert_eq!(
                        have.to_bits(),
                        want.to_bits(),
                        "case {ci} {key:?} {m}: {have} vs {want}"
                    );
                }
            }
            let count = (r.support * n as f64).round() as u64;
            assert_eq!(r.count, count);
        }
        n_rules += exp_rules.len();
    }
    (n_itemsets, n_rules)
}

#[test]
fn itemsets_and_rules_match_mlxtend() {
    let (doc, baskets) = load();
    let mut b: Baskets<String> = Baskets::new();
    for bk in &baskets {
        b.add_borrowed(bk.iter().map(String::as_str)).unwrap();
    }
    let (n_itemsets, n_rules) = check_against(&b, &doc);
    assert!(
        n_itemsets > 200 && n_rules > 200,
        "{n_itemsets} itemsets, {n_rules} rules"
    );
    // the fixture covers what it claims
    assert!(baskets.iter().any(|b| b.is_empty()));
    assert!(baskets.iter().any(|b| b.len() == 1));
    assert!(
        baskets
            .iter()
            .any(|b| b.iter().collect::<BTreeSet<_>>().len() < b.len())
    );
}

#[test]
fn aggregate_pipeline_matches_mlxtend() {
    // the SQL aggregate: partial states, serialized, deserialized and combined
    let (doc, baskets) = load();
    let mut parts: Vec<Baskets<String>> = (0..3).map(|_| Baskets::new()).collect();
    for (i, bk) in baskets.iter().enumerate() {
        parts[i % 3].add(bk.iter().cloned()).unwrap();
    }
    let mut combined: Baskets<String> = Baskets::new();
    for p in parts.iter().rev() {
        let restored = Baskets::<String>::from_bytes(&p.to_bytes()).unwrap();
        combined.merge(restored).unwrap();
    }
    check_against(&combined, &doc);
}
