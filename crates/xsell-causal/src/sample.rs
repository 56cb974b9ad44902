//! Seeded token sampling (greedy, temperature, nucleus/top-p).

use crate::kernels;

/// SplitMix64: tiny, fast, deterministic for a seed on every platform.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks the next token from `logits`: arg-max when `temperature <= 0`, otherwise a draw
/// from softmax(logits / temperature) restricted to the smallest set of most probable
/// tokens whose mass reaches `top_p` (ties broken by lower id). `None` when the logits
/// are not finite.
pub(crate) fn sample(
    logits: &[f32],
    temperature: f64,
    top_p: f64,
    rng: &mut SplitMix64,
) -> Option<u32> {
    let (m, arg) = kernels::max_argmax(logits)?;
    if temperature <= 0.0 {
        return Some(arg as u32);
    }
    let mut probs: Vec<(f64, u32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| ((((l - m) as f64) / temperature).exp(), i as u32))
        .filter(|(p, _)| *p > 0.0)
        .collect();
    if top_p < 1.0 {
        probs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let total: f64 = probs.iter().map(|p| p.0).sum();
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p.0;
            if cum >= top_p * total {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().map(|p| p.0).sum();
    let u = rng.next_f64() * total;
    let mut cum = 0.0;
    for &(p, id) in &probs {
        cum += p;
        if u < cum {
            return Some(id);
        }
    }
    probs.last().map(|p| p.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_determinism() {
        let logits = vec![0.0f32, 2.0, 1.0, 2.0];
        let mut r = SplitMix64::new(1);
        assert_eq!(sample(&logits, 0.0, 1.0, &mut r), Some(1));
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..50)
                .map(|_| sample(&logits, 1.0, 1.0, &mut r).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        assert!(sample(&[f32::NAN], 1.0, 1.0, &mut r).is_none());
    }

    #[test]
    fn distribution_and_top_p() {
        let logits = vec![(0.5f32).ln(), (0.3f32).ln(), (0.2f32).ln()];
        let mut r = SplitMix64::new(42);
        let mut counts = [0usize; 3];
        for _ in 0..20000 {
            counts[sample(&logits, 1.0, 1.0, &mut r).unwrap() as usize] += 1;
        }
        assert!(
            (counts[0] as f64 / 20000.0 - 0.5).abs() < 0.02,
            "{counts:?}"
        );
        assert!(
            (counts[2] as f64 / 20000.0 - 0.2).abs() < 0.02,
            "{counts:?}"
        );
        // top_p = 0.7 keeps tokens 0 and 1 only
        let mut seen = [false; 3];
        for _ in 0..2000 {
            seen[sample(&logits, 1.0, 0.7, &mut r).unwrap() as usize] = true;
        }
        assert_eq!(seen, [true, true, false]);
        // top_p tiny keeps only the best token
        assert!((0..100).all(|_| sample(&logits, 5.0, 1e-9, &mut r) == Some(0)));
        let u = SplitMix64::new(3).next_f64();
        assert!((0.0..1.0).contains(&u));
    }
}
