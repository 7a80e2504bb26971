//! The lease holder's reading of the stream: message by message from the one after the
//! checkpoint, by direct gets of the next sequence (any replica answers), every message decoded
//! and handed to the learner's queue in stream order. A message that cannot be learned is
//! counted and skipped. There is no consumer: an ordered consumer stopped delivering after a
//! failover on a three-server cluster without the client noticing, and a consumer's state on
//! one server is one more thing a server's death takes away. When the next message does not
//! exist yet the reader asks the stream for its last sequence and waits `IDLE_POLL`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;

use crate::service::cluster::{message, ClusterState};
use crate::service::metrics::Metrics;
use crate::service::queue::{LearnQueue, PushError};
use crate::service::sample::SampleShape;
use crate::service::shutdown::ShutdownNotice;

/// Wait before looking again when the stream has nothing new.
const IDLE_POLL: Duration = Duration::from_millis(10);

/// Where the learner's queue stands in the stream.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The next stream sequence to read.
    pub next: u64,
    /// Samples numbered up to this (`message::sample_seq`) are already learned or queued.
    pub after: u64,
}

impl Position {
    /// The position right after the sample numbered `last_seq` (0: from the start).
    pub fn after(last_seq: u64) -> Self {
        Self {
            next: message::stream_seq(last_seq).max(1),
            after: last_seq,
        }
    }
}

/// Why consuming stopped.
#[derive(Debug)]
pub enum Stopped {
    /// Shutdown began, or the queue closed.
    Shutdown,
    /// NATS failed; consuming may resume at the position.
    Failed(String),
}

/// Reads the stream from `at` into `queue` until shutdown or a failure; `at` moves with every
/// message queued.
pub async fn consume(
    cluster: &ClusterState,
    queue: &Arc<LearnQueue>,
    shape: SampleShape,
    metrics: &Metrics,
    at: &mut Position,
    shutdown: &mut ShutdownNotice,
) -> Stopped {
    let bus = &cluster.bus;
    let mut stream = match bus.js.get_stream(&bus.names.stream).await {
        Ok(stream) => stream,
        Err(e) => return Stopped::Failed(format!("opening the stream: {e}")),
    };
    let mut last = 0;
    loop {
        let msg = match stream.direct_get(at.next).await {
            Ok(msg) => msg,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                // Not written yet (or, on a replica that answered, not replicated yet); or
                // removed by a limit: then the stream's first sequence is past it.
                match stream.info().await {
                    Ok(info) => {
                        last = info.state.last_sequence;
                        metrics
                            .cluster
                            .consumer_lag
                            .set(last.saturating_sub(at.next.saturating_sub(1)) as i64);
                        if info.state.first_sequence > at.next {
                            tracing::error!(
                                from = at.next,
                                to = info.state.first_sequence - 1,
                                "stream messages removed before they were learned"
                            );
                            at.next = info.state.first_sequence;
                            continue;
                        }
                    }
                    Err(e) => return Stopped::Failed(format!("reading the stream's state: {e}")),
                }
                if last >= at.next {
                    continue;
                }
                tokio::select! {
                    () = shutdown.triggered() => return Stopped::Shutdown,
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            Err(e) => return Stopped::Failed(format!("reading message {}: {e}", at.next)),
        };
        let seq = msg.sequence;
        last = last.max(seq);
        metrics
            .cluster
            .consumer_lag
            .set(last.saturating_sub(seq) as i64);
        cluster.saw_seq(seq);
        at.next = seq + 1;
        let mut samples = match message::decode(&msg.payload, seq, shape) {
            Ok(samples) => samples,
            Err(e) => {
                metrics.cluster.bad_messages.inc();
                tracing::warn!(seq, error = %e, "skipping a stream message the learner cannot read");
                continue;
            }
        };
        samples.retain(|s| s.seq > at.after);
        let Some(last_sample) = samples.last().map(|s| s.seq) else {
            continue;
        };
        loop {
            let room = queue.room_freed();
            tokio::pin!(room);
            room.as_mut().enable();
            match queue.push_sequenced(samples) {
                Ok(()) => break,
                Err((PushError::Full, back)) => samples = back,
                Err(_) => return Stopped::Shutdown,
            }
            tokio::select! {
                () = shutdown.triggered() => return Stopped::Shutdown,
                () = &mut room => {}
                // A restart or a clear also frees room; this bounds a missed wake-up.
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        at.after = last_sample;
        if shutdown.is_triggered() {
            return Stopped::Shutdown;
        }
    }
}
