//! Mini-batch mode (`batch_size > 1`, offline training only): each sample's gradients are
//! summed per layer and applied, averaged, once per full batch. Batch size 1, the streaming
//! path, never comes here: its update stays pending (see `pending`).

use crate::ff::kernel;

use super::{Pending, Trainer};

impl Trainer {
    /// Mini-batch mode: adds one sample's gradients to the batch sums; applies them, averaged,
    /// once the batch is full.
    pub(super) fn accumulate(&mut self, p: Pending) {
        let ws = &self.ws[self.cur];
        for (l, (gw, gb)) in self.batch_grad.iter_mut().enumerate() {
            let n = self.model.layers[l].inputs();
            for (i, slot) in [(0, p.positive), (1, p.negative)] {
                let Some(slot) = slot else { continue };
                let (dz, x) = (&ws.dz[i][l], ws.layer_input(l, i, slot, n));
                for (j, (&d, b)) in dz.iter().zip(gb.iter_mut()).enumerate() {
                    kernel::update_row1(&mut gw[j * n..(j + 1) * n], 1.0, -d, x);
                    *b += d;
                }
            }
        }
        self.batch_count += 1;
        if self.batch_count >= self.config.batch_size {
            self.apply_batch(p.lr);
        }
    }

    /// Applies the averaged batch gradient and clears it.
    pub(super) fn apply_batch(&mut self, lr: f32) {
        if self.batch_count == 0 {
            return;
        }
        let scale = 1.0 / self.batch_count as f32;
        let opt = &self.config.optimiser;
        for (l, (gw, gb)) in self.batch_grad.iter_mut().enumerate() {
            let n = self.model.layers[l].inputs();
            // The averaged gradient is one term with unit coefficient per row.
            for j in 0..gb.len() {
                let row_grad = &gw[j * n..(j + 1) * n];
                let layer = &mut self.model.layers[l];
                layer.apply_gradient_row(
                    j,
                    &mut self.states[l],
                    opt,
                    lr,
                    scale,
                    row_grad,
                    gb[j] * scale,
                );
            }
            gw.fill(0.0);
            gb.fill(0.0);
        }
        self.batch_count = 0;
    }
}
