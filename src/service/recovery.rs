//! Start-up recovery: load the newest checkpoint that verifies (a damaged one is logged and
//! skipped, one written for another network stops the start unless `--reset`), then scan and
//! verify the WAL (a torn tail is cut off) and count the records after the checkpoint. The
//! service is ready after this; the learner learns that backlog in the background, streamed
//! from the segments, before anything new.

use std::path::{Path, PathBuf};

use crate::ff::{FfError, Model, Trainer};
use crate::service::config::Config;
use crate::service::learner::Backlog;
use crate::store::checkpoint::{self, CheckpointError, Counters};
use crate::store::model_file::StoreError;
use crate::store::wal;

/// Why the saved state cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The data directory cannot be created or read.
    #[error("data directory {}: {source}", .path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The newest checkpoint was written for another network.
    #[error(transparent)]
    Mismatch(CheckpointError),
    /// The checkpoint's optimiser or replay state does not fit the running configuration.
    #[error(
        "{}: the checkpoint does not fit the running configuration ({source}); restore the old \
         settings, or start with --reset to set the saved state aside and start afresh",
        .path.display()
    )]
    Incompatible {
        /// The checkpoint.
        path: PathBuf,
        /// What does not fit.
        #[source]
        source: FfError,
    },
    /// The WAL could not be read or repaired.
    #[error("write-ahead log: {0}")]
    Wal(#[from] StoreError),
}

/// What the saved state gives the new process.
#[derive(Debug)]
pub struct Recovered {
    /// The trainer, restored or fresh.
    pub trainer: Trainer,
    /// The weight average and its sample count, when the checkpoint has one.
    pub average: Option<(Model, u64)>,
    /// Counters from the checkpoint (zero without one).
    pub counters: Counters,
    /// WAL records to learn before anything new.
    pub backlog: Backlog,
    /// Highest sequence number used so far; new samples are numbered after it.
    pub last_seq: u64,
    /// Bytes of WAL segments on disk.
    pub wal_bytes: u64,
}

/// Recovers from `config.data_dir`; `fresh` is the trainer to use without a checkpoint.
pub fn recover(config: &Config, fresh: Trainer) -> Result<Recovered, RecoveryError> {
    let dir = &config.data_dir;
    let io = |source| RecoveryError::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    if config.durability.reset {
        set_aside(dir).map_err(io)?;
    }
    let mut trainer = fresh;
    let mut average = None;
    let mut counters = Counters::default();
    for (_, path) in checkpoint::list(dir).map_err(io)? {
        match checkpoint::read(&path, &config.network) {
            Ok(c) => {
                trainer =
                    Trainer::from_state(c.trainer, config.train.clone()).map_err(|source| {
                        RecoveryError::Incompatible {
                            path: path.clone(),
                            source,
                        }
                    })?;
                average = c.average.map(|a| (a, c.counters.since_average));
                counters = c.counters;
                tracing::info!(
                    path = %path.display(),
                    last_seq = counters.last_seq,
                    samples_learned = counters.samples_learned,
                    "checkpoint loaded"
                );
                break;
            }
            Err(CheckpointError::Damaged(e)) => {
                tracing::error!(error = %e, "checkpoint skipped: it does not verify");
            }
            Err(e @ CheckpointError::Mismatch { .. }) => return Err(RecoveryError::Mismatch(e)),
        }
    }
    let scan = wal::scan(dir, counters.last_seq)?;
    for (path, offset, what) in &scan.truncated {
        tracing::warn!(path = %path.display(), offset, what = %what, "WAL segment cut at a damaged or partial record");
    }
    if let Some(first) = scan.backlog_first {
        if first > counters.last_seq + 1 {
            tracing::warn!(
                checkpoint_seq = counters.last_seq,
                wal_first_seq = first,
                "the WAL starts after a gap: samples in between were never made durable"
            );
        }
    }
    tracing::info!(
        backlog = scan.backlog,
        wal_last_seq = scan.last_seq,
        wal_bytes = scan.bytes,
        "write-ahead log verified"
    );
    Ok(Recovered {
        trainer,
        average,
        backlog: Backlog {
            segments: scan
                .segments
                .iter()
                .map(|s| s.segment.path.clone())
                .collect(),
            after: counters.last_seq,
            remaining: scan.backlog,
        },
        last_seq: scan.last_seq.max(counters.last_seq),
        wal_bytes: scan.bytes,
        counters,
    })
}

/// Moves every checkpoint and WAL segment of `dir` into a new `discarded-<unix seconds>`
/// directory beside them (kept, not deleted: the operator decides).
fn set_aside(dir: &Path) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = checkpoint::list(dir)?.into_iter().map(|c| c.1).collect();
    files.extend(wal::list_segments(dir)?.into_iter().map(|s| s.path));
    if files.is_empty() {
        return Ok(());
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = dir.join(format!("discarded-{secs}"));
    std::fs::create_dir_all(&aside)?;
    for f in &files {
        if let Some(name) = f.file_name() {
            std::fs::rename(f, aside.join(name))?;
        }
    }
    tracing::warn!(moved = files.len(), to = %aside.display(), "--reset: the saved state was set aside");
    Ok(())
}
