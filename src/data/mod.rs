//! Data on disk: readers that turn dataset files into in-memory samples.
//!
//! `idx` reads MNIST in the IDX format (gzipped or raw) into a [`idx::Dataset`]. Readers check
//! every size against the file before allocating and report problems as `IdxError`, never panic.
//! `augment` translates images at random for `ffd train --augment-shift`.

pub mod augment;
pub mod idx;
pub mod order;
