//! Drift events: what the learner's Page–Hinkley detector (`ff::drift`) found on the
//! prequential error stream, kept where `/v1/model` can read it. The learner writes once per
//! detection; readers copy a few numbers, so a plain mutex is enough.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct DriftEvent {
    /// Sequence number of the sample whose prediction raised the alarm.
    pub seq: u64,
    /// Wake samples learned when it was raised.
    pub samples_learned: u64,
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

/// What `/v1/model` shows under `drift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct DriftSummary {
    /// Detections since the service started (`ffd_drift_detected_total`).
    pub detected: u64,
    /// The latest detection, if any.
    pub last: Option<DriftEvent>,
}

/// The detections so far.
#[derive(Debug, Default)]
pub struct DriftLog {
    detected: AtomicU64,
    last: Mutex<Option<DriftEvent>>,
}

impl DriftLog {
    /// Records a detection at sample `seq`.
    pub(crate) fn record(&self, seq: u64, samples_learned: u64) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let event = DriftEvent {
            seq,
            samples_learned,
            unix_ms,
        };
        // A poisoned lock only means a reader panicked mid-copy; the value is still whole.
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(event);
        self.detected.fetch_add(1, Ordering::AcqRel);
    }

    /// The count and the latest detection.
    pub fn summary(&self) -> DriftSummary {
        DriftSummary {
            detected: self.detected.load(Ordering::Acquire),
            last: *self.last.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_count_and_latest() {
        let log = DriftLog::default();
        assert_eq!(log.summary().detected, 0);
        assert_eq!(log.summary().last, None);
        log.record(10, 9);
        log.record(42, 40);
        let s = log.summary();
        assert_eq!(s.detected, 2);
        assert_eq!(s.last.map(|e| (e.seq, e.samples_learned)), Some((42, 40)));
    }
}
