//! The crate's error type.

use std::fmt;

/// Errors returned by this crate. Every variant is a distinct failure class so that the SQL
/// layer can map it to its own SQLSTATE; the message carried by each variant is complete and
/// user-facing (it names the offending parameter or value and, where useful, what to do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpError {
    /// A parameter is out of its domain: `min_support` NaN or outside `(0, 1]`, `max_len` of
    /// zero, `min_confidence` outside `[0, 1]`, `min_lift` negative or not finite, ...
    /// (suggested SQLSTATE `22023` invalid_parameter_value).
    InvalidParameter(String),
    /// A resource limit was hit: more frequent itemsets than `max_itemsets`, more rules than
    /// `max_rules`, or more distinct items than `u32::MAX` in one collector
    /// (suggested SQLSTATE `54000` program_limit_exceeded).
    LimitExceeded(String),
    /// A user-supplied model ([`crate::Itemsets`]) is inconsistent or malformed: unsorted or
    /// duplicate items, counts above `n_baskets`, a rule's antecedent or consequent missing from
    /// the model, unparsable JSON, ... (suggested SQLSTATE `22000` data_exception or `22P02`).
    InvalidModel(String),
    /// A serialized collector ([`crate::Baskets::from_bytes`]) is truncated, has a wrong magic
    /// number, version or key type, or is otherwise corrupt
    /// (suggested SQLSTATE `22P03` invalid_binary_representation).
    CorruptData(String),
}

impl fmt::Display for FpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FpError::InvalidParameter(m) => write!(f, "invalid parameter: {m}"),
            FpError::LimitExceeded(m) => write!(f, "limit exceeded: {m}"),
            FpError::InvalidModel(m) => write!(f, "invalid itemsets model: {m}"),
            FpError::CorruptData(m) => write!(f, "corrupt basket state: {m}"),
        }
    }
}

impl std::error::Error for FpError {}

impl FpError {
    /// The message without the class prefix that [`Display`](fmt::Display) adds.
    pub fn message(&self) -> &str {
        match self {
            FpError::InvalidParameter(m)
            | FpError::LimitExceeded(m)
            | FpError::InvalidModel(m)
            | FpError::CorruptData(m) => m,
        }
    }
}
