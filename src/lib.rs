//! ffd: a streaming Forward-Forward learning service.
//!
//! # Layout
//! - [`ff`]: the engine. Pure and synchronous (ndarray, rand, serde only): layers that learn from
//!   their own goodness, the optimiser, negatives, classification, the wake/sleep schedule and
//!   the `Trainer` that applies it. A library user can train with it directly.
//! - [`data`]: MNIST IDX files, gzipped or raw.
//! - [`store`]: model files and checkpoints (safetensors, PyTorch `state_dict` names), the
//!   write-ahead log.
//! - [`eval`]: offline error rate of a model on a dataset, and how trustworthy its probabilities
//!   are (accuracy, ECE, NLL, Brier, reliability bins).
//! - [`service`]: the HTTP service (`ffd serve`): config, learner thread, learn queue, snapshots,
//!   metrics, handlers. Everything async lives here.
//! - [`cli`]: the `ffd` subcommands.
//!
//! Dependencies point down: `cli → service → store → ff` and `cli → data, eval → ff`; `ff`
//! imports nothing else from the crate.

#[cfg(feature = "cli")]
pub mod cli;
pub mod data;
pub mod eval;
pub mod ff;
pub mod service;
pub mod store;
