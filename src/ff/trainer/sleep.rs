//! The sleep phase (docs/algorithm.md §6): offline updates built from the replay buffer with the
//! current model, after a wake phase of positive-only updates. What it replays is the
//! configured [`SleepMethod`](crate::ff::schedule::SleepMethod): negatives only, positive/negative pairs, or pairs that
//! consolidate the wake's fast weights into the slow weights ([`SlowWeights`]).

use crate::ff::error::FfError;
use crate::ff::guard::FiniteGuard;
use crate::ff::layer::Layer;
use crate::ff::model::Model;
use crate::ff::optimiser::LayerState;
use crate::ff::state::SlowState;

use super::step::Step;
use super::{SleepReport, Trainer};

/// The slow weights of [`SleepMethod::Consolidate`](crate::ff::schedule::SleepMethod::Consolidate): every layer and its optimiser state as the
/// last sleep left them. The live layers hold the slow weights plus the fast weights, the wake's
/// positive updates since; a sleep drops the fast weights by going back to this copy, then
/// replays the wake samples into it as positive/negative pairs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SlowWeights {
    layers: Vec<Layer>,
    states: Vec<LayerState>,
}

impl SlowWeights {
    /// A copy of `layers` and `states`.
    pub(super) fn of(layers: &[Layer], states: &[LayerState]) -> Self {
        Self {
            layers: layers.to_vec(),
            states: states.to_vec(),
        }
    }

    /// The copy as plain values, its model's head taken from `live`.
    pub(super) fn state(&self, live: &Model) -> SlowState {
        let mut model = live.clone();
        model.layers.clone_from_slice(&self.layers);
        SlowState {
            model,
            layers: self.states.clone(),
        }
    }

    /// The copy saved as `saved`, checked against the live model and optimiser state it goes
    /// with: same layer shapes, same optimiser buffers.
    pub(super) fn restore(
        saved: SlowState,
        live: &Model,
        states: &[LayerState],
    ) -> Result<Self, FfError> {
        FfError::check_len("slow layers", live.layers.len(), saved.model.layers.len())?;
        FfError::check_len("slow optimiser layers", states.len(), saved.layers.len())?;
        for (l, s) in live.layers.iter().zip(&saved.model.layers) {
            FfError::check_len("slow layer weights", l.weight.len(), s.weight.len())?;
            FfError::check_len("slow layer rows", l.weight.nrows(), s.weight.nrows())?;
        }
        for (l, s) in states.iter().zip(&saved.layers) {
            l.check_fits(s)?;
        }
        Ok(Self {
            layers: saved.model.layers,
            states: saved.layers,
        })
    }

    /// Overwrites the copy with `layers` and `states`, reusing its memory.
    fn store(&mut self, layers: &[Layer], states: &[LayerState]) {
        self.layers.clone_from_slice(layers);
        self.states.clone_from_slice(states);
    }
}

impl Trainer {
    /// The sleep phase: as many replayed samples as wake samples since the last sleep (or
    /// `negatives_per_sleep`), oldest of the recent window first, each giving a negative update
    /// (and, unless the method is `negatives`, a positive one). Resets the wake counter.
    pub fn sleep(&mut self) -> SleepReport {
        let wanted = match self.config.negatives_per_sleep {
            0 => self.scheduler.since_sleep(),
            n => n,
        };
        let n = if self.replay.is_empty() { 0 } else { wanted };
        if self.slow.is_some() {
            self.apply_pending();
        }
        if let Some(slow) = &self.slow {
            // Drop the fast weights: back to the slow weights and their optimiser state. The
            // guard's running bounds may sit below the restored values, so it measures afresh.
            self.model.layers.clone_from_slice(&slow.layers);
            self.states.clone_from_slice(&slow.states);
            self.guard = FiniteGuard::new(&self.model.layers, &self.states, &self.model.head);
        }
        let step = if self.config.sleep_method.replays_positives() {
            Step::Interleaved
        } else {
            Step::Sleep
        };
        // Each replayed sample is learned at the rate of the wake step it replays (the
        // schedule counts positive samples): under a decaying rate a sleep is not learned at
        // the rate of its end, which for the last sleep of a run is zero.
        let samples = self.samples;
        let first = samples.saturating_sub(n as u64);
        let mut refused = 0;
        for i in 0..n {
            self.samples = (first + i as u64).min(samples);
            // Oldest of the recent window first, cycling if more negatives than samples.
            let back = (n - 1 - i) % self.replay.len();
            let label = match self.replay.recent(back) {
                Some((x, y)) => {
                    self.replayed.copy_from_slice(x);
                    y
                }
                None => continue,
            };
            let features = std::mem::take(&mut self.replayed);
            let slots = self.prepare(&features, label, step, false);
            self.replayed = features;
            if !self.stage(&slots, true) {
                refused += 1;
            }
        }
        self.samples = samples;
        if self.slow.is_some() {
            self.apply_pending();
            if let Some(slow) = self.slow.as_mut() {
                slow.store(&self.model.layers, &self.states);
            }
        }
        self.scheduler.slept();
        let applied = n - refused;
        SleepReport {
            negatives: applied,
            positives: if step == Step::Interleaved {
                applied
            } else {
                0
            },
            refused,
        }
    }
}
