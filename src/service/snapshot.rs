//! `Snapshot`: an immutable copy of the model that readers classify with, and `Snapshots`, the
//! cell the learner publishes it through (`arc-swap`). Readers never wait for the learner and
//! keep answering while it learns or sleeps; publishing is one pointer swap.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ff::Model;

/// The model as of one publication.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// A copy of the learner's model.
    pub model: Model,
    /// 0 for the starting model, then +1 per publication.
    pub version: u64,
    /// Wake samples the learner had learned when this copy was taken.
    pub samples_learned: u64,
}

/// The currently published snapshot.
#[derive(Debug)]
pub struct Snapshots {
    current: ArcSwap<Snapshot>,
}

impl Snapshots {
    /// A cell holding `first`.
    pub fn new(first: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(first),
        }
    }

    /// The current snapshot (lock-free; the caller keeps its copy as long as it likes).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the current snapshot; readers holding the old one keep it until they drop it.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
