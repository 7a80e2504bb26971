//! What a `Trainer` reports: running per-layer statistics (the service turns them into
//! metrics; `ffd train` prints them), and what one `learn` or `sleep` call did.

use serde::Serialize;

#[allow(unused_imports)] // for the doc links
use super::Trainer;

/// Running statistics of one layer since the last [`Trainer::take_stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LayerStats {
    pub positive_goodness_sum: f64,
    pub positive_count: u64,
    pub negative_goodness_sum: f64,
    pub negative_count: u64,
    pub loss_sum: f64,
}

impl LayerStats {
    /// Mean goodness on positive data (NaN when none was seen).
    pub fn positive_goodness(&self) -> f64 {
        self.positive_goodness_sum / self.positive_count as f64
    }
    /// Mean goodness on negative data (NaN when none was seen).
    pub fn negative_goodness(&self) -> f64 {
        self.negative_goodness_sum / self.negative_count as f64
    }
    /// Mean loss per update of this layer.
    pub fn loss(&self) -> f64 {
        self.loss_sum / (self.positive_count + self.negative_count) as f64
    }
}

/// Training statistics since the last [`Trainer::take_stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrainStats {
    pub layers: Vec<LayerStats>,
    pub head_loss_sum: f64,
    pub head_count: u64,
}

/// What one call to [`Trainer::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnOutcome {
    /// The class the model predicted *before* learning the sample (test-then-train), when asked.
    pub predicted: Option<usize>,
    /// The wake phase has run its course: call [`Trainer::sleep`].
    pub sleep_due: bool,
    /// The update was refused because it could have made a parameter non-finite (see
    /// `ff::guard`): the model, the optimiser state and the replay buffer are as before the
    /// call, and the sample does not count as learned.
    pub refused: bool,
}

/// What one sleep phase did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepReport {
    /// Negative updates applied.
    pub negatives: usize,
    /// Positive updates applied (replayed positives: methods `pairs` and `consolidate`).
    pub positives: usize,
    /// Negative updates refused because they could have made a parameter non-finite.
    pub refused: usize,
}
