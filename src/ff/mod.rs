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
//! let scores = trainer.model().classify(&[1.0, 0.0, 1.0, 0.0], Classifier::Goodness).unwrap();
//! assert_eq!(scores.probabilities.len(), 2);
//! ```
//!
//! Layout: `kernel` (dot products, row updates), `goodness` (`G`, `p`, loss), `layer` (one FF
//! layer and its local update), `optimiser` (momentum, decay, peer normalisation, lr schedule),
//! `network` (`Model`, label embedding, `Workspace`), `classify` (goodness and softmax
//! classification), `negatives`, `replay`, `schedule`, `trainer`, `guard` (refuses an update
//! that could make a parameter non-finite), `state` (a trainer's resumable state).

pub mod classify;
pub mod error;
pub mod goodness;
mod guard;
pub mod kernel;
pub mod layer;
pub mod negatives;
pub mod network;
pub mod optimiser;
pub mod replay;
pub mod schedule;
pub mod state;
pub mod trainer;

pub use classify::{Classifier, Scores, SoftmaxHead};
pub use error::FfError;
pub use goodness::{Goodness, Polarity};
pub use layer::Layer;
pub use negatives::NegativeStrategy;
pub use network::{LabelPlacement, Model, NetworkConfig, Workspace};
pub use optimiser::{LrSchedule, OptimiserConfig};
pub use replay::ReplayBuffer;
pub use schedule::{ScheduleConfig, ScheduleMode, SleepScheduler};
pub use state::{RngPosition, TrainerState};
pub use trainer::{LayerStats, LearnOutcome, SleepReport, TrainConfig, TrainStats, Trainer};
