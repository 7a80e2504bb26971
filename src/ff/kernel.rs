//! The numeric kernels behind every layer: dot products and row updates over contiguous `f32`
//! slices. They write into caller-owned outputs and never allocate.
//!
//! Batch size 1 makes FF memory-bound: every sample streams each weight row through the cache a
//! few times. The kernels therefore fuse work per row (several dot products per load of a row;
//! decay, positive and negative terms in one read-modify-write) and use AVX2+FMA when the CPU has
//! it, chosen once at run time, with a portable fallback that LLVM auto-vectorises.

use std::sync::OnceLock;

/// Whether the AVX2+FMA paths may be used; detected once.
#[inline]
fn use_avx2() -> bool {
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `Σ a_i b_i`.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::dot(a, b) };
    }
    portable::dot(a, b)
}

/// `out[k] = row · xs[k]` for each of the `out.len()` vectors stored back to back in `xs`
/// (`xs.len() == out.len() * row.len()`): one pass over `row` serves every vector.
#[inline]
pub fn dot_many(row: &[f32], xs: &[f32], out: &mut [f32]) {
    let n = row.len();
    debug_assert_eq!(xs.len(), out.len() * n);
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        let mut k = 0;
        while k + 4 <= out.len() {
            // SAFETY: AVX2 and FMA are available; the four slices have length n.
            let r = unsafe {
                avx2::dot4(
                    row,
                    &xs[k * n..(k + 1) * n],
                    &xs[(k + 1) * n..(k + 2) * n],
                    &xs[(k + 2) * n..(k + 3) * n],
                    &xs[(k + 3) * n..(k + 4) * n],
                )
            };
            out[k..k + 4].copy_from_slice(&r);
            k += 4;
        }
        if k + 2 <= out.len() {
            // SAFETY: as above.
            let r =
                unsafe { avx2::dot2(row, &xs[k * n..(k + 1) * n], &xs[(k + 1) * n..(k + 2) * n]) };
            out[k..k + 2].copy_from_slice(&r);
            k += 2;
        }
        if k < out.len() {
            // SAFETY: as above.
            out[k] = unsafe { avx2::dot(row, &xs[k * n..(k + 1) * n]) };
        }
        return;
    }
    portable::dot_many(row, xs, out);
}

/// `row = decay·row − (a·x + c·y)`: one read-modify-write of a weight row for a positive
/// (`a`, `x`) and a negative (`c`, `y`) term. The caller folds the learning rate into `a`, `c`.
#[inline]
pub fn update_row2(row: &mut [f32], decay: f32, a: f32, x: &[f32], c: f32, y: &[f32]) {
    debug_assert_eq!(row.len(), x.len());
    debug_assert_eq!(row.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2 and FMA are available; lengths are equal.
        unsafe { avx2::update_row2(row, decay, a, x, c, y) };
        return;
    }
    portable::update_row2(row, decay, a, x, c, y);
}

/// `row = decay·row − a·x`: the single-term form of [`update_row2`].
#[inline]
pub fn update_row1(row: &mut [f32], decay: f32, a: f32, x: &[f32]) {
    debug_assert_eq!(row.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2 and FMA are available; lengths are equal.
        unsafe { avx2::update_row1(row, decay, a, x) };
        return;
    }
    portable::update_row1(row, decay, a, x);
}

/// `v = β·v + (a·x + c·y + wd·w); w = w − lr·v`: heavy-ball momentum on one row, gradient
/// built in place so no gradient matrix is ever materialised.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn momentum_row2(
    w: &mut [f32],
    v: &mut [f32],
    beta: f32,
    lr: f32,
    wd: f32,
    a: f32,
    x: &[f32],
    c: f32,
    y: &[f32],
) {
    debug_assert_eq!(w.len(), v.len());
    for (((wi, vi), &xi), &yi) in w.iter_mut().zip(v.iter_mut()).zip(x).zip(y) {
        let g = a * xi + c * yi + wd * *wi;
        *vi = beta * *vi + g;
        *wi -= lr * *vi;
    }
}

/// `y += a·x`.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Writes `x / (sqrt(mean(x²)) + eps)` into `out` and returns the divisor
/// (docs/algorithm.md §1.1: RMS normalisation, so `Σ out² ≈ len`).
#[inline]
pub fn rms_normalise(x: &[f32], eps: f32, out: &mut [f32]) -> f32 {
    debug_assert_eq!(x.len(), out.len());
    let r = rms(dot(x, x), x.len(), eps);
    let inv = 1.0 / r;
    for (o, &xi) in out.iter_mut().zip(x) {
        *o = xi * inv;
    }
    r
}

/// The RMS divisor `sqrt(sum_sq / n) + eps`.
#[inline]
pub fn rms(sum_sq: f32, n: usize, eps: f32) -> f32 {
    (sum_sq / n as f32).sqrt() + eps
}

mod portable {
    /// Eight independent accumulators so LLVM can vectorise without reassociating.
    #[inline]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let ca = a.chunks_exact(8);
        let cb = b.chunks_exact(8);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i];
            }
        }
        let mut s: f32 = acc.iter().sum();
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        s
    }

    #[inline]
    pub fn dot_many(row: &[f32], xs: &[f32], out: &mut [f32]) {
        let n = row.len();
        for (k, o) in out.iter_mut().enumerate() {
            *o = dot(row, &xs[k * n..(k + 1) * n]);
        }
    }

    #[inline]
    pub fn update_row2(row: &mut [f32], decay: f32, a: f32, x: &[f32], c: f32, y: &[f32]) {
        for ((w, &xi), &yi) in row.iter_mut().zip(x).zip(y) {
            *w = decay * *w - (a * xi + c * yi);
        }
    }

    #[inline]
    pub fn update_row1(row: &mut [f32], decay: f32, a: f32, x: &[f32]) {
        for (w, &xi) in row.iter_mut().zip(x) {
            *w = decay * *w - a * xi;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Four accumulators: an FMA has a latency of ~4 cycles, so fewer would leave the
    /// pipeline waiting on the previous sum.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, acc) in acc.iter_mut().enumerate() {
                let o = i + 8 * k;
                *acc =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *acc);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// Two dot products sharing each load of `r`, two accumulators each.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot2(r: &[f32], x0: &[f32], x1: &[f32]) -> [f32; 2] {
        let n = r.len();
        debug_assert!(x0.len() == n && x1.len() == n);
        let (pr, p0, p1) = (r.as_ptr(), x0.as_ptr(), x1.as_ptr());
        let mut a = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 16 <= n {
            let w0 = _mm256_loadu_ps(pr.add(i));
            let w1 = _mm256_loadu_ps(pr.add(i + 8));
            a[0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0.add(i)), a[0]);
            a[1] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p1.add(i)), a[1]);
            a[2] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p0.add(i + 8)), a[2]);
            a[3] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1.add(i + 8)), a[3]);
            i += 16;
        }
        while i + 8 <= n {
            let w = _mm256_loadu_ps(pr.add(i));
            a[0] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p0.add(i)), a[0]);
            a[1] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p1.add(i)), a[1]);
            i += 8;
        }
        let mut out = [
            hsum(_mm256_add_ps(a[0], a[2])),
            hsum(_mm256_add_ps(a[1], a[3])),
        ];
        while i < n {
            let w = *pr.add(i);
            out[0] += w * *p0.add(i);
            out[1] += w * *p1.add(i);
            i += 1;
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(r: &[f32], x0: &[f32], x1: &[f32], x2: &[f32], x3: &[f32]) -> [f32; 4] {
        let n = r.len();
        debug_assert!(x0.len() == n && x1.len() == n && x2.len() == n && x3.len() == n);
        let (pr, p0, p1, p2, p3) = (
            r.as_ptr(),
            x0.as_ptr(),
            x1.as_ptr(),
            x2.as_ptr(),
            x3.as_ptr(),
        );
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
            _mm256_setzero_ps(),
        );
        let mut i = 0;
        while i + 8 <= n {
            let w = _mm256_loadu_ps(pr.add(i));
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(p0.add(i)), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(p1.add(i)), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(p2.add(i)), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(p3.add(i)), a3);
            i += 8;
        }
        let mut out = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
        while i < n {
            let w = *pr.add(i);
            out[0] += w * *p0.add(i);
            out[1] += w * *p1.add(i);
            out[2] += w * *p2.add(i);
            out[3] += w * *p3.add(i);
            i += 1;
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn update_row2(row: &mut [f32], decay: f32, a: f32, x: &[f32], c: f32, y: &[f32]) {
        let n = row.len();
        let (pw, px, py) = (row.as_mut_ptr(), x.as_ptr(), y.as_ptr());
        let (vd, va, vc) = (_mm256_set1_ps(decay), _mm256_set1_ps(a), _mm256_set1_ps(c));
        let mut i = 0;
        while i + 8 <= n {
            let g = _mm256_fmadd_ps(
                va,
                _mm256_loadu_ps(px.add(i)),
                _mm256_mul_ps(vc, _mm256_loadu_ps(py.add(i))),
            );
            let w = _mm256_fmsub_ps(vd, _mm256_loadu_ps(pw.add(i)), g);
            _mm256_storeu_ps(pw.add(i), w);
            i += 8;
        }
        while i < n {
            *pw.add(i) = decay * *pw.add(i) - (a * *px.add(i) + c * *py.add(i));
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn update_row1(row: &mut [f32], decay: f32, a: f32, x: &[f32]) {
        let n = row.len();
        let (pw, px) = (row.as_mut_ptr(), x.as_ptr());
        let (vd, va) = (_mm256_set1_ps(decay), _mm256_set1_ps(a));
        let mut i = 0;
        while i + 8 <= n {
            let g = _mm256_mul_ps(va, _mm256_loadu_ps(px.add(i)));
            let w = _mm256_fmsub_ps(vd, _mm256_loadu_ps(pw.add(i)), g);
            _mm256_storeu_ps(pw.add(i), w);
            i += 8;
        }
        while i < n {
            *pw.add(i) = decay * *pw.add(i) - a * *px.add(i);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * s).sin()).collect()
    }

    #[test]
    fn dot_matches_naive_on_odd_lengths() {
        for n in [0, 1, 7, 8, 15, 16, 17, 33, 794] {
            let (a, b) = (seq(n, 0.3), seq(n, 0.7));
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
        }
    }

    #[test]
    fn dot_many_matches_dot() {
        let n = 37;
        let row = seq(n, 0.11);
        let xs = seq(n * 7, 0.05);
        let mut out = vec![0.0; 7];
        dot_many(&row, &xs, &mut out);
        for k in 0..7 {
            assert!((out[k] - dot(&row, &xs[k * n..(k + 1) * n])).abs() < 1e-5);
        }
    }

    #[test]
    fn updates_match_naive() {
        let n = 29;
        let (x, y) = (seq(n, 0.2), seq(n, 0.9));
        let mut w = seq(n, 0.4);
        let mut expect = w.clone();
        for i in 0..n {
            expect[i] = 0.99 * expect[i] - (0.1 * x[i] + -0.3 * y[i]);
        }
        update_row2(&mut w, 0.99, 0.1, &x, -0.3, &y);
        for i in 0..n {
            assert!((w[i] - expect[i]).abs() < 1e-6);
        }
        let mut w1 = seq(n, 0.4);
        update_row1(&mut w1, 0.5, 0.2, &x);
        for i in 0..n {
            assert!((w1[i] - (0.5 * seq(n, 0.4)[i] - 0.2 * x[i])).abs() < 1e-6);
        }
    }

    /// The portable kernels, which run on CPUs without AVX2+FMA, agree with the naive sums
    /// (and so with the AVX2 kernels, which the tests above check on CPUs that have them).
    /// Called directly, so they are tested on every machine.
    #[test]
    fn portable_kernels_match_naive() {
        for n in [0, 1, 7, 8, 15, 16, 17, 33, 794] {
            let (a, b) = (seq(n, 0.3), seq(n, 0.7));
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((portable::dot(&a, &b) - naive).abs() < 1e-4, "n={n}");
            let xs = seq(n * 3, 0.05);
            let mut out = [0.0; 3];
            portable::dot_many(&a, &xs, &mut out);
            for (k, o) in out.iter().enumerate() {
                let naive: f32 = a.iter().zip(&xs[k * n..]).map(|(x, y)| x * y).sum();
                assert!((o - naive).abs() < 1e-4, "n={n} k={k}");
            }
            let (mut w2, mut w1) = (seq(n, 0.4), seq(n, 0.4));
            portable::update_row2(&mut w2, 0.99, 0.1, &a, -0.3, &b);
            portable::update_row1(&mut w1, 0.5, 0.2, &a);
            let w = seq(n, 0.4);
            for i in 0..n {
                assert!((w2[i] - (0.99 * w[i] - (0.1 * a[i] - 0.3 * b[i]))).abs() < 1e-6);
                assert!((w1[i] - (0.5 * w[i] - 0.2 * a[i])).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn rms_normalise_gives_unit_mean_square() {
        let x = seq(100, 0.37);
        let mut out = vec![0.0; 100];
        rms_normalise(&x, 1e-8, &mut out);
        let ms = dot(&out, &out) / 100.0;
        assert!((ms - 1.0).abs() < 1e-4);
    }
}
