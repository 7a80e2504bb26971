//! `TrainerState`: everything a `Trainer` needs to continue exactly where it stopped — weights,
//! optimiser buffers, slow weights, replay buffer, sleep counter, sample counter and the RNG's position — as
//! plain values, so a store can write it and a new process can resume from it. No I/O here.

use crate::ff::calibration::TemperatureFit;
use crate::ff::model::Model;
use crate::ff::optimiser::{Boost, LayerState};

/// Where a ChaCha random stream stands: its seed, stream id and word position. Restoring the
/// three reproduces every later draw, so a resumed trainer picks the same negatives as an
/// uninterrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngPosition {
    /// The 32-byte key.
    pub seed: [u8; 32],
    /// The stream id.
    pub stream: u64,
    /// 32-bit words consumed so far.
    pub word_pos: u128,
}

/// A trainer's complete mutable state (its `TrainConfig` is kept apart: it comes from the
/// running configuration and is checked against the state's shapes on restore).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerState {
    /// The live model, with every learned sample applied.
    pub model: Model,
    /// Per-layer optimiser state (momentum buffers, mean activities), bottom layer first.
    pub layers: Vec<LayerState>,
    /// The replay buffer's samples, oldest first: `replay_features` is `[n, inputs]` row-major.
    pub replay_features: Vec<f32>,
    /// Their labels.
    pub replay_labels: Vec<usize>,
    /// Wake samples since the last sleep.
    pub since_sleep: usize,
    /// Positive samples learned (drives the learning-rate schedule).
    pub samples: u64,
    /// `samples` when the learning-rate boost last restarted (0: at the start).
    pub boost_from: u64,
    /// The boost restarted then, when it is not the configuration's start boost (`None`):
    /// a detected drift's.
    pub boost: Option<Boost>,
    /// The negative-sampling RNG.
    pub rng: RngPosition,
    /// The online temperature fit (`None` when calibration is off).
    pub calibration: Option<TemperatureFit>,
    /// The slow weights of the `consolidate` sleep (`None` for every other schedule): `model`
    /// above holds them plus the wake's fast weights since the last sleep.
    pub slow: Option<SlowState>,
}

/// The slow weights and their optimiser state, as the last sleep left them. Saving them is
/// what lets a resumed trainer drop the wake's fast weights at its next sleep exactly as an
/// uninterrupted one would; without them a resume can only take the live weights as slow.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowState {
    /// A model holding the slow layers (its read-out head is the live one: a sleep never
    /// touches the head).
    pub model: Model,
    /// Per-layer optimiser state of the slow weights, bottom layer first.
    pub layers: Vec<LayerState>,
}
