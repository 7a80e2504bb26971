//! `Trainer`: the only thing that mutates a `Model`. It runs one schedule step per sample —
//! interleaved (positive and negative update) or wake (positive only, sample kept for replay) —
//! and the sleep phase (updates from the replay buffer). Every update is local to its layer;
//! nothing crosses layers. Same seed and same data order give bit-identical weights.
//!
//! Files: this one holds the `Trainer` and its public steps (`learn`, `settle`, resume);
//! `sleep` the sleep phase and the slow weights it consolidates into; `config` what it is told;
//! `stats` what it reports; `step` one step's forward passes, negative choice and guarded
//! staging; `pending` the update applied inside the next forward pass; `batch` mini-batches
//! (gradient sums, and the batched matrix-product step).

mod batch;
mod config;
mod pending;
mod sleep;
mod stats;
mod step;

use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::ff::calibration::{Calibration, TemperatureFit};
use crate::ff::classify::Classifier;
use crate::ff::crew::Crew;
use crate::ff::error::FfError;
use crate::ff::guard::{max_abs, FiniteGuard};
use crate::ff::model::{Model, NetworkConfig, Workspace};
use crate::ff::negatives::{HybridMask, NegativeStrategy};
use crate::ff::optimiser::{Boost, LayerState, LrSchedule};
use crate::ff::replay::ReplayBuffer;
use crate::ff::schedule::{ScheduleMode, SleepMethod, SleepScheduler};
use crate::ff::state::{RngPosition, TrainerState};

use batch::BatchBuffers;
pub use config::TrainConfig;
use pending::Pending;
use sleep::SlowWeights;
pub use stats::{LayerStats, LearnOutcome, SleepReport, TrainStats};
use step::Step;

/// Owns a model and everything needed to train it: optimiser state, RNG, scratch memory,
/// replay buffer and sleep scheduler.
#[derive(Debug, Clone)]
pub struct Trainer {
    model: Model,
    config: TrainConfig,
    states: Vec<LayerState>,
    /// ChaCha12, the algorithm behind `rand`'s `StdRng` (same draws for the same seed), named
    /// directly because its position can be read and restored (see [`TrainerState`]).
    rng: ChaCha12Rng,
    /// Two workspaces: the pending update reads one while the next forward pass fills the other.
    ws: [Workspace; 2],
    /// Index of the workspace the latest forward pass filled.
    cur: usize,
    /// The latest sample's update, computed but not yet applied (see [`Pending`]).
    pending: Option<Pending>,
    replay: ReplayBuffer,
    scheduler: SleepScheduler,
    mask: HybridMask,
    /// Scratch: a hybrid negative and its mask; a copy of a replayed sample.
    hybrid: Vec<f32>,
    mask_buf: Vec<f32>,
    replayed: Vec<f32>,
    /// Positive samples learned so far (drives the learning-rate schedule).
    samples: u64,
    /// `samples` when the learning-rate boost last restarted ([`Trainer::restart_boost`]); the
    /// sleep ramp (`sleep_ramp`) restarts from here too.
    boost_from: u64,
    /// The boost restarted then, when it is not the configuration's start boost (a drift's,
    /// [`Trainer::restart_boost_with`]).
    boost: Option<Boost>,
    stats: TrainStats,
    /// Mini-batch mode: summed gradients per layer (`[out, in]` and `[out]`) and how many
    /// samples they hold. Empty when `batch_size == 1`.
    batch_grad: Vec<(Vec<f32>, Vec<f32>)>,
    batch_count: usize,
    /// Refuses updates that could make a parameter non-finite.
    guard: FiniteGuard,
    /// What staging mutates before the guard decides, kept to undo a refused update:
    /// each layer's mean activities and the statistics.
    mean_backup: Vec<Vec<f32>>,
    stats_backup: Vec<LayerStats>,
    /// Fits the model's temperature to the prequential predictions (`calibration_window > 0`).
    calibration: Option<TemperatureFit>,
    /// Fits the combined classifier's goodness weight, `1/T_g` with `T_g` the temperature of
    /// goodness's own prequential predictions (`classifier = combined`, `calibration_window >
    /// 0`). Not saved in checkpoints: a resumed trainer restarts it at the model's weight.
    goodness_fit: Option<TemperatureFit>,
    /// The goodness scores of the current prediction, before the head joins them.
    goodness_scores: Vec<f32>,
    /// Buffers of the batched mini-batch step (`learn_batch`); empty until first used.
    batched: BatchBuffers,
    /// Threads each per-sample forward pass (and the update fused into it) is split over, by
    /// bands of units; any count gives bit-identical results.
    threads: usize,
    /// The helper threads behind `threads > 1`, started on first use (so they inherit the
    /// learning thread's priority); clones of the trainer share them.
    crew: Option<Arc<Crew>>,
    /// The slow weights (sleep schedule, `consolidate` method); `None` otherwise.
    slow: Option<SlowWeights>,
}

impl Trainer {
    /// A trainer for `model`, seeded for reproducibility.
    pub fn new(model: Model, config: TrainConfig, seed: u64) -> Result<Self, FfError> {
        config.validate()?;
        let ncfg = model.config().clone();
        let states: Vec<LayerState> = model
            .layers()
            .iter()
            .map(|l| LayerState::new(l.outputs(), l.inputs(), &config.optimiser))
            .collect();
        let guard = FiniteGuard::new(model.layers(), &states, &model.head);
        let mean_backup = states.iter().map(|s| s.mean_activity.clone()).collect();
        let slow = (config.schedule == ScheduleMode::Sleep
            && config.sleep_method == SleepMethod::Consolidate)
            .then(|| SlowWeights::of(model.layers(), &states));
        let replay_capacity = match (config.schedule, config.negatives) {
            (ScheduleMode::Sleep, _) | (_, NegativeStrategy::Hybrid) => {
                config.replay_capacity.max(1)
            }
            _ => 0,
        };
        Ok(Self {
            ws: [Workspace::new(&ncfg), Workspace::new(&ncfg)],
            cur: 0,
            pending: None,
            replay: ReplayBuffer::new(ncfg.inputs, replay_capacity),
            scheduler: SleepScheduler::new(config.sleep_every_samples, config.sleep_ramp),
            mask: HybridMask::for_inputs(ncfg.inputs),
            hybrid: vec![0.0; ncfg.inputs],
            mask_buf: vec![0.0; ncfg.inputs],
            replayed: vec![0.0; ncfg.inputs],
            stats: TrainStats {
                layers: vec![LayerStats::default(); ncfg.hidden.len()],
                ..Default::default()
            },
            states,
            rng: ChaCha12Rng::seed_from_u64(seed),
            samples: 0,
            boost_from: 0,
            boost: None,
            batch_grad: if config.batch_size > 1 {
                model
                    .layers()
                    .iter()
                    .map(|l| (vec![0.0; l.outputs() * l.inputs()], vec![0.0; l.outputs()]))
                    .collect()
            } else {
                Vec::new()
            },
            batch_count: 0,
            guard,
            mean_backup,
            stats_backup: vec![LayerStats::default(); ncfg.hidden.len()],
            calibration: (config.calibration_window > 0)
                .then(|| TemperatureFit::new(config.calibration_window, model.calibration())),
            goodness_fit: (config.calibration_window > 0
                && config.classifier == Classifier::Combined)
                .then(|| {
                    let start = Calibration {
                        temperature: 1.0 / model.calibration().goodness_weight,
                        ..Calibration::default()
                    };
                    TemperatureFit::new(config.calibration_window, start)
                }),
            goodness_scores: Vec::with_capacity(ncfg.classes),
            batched: BatchBuffers::new(1),
            threads: 1,
            crew: None,
            slow,
            model,
            config,
        })
    }

    /// Applies every learned sample's update that is still pending (the latest sample's, see
    /// [`Pending`]; a partial mini-batch), so that [`Trainer::model`], [`Trainer::state`] and
    /// [`Trainer::layer_states`] see all of them. Cheap when nothing is pending; call it before
    /// reading the weights, not after every sample (that would forgo the fused update).
    pub fn settle(&mut self) {
        self.apply_pending();
    }

    /// Whether every learned sample's update is applied (true right after [`Trainer::settle`]).
    pub fn is_settled(&self) -> bool {
        self.pending.is_none() && self.batch_count == 0
    }

    /// The model being trained, as of the last [`Trainer::settle`]: call that first, or the
    /// latest sample's update may be missing (debug builds check).
    pub fn model(&self) -> &Model {
        debug_assert!(self.is_settled(), "Trainer::model read before settle()");
        &self.model
    }

    /// The network's shape (needs no settling: updates never change it).
    pub fn network(&self) -> &NetworkConfig {
        self.model.config()
    }

    /// A copy of everything this trainer would need to continue exactly where it is. Call
    /// [`Trainer::settle`] first (debug builds check).
    pub fn state(&self) -> TrainerState {
        debug_assert!(self.is_settled(), "Trainer::state read before settle()");
        let mut replay_features = Vec::with_capacity(self.replay.len() * self.model.config.inputs);
        let mut replay_labels = Vec::with_capacity(self.replay.len());
        for (x, y) in self.replay.iter() {
            replay_features.extend_from_slice(x);
            replay_labels.push(y);
        }
        TrainerState {
            model: self.model.clone(),
            layers: self.states.clone(),
            replay_features,
            replay_labels,
            since_sleep: self.scheduler.since_sleep(),
            samples: self.samples,
            boost_from: self.boost_from,
            boost: self.boost,
            rng: RngPosition {
                seed: self.rng.get_seed(),
                stream: self.rng.get_stream(),
                word_pos: self.rng.get_word_pos(),
            },
            calibration: self.calibration.clone(),
            slow: self.slow.as_ref().map(|slow| slow.state(&self.model)),
        }
    }

    /// A trainer that continues from `state` under `config`: fed the same samples, it updates
    /// exactly as the trainer that produced the state would have. Fails with `Shape` when an
    /// optimiser buffer or the replay buffer does not fit the model and `config` (e.g. momentum
    /// buffers saved without momentum), or with `Config` when `config` is invalid.
    pub fn from_state(state: TrainerState, config: TrainConfig) -> Result<Self, FfError> {
        let TrainerState {
            model,
            layers,
            replay_features,
            replay_labels,
            since_sleep,
            samples,
            boost_from,
            boost,
            rng,
            calibration,
            slow,
        } = state;
        let mut trainer = Trainer::new(model, config, 0)?;
        FfError::check_len("optimiser layers", trainer.states.len(), layers.len())?;
        for (fresh, saved) in trainer.states.iter().zip(&layers) {
            fresh.check_fits(saved)?;
        }
        trainer.states = layers;
        let dim = trainer.model.config.inputs;
        FfError::check_len(
            "replay features",
            replay_labels.len() * dim,
            replay_features.len(),
        )?;
        if replay_labels.len() > trainer.replay.capacity() {
            return Err(FfError::Shape {
                what: "replay samples (at most the buffer's capacity)",
                expected: trainer.replay.capacity(),
                got: replay_labels.len(),
            });
        }
        let classes = trainer.model.config.classes;
        for (x, &y) in replay_features.chunks_exact(dim.max(1)).zip(&replay_labels) {
            trainer
                .model
                .check_label(y)
                .map_err(|_| FfError::Label { label: y, classes })?;
            trainer.replay.push(x, y);
        }
        for _ in 0..since_sleep {
            trainer.scheduler.record_wake();
        }
        trainer.samples = samples;
        trainer.boost_from = boost_from.min(samples);
        trainer.boost = boost;
        // The slow weights as the last sleep left them; a state without them (saved under
        // another sleep method, or before they were saved) consolidates the wake so far: the
        // live weights become the slow weights. Under another method, saved slow weights are
        // not needed: the live weights go on.
        if trainer.slow.is_some() {
            trainer.slow = Some(match slow {
                Some(saved) => SlowWeights::restore(saved, &trainer.model, &trainer.states)?,
                None => SlowWeights::of(&trainer.model.layers, &trainer.states),
            });
        }
        trainer.rng = ChaCha12Rng::from_seed(rng.seed);
        trainer.rng.set_stream(rng.stream);
        trainer.rng.set_word_pos(rng.word_pos);
        // A saved fit continues under the running memory; without one (calibration was off, or
        // an older checkpoint) the fresh fit from `new` starts at the model's temperature.
        if let (Some(fit), Some(saved)) = (trainer.calibration.as_mut(), calibration) {
            if saved.is_valid() {
                *fit = saved;
                fit.set_window(trainer.config.calibration_window);
            }
        }
        Ok(trainer)
    }

    /// Takes the model out, ending training.
    pub fn into_model(mut self) -> Model {
        self.settle();
        self.model
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Per-layer optimiser state (momentum buffers, mean activities), as of the last
    /// [`Trainer::settle`] (debug builds check).
    pub fn layer_states(&self) -> &[LayerState] {
        debug_assert!(
            self.is_settled(),
            "Trainer::layer_states read before settle()"
        );
        &self.states
    }

    /// The replay buffer.
    pub fn replay(&self) -> &ReplayBuffer {
        &self.replay
    }

    /// Positive samples learned so far.
    pub fn samples_learned(&self) -> u64 {
        self.samples
    }

    /// The online temperature fit, when calibration is on: the temperature and the running
    /// prequential log-loss.
    pub fn calibration(&self) -> Option<&TemperatureFit> {
        self.calibration.as_ref()
    }

    /// The learning rate of the update made after `samples` samples: the base rate times the
    /// schedule's factor and the boost's.
    pub(crate) fn lr_after(&self, samples: u64) -> f32 {
        let opt = &self.config.optimiser;
        let boost = self.boost.unwrap_or_else(|| opt.boost());
        opt.lr_at(samples) * boost.at(samples.saturating_sub(self.boost_from))
    }

    /// Restarts the learning-rate boost of the configuration (`lr_boost`) from now, as at the
    /// start of the stream, and the sleep ramp with it. Nothing changes when both are off.
    pub fn restart_boost(&mut self) {
        self.boost_from = self.samples;
        self.boost = None;
    }

    /// Restarts the learning rate with `boost` from now, e.g. when the data has changed and
    /// the model must relearn quickly; it fades as `boost` says, and is part of the state.
    /// The sleep ramp (`sleep_ramp`) restarts with it: the next wakes are short again.
    pub fn restart_boost_with(&mut self, boost: Boost) {
        self.boost_from = self.samples;
        self.boost = Some(boost);
    }

    /// Sets the learning-rate schedule (e.g. once the number of training steps is known).
    pub fn set_lr_schedule(&mut self, schedule: LrSchedule) {
        self.config.optimiser.lr_schedule = schedule;
    }

    /// Whether a sleep phase is due (sleep schedule only).
    pub fn sleep_due(&self) -> bool {
        self.config.schedule == ScheduleMode::Sleep
            && self
                .scheduler
                .due(self.samples.saturating_sub(self.boost_from))
    }

    /// Wake samples since the last sleep.
    pub fn wake_samples_since_sleep(&self) -> usize {
        self.scheduler.since_sleep()
    }

    /// Returns the statistics gathered since the last call and starts afresh.
    pub fn take_stats(&mut self) -> TrainStats {
        let fresh = TrainStats {
            layers: vec![LayerStats::default(); self.stats.layers.len()],
            ..Default::default()
        };
        std::mem::replace(&mut self.stats, fresh)
    }

    /// Learns one labelled sample under the configured schedule: interleaved, a positive and a
    /// negative update; sleep, a positive (wake) update and the sample kept for replay. With
    /// `predict`, first classifies it with the current model (test-then-train); with
    /// calibration on it always does, and the prediction updates the model's temperature.
    pub fn learn(
        &mut self,
        features: &[f32],
        label: usize,
        predict: bool,
    ) -> Result<LearnOutcome, FfError> {
        self.model.check_features(features)?;
        self.model.check_label(label)?;
        Ok(self.learn_unchecked(features, label, predict))
    }

    /// [`Trainer::learn`] for input that has already been validated (e.g. a service's
    /// `ValidatedBatch`). Out-of-range input here is a caller bug and may panic.
    pub fn learn_unchecked(
        &mut self,
        features: &[f32],
        label: usize,
        predict: bool,
    ) -> LearnOutcome {
        let interleaved = self.config.schedule == ScheduleMode::Interleaved;
        let predict = predict || self.calibration.is_some();
        let step = if interleaved {
            Step::Interleaved
        } else {
            Step::Wake
        };
        let mut slots = self.prepare(features, label, step, predict);
        if self.slow.is_some() && self.config.wake_lr_scale == 0.0 {
            // A consolidate wake without fast weights: classify and store, learn in the sleep.
            slots.positive = None;
        }
        // The head's step is checked first and applied only if the layers' update is too, so
        // a refused sample changes nothing anywhere.
        let mut head_step = None;
        let mut head_ok = true;
        if self.config.train_head {
            if let Some(n) = slots.neutral {
                let ws = &mut self.ws[self.cur];
                self.model.gather_head_input(ws, n);
                head_step = max_abs(&ws.head_in).and_then(|input| {
                    self.guard
                        .check_head(input, self.config.head_lr, &self.model.head)
                });
                head_ok = head_step.is_some();
            }
        }
        if !self.stage(&slots, head_ok) {
            return LearnOutcome {
                predicted: slots.predicted,
                sleep_due: self.sleep_due(),
                refused: true,
            };
        }
        if let Some(bound) = head_step {
            self.guard.commit_head(bound);
            let ws = &mut self.ws[self.cur];
            let loss =
                self.model
                    .head
                    .train_step(&ws.head_in, label, self.config.head_lr, &mut ws.probs);
            self.stats.head_loss_sum += f64::from(loss);
            self.stats.head_count += 1;
        }
        if let (Some(fit), Some(_)) = (self.calibration.as_mut(), slots.predicted) {
            // The scores the prediction came from are still in the current workspace.
            if fit.observe(&self.ws[self.cur].scores, label).is_some() {
                self.model.calibration.temperature = fit.temperature();
            }
        }
        if let (Some(fit), Some(_)) = (self.goodness_fit.as_mut(), slots.predicted) {
            if fit.observe(&self.goodness_scores, label).is_some() {
                self.model.calibration.goodness_weight = 1.0 / fit.temperature();
            }
        }
        if self.replay.capacity() > 0 {
            self.replay.push(features, label);
        }
        self.samples += 1;
        if !interleaved {
            self.scheduler.record_wake();
        }
        LearnOutcome {
            predicted: slots.predicted,
            sleep_due: self.sleep_due(),
            refused: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ff::goodness::Polarity;
    use crate::ff::layer::{Layer, Term};
    use crate::ff::optimiser::OptimiserConfig;
    use crate::ff::Classifier;
    use rand::rngs::StdRng;

    fn toy(config: TrainConfig, seed: u64) -> Trainer {
        let net = NetworkConfig {
            inputs: 8,
            classes: 3,
            hidden: vec![16, 12],
            ..Default::default()
        };
        let model = Model::new(net, &mut StdRng::seed_from_u64(seed)).expect("valid config");
        Trainer::new(model, config, seed).expect("valid config")
    }

    fn sample(i: usize) -> (Vec<f32>, usize) {
        let y = i % 3;
        let x = (0..8)
            .map(|j| {
                if j % 3 == y {
                    1.0
                } else {
                    0.1 * ((i + j) % 5) as f32
                }
            })
            .collect();
        (x, y)
    }

    /// The boost fades with the samples learned and starts again at its full height after
    /// `restart_boost`; a trainer resumed from its state keeps the restart point.
    #[test]
    fn boost_restarts() {
        let config = TrainConfig {
            optimiser: OptimiserConfig {
                lr_boost: 3.0,
                lr_boost_samples: 10,
                ..Default::default()
            },
            ..Default::default()
        };
        let lr = config.optimiser.lr;
        let mut t = toy(config.clone(), 2);
        assert!((t.lr_after(t.samples) - 3.0 * lr).abs() < 1e-9);
        for i in 0..10 {
            let (x, y) = sample(i);
            t.learn(&x, y, false).expect("valid sample");
        }
        assert!((t.lr_after(t.samples) - 2.0 * lr).abs() < 1e-9);
        t.restart_boost();
        assert!((t.lr_after(t.samples) - 3.0 * lr).abs() < 1e-9);
        t.settle();
        let resumed = Trainer::from_state(t.state(), config.clone()).expect("resumes");
        assert_eq!(resumed.lr_after(resumed.samples), t.lr_after(t.samples));
        // A boost of its own (a drift's): 9× now, 5× after its 20 samples, kept on resume.
        t.restart_boost_with(Boost {
            factor: 9.0,
            samples: 20,
        });
        assert!((t.lr_after(t.samples) - 9.0 * lr).abs() < 1e-9);
        for i in 0..20 {
            let (x, y) = sample(i);
            t.learn(&x, y, false).expect("valid sample");
        }
        assert!((t.lr_after(t.samples) - 5.0 * lr).abs() < 1e-8);
        t.settle();
        let resumed = Trainer::from_state(t.state(), config).expect("resumes");
        assert_eq!(resumed.lr_after(resumed.samples), t.lr_after(t.samples));
        // Restarting the configuration's boost drops it.
        t.restart_boost();
        assert!((t.lr_after(t.samples) - 3.0 * lr).abs() < 1e-9);
    }

    /// Updating layer 2 never changes layer 1: a step whose only non-zero gradient is in the
    /// top layer leaves the bottom layer's weights bit-identical.
    #[test]
    fn no_gradient_crosses_layers() {
        let mut t = toy(TrainConfig::default(), 1);
        let before = t.model.layers[0].clone();
        let (x, y) = sample(0);
        let slots = t.prepare(&x, y, Step::Interleaved, false);
        // Zero the bottom layer's loss by making it indifferent: run the update with the
        // bottom layer frozen and check the top layer changed while the bottom did not.
        let lr = t.config.optimiser.lr;
        let opt = t.config.optimiser.clone();
        let top = t.model.layers.len() - 1;
        let (m, n) = (t.model.layers[top].outputs(), t.model.layers[top].inputs());
        let s = slots.positive.expect("positive slot");
        let h = t.ws[t.cur].h[top][s * m..(s + 1) * m].to_vec();
        let mut dz = vec![0.0; m];
        t.model.layers[top].local_gradient(&h, Polarity::Positive, &mut dz);
        let input = t.ws[t.cur].h_norm[top - 1][s * n..(s + 1) * n].to_vec();
        let top_before = t.model.layers[top].clone();
        t.model.layers[top].apply(
            &mut t.states[top],
            &opt,
            lr,
            &[Term {
                dz: &dz,
                input: &input,
            }],
        );
        assert_eq!(t.model.layers[0], before);
        assert_ne!(t.model.layers[top], top_before);
    }

    /// The bottom layer's update does not depend on anything above it: with random negatives
    /// (so the upper layers cannot influence the choice) two models that differ only in their
    /// top layer make bit-identical changes to their bottom layer.
    #[test]
    fn bottom_update_ignores_upper_layers() {
        let config = TrainConfig {
            negatives: NegativeStrategy::Random,
            ..Default::default()
        };
        let mut a = toy(config, 4);
        let mut b = a.clone();
        for w in b.model.layers[1].weight.iter_mut() {
            *w = -*w * 0.5;
        }
        for i in 0..5 {
            let (x, y) = sample(i);
            a.learn(&x, y, false).expect("valid sample");
            b.learn(&x, y, false).expect("valid sample");
        }
        assert_eq!(a.model.layers[0], b.model.layers[0]);
        assert_ne!(a.model.layers[1], b.model.layers[1]);
    }

    /// Reference computation of layer collaboration: for the staged positive and negative,
    /// layer `l`'s `dL/dz` is `2·s·h_l` with `s = ∓σ(∓z)/T` the derivative of
    /// `softplus(∓z)` and `z = Σ_k (G_k − θ_k)/T` summed over every layer (peer normalisation
    /// off, so nothing else enters `dz`).
    #[test]
    fn layer_collaboration_stages_the_gradient_of_the_summed_logit() {
        let config = TrainConfig {
            layer_collaboration: true,
            optimiser: OptimiserConfig {
                peer_norm: 0.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut t = toy(config, 5);
        // A few samples first, so the layers' goodness is away from its start.
        for i in 0..6 {
            let (x, y) = sample(i);
            t.learn(&x, y, false).expect("valid sample");
        }
        let (x, y) = sample(7);
        let slots = t.prepare(&x, y, Step::Interleaved, false);
        assert!(t.stage(&slots, true));
        let ws = &t.ws[t.cur];
        for (i, slot, sign) in [(0, slots.positive, -1.0f32), (1, slots.negative, 1.0)] {
            let slot = slot.expect("interleaved stages both");
            let h = |l: usize| {
                let m = t.model.layers[l].outputs();
                ws.h[l][slot * m..(slot + 1) * m].to_vec()
            };
            let z: f32 = (0..t.model.layers.len())
                .map(|l| {
                    let g: f32 = h(l).iter().map(|v| v * v).sum();
                    t.model.layers[l].goodness.logit(g)
                })
                .sum();
            for l in 0..t.model.layers.len() {
                let temperature = t.model.layers[l].goodness.temperature;
                let s = sign * crate::ff::goodness::sigmoid(sign * z) / temperature;
                for (j, (&got, &hj)) in ws.dz[i][l].iter().zip(&h(l)).enumerate() {
                    let want = 2.0 * s * hj;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "term {i} layer {l} unit {j}: {got} against {want}"
                    );
                }
            }
        }
    }

    /// With one hidden layer there is no other layer to collaborate with: the same weights,
    /// bit for bit. With two it is a different rule.
    #[test]
    fn layer_collaboration_needs_another_layer() {
        let one_layer = |collaborate: bool| {
            let net = NetworkConfig {
                inputs: 8,
                classes: 3,
                hidden: vec![16],
                ..Default::default()
            };
            let model = Model::new(net, &mut StdRng::seed_from_u64(3)).expect("valid config");
            let config = TrainConfig {
                layer_collaboration: collaborate,
                ..Default::default()
            };
            Trainer::new(model, config, 3).expect("valid config")
        };
        let two_layers = |collaborate: bool| {
            let config = TrainConfig {
                layer_collaboration: collaborate,
                ..Default::default()
            };
            toy(config, 3)
        };
        for (mut off, mut on, same) in [
            (one_layer(false), one_layer(true), true),
            (two_layers(false), two_layers(true), false),
        ] {
            for i in 0..10 {
                let (x, y) = sample(i);
                off.learn(&x, y, false).expect("valid sample");
                on.learn(&x, y, false).expect("valid sample");
            }
            off.settle();
            on.settle();
            assert_eq!(off.model.layers == on.model.layers, same);
        }
    }

    /// Applying each update inside the next sample's forward pass gives bit-identical weights
    /// to applying it at once (settling after every sample forces the latter).
    #[test]
    fn fused_updates_equal_immediate_updates() {
        for mode in [ScheduleMode::Interleaved, ScheduleMode::Sleep] {
            for momentum in [0.0, 0.9] {
                let config = TrainConfig {
                    schedule: mode,
                    sleep_every_samples: 3,
                    optimiser: OptimiserConfig {
                        momentum,
                        ..Default::default()
                    },
                    train_head: true,
                    ..Default::default()
                };
                let mut fused = toy(config.clone(), 8);
                let mut immediate = toy(config, 8);
                for i in 0..40 {
                    let (x, y) = sample(i);
                    let a = fused.learn(&x, y, true).expect("valid sample");
                    let b = immediate.learn(&x, y, true).expect("valid sample");
                    immediate.settle();
                    assert_eq!(a, b);
                    if a.sleep_due {
                        fused.sleep();
                        immediate.sleep();
                        immediate.settle();
                    }
                }
                assert!(fused.pending.is_some());
                fused.settle();
                immediate.settle();
                assert_eq!(fused.model(), immediate.model());
                assert_eq!(fused.layer_states(), immediate.layer_states());
            }
        }
    }

    /// Splitting each layer's units over threads changes nothing: every schedule, negative
    /// strategy, momentum and the softmax head give bit-identical predictions, weights and
    /// optimiser state on one, two and three threads. Reference: the one-thread trainer (the
    /// sequential loop). Layers are wide enough (200 and 130 units) to be split into bands.
    #[test]
    fn threads_give_bit_identical_learning() {
        let net = NetworkConfig {
            inputs: 8,
            classes: 3,
            hidden: vec![200, 130],
            ..Default::default()
        };
        for (schedule, negatives, momentum, train_head) in [
            (
                ScheduleMode::Interleaved,
                NegativeStrategy::Hard,
                0.0,
                false,
            ),
            (
                ScheduleMode::Interleaved,
                NegativeStrategy::Random,
                0.9,
                true,
            ),
            (ScheduleMode::Sleep, NegativeStrategy::Hard, 0.9, false),
        ] {
            let config = TrainConfig {
                schedule,
                negatives,
                sleep_every_samples: 5,
                optimiser: OptimiserConfig {
                    momentum,
                    ..Default::default()
                },
                train_head,
                ..Default::default()
            };
            let model = Model::new(net.clone(), &mut StdRng::seed_from_u64(3)).expect("valid");
            let mut trainers: Vec<Trainer> = [1, 2, 3]
                .into_iter()
                .map(|threads| {
                    let mut t = Trainer::new(model.clone(), config.clone(), 3).expect("valid");
                    t.set_threads(threads);
                    t
                })
                .collect();
            for i in 0..30 {
                let (x, y) = sample(i);
                let outcomes: Vec<_> = trainers
                    .iter_mut()
                    .map(|t| {
                        let o = t.learn(&x, y, true).expect("valid sample");
                        if o.sleep_due {
                            t.sleep();
                        }
                        o
                    })
                    .collect();
                assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "sample {i}");
            }
            for t in &mut trainers {
                t.settle();
            }
            let (one, rest) = trainers.split_first().expect("three trainers");
            assert_ne!(one.model(), &model, "{schedule:?}: the model learned");
            for t in rest {
                assert_eq!(t.model(), one.model(), "{schedule:?} {negatives:?}");
                assert_eq!(t.layer_states(), one.layer_states());
            }
        }
    }

    /// Mini-batch mode sums gradients and changes the weights once per full batch.
    #[test]
    fn mini_batches_update_once_per_batch() {
        let config = TrainConfig {
            batch_size: 4,
            // The temperature fit moves with every sample; this test watches the weights.
            calibration_window: 0,
            ..Default::default()
        };
        let mut t = toy(config, 5);
        let start = t.model.clone();
        for i in 0..3 {
            let (x, y) = sample(i);
            t.learn(&x, y, false).expect("valid sample");
            assert_eq!(t.model, start, "changed after {} samples", i + 1);
        }
        let (x, y) = sample(3);
        t.learn(&x, y, false).expect("valid sample");
        assert_ne!(t.model, start);
        assert_eq!(t.batch_count, 0);
    }

    /// `learn_batch` (matrix products) makes the same updates as `learn` sample by sample in
    /// mini-batch mode. Reference: the gradient-sum path (`learn` with the same `batch_size`,
    /// seed and samples), whose per-sample arithmetic is the streaming path's. Random and hard
    /// negatives, with and without momentum, one and two threads, with predictions: the same
    /// predictions, and weights within `1e-5·(1 + |w|)` after three batches (the GEMMs only
    /// sum in another order).
    #[test]
    fn learn_batch_matches_sample_by_sample() {
        for negatives in [NegativeStrategy::Random, NegativeStrategy::Hard] {
            for momentum in [0.0, 0.9] {
                for threads in [1, 2] {
                    let config = TrainConfig {
                        batch_size: 4,
                        negatives,
                        optimiser: OptimiserConfig {
                            momentum,
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    let mut batched = toy(config.clone(), 11);
                    let mut single = toy(config, 11);
                    batched.set_threads(threads);
                    assert!(batched.learns_in_batches());
                    for batch in 0..3 {
                        let (mut xs, mut ys) = (Vec::new(), Vec::new());
                        let mut predicted = Vec::new();
                        for i in 4 * batch..4 * batch + 4 {
                            let (x, y) = sample(i);
                            predicted.push(single.learn(&x, y, true).expect("valid").predicted);
                            xs.extend(x);
                            ys.push(y);
                        }
                        let outcomes = batched.learn_batch(&xs, &ys, true).expect("valid");
                        let got: Vec<_> = outcomes.iter().map(|o| o.predicted).collect();
                        assert_eq!(got, predicted);
                    }
                    assert_eq!(batched.samples_learned(), 12);
                    single.settle();
                    batched.settle();
                    for (a, b) in batched.model().layers().iter().zip(single.model().layers()) {
                        let params = |l: &Layer| {
                            l.weight()
                                .iter()
                                .chain(l.bias())
                                .copied()
                                .collect::<Vec<_>>()
                        };
                        for (x, y) in params(a).iter().zip(params(b)) {
                            assert!(
                                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                                "{negatives:?} momentum {momentum} threads {threads}: {x} vs {y}"
                            );
                        }
                    }
                    let (sa, sb) = (batched.take_stats(), single.take_stats());
                    assert_eq!(sa.layers[1].positive_count, sb.layers[1].positive_count);
                }
            }
        }
    }

    /// Invalid input to `learn_batch` is refused before anything is learned.
    #[test]
    fn learn_batch_rejects_bad_samples() {
        let config = TrainConfig {
            batch_size: 2,
            ..Default::default()
        };
        let mut t = toy(config, 3);
        let before = t.model.clone();
        let (x, _) = sample(0);
        let xs: Vec<f32> = x.iter().chain(&x).copied().collect();
        assert!(matches!(
            t.learn_batch(&xs, &[0], false),
            Err(FfError::Shape { .. })
        ));
        assert!(matches!(
            t.learn_batch(&xs, &[0, 3], false),
            Err(FfError::Label { label: 3, .. })
        ));
        assert_eq!(t.model, before);
        assert_eq!(t.samples_learned(), 0);
        assert_eq!(t.learn_batch(&[], &[], false), Ok(vec![]));
    }

    #[test]
    fn sleep_schedule_asks_for_sleep_and_sleeps() {
        let config = TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_every_samples: 4,
            ..Default::default()
        };
        let mut t = toy(config, 2);
        let mut dues = 0;
        for i in 0..12 {
            let (x, y) = sample(i);
            if t.learn(&x, y, true).expect("valid sample").sleep_due {
                dues += 1;
                let before = t.model.layers[1].clone();
                let report = t.sleep();
                assert_eq!(report.negatives, 4);
                assert_ne!(t.model.layers[1], before);
                assert!(!t.sleep_due());
            }
        }
        assert_eq!(dues, 3);
        let stats = t.take_stats();
        assert_eq!(stats.layers[0].positive_count, 12);
        assert_eq!(stats.layers[0].negative_count, 12);
    }

    /// With `sleep_ramp`, the first wakes are one sample long and lengthen with the stream up
    /// to `sleep_every_samples`; a restart (what a detected drift does) makes them short again,
    /// and a trainer resumed from a state keeps the same wakes.
    #[test]
    fn the_sleep_ramp_lengthens_wakes_and_a_restart_shortens_them() {
        let config = TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_method: SleepMethod::Consolidate,
            wake_lr_scale: 0.0,
            sleep_every_samples: 8,
            replay_capacity: 8,
            sleep_ramp: 0.25,
            ..Default::default()
        };
        let mut t = toy(config.clone(), 2);
        let wakes = |t: &mut Trainer, n: usize, from: usize| {
            let mut lengths = Vec::new();
            for i in from..from + n {
                let (x, y) = sample(i);
                if t.learn(&x, y, true).expect("valid sample").sleep_due {
                    lengths.push(t.wake_samples_since_sleep());
                    t.sleep();
                }
            }
            lengths
        };
        // ⌊n/4⌋ with n the samples learned so far, at least 1, at most 8.
        let first = wakes(&mut t, 40, 0);
        assert_eq!(first, [1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 5, 7, 8]);
        assert_eq!(t.wake_samples_since_sleep(), 2, "a wake under way");
        t.settle();
        let mut resumed = Trainer::from_state(t.state(), config).expect("resumes");
        t.restart_boost_with(Boost {
            factor: 2.0,
            samples: 10,
        });
        resumed.restart_boost_with(Boost {
            factor: 2.0,
            samples: 10,
        });
        // The wake under way ends at the first sample after the restart.
        let after = wakes(&mut t, 24, 40);
        assert_eq!(after, [3, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4, 5]);
        assert_eq!(wakes(&mut resumed, 24, 40), after);
        assert_eq!(resumed.model, t.model);
    }

    /// `consolidate` keeps the wake's positive updates only until the next sleep, which replays
    /// every wake sample as a positive and a negative update into the slow weights: after each
    /// sleep the layers are bit-identical to an interleaved trainer's fed the same samples (one
    /// positive and one negative update per sample, each at its own step's rate), although the
    /// wake moved them in between.
    #[test]
    fn consolidate_sleeps_into_what_interleaved_learns() {
        let config = TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_method: SleepMethod::Consolidate,
            sleep_every_samples: 5,
            optimiser: OptimiserConfig {
                momentum: 0.9,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut slept = toy(config.clone(), 7);
        let mut interleaved = toy(
            TrainConfig {
                schedule: ScheduleMode::Interleaved,
                ..config
            },
            7,
        );
        // Under a decaying rate too: each replayed sample is learned at its wake step's rate.
        for t in [&mut slept, &mut interleaved] {
            t.set_lr_schedule(LrSchedule::LinearDecay {
                total_steps: 20,
                decay_start: 0.5,
            });
        }
        for i in 0..20 {
            let (x, y) = sample(i);
            let before = slept.model.layers.clone();
            let outcome = slept.learn(&x, y, false).expect("valid sample");
            interleaved.learn(&x, y, false).expect("valid sample");
            slept.settle();
            assert_ne!(slept.model.layers, before, "the wake learns online");
            if outcome.sleep_due {
                let report = slept.sleep();
                assert_eq!((report.positives, report.negatives), (5, 5));
                slept.settle();
                interleaved.settle();
                assert_eq!(slept.model.layers, interleaved.model.layers, "after {i}");
                assert_eq!(slept.layer_states(), interleaved.layer_states());
            }
        }
    }

    /// A `consolidate` trainer saved in the middle of a wake and resumed from its state drops
    /// the same fast weights at its next sleep as the uninterrupted one: every later layer,
    /// optimiser state and prediction is bit-identical. A state without slow weights (an older
    /// checkpoint) resumes too, taking the live weights as slow, so it differs after the sleep.
    #[test]
    fn consolidate_resumes_mid_wake_exactly() {
        let config = TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_method: SleepMethod::Consolidate,
            sleep_every_samples: 6,
            replay_capacity: 6,
            optimiser: OptimiserConfig {
                momentum: 0.9,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut whole = toy(config.clone(), 11);
        let feed = |t: &mut Trainer, range: std::ops::Range<usize>| {
            let mut predictions = Vec::new();
            for i in range {
                let (x, y) = sample(i);
                let outcome = t.learn(&x, y, true).expect("valid sample");
                predictions.push(outcome.predicted);
                if outcome.sleep_due {
                    t.sleep();
                }
            }
            t.settle();
            predictions
        };
        // 9 samples: one sleep after 6, then 3 wake samples on fast weights.
        feed(&mut whole, 0..9);
        let saved = whole.state();
        let slow = saved
            .slow
            .clone()
            .expect("consolidate saves its slow weights");
        assert_ne!(
            slow.model.layers, whole.model.layers,
            "the wake moved the live weights"
        );
        let mut resumed = Trainer::from_state(saved.clone(), config.clone()).expect("resumes");
        let mut older = Trainer::from_state(
            TrainerState {
                slow: None,
                ..saved
            },
            config,
        )
        .expect("resumes without slow weights");
        let expected = feed(&mut whole, 9..20);
        assert_eq!(feed(&mut resumed, 9..20), expected);
        assert_eq!(resumed.model.layers, whole.model.layers);
        assert_eq!(resumed.layer_states(), whole.layer_states());
        assert_eq!(resumed.state(), whole.state());
        feed(&mut older, 9..20);
        assert_ne!(older.model.layers, whole.model.layers);
    }

    /// With `wake_lr_scale = 0` a `consolidate` wake changes no weight: every prediction made
    /// awake is the last sleep's model's, and each sleep still lands on the interleaved
    /// trainer's weights. A scale between 0 and 1 moves the fast weights by that share of a
    /// full-rate wake's first step.
    #[test]
    fn a_wake_without_fast_weights_predicts_with_the_slow_weights() {
        let config = TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_method: SleepMethod::Consolidate,
            sleep_every_samples: 5,
            replay_capacity: 5,
            wake_lr_scale: 0.0,
            ..Default::default()
        };
        let mut slept = toy(config.clone(), 9);
        let mut interleaved = toy(
            TrainConfig {
                schedule: ScheduleMode::Interleaved,
                ..config.clone()
            },
            9,
        );
        for i in 0..15 {
            let (x, y) = sample(i);
            slept.settle();
            let frozen = slept.model.clone();
            let outcome = slept.learn(&x, y, true).expect("valid sample");
            let expected = frozen
                .classify(&x, Classifier::Goodness)
                .expect("valid sample")
                .label;
            assert_eq!(outcome.predicted, Some(expected), "sample {i}");
            interleaved.learn(&x, y, false).expect("valid sample");
            slept.settle();
            if outcome.sleep_due {
                slept.sleep();
                slept.settle();
                interleaved.settle();
                assert_eq!(slept.model.layers, interleaved.model.layers, "after {i}");
            } else {
                assert_eq!(slept.model.layers, frozen.layers, "the wake is frozen");
            }
        }
        // A fraction of the rate: the first wake step moves the weights by that fraction.
        let step = |scale: f32| {
            let mut t = toy(
                TrainConfig {
                    wake_lr_scale: scale,
                    ..config.clone()
                },
                9,
            );
            let (x, y) = sample(0);
            t.settle();
            let before = t.model.layers[1].weight.clone();
            t.learn(&x, y, false).expect("valid sample");
            t.settle();
            &t.model.layers[1].weight - &before
        };
        let (full, quarter) = (step(1.0), step(0.25));
        for (f, q) in full.iter().zip(&quarter) {
            assert!((0.25 * f - q).abs() <= 1e-6 * (1.0 + f.abs()), "{f} {q}");
        }
        assert!(
            full.iter().any(|f| f.abs() > 1e-6),
            "the full-rate wake learns"
        );
    }

    /// A `consolidate` wake longer than the replay buffer would drop samples nobody learns:
    /// such a configuration is refused, naming the key; a buffer as long as the wake is not.
    #[test]
    fn consolidate_refuses_a_buffer_shorter_than_the_wake() {
        let config = |replay_capacity| TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_method: SleepMethod::Consolidate,
            sleep_every_samples: 1000,
            replay_capacity,
            ..Default::default()
        };
        let err = config(999).validate().expect_err("too short");
        assert!(
            matches!(
                err,
                FfError::Config {
                    key: "replay_capacity",
                    ..
                }
            ),
            "{err}"
        );
        assert!(config(1000).validate().is_ok());
    }

    /// `pairs` replays a positive with every negative and keeps the wake's updates: a sleep
    /// changes the weights and reports both counts, while `negatives` reports no positives.
    #[test]
    fn pairs_replay_positives_and_negatives_replays_none() {
        for (method, positives) in [(SleepMethod::Pairs, 4), (SleepMethod::Negatives, 0)] {
            let config = TrainConfig {
                schedule: ScheduleMode::Sleep,
                sleep_method: method,
                sleep_every_samples: 4,
                ..Default::default()
            };
            let mut t = toy(config, 3);
            for i in 0..4 {
                let (x, y) = sample(i);
                t.learn(&x, y, false).expect("valid sample");
            }
            t.settle();
            let before = t.model.layers.clone();
            let report = t.sleep();
            assert_eq!((report.positives, report.negatives), (positives, 4));
            t.settle();
            assert_ne!(t.model.layers, before);
            let stats = t.take_stats();
            assert_eq!(stats.layers[0].positive_count, 4 + positives as u64);
        }
    }

    fn all_finite(t: &mut Trainer) -> bool {
        t.settle();
        let model = t.model().clone();
        let params = model.layers().iter().flat_map(|l| {
            l.weight()
                .iter()
                .chain(l.bias().iter())
                .copied()
                .collect::<Vec<_>>()
        });
        let head = model.head.weight().iter().chain(model.head.bias().iter());
        let states = t.layer_states().iter().flat_map(|s| {
            s.velocity_weight
                .iter()
                .chain(&s.velocity_bias)
                .chain(&s.mean_activity)
                .copied()
                .collect::<Vec<_>>()
        });
        params
            .chain(head.copied())
            .chain(states.collect::<Vec<_>>())
            .all(f32::is_finite)
    }

    /// An update that would overflow (here a learning rate of 1e37, which the configuration
    /// accepts: `lr · dL/dz · x` exceeds `f32::MAX`) is refused: the trainer is bit-identical
    /// to one that never saw the sample, and the next sample is learned as usual.
    #[test]
    fn refused_update_changes_nothing_and_learning_continues() {
        for momentum in [0.0, 0.9] {
            let config = TrainConfig {
                schedule: ScheduleMode::Sleep,
                sleep_every_samples: 100,
                optimiser: OptimiserConfig {
                    momentum,
                    ..Default::default()
                },
                train_head: true,
                ..Default::default()
            };
            let mut warm = toy(config, 6);
            for i in 0..5 {
                let (x, y) = sample(i);
                assert!(!warm.learn(&x, y, false).expect("valid").refused);
            }
            let mut never_saw_it = warm.clone();
            let mut refused = warm;
            let normal_lr = refused.config.optimiser.lr;
            refused.config.optimiser.lr = 1e37;
            let (x, y) = sample(5);
            let outcome = refused.learn(&x, y, false).expect("valid sample");
            assert!(outcome.refused, "momentum {momentum}");
            assert!(all_finite(&mut refused), "momentum {momentum}");
            assert_eq!(refused.samples_learned(), never_saw_it.samples_learned());
            assert_eq!(refused.replay().len(), never_saw_it.replay().len());
            never_saw_it.settle();
            assert_eq!(refused.model(), never_saw_it.model());
            assert_eq!(refused.layer_states(), never_saw_it.layer_states());

            refused.config.optimiser.lr = normal_lr;
            let before = refused.model().clone();
            let (x, y) = sample(6);
            assert!(!refused.learn(&x, y, false).expect("valid").refused);
            never_saw_it.learn(&x, y, false).expect("valid");
            refused.settle();
            never_saw_it.settle();
            assert_ne!(refused.model(), &before, "the next sample is learned");
            assert_eq!(refused.model(), never_saw_it.model());
            assert_eq!(refused.layer_states(), never_saw_it.layer_states());
            assert_eq!(refused.take_stats(), never_saw_it.take_stats());
        }
    }

    /// Weights driven far beyond anything training produces (as a hand-edited model file
    /// could carry) make the forward pass overflow for some inputs; no update is ever applied
    /// that leaves a NaN or an infinity behind, in wake or in sleep.
    #[test]
    fn huge_weights_never_become_non_finite() {
        let config = TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_every_samples: 4,
            optimiser: OptimiserConfig {
                momentum: 0.9,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut t = toy(config, 9);
        for w in t.model.layers[0].weight.iter_mut() {
            *w *= 1e30;
        }
        t.guard = FiniteGuard::new(&t.model.layers, &t.states, &t.model.head);
        let mut refused = 0;
        for i in 0..12 {
            let (x, y) = sample(i);
            let outcome = t.learn(&x, y, true).expect("valid sample");
            refused += usize::from(outcome.refused);
            if outcome.sleep_due {
                refused += t.sleep().refused;
            }
            assert!(all_finite(&mut t), "after sample {i}");
        }
        assert!(refused > 0, "the overflowing updates were refused");
    }

    #[test]
    fn rejects_bad_samples_without_learning() {
        let mut t = toy(TrainConfig::default(), 3);
        let before = t.model.clone();
        assert!(matches!(
            t.learn(&[0.0; 7], 0, false),
            Err(FfError::Shape { .. })
        ));
        assert!(matches!(
            t.learn(&[0.0; 8], 3, false),
            Err(FfError::Label { label: 3, .. })
        ));
        assert_eq!(t.model, before);
        assert_eq!(t.samples_learned(), 0);
    }
}
