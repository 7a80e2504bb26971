//! The pending update: batch size 1 applies a sample's update inside the next sample's first
//! forward pass, row by row, just before the pass reads each row (see [`Pending`]). Also the
//! explicit way to apply it at once (`Trainer::settle`).

use crate::ff::layer::{Layer, LayerBand, Term};
use crate::ff::model::{BandRows, Rows, Workspace};
use crate::ff::optimiser::{LayerState, OptimiserConfig};

use super::Trainer;

impl Trainer {
    /// Applies the pending update, if any, in a pass of its own (and a partial mini-batch).
    pub(super) fn apply_pending(&mut self) {
        if !self.batch_grad.is_empty() {
            let lr = self.lr_after(self.samples);
            self.apply_batch(lr);
        }
        let Some(pending) = self.pending.take() else {
            return;
        };
        let mut rows = Updating {
            layers: &mut self.model.layers,
            states: &mut self.states,
            optimiser: &self.config.optimiser,
            ws: &self.ws[self.cur],
            pending,
        };
        for (l, &m) in self.model.config.hidden.iter().enumerate() {
            for j in 0..m {
                rows.row(l, j);
            }
        }
    }
}

/// An update whose gradients are computed (in the workspace that holds its forward pass) but
/// not yet applied. Batch size 1 is memory-bound: applying it inside the next sample's first
/// forward pass touches each weight row once for both, instead of twice. The arithmetic and its
/// order are unchanged, so results are bit-identical to applying it at once; anything that
/// reads the weights from outside (`model()`, snapshots, checkpoints) calls `settle` first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    /// Workspace slot of the positive term, if any.
    pub(super) positive: Option<usize>,
    /// Workspace slot of the negative term, if any.
    pub(super) negative: Option<usize>,
    /// Learning rate of the step that staged it.
    pub(super) lr: f32,
}

/// Rows that get the pending update applied as the forward pass reaches them.
pub(super) struct Updating<'a> {
    pub(super) layers: &'a mut [Layer],
    pub(super) states: &'a mut [LayerState],
    pub(super) optimiser: &'a OptimiserConfig,
    /// The workspace holding the pending update's forward pass and gradients.
    pub(super) ws: &'a Workspace,
    pub(super) pending: Pending,
}

/// Layer `l`'s terms of `pending`, whose gradients and inputs `ws` holds (`n`: the layer's
/// input width): the first one present, and the second if both are (`None` when the step
/// learned nothing).
#[inline]
fn terms(
    ws: &Workspace,
    pending: Pending,
    l: usize,
    n: usize,
) -> Option<(Term<'_>, Option<Term<'_>>)> {
    let term = |i: usize, slot: Option<usize>| {
        slot.map(|s| Term {
            dz: &ws.dz[i][l],
            input: ws.layer_input(l, i, s, n),
        })
    };
    match (term(0, pending.positive), term(1, pending.negative)) {
        (Some(a), b) => Some((a, b)),
        (None, Some(b)) => Some((b, None)),
        (None, None) => None,
    }
}

impl Rows for Updating<'_> {
    type Band<'b>
        = UpdatingBand<'b>
    where
        Self: 'b;

    #[inline]
    fn row(&mut self, l: usize, j: usize) -> (&[f32], f32) {
        let Some((t0, t1)) = terms(self.ws, self.pending, l, self.layers[l].inputs()) else {
            return (self.layers[l].row(j), self.layers[l].bias[j]);
        };
        self.layers[l].apply_row(
            j,
            &mut self.states[l],
            self.optimiser,
            self.pending.lr,
            t0,
            t1,
        )
    }

    fn bands<'s>(
        &'s mut self,
        l: usize,
        cuts: &[usize],
        put: &mut dyn FnMut(usize, UpdatingBand<'s>),
    ) {
        let terms = terms(self.ws, self.pending, l, self.layers[l].inputs());
        let (optimiser, lr) = (self.optimiser, self.pending.lr);
        self.layers[l].bands(&mut self.states[l], cuts, |b, band| {
            put(
                b,
                UpdatingBand {
                    band,
                    optimiser,
                    lr,
                    terms,
                },
            )
        });
    }
}

/// One band of a layer getting the pending update as a banded forward pass reaches its rows.
pub(super) struct UpdatingBand<'a> {
    band: LayerBand<'a>,
    optimiser: &'a OptimiserConfig,
    lr: f32,
    terms: Option<(Term<'a>, Option<Term<'a>>)>,
}

impl BandRows for UpdatingBand<'_> {
    #[inline]
    fn row(&mut self, j: usize) -> (&[f32], f32) {
        match self.terms {
            Some((t0, t1)) => self.band.apply_row(j, self.optimiser, self.lr, t0, t1),
            None => self.band.row(j),
        }
    }
}
