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
///
/// With a ramp, a wake lasts at most `ramp` times the samples learned since the start or the
/// last restart (a detected drift), and at most `every`: a young model, or one relearning a
/// changed stream, sleeps after every few samples and so learns them at once, while a settled
/// one sleeps the long sleep (docs/algorithm.md §6.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SleepScheduler {
    every: usize,
    ramp: f64,
    since_sleep: usize,
}

impl SleepScheduler {
    /// A scheduler that asks for sleep every `every` wake samples, or sooner while `ramp`
    /// (0: no ramp) shortens the wake.
    pub fn new(every: usize, ramp: f64) -> Self {
        Self {
            every: every.max(1),
            ramp,
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

    /// How long the current wake lasts when `since_restart` samples have been learned since the
    /// start or the last restart (the current wake's included): `every`, or with a ramp
    /// `clamp(⌊ramp · since_restart⌋, 1, every)`.
    pub fn wake_length(&self, since_restart: u64) -> usize {
        if self.ramp > 0.0 {
            let ramped = (self.ramp * since_restart as f64) as usize;
            ramped.clamp(1, self.every)
        } else {
            self.every
        }
    }

    /// Whether the wake phase has run its course.
    pub fn due(&self, since_restart: u64) -> bool {
        self.since_sleep >= self.wake_length(since_restart)
    }

    /// Marks a sleep as done.
    pub fn slept(&mut self) {
        self.since_sleep = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a ramp every wake lasts `every` samples; with ramp `r` a wake ends as soon as
    /// it reaches `r` times the samples learned since the restart, never before 1 sample and
    /// never after `every`.
    #[test]
    fn wakes_lengthen_with_the_ramp_up_to_every() {
        let flat = SleepScheduler::new(100, 0.0);
        assert_eq!(flat.wake_length(0), 100);
        assert_eq!(flat.wake_length(1_000_000), 100);

        let mut ramped = SleepScheduler::new(100, 0.1);
        assert_eq!(ramped.wake_length(0), 1);
        assert_eq!(ramped.wake_length(19), 1);
        assert_eq!(ramped.wake_length(250), 25);
        assert_eq!(ramped.wake_length(5_000), 100);

        // Simulate a stream: the wakes' lengths, and that no wake exceeds a tenth of what was
        // learned by its end (once that tenth is at least one sample).
        let (mut learned, mut wakes) = (0u64, Vec::new());
        while learned < 3_000 {
            ramped.record_wake();
            learned += 1;
            if ramped.due(learned) {
                let length = ramped.since_sleep();
                assert!(
                    length as f64 <= (0.1 * learned as f64).max(1.0),
                    "{length} of {learned}"
                );
                wakes.push(length);
                ramped.slept();
            }
        }
        assert!(
            wakes.windows(2).all(|w| w[0] <= w[1]),
            "wakes only lengthen"
        );
        assert_eq!(wakes.first(), Some(&1));
        assert_eq!(wakes.last(), Some(&100));
    }
}
