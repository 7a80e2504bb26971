//! The lease holder's reading of the stream: an ordered pull consumer (no acknowledgements;
//! the client recreates it at the next expected sequence when a server goes away) from the
//! message after the checkpoint, every message decoded and handed to the learner's queue in
//! stream order. A message that cannot be learned is counted and skipped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures_util::StreamExt;

use crate::service::cluster::{message, ClusterState};
use crate::service::metrics::Metrics;
use crate::service::queue::{LearnQueue, PushError};
use crate::service::sample::SampleShape;
use crate::service::shutdown::ShutdownNotice;

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
    let stream = match bus.js.get_stream(&bus.names.stream).await {
        Ok(stream) => stream,
        Err(e) => return Stopped::Failed(format!("opening the stream: {e}")),
    };
    let consumer = match stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: at.next,
            },
            ..Default::default()
        })
        .await
    {
        Ok(consumer) => consumer,
        Err(e) => return Stopped::Failed(format!("creating the consumer: {e}")),
    };
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(e) => return Stopped::Failed(format!("reading the stream: {e}")),
    };
    loop {
        let next = tokio::select! {
            () = shutdown.triggered() => return Stopped::Shutdown,
            next = messages.next() => next,
        };
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Stopped::Failed(format!("reading the stream: {e}")),
            None => return Stopped::Failed("the consumer ended".into()),
        };
        let (seq, pending) = match msg.info() {
            Ok(info) => (info.stream_sequence, info.pending),
            Err(e) => return Stopped::Failed(format!("a message without metadata: {e}")),
        };
        metrics.cluster.consumer_lag.set(pending as i64);
        cluster.saw_seq(seq);
        if seq < at.next {
            continue;
        }
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
        let Some(last) = samples.last().map(|s| s.seq) else {
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
        at.after = last;
    }
}
