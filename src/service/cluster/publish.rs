//! `/learn` on any node of the cluster backend: the validated samples of one request become
//! one message on the model's stream, and the request is answered only after JetStream has
//! acknowledged it (stored on a majority of the stream's replicas): that acknowledgement is
//! the durability promise the local WAL's fsync gives in local mode. A client's
//! `Idempotency-Key` becomes the message id, so a retry inside the stream's duplicate window is
//! acknowledged with the first publication's sequence and learned once.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use prometheus::Histogram;

use crate::service::cluster::bus::{self, Bus};
use crate::service::cluster::message;
use crate::service::sample::Sample;

/// Why a request could not be published.
#[derive(Debug, thiserror::Error)]
#[error("NATS JetStream did not acknowledge the samples: {0}")]
pub struct PublishError(pub String);

/// Publishes learn requests to the model's stream.
#[derive(Debug, Clone)]
pub struct Publisher {
    bus: Bus,
    inputs: usize,
    timeout: Duration,
    ack_latency: Histogram,
}

impl Publisher {
    /// A publisher of samples with `inputs` features; `ack_latency` observes every wait for an
    /// acknowledgement; none waits longer than `timeout`.
    pub fn new(bus: Bus, inputs: usize, timeout: Duration, ack_latency: Histogram) -> Self {
        Self {
            bus,
            inputs,
            timeout,
            ack_latency,
        }
    }

    /// Publishes `samples` as one message (with `id` as its message id when given) and returns
    /// its stream sequence once JetStream has acknowledged it. Fails at once while the
    /// connection is down: nothing is answered 202 without an acknowledgement.
    pub async fn publish(&self, samples: &[Sample], id: Option<&str>) -> Result<u64, PublishError> {
        if !bus::connected(&self.bus.client) {
            return Err(PublishError(format!(
                "not connected to NATS ({:?})",
                self.bus.client.connection_state()
            )));
        }
        let payload = message::encode(samples, self.inputs);
        let mut headers = HeaderMap::new();
        if let Some(id) = id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        let started = Instant::now();
        let acked = tokio::time::timeout(self.timeout, async {
            self.bus
                .js
                .publish_with_headers(self.bus.names.subject.clone(), headers, payload.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        self.ack_latency.observe(started.elapsed().as_secs_f64());
        match acked {
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) => Err(PublishError(e)),
            Err(_) => Err(PublishError(format!(
                "no acknowledgement within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}
