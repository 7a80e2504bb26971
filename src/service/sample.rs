//! `ValidatedBatch`: labelled samples that passed every check — feature count, finite values,
//! label range, known delayed-label id. The learn queue accepts nothing else, so a request with
//! one bad sample cannot be half-learned: no half-valid batch exists.

use std::time::Instant;

use crate::service::metrics::RejectReason;
use crate::service::pending::{PendingLabels, Taken, MAX_ID_CHARS};

/// One labelled sample ready for the learner.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `inputs` finite values.
    pub features: Vec<f32>,
    /// In `0..classes`.
    pub label: usize,
}

/// Where a sample's features come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// Sent with the label.
    Inline(Vec<f32>),
    /// Kept by an earlier `/classify` under this id (a delayed label).
    Pending(String),
}

/// A labelled sample as a request carries it, before any check.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledInput {
    /// The features, or where to find them.
    pub features: Features,
    /// The label as sent (checked against `0..classes`).
    pub label: i64,
}

/// The shape samples must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleShape {
    /// Features per sample.
    pub inputs: usize,
    /// Labels are `0..classes`.
    pub classes: usize,
}

/// Why a sample was refused: which sample, which field (and which element of it), what is
/// wrong. Its text names the field's path, e.g. "`features[3]` is not finite"; where the sample
/// sits is for the caller to say (a batch index, an NDJSON line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}{}` {detail}", .element.map(|i| format!("[{i}]")).unwrap_or_default())]
pub struct SampleError {
    /// Position of the sample in its request (0-based).
    pub index: usize,
    /// The offending field (`features`, `label`, `id`).
    pub field: &'static str,
    /// The offending element of the field, when it is an array.
    pub element: Option<usize>,
    /// The metric reason.
    pub reason: RejectReason,
    /// What is wrong, e.g. "has 783 values, expected 784".
    pub detail: String,
}

/// Largest feature magnitude accepted. The engine RMS-normalises every input, and the sum of
/// squares of larger values can overflow `f32` (`1e20² = inf`), which would silently turn the
/// sample into an all-zero input; below it, `n · 1e15²` stays finite for any `n < 3·10⁸`.
pub const MAX_ABS_FEATURE: f32 = 1e15;

/// Checks one feature vector (length, finiteness, magnitude); the error has index 0.
pub fn check_features(features: &[f32], inputs: usize) -> Result<(), SampleError> {
    if features.len() != inputs {
        return Err(SampleError {
            index: 0,
            field: "features",
            element: None,
            reason: RejectReason::Features,
            detail: format!("has {} values, expected {inputs}", features.len()),
        });
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(SampleError {
            index: 0,
            field: "features",
            element: Some(i),
            reason: RejectReason::NonFinite,
            detail: "is not finite (NaN, or beyond the 32-bit float range)".into(),
        });
    }
    if let Some(i) = features.iter().position(|v| v.abs() > MAX_ABS_FEATURE) {
        return Err(SampleError {
            index: 0,
            field: "features",
            element: Some(i),
            reason: RejectReason::OutOfRange,
            detail: format!(
                "is {:e}; features must lie within ±{MAX_ABS_FEATURE:e}",
                features[i]
            ),
        });
    }
    Ok(())
}

/// Checks a delayed-label id: 1 to `MAX_ID_CHARS` characters; the error has index 0.
pub fn check_id(id: &str) -> Result<(), SampleError> {
    let chars = id.chars().count();
    if chars == 0 || chars > MAX_ID_CHARS {
        return Err(SampleError {
            index: 0,
            field: "id",
            element: None,
            reason: RejectReason::InvalidId,
            detail: format!("must have 1 to {MAX_ID_CHARS} characters, has {chars}"),
        });
    }
    Ok(())
}

/// Feature vectors to classify, all checked by [`check_features`] and stored flat (row-major),
/// so `/classify` and the v2 inference route share one classification path.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRows {
    values: Vec<f32>,
    width: usize,
}

impl FeatureRows {
    /// No rows yet, of `width` features each, with room for `rows`.
    pub fn with_capacity(width: usize, rows: usize) -> Self {
        Self {
            values: Vec::with_capacity(width * rows),
            width,
        }
    }

    /// Checks `features` and appends them as the next row; the error has the row's index.
    pub fn push(&mut self, features: &[f32]) -> Result<(), SampleError> {
        let index = self.len();
        check_features(features, self.width).map_err(|e| SampleError { index, ..e })?;
        self.values.extend_from_slice(features);
        Ok(())
    }

    /// Checks flat row-major `values` (a whole number of rows of `width`) row by row.
    pub fn from_flat(values: Vec<f32>, width: usize) -> Result<Self, SampleError> {
        if width == 0 || !values.len().is_multiple_of(width) {
            return Err(SampleError {
                index: 0,
                field: "features",
                element: None,
                reason: RejectReason::Features,
                detail: format!(
                    "has {} values, not a whole number of samples of {width}",
                    values.len()
                ),
            });
        }
        for (index, row) in values.chunks_exact(width).enumerate() {
            check_features(row, width).map_err(|e| SampleError { index, ..e })?;
        }
        Ok(Self { values, width })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Every row's features back to back (`[rows, width]`, row-major).
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The rows, in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.values.chunks_exact(self.width.max(1))
    }
}

/// Samples that all passed validation, in request order.
#[derive(Debug)]
pub struct ValidatedBatch {
    samples: Vec<Sample>,
    /// Samples whose features came from the pending map: `(index, id, inserted)`, so they can be
    /// put back if the batch is not queued.
    from_pending: Vec<(usize, String, Instant)>,
}

impl ValidatedBatch {
    /// Checks every input, taking delayed-label features out of `pending`. On the first bad
    /// input, puts back what it took and fails naming the input's index and field.
    pub fn validate(
        inputs: Vec<LabelledInput>,
        shape: SampleShape,
        pending: &PendingLabels,
        now: Instant,
    ) -> Result<Self, SampleError> {
        let mut batch = Self {
            samples: Vec::with_capacity(inputs.len()),
            from_pending: Vec::new(),
        };
        for (index, input) in inputs.into_iter().enumerate() {
            match batch.push(index, input, shape, pending, now) {
                Ok(()) => {}
                Err(e) => {
                    batch.return_pending(pending, now);
                    return Err(e);
                }
            }
        }
        Ok(batch)
    }

    fn push(
        &mut self,
        index: usize,
        input: LabelledInput,
        shape: SampleShape,
        pending: &PendingLabels,
        now: Instant,
    ) -> Result<(), SampleError> {
        let label = usize::try_from(input.label)
            .ok()
            .filter(|&l| l < shape.classes)
            .ok_or_else(|| SampleError {
                index,
                field: "label",
                element: None,
                reason: RejectReason::Label,
                detail: format!(
                    "is {}, expected 0..{} (exclusive)",
                    input.label, shape.classes
                ),
            })?;
        let features = match input.features {
            Features::Inline(features) => {
                check_features(&features, shape.inputs).map_err(|e| SampleError { index, ..e })?;
                features
            }
            Features::Pending(id) => {
                check_id(&id).map_err(|e| SampleError { index, ..e })?;
                // Features kept by /classify were checked when they arrived.
                let Taken { features, inserted } =
                    pending.take(&id, now).ok_or_else(|| SampleError {
                        index,
                        field: "id",
                        element: None,
                        reason: RejectReason::UnknownId,
                        detail: format!(
                            "{id:?} is unknown or expired (send its features to /classify with this id first)"
                        ),
                    })?;
                self.from_pending.push((self.samples.len(), id, inserted));
                features
            }
        };
        self.samples.push(Sample { features, label });
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples, in order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The samples, for the queue.
    pub fn into_samples(self) -> Vec<Sample> {
        self.samples
    }

    /// Puts delayed-label features back into `pending` (the batch was not queued).
    pub fn return_pending(self, pending: &PendingLabels, now: Instant) {
        let mut samples: Vec<Option<Sample>> = self.samples.into_iter().map(Some).collect();
        for (i, id, inserted) in self.from_pending {
            if let Some(sample) = samples[i].take() {
                let taken = Taken {
                    features: sample.features,
                    inserted,
                };
                pending.restore(id, taken, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntGauge;
    use std::time::Duration;

    const SHAPE: SampleShape = SampleShape {
        inputs: 3,
        classes: 2,
    };

    fn pending() -> PendingLabels {
        let g = IntGauge::new("test_pending", "test").expect("valid name");
        PendingLabels::new(10, Duration::from_secs(60), g)
    }

    fn inline(features: Vec<f32>, label: i64) -> LabelledInput {
        LabelledInput {
            features: Features::Inline(features),
            label,
        }
    }

    #[test]
    fn names_the_first_bad_sample_and_field() {
        let p = pending();
        let now = Instant::now();
        let cases = [
            (inline(vec![0.0; 2], 0), "features", RejectReason::Features),
            (
                inline(vec![0.0, f32::INFINITY, 0.0], 0),
                "features",
                RejectReason::NonFinite,
            ),
            (inline(vec![0.0; 3], 2), "label", RejectReason::Label),
            (inline(vec![0.0; 3], -1), "label", RejectReason::Label),
            (
                LabelledInput {
                    features: Features::Pending("nope".into()),
                    label: 0,
                },
                "id",
                RejectReason::UnknownId,
            ),
        ];
        for (bad, field, reason) in cases {
            let inputs = vec![inline(vec![0.5; 3], 1), bad];
            let err = ValidatedBatch::validate(inputs, SHAPE, &p, now).expect_err("bad sample");
            assert_eq!((err.index, err.field, err.reason), (1, field, reason));
        }
    }

    #[test]
    fn failed_batches_return_pending_features() {
        let p = pending();
        let now = Instant::now();
        p.insert("x".into(), vec![1.0, 2.0, 3.0], now);
        let inputs = vec![
            LabelledInput {
                features: Features::Pending("x".into()),
                label: 1,
            },
            inline(vec![0.0; 3], 5),
        ];
        assert!(ValidatedBatch::validate(inputs, SHAPE, &p, now).is_err());
        assert_eq!(p.len(), 1, "the id is usable again");

        let inputs = vec![LabelledInput {
            features: Features::Pending("x".into()),
            label: 1,
        }];
        let batch = ValidatedBatch::validate(inputs, SHAPE, &p, now).expect("valid");
        assert!(p.is_empty());
        batch.return_pending(&p, now);
        assert_eq!(
            p.take("x", now).map(|t| t.features),
            Some(vec![1.0, 2.0, 3.0])
        );
    }
}
