//! Persistence: a trained model on disk (`model_file`, safetensors), the learner's checkpoints
//! (`checkpoint`) and the write-ahead log of accepted samples (`wal`). Depends on `ff` only;
//! every failure is a `StoreError` that names the file, and no file, however damaged, makes it panic.

pub mod checkpoint;
mod error;
pub mod model_file;
mod tensor;
pub mod wal;

pub use error::StoreError;

use std::path::{Path, PathBuf};
use std::{fs, io};

/// Files in `dir` named `{prefix}{number}{suffix}`, with their numbers, in no particular order;
/// other names are ignored. A missing directory has none. Checkpoints and WAL segments are both
/// named by a sequence number this way.
pub(crate) fn numbered_files(
    dir: &Path,
    prefix: &str,
    suffix: &str,
) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number {
            found.push((number, entry.path()));
        }
    }
    Ok(found)
}
