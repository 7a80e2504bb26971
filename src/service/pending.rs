//! `PendingLabels`: features that `/classify` was asked to keep under an id, until
//! `/learn {"id", "label"}` supplies the label. Bounded twice — at most `capacity` entries (the
//! oldest is evicted) and each lives `ttl` — so a client that never sends labels costs nothing
//! lasting. Time is a parameter (`now`), so tests pass made-up instants.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// Longest id accepted, in characters (Unicode scalar values, as JSON Schema's `maxLength`
/// counts them): at most 1 KiB of UTF-8.
pub const MAX_ID_CHARS: usize = 256;

/// Features taken out for learning, with their insertion time (to put them back unchanged if
/// the request fails).
#[derive(Debug)]
pub struct Taken {
    /// The features.
    pub features: Vec<f32>,
    /// When `/classify` kept them.
    pub inserted: Instant,
}

/// Id → features, bounded in size and age.
#[derive(Debug)]
pub struct PendingLabels {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
    entries: IntGauge,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Insertion order for eviction. A record whose generation no longer matches the map's
    /// entry (taken or replaced since) is stale and skipped.
    order: VecDeque<(String, u64, Instant)>,
    next_generation: u64,
}

#[derive(Debug)]
struct Entry {
    features: Vec<f32>,
    inserted: Instant,
    generation: u64,
}

impl PendingLabels {
    /// An empty map for at most `capacity` entries, each living `ttl`; `entries` tracks the
    /// size.
    pub fn new(capacity: usize, ttl: Duration, entries: IntGauge) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            ttl,
            entries,
        }
    }

    /// Keeps `features` under `id` (replacing an older entry of that id), evicting expired
    /// entries and, when full, the oldest.
    pub fn insert(&self, id: String, features: Vec<f32>, now: Instant) {
        self.insert_at(id, features, now, now);
    }

    /// Puts back what [`PendingLabels::take`] returned, keeping its age.
    pub fn restore(&self, id: String, taken: Taken, now: Instant) {
        self.insert_at(id, taken.features, taken.inserted, now);
    }

    /// Removes and returns the features kept under `id`; `None` if unknown or expired.
    pub fn take(&self, id: &str, now: Instant) -> Option<Taken> {
        let mut inner = self.lock();
        let entry = inner.map.remove(id)?;
        self.entries.set(inner.map.len() as i64);
        if now.saturating_duration_since(entry.inserted) >= self.ttl {
            return None;
        }
        Some(Taken {
            features: entry.features,
            inserted: entry.inserted,
        })
    }

    /// Number of entries (some possibly expired but not yet evicted).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert_at(&self, id: String, features: Vec<f32>, inserted: Instant, now: Instant) {
        let mut inner = self.lock();
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.order.push_back((id.clone(), generation, inserted));
        inner.map.insert(
            id,
            Entry {
                features,
                inserted,
                generation,
            },
        );
        self.evict(&mut inner, now);
        self.entries.set(inner.map.len() as i64);
    }

    /// Drops expired entries from the front and the oldest while over capacity; compacts the
    /// order list when stale records pile up, so it stays within twice the capacity.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, generation, inserted)) = inner.order.front() {
            let live = inner
                .map
                .get(id)
                .is_some_and(|e| e.generation == *generation);
            let expired = now.saturating_duration_since(*inserted) >= self.ttl;
            if live && !expired && inner.map.len() <= self.capacity {
                break;
            }
            if live {
                let id = id.clone();
                inner.map.remove(&id);
            }
            inner.order.pop_front();
        }
        if inner.order.len() > 2 * self.capacity {
            let Inner { map, order, .. } = inner;
            order.retain(|(id, g, _)| map.get(id).is_some_and(|e| e.generation == *g));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent (every operation is a
        // handful of map/deque calls), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(capacity: usize, ttl_secs: u64) -> PendingLabels {
        let gauge = IntGauge::new("test_entries", "test").expect("valid name");
        PendingLabels::new(capacity, Duration::from_secs(ttl_secs), gauge)
    }

    #[test]
    fn take_returns_once_and_only_before_the_ttl() {
        let t0 = Instant::now();
        let p = map(10, 60);
        p.insert("a".into(), vec![1.0], t0);
        p.insert("b".into(), vec![2.0], t0);
        assert_eq!(p.take("a", t0).map(|t| t.features), Some(vec![1.0]));
        assert!(p.take("a", t0).is_none(), "taken once");
        assert!(
            p.take("b", t0 + Duration::from_secs(60)).is_none(),
            "expired"
        );
        assert!(p.is_empty());
    }

    #[test]
    fn full_map_evicts_the_oldest() {
        let t0 = Instant::now();
        let p = map(2, 60);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            p.insert(
                id.into(),
                vec![i as f32],
                t0 + Duration::from_secs(i as u64),
            );
        }
        assert_eq!(p.len(), 2);
        assert!(p.take("a", t0).is_none());
        assert!(p.take("c", t0).is_some());
        // Re-inserting an id refreshes it: the stale record of its first insert is skipped.
        p.insert("b".into(), vec![9.0], t0 + Duration::from_secs(5));
        p.insert("d".into(), vec![4.0], t0 + Duration::from_secs(6));
        p.insert("e".into(), vec![5.0], t0 + Duration::from_secs(7));
        assert_eq!(p.len(), 2);
        assert!(p.take("b", t0).is_none());
    }

    #[test]
    fn expired_entries_are_evicted_on_insert_and_restore_keeps_age() {
        let t0 = Instant::now();
        let p = map(100, 10);
        p.insert("old".into(), vec![0.0], t0);
        p.insert("new".into(), vec![1.0], t0 + Duration::from_secs(11));
        assert_eq!(p.len(), 1);
        let taken = p.take("new", t0 + Duration::from_secs(12)).expect("alive");
        p.restore("new".into(), taken, t0 + Duration::from_secs(12));
        assert!(
            p.take("new", t0 + Duration::from_secs(21)).is_none(),
            "age kept"
        );
    }

    #[test]
    fn order_list_stays_bounded() {
        let t0 = Instant::now();
        let p = map(4, 3600);
        for i in 0..1000 {
            let id = format!("id{i}");
            p.insert(id.clone(), vec![0.0], t0);
            p.take(&id, t0);
        }
        assert!(p.lock().order.len() <= 8);
    }
}
