//! Stable, platform-independent hashing of rows and the deterministic random
//! stream used by the seeding procedures.
//!
//! All randomness in this crate is derived either from [`row_hash`] (a pure
//! function of `(seed, tag, row content)`, used where rows arrive in an
//! unknown order) or from [`SplitMix64`] streams consumed in the *canonical*
//! row order (see [`crate::fit()`]). Neither depends on the platform, the
//! thread count or the input order.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const SEED_SALT: u64 = 0x5851_F42D_4C95_7F2D;
const TAG_SALT: u64 = 0xD6E8_FEB8_6659_FD93;
const LEN_SALT: u64 = 0xA076_1D64_78BD_642F;

/// The SplitMix64 finaliser: a bijective 64-bit mixing function with full
/// avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The bit pattern hashed for a value: `-0.0` is mapped to `+0.0` and every
/// NaN to the canonical quiet NaN, so that values comparing equal (and all
/// NaNs) hash equally.
#[inline]
pub fn canonical_bits(v: f64) -> u64 {
    if v == 0.0 {
        0
    } else if v.is_nan() {
        0x7FF8_0000_0000_0000
    } else {
        v.to_bits()
    }
}

/// Incremental form of [`row_hash`]: `RowHasher::new(seed, tag)` followed by
/// [`push`](RowHasher::push) for every value and [`finish`](RowHasher::finish)
/// gives exactly `row_hash(seed, tag, values)`. Useful to hash a row followed
/// by extra values (e.g. a label) without copying.
#[derive(Debug, Clone, Copy)]
pub struct RowHasher {
    h: u64,
    len: u64,
}

impl RowHasher {
    /// Start hashing a row under `(seed, tag)`.
    #[inline]
    pub fn new(seed: u64, tag: u64) -> Self {
        let h = mix64(mix64(seed ^ SEED_SALT) ^ tag.wrapping_mul(TAG_SALT).wrapping_add(GOLDEN));
        RowHasher { h, len: 0 }
    }

    /// Feed one value (see [`canonical_bits`]).
    #[inline]
    pub fn push(&mut self, v: f64) {
        self.h = mix64((self.h ^ canonical_bits(v)).wrapping_add(GOLDEN));
        self.len += 1;
    }

    /// The final 64-bit hash.
    #[inline]
    pub fn finish(self) -> u64 {
        mix64(self.h ^ self.len.wrapping_mul(LEN_SALT))
    }
}

/// A stable 64-bit hash of a row of `f64`s under a `seed` and a `tag`.
///
/// The result depends only on the arguments (never on the platform, the
/// process or the thread): each value is hashed through its bit pattern with
/// `-0.0` canonicalised to `+0.0` and every NaN to one quiet NaN, chained
/// through the SplitMix64 finaliser, and the row length is mixed in at the
/// end. The function is used
///
/// * by k-means|| ([`crate::parallel_sample`]) with `tag = round + 1` to keep a
///   row with a given probability independently of the order rows are seen;
/// * to choose the first k-means|| center (the row with the smallest
///   `row_hash(seed, 0, row)`, see [`crate::FirstCenter`]);
/// * by the seeded reservoir sample ([`crate::Reservoir`]).
///
/// The exact algorithm is part of the API (changing it would change seeded
/// results), and is pinned by a unit test.
#[inline]
pub fn row_hash(seed: u64, tag: u64, row: &[f64]) -> u64 {
    let mut h = RowHasher::new(seed, tag);
    for &v in row {
        h.push(v);
    }
    h.finish()
}

/// Map a 64-bit hash to a uniform double in the *open* interval `(0, 1)`:
/// `((h >> 12) + 0.5) / 2^52` (computed exactly). Never returns 0 or 1.
#[inline]
pub fn hash_to_unit(h: u64) -> f64 {
    ((h >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// The SplitMix64 pseudo-random generator (Steele, Lea & Flood 2014).
///
/// Used for the draws that happen in canonical row order (k-means++ and
/// random initialisation). Deterministic and platform independent.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is a function of `seed` only.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// A uniform double in the open interval `(0, 1)`.
    #[inline]
    pub fn next_unit(&mut self) -> f64 {
        hash_to_unit(self.next_u64())
    }

    /// A uniform integer in `0..bound` (Lemire's multiply-shift; `bound > 0`).
    /// Returns 0 when `bound == 0`.
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

/// The seed of restart number `run` (0-based) of a fit seeded with `seed`.
pub(crate) fn run_seed(seed: u64, run: usize) -> u64 {
    mix64(mix64(seed ^ 0x243F_6A88_85A3_08D3) ^ (run as u64).wrapping_mul(GOLDEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_hash_is_pinned() {
        // These constants pin the hash across platforms and versions: a change
        // here silently changes every seeded result of the extension.
        assert_eq!(row_hash(0, 0, &[]), PIN_EMPTY);
        assert_eq!(row_hash(1, 2, &[1.5, -3.0]), PIN_ROW);
        assert_eq!(
            row_hash(1, 2, &[1.5, -3.0]),
            row_hash_ref(1, 2, &[1.5, -3.0])
        );
        assert_eq!(row_hash(9, 0, &[0.25; 5]), row_hash_ref(9, 0, &[0.25; 5]));
    }
    const PIN_EMPTY: u64 = 361556803250774989;
    const PIN_ROW: u64 = 17650247408234119523;

    /// Straightforward restatement of the documented algorithm.
    fn row_hash_ref(seed: u64, tag: u64, row: &[f64]) -> u64 {
        let mut h =
            mix64(mix64(seed ^ SEED_SALT) ^ tag.wrapping_mul(TAG_SALT).wrapping_add(GOLDEN));
        for v in row {
            let b = if *v == 0.0 { 0 } else { v.to_bits() };
            h = mix64((h ^ b).wrapping_add(GOLDEN));
        }
        mix64(h ^ (row.len() as u64).wrapping_mul(LEN_SALT))
    }

    #[test]
    fn zero_sign_and_nan_canonicalised() {
        assert_eq!(row_hash(7, 1, &[0.0, 1.0]), row_hash(7, 1, &[-0.0, 1.0]));
        let n1 = f64::from_bits(0x7FF8_0000_0000_0001);
        assert_eq!(row_hash(7, 1, &[n1]), row_hash(7, 1, &[f64::NAN]));
        assert_ne!(row_hash(7, 1, &[1.0, 2.0]), row_hash(7, 1, &[2.0, 1.0]));
        assert_ne!(row_hash(7, 1, &[1.0]), row_hash(7, 2, &[1.0]));
        assert_ne!(row_hash(7, 1, &[1.0]), row_hash(8, 1, &[1.0]));
        assert_ne!(row_hash(7, 1, &[0.0]), row_hash(7, 1, &[0.0, 0.0]));
    }

    #[test]
    fn incremental_equals_oneshot() {
        let mut h = RowHasher::new(3, 4);
        for v in [1.0, 2.0, 3.0] {
            h.push(v);
        }
        assert_eq!(h.finish(), row_hash(3, 4, &[1.0, 2.0, 3.0]));
    }

    #[test]
    fn unit_interval_is_open() {
        assert!(hash_to_unit(0) > 0.0);
        assert!(hash_to_unit(u64::MAX) < 1.0);
        assert_eq!(hash_to_unit(0), 0.5 / 4503599627370496.0);
        assert_eq!(hash_to_unit(1 << 63), 0.5 + 0.5 / 4503599627370496.0);
        let mut r = SplitMix64::new(42);
        let mean: f64 = (0..10_000).map(|_| r.next_unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        for _ in 0..1000 {
            assert!(r.below(7) < 7);
        }
    }
}
