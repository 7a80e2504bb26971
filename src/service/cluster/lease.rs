//! One learner per model: a lease in a key-value record that also holds the checkpoint
//! pointer. Every write is an update by revision (compare-and-set): a writer whose revision is
//! stale — a learner that was paused or cut off while another took over — is refused, so a
//! deposed learner can never move the pointer back (fencing). Keeping the lease and the pointer
//! in ONE record is what makes that hold: a pointer write is also a proof of holding the lease.
//!
//! Expiry needs no synchronised clocks: a contender takes the lease over when it has seen the
//! record's revision unchanged for `lease_seconds` of its own monotonic time. The holder renews
//! every third of that, and stops learning by itself once it has gone `lease_seconds` without a
//! successful renewal, which is before any contender can take over.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The key of the record in the lease bucket.
const KEY: &str = "learner";

/// The checkpoint the next learner resumes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// Name of the checkpoint object in the object bucket.
    pub object: String,
    /// The learner's sequence number of the last sample in it (see `message::sample_seq`).
    pub last_seq: u64,
    /// Wake samples learned into it.
    pub samples_learned: u64,
}

/// The lease record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The node holding the lease; empty when released.
    pub holder: String,
    /// +1 on every change of holder: a checkpoint is accepted only from the epoch it was
    /// learned in.
    pub epoch: u64,
    /// The newest checkpoint; `None` before the first.
    pub checkpoint: Option<Pointer>,
}

/// The lease as held: the record as last written and its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Revision of the record as last written by this node.
    pub revision: u64,
    /// The record.
    pub record: Record,
}

/// Why a lease write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another node wrote the record since: this node no longer holds the lease.
    #[error("the lease was taken over (revision {0} is stale)")]
    Lost(u64),
    /// NATS did not answer, or refused for another reason: retry.
    #[error("lease record: {0}")]
    Nats(String),
    /// The record does not parse (written by another version?).
    #[error("the lease record does not parse: {0}")]
    Corrupt(String),
}

/// The lease of one model, seen from one node.
#[derive(Clone)]
pub struct Lease {
    kv: kv::Store,
    node: String,
    duration: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("node", &self.node)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// What a contender has seen of the record: its revision and since when (monotonic).
#[derive(Debug, Default)]
pub struct Observed {
    seen: Option<(u64, Instant)>,
}

impl Lease {
    /// The lease in bucket `kv` for `node`, expiring after `duration` without renewal.
    pub fn new(kv: kv::Store, node: String, duration: Duration) -> Self {
        Self { kv, node, duration }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The lease's duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The record and its revision; `None` before any node held the lease.
    pub async fn read(&self) -> Result<Option<(u64, Record)>, LeaseError> {
        let entry = self
            .kv
            .entry(KEY)
            .await
            .map_err(|e| LeaseError::Nats(e.to_string()))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let record = serde_json::from_slice(&e.value)
                    .map_err(|err| LeaseError::Corrupt(err.to_string()))?;
                Ok(Some((e.revision, record)))
            }
            _ => Ok(None),
        }
    }

    /// One attempt to take the lease: succeeds when nobody ever held it, it was released, or
    /// its revision has not changed for the lease's duration as `observed` by this node.
    /// `Ok(None)`: someone else holds it.
    pub async fn try_acquire(&self, observed: &mut Observed) -> Result<Option<Held>, LeaseError> {
        let Some((revision, record)) = self.read().await? else {
            let record = Record {
                holder: self.node.clone(),
                epoch: 1,
                checkpoint: None,
            };
            return match self.kv.create(KEY, encode(&record)).await {
                Ok(revision) => Ok(Some(Held { revision, record })),
                // Another node created it first; try again later.
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(LeaseError::Nats(e.to_string())),
            };
        };
        let now = Instant::now();
        let expired = match observed.seen {
            Some((seen, since)) if seen == revision => now.duration_since(since) >= self.duration,
            _ => {
                observed.seen = Some((revision, now));
                false
            }
        };
        if !(record.holder.is_empty() || expired) {
            return Ok(None);
        }
        let next = Record {
            holder: self.node.clone(),
            epoch: record.epoch + 1,
            checkpoint: record.checkpoint,
        };
        match self.write(revision, next).await {
            Ok(held) => Ok(Some(held)),
            Err(LeaseError::Lost(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renews `held` (the record unchanged, a new revision).
    pub async fn renew(&self, held: &Held) -> Result<Held, LeaseError> {
        self.write(held.revision, held.record.clone()).await
    }

    /// Moves the checkpoint pointer, if `held` still holds the lease.
    pub async fn set_pointer(&self, held: &Held, pointer: Pointer) -> Result<Held, LeaseError> {
        let record = Record {
            checkpoint: Some(pointer),
            ..held.record.clone()
        };
        self.write(held.revision, record).await
    }

    /// Gives the lease up (the pointer stays), so another node takes over at once.
    pub async fn release(&self, held: &Held) -> Result<(), LeaseError> {
        let record = Record {
            holder: String::new(),
            ..held.record.clone()
        };
        self.write(held.revision, record).await.map(|_| ())
    }

    /// Writes `record` if the record is still at `revision`. A write that timed out may still
    /// have landed: when the revision moved, the record is read back, and if it is exactly
    /// what was written (this node's epoch, so nobody else's) the write counts.
    async fn write(&self, revision: u64, record: Record) -> Result<Held, LeaseError> {
        match self.kv.update(KEY, encode(&record), revision).await {
            Ok(revision) => Ok(Held { revision, record }),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => match self.read().await? {
                Some((now, current)) if current == record => Ok(Held {
                    revision: now,
                    record,
                }),
                _ => Err(LeaseError::Lost(revision)),
            },
            Err(e) => Err(LeaseError::Nats(e.to_string())),
        }
    }
}

fn encode(record: &Record) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

/// The lease as this node holds it now, shared by the renewer and the checkpoint writer so
/// their writes go one at a time, each with the revision the other left.
#[derive(Debug, Default)]
pub struct Holding {
    held: tokio::sync::Mutex<Option<Held>>,
    lost: tokio::sync::Notify,
}

impl Holding {
    /// Starts holding `held`.
    pub async fn hold(&self, held: Held) {
        *self.held.lock().await = Some(held);
    }

    /// Stops holding (after a step-down); returns what was held.
    pub async fn drop_lease(&self) -> Option<Held> {
        self.held.lock().await.take()
    }

    /// The epoch held now, if any.
    pub async fn epoch(&self) -> Option<u64> {
        self.held.lock().await.as_ref().map(|h| h.record.epoch)
    }

    /// Runs one lease write `f` on the held lease of `epoch` and keeps its result: a lost lease
    /// stops the holding and wakes [`Holding::lost`]. `Ok(None)`: not held in that epoch.
    pub async fn write<F, Fut>(&self, epoch: u64, f: F) -> Result<Option<Held>, LeaseError>
    where
        F: FnOnce(Held) -> Fut,
        Fut: std::future::Future<Output = Result<Held, LeaseError>>,
    {
        let mut cell = self.held.lock().await;
        let Some(held) = cell.clone().filter(|h| h.record.epoch == epoch) else {
            return Ok(None);
        };
        match f(held).await {
            Ok(next) => {
                *cell = Some(next.clone());
                Ok(Some(next))
            }
            Err(e @ LeaseError::Lost(_)) => {
                *cell = None;
                drop(cell);
                self.lost.notify_waiters();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Completes when a write found the lease taken over.
    pub fn lost(&self) -> tokio::sync::futures::Notified<'_> {
        self.lost.notified()
    }
}
