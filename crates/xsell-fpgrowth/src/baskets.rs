//! The basket collector: the transition state of the `frequent_itemsets` aggregate.

use crate::{FpError, ItemKey};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Largest number of distinct items one collector can hold (item ids are `u32`, one value is
/// reserved).
pub const MAX_DISTINCT_ITEMS: usize = u32::MAX as usize - 1;

const MAGIC: &[u8; 4] = b"XSFB";
const FORMAT_VERSION: u8 = 1;

/// A small, fast, non-cryptographic hasher (the Fx hash used by rustc). Item keys come from the
/// database, not from an adversary choosing hash collisions, and SipHash would dominate the cost
/// of collecting millions of items.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("chunk of 8")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits depending on the low input bits only; hash tables
        // index buckets by the low bits, so move the well-mixed high bits down (as
        // rustc-hash 2 does).
        self.hash.rotate_left(26)
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// A compact multiset of baskets (transactions) over items of type `K`.
///
/// Items are interned into a dictionary of `u32` ids; baskets are stored as one flat array of
/// ids plus an offset per basket, each basket sorted and free of duplicates. This is the state of
/// the SQL aggregate: baskets are [`add`](Self::add)ed one per row, partial states are
/// [`merge`](Self::merge)d by parallel workers and travel between processes as
/// [`to_bytes`](Self::to_bytes) / [`from_bytes`](Self::from_bytes).
///
/// Semantics (matching a one-hot encoding fed to mlxtend): an item listed several times in one
/// basket counts once, and an empty basket is still a basket (it increases
/// [`n_baskets`](Self::n_baskets), and so lowers every support).
///
/// Only the multiset of baskets matters to mining: the order in which baskets or items were
/// added, and how the collection was split into merged parts, do not change any result.
#[derive(Clone)]
pub struct Baskets<K: ItemKey> {
    keys: Vec<K>,
    index: FxHashMap<K, u32>,
    key_heap_bytes: usize,
    items: Vec<u32>,
    offsets: Vec<u64>,
    scratch: Vec<u32>,
}

impl<K: ItemKey> Default for Baskets<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: ItemKey> fmt::Debug for Baskets<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Baskets")
            .field("n_baskets", &self.n_baskets())
            .field("n_items", &self.n_items())
            .field("n_entries", &self.n_entries())
            .finish()
    }
}

impl<K: ItemKey> Baskets<K> {
    /// An empty collector (zero baskets).
    pub fn new() -> Self {
        Baskets {
            keys: Vec::new(),
            index: FxHashMap::default(),
            key_heap_bytes: 0,
            items: Vec::new(),
            offsets: vec![0],
            scratch: Vec::new(),
        }
    }

    /// Number of baskets added so far, empty baskets included.
    pub fn n_baskets(&self) -> u64 {
        (self.offsets.len() - 1) as u64
    }

    /// Number of distinct items seen so far.
    pub fn n_items(&self) -> usize {
        self.keys.len()
    }

    /// Total number of (basket, item) pairs stored, after removing duplicates within baskets.
    pub fn n_entries(&self) -> u64 {
        self.items.len() as u64
    }

    /// Id of an item, or `None` if it was never added.
    fn intern_lookup<Q>(&self, item: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.get(item).copied()
    }

    fn intern_new(&mut self, key: K) -> Result<u32, FpError> {
        if self.keys.len() >= MAX_DISTINCT_ITEMS {
            return Err(FpError::LimitExceeded(format!(
                "more than {MAX_DISTINCT_ITEMS} distinct items in one basket collection"
            )));
        }
        let id = self.keys.len() as u32;
        self.key_heap_bytes += 2 * key.heap_bytes();
        self.index.insert(key.clone(), id);
        self.keys.push(key);
        Ok(id)
    }

    fn finish_basket(&mut self) {
        let mut s = std::mem::take(&mut self.scratch);
        s.sort_unstable();
        s.dedup();
        self.items.extend_from_slice(&s);
        self.offsets.push(self.items.len() as u64);
        s.clear();
        self.scratch = s;
    }

    /// Adds one basket. Duplicate items within the basket count once; an empty iterator adds
    /// an empty basket.
    ///
    /// # Errors
    /// [`FpError::LimitExceeded`] if the collector would exceed [`MAX_DISTINCT_ITEMS`] distinct
    /// items; the basket is then not added (the collector is unchanged apart from items interned
    /// before the failure, which do not affect any result).
    pub fn add<I>(&mut self, items: I) -> Result<(), FpError>
    where
        I: IntoIterator<Item = K>,
    {
        self.scratch.clear();
        for item in items {
            let id = match self.intern_lookup(&item) {
                Some(id) => id,
                None => match self.intern_new(item) {
                    Ok(id) => id,
                    Err(e) => {
                        self.scratch.clear();
                        return Err(e);
                    }
                },
            };
            self.scratch.push(id);
        }
        self.finish_basket();
        Ok(())
    }

    /// Like [`add`](Self::add) but takes borrowed items (`&str` for `String` keys), allocating
    /// an owned key only the first time an item is seen.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_borrowed<'a, Q, I>(&mut self, items: I) -> Result<(), FpError>
    where
        I: IntoIterator<Item = &'a Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized + 'a,
        K: Borrow<Q>,
    {
        self.scratch.clear();
        for item in items {
            let id = match self.intern_lookup(item) {
                Some(id) => id,
                None => match self.intern_new(item.to_owned()) {
                    Ok(id) => id,
                    Err(e) => {
                        self.scratch.clear();
                        return Err(e);
                    }
                },
            };
            self.scratch.push(id);
        }
        self.finish_basket();
        Ok(())
    }

    /// Appends all baskets of `other` (the combine step of a parallel aggregate). Afterwards
    /// `self` holds the same multiset of baskets as one collector fed with both inputs.
    ///
    /// # Errors
    /// [`FpError::LimitExceeded`] if the union of both dictionaries exceeds
    /// [`MAX_DISTINCT_ITEMS`]; `self` then holds no basket of `other`.
    pub fn merge(&mut self, other: Baskets<K>) -> Result<(), FpError> {
        if self.n_baskets() == 0 && self.keys.is_empty() {
            *self = other;
            return Ok(());
        }
        if other.n_baskets() == 0 {
            return Ok(());
        }
        let mut remap = Vec::with_capacity(other.keys.len());
        let mut monotone = true;
        for key in other.keys {
            let id = match self.intern_lookup(&key) {
                Some(id) => id,
                None => self.intern_new(key)?,
            };
            if let Some(&prev) = remap.last() {
                monotone &= prev < id;
            }
            remap.push(id);
        }
        self.items.reserve(other.items.len());
        self.offsets.reserve(other.offsets.len() - 1);
        for w in other.offsets.windows(2) {
            let basket = &other.items[w[0] as usize..w[1] as usize];
            let start = self.items.len();
            self.items.extend(basket.iter().map(|&i| remap[i as usize]));
            if !monotone {
                self.items[start..].sort_unstable();
            }
            self.offsets.push(self.items.len() as u64);
        }
        Ok(())
    }

    /// Approximate heap memory held by the collector, in bytes (dictionary, hash index and
    /// basket arrays, counting allocated capacity).
    pub fn approx_bytes(&self) -> usize {
        use std::mem::size_of;
        size_of::<Self>()
            + self.keys.capacity() * size_of::<K>()
            // hashbrown: one (K, u32) slot plus one control byte per bucket
            + self.index.capacity() * (size_of::<(K, u32)>() + 1)
            + self.key_heap_bytes
            + self.items.capacity() * size_of::<u32>()
            + self.offsets.capacity() * size_of::<u64>()
            + self.scratch.capacity() * size_of::<u32>()
    }

    /// Iterates over baskets in insertion order, each as its distinct items in item-id order
    /// (not key order). Mostly useful for tests and debugging.
    pub fn iter(&self) -> impl Iterator<Item = Vec<&K>> + '_ {
        self.offsets.windows(2).map(move |w| {
            self.items[w[0] as usize..w[1] as usize]
                .iter()
                .map(|&i| &self.keys[i as usize])
                .collect()
        })
    }

    pub(crate) fn keys(&self) -> &[K] {
        &self.keys
    }

    pub(crate) fn flat_items(&self) -> &[u32] {
        &self.items
    }

    pub(crate) fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Serializes the collector (the aggregate's serial function).
    ///
    /// Format (version 1): magic `XSFB`, version byte, key-type byte, LEB128 dictionary size and
    /// the keys, LEB128 basket count, then per basket its length and its sorted ids
    /// delta-encoded as LEB128. Typical baskets take one or two bytes per item.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.keys.len() * 8 + self.items.len() * 2);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(K::TYPE_TAG);
        put_varint(&mut out, self.keys.len() as u64);
        for k in &self.keys {
            k.encode(&mut out);
        }
        put_varint(&mut out, self.n_baskets());
        for w in self.offsets.windows(2) {
            let basket = &self.items[w[0] as usize..w[1] as usize];
            put_varint(&mut out, basket.len() as u64);
            let mut prev = 0u32;
            for (j, &id) in basket.iter().enumerate() {
                let delta = if j == 0 { id } else { id - prev };
                put_varint(&mut out, u64::from(delta));
                prev = id;
            }
        }
        out
    }

    /// Restores a collector written by [`to_bytes`](Self::to_bytes) (the aggregate's deserial
    /// function).
    ///
    /// # Errors
    /// [`FpError::CorruptData`] for anything that is not a complete, valid version-1 encoding
    /// with this key type: wrong magic, unknown version, another key type, truncation, trailing
    /// bytes, invalid UTF-8, duplicate dictionary keys, ids out of range, or items not strictly
    /// increasing within a basket. Never panics and never allocates more than a small multiple
    /// of `bytes.len()`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FpError> {
        let corrupt = |m: &str| FpError::CorruptData(m.to_owned());
        if bytes.len() < 6 || &bytes[..4] != MAGIC {
            return Err(corrupt(
                "not a serialized basket collection (bad magic number)",
            ));
        }
        if bytes[4] != FORMAT_VERSION {
            return Err(FpError::CorruptData(format!(
                "unsupported basket state format version {} (expected {FORMAT_VERSION})",
                bytes[4]
            )));
        }
        if bytes[5] != K::TYPE_TAG {
            return Err(FpError::CorruptData(format!(
                "basket state holds items of another type (tag {}), expected {}",
                bytes[5],
                K::TYPE_NAME
            )));
        }
        let mut pos = 6usize;
        let (n_keys, used) = get_varint(&bytes[pos..])?;
        pos += used;
        // every key takes at least one byte
        if n_keys > (bytes.len() - pos) as u64 || n_keys > MAX_DISTINCT_ITEMS as u64 {
            return Err(corrupt("dictionary size exceeds the data"));
        }
        let n_keys = n_keys as usize;
        let mut out = Baskets::new();
        out.keys.reserve(n_keys);
        out.index.reserve(n_keys);
        for _ in 0..n_keys {
            let (k, used) = K::decode(&bytes[pos..])?;
            pos += used;
            if out.index.contains_key(&k) {
                return Err(corrupt("duplicate item in the dictionary"));
            }
            out.intern_new(k)?;
        }
        let (n_baskets, used) = get_varint(&bytes[pos..])?;
        pos += used;
        if n_baskets > (bytes.len() - pos) as u64 {
            return Err(corrupt("basket count exceeds the data"));
        }
        out.offsets.reserve(n_baskets as usize);
        for _ in 0..n_baskets {
            let (len, used) = get_varint(&bytes[pos..])?;
            pos += used;
            if len > n_keys as u64 || len > (bytes.len() - pos) as u64 {
                return Err(corrupt("basket length exceeds the dictionary or the data"));
            }
            let mut prev: u64 = 0;
            for j in 0..len {
                let (delta, used) = get_varint(&bytes[pos..])?;
                pos += used;
                let id = if j == 0 {
                    delta
                } else if delta == 0 {
                    return Err(corrupt("items of a basket are not strictly increasing"));
                } else {
                    prev.checked_add(delta)
                        .ok_or_else(|| corrupt("item id overflows"))?
                };
                if id >= n_keys as u64 {
                    return Err(corrupt("item id outside the dictionary"));
                }
                out.items.push(id as u32);
                prev = id;
            }
            out.offsets.push(out.items.len() as u64);
        }
        if pos != bytes.len() {
            return Err(corrupt("trailing bytes after the last basket"));
        }
        Ok(out)
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint from the front of `bytes`: (value, bytes used).
pub(crate) fn get_varint(bytes: &[u8]) -> Result<(u64, usize), FpError> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return Err(FpError::CorruptData("varint overflows 64 bits".into()));
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(FpError::CorruptData(if bytes.len() < 10 {
        "truncated data".into()
    } else {
        "varint longer than 10 bytes".into()
    }))
}
