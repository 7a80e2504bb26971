//! `StoreError`: the one error of the store. Model files, checkpoints and WAL segments fail
//! the same few ways (I/O, a damaged format, a shape that disagrees, parameters the engine
//! refuses), and each variant names the file, so a caller reports it without more context.

use std::io;
use std::path::PathBuf;

use crate::ff::FfError;

/// Why a model file, a checkpoint or a WAL segment could not be saved or loaded. Every variant
/// names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file (or its directory) could not be opened, read, written, synced or renamed; a
    /// missing file is `source.kind() == NotFound`.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The bytes are not what the file should hold: not safetensors, truncated, no or foreign
    /// metadata, a config that is not valid JSON, a missing or unexpected tensor, a dtype other
    /// than F32, a WAL segment header that is not one.
    #[error("{}: not a valid ffd model file: {reason}", .path.display())]
    Format { path: PathBuf, reason: String },
    /// A tensor's shape disagrees with the network config stored beside it.
    #[error(
        "{}: tensor `{tensor}` has shape {got:?}, but the network config needs {expected:?}",
        .path.display()
    )]
    Shape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// The stored configs or parameters are refused by the engine (e.g. `classes: 1`).
    #[error("{}: stored model is invalid: {source}", .path.display())]
    Model {
        path: PathBuf,
        #[source]
        source: FfError,
    },
}
