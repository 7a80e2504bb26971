//! Weight averaging (docs/algorithm.md §7): an exponential moving average of a trainer's weights,
//! `avg ← decay·avg + (1 − decay)·live` every `average_every_samples` learned samples. Per-sample
//! SGD at a constant rate leaves the live weights noisy; the average classifies better, so it is
//! what `ffd train` evaluates and saves and what the service serves. Shared by both, so they
//! average the same way.

use serde::{Deserialize, Serialize};

use crate::ff::error::FfError;
use crate::ff::model::Model;
use crate::ff::short_float;

/// Weight-averaging hyper-parameters (`[average]` of `ffd serve`'s configuration; the same
/// flags in `ffd train`).
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AverageConfig {
    /// Decay of the weight average, in [0, 1): every `average_every_samples` samples,
    /// avg = decay·avg + (1 − decay)·live. 0 turns averaging off (the live weights are used).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = AverageConfig::default().average_decay))]
    #[serde(serialize_with = "short_float::serialize")]
    pub average_decay: f32,
    /// Learned samples between two updates of the weight average.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = AverageConfig::default().average_every_samples))]
    pub average_every_samples: u64,
}

impl Default for AverageConfig {
    fn default() -> Self {
        Self {
            // Off: `ffd train` evaluates the live weights unless asked; the service turns it on
            // (see `service::config::Config::default`).
            average_decay: 0.0,
            average_every_samples: 100,
        }
    }
}

impl AverageConfig {
    /// Checks both fields' ranges.
    pub fn validate(&self) -> Result<(), FfError> {
        if !(0.0..1.0).contains(&self.average_decay) {
            return Err(FfError::Config {
                key: "average_decay",
                reason: "must be in [0, 1)".into(),
            });
        }
        if self.average_every_samples == 0 {
            return Err(FfError::Config {
                key: "average_every_samples",
                reason: "must be > 0".into(),
            });
        }
        Ok(())
    }

    /// Whether averaging is on.
    pub fn enabled(&self) -> bool {
        self.average_decay > 0.0
    }
}

/// The running average of a model's weights, and the samples since it was last updated.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightAverage {
    decay: f32,
    every: u64,
    since: u64,
    model: Model,
}

impl WeightAverage {
    /// An average that starts at `start` (the live model when averaging begins); `None` when
    /// `config` turns averaging off. Fails with `Config` when `config` is out of range.
    pub fn new(config: &AverageConfig, start: Model) -> Result<Option<Self>, FfError> {
        config.validate()?;
        Ok(config.enabled().then(|| Self {
            decay: config.average_decay,
            every: config.average_every_samples,
            since: 0,
            model: start,
        }))
    }

    /// An average restored from a checkpoint: `model` with `since` samples counted since its
    /// last update.
    pub fn restore(
        config: &AverageConfig,
        model: Model,
        since: u64,
    ) -> Result<Option<Self>, FfError> {
        Ok(Self::new(config, model)?.map(|mut a| {
            a.since = since;
            a
        }))
    }

    /// Whether the next learned sample completes an averaging period: the caller then settles
    /// the trainer and calls [`WeightAverage::update`]. Split this way so the trainer's pending
    /// update is applied only when the average needs the weights.
    pub fn observe(&mut self) -> bool {
        self.since += 1;
        self.since >= self.every
    }

    /// Folds `live` into the average and restarts the count. Fails when `live` is
    /// not shaped like the average (`Config`, key `network`).
    pub fn update(&mut self, live: &Model) -> Result<(), FfError> {
        self.since = 0;
        self.model.blend_toward(live, 1.0 - self.decay)
    }

    /// The averaged model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Samples learned since the last update (saved in checkpoints).
    pub fn since_update(&self) -> u64 {
        self.since
    }
}
