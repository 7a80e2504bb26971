//! Persistence: a trained model on disk (`model_file`, safetensors). Depends on `ff` only; every
//! failure is a `StoreError` that names the file, and no file, however damaged, makes it panic.

pub mod model_file;
