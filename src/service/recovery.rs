//! Start-up recovery: load the newest checkpoint that verifies (a damaged one is logged and
//! moved aside as `<name>.damaged`, and the next older one tried: every kept checkpoint is a
//! recovery point; one written for another network stops the start unless `--reset`), then
//! scan and verify the WAL (damage and torn tails are cut out and moved aside, see
//! [`wal::scan`]) and count the records after the checkpoint. With no checkpoint that
//! verifies, the retained WAL is replayed from its start on a fresh model. What was found is
//! the [`RecoveryReport`] (`/v1/model`'s `recovery`, and the log); new samples are numbered
//! above the highest sequence number any file shows was used. The learner then learns the
//! backlog, streamed from the segments by [`BacklogRecords`], before anything new. All reading
//! of the WAL happens here; the writing is `wal_writer`'s.

use std::path::{Path, PathBuf};

use serde::Serialize;
use utoipa::ToSchema;

use crate::ff::{FfError, Model, Trainer};
use crate::service::config::Config;
use crate::store::checkpoint::{self, CheckpointError, Counters};
use crate::store::wal::{self, Next, SegmentReader, SeqRange, SequencedSample};
use crate::store::StoreError;

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
    /// A model file was given while the data directory holds a checkpoint: starting from the
    /// file would throw the learned state away, resuming would ignore the file. Neither is
    /// done silently.
    #[error(
        "a model file ({}) was given, but the data directory holds a checkpoint ({}) that would \
         be resumed instead; start with --reset to set the saved state aside and start from {}, \
         or drop --model (`model_file`) to resume from the checkpoint",
        .model.display(), .checkpoint.display(), .model.display()
    )]
    ModelFileAndCheckpoint {
        /// The model file (`--model`, `model_file`).
        model: PathBuf,
        /// The newest checkpoint in the data directory.
        checkpoint: PathBuf,
    },
}

/// WAL records to learn at start: those with a sequence number above `after` in `segments`.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// Segment files, oldest first.
    pub segments: Vec<PathBuf>,
    /// Sequence number of the last sample the restored state has learned.
    pub after: u64,
    /// Records to learn.
    pub remaining: u64,
}

impl Backlog {
    /// The backlog's records in sequence order, for a network of `inputs` features and
    /// `classes` classes.
    pub fn records(self, inputs: usize, classes: usize) -> BacklogRecords {
        BacklogRecords {
            segments: self.segments.into_iter(),
            reader: None,
            last: self.after,
            remaining: self.remaining,
            inputs,
            classes,
        }
    }
}

/// Streams a [`Backlog`] from its segments, one record in memory at a time. What cannot be
/// learned is logged and skipped, never fatal: a segment that cannot be opened or read (its
/// remaining samples are lost), a record already covered by the checkpoint, a record that does
/// not fit the network. A gap in the sequence numbers is logged (those samples were never made
/// durable).
#[derive(Debug)]
pub struct BacklogRecords {
    segments: std::vec::IntoIter<PathBuf>,
    reader: Option<(PathBuf, SegmentReader)>,
    last: u64,
    remaining: u64,
    inputs: usize,
    classes: usize,
}

impl BacklogRecords {
    /// Records of the backlog not yet returned (as counted by the scan at start).
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next record of the current segment, opening the next segment when one ends;
    /// `None` after the last.
    fn next_record(&mut self) -> Option<SequencedSample> {
        loop {
            let Some((path, reader)) = &mut self.reader else {
                let path = self.segments.next()?;
                match SegmentReader::open(&path) {
                    Ok(r) => self.reader = Some((path, r)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read a WAL segment; its samples are lost");
                    }
                }
                continue;
            };
            match reader.next_record() {
                Ok(Next::Record(r, _)) => return Some(r),
                Ok(Next::End | Next::Torn(_)) => {}
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "reading a WAL segment failed; its remaining samples are lost");
                }
            }
            self.reader = None;
        }
    }
}

impl Iterator for BacklogRecords {
    type Item = SequencedSample;

    fn next(&mut self) -> Option<SequencedSample> {
        loop {
            let record = self.next_record()?;
            if record.seq <= self.last {
                continue;
            }
            if record.seq != self.last + 1 {
                tracing::info!(
                    expected = self.last + 1,
                    found = record.seq,
                    "gap in the WAL: the numbers in between were lost to damage, torn, or never made durable (see the recovery report)"
                );
            }
            self.last = record.seq;
            self.remaining = self.remaining.saturating_sub(1);
            if record.features.len() != self.inputs || record.label >= self.classes {
                tracing::error!(
                    seq = record.seq,
                    "a WAL record does not fit the network; skipped"
                );
                continue;
            }
            return Some(record);
        }
    }
}

/// What recovery found and did, as `/v1/model` shows it under `recovery` (with the live
/// `recovering`, `backlog` and `replayed`) and the log tells it. Sequence number ranges are
/// inclusive `[first, last]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct RecoveryReport {
    /// The checkpoint the state was restored from (`null`: none verified, or none existed).
    #[schema(value_type = Option<String>)]
    pub checkpoint: Option<PathBuf>,
    /// Its `last_seq` (0 without one): replay starts after it.
    pub checkpoint_seq: u64,
    /// Checkpoints that did not verify, where they were moved (`<name>.damaged`).
    #[schema(value_type = Vec<String>)]
    pub checkpoints_damaged: Vec<PathBuf>,
    /// No checkpoint verified although some existed: the retained WAL is replayed from its
    /// first record on a fresh model.
    pub from_wal_start: bool,
    /// Acknowledged samples after the recovery point that no file holds any more: WAL
    /// records destroyed by damage. `ffd_wal_records_lost_total` counts them.
    pub wal_records_lost: u64,
    /// Their sequence numbers.
    #[schema(value_type = Vec<Vec<u64>>)]
    pub wal_lost_seqs: Vec<SeqRange>,
    /// Sequence numbers after the recovery point in front of the retained WAL (pruned while
    /// a checkpoint covered them that now does not verify): learned by no state recovered.
    #[schema(value_type = Option<Vec<u64>>)]
    pub unretained_seqs: Option<SeqRange>,
    /// Records of a torn tail cut from the newest segment: written when the process died and
    /// never synced, so never acknowledged in `fsync` mode. Not counted as lost.
    pub torn_records: u64,
    /// Their sequence numbers.
    #[schema(value_type = Vec<Vec<u64>>)]
    pub torn_seqs: Vec<SeqRange>,
    /// Files the cut WAL bytes were moved to (`<segment>.at-<offset>.damaged`).
    #[schema(value_type = Vec<String>)]
    pub damaged_files: Vec<PathBuf>,
    /// The highest sequence number any file shows was used (records, segment headers and
    /// names, checkpoints); new samples are numbered above it.
    pub high_water_seq: u64,
    /// WAL records to replay, as counted at start.
    pub backlog_at_start: u64,
}

fn count(ranges: &[SeqRange]) -> u64 {
    ranges.iter().map(|&(a, b)| b - a + 1).sum()
}

/// `ranges` without the numbers `<= after`.
fn above(ranges: impl Iterator<Item = SeqRange>, after: u64) -> Vec<SeqRange> {
    ranges
        .filter(|&(_, b)| b > after)
        .map(|(a, b)| (a.max(after + 1), b))
        .collect()
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
    /// What was found and done.
    pub report: RecoveryReport,
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
    } else if let Some(model) = &config.model_file {
        refuse_model_file_over_checkpoint(dir, model)?;
    }
    let mut trainer = fresh;
    let mut average = None;
    let mut counters = Counters::default();
    let mut report = RecoveryReport::default();
    let listed = checkpoint::list(dir).map_err(io)?;
    // A checkpoint's name is a number that was used, even when its contents are damaged.
    let named_high_water = listed.first().map_or(0, |c| c.0);
    for (_, path) in listed {
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
                report.checkpoint = Some(path.clone());
                tracing::info!(
                    path = %path.display(),
                    last_seq = counters.last_seq,
                    samples_learned = counters.samples_learned,
                    "checkpoint loaded"
                );
                break;
            }
            Err(CheckpointError::Damaged(e)) => match checkpoint::set_aside_damaged(&path) {
                Ok(aside) => {
                    tracing::error!(error = %e, moved_to = %aside.display(), "checkpoint skipped: it does not verify; trying the next older one");
                    report.checkpoints_damaged.push(aside);
                }
                Err(move_error) => {
                    tracing::error!(error = %e, %move_error, "checkpoint skipped: it does not verify (and could not be moved aside); trying the next older one");
                    report.checkpoints_damaged.push(path.clone());
                }
            },
            Err(e @ CheckpointError::Mismatch { .. }) => return Err(RecoveryError::Mismatch(e)),
        }
    }
    let base = counters.last_seq;
    report.checkpoint_seq = base;
    report.from_wal_start = report.checkpoint.is_none() && !report.checkpoints_damaged.is_empty();
    if report.from_wal_start {
        tracing::error!(
            damaged = report.checkpoints_damaged.len(),
            "no checkpoint verifies: replaying the retained WAL from its start on a fresh model"
        );
    }
    let scan = wal::scan(dir, base)?;
    for cut in &scan.cuts {
        let (first, last) = cut.seqs.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        if cut.torn {
            tracing::warn!(segment = %cut.segment.display(), offset = cut.offset, bytes = cut.bytes, moved_to = %cut.moved_to.display(), first_seq = first, last_seq = last, what = %cut.what, "WAL torn tail cut: written when the process stopped, never synced (not acknowledged in fsync mode)");
        } else {
            tracing::error!(segment = %cut.segment.display(), offset = cut.offset, bytes = cut.bytes, moved_to = %cut.moved_to.display(), first_seq = first, last_seq = last, what = %cut.what, "WAL damage cut out: the records it held are lost");
        }
        if cut.bytes > 0 {
            report.damaged_files.push(cut.moved_to.clone());
        }
    }
    report.wal_lost_seqs = above(scan.lost(), base);
    report.wal_records_lost = count(&report.wal_lost_seqs);
    report.torn_seqs = above(scan.torn(), base);
    report.torn_records = count(&report.torn_seqs);
    // The lowest number after the recovery point the WAL accounts for (as a record, a loss
    // or a torn tail): anything between the recovery point and it is not retained.
    let accounted = [
        scan.backlog_first,
        report.wal_lost_seqs.first().map(|r| r.0),
        report.torn_seqs.first().map(|r| r.0),
        above(scan.skipped.iter().copied(), base)
            .first()
            .map(|r| r.0),
    ]
    .into_iter()
    .flatten()
    .min();
    if let Some(first) = accounted {
        if first > base + 1 {
            report.unretained_seqs = Some((base + 1, first - 1));
            tracing::error!(
                recovery_seq = base,
                wal_first_seq = first,
                "the retained WAL starts after a gap: those samples are learned by no recovered state"
            );
        }
    }
    if report.wal_records_lost > 0 {
        tracing::error!(
            lost = report.wal_records_lost,
            seqs = ?report.wal_lost_seqs,
            "acknowledged samples lost to WAL damage"
        );
    }
    report.high_water_seq = scan
        .high_water
        .max(counters.high_water_seq)
        .max(named_high_water)
        .max(base);
    report.backlog_at_start = scan.backlog;
    tracing::info!(
        backlog = scan.backlog,
        wal_last_seq = scan.last_seq,
        high_water_seq = report.high_water_seq,
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
        last_seq: report.high_water_seq,
        wal_bytes: scan.bytes,
        counters,
        report,
    })
}

/// `Err(ModelFileAndCheckpoint)` if `dir` holds a checkpoint (damaged or not: which one
/// verifies is decided later, and either way the saved state is not the model file's).
fn refuse_model_file_over_checkpoint(dir: &Path, model: &Path) -> Result<(), RecoveryError> {
    let listed = checkpoint::list(dir).map_err(|source| RecoveryError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    match listed.into_iter().next() {
        Some((_, checkpoint)) => Err(RecoveryError::ModelFileAndCheckpoint {
            model: model.to_path_buf(),
            checkpoint,
        }),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::wal::{encode, SegmentWriter};

    /// A segment of `dir` holding `records` as `(seq, label, features)`.
    fn segment(dir: &Path, records: &[(u64, usize, &[f32])]) -> PathBuf {
        let mut w = SegmentWriter::create(dir, records[0].0).expect("create");
        let mut buf = Vec::new();
        for &(seq, label, features) in records {
            encode(&mut buf, seq, label, features);
        }
        w.append(&buf, records[records.len() - 1].0)
            .expect("append");
        w.sync().expect("sync");
        w.path().to_path_buf()
    }

    #[test]
    fn backlog_yields_what_comes_after_the_checkpoint_and_fits_the_network() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = segment(dir.path(), &[(1, 0, &[1.0, 1.0]), (2, 1, &[2.0, 2.0])]);
        // Seq 4: a label the network does not have; seq 5: a feature too many; 6 after a gap.
        let second = segment(
            dir.path(),
            &[
                (3, 1, &[3.0, 3.0]),
                (4, 9, &[4.0, 4.0]),
                (5, 0, &[5.0, 5.0, 5.0]),
                (7, 0, &[7.0, 7.0]),
            ],
        );
        let backlog = Backlog {
            segments: vec![first, second],
            after: 1,
            remaining: 5,
        };
        let mut records = backlog.records(2, 2);
        let got: Vec<u64> = records.by_ref().map(|r| r.seq).collect();
        assert_eq!(got, [2, 3, 7], "1 is covered, 4 and 5 do not fit");
        assert_eq!(records.remaining(), 0);
    }

    #[test]
    fn a_missing_segment_loses_its_samples_not_the_rest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let present = segment(dir.path(), &[(3, 0, &[3.0])]);
        let backlog = Backlog {
            segments: vec![dir.path().join("wal-gone.log"), present],
            after: 0,
            remaining: 1,
        };
        let got: Vec<u64> = backlog.records(1, 2).map(|r| r.seq).collect();
        assert_eq!(got, [3]);
    }
}
