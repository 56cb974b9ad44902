//! The mined model: frequent itemsets with their counts.

use crate::baskets::FxHashMap;
use crate::{FpError, ItemKey};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One frequent itemset: its items (ascending, distinct) and the number of baskets containing
/// all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Itemset<K> {
    /// The items, sorted ascending by [`Ord`] and free of duplicates.
    pub items: Vec<K>,
    /// Number of baskets that contain every item of `items` (the absolute support).
    pub count: u64,
}

/// A set of frequent itemsets mined from `n_baskets` baskets (the `xsell.itemsets` model).
///
/// The JSON form ([`to_json`](Self::to_json)) is
/// `{"n_baskets": N, "min_support": s, "max_len": L, "itemsets": [{"items": [...], "count": c}, ...]}`.
///
/// Invariants of a well-formed value (checked by [`validate`](Self::validate), guaranteed for
/// values returned by [`crate::mine`]):
/// - `min_support` is in `(0, 1]` and `max_len >= 1`;
/// - every itemset has 1 to `max_len` items, sorted ascending and distinct;
/// - `1 <= count <= n_baskets` and `count / n_baskets >= min_support`;
/// - no itemset appears twice.
///
/// Mined values are also *downward closed* (every non-empty subset of a listed itemset is
/// listed) and in canonical order (see [`canonical_cmp`](Self::canonical_cmp)). These two are
/// not required by `validate`; [`crate::rules`] and [`crate::recommend`] report a missing
/// subset as [`FpError::InvalidModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Itemsets<K> {
    /// Number of baskets the itemsets were mined from (the denominator of every support).
    pub n_baskets: u64,
    /// The relative support threshold used for mining.
    pub min_support: f64,
    /// The maximum itemset length used for mining.
    pub max_len: usize,
    /// The frequent itemsets.
    pub itemsets: Vec<Itemset<K>>,
}

impl<K: ItemKey> Itemsets<K> {
    /// Relative support of an itemset of this model: `count as f64 / n_baskets as f64`
    /// (the value mlxtend reports in its `support` column).
    pub fn support(&self, itemset: &Itemset<K>) -> f64 {
        itemset.count as f64 / self.n_baskets as f64
    }

    /// Number of itemsets.
    pub fn len(&self) -> usize {
        self.itemsets.len()
    }

    /// Whether there are no itemsets.
    pub fn is_empty(&self) -> bool {
        self.itemsets.is_empty()
    }

    /// The canonical order of itemsets: by length ascending, then count descending, then items
    /// lexicographically ascending.
    pub fn canonical_cmp(a: &Itemset<K>, b: &Itemset<K>) -> Ordering {
        a.items
            .len()
            .cmp(&b.items.len())
            .then(b.count.cmp(&a.count))
            .then_with(|| a.items.cmp(&b.items))
    }

    /// Sorts the itemsets into the canonical order ([`canonical_cmp`](Self::canonical_cmp)).
    pub fn sort_canonical(&mut self) {
        self.itemsets.sort_by(Self::canonical_cmp);
    }

    /// Checks the invariants listed on [`Itemsets`], for values supplied by users.
    ///
    /// # Errors
    /// [`FpError::InvalidModel`] naming the first violation found (with the offending
    /// itemset's position, 0-based).
    pub fn validate(&self) -> Result<(), FpError> {
        let bad = |m: String| Err(FpError::InvalidModel(m));
        if !(self.min_support > 0.0 && self.min_support <= 1.0) {
            return bad(format!(
                "min_support must be in (0, 1], got {}",
                self.min_support
            ));
        }
        if self.max_len < 1 {
            return bad("max_len must be at least 1".into());
        }
        if !self.itemsets.is_empty() && self.n_baskets == 0 {
            return bad("a model with itemsets must have n_baskets >= 1".into());
        }
        let mut seen: FxHashMap<&[K], usize> = FxHashMap::default();
        seen.reserve(self.itemsets.len());
        for (i, s) in self.itemsets.iter().enumerate() {
            if s.items.is_empty() {
                return bad(format!("itemset {i} is empty"));
            }
            if s.items.len() > self.max_len {
                return bad(format!(
                    "itemset {i} has {} items, more than max_len {}",
                    s.items.len(),
                    self.max_len
                ));
            }
            if let Some(w) = s.items.windows(2).find(|w| w[0] >= w[1]) {
                return bad(if w[0] == w[1] {
                    format!("itemset {i} lists item {:?} twice", w[0])
                } else {
                    format!(
                        "items of itemset {i} are not sorted ascending ({:?} before {:?})",
                        w[0], w[1]
                    )
                });
            }
            if s.count == 0 {
                return bad(format!("itemset {i} has count 0"));
            }
            if s.count > self.n_baskets {
                return bad(format!(
                    "itemset {i} has count {} above n_baskets {}",
                    s.count, self.n_baskets
                ));
            }
            let support = self.support(s);
            if support < self.min_support {
                return bad(format!(
                    "itemset {i} has support {support} below min_support {}",
                    self.min_support
                ));
            }
            if let Some(j) = seen.insert(&s.items, i) {
                return bad(format!("itemsets {j} and {i} are the same itemset"));
            }
        }
        Ok(())
    }
}

impl<K: ItemKey + Serialize> Itemsets<K> {
    /// The JSON text form (see [`Itemsets`]). Supports are not stored: they are
    /// `count / n_baskets`.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of integers, finite floats and strings cannot fail; a
        // non-finite min_support (only possible in a hand-built, invalid value) becomes null.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl<K: ItemKey + for<'de> Deserialize<'de>> Itemsets<K> {
    /// Parses the JSON text form and [`validate`](Self::validate)s it. Unknown fields are
    /// ignored; the itemsets keep the order they have in the text.
    ///
    /// # Errors
    /// [`FpError::InvalidModel`] if the text is not valid JSON of that shape (wrong types,
    /// missing fields, negative counts, items of the wrong type) or violates an invariant.
    pub fn from_json(text: &str) -> Result<Self, FpError> {
        let v: Itemsets<K> = serde_json::from_str(text)
            .map_err(|e| FpError::InvalidModel(format!("cannot parse itemsets JSON: {e}")))?;
        v.validate()?;
        Ok(v)
    }
}
