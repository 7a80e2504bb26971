//! `Model`: the stack of FF layers, the label embedding, and the softmax head; and `Workspace`,
//! the scratch memory a forward pass writes into so that no sample allocates.
//!
//! Supervised FF writes the label into the input (docs/algorithm.md §3). All one-hot labels
//! have the same norm, so the first layer's pre-activation for label `k` is
//! `(W·u + s·W[:, off+k]) / r + b` with `u` the features (label slots zeroed) and `r` one RMS
//! divisor shared by every label: one matrix-vector product serves all `C` candidate labels.

use std::sync::Mutex;

use ndarray::{Array1, Array2};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ff::calibration::Calibration;
use crate::ff::classify::SoftmaxHead;
use crate::ff::crew::Crew;
use crate::ff::error::FfError;
use crate::ff::goodness::Goodness;
use crate::ff::kernel;
use crate::ff::layer::Layer;
use crate::ff::short_float;

/// Where the one-hot label goes in the first layer's input.
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelPlacement {
    /// `C` extra inputs after the features: works for any feature vector.
    Append,
    /// Overwrites the first `C` features (the paper's MNIST setup: those pixels are black).
    Overwrite,
}

/// What is written into the label slots of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelInput {
    /// One-hot label `k` of the configured strength.
    Class(usize),
    /// Every slot `strength / C`: no label information (classification with the softmax head,
    /// hard-negative proposals, unsupervised training).
    Neutral,
}

/// The shape and fixed hyper-parameters of a network (`[network]` of `ffd serve`'s
/// configuration; the same flags in `ffd train`, except `inputs` and `classes`, which
/// `ffd train` takes from the data set).
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Number of features per sample (784 for MNIST).
    #[cfg_attr(feature = "cli", arg(skip = NetworkConfig::default().inputs))]
    pub inputs: usize,
    /// Number of classes.
    #[cfg_attr(feature = "cli", arg(skip = NetworkConfig::default().classes))]
    pub classes: usize,
    /// Hidden layer widths, from the input up (comma separated).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_delimiter = ',', default_values_t = NetworkConfig::default().hidden)
    )]
    pub hidden: Vec<usize>,
    /// Where the one-hot label goes in the input: appended after the features, or overwriting
    /// the first `classes` features.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_enum, default_value_t = NetworkConfig::default().label_placement)
    )]
    pub label_placement: LabelPlacement,
    /// Value of the "on" entry of the one-hot label.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = NetworkConfig::default().label_strength))]
    #[serde(serialize_with = "short_float::serialize")]
    pub label_strength: f32,
    /// Layer threshold θ = threshold_scale × width (1: mean squared activity 1, as in
    /// Hinton's code).
    #[cfg_attr(feature = "cli", arg(long, default_value_t = NetworkConfig::default().threshold_scale))]
    #[serde(serialize_with = "short_float::serialize")]
    pub threshold_scale: f32,
    /// Logistic temperature T of every layer's goodness.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = NetworkConfig::default().temperature))]
    #[serde(serialize_with = "short_float::serialize")]
    pub temperature: f32,
    /// ε of the RMS normalisation.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = NetworkConfig::default().eps))]
    #[serde(serialize_with = "short_float::serialize")]
    pub eps: f32,
    /// First layer (0-based) whose goodness and activity count for classification; the paper
    /// skips the first layer (1). Clamped to the last layer for shallow nets.
    #[cfg_attr(feature = "cli", arg(long, default_value_t = NetworkConfig::default().score_from_layer))]
    pub score_from_layer: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            inputs: 784,
            classes: 10,
            hidden: vec![500, 500],
            label_placement: LabelPlacement::Append,
            // Measured: 3 beats 1 by ~3 points after one MNIST epoch (BENCHMARKS.md).
            label_strength: 3.0,
            threshold_scale: 1.0,
            temperature: 1.0,
            eps: 1e-8,
            score_from_layer: 1,
        }
    }
}

impl NetworkConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), FfError> {
        let bad = |key, reason: String| Err(FfError::Config { key, reason });
        if self.inputs == 0 {
            return bad("inputs", "must be > 0".into());
        }
        if self.classes < 2 {
            return bad("classes", "must be >= 2".into());
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad(
                "hidden",
                "needs at least one layer, each of width > 0".into(),
            );
        }
        if self.label_placement == LabelPlacement::Overwrite && self.inputs < self.classes {
            return bad(
                "label_placement",
                format!(
                    "overwrite needs inputs ({}) >= classes ({})",
                    self.inputs, self.classes
                ),
            );
        }
        for (key, v) in [
            ("label_strength", self.label_strength),
            ("threshold_scale", self.threshold_scale),
            ("temperature", self.temperature),
            ("eps", self.eps),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(key, "must be a finite number > 0".into());
            }
        }
        Ok(())
    }

    /// Width of the first layer's input.
    pub fn input_width(&self) -> usize {
        match self.label_placement {
            LabelPlacement::Append => self.inputs + self.classes,
            LabelPlacement::Overwrite => self.inputs,
        }
    }

    /// Offset of the label slots in the first layer's input.
    pub fn label_offset(&self) -> usize {
        match self.label_placement {
            LabelPlacement::Append => self.inputs,
            LabelPlacement::Overwrite => 0,
        }
    }

    /// Index of the first layer used for classification.
    pub fn first_scored_layer(&self) -> usize {
        self.score_from_layer
            .min(self.hidden.len().saturating_sub(1))
    }

    /// Width of the softmax head's input: the scored layers' widths summed.
    pub fn head_inputs(&self) -> usize {
        self.hidden[self.first_scored_layer()..].iter().sum()
    }

    /// Layer widths from input to top: `[input_width, hidden...]`.
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(self.input_width())
            .chain(self.hidden.iter().copied())
            .collect()
    }
}

/// One FF layer's parameters: its `[out, in]` weight and `[out]` bias.
pub type LayerParams = (Array2<f32>, Array1<f32>);

/// A trained or training FF network: layers, the softmax head, and the temperature its
/// probabilities are computed with. Immutable to readers; only the `Trainer` mutates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub(crate) config: NetworkConfig,
    pub(crate) layers: Vec<Layer>,
    pub(crate) head: SoftmaxHead,
    #[serde(default)]
    pub(crate) calibration: Calibration,
}

impl Model {
    /// A freshly initialised network.
    pub fn new(config: NetworkConfig, rng: &mut impl Rng) -> Result<Self, FfError> {
        config.validate()?;
        let widths = config.widths();
        let layers = widths
            .windows(2)
            .map(|w| {
                let goodness = Goodness {
                    threshold: config.threshold_scale * w[1] as f32,
                    temperature: config.temperature,
                };
                Layer::new(w[0], w[1], goodness, rng)
            })
            .collect();
        let head = SoftmaxHead::new(config.classes, config.head_inputs());
        Ok(Self {
            config,
            layers,
            head,
            calibration: Calibration::default(),
        })
    }

    /// This model with its FF layers' parameters replaced (`[out, in]` weights and `[out]`
    /// biases, checked like [`Model::from_parts`]); the head and the calibration are kept. A
    /// checkpoint stores the consolidate sleep's slow weights as layers only: they share the
    /// live model's head.
    pub fn with_layer_params(&self, params: Vec<LayerParams>) -> Result<Self, FfError> {
        let head = (self.head.weight.clone(), self.head.bias.clone());
        let mut model = Model::from_parts(self.config.clone(), params, head)?;
        model.calibration = self.calibration;
        Ok(model)
    }

    /// Assembles a model from parameters (e.g. read from a file), checking every shape.
    pub fn from_parts(
        config: NetworkConfig,
        params: Vec<(Array2<f32>, Array1<f32>)>,
        head: (Array2<f32>, Array1<f32>),
    ) -> Result<Self, FfError> {
        config.validate()?;
        let widths = config.widths();
        if params.len() != config.hidden.len() {
            return Err(FfError::Shape {
                what: "number of layers",
                expected: config.hidden.len(),
                got: params.len(),
            });
        }
        let mut layers = Vec::with_capacity(params.len());
        for (l, (w, b)) in params.into_iter().enumerate() {
            FfError::check_len("layer weight rows", widths[l + 1], w.nrows())?;
            FfError::check_len("layer weight columns", widths[l], w.ncols())?;
            FfError::check_len("layer bias", widths[l + 1], b.len())?;
            let goodness = Goodness {
                threshold: config.threshold_scale * widths[l + 1] as f32,
                temperature: config.temperature,
            };
            let w = w.as_standard_layout().into_owned();
            layers.push(Layer::from_parts(w, b, goodness).ok_or(FfError::Shape {
                what: "layer bias",
                expected: widths[l + 1],
                got: 0,
            })?);
        }
        let (hw, hb) = head;
        FfError::check_len("head weight rows", config.classes, hw.nrows())?;
        FfError::check_len("head weight columns", config.head_inputs(), hw.ncols())?;
        FfError::check_len("head bias", config.classes, hb.len())?;
        let head = SoftmaxHead::from_parts(hw.as_standard_layout().into_owned(), hb);
        Ok(Self {
            config,
            layers,
            head,
            calibration: Calibration::default(),
        })
    }

    /// Moves every parameter a fraction `weight` of the way towards `other`'s:
    /// `p ← p + weight·(p_other − p)`. Called every few samples with a small `weight`, it keeps
    /// an exponential moving average of a model being trained (Polyak averaging): per-sample
    /// SGD at a constant rate leaves the live weights noisy; their average classifies better.
    /// The calibration is left alone: it is a fit, not a weight (see `WeightAverage`).
    pub fn blend_toward(&mut self, other: &Model, weight: f32) -> Result<(), FfError> {
        if self.config != other.config {
            return Err(FfError::Config {
                key: "network",
                reason: "can only average models of the same configuration".into(),
            });
        }
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            let (w, b) = mine.params_mut();
            w.zip_mut_with(theirs.weight(), |x, &y| *x += weight * (y - *x));
            b.zip_mut_with(theirs.bias(), |x, &y| *x += weight * (y - *x));
        }
        self.head
            .weight
            .zip_mut_with(&other.head.weight, |x, &y| *x += weight * (y - *x));
        self.head
            .bias
            .zip_mut_with(&other.head.bias, |x, &y| *x += weight * (y - *x));
        Ok(())
    }

    /// The network's configuration.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The FF layers, bottom to top.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The softmax head.
    pub fn head(&self) -> &SoftmaxHead {
        &self.head
    }

    /// The temperature of the probabilities [`Model::classify`] reports (docs/algorithm.md
    /// §5.1).
    pub fn calibration(&self) -> Calibration {
        self.calibration
    }

    /// Sets the temperature of the probabilities; fails with `Config` (key `temperature`) when
    /// it is not finite and > 0.
    pub fn set_calibration(&mut self, calibration: Calibration) -> Result<(), FfError> {
        if !calibration.is_valid() {
            return Err(FfError::Config {
                key: "calibration_temperature",
                reason: "must be a finite number > 0".into(),
            });
        }
        self.calibration = calibration;
        Ok(())
    }

    /// Checks a feature vector: length and finiteness.
    pub fn check_features(&self, features: &[f32]) -> Result<(), FfError> {
        FfError::check_len("features", self.config.inputs, features.len())?;
        if let Some(index) = features.iter().position(|v| !v.is_finite()) {
            return Err(FfError::NonFinite { index });
        }
        Ok(())
    }

    /// Checks a label.
    pub fn check_label(&self, label: usize) -> Result<(), FfError> {
        if label >= self.config.classes {
            return Err(FfError::Label {
                label,
                classes: self.config.classes,
            });
        }
        Ok(())
    }

    /// Runs `features` through every layer once per entry of `labels`, appending one slot per
    /// label to `ws` (slots `ws.len()..ws.len() + labels.len()`). `group` (0 or 1) names the
    /// feature buffer, so two different feature vectors can sit side by side (hybrid negatives).
    /// Unchecked: the caller has validated `features` and the labels.
    pub(crate) fn forward(
        &self,
        ws: &mut Workspace,
        group: usize,
        features: &[f32],
        labels: &[LabelInput],
    ) {
        forward_rows(
            &self.config,
            &mut Frozen(&self.layers),
            ws,
            None,
            (group, Layer0::Compute),
            features,
            labels,
        );
    }

    /// Writes the first layer's input for `slot` (normalised features and label) into `out`.
    pub(crate) fn layer0_input(&self, ws: &Workspace, slot: usize, out: &mut [f32]) {
        let cfg = &self.config;
        let (off, c, s) = (cfg.label_offset(), cfg.classes, cfg.label_strength);
        let inv = 1.0 / ws.slot_rms[slot];
        for (o, &x) in out.iter_mut().zip(&ws.u[ws.slot_group[slot]]) {
            *o = x * inv;
        }
        match ws.slot_label[slot] {
            LabelInput::Class(k) => out[off + k] = s * inv,
            LabelInput::Neutral => out[off..off + c].fill(s / c as f32 * inv),
        }
    }
}

/// Where a forward pass gets its weight rows. A row is asked for exactly once per layer and
/// pass, in order, right before it is used: the trainer's source applies the previous sample's
/// pending update to the row at that moment, so the row is read from memory once for both the
/// update and the next forward pass (batch size 1 is memory-bound).
pub(crate) trait Rows {
    /// The rows of one band of a layer, handed to a thread of its own.
    type Band<'b>: BandRows + Send
    where
        Self: 'b;

    /// Row `j` of layer `l` (`[in]`) and its bias.
    fn row(&mut self, l: usize, j: usize) -> (&[f32], f32);

    /// Layer `l`'s rows split into bands `cuts[b]..cuts[b + 1]` (`cuts` runs from 0 to the
    /// layer's width), handed to `put(b, band)` in order; each band is asked for its rows in
    /// order, as [`Rows::row`] is. A callback rather than a `Vec`: the per-sample path
    /// allocates nothing.
    fn bands<'s>(
        &'s mut self,
        l: usize,
        cuts: &[usize],
        put: &mut dyn FnMut(usize, Self::Band<'s>),
    );
}

/// The rows of one band of a layer (see [`Rows::bands`]).
pub(crate) trait BandRows {
    /// Row `j` (an index into the whole layer) and its bias.
    fn row(&mut self, j: usize) -> (&[f32], f32);
}

/// Rows of layers nobody is updating.
pub(crate) struct Frozen<'a>(pub(crate) &'a [Layer]);

impl Rows for Frozen<'_> {
    type Band<'b>
        = &'b Layer
    where
        Self: 'b;

    #[inline]
    fn row(&mut self, l: usize, j: usize) -> (&[f32], f32) {
        let layer = &self.0[l];
        (layer.row(j), layer.bias[j])
    }

    fn bands<'s>(&'s mut self, l: usize, cuts: &[usize], put: &mut dyn FnMut(usize, &'s Layer)) {
        for b in 0..cuts.len().saturating_sub(1) {
            put(b, &self.0[l]);
        }
    }
}

impl BandRows for &Layer {
    #[inline]
    fn row(&mut self, j: usize) -> (&[f32], f32) {
        (Layer::row(self, j), self.bias[j])
    }
}

/// Fewest rows worth a thread of their own: below this a band costs more to hand over than it
/// saves.
const MIN_BAND_ROWS: usize = 64;

/// Most bands a layer is split into, whatever the thread count: the bands live in a fixed array
/// on the stack (the per-sample path allocates nothing), and no layer of a per-sample model is
/// wide enough for more to pay.
const MAX_BANDS: usize = 16;

/// One unit's part of a pass: from its weight row and bias, its output for every slot.
type Unit<'a> = dyn Fn(&[f32], f32, &mut [f32]) + Sync + 'a;

/// Computes rows `0..m` of layer `l` for `k` slots on the calling thread and the `crew`'s
/// helpers, each thread a contiguous band of rows: `unit(row, bias, out)` writes one unit's `k`
/// outputs, unit-major into `zt` (`[m, k]`). Returns `false`, computing nothing, when one
/// thread would do (the caller's own loop is then used). Every value is computed as the
/// one-thread loop computes it, so the results are bit-identical for every thread count.
fn rows_in_bands<R: Rows>(
    rows: &mut R,
    l: usize,
    (m, k): (usize, usize),
    crew: Option<&Crew>,
    zt: &mut [f32],
    unit: &Unit<'_>,
) -> bool {
    let Some(crew) = crew else { return false };
    let threads = (crew.helpers() + 1)
        .min(m / MIN_BAND_ROWS)
        .clamp(1, MAX_BANDS);
    if threads == 1 || k == 0 {
        return false;
    }
    let mut cuts = [0; MAX_BANDS + 1];
    for (b, cut) in cuts.iter_mut().enumerate().take(threads + 1) {
        *cut = b * m / threads;
    }
    let cuts = &cuts[..=threads];
    // Band `b` and its part of `zt`, each taken by the one thread that computes it.
    type Part<'p, B> = Mutex<Option<(B, &'p mut [f32])>>;
    let parts: [Part<'_, R::Band<'_>>; MAX_BANDS] = std::array::from_fn(|_| Mutex::new(None));
    let mut zt = &mut zt[..m * k];
    rows.bands(l, cuts, &mut |b, band| {
        let (mine, rest) = std::mem::take(&mut zt).split_at_mut((cuts[b + 1] - cuts[b]) * k);
        zt = rest;
        *lock(&parts[b]) = Some((band, mine));
    });
    crew.run(threads, &|b| {
        let Some((mut band, out)) = lock(&parts[b]).take() else {
            return;
        };
        for (j, out) in (cuts[b]..cuts[b + 1]).zip(out.chunks_exact_mut(k)) {
            let (row, bias) = band.row(j);
            unit(row, bias, out);
        }
    });
    true
}

/// A band's lock: uncontended (each band is taken by one thread), and never poisoned in a way
/// that matters (a panicking part is raised by [`Crew::run`] anyway).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a forward pass gets the first layer's products with the shared input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer0 {
    /// Computes them (reading every first-layer row).
    Compute,
    /// Takes them from the workspace if an earlier pass kept them (see
    /// [`Workspace::shared`]), else computes them. Only for the same features as that pass and
    /// weights unchanged since: a trainer's passes over one sample after the first.
    Reuse,
}

/// The forward pass behind [`Model::forward`], generic over where rows come from. With a
/// `crew`, each layer's units are split into bands computed on the caller's thread and the
/// crew's (a pass still reads every row once); the results are bit-identical to one thread's.
/// A one-thread pass keeps the first layer's products in the workspace, and one with
/// [`Layer0::Reuse`] adds its labels to the kept products: the same numbers, without reading
/// the first layer's weights again.
pub(crate) fn forward_rows(
    cfg: &NetworkConfig,
    rows: &mut impl Rows,
    ws: &mut Workspace,
    crew: Option<&Crew>,
    (group, layer0): (usize, Layer0),
    features: &[f32],
    labels: &[LabelInput],
) {
    let first = ws.slots;
    let k = labels.len();
    debug_assert!(first + k <= ws.capacity);
    let (off, c, s) = (cfg.label_offset(), cfg.classes, cfg.label_strength);
    let n0 = cfg.input_width();

    // The shared input: features with the label slots zeroed.
    let u = &mut ws.u[group];
    match cfg.label_placement {
        LabelPlacement::Append => {
            u[..cfg.inputs].copy_from_slice(features);
            u[off..off + c].fill(0.0);
        }
        LabelPlacement::Overwrite => {
            u.copy_from_slice(features);
            u[..c].fill(0.0);
        }
    }
    let u_sq = kernel::dot(u, u);
    for (i, label) in labels.iter().enumerate() {
        let label_sq = match label {
            LabelInput::Class(_) => s * s,
            LabelInput::Neutral => s * s / c as f32,
        };
        ws.slot_label[first + i] = *label;
        ws.slot_group[first + i] = group;
        ws.slot_rms[first + i] = kernel::rms(u_sq + label_sq, n0, cfg.eps);
    }

    // Layer 1: one dot product per unit, then a column add per label.
    let m0 = cfg.hidden[0];
    let u = &ws.u[group];
    let rms = &ws.slot_rms[first..first + k];
    let unit0 = |row: &[f32], bias: f32, out: &mut [f32]| {
        let shared = kernel::dot(row, u);
        for ((o, label), &rms) in out.iter_mut().zip(labels).zip(rms) {
            let lab = match *label {
                LabelInput::Class(k) => s * row[off + k],
                LabelInput::Neutral => (s / c as f32) * row[off..off + c].iter().sum::<f32>(),
            };
            *o = ((shared + lab) / rms + bias).max(0.0);
        }
    };
    let reuse = layer0 == Layer0::Reuse && ws.shared_ready[group];
    if !reuse && rows_in_bands(rows, 0, (m0, k), crew, &mut ws.zt, &unit0) {
        scatter(&ws.zt, &mut ws.h[0], first, (m0, k));
        ws.shared_ready[group] = false;
    } else {
        for j in 0..m0 {
            let (row, bias) = rows.row(0, j);
            let shared = if reuse {
                ws.shared[group][j]
            } else {
                let shared = kernel::dot(row, u);
                ws.shared[group][j] = shared;
                shared
            };
            for (i, label) in labels.iter().enumerate() {
                let lab = match *label {
                    LabelInput::Class(k) => s * row[off + k],
                    LabelInput::Neutral => (s / c as f32) * row[off..off + c].iter().sum::<f32>(),
                };
                let z = (shared + lab) / ws.slot_rms[first + i] + bias;
                ws.h[0][(first + i) * m0 + j] = z.max(0.0);
            }
        }
        ws.shared_ready[group] = true;
    }
    finish_layer(cfg, ws, 0, first, k);

    // Layers 2..: every slot's normalised activity in one pass over each weight row.
    for l in 1..cfg.hidden.len() {
        let (n, m) = (cfg.hidden[l - 1], cfg.hidden[l]);
        let xs = &ws.h_norm[l - 1][first * n..(first + k) * n];
        let unit = |row: &[f32], bias: f32, out: &mut [f32]| {
            kernel::dot_many(row, xs, out);
            for z in out.iter_mut() {
                *z = (*z + bias).max(0.0);
            }
        };
        if rows_in_bands(rows, l, (m, k), crew, &mut ws.zt, &unit) {
            scatter(&ws.zt, &mut ws.h[l], first, (m, k));
        } else {
            let h = &mut ws.h[l];
            let tmp = &mut ws.tmp[..k];
            for j in 0..m {
                let (row, bias) = rows.row(l, j);
                kernel::dot_many(row, xs, tmp);
                for (v, &z) in tmp.iter().enumerate() {
                    h[(first + v) * m + j] = (z + bias).max(0.0);
                }
            }
        }
        finish_layer(cfg, ws, l, first, k);
    }
    ws.slots = first + k;
}

/// Copies unit-major outputs `zt` (`[m, k]`) into slots `first..first + k` of `h` (`[slot, m]`).
fn scatter(zt: &[f32], h: &mut [f32], first: usize, (m, k): (usize, usize)) {
    for (j, z) in zt[..m * k].chunks_exact(k).enumerate() {
        for (v, &z) in z.iter().enumerate() {
            h[(first + v) * m + j] = z;
        }
    }
}

/// Goodness and RMS-normalised activity of layer `l` for slots `first..first+k`.
fn finish_layer(cfg: &NetworkConfig, ws: &mut Workspace, l: usize, first: usize, k: usize) {
    let m = cfg.hidden[l];
    for v in first..first + k {
        let h = &ws.h[l][v * m..(v + 1) * m];
        let g = crate::ff::goodness::Goodness::of(h);
        ws.goodness[l][v] = g;
        let inv = 1.0 / kernel::rms(g, m, cfg.eps);
        for (o, &x) in ws.h_norm[l][v * m..(v + 1) * m].iter_mut().zip(h) {
            *o = x * inv;
        }
    }
}

/// Scratch memory for forward passes and updates, sized once for a network. A forward pass fills
/// *slots*: one per (feature vector, label) pair, up to `classes + 2`.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub(crate) capacity: usize,
    pub(crate) slots: usize,
    pub(crate) u: [Vec<f32>; 2],
    pub(crate) slot_label: Vec<LabelInput>,
    pub(crate) slot_group: Vec<usize>,
    pub(crate) slot_rms: Vec<f32>,
    /// Per feature group, the first layer's products `W u` of its units with the shared input
    /// (label slots zero), kept by a one-thread pass so that a later pass of the same features
    /// through the same weights adds its label without reading the weights again.
    pub(crate) shared: [Vec<f32>; 2],
    /// Whether `shared[group]` holds the products for the group's current features and the
    /// current weights; [`Workspace::clear`] forgets them.
    pub(crate) shared_ready: [bool; 2],
    /// Post-ReLU activity per layer, `[slot, width]`.
    pub(crate) h: Vec<Vec<f32>>,
    /// RMS-normalised activity per layer, `[slot, width]` (the next layer's input).
    pub(crate) h_norm: Vec<Vec<f32>>,
    /// Goodness per layer, `[slot]`.
    pub(crate) goodness: Vec<Vec<f32>>,
    pub(crate) tmp: Vec<f32>,
    /// A layer's outputs unit-major (`[width, slot]`), as the threads of a banded pass write
    /// them.
    pub(crate) zt: Vec<f32>,
    /// Materialised first-layer inputs for the (at most two) slots being learned from.
    pub(crate) input0: [Vec<f32>; 2],
    /// `dL/dz` per layer for the positive and the negative term.
    pub(crate) dz: [Vec<Vec<f32>>; 2],
    pub(crate) head_in: Vec<f32>,
    pub(crate) scores: Vec<f32>,
    pub(crate) probs: Vec<f32>,
    pub(crate) labels: Vec<LabelInput>,
}

impl Workspace {
    /// Scratch memory for `config`.
    pub fn new(config: &NetworkConfig) -> Self {
        let cap = config.classes + 2;
        let n0 = config.input_width();
        let per_layer =
            |f: &dyn Fn(usize) -> usize| config.hidden.iter().map(|&w| vec![0.0; f(w)]).collect();
        Self {
            capacity: cap,
            slots: 0,
            u: [vec![0.0; n0], vec![0.0; n0]],
            slot_label: vec![LabelInput::Neutral; cap],
            slot_group: vec![0; cap],
            slot_rms: vec![1.0; cap],
            shared: std::array::from_fn(|_| vec![0.0; config.hidden.first().copied().unwrap_or(0)]),
            shared_ready: [false; 2],
            h: per_layer(&|w| w * cap),
            h_norm: per_layer(&|w| w * cap),
            goodness: per_layer(&|_| cap),
            tmp: vec![0.0; cap],
            zt: vec![0.0; cap * config.hidden.iter().copied().max().unwrap_or(0)],
            input0: [vec![0.0; n0], vec![0.0; n0]],
            dz: [per_layer(&|w| w), per_layer(&|w| w)],
            head_in: vec![0.0; config.head_inputs()],
            scores: vec![0.0; config.classes],
            probs: vec![0.0; config.classes],
            labels: Vec::with_capacity(cap),
        }
    }

    /// Forgets the slots of the previous pass and the first layer's kept products.
    pub(crate) fn clear(&mut self) {
        self.slots = 0;
        self.shared_ready = [false; 2];
    }

    /// What layer `l`'s update reads as its input for term `term` (0 positive, 1 negative)
    /// learned from `slot`: the materialised first-layer input, or the previous layer's
    /// normalised activity in that slot. `n` is layer `l`'s input width.
    #[inline]
    pub(crate) fn layer_input(&self, l: usize, term: usize, slot: usize, n: usize) -> &[f32] {
        if l == 0 {
            &self.input0[term]
        } else {
            &self.h_norm[l - 1][slot * n..(slot + 1) * n]
        }
    }

    /// Activity of layer `l` in `slot`.
    #[cfg(test)]
    pub(crate) fn activity(&self, l: usize, slot: usize) -> &[f32] {
        let m = self.h[l].len() / self.capacity;
        &self.h[l][slot * m..(slot + 1) * m]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Reference: a pass computes the first layer's pre-activation of label `k` as
    /// `(W u + s·W[:, off + k]) / r + b` from the weights. A pass that takes `W u` from an
    /// earlier pass of the same features ([`Layer0::Reuse`]) gives every layer's activity bit
    /// for bit, and a cleared workspace computes the products afresh.
    #[test]
    fn a_reused_first_layer_matches_a_fresh_pass_bit_for_bit() {
        let config = NetworkConfig {
            inputs: 20,
            classes: 4,
            hidden: vec![16, 8],
            ..NetworkConfig::default()
        };
        let model = Model::new(config.clone(), &mut StdRng::seed_from_u64(7)).expect("valid");
        let x: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin().abs()).collect();
        let y: Vec<f32> = (0..20).map(|i| (i as f32 * 0.91).cos().abs()).collect();
        let fresh = |features: &[f32]| {
            let mut ws = Workspace::new(&config);
            model.forward(&mut ws, 0, features, &[LabelInput::Class(2)]);
            ws
        };
        let pass = |ws: &mut Workspace, layer0, features: &[f32], label| {
            let rows = &mut Frozen(&model.layers);
            forward_rows(&config, rows, ws, None, (0, layer0), features, &[label]);
        };

        let mut ws = Workspace::new(&config);
        pass(&mut ws, Layer0::Compute, &x, LabelInput::Neutral);
        assert!(ws.shared_ready[0], "a one-thread pass keeps its products");
        pass(&mut ws, Layer0::Reuse, &x, LabelInput::Class(2));
        let want = fresh(&x);
        for l in 0..2 {
            assert_eq!(ws.activity(l, 1), want.activity(l, 0), "layer {l}");
        }

        ws.clear();
        assert!(!ws.shared_ready[0], "clear forgets the products");
        pass(&mut ws, Layer0::Reuse, &y, LabelInput::Class(2));
        let want = fresh(&y);
        for l in 0..2 {
            assert_eq!(ws.activity(l, 0), want.activity(l, 0), "layer {l}");
        }
    }
}
