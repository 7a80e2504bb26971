//! The batched forward pass: many (sample, label) rows through every layer with matrix–matrix
//! products, each weight read once per batch instead of once per row. `BatchWorkspace` holds
//! its buffers; batched classification (`Model::classify_batch`) and mini-batch training
//! (`Trainer::learn_batch`) both run on it.
//!
//! The arithmetic is the per-sample pass's (`model::forward_rows`), rearranged: the first
//! layer's `W·u` is one GEMM over the samples, each label adds its column (docs/algorithm.md
//! §3); the layers above are one GEMM over all rows. Only summation order differs, so results
//! agree with the per-sample path to rounding (tested in `classify`).

use crate::ff::goodness::Goodness;
use crate::ff::kernel;
use crate::ff::matmul::{gemm, Op};
use crate::ff::model::{LabelInput, LabelPlacement, Model};

/// Scratch memory for batched passes. Buffers grow to the largest batch seen and are reused;
/// nothing is allocated for a batch no larger than an earlier one.
#[derive(Debug, Clone, Default)]
pub struct BatchWorkspace {
    /// Threads each matrix product may use.
    pub(crate) threads: usize,
    /// Samples in the current batch.
    pub(crate) samples: usize,
    /// Features with the label slots zeroed, `[samples, input_width]`.
    pub(crate) u: Vec<f32>,
    /// `Σ u²` per sample.
    pub(crate) u_sq: Vec<f32>,
    /// First layer's shared product `W₀·u`, `[samples, hidden[0]]`.
    pub(crate) shared: Vec<f32>,
    /// Each label's contribution to the first layer, `s·W₀[:, off+k]`, `[classes + 1, hidden[0]]`
    /// (the last row is the neutral label's).
    pub(crate) label_cols: Vec<f32>,
    /// What each row is: its sample and label.
    pub(crate) rows: Vec<(usize, LabelInput)>,
    /// RMS divisor of each row's first-layer input.
    pub(crate) row_rms: Vec<f32>,
    /// Post-ReLU activity per layer, `[rows, width]`.
    pub(crate) h: Vec<Vec<f32>>,
    /// RMS-normalised activity per layer, `[rows, width]`.
    pub(crate) h_norm: Vec<Vec<f32>>,
    /// Goodness per layer, `[rows]`.
    pub(crate) goodness: Vec<Vec<f32>>,
    /// One row's softmax-head input.
    pub(crate) head_in: Vec<f32>,
}

impl BatchWorkspace {
    /// An empty workspace whose matrix products use `threads` threads (at least one).
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            ..Default::default()
        }
    }
}

/// Grows `v` to at least `len` values (never shrinks, so a smaller batch allocates nothing).
fn fit(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

impl Model {
    /// Runs `samples` feature vectors (`[samples, inputs]` row-major in `features`) through
    /// every layer, once per entry of `ws.rows` (filled by the caller: `(sample, label)`).
    /// Afterwards `ws.h`, `ws.h_norm` and `ws.goodness` hold every row's activity. Unchecked:
    /// the caller has validated features and labels.
    pub(crate) fn forward_batch(&self, ws: &mut BatchWorkspace, features: &[f32], samples: usize) {
        let cfg = &self.config;
        let (d, c, s) = (cfg.inputs, cfg.classes, cfg.label_strength);
        let (n0, off, m0) = (cfg.input_width(), cfg.label_offset(), cfg.hidden[0]);
        debug_assert_eq!(features.len(), samples * d);
        let rows = ws.rows.len();
        let threads = ws.threads.max(1);
        ws.samples = samples;
        ws.h.resize(cfg.hidden.len(), Vec::new());
        ws.h_norm.resize(cfg.hidden.len(), Vec::new());
        ws.goodness.resize(cfg.hidden.len(), Vec::new());

        // The shared input u (label slots zeroed) and its squared norm, per sample.
        fit(&mut ws.u, samples * n0);
        fit(&mut ws.u_sq, samples);
        for (b, x) in features.chunks_exact(d).enumerate() {
            let u = &mut ws.u[b * n0..(b + 1) * n0];
            match cfg.label_placement {
                LabelPlacement::Append => {
                    u[..d].copy_from_slice(x);
                    u[off..off + c].fill(0.0);
                }
                LabelPlacement::Overwrite => {
                    u.copy_from_slice(x);
                    u[..c].fill(0.0);
                }
            }
            ws.u_sq[b] = kernel::dot(u, u);
        }

        // Layer 1: W₀·u for every sample in one product, then per row the label's column.
        let layer0 = &self.layers[0];
        let w0 = layer0
            .weight
            .as_slice()
            .expect("layer weights are kept in standard layout");
        fit(&mut ws.shared, samples * m0);
        gemm(
            (samples, m0, n0),
            1.0,
            &ws.u[..samples * n0],
            Op::N,
            w0,
            Op::T,
            0.0,
            &mut ws.shared[..samples * m0],
            threads,
        );
        fit(&mut ws.label_cols, (c + 1) * m0);
        for j in 0..m0 {
            let row = &w0[j * n0..(j + 1) * n0];
            for k in 0..c {
                ws.label_cols[k * m0 + j] = s * row[off + k];
            }
            ws.label_cols[c * m0 + j] = (s / c as f32) * row[off..off + c].iter().sum::<f32>();
        }
        fit(&mut ws.row_rms, rows);
        fit(&mut ws.h[0], rows * m0);
        for (r, &(b, label)) in ws.rows.iter().enumerate() {
            let (col, label_sq) = match label {
                LabelInput::Class(k) => (k, s * s),
                LabelInput::Neutral => (c, s * s / c as f32),
            };
            let rms = kernel::rms(ws.u_sq[b] + label_sq, n0, cfg.eps);
            ws.row_rms[r] = rms;
            let shared = &ws.shared[b * m0..(b + 1) * m0];
            let lab = &ws.label_cols[col * m0..(col + 1) * m0];
            let h = &mut ws.h[0][r * m0..(r + 1) * m0];
            for (((h, &sh), &la), &bias) in h.iter_mut().zip(shared).zip(lab).zip(&layer0.bias) {
                *h = ((sh + la) / rms + bias).max(0.0);
            }
        }
        finish_layers(ws, 0, rows, m0, cfg.eps);

        // Layers 2..: one product over every row.
        for l in 1..cfg.hidden.len() {
            let (n, m) = (cfg.hidden[l - 1], cfg.hidden[l]);
            let layer = &self.layers[l];
            let w = layer
                .weight
                .as_slice()
                .expect("layer weights are kept in standard layout");
            fit(&mut ws.h[l], rows * m);
            gemm(
                (rows, m, n),
                1.0,
                &ws.h_norm[l - 1][..rows * n],
                Op::N,
                w,
                Op::T,
                0.0,
                &mut ws.h[l][..rows * m],
                threads,
            );
            for h in ws.h[l][..rows * m].chunks_exact_mut(m) {
                for (h, &bias) in h.iter_mut().zip(&layer.bias) {
                    *h = (*h + bias).max(0.0);
                }
            }
            finish_layers(ws, l, rows, m, cfg.eps);
        }
    }
}

/// Goodness and RMS-normalised activity of layer `l` for every row (docs/algorithm.md §1.1,
/// §1.3), as the per-sample pass computes them.
fn finish_layers(ws: &mut BatchWorkspace, l: usize, rows: usize, m: usize, eps: f32) {
    fit(&mut ws.h_norm[l], rows * m);
    fit(&mut ws.goodness[l], rows);
    let h = &ws.h[l][..rows * m];
    let out = &mut ws.h_norm[l][..rows * m];
    for (r, (h, out)) in h.chunks_exact(m).zip(out.chunks_exact_mut(m)).enumerate() {
        let g = Goodness::of(h);
        ws.goodness[l][r] = g;
        let inv = 1.0 / kernel::rms(g, m, eps);
        for (o, &x) in out.iter_mut().zip(h) {
            *o = x * inv;
        }
    }
}
