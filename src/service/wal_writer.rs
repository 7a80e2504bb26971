//! `WalWriter`: the write-ahead log's buffer and writer thread. `LearnQueue::try_push` encodes
//! each accepted batch into the buffer while it holds the queue lock (so records are in
//! sequence order); one writer thread takes whatever is buffered, writes it to the current
//! segment and — in `fsync` mode — syncs once for all of it, then tells every waiting request
//! (group commit). `batch` syncs every `batch_interval_ms`, `none` leaves syncing to the OS.
//!
//! The buffer is bounded (`durability.max_unsynced_bytes`): past it a push is refused as
//! `Full` (429), so a slow disk pushes back on clients instead of growing memory. A write or
//! sync failure is permanent: the writer refuses every later push and the service stops
//! acknowledging samples (500 `storage_failed`), because it can no longer keep its promise.
//!
//! The file format (segments, records, scanning) is `store::wal`'s; this module is the part
//! that needs threads, tokio and metrics, which the store does not depend on. Reading the log
//! back is `recovery`'s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntGauge};
use tokio::sync::watch;

use crate::service::config::DurabilityMode;
use crate::service::sample::Sample;
use crate::store::wal::{self, SegmentWriter};

/// Why the WAL writer refused records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// The unsynced buffer is full: retry later (429).
    Full,
    /// An earlier write or sync failed; nothing more is accepted.
    Failed,
}

/// How far the log is durable, as the writer publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Durable {
    /// Every record with a sequence number up to this one is written (and synced in `fsync`
    /// mode).
    pub seq: u64,
    /// Writing failed; `seq` will not move again.
    pub failed: bool,
}

/// The WAL writer's settings.
#[derive(Debug, Clone)]
pub struct WalSettings {
    /// The data directory.
    pub dir: PathBuf,
    /// When to sync.
    pub mode: DurabilityMode,
    /// Sync period of `batch` mode.
    pub batch_interval: Duration,
    /// A new segment starts once the current one is this large.
    pub segment_bytes: u64,
    /// Most bytes buffered and not yet written.
    pub max_unsynced_bytes: usize,
}

/// The metrics the writer keeps.
#[derive(Debug, Clone)]
pub struct WalMetrics {
    /// Bytes of WAL segments on disk.
    pub wal_bytes: IntGauge,
    /// Time of each sync.
    pub fsync_duration: Histogram,
}

/// The write-ahead log's buffer and writer thread.
#[derive(Debug)]
pub struct WalWriter {
    state: Mutex<Buffer>,
    work: Condvar,
    durable: watch::Sender<Durable>,
    settings: WalSettings,
    /// Bytes appended over the service's life (never decreases; for the checkpoint trigger).
    appended: AtomicU64,
    /// Bytes of WAL segments on disk.
    on_disk: AtomicU64,
    metrics: WalMetrics,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// Sequence numbers of the first and last record in `bytes`.
    first_seq: u64,
    last_seq: u64,
    failed: bool,
    closed: bool,
}

/// The writer thread; [`WalWriterHandle::finish`] flushes, syncs and joins it.
#[derive(Debug)]
pub struct WalWriterHandle {
    wal: Arc<WalWriter>,
    thread: Option<JoinHandle<()>>,
}

impl WalWriter {
    /// Starts a WAL writer whose next record is `last_seq + 1`, writing into a new segment of
    /// `settings.dir`. `on_disk` is the size of the segments already there.
    pub fn start(
        settings: WalSettings,
        last_seq: u64,
        on_disk: u64,
        metrics: WalMetrics,
    ) -> Result<(Arc<WalWriter>, WalWriterHandle), crate::store::StoreError> {
        let segment = SegmentWriter::create(&settings.dir, last_seq + 1)?;
        let (durable, _) = watch::channel(Durable {
            seq: last_seq,
            failed: false,
        });
        let wal = Arc::new(WalWriter {
            state: Mutex::new(Buffer::default()),
            work: Condvar::new(),
            durable,
            settings,
            appended: AtomicU64::new(0),
            on_disk: AtomicU64::new(on_disk + segment.bytes()),
            metrics,
        });
        wal.metrics
            .wal_bytes
            .set(wal.on_disk.load(Ordering::Relaxed) as i64);
        let writer = Arc::clone(&wal);
        let thread = std::thread::Builder::new()
            .name("ffd-wal".into())
            .spawn(move || writer.run(segment))
            .map_err(|source| crate::store::StoreError::Io {
                path: wal.settings.dir.clone(),
                source,
            })?;
        let handle = WalWriterHandle {
            wal: Arc::clone(&wal),
            thread: Some(thread),
        };
        Ok((wal, handle))
    }

    /// Buffers one record per sample, numbered from `first_seq`. Called with the queue lock
    /// held, so records land in sequence order; refuses all of them or none.
    pub fn append(&self, first_seq: u64, samples: &[Sample]) -> Result<(), AppendError> {
        let mut st = self.lock();
        if st.failed {
            return Err(AppendError::Failed);
        }
        let need: usize = samples
            .iter()
            .map(|s| wal::encoded_len(s.features.len()))
            .sum();
        // An empty buffer takes any batch, so one batch larger than the bound cannot stall.
        if !st.bytes.is_empty() && st.bytes.len() + need > self.settings.max_unsynced_bytes {
            return Err(AppendError::Full);
        }
        if st.bytes.is_empty() {
            st.first_seq = first_seq;
        }
        for (s, seq) in samples.iter().zip(first_seq..) {
            wal::encode(&mut st.bytes, seq, s.label, &s.features);
            st.last_seq = seq;
        }
        drop(st);
        self.appended.fetch_add(need as u64, Ordering::Relaxed);
        self.work.notify_one();
        Ok(())
    }

    /// Waits until the record `seq` is durable as the mode promises: synced in `fsync` mode,
    /// at once otherwise. `Err` if writing failed before it got there.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), AppendError> {
        if self.settings.mode != DurabilityMode::Fsync {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        let reached = match rx.wait_for(|d| d.seq >= seq || d.failed).await {
            Ok(d) => d.seq >= seq,
            Err(_) => false,
        };
        if reached {
            Ok(())
        } else {
            Err(AppendError::Failed)
        }
    }

    /// Every record up to this sequence number is written (and synced in `fsync` mode): at
    /// least every number acknowledged so far.
    pub fn durable_seq(&self) -> u64 {
        self.durable.borrow().seq
    }

    /// Whether writing has failed.
    pub fn has_failed(&self) -> bool {
        self.durable.borrow().failed
    }

    /// Bytes appended since the service started.
    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Deletes the segments a checkpoint at `through` covers, and updates the WAL size.
    pub fn remove_covered(&self, through: u64) -> Result<(), crate::store::StoreError> {
        let freed = wal::remove_covered(&self.settings.dir, through)?;
        let left = self
            .on_disk
            .fetch_sub(freed, Ordering::Relaxed)
            .saturating_sub(freed);
        self.metrics.wal_bytes.set(left as i64);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Every critical section leaves the buffer consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer loop: take the buffer, write it, sync per mode, publish, repeat; on close,
    /// write and sync what is left.
    fn run(&self, mut segment: SegmentWriter) {
        let mut spare = Vec::new();
        let mut last_sync = Instant::now();
        let mut unsynced_seq = None;
        loop {
            let (first, last, closed) = {
                let mut st = self.lock();
                loop {
                    if !st.bytes.is_empty() || st.closed {
                        break;
                    }
                    let wait = match (self.settings.mode, unsynced_seq) {
                        (DurabilityMode::Batch, Some(_)) => self
                            .settings
                            .batch_interval
                            .saturating_sub(last_sync.elapsed()),
                        _ => Duration::from_secs(1),
                    };
                    if wait.is_zero() {
                        break;
                    }
                    st = self
                        .work
                        .wait_timeout(st, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                std::mem::swap(&mut st.bytes, &mut spare);
                (st.first_seq, st.last_seq, st.closed)
            };
            if !spare.is_empty() {
                let result = self.write(&mut segment, first, last, &spare);
                spare.clear();
                if let Err(e) = result {
                    self.fail(&e);
                    return;
                }
                unsynced_seq = Some(last);
            }
            let sync_now = match self.settings.mode {
                DurabilityMode::Fsync => true,
                DurabilityMode::Batch => {
                    closed || last_sync.elapsed() >= self.settings.batch_interval
                }
                DurabilityMode::None => closed,
            };
            if let (Some(seq), true) = (unsynced_seq, sync_now) {
                let started = Instant::now();
                if let Err(e) = segment.sync() {
                    self.fail(&e);
                    return;
                }
                last_sync = Instant::now();
                self.metrics
                    .fsync_duration
                    .observe(last_sync.duration_since(started).as_secs_f64());
                unsynced_seq = None;
                self.durable.send_modify(|d| d.seq = seq);
            } else if let Some(seq) = unsynced_seq {
                if self.settings.mode == DurabilityMode::None {
                    // Written to the OS: as durable as this mode gets.
                    self.durable.send_modify(|d| d.seq = seq);
                }
            }
            if closed && self.lock().bytes.is_empty() {
                return;
            }
        }
    }

    /// Writes `bytes` (records `first_seq..=last_seq`), starting a new segment first when the
    /// current one is full.
    fn write(
        &self,
        segment: &mut SegmentWriter,
        first_seq: u64,
        last_seq: u64,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        if segment.bytes() >= self.settings.segment_bytes {
            segment.sync()?;
            let next = SegmentWriter::create(&self.settings.dir, first_seq)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            *segment = next;
            self.add_on_disk(segment.bytes());
        }
        segment.append(bytes, last_seq)?;
        self.add_on_disk(bytes.len() as u64);
        Ok(())
    }

    fn add_on_disk(&self, n: u64) {
        let total = self.on_disk.fetch_add(n, Ordering::Relaxed) + n;
        self.metrics.wal_bytes.set(total as i64);
    }

    fn fail(&self, e: &dyn std::fmt::Display) {
        tracing::error!(error = %e, dir = %self.settings.dir.display(), "writing the WAL failed; no more samples are accepted");
        self.lock().failed = true;
        self.durable.send_modify(|d| d.failed = true);
    }
}

impl WalWriterHandle {
    /// Writes and syncs what is buffered, then stops the writer thread. Later appends are
    /// refused (the queue is closed by then anyway).
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.wal.lock().closed = true;
        self.wal.work.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the WAL writer thread panicked");
            }
        }
    }
}

impl Drop for WalWriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
