//! # xsell-kmeans
//!
//! Deterministic, parallel K-means for pg_xsell, with scikit-learn
//! semantics, plus the building blocks of a multi-pass (streaming) training
//! path and the silhouette score. Pure Rust; no dependency on PostgreSQL.
//!
//! * [`fit`]: in-memory K-means (k-means++ / random / explicit init, Lloyd
//!   or Hamerly iterations, `n_init` restarts). Same multiset of rows, same
//!   parameters and seed ⇒ bit-identical [`Model`], whatever the row order or
//!   the size of the rayon pool. With explicit initial centroids the result
//!   equals scikit-learn's `KMeans(init=C, n_init=1, algorithm="lloyd")` up
//!   to floating-point rounding (clusters renumbered by size).
//! * [`Model`]: centroids, sizes, inertia, …; JSON (serde) with validation,
//!   [`Model::assign`].
//! * Streaming: [`StepState`] (one Lloyd pass as a fixed-size aggregate
//!   state), [`FeatureMoments`], k-means|| helpers ([`FirstCenter`],
//!   [`parallel_sample`], [`reduce_candidates`]) built on [`row_hash`].
//! * [`silhouette`] and the seeded [`Reservoir`] sample.
//!
//! ## Threads and cancellation
//! Functions doing heavy work take a `&rayon::ThreadPool` and run only on
//! it, and take a `progress: &mut dyn FnMut(&Progress)` callback that is
//! invoked on the calling thread between batches of work (every ~10–40 ms)
//! and at the end of each iteration. The callback may panic to abort the
//! computation (e.g. on a query cancel); no pool thread ever calls it.
//!
//! ## Example
//! ```
//! use xsell_kmeans::{fit, Params};
//! let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
//! let data = vec![0.0, 0.0, 0.1, 0.0, 10.0, 10.0, 10.1, 10.0];
//! let model = fit(data, 2, &Params::new(2), &pool, &mut |_| {}).unwrap();
//! assert_eq!(model.sizes, vec![2, 2]);
//! assert_eq!(model.assign(&[9.0, 9.0]).unwrap().0, model.assign(&[10.0, 10.0]).unwrap().0);
//! ```

#![deny(missing_docs)]

mod error;
mod exec;
mod fit;
mod hash;
mod kernel;
mod model;
mod params;
mod silhouette;
mod stream;

pub use error::{KMeansError, Result};
pub use exec::Progress;
pub use fit::{fit, value_limit};
pub use hash::{RowHasher, SplitMix64, canonical_bits, hash_to_unit, mix64, row_hash};
pub use kernel::sq_dist;
pub use model::{Model, nearest, relabel_by_size};
pub use params::{Algorithm, Init, MAX_K, MAX_N_INIT, Params};
pub use silhouette::{MAX_RESERVOIR, Reservoir, silhouette};
pub use stream::{
    FeatureMoments, FirstCenter, MAX_STATE_VALUES, StepState, center_shift_total, parallel_sample,
    reduce_candidates,
};
