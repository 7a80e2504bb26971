//! Offline evaluation: the error rate of a model on a labelled dataset, spread over threads, and
//! how trustworthy its probabilities are (`calibration_report`: accuracy, expected calibration
//! error, NLL, Brier score and reliability bins at any temperature, from the raw scores).
//! Readers share the immutable `Model`; for the error rate each thread owns a `BatchWorkspace`
//! and classifies its share in batches (each weight read once per batch).

use crate::data::idx::Dataset;
use crate::ff::{BatchWorkspace, Classifier, Model, Workspace};

/// Classification results on a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// Misclassified samples.
    pub errors: usize,
    /// Samples classified.
    pub total: usize,
}

impl Evaluation {
    /// Fraction misclassified (0 for an empty set).
    pub fn error_rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.errors as f64 / self.total as f64
        }
    }
}

/// Classifies every sample of `data` with `model`, on `threads` threads (at least one).
/// `data`'s feature width must match the model (checked; a mismatch counts every sample wrong).
pub fn evaluate(
    model: &Model,
    data: &Dataset,
    classifier: Classifier,
    threads: usize,
) -> Evaluation {
    let n = data.len();
    let threads = threads.clamp(1, n.max(1));
    let chunk = n.div_ceil(threads);
    let errors = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut ws = BatchWorkspace::new(1);
                    let (start, end) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
                    let features = &data.features[start * data.dim..end * data.dim];
                    match model.classify_batch_with(&mut ws, features, classifier) {
                        Ok(scores) => scores
                            .iter()
                            .zip(&data.labels[start..end])
                            .filter(|(s, &y)| s.label != usize::from(y))
                            .count(),
                        Err(_) => end - start,
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(chunk)).sum()
    });
    Evaluation { errors, total: n }
}

/// The raw class scores of a model on a labelled dataset, kept so that probabilities can be
/// computed at any temperature afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Classes per sample.
    pub classes: usize,
    /// `[n, classes]` row-major scores.
    pub scores: Vec<f32>,
    /// True labels.
    pub labels: Vec<usize>,
}

impl Predictions {
    /// `(scores, label)` of every sample.
    pub fn iter(&self) -> impl Iterator<Item = (&[f32], usize)> + Clone {
        self.scores
            .chunks_exact(self.classes.max(1))
            .zip(self.labels.iter().copied())
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Classifies every sample of `data` with `model` on `threads` threads and keeps the scores.
/// A sample the model refuses (wrong width) gets all-zero scores.
pub fn predict_all(
    model: &Model,
    data: &Dataset,
    classifier: Classifier,
    threads: usize,
) -> Predictions {
    let n = data.len();
    let classes = model.config().classes;
    let threads = threads.clamp(1, n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    let mut scores = vec![0.0f32; n * classes];
    std::thread::scope(|scope| {
        for (t, out) in scores.chunks_mut(chunk * classes).enumerate() {
            scope.spawn(move || {
                let mut ws = Workspace::new(model.config());
                for (j, row) in out.chunks_exact_mut(classes).enumerate() {
                    let (x, _) = data.sample(t * chunk + j);
                    if let Ok(s) = model.classify_with(&mut ws, x, classifier) {
                        row.copy_from_slice(&s.scores);
                    }
                }
            });
        }
    });
    Predictions {
        classes,
        scores,
        labels: (0..n).map(|i| data.sample(i).1).collect(),
    }
}

/// One bin of a reliability diagram: the predictions whose confidence (largest probability)
/// fell in `[lower, upper)` (the last bin includes 1).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    /// Predictions in the bin.
    pub count: usize,
    /// Their mean confidence (0 when empty).
    pub confidence: f64,
    /// The fraction of them that were right (0 when empty).
    pub accuracy: f64,
}

/// How trustworthy a model's probabilities are on a dataset, at one temperature.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CalibrationReport {
    /// The temperature the probabilities were computed with.
    pub temperature: f64,
    pub samples: usize,
    pub accuracy: f64,
    /// Mean of the largest probability.
    pub mean_confidence: f64,
    /// Expected calibration error: `Σ_b (n_b/N)·|accuracy_b − confidence_b|` over equal-width
    /// confidence bins.
    pub ece: f64,
    /// Mean negative log-likelihood of the true class (nats per sample; uniform guessing over
    /// `C` classes scores `ln C`).
    pub nll: f64,
    /// Multi-class Brier score: mean of `Σ_k (p_k − 1[k = y])²`, in `[0, 2]`.
    pub brier: f64,
    pub bins: Vec<ReliabilityBin>,
}

/// Accuracy, ECE (`bins` equal-width bins), NLL and Brier score of `predictions` with
/// probabilities `softmax(scores / temperature)`.
pub fn calibration_report(
    predictions: &Predictions,
    temperature: f64,
    bins: usize,
) -> CalibrationReport {
    let bins = bins.max(1);
    let (mut count, mut conf_sum, mut right) =
        (vec![0usize; bins], vec![0.0; bins], vec![0usize; bins]);
    let (mut nll, mut brier, mut correct, mut confidence) = (0.0, 0.0, 0usize, 0.0);
    let mut p = vec![0.0f64; predictions.classes];
    for (s, y) in predictions.iter() {
        let max = s
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut z = 0.0;
        for (pk, &sk) in p.iter_mut().zip(s) {
            *pk = ((f64::from(sk) - max) / temperature).exp();
            z += *pk;
        }
        p.iter_mut().for_each(|pk| *pk /= z);
        // −log p_y from the log-sum-exp, so a tiny p_y stays finite.
        nll += z.ln() - (f64::from(s[y]) - max) / temperature;
        brier += p
            .iter()
            .enumerate()
            .map(|(k, &pk)| (pk - if k == y { 1.0 } else { 0.0 }).powi(2))
            .sum::<f64>();
        let predicted = crate::ff::classify::argmax(s);
        let top = p[predicted];
        let b = ((top * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf_sum[b] += top;
        confidence += top;
        if predicted == y {
            right[b] += 1;
            correct += 1;
        }
    }
    let n = predictions.len().max(1) as f64;
    let bins: Vec<ReliabilityBin> = (0..bins)
        .map(|b| {
            let c = count[b].max(1) as f64;
            ReliabilityBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                confidence: conf_sum[b] / c,
                accuracy: right[b] as f64 / c,
            }
        })
        .collect();
    let ece = bins
        .iter()
        .map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs())
        .sum();
    CalibrationReport {
        temperature,
        samples: predictions.len(),
        accuracy: correct as f64 / n,
        mean_confidence: confidence / n,
        ece,
        nll: nll / n,
        brier: brier / n,
        bins,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predictions(rows: &[([f32; 2], usize)]) -> Predictions {
        Predictions {
            classes: 2,
            scores: rows.iter().flat_map(|(s, _)| *s).collect(),
            labels: rows.iter().map(|r| r.1).collect(),
        }
    }

    /// Hand-computed: scores [ln 3, 0] give p = [0.75, 0.25]. Four such predictions of class 0,
    /// three right: accuracy 0.75 = confidence, so ECE 0; NLL = (3·ln(4/3) + ln 4)/4;
    /// Brier = (3·2·0.25² + 2·0.75²)/4.
    #[test]
    fn report_matches_hand_computation() {
        let s = [3f32.ln(), 0.0];
        let p = predictions(&[(s, 0), (s, 0), (s, 0), (s, 1)]);
        let r = calibration_report(&p, 1.0, 10);
        assert!((r.accuracy - 0.75).abs() < 1e-12);
        assert!((r.mean_confidence - 0.75).abs() < 1e-6);
        assert!(r.ece < 1e-6);
        let nll = (3.0 * (4.0f64 / 3.0).ln() + 4.0f64.ln()) / 4.0;
        assert!((r.nll - nll).abs() < 1e-6);
        let brier = (3.0 * 2.0 * 0.0625 + 2.0 * 0.5625) / 4.0;
        assert!((r.brier - brier).abs() < 1e-6);
        assert_eq!(r.bins[7].count, 4);
        // Overconfident: at T = 0.1 every prediction says ~1.0 and a quarter are wrong.
        let sharp = calibration_report(&p, 0.1, 10);
        assert!((sharp.ece - 0.25).abs() < 1e-3);
        assert!(sharp.nll > r.nll);
    }
}
