//! `Goodness`: how a layer scores its activity, and the local loss built on it
//! (docs/algorithm.md §1.3–§1.6). Positive data should have `G > θ`, negative data `G < θ`.

use serde::{Deserialize, Serialize};

/// Whether a sample is real data (raise goodness) or negative data (lower it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Polarity {
    Positive,
    Negative,
}

/// The goodness of a layer's activity `h`, `G = Σ h²`, and the logistic model of "positive"
/// `p = σ((G − θ)/T)` on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodness {
    /// `θ`: the goodness at which a sample is judged 50/50 positive.
    pub threshold: f32,
    /// `T`: the logistic temperature.
    pub temperature: f32,
}

impl Goodness {
    /// `G = Σ h²`.
    #[inline]
    pub fn of(h: &[f32]) -> f32 {
        crate::ff::kernel::dot(h, h)
    }

    /// `p = σ((G − θ)/T)`, the probability that the input is positive data.
    #[inline]
    pub fn probability(&self, g: f32) -> f32 {
        sigmoid((g - self.threshold) / self.temperature)
    }

    /// The local loss: `softplus((θ − G)/T)` for positive data, `softplus((G − θ)/T)` for
    /// negative data (i.e. `−log p` and `−log(1 − p)`).
    #[inline]
    pub fn loss(&self, g: f32, polarity: Polarity) -> f32 {
        let m = (g - self.threshold) / self.temperature;
        match polarity {
            Polarity::Positive => softplus(-m),
            Polarity::Negative => softplus(m),
        }
    }

    /// `dLoss/dG`: `−(1 − p)/T` for positive data, `p/T` for negative data.
    #[inline]
    pub fn dloss_dg(&self, g: f32, polarity: Polarity) -> f32 {
        let p = self.probability(g);
        match polarity {
            Polarity::Positive => -(1.0 - p) / self.temperature,
            Polarity::Negative => p / self.temperature,
        }
    }

    /// The logit `(G − θ)/T`, the per-layer evidence summed by goodness classification.
    #[inline]
    pub fn logit(&self, g: f32) -> f32 {
        self.logit_against(g, self.threshold)
    }

    /// The logit `(G − t)/T` against another threshold `t` (a positive's goodness under the
    /// symmetric sleep).
    #[inline]
    pub fn logit_against(&self, g: f32, t: f32) -> f32 {
        (g - t) / self.temperature
    }

    /// Layer collaboration: the threshold `t − T·others` at which this layer's own loss, with
    /// the logits of the other layers (`others`, constants) added to its own, is the loss of
    /// the summed logit `(G − t)/T + others`. The gradient still reaches this layer only.
    #[inline]
    pub fn collaborative_threshold(&self, t: f32, others: f32) -> f32 {
        t - self.temperature * others
    }
}

/// `σ(x) = 1/(1 + e^(−x))`, stable for large `|x|`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `softplus(x) = log(1 + e^x)`, stable for large `|x|`.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivative_matches_finite_difference() {
        let g = Goodness {
            threshold: 10.0,
            temperature: 2.0,
        };
        for &x in &[3.0f32, 9.5, 10.0, 12.0, 30.0] {
            for pol in [Polarity::Positive, Polarity::Negative] {
                let h = 1e-2;
                let fd = (g.loss(x + h, pol) - g.loss(x - h, pol)) / (2.0 * h);
                assert!((fd - g.dloss_dg(x, pol)).abs() < 1e-3, "{x} {pol:?}");
            }
        }
    }

    /// Reference: the collaborative loss of layer `l` is `softplus(∓(G_l − θ_l)/T_l ∓ c)` with
    /// `c` the other layers' summed logits, held constant; its derivative in `G_l` is the
    /// finite difference of that expression.
    #[test]
    fn the_collaborative_threshold_gives_the_loss_of_the_summed_logit() {
        let g = Goodness {
            threshold: 10.0,
            temperature: 2.0,
        };
        for others in [-3.0f32, 0.0, 1.5] {
            let shifted = Goodness {
                threshold: g.collaborative_threshold(g.threshold, others),
                ..g
            };
            for x in [6.0f32, 10.0, 13.0] {
                let summed = g.logit(x) + others;
                assert!((shifted.loss(x, Polarity::Positive) - softplus(-summed)).abs() < 1e-5);
                assert!((shifted.loss(x, Polarity::Negative) - softplus(summed)).abs() < 1e-5);
                for pol in [Polarity::Positive, Polarity::Negative] {
                    let sign = if pol == Polarity::Positive { -1.0 } else { 1.0 };
                    let reference = |x: f32| softplus(sign * (g.logit(x) + others));
                    let h = 1e-2;
                    let fd = (reference(x + h) - reference(x - h)) / (2.0 * h);
                    assert!(
                        (fd - shifted.dloss_dg(x, pol)).abs() < 1e-3,
                        "{x} {others} {pol:?}"
                    );
                }
            }
        }
        // No other layer: the threshold is unchanged, bit for bit.
        assert_eq!(g.collaborative_threshold(g.threshold, 0.0), g.threshold);
    }

    #[test]
    fn stable_at_extremes() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0);
    }
}
