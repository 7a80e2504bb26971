//! Negative data (docs/algorithm.md §4): a wrong label for a real sample (`hard`: drawn in
//! proportion to the model's own belief; `random`: uniform), or an unsupervised `hybrid` of two
//! real samples under a blurred random mask. A negative label is never the true label.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How negative samples are made.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NegativeStrategy {
    /// Wrong label sampled in proportion to the model's predicted probabilities, the true
    /// label masked out (the paper's choice).
    #[default]
    Hard,
    /// Uniformly random wrong label.
    Random,
    /// Unsupervised: `m ⊙ x1 + (1 − m) ⊙ x2` with `m` a thresholded, blurred random bit image.
    Hybrid,
}

/// A wrong label drawn uniformly from the `classes − 1` labels other than `truth`.
pub fn random_wrong_label(classes: usize, truth: usize, rng: &mut impl Rng) -> usize {
    debug_assert!(classes >= 2 && truth < classes);
    let r = rng.gen_range(0..classes - 1);
    if r >= truth {
        r + 1
    } else {
        r
    }
}

/// A wrong label drawn in proportion to `probs` with `truth` masked out. When the model puts
/// (numerically) all its mass on the truth, falls back to a uniform wrong label.
pub fn hard_wrong_label(probs: &[f32], truth: usize, rng: &mut impl Rng) -> usize {
    let total: f32 = probs
        .iter()
        .enumerate()
        .filter(|&(c, p)| c != truth && p.is_finite())
        .map(|(_, p)| p.max(0.0))
        .sum();
    if !(total > 0.0 && total.is_finite()) {
        return random_wrong_label(probs.len(), truth, rng);
    }
    let mut r = rng.gen::<f32>() * total;
    let mut last = None;
    for (c, &p) in probs.iter().enumerate() {
        if c == truth || !p.is_finite() || p <= 0.0 {
            continue;
        }
        last = Some(c);
        r -= p;
        if r < 0.0 {
            return c;
        }
    }
    // Rounding left a sliver of mass: the last eligible class takes it.
    last.unwrap_or_else(|| random_wrong_label(probs.len(), truth, rng))
}

/// Makes hybrid masks for inputs laid out as a `height × width` image (a 1 × n strip for
/// feature vectors that are not square). Holds its scratch buffers.
#[derive(Debug, Clone)]
pub struct HybridMask {
    height: usize,
    width: usize,
    /// Passes of the `[1/4, 1/2, 1/4]` filter in each direction.
    passes: usize,
    buf: Vec<f32>,
    tmp: Vec<f32>,
}

impl HybridMask {
    /// Masks for `n` inputs: square images when `n` is a perfect square, else a strip.
    pub fn for_inputs(n: usize) -> Self {
        let side = (n as f64).sqrt().round() as usize;
        let (height, width) = if side * side == n {
            (side, side)
        } else {
            (1, n)
        };
        Self {
            height,
            width,
            passes: 6,
            buf: vec![0.0; n],
            tmp: vec![0.0; n],
        }
    }

    /// Draws a fresh binary mask into `mask` (values exactly 0.0 or 1.0).
    pub fn draw(&mut self, rng: &mut impl Rng, mask: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        debug_assert_eq!(mask.len(), h * w);
        for v in self.buf.iter_mut() {
            *v = if rng.gen::<bool>() { 1.0 } else { 0.0 };
        }
        for _ in 0..self.passes {
            blur(&self.buf, &mut self.tmp, h, w, 1, 0);
            if h > 1 {
                blur(&self.tmp, &mut self.buf, h, w, 0, 1);
            } else {
                self.buf.copy_from_slice(&self.tmp);
            }
        }
        for (m, &v) in mask.iter_mut().zip(&self.buf) {
            *m = if v > 0.5 { 1.0 } else { 0.0 };
        }
    }
}

/// One pass of `[1/4, 1/2, 1/4]` along x (`dx = 1`) or y (`dy = 1`), edges clamped.
fn blur(src: &[f32], dst: &mut [f32], h: usize, w: usize, dx: usize, dy: usize) {
    for y in 0..h {
        for x in 0..w {
            let at = |yy: usize, xx: usize| src[yy * w + xx];
            let (prev, next) = if dx == 1 {
                (at(y, x.saturating_sub(1)), at(y, (x + 1).min(w - 1)))
            } else {
                (at(y.saturating_sub(dy), x), at((y + dy).min(h - 1), x))
            };
            dst[y * w + x] = 0.25 * prev + 0.5 * at(y, x) + 0.25 * next;
        }
    }
}

/// `out = m ⊙ a + (1 − m) ⊙ b`.
pub fn mix(mask: &[f32], a: &[f32], b: &[f32], out: &mut [f32]) {
    for (((o, &m), &x), &y) in out.iter_mut().zip(mask).zip(a).zip(b) {
        *o = m * x + (1.0 - m) * y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn wrong_labels_never_equal_the_truth() {
        let mut rng = StdRng::seed_from_u64(1);
        for truth in 0..10 {
            for _ in 0..500 {
                assert_ne!(random_wrong_label(10, truth, &mut rng), truth);
            }
            // Even when the model is certain of the truth, or of one wrong label.
            let mut certain = vec![0.0; 10];
            certain[truth] = 1.0;
            let mut skewed = vec![0.01; 10];
            skewed[(truth + 3) % 10] = 0.9;
            for probs in [certain, skewed, vec![0.1; 10], vec![f32::NAN; 10]] {
                for _ in 0..200 {
                    assert_ne!(hard_wrong_label(&probs, truth, &mut rng), truth);
                }
            }
        }
    }

    #[test]
    fn hard_labels_follow_the_probabilities() {
        let mut rng = StdRng::seed_from_u64(2);
        let probs = [0.5, 0.0, 0.4, 0.1];
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            counts[hard_wrong_label(&probs, 0, &mut rng)] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1], 0);
        // 0.4 : 0.1 → ~80 % : 20 %.
        assert!((7_600..8_400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn hybrid_masks_are_binary_and_mix_both_sources() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut maker = HybridMask::for_inputs(784);
        let mut mask = vec![0.0; 784];
        maker.draw(&mut rng, &mut mask);
        assert!(mask.iter().all(|&m| m == 0.0 || m == 1.0));
        let ones = mask.iter().filter(|&&m| m == 1.0).count();
        assert!(ones > 784 / 10 && ones < 784 * 9 / 10, "ones = {ones}");
        let (a, b) = (vec![1.0; 784], vec![2.0; 784]);
        let mut out = vec![0.0; 784];
        mix(&mask, &a, &b, &mut out);
        assert!(out.contains(&1.0) && out.contains(&2.0));
        assert!(out.iter().all(|&v| v == 1.0 || v == 2.0));
        // Blurring makes neighbours agree more often than independent coin flips would.
        let same = (0..783)
            .filter(|&i| i % 28 != 27 && mask[i] == mask[i + 1])
            .count();
        assert!(same as f32 / (27.0 * 28.0) > 0.7);
    }
}
