//! `RawTensor`: a tensor as little-endian bytes with its dtype and shape, what model files and
//! checkpoints hand to `safetensors::serialize`.

use std::borrow::Cow;

use ndarray::{Array1, Array2};
use safetensors::{Dtype, View};

/// A tensor as little-endian bytes, ready for `safetensors::serialize`.
pub(crate) struct RawTensor {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: Vec<u8>,
}

impl RawTensor {
    pub(crate) fn f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self::f32_iter(shape, values.iter())
    }

    pub(crate) fn f32_iter<'a>(
        shape: Vec<usize>,
        values: impl ExactSizeIterator<Item = &'a f32>,
    ) -> Self {
        // Sized up front and filled in place: a collect over `flat_map` cannot know the length
        // and regrows its buffer, which dominated the time of a large checkpoint.
        let mut bytes = vec![0u8; 4 * values.len()];
        for (out, v) in bytes.chunks_exact_mut(4).zip(values) {
            out.copy_from_slice(&v.to_le_bytes());
        }
        Self {
            dtype: Dtype::F32,
            shape,
            bytes,
        }
    }

    /// `[rows, cols]`, rows one after another whatever the array's memory layout.
    pub(crate) fn matrix(a: &Array2<f32>) -> Self {
        Self::f32_iter(a.shape().to_vec(), a.iter())
    }

    pub(crate) fn vector(a: &Array1<f32>) -> Self {
        Self::f32_iter(vec![a.len()], a.iter())
    }

    pub(crate) fn i64(values: &[usize]) -> Self {
        Self {
            dtype: Dtype::I64,
            shape: vec![values.len()],
            bytes: values
                .iter()
                .flat_map(|&v| (v as i64).to_le_bytes())
                .collect(),
        }
    }
}

impl View for RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }

    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}
