//! Internal-state aggregates: one generic implementation of the combine, serialize and
//! deserialize support functions, for any Rust state that can merge and round-trip bytes.

use super::{agg_state, take_state};
use pgrx::{Internal, pg_sys};

/// A partial aggregate state that travels between parallel workers as bytes.
pub trait Partial: Default + 'static {
    /// Folds another partial state into this one.
    fn merge_from(&mut self, other: Self);
    /// The state as bytes (may finish buffered work first).
    fn to_bytes(&mut self) -> Vec<u8>;
    /// Inverse of [`Partial::to_bytes`]; raises an ERROR on corrupt input.
    fn from_bytes(bytes: &[u8]) -> Self;
}

/// Body of a combine function: merges `b` into `a` (allocating `a` in the aggregate context
/// when it is still NULL).
pub fn combine<T: Partial>(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    let (mut a, mut b) = (a, b);
    // SAFETY: both states belong to the same aggregate and hold a T.
    let other = unsafe { take_state::<T>(&mut b) };
    let st = unsafe { agg_state(&mut a, fcinfo, T::default) };
    if let Some(other) = other {
        st.merge_from(other);
    }
    a
}

/// Body of a serialization function.
pub fn serial<T: Partial>(state: Internal) -> Vec<u8> {
    let mut state = state;
    // SAFETY: the state holds a T.
    match unsafe { state.get_mut::<T>() } {
        Some(st) => st.to_bytes(),
        None => T::default().to_bytes(),
    }
}

/// Body of a deserialization function.
pub fn deserial<T: Partial>(bytes: &[u8]) -> Internal {
    Internal::new(T::from_bytes(bytes))
}

/// Reads a little-endian u64 at `at`, or None when out of bounds.
pub fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}
