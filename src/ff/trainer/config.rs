//! `TrainConfig`: everything a `Trainer` is told beyond the network's shape. One struct for
//! three readers: `ffd serve`'s `[train]` section (serde), `ffd train`'s flags (clap, behind the
//! `cli` feature) and the model file's record of how a model was trained. Each default lives
//! once, in `Default`.

use serde::{Deserialize, Serialize};

use crate::ff::classify::Classifier;
use crate::ff::error::FfError;
use crate::ff::negatives::NegativeStrategy;
use crate::ff::optimiser::OptimiserConfig;
use crate::ff::schedule::{ScheduleMode, SleepMethod};
use crate::ff::short_float;

/// Training hyper-parameters beyond the network's shape.
///
/// The optimiser's keys are flattened into the same table (`[train] lr = ...`): one section,
/// one flag per key. A type error in a flattened key names the section, not the key (serde
/// reads flattened fields from a buffer); range errors always name the key.
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser for the FF layers.
    #[serde(flatten)]
    #[cfg_attr(feature = "cli", command(flatten))]
    pub optimiser: OptimiserConfig,
    /// Samples whose gradients are averaged into one update. 1, the streaming path, updates
    /// after every sample; `ffd serve` accepts only 1.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().batch_size))]
    pub batch_size: usize,
    /// How negatives are made: hard (a wrong label drawn from the model's beliefs), random, or
    /// hybrid (unsupervised: two real samples mixed under a random mask).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, default_value_t = TrainConfig::default().negatives)
    )]
    pub negatives: NegativeStrategy,
    /// Temperature τ of the softmax over class scores that hard negatives are drawn from.
    /// Goodness scores are sums of per-layer logits `(G − θ)/T` and very peaked at τ = 1,
    /// which would always pick the single strongest competitor.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().negative_temperature))]
    #[serde(serialize_with = "short_float::serialize")]
    pub negative_temperature: f32,
    /// How samples are classified (predictions, hard negatives, evaluation): goodness (one
    /// pass per label), softmax (a linear head; needs train_head) or combined (the sum of both
    /// scores; needs train_head).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, default_value_t = TrainConfig::default().classifier)
    )]
    pub classifier: Classifier,
    /// Train the softmax head on positive samples (needed by the softmax classifier; off by
    /// default, when nothing reads it).
    #[cfg_attr(feature = "cli", arg(long))]
    pub train_head: bool,
    /// Learning rate of the softmax head.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().head_lr))]
    #[serde(serialize_with = "short_float::serialize")]
    pub head_lr: f32,
    /// Learning schedule: interleaved (a positive and a negative update per sample) or sleep
    /// (positive updates while awake, negative updates from the replay buffer while asleep).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, default_value_t = TrainConfig::default().schedule)
    )]
    pub schedule: ScheduleMode,
    /// What a sleep replays (sleep schedule): negatives (negative updates only), symmetric
    /// (negative updates, each against its positive's goodness), pairs (a positive and a
    /// negative update per replayed sample, the wake's updates kept) or consolidate (the wake's
    /// updates are fast weights, dropped at the sleep, which replays pairs into the slow
    /// weights; the replay buffer should hold a whole cycle).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, default_value_t = TrainConfig::default().sleep_method)
    )]
    pub sleep_method: SleepMethod,
    /// Learning rate of the wake's fast weights under the `consolidate` sleep, as a multiple
    /// of the rate: they serve only the predictions made while awake (every update that lasts
    /// is made in the sleep). 0: the wake makes no update; it classifies with the slow weights,
    /// as the last sleep left them, and stores its samples for the sleep (docs/algorithm.md
    /// §6.2).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().wake_lr_scale))]
    pub wake_lr_scale: f32,
    /// Sleep after this many wake samples (sleep schedule).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().sleep_every_samples))]
    pub sleep_every_samples: usize,
    /// Sleep sooner while the stream is young (sleep schedule): a wake lasts at most this
    /// fraction of the samples learned since the start or the last detected drift (at least
    /// one sample), up to `sleep_every_samples`. A young or just-changed model then learns each
    /// sample soon after it arrives, a settled one sleeps the long sleep (docs/algorithm.md
    /// §6.3). 0: every wake lasts `sleep_every_samples`.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().sleep_ramp))]
    pub sleep_ramp: f64,
    /// Or after this many seconds with at least one wake sample, whichever comes first (sleep
    /// schedule; 0: never by time). The engine reads no clock: the caller that owns one asks
    /// for the sleep (`Trainer::sleep`).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().sleep_every_seconds))]
    pub sleep_every_seconds: f64,
    /// Recent samples kept for sleep-time (and hybrid) negatives.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().replay_capacity))]
    pub replay_capacity: usize,
    /// Negative updates per sleep; 0 means as many as wake samples since the last sleep, which
    /// keeps positive and negative updates balanced.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().negatives_per_sleep))]
    pub negatives_per_sleep: usize,
    /// Layer collaboration: each layer's loss reads the summed logit `Σ_k (G_k − θ_k)/T` of
    /// every layer for the sample instead of its own, the other layers' terms held constant, so
    /// a layer stops pushing once the network as a whole is sure; updates stay local to their
    /// layer (docs/algorithm.md §1.7). Off by default.
    #[cfg_attr(feature = "cli", arg(long))]
    pub layer_collaboration: bool,
    /// Samples of memory of the online temperature fit that calibrates the reported
    /// probabilities (docs/algorithm.md §5.1); 0 turns the fit off and the model keeps the
    /// temperature it has (1 for a new one: the raw softmax of the scores). The fit reads the
    /// prediction of every sample before it is learned, so it needs one classification per
    /// sample, which the service makes anyway.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = TrainConfig::default().calibration_window))]
    pub calibration_window: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimiser: OptimiserConfig::default(),
            batch_size: 1,
            negatives: NegativeStrategy::Hard,
            negative_temperature: 1.0,
            classifier: Classifier::Goodness,
            train_head: false,
            head_lr: 1e-3,
            // `ffd serve` departs from this (sleep): see `service::config::Config::default`.
            schedule: ScheduleMode::Interleaved,
            // Measured best on MNIST.
            sleep_every_samples: 16,
            sleep_ramp: 0.0,
            sleep_method: SleepMethod::Negatives,
            wake_lr_scale: 1.0,
            // Off, so offline training stays deterministic; `ffd serve` sets 5.
            sleep_every_seconds: 0.0,
            replay_capacity: 1024,
            negatives_per_sleep: 0,
            layer_collaboration: false,
            // Measured: on 20 000 MNIST samples 500 and 2000 calibrate the same (ECE 0.007);
            // on a short stream a model still improving fast is tracked better by 500.
            calibration_window: 500,
        }
    }
}

impl TrainConfig {
    /// Checks every field, and that the parts fit together.
    pub fn validate(&self) -> Result<(), FfError> {
        let bad = |key, reason: &str| {
            Err(FfError::Config {
                key,
                reason: reason.to_owned(),
            })
        };
        self.optimiser.validate()?;
        if self.batch_size == 0 {
            return bad("batch_size", "must be >= 1");
        }
        if !(self.negative_temperature.is_finite() && self.negative_temperature > 0.0) {
            return bad("negative_temperature", "must be a finite number > 0");
        }
        if !(self.head_lr.is_finite() && self.head_lr > 0.0) {
            return bad("head_lr", "must be a finite number > 0");
        }
        if self.sleep_every_samples == 0 {
            return bad("sleep_every_samples", "must be > 0");
        }
        if !(self.sleep_ramp.is_finite() && (0.0..=1.0).contains(&self.sleep_ramp)) {
            return bad("sleep_ramp", "must be a number in [0, 1]");
        }
        if !(self.wake_lr_scale.is_finite() && self.wake_lr_scale >= 0.0) {
            return bad("wake_lr_scale", "must be a finite number >= 0");
        }
        if !(self.sleep_every_seconds.is_finite() && self.sleep_every_seconds >= 0.0) {
            return bad("sleep_every_seconds", "must be a finite number >= 0");
        }
        if self.schedule == ScheduleMode::Sleep && self.replay_capacity == 0 {
            return bad(
                "replay_capacity",
                "the sleep schedule needs a replay buffer (> 0)",
            );
        }
        if self.schedule == ScheduleMode::Sleep
            && self.sleep_method == SleepMethod::Consolidate
            && self.replay_capacity < self.sleep_every_samples
        {
            // A sleep replays the whole wake into the slow weights; samples that fell out of
            // the buffer would be learned by nobody (their fast weights are dropped).
            return bad(
                "replay_capacity",
                "the consolidate sleep replays the whole wake: it must be >= sleep_every_samples",
            );
        }
        if self.negatives == NegativeStrategy::Hybrid && self.classifier.reads_goodness() {
            return bad(
                "classifier",
                "hybrid negatives train without labels; classify with the softmax head",
            );
        }
        if self.classifier.reads_head() && !self.train_head {
            return bad(
                "train_head",
                "the softmax and combined classifiers need a trained head",
            );
        }
        Ok(())
    }

    /// `sleep_every_seconds` as a duration; `None` when time-based sleep is off.
    pub fn sleep_interval(&self) -> Option<std::time::Duration> {
        let secs = self.sleep_every_seconds;
        (secs > 0.0).then(|| std::time::Duration::from_secs_f64(secs))
    }
}
