//! Classification (docs/algorithm.md §5): by goodness — try every label, add up the scored
//! layers' evidence `(G − θ)/T`, take the argmax — by a linear softmax head on the normalised
//! activities of the scored layers under a neutral label, or by both (the sum of the two
//! scores). Each gives per-class scores and probabilities.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::ff::batch::BatchWorkspace;
use crate::ff::error::FfError;
use crate::ff::kernel;
use crate::ff::model::{LabelInput, Model, Workspace};

/// Samples per batched pass of [`Model::classify_batch_with`]. Larger batches run in chunks of
/// this many, which bounds the workspace (`chunk × classes` rows per layer: ~5 MB for 1000
/// units) while keeping each weight matrix read once per 128 samples.
const BATCH_CHUNK: usize = 128;

/// How a model turns a sample into a class.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Classifier {
    /// One pass per candidate label; the label with the most goodness wins (the paper's method).
    #[default]
    Goodness,
    /// One pass with a neutral label through a linear softmax head.
    Softmax,
    /// Both: `w·goodness + head logits`, the product of the two experts' softmax
    /// distributions, with goodness tempered by `w` (`Calibration::goodness_weight`, fitted
    /// online). The head learns from the first samples, when goodness is still near chance;
    /// goodness carries more as it improves.
    Combined,
}

impl Classifier {
    /// Whether the classifier reads the goodness of every label.
    pub fn reads_goodness(self) -> bool {
        self != Classifier::Softmax
    }

    /// Whether the classifier reads the softmax head (which then has to be trained).
    pub fn reads_head(self) -> bool {
        self != Classifier::Goodness
    }
}

/// The result of classifying one sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// The predicted class.
    pub label: usize,
    /// Per-class probabilities (sum to 1): `softmax(scores / T)` with the model's calibrated
    /// temperature `T` (docs/algorithm.md §5.1).
    pub probabilities: Vec<f32>,
    /// Per-class scores: summed goodness logits, or the head's logits.
    pub scores: Vec<f32>,
}

/// A linear softmax classifier on FF activities, trained with its own cross-entropy gradient;
/// that gradient stops at the head and never reaches the FF layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftmaxHead {
    pub(crate) weight: Array2<f32>,
    pub(crate) bias: Array1<f32>,
}

impl SoftmaxHead {
    /// A zero-initialised head (`[classes, inputs]`): uniform predictions until trained.
    pub fn new(classes: usize, inputs: usize) -> Self {
        Self {
            weight: Array2::zeros((classes, inputs)),
            bias: Array1::zeros(classes),
        }
    }

    pub(crate) fn from_parts(weight: Array2<f32>, bias: Array1<f32>) -> Self {
        Self { weight, bias }
    }

    /// The weights, `[classes, inputs]`.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// The biases, `[classes]`.
    pub fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    /// `logits = W x + b`.
    pub(crate) fn logits(&self, x: &[f32], out: &mut [f32]) {
        let n = self.weight.ncols();
        let w = self
            .weight
            .as_slice()
            .expect("head weights are kept in standard layout");
        for (c, o) in out.iter_mut().enumerate() {
            *o = kernel::dot(&w[c * n..(c + 1) * n], x) + self.bias[c];
        }
    }

    /// One cross-entropy SGD step on `(x, label)`; `probs` holds the softmax of the logits and
    /// is overwritten. Returns the loss `−log p[label]`.
    pub(crate) fn train_step(
        &mut self,
        x: &[f32],
        label: usize,
        lr: f32,
        probs: &mut [f32],
    ) -> f32 {
        self.logits(x, probs);
        softmax_in_place(probs);
        let loss = -probs[label].max(1e-12).ln();
        let n = self.weight.ncols();
        let w = self
            .weight
            .as_slice_mut()
            .expect("head weights are kept in standard layout");
        for (c, &p) in probs.iter().enumerate() {
            let d = p - if c == label { 1.0 } else { 0.0 };
            kernel::update_row1(&mut w[c * n..(c + 1) * n], 1.0, lr * d, x);
            self.bias[c] -= lr * d;
        }
        loss
    }
}

/// `x ← softmax(x)`, shifted by the max for stability.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

impl Model {
    /// Classifies one sample. Allocates a workspace; hot loops use [`Model::classify_with`].
    pub fn classify(&self, features: &[f32], classifier: Classifier) -> Result<Scores, FfError> {
        let mut ws = Workspace::new(&self.config);
        self.classify_with(&mut ws, features, classifier)
    }

    /// Classifies one sample using caller-owned scratch memory.
    pub fn classify_with(
        &self,
        ws: &mut Workspace,
        features: &[f32],
        classifier: Classifier,
    ) -> Result<Scores, FfError> {
        self.check_features(features)?;
        let label = self.predict_unchecked(ws, features, classifier);
        // `ws.probs` stays the raw softmax the trainer draws hard negatives from; what a reader
        // sees is tempered.
        let mut probabilities = vec![0.0; ws.scores.len()];
        self.calibration
            .probabilities(&ws.scores, &mut probabilities);
        Ok(Scores {
            label,
            probabilities,
            scores: ws.scores.clone(),
        })
    }

    /// Runs the forward passes `classifier` needs, leaves scores and probabilities in `ws` and
    /// returns the argmax. With `Goodness`, slots `0..C` hold labels `0..C` afterwards.
    pub(crate) fn predict_unchecked(
        &self,
        ws: &mut Workspace,
        features: &[f32],
        classifier: Classifier,
    ) -> usize {
        ws.clear();
        match classifier {
            Classifier::Goodness => {
                let mut labels = std::mem::take(&mut ws.labels);
                labels.clear();
                labels.extend((0..self.config.classes).map(LabelInput::Class));
                self.forward(ws, 0, features, &labels);
                ws.labels = labels;
                self.goodness_scores(ws, 0);
            }
            Classifier::Softmax => {
                self.forward(ws, 0, features, &[LabelInput::Neutral]);
                self.head_scores(ws, 0);
            }
            Classifier::Combined => {
                // One pass for all labels and the neutral one: the first layer's product with
                // the features is shared by every slot.
                let mut labels = std::mem::take(&mut ws.labels);
                labels.clear();
                labels.extend((0..self.config.classes).map(LabelInput::Class));
                labels.push(LabelInput::Neutral);
                self.forward(ws, 0, features, &labels);
                ws.labels = labels;
                self.goodness_scores(ws, 0);
                self.add_head_scores(ws, self.config.classes);
            }
        }
        argmax(&ws.scores)
    }

    /// Classifies the `features.len() / inputs` samples stored back to back in `features`
    /// (`[samples, inputs]`, row-major), in batched passes whose matrix products read each
    /// weight once per batch (see [`BatchWorkspace`]). Results equal [`Model::classify`] on each
    /// sample up to rounding (exactly, for a batch of one, which takes the per-sample pass).
    /// Allocates a single-threaded workspace; repeated callers keep one and use
    /// [`Model::classify_batch_with`].
    ///
    /// Fails with `Shape` if `features` is not a whole number of samples, or `NonFinite` (the
    /// index counted in `features`) for a NaN or infinite value.
    pub fn classify_batch(
        &self,
        features: &[f32],
        classifier: Classifier,
    ) -> Result<Vec<Scores>, FfError> {
        self.classify_batch_with(&mut BatchWorkspace::new(1), features, classifier)
    }

    /// [`Model::classify_batch`] with caller-owned scratch memory (and its thread count).
    pub fn classify_batch_with(
        &self,
        ws: &mut BatchWorkspace,
        features: &[f32],
        classifier: Classifier,
    ) -> Result<Vec<Scores>, FfError> {
        let d = self.config.inputs;
        if !features.len().is_multiple_of(d) {
            return Err(FfError::Shape {
                what: "batch features (a whole number of samples)",
                expected: features.len().div_ceil(d) * d,
                got: features.len(),
            });
        }
        if let Some(index) = features.iter().position(|v| !v.is_finite()) {
            return Err(FfError::NonFinite { index });
        }
        if features.len() == d {
            // One sample: the per-sample pass reads each weight once as it is; a matrix
            // product would first copy every weight into its packed layout for a single row.
            let mut one = Workspace::new(&self.config);
            let label = self.predict_unchecked(&mut one, features, classifier);
            return Ok(vec![Scores {
                label,
                probabilities: one.probs,
                scores: one.scores,
            }]);
        }
        let mut out = Vec::with_capacity(features.len() / d);
        for chunk in features.chunks(BATCH_CHUNK * d) {
            self.classify_chunk(ws, chunk, classifier, &mut out);
        }
        Ok(out)
    }

    /// One batched pass over the samples in `features`; appends their scores to `out`.
    fn classify_chunk(
        &self,
        ws: &mut BatchWorkspace,
        features: &[f32],
        classifier: Classifier,
        out: &mut Vec<Scores>,
    ) {
        let c = self.config.classes;
        let samples = features.len() / self.config.inputs;
        ws.rows.clear();
        // Each sample's rows: every label (goodness), then the neutral one (head).
        let (labelled, neutral) = (classifier.reads_goodness(), classifier.reads_head());
        let per = if labelled { c } else { 0 } + usize::from(neutral);
        ws.rows.extend((0..samples).flat_map(|b| {
            let labels = (0..c).filter(move |_| labelled).map(LabelInput::Class);
            let neutral = neutral.then_some(LabelInput::Neutral);
            labels.chain(neutral).map(move |label| (b, label))
        }));
        self.forward_batch(ws, features, samples);
        let from = self.config.first_scored_layer();
        let mut head = vec![0.0; c];
        let w = self.calibration.goodness_weight;
        for b in 0..samples {
            let mut scores = vec![0.0; c];
            if labelled {
                for (k, score) in scores.iter_mut().enumerate() {
                    for l in from..self.layers.len() {
                        *score += self.layers[l].goodness.logit(ws.goodness[l][b * per + k]);
                    }
                }
            }
            if neutral {
                let row = b * per + per - 1;
                ws.head_in.clear();
                for l in from..self.layers.len() {
                    let m = self.layers[l].outputs();
                    ws.head_in
                        .extend_from_slice(&ws.h_norm[l][row * m..(row + 1) * m]);
                }
                self.head.logits(&ws.head_in, &mut head);
                let w = if labelled { w } else { 1.0 };
                for (s, h) in scores.iter_mut().zip(&head) {
                    *s = w * *s + h;
                }
            }
            // Tempered like the per-sample path (docs/algorithm.md §5.1).
            let mut probabilities = vec![0.0; scores.len()];
            self.calibration.probabilities(&scores, &mut probabilities);
            out.push(Scores {
                label: argmax(&scores),
                probabilities,
                scores,
            });
        }
    }

    /// Scores from goodness for slots `first..first+C` (labels `0..C` in order).
    pub(crate) fn goodness_scores(&self, ws: &mut Workspace, first: usize) {
        let from = self.config.first_scored_layer();
        for c in 0..self.config.classes {
            let mut s = 0.0;
            for l in from..self.layers.len() {
                s += self.layers[l].goodness.logit(ws.goodness[l][first + c]);
            }
            ws.scores[c] = s;
        }
        ws.probs.copy_from_slice(&ws.scores);
        softmax_in_place(&mut ws.probs);
    }

    /// Gathers the head's input (normalised activity of the scored layers) for `slot`.
    pub(crate) fn gather_head_input(&self, ws: &mut Workspace, slot: usize) {
        let from = self.config.first_scored_layer();
        let mut at = 0;
        for l in from..self.layers.len() {
            let m = self.layers[l].outputs();
            ws.head_in[at..at + m].copy_from_slice(&ws.h_norm[l][slot * m..(slot + 1) * m]);
            at += m;
        }
    }

    /// Scores from the softmax head for `slot` (a neutral-label pass).
    pub(crate) fn head_scores(&self, ws: &mut Workspace, slot: usize) {
        self.gather_head_input(ws, slot);
        self.head.logits(&ws.head_in, &mut ws.scores);
        ws.probs.copy_from_slice(&ws.scores);
        softmax_in_place(&mut ws.probs);
    }

    /// Turns the goodness scores in `ws` into the combined classifier's, `w·goodness + head`
    /// with the head's logits for `slot` (a neutral-label pass), and recomputes the
    /// probabilities.
    pub(crate) fn add_head_scores(&self, ws: &mut Workspace, slot: usize) {
        let w = self.calibration.goodness_weight;
        self.gather_head_input(ws, slot);
        self.head.logits(&ws.head_in, &mut ws.probs);
        for (s, &h) in ws.scores.iter_mut().zip(&ws.probs) {
            *s = w * *s + h;
        }
        ws.probs.copy_from_slice(&ws.scores);
        softmax_in_place(&mut ws.probs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ff::model::NetworkConfig;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn model() -> Model {
        let config = NetworkConfig {
            inputs: 16,
            classes: 4,
            hidden: vec![12, 10],
            ..Default::default()
        };
        Model::new(config, &mut StdRng::seed_from_u64(5)).expect("valid config")
    }

    /// The shared first-layer trick equals building each labelled input and running it
    /// through the layer directly.
    #[test]
    fn shared_first_layer_matches_direct_forward() {
        let m = model();
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin().abs()).collect();
        let mut ws = Workspace::new(m.config());
        m.predict_unchecked(&mut ws, &x, Classifier::Goodness);
        for c in 0..4 {
            let mut raw: Vec<f32> = x.clone();
            let s = m.config().label_strength;
            raw.extend((0..4).map(|k| if k == c { s } else { 0.0 }));
            let mut xn = vec![0.0; 20];
            kernel::rms_normalise(&raw, m.config().eps, &mut xn);
            let mut h = vec![0.0; 12];
            m.layers()[0].forward(&xn, 1, &mut h, &mut [0.0]);
            for (a, b) in h.iter().zip(ws.activity(0, c)) {
                assert!((a - b).abs() < 1e-5, "label {c}: {a} vs {b}");
            }
        }
    }

    /// `blend_toward` moves every parameter the given fraction of the way, and refuses a model
    /// of another shape.
    #[test]
    fn blending_moves_parameters_part_way() {
        let mut a = model();
        let b =
            Model::new(a.config().clone(), &mut StdRng::seed_from_u64(6)).expect("valid config");
        let (w0, wb) = (
            a.layers()[1].weight()[(3, 4)],
            b.layers()[1].weight()[(3, 4)],
        );
        a.blend_toward(&b, 0.25).expect("same configuration");
        let expected = w0 + 0.25 * (wb - w0);
        assert!((a.layers()[1].weight()[(3, 4)] - expected).abs() < 1e-6);
        a.blend_toward(&b, 1.0).expect("same configuration");
        for (la, lb) in a.layers().iter().zip(b.layers()) {
            for (x, y) in la.weight().iter().zip(lb.weight()) {
                assert!((x - y).abs() < 1e-6);
            }
        }
        let other = Model::new(
            NetworkConfig {
                hidden: vec![12],
                ..a.config().clone()
            },
            &mut StdRng::seed_from_u64(1),
        )
        .expect("valid config");
        assert!(a.blend_toward(&other, 0.5).is_err());
    }

    /// Batched classification equals classifying each sample alone, for both classifiers and
    /// label placements, across a chunk boundary (130 samples > `BATCH_CHUNK`), with one and two
    /// threads. Reference: `Model::classify` per sample (the per-sample path). Tolerance: the
    /// batched GEMMs only sum in another order, so scores (sums of goodness logits, `G` up to
    /// a few hundred) agree to `1e-4·(1 + |score|)` and probabilities to `1e-5`.
    #[test]
    fn batch_classification_matches_per_sample() {
        use crate::ff::model::LabelPlacement;
        use rand::Rng;
        for placement in [LabelPlacement::Append, LabelPlacement::Overwrite] {
            let config = NetworkConfig {
                inputs: 16,
                classes: 4,
                hidden: vec![40, 24, 12],
                label_placement: placement,
                ..Default::default()
            };
            let mut rng = StdRng::seed_from_u64(9);
            let mut m = Model::new(config, &mut rng).expect("valid config");
            // A head with weights, so the softmax scores depend on the activities.
            m.head.weight.mapv_inplace(|_| rng.gen_range(-1.0..1.0));
            let features: Vec<f32> = (0..130 * 16).map(|_| rng.gen_range(0.0..1.0)).collect();
            for classifier in [
                Classifier::Goodness,
                Classifier::Softmax,
                Classifier::Combined,
            ] {
                for threads in [1, 2] {
                    let mut ws = BatchWorkspace::new(threads);
                    let batch = m
                        .classify_batch_with(&mut ws, &features, classifier)
                        .expect("valid batch");
                    assert_eq!(batch.len(), 130);
                    for (x, got) in features.chunks_exact(16).zip(&batch) {
                        let want = m.classify(x, classifier).expect("valid sample");
                        for (a, b) in got.scores.iter().zip(&want.scores) {
                            assert!(
                                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                                "{placement:?} {classifier:?}: {a} vs {b}"
                            );
                        }
                        for (a, b) in got.probabilities.iter().zip(&want.probabilities) {
                            assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
                        }
                        assert_eq!(got.label, argmax(&got.scores));
                    }
                }
            }
        }
    }

    /// The combined classifier's scores are `w·goodness + head logits`, class by class
    /// (reference: the two classifiers run separately), per sample and batched.
    #[test]
    fn combined_scores_are_goodness_plus_head() {
        use rand::Rng;
        let mut m = model();
        let mut rng = StdRng::seed_from_u64(3);
        m.head.weight.mapv_inplace(|_| rng.gen_range(-1.0..1.0));
        let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.61).cos().abs()).collect();
        let g = m.classify(&x, Classifier::Goodness).expect("valid input");
        let h = m.classify(&x, Classifier::Softmax).expect("valid input");
        let both = m.classify(&x, Classifier::Combined).expect("valid input");
        for ((s, a), b) in both.scores.iter().zip(&g.scores).zip(&h.scores) {
            assert!(
                (s - (a + b)).abs() <= 1e-5 * (1.0 + s.abs()),
                "{s} vs {a} + {b}"
            );
        }
        assert_eq!(both.label, argmax(&both.scores));
    }

    /// A batch that is not a whole number of samples, or holds a NaN, is refused.
    #[test]
    fn batch_rejects_bad_features() {
        let m = model();
        assert!(matches!(
            m.classify_batch(&[0.0; 20], Classifier::Goodness),
            Err(FfError::Shape { got: 20, .. })
        ));
        let mut x = vec![0.0; 32];
        x[21] = f32::INFINITY;
        assert_eq!(
            m.classify_batch(&x, Classifier::Goodness),
            Err(FfError::NonFinite { index: 21 })
        );
        assert_eq!(m.classify_batch(&[], Classifier::Goodness), Ok(vec![]));
        let one = vec![0.25; 16];
        assert_eq!(
            m.classify_batch(&one, Classifier::Goodness),
            m.classify(&one, Classifier::Goodness).map(|s| vec![s])
        );
    }

    #[test]
    fn scores_are_probabilities() {
        let m = model();
        let x = vec![0.5; 16];
        for cls in [
            Classifier::Goodness,
            Classifier::Softmax,
            Classifier::Combined,
        ] {
            let s = m.classify(&x, cls).expect("valid input");
            assert_eq!(s.probabilities.len(), 4);
            assert!((s.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert_eq!(s.label, argmax(&s.scores));
        }
    }

    #[test]
    fn rejects_bad_features() {
        let m = model();
        assert!(matches!(
            m.classify(&[0.0; 3], Classifier::Goodness),
            Err(FfError::Shape {
                expected: 16,
                got: 3,
                ..
            })
        ));
        let mut x = vec![0.0; 16];
        x[7] = f32::NAN;
        assert_eq!(
            m.classify(&x, Classifier::Goodness),
            Err(FfError::NonFinite { index: 7 })
        );
    }
}
