//! A trained model as a safetensors file, named like a PyTorch `state_dict`: `layers.{i}.weight`
//! `[out, in]`, `layers.{i}.bias` `[out]`, `head.weight` `[classes, head_inputs]`, `head.bias`
//! `[classes]`, all F32 little-endian; the network (and optionally training) config and the
//! probability calibration ride in the metadata as JSON (a file without `calibration` loads with
//! temperature 1, the raw softmax it was served with before calibration existed). Saving is atomic (temp file, fsync, rename). Loading checks the format tag,
//! every name, dtype and shape before building the model, and never panics on a damaged file.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use safetensors::{Dtype, SafeTensors};

use crate::ff::{Calibration, LabelPlacement, Model, NetworkConfig, TrainConfig};
use crate::store::tensor::RawTensor;
use crate::store::StoreError;

/// Value of the `format` metadata entry of every model file.
pub const FORMAT: &str = "ffd-model";
/// Value of the `format_version` metadata entry this build writes and the only one it reads.
pub const FORMAT_VERSION: &str = "1";
/// Largest file [`load_model`] reads (2 GiB; a 784-500-500 MNIST model is 2.6 MB). Bounds memory
/// when the path points at something that is not a model file.
pub const MAX_FILE_BYTES: u64 = 1 << 31;

/// Metadata keys.
const KEY_FORMAT: &str = "format";
const KEY_FORMAT_VERSION: &str = "format_version";
const KEY_NETWORK: &str = "network";
const KEY_TRAIN: &str = "train";
const KEY_FFD_VERSION: &str = "ffd_version";
/// Metadata key of a model's [`Calibration`] (checkpoints prefix it like the tensors).
pub(crate) const KEY_CALIBRATION: &str = "calibration";

/// Attempts at a fresh temp-file name before [`save_model`] gives up.
const TEMP_NAME_ATTEMPTS: u32 = 64;

/// What a model file holds: the model and, if it was saved with one, its training config.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedModel {
    pub model: Model,
    pub train: Option<TrainConfig>,
}

/// Writes `model` (and `train`, if given) to `path` as safetensors, atomically: the bytes go to a
/// temp file in the same directory, which is synced and then renamed over `path`, so a reader
/// sees the old file or the new one, never a part. Fails with `Io` if the directory is missing
/// or not writable; the temp file is removed on failure.
pub fn save_model(
    path: &Path,
    model: &Model,
    train: Option<&TrainConfig>,
) -> Result<(), StoreError> {
    write_atomic(path, &model_to_bytes(model, train))
}

/// Reads a model file written by [`save_model`]. Fails with `Io` if the file cannot be read,
/// `Format` if it is not an ffd model file, `Shape` if a tensor does not fit the stored network
/// config, and `Model` if the engine refuses the stored configs.
pub fn load_model(path: &Path) -> Result<LoadedModel, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(StoreError::Format {
            path: path.to_path_buf(),
            reason: format!("file is larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    model_from_bytes(&bytes, path)
}

/// The bytes [`save_model`] writes: for callers that store them elsewhere (checkpoints).
pub fn model_to_bytes(model: &Model, train: Option<&TrainConfig>) -> Vec<u8> {
    let mut tensors = Vec::with_capacity(2 * model.layers().len() + 2);
    for (i, layer) in model.layers().iter().enumerate() {
        tensors.push((
            format!("layers.{i}.weight"),
            RawTensor::matrix(layer.weight()),
        ));
        tensors.push((format!("layers.{i}.bias"), RawTensor::vector(layer.bias())));
    }
    tensors.push((
        "head.weight".to_owned(),
        RawTensor::matrix(model.head().weight()),
    ));
    tensors.push((
        "head.bias".to_owned(),
        RawTensor::vector(model.head().bias()),
    ));

    let mut metadata = HashMap::from([
        (KEY_FORMAT.to_owned(), FORMAT.to_owned()),
        (KEY_FORMAT_VERSION.to_owned(), FORMAT_VERSION.to_owned()),
        (
            KEY_FFD_VERSION.to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        (
            KEY_NETWORK.to_owned(),
            serde_json::to_string(model.config())
                .expect("a NetworkConfig has no map keys, so it serialises"),
        ),
    ]);
    if let Some(train) = train {
        metadata.insert(
            KEY_TRAIN.to_owned(),
            serde_json::to_string(train).expect("a TrainConfig has no map keys, so it serialises"),
        );
    }
    metadata.insert(KEY_CALIBRATION.to_owned(), calibration_metadata(model));
    safetensors::serialize(tensors, Some(metadata))
        .expect("every RawTensor's byte length matches its shape by construction")
}

/// Parses the bytes of a model file; `path` is where they came from and is only named in errors.
/// Fails like [`load_model`], except never with `Io`.
pub fn model_from_bytes(bytes: &[u8], path: &Path) -> Result<LoadedModel, StoreError> {
    let bad = |reason: String| StoreError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let invalid = |source| StoreError::Model {
        path: path.to_path_buf(),
        source,
    };
    let not_safetensors = |e| bad(format!("not a safetensors file: {e}"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;

    let metadata = header
        .metadata()
        .as_ref()
        .ok_or_else(|| bad("the header has no `__metadata__`".into()))?;
    let entry = |key: &str| {
        metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| bad(format!("metadata has no `{key}` entry")))
    };
    let tag = entry(KEY_FORMAT)?;
    if tag != FORMAT {
        return Err(bad(format!(
            "metadata `{KEY_FORMAT}` is {tag:?}, expected {FORMAT:?}"
        )));
    }
    let version = entry(KEY_FORMAT_VERSION)?;
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "unsupported `{KEY_FORMAT_VERSION}` {version:?}; this build reads {FORMAT_VERSION:?}"
        )));
    }
    let config: NetworkConfig = serde_json::from_str(entry(KEY_NETWORK)?).map_err(|e| {
        bad(format!(
            "metadata `{KEY_NETWORK}` is not a network config: {e}"
        ))
    })?;
    config.validate().map_err(invalid)?;
    let train = match metadata.get(KEY_TRAIN) {
        None => None,
        Some(json) => {
            let train: TrainConfig = serde_json::from_str(json).map_err(|e| {
                bad(format!(
                    "metadata `{KEY_TRAIN}` is not a training config: {e}"
                ))
            })?;
            train.validate().map_err(invalid)?;
            Some(train)
        }
    };

    // `NetworkConfig`'s width arithmetic is unchecked; a hostile config could overflow it, so the
    // widths are computed here with checks before anything calls `widths()` or `head_inputs()`.
    let overflow = || bad(format!("metadata `{KEY_NETWORK}`: layer widths overflow"));
    let input_width = match config.label_placement {
        LabelPlacement::Append => config
            .inputs
            .checked_add(config.classes)
            .ok_or_else(overflow)?,
        LabelPlacement::Overwrite => config.inputs,
    };
    let head_inputs = config.hidden[config.first_scored_layer()..]
        .iter()
        .try_fold(0usize, |sum, &w| sum.checked_add(w))
        .ok_or_else(overflow)?;
    let widths: Vec<usize> = std::iter::once(input_width)
        .chain(config.hidden.iter().copied())
        .collect();

    let mut expected_names = BTreeSet::new();
    let mut read = |name: String, shape: &[usize]| {
        let values = read_f32(&tensors, &name, shape, path);
        expected_names.insert(name);
        values
    };
    let mut params = Vec::with_capacity(config.hidden.len());
    for (i, w) in widths.windows(2).enumerate() {
        let weight = read(format!("layers.{i}.weight"), &[w[1], w[0]])?;
        let bias = read(format!("layers.{i}.bias"), &[w[1]])?;
        params.push((matrix(weight, w[1], w[0], path)?, Array1::from_vec(bias)));
    }
    let head_weight = read("head.weight".into(), &[config.classes, head_inputs])?;
    let head_bias = read("head.bias".into(), &[config.classes])?;
    let head = (
        matrix(head_weight, config.classes, head_inputs, path)?,
        Array1::from_vec(head_bias),
    );
    if let Some(extra) = tensors
        .names()
        .into_iter()
        .find(|n| !expected_names.contains(*n))
    {
        return Err(bad(format!(
            "unexpected tensor `{extra}` (the network config has {} layers)",
            config.hidden.len()
        )));
    }

    let mut model = Model::from_parts(config, params, head).map_err(invalid)?;
    let calibration = parse_calibration(metadata.get(KEY_CALIBRATION).map(String::as_str), path)?;
    model.set_calibration(calibration).map_err(invalid)?;
    Ok(LoadedModel { model, train })
}

/// The metadata value that records `model`'s calibration.
pub(crate) fn calibration_metadata(model: &Model) -> String {
    serde_json::to_string(&model.calibration())
        .expect("a Calibration has no map keys, so it serialises")
}

/// Reads a calibration entry; an absent one is the default (temperature 1). Fails with `Format`
/// when the entry is not a calibration or its temperature is not finite and > 0.
pub(crate) fn parse_calibration(
    entry: Option<&str>,
    path: &Path,
) -> Result<Calibration, StoreError> {
    let Some(json) = entry else {
        return Ok(Calibration::default());
    };
    let bad = |reason: String| StoreError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let calibration: Calibration = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "metadata `{KEY_CALIBRATION}` is not a calibration: {e}"
        ))
    })?;
    if !calibration.is_valid() {
        return Err(bad(format!(
            "metadata `{KEY_CALIBRATION}`: the temperature must be a finite number > 0"
        )));
    }
    Ok(calibration)
}

/// Reads tensor `name`, which must be F32 of exactly `shape`, as native `f32`s.
pub(crate) fn read_f32(
    tensors: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> Result<Vec<f32>, StoreError> {
    let view = tensors.tensor(name).map_err(|_| StoreError::Format {
        path: path.to_path_buf(),
        reason: format!("missing tensor `{name}`"),
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(StoreError::Format {
            path: path.to_path_buf(),
            reason: format!("tensor `{name}` has dtype {}, expected F32", view.dtype()),
        });
    }
    if view.shape() != shape {
        return Err(StoreError::Shape {
            path: path.to_path_buf(),
            tensor: name.to_owned(),
            expected: shape.to_vec(),
            got: view.shape().to_vec(),
        });
    }
    // `SafeTensors` has checked that the data is exactly 4 bytes per element of the shape.
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// A row-major `[rows, cols]` matrix from `values`.
pub(crate) fn matrix(
    values: Vec<f32>,
    rows: usize,
    cols: usize,
    path: &Path,
) -> Result<Array2<f32>, StoreError> {
    Array2::from_shape_vec((rows, cols), values).map_err(|e| StoreError::Format {
        path: path.to_path_buf(),
        reason: format!("cannot shape a [{rows}, {cols}] matrix: {e}"),
    })
}

/// Writes `bytes` to a fresh temp file beside `path`, syncs it, renames it over `path`, then
/// syncs the directory so the rename itself survives a crash.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().ok_or_else(|| {
        io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temp(dir, name).map_err(io)?;
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        // Closed before the rename: Windows refuses to rename an open file.
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the write error is the one worth reporting.
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_dir(dir).map_err(io)
}

/// Creates `.{name}.{pid}-{n}.tmp` in `dir`, taking the first `n` nobody else holds (another
/// thread saving the same file, or a leftover of a crashed process with a reused pid).
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    for n in 0..TEMP_NAME_ATTEMPTS {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{pid}-{n}.tmp"));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free temp file name after {TEMP_NAME_ATTEMPTS} attempts"),
    ))
}

#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its rename is as durable as it gets.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ff::Classifier;
    use crate::ff::FfError;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use safetensors::tensor::TensorView;

    const ORIGIN: &str = "test.safetensors";

    fn config() -> NetworkConfig {
        NetworkConfig {
            inputs: 5,
            classes: 3,
            hidden: vec![4, 6, 2],
            ..Default::default()
        }
    }

    /// A random model whose head is non-zero too, so a swapped or dropped head would show.
    fn model(config: NetworkConfig) -> Model {
        let mut m = Model::new(config, &mut StdRng::seed_from_u64(7)).expect("valid config");
        let (rows, cols) = m.head.weight.dim();
        m.head.weight = Array2::from_shape_fn((rows, cols), |(r, c)| r as f32 - 0.25 * c as f32);
        m.head.bias = Array1::from_shape_fn(rows, |r| 0.5 - r as f32);
        m
    }

    fn load(bytes: &[u8]) -> Result<LoadedModel, StoreError> {
        model_from_bytes(bytes, Path::new(ORIGIN))
    }

    /// Re-serialises `bytes` after `edit` has changed its tensors and metadata.
    fn rewrite(
        bytes: &[u8],
        edit: impl FnOnce(&mut Vec<(String, TensorView<'_>)>, &mut Option<HashMap<String, String>>),
    ) -> Vec<u8> {
        let (_, header) = SafeTensors::read_metadata(bytes).expect("a valid file");
        let mut metadata = header.metadata().clone();
        let tensors = SafeTensors::deserialize(bytes).expect("a valid file");
        let mut list = tensors.tensors();
        edit(&mut list, &mut metadata);
        safetensors::serialize(list, metadata).expect("consistent tensors")
    }

    #[test]
    fn bytes_round_trip_exactly() {
        let train = TrainConfig {
            head_lr: 0.25,
            ..Default::default()
        };
        for placement in [LabelPlacement::Append, LabelPlacement::Overwrite] {
            let m = model(NetworkConfig {
                label_placement: placement,
                ..config()
            });
            let loaded = load(&model_to_bytes(&m, Some(&train))).expect("own output loads");
            assert_eq!(loaded.model, m);
            assert_eq!(loaded.train.as_ref(), Some(&train));
            let x = [0.1, 0.9, 0.3, 0.0, 0.5];
            for c in [Classifier::Goodness, Classifier::Softmax] {
                assert_eq!(loaded.model.classify(&x, c), m.classify(&x, c));
            }
        }
        let loaded = load(&model_to_bytes(&model(config()), None)).expect("own output loads");
        assert_eq!(loaded.train, None);
    }

    #[test]
    fn names_shapes_and_metadata() {
        let bytes = model_to_bytes(&model(config()), None);
        let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let mut got: Vec<(String, Vec<usize>)> = tensors
            .tensors()
            .into_iter()
            .map(|(n, v)| {
                assert_eq!(v.dtype(), Dtype::F32, "{n}");
                (n, v.shape().to_vec())
            })
            .collect();
        got.sort();
        // Input width 5 + 3 (appended label); head on layers 1.. (6 + 2 units).
        let want = [
            ("head.bias", vec![3]),
            ("head.weight", vec![3, 8]),
            ("layers.0.bias", vec![4]),
            ("layers.0.weight", vec![4, 8]),
            ("layers.1.bias", vec![6]),
            ("layers.1.weight", vec![6, 4]),
            ("layers.2.bias", vec![2]),
            ("layers.2.weight", vec![2, 6]),
        ]
        .map(|(n, s)| (n.to_owned(), s));
        assert_eq!(got, want);
        let (_, header) = SafeTensors::read_metadata(&bytes).expect("valid safetensors");
        let meta = header.metadata().as_ref().expect("metadata present");
        assert_eq!(meta["format"], "ffd-model");
        assert_eq!(meta["format_version"], "1");
        assert_eq!(meta["ffd_version"], env!("CARGO_PKG_VERSION"));
        assert!(!meta.contains_key("train"));
        let network: NetworkConfig = serde_json::from_str(&meta["network"]).expect("network json");
        assert_eq!(network, config());
    }

    /// Weights are row-major `[out, in]`: element `(j, i)` is unit `j`'s weight on input `i`.
    #[test]
    fn weights_are_row_major_out_by_in() {
        let m = model(config());
        let bytes = model_to_bytes(&m, None);
        let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let data = tensors
            .tensor("layers.1.weight")
            .expect("present")
            .data()
            .to_vec();
        let at = |j: usize, i: usize| {
            let k = 4 * (j * 4 + i);
            f32::from_le_bytes([data[k], data[k + 1], data[k + 2], data[k + 3]])
        };
        assert_eq!(at(5, 3), m.layers()[1].weight()[(5, 3)]);
        assert_eq!(at(2, 0), m.layers()[1].weight()[(2, 0)]);
    }

    /// Every prefix of a file, and every single-byte corruption of its header, is an error or a
    /// model, never a panic; every proper prefix is a `Format` error.
    #[test]
    fn damaged_bytes_never_panic() {
        let bytes = model_to_bytes(&model(config()), Some(&TrainConfig::default()));
        for len in 0..bytes.len() {
            assert!(
                matches!(load(&bytes[..len]), Err(StoreError::Format { .. })),
                "prefix of {len} bytes"
            );
        }
        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        for i in 0..header_len {
            for v in [0u8, b'9', b'"', b'}', 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] = v;
                let _ = load(&damaged);
            }
        }
    }

    #[test]
    fn wrong_shape_names_the_tensor() {
        let bytes = model_to_bytes(&model(config()), None);
        let bad = rewrite(&bytes, |tensors, _| {
            for (name, view) in tensors.iter_mut() {
                if name == "layers.1.weight" {
                    *view =
                        TensorView::new(Dtype::F32, vec![4, 6], view.data()).expect("same size");
                }
            }
        });
        let err = load(&bad).expect_err("transposed weight");
        assert!(
            matches!(&err, StoreError::Shape { tensor, expected, got, .. }
                if tensor == "layers.1.weight" && expected == &[6, 4] && got == &[4, 6]),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(ORIGIN) && msg.contains("layers.1.weight"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_dtype_missing_and_extra_tensors() {
        let bytes = model_to_bytes(&model(config()), None);
        let as_i32 = rewrite(&bytes, |tensors, _| {
            for (name, view) in tensors.iter_mut() {
                if name == "head.bias" {
                    *view = TensorView::new(Dtype::I32, vec![3], view.data()).expect("same size");
                }
            }
        });
        let missing = rewrite(&bytes, |tensors, _| {
            tensors.retain(|(n, _)| n != "layers.2.bias")
        });
        let extra = rewrite(&bytes, |tensors, _| {
            let bias = tensors
                .iter()
                .find(|(n, _)| n == "layers.2.bias")
                .expect("present")
                .1
                .clone();
            tensors.push(("layers.3.bias".to_owned(), bias));
        });
        for (bytes, needle) in [
            (as_i32, "tensor `head.bias` has dtype I32"),
            (missing, "missing tensor `layers.2.bias`"),
            (extra, "unexpected tensor `layers.3.bias`"),
        ] {
            match load(&bytes) {
                Err(StoreError::Format { reason, .. }) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("expected a Format error with {needle:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_metadata() {
        let bytes = model_to_bytes(&model(config()), Some(&TrainConfig::default()));
        let set = |key: &'static str, value: Option<&'static str>| {
            rewrite(&bytes, |_, meta| {
                let meta = meta.as_mut().expect("metadata present");
                match value {
                    Some(v) => meta.insert(key.to_owned(), v.to_owned()),
                    None => meta.remove(key),
                };
            })
        };
        let cases = [
            (rewrite(&bytes, |_, meta| *meta = None), "no `__metadata__`"),
            (set("format", None), "no `format` entry"),
            (set("format", Some("gguf")), "\"gguf\""),
            (
                set("format_version", Some("2")),
                "unsupported `format_version` \"2\"",
            ),
            (set("network", None), "no `network` entry"),
            (
                set("network", Some("{\"inputs\": ")),
                "`network` is not a network config",
            ),
            (
                set("network", Some("{\"layers\": 3}")),
                "`network` is not a network config",
            ),
            (
                set("train", Some("{\"optimiser\": {\"lr\": \"fast\"}}")),
                "`train` is not a training config",
            ),
            (
                set(
                    "network",
                    Some(
                        "{\"inputs\": 18446744073709551615, \"classes\": 3, \"hidden\": [4, 6, 2]}",
                    ),
                ),
                "overflow",
            ),
            (
                set(
                    "network",
                    Some(
                        "{\"inputs\": 5, \"classes\": 3, \"hidden\": [4, 18446744073709551615, 2]}",
                    ),
                ),
                "overflow",
            ),
        ];
        for (bytes, needle) in cases {
            match load(&bytes) {
                Err(StoreError::Format { reason, .. }) => {
                    assert!(reason.contains(needle), "{needle}: {reason}")
                }
                other => panic!("expected a Format error with {needle:?}, got {other:?}"),
            }
        }
        let one_class = set(
            "network",
            Some("{\"inputs\": 5, \"classes\": 1, \"hidden\": [4, 6, 2]}"),
        );
        assert!(matches!(
            load(&one_class),
            Err(StoreError::Model {
                source: FfError::Config { key: "classes", .. },
                ..
            })
        ));
    }

    #[test]
    fn save_replaces_atomically_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("model.safetensors");
        let first = model(config());
        save_model(&path, &first, None).expect("save");
        let second = Model::new(config(), &mut StdRng::seed_from_u64(8)).expect("valid config");
        save_model(&path, &second, None).expect("save over");
        assert_eq!(load_model(&path).expect("load").model, second);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["model.safetensors"]);
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope/model.safetensors");
        let err = save_model(&missing, &model(config()), None).expect_err("no such directory");
        assert!(matches!(&err, StoreError::Io { path, .. } if path == &missing));
        let err = load_model(&missing).expect_err("no such file");
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope/model.safetensors"), "{err}");
    }
}
