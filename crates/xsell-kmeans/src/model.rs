//! The fitted model, its JSON form, validation and assignment.

use serde::{Deserialize, Serialize};

use crate::error::{KMeansError, Result};
use crate::fit::cmp_rows;
use crate::kernel::sq_dist;
use crate::params::MAX_K;

/// A fitted K-means model.
///
/// Serialises (serde) to a JSON object with exactly the fields `k`, `dims`,
/// `n_rows`, `centroids` (an array of `k` arrays of `dims` numbers),
/// `sizes`, `inertia`, `iterations`, `converged`, `seed`, `algorithm`,
/// `init`. Deserialisation runs [`Model::validate`], so a parsed model is
/// always consistent. Cluster ids are `0..k` in decreasing size order (see
/// [`relabel_by_size`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ModelRepr", try_from = "ModelRepr")]
pub struct Model {
    /// Number of clusters.
    pub k: usize,
    /// Number of features per row.
    pub dims: usize,
    /// Number of rows the model was fitted on.
    pub n_rows: u64,
    /// `k * dims` centroid coordinates, row-major (cluster `j` is
    /// `centroids[j*dims..(j+1)*dims]`).
    pub centroids: Vec<f64>,
    /// Number of training rows assigned to each cluster (sums to `n_rows`).
    pub sizes: Vec<u64>,
    /// Sum of squared Euclidean distances of the training rows to their
    /// centroid.
    pub inertia: f64,
    /// Iterations run by the winning run.
    pub iterations: usize,
    /// Whether the winning run stopped on a convergence criterion (labels
    /// stable or centroid shift within tolerance) rather than `max_iter`.
    pub converged: bool,
    /// The seed the model was fitted with.
    pub seed: u64,
    /// The iteration algorithm (`"lloyd"`, `"hamerly"`, or a name chosen by
    /// the caller for other training paths).
    pub algorithm: String,
    /// The initialisation (`"k-means++"`, `"random"`, `"explicit"`, or a
    /// caller-chosen name such as `"k-means||"`).
    pub init: String,
}

#[derive(Serialize, Deserialize)]
struct ModelRepr {
    k: usize,
    dims: usize,
    n_rows: u64,
    centroids: Vec<Vec<f64>>,
    sizes: Vec<u64>,
    inertia: f64,
    iterations: usize,
    converged: bool,
    seed: u64,
    algorithm: String,
    init: String,
}

impl From<Model> for ModelRepr {
    fn from(m: Model) -> Self {
        let dims = m.dims.max(1);
        ModelRepr {
            k: m.k,
            dims: m.dims,
            n_rows: m.n_rows,
            centroids: m.centroids.chunks(dims).map(|c| c.to_vec()).collect(),
            sizes: m.sizes,
            inertia: m.inertia,
            iterations: m.iterations,
            converged: m.converged,
            seed: m.seed,
            algorithm: m.algorithm,
            init: m.init,
        }
    }
}

impl TryFrom<ModelRepr> for Model {
    type Error = KMeansError;

    fn try_from(r: ModelRepr) -> Result<Model> {
        if r.centroids.len() != r.k {
            return Err(KMeansError::InvalidModel(format!(
                "k={} but centroids has {} entries",
                r.k,
                r.centroids.len()
            )));
        }
        if let Some((j, c)) = r
            .centroids
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() != r.dims)
        {
            return Err(KMeansError::InvalidModel(format!(
                "dims={} but centroid {j} has {} values",
                r.dims,
                c.len()
            )));
        }
        let m = Model {
            k: r.k,
            dims: r.dims,
            n_rows: r.n_rows,
            centroids: r.centroids.into_iter().flatten().collect(),
            sizes: r.sizes,
            inertia: r.inertia,
            iterations: r.iterations,
            converged: r.converged,
            seed: r.seed,
            algorithm: r.algorithm,
            init: r.init,
        };
        m.validate()?;
        Ok(m)
    }
}

impl Model {
    /// Check internal consistency: `1 <= k <= MAX_K`, `dims >= 1`,
    /// `centroids.len() == k * dims`, `sizes.len() == k`, `sum(sizes) ==
    /// n_rows`, all centroid values finite, `inertia` finite and `>= 0`.
    ///
    /// # Errors
    /// [`KMeansError::InvalidModel`] describing the first violation.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(KMeansError::InvalidModel(m));
        if self.k < 1 || self.k > MAX_K {
            return bad(format!("k must be between 1 and {MAX_K} (got {})", self.k));
        }
        if self.dims < 1 {
            return bad("dims must be at least 1".into());
        }
        match self.k.checked_mul(self.dims) {
            Some(kd) if kd == self.centroids.len() => {}
            _ => {
                return bad(format!(
                    "expected k*dims = {}*{} centroid values, got {}",
                    self.k,
                    self.dims,
                    self.centroids.len()
                ));
            }
        }
        if self.sizes.len() != self.k {
            return bad(format!(
                "expected {} sizes, got {}",
                self.k,
                self.sizes.len()
            ));
        }
        if let Some(i) = self.centroids.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "centroid {} has a non-finite value in column {}",
                i / self.dims,
                i % self.dims
            ));
        }
        if !self.inertia.is_finite() || self.inertia < 0.0 {
            return bad(format!(
                "inertia must be finite and >= 0 (got {})",
                self.inertia
            ));
        }
        let total = self.sizes.iter().try_fold(0u64, |a, &s| a.checked_add(s));
        if total != Some(self.n_rows) {
            return bad(format!(
                "sizes sum to {} but n_rows is {}",
                total.map_or("more than 2^64".to_string(), |t| t.to_string()),
                self.n_rows
            ));
        }
        Ok(())
    }

    /// Cheap shape check guarding [`assign`](Model::assign) against
    /// hand-built inconsistent models.
    fn check_shape(&self) -> Result<()> {
        if self.k == 0 || self.dims == 0 || self.centroids.len() != self.k.saturating_mul(self.dims)
        {
            return Err(KMeansError::InvalidModel(format!(
                "{} centroid values do not form k={} centroids of dims={}",
                self.centroids.len(),
                self.k,
                self.dims
            )));
        }
        Ok(())
    }

    /// Centroid `j` (`j < k`; panics otherwise, like slice indexing).
    pub fn centroid(&self, j: usize) -> &[f64] {
        &self.centroids[j * self.dims..(j + 1) * self.dims]
    }

    /// Nearest centroid of `row` and the squared Euclidean distance to it
    /// (first cluster on ties). Uses the same distance kernel as training,
    /// so training rows get exactly their training label.
    ///
    /// # Errors
    /// [`KMeansError::DimensionMismatch`] if `row.len() != dims`;
    /// [`KMeansError::NonFinite`] (row 0) if `row` contains NaN/±Inf.
    pub fn assign(&self, row: &[f64]) -> Result<(usize, f64)> {
        self.check_shape()?;
        check_row(row, self.dims)?;
        Ok(nearest_unchecked(row, &self.centroids, self.dims))
    }

    /// Squared Euclidean distances from `row` to every centroid (`k` values).
    ///
    /// # Errors
    /// As [`assign`](Model::assign).
    pub fn distances(&self, row: &[f64]) -> Result<Vec<f64>> {
        self.check_shape()?;
        check_row(row, self.dims)?;
        Ok(self
            .centroids
            .chunks_exact(self.dims)
            .map(|c| sq_dist(row, c))
            .collect())
    }

    /// Renumber clusters by decreasing size (see [`relabel_by_size`]);
    /// returns `new_id[old_id]`.
    pub fn relabel_by_size(&mut self) -> Vec<usize> {
        relabel_by_size(&mut self.centroids, &mut self.sizes, self.dims)
    }

    /// Serialise to compact JSON (see the type-level docs for the format).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Model always serialises")
    }

    /// Parse and validate a model from JSON.
    ///
    /// # Errors
    /// [`KMeansError::InvalidModel`] for malformed JSON, missing or mistyped
    /// fields, or an inconsistent model (see [`validate`](Model::validate)).
    pub fn from_json(s: &str) -> Result<Model> {
        serde_json::from_str(s).map_err(|e| KMeansError::InvalidModel(e.to_string()))
    }
}

/// Check that `row` has `d` finite values.
pub(crate) fn check_row(row: &[f64], d: usize) -> Result<()> {
    if row.len() != d {
        return Err(KMeansError::DimensionMismatch {
            expected: d,
            got: row.len(),
        });
    }
    if let Some(c) = row.iter().position(|v| !v.is_finite()) {
        return Err(KMeansError::NonFinite { row: 0, column: c });
    }
    Ok(())
}

/// Nearest of the centroids `centers` (row-major, `d` values each) to `row`
/// (first on ties) and its squared distance. No checks; `centers` non-empty.
pub(crate) fn nearest_unchecked(row: &[f64], centers: &[f64], d: usize) -> (usize, f64) {
    let mut best = f64::INFINITY;
    let mut idx = 0;
    for (j, c) in centers.chunks_exact(d).enumerate() {
        let v = sq_dist(row, c);
        if v < best {
            best = v;
            idx = j;
        }
    }
    (idx, best)
}

/// Renumber clusters `0..k` by decreasing size; ties are broken by the
/// lexicographic order of the centroids (`f64::total_cmp`, smallest first),
/// then by the old id. `centroids` (`k * d` values) and `sizes` (`k`) are
/// permuted in place; the return value maps old ids to new ids
/// (`new_id[old_id]`).
///
/// Does nothing sensible (but does not panic) when the lengths disagree or
/// `d == 0`: then the identity mapping is returned.
pub fn relabel_by_size(centroids: &mut [f64], sizes: &mut [u64], d: usize) -> Vec<usize> {
    let k = sizes.len();
    if d == 0 || centroids.len() != k * d {
        return (0..k).collect();
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| {
        sizes[b]
            .cmp(&sizes[a])
            .then_with(|| {
                cmp_rows(
                    &centroids[a * d..(a + 1) * d],
                    &centroids[b * d..(b + 1) * d],
                )
            })
            .then(a.cmp(&b))
    });
    let old_c = centroids.to_vec();
    let old_s = sizes.to_vec();
    let mut new_id = vec![0; k];
    for (new, &old) in order.iter().enumerate() {
        centroids[new * d..(new + 1) * d].copy_from_slice(&old_c[old * d..(old + 1) * d]);
        sizes[new] = old_s[old];
        new_id[old] = new;
    }
    new_id
}

/// Nearest centroid of `row` among `centers` (`k * d` values, row-major,
/// `d = row.len()`) and the squared Euclidean distance to it; first
/// centroid on ties.
///
/// # Errors
/// [`KMeansError::InvalidShape`] if `row` is empty or `centers` is empty or
/// not a multiple of `row.len()`; [`KMeansError::NonFinite`] (row 0) if
/// `row` is not finite.
pub fn nearest(row: &[f64], centers: &[f64]) -> Result<(usize, f64)> {
    let d = row.len();
    if d == 0 || centers.is_empty() || !centers.len().is_multiple_of(d) {
        return Err(KMeansError::InvalidShape(format!(
            "{} centroid values are not a whole number of {d}-dimensional centroids",
            centers.len()
        )));
    }
    check_row(row, d)?;
    Ok(nearest_unchecked(row, centers, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model {
            k: 2,
            dims: 2,
            n_rows: 5,
            centroids: vec![0.0, 0.0, 10.0, 10.0],
            sizes: vec![2, 3],
            inertia: 1.5,
            iterations: 3,
            converged: true,
            seed: 7,
            algorithm: "lloyd".into(),
            init: "k-means++".into(),
        }
    }

    #[test]
    fn json_roundtrip_and_field_names() {
        let m = model();
        let j = m.to_json();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
        let mut expected = vec![
            "k",
            "dims",
            "n_rows",
            "centroids",
            "sizes",
            "inertia",
            "iterations",
            "converged",
            "seed",
            "algorithm",
            "init",
        ];
        let mut got = keys.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        assert_eq!(
            v["centroids"],
            serde_json::json!([[0.0, 0.0], [10.0, 10.0]])
        );
        assert_eq!(Model::from_json(&j).unwrap(), m);
        // exact float round trip
        let mut m2 = m.clone();
        m2.centroids[1] = 0.1 + 0.2;
        m2.inertia = std::f64::consts::PI / 3.0;
        assert_eq!(Model::from_json(&m2.to_json()).unwrap(), m2);
    }

    #[test]
    fn invalid_models_rejected() {
        let bad = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(model()).unwrap();
            f(&mut v);
            Model::from_json(&v.to_string()).unwrap_err()
        };
        for e in [
            bad(&|v| v["k"] = 3.into()),
            bad(&|v| v["dims"] = 3.into()),
            bad(&|v| v["centroids"][1] = serde_json::json!([1.0])),
            bad(&|v| v["sizes"] = serde_json::json!([5])),
            bad(&|v| v["n_rows"] = 6.into()),
            bad(&|v| v["inertia"] = (-1.0).into()),
            bad(&|v| v["centroids"][0][0] = serde_json::Value::Null),
            bad(&|v| {
                v.as_object_mut().unwrap().remove("seed");
            }),
        ] {
            assert!(matches!(e, KMeansError::InvalidModel(_)), "{e:?}");
        }
        assert!(matches!(
            Model::from_json("not json").unwrap_err(),
            KMeansError::InvalidModel(_)
        ));
        let mut m = model();
        m.k = 0;
        m.centroids.clear();
        m.sizes.clear();
        m.n_rows = 0;
        assert!(m.validate().is_err());
        let mut m = model();
        m.centroids[0] = f64::NAN;
        assert!(m.validate().is_err());
        let mut m = model();
        m.sizes = vec![u64::MAX, 2];
        assert!(m.validate().is_err());
    }

    #[test]
    fn assign_and_distances() {
        let m = model();
        assert_eq!(m.assign(&[1.0, 1.0]).unwrap(), (0, 2.0));
        assert_eq!(m.assign(&[9.0, 10.0]).unwrap(), (1, 1.0));
        // tie -> first
        assert_eq!(m.assign(&[5.0, 5.0]).unwrap().0, 0);
        assert_eq!(m.distances(&[0.0, 1.0]).unwrap(), vec![1.0, 181.0]);
        assert_eq!(
            m.assign(&[1.0]).unwrap_err(),
            KMeansError::DimensionMismatch {
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            m.assign(&[1.0, f64::NAN]).unwrap_err(),
            KMeansError::NonFinite { row: 0, column: 1 }
        );
        assert_eq!(nearest(&[9.0, 9.0], &m.centroids).unwrap().0, 1);
        assert!(nearest(&[9.0, 9.0], &[1.0, 2.0, 3.0]).is_err());
        assert!(nearest(&[], &[1.0]).is_err());
    }

    #[test]
    fn relabel_orders_by_size_then_centroid() {
        let mut c = vec![5.0, 1.0, 2.0, 0.0, 7.0];
        let mut s = vec![3, 3, 1, 0, 9];
        let map = relabel_by_size(&mut c, &mut s, 1);
        assert_eq!(s, vec![9, 3, 3, 1, 0]);
        assert_eq!(c, vec![7.0, 1.0, 5.0, 2.0, 0.0]);
        assert_eq!(map, vec![2, 1, 3, 4, 0]);
        let mut m = model();
        let map = m.relabel_by_size();
        assert_eq!(map, vec![1, 0]);
        assert_eq!(m.sizes, vec![3, 2]);
        assert_eq!(m.centroid(0), &[10.0, 10.0]);
        let mut broken = model();
        broken.dims = 0;
        assert!(matches!(
            broken.assign(&[]).unwrap_err(),
            KMeansError::InvalidModel(_)
        ));
        assert!(matches!(
            broken.distances(&[]).unwrap_err(),
            KMeansError::InvalidModel(_)
        ));
        // inconsistent lengths: identity, no panic
        assert_eq!(relabel_by_size(&mut [1.0], &mut [1, 2], 1), vec![0, 1]);
    }
}
