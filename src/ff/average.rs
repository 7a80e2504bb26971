//! Weight averaging (docs/algorithm.md §7): an exponential moving average of a trainer's weights,
//! `avg ← decay·avg + (1 − decay)·live` every `average_every_samples` learned samples. Per-sample
//! SGD at a constant rate leaves the live weights noisy; the average classifies better, so it is
//! what `ffd train` evaluates and saves and what the service serves. Shared by both, so they
//! average the same way. The average has a temperature of its own (docs/algorithm.md §5.1),
//! fitted to its own prequential predictions: it is sharper than the live weights, and the live
//! model's temperature leaves it underconfident.

use serde::{Deserialize, Serialize};

use crate::ff::calibration::TemperatureFit;
use crate::ff::classify::Classifier;
use crate::ff::error::FfError;
use crate::ff::model::{Model, Workspace};
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
    /// The average's temperature is fitted to its own prediction of every N-th sample, made
    /// before the sample is learned (one extra classification per N samples); 0: the average
    /// takes the live model's temperature.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = AverageConfig::default().average_calibration_every))]
    pub average_calibration_every: u64,
    /// Warm-up: the n-th update (from 0, counted since the average started or restarted) uses
    /// the decay `min(average_decay, (1 + n)/(10 + n))`, so a young average follows the live
    /// weights closely instead of dragging its random start along (docs/algorithm.md §7).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = AverageConfig::default().average_warmup, action = clap::ArgAction::Set))]
    pub average_warmup: bool,
}

impl Default for AverageConfig {
    fn default() -> Self {
        Self {
            // Off: `ffd train` evaluates the live weights unless asked; the service turns it on
            // (see `service::config::Config::default`).
            average_decay: 0.0,
            average_every_samples: 100,
            // Measured on MNIST (BENCHMARKS.md): the live temperature leaves the average's ECE
            // at 0.05; its own fit on a quarter of the samples brings it near the best
            // after-the-fact temperature for about a tenth more learning time.
            average_calibration_every: 4,
            average_warmup: true,
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
#[derive(Debug, Clone)]
pub struct WeightAverage {
    decay: f32,
    every: u64,
    since: u64,
    /// Updates made since the average started; `None` when warm-up is off (or a restored
    /// average, taken as warmed up).
    updates: Option<u64>,
    model: Model,
    /// The average's own temperature fit, and its sampling period and counter.
    fit: Option<TemperatureFit>,
    calibrate_every: u64,
    until_calibration: u64,
    ws: Workspace,
}

impl PartialEq for WeightAverage {
    /// Same parameters, model and fit (the workspace is scratch).
    fn eq(&self, other: &Self) -> bool {
        (self.decay, self.every, self.since, self.calibrate_every)
            == (other.decay, other.every, other.since, other.calibrate_every)
            && self.model == other.model
            && self.fit == other.fit
    }
}

impl WeightAverage {
    /// An average that starts at `start` (the live model when averaging begins); `None` when
    /// `config` turns averaging off. Fails with `Config` when `config` is out of range.
    pub fn new(config: &AverageConfig, start: Model) -> Result<Option<Self>, FfError> {
        config.validate()?;
        // The fit forgets at the pace of the average: its weights remember about
        // `every / (1 − decay)` samples, of which every `calibrate_every`-th is observed.
        let memory = config.average_every_samples as f64 / f64::from(1.0 - config.average_decay);
        let fit = (config.average_calibration_every > 0).then(|| {
            let window = (memory / config.average_calibration_every as f64).ceil() as u64;
            TemperatureFit::new(window.max(1), start.calibration())
        });
        Ok(config.enabled().then(|| Self {
            decay: config.average_decay,
            every: config.average_every_samples,
            since: 0,
            updates: config.average_warmup.then_some(0),
            fit,
            calibrate_every: config.average_calibration_every,
            until_calibration: 0,
            ws: Workspace::new(start.config()),
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
            a.updates = None;
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
    /// not shaped like the average (`Config`, key `network`). Without a fit of its own, the
    /// average takes `live`'s temperature.
    pub fn update(&mut self, live: &Model) -> Result<(), FfError> {
        self.since = 0;
        let decay = match self.updates.as_mut() {
            Some(n) => {
                let warm = (1.0 + *n as f32) / (10.0 + *n as f32);
                *n = n.saturating_add(1);
                self.decay.min(warm)
            }
            None => self.decay,
        };
        self.model.blend_toward(live, 1.0 - decay)?;
        if self.fit.is_none() {
            self.model.calibration = live.calibration;
        }
        // The goodness weight is fitted on the live model's predictions only.
        self.model.calibration.goodness_weight = live.calibration.goodness_weight;
        Ok(())
    }

    /// Shows the average a labelled sample *before* the live model learns it: every
    /// `average_calibration_every`-th time, the average classifies it and the prediction
    /// updates the average's temperature. Unchecked like `Trainer::learn_unchecked`: the caller
    /// has validated `features` and `label`.
    pub fn calibrate(&mut self, features: &[f32], label: usize, classifier: Classifier) {
        let Some(fit) = self.fit.as_mut() else {
            return;
        };
        if self.until_calibration > 0 {
            self.until_calibration -= 1;
            return;
        }
        self.until_calibration = self.calibrate_every - 1;
        self.model
            .predict_unchecked(&mut self.ws, features, classifier);
        if fit.observe(&self.ws.scores, label).is_some() {
            self.model.calibration.temperature = fit.temperature();
        }
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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::ff::model::NetworkConfig;

    fn net(seed: u64) -> Model {
        let config = NetworkConfig {
            inputs: 6,
            classes: 3,
            hidden: vec![5],
            ..Default::default()
        };
        Model::new(config, &mut StdRng::seed_from_u64(seed)).expect("valid config")
    }

    fn distance(a: &Model, b: &Model) -> f32 {
        (&a.layers()[0].weight - &b.layers()[0].weight)
            .iter()
            .map(|d| d * d)
            .sum::<f32>()
            .sqrt()
    }

    /// With warm-up, a young average moves most of the way to the live weights at its first
    /// update (decay 0.1); without, it moves 2 % (decay 0.98). Once warmed up, both use 0.98.
    #[test]
    fn warm_up_follows_the_live_weights_first() {
        let (start, live) = (net(1), net(2));
        let config = |average_warmup| AverageConfig {
            average_decay: 0.98,
            average_warmup,
            ..Default::default()
        };
        let mut warm = WeightAverage::new(&config(true), start.clone())
            .expect("valid")
            .expect("on");
        let mut cold = WeightAverage::new(&config(false), start.clone())
            .expect("valid")
            .expect("on");
        let before = distance(&start, &live);
        warm.update(&live).expect("same shape");
        cold.update(&live).expect("same shape");
        assert!((distance(warm.model(), &live) - 0.1 * before).abs() < 1e-3 * before);
        assert!((distance(cold.model(), &live) - 0.98 * before).abs() < 1e-3 * before);
        // A restored average counts as warmed up.
        let mut restored = WeightAverage::restore(&config(true), start, 0)
            .expect("valid")
            .expect("on");
        restored.update(&live).expect("same shape");
        assert!((distance(restored.model(), &live) - 0.98 * before).abs() < 1e-3 * before);
    }
}
