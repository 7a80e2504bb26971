//! `FiniteGuard` (docs/algorithm.md §8): the last line of defence that keeps every weight,
//! bias, momentum buffer and softmax-head parameter finite. Before an update is applied it bounds what the update can
//! produce from a few numbers per layer — the largest `|dL/dz|` and `|input|` of each term —
//! and running upper bounds on the parameters, so the hot path costs `O(in + out)` per layer
//! on top of the `O(in · out)` update. Only when a running bound crosses its limit are the
//! parameters measured exactly (`O(params)`, rare). An update with a non-finite gradient, or
//! one that could push a parameter past its limit, is refused whole by the trainer.
//!
//! Limits also keep the forward pass finite: an RMS-normalised input has `|x|₁ ≤ in`, so with
//! every `|w|, |b| ≤ L` each pre-activation is at most `L·(in + 1)` and the goodness
//! `G = Σ h²` of `out` units stays below `f32::MAX` for `L = ½·sqrt(f32::MAX / out) / (in + 1)`.

use crate::ff::classify::SoftmaxHead;
use crate::ff::layer::Layer;
use crate::ff::optimiser::{LayerState, OptimiserConfig};

/// Upper bounds on the absolute values of one layer's parameters and momentum buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Bound {
    weight: f64,
    bias: f64,
    velocity_weight: f64,
    velocity_bias: f64,
}

/// A momentum buffer above this could overflow `f32` on its next step.
const VELOCITY_LIMIT: f64 = f32::MAX as f64 / 4.0;

/// The largest `|dL/dz_j|` and `|x_i|` of one update term.
pub(crate) type TermSize = (f32, f32);

/// Running bounds of every layer and of the head, with their limits.
#[derive(Debug, Clone)]
pub(crate) struct FiniteGuard {
    bounds: Vec<Bound>,
    limits: Vec<f64>,
    /// Candidate bounds of the update being checked; committed only if every layer passes.
    next: Vec<Bound>,
    head: Bound,
    head_limit: f64,
}

/// The largest absolute value of `xs`; `None` if any value is NaN or infinite.
#[inline]
pub(crate) fn max_abs(xs: &[f32]) -> Option<f32> {
    let mut max = 0.0f32;
    for &v in xs {
        if !v.is_finite() {
            return None;
        }
        max = max.max(v.abs());
    }
    Some(max)
}

fn max_abs_f64(xs: &[f32]) -> f64 {
    max_abs(xs).map_or(f64::INFINITY, f64::from)
}

impl FiniteGuard {
    /// Measures `layers`, `states` and `head` exactly.
    pub(crate) fn new(layers: &[Layer], states: &[LayerState], head: &SoftmaxHead) -> Self {
        let limits = layers
            .iter()
            .map(|l| layer_limit(l.outputs(), l.inputs()))
            .collect();
        let bounds: Vec<Bound> = layers.iter().zip(states).map(measure).collect();
        Self {
            next: bounds.clone(),
            bounds,
            limits,
            head: measure_head(head),
            // Logits stay below f32::MAX / 4, so softmax's shift by the maximum cannot overflow.
            head_limit: f64::from(f32::MAX) / 4.0 / (head.weight.ncols() as f64 + 1.0),
        }
    }

    /// Checks layer `l`'s update `W −= lr·(Σ_t dz_t ⊗ x_t + wd·W)` (through momentum when on)
    /// with the sizes of its terms, remeasuring the layer once if the running bound is over
    /// its limit. `true` if every result stays within the limit; the candidate bound is kept
    /// for [`FiniteGuard::commit`].
    pub(crate) fn check_layer(
        &mut self,
        l: usize,
        terms: [Option<TermSize>; 2],
        lr: f32,
        opt: &OptimiserConfig,
        layer: &Layer,
        state: &LayerState,
    ) -> bool {
        let limit = self.limits[l];
        if let Some(b) = step(self.bounds[l], terms, lr, opt, limit) {
            self.next[l] = b;
            return true;
        }
        // The running bound only ever overestimates: measure before refusing.
        self.bounds[l] = measure((layer, state));
        match step(self.bounds[l], terms, lr, opt, limit) {
            Some(b) => {
                self.next[l] = b;
                true
            }
            None => false,
        }
    }

    /// Makes the checked candidate bounds of the first `layers` layers current (the update was
    /// applied).
    pub(crate) fn commit(&mut self, layers: usize) {
        self.bounds[..layers].copy_from_slice(&self.next[..layers]);
    }

    /// Checks one cross-entropy step of the head with learning rate `lr` on an input whose
    /// largest value is `input`: `|p − onehot| ≤ 1`, so each weight moves by at most
    /// `lr·input`, each bias by `lr`. Returns the bound to [`FiniteGuard::commit_head`].
    pub(crate) fn check_head(&mut self, input: f32, lr: f32, head: &SoftmaxHead) -> Option<Bound> {
        let grow = |b: Bound| Bound {
            weight: b.weight + f64::from(lr) * f64::from(input),
            bias: b.bias + f64::from(lr),
            ..b
        };
        let within = |b: &Bound| b.weight <= self.head_limit && b.bias <= self.head_limit;
        let next = grow(self.head);
        if within(&next) {
            return Some(next);
        }
        self.head = measure_head(head);
        Some(grow(self.head)).filter(within)
    }

    /// Makes a head bound from [`FiniteGuard::check_head`] current.
    pub(crate) fn commit_head(&mut self, bound: Bound) {
        self.head = bound;
    }
}

/// The parameter limit of a layer `[out, in]` (see the module docs).
fn layer_limit(outputs: usize, inputs: usize) -> f64 {
    0.5 * (f64::from(f32::MAX) / outputs.max(1) as f64).sqrt() / (inputs as f64 + 1.0)
}

/// The bound after one update, or `None` if it could exceed `limit`.
fn step(
    b: Bound,
    terms: [Option<TermSize>; 2],
    lr: f32,
    opt: &OptimiserConfig,
    limit: f64,
) -> Option<Bound> {
    let (mut grad_w, mut grad_b) = (0.0f64, 0.0f64);
    for (dz, x) in terms.into_iter().flatten() {
        grad_w += f64::from(dz) * f64::from(x);
        grad_b += f64::from(dz);
    }
    let (lr, wd) = (f64::from(lr), f64::from(opt.weight_decay));
    let next = if opt.momentum > 0.0 {
        let beta = f64::from(opt.momentum);
        let velocity_weight = beta * b.velocity_weight + grad_w + wd * b.weight;
        let velocity_bias = beta * b.velocity_bias + grad_b;
        Bound {
            weight: b.weight + lr * velocity_weight,
            bias: b.bias + lr * velocity_bias,
            velocity_weight,
            velocity_bias,
        }
    } else {
        Bound {
            weight: (1.0 - lr * wd).abs() * b.weight + lr * grad_w,
            bias: b.bias + lr * grad_b,
            ..b
        }
    };
    // NaN is over every limit.
    let over = |x: f64, limit: f64| x.is_nan() || x > limit;
    if over(next.weight, limit)
        || over(next.bias, limit)
        || over(next.velocity_weight, VELOCITY_LIMIT)
        || over(next.velocity_bias, VELOCITY_LIMIT)
    {
        return None;
    }
    Some(next)
}

fn measure((layer, state): (&Layer, &LayerState)) -> Bound {
    Bound {
        weight: max_abs_f64(layer.weight.as_slice().unwrap_or(&[f32::INFINITY])),
        bias: max_abs_f64(layer.bias.as_slice().unwrap_or(&[f32::INFINITY])),
        velocity_weight: max_abs_f64(&state.velocity_weight),
        velocity_bias: max_abs_f64(&state.velocity_bias),
    }
}

fn measure_head(head: &SoftmaxHead) -> Bound {
    Bound {
        weight: max_abs_f64(head.weight.as_slice().unwrap_or(&[f32::INFINITY])),
        bias: max_abs_f64(head.bias.as_slice().unwrap_or(&[f32::INFINITY])),
        ..Default::default()
    }
}
