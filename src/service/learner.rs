//! The learner: the only code that mutates the network. It owns the `ff::Trainer` on its own OS
//! thread (an update is CPU-bound; on a runtime worker it would stall requests) and never
//! awaits. It drains the learn queue, classifies every sample before learning it
//! (prequential test-then-train), sleeps when the engine's sample count, the clock or an admin
//! request says so, and publishes snapshots every N samples or T milliseconds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ff::{
    AverageConfig, DriftConfig, Model, PageHinkley, ScheduleMode, Trainer, WeightAverage,
};
use crate::service::checkpointer::{self, CheckpointJob, Checkpointer};
use crate::service::drift::DriftLog;
use crate::service::metrics::{DurabilityMetrics, Metrics, Phase};
use crate::service::queue::LearnQueue;
use crate::service::recovery::Backlog;
use crate::service::snapshot::{Snapshot, Snapshots};
use crate::service::wal_writer::WalWriter;
use crate::store::checkpoint::{Checkpoint, Counters};
use crate::store::wal::SequencedSample;

/// Samples taken from the queue per lock; counters and progress are updated once per chunk.
const CHUNK: usize = 64;

/// Longest the learner waits for work before re-checking its timers.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// The learner's timing knobs (from `[learner]`, `[train]` and `[average]`).
#[derive(Debug, Clone)]
pub struct LearnerSettings {
    /// Publish after this many samples since the last publication ...
    pub snapshot_every_samples: u64,
    /// ... or this long, whichever comes first.
    pub snapshot_every: Duration,
    /// Sleep after this long with at least one wake sample (sleep schedule only).
    pub sleep_every: Option<Duration>,
    /// Samples in the rolling prequential accuracy.
    pub prequential_window: usize,
    /// Nice value of the learner thread.
    pub nice: i32,
    /// Weight averaging for published snapshots (off: the live weights are published).
    pub average: AverageConfig,
    /// Drift detection on the prequential errors.
    pub drift: DriftConfig,
}

/// What the learner needs for checkpoints and recovery (durability on).
#[derive(Debug)]
pub struct LearnerDurability {
    /// The checkpoint writer.
    pub checkpointer: Checkpointer,
    /// The WAL (for the bytes written since the last checkpoint); `None` when the samples'
    /// log is elsewhere (the cluster's stream).
    pub wal: Option<Arc<WalWriter>>,
    /// Checkpoint after this many samples (0: never by count).
    pub every_samples: u64,
    /// ... or this long with new samples.
    pub every: Option<Duration>,
    /// ... or once this many WAL bytes were written since the last one.
    pub max_wal_bytes: u64,
    /// The recovered WAL backlog, learned before anything in the queue.
    pub backlog: Backlog,
    /// The weight average and its sample count, restored from a checkpoint.
    pub average: Option<(Model, u64)>,
    /// Checkpoint and recovery metrics.
    pub metrics: DurabilityMetrics,
}

/// What the learner has done so far, readable from any thread (for `/v1/model`, `/readyz` and
/// tests). Counters are updated once per chunk of samples, after the metrics.
#[derive(Debug, Default)]
pub struct LearnerProgress {
    samples_learned: AtomicU64,
    learned_seq: AtomicU64,
    sleep_cycles: AtomicU64,
    phase: AtomicU8,
    running: AtomicBool,
    drift: DriftLog,
}

impl LearnerProgress {
    /// Wake samples learned since the service started.
    pub fn samples_learned(&self) -> u64 {
        self.samples_learned.load(Ordering::Acquire)
    }

    /// Sequence number of the last sample learned (0 before the first).
    pub fn learned_seq(&self) -> u64 {
        self.learned_seq.load(Ordering::Acquire)
    }

    /// Sleep phases completed.
    pub fn sleep_cycles(&self) -> u64 {
        self.sleep_cycles.load(Ordering::Acquire)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            1 => Phase::Sleep,
            _ => Phase::Wake,
        }
    }

    /// Whether the learner thread is running.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Drift detected on the prequential errors.
    pub fn drift(&self) -> &DriftLog {
        &self.drift
    }

    /// Sets the counters restored from a checkpoint (before the learner starts).
    pub(crate) fn restore(&self, c: &Counters) {
        self.samples_learned
            .store(c.samples_learned, Ordering::Release);
        self.learned_seq.store(c.last_seq, Ordering::Release);
        self.sleep_cycles.store(c.sleep_cycles, Ordering::Release);
    }
}

/// A whole learner state to continue from (see `LearnQueue::restart`).
#[derive(Debug)]
pub struct LearnerRestart {
    /// The trainer.
    pub trainer: Trainer,
    /// The weight average and its sample count, when the state had one.
    pub average: Option<(Model, u64)>,
    /// The counters.
    pub counters: Counters,
    /// The lease epoch this state learns in.
    pub epoch: u64,
}

/// The running learner thread.
#[derive(Debug)]
pub struct LearnerHandle {
    thread: JoinHandle<()>,
    drain_deadline: Arc<OnceLock<Instant>>,
    queue: Arc<LearnQueue>,
}

impl LearnerHandle {
    /// Closes the queue and waits for the learner to learn what is queued, up to `deadline`
    /// (what is left then is dropped and logged). `Err` if the learner thread panicked.
    pub fn finish(self, deadline: Instant) -> std::thread::Result<()> {
        // Set before closing, so the learner sees the deadline when it sees the close.
        let _ = self.drain_deadline.set(deadline);
        self.queue.close();
        self.thread.join()
    }
}

/// Starts the learner thread. Fails only if the OS refuses a thread.
pub fn spawn(
    trainer: Trainer,
    queue: Arc<LearnQueue>,
    snapshots: Arc<Snapshots>,
    metrics: Arc<Metrics>,
    progress: Arc<LearnerProgress>,
    settings: LearnerSettings,
    mut durability: Option<LearnerDurability>,
) -> std::io::Result<LearnerHandle> {
    let drain_deadline = Arc::new(OnceLock::new());
    let now = Instant::now();
    let version = snapshots.load().version;
    progress.running.store(true, Ordering::Release);
    let drift = settings
        .drift
        .drift_detection
        .then(|| PageHinkley::new(settings.drift.clone()));
    let learner = Learner {
        sleep_mode: trainer.config().schedule == ScheduleMode::Sleep,
        trainer,
        queue: Arc::clone(&queue),
        snapshots,
        metrics,
        progress,
        window: Window::new(settings.prequential_window),
        settings,
        drain_deadline: Arc::clone(&drain_deadline),
        version,
        unpublished: 0,
        dirty: false,
        last_publish: now,
        last_sleep: now,
        chunk: Counts::default(),
        average: None,
        drift,
        checkpoint_at: now,
        since_checkpoint: 0,
        wal_at_checkpoint: 0,
        checkpoint_request: 0,
        checkpoint_wanted: false,
        durability: None,
        epoch: 0,
    };
    let mut learner = learner;
    let restored = durability.as_mut().and_then(|d| d.average.take());
    learner.trainer.settle();
    // Range-checked by `Config::validate`; an error here would only turn averaging off.
    learner.average = match restored {
        Some((average, since)) => WeightAverage::restore(&learner.settings.average, average, since),
        None => WeightAverage::new(&learner.settings.average, learner.trainer.model().clone()),
    }
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "weight averaging is off");
        None
    });
    learner.durability = durability;
    let thread = std::thread::Builder::new()
        .name("ffd-learner".into())
        .spawn(move || {
            lower_priority(learner.settings.nice);
            learner.run()
        })?;
    Ok(LearnerHandle {
        thread,
        drain_deadline,
        queue,
    })
}

/// Counts of one chunk, reported to metrics and progress together.
#[derive(Debug, Default)]
struct Counts {
    learned: u64,
    correct: u64,
    last_seq: Option<u64>,
}

/// The rolling prequential window: whether each of the last `n` predictions was right.
#[derive(Debug)]
struct Window {
    hits: VecDeque<bool>,
    size: usize,
    correct: usize,
}

impl Window {
    fn new(size: usize) -> Self {
        Self {
            hits: VecDeque::with_capacity(size.max(1)),
            size: size.max(1),
            correct: 0,
        }
    }

    fn push(&mut self, hit: bool) {
        if self.hits.len() == self.size && self.hits.pop_front() == Some(true) {
            self.correct -= 1;
        }
        self.hits.push_back(hit);
        self.correct += usize::from(hit);
    }

    /// Fraction right; `None` before the first prediction.
    fn accuracy(&self) -> Option<f64> {
        (!self.hits.is_empty()).then(|| self.correct as f64 / self.hits.len() as f64)
    }
}

struct Learner {
    trainer: Trainer,
    sleep_mode: bool,
    queue: Arc<LearnQueue>,
    snapshots: Arc<Snapshots>,
    metrics: Arc<Metrics>,
    progress: Arc<LearnerProgress>,
    settings: LearnerSettings,
    window: Window,
    drain_deadline: Arc<OnceLock<Instant>>,
    version: u64,
    /// Samples learned since the last publication.
    unpublished: u64,
    /// The model changed (a sample or a sleep) since the last publication.
    dirty: bool,
    last_publish: Instant,
    last_sleep: Instant,
    chunk: Counts,
    /// The averaged model that snapshots publish (averaging on).
    average: Option<WeightAverage>,
    /// Watches the prequential errors (drift detection on).
    drift: Option<PageHinkley>,
    /// When the last checkpoint was handed to the writer, samples learned since, and the WAL
    /// bytes written by then.
    checkpoint_at: Instant,
    since_checkpoint: u64,
    wal_at_checkpoint: u64,
    /// Highest `/admin/checkpoint` request seen, and whether a due checkpoint found the
    /// writer busy (retried on the next timer).
    checkpoint_request: u64,
    checkpoint_wanted: bool,
    durability: Option<LearnerDurability>,
    /// The lease epoch the state was restarted in (cluster backend; 0 otherwise): checkpoints
    /// carry it, and only the current epoch's are kept.
    epoch: u64,
}

/// Marks the learner stopped however its thread ends (a panic included), so `/readyz` and
/// `/learn` notice.
struct RunningGuard(Arc<LearnerProgress>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

impl Learner {
    fn run(mut self) {
        let _running = RunningGuard(Arc::clone(&self.progress));
        if self.replay_backlog() {
            self.serve_queue();
        } else {
            tracing::warn!("shutdown during recovery: the rest of the WAL backlog and the queued samples are learned at the next start");
        }
        if self.dirty {
            self.publish(Instant::now());
        }
        if let Some(d) = self.durability.take() {
            self.durability = Some(d);
            self.checkpoint(None, true);
            if let Some(d) = self.durability.take() {
                drop(d.checkpointer.jobs);
                if d.checkpointer.thread.join().is_err() {
                    tracing::error!("the checkpoint writer panicked");
                }
            }
        }
        tracing::info!(
            samples_learned = self.progress.samples_learned(),
            sleep_cycles = self.progress.sleep_cycles(),
            model_version = self.version,
            "learner stopped"
        );
    }

    /// Learns the recovered WAL backlog, streamed from its segments, before anything queued.
    /// Returns `false` if shutdown interrupted it (the queue must then not be learned: its
    /// samples come after the backlog).
    fn replay_backlog(&mut self) -> bool {
        let Some(backlog) = self
            .durability
            .as_mut()
            .map(|d| std::mem::take(&mut d.backlog))
        else {
            return true;
        };
        if backlog.remaining == 0 {
            return true;
        }
        let started = Instant::now();
        let (inputs, classes) = {
            let c = self.trainer.network();
            (c.inputs, c.classes)
        };
        let after = backlog.after;
        let mut records = backlog.records(inputs, classes);
        let mut replayed = 0u64;
        self.queue.set_backlog(records.remaining());
        tracing::info!(
            samples = records.remaining(),
            after_seq = after,
            "learning the WAL backlog"
        );
        while let Some(record) = records.next() {
            self.learn(&record);
            replayed += 1;
            if replayed.is_multiple_of(CHUNK as u64)
                && !self.between_replay_chunks(records.remaining())
            {
                return false;
            }
        }
        self.between_replay_chunks(0);
        self.queue.set_backlog(0);
        tracing::info!(
            replayed,
            seconds = started.elapsed().as_secs_f64(),
            "WAL backlog learned"
        );
        true
    }

    /// Bookkeeping every chunk of the replay; `false` once shutdown has begun.
    fn between_replay_chunks(&mut self, remaining: u64) -> bool {
        let learned = self.chunk.learned;
        self.report_chunk();
        if let Some(d) = &self.durability {
            d.metrics.recovery_replayed.inc_by(learned);
        }
        self.queue.set_backlog(remaining);
        if let Some(request) = self.queue.take_checkpoint_request() {
            self.checkpoint(Some(request), true);
        }
        self.on_timers(Instant::now());
        !self.queue.is_closed()
    }

    /// Copies the state (between two samples) and hands it to the checkpoint writer; with
    /// `wait`, waits for the writer to take it, else gives up if it is busy and retries later.
    fn checkpoint(&mut self, request: Option<u64>, wait: bool) {
        if self.durability.is_none() {
            return;
        }
        if let Some(r) = request {
            self.checkpoint_request = self.checkpoint_request.max(r);
        }
        self.report_chunk();
        self.trainer.settle();
        let job = CheckpointJob {
            checkpoint: Checkpoint {
                trainer: self.trainer.state(),
                average: self.average.as_ref().map(|a| a.model().clone()),
                counters: Counters {
                    last_seq: self.progress.learned_seq(),
                    high_water_seq: self
                        .durability
                        .as_ref()
                        .and_then(|d| d.wal.as_ref())
                        .map_or(0, |w| w.durable_seq()),
                    samples_learned: self.progress.samples_learned(),
                    sleep_cycles: self.progress.sleep_cycles(),
                    model_version: self.version,
                    since_average: self.average.as_ref().map_or(0, WeightAverage::since_update),
                },
            },
            request: self.checkpoint_request,
            epoch: self.epoch,
        };
        let Some(d) = &self.durability else { return };
        let taken = if wait {
            if d.checkpointer.jobs.send(job).is_err() {
                tracing::error!("the checkpoint writer is gone; no more checkpoints");
            }
            true
        } else {
            checkpointer::offer(&d.checkpointer.jobs, job)
        };
        if taken {
            self.checkpoint_at = Instant::now();
            self.since_checkpoint = 0;
            self.wal_at_checkpoint = d.wal.as_ref().map_or(0, |w| w.appended_bytes());
        }
        self.checkpoint_wanted = !taken;
    }

    /// Whether a checkpoint is due by count, WAL size or time, or was refused earlier.
    fn checkpoint_due(&self, now: Instant) -> bool {
        let Some(d) = &self.durability else {
            return false;
        };
        if self.since_checkpoint == 0 {
            return false;
        }
        self.checkpoint_wanted
            || (d.every_samples > 0 && self.since_checkpoint >= d.every_samples)
            || d.wal
                .as_ref()
                .is_some_and(|w| w.appended_bytes() - self.wal_at_checkpoint >= d.max_wal_bytes)
            || d.every
                .is_some_and(|every| now >= self.checkpoint_at + every)
    }

    /// The queue loop: learn what arrives, sleep and publish on schedule, until closed.
    fn serve_queue(&mut self) {
        let mut batch: Vec<SequencedSample> = Vec::with_capacity(CHUNK);
        loop {
            let now = Instant::now();
            let wait = self.next_timer(now).saturating_duration_since(now);
            let signals = self.queue.pop(&mut batch, CHUNK, wait);
            if let Some(restart) = self.queue.take_restart() {
                self.restart(*restart);
            }
            let deadline = signals
                .closed
                .then(|| self.drain_deadline.get().copied())
                .flatten();
            let mut dropped = 0;
            for (i, sample) in batch.iter().enumerate() {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    dropped = batch.len() - i;
                    break;
                }
                self.learn(sample);
            }
            batch.clear();
            if signals.sleep_requested {
                self.sleep();
            }
            if let Some(request) = signals.checkpoint_requested {
                self.checkpoint(Some(request), true);
            }
            // Publishing before the progress moves means a reader who sees every sample learned
            // also classifies with them. Only when idle: under load the timers decide.
            if self.dirty && self.queue.is_empty() {
                self.publish(Instant::now());
            }
            self.report_chunk();
            self.on_timers(Instant::now());
            if signals.closed {
                let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
                if past_deadline || self.queue.is_empty() {
                    dropped += self.drop_rest();
                    if dropped > 0 && self.durability.is_some() {
                        tracing::warn!(dropped, "drain deadline passed; queued samples stay in the WAL and are learned at the next start");
                    } else if dropped > 0 {
                        tracing::warn!(dropped, "drain deadline passed; queued samples dropped");
                    }
                    break;
                }
            }
        }
    }

    /// Replaces the whole state with `r` (a new lease term of the cluster backend): what was
    /// learned before is dropped, the counters and the served snapshot become the restored
    /// ones.
    fn restart(&mut self, r: LearnerRestart) {
        self.report_chunk();
        let now = Instant::now();
        self.trainer = r.trainer;
        self.trainer.settle();
        self.average = match r.average {
            Some((average, since)) => {
                WeightAverage::restore(&self.settings.average, average, since)
            }
            None => WeightAverage::new(&self.settings.average, self.trainer.model().clone()),
        }
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "weight averaging is off");
            None
        });
        self.progress.restore(&r.counters);
        self.version = r.counters.model_version;
        self.window = Window::new(self.settings.prequential_window);
        self.drift = self
            .settings
            .drift
            .drift_detection
            .then(|| PageHinkley::new(self.settings.drift.clone()));
        self.epoch = r.epoch;
        self.unpublished = 0;
        self.since_checkpoint = 0;
        self.checkpoint_wanted = false;
        self.checkpoint_at = now;
        self.last_sleep = now;
        self.publish(now);
        tracing::info!(
            epoch = r.epoch,
            last_seq = r.counters.last_seq,
            samples_learned = r.counters.samples_learned,
            "learner restarted from the shared state"
        );
    }

    /// Test-then-train one sample; sleeps and publishes when due.
    fn learn(&mut self, s: &SequencedSample) {
        if let Some(average) = self.average.as_mut() {
            average.calibrate(&s.features, s.label, self.trainer.config().classifier);
        }
        let outcome = self.trainer.learn_unchecked(&s.features, s.label, true);
        if outcome.refused {
            // The model is unchanged; the sample counts as handled (`learned_seq` moves on, so
            // nobody waits for it) but not as learned.
            self.metrics.learner_nonfinite.inc();
            tracing::warn!(
                seq = s.seq,
                "update refused: it would have made the model non-finite; sample not learned"
            );
            self.chunk.last_seq = Some(s.seq);
            return;
        }
        let hit = outcome.predicted == Some(s.label);
        self.window.push(hit);
        if self
            .drift
            .as_mut()
            .is_some_and(|d| d.update(f64::from(u8::from(!hit))))
        {
            self.drifted(s.seq);
        }
        self.chunk.learned += 1;
        self.chunk.correct += u64::from(hit);
        self.chunk.last_seq = Some(s.seq);
        self.unpublished += 1;
        self.since_checkpoint += 1;
        self.dirty = true;
        if let Some(average) = self.average.as_mut() {
            if average.observe() {
                self.trainer.settle();
                // Same configuration by construction: the average started as a copy.
                if let Err(e) = average.update(self.trainer.model()) {
                    tracing::error!(error = %e, "weight averaging failed; serving live weights");
                    self.average = None;
                }
            }
        }
        // Asked again rather than read from `outcome`: a drift above may have slept already.
        if self.trainer.sleep_due() {
            self.sleep();
        }
        if self.unpublished >= self.settings.snapshot_every_samples {
            self.publish(Instant::now());
        }
    }

    /// Drift was detected at sample `seq`: count and record it, sleep now (under the sleep
    /// schedule: the samples since the change that wait in the wake are learned at once rather
    /// than at the end of a long wake), restart the learning rate with the drift's boost
    /// (`drift_lr_boost`: the live weights relearn faster; the sleep ramp restarts with it, so
    /// the next wakes are short) and restart the weight average from the live weights, so
    /// `/classify` stops serving what was averaged over the old data.
    fn drifted(&mut self, seq: u64) {
        self.metrics.drift_detected.inc();
        let learned = self.progress.samples_learned() + self.chunk.learned;
        self.progress.drift.record(seq, learned);
        tracing::warn!(seq, "drift detected on the prequential errors; the learner sleeps, and the learning rate and the weight average restart");
        if self.trainer.wake_samples_since_sleep() > 0 {
            self.sleep();
        }
        self.trainer
            .restart_boost_with(self.settings.drift.lr_boost());
        if self.average.is_some() {
            self.trainer.settle();
            self.average = WeightAverage::new(&self.settings.average, self.trainer.model().clone())
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "weight averaging is off");
                    None
                });
            self.publish(Instant::now());
        }
    }

    /// Moves the chunk's counts into the metrics, then into the progress (so a reader who saw
    /// the progress move sees the metrics moved too).
    fn report_chunk(&mut self) {
        let c = std::mem::take(&mut self.chunk);
        if c.learned == 0 && c.last_seq.is_none() {
            return;
        }
        let m = &self.metrics;
        m.samples_learned
            .with_label_values(&[Phase::Wake.as_str()])
            .inc_by(c.learned);
        m.prequential_predictions.inc_by(c.learned);
        m.prequential_correct.inc_by(c.correct);
        if let Some(a) = self.window.accuracy() {
            m.prequential_accuracy.set(a);
        }
        if let Some(fit) = self.trainer.calibration() {
            // The served model's: the average's own fit when averaging is on.
            let served = self.average.as_ref().map(|a| a.model().calibration());
            let t = served.unwrap_or(fit.calibration()).temperature;
            m.calibration_temperature.set(f64::from(t));
            if let Some(loss) = fit.log_loss() {
                m.prequential_log_loss.set(loss);
            }
        }
        self.progress
            .samples_learned
            .fetch_add(c.learned, Ordering::AcqRel);
        if let Some(seq) = c.last_seq {
            self.progress.learned_seq.store(seq, Ordering::Release);
        }
    }

    /// One sleep phase: negative updates from the replay buffer.
    fn sleep(&mut self) {
        self.set_phase(Phase::Sleep);
        let started = Instant::now();
        let report = self.trainer.sleep();
        if report.refused > 0 {
            self.metrics.learner_nonfinite.inc_by(report.refused as u64);
            tracing::warn!(
                refused = report.refused,
                "sleep updates refused: they would have made the model non-finite"
            );
        }
        let now = Instant::now();
        self.set_phase(Phase::Wake);
        self.last_sleep = now;
        self.dirty = true;
        let m = &self.metrics;
        m.sleep_duration
            .observe(now.duration_since(started).as_secs_f64());
        m.samples_learned
            .with_label_values(&[Phase::Sleep.as_str()])
            .inc_by(report.negatives as u64);
        m.sleep_cycles.inc();
        self.progress.sleep_cycles.fetch_add(1, Ordering::AcqRel);
        tracing::trace!(negatives = report.negatives, "slept");
    }

    fn set_phase(&self, phase: Phase) {
        self.progress.phase.store(phase as u8, Ordering::Relaxed);
        self.metrics.phase.set(phase as i64);
    }

    /// Copies the model into a new snapshot and refreshes the per-layer gauges.
    fn publish(&mut self, now: Instant) {
        self.version += 1;
        let stats = self.trainer.take_stats();
        self.metrics.observe_layers(&stats);
        let model = match &self.average {
            Some(average) => average.model().clone(),
            None => {
                self.trainer.settle();
                self.trainer.model().clone()
            }
        };
        self.snapshots.publish(Snapshot {
            model,
            version: self.version,
            samples_learned: self.progress.samples_learned() + self.chunk.learned,
        });
        self.metrics.model_version.set(self.version as i64);
        self.unpublished = 0;
        self.dirty = false;
        self.last_publish = now;
    }

    /// Time-based sleep and publication.
    fn on_timers(&mut self, now: Instant) {
        if let Some(due) = self.sleep_timer() {
            if now >= due {
                self.sleep();
            }
        }
        if self.dirty && now >= self.last_publish + self.settings.snapshot_every {
            self.publish(now);
        }
        if self.checkpoint_due(now) {
            self.checkpoint(None, false);
        }
    }

    /// When the clock next asks for a sleep: only in the sleep schedule, with wake samples
    /// since the last one.
    fn sleep_timer(&self) -> Option<Instant> {
        let every = self.settings.sleep_every?;
        (self.sleep_mode && self.trainer.wake_samples_since_sleep() > 0)
            .then(|| self.last_sleep + every)
    }

    /// The earliest timer, or a bounded idle wait.
    fn next_timer(&self, now: Instant) -> Instant {
        let mut next = now + IDLE_WAIT;
        if let Some(due) = self.sleep_timer() {
            next = next.min(due);
        }
        if self.dirty {
            next = next.min(self.last_publish + self.settings.snapshot_every);
        }
        if let Some(every) = self.durability.as_ref().and_then(|d| d.every) {
            if self.since_checkpoint > 0 {
                next = next.min(self.checkpoint_at + every);
            }
        }
        next
    }

    /// Empties the queue without learning (past the drain deadline); returns the count.
    fn drop_rest(&self) -> usize {
        let mut rest = Vec::new();
        let mut n = 0;
        loop {
            self.queue.pop(&mut rest, usize::MAX, Duration::ZERO);
            if rest.is_empty() {
                return n;
            }
            n += rest.len();
            rest.clear();
        }
    }
}

/// Sets the calling thread's nice value (Linux: per thread). Failure only costs latency, so it
/// is logged, not fatal.
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the current thread; no memory is passed.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if rc != 0 {
            tracing::warn!(nice, error = %std::io::Error::last_os_error(), "could not lower the learner's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn window_counts_the_last_n() {
        let mut w = Window::new(3);
        assert_eq!(w.accuracy(), None);
        for hit in [true, true, false, false, false] {
            w.push(hit);
        }
        assert_eq!(w.accuracy(), Some(0.0));
        w.push(true);
        assert!((w.accuracy().expect("some") - 1.0 / 3.0).abs() < 1e-12);
    }
}
