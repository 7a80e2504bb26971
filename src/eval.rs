//! Offline evaluation: the error rate of a model on a labelled dataset, spread over threads.
//! Readers share the immutable `Model`; each thread owns its `Workspace`.

use crate::data::idx::Dataset;
use crate::ff::{Classifier, Model, Workspace};

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
                    let mut ws = Workspace::new(model.config());
                    let mut errors = 0;
                    for i in t * chunk..((t + 1) * chunk).min(n) {
                        let (x, y) = data.sample(i);
                        match model.classify_with(&mut ws, x, classifier) {
                            Ok(s) if s.label == y => {}
                            _ => errors += 1,
                        }
                    }
                    errors
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(chunk)).sum()
    });
    Evaluation { errors, total: n }
}
