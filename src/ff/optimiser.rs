//! The optimiser: SGD with optional heavy-ball momentum, weight decay, a learning-rate schedule,
//! and Hinton's peer normalisation (docs/algorithm.md §2). Its state is per layer and local:
//! nothing here mixes layers.

use serde::{Deserialize, Serialize};

use crate::ff::error::FfError;
use crate::ff::short_float;

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate forever (the streaming service's choice: a stream has no end).
    #[default]
    Constant,
    /// Constant for the first `decay_start` fraction of `total_steps`, then linear to zero at
    /// `total_steps` (Hinton's code decays over the second half).
    LinearDecay {
        total_steps: u64,
        #[serde(serialize_with = "short_float::serialize")]
        decay_start: f32,
    },
}

impl LrSchedule {
    /// Whether the rate never changes (the configuration then leaves `lr_schedule` out).
    pub fn is_constant(&self) -> bool {
        *self == LrSchedule::Constant
    }

    /// The multiplier on the base rate after `step` updates.
    pub fn factor(&self, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::LinearDecay {
                total_steps,
                decay_start,
            } => {
                let total = total_steps.max(1) as f64;
                let t = step as f64 / total;
                let start = f64::from(decay_start.clamp(0.0, 1.0));
                if t <= start {
                    1.0
                } else if t >= 1.0 {
                    0.0
                } else {
                    ((1.0 - t) / (1.0 - start)) as f32
                }
            }
        }
    }
}

/// Hyper-parameters of the per-sample optimiser (flattened into `TrainConfig`: `[train]` keys
/// of `ffd serve`, flags of `ffd train`).
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimiserConfig {
    /// Base learning rate per sample update. Per-sample rates sit ~100× below the batch-100
    /// rates of Hinton's code (docs/algorithm.md §9).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().lr))]
    #[serde(serialize_with = "short_float::serialize")]
    pub lr: f32,
    /// Heavy-ball momentum β (v = βv + g; w −= lr·v), in [0, 1); 0 disables it and its state.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().momentum))]
    #[serde(serialize_with = "short_float::serialize")]
    pub momentum: f32,
    /// L2 weight decay, applied as part of the gradient.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().weight_decay))]
    #[serde(serialize_with = "short_float::serialize")]
    pub weight_decay: f32,
    /// Peer-normalisation strength λ (0 turns it off).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().peer_norm))]
    #[serde(serialize_with = "short_float::serialize")]
    pub peer_norm: f32,
    /// Per-sample decay of each unit's mean-activity average used by peer normalisation.
    /// 0.999 matches Hinton's 0.9 per batch of 100.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().peer_decay))]
    #[serde(serialize_with = "short_float::serialize")]
    pub peer_decay: f32,
    /// Learning-rate schedule. Not a configuration key: only a caller that knows the run's
    /// length can decay (`ffd train --lr-decay-start`); a stream has no end to decay towards,
    /// and `ffd serve` refuses anything but constant. Recorded in model files when it decays.
    #[cfg_attr(feature = "cli", arg(skip))]
    #[serde(skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// Multiplier of the learning rate at the start of a stream, fading to 1 (`ffd serve`
    /// restarts the rate after a detected drift with `[drift] drift_lr_boost` instead): `lr·(1 + (lr_boost − 1)·τ/(τ + t))` after `t` samples,
    /// `τ = lr_boost_samples` (docs/algorithm.md §2.1). 1 turns it off.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().lr_boost))]
    #[serde(serialize_with = "short_float::serialize")]
    pub lr_boost: f32,
    /// Samples after which the boost's excess over 1 has halved.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = OptimiserConfig::default().lr_boost_samples))]
    pub lr_boost_samples: u64,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            momentum: 0.0,
            weight_decay: 1e-3,
            peer_norm: 0.03,
            peer_decay: 0.999,
            lr_schedule: LrSchedule::Constant,
            lr_boost: 1.0,
            lr_boost_samples: 5000,
        }
    }
}

impl OptimiserConfig {
    /// The learning rate after `samples` updates: the base rate times the schedule's factor.
    #[inline]
    pub fn lr_at(&self, samples: u64) -> f32 {
        self.lr * self.lr_schedule.factor(samples)
    }

    /// The boost at the start of a stream (`lr_boost` over `lr_boost_samples`).
    #[inline]
    pub fn boost(&self) -> Boost {
        Boost {
            factor: self.lr_boost,
            samples: self.lr_boost_samples,
        }
    }

    /// The start boost's multiplier `t` samples after the start of the stream:
    /// `1 + (lr_boost − 1)·τ/(τ + t)`.
    #[inline]
    pub fn boost_at(&self, t: u64) -> f32 {
        self.boost().at(t)
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), FfError> {
        let bad = |key, reason: &str| {
            Err(FfError::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be a finite number > 0");
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", "must be >= 0");
        }
        if !(self.peer_norm.is_finite() && self.peer_norm >= 0.0) {
            return bad("peer_norm", "must be >= 0");
        }
        if !(0.0..1.0).contains(&self.peer_decay) {
            return bad("peer_decay", "must be in [0, 1)");
        }
        if !(self.lr_boost.is_finite() && self.lr_boost >= 1.0) {
            return bad("lr_boost", "must be a finite number >= 1");
        }
        if self.lr_boost_samples == 0 {
            return bad("lr_boost_samples", "must be > 0");
        }
        if let LrSchedule::LinearDecay { decay_start, .. } = self.lr_schedule {
            if !(0.0..=1.0).contains(&decay_start) {
                return bad("lr_schedule.decay_start", "must be in [0, 1]");
            }
        }
        Ok(())
    }
}

/// A learning-rate boost (docs/algorithm.md §2.1): the rate is multiplied by `factor` when the
/// boost (re)starts and the excess over 1 halves every `samples` samples. The start of a stream
/// has one (`lr_boost`, `lr_boost_samples`); the service gives a detected drift its own
/// (`[drift] drift_lr_boost`), since relearning from a trained model is not learning from a
/// random one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boost {
    /// The multiplier when the boost (re)starts, >= 1 (1: no boost).
    pub factor: f32,
    /// Samples after which the excess over 1 has halved (> 0).
    pub samples: u64,
}

impl Boost {
    /// The multiplier `t` samples after the (re)start: `1 + (factor − 1)·τ/(τ + t)`.
    #[inline]
    pub fn at(&self, t: u64) -> f32 {
        if self.factor == 1.0 {
            return 1.0;
        }
        let tau = self.samples.max(1) as f64;
        (1.0 + f64::from(self.factor - 1.0) * tau / (tau + t as f64)) as f32
    }
}

/// One layer's optimiser state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerState {
    /// Momentum buffer for the weights, `[out, in]` row-major; empty when momentum is 0.
    pub velocity_weight: Vec<f32>,
    /// Momentum buffer for the biases; empty when momentum is 0.
    pub velocity_bias: Vec<f32>,
    /// Running mean activity of each unit on positive data (peer normalisation).
    pub mean_activity: Vec<f32>,
}

impl LayerState {
    /// Checks that `saved` has this state's buffers, size for size: a state restored from a
    /// file must fit the optimiser it continues under (e.g. no momentum buffers without
    /// momentum).
    pub(crate) fn check_fits(&self, saved: &LayerState) -> Result<(), FfError> {
        FfError::check_len(
            "momentum buffer (weights)",
            self.velocity_weight.len(),
            saved.velocity_weight.len(),
        )?;
        FfError::check_len(
            "momentum buffer (biases)",
            self.velocity_bias.len(),
            saved.velocity_bias.len(),
        )?;
        FfError::check_len(
            "mean activities",
            self.mean_activity.len(),
            saved.mean_activity.len(),
        )
    }

    /// Fresh state for a layer of shape `[out, in]`.
    pub fn new(out: usize, inp: usize, config: &OptimiserConfig) -> Self {
        let with_momentum = config.momentum > 0.0;
        Self {
            velocity_weight: if with_momentum {
                vec![0.0; out * inp]
            } else {
                Vec::new()
            },
            velocity_bias: if with_momentum {
                vec![0.0; out]
            } else {
                Vec::new()
            },
            mean_activity: vec![0.0; out],
        }
    }

    /// Folds one positive sample's activity into the running means.
    pub fn observe_positive(&mut self, h: &[f32], decay: f32) {
        for (m, &x) in self.mean_activity.iter_mut().zip(h) {
            *m = decay * *m + (1.0 - decay) * x;
        }
    }

    /// Adds the peer-normalisation term to a unit-wise loss gradient `dL/dz`: units less active
    /// than their peers on average are pushed up, more active ones down. Hinton's code adds
    /// `λ(mean − m_j)` to the ascent direction; this is the same term for descent. It is not
    /// gated by the ReLU, so a dead unit still receives it and can come back.
    pub fn add_peer_term(&self, lambda: f32, dz: &mut [f32]) {
        if lambda == 0.0 || self.mean_activity.is_empty() {
            return;
        }
        let mean = self.mean_activity.iter().sum::<f32>() / self.mean_activity.len() as f32;
        for (d, &m) in dz.iter_mut().zip(&self.mean_activity) {
            *d -= lambda * (mean - m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_decay_is_constant_then_linear() {
        let s = LrSchedule::LinearDecay {
            total_steps: 100,
            decay_start: 0.5,
        };
        assert_eq!(s.factor(0), 1.0);
        assert_eq!(s.factor(50), 1.0);
        assert!((s.factor(75) - 0.5).abs() < 1e-6);
        assert_eq!(s.factor(100), 0.0);
        assert_eq!(s.factor(1000), 0.0);
    }

    #[test]
    fn boost_fades_to_one() {
        let c = OptimiserConfig {
            lr_boost: 5.0,
            lr_boost_samples: 100,
            ..Default::default()
        };
        assert_eq!(c.boost_at(0), 5.0);
        assert!((c.boost_at(100) - 3.0).abs() < 1e-6);
        assert!(c.boost_at(1_000_000) < 1.001);
        assert_eq!(OptimiserConfig::default().boost_at(0), 1.0);
    }

    #[test]
    fn peer_term_pushes_quiet_units_up() {
        let state = LayerState {
            velocity_weight: vec![],
            velocity_bias: vec![],
            mean_activity: vec![0.0, 2.0],
        };
        let mut dz = vec![0.0, 0.0];
        state.add_peer_term(0.1, &mut dz);
        // Descent subtracts dz: the quiet unit's pre-activation rises, the busy one's falls.
        assert!(dz[0] < 0.0 && dz[1] > 0.0);
    }

    #[test]
    fn validate_rejects_bad_values() {
        let c = OptimiserConfig {
            momentum: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            c.validate(),
            Err(FfError::Config {
                key: "momentum",
                ..
            })
        ));
    }
}
