//! One schedule step's work before anything changes: the forward passes it needs (which also
//! apply the previous sample's pending update), the choice of negative, and staging — each
//! layer's local gradient, checked by the non-finite guard (docs/algorithm.md §8) before it
//! becomes the pending update or joins the mini-batch.

use std::sync::Arc;

use crate::ff::classify::{argmax, softmax_in_place, Classifier};
use crate::ff::crew::Crew;
use crate::ff::goodness::{Goodness, Polarity};
use crate::ff::guard::max_abs;
use crate::ff::model::{forward_rows, Frozen, LabelInput, Layer0, Workspace};
use crate::ff::negatives::{self, NegativeStrategy};
use crate::ff::schedule::SleepMethod;

use super::pending::{Pending, Updating};
use super::Trainer;

/// Which updates a step makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A positive and a negative update (the interleaved schedule).
    Interleaved,
    /// A positive update only (awake, sleep schedule).
    Wake,
    /// A negative update only, from a replayed sample (asleep).
    Sleep,
}

impl Step {
    fn positive(self) -> bool {
        self != Step::Sleep
    }

    fn negative(self) -> bool {
        self != Step::Wake
    }
}

/// Which slots of the workspace one step learns from.
pub(super) struct Slots {
    pub(super) positive: Option<usize>,
    pub(super) negative: Option<usize>,
    pub(super) neutral: Option<usize>,
    pub(super) predicted: Option<usize>,
    /// The slot of the negative's positive (the sample with its true label, or neutral when
    /// unsupervised) when the negative's loss is measured against its goodness (the
    /// `symmetric` sleep); `None` for the threshold.
    pub(super) reference: Option<usize>,
}

impl Trainer {
    /// Runs the forward passes a step needs and picks the negative. The first pass also applies
    /// the previous sample's pending update (see [`Pending`]).
    pub(super) fn prepare(&mut self, x: &[f32], y: usize, step: Step, predict: bool) -> Slots {
        let (positive, negative) = (step.positive(), step.negative());
        let symmetric = step == Step::Sleep && self.config.sleep_method == SleepMethod::Symmetric;
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
                reference: symmetric.then_some(0),
            };
        }

        let (classifier, strategy) = (self.config.classifier, self.config.negatives);
        let wants_probs = predict || (negative && strategy == NegativeStrategy::Hard);
        let all_labels = wants_probs && classifier.reads_goodness();
        let neutral_needed =
            (positive && self.config.train_head) || (wants_probs && classifier.reads_head());
        let mut neutral = None;
        if all_labels {
            // The neutral pass joins the labelled ones: the first layer's product with the
            // features is shared by every slot.
            let mut labels = std::mem::take(&mut self.ws[self.cur].labels);
            labels.clear();
            labels.extend((0..classes).map(LabelInput::Class));
            if neutral_needed {
                labels.push(LabelInput::Neutral);
                neutral = Some(classes);
            }
            self.forward(0, x, &labels);
            self.ws[self.cur].labels = labels;
            self.model.goodness_scores(&mut self.ws[self.cur], 0);
            if let (Some(slot), Classifier::Combined) = (neutral, classifier) {
                self.goodness_scores.clear();
                self.goodness_scores
                    .extend_from_slice(&self.ws[self.cur].scores);
                self.model.add_head_scores(&mut self.ws[self.cur], slot);
            }
        } else if neutral_needed {
            let slot = self.ws[self.cur].slots;
            self.forward(0, x, &[LabelInput::Neutral]);
            if classifier == Classifier::Softmax && wants_probs {
                self.model.head_scores(&mut self.ws[self.cur], slot);
            }
            neutral = Some(slot);
        }
        let predicted = predict.then(|| argmax(&self.ws[self.cur].scores));
        let positive_slot = positive.then(|| self.slot_for(all_labels, x, y));
        let reference = symmetric.then(|| self.slot_for(all_labels, x, y));
        let negative_slot = negative.then(|| {
            let wrong = match strategy {
                NegativeStrategy::Hard => {
                    let ws = &mut self.ws[self.cur];
                    if self.config.negative_temperature != 1.0 {
                        let t = self.config.negative_temperature;
                        for (p, &s) in ws.probs.iter_mut().zip(&ws.scores) {
                            *p = s / t;
                        }
                        softmax_in_place(&mut ws.probs);
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
            reference,
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
    /// row by row inside this pass, each row just before the pass reads it, so this pass
    /// computes the first layer's products afresh. Every later pass of the step sees the same
    /// `x` in group 0 (or a hybrid in group 1) through the same weights, so it reuses the
    /// products the first kept ([`Layer0::Reuse`]; the workspace forgets them at the step's
    /// start).
    fn forward(&mut self, group: usize, x: &[f32], labels: &[LabelInput]) {
        if self.threads > 1 && self.crew.is_none() {
            self.crew = Some(Arc::new(Crew::new(self.threads - 1)));
        }
        let crew = self.crew.as_deref();
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
                forward_rows(
                    &self.model.config,
                    &mut rows,
                    cur,
                    crew,
                    (group, Layer0::Compute),
                    x,
                    labels,
                );
            }
            None => forward_rows(
                &self.model.config,
                &mut Frozen(&self.model.layers),
                cur,
                crew,
                (group, Layer0::Reuse),
                x,
                labels,
            ),
        }
    }

    /// Computes each layer's local gradient for the chosen slots and leaves the update pending
    /// (or adds it to the mini-batch). Returns `false`, with everything as before the call, if
    /// `head_ok` is false or the guard finds the update could make a parameter non-finite.
    pub(super) fn stage(&mut self, slots: &Slots, head_ok: bool) -> bool {
        debug_assert!(self.pending.is_none());
        let mut lr = self.lr_after(self.samples);
        if self.slow.is_some() && slots.negative.is_none() {
            // A consolidate wake: the update goes to the fast weights.
            lr *= self.config.wake_lr_scale;
        }
        for (backup, state) in self.mean_backup.iter_mut().zip(&self.states) {
            backup.copy_from_slice(&state.mean_activity);
        }
        self.stats_backup.clone_from_slice(&self.stats.layers);
        let opt = &self.config.optimiser;
        let ws = &mut self.ws[self.cur];
        let model = &self.model;
        // Each threshold, and with layer collaboration the sum of every layer's logit for the
        // positive and the negative (docs/algorithm.md §1.7).
        let threshold = |l: usize, i: usize, ws: &Workspace| match slots.reference {
            Some(r) if i == 1 => {
                let m = model.layers[l].outputs();
                Goodness::of(&ws.h[l][r * m..(r + 1) * m])
            }
            _ => model.layers[l].goodness.threshold,
        };
        let mut total = [0.0f32; 2];
        if self.config.layer_collaboration {
            for (i, slot) in [(0, slots.positive), (1, slots.negative)] {
                let Some(slot) = slot else { continue };
                total[i] = (0..model.layers.len())
                    .map(|l| {
                        let m = model.layers[l].outputs();
                        let g = Goodness::of(&ws.h[l][slot * m..(slot + 1) * m]);
                        model.layers[l]
                            .goodness
                            .logit_against(g, threshold(l, i, ws))
                    })
                    .sum();
            }
        }
        for l in 0..model.layers.len() {
            let m = model.layers[l].outputs();
            let stats = &mut self.stats.layers[l];
            let state = &mut self.states[l];
            for (i, slot, polarity) in [
                (0, slots.positive, Polarity::Positive),
                (1, slots.negative, Polarity::Negative),
            ] {
                let Some(slot) = slot else { continue };
                let layer = &model.layers[l];
                let against = (self.config.layer_collaboration
                    || (slots.reference.is_some() && i == 1))
                    .then(|| threshold(l, i, ws));
                let h = &ws.h[l][slot * m..(slot + 1) * m];
                let dz = &mut ws.dz[i][l];
                let (g, loss) = match against {
                    Some(own) if self.config.layer_collaboration => {
                        let others = total[i] - layer.goodness.logit_against(Goodness::of(h), own);
                        let shifted = layer.goodness.collaborative_threshold(own, others);
                        layer.local_gradient_against(h, polarity, shifted, dz)
                    }
                    Some(reference) => layer.local_gradient_against(h, polarity, reference, dz),
                    None => layer.local_gradient(h, polarity, dz),
                };
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
                let input = ws.layer_input(l, i, slot, n);
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
}
