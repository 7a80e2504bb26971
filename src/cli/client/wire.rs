//! The client's view of the API's JSON: only the fields `ffd replay` and `ffd healthcheck`
//! read, each optional where an older or newer server may leave it out, and unknown fields
//! ignored. The server's response types are not reused: they are `Serialize`-only, carry every
//! field, and belong to the HTTP layer; a client that decoded them strictly would break on any
//! field a server adds. Named apart from the server's types (`ModelInfo`, `Accepted`,
//! `Classified`, `ErrorBody`) so a reader never confuses the two sides.

use serde::Deserialize;

/// The part of `GET /v1/model` a client needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelSummary {
    /// Samples the learner has learned since it started.
    pub samples_learned: u64,
    /// Samples queued for the learner.
    #[serde(default)]
    pub queue_depth: Option<u64>,
    /// Completed sleep phases.
    #[serde(default)]
    pub sleep_cycles: Option<u64>,
}

/// The answer to `POST /learn` (202).
#[derive(Debug, Clone, Deserialize)]
pub struct LearnReceipt {
    /// Samples queued.
    pub accepted: u64,
    /// Sequence number of the last of them.
    #[serde(default)]
    pub last_seq: Option<u64>,
}

/// One answer of a batch `POST /classify`.
#[derive(Debug, Clone, Deserialize)]
pub struct Prediction {
    /// The predicted class.
    pub label: usize,
    /// Version of the snapshot that answered.
    #[serde(default)]
    pub model_version: Option<u64>,
}

/// The answer to a batch `POST /classify`.
#[derive(Debug, Deserialize)]
pub struct Predictions {
    /// One per sample, in request order.
    pub results: Vec<Prediction>,
}

/// An API error body, `{"error": {"code", "message"}}`.
#[derive(Debug, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub error: ErrorReplyDetail,
}

/// The inside of an [`ErrorReply`].
#[derive(Debug, Deserialize)]
pub struct ErrorReplyDetail {
    /// The stable error code.
    pub code: String,
    /// A message for people.
    pub message: String,
}
