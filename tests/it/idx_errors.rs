//! Loading MNIST: the committed subset loads with the right shape, and damaged directories fail
//! with the error variant a user can act on and a message that names the file.

use std::fs;
use std::path::{Path, PathBuf};

use ffd::data::idx::*;
use tempfile::TempDir;

fn small_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-small")
}

/// A writable copy of `tests/data/mnist-small` (the four `.gz` files) to damage.
fn copy_of_small() -> TempDir {
    let dir = TempDir::new().expect("create temp dir");
    for name in MNIST_FILES {
        let file = format!("{name}.gz");
        fs::copy(small_dir().join(&file), dir.path().join(&file)).expect("copy mnist-small file");
    }
    dir
}

fn decompressed(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).expect("open gz"))
        .read_to_end(&mut bytes)
        .expect("decompress");
    bytes
}

fn assert_names(message: &str, path: &Path) {
    assert!(
        message.contains(&path.display().to_string()),
        "message does not name {}: {message}",
        path.display()
    );
}

/// The subset holds the first 3000 training and first 1000 test samples of MNIST
/// (`bench/make_mnist_subset.py`). Reference values from Python on the same files:
///
/// ```python
/// im = gzip.open(d + p + '-images-idx3-ubyte.gz').read(); lb = gzip.open(d + p + '-labels-idx1-ubyte.gz').read()
/// list(lb[8:18]); sum(im[16:]) / 255 / len(im[16:]); [lb[8:].count(c) for c in range(10)]
/// # train: [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  0.1309560841003068  [285, 339, 299, 295, 325, 274, 306, 329, 261, 287]
/// # t10k:  [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  0.12226457583033214 [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]
/// ```
#[test]
fn committed_subset_loads_with_mnist_shape() {
    let mnist = load_mnist(&small_dir()).expect("tests/data/mnist-small loads");
    let cases = [
        (
            &mnist.train,
            3000,
            [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
            0.130_956_084_f64,
            [285, 339, 299, 295, 325, 274, 306, 329, 261, 287],
        ),
        (
            &mnist.test,
            1000,
            [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
            0.122_264_576,
            [85, 126, 116, 107, 110, 87, 87, 99, 89, 94],
        ),
    ];
    for (set, len, first_labels, mean, class_counts) in cases {
        assert_eq!(set.len(), len);
        assert_eq!(set.dim, 784);
        assert_eq!(set.classes, 10);
        assert_eq!(set.features.len(), len * 784);
        assert_eq!(set.labels[..10], first_labels);

        let mut counts = [0usize; 10];
        for i in 0..set.len() {
            let (features, label) = set.sample(i);
            assert!(label < 10, "label {label} at {i}");
            assert_eq!(features.len(), 784);
            counts[label] += 1;
        }
        assert_eq!(
            counts, class_counts,
            "every class appears, in MNIST's proportions"
        );

        assert!(set.features.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(
            set.features.contains(&1.0),
            "a pixel of 255 scales to exactly 1.0"
        );
        let actual_mean =
            set.features.iter().map(|&v| f64::from(v)).sum::<f64>() / (len * 784) as f64;
        assert!(
            (actual_mean - mean).abs() < 1e-6,
            "mean pixel {actual_mean}, expected {mean}"
        );
    }
}

#[test]
fn missing_file_names_it_and_lists_expected_files() {
    let dir = copy_of_small();
    fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let err = load_mnist(dir.path()).unwrap_err();
    let missing = dir.path().join("t10k-labels-idx1-ubyte");
    match &err {
        IdxError::Io { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io NotFound, got {other:?}"),
    }
    let message = err.to_string();
    assert_names(&message, &missing);
    for name in MNIST_FILES {
        assert!(
            message.contains(name),
            "message does not list {name}: {message}"
        );
    }
    assert!(message.contains("download"), "{message}");
}

#[test]
fn truncated_gzip_is_a_gzip_error_naming_the_file() {
    let dir = copy_of_small();
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_mnist(dir.path()).unwrap_err();
    assert!(
        matches!(&err, IdxError::Gzip { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("gzip"), "{err}");
    assert_names(&err.to_string(), &path);
}

#[test]
fn corrupt_gzip_is_a_gzip_error_naming_the_file() {
    let dir = copy_of_small();
    let path = dir.path().join("t10k-images-idx3-ubyte.gz");
    let mut bytes = fs::read(&path).unwrap();
    // Flip bytes in the deflate stream, past the 10-byte gzip header.
    for b in &mut bytes[100..200] {
        *b ^= 0xa5;
    }
    fs::write(&path, &bytes).unwrap();
    let err = load_mnist(dir.path()).unwrap_err();
    assert!(
        matches!(&err, IdxError::Gzip { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_names(&err.to_string(), &path);
}

#[test]
fn raw_file_with_truncated_data_reports_sizes() {
    let dir = copy_of_small();
    let gz = dir.path().join("train-labels-idx1-ubyte.gz");
    let raw = dir.path().join("train-labels-idx1-ubyte");
    let bytes = decompressed(&gz);
    fs::remove_file(&gz).unwrap();
    fs::write(&raw, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_mnist(dir.path()).unwrap_err();
    match &err {
        IdxError::Truncated {
            path,
            expected_bytes,
            found_bytes,
        } => {
            assert_eq!(path, &raw);
            assert_eq!((*expected_bytes, *found_bytes), (8 + 3000, 8 + 2900));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let message = err.to_string();
    assert_names(&message, &raw);
    assert!(
        message.contains("3008") && message.contains("2908"),
        "{message}"
    );
}

#[test]
fn swapped_images_and_labels_is_bad_magic() {
    let dir = copy_of_small();
    let images = dir.path().join("t10k-images-idx3-ubyte.gz");
    fs::copy(dir.path().join("t10k-labels-idx1-ubyte.gz"), &images).unwrap();
    let err = load_mnist(dir.path()).unwrap_err();
    assert!(
        matches!(&err, IdxError::BadMagic { path, expected: 0x803, found: 0x801 } if *path == images),
        "{err:?}"
    );
    assert_names(&err.to_string(), &images);
    assert!(err.to_string().contains("labels file"), "{err}");
}

#[test]
fn labels_from_the_other_split_is_a_count_mismatch() {
    let dir = copy_of_small();
    let labels = dir.path().join("t10k-labels-idx1-ubyte.gz");
    fs::copy(dir.path().join("train-labels-idx1-ubyte.gz"), &labels).unwrap();
    let err = load_mnist(dir.path()).unwrap_err();
    let images = dir.path().join("t10k-images-idx3-ubyte.gz");
    match &err {
        IdxError::CountMismatch {
            images_path,
            images: 1000,
            labels_path,
            labels: 3000,
        } => assert_eq!((images_path, labels_path), (&images, &labels)),
        other => panic!("expected CountMismatch, got {other:?}"),
    }
    assert_names(&err.to_string(), &images);
    assert_names(&err.to_string(), &labels);
}

#[test]
fn truncate_keeps_the_first_samples() {
    let full = load_mnist(&small_dir()).unwrap().train;
    let mut head = full.clone();
    head.truncate(100);
    assert_eq!(head.len(), 100);
    assert_eq!(head.labels[..], full.labels[..100]);
    assert_eq!(head.features[..], full.features[..100 * 784]);
}
