//! Saving and loading a trained model: the file round-trips bit for bit, uses PyTorch
//! `state_dict` names and `[out, in]` shapes any safetensors reader sees, and damaged files fail
//! with a `StoreError` that names the file (and the tensor, for a shape mismatch).
//!
//! `FFD_MODEL_FILE_OUT=/tmp/m.safetensors cargo test --test model_file -- --ignored` writes a
//! trained model for `bench/check_safetensors.py`.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use ffd::ff::{Classifier, Model, NetworkConfig, TrainConfig, Trainer};
use ffd::store::model_file::{load_model, save_model, StoreError};
use rand::rngs::StdRng;
use rand::SeedableRng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn network() -> NetworkConfig {
    NetworkConfig {
        inputs: 6,
        classes: 3,
        hidden: vec![16, 12, 8],
        ..Default::default()
    }
}

/// Trains the softmax head too, so the head's tensors hold learned values, not zeros.
fn train_config() -> TrainConfig {
    TrainConfig {
        classifier: Classifier::Softmax,
        train_head: true,
        head_lr: 0.05,
        ..Default::default()
    }
}

/// Sample `i`: class `i % 3`, a noisy one-of-three pattern.
fn sample(i: usize) -> ([f32; 6], usize) {
    let label = i % 3;
    let mut x = [0.1; 6];
    x[2 * label] = 1.0;
    x[2 * label + 1] = 0.6 + 0.05 * (i % 7) as f32;
    (x, label)
}

fn trained() -> Model {
    let model = Model::new(network(), &mut StdRng::seed_from_u64(1)).expect("valid network");
    let mut trainer = Trainer::new(model, train_config(), 2).expect("valid training config");
    for i in 0..300 {
        let (x, label) = sample(i);
        if trainer
            .learn(&x, label, false)
            .expect("valid sample")
            .sleep_due
        {
            trainer.sleep();
        }
    }
    trainer.into_model()
}

/// A trained model saved with its training config loads back equal, and classifies every input
/// exactly as before with both classifiers.
#[test]
fn trained_model_round_trips() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    let model = trained();
    let fresh = Model::new(network(), &mut StdRng::seed_from_u64(1)).expect("valid network");
    assert_ne!(
        model, fresh,
        "training changed nothing; the round trip would prove little"
    );
    assert!(
        model.head().weight().iter().any(|&w| w != 0.0),
        "head untrained"
    );

    save_model(&path, &model, Some(&train_config())).expect("save");
    let loaded = load_model(&path).expect("load");
    assert_eq!(loaded.model, model);
    assert_eq!(loaded.train, Some(train_config()));
    for i in 0..30 {
        let (x, _) = sample(i * 5 + 1);
        for c in [Classifier::Goodness, Classifier::Softmax] {
            assert_eq!(
                loaded.model.classify(&x, c),
                model.classify(&x, c),
                "sample {i}, {c:?}"
            );
        }
    }

    // Without a training config, `train` stays empty.
    save_model(&path, &model, None).expect("save over");
    let loaded = load_model(&path).expect("load");
    assert_eq!((loaded.model, loaded.train), (model, None));
}

/// Any safetensors reader sees `layers.{i}.weight` `[out, in]`, `layers.{i}.bias` `[out]`,
/// `head.weight` `[classes, head_inputs]`, `head.bias` `[classes]`, all F32, and the metadata.
#[test]
fn file_has_state_dict_names_and_shapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    let model = trained();
    save_model(&path, &model, Some(&train_config())).expect("save");

    let bytes = fs::read(&path).expect("read");
    let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut got: Vec<(String, Vec<usize>)> = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            (name, view.shape().to_vec())
        })
        .collect();
    got.sort();
    // Input width 6 + 3 appended label slots; the head reads layers 1 and 2 (12 + 8 units).
    let want: Vec<(String, Vec<usize>)> = [
        ("head.bias", vec![3]),
        ("head.weight", vec![3, 20]),
        ("layers.0.bias", vec![16]),
        ("layers.0.weight", vec![16, 9]),
        ("layers.1.bias", vec![12]),
        ("layers.1.weight", vec![12, 16]),
        ("layers.2.bias", vec![8]),
        ("layers.2.weight", vec![8, 12]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_owned(), s))
    .collect();
    assert_eq!(got, want);

    let first = tensors.tensor("layers.0.weight").expect("present");
    let w00 = f32::from_le_bytes(first.data()[..4].try_into().expect("4 bytes"));
    assert_eq!(w00, model.layers()[0].weight()[(0, 0)]);

    let (_, header) = SafeTensors::read_metadata(&bytes).expect("valid safetensors");
    let meta = header.metadata().as_ref().expect("metadata present");
    assert_eq!(meta["format"], "ffd-model");
    assert_eq!(meta["format_version"], "1");
    assert_eq!(meta["ffd_version"], env!("CARGO_PKG_VERSION"));
    let net: NetworkConfig = serde_json::from_str(&meta["network"]).expect("network json");
    assert_eq!(net, network());
    let train: TrainConfig = serde_json::from_str(&meta["train"]).expect("train json");
    assert_eq!(train, train_config());
}

/// A file cut short anywhere is a `Format` error naming the file, not a panic.
#[test]
fn truncated_file_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    save_model(&path, &trained(), None).expect("save");
    let bytes = fs::read(&path).expect("read");
    for len in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        fs::write(&path, &bytes[..len]).expect("truncate");
        let err = load_model(&path).expect_err("truncated file");
        assert!(
            matches!(err, StoreError::Format { .. }),
            "{len} bytes: {err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

/// Rewrites the file at `path` after `edit` has changed its tensors and metadata.
fn rewrite(
    path: &Path,
    edit: impl FnOnce(&mut Vec<(String, TensorView<'_>)>, &mut Option<HashMap<String, String>>),
) {
    let bytes = fs::read(path).expect("read");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("valid safetensors");
    let mut metadata = header.metadata().clone();
    let tensors = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut list = tensors.tensors();
    edit(&mut list, &mut metadata);
    let out = safetensors::serialize(list, metadata).expect("consistent tensors");
    fs::write(path, out).expect("write");
}

/// A transposed `layers.0.weight` (the classic `[in, out]` mix-up) is refused with both
/// shapes, the tensor's name and the file's path in the message.
#[test]
fn wrong_shape_names_the_tensor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    save_model(&path, &trained(), None).expect("save");
    rewrite(&path, |tensors, _| {
        for (name, view) in tensors.iter_mut() {
            if name == "layers.0.weight" {
                *view = TensorView::new(Dtype::F32, vec![9, 16], view.data()).expect("same size");
            }
        }
    });
    let err = load_model(&path).expect_err("transposed weight");
    let msg = err.to_string();
    assert!(
        matches!(&err, StoreError::Shape { tensor, expected, got, .. }
            if tensor == "layers.0.weight" && expected == &[16, 9] && got == &[9, 16]),
        "{err:?}"
    );
    assert!(
        msg.contains("layers.0.weight") && msg.contains("[16, 9]") && msg.contains("[9, 16]"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

/// A safetensors file without our metadata (e.g. a PyTorch export) is not taken for a model.
#[test]
fn missing_metadata_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.safetensors");
    save_model(&path, &trained(), None).expect("save");
    rewrite(&path, |_, meta| *meta = None);
    let err = load_model(&path).expect_err("no metadata");
    assert!(
        matches!(&err, StoreError::Format { reason, .. } if reason.contains("__metadata__")),
        "{err:?}"
    );

    save_model(&path, &trained(), None).expect("save");
    rewrite(&path, |_, meta| {
        meta.as_mut().expect("metadata present").remove("network");
    });
    let err = load_model(&path).expect_err("no network config");
    assert!(
        matches!(&err, StoreError::Format { reason, .. } if reason.contains("`network`")),
        "{err:?}"
    );
}

/// A missing file is an `Io` error of kind `NotFound`.
#[test]
fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.safetensors");
    let err = load_model(&path).expect_err("missing file");
    assert!(
        matches!(&err, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

/// Writes a trained model to `$FFD_MODEL_FILE_OUT` for the Python interop check
/// (`bench/check_safetensors.py`).
#[test]
#[ignore = "writes a file for bench/check_safetensors.py; needs FFD_MODEL_FILE_OUT"]
fn write_model_for_python() {
    let out =
        std::env::var_os("FFD_MODEL_FILE_OUT").expect("set FFD_MODEL_FILE_OUT to the output path");
    save_model(Path::new(&out), &trained(), Some(&train_config())).expect("save");
}
