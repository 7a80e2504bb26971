//! The checkpoint writer: its own thread, so serialising, writing and syncing a checkpoint
//! stalls neither `/classify` (which never waits for anything) nor learning (the learner only
//! copies its state between two samples and hands the copy over). After each checkpoint it
//! deletes the oldest beyond `keep_checkpoints` and the WAL segments the oldest kept
//! checkpoint covers (so every kept checkpoint is a recovery point), then reports the result
//! to whoever waits (`POST /admin/checkpoint`).

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::watch;

use crate::service::metrics::DurabilityMetrics;
use crate::service::wal_writer::WalWriter;
use crate::store::checkpoint::{self, Checkpoint};

/// A state copy to write.
#[derive(Debug)]
pub struct CheckpointJob {
    /// The state.
    pub checkpoint: Checkpoint,
    /// The highest `/admin/checkpoint` request number this checkpoint satisfies.
    pub request: u64,
    /// The lease epoch the state was learned in (cluster backend; 0 otherwise).
    pub epoch: u64,
}

/// The outcome of the latest checkpoint, for `/admin/checkpoint`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointReport {
    /// The highest request number satisfied so far.
    pub request: u64,
    /// Sequence number of the last sample in it.
    pub last_seq: u64,
    /// Wake samples learned into it.
    pub samples_learned: u64,
    /// The file, or why it could not be written.
    pub result: Result<PathBuf, String>,
    /// Time to serialise, write and sync it.
    pub seconds: f64,
}

impl CheckpointReport {
    /// The report before any checkpoint.
    pub fn none() -> Self {
        Self {
            request: 0,
            last_seq: 0,
            samples_learned: 0,
            result: Err("no checkpoint written yet".into()),
            seconds: 0.0,
        }
    }

    /// Publishes the outcome of the checkpoint of `counters` that satisfied requests up to
    /// `request`: the one update both writers (local files, the cluster's object bucket) make.
    pub fn publish(
        reports: &watch::Sender<CheckpointReport>,
        request: u64,
        counters: &crate::store::checkpoint::Counters,
        result: Result<PathBuf, String>,
        seconds: f64,
    ) {
        reports.send_modify(|r| {
            *r = CheckpointReport {
                request: r.request.max(request),
                last_seq: counters.last_seq,
                samples_learned: counters.samples_learned,
                result,
                seconds,
            }
        });
    }
}

/// The writer thread's two ends: the learner sends jobs, handlers watch reports.
#[derive(Debug)]
pub struct Checkpointer {
    /// Where the learner sends jobs (capacity 1: a checkpoint in progress plus one waiting).
    pub jobs: SyncSender<CheckpointJob>,
    /// Joined by the learner after its final checkpoint.
    pub thread: JoinHandle<()>,
}

/// Starts the writer for `dir`, keeping `keep` checkpoints; `reports` receives every outcome.
/// The thread keeps the default priority: at the learner's nice value a busy machine stretched
/// a checkpoint from ~0.1 s to ~0.3 s with no measurable gain for `/classify`.
pub fn spawn(
    dir: PathBuf,
    keep: usize,
    wal: Arc<WalWriter>,
    metrics: DurabilityMetrics,
    reports: watch::Sender<CheckpointReport>,
) -> std::io::Result<Checkpointer> {
    let (jobs, rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("ffd-checkpoint".into())
        .spawn(move || run(&rx, &dir, keep, &wal, &metrics, &reports))?;
    Ok(Checkpointer { jobs, thread })
}

/// Hands `job` to the writer unless it is busy with another; `false` if it was (the caller
/// tries again later).
pub fn offer(jobs: &SyncSender<CheckpointJob>, job: CheckpointJob) -> bool {
    match jobs.try_send(job) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => false,
        Err(TrySendError::Disconnected(_)) => {
            tracing::error!("the checkpoint writer is gone; no more checkpoints");
            true
        }
    }
}

fn run(
    jobs: &Receiver<CheckpointJob>,
    dir: &std::path::Path,
    keep: usize,
    wal: &WalWriter,
    metrics: &DurabilityMetrics,
    reports: &watch::Sender<CheckpointReport>,
) {
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        let counters = job.checkpoint.counters;
        let written = checkpoint::write(dir, &job.checkpoint);
        drop(job.checkpoint);
        let seconds = started.elapsed().as_secs_f64();
        let result = match written {
            Ok(path) => {
                metrics.checkpoints.inc();
                metrics.checkpoint_duration.observe(seconds);
                metrics.checkpoint_last_seq.set(counters.last_seq as i64);
                tracing::info!(
                    path = %path.display(),
                    last_seq = counters.last_seq,
                    samples_learned = counters.samples_learned,
                    ms = seconds * 1e3,
                    "checkpoint written"
                );
                // Only after the new checkpoint is durable may what it covers go. Every kept
                // checkpoint is a recovery point: the WAL goes back to the oldest one, so
                // falling back to it (the newer ones damaged) leaves no gap.
                if let Err(e) = checkpoint::prune(dir, keep) {
                    tracing::warn!(error = %e, "could not delete old checkpoints");
                }
                match checkpoint::list(dir) {
                    Ok(kept) => {
                        let oldest = kept.last().map_or(0, |c| c.0);
                        if let Err(e) = wal.remove_covered(oldest) {
                            tracing::warn!(error = %e, "could not delete covered WAL segments");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not list the checkpoints"),
                }
                Ok(path)
            }
            Err(e) => {
                metrics.checkpoint_failures.inc();
                tracing::error!(error = %e, "writing a checkpoint failed");
                Err(e.to_string())
            }
        };
        CheckpointReport::publish(reports, job.request, &counters, result, seconds);
    }
}
