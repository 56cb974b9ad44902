//! The crate's error type.

use std::fmt;

/// Everything that can go wrong in this crate.
///
/// Every variant describes a problem with the *input* (data, parameters or a
/// user-supplied model/state); no variant signals an internal bug. The
/// variants are deliberately fine-grained so that a caller (the SQL layer)
/// can map each of them to its own error code:
///
/// | variant | typical SQLSTATE |
/// | --- | --- |
/// | [`InvalidParameter`](KMeansError::InvalidParameter) | `22023` invalid_parameter_value |
/// | [`InvalidShape`](KMeansError::InvalidShape), [`DimensionMismatch`](KMeansError::DimensionMismatch) | `2202E` array_subscript_error |
/// | [`NonFinite`](KMeansError::NonFinite), [`ValueTooLarge`](KMeansError::ValueTooLarge) | `22P02`/`22003` |
/// | [`EmptyInput`](KMeansError::EmptyInput), [`TooFewDistinctPoints`](KMeansError::TooFewDistinctPoints), [`InvalidLabels`](KMeansError::InvalidLabels) | `22023` / `2200G` |
/// | [`LimitExceeded`](KMeansError::LimitExceeded) | `54000` program_limit_exceeded |
/// | [`InvalidModel`](KMeansError::InvalidModel) | `22P02` invalid_text_representation |
#[derive(Debug, Clone, PartialEq)]
pub enum KMeansError {
    /// A parameter is outside its domain (`k = 0`, `d = 0`, `max_iter = 0`,
    /// negative or NaN `tol`, `n_init = 0`, non-finite explicit centroid, ...).
    InvalidParameter(String),
    /// A flat buffer does not have the length its shape requires (data length
    /// not a multiple of `d`, explicit init not `k * d` values, ...).
    InvalidShape(String),
    /// A single row (or centroid set) has the wrong number of dimensions.
    DimensionMismatch {
        /// Number of values expected.
        expected: usize,
        /// Number of values received.
        got: usize,
    },
    /// The input contains NaN or ±Infinity. `row` is the 0-based index of the
    /// row in the order the caller supplied it, `column` the 0-based feature.
    NonFinite {
        /// 0-based row index (input order).
        row: u64,
        /// 0-based column index.
        column: usize,
    },
    /// A finite value is so large that squared Euclidean distances between
    /// rows would overflow `f64` (the limit depends on `d`).
    ValueTooLarge {
        /// 0-based row index (input order).
        row: u64,
        /// 0-based column index.
        column: usize,
        /// The offending value.
        value: f64,
        /// The largest magnitude accepted for this dimensionality.
        limit: f64,
    },
    /// No rows at all.
    EmptyInput,
    /// Fewer distinct rows than requested clusters.
    TooFewDistinctPoints {
        /// Requested number of clusters.
        k: usize,
        /// Number of distinct rows found.
        distinct: usize,
    },
    /// Cluster labels unsuitable for the requested computation (e.g. the
    /// silhouette needs between 2 and n-1 distinct labels).
    InvalidLabels(String),
    /// A parameter or input exceeds a hard resource limit of this crate
    /// (too many clusters, too many restarts, sizes overflowing `usize`, ...).
    LimitExceeded(String),
    /// A serialised model or aggregate state is malformed or inconsistent.
    InvalidModel(String),
}

impl fmt::Display for KMeansError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KMeansError::InvalidParameter(m) => write!(f, "invalid parameter: {m}"),
            KMeansError::InvalidShape(m) => write!(f, "invalid shape: {m}"),
            KMeansError::DimensionMismatch { expected, got } => write!(
                f,
                "dimension mismatch: expected {expected} values, got {got}"
            ),
            KMeansError::NonFinite { row, column } => write!(
                f,
                "row {row} (0-based) contains a non-finite value (NaN or infinity) in column {column}"
            ),
            KMeansError::ValueTooLarge {
                row,
                column,
                value,
                limit,
            } => write!(
                f,
                "row {row} (0-based), column {column}: value {value:e} is too large \
                 (magnitudes above {limit:e} would overflow squared distances)"
            ),
            KMeansError::EmptyInput => write!(f, "no input rows"),
            KMeansError::TooFewDistinctPoints { k, distinct } => {
                let s = if *distinct == 1 { "" } else { "s" };
                write!(f, "k={k} but only {distinct} distinct point{s}")
            }
            KMeansError::InvalidLabels(m) => write!(f, "invalid labels: {m}"),
            KMeansError::LimitExceeded(m) => write!(f, "limit exceeded: {m}"),
            KMeansError::InvalidModel(m) => write!(f, "invalid model: {m}"),
        }
    }
}

impl std::error::Error for KMeansError {}

/// Shorthand for `Result<T, KMeansError>`.
pub type Result<T> = std::result::Result<T, KMeansError>;
