//! `LearnQueue`: the bounded hand-off from request handlers to the learner thread. Handlers
//! `try_push` a whole `ValidatedBatch` or get it back with `Full` (→ 429): never a part, never
//! more than `capacity` samples. Each accepted sample gets the next sequence number. The queue
//! also carries the learner's control flags (sleep now, pause, close); they coalesce, so they
//! are bounded too.
//!
//! A `std::sync::Mutex` guards the state: every critical section moves a few pointers and
//! nothing awaits while holding it. The learner blocks on a `Condvar`; async NDJSON streams
//! waiting for room await a `tokio::sync::Notify` that the learner signals after each pop.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::service::learner::LearnerRestart;
use crate::service::sample::ValidatedBatch;
use crate::service::wal_writer::{AppendError, WalWriter};
use crate::store::wal::SequencedSample;

/// What a successful push queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Samples queued.
    pub count: usize,
    /// Sequence number of the last one; `None` for an empty batch.
    pub last_seq: Option<u64>,
}

/// Why a push queued nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// Not enough room for the whole batch right now.
    Full,
    /// The queue is closed: the service is shutting down.
    Closed,
    /// The write-ahead log cannot be written: nothing can be acknowledged.
    Storage,
}

/// What woke the learner besides samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    /// A sleep phase was requested (`/admin/sleep`); the flag is consumed by the pop.
    pub sleep_requested: bool,
    /// The queue is closed: learn what is left, then stop.
    pub closed: bool,
    /// A checkpoint was requested (`/admin/checkpoint`): the latest request's number, consumed
    /// by the pop.
    pub checkpoint_requested: Option<u64>,
}

/// The bounded learn queue.
#[derive(Debug)]
pub struct LearnQueue {
    state: Mutex<State>,
    /// Signalled on push, control requests and close; the learner waits on it.
    ready: Condvar,
    /// Signalled when the learner takes samples out; streams wait on it for room.
    room: Notify,
    capacity: usize,
    depth: IntGauge,
    /// Where accepted samples are logged before they are queued (durability on).
    wal: Option<Arc<WalWriter>>,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<SequencedSample>,
    last_seq: u64,
    sleep_requested: bool,
    paused: bool,
    closed: bool,
    /// Samples of the recovered WAL backlog not yet learned; they come before `items`.
    backlog: u64,
    /// Number of the latest checkpoint request, and whether the learner has seen it.
    checkpoint_requests: u64,
    checkpoint_pending: bool,
    /// A state for the learner to continue from (cluster backend: a new lease term).
    restart: Option<Box<LearnerRestart>>,
}

impl State {
    fn depth(&self) -> i64 {
        (self.items.len() as u64 + self.backlog) as i64
    }
}

impl LearnQueue {
    /// An empty queue for `capacity` samples; `depth` mirrors its length.
    pub fn new(capacity: usize, depth: IntGauge) -> Self {
        depth.set(0);
        Self {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            room: Notify::new(),
            capacity,
            depth,
            wal: None,
        }
    }

    /// Logs every accepted sample to `wal` (inside the push, so records are in sequence
    /// order and a refused push logs nothing), and numbers samples after `last_seq` — the
    /// highest sequence number already used — so numbers are never reused across restarts.
    pub fn with_wal(mut self, wal: Arc<WalWriter>, last_seq: u64) -> Self {
        self.wal = Some(wal);
        self.lock().last_seq = last_seq;
        self
    }

    /// Sets the recovered WAL backlog still to learn; it counts in the queue depth.
    pub fn set_backlog(&self, remaining: u64) {
        let mut st = self.lock();
        st.backlog = remaining;
        self.depth.set(st.depth());
    }

    /// Asks the learner for a checkpoint; returns the request's number (checkpoints report
    /// the highest request number they satisfy).
    pub fn request_checkpoint(&self) -> u64 {
        let mut st = self.lock();
        st.checkpoint_requests += 1;
        st.checkpoint_pending = true;
        let n = st.checkpoint_requests;
        drop(st);
        self.ready.notify_one();
        n
    }

    /// Queues every sample of `batch`, or none: `Full` if they do not all fit now, `Closed`
    /// after [`LearnQueue::close`]. The batch comes back with the error.
    pub fn try_push(&self, batch: ValidatedBatch) -> Result<Accepted, (PushError, ValidatedBatch)> {
        let mut st = self.lock();
        if st.closed {
            return Err((PushError::Closed, batch));
        }
        let n = batch.len();
        if n == 0 {
            return Ok(Accepted {
                count: 0,
                last_seq: None,
            });
        }
        if st.items.len() + n > self.capacity {
            return Err((PushError::Full, batch));
        }
        let first = st.last_seq + 1;
        if let Some(wal) = &self.wal {
            match wal.append(first, batch.samples()) {
                Ok(()) => {}
                Err(AppendError::Full) => return Err((PushError::Full, batch)),
                Err(AppendError::Failed) => return Err((PushError::Storage, batch)),
            }
        }
        st.items.extend(
            batch
                .into_samples()
                .into_iter()
                .zip(first..)
                .map(|(s, seq)| SequencedSample {
                    seq,
                    features: s.features,
                    label: s.label,
                }),
        );
        st.last_seq += n as u64;
        let accepted = Accepted {
            count: n,
            last_seq: Some(st.last_seq),
        };
        self.depth.set(st.depth());
        drop(st);
        self.ready.notify_one();
        Ok(accepted)
    }

    /// Cluster backend: queues samples already numbered by the stream, whole or not at all
    /// (`Full` when they do not all fit now, `Closed` after [`LearnQueue::close`]). The
    /// samples come back with the error.
    pub fn push_sequenced(
        &self,
        samples: Vec<SequencedSample>,
    ) -> Result<(), (PushError, Vec<SequencedSample>)> {
        let mut st = self.lock();
        if st.closed {
            return Err((PushError::Closed, samples));
        }
        if !st.items.is_empty() && st.items.len() + samples.len() > self.capacity {
            return Err((PushError::Full, samples));
        }
        if let Some(last) = samples.last() {
            st.last_seq = st.last_seq.max(last.seq);
        }
        st.items.extend(samples);
        self.depth.set(st.depth());
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Cluster backend: drops every queued sample and has the learner continue from `state`
    /// before it takes anything queued after this call.
    pub fn restart(&self, state: LearnerRestart) {
        let mut st = self.lock();
        st.items.clear();
        st.last_seq = state.counters.last_seq;
        st.restart = Some(Box::new(state));
        self.depth.set(st.depth());
        drop(st);
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Cluster backend: drops every queued sample (this node stopped learning; the stream
    /// keeps them for the next learner). Returns how many.
    pub fn clear(&self) -> usize {
        let mut st = self.lock();
        let n = st.items.len();
        st.items.clear();
        self.depth.set(st.depth());
        drop(st);
        self.room.notify_waiters();
        n
    }

    /// For the learner: the state to continue from, if one is waiting.
    pub(crate) fn take_restart(&self) -> Option<Box<LearnerRestart>> {
        self.lock().restart.take()
    }

    /// A future that completes after the learner next takes samples out. Create it (and
    /// `enable` it) *before* a `try_push` that may fail, so the wake-up cannot be missed.
    pub fn room_freed(&self) -> Notified<'_> {
        self.room.notified()
    }

    /// Asks the learner for a sleep phase now.
    pub fn request_sleep(&self) {
        self.lock().sleep_requested = true;
        self.ready.notify_one();
    }

    /// Pauses or resumes learning. A paused learner takes no samples (the queue fills and
    /// pushes get `Full`) but still sleeps on request; closing overrides a pause.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        self.ready.notify_one();
    }

    /// Takes a pending checkpoint request without popping samples (for the learner while it
    /// learns the recovered backlog).
    pub(crate) fn take_checkpoint_request(&self) -> Option<u64> {
        let mut st = self.lock();
        std::mem::take(&mut st.checkpoint_pending).then_some(st.checkpoint_requests)
    }

    /// Whether learning is paused.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Refuses further pushes; the learner drains what is queued and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Samples waiting in the queue (not counting a recovered backlog).
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Samples waiting to be learned: the queue plus the recovered WAL backlog.
    pub fn depth(&self) -> u64 {
        self.lock().depth() as u64
    }

    /// Records of the recovered WAL backlog not yet learned (0 once recovery is done).
    pub fn backlog(&self) -> u64 {
        self.lock().backlog
    }

    /// Whether no sample is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most samples the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequence number of the last sample accepted (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    /// For the learner: waits up to `timeout` for samples (unless paused), a control request,
    /// or close; moves up to `max` samples into `out` (appending) and returns the signals.
    pub(crate) fn pop(
        &self,
        out: &mut Vec<SequencedSample>,
        max: usize,
        timeout: Duration,
    ) -> Signals {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let can_take = !st.items.is_empty() && (!st.paused || st.closed);
            if can_take
                || st.sleep_requested
                || st.checkpoint_pending
                || st.closed
                || st.restart.is_some()
            {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .ready
                .wait_timeout(st, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let mut taken = 0;
        // A waiting restart comes first: what is queued after it belongs to the new state.
        if (!st.paused || st.closed) && st.restart.is_none() {
            taken = max.min(st.items.len());
            out.extend(st.items.drain(..taken));
        }
        let signals = Signals {
            sleep_requested: std::mem::take(&mut st.sleep_requested),
            closed: st.closed,
            checkpoint_requested: std::mem::take(&mut st.checkpoint_pending)
                .then_some(st.checkpoint_requests),
        };
        self.depth.set(st.depth());
        drop(st);
        if taken > 0 {
            self.room.notify_waiters();
        }
        signals
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::pending::PendingLabels;
    use crate::service::sample::{Features, LabelledInput, SampleShape};

    fn batch(n: usize) -> ValidatedBatch {
        let g = IntGauge::new("test_pending", "test").expect("valid name");
        let pending = PendingLabels::new(1, Duration::from_secs(1), g);
        let inputs = (0..n)
            .map(|i| LabelledInput {
                features: Features::Inline(vec![i as f32]),
                label: 0,
            })
            .collect();
        let shape = SampleShape {
            inputs: 1,
            classes: 2,
        };
        ValidatedBatch::validate(inputs, shape, &pending, Instant::now()).expect("valid")
    }

    fn queue(capacity: usize) -> LearnQueue {
        LearnQueue::new(
            capacity,
            IntGauge::new("test_depth", "test").expect("valid name"),
        )
    }

    #[test]
    fn pushes_whole_batches_or_nothing() {
        let q = queue(5);
        let a = q.try_push(batch(3)).expect("fits");
        assert_eq!(
            a,
            Accepted {
                count: 3,
                last_seq: Some(3)
            }
        );
        let (err, back) = q.try_push(batch(3)).expect_err("does not fit");
        assert_eq!((err, back.len(), q.len()), (PushError::Full, 3, 3));
        let a = q.try_push(batch(2)).expect("fits exactly");
        assert_eq!(a.last_seq, Some(5));

        let mut out = Vec::new();
        q.pop(&mut out, 4, Duration::ZERO);
        let seqs: Vec<u64> = out.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn paused_queue_keeps_samples_until_closed() {
        let q = queue(5);
        q.set_paused(true);
        q.try_push(batch(2)).expect("fits");
        let mut out = Vec::new();
        let s = q.pop(&mut out, 10, Duration::from_millis(1));
        assert!(out.is_empty() && !s.closed);
        q.request_sleep();
        let s = q.pop(&mut out, 10, Duration::from_secs(5));
        assert!(s.sleep_requested && out.is_empty());
        q.close();
        let s = q.pop(&mut out, 10, Duration::from_secs(5));
        assert!(s.closed && !s.sleep_requested);
        assert_eq!(out.len(), 2);
        assert_eq!(
            q.try_push(batch(1)).map_err(|e| e.0),
            Err(PushError::Closed)
        );
    }
}
