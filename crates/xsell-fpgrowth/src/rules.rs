//! Association rules with mlxtend 0.25 `association_rules` metrics.

use crate::baskets::FxHashMap;
use crate::progress::{Phase, Progress, Ticker, sort_with_ticks};
use crate::{FpError, ItemKey, Itemsets};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// An association rule `antecedent -> consequent` with its metrics.
///
/// Supports are `count / n_baskets` as `f64`; every other metric is computed with the formula
/// *and the operation order* of mlxtend 0.25 `association_rules(df, num_itemsets=n_baskets)`
/// without null values, so values are bit-for-bit those of mlxtend. With `sA`, `sC`, `sAC` the
/// antecedent, consequent and rule supports and `N = n_baskets as f64`:
/// - `confidence = (sAC * N) / (sA * N)`
/// - `lift = confidence / sC`
/// - `leverage = sAC - sA * sC`
/// - `conviction = (1 - sC) / (1 - confidence)`, `+Infinity` when `confidence >= 1`
/// - `zhangs_metric = leverage / max(sAC * (1 - sA), sA * (sC - sAC))`, 0 when that max is 0
/// - `jaccard = sAC / (sA + sC - sAC)`
/// - `certainty = (confidence - sC) / (1 - sC)`, 0 when `sC == 1`
/// - `kulczynski = ((sAC * N) / (sA * N) + (sAC * N) / (sC * N)) / 2`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule<K> {
    /// Items of the left-hand side, ascending.
    pub antecedent: Vec<K>,
    /// Items of the right-hand side, ascending; disjoint from `antecedent`.
    pub consequent: Vec<K>,
    /// Number of baskets containing both sides (count of the union itemset).
    pub count: u64,
    /// Support of the antecedent.
    pub antecedent_support: f64,
    /// Support of the consequent.
    pub consequent_support: f64,
    /// Support of the rule (of antecedent ∪ consequent).
    pub support: f64,
    /// Confidence: estimated P(consequent | antecedent).
    pub confidence: f64,
    /// Lift: confidence relative to the consequent's support.
    pub lift: f64,
    /// Leverage: rule support minus the support expected under independence.
    pub leverage: f64,
    /// Conviction; `f64::INFINITY` for rules with confidence 1.
    pub conviction: f64,
    /// Zhang's metric, in `[-1, 1]`.
    pub zhangs_metric: f64,
    /// Jaccard index of the baskets containing the antecedent and the consequent.
    pub jaccard: f64,
    /// Certainty factor.
    pub certainty: f64,
    /// Kulczynski measure: mean of the confidences of the rule and its reverse.
    pub kulczynski: f64,
}

/// All rule metrics for counts of A ∪ C, A and C out of `n` baskets (mlxtend operation order).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Metrics {
    pub antecedent_support: f64,
    pub consequent_support: f64,
    pub support: f64,
    pub confidence: f64,
    pub lift: f64,
    pub leverage: f64,
    pub conviction: f64,
    pub zhangs_metric: f64,
    pub jaccard: f64,
    pub certainty: f64,
    pub kulczynski: f64,
}

/// Confidence and lift only (the values rule selection and ordering need).
#[inline]
pub(crate) fn confidence_lift(c_ac: u64, c_a: u64, c_c: u64, n: u64) -> (f64, f64) {
    let nf = n as f64;
    let s_ac = c_ac as f64 / nf;
    let s_a = c_a as f64 / nf;
    let s_c = c_c as f64 / nf;
    let confidence = (s_ac * nf) / (s_a * nf);
    (confidence, confidence / s_c)
}

pub(crate) fn metrics(c_ac: u64, c_a: u64, c_c: u64, n: u64) -> Metrics {
    let nf = n as f64;
    let s_ac = c_ac as f64 / nf;
    let s_a = c_a as f64 / nf;
    let s_c = c_c as f64 / nf;
    let confidence = (s_ac * nf) / (s_a * nf);
    let lift = confidence / s_c;
    let leverage = s_ac - s_a * s_c;
    let conviction = if confidence < 1.0 {
        (1.0 - s_c) / (1.0 - confidence)
    } else {
        f64::INFINITY
    };
    let zden = f64::max(s_ac * (1.0 - s_a), s_a * (s_c - s_ac));
    let zhangs_metric = if zden == 0.0 { 0.0 } else { leverage / zden };
    let jaccard = s_ac / (s_a + s_c - s_ac);
    let cden = 1.0 - s_c;
    let certainty = if cden == 0.0 {
        0.0
    } else {
        (confidence - s_c) / cden
    };
    let conf_ca = (s_ac * nf) / (s_c * nf);
    let kulczynski = (confidence + conf_ca) / 2.0;
    Metrics {
        antecedent_support: s_a,
        consequent_support: s_c,
        support: s_ac,
        confidence,
        lift,
        leverage,
        conviction,
        zhangs_metric,
        jaccard,
        certainty,
        kulczynski,
    }
}

pub(crate) fn check_min_confidence(min_confidence: f64) -> Result<(), FpError> {
    if min_confidence.is_nan() || !(0.0..=1.0).contains(&min_confidence) {
        return Err(FpError::InvalidParameter(format!(
            "min_confidence must be in [0, 1], got {min_confidence}"
        )));
    }
    Ok(())
}

/// The model's itemsets as dense ids in key order, with a count lookup.
pub(crate) struct DenseModel<'m, K> {
    pub dict: Vec<&'m K>,
    pub flat: Vec<u32>,
    pub starts: Vec<usize>,
}

impl<'m, K: ItemKey> DenseModel<'m, K> {
    pub fn new(model: &'m Itemsets<K>) -> Self {
        let mut dict: Vec<&K> = model.itemsets.iter().flat_map(|s| s.items.iter()).collect();
        dict.sort_unstable();
        dict.dedup();
        let mut index: FxHashMap<&K, u32> = FxHashMap::default();
        index.reserve(dict.len());
        for (i, k) in dict.iter().enumerate() {
            index.insert(*k, i as u32);
        }
        let mut flat = Vec::with_capacity(model.itemsets.iter().map(|s| s.items.len()).sum());
        let mut starts = Vec::with_capacity(model.itemsets.len() + 1);
        starts.push(0);
        for s in &model.itemsets {
            let b = flat.len();
            flat.extend(s.items.iter().map(|k| index[k]));
            flat[b..].sort_unstable();
            starts.push(flat.len());
        }
        DenseModel { dict, flat, starts }
    }

    pub fn set(&self, i: usize) -> &[u32] {
        &self.flat[self.starts[i]..self.starts[i + 1]]
    }

    pub fn lookup(&self, model: &Itemsets<K>) -> FxHashMap<&[u32], u64> {
        let mut m: FxHashMap<&[u32], u64> = FxHashMap::default();
        m.reserve(model.itemsets.len());
        for (i, s) in model.itemsets.iter().enumerate() {
            m.insert(self.set(i), s.count);
        }
        m
    }

    pub fn keys(&self, ids: &[u32]) -> Vec<K> {
        ids.iter().map(|&i| self.dict[i as usize].clone()).collect()
    }
}

/// Splits `set` by `mask` (bit j set: `set[j]` goes to the antecedent).
fn split(set: &[u32], mask: u64, a: &mut Vec<u32>, c: &mut Vec<u32>) {
    a.clear();
    c.clear();
    for (j, &id) in set.iter().enumerate() {
        if mask >> j & 1 == 1 {
            a.push(id);
        } else {
            c.push(id);
        }
    }
}

fn missing_subset<K: ItemKey>(dm: &DenseModel<'_, K>, set: &[u32], sub: &[u32]) -> FpError {
    FpError::InvalidModel(format!(
        "itemset {:?} is listed but its subset {:?} is not; rules need every subset of a \
         frequent itemset in the model",
        dm.keys(set),
        dm.keys(sub)
    ))
}

/// Largest itemset length for which [`rules`] enumerates antecedents (2^31 - 2 splits).
pub const MAX_RULE_ITEMSET_LEN: usize = 31;

/// Generates association rules from frequent itemsets, as mlxtend 0.25
/// `association_rules(itemsets, num_itemsets=n_baskets, metric="confidence",
/// min_threshold=min_confidence)` followed by `lift >= min_lift`.
///
/// For every itemset `S` with at least two items and every non-empty proper subset `A` of
/// `S`, the rule `A -> S \ A` is kept when `confidence >= min_confidence` and
/// `lift >= min_lift` (metrics as documented on [`Rule`]). Output order: lift descending,
/// confidence descending, then antecedent, then consequent (lexicographic on the sorted item
/// arrays). `progress` is called on the calling thread about every 20 ms.
///
/// # Errors
/// - [`FpError::InvalidParameter`]: `min_confidence` NaN or outside `[0, 1]`; `min_lift` NaN,
///   negative or infinite; `max_rules == 0`;
/// - [`FpError::InvalidModel`]: an itemset's subset is missing from `model` (a hand-edited or
///   truncated model), or an itemset has more than [`MAX_RULE_ITEMSET_LEN`] items;
/// - [`FpError::LimitExceeded`]: more than `max_rules` rules pass the thresholds.
///
/// The model is assumed to satisfy [`Itemsets::validate`] (always true for mined models and
/// for [`Itemsets::from_json`]); an invalid one gives errors or meaningless values, never a
/// panic.
pub fn rules<K: ItemKey>(
    model: &Itemsets<K>,
    min_confidence: f64,
    min_lift: f64,
    max_rules: usize,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Vec<Rule<K>>, FpError> {
    check_min_confidence(min_confidence)?;
    if !(min_lift.is_finite() && min_lift >= 0.0) {
        return Err(FpError::InvalidParameter(format!(
            "min_lift must be a finite number >= 0, got {min_lift}"
        )));
    }
    if max_rules == 0 {
        return Err(FpError::InvalidParameter(
            "max_rules must be at least 1".into(),
        ));
    }
    let n = model.n_baskets;
    let total = model.itemsets.len() as u64;
    let mut ticker = Ticker::new();
    ticker.tick(true, progress, Phase::GeneratingRules, 0, total, 0);
    let dm = DenseModel::new(model);
    let lookup = dm.lookup(model);

    // (lift, confidence, itemset index, antecedent mask)
    let mut raw: Vec<(f64, f64, u32, u32)> = Vec::new();
    let (mut a, mut c) = (Vec::new(), Vec::new());
    for (i, s) in model.itemsets.iter().enumerate() {
        if i % 64 == 0 {
            ticker.tick(
                false,
                progress,
                Phase::GeneratingRules,
                i as u64,
                total,
                raw.len() as u64,
            );
        }
        let set = dm.set(i);
        let l = set.len();
        if l < 2 {
            continue;
        }
        if l > MAX_RULE_ITEMSET_LEN {
            return Err(FpError::InvalidModel(format!(
                "itemset {i} has {l} items; rules are generated only for itemsets of at most \
                 {MAX_RULE_ITEMSET_LEN} items"
            )));
        }
        for mask in 1..(1u64 << l) - 1 {
            split(set, mask, &mut a, &mut c);
            let c_a = *lookup
                .get(a.as_slice())
                .ok_or_else(|| missing_subset(&dm, set, &a))?;
            let c_c = *lookup
                .get(c.as_slice())
                .ok_or_else(|| missing_subset(&dm, set, &c))?;
            let (confidence, lift) = confidence_lift(s.count, c_a, c_c, n);
            if confidence >= min_confidence && lift >= min_lift {
                if raw.len() >= max_rules {
                    return Err(FpError::LimitExceeded(format!(
                        "more than {max_rules} rules pass min_confidence {min_confidence} and \
                         min_lift {min_lift}; raise them (or raise max_rules)"
                    )));
                }
                raw.push((lift, confidence, i as u32, mask as u32));
            }
        }
    }
    let found = raw.len() as u64;
    let side = |r: &(f64, f64, u32, u32), ante: bool| {
        let set = dm.set(r.2 as usize);
        let mask = r.3;
        set.iter()
            .enumerate()
            .filter(move |(j, _)| (mask >> j & 1 == 1) == ante)
            .map(|(_, &id)| id)
    };
    let cmp = |x: &(f64, f64, u32, u32), y: &(f64, f64, u32, u32)| -> Ordering {
        y.0.total_cmp(&x.0)
            .then(y.1.total_cmp(&x.1))
            .then_with(|| side(x, true).cmp(side(y, true)))
            .then_with(|| side(x, false).cmp(side(y, false)))
    };
    let raw = sort_with_ticks(raw, &cmp, &mut |done, tot| {
        ticker.tick(false, progress, Phase::SortingRules, done, tot, found);
    });
    let mut out = Vec::with_capacity(raw.len());
    for (idx, r) in raw.iter().enumerate() {
        if idx % 4096 == 0 {
            ticker.tick(false, progress, Phase::SortingRules, 1, 1, found);
        }
        let set = dm.set(r.2 as usize);
        split(set, u64::from(r.3), &mut a, &mut c);
        let s = &model.itemsets[r.2 as usize];
        let c_a = *lookup
            .get(a.as_slice())
            .ok_or_else(|| missing_subset(&dm, set, &a))?;
        let c_c = *lookup
            .get(c.as_slice())
            .ok_or_else(|| missing_subset(&dm, set, &c))?;
        let m = metrics(s.count, c_a, c_c, n);
        out.push(Rule {
            antecedent: dm.keys(&a),
            consequent: dm.keys(&c),
            count: s.count,
            antecedent_support: m.antecedent_support,
            consequent_support: m.consequent_support,
            support: m.support,
            confidence: m.confidence,
            lift: m.lift,
            leverage: m.leverage,
            conviction: m.conviction,
            zhangs_metric: m.zhangs_metric,
            jaccard: m.jaccard,
            certainty: m.certainty,
            kulczynski: m.kulczynski,
        });
    }
    ticker.tick(true, progress, Phase::SortingRules, 1, 1, found);
    Ok(out)
}
