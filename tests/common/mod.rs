//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ffd::data::idx::{load_mnist, Mnist};

/// The small MNIST subset committed under `tests/data/mnist-small` (3 000 train, 1 000 test).
pub fn mnist_small() -> Mnist {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-small");
    load_mnist(&dir).expect("the committed MNIST subset loads")
}
