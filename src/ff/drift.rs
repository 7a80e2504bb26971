//! Drift detection on the prequential error stream (docs/algorithm.md §6.1): the Page–Hinkley
//! test as River's `drift.PageHinkley` defines it, watching for an *increase* of the error rate
//! (River's `mode = "up"`). A stream learner that keeps learning adapts to a change on its own;
//! the detector says when it happened, so that what was averaged over the old concept (the
//! served weight average) can be dropped at once instead of being forgotten slowly.

use serde::{Deserialize, Serialize};

use crate::ff::error::FfError;
use crate::ff::optimiser::Boost;
use crate::ff::short_float;

/// Page–Hinkley parameters (`[drift]` of `ffd serve`'s configuration). The defaults are River's
/// except `drift_delta` and `drift_alpha`, which River tunes for real-valued streams: on a 0/1
/// error stream (σ² = 0.09 at 10 % errors) River's defaults raise false alarms on a stationary
/// stream (the first after 15 126 samples in the unit test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Watch the prequential errors for drift (false: no detector).
    pub drift_detection: bool,
    /// Alarm when the cumulative excess of errors over their running mean, less the tolerance,
    /// rises this far above its minimum (River's `threshold`, λ). In errors: after an abrupt
    /// change from error rate `a` to `b`, detection takes about `λ / (b − a)` samples.
    pub drift_threshold: f64,
    /// Tolerance δ subtracted from every deviation: error increases smaller than this per sample
    /// never accumulate (River's `delta`). 0.05 rather than River's 0.005: without fading, the
    /// chance that noise alone climbs λ is about `exp(−2δλ/σ²)`, out of reach at 0.05, while a
    /// jump of the error rate by `d` is still found after about `λ/(d − δ)` samples.
    pub drift_delta: f64,
    /// Fading factor α of the cumulative sum (River's `alpha`). 1 (no fading) rather than
    /// River's 0.9999: a faded sum settles near `−δ/(1 − α)` while its minimum stays at the
    /// lowest dip, so on a long stationary stream the gap between them reaches λ by noise.
    pub drift_alpha: f64,
    /// Samples seen (since the start or the last detection) before an alarm is possible
    /// (River's `min_instances`).
    pub drift_min_samples: u64,
    /// On an alarm the learning rate restarts at `drift_lr_boost` times `[train] lr` and fades
    /// back to it (docs/algorithm.md §2.1); 1: no boost after a drift. Its own setting rather
    /// than `[train] lr_boost`: a trained model relearning a changed concept takes a larger
    /// step than a random one learning its first samples (BENCHMARKS.md §8).
    #[serde(serialize_with = "short_float::serialize")]
    pub drift_lr_boost: f32,
    /// Samples after which the drift boost's excess over 1 has halved.
    pub drift_lr_boost_samples: u64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            drift_detection: true,
            drift_threshold: 50.0,
            drift_delta: 0.05,
            drift_alpha: 1.0,
            drift_min_samples: 30,
            drift_lr_boost: 2.0,
            drift_lr_boost_samples: 10_000,
        }
    }
}

impl DriftConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), FfError> {
        let bad = |key, reason: &str| {
            Err(FfError::Config {
                key,
                reason: reason.into(),
            })
        };
        if !(self.drift_threshold.is_finite() && self.drift_threshold > 0.0) {
            return bad("drift_threshold", "must be a finite number > 0");
        }
        if !(self.drift_delta.is_finite() && self.drift_delta >= 0.0) {
            return bad("drift_delta", "must be a finite number >= 0");
        }
        if !(self.drift_alpha > 0.0 && self.drift_alpha <= 1.0) {
            return bad("drift_alpha", "must be in (0, 1]");
        }
        if !(self.drift_lr_boost.is_finite() && self.drift_lr_boost >= 1.0) {
            return bad("drift_lr_boost", "must be a finite number >= 1");
        }
        if self.drift_lr_boost_samples == 0 {
            return bad("drift_lr_boost_samples", "must be > 0");
        }
        Ok(())
    }
}

impl DriftConfig {
    /// The learning-rate boost restarted by an alarm.
    pub fn lr_boost(&self) -> Boost {
        Boost {
            factor: self.drift_lr_boost,
            samples: self.drift_lr_boost_samples,
        }
    }
}

/// The Page–Hinkley test for an increase in the mean of a stream `x_t`:
///
/// ```text
/// x̄_t = mean(x_1..x_t)      m_t = α·m_{t−1} + (x_t − x̄_t − δ)      M_t = min(M_{t−1}, m_t)
/// drift when t ≥ min_samples and m_t − M_t > λ
/// ```
///
/// After a detection every statistic starts afresh with the next value, as in River.
#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkley {
    config: DriftConfig,
    n: u64,
    mean: f64,
    sum: f64,
    min: f64,
    detected: bool,
}

impl PageHinkley {
    /// A detector with `config`'s parameters (range-checked by [`DriftConfig::validate`]).
    pub fn new(config: DriftConfig) -> Self {
        Self {
            config,
            n: 0,
            mean: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            detected: false,
        }
    }

    /// Folds in one value (for the error stream: 1 for a wrong prediction, 0 for a right one)
    /// and returns whether drift is detected at it.
    pub fn update(&mut self, x: f64) -> bool {
        if self.detected {
            *self = Self::new(self.config.clone());
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        let c = &self.config;
        self.sum = c.drift_alpha * self.sum + (x - self.mean - c.drift_delta);
        self.min = self.min.min(self.sum);
        self.detected = self.n >= c.drift_min_samples && self.sum - self.min > c.drift_threshold;
        self.detected
    }

    /// Values seen since the start or the last detection.
    pub fn samples(&self) -> u64 {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// River's defaults.
    fn river() -> DriftConfig {
        DriftConfig {
            drift_delta: 0.005,
            drift_alpha: 1.0 - 1e-4,
            ..DriftConfig::default()
        }
    }

    /// Reference: River's `drift.PageHinkley(mode="up")` update rule with River's defaults,
    /// recomputed step by step beside the detector on 30 zeros followed by ones; the first
    /// alarm comes where the recurrence first exceeds λ = 50. The running mean climbs with the
    /// ones, so the `k`-th adds about `30/(30 + k)`: the alarm needs
    /// `30·ln((30 + K)/30) ≈ 50`, i.e. `K ≈ 30·(e^(5/3) − 1) ≈ 129` ones, a few more with δ.
    #[test]
    fn matches_the_recurrence_on_a_step() {
        let mut ph = PageHinkley::new(river());
        for _ in 0..30 {
            assert!(!ph.update(0.0));
        }
        let (mut n, mut mean, mut sum, mut min) = (30.0, 0.0, 0.0f64, 0.0f64);
        for _ in 0..30 {
            sum = 0.9999 * sum - 0.005;
            min = min.min(sum);
        }
        let mut first = None;
        for i in 1..=200 {
            n += 1.0;
            mean += (1.0 - mean) / n;
            sum = 0.9999 * sum + (1.0 - mean - 0.005);
            min = min.min(sum);
            let expected = sum - min > 50.0;
            let got = ph.update(1.0);
            if first.is_none() {
                assert_eq!(got, expected, "one number {i}");
                if got {
                    first = Some(i);
                }
            }
        }
        let first = first.expect("detected");
        assert!(
            (129..=160).contains(&first),
            "detected at one number {first}"
        );
    }

    /// A stationary Bernoulli(0.1) error stream of 50 000 values raises no alarm under the
    /// defaults (under River's it does, which is why the defaults depart); a jump to 0.9
    /// (a label permutation of a 90 % accurate model) is detected within 100 samples.
    #[test]
    fn quiet_on_a_stationary_stream_and_quick_on_a_jump() {
        let errors = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50_000).map(move |_| f64::from(u8::from(rng.gen_bool(0.1))))
        };
        let mut river = PageHinkley::new(river());
        assert!(
            errors(11).any(|x| river.update(x)),
            "River's defaults false-alarm"
        );
        for seed in [11, 12, 13] {
            let mut ph = PageHinkley::new(DriftConfig::default());
            assert!(
                !errors(seed).any(|x| ph.update(x)),
                "false alarm, seed {seed}"
            );
        }
        let mut rng = StdRng::seed_from_u64(11);
        let mut ph = PageHinkley::new(DriftConfig::default());
        for i in 0..50_000 {
            let x = f64::from(u8::from(rng.gen_bool(0.1)));
            assert!(!ph.update(x), "false alarm at {i}");
        }
        let at = (1..=1000).find(|_| ph.update(f64::from(u8::from(rng.gen_bool(0.9)))));
        let at = at.expect("the jump is detected");
        assert!(at <= 100, "detected {at} samples after the jump");
        ph.update(0.0);
        assert_eq!(ph.samples(), 1, "statistics restart after an alarm");
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(DriftConfig::default().validate().is_ok());
        for bad in [
            DriftConfig {
                drift_threshold: 0.0,
                ..Default::default()
            },
            DriftConfig {
                drift_alpha: 1.5,
                ..Default::default()
            },
            DriftConfig {
                drift_delta: f64::NAN,
                ..Default::default()
            },
            DriftConfig {
                drift_lr_boost: 0.5,
                ..Default::default()
            },
            DriftConfig {
                drift_lr_boost_samples: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
