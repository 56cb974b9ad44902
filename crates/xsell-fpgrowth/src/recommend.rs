//! Cart recommendations straight from the itemsets (no rule enumeration).

use crate::baskets::FxHashMap;
use crate::rules::{check_min_confidence, confidence_lift};
use crate::{FpError, ItemKey, Itemsets};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One recommended item for a cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation<K> {
    /// The recommended item (never in the cart).
    pub item: K,
    /// Ranking score: the confidence of the best rule (see [`recommend`]).
    pub score: f64,
    /// Confidence of the best rule `because -> {item}` (same value as [`crate::Rule`]'s).
    pub confidence: f64,
    /// Lift of that rule.
    pub lift: f64,
    /// Support of that rule (`count / n_baskets` of `because ∪ {item}`).
    pub support: f64,
    /// The antecedent of that rule: a non-empty subset of the cart, items ascending.
    pub because: Vec<K>,
}

/// `confidence >= min_confidence` (false for NaN, which only an invalid model can produce).
fn passes(confidence: f64, min_confidence: f64) -> bool {
    matches!(
        confidence.partial_cmp(&min_confidence),
        Some(Ordering::Greater | Ordering::Equal)
    )
}

/// Best rule found so far for an item: (confidence, lift, support, antecedent ids).
type BestIds = (f64, f64, f64, Vec<u32>);

struct Best<'m, K> {
    item: &'m K,
    confidence: f64,
    lift: f64,
    support: f64,
    because: Vec<&'m K>,
}

/// Whether candidate (`c1`, `l1`, `a1`) beats (`c2`, `l2`, `a2`) as the rule for one item:
/// higher confidence, then higher lift, then shorter antecedent, then lexicographically
/// smaller antecedent.
fn better<T: Ord>(c1: f64, l1: f64, a1: &[T], c2: f64, l2: f64, a2: &[T]) -> bool {
    c1.total_cmp(&c2)
        .then(l1.total_cmp(&l2))
        .then(a2.len().cmp(&a1.len()))
        .then_with(|| a2.cmp(a1))
        == Ordering::Greater
}

/// Recommends up to `n` items for a cart from a frequent-itemset model.
///
/// Each item `y` not in the cart is scored by its best single-consequent rule `A -> {y}` with
/// `A` a non-empty subset of the cart, `A ∪ {y}` a frequent itemset of `model`, and
/// `confidence >= min_confidence`. "Best" is the highest confidence, then the highest lift,
/// then the shorter antecedent, then the lexicographically smaller antecedent. The score is
/// that rule's confidence, an estimate of P(y in basket | the cart's items in `A`); confidence
/// and lift are exactly the values [`crate::rules`] reports for the same rule. Results are
/// ordered by score descending, then lift descending, then item ascending, and truncated to
/// `n`. Items of the cart never appear; duplicates in `cart` are ignored; an empty cart or
/// `n == 0` gives no recommendations.
///
/// Cost: one pass over the itemsets (a merge of each itemset with the sorted cart) plus hash
/// lookups for the few candidate rules; no rule enumeration.
///
/// # Errors
/// - [`FpError::InvalidParameter`]: `min_confidence` NaN or outside `[0, 1]`;
/// - [`FpError::InvalidModel`]: a candidate rule's antecedent or consequent itemset is missing
///   from `model` (a hand-edited, not downward-closed model).
///
/// The model is assumed to satisfy [`Itemsets::validate`] (items sorted); otherwise results
/// may be incomplete, but there is no panic.
pub fn recommend<K: ItemKey>(
    cart: &[K],
    model: &Itemsets<K>,
    n: usize,
    min_confidence: f64,
) -> Result<Vec<crate::Recommendation<K>>, FpError> {
    check_min_confidence(min_confidence)?;
    if n == 0 || cart.is_empty() {
        return Ok(Vec::new());
    }
    let mut cart_sorted: Vec<&K> = cart.iter().collect();
    cart_sorted.sort_unstable();
    cart_sorted.dedup();

    // Itemsets inside the cart (possible antecedents), single items outside the cart
    // (possible consequents) and candidate itemsets with exactly one item outside the cart.
    let mut inside: FxHashMap<Vec<&K>, u64> = FxHashMap::default();
    let mut outside_single: FxHashMap<&K, u64> = FxHashMap::default();
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for (i, s) in model.itemsets.iter().enumerate() {
        let mut j = 0usize;
        let mut missing = 0usize;
        let mut miss_pos = 0usize;
        for (p, it) in s.items.iter().enumerate() {
            let mut found = false;
            while let Some(&c) = cart_sorted.get(j) {
                match c.cmp(it) {
                    Ordering::Less => j += 1,
                    Ordering::Equal => {
                        j += 1;
                        found = true;
                        break;
                    }
                    Ordering::Greater => break,
                }
            }
            if !found {
                missing += 1;
                miss_pos = p;
                if missing > 1 {
                    break;
                }
            }
        }
        match (missing, s.items.len()) {
            (_, 0) => {}
            (0, _) => {
                inside.insert(s.items.iter().collect(), s.count);
            }
            (1, 1) => {
                outside_single.insert(&s.items[0], s.count);
            }
            (1, _) => candidates.push((i, miss_pos)),
            _ => {}
        }
    }

    let mut best: FxHashMap<&K, Best<'_, K>> = FxHashMap::default();
    for (i, p) in candidates {
        let s = &model.itemsets[i];
        let y = &s.items[p];
        let a: Vec<&K> = s
            .items
            .iter()
            .enumerate()
            .filter(|&(q, _)| q != p)
            .map(|(_, k)| k)
            .collect();
        let missing = |what: &[&K]| {
            FpError::InvalidModel(format!(
                "itemset {:?} is listed but its subset {:?} is not; recommendations need every \
                 subset of a frequent itemset in the model",
                s.items, what
            ))
        };
        let c_a = *inside.get(&a).ok_or_else(|| missing(&a))?;
        let c_y = *outside_single.get(y).ok_or_else(|| missing(&[y]))?;
        let (confidence, lift) = confidence_lift(s.count, c_a, c_y, model.n_baskets);
        if !passes(confidence, min_confidence) {
            continue;
        }
        let replace = match best.get(y) {
            None => true,
            Some(b) => better(confidence, lift, &a, b.confidence, b.lift, &b.because),
        };
        if replace {
            let support = s.count as f64 / model.n_baskets as f64;
            best.insert(
                y,
                Best {
                    item: y,
                    confidence,
                    lift,
                    support,
                    because: a,
                },
            );
        }
    }
    let mut ranked: Vec<Best<'_, K>> = best.into_values().collect();
    ranked.sort_unstable_by(|x, y| {
        y.confidence
            .total_cmp(&x.confidence)
            .then(y.lift.total_cmp(&x.lift))
            .then_with(|| x.item.cmp(y.item))
    });
    ranked.truncate(n);
    Ok(ranked
        .into_iter()
        .map(|b| crate::Recommendation {
            item: b.item.clone(),
            score: b.confidence,
            confidence: b.confidence,
            lift: b.lift,
            support: b.support,
            because: b.because.into_iter().cloned().collect(),
        })
        .collect())
}

const NONE: u32 = u32::MAX;

fn hash_ids(ids: &[u32]) -> u64 {
    use std::hash::Hasher;
    let mut h = crate::baskets::FxHasher::default();
    for &i in ids {
        h.write_u32(i);
    }
    h.write_usize(ids.len());
    h.finish()
}

/// A model prepared for many [`recommend`]-style calls: an inverted index from each item to the
/// itemsets containing it, and a hash index of itemsets.
///
/// [`Recommender::recommend`] returns exactly what [`recommend`] returns for the same model and
/// arguments, but only looks at itemsets that contain an item of the cart, so a call costs
/// microseconds instead of a pass over the whole model. Build it once per model (for example
/// in a per-backend cache keyed by the model) and share it: it is immutable, `Send` and `Sync`.
#[derive(Debug, Clone)]
pub struct Recommender<K> {
    n_baskets: u64,
    keys: Vec<K>,
    ids: FxHashMap<K, u32>,
    flat: Vec<u32>,
    starts: Vec<usize>,
    counts: Vec<u64>,
    /// count of each item's single-item itemset, 0 when the model lacks it
    single: Vec<u64>,
    /// itemsets of two or more items containing each item (CSR)
    post_off: Vec<usize>,
    post: Vec<u32>,
    /// first itemset with a given hash of its ids, then a chain through `next`
    by_hash: FxHashMap<u64, u32>,
    next: Vec<u32>,
}

impl<K: ItemKey> Recommender<K> {
    /// Indexes `model` (O(total items) time and memory). The model is assumed to satisfy
    /// [`Itemsets::validate`]; a model with unsorted items still gives correct results, and
    /// one lacking subsets gives [`FpError::InvalidModel`] from
    /// [`recommend`](Self::recommend) as [`crate::recommend`] does.
    pub fn new(model: &Itemsets<K>) -> Self {
        let mut keys: Vec<K> = model
            .itemsets
            .iter()
            .flat_map(|s| s.items.iter().cloned())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut ids: FxHashMap<K, u32> = FxHashMap::default();
        ids.reserve(keys.len());
        for (i, k) in keys.iter().enumerate() {
            ids.insert(k.clone(), i as u32);
        }
        let m = model.itemsets.len();
        let mut flat = Vec::with_capacity(model.itemsets.iter().map(|s| s.items.len()).sum());
        let mut starts = Vec::with_capacity(m + 1);
        let mut counts = Vec::with_capacity(m);
        let mut single = vec![0u64; keys.len()];
        let mut post_off = vec![0usize; keys.len() + 1];
        let mut by_hash: FxHashMap<u64, u32> = FxHashMap::default();
        by_hash.reserve(m);
        let mut next = vec![NONE; m];
        starts.push(0);
        for (i, s) in model.itemsets.iter().enumerate() {
            let b = flat.len();
            flat.extend(s.items.iter().map(|k| ids[k]));
            flat[b..].sort_unstable();
            starts.push(flat.len());
            counts.push(s.count);
            let set = &flat[b..];
            if set.len() == 1 {
                single[set[0] as usize] = s.count;
            } else {
                for &id in set {
                    post_off[id as usize + 1] += 1;
                }
            }
            let h = hash_ids(set);
            if let Some(prev) = by_hash.insert(h, i as u32) {
                next[i] = prev;
            }
        }
        for i in 0..keys.len() {
            post_off[i + 1] += post_off[i];
        }
        let mut fill = post_off.clone();
        let mut post = vec![0u32; post_off[keys.len()]];
        for i in 0..m {
            let set = &flat[starts[i]..starts[i + 1]];
            if set.len() >= 2 {
                for &id in set {
                    post[fill[id as usize]] = i as u32;
                    fill[id as usize] += 1;
                }
            }
        }
        Recommender {
            n_baskets: model.n_baskets,
            keys,
            ids,
            flat,
            starts,
            counts,
            single,
            post_off,
            post,
            by_hash,
            next,
        }
    }

    fn set(&self, i: usize) -> &[u32] {
        &self.flat[self.starts[i]..self.starts[i + 1]]
    }

    /// Count of the itemset with exactly these (ascending) ids.
    fn count_of(&self, ids: &[u32]) -> Option<u64> {
        let mut i = *self.by_hash.get(&hash_ids(ids))?;
        while i != NONE {
            if self.set(i as usize) == ids {
                return Some(self.counts[i as usize]);
            }
            i = self.next[i as usize];
        }
        None
    }

    /// Approximate heap memory held by the index, in bytes.
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        size_of::<Self>()
            + self.keys.capacity() * size_of::<K>()
            + self.keys.iter().map(|k| 2 * k.heap_bytes()).sum::<usize>()
            + self.ids.capacity() * (size_of::<(K, u32)>() + 1)
            + self.flat.capacity() * 4
            + self.starts.capacity() * size_of::<usize>()
            + self.counts.capacity() * 8
            + self.single.capacity() * 8
            + self.post_off.capacity() * size_of::<usize>()
            + self.post.capacity() * 4
            + self.by_hash.capacity() * (size_of::<(u64, u32)>() + 1)
            + self.next.capacity() * 4
    }

    /// Same contract, results and errors as [`recommend`] on the indexed model.
    pub fn recommend(
        &self,
        cart: &[K],
        n: usize,
        min_confidence: f64,
    ) -> Result<Vec<Recommendation<K>>, FpError> {
        check_min_confidence(min_confidence)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut c: Vec<u32> = cart
            .iter()
            .filter_map(|k| self.ids.get(k).copied())
            .collect();
        c.sort_unstable();
        c.dedup();
        // y -> (confidence, lift, support, antecedent ids)
        let mut best: FxHashMap<u32, BestIds> = FxHashMap::default();
        let mut a: Vec<u32> = Vec::new();
        for &ci in &c {
            for &si in &self.post[self.post_off[ci as usize]..self.post_off[ci as usize + 1]] {
                let set = self.set(si as usize);
                // merge with the cart: count items outside it; visit each itemset once, from
                // its smallest cart item
                let mut j = 0usize;
                let mut missing = 0usize;
                let mut miss_pos = 0usize;
                let mut first_in_cart = NONE;
                for (p, &it) in set.iter().enumerate() {
                    while j < c.len() && c[j] < it {
                        j += 1;
                    }
                    if j < c.len() && c[j] == it {
                        if first_in_cart == NONE {
                            first_in_cart = it;
                        }
                        j += 1;
                    } else {
                        missing += 1;
                        miss_pos = p;
                        if missing > 1 {
                            break;
                        }
                    }
                }
                if missing != 1 || first_in_cart != ci {
                    continue;
                }
                let y = set[miss_pos];
                a.clear();
                a.extend(
                    set.iter()
                        .enumerate()
                        .filter(|&(q, _)| q != miss_pos)
                        .map(|(_, &v)| v),
                );
                let missing_err = |what: &[u32]| {
                    FpError::InvalidModel(format!(
                        "itemset {:?} is listed but its subset {:?} is not; recommendations \
                         need every subset of a frequent itemset in the model",
                        set.iter()
                            .map(|&i| &self.keys[i as usize])
                            .collect::<Vec<_>>(),
                        what.iter()
                            .map(|&i| &self.keys[i as usize])
                            .collect::<Vec<_>>()
                    ))
                };
                let c_a = self.count_of(&a).ok_or_else(|| missing_err(&a))?;
                let c_y = match self.single[y as usize] {
                    0 => return Err(missing_err(&[y])),
                    v => v,
                };
                let count = self.counts[si as usize];
                let (confidence, lift) = confidence_lift(count, c_a, c_y, self.n_baskets);
                if !passes(confidence, min_confidence) {
                    continue;
                }
                let replace = match best.get(&y) {
                    None => true,
                    Some(b) => better(confidence, lift, &a, b.0, b.1, &b.3),
                };
                if replace {
                    let support = count as f64 / self.n_baskets as f64;
                    best.insert(y, (confidence, lift, support, a.clone()));
                }
            }
        }
        let mut ranked: Vec<(u32, BestIds)> = best.into_iter().collect();
        ranked.sort_unstable_by(|x, y| {
            y.1.0
                .total_cmp(&x.1.0)
                .then(y.1.1.total_cmp(&x.1.1))
                .then(x.0.cmp(&y.0))
        });
        ranked.truncate(n);
        Ok(ranked
            .into_iter()
            .map(|(y, (confidence, lift, support, a))| Recommendation {
                item: self.keys[y as usize].clone(),
                score: confidence,
                confidence,
                lift,
                support,
                because: a.iter().map(|&i| self.keys[i as usize].clone()).collect(),
            })
            .collect())
    }
}
