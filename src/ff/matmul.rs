//! Matrix–matrix products for mini-batches: `C = α·op(A)·op(B) + β·C` over row-major `f32`
//! slices, optionally split over threads. Batch size 1 streams every weight once per sample
//! (memory-bound); a batch reads each weight once for all its rows, so the work becomes
//! compute-bound and a real GEMM kernel pays.
//!
//! The kernel is `matrixmultiply` (through ndarray's `general_mat_mul`, which hands it any
//! strides): packed, cache-blocked, with AVX-512, AVX2+FMA, AVX, NEON and portable kernels
//! chosen at run time. Measured against `gemm` and this core's FMA peak in BENCHMARKS.md §7.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};

/// How an operand is stored relative to the product: as is (`[rows, cols]` row-major) or as
/// the transpose of a row-major matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The slice holds `op(X)` itself, row-major.
    N,
    /// The slice holds `op(X)ᵀ` row-major (e.g. weights `[out, in]` when the product needs
    /// `[in, out]`).
    T,
}

/// A view of `op(X)`, `[rows, cols]`, over `data` stored as `op` says.
fn view(data: &[f32], rows: usize, cols: usize, op: Op) -> ArrayView2<'_, f32> {
    let shape = match op {
        Op::N => (rows, cols).strides((cols, 1)),
        Op::T => (rows, cols).strides((1, rows)),
    };
    ArrayView2::from_shape(shape, data).expect("operand length checked by the caller")
}

/// `C = α·op(A)·op(B) + β·C` with `op(A)` `[m, k]`, `op(B)` `[k, n]` and `C` `[m, n]`, all
/// row-major. With `threads > 1` the rows of `C` (and of `op(A)`) are split into that many
/// bands computed in parallel; each band reads all of `op(B)`. `β = 0` ignores what `C` held.
///
/// Panics if a slice's length does not match its shape (a caller bug: the batch code sizes
/// every buffer from the model's configuration).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
    threads: usize,
) {
    assert_eq!(a.len(), m * k, "gemm: A is not [m, k]");
    assert_eq!(b.len(), k * n, "gemm: B is not [k, n]");
    assert_eq!(c.len(), m * n, "gemm: C is not [m, n]");
    let a = view(a, m, k, op_a);
    let b = view(b, k, n, op_b);
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("length checked above");
    // A band thinner than a few micro-kernel tiles costs more in thread start-up than it saves.
    let threads = threads.clamp(1, (m / 32).max(1));
    if threads == 1 {
        general_mat_mul(alpha, &a, &b, beta, &mut c);
        return;
    }
    let band = m.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut rest_a = a;
        let mut rest_c = c;
        while rest_c.nrows() > band {
            let (a0, a1) = rest_a.split_at(Axis(0), band);
            let (c0, c1) = rest_c.split_at(Axis(0), band);
            let b = b.view();
            scope.spawn(move || {
                let mut c0 = c0;
                general_mat_mul(alpha, &a0, &b, beta, &mut c0);
            });
            rest_a = a1;
            rest_c = c1;
        }
        general_mat_mul(alpha, &rest_a, &b, beta, &mut rest_c);
    });
}

/// `C = α·op(A)·op(B) + β·C` by the textbook triple loop in `f64`: the reference the tests
/// compare [`gemm`] and the batch paths against. Slow; never used outside tests.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
) {
    let at = |i: usize, p: usize| match op_a {
        Op::N => a[i * k + p],
        Op::T => a[p * m + i],
    };
    let bt = |p: usize, j: usize| match op_b {
        Op::N => b[p * n + j],
        Op::T => b[j * k + p],
    };
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|p| f64::from(at(i, p)) * f64::from(bt(p, j)))
                .sum();
            let prev = if beta == 0.0 {
                0.0
            } else {
                f64::from(beta) * f64::from(c[i * n + j])
            };
            c[i * n + j] = (f64::from(alpha) * s + prev) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * s).sin()).collect()
    }

    /// Every layout, odd shapes (partial micro-kernel tiles on every edge), `β` 0 and not 0,
    /// one and three threads: equal to the `f64` triple loop within `1e-5·k`.
    #[test]
    fn gemm_matches_the_triple_loop() {
        for (m, n, k) in [(1, 1, 1), (7, 5, 3), (33, 17, 29), (100, 37, 71)] {
            for (op_a, op_b) in [
                (Op::N, Op::N),
                (Op::N, Op::T),
                (Op::T, Op::N),
                (Op::T, Op::T),
            ] {
                for (alpha, beta) in [(1.0, 0.0), (-0.5, 0.9)] {
                    for threads in [1, 3] {
                        let (a, b) = (seq(m * k, 0.37), seq(k * n, 0.11));
                        let mut c = seq(m * n, 0.05);
                        let mut expect = c.clone();
                        gemm((m, n, k), alpha, &a, op_a, &b, op_b, beta, &mut c, threads);
                        reference((m, n, k), alpha, &a, op_a, &b, op_b, beta, &mut expect);
                        for (x, y) in c.iter().zip(&expect) {
                            assert!(
                                (x - y).abs() <= 1e-5 * k as f32,
                                "{m}x{n}x{k} {op_a:?}{op_b:?} t{threads}: {x} vs {y}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// `β = 0` ignores non-finite garbage in `C` (buffers are reused between batches).
    #[test]
    fn zero_beta_overwrites_c() {
        let (a, b) = (seq(6, 0.3), seq(6, 0.7));
        let mut c = vec![f32::NAN; 4];
        gemm((2, 2, 3), 1.0, &a, Op::N, &b, Op::N, 0.0, &mut c, 1);
        assert!(c.iter().all(|x| x.is_finite()));
    }
}
