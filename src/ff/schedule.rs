//! When to learn from what: `interleaved` (a positive and a negative update per sample, classic
//! FF) or `sleep` (positive-only "wake" updates online, then an offline "sleep" phase of
//! negative-only updates built from the replay buffer, or pairs that consolidate fast weights;
//! docs/algorithm.md §6). Shared by `ffd train` and the service.

use serde::{Deserialize, Serialize};

/// The learning schedule (`schedule` in `TrainConfig`, `--schedule` in `ffd train`).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleMode {
    /// Positive and negative update for every sample.
    #[default]
    Interleaved,
    /// Positive updates while awake; negative updates from replay while asleep.
    Sleep,
}

/// What a sleep replays (`sleep_method` in `TrainConfig`, `--sleep-method` in `ffd train`;
/// docs/algorithm.md §6.2).
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SleepMethod {
    /// Negative updates only, one per wake sample: the wake's positive updates stay in the
    /// weights and the sleep answers them. Works for short cycles (≤ 16 samples) only.
    #[default]
    Negatives,
    /// Each replayed sample gives a positive and a negative update, and the wake's positive
    /// updates stay too: two positive updates per sample for one negative.
    Pairs,
    /// Fast and slow weights: the wake's positive updates are fast weights, used for the
    /// predictions made while awake and dropped at the next sleep, which consolidates each
    /// wake sample into the slow weights as a positive and a negative update. The slow
    /// weights see one positive and one negative update per sample, as interleaved.
    Consolidate,
    /// Negative updates only, each against the goodness of its own positive under the current
    /// weights (SymBa's symmetric loss `softplus((G⁻ − G⁺)/T)`) instead of the threshold.
    Symmetric,
}

impl SleepMethod {
    /// Whether a sleep replays positives as well as negatives.
    pub fn replays_positives(self) -> bool {
        matches!(self, SleepMethod::Pairs | SleepMethod::Consolidate)
    }
}

/// Counts wake samples and says when a sleep is due. Time-based triggers belong to the caller
/// (the service passes its own clock); this keeps the engine free of wall-clock reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SleepScheduler {
    every: usize,
    since_sleep: usize,
}

impl SleepScheduler {
    /// A scheduler that asks for sleep every `every` wake samples.
    pub fn new(every: usize) -> Self {
        Self {
            every: every.max(1),
            since_sleep: 0,
        }
    }

    /// Records one wake sample.
    pub fn record_wake(&mut self) {
        self.since_sleep += 1;
    }

    /// Wake samples since the last sleep.
    pub fn since_sleep(&self) -> usize {
        self.since_sleep
    }

    /// Whether the wake phase has run its course.
    pub fn due(&self) -> bool {
        self.since_sleep >= self.every
    }

    /// Marks a sleep as done.
    pub fn slept(&mut self) {
        self.since_sleep = 0;
    }
}
