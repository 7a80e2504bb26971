//! The Forward-Forward engine: pure, synchronous, no I/O. Depends on ndarray, rand and serde
//! only, so a library user can train with it directly:
//!
//! ```
//! use ffd::ff::{Model, NetworkConfig, TrainConfig, Trainer, Classifier};
//! use rand::{rngs::StdRng, SeedableRng};
//!
//! let net = NetworkConfig { inputs: 4, classes: 2, hidden: vec![16, 16], ..Default::default() };
//! let model = Model::new(net, &mut StdRng::seed_from_u64(0)).unwrap();
//! let mut trainer = Trainer::new(model, TrainConfig::default(), 0).unwrap();
//! for i in 0..200 {
//!     let label = i % 2;
//!     let x = if label == 0 { [1.0, 0.0, 1.0, 0.0] } else { [0.0, 1.0, 0.0, 1.0] };
//!     let outcome = trainer.learn(&x, label, false).unwrap();
//!     if outcome.sleep_due { trainer.sleep(); }
//! }
//! trainer.settle(); // apply the last sample's update before reading the weights
//! let scores = trainer.model().classify(&[1.0, 0.0, 1.0, 0.0], Classifier::Goodness).unwrap();
//! assert_eq!(scores.probabilities.len(), 2);
//! ```
//!
//! Layout: `kernel` (dot products, row updates), `matmul` (matrix products for batches),
//! `batch` (the batched forward pass and its `BatchWorkspace`), `goodness` (`G`, `p`, loss), `layer` (one FF
//! layer and its local update), `optimiser` (momentum, decay, peer normalisation, lr schedule),
//! `model` (`Model`, label embedding, `Workspace`), `classify` (goodness and softmax
//! classification), `negatives`, `replay`, `schedule`, `trainer` (the `Trainer` and its
//! `TrainConfig`), `average` (the weight average that is evaluated and served), `calibration`
//! (the temperature of the reported probabilities and its online fit), `drift` (Page–Hinkley
//! on the prequential errors), `guard` (refuses
//! an update that could make a parameter non-finite), `state` (a trainer's resumable state),
//! `short_float` (prints `f32` config values as written), `crew` (the helper threads
//! that per-sample learning on several threads splits each layer over).
//!
//! # One name per parameter
//! The config structs (`NetworkConfig`, `TrainConfig` with its flattened `OptimiserConfig`,
//! `AverageConfig`) are the only declaration of each hyper-parameter: serde reads them as the
//! `[network]`, `[train]` and `[average]` sections of `ffd serve`'s configuration (and its
//! `FFD_SECTION__KEY` variables), and clap turns the same fields into `ffd train`'s flags
//! (`--key`, `_` → `-`); each default is the struct's `Default`. The clap derives sit behind
//! `cfg_attr(feature = "cli", ...)`: the `cli` feature (on by default) builds the command line,
//! and without it the engine compiles with ndarray, rand and serde only.

pub mod average;
pub mod batch;
pub mod calibration;
pub mod classify;
mod crew;
pub mod drift;
pub mod error;
pub mod goodness;
mod guard;
pub mod kernel;
pub mod layer;
pub mod matmul;
pub mod model;
pub mod negatives;
pub mod optimiser;
pub mod replay;
pub mod schedule;
pub mod short_float;
pub mod state;
pub mod trainer;

pub use average::{AverageConfig, WeightAverage};
pub use batch::BatchWorkspace;
pub use calibration::{Calibration, TemperatureFit};
pub use classify::{Classifier, Scores, SoftmaxHead};
pub use drift::{DriftConfig, PageHinkley};
pub use error::FfError;
pub use goodness::{Goodness, Polarity};
pub use layer::Layer;
pub use model::{LabelPlacement, Model, NetworkConfig, Workspace};
pub use negatives::NegativeStrategy;
pub use optimiser::{Boost, LrSchedule, OptimiserConfig};
pub use replay::ReplayBuffer;
pub use schedule::{ScheduleMode, SleepMethod, SleepScheduler};
pub use state::{RngPosition, SlowState, TrainerState};
pub use trainer::{LayerStats, LearnOutcome, SleepReport, TrainConfig, TrainStats, Trainer};
