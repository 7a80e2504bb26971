//! `Layer`: one fully connected ReLU layer that learns from its own goodness only
//! (docs/algorithm.md §1). It sees an RMS-normalised input, computes `h = relu(W x̂ + b)`, and
//! updates `W` from `dW = s · 2h ⊗ x̂` with `s = dLoss/dG`. Its input is a constant to it: no
//! gradient ever leaves the layer.

use ndarray::{Array1, Array2};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ff::goodness::{Goodness, Polarity};
use crate::ff::kernel;
use crate::ff::optimiser::{LayerState, OptimiserConfig};

/// A dense ReLU layer with its goodness function. Weights are `[out, in]`, row-major `f32`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub(crate) weight: Array2<f32>,
    pub(crate) bias: Array1<f32>,
    pub(crate) goodness: Goodness,
}

/// One term of a layer update: the loss gradient w.r.t. each unit's pre-activation (`dL/dz`,
/// `[out]`) and the normalised input it saw (`[in]`).
#[derive(Debug, Clone, Copy)]
pub struct Term<'a> {
    pub dz: &'a [f32],
    pub input: &'a [f32],
}

impl Layer {
    /// A layer with `W ~ N(0, 1/fan_in)` and zero biases (Hinton's initialisation).
    pub fn new(inputs: usize, outputs: usize, goodness: Goodness, rng: &mut impl Rng) -> Self {
        let std = 1.0 / (inputs.max(1) as f32).sqrt();
        let weight = Array2::from_shape_simple_fn((outputs, inputs), || std * normal(rng));
        Self {
            weight,
            bias: Array1::zeros(outputs),
            goodness,
        }
    }

    /// Builds a layer from existing parameters; `None` unless `bias.len() == weight.nrows()`.
    pub fn from_parts(weight: Array2<f32>, bias: Array1<f32>, goodness: Goodness) -> Option<Self> {
        (weight.nrows() == bias.len() && weight.is_standard_layout()).then_some(Self {
            weight,
            bias,
            goodness,
        })
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.weight.ncols()
    }

    /// Number of units.
    pub fn outputs(&self) -> usize {
        self.weight.nrows()
    }

    /// The weights, `[out, in]`.
    pub fn weight(&self) -> &Array2<f32> {
        &self.weight
    }

    /// The biases, `[out]`.
    pub fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    /// This layer's goodness function.
    pub fn goodness(&self) -> &Goodness {
        &self.goodness
    }

    /// Mutable weights and biases, for tests and for loading.
    pub fn params_mut(&mut self) -> (&mut Array2<f32>, &mut Array1<f32>) {
        (&mut self.weight, &mut self.bias)
    }

    /// A weight row: unit `j`'s incoming weights.
    #[inline]
    pub(crate) fn row(&self, j: usize) -> &[f32] {
        let n = self.inputs();
        &self
            .weight
            .as_slice()
            .expect("layer weights are kept in standard layout")[j * n..(j + 1) * n]
    }

    /// `h[k] = relu(W xs[k] + b)` for `k` normalised inputs stored back to back in `xs`
    /// (`[k, in]` → `[k, out]`). `tmp` needs `k` slots. Each weight row is read once for all `k`.
    pub fn forward(&self, xs: &[f32], k: usize, h: &mut [f32], tmp: &mut [f32]) {
        let (n, m) = (self.inputs(), self.outputs());
        debug_assert_eq!(xs.len(), k * n);
        debug_assert!(h.len() >= k * m && tmp.len() >= k);
        let w = self
            .weight
            .as_slice()
            .expect("layer weights are kept in standard layout");
        let b = self.bias.as_slice().expect("a 1-d array is contiguous");
        for j in 0..m {
            let tmp = &mut tmp[..k];
            kernel::dot_many(&w[j * n..(j + 1) * n], xs, tmp);
            for (v, &z) in tmp.iter().enumerate() {
                h[v * m + j] = (z + b[j]).max(0.0);
            }
        }
    }

    /// Writes `dL/dz = s · 2h` (zero where the unit is off) into `dz` and returns `(G, loss)`.
    #[inline]
    pub fn local_gradient(&self, h: &[f32], polarity: Polarity, dz: &mut [f32]) -> (f32, f32) {
        gradient_of(&self.goodness, h, polarity, dz)
    }

    /// [`Layer::local_gradient`] against another sample's goodness `reference` instead of the
    /// threshold: for a negative, the symmetric loss `softplus((G − G⁺)/T)` of SymBa, where
    /// `G⁺` is the goodness of its positive (docs/algorithm.md §6.2).
    #[inline]
    pub fn local_gradient_against(
        &self,
        h: &[f32],
        polarity: Polarity,
        reference: f32,
        dz: &mut [f32],
    ) -> (f32, f32) {
        let goodness = Goodness {
            threshold: reference,
            ..self.goodness
        };
        gradient_of(&goodness, h, polarity, dz)
    }

    /// Applies `W −= lr·(Σ_t dz_t ⊗ x_t + wd·W)` and `b −= lr·Σ_t dz_t` for one or two terms,
    /// row by row in a single read-modify-write pass (and the momentum buffer, if any).
    pub fn apply(
        &mut self,
        state: &mut LayerState,
        config: &OptimiserConfig,
        lr: f32,
        terms: &[Term<'_>],
    ) {
        let (t0, t1) = match terms {
            [a] => (*a, None),
            [a, b] => (*a, Some(*b)),
            _ => return,
        };
        for j in 0..self.outputs() {
            self.apply_row(j, state, config, lr, t0, t1);
        }
    }

    /// [`Layer::apply`] for unit `j` only; returns the updated row and bias, still hot in cache
    /// for the next forward pass.
    #[inline]
    pub(crate) fn apply_row(
        &mut self,
        j: usize,
        state: &mut LayerState,
        config: &OptimiserConfig,
        lr: f32,
        t0: Term<'_>,
        t1: Option<Term<'_>>,
    ) -> (&[f32], f32) {
        let a = t0.dz[j];
        let second = t1.map(|t| (t.dz[j], t.input));
        let c = second.map_or(0.0, |(c, _)| c);
        self.step_row(j, state, config, lr, (a, t0.input), second, (a, c))
    }

    /// Applies a precomputed gradient to row `j`: `W_j −= lr·(scale·grad + wd·W_j)`,
    /// `b_j −= lr·bias_grad` (through the momentum buffer, if any). Mini-batch mode.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply_gradient_row(
        &mut self,
        j: usize,
        state: &mut LayerState,
        config: &OptimiserConfig,
        lr: f32,
        scale: f32,
        grad: &[f32],
        bias_grad: f32,
    ) {
        self.step_row(j, state, config, lr, (scale, grad), None, (bias_grad, 0.0));
    }

    /// The one row update behind [`Layer::apply_row`] and [`Layer::apply_gradient_row`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn step_row(
        &mut self,
        j: usize,
        state: &mut LayerState,
        config: &OptimiserConfig,
        lr: f32,
        x: (f32, &[f32]),
        second: Option<(f32, &[f32])>,
        b: (f32, f32),
    ) -> (&[f32], f32) {
        let n = self.inputs();
        let w = self
            .weight
            .as_slice_mut()
            .expect("layer weights are kept in standard layout");
        let row = &mut w[j * n..(j + 1) * n];
        let bias = &mut self.bias[j];
        let velocity = (config.momentum > 0.0).then(|| {
            (
                &mut state.velocity_weight[j * n..(j + 1) * n],
                &mut state.velocity_bias[j],
            )
        });
        step_row(row, bias, velocity, config, lr, x, second, b);
        (row, *bias)
    }

    /// Splits the layer's rows (and their momentum buffers) into bands `cuts[b]..cuts[b + 1]`
    /// that can be updated on different threads, handed to `put(b, band)` in order. `cuts`
    /// starts at 0, ends at [`Layer::outputs`] and never decreases.
    pub(crate) fn bands<'a>(
        &'a mut self,
        state: &'a mut LayerState,
        cuts: &[usize],
        mut put: impl FnMut(usize, LayerBand<'a>),
    ) {
        let n = self.inputs();
        debug_assert_eq!(cuts.first(), Some(&0));
        debug_assert_eq!(cuts.last(), Some(&self.outputs()));
        let mut weight = self
            .weight
            .as_slice_mut()
            .expect("layer weights are kept in standard layout");
        let mut bias = self.bias.as_slice_mut().expect("a 1-d array is contiguous");
        let momentum = !state.velocity_bias.is_empty();
        let mut velocity_weight = &mut state.velocity_weight[..];
        let mut velocity_bias = &mut state.velocity_bias[..];
        for (b, w) in cuts.windows(2).enumerate() {
            let rows = w[1] - w[0];
            let (wb, wr) = std::mem::take(&mut weight).split_at_mut(rows * n);
            let (bb, br) = std::mem::take(&mut bias).split_at_mut(rows);
            weight = wr;
            bias = br;
            let (vw, vb) = if momentum {
                let (vw, vwr) = std::mem::take(&mut velocity_weight).split_at_mut(rows * n);
                let (vb, vbr) = std::mem::take(&mut velocity_bias).split_at_mut(rows);
                velocity_weight = vwr;
                velocity_bias = vbr;
                (vw, vb)
            } else {
                (&mut [][..], &mut [][..])
            };
            put(
                b,
                LayerBand {
                    first: w[0],
                    n,
                    weight: wb,
                    bias: bb,
                    velocity_weight: vw,
                    velocity_bias: vb,
                },
            );
        }
    }
}

/// Rows `first..first + bias.len()` of a layer, with their momentum buffers (empty without
/// momentum): what one thread updates while others update the rest (see [`Layer::bands`]).
#[derive(Debug)]
pub(crate) struct LayerBand<'a> {
    first: usize,
    n: usize,
    weight: &'a mut [f32],
    bias: &'a mut [f32],
    velocity_weight: &'a mut [f32],
    velocity_bias: &'a mut [f32],
}

impl LayerBand<'_> {
    /// Row `j` (an index into the whole layer) and its bias.
    #[inline]
    pub(crate) fn row(&self, j: usize) -> (&[f32], f32) {
        let (i, n) = (j - self.first, self.n);
        (&self.weight[i * n..(i + 1) * n], self.bias[i])
    }

    /// [`Layer::apply_row`] for row `j` of the band (an index into the whole layer).
    #[inline]
    pub(crate) fn apply_row(
        &mut self,
        j: usize,
        config: &OptimiserConfig,
        lr: f32,
        t0: Term<'_>,
        t1: Option<Term<'_>>,
    ) -> (&[f32], f32) {
        let (i, n) = (j - self.first, self.n);
        let a = t0.dz[j];
        let second = t1.map(|t| (t.dz[j], t.input));
        let c = second.map_or(0.0, |(c, _)| c);
        let row = &mut self.weight[i * n..(i + 1) * n];
        let bias = &mut self.bias[i];
        let velocity = (config.momentum > 0.0).then(|| {
            (
                &mut self.velocity_weight[i * n..(i + 1) * n],
                &mut self.velocity_bias[i],
            )
        });
        step_row(
            row,
            bias,
            velocity,
            config,
            lr,
            (a, t0.input),
            second,
            (a, c),
        );
        (row, *bias)
    }
}

/// The one row update behind every per-sample and mini-batch step: `W_j −= lr·(a·x + c·y +
/// wd·W_j)` and `b_j −= lr·(b₀ + b₁)`, through the momentum buffers (`velocity`, present exactly
/// when momentum is on).
#[allow(clippy::too_many_arguments)]
#[inline]
fn step_row(
    row: &mut [f32],
    bias: &mut f32,
    velocity: Option<(&mut [f32], &mut f32)>,
    config: &OptimiserConfig,
    lr: f32,
    (a, x): (f32, &[f32]),
    second: Option<(f32, &[f32])>,
    (b0, b1): (f32, f32),
) {
    match velocity {
        Some((velocity_row, vb)) => {
            let beta = config.momentum;
            let (c, y) = second.unwrap_or((0.0, x));
            kernel::momentum_row2(row, velocity_row, beta, lr, config.weight_decay, a, x, c, y);
            *vb = beta * *vb + b0 + b1;
            *bias -= lr * *vb;
        }
        None => {
            let decay = 1.0 - lr * config.weight_decay;
            match second {
                Some((c, y)) => kernel::update_row2(row, decay, lr * a, x, lr * c, y),
                None => kernel::update_row1(row, decay, lr * a, x),
            }
            *bias -= lr * (b0 + b1);
        }
    }
}

/// A standard normal draw (Box–Muller), so the engine needs no distribution crate.
pub(crate) fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// `dL/dz = s · 2h` with `s = dLoss/dG` under `goodness`, and `(G, loss)`.
#[inline]
fn gradient_of(goodness: &Goodness, h: &[f32], polarity: Polarity, dz: &mut [f32]) -> (f32, f32) {
    let g = Goodness::of(h);
    let s = goodness.dloss_dg(g, polarity);
    for (d, &x) in dz.iter_mut().zip(h) {
        *d = 2.0 * s * x;
    }
    (g, goodness.loss(g, polarity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn layer(inp: usize, out: usize, seed: u64) -> Layer {
        let mut rng = StdRng::seed_from_u64(seed);
        Layer::new(
            inp,
            out,
            Goodness {
                threshold: out as f32,
                temperature: 1.0,
            },
            &mut rng,
        )
    }

    fn layer_loss(l: &Layer, x: &[f32], pol: Polarity) -> f64 {
        let mut h = vec![0.0; l.outputs()];
        let mut tmp = vec![0.0; 1];
        l.forward(x, 1, &mut h, &mut tmp);
        f64::from(l.goodness.loss(Goodness::of(&h), pol))
    }

    /// The analytic local gradient `dW = s·2h ⊗ x̂` equals a central finite difference of the
    /// layer's own loss, for both polarities.
    #[test]
    fn local_gradient_matches_finite_difference() {
        let (inp, out) = (12, 6);
        let mut l = layer(inp, out, 7);
        // A threshold near the initial goodness keeps the sigmoid out of saturation.
        l.goodness.threshold = 2.0;
        let mut rng = StdRng::seed_from_u64(3);
        let raw: Vec<f32> = (0..inp).map(|_| normal(&mut rng)).collect();
        let mut x = vec![0.0; inp];
        kernel::rms_normalise(&raw, 1e-8, &mut x);
        for pol in [Polarity::Positive, Polarity::Negative] {
            let mut h = vec![0.0; out];
            l.forward(&x, 1, &mut h, &mut [0.0]);
            let mut dz = vec![0.0; out];
            l.local_gradient(&h, pol, &mut dz);
            let eps = 1e-2f32;
            for (j, &dzj) in dz.iter().enumerate() {
                for i in [0, 5, 11] {
                    let analytic = f64::from(dzj * x[i]);
                    let orig = l.weight[(j, i)];
                    l.weight[(j, i)] = orig + eps;
                    let up = layer_loss(&l, &x, pol);
                    l.weight[(j, i)] = orig - eps;
                    let down = layer_loss(&l, &x, pol);
                    l.weight[(j, i)] = orig;
                    let fd = (up - down) / (2.0 * f64::from(eps));
                    assert!(
                        (fd - analytic).abs() < 2e-3 + 2e-2 * analytic.abs(),
                        "unit {j} input {i} {pol:?}: fd {fd} vs analytic {analytic}"
                    );
                }
                // Bias gradient is dz itself.
                let orig = l.bias[j];
                l.bias[j] = orig + eps;
                let up = layer_loss(&l, &x, pol);
                l.bias[j] = orig - eps;
                let down = layer_loss(&l, &x, pol);
                l.bias[j] = orig;
                let fd = (up - down) / (2.0 * f64::from(eps));
                assert!((fd - f64::from(dzj)).abs() < 2e-3 + 2e-2 * f64::from(dzj).abs());
            }
        }
    }

    /// A positive step raises goodness on that input; a negative step lowers it.
    #[test]
    fn steps_move_goodness_the_right_way() {
        let mut l = layer(20, 8, 1);
        let config = OptimiserConfig {
            peer_norm: 0.0,
            ..Default::default()
        };
        let mut state = LayerState::new(8, 20, &config);
        let mut x = vec![0.0; 20];
        let raw: Vec<f32> = (0..20).map(|i| (i as f32 * 0.7).cos()).collect();
        kernel::rms_normalise(&raw, 1e-8, &mut x);
        for pol in [Polarity::Positive, Polarity::Negative] {
            l.goodness.threshold = match pol {
                Polarity::Positive => 100.0,
                Polarity::Negative => 0.0,
            };
            let mut h = vec![0.0; 8];
            l.forward(&x, 1, &mut h, &mut [0.0]);
            let before = Goodness::of(&h);
            let mut dz = vec![0.0; 8];
            l.local_gradient(&h, pol, &mut dz);
            l.apply(&mut state, &config, 1e-2, &[Term { dz: &dz, input: &x }]);
            l.forward(&x, 1, &mut h, &mut [0.0]);
            let after = Goodness::of(&h);
            match pol {
                Polarity::Positive => assert!(after > before, "{before} -> {after}"),
                Polarity::Negative => assert!(after < before, "{before} -> {after}"),
            }
        }
    }
}
