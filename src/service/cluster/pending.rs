//! Delayed labels across nodes: with the cluster backend `/classify` keeps an id's features in
//! the key-value bucket `ffd-pending-<model>` instead of the node's own map, so the label may
//! arrive at any node. The bucket bounds the entries as the local map does: each lives
//! `pending.ttl_seconds` (the backing stream's `max_age`) and at most `pending.capacity` are
//! kept (`max_messages`, the oldest discarded first).
//!
//! A label *claims* its features: it reads the entry and deletes it on the condition that the
//! entry is still the revision it read, so of two nodes labelling one id at once exactly one
//! gets the features, as with the local map. The claimed features then go through the request's
//! usual validation by way of the node's local map (`stage`); whatever the request did not
//! publish — a refused batch, NATS gone — is put back in the bucket (`unstage`), so a retry on
//! any node finds it. A node that dies between its claim and the publication's acknowledgement
//! loses that id (the client saw no `202`; its retry is answered 409): nothing acknowledged is
//! lost. Keys are the SHA-256 of the id in hex, because ids are any 1–256 characters and a
//! key is limited to `[-/_=.A-Za-z0-9]`.

use std::time::Instant;

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use sha2::{Digest, Sha256};

use crate::service::pending::{PendingLabels, Taken};

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the pending-label bucket: {0}")]
pub struct SharedPendingError(String);

/// The model's pending-label bucket.
#[derive(Clone)]
pub struct SharedPending {
    store: kv::Store,
}

impl std::fmt::Debug for SharedPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPending").finish_non_exhaustive()
    }
}

/// Ids whose features a request claimed from the bucket and staged in the local map.
#[derive(Debug, Default)]
#[must_use = "what a request claimed goes back to the bucket unless it was published: call `unstage`"]
pub struct Staged(Vec<String>);

impl SharedPending {
    /// The bucket `store`.
    pub fn new(store: kv::Store) -> Self {
        Self { store }
    }

    /// Keeps `features` under `id` (replacing an older entry of that id).
    pub async fn keep(&self, id: &str, features: &[f32]) -> Result<(), SharedPendingError> {
        self.store
            .put(key(id), encode(features).into())
            .await
            .map(drop)
            .map_err(|e| SharedPendingError(e.to_string()))
    }

    /// Removes and returns the features kept under `id`; `None` if unknown, expired or claimed
    /// by another request first.
    pub async fn claim(&self, id: &str) -> Result<Option<Vec<f32>>, SharedPendingError> {
        let key = key(id);
        let entry = self
            .store
            .entry(key.as_str())
            .await
            .map_err(|e| SharedPendingError(e.to_string()))?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(None);
        };
        let Some(features) = decode(&entry.value) else {
            // Not written by this format: as good as unknown (and removed, so it cannot linger).
            let _ = self.store.delete(key.as_str()).await;
            return Ok(None);
        };
        match self
            .store
            .delete_expect_revision(key.as_str(), Some(entry.revision))
            .await
        {
            Ok(()) => Ok(Some(features)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(SharedPendingError(e.to_string())),
        }
    }

    /// Claims every id `ids` names and puts its features in `local`, where the request's
    /// validation takes them as it would take features `/classify` kept on this node. An id
    /// the bucket does not hold is left out: validation then refuses it as unknown. On an
    /// error, what was already claimed goes back first.
    pub async fn stage<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        local: &PendingLabels,
        now: Instant,
    ) -> Result<Staged, SharedPendingError> {
        let mut staged = Staged::default();
        for id in ids {
            match self.claim(id).await {
                Ok(Some(features)) => {
                    local.insert(id.to_owned(), features, now);
                    staged.0.push(id.to_owned());
                }
                Ok(None) => {}
                Err(e) => {
                    self.unstage(staged, local, now).await;
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }

    /// Puts back in the bucket whatever of `staged` is still in `local` (the request did not
    /// publish it). Best effort: if NATS is gone too, the entry is lost and the label's retry
    /// is answered 409, as for an expired id.
    pub async fn unstage(&self, staged: Staged, local: &PendingLabels, now: Instant) {
        for id in staged.0 {
            let Some(Taken { features, .. }) = local.take(&id, now) else {
                continue;
            };
            if let Err(e) = self.keep(&id, &features).await {
                tracing::warn!(error = %e, "a delayed label's features could not be put back");
            }
        }
    }
}

/// The bucket key of `id`.
fn key(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Features as little-endian `f32`s.
fn encode(features: &[f32]) -> Vec<u8> {
    features.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// [`encode`]'s inverse; `None` if the length is not a whole number of `f32`s.
fn decode(bytes: &[u8]) -> Option<Vec<f32>> {
    let chunks = bytes.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return None;
    }
    Some(
        chunks
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip_bit_for_bit() {
        let features = [0.0, -0.0, 1.5, f32::MIN_POSITIVE, 1e-45, -3.25e38];
        let back = decode(&encode(&features)).expect("whole f32s");
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            features.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(decode(&[0, 0, 128]), None);
    }

    #[test]
    fn keys_are_valid_and_distinct_for_any_id() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let ids = ["a", "a.b", "ä 🙂", ".", "$KV.x.>", &"x".repeat(256)];
        let keys: std::collections::HashSet<String> = ids.iter().map(|id| key(id)).collect();
        assert_eq!(keys.len(), ids.len());
        assert!(keys.iter().all(|k| k.len() == 64
            && k.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
    }
}
