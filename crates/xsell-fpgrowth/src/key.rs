//! Item keys: the types that can name an item (`text` and `bigint` in SQL).

use crate::FpError;
use std::fmt::Debug;
use std::hash::Hash;

/// A type usable as an item key in [`crate::Baskets`], [`crate::Itemsets`] and the rule and
/// recommendation functions.
///
/// Keys are compared with [`Ord`]: itemsets store their items in ascending key order and every
/// "lexicographic" tie-break in this crate uses that order (byte order for `String`, numeric
/// order for `i64`). The crate implements it for [`String`] and [`i64`]; the encoding methods
/// are what [`crate::Baskets::to_bytes`] writes for each distinct item.
pub trait ItemKey: Clone + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// Byte identifying the key type in serialized collectors, so that bytes written for one
    /// key type are rejected when read as another. Must be unique among implementations.
    const TYPE_TAG: u8;

    /// Human-readable name of the key type, used in error messages.
    const TYPE_NAME: &'static str;

    /// Appends the binary encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Decodes one key from the front of `bytes`, returning it and the number of bytes used.
    ///
    /// # Errors
    /// [`FpError::CorruptData`] if `bytes` is too short or does not hold a valid key
    /// (for `String`: invalid UTF-8). Must never panic, whatever `bytes` holds.
    fn decode(bytes: &[u8]) -> Result<(Self, usize), FpError>;

    /// Heap bytes owned by this key (0 for plain integers), for memory estimates.
    fn heap_bytes(&self) -> usize;
}

impl ItemKey for i64 {
    const TYPE_TAG: u8 = 1;
    const TYPE_NAME: &'static str = "bigint";

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<(Self, usize), FpError> {
        let raw: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| FpError::CorruptData("truncated bigint item".into()))?;
        Ok((i64::from_le_bytes(raw), 8))
    }

    fn heap_bytes(&self) -> usize {
        0
    }
}

impl ItemKey for String {
    const TYPE_TAG: u8 = 2;
    const TYPE_NAME: &'static str = "text";

    fn encode(&self, out: &mut Vec<u8>) {
        crate::baskets::put_varint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }

    fn decode(bytes: &[u8]) -> Result<(Self, usize), FpError> {
        let (len, used) = crate::baskets::get_varint(bytes)?;
        let len = usize::try_from(len)
            .map_err(|_| FpError::CorruptData("text item length overflows".into()))?;
        let end = used
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| FpError::CorruptData("truncated text item".into()))?;
        let s = std::str::from_utf8(&bytes[used..end])
            .map_err(|_| FpError::CorruptData("text item is not valid UTF-8".into()))?;
        Ok((s.to_owned(), end))
    }

    fn heap_bytes(&self) -> usize {
        self.capacity()
    }
}
