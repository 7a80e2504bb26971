//! Mini-batch mode (`batch_size > 1`, offline training only). Two ways in: `learn` sample by
//! sample, whose gradients are summed per layer and applied, averaged, once per full batch;
//! and `learn_batch`, the same update computed with matrix products over the whole batch
//! (forward GEMMs, then one GEMM per layer for `dW`). Batch size 1, the streaming path, never
//! comes here: its update stays pending (see `pending`).

use crate::ff::batch::BatchWorkspace;
use crate::ff::classify::{argmax, softmax_in_place, Classifier};
use crate::ff::error::FfError;
use crate::ff::goodness::Polarity;
use crate::ff::guard::max_abs;
use crate::ff::kernel;
use crate::ff::matmul::{gemm, Op};
use crate::ff::model::LabelInput;
use crate::ff::negatives::{self, NegativeStrategy};
use crate::ff::schedule::ScheduleMode;

use super::{LearnOutcome, Pending, Trainer};

impl Trainer {
    /// Mini-batch mode: adds one sample's gradients to the batch sums; applies them, averaged,
    /// once the batch is full.
    pub(super) fn accumulate(&mut self, p: Pending) {
        let ws = &self.ws[self.cur];
        for (l, (gw, gb)) in self.batch_grad.iter_mut().enumerate() {
            let n = self.model.layers[l].inputs();
            for (i, slot) in [(0, p.positive), (1, p.negative)] {
                let Some(slot) = slot else { continue };
                let (dz, x) = (&ws.dz[i][l], ws.layer_input(l, i, slot, n));
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
    pub(super) fn apply_batch(&mut self, lr: f32) {
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
}

/// Buffers of the batched mini-batch step ([`Trainer::learn_batch`]).
#[derive(Debug, Clone, Default)]
pub(super) struct BatchBuffers {
    /// The batched forward pass.
    ws: BatchWorkspace,
    /// Per layer, for each learned row (a positive and a negative per accepted sample, in
    /// that order): `dL/dz`, `[rows, out]`, and the normalised input it saw, `[rows, in]`.
    dz: Vec<Vec<f32>>,
    input: Vec<Vec<f32>>,
    /// Per sample: the workspace rows of its positive and its negative.
    pairs: Vec<(usize, usize)>,
    /// One sample's class scores and probabilities.
    scores: Vec<f32>,
    probs: Vec<f32>,
}

impl BatchBuffers {
    pub(super) fn new(threads: usize) -> Self {
        Self {
            ws: BatchWorkspace::new(threads),
            ..Default::default()
        }
    }
}

/// Grows `v` to at least `len` values.
fn fit(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

impl Trainer {
    /// Whether [`Trainer::learn_batch`] runs on matrix products: mini-batches (`batch_size >
    /// 1`) under the interleaved schedule with hard or random negatives, classified by goodness,
    /// without the softmax head or layer collaboration. Other configurations learn a batch sample by sample.
    pub fn learns_in_batches(&self) -> bool {
        let c = &self.config;
        c.batch_size > 1
            && c.schedule == ScheduleMode::Interleaved
            && matches!(
                c.negatives,
                NegativeStrategy::Hard | NegativeStrategy::Random
            )
            && c.classifier == Classifier::Goodness
            && !c.train_head
            && !c.layer_collaboration
    }

    /// Threads learning may use (default 1): per sample, each layer's units are split into
    /// that many bands, updated and computed in parallel (bit-identical to one thread); in
    /// mini-batches, the matrix products are split.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        if self.crew.as_ref().map(|c| c.helpers() + 1) != Some(self.threads) {
            self.crew = None;
        }
        self.batched.ws.threads = threads.max(1);
    }

    /// Learns `labels.len()` samples (`features` holds them back to back, `[samples, inputs]`)
    /// as one mini-batch: every sample's positive and negative pass with the weights as they
    /// are, then one update per layer with the gradients averaged over the batch
    /// (docs/algorithm.md §2, mini-batches). The same update as [`Trainer::learn`] sample by
    /// sample with `batch_size` equal to the batch, up to rounding, but computed with matrix
    /// products: the forward passes are GEMMs over all rows, and each layer's update is one
    /// GEMM `W ← decay·W − (lr/B)·Dᵀ·X̂` (`D` the rows' `dL/dz`, `X̂` their inputs), so the
    /// weights are read once per batch. Every update stays local to its layer.
    ///
    /// When [`Trainer::learns_in_batches`] is false the samples are learned one by one. A
    /// sample whose update the non-finite guard refuses is left out of the batch. Fails, with
    /// nothing learned, if a sample's features or label are invalid.
    pub fn learn_batch(
        &mut self,
        features: &[f32],
        labels: &[usize],
        predict: bool,
    ) -> Result<Vec<LearnOutcome>, FfError> {
        let d = self.model.config.inputs;
        FfError::check_len("batch features", labels.len() * d, features.len())?;
        for (x, &y) in features.chunks_exact(d).zip(labels) {
            self.model.check_features(x)?;
            self.model.check_label(y)?;
        }
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        if !self.learns_in_batches() {
            return Ok(features
                .chunks_exact(d)
                .zip(labels)
                .map(|(x, &y)| self.learn_unchecked(x, y, predict))
                .collect());
        }
        // A partial mini-batch from `learn` is applied first, so batches never mix.
        self.apply_pending();
        Ok(self.learn_batch_unchecked(features, labels, predict))
    }

    /// [`Trainer::learn_batch`]'s matrix path, on validated input.
    fn learn_batch_unchecked(
        &mut self,
        features: &[f32],
        labels: &[usize],
        predict: bool,
    ) -> Vec<LearnOutcome> {
        let samples = labels.len();
        let lr = self.lr_after((self.samples + samples as u64).saturating_sub(1));
        let cfg = &self.model.config;
        let (classes, hidden) = (cfg.classes, cfg.hidden.len());
        let strategy = self.config.negatives;
        let all_labels = predict || strategy == NegativeStrategy::Hard;
        let bb = &mut self.batched;

        // Rows: every label of every sample when scores are needed, else a positive and a
        // random wrong label per sample (drawn in sample order, as sample by sample).
        bb.ws.rows.clear();
        bb.pairs.clear();
        for (b, &y) in labels.iter().enumerate() {
            if all_labels {
                bb.ws
                    .rows
                    .extend((0..classes).map(|k| (b, LabelInput::Class(k))));
            } else {
                let wrong = negatives::random_wrong_label(classes, y, &mut self.rng);
                bb.pairs.push((2 * b, 2 * b + 1));
                bb.ws.rows.push((b, LabelInput::Class(y)));
                bb.ws.rows.push((b, LabelInput::Class(wrong)));
            }
        }
        self.model.forward_batch(&mut bb.ws, features, samples);

        let mut outcomes = Vec::with_capacity(samples);
        if all_labels {
            bb.scores.resize(classes, 0.0);
            bb.probs.resize(classes, 0.0);
            let from = cfg.first_scored_layer();
            for (b, &y) in labels.iter().enumerate() {
                for (k, score) in bb.scores.iter_mut().enumerate() {
                    *score = (from..hidden)
                        .map(|l| {
                            let g = bb.ws.goodness[l][b * classes + k];
                            self.model.layers[l].goodness.logit(g)
                        })
                        .sum();
                }
                let wrong = match strategy {
                    NegativeStrategy::Hard => {
                        let t = self.config.negative_temperature;
                        for (p, &s) in bb.probs.iter_mut().zip(&bb.scores) {
                            *p = if t == 1.0 { s } else { s / t };
                        }
                        softmax_in_place(&mut bb.probs);
                        negatives::hard_wrong_label(&bb.probs, y, &mut self.rng)
                    }
                    _ => negatives::random_wrong_label(classes, y, &mut self.rng),
                };
                bb.pairs.push((b * classes + y, b * classes + wrong));
                outcomes.push(LearnOutcome {
                    predicted: predict.then(|| argmax(&bb.scores)),
                    sleep_due: false,
                    refused: false,
                });
            }
        } else {
            outcomes.resize(
                samples,
                LearnOutcome {
                    predicted: None,
                    sleep_due: false,
                    refused: false,
                },
            );
        }

        // Stage each sample as `stage` does, in order: local gradients (with peer
        // normalisation's running means), statistics, the guard; a refused sample is undone.
        let opt = &self.config.optimiser;
        let (s, off) = (cfg.label_strength, cfg.label_offset());
        bb.dz.resize(hidden, Vec::new());
        bb.input.resize(hidden, Vec::new());
        for l in 0..hidden {
            let layer = &self.model.layers[l];
            fit(&mut bb.dz[l], 2 * samples * layer.outputs());
            fit(&mut bb.input[l], 2 * samples * layer.inputs());
        }
        let mut accepted = 0;
        for (b, outcome) in outcomes.iter_mut().enumerate() {
            for (backup, state) in self.mean_backup.iter_mut().zip(&self.states) {
                backup.copy_from_slice(&state.mean_activity);
            }
            self.stats_backup.clone_from_slice(&self.stats.layers);
            let (pos, neg) = bb.pairs[b];
            let mut safe = true;
            for l in 0..hidden {
                let layer = &self.model.layers[l];
                let (n, m) = (layer.inputs(), layer.outputs());
                let state = &mut self.states[l];
                let stats = &mut self.stats.layers[l];
                let mut terms = [None; 2];
                for (t, row, polarity) in
                    [(0, pos, Polarity::Positive), (1, neg, Polarity::Negative)]
                {
                    let at = 2 * accepted + t;
                    let h = &bb.ws.h[l][row * m..(row + 1) * m];
                    let dz = &mut bb.dz[l][at * m..(at + 1) * m];
                    let (g, loss) = layer.local_gradient(h, polarity, dz);
                    stats.loss_sum += f64::from(loss);
                    if polarity == Polarity::Positive {
                        stats.positive_goodness_sum += f64::from(g);
                        stats.positive_count += 1;
                        state.observe_positive(h, opt.peer_decay);
                        state.add_peer_term(opt.peer_norm, dz);
                    } else {
                        stats.negative_goodness_sum += f64::from(g);
                        stats.negative_count += 1;
                    }
                    let input = &mut bb.input[l][at * n..(at + 1) * n];
                    if l == 0 {
                        // The first layer's input, label written in (as `Model::layer0_input`).
                        let inv = 1.0 / bb.ws.row_rms[row];
                        for (o, &x) in input.iter_mut().zip(&bb.ws.u[b * n..(b + 1) * n]) {
                            *o = x * inv;
                        }
                        if let (_, LabelInput::Class(k)) = bb.ws.rows[row] {
                            input[off + k] = s * inv;
                        }
                    } else {
                        input.copy_from_slice(&bb.ws.h_norm[l - 1][row * n..(row + 1) * n]);
                    }
                    terms[t] = max_abs(dz).zip(max_abs(input));
                    safe &= terms[t].is_some();
                }
                safe = safe && self.guard.check_layer(l, terms, lr, opt, layer, state);
                if !safe {
                    break;
                }
            }
            if safe {
                self.guard.commit(hidden);
                accepted += 1;
            } else {
                for (backup, state) in self.mean_backup.iter().zip(&mut self.states) {
                    state.mean_activity.copy_from_slice(backup);
                }
                self.stats.layers.clone_from_slice(&self.stats_backup);
                outcome.refused = true;
            }
        }
        if accepted == 0 {
            return outcomes;
        }

        // One update per layer: `W ← decay·W − (lr/B)·Dᵀ·X̂`, weights read once.
        let rows = 2 * accepted;
        let scale = 1.0 / accepted as f32;
        let threads = bb.ws.threads;
        for l in 0..hidden {
            let layer = &mut self.model.layers[l];
            let (n, m) = (layer.inputs(), layer.outputs());
            let dz = &bb.dz[l][..rows * m];
            let input = &bb.input[l][..rows * n];
            let (gw, gb) = &mut self.batch_grad[l];
            gb.fill(0.0);
            for d in dz.chunks_exact(m) {
                for (acc, &v) in gb.iter_mut().zip(d) {
                    *acc += v;
                }
            }
            if opt.momentum == 0.0 {
                let decay = 1.0 - lr * opt.weight_decay;
                let (w, bias) = layer.params_mut();
                let w = w
                    .as_slice_mut()
                    .expect("layer weights are kept in standard layout");
                gemm(
                    (m, n, rows),
                    -lr * scale,
                    dz,
                    Op::T,
                    input,
                    Op::N,
                    decay,
                    w,
                    threads,
                );
                for (bias, &g) in bias.iter_mut().zip(gb.iter()) {
                    *bias -= lr * (g * scale);
                }
            } else {
                gemm((m, n, rows), 1.0, dz, Op::T, input, Op::N, 0.0, gw, threads);
                for j in 0..m {
                    let grad = &gw[j * n..(j + 1) * n];
                    layer.apply_gradient_row(
                        j,
                        &mut self.states[l],
                        opt,
                        lr,
                        scale,
                        grad,
                        gb[j] * scale,
                    );
                }
                gw.fill(0.0);
            }
            gb.fill(0.0);
        }
        self.samples += accepted as u64;
        outcomes
    }
}
