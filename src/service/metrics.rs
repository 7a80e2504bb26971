//! `Metrics`: every `ffd_*` Prometheus metric, registered in a registry owned by one service
//! (never the global default, so tests can run servers side by side). Names and label values
//! live here and nowhere else; handles are cheap clones of atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::ff::{LayerStats, TrainStats};

/// Why samples were refused (`ffd_rejected_samples_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Wrong number of features.
    Features,
    /// A NaN or infinite feature.
    NonFinite,
    /// A label outside `0..classes`.
    Label,
    /// A delayed label for an id that is unknown or expired.
    UnknownId,
    /// An id that is empty or too long.
    InvalidId,
    /// The request or batch broke a size limit.
    TooLarge,
    /// The learn queue had no room.
    QueueFull,
    /// The service is shutting down.
    ShuttingDown,
    /// The learner thread is not running.
    Unavailable,
    /// A finite feature beyond `sample::MAX_ABS_FEATURE`.
    OutOfRange,
}

impl RejectReason {
    const ALL: [RejectReason; 10] = [
        Self::Features,
        Self::NonFinite,
        Self::Label,
        Self::UnknownId,
        Self::InvalidId,
        Self::TooLarge,
        Self::QueueFull,
        Self::ShuttingDown,
        Self::Unavailable,
        Self::OutOfRange,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Features => "features",
            Self::NonFinite => "non_finite",
            Self::Label => "label",
            Self::UnknownId => "unknown_id",
            Self::InvalidId => "invalid_id",
            Self::TooLarge => "too_large",
            Self::QueueFull => "queue_full",
            Self::ShuttingDown => "shutting_down",
            Self::Unavailable => "learner_unavailable",
            Self::OutOfRange => "out_of_range",
        }
    }
}

/// Why the server closed or refused a client connection
/// (`ffd_http_connections_closed_total{reason}`). Connections the client closes, or that end
/// normally, are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// The request head was not complete within `http.header_timeout_ms`.
    HeaderTimeout,
    /// A request body arrived slower than `http.min_body_bytes_per_second`.
    SlowBody,
    /// Nothing arrived: a keep-alive connection silent for `http.header_timeout_ms`, or
    /// nothing read or written for `http.idle_timeout_ms`.
    Idle,
    /// Every slot was taken: closed to make room for a new connection.
    Evicted,
    /// Refused on accept: its peer already had `http.max_connections_per_peer` open.
    PeerLimit,
    /// Refused on accept: every slot was taken by a connection in the middle of a request.
    NoSlot,
}

impl ConnectionClose {
    const ALL: [ConnectionClose; 6] = [
        Self::HeaderTimeout,
        Self::SlowBody,
        Self::Idle,
        Self::Evicted,
        Self::PeerLimit,
        Self::NoSlot,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::SlowBody => "slow_body",
            Self::Idle => "idle",
            Self::Evicted => "evicted",
            Self::PeerLimit => "peer_limit",
            Self::NoSlot => "no_slot",
        }
    }
}

/// The learner's phase (`ffd_phase`: 0 wake, 1 sleep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Learning samples as they come (positive updates).
    Wake = 0,
    /// Learning negatives from the replay buffer.
    Sleep = 1,
}

impl Phase {
    /// The name used in `/v1/model` and as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Wake => "wake",
            Phase::Sleep => "sleep",
        }
    }
}

/// Histogram buckets of `ffd_http_request_duration_seconds`: 100 µs to 10 s.
const HTTP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Histogram buckets of `ffd_sleep_duration_seconds`: 100 µs to 10 s.
const SLEEP_BUCKETS: [f64; 11] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0, 10.0,
];

/// Every metric of one service.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `ffd_samples_learned_total{phase}`: wake samples learned, and replayed samples learned
    /// as negatives while asleep.
    pub samples_learned: IntCounterVec,
    /// `ffd_samples_accepted_total`: samples queued for the learner.
    pub samples_accepted: IntCounter,
    /// `ffd_learn_queue_depth`.
    pub queue_depth: IntGauge,
    /// `ffd_learn_queue_capacity`.
    pub queue_capacity: IntGauge,
    /// `ffd_prequential_predictions_total`.
    pub prequential_predictions: IntCounter,
    /// `ffd_prequential_correct_total`.
    pub prequential_correct: IntCounter,
    /// `ffd_prequential_accuracy`: over the last `learner.prequential_window` samples.
    pub prequential_accuracy: prometheus::Gauge,
    /// `ffd_prequential_log_loss`: running mean NLL of the calibrated prequential predictions.
    pub prequential_log_loss: prometheus::Gauge,
    /// `ffd_calibration_temperature`: `T` of the published probabilities `softmax(scores / T)`.
    pub calibration_temperature: prometheus::Gauge,
    /// `ffd_drift_detected_total`: Page–Hinkley alarms on the prequential errors.
    pub drift_detected: IntCounter,
    /// `ffd_layer_goodness{layer,polarity}`.
    pub layer_goodness: prometheus::GaugeVec,
    /// `ffd_layer_loss{layer}`.
    pub layer_loss: prometheus::GaugeVec,
    /// `ffd_phase`.
    pub phase: IntGauge,
    /// `ffd_sleep_cycles_total`.
    pub sleep_cycles: IntCounter,
    /// `ffd_sleep_duration_seconds`.
    pub sleep_duration: Histogram,
    /// `ffd_model_version`.
    pub model_version: IntGauge,
    /// `ffd_rejected_samples_total{reason}`.
    pub rejected_samples: IntCounterVec,
    /// `ffd_pending_entries`: features waiting for a delayed label.
    pub pending_entries: IntGauge,
    /// `ffd_http_requests_total{route,status}`.
    pub http_requests: IntCounterVec,
    /// `ffd_http_request_duration_seconds{route}`.
    pub http_duration: HistogramVec,
    /// `ffd_http_shed_total`: requests answered 503 at once because
    /// `http.max_concurrent_requests` were in progress.
    pub http_shed: IntCounter,
    /// `ffd_http_connections`: open client connections (at most `http.max_connections`).
    pub http_connections: IntGauge,
    /// `ffd_http_connections_closed_total{reason}`: connections the server closed or refused,
    /// by [`ConnectionClose`].
    pub http_connections_closed: IntCounterVec,
    /// `ffd_learner_nonfinite_total`: updates refused because they would have made a weight,
    /// an optimiser state or the softmax head non-finite.
    pub learner_nonfinite: IntCounter,
    /// Checkpoint, WAL and recovery metrics.
    pub durability: DurabilityMetrics,
    /// Cluster backend metrics (at rest in local mode).
    pub cluster: ClusterMetrics,
}

impl Metrics {
    /// Registers every metric in a fresh registry. Fails only if two metrics share a name (a
    /// bug caught by the tests).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let float_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = prometheus::GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };

        let samples_learned = counter_vec(
            "ffd_samples_learned_total",
            "Samples learned: wake (positive, or both updates when interleaved) and sleep (replayed negatives).",
            &["phase"],
        )?;
        let rejected_samples = counter_vec(
            "ffd_rejected_samples_total",
            "Samples refused before queueing, by reason.",
            &["reason"],
        )?;
        let http_connections_closed = counter_vec(
            "ffd_http_connections_closed_total",
            "Client connections the server closed or refused, by reason.",
            &["reason"],
        )?;
        let layer_goodness = float_gauge_vec(
            "ffd_layer_goodness",
            "Mean goodness of each layer on recent positive and negative data.",
            &["layer", "polarity"],
        )?;
        let layer_loss = float_gauge_vec(
            "ffd_layer_loss",
            "Mean FF loss per update of each layer on recent data.",
            &["layer"],
        )?;
        let prequential_accuracy = prometheus::Gauge::new(
            "ffd_prequential_accuracy",
            "Test-then-train accuracy over the last prequential_window samples.",
        )?;
        registry.register(Box::new(prequential_accuracy.clone()))?;
        let prequential_log_loss = prometheus::Gauge::new(
            "ffd_prequential_log_loss",
            "Test-then-train log-loss (nats per sample) of the calibrated probabilities, running mean over about the last calibration_window samples.",
        )?;
        registry.register(Box::new(prequential_log_loss.clone()))?;
        let calibration_temperature = prometheus::Gauge::new(
            "ffd_calibration_temperature",
            "Temperature T of the learner's probabilities softmax(scores / T), fitted online to the prequential predictions.",
        )?;
        calibration_temperature.set(1.0);
        registry.register(Box::new(calibration_temperature.clone()))?;
        let sleep_duration = Histogram::with_opts(
            HistogramOpts::new("ffd_sleep_duration_seconds", "Duration of sleep phases.")
                .buckets(SLEEP_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(sleep_duration.clone()))?;
        let http_requests = counter_vec(
            "ffd_http_requests_total",
            "HTTP requests answered, by route and status code.",
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "ffd_http_request_duration_seconds",
                "HTTP request duration, by route.",
            )
            .buckets(HTTP_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "ffd_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let metrics = Self {
            samples_learned,
            samples_accepted: counter(
                "ffd_samples_accepted_total",
                "Samples queued for the learner.",
            )?,
            queue_depth: gauge(
                "ffd_learn_queue_depth",
                "Samples waiting in the learn queue.",
            )?,
            queue_capacity: gauge(
                "ffd_learn_queue_capacity",
                "Samples the learn queue can hold.",
            )?,
            prequential_predictions: counter(
                "ffd_prequential_predictions_total",
                "Labelled samples classified by the current model before being learned.",
            )?,
            prequential_correct: counter(
                "ffd_prequential_correct_total",
                "Prequential predictions that matched the label.",
            )?,
            prequential_accuracy,
            prequential_log_loss,
            calibration_temperature,
            drift_detected: counter(
                "ffd_drift_detected_total",
                "Drift detected on the test-then-train errors (Page-Hinkley); each restarts the served weight average.",
            )?,
            layer_goodness,
            layer_loss,
            phase: gauge("ffd_phase", "The learner's phase: 0 wake, 1 sleep.")?,
            sleep_cycles: counter("ffd_sleep_cycles_total", "Sleep phases completed.")?,
            sleep_duration,
            model_version: gauge(
                "ffd_model_version",
                "Version of the published model snapshot.",
            )?,
            rejected_samples,
            pending_entries: gauge(
                "ffd_pending_entries",
                "Classified features kept for a delayed label.",
            )?,
            http_requests,
            http_duration,
            http_shed: counter(
                "ffd_http_shed_total",
                "Requests answered 503 at once because the server was at http.max_concurrent_requests.",
            )?,
            http_connections: gauge(
                "ffd_http_connections",
                "Open client connections.",
            )?,
            http_connections_closed,
            learner_nonfinite: counter(
                "ffd_learner_nonfinite_total",
                "Sample updates refused because they would have made the model non-finite.",
            )?,
            durability: DurabilityMetrics::register(&registry)?,
            cluster: ClusterMetrics::register(&registry)?,
            registry,
        };
        // Every series of a labelled metric exists from the start, at 0.
        for phase in [Phase::Wake, Phase::Sleep] {
            metrics.samples_learned.with_label_values(&[phase.as_str()]);
        }
        for reason in RejectReason::ALL {
            metrics
                .rejected_samples
                .with_label_values(&[reason.as_str()]);
        }
        for reason in ConnectionClose::ALL {
            metrics
                .http_connections_closed
                .with_label_values(&[reason.as_str()]);
        }
        Ok(metrics)
    }

    /// Counts `n` refused samples.
    pub fn reject(&self, reason: RejectReason, n: usize) {
        self.rejected_samples
            .with_label_values(&[reason.as_str()])
            .inc_by(n as u64);
    }

    /// Sets the per-layer gauges from statistics gathered since the last call. A polarity (or
    /// a layer) that saw no data keeps its previous value, so no gauge ever shows NaN.
    pub fn observe_layers(&self, stats: &TrainStats) {
        for (l, s) in stats.layers.iter().enumerate() {
            let layer = l.to_string();
            let LayerStats {
                positive_count,
                negative_count,
                ..
            } = *s;
            if positive_count > 0 {
                self.layer_goodness
                    .with_label_values(&[layer.as_str(), "positive"])
                    .set(s.positive_goodness());
            }
            if negative_count > 0 {
                self.layer_goodness
                    .with_label_values(&[layer.as_str(), "negative"])
                    .set(s.negative_goodness());
            }
            if positive_count + negative_count > 0 {
                self.layer_loss
                    .with_label_values(&[layer.as_str()])
                    .set(s.loss());
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding text into a Vec fails only on an invalid metric family, which `new`
        // has ruled out; an empty scrape is the answer if it ever happens.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            buf.clear();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Histogram buckets of checkpoint writes and WAL syncs: 100 µs to 10 s.
const STORAGE_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0, 10.0,
];

/// Histogram buckets of JetStream publish acknowledgements: 250 µs to 5 s.
const ACK_BUCKETS: [f64; 12] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// Cluster backend metrics (docs/cluster.md); registered in every mode, at 0 in local mode.
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// `ffd_cluster_role`: 0 replica, 1 starting (holds the lease, loading), 2 learner.
    pub role: IntGauge,
    /// `ffd_cluster_failovers_total`: times this node took the lease over.
    pub failovers: IntCounter,
    /// `ffd_cluster_consumer_lag`: stream messages not yet delivered to this node's learner.
    pub consumer_lag: IntGauge,
    /// `ffd_cluster_publish_ack_seconds`: publishing one `/learn` request until acknowledged.
    pub publish_ack: Histogram,
    /// `ffd_cluster_snapshot_age_seconds`: age of the snapshot this node serves.
    pub snapshot_age: prometheus::Gauge,
    /// `ffd_cluster_bad_messages_total`: stream messages the learner skipped as unreadable.
    pub bad_messages: IntCounter,
    /// `ffd_cluster_fenced_writes_total`: lease or pointer writes refused because another
    /// node had taken the lease over.
    pub fenced_writes: IntCounter,
}

impl ClusterMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let publish_ack = Histogram::with_opts(
            HistogramOpts::new(
                "ffd_cluster_publish_ack_seconds",
                "Time from publishing a /learn request to JetStream's acknowledgement.",
            )
            .buckets(ACK_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(publish_ack.clone()))?;
        let snapshot_age = prometheus::Gauge::new(
            "ffd_cluster_snapshot_age_seconds",
            "Seconds since the learner took the snapshot this node serves.",
        )?;
        registry.register(Box::new(snapshot_age.clone()))?;
        Ok(Self {
            role: gauge(
                "ffd_cluster_role",
                "This node's role: 0 replica, 1 starting (holds the lease, loading), 2 learner.",
            )?,
            failovers: counter(
                "ffd_cluster_failovers_total",
                "Times this node took the learner's lease over.",
            )?,
            consumer_lag: gauge(
                "ffd_cluster_consumer_lag",
                "Stream messages not yet delivered to this node's learner.",
            )?,
            publish_ack,
            snapshot_age,
            bad_messages: counter(
                "ffd_cluster_bad_messages_total",
                "Stream messages the learner skipped because they could not be read.",
            )?,
            fenced_writes: counter(
                "ffd_cluster_fenced_writes_total",
                "Lease or checkpoint-pointer writes refused because another node had taken the lease over.",
            )?,
        })
    }
}

/// Checkpoint, write-ahead log and recovery metrics.
#[derive(Debug, Clone)]
pub struct DurabilityMetrics {
    /// `ffd_checkpoints_total`: checkpoints written.
    pub checkpoints: IntCounter,
    /// `ffd_checkpoint_failures_total`: checkpoints that could not be written.
    pub checkpoint_failures: IntCounter,
    /// `ffd_checkpoint_duration_seconds`: serialise, write, sync and rename one checkpoint.
    pub checkpoint_duration: Histogram,
    /// `ffd_checkpoint_last_seq`: last sample sequence number in the newest checkpoint.
    pub checkpoint_last_seq: IntGauge,
    /// `ffd_wal_bytes`: bytes of write-ahead log segments on disk.
    pub wal_bytes: IntGauge,
    /// `ffd_wal_fsync_duration_seconds`: one WAL sync (one per group of requests).
    pub wal_fsync_duration: Histogram,
    /// `ffd_recovery_replayed_samples_total`: WAL records learned at start-up.
    pub recovery_replayed: IntCounter,
    /// `ffd_wal_records_lost_total`: acknowledged WAL records lost to damage, found at start.
    pub wal_records_lost: IntCounter,
}

impl DurabilityMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str| -> Result<Histogram, prometheus::Error> {
            let h = Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(STORAGE_BUCKETS.to_vec()),
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        Ok(Self {
            checkpoints: counter("ffd_checkpoints_total", "Checkpoints written.")?,
            checkpoint_failures: counter(
                "ffd_checkpoint_failures_total",
                "Checkpoints that could not be written.",
            )?,
            checkpoint_duration: histogram(
                "ffd_checkpoint_duration_seconds",
                "Time to serialise, write, sync and rename one checkpoint.",
            )?,
            checkpoint_last_seq: gauge(
                "ffd_checkpoint_last_seq",
                "Sequence number of the last sample in the newest checkpoint.",
            )?,
            wal_bytes: gauge(
                "ffd_wal_bytes",
                "Bytes of write-ahead log segments on disk.",
            )?,
            wal_fsync_duration: histogram(
                "ffd_wal_fsync_duration_seconds",
                "Time of one write-ahead log sync (shared by every request it covers).",
            )?,
            recovery_replayed: counter(
                "ffd_recovery_replayed_samples_total",
                "Write-ahead log records learned after a restart.",
            )?,
            wal_records_lost: counter(
                "ffd_wal_records_lost_total",
                "Acknowledged write-ahead log records lost to damage (found and cut out at start).",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_metric_once() {
        let m = Metrics::new().expect("unique names");
        let text = m.render();
        for name in [
            "ffd_samples_learned_total",
            "ffd_learn_queue_depth",
            "ffd_prequential_predictions_total",
            "ffd_prequential_correct_total",
            "ffd_prequential_accuracy",
            "ffd_prequential_log_loss",
            "ffd_calibration_temperature",
            "ffd_drift_detected_total",
            "ffd_phase",
            "ffd_sleep_cycles_total",
            "ffd_sleep_duration_seconds",
            "ffd_model_version",
            "ffd_rejected_samples_total",
            "ffd_build_info",
            "ffd_http_shed_total",
            "ffd_http_connections",
            "ffd_http_connections_closed_total",
            "ffd_learner_nonfinite_total",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }

    #[test]
    fn layer_gauges_keep_old_values_without_data() {
        let m = Metrics::new().expect("unique names");
        let mut stats = TrainStats {
            layers: vec![LayerStats {
                positive_goodness_sum: 6.0,
                positive_count: 2,
                negative_goodness_sum: 1.0,
                negative_count: 1,
                loss_sum: 3.0,
            }],
            ..Default::default()
        };
        m.observe_layers(&stats);
        stats.layers[0] = LayerStats {
            positive_goodness_sum: 8.0,
            positive_count: 2,
            ..Default::default()
        };
        m.observe_layers(&stats);
        let g = |p: &str| m.layer_goodness.with_label_values(&["0", p]).get();
        assert_eq!(g("positive"), 4.0);
        assert_eq!(g("negative"), 1.0);
        assert_eq!(m.layer_loss.with_label_values(&["0"]).get(), 0.0);
        stats.layers[0] = LayerStats::default();
        m.observe_layers(&stats);
        assert_eq!(g("positive"), 4.0);
    }
}
