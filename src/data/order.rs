//! `EpochOrder`: the order in which training samples are visited, epoch after epoch. `ffd train`
//! and `ffd replay` both use it, so the same seed gives the same stream offline and over HTTP.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// A seeded permutation of `0..n`, reshuffled at the start of every epoch.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    order: Vec<usize>,
    rng: StdRng,
    shuffle: bool,
}

impl EpochOrder {
    /// The order for `n` samples; without `shuffle`, every epoch is `0..n`.
    pub fn new(n: usize, seed: u64, shuffle: bool) -> Self {
        Self {
            order: (0..n).collect(),
            // Offset so the shuffle stream differs from the weight initialisation's.
            rng: StdRng::seed_from_u64(seed.wrapping_add(0x5eed)),
            shuffle,
        }
    }

    /// The next epoch's order.
    pub fn next_epoch(&mut self) -> &[usize] {
        if self.shuffle {
            self.order.shuffle(&mut self.rng);
        }
        &self.order
    }
}
