//! Probability calibration (docs/algorithm.md §5.1): a model's class scores are sums of
//! per-layer logits in the hundreds, so `softmax(scores)` is one-hot whatever the model knows.
//! The served probabilities are `softmax(scores / T)` with one temperature `T` fitted online on
//! the prequential stream: every sample is classified before it is learned, so its prediction
//! is held-out data for free. Scores and the predicted class do not depend on `T`.

use serde::{Deserialize, Serialize};

/// The temperature a model's probabilities are computed with, and the weight of goodness in
/// the combined classifier's scores. Stored with the model (model files and checkpoints); files
/// written before either existed load with `T = 1`, i.e. the raw `softmax(scores)`, and weight 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// `T` of `softmax(scores / T)`; finite and > 0.
    pub temperature: f32,
    /// `w` of the combined classifier's scores `w·goodness + head` (docs/algorithm.md §5):
    /// `1/T_g`, with `T_g` fitted online to goodness's own prequential predictions, so that a
    /// goodness still near chance (large `T_g`) leaves the scores to the head and a confident
    /// one outweighs it. Finite and > 0; unused by the other classifiers.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub goodness_weight: f32,
}

fn one() -> f32 {
    1.0
}

fn is_one(w: &f32) -> bool {
    *w == 1.0
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            goodness_weight: 1.0,
        }
    }
}

impl Calibration {
    /// Whether the numbers are usable (finite, > 0); a file that says otherwise is refused.
    pub fn is_valid(&self) -> bool {
        self.temperature.is_finite()
            && self.temperature > 0.0
            && self.goodness_weight.is_finite()
            && self.goodness_weight > 0.0
    }

    /// `out ← softmax(scores / T)`, shifted by the max for stability. `out` has `scores`' length.
    pub fn probabilities(&self, scores: &[f32], out: &mut [f32]) {
        debug_assert_eq!(scores.len(), out.len());
        let inv = 1.0 / self.temperature;
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (o, &s) in out.iter_mut().zip(scores) {
            *o = ((s - max) * inv).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }
}

/// Negative log-likelihood of `label` under `softmax(β · scores)`, with the first two
/// derivatives in `β = 1/T`:
///
/// ```text
/// ℓ(β)   = log Σ_k exp(β s_k) − β s_y
/// ℓ'(β)  = E_p[s] − s_y
/// ℓ''(β) = Var_p[s] ≥ 0          p = softmax(β s)
/// ```
///
/// `ℓ` is convex in `β`, which is why the fit works in `β` rather than in `T` or `log T`.
pub fn nll_and_derivatives(scores: &[f32], label: usize, beta: f64) -> (f64, f64, f64) {
    let max = scores
        .iter()
        .map(|&s| f64::from(s))
        .fold(f64::NEG_INFINITY, f64::max);
    // Accumulate in f64 around the max: the terms are exp(β (s − max)) ≤ 1.
    let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
    for &s in scores {
        let d = f64::from(s) - max;
        let e = (beta * d).exp();
        z += e;
        m1 += e * d;
        m2 += e * d * d;
    }
    let mean = m1 / z;
    let var = (m2 / z - mean * mean).max(0.0);
    let sy = f64::from(scores[label]) - max;
    (z.ln() - beta * sy, mean - sy, var)
}

/// The online fit of the temperature: a stochastic Newton method on `β = 1/T` minimising the
/// NLL of the prequential predictions. After the `n`-th sample (`n` capped at `window`)
///
/// ```text
/// H ← H + (ℓ''(β) − H)/n          β ← β − ℓ'(β) / (n·H)
/// ```
///
/// a Newton step on the running mean of the per-sample NLLs (Robbins–Monro with the optimal
/// `1/(n·H)` gain): while `n < window` the fit converges to the best single temperature of
/// everything seen; afterwards it forgets with a memory of about `window` samples, which
/// tracks a model whose scores grow as it learns. One step changes `β` by at most a factor of
/// 2: with one-hot probabilities `ℓ''` is 0 and a single mistake would otherwise send `β`
/// anywhere. The running mean of the prequential NLL (same memory) is kept as well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureFit {
    /// Samples of memory (`[train] calibration_window`).
    window: u64,
    /// `β = 1/T`.
    inv_temperature: f64,
    /// Running mean of `ℓ''(β)`.
    curvature: f64,
    /// Running mean of the prequential NLL, before each sample's step.
    log_loss: f64,
    /// Samples observed.
    seen: u64,
}

/// Largest factor by which one step changes `β`.
const MAX_STEP_FACTOR: f64 = 2.0;

impl TemperatureFit {
    /// A fit that starts at `start` (the model's current temperature), with a memory of
    /// `window` samples (at least 1).
    pub fn new(window: u64, start: Calibration) -> Self {
        let t = if start.is_valid() {
            f64::from(start.temperature)
        } else {
            1.0
        };
        Self {
            window: window.max(1),
            inv_temperature: 1.0 / t,
            curvature: 0.0,
            log_loss: 0.0,
            seen: 0,
        }
    }

    /// Changes the memory (a restored fit under a new configuration).
    pub fn set_window(&mut self, window: u64) {
        self.window = window.max(1);
    }

    /// Folds in one prequential prediction: `scores` of the model before it learned the sample,
    /// and the sample's true `label`. Returns the NLL of the prediction at the temperature
    /// before this step (the honest prequential loss). Non-finite scores are skipped.
    pub fn observe(&mut self, scores: &[f32], label: usize) -> Option<f64> {
        debug_assert!(label < scores.len());
        if scores.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let beta = self.inv_temperature;
        let (nll, grad, curv) = nll_and_derivatives(scores, label, beta);
        self.seen += 1;
        let n = self.seen.min(self.window) as f64;
        self.curvature += (curv - self.curvature) / n;
        self.log_loss += (nll - self.log_loss) / n;
        let step = grad / (n * self.curvature.max(f64::MIN_POSITIVE));
        let next = (beta - step).clamp(beta / MAX_STEP_FACTOR, beta * MAX_STEP_FACTOR);
        // The temperature is published (and saved) as an f32: a step that would take it beyond
        // f32's range is not taken, or the model would carry an infinite temperature that no
        // checkpoint or model file can store.
        if next.is_finite() && next > 0.0 && ((1.0 / next) as f32).is_finite() {
            self.inv_temperature = next;
        }
        Some(nll)
    }

    /// The fitted temperature.
    pub fn temperature(&self) -> f32 {
        (1.0 / self.inv_temperature) as f32
    }

    /// The calibration to give a model (goodness weight 1).
    pub fn calibration(&self) -> Calibration {
        Calibration {
            temperature: self.temperature(),
            ..Calibration::default()
        }
    }

    /// Running mean of the prequential NLL over about the last `window` samples (nats per
    /// sample; `None` before the first).
    pub fn log_loss(&self) -> Option<f64> {
        (self.seen > 0).then_some(self.log_loss)
    }

    /// Samples observed.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether a restored fit's numbers are usable.
    pub fn is_valid(&self) -> bool {
        self.inv_temperature.is_finite()
            && self.inv_temperature > 0.0
            && self.curvature.is_finite()
            && self.log_loss.is_finite()
    }
}

/// The NLL-optimal single temperature for fixed `(scores, label)` pairs, by a log-spaced grid
/// search over `[t_min, t_max]` (`steps` points): the reference the online fit is tested
/// against, and the after-the-fact best temperature `ffd eval` reports. Returns `(T, mean NLL)`.
pub fn best_temperature<'a>(
    samples: impl Iterator<Item = (&'a [f32], usize)> + Clone,
    t_min: f64,
    t_max: f64,
    steps: usize,
) -> (f64, f64) {
    let mut best = (1.0, f64::INFINITY);
    let steps = steps.max(2);
    for i in 0..steps {
        let t = t_min * (t_max / t_min).powf(i as f64 / (steps - 1) as f64);
        let (mut sum, mut n) = (0.0, 0usize);
        for (s, y) in samples.clone() {
            sum += nll_and_derivatives(s, y, 1.0 / t).0;
            n += 1;
        }
        let mean = sum / n.max(1) as f64;
        if mean < best.1 {
            best = (t, mean);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The goodness weight is written only when it is not 1, so files of models that never
    /// used the combined classifier read as before; a file without it loads with 1, and a
    /// weight that is not finite and > 0 makes the calibration invalid.
    #[test]
    fn goodness_weight_is_optional_in_files() {
        let plain = Calibration::default();
        let json = serde_json::to_string(&plain).expect("serialises");
        assert_eq!(json, r#"{"temperature":1.0}"#);
        let read: Calibration = serde_json::from_str(r#"{"temperature":2.5}"#).expect("parses");
        assert_eq!(read.goodness_weight, 1.0);
        let weighted = Calibration {
            temperature: 2.5,
            goodness_weight: 0.125,
        };
        let json = serde_json::to_string(&weighted).expect("serialises");
        assert_eq!(
            serde_json::from_str::<Calibration>(&json).ok(),
            Some(weighted)
        );
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let c = Calibration {
                goodness_weight: bad,
                ..plain
            };
            assert!(!c.is_valid(), "{bad}");
        }
    }

    /// Overconfident synthetic scores: the true class gets `scale · (1 + noise)`, the others
    /// `scale · noise`, so the raw softmax is one-hot while a fifth or so are wrong.
    fn stream(n: usize, scale: f32, seed: u64) -> Vec<(Vec<f32>, usize)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let y = rng.gen_range(0..10);
                let s = (0..10)
                    .map(|k| {
                        let noise: f32 = rng.gen_range(-1.0..1.0) + rng.gen_range(-1.0..1.0);
                        scale * (noise + if k == y { 1.5 } else { 0.0 })
                    })
                    .collect();
                (s, y)
            })
            .collect()
    }

    /// Scores that carry no information about the label (an untrained model) push the
    /// temperature up without bound; it stops where f32 ends, so the model's calibration stays
    /// storable (an infinite one is written as `null` and refused when read back).
    #[test]
    fn an_uninformative_stream_keeps_the_temperature_finite() {
        let mut fit = TemperatureFit::new(500, Calibration::default());
        for i in 0..2000 {
            let scores: Vec<f32> = (0..10)
                .map(|k| if k == i % 7 { 5.0 } else { 0.0 })
                .collect();
            fit.observe(&scores, (i * 3) % 10);
        }
        assert!(fit.calibration().is_valid(), "{}", fit.temperature());
        assert!(
            fit.temperature() > 1e6,
            "it still followed the data: {}",
            fit.temperature()
        );
    }

    /// The derivatives match central finite differences of the NLL.
    #[test]
    fn derivatives_match_finite_differences() {
        let s = [3.0, -1.0, 0.5, 2.5];
        for beta in [0.1, 0.7, 2.0] {
            let h = 1e-5;
            let (f, g, c) = nll_and_derivatives(&s, 2, beta);
            let (fp, gp, _) = nll_and_derivatives(&s, 2, beta + h);
            let (fm, gm, _) = nll_and_derivatives(&s, 2, beta - h);
            assert!(
                ((fp - fm) / (2.0 * h) - g).abs() < 1e-6,
                "gradient at {beta}"
            );
            assert!(
                ((gp - gm) / (2.0 * h) - c).abs() < 1e-6,
                "curvature at {beta}"
            );
            // ℓ(β) = log Σ exp(β s) − β s_y, computed directly.
            let direct = s.iter().map(|&v| (beta * v as f64).exp()).sum::<f64>().ln()
                - beta * f64::from(s[2]);
            assert!((f - direct).abs() < 1e-9);
        }
    }

    /// Reference: the NLL-optimal T of 10 000 fixed samples by a grid search over
    /// [1, 1000] (1 000 log-spaced points, 0.7 % apart). Streamed once through a fit whose memory holds
    /// them all, starting at T = 1 (one-hot probabilities), the online T lands within 3 % of
    /// it and its NLL within 0.2 % of the optimum.
    #[test]
    fn online_fit_finds_the_grid_search_optimum() {
        let data = stream(10_000, 40.0, 3);
        let view = || data.iter().map(|(s, y)| (s.as_slice(), *y));
        let (t_best, nll_best) = best_temperature(view(), 1.0, 1000.0, 1000);
        let mut fit = TemperatureFit::new(10_000, Calibration::default());
        for (s, y) in view() {
            fit.observe(s, y);
        }
        let t = f64::from(fit.temperature());
        let nll_at = |t: f64| {
            view()
                .map(|(s, y)| nll_and_derivatives(s, y, 1.0 / t).0)
                .sum::<f64>()
                / data.len() as f64
        };
        assert!(
            t_best > 10.0,
            "the raw scores are overconfident: T* = {t_best}"
        );
        assert!(
            (t / t_best - 1.0).abs() < 0.03,
            "online {t} vs grid {t_best}"
        );
        assert!(nll_at(t) <= nll_best * 1.002, "{} vs {nll_best}", nll_at(t));
        assert!(nll_at(1.0) > 3.0 * nll_best, "T = 1 is far worse");
        let mean = fit.log_loss().expect("observed");
        assert!(mean.is_finite() && mean > nll_best);
    }

    /// With a short memory the fit follows scores that change scale halfway.
    #[test]
    fn windowed_fit_tracks_a_change_of_scale() {
        let mut fit = TemperatureFit::new(1000, Calibration::default());
        let (a, b) = (stream(5000, 10.0, 4), stream(5000, 80.0, 5));
        for (s, y) in a.iter().chain(&b) {
            fit.observe(s, *y);
        }
        let view = || b.iter().map(|(s, y)| (s.as_slice(), *y));
        let (t_best, _) = best_temperature(view(), 1.0, 1000.0, 500);
        let t = f64::from(fit.temperature());
        assert!(
            (t / t_best - 1.0).abs() < 0.15,
            "online {t} vs grid {t_best}"
        );
    }

    /// Temperature scaling keeps the argmax and sums to 1; T = 1 is the plain softmax.
    #[test]
    fn probabilities_are_a_tempered_softmax() {
        let s = [300.0, 240.0, 290.0];
        let mut p = [0.0; 3];
        Calibration {
            temperature: 20.0,
            ..Calibration::default()
        }
        .probabilities(&s, &mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > p[2] && p[2] > p[1]);
        // softmax([0, -3, -0.5]) by hand.
        let z = 1.0 + (-3.0f32).exp() + (-0.5f32).exp();
        assert!((p[0] - 1.0 / z).abs() < 1e-6);
        Calibration::default().probabilities(&s, &mut p);
        assert!(p[0] > 0.9999);
    }

    /// Non-finite scores are skipped and leave the fit as it was.
    #[test]
    fn non_finite_scores_are_ignored() {
        let mut fit = TemperatureFit::new(
            10,
            Calibration {
                temperature: 5.0,
                ..Calibration::default()
            },
        );
        let before = fit.clone();
        assert_eq!(fit.observe(&[f32::NAN, 1.0], 0), None);
        assert_eq!(fit, before);
    }
}
