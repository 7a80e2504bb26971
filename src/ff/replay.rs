//! `ReplayBuffer`: a bounded ring of recent positive samples. The sleep phase builds its
//! negatives from it; hybrid negatives draw their second source from it. Storage is allocated
//! once; pushing copies into it (docs/algorithm.md §6).

/// A fixed-capacity ring of `(features, label)` pairs; the oldest entry is overwritten.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayBuffer {
    dim: usize,
    capacity: usize,
    features: Vec<f32>,
    labels: Vec<usize>,
    /// Index of the slot the next push writes.
    head: usize,
    len: usize,
}

impl ReplayBuffer {
    /// An empty buffer for `capacity` samples of `dim` features.
    pub fn new(dim: usize, capacity: usize) -> Self {
        Self {
            dim,
            capacity,
            features: vec![0.0; dim * capacity],
            labels: vec![0; capacity],
            head: 0,
            len: 0,
        }
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of samples held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a sample, evicting the oldest when full. A zero-capacity buffer keeps nothing.
    pub fn push(&mut self, features: &[f32], label: usize) {
        if self.capacity == 0 {
            return;
        }
        debug_assert_eq!(features.len(), self.dim);
        let at = self.head;
        self.features[at * self.dim..(at + 1) * self.dim].copy_from_slice(features);
        self.labels[at] = label;
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// The `i`-th most recent sample counting back from the newest (`0` is the newest).
    /// `None` past the number held.
    pub fn recent(&self, i: usize) -> Option<(&[f32], usize)> {
        if i >= self.len {
            return None;
        }
        let at = (self.head + self.capacity - 1 - i) % self.capacity;
        Some((
            &self.features[at * self.dim..(at + 1) * self.dim],
            self.labels[at],
        ))
    }

    /// Removes every sample.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Samples oldest first, as `(features, label)`.
    pub fn iter(&self) -> impl Iterator<Item = (&[f32], usize)> + '_ {
        (0..self.len).rev().filter_map(move |i| self.recent(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_up_to_capacity() {
        let mut b = ReplayBuffer::new(2, 3);
        for i in 0..5 {
            b.push(&[i as f32, -(i as f32)], i);
        }
        assert_eq!(b.len(), 3);
        assert_eq!(b.recent(0), Some((&[4.0, -4.0][..], 4)));
        assert_eq!(b.recent(2).map(|r| r.1), Some(2));
        assert_eq!(b.recent(3), None);
        let labels: Vec<usize> = b.iter().map(|(_, l)| l).collect();
        assert_eq!(labels, vec![2, 3, 4]);
    }
}
