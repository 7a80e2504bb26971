//! Offline evaluation: the error rate of a model on a labelled dataset, spread over threads.
//! Readers share the immutable `Model`; each thread owns a `BatchWorkspace` and classifies its
//! share in batches (each weight read once per batch).

use crate::data::idx::Dataset;
use crate::ff::{BatchWorkspace, Classifier, Model};

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
