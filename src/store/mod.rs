//! Persistence: a trained model on disk (`model_file`, safetensors), the learner's checkpoints
//! (`checkpoint`) and the write-ahead log of accepted samples (`wal`). Depends on `ff` only;
//! every failure is an error that names the file, and no file, however damaged, makes it panic.

pub mod checkpoint;
pub mod model_file;
pub mod wal;
