//! Frequent itemsets (FP-growth), association rules and cart recommendations for `pg_xsell`,
//! with the exact semantics of mlxtend 0.25.
//!
//! The pieces, in the order the SQL layer uses them:
//!
//! 1. [`Baskets`] collects baskets (one per row, duplicates within a basket count once, empty
//!    baskets count), merges partial collections and serializes to compact bytes: the state of
//!    the `xsell.frequent_itemsets` aggregate.
//! 2. [`mine`] runs FP-growth on a rayon pool and returns [`Itemsets`]: every itemset that
//!    `mlxtend.frequent_patterns.fpgrowth` would return for the one-hot encoding of the
//!    baskets, with its count (support = count / n_baskets).
//! 3. [`Itemsets`] is the model (`xsell.itemsets`); it has a JSON text form and a
//!    [`validate`](Itemsets::validate) for user-supplied values.
//! 4. [`rules`] derives association rules with every metric of mlxtend's
//!    `association_rules`, computed with the same floating-point operations.
//! 5. [`recommend`] ranks items for a cart directly from the itemsets; [`Recommender`] is the
//!    same on a prepared index, for many calls against one model.
//!
//! ```
//! use xsell_fpgrowth::{Baskets, MineOptions, mine, rules, recommend};
//!
//! let mut b: Baskets<String> = Baskets::new();
//! for basket in [&["milk", "bread"][..], &["milk", "bread", "eggs"], &["milk"], &[]] {
//!     b.add_borrowed(basket.iter().copied()).unwrap();
//! }
//! let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
//! let model = mine(&b, 0.5, &MineOptions::default(), &pool, &mut |_| {}).unwrap();
//! assert_eq!(model.n_baskets, 4);
//! // {bread}, {milk} and {bread, milk} are in at least 2 of the 4 baskets
//! assert_eq!(model.itemsets.len(), 3);
//!
//! let r = rules(&model, 0.9, 0.0, 1000, &mut |_| {}).unwrap();
//! assert_eq!(r.len(), 1); // bread -> milk has confidence 1; milk -> bread only 2/3
//! assert_eq!(r[0].antecedent, vec!["bread".to_string()]);
//!
//! let rec = recommend(&["bread".to_string()], &model, 5, 0.5).unwrap();
//! assert_eq!(rec[0].item, "milk");
//! ```

#![warn(missing_docs)]

mod baskets;
mod error;
mod itemsets;
mod key;
mod mine;
mod progress;
mod recommend;
mod rules;

pub use baskets::{Baskets, MAX_DISTINCT_ITEMS};
pub use error::FpError;
pub use itemsets::{Itemset, Itemsets};
pub use key::ItemKey;
pub use mine::{MineOptions, min_count, mine};
pub use progress::{PROGRESS_INTERVAL, Phase, Progress};
pub use recommend::{Recommendation, Recommender, recommend};
pub use rules::{MAX_RULE_ITEMSET_LEN, Rule, rules};

#[cfg(test)]
mod tests;
