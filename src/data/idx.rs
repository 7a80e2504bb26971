//! MNIST in the IDX format, gzipped or raw (gzip is recognised by its magic bytes, not the name).
//!
//! A file is read whole, capped at [`MAX_FILE_BYTES`], and its length is checked against its header
//! before any sample is decoded: a header cannot make the reader allocate more than the file holds,
//! and no input makes it panic. A file must be exactly header + data; trailing bytes are an error
//! ([`IdxError::TrailingBytes`]) because they mean a wrong count or two files glued together.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// Magic number of an IDX file of unsigned-byte images (type 0x08, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (type 0x08, 1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Number of MNIST classes: labels are the digits `0..10`.
pub const MNIST_CLASSES: usize = 10;
/// Largest file accepted, in bytes after decompression (1 GiB; the full MNIST training images
/// are 47 MB). Bounds memory for gzip bombs and for files that are not IDX at all.
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// Largest image side accepted, in pixels (MNIST: 28).
pub const MAX_IMAGE_SIDE: u32 = 1024;
/// The four standard MNIST file names, each read raw or with a `.gz` suffix: training images,
/// training labels, test images, test labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Header length of an images file: magic, count, rows, cols (big-endian u32 each).
const IMAGES_HEADER_BYTES: usize = 16;
/// Header length of a labels file: magic, count (big-endian u32 each).
const LABELS_HEADER_BYTES: usize = 8;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Where a user who lacks the files can get them; shown when a file is not found.
const MNIST_SOURCE: &str =
    "https://ossci-datasets.s3.amazonaws.com/mnist/ (a mirror of yann.lecun.com/exdb/mnist/)";

/// Why an IDX file or an MNIST directory could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened or read; a missing file is `source.kind() == NotFound`.
    #[error("{}", io_message(.path, .source))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file starts with the gzip magic bytes but does not decompress (corrupt or cut short).
    #[error("{}: corrupt or truncated gzip data: {source}", .path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The (decompressed) file is larger than [`MAX_FILE_BYTES`].
    #[error(
        "{}: file is larger than {limit_bytes} bytes after decompression; not an MNIST-sized IDX file",
        .path.display()
    )]
    TooLarge { path: PathBuf, limit_bytes: u64 },
    /// The first four bytes are not the IDX magic number of the expected kind of file.
    #[error(
        "{}: bad magic number 0x{found:08x}, expected 0x{expected:08x} ({})",
        .path.display(),
        magic_hint(*.expected, *.found)
    )]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    /// The file is shorter than its header (or the header itself) says.
    #[error(
        "{}: truncated: header and data need {expected_bytes} bytes but the file has {found_bytes}",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        expected_bytes: u64,
        found_bytes: u64,
    },
    /// The file is longer than its header says.
    #[error(
        "{}: {} trailing bytes: header and data need {expected_bytes} bytes but the file has {found_bytes}",
        .path.display(),
        .found_bytes.saturating_sub(*.expected_bytes)
    )]
    TrailingBytes {
        path: PathBuf,
        expected_bytes: u64,
        found_bytes: u64,
    },
    /// An image side is 0 or larger than [`MAX_IMAGE_SIDE`].
    #[error(
        "{}: image size {rows}x{cols} is out of range (each side must be 1..={MAX_IMAGE_SIDE})",
        .path.display()
    )]
    BadDimensions { path: PathBuf, rows: u32, cols: u32 },
    /// The images file and the labels file hold different numbers of samples.
    #[error(
        "sample count mismatch: {} has {images} images but {} has {labels} labels",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
    /// A label is not a class index `0..MNIST_CLASSES`.
    #[error(
        "{}: label {label} at index {index} is out of range (classes are 0..{MNIST_CLASSES})",
        .path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
    },
    /// Training and test images have different sizes.
    #[error(
        "image size mismatch: {} has {train_dim} pixels per image but {} has {test_dim}",
        .train_path.display(),
        .test_path.display()
    )]
    DimMismatch {
        train_path: PathBuf,
        train_dim: usize,
        test_path: PathBuf,
        test_dim: usize,
    },
}

/// `Io`'s message: a missing file also gets the list of expected files and where to get them.
fn io_message(path: &Path, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::NotFound {
        format!(
            "{}: file not found ({source}); an MNIST directory holds {}, each raw or gzipped \
             (.gz); download them from {MNIST_SOURCE}",
            path.display(),
            MNIST_FILES.join(", "),
        )
    } else {
        format!("{}: cannot read: {source}", path.display())
    }
}

/// `BadMagic`'s hint: names the usual mix-up (images and labels swapped) or says what was expected.
fn magic_hint(expected: u32, found: u32) -> &'static str {
    match (expected, found) {
        (IMAGES_MAGIC, LABELS_MAGIC) => "this is a labels file where an images file was expected",
        (LABELS_MAGIC, IMAGES_MAGIC) => "this is an images file where a labels file was expected",
        (IMAGES_MAGIC, _) => "not an IDX images file",
        _ => "not an IDX labels file",
    }
}

/// The MNIST training and test sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The training set (60 000 samples in full MNIST).
    pub train: Dataset,
    /// The test set (10 000 samples in full MNIST).
    pub test: Dataset,
}

/// Labelled images as flat features. Invariant kept by the loaders:
/// `features.len() == labels.len() * dim` and every label is `< classes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len() * dim` values, row-major per sample: pixel / 255, in `[0, 1]`.
    pub features: Vec<f32>,
    /// One class index per sample, `< classes`.
    pub labels: Vec<u8>,
    /// Features per sample: rows * cols (784 for MNIST).
    pub dim: usize,
    /// `(rows, cols)` of each image, `rows * cols == dim`: what a geometric augmentation
    /// (`data::augment`) needs to know.
    pub shape: (usize, usize),
    /// Number of classes (10 for MNIST).
    pub classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the dataset holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features and label of sample `i`.
    ///
    /// Panics if `i >= self.len()`, like slice indexing (or if the public fields were edited to
    /// break the invariant).
    pub fn sample(&self, i: usize) -> (&[f32], usize) {
        let start = i * self.dim;
        (
            &self.features[start..start + self.dim],
            usize::from(self.labels[i]),
        )
    }

    /// Keeps the first `n` samples (all of them if `n >= len()`).
    pub fn truncate(&mut self, n: usize) {
        self.labels.truncate(n);
        self.features.truncate(n.saturating_mul(self.dim));
    }
}

/// The pixels of an IDX images file, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// `count * rows * cols` bytes, image after image, each row-major.
    pub pixels: Vec<u8>,
    /// Number of images.
    pub count: usize,
    /// Rows per image, `1..=MAX_IMAGE_SIDE`.
    pub rows: usize,
    /// Columns per image, `1..=MAX_IMAGE_SIDE`.
    pub cols: usize,
}

/// Loads MNIST from `dir`, which holds the four [`MNIST_FILES`], each raw or with `.gz` (the
/// `.gz` one is used if both exist).
///
/// Fails with `Io` (kind `NotFound`) naming the first missing file before reading any, or with
/// the first error of [`load_idx_pair`] for the training then the test pair, or `DimMismatch`
/// if training and test images differ in size.
pub fn load_mnist(dir: &Path) -> Result<Mnist, IdxError> {
    let [train_images, train_labels, test_images, test_labels] = [
        find_file(dir, MNIST_FILES[0])?,
        find_file(dir, MNIST_FILES[1])?,
        find_file(dir, MNIST_FILES[2])?,
        find_file(dir, MNIST_FILES[3])?,
    ];
    let train = load_idx_pair(&train_images, &train_labels)?;
    let test = load_idx_pair(&test_images, &test_labels)?;
    if train.dim != test.dim {
        return Err(IdxError::DimMismatch {
            train_path: train_images,
            train_dim: train.dim,
            test_path: test_images,
            test_dim: test.dim,
        });
    }
    Ok(Mnist { train, test })
}

/// `dir/name.gz` if it exists, else `dir/name` if it exists, else a `NotFound` error on `dir/name`.
fn find_file(dir: &Path, name: &str) -> Result<PathBuf, IdxError> {
    let gz = dir.join(format!("{name}.gz"));
    let raw = dir.join(name);
    for path in [gz, raw.clone()] {
        match path.try_exists() {
            Ok(true) => return Ok(path),
            Ok(false) => {}
            Err(source) => return Err(IdxError::Io { path, source }),
        }
    }
    Err(IdxError::Io {
        path: raw,
        source: io::Error::new(io::ErrorKind::NotFound, format!("also tried {name}.gz")),
    })
}

/// Loads one images file and its labels file as a [`Dataset`] with pixels scaled to `[0, 1]`.
///
/// Fails with any error of [`read_idx_images`] / [`read_idx_labels`], `CountMismatch` if the two
/// counts differ, or `LabelOutOfRange` for the first label `>= MNIST_CLASSES`.
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<Dataset, IdxError> {
    let idx_images = read_idx_images(images)?;
    let idx_labels = read_idx_labels(labels)?;
    if idx_images.count != idx_labels.len() {
        return Err(IdxError::CountMismatch {
            images_path: images.to_path_buf(),
            images: idx_images.count,
            labels_path: labels.to_path_buf(),
            labels: idx_labels.len(),
        });
    }
    if let Some((index, &label)) = idx_labels
        .iter()
        .enumerate()
        .find(|(_, &label)| usize::from(label) >= MNIST_CLASSES)
    {
        return Err(IdxError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            label,
        });
    }
    let features = idx_images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Ok(Dataset {
        features,
        labels: idx_labels,
        dim: idx_images.rows * idx_images.cols,
        shape: (idx_images.rows, idx_images.cols),
        classes: MNIST_CLASSES,
    })
}

/// Reads an IDX images file (magic `0x00000803`), gzipped or raw.
///
/// Fails with `Io`, `Gzip`, `TooLarge`, `BadMagic`, `Truncated` (header or data),
/// `TrailingBytes` or `BadDimensions`.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, IdxError> {
    let mut data = read_decompressed(path)?;
    let [_magic, count, rows, cols] = parse_header(path, &data, IMAGES_MAGIC)?;
    if !(1..=MAX_IMAGE_SIDE).contains(&rows) || !(1..=MAX_IMAGE_SIDE).contains(&cols) {
        return Err(IdxError::BadDimensions {
            path: path.to_path_buf(),
            rows,
            cols,
        });
    }
    // count < 2^32 and each side <= 2^10, so the product fits easily in a u64.
    let pixel_bytes = u64::from(count) * u64::from(rows) * u64::from(cols);
    check_length(path, IMAGES_HEADER_BYTES as u64 + pixel_bytes, data.len())?;
    // check_length made data.len() == header + pixels, so the drain range is in bounds.
    data.drain(..IMAGES_HEADER_BYTES);
    Ok(IdxImages {
        pixels: data,
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
    })
}

/// Reads an IDX labels file (magic `0x00000801`), gzipped or raw, without checking label values.
///
/// Fails with `Io`, `Gzip`, `TooLarge`, `BadMagic`, `Truncated` (header or data) or
/// `TrailingBytes`.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    let mut data = read_decompressed(path)?;
    let [_magic, count] = parse_header(path, &data, LABELS_MAGIC)?;
    check_length(
        path,
        LABELS_HEADER_BYTES as u64 + u64::from(count),
        data.len(),
    )?;
    // check_length made data.len() == header + count, so the drain range is in bounds.
    data.drain(..LABELS_HEADER_BYTES);
    Ok(data)
}

/// The whole file, decompressed if it starts with the gzip magic bytes (whatever its name).
fn read_decompressed(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io_error = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let raw = read_capped(path, file, io_error)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    // MultiGzDecoder: concatenated gzip members decode as one stream (what gunzip does), and
    // garbage after the last member is an error rather than silently ignored.
    read_capped(path, MultiGzDecoder::new(raw.as_slice()), |source| {
        IdxError::Gzip {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Reads `reader` to the end, mapping its errors with `on_error`; fails with `TooLarge` past
/// [`MAX_FILE_BYTES`] without reading further.
fn read_capped(
    path: &Path,
    reader: impl Read,
    on_error: impl FnOnce(io::Error) -> IdxError,
) -> Result<Vec<u8>, IdxError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(on_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(IdxError::TooLarge {
            path: path.to_path_buf(),
            limit_bytes: MAX_FILE_BYTES,
        });
    }
    Ok(bytes)
}

/// The `N` big-endian u32 header fields, magic first; checks the magic as soon as it is read, so
/// a short file of the wrong kind is reported as `BadMagic` rather than `Truncated`.
fn parse_header<const N: usize>(
    path: &Path,
    data: &[u8],
    expected_magic: u32,
) -> Result<[u32; N], IdxError> {
    let mut fields = [0u32; N];
    for (i, field) in fields.iter_mut().enumerate() {
        let bytes = data
            .get(4 * i..4 * i + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or_else(|| IdxError::Truncated {
                path: path.to_path_buf(),
                expected_bytes: 4 * N as u64,
                found_bytes: data.len() as u64,
            })?;
        *field = u32::from_be_bytes(bytes);
        if i == 0 && *field != expected_magic {
            return Err(IdxError::BadMagic {
                path: path.to_path_buf(),
                expected: expected_magic,
                found: *field,
            });
        }
    }
    Ok(fields)
}

/// Checks that the file is exactly `expected_bytes` long (header + data).
fn check_length(path: &Path, expected_bytes: u64, found: usize) -> Result<(), IdxError> {
    let found_bytes = found as u64;
    if found_bytes < expected_bytes {
        return Err(IdxError::Truncated {
            path: path.to_path_buf(),
            expected_bytes,
            found_bytes,
        });
    }
    if found_bytes > expected_bytes {
        return Err(IdxError::TrailingBytes {
            path: path.to_path_buf(),
            expected_bytes,
            found_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use tempfile::TempDir;

    use super::*;

    fn images_bytes(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for field in [IMAGES_MAGIC, count, rows, cols] {
            bytes.extend_from_slice(&field.to_be_bytes());
        }
        bytes.extend_from_slice(pixels);
        bytes
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        bytes.extend_from_slice(labels);
        bytes
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(bytes)
            .expect("writing to a Vec cannot fail");
        encoder.finish().expect("writing to a Vec cannot fail")
    }

    fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("temp dir is writable");
        path
    }

    /// Three 2x2 images with distinct pixels and labels 3, 0, 9.
    fn small_pair() -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
        (images_bytes(3, 2, 2, &pixels), labels_bytes(&[3, 0, 9]))
    }

    /// Writes the four MNIST files of `small_pair` (raw) into `dir`, plus `.gz` copies if `gz`.
    fn write_mnist_dir(dir: &TempDir, gz: bool) {
        let (images, labels) = small_pair();
        for (name, bytes) in MNIST_FILES.iter().zip([&images, &labels, &images, &labels]) {
            if gz {
                write(dir, &format!("{name}.gz"), &gzip(bytes));
            } else {
                write(dir, name, bytes);
            }
        }
    }

    #[test]
    fn bad_magic_reports_expected_and_found() {
        let dir = TempDir::new().unwrap();
        let path = write(&dir, "images", &labels_bytes(&[1, 2]));
        let err = read_idx_images(&path).unwrap_err();
        match &err {
            IdxError::BadMagic {
                path: p,
                expected,
                found,
            } => {
                assert_eq!(p, &path);
                assert_eq!((*expected, *found), (IMAGES_MAGIC, LABELS_MAGIC));
            }
            other => panic!("expected BadMagic, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("0x00000801"), "{message}");
        assert!(
            message.contains("labels file where an images file"),
            "{message}"
        );

        let path = write(&dir, "labels", b"PK\x03\x04 a zip file, not IDX");
        assert!(matches!(
            read_idx_labels(&path),
            Err(IdxError::BadMagic {
                expected: LABELS_MAGIC,
                found: 0x504b_0304,
                ..
            })
        ));
    }

    #[test]
    fn truncated_header_reports_header_length() {
        let dir = TempDir::new().unwrap();
        let (images, labels) = small_pair();
        let path = write(&dir, "images", &images[..10]);
        assert!(matches!(
            read_idx_images(&path),
            Err(IdxError::Truncated {
                expected_bytes: 16,
                found_bytes: 10,
                ..
            })
        ));
        let path = write(&dir, "labels", &labels[..6]);
        assert!(matches!(
            read_idx_labels(&path),
            Err(IdxError::Truncated {
                expected_bytes: 8,
                found_bytes: 6,
                ..
            })
        ));
        // Too short to hold even the magic; two bytes that are not the gzip magic are read raw.
        for bytes in [&[][..], &[0x00, 0x00][..], &[0x1f][..]] {
            let path = write(&dir, "short", bytes);
            match read_idx_images(&path) {
                Err(IdxError::Truncated {
                    expected_bytes: 16,
                    found_bytes,
                    ..
                }) => assert_eq!(found_bytes, bytes.len() as u64),
                other => panic!("expected Truncated for {bytes:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_data_reports_expected_and_found_lengths() {
        let dir = TempDir::new().unwrap();
        let (images, labels) = small_pair();
        let path = write(&dir, "images", &images[..images.len() - 1]);
        let err = read_idx_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::Truncated {
                    expected_bytes: 28,
                    found_bytes: 27,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let path = write(&dir, "labels", &labels[..labels.len() - 2]);
        assert!(matches!(
            read_idx_labels(&path),
            Err(IdxError::Truncated {
                expected_bytes: 11,
                found_bytes: 9,
                ..
            })
        ));
    }

    #[test]
    fn huge_header_count_is_truncated_not_allocated() {
        let dir = TempDir::new().unwrap();
        let path = write(
            &dir,
            "images",
            &images_bytes(u32::MAX, MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, &[0; 8]),
        );
        let expected = 16 + u64::from(u32::MAX) * u64::from(MAX_IMAGE_SIDE).pow(2);
        match read_idx_images(&path) {
            Err(IdxError::Truncated {
                expected_bytes,
                found_bytes: 24,
                ..
            }) => assert_eq!(expected_bytes, expected),
            other => panic!("expected Truncated, got {other:?}"),
        }
        let mut labels = labels_bytes(&[1]);
        labels[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let path = write(&dir, "labels", &labels);
        assert!(matches!(
            read_idx_labels(&path),
            Err(IdxError::Truncated {
                expected_bytes: 0x1_0000_0007,
                found_bytes: 9,
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = TempDir::new().unwrap();
        let (mut images, mut labels) = small_pair();
        images.push(0);
        labels.extend_from_slice(&[0, 0]);
        let path = write(&dir, "images", &images);
        assert!(matches!(
            read_idx_images(&path),
            Err(IdxError::TrailingBytes {
                expected_bytes: 28,
                found_bytes: 29,
                ..
            })
        ));
        let path = write(&dir, "labels", &labels);
        let err = read_idx_labels(&path).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::TrailingBytes {
                    expected_bytes: 11,
                    found_bytes: 13,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("2 trailing bytes"), "{err}");
    }

    #[test]
    fn image_sides_out_of_range_are_rejected() {
        let dir = TempDir::new().unwrap();
        for (rows, cols) in [(0, 28), (28, 0), (MAX_IMAGE_SIDE + 1, 1), (1, u32::MAX)] {
            let path = write(&dir, "images", &images_bytes(0, rows, cols, &[]));
            match read_idx_images(&path) {
                Err(IdxError::BadDimensions {
                    rows: r, cols: c, ..
                }) => {
                    assert_eq!((r, c), (rows, cols))
                }
                other => panic!("expected BadDimensions for {rows}x{cols}, got {other:?}"),
            }
        }
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = TempDir::new().unwrap();
        let (images, _) = small_pair();
        let images_path = write(&dir, "images", &images);
        let labels_path = write(&dir, "labels", &labels_bytes(&[1, 2]));
        let err = load_idx_pair(&images_path, &labels_path).unwrap_err();
        match &err {
            IdxError::CountMismatch {
                images_path: ip,
                images: 3,
                labels_path: lp,
                labels: 2,
            } => assert_eq!((ip, lp), (&images_path, &labels_path)),
            other => panic!("expected CountMismatch, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&images_path.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&labels_path.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn label_out_of_range_reports_first_bad_index() {
        let dir = TempDir::new().unwrap();
        let (images, _) = small_pair();
        let images_path = write(&dir, "images", &images);
        let labels_path = write(&dir, "labels", &labels_bytes(&[1, 10, 255]));
        match load_idx_pair(&images_path, &labels_path) {
            Err(IdxError::LabelOutOfRange {
                path,
                index: 1,
                label: 10,
            }) => assert_eq!(path, labels_path),
            other => panic!("expected LabelOutOfRange, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_gzip_is_a_gzip_error() {
        let dir = TempDir::new().unwrap();
        let (images, _) = small_pair();
        let good = gzip(&images);
        let mut garbage = GZIP_MAGIC.to_vec();
        garbage.extend_from_slice(b"\x08\x00 this is not deflate data");
        let mut trailing_garbage = good.clone();
        trailing_garbage.extend_from_slice(b"junk");
        let cases = [
            ("garbage", garbage),
            ("cut", good[..good.len() / 2].to_vec()),
            ("no-trailer", good[..good.len() - 4].to_vec()),
            ("trailing-garbage", trailing_garbage),
        ];
        for (name, bytes) in cases {
            let path = write(&dir, &format!("{name}.gz"), &bytes);
            let err = read_idx_images(&path).unwrap_err();
            assert!(
                matches!(&err, IdxError::Gzip { path: p, .. } if *p == path),
                "{name}: {err:?}"
            );
            let message = err.to_string();
            assert!(message.contains("gzip"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn raw_and_gzip_give_identical_data_whatever_the_name() {
        let dir = TempDir::new().unwrap();
        let (images, labels) = small_pair();
        let raw = load_idx_pair(
            &write(&dir, "images-raw", &images),
            &write(&dir, "labels-raw", &labels),
        )
        .unwrap();
        let gz = load_idx_pair(
            &write(&dir, "images.gz", &gzip(&images)),
            &write(&dir, "labels.gz", &gzip(&labels)),
        )
        .unwrap();
        // Detection is by magic bytes: gzip without the suffix, raw with it.
        let swapped = load_idx_pair(
            &write(&dir, "images-gz-unnamed", &gzip(&images)),
            &write(&dir, "labels-raw.gz", &labels),
        )
        .unwrap();
        assert_eq!(raw, gz);
        assert_eq!(raw, swapped);
        assert_eq!(raw.len(), 3);
        assert_eq!(raw.labels, vec![3, 0, 9]);
    }

    #[test]
    fn multi_member_gzip_decodes_as_one_stream() {
        let dir = TempDir::new().unwrap();
        let (images, _) = small_pair();
        let (head, tail) = images.split_at(10);
        let mut bytes = gzip(head);
        bytes.extend_from_slice(&gzip(tail));
        let path = write(&dir, "images.gz", &bytes);
        assert_eq!(
            read_idx_images(&path).unwrap().pixels,
            images[16..].to_vec()
        );
    }

    #[test]
    fn pixels_scale_to_unit_interval() {
        let dir = TempDir::new().unwrap();
        let images = write(&dir, "images", &images_bytes(1, 1, 3, &[0, 51, 255]));
        let labels = write(&dir, "labels", &labels_bytes(&[7]));
        let data = load_idx_pair(&images, &labels).unwrap();
        assert_eq!(data.dim, 3);
        assert_eq!(data.classes, MNIST_CLASSES);
        assert_eq!(data.features, vec![0.0, 0.2, 1.0]);
    }

    #[test]
    fn sample_and_truncate() {
        let dir = TempDir::new().unwrap();
        let (images, labels) = small_pair();
        let mut data = load_idx_pair(
            &write(&dir, "images", &images),
            &write(&dir, "labels", &labels),
        )
        .unwrap();
        let (features, label) = data.sample(1);
        assert_eq!(label, 0);
        let expected: Vec<f32> = [80u8, 100, 120, 140]
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        assert_eq!(features, expected.as_slice());

        data.truncate(10);
        assert_eq!(data.len(), 3);
        data.truncate(2);
        assert_eq!((data.len(), data.features.len()), (2, 8));
        assert_eq!(data.sample(1).1, 0);
        data.truncate(0);
        assert!(data.is_empty());
        assert!(data.features.is_empty());
    }

    #[test]
    fn load_mnist_prefers_gz_over_raw() {
        let dir = TempDir::new().unwrap();
        write_mnist_dir(&dir, true);
        // Raw files that would fail to parse: loading succeeds only if the .gz ones are used.
        for name in MNIST_FILES {
            write(&dir, name, b"not idx");
        }
        let mnist = load_mnist(dir.path()).unwrap();
        assert_eq!(mnist.train.labels, vec![3, 0, 9]);
        assert_eq!(mnist.test.dim, 4);
    }

    #[test]
    fn load_mnist_reads_raw_files() {
        let dir = TempDir::new().unwrap();
        write_mnist_dir(&dir, false);
        let mnist = load_mnist(dir.path()).unwrap();
        assert_eq!((mnist.train.len(), mnist.test.len()), (3, 3));
    }

    #[test]
    fn load_mnist_missing_file_names_it_and_lists_expected_files() {
        let dir = TempDir::new().unwrap();
        write_mnist_dir(&dir, true);
        std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
        let err = load_mnist(dir.path()).unwrap_err();
        match &err {
            IdxError::Io { path, source } => {
                assert_eq!(path, &dir.path().join("t10k-images-idx3-ubyte"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("file not found"), "{message}");
        assert!(message.contains("t10k-images-idx3-ubyte.gz"), "{message}");
        for name in MNIST_FILES {
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn load_mnist_rejects_train_test_size_mismatch() {
        let dir = TempDir::new().unwrap();
        write_mnist_dir(&dir, false);
        write(&dir, MNIST_FILES[2], &images_bytes(3, 1, 2, &[0; 6]));
        match load_mnist(dir.path()) {
            Err(IdxError::DimMismatch {
                train_dim: 4,
                test_dim: 2,
                test_path,
                ..
            }) => assert_eq!(test_path, dir.path().join(MNIST_FILES[2])),
            other => panic!("expected DimMismatch, got {other:?}"),
        }
    }
}
