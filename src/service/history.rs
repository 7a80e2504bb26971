//! `History`: what the status page plots — a bounded ring of [`HistoryPoint`]s, one per
//! `status.history_interval_ms`, sampled by a tokio task ([`record`]) from the learner's
//! counters and the metrics. The learner thread never sees it, so recording costs learning nothing; the ring
//! never grows past `status.history_points` (the oldest point goes first).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::learner::LearnerProgress;
use crate::service::metrics::Metrics;
use crate::service::queue::LearnQueue;
use crate::service::shutdown::ShutdownNotice;
use crate::service::snapshot::Snapshots;

/// The learner at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Unix time, seconds.
    #[schema(example = 1_764_241_200.5)]
    pub time: f64,
    /// Wake samples learned so far.
    pub samples_learned: u64,
    /// Version of the snapshot `/classify` uses.
    pub model_version: u64,
    /// `wake` or `sleep`, at this instant.
    #[schema(example = "wake")]
    pub phase: &'static str,
    /// Fraction (0 to 1) of the interval ending at this point that the learner spent asleep,
    /// from the duration of its completed sleep phases (`ffd_sleep_duration_seconds`). A sleep
    /// is counted when it ends; one longer than an interval fills the points before it.
    #[schema(example = 0.25)]
    pub asleep: f64,
    /// Sleep phases completed.
    pub sleep_cycles: u64,
    /// Samples waiting in the learn queue.
    pub queue_depth: usize,
    /// Prequential (test-then-train) accuracy over the last `learner.prequential_window`
    /// samples; `null` before the first sample.
    #[schema(example = 0.93)]
    pub accuracy_rolling: Option<f64>,
    /// Prequential accuracy over every sample since the start; `null` before the first.
    #[schema(example = 0.88)]
    pub accuracy_cumulative: Option<f64>,
    /// Mean goodness of each hidden layer on recent positive data (`null` until measured).
    pub goodness_positive: Vec<Option<f64>>,
    /// Mean goodness of each hidden layer on recent negative data (`null` until measured).
    pub goodness_negative: Vec<Option<f64>>,
    /// `goodness_positive − goodness_negative` per layer: how well each layer tells real data
    /// from negatives.
    pub goodness_gap: Vec<Option<f64>>,
    /// Running mean negative log-likelihood of the calibrated test-then-train predictions
    /// (`ffd_prequential_log_loss`); `null` before the first sample.
    #[schema(example = 0.25)]
    pub log_loss: Option<f64>,
    /// Temperature `T` of the probabilities `/classify` serves (`ffd_calibration_temperature`).
    #[schema(example = 52.0)]
    pub temperature: f64,
    /// Drift detections so far (`ffd_drift_detected_total`): where it steps up, drift was
    /// detected.
    pub drift_detected: u64,
}

/// The last `capacity` points, oldest first.
#[derive(Debug)]
pub struct History {
    points: Mutex<VecDeque<HistoryPoint>>,
    capacity: usize,
    interval: Duration,
}

impl History {
    /// An empty history of at most `capacity` points (at least 1), one per `interval`.
    pub fn new(capacity: usize, interval: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            points: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            interval,
        }
    }

    /// Appends `point`, dropping the oldest one when full, and spreads `asleep_seconds` (the
    /// sleep time that ended since the previous point) over its interval and, for what does
    /// not fit there, the intervals before it: a sleep phase was under way all that time.
    pub fn push(&self, point: HistoryPoint, asleep_seconds: f64) {
        let mut points = self.lock();
        if points.len() == self.capacity {
            points.pop_front();
        }
        points.push_back(point);
        let mut left = asleep_seconds.max(0.0);
        for i in (0..points.len()).rev() {
            if left <= 0.0 {
                break;
            }
            // The oldest point's interval started before the ring: assume a whole interval.
            let span = match i.checked_sub(1) {
                Some(before) => points[i].time - points[before].time,
                None => self.interval.as_secs_f64(),
            };
            if span <= 0.0 {
                continue;
            }
            let point = &mut points[i];
            let used = left.min((1.0 - point.asleep).max(0.0) * span);
            point.asleep = (point.asleep + used / span).min(1.0);
            left -= used;
        }
    }

    /// A copy of the points, oldest first.
    pub fn points(&self) -> Vec<HistoryPoint> {
        self.lock().iter().cloned().collect()
    }

    /// Most points kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Time between two points.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HistoryPoint>> {
        // A poisoned lock only means a push panicked half-way through a `VecDeque` call; the
        // ring is still a valid ring, so keep using it.
        self.points
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a point is read from.
#[derive(Debug, Clone)]
pub struct HistorySources {
    /// The learner's counters.
    pub progress: Arc<LearnerProgress>,
    /// The metrics (accuracy and per-layer goodness).
    pub metrics: Arc<Metrics>,
    /// The learn queue (depth).
    pub queue: Arc<LearnQueue>,
    /// The published model (version).
    pub snapshots: Arc<Snapshots>,
    /// Hidden layers of the network.
    pub layers: usize,
}

impl HistorySources {
    /// Seconds the learner has spent in completed sleep phases since it started.
    fn seconds_asleep(&self) -> f64 {
        self.metrics.sleep_duration.get_sample_sum()
    }

    /// The learner now (with `asleep` 0: [`History::push`] fills it in).
    pub fn read(&self) -> HistoryPoint {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let m = &self.metrics;
        let predictions = m.prequential_predictions.get();
        let (accuracy_rolling, accuracy_cumulative, log_loss) = if predictions == 0 {
            (None, None, None)
        } else {
            (
                Some(m.prequential_accuracy.get()),
                Some(m.prequential_correct.get() as f64 / predictions as f64),
                Some(m.prequential_log_loss.get()),
            )
        };
        let (goodness_positive, goodness_negative) = self.goodness();
        let goodness_gap = goodness_positive
            .iter()
            .zip(&goodness_negative)
            .map(|(p, n)| Some((*p)? - (*n)?))
            .collect();
        HistoryPoint {
            time,
            samples_learned: self.progress.samples_learned(),
            model_version: self.snapshots.load().version,
            phase: self.progress.phase().as_str(),
            asleep: 0.0,
            sleep_cycles: self.progress.sleep_cycles(),
            queue_depth: self.queue.len(),
            accuracy_rolling,
            accuracy_cumulative,
            goodness_positive,
            goodness_negative,
            goodness_gap,
            log_loss,
            temperature: m.calibration_temperature.get(),
            drift_detected: m.drift_detected.get(),
        }
    }

    /// Per-layer positive and negative goodness from `ffd_layer_goodness`. Read through
    /// `collect`, which lists only the series that exist: asking for a series by its labels
    /// would create it at 0 and show a goodness that was never measured.
    fn goodness(&self) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
        let mut positive = vec![None; self.layers];
        let mut negative = vec![None; self.layers];
        for family in self.metrics.layer_goodness.collect() {
            for metric in family.get_metric() {
                let mut layer = None;
                let mut polarity = None;
                for pair in metric.get_label() {
                    match pair.name() {
                        "layer" => layer = pair.value().parse::<usize>().ok(),
                        "polarity" => polarity = Some(pair.value()),
                        _ => {}
                    }
                }
                let value = metric.get_gauge().get_value();
                let slot = match polarity {
                    Some("positive") => &mut positive,
                    Some("negative") => &mut negative,
                    _ => continue,
                };
                if let Some(cell) = layer.and_then(|l| slot.get_mut(l)) {
                    *cell = Some(value);
                }
            }
        }
        (positive, negative)
    }
}

/// Records a point into `history` every `history.interval()` until shutdown begins.
pub async fn record(history: Arc<History>, sources: HistorySources, mut shutdown: ShutdownNotice) {
    let mut ticks = tokio::time::interval(history.interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asleep_before = sources.seconds_asleep();
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = ticks.tick() => {
                let point = sources.read();
                let asleep = sources.seconds_asleep();
                history.push(point, asleep - asleep_before);
                asleep_before = asleep;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(samples_learned: u64) -> HistoryPoint {
        HistoryPoint {
            time: samples_learned as f64,
            samples_learned,
            model_version: 0,
            phase: "wake",
            asleep: 0.0,
            sleep_cycles: 0,
            queue_depth: 0,
            accuracy_rolling: None,
            accuracy_cumulative: None,
            goodness_positive: vec![],
            goodness_negative: vec![],
            goodness_gap: vec![],
            log_loss: None,
            temperature: 1.0,
            drift_detected: 0,
        }
    }

    #[test]
    fn keeps_the_newest_points_up_to_capacity() {
        let history = History::new(3, Duration::from_secs(1));
        for n in 0..5 {
            history.push(point(n), 0.0);
        }
        let kept: Vec<u64> = history.points().iter().map(|p| p.samples_learned).collect();
        assert_eq!(kept, [2, 3, 4]);
    }

    /// Points one second apart: a quarter-second sleep shades a quarter of its interval; a
    /// 2.5 s sleep fills its own interval, then what is left of the ones before it.
    #[test]
    fn sleep_time_is_a_fraction_of_each_interval() {
        let history = History::new(10, Duration::from_secs(1));
        for n in 0..4 {
            history.push(point(n), 0.0);
        }
        history.push(point(4), 0.25);
        history.push(point(5), 2.5);
        let asleep: Vec<f64> = history.points().iter().map(|p| p.asleep).collect();
        assert_eq!(asleep, [0.0, 0.0, 0.0, 0.75, 1.0, 1.0]);

        history.push(point(6), 0.0);
        history.push(point(7), 2.5);
        let asleep: Vec<f64> = history.points().iter().map(|p| p.asleep).collect();
        assert_eq!(asleep, [0.0, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0]);
    }
}
