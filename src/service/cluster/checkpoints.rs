//! Checkpoints of the cluster backend: the learner's checkpoint jobs (the same `Checkpoint`,
//! the same safetensors bytes as in local mode, with the learner's sequence number inside) go
//! to the object bucket under a name of their own (`checkpoint-<epoch>-<seq>`), and only then
//! is the lease record's pointer moved to it, by compare-and-set on the held revision. A
//! checkpoint from another epoch (learned before this node last lost the lease) or one a
//! deposed learner writes is refused: its object may land, the pointer never moves to it.
//!
//! It is the local checkpoint writer's counterpart behind the same job channel: the learner
//! cannot tell them apart.

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::object_store::ObjectStore;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::service::checkpointer::{CheckpointJob, CheckpointReport, Checkpointer};
use crate::service::cluster::lease::{Holding, Lease, LeaseError, Pointer};
use crate::service::metrics::{ClusterMetrics, DurabilityMetrics};
use crate::store::checkpoint;

/// Where the writer puts checkpoints and moves the pointer.
#[derive(Clone)]
pub struct Sink {
    /// The object bucket.
    pub objects: ObjectStore,
    /// The lease (for the pointer).
    pub lease: Lease,
    /// The lease as held now.
    pub holding: Arc<Holding>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Starts the writer thread; `handle` runs its NATS calls.
pub fn spawn(
    sink: Sink,
    handle: Handle,
    metrics: DurabilityMetrics,
    cluster_metrics: ClusterMetrics,
    reports: watch::Sender<CheckpointReport>,
) -> std::io::Result<Checkpointer> {
    let (jobs, rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("ffd-checkpoint".into())
        .spawn(move || run(&rx, &sink, &handle, &metrics, &cluster_metrics, &reports))?;
    Ok(Checkpointer { jobs, thread })
}

fn run(
    jobs: &Receiver<CheckpointJob>,
    sink: &Sink,
    handle: &Handle,
    metrics: &DurabilityMetrics,
    cluster_metrics: &ClusterMetrics,
    reports: &watch::Sender<CheckpointReport>,
) {
    while let Ok(job) = jobs.recv() {
        if job.epoch == 0 {
            // The learner never learned on this node (a replica's final checkpoint at
            // shutdown): nothing to store.
            continue;
        }
        let started = Instant::now();
        let counters = job.checkpoint.counters;
        let bytes = checkpoint::to_bytes(&job.checkpoint);
        drop(job.checkpoint);
        let result = handle.block_on(write(sink, job.epoch, counters, bytes));
        let seconds = started.elapsed().as_secs_f64();
        let result = match result {
            Ok(name) => {
                metrics.checkpoints.inc();
                metrics.checkpoint_duration.observe(seconds);
                metrics.checkpoint_last_seq.set(counters.last_seq as i64);
                tracing::info!(
                    object = %name,
                    last_seq = counters.last_seq,
                    samples_learned = counters.samples_learned,
                    ms = seconds * 1e3,
                    "checkpoint stored and pointed to"
                );
                Ok(std::path::PathBuf::from(name))
            }
            Err(e) => {
                if matches!(
                    e,
                    WriteError::Lease(LeaseError::Lost(_)) | WriteError::NotHeld
                ) {
                    cluster_metrics.fenced_writes.inc();
                }
                metrics.checkpoint_failures.inc();
                tracing::warn!(error = %e, epoch = job.epoch, "checkpoint not stored");
                Err(e.to_string())
            }
        };
        CheckpointReport::publish(reports, job.request, &counters, result, seconds);
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("this node does not hold the lease of the epoch the checkpoint was learned in")]
    NotHeld,
    #[error("storing the checkpoint object: {0}")]
    Object(String),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// Stores the checkpoint, then moves the pointer to it; deletes the one it replaced.
async fn write(
    sink: &Sink,
    epoch: u64,
    counters: crate::store::checkpoint::Counters,
    bytes: Vec<u8>,
) -> Result<String, WriteError> {
    if sink.holding.epoch().await != Some(epoch) {
        return Err(WriteError::NotHeld);
    }
    let name = format!("checkpoint-{epoch:010}-{:020}", counters.last_seq);
    sink.objects
        .put(name.as_str(), &mut bytes.as_slice())
        .await
        .map_err(|e| WriteError::Object(e.to_string()))?;
    let pointer = Pointer {
        object: name.clone(),
        last_seq: counters.last_seq,
        samples_learned: counters.samples_learned,
    };
    let mut replaced = None;
    let written = sink
        .holding
        .write(epoch, |held| {
            replaced = held.record.checkpoint.clone();
            async move { sink.lease.set_pointer(&held, pointer).await }
        })
        .await?;
    if written.is_none() {
        return Err(WriteError::NotHeld);
    }
    if let Some(old) = replaced.filter(|old| old.object != name) {
        if let Err(e) = sink.objects.delete(&old.object).await {
            tracing::debug!(object = %old.object, error = %e, "could not delete a replaced checkpoint");
        }
    }
    Ok(name)
}
