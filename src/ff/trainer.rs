//! `Trainer`: the only thing that mutates a `Model`. It runs one schedule step per sample —
//! interleaved (positive and negative update) or wake (positive only, sample kept for replay) —
//! and the sleep phase (negative updates from the replay buffer). Every update is local to its
//! layer; nothing crosses layers. Same seed and same data order give bit-identical weights.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

use crate::ff::classify::{argmax, Classifier};
use crate::ff::error::FfError;
use crate::ff::goodness::Polarity;
use crate::ff::guard::{max_abs, FiniteGuard};
use crate::ff::kernel;
use crate::ff::layer::Term;
use crate::ff::negatives::{self, HybridMask, NegativeStrategy};
use crate::ff::network::{forward_rows, Frozen, LabelInput, Model, Rows, Workspace};
use crate::ff::optimiser::{LayerState, OptimiserConfig};
use crate::ff::replay::ReplayBuffer;
use crate::ff::schedule::{ScheduleConfig, ScheduleMode, SleepScheduler};
use crate::ff::state::{RngPosition, TrainerState};

/// Training hyper-parameters beyond the network's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser for the FF layers.
    pub optimiser: OptimiserConfig,
    /// How negatives are made.
    pub negatives: NegativeStrategy,
    /// Interleaved or wake/sleep.
    pub schedule: ScheduleConfig,
    /// Classifier whose probabilities drive hard negatives and predictions.
    pub classifier: Classifier,
    /// Train the softmax head on positive samples (needed for `Classifier::Softmax`).
    pub train_head: bool,
    /// Learning rate of the softmax head.
    pub head_lr: f32,
    /// Hard negatives are drawn from `softmax(scores / τ)`; goodness scores are sums of
    /// per-layer logits `(G − θ)/T` and very peaked at `τ = 1`, which would always pick the
    /// single strongest competitor.
    pub negative_temperature: f32,
    /// Samples whose gradients are summed before one update (offline training only). 1, the
    /// default and the streaming path, updates after every sample.
    pub batch_size: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            optimiser: OptimiserConfig::default(),
            negatives: NegativeStrategy::Hard,
            schedule: ScheduleConfig::default(),
            classifier: Classifier::Goodness,
            train_head: false,
            head_lr: 1e-3,
            negative_temperature: 1.0,
            batch_size: 1,
        }
    }
}

impl TrainConfig {
    /// Checks every field, and that the parts fit together.
    pub fn validate(&self) -> Result<(), FfError> {
        self.optimiser.validate()?;
        self.schedule.validate()?;
        if !(self.negative_temperature.is_finite() && self.negative_temperature > 0.0) {
            return Err(FfError::Config {
                key: "negative_temperature",
                reason: "must be a finite number > 0".into(),
            });
        }
        if self.batch_size == 0 {
            return Err(FfError::Config {
                key: "batch_size",
                reason: "must be >= 1".into(),
            });
        }
        if !(self.head_lr.is_finite() && self.head_lr > 0.0) {
            return Err(FfError::Config {
                key: "head_lr",
                reason: "must be a finite number > 0".into(),
            });
        }
        if self.negatives == NegativeStrategy::Hybrid && self.classifier == Classifier::Goodness {
            return Err(FfError::Config {
                key: "classifier",
                reason: "hybrid negatives train without labels; classify with the softmax head"
                    .into(),
            });
        }
        if self.classifier == Classifier::Softmax && !self.train_head {
            return Err(FfError::Config {
                key: "train_head",
                reason: "the softmax classifier needs a trained head".into(),
            });
        }
        Ok(())
    }
}

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
    /// Negative updates refused because they could have made a parameter non-finite.
    pub refused: usize,
}

/// Which slots of the workspace one step learns from.
struct Slots {
    positive: Option<usize>,
    negative: Option<usize>,
    neutral: Option<usize>,
    predicted: Option<usize>,
}

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
        let replay_capacity = match (config.schedule.mode, config.negatives) {
            (ScheduleMode::Sleep, _) | (_, NegativeStrategy::Hybrid) => {
                config.schedule.replay_capacity.max(1)
            }
            _ => 0,
        };
        Ok(Self {
            ws: [Workspace::new(&ncfg), Workspace::new(&ncfg)],
            cur: 0,
            pending: None,
            replay: ReplayBuffer::new(ncfg.inputs, replay_capacity),
            scheduler: SleepScheduler::new(config.schedule.sleep_every),
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
            model,
            config,
        })
    }

    /// The model being trained, with every learned sample applied.
    pub fn model(&mut self) -> &Model {
        self.flush();
        &self.model
    }

    /// A copy of everything this trainer would need to continue exactly where it is (applies
    /// the pending update first, as [`Trainer::model`] does).
    pub fn state(&mut self) -> TrainerState {
        self.flush();
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
            rng: RngPosition {
                seed: self.rng.get_seed(),
                stream: self.rng.get_stream(),
                word_pos: self.rng.get_word_pos(),
            },
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
            rng,
        } = state;
        let mut trainer = Trainer::new(model, config, 0)?;
        FfError::check_len("optimiser layers", trainer.states.len(), layers.len())?;
        for (fresh, saved) in trainer.states.iter().zip(&layers) {
            FfError::check_len(
                "momentum buffer (weights)",
                fresh.velocity_weight.len(),
                saved.velocity_weight.len(),
            )?;
            FfError::check_len(
                "momentum buffer (biases)",
                fresh.velocity_bias.len(),
                saved.velocity_bias.len(),
            )?;
            FfError::check_len(
                "mean activities",
                fresh.mean_activity.len(),
                saved.mean_activity.len(),
            )?;
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
        trainer.rng = ChaCha12Rng::from_seed(rng.seed);
        trainer.rng.set_stream(rng.stream);
        trainer.rng.set_word_pos(rng.word_pos);
        Ok(trainer)
    }

    /// Takes the model out, ending training.
    pub fn into_model(mut self) -> Model {
        self.flush();
        self.model
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Per-layer optimiser state (momentum buffers, mean activities).
    pub fn layer_states(&mut self) -> &[LayerState] {
        self.flush();
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

    /// Sets the learning-rate schedule (e.g. once the number of training steps is known).
    pub fn set_lr_schedule(&mut self, schedule: crate::ff::optimiser::LrSchedule) {
        self.config.optimiser.schedule = schedule;
    }

    /// Whether a sleep phase is due (sleep schedule only).
    pub fn sleep_due(&self) -> bool {
        self.config.schedule.mode == ScheduleMode::Sleep && self.scheduler.due()
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
    /// `predict`, first classifies it with the current model (test-then-train).
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
        let interleaved = self.config.schedule.mode == ScheduleMode::Interleaved;
        let slots = self.prepare(features, label, true, interleaved, predict);
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

    /// The sleep phase: negative-only updates built from the replay buffer with the current
    /// model, the most recent samples first in line. Resets the wake counter.
    pub fn sleep(&mut self) -> SleepReport {
        let wanted = match self.config.schedule.negatives_per_sleep {
            0 => self.scheduler.since_sleep(),
            n => n,
        };
        let n = if self.replay.is_empty() { 0 } else { wanted };
        let mut refused = 0;
        for i in 0..n {
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
            let slots = self.prepare(&features, label, false, true, false);
            self.replayed = features;
            if !self.stage(&slots, true) {
                refused += 1;
            }
        }
        self.scheduler.slept();
        SleepReport {
            negatives: n - refused,
            refused,
        }
    }

    /// Runs the forward passes a step needs and picks the negative. The first pass also applies
    /// the previous sample's pending update (see [`Pending`]).
    fn prepare(
        &mut self,
        x: &[f32],
        y: usize,
        positive: bool,
        negative: bool,
        predict: bool,
    ) -> Slots {
        let classes = self.model.config().classes;
        if self.pending.is_some() {
            self.cur ^= 1;
        }
        self.ws[self.cur].clear();

        if self.config.negatives == NegativeStrategy::Hybrid {
            // Unsupervised: both passes carry the neutral label; the negative mixes `x` with
            // another real sample from the replay buffer (or itself, before any exists).
            self.forward(0, x, &[LabelInput::Neutral]);
            let predicted = predict.then(|| {
                let ws = &mut self.ws[self.cur];
                self.model.head_scores(ws, 0);
                argmax(&ws.scores)
            });
            let mut negative_slot = None;
            if negative {
                let other = if self.replay.is_empty() {
                    x
                } else {
                    let i = rand::Rng::gen_range(&mut self.rng, 0..self.replay.len());
                    self.replay.recent(i).map_or(x, |r| r.0)
                };
                self.mask.draw(&mut self.rng, &mut self.mask_buf);
                negatives::mix(&self.mask_buf, x, other, &mut self.hybrid);
                let hybrid = std::mem::take(&mut self.hybrid);
                self.forward(1, &hybrid, &[LabelInput::Neutral]);
                self.hybrid = hybrid;
                negative_slot = Some(1);
            }
            return Slots {
                positive: positive.then_some(0),
                negative: negative_slot,
                neutral: positive.then_some(0),
                predicted,
            };
        }

        let (classifier, strategy) = (self.config.classifier, self.config.negatives);
        let wants_probs = predict || (negative && strategy == NegativeStrategy::Hard);
        let all_labels = wants_probs && classifier == Classifier::Goodness;
        let neutral_needed = (positive && self.config.train_head)
            || (wants_probs && classifier == Classifier::Softmax);
        if all_labels {
            let mut labels = std::mem::take(&mut self.ws[self.cur].labels);
            labels.clear();
            labels.extend((0..classes).map(LabelInput::Class));
            self.forward(0, x, &labels);
            self.ws[self.cur].labels = labels;
            self.model.goodness_scores(&mut self.ws[self.cur], 0);
        }
        let neutral = neutral_needed.then(|| {
            let slot = self.ws[self.cur].slots;
            self.forward(0, x, &[LabelInput::Neutral]);
            if classifier == Classifier::Softmax && wants_probs {
                self.model.head_scores(&mut self.ws[self.cur], slot);
            }
            slot
        });
        let predicted = predict.then(|| argmax(&self.ws[self.cur].scores));
        let positive_slot = positive.then(|| self.slot_for(all_labels, x, y));
        let negative_slot = negative.then(|| {
            let wrong = match strategy {
                NegativeStrategy::Hard => {
                    let ws = &mut self.ws[self.cur];
                    if self.config.negative_temperature != 1.0 {
                        let t = self.config.negative_temperature;
                        for (p, &s) in ws.probs.iter_mut().zip(&ws.scores) {
                            *p = s / t;
                        }
                        crate::ff::classify::softmax_in_place(&mut ws.probs);
                    }
                    negatives::hard_wrong_label(&ws.probs, y, &mut self.rng)
                }
                _ => negatives::random_wrong_label(classes, y, &mut self.rng),
            };
            self.slot_for(all_labels, x, wrong)
        });
        Slots {
            positive: positive_slot,
            negative: negative_slot,
            neutral,
            predicted,
        }
    }

    /// The slot holding `x` with `label`: already there after an all-labels pass, else a pass.
    fn slot_for(&mut self, all_labels: bool, x: &[f32], label: usize) -> usize {
        if all_labels {
            label
        } else {
            let slot = self.ws[self.cur].slots;
            self.forward(0, x, &[LabelInput::Class(label)]);
            slot
        }
    }

    /// One forward pass into the current workspace. If an update is pending, it is applied
    /// row by row inside this pass, each row just before the pass reads it.
    fn forward(&mut self, group: usize, x: &[f32], labels: &[LabelInput]) {
        let (first, second) = self.ws.split_at_mut(1);
        let (cur, prev) = if self.cur == 0 {
            (&mut first[0], &second[0])
        } else {
            (&mut second[0], &first[0])
        };
        match self.pending.take() {
            Some(pending) => {
                let mut rows = Updating {
                    layers: &mut self.model.layers,
                    states: &mut self.states,
                    optimiser: &self.config.optimiser,
                    ws: prev,
                    pending,
                };
                forward_rows(&self.model.config, &mut rows, cur, group, x, labels);
            }
            None => forward_rows(
                &self.model.config,
                &mut Frozen(&self.model.layers),
                cur,
                group,
                x,
                labels,
            ),
        }
    }

    /// Computes each layer's local gradient for the chosen slots and leaves the update pending
    /// (or adds it to the mini-batch). Returns `false`, with everything as before the call, if
    /// `head_ok` is false or the guard finds the update could make a parameter non-finite.
    fn stage(&mut self, slots: &Slots, head_ok: bool) -> bool {
        debug_assert!(self.pending.is_none());
        let lr = self.config.optimiser.lr * self.config.optimiser.schedule.factor(self.samples);
        for (backup, state) in self.mean_backup.iter_mut().zip(&self.states) {
            backup.copy_from_slice(&state.mean_activity);
        }
        self.stats_backup.clone_from_slice(&self.stats.layers);
        let opt = &self.config.optimiser;
        let ws = &mut self.ws[self.cur];
        let model = &self.model;
        for l in 0..model.layers.len() {
            let m = model.layers[l].outputs();
            let stats = &mut self.stats.layers[l];
            let state = &mut self.states[l];
            for (i, slot, polarity) in [
                (0, slots.positive, Polarity::Positive),
                (1, slots.negative, Polarity::Negative),
            ] {
                let Some(slot) = slot else { continue };
                let h = &ws.h[l][slot * m..(slot + 1) * m];
                let dz = &mut ws.dz[i][l];
                let (g, loss) = model.layers[l].local_gradient(h, polarity, dz);
                stats.loss_sum += f64::from(loss);
                match polarity {
                    Polarity::Positive => {
                        stats.positive_goodness_sum += f64::from(g);
                        stats.positive_count += 1;
                        state.observe_positive(h, opt.peer_decay);
                        state.add_peer_term(opt.peer_norm, dz);
                    }
                    Polarity::Negative => {
                        stats.negative_goodness_sum += f64::from(g);
                        stats.negative_count += 1;
                    }
                }
                if l == 0 {
                    let mut buf = std::mem::take(&mut ws.input0[i]);
                    model.layer0_input(ws, slot, &mut buf);
                    ws.input0[i] = buf;
                }
            }
        }
        if slots.positive.is_none() && slots.negative.is_none() {
            return head_ok;
        }
        if !(head_ok && self.update_is_safe(slots, lr)) {
            for (backup, state) in self.mean_backup.iter().zip(&mut self.states) {
                state.mean_activity.copy_from_slice(backup);
            }
            self.stats.layers.clone_from_slice(&self.stats_backup);
            return false;
        }
        let pending = Pending {
            positive: slots.positive,
            negative: slots.negative,
            lr,
        };
        if self.batch_grad.is_empty() {
            self.pending = Some(pending);
        } else {
            self.accumulate(pending);
        }
        true
    }

    /// Whether the staged gradients are finite and the update keeps every parameter within
    /// the guard's limits; on `true` the guard's bounds move to after the update.
    fn update_is_safe(&mut self, slots: &Slots, lr: f32) -> bool {
        let ws = &self.ws[self.cur];
        let layers = self.model.layers.len();
        for l in 0..layers {
            let n = self.model.layers[l].inputs();
            let mut terms = [None; 2];
            for (i, slot) in [(0, slots.positive), (1, slots.negative)] {
                let Some(slot) = slot else { continue };
                let input = if l == 0 {
                    &ws.input0[i][..]
                } else {
                    &ws.h_norm[l - 1][slot * n..(slot + 1) * n]
                };
                match (max_abs(&ws.dz[i][l]), max_abs(input)) {
                    (Some(dz), Some(x)) => terms[i] = Some((dz, x)),
                    _ => return false,
                }
            }
            let safe = self.guard.check_layer(
                l,
                terms,
                lr,
                &self.config.optimiser,
                &self.model.layers[l],
                &self.states[l],
            );
            if !safe {
                return false;
            }
        }
        self.guard.commit(layers);
        true
    }

    /// Mini-batch mode: adds one sample's gradients to the batch sums; applies them, averaged,
    /// once the batch is full.
    fn accumulate(&mut self, p: Pending) {
        let ws = &self.ws[self.cur];
        for (l, (gw, gb)) in self.batch_grad.iter_mut().enumerate() {
            let n = self.model.layers[l].inputs();
            let input = |i: usize, slot: usize| -> &[f32] {
                if l == 0 {
                    &ws.input0[i]
                } else {
                    &ws.h_norm[l - 1][slot * n..(slot + 1) * n]
                }
            };
            for (i, slot) in [(0, p.positive), (1, p.negative)] {
                let Some(slot) = slot else { continue };
                let (dz, x) = (&ws.dz[i][l], input(i, slot));
                for (j, (&d, b)) in dz.iter().zip(gb.iter_mut()).enumerate() {
                    kernel::update_row1(&mut gw[j * n..(j + 1) * n], 1.0, -d, x);
                    *b += d;
                }
            }
        }
        self.batch_count += 1;
        if self.batch_count >= self.config.batch_size {
            self.apply_batch(p.lr);
        }
    }

    /// Applies the averaged batch gradient and clears it.
    fn apply_batch(&mut self, lr: f32) {
        if self.batch_count == 0 {
            return;
        }
        let scale = 1.0 / self.batch_count as f32;
        let opt = &self.config.optimiser;
        for (l, (gw, gb)) in self.batch_grad.iter_mut().enumerate() {
            let n = self.model.layers[l].inputs();
            // The averaged gradient is one term with unit coefficient per row.
            for j in 0..gb.len() {
                let row_grad = &gw[j * n..(j + 1) * n];
                let layer = &mut self.model.layers[l];
                layer.apply_gradient_row(
                    j,
                    &mut self.states[l],
                    opt,
                    lr,
                    scale,
                    row_grad,
                    gb[j] * scale,
                );
            }
            gw.fill(0.0);
            gb.fill(0.0);
        }
        self.batch_count = 0;
    }

    /// Applies the pending update, if any, in a pass of its own.
    fn flush(&mut self) {
        if !self.batch_grad.is_empty() {
            let lr = self.config.optimiser.lr * self.config.optimiser.schedule.factor(self.samples);
            self.apply_batch(lr);
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        let mut rows = Updating {
            layers: &mut self.model.layers,
            states: &mut self.states,
            optimiser: &self.config.optimiser,
            ws: &self.ws[self.cur],
            pending,
        };
        for (l, &m) in self.model.config.hidden.iter().enumerate() {
            for j in 0..m {
                rows.row(l, j);
            }
        }
    }
}

/// An update whose gradients are computed (in the workspace that holds its forward pass) but
/// not yet applied. Batch size 1 is memory-bound: applying it inside the next sample's first
/// forward pass touches each weight row once for both, instead of twice. The arithmetic and its
/// order are unchanged, so results are bit-identical to applying it at once; anything that
/// reads the weights from outside (`model()`, `sleep`'s callers, snapshots) flushes it first.
#[derive(Debug, Clone, Copy)]
struct Pending {
    positive: Option<usize>,
    negative: Option<usize>,
    lr: f32,
}

/// Rows that get the pending update applied as the forward pass reaches them.
struct Updating<'a> {
    layers: &'a mut [crate::ff::layer::Layer],
    states: &'a mut [LayerState],
    optimiser: &'a OptimiserConfig,
    ws: &'a Workspace,
    pending: Pending,
}

impl Rows for Updating<'_> {
    #[inline]
    fn row(&mut self, l: usize, j: usize) -> (&[f32], f32) {
        let ws = self.ws;
        let n = self.layers[l].inputs();
        let input = |i: usize, slot: usize| -> &[f32] {
            if l == 0 {
                &ws.input0[i]
            } else {
                &ws.h_norm[l - 1][slot * n..(slot + 1) * n]
            }
        };
        let term = |i: usize, slot: Option<usize>| {
            slot.map(|s| Term {
                dz: &ws.dz[i][l],
                input: input(i, s),
            })
        };
        let (t0, t1) = match (
            term(0, self.pending.positive),
            term(1, self.pending.negative),
        ) {
            (Some(a), b) => (a, b),
            (None, Some(b)) => (b, None),
            (None, None) => return (self.layers[l].row(j), self.layers[l].bias[j]),
        };
        self.layers[l].apply_row(
            j,
            &mut self.states[l],
            self.optimiser,
            self.pending.lr,
            t0,
            t1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ff::network::NetworkConfig;
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

    /// Updating layer 2 never changes layer 1: a step whose only non-zero gradient is in the
    /// top layer leaves the bottom layer's weights bit-identical.
    #[test]
    fn no_gradient_crosses_layers() {
        let mut t = toy(TrainConfig::default(), 1);
        let before = t.model.layers[0].clone();
        let (x, y) = sample(0);
        let slots = t.prepare(&x, y, true, true, false);
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

    /// Applying each update inside the next sample's forward pass gives bit-identical weights
    /// to applying it at once (reading `model()` after every sample forces the latter).
    #[test]
    fn fused_updates_equal_immediate_updates() {
        for mode in [ScheduleMode::Interleaved, ScheduleMode::Sleep] {
            for momentum in [0.0, 0.9] {
                let config = TrainConfig {
                    schedule: ScheduleConfig {
                        mode,
                        sleep_every: 3,
                        ..Default::default()
                    },
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
                    immediate.model();
                    assert_eq!(a, b);
                    if a.sleep_due {
                        fused.sleep();
                        immediate.sleep();
                        immediate.model();
                    }
                }
                assert!(fused.pending.is_some());
                assert_eq!(fused.model(), immediate.model());
                assert_eq!(fused.layer_states(), immediate.layer_states());
            }
        }
    }

    /// Mini-batch mode sums gradients and changes the weights once per full batch.
    #[test]
    fn mini_batches_update_once_per_batch() {
        let config = TrainConfig {
            batch_size: 4,
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

    #[test]
    fn sleep_schedule_asks_for_sleep_and_sleeps() {
        let config = TrainConfig {
            schedule: ScheduleConfig {
                mode: ScheduleMode::Sleep,
                sleep_every: 4,
                ..Default::default()
            },
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

    fn all_finite(t: &mut Trainer) -> bool {
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
                schedule: ScheduleConfig {
                    mode: ScheduleMode::Sleep,
                    sleep_every: 100,
                    ..Default::default()
                },
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
            assert_eq!(refused.model(), never_saw_it.model());
            assert_eq!(refused.layer_states(), never_saw_it.layer_states());

            refused.config.optimiser.lr = normal_lr;
            let before = refused.model().clone();
            let (x, y) = sample(6);
            assert!(!refused.learn(&x, y, false).expect("valid").refused);
            never_saw_it.learn(&x, y, false).expect("valid");
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
            schedule: ScheduleConfig {
                mode: ScheduleMode::Sleep,
                sleep_every: 4,
                ..Default::default()
            },
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
