//! Augmentation for offline training: every time a training image is learned, it is first
//! translated by a random whole number of pixels.
//!
//! Why translations: they are the "jittered" digits of the Forward-Forward paper (its 0.64 %
//! MNIST result) and the one-pixel shifts of other public FF implementations. They change what
//! a fully connected layer sees while keeping the label true, which is what an overfitting net
//! needs, and cost one copy of the image per sample. Only `ffd train` uses this; a stream
//! learned by `ffd serve` is never altered.

use rand::Rng;

/// Random translations of images of one shape by up to `max` pixels on each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    max: usize,
    rows: usize,
    cols: usize,
}

/// Why a [`Shift`] cannot be made for an image shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShiftError {
    /// A shift as wide as the image would leave nothing of it.
    #[error("a shift of up to {max} pixels does not fit images of {rows}x{cols} pixels (it must be smaller than each side)")]
    TooWide {
        /// The asked-for largest shift.
        max: usize,
        /// Image height.
        rows: usize,
        /// Image width.
        cols: usize,
    },
}

impl Shift {
    /// Shifts of `-max..=max` pixels along each axis of `rows × cols` images, every one of the
    /// `(2·max + 1)²` offsets equally likely.
    pub fn new(max: usize, (rows, cols): (usize, usize)) -> Result<Self, ShiftError> {
        if max >= rows || max >= cols {
            return Err(ShiftError::TooWide { max, rows, cols });
        }
        Ok(Self { max, rows, cols })
    }

    /// Writes `image` translated by a random offset into `out` (both `rows · cols` long) and
    /// returns it.
    pub fn apply<'a>(&self, image: &[f32], rng: &mut impl Rng, out: &'a mut Vec<f32>) -> &'a [f32] {
        let max = self.max as isize;
        let dy = rng.gen_range(-max..=max);
        let dx = rng.gen_range(-max..=max);
        translate(image, (self.rows, self.cols), (dy, dx), out);
        out
    }
}

/// `out[r][c] = image[r − dy][c − dx]`, 0 where that pixel lies outside the image: the picture
/// moves down by `dy` and right by `dx`. `out` is cleared and filled to `rows · cols` values.
///
/// Panics if `image.len() != rows · cols`: a shape mismatch here is a bug of the caller, which
/// checked the data set's shape once at the start.
pub fn translate(
    image: &[f32],
    (rows, cols): (usize, usize),
    (dy, dx): (isize, isize),
    out: &mut Vec<f32>,
) {
    assert_eq!(image.len(), rows * cols, "image of the wrong shape");
    out.clear();
    out.resize(rows * cols, 0.0);
    // The destination columns whose source column `c − dx` lies in `0..cols`.
    let first_col = dx.max(0).unsigned_abs().min(cols);
    let last_col = (cols as isize + dx.min(0)).max(0) as usize;
    if first_col >= last_col {
        return;
    }
    for r in 0..rows {
        let source_row = r as isize - dy;
        if !(0..rows as isize).contains(&source_row) {
            continue;
        }
        let source = source_row as usize * cols;
        let from = (source as isize + first_col as isize - dx) as usize;
        out[r * cols + first_col..r * cols + last_col]
            .copy_from_slice(&image[from..from + (last_col - first_col)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// The definition, pixel by pixel.
    fn reference(image: &[f32], rows: usize, cols: usize, dy: isize, dx: isize) -> Vec<f32> {
        let mut out = vec![0.0; rows * cols];
        for r in 0..rows as isize {
            for c in 0..cols as isize {
                let (sr, sc) = (r - dy, c - dx);
                if (0..rows as isize).contains(&sr) && (0..cols as isize).contains(&sc) {
                    out[(r * cols as isize + c) as usize] =
                        image[(sr * cols as isize + sc) as usize];
                }
            }
        }
        out
    }

    #[test]
    fn translation_matches_the_pixel_by_pixel_definition() {
        let (rows, cols) = (5, 7);
        let image: Vec<f32> = (0..rows * cols).map(|i| i as f32 + 1.0).collect();
        let mut out = Vec::new();
        for dy in -6..=6 {
            for dx in -8..=8 {
                translate(&image, (rows, cols), (dy, dx), &mut out);
                assert_eq!(
                    out,
                    reference(&image, rows, cols, dy, dx),
                    "dy {dy}, dx {dx}"
                );
            }
        }
        translate(&image, (rows, cols), (0, 0), &mut out);
        assert_eq!(out, image, "no shift is the identity");
    }

    #[test]
    fn random_shifts_stay_within_max_and_reach_every_offset() {
        let (rows, cols) = (6, 6);
        // One lit pixel in the middle: where it lands gives the offset drawn.
        let mut image = vec![0.0; rows * cols];
        image[3 * cols + 3] = 1.0;
        let shift = Shift::new(2, (rows, cols)).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        let mut buf = Vec::new();
        for _ in 0..2000 {
            let out = shift.apply(&image, &mut rng, &mut buf);
            let at = out.iter().position(|&v| v == 1.0).unwrap();
            let (dy, dx) = (at as isize / 6 - 3, at as isize % 6 - 3);
            assert!(dy.abs() <= 2 && dx.abs() <= 2, "offset ({dy}, {dx})");
            seen.insert((dy, dx));
        }
        assert_eq!(seen.len(), 25, "every offset of -2..=2 on both axes");
    }

    #[test]
    fn a_shift_as_wide_as_the_image_is_refused() {
        assert!(Shift::new(2, (28, 28)).is_ok());
        assert_eq!(
            Shift::new(4, (4, 28)),
            Err(ShiftError::TooWide {
                max: 4,
                rows: 4,
                cols: 28
            })
        );
    }
}
