//! `FfError`: everything the engine can refuse. Shapes are checked once at the public entry
//! points; past them the numeric loops run unchecked (with `debug_assert!`).

use thiserror::Error;

/// An error from the Forward-Forward engine.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FfError {
    /// A vector or matrix had the wrong length.
    #[error("{what}: expected length {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A label outside `0..classes`.
    #[error("label {label} is out of range for {classes} classes")]
    Label { label: usize, classes: usize },
    /// A feature value that is NaN or infinite.
    #[error("feature {index} is not a finite number")]
    NonFinite { index: usize },
    /// A hyper-parameter outside its valid range.
    #[error("invalid configuration: {key}: {reason}")]
    Config { key: &'static str, reason: String },
}

impl FfError {
    /// `Ok` if `got == expected`, else a [`FfError::Shape`] naming `what`.
    pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), Self> {
        if expected == got {
            Ok(())
        } else {
            Err(Self::Shape {
                what,
                expected,
                got,
            })
        }
    }
}
