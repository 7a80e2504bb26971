//! `POST /classify`: `{features, id?}` → `{label, probabilities, scores, model_version}`, or
//! `{samples: [...]}` → `{results: [...]}`. Classifies with the published snapshot and never
//! waits for the learner. A sample with an `id` leaves its features in the pending map (with the
//! cluster backend, the bucket every node reads) for a later `/learn {"id", "label"}`.
//!
//! [`classify_rows`] is the one classification path, shared with the v2 inference route. One
//! sample (~0.2 ms for 784-500-500) runs on the runtime thread; larger batches move to the
//! blocking pool so they cannot stall other requests. A batch is classified in one batched call
//! (`Model::classify_batch`, each weight read once per batch); its scratch memory is allocated
//! per request, a few µs against the classification's hundreds.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ff::{Classifier, Scores};
use crate::service::http::error::{ApiError, ErrorBody, Position};
use crate::service::http::extract::{body_kind, read_json, BodyKind};
use crate::service::http::features;
use crate::service::http::json::Json;
use crate::service::http::AppState;
use crate::service::sample::{check_id, FeatureRows, SampleError};
use crate::service::snapshot::Snapshot;

/// Batches up to this size are classified on the runtime thread (~0.2 ms a sample).
const INLINE_MAX: usize = 4;

/// A `/classify` body: `{features, id?}` or `{samples: [{features, id?}, ...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"features": [0.0, 0.5, 1.0]}))]
pub struct ClassifyRequest {
    /// One sample's features (`network.inputs` finite numbers).
    #[serde(default, deserialize_with = "features::optional")]
    features: Option<Vec<f32>>,
    /// Keep the features under this id for a later `/learn {"id", "label"}`.
    id: Option<String>,
    /// A batch (at most `http.max_batch_samples`) instead of `features`.
    samples: Option<Vec<ClassifyItem>>,
}

/// One sample to classify; with an `id`, its features are kept for a delayed label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyItem {
    /// The features (`network.inputs` finite numbers).
    #[serde(deserialize_with = "features::required")]
    features: Vec<f32>,
    /// Keep the features under this id for a delayed label.
    id: Option<String>,
}

/// The classification of one sample.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"label": 3, "probabilities": [0.01, 0.01, 0.02, 0.9, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01], "scores": [1.2, 0.8, 2.0, 5.5, 0.9, 1.1, 0.7, 1.0, 1.3, 0.6], "model_version": 42}))]
pub struct Classification {
    /// The predicted class.
    pub label: usize,
    /// Per-class probabilities: `softmax(scores / T)`, with the model's calibrated temperature
    /// `T` (`calibration_temperature` of `/v1/model`).
    pub probabilities: Vec<f32>,
    /// Per-class scores: summed goodness logits, or the softmax head's logits.
    pub scores: Vec<f32>,
    /// Version of the snapshot that classified it.
    pub model_version: u64,
}

/// The `200` body: one classification, or one per sample of a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ClassifyResponse {
    /// For `{features}`.
    One(Classification),
    /// For `{samples}`.
    Many {
        /// One per sample, in order.
        results: Vec<Classification>,
    },
}

/// `POST /classify`.
#[utoipa::path(
    post,
    path = "/classify",
    tag = crate::service::http::openapi::TAG_V1,
    request_body(content = ClassifyRequest, content_type = "application/json", examples(
        ("sample" = (value = json!({"features": [0.0, 0.5, 1.0]}))),
        ("keep for a delayed label" = (value = json!({"features": [0.0, 0.5, 1.0], "id": "req-42"}))),
        ("batch" = (value = json!({"samples": [{"features": [0.0, 0.5, 1.0]}, {"features": [1.0, 0.0, 0.25]}]}))),
    )),
    responses(
        (status = 200, description = "One classification, or `{results}` for a batch.", body = ClassifyResponse),
        (status = 400, description = "Not JSON, or a missing, unknown or mistyped field.", body = ErrorBody),
        (status = 408, description = "The body was too slow.", body = ErrorBody),
        (status = 413, description = "Body or batch over its limit.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 422, description = "Wrong feature count, a non-finite value, a bad id or an empty batch.", body = ErrorBody,
            example = json!({"error": {"code": "invalid_features", "message": "sample 0: `features` has 783 values, expected 784"}})),
        (status = 500, description = "An unexpected failure.", body = ErrorBody),
        (status = 503, description = "Cluster backend: NATS did not keep the features of a sample with an `id` (one without is classified from the last snapshot whatever NATS does); retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    )
)]
pub async fn classify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ClassifyResponse>, ApiError> {
    body_kind(&headers, &[BodyKind::Json])?;
    let limit = state.config.http.max_body_bytes;
    let request: ClassifyRequest =
        read_json(&headers, body, limit, state.request_timeout()).await?;
    let (items, batch) = request.into_items()?;
    if items.is_empty() {
        return Err(ApiError::EmptyBatch(
            "`samples` is empty: a batch needs at least one sample".into(),
        ));
    }
    let max = state.config.http.max_batch_samples;
    if items.len() > max {
        return Err(ApiError::TooLarge(format!(
            "the batch has {} samples; at most {max} are allowed",
            items.len()
        )));
    }
    let mut rows = FeatureRows::with_capacity(state.shape.inputs, items.len());
    for (i, item) in items.iter().enumerate() {
        let checked = rows
            .push(&item.features)
            .and_then(|()| item.id.as_deref().map_or(Ok(()), check_id));
        checked.map_err(|e| ApiError::InvalidSample {
            at: Position::Sample(i),
            error: Box::new(SampleError { index: i, ..e }),
        })?;
    }

    let classified = classify_rows(&state, rows).await?;
    keep_for_labels(&state, items).await?;
    let version = classified.model_version;
    let mut results = classified
        .scores
        .into_iter()
        .map(|s| Classification {
            label: s.label,
            probabilities: s.probabilities,
            scores: s.scores,
            model_version: version,
        })
        .collect::<Vec<_>>();
    Ok(Json(if batch {
        ClassifyResponse::Many { results }
    } else {
        ClassifyResponse::One(results.pop().ok_or_else(|| {
            ApiError::Internal("a single-sample request produced no result".into())
        })?)
    }))
}

/// Keeps the features of every item with an `id` for its delayed label: in this node's map, or
/// with the cluster backend in the bucket every node reads (the label may reach another node).
/// Without NATS the ids cannot be kept and the request fails 503, so the client knows to retry
/// rather than meet a 409 when its label arrives.
async fn keep_for_labels(state: &AppState, items: Vec<ClassifyItem>) -> Result<(), ApiError> {
    let now = Instant::now();
    for item in items {
        let Some(id) = item.id else { continue };
        match &state.cluster {
            Some(cluster) => cluster
                .pending
                .keep(&id, &item.features)
                .await
                .map_err(|e| ApiError::ClusterUnavailable {
                    reason: e.to_string(),
                    retry_after_seconds: state.config.http.retry_after_seconds,
                })?,
            None => state.pending.insert(id, item.features, now),
        }
    }
    Ok(())
}

/// What one snapshot said about every row, in order.
#[derive(Debug)]
pub struct Classified {
    /// One per row.
    pub scores: Vec<Scores>,
    /// Version of the snapshot that classified them.
    pub model_version: u64,
}

/// Classifies every row with the published snapshot: the one classification path of
/// `/classify` and `POST /v2/models/ffd/infer`. Up to [`INLINE_MAX`] rows run on the runtime
/// thread, more on the blocking pool.
pub async fn classify_rows(state: &AppState, rows: FeatureRows) -> Result<Classified, ApiError> {
    let snapshot = state.snapshots.load();
    let classifier = state.classifier;
    if rows.len() <= INLINE_MAX {
        return classify_with(&snapshot, &rows, classifier);
    }
    tokio::task::spawn_blocking(move || classify_with(&snapshot, &rows, classifier))
        .await
        .map_err(|e| ApiError::Internal(format!("classification task failed: {e}")))?
}

/// Classifies every row in one batched call.
fn classify_with(
    snapshot: &Snapshot,
    rows: &FeatureRows,
    classifier: Classifier,
) -> Result<Classified, ApiError> {
    let scores = snapshot
        .model
        .classify_batch(rows.values(), classifier)
        .map_err(|e| ApiError::Internal(format!("validated features refused: {e}")))?;
    Ok(Classified {
        scores,
        model_version: snapshot.version,
    })
}

impl ClassifyRequest {
    /// The samples, and whether the request was a batch.
    fn into_items(self) -> Result<(Vec<ClassifyItem>, bool), ApiError> {
        match (self.samples, self.features) {
            (Some(samples), None) if self.id.is_none() => Ok((samples, true)),
            (None, Some(features)) => Ok((
                vec![ClassifyItem {
                    features,
                    id: self.id,
                }],
                false,
            )),
            (Some(_), _) => Err(ApiError::InvalidShape(
                "a batch has only `samples`; put `features` (and `id`) in each".into(),
            )),
            (None, None) => Err(ApiError::InvalidShape(
                "missing field `features` (or `samples` for a batch)".into(),
            )),
        }
    }
}
