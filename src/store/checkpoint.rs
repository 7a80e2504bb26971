//! Checkpoints: a learner's whole state in one safetensors file, named like a PyTorch
//! `state_dict` (`layers.0.weight`, `optimiser.layers.0.momentum_weight`, `replay.features`,
//! `average.layers.0.weight`, `slow.layers.0.weight`, ...) with the scalars (counters, last
//! applied sequence number, RNG position, config fingerprint, the models' calibration and its
//! online fit) in the metadata; a checkpoint without the calibration entries (written before
//! they existed) loads with temperature 1 and a fresh fit, one without `slow.` tensors (written
//! under another sleep method, or before they existed) takes the live weights as slow. A CRC-32
//! over every tensor and metadata entry rides in the metadata too, so a damaged file is refused
//! rather than half-loaded.
//!
//! Files are `checkpoint-{last_seq:020}.safetensors` in the data directory, written atomically
//! (temp file, fsync, rename, fsync the directory); the newest that verifies wins.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ndarray::Array1;
use safetensors::{Dtype, SafeTensors};

use crate::ff::model::LayerParams;
use crate::ff::optimiser::{Boost, LayerState};
use crate::ff::{Model, NetworkConfig, RngPosition, SlowState, TemperatureFit, TrainerState};
use crate::store::model_file::{
    calibration_metadata, matrix, parse_calibration, read_f32, write_atomic, KEY_CALIBRATION,
};
use crate::store::tensor::RawTensor;
use crate::store::StoreError;

/// Value of the `format` metadata entry of every checkpoint.
pub const FORMAT: &str = "ffd-checkpoint";
/// The only `format_version` this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// Largest checkpoint file read (bounds memory on a stray file).
pub const MAX_FILE_BYTES: u64 = 1 << 33;

const PREFIX: &str = "checkpoint-";
const SUFFIX: &str = ".safetensors";

/// Metadata keys.
mod key {
    pub const FORMAT: &str = "format";
    pub const FORMAT_VERSION: &str = "format_version";
    pub const FFD_VERSION: &str = "ffd_version";
    pub const NETWORK: &str = "network";
    pub const FINGERPRINT: &str = "config_fingerprint";
    pub const LAST_SEQ: &str = "last_seq";
    pub const HIGH_WATER_SEQ: &str = "high_water_seq";
    pub const SAMPLES_LEARNED: &str = "samples_learned";
    pub const SLEEP_CYCLES: &str = "sleep_cycles";
    pub const MODEL_VERSION: &str = "model_version";
    pub const SINCE_AVERAGE: &str = "since_average";
    pub const TRAINER_SAMPLES: &str = "trainer_samples";
    pub const SINCE_SLEEP: &str = "since_sleep";
    pub const BOOST_FROM: &str = "boost_from";
    pub const BOOST_FACTOR: &str = "boost_factor";
    pub const BOOST_SAMPLES: &str = "boost_samples";
    pub const RNG_SEED: &str = "rng_seed";
    pub const RNG_STREAM: &str = "rng_stream";
    pub const RNG_WORD_POS: &str = "rng_word_pos";
    pub const CALIBRATION_FIT: &str = "calibration_fit";
    pub const CHECKSUM: &str = "checksum_crc32";
}

/// The service's counters saved beside the trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Sequence number of the last sample learned into this state.
    pub last_seq: u64,
    /// Highest sequence number durable in the WAL when the state was copied (at least every
    /// number acknowledged by then; stored as at least `last_seq`). Recovery numbers new
    /// samples above it, whatever else was damaged. Checkpoints written before it existed
    /// read as `last_seq`.
    pub high_water_seq: u64,
    /// Wake samples learned over the service's life.
    pub samples_learned: u64,
    /// Sleep phases completed.
    pub sleep_cycles: u64,
    /// Version of the last published snapshot.
    pub model_version: u64,
    /// Samples since the weight average was last updated.
    pub since_average: u64,
}

/// A learner's complete state.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The trainer: live weights, optimiser, replay buffer, RNG, counters.
    pub trainer: TrainerState,
    /// The weight average `/classify` serves, when averaging is on.
    pub average: Option<Model>,
    /// The service's counters.
    pub counters: Counters,
}

/// Why a checkpoint cannot be used. `Damaged` files are skipped in favour of older ones;
/// `Mismatch` stops the start (the operator must choose: fix the config or `--reset`).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Unreadable, truncated, or its checksum or contents do not verify.
    #[error(transparent)]
    Damaged(#[from] StoreError),
    /// Written for a different network than the running configuration's.
    #[error(
        "{}: the checkpoint was written for a different network (config fingerprint {saved}, \
         running config {running}); saved network: {saved_network}; running network: \
         {running_network}. Restore the old `[network]` settings, or start with --reset to \
         set the saved state aside and start afresh",
        .path.display()
    )]
    Mismatch {
        path: PathBuf,
        saved: String,
        running: String,
        saved_network: String,
        running_network: String,
    },
}

/// The fingerprint of a network configuration: FNV-1a 64 of its JSON, as 16 hex digits. Two
/// configurations with the same fingerprint give parameters of the same shapes and meaning.
pub fn config_fingerprint(network: &NetworkConfig) -> String {
    let json =
        serde_json::to_string(network).expect("a NetworkConfig has no map keys, so it serialises");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// File name of the checkpoint whose last applied sample is `last_seq`.
pub fn file_name(last_seq: u64) -> String {
    format!("{PREFIX}{last_seq:020}{SUFFIX}")
}

/// Checkpoints in `dir`, newest (highest sequence number) first. A missing directory has none.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = super::numbered_files(dir, PREFIX, SUFFIX)?;
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    Ok(found)
}

/// Writes `checkpoint` into `dir` atomically and returns its path.
pub fn write(dir: &Path, checkpoint: &Checkpoint) -> Result<PathBuf, StoreError> {
    let path = dir.join(file_name(checkpoint.counters.last_seq));
    write_atomic(&path, &to_bytes(checkpoint))?;
    Ok(path)
}

/// Deletes all but the newest `keep` checkpoints in `dir`; returns how many were deleted.
pub fn prune(dir: &Path, keep: usize) -> Result<usize, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut removed = 0;
    for (_, path) in list(dir).map_err(io)?.into_iter().skip(keep) {
        fs::remove_file(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        removed += 1;
    }
    Ok(removed)
}

/// Moves the checkpoint at `path`, which does not verify, out of the way (never deleted): to
/// `<name>.damaged` beside it (`<name>.N.damaged` if taken), so it neither counts as one of the
/// kept checkpoints nor is tried again. Returns the new path.
pub fn set_aside_damaged(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut aside = path.with_file_name(format!("{name}.damaged"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{name}.{n}.damaged"));
        n += 1;
    }
    fs::rename(path, &aside)?;
    Ok(aside)
}

/// Reads and verifies the checkpoint at `path` for a service running `network`: `Damaged` if
/// it cannot be read, its checksum fails or a tensor is missing or misshapen; `Mismatch` if it
/// was written for another network.
pub fn read(path: &Path, network: &NetworkConfig) -> Result<Checkpoint, CheckpointError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(bad(path, format!("larger than {MAX_FILE_BYTES} bytes")).into());
    }
    let bytes = fs::read(path).map_err(io)?;
    from_bytes(&bytes, path, network)
}

/// The bytes of a checkpoint file.
pub fn to_bytes(c: &Checkpoint) -> Vec<u8> {
    let t = &c.trainer;
    let mut tensors: BTreeMap<String, RawTensor> = BTreeMap::new();
    model_tensors(&mut tensors, "", &t.model);
    if let Some(average) = &c.average {
        model_tensors(&mut tensors, "average.", average);
    }
    optimiser_tensors(&mut tensors, "", &t.layers);
    if let Some(slow) = &t.slow {
        layer_tensors(&mut tensors, "slow.", &slow.model);
        optimiser_tensors(&mut tensors, "slow.", &slow.layers);
    }
    if !t.replay_labels.is_empty() {
        let n = t.replay_labels.len();
        tensors.insert(
            "replay.features".into(),
            RawTensor::f32(vec![n, t.replay_features.len() / n], &t.replay_features),
        );
        tensors.insert("replay.labels".into(), RawTensor::i64(&t.replay_labels));
    }

    let k = &c.counters;
    let mut metadata: BTreeMap<String, String> = [
        (key::FORMAT, FORMAT.to_owned()),
        (key::FORMAT_VERSION, FORMAT_VERSION.to_owned()),
        (key::FFD_VERSION, env!("CARGO_PKG_VERSION").to_owned()),
        (
            key::NETWORK,
            serde_json::to_string(t.model.config())
                .expect("a NetworkConfig has no map keys, so it serialises"),
        ),
        (key::FINGERPRINT, config_fingerprint(t.model.config())),
        (key::LAST_SEQ, k.last_seq.to_string()),
        (
            key::HIGH_WATER_SEQ,
            k.high_water_seq.max(k.last_seq).to_string(),
        ),
        (key::SAMPLES_LEARNED, k.samples_learned.to_string()),
        (key::SLEEP_CYCLES, k.sleep_cycles.to_string()),
        (key::MODEL_VERSION, k.model_version.to_string()),
        (key::SINCE_AVERAGE, k.since_average.to_string()),
        (key::TRAINER_SAMPLES, t.samples.to_string()),
        (key::SINCE_SLEEP, t.since_sleep.to_string()),
        (key::BOOST_FROM, t.boost_from.to_string()),
        (key::RNG_SEED, hex(&t.rng.seed)),
        (key::RNG_STREAM, t.rng.stream.to_string()),
        (key::RNG_WORD_POS, t.rng.word_pos.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(boost) = &t.boost {
        metadata.insert(key::BOOST_FACTOR.to_owned(), boost.factor.to_string());
        metadata.insert(key::BOOST_SAMPLES.to_owned(), boost.samples.to_string());
    }
    metadata.insert(KEY_CALIBRATION.to_owned(), calibration_metadata(&t.model));
    if let Some(average) = &c.average {
        metadata.insert(
            format!("average.{KEY_CALIBRATION}"),
            calibration_metadata(average),
        );
    }
    if let Some(fit) = &t.calibration {
        metadata.insert(
            key::CALIBRATION_FIT.to_owned(),
            serde_json::to_string(fit).expect("a TemperatureFit has no map keys, so it serialises"),
        );
    }
    let sum = checksum(
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())),
        &metadata,
    );
    metadata.insert(key::CHECKSUM.to_owned(), format!("{sum:08x}"));
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    safetensors::serialize(tensors, Some(metadata))
        .expect("every RawTensor's byte length matches its shape by construction")
}

/// Parses and verifies checkpoint bytes (see [`read`]); `path` is only named in errors.
pub fn from_bytes(
    bytes: &[u8],
    path: &Path,
    network: &NetworkConfig,
) -> Result<Checkpoint, CheckpointError> {
    let not_safetensors = |e| bad(path, format!("not a safetensors file: {e}"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .as_ref()
        .ok_or_else(|| bad(path, "the header has no `__metadata__`".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let entry = |k: &str| {
        metadata
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| bad(path, format!("metadata has no `{k}` entry")))
    };
    if entry(key::FORMAT)? != FORMAT {
        return Err(bad(path, format!("metadata `format` is not {FORMAT:?}")).into());
    }
    if entry(key::FORMAT_VERSION)? != FORMAT_VERSION {
        return Err(bad(
            path,
            format!("unsupported format_version; this build reads {FORMAT_VERSION:?}"),
        )
        .into());
    }
    let stored_sum = entry(key::CHECKSUM)?.to_owned();
    let mut rest = metadata.clone();
    rest.remove(key::CHECKSUM);
    let mut names: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.tensors();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let sum = checksum(
        names
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
        &rest,
    );
    if format!("{sum:08x}") != stored_sum {
        return Err(bad(
            path,
            format!("checksum mismatch (stored {stored_sum}, computed {sum:08x})"),
        )
        .into());
    }

    let running = config_fingerprint(network);
    let saved = entry(key::FINGERPRINT)?.to_owned();
    if saved != running {
        return Err(CheckpointError::Mismatch {
            path: path.to_path_buf(),
            saved,
            running,
            saved_network: entry(key::NETWORK)?.to_owned(),
            running_network: serde_json::to_string(network)
                .expect("a NetworkConfig has no map keys, so it serialises"),
        });
    }

    let num = |k: &str| -> Result<u64, StoreError> {
        entry(k)?
            .parse()
            .map_err(|e| bad(path, format!("metadata `{k}`: {e}")))
    };
    let last_seq = num(key::LAST_SEQ)?;
    let high_water_seq = match metadata.get(key::HIGH_WATER_SEQ) {
        None => last_seq,
        Some(_) => num(key::HIGH_WATER_SEQ)?.max(last_seq),
    };
    let counters = Counters {
        last_seq,
        high_water_seq,
        samples_learned: num(key::SAMPLES_LEARNED)?,
        sleep_cycles: num(key::SLEEP_CYCLES)?,
        model_version: num(key::MODEL_VERSION)?,
        since_average: num(key::SINCE_AVERAGE)?,
    };
    let calibrated = |mut model: Model, prefix: &str| -> Result<Model, StoreError> {
        let key = format!("{prefix}{KEY_CALIBRATION}");
        let c = parse_calibration(metadata.get(&key).map(String::as_str), path)?;
        model
            .set_calibration(c)
            .map_err(|source| StoreError::Model {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(model)
    };
    let model = calibrated(read_model(&tensors, "", network, path)?, "")?;
    let average = if tensors.names().iter().any(|n| n.starts_with("average.")) {
        Some(calibrated(
            read_model(&tensors, "average.", network, path)?,
            "average.",
        )?)
    } else {
        None
    };
    let calibration = match metadata.get(key::CALIBRATION_FIT) {
        None => None,
        Some(json) => {
            let fit: TemperatureFit = serde_json::from_str(json)
                .map_err(|e| bad(path, format!("metadata `{}`: {e}", key::CALIBRATION_FIT)))?;
            if !fit.is_valid() {
                return Err(bad(
                    path,
                    format!("metadata `{}`: not finite", key::CALIBRATION_FIT),
                )
                .into());
            }
            Some(fit)
        }
    };
    let layers = read_optimiser(&tensors, "", network, path)?;
    // Only written under the `consolidate` sleep; absent, a resume takes the live weights as
    // the slow weights.
    let slow = if tensors.names().iter().any(|n| n.starts_with("slow.")) {
        // Only the layers are stored: the slow model's head and calibration are the live one's.
        let params = read_layer_params(&tensors, "slow.", network, path)?;
        let slow_model = model
            .with_layer_params(params)
            .map_err(|source| StoreError::Model {
                path: path.to_path_buf(),
                source,
            })?;
        Some(SlowState {
            model: slow_model,
            layers: read_optimiser(&tensors, "slow.", network, path)?,
        })
    } else {
        None
    };
    let (replay_features, replay_labels) = match tensors.tensor("replay.labels") {
        Err(_) => (Vec::new(), Vec::new()),
        Ok(view) => {
            if view.dtype() != Dtype::I64 || view.shape().len() != 1 {
                return Err(bad(path, "tensor `replay.labels` must be I64 [n]".into()).into());
            }
            let n = view.shape()[0];
            let labels = view
                .data()
                .chunks_exact(8)
                .map(|b| {
                    let v = i64::from_le_bytes(b.try_into().expect("chunks of 8 bytes"));
                    usize::try_from(v)
                        .ok()
                        .filter(|&l| l < network.classes)
                        .ok_or_else(|| bad(path, format!("replay label {v} is out of range")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let features = read_f32(&tensors, "replay.features", &[n, network.inputs], path)?;
            (features, labels)
        }
    };
    let seed = unhex(entry(key::RNG_SEED)?)
        .ok_or_else(|| bad(path, "metadata `rng_seed` is not 64 hex digits".into()))?;
    let word_pos: u128 = entry(key::RNG_WORD_POS)?
        .parse()
        .map_err(|e| bad(path, format!("metadata `rng_word_pos`: {e}")))?;
    // Only written while a drift's boost runs; absent, the configuration's start boost.
    let boost = match metadata.get(key::BOOST_FACTOR) {
        None => None,
        Some(factor) => {
            let factor: f32 = factor
                .parse()
                .ok()
                .filter(|f: &f32| f.is_finite() && *f >= 1.0)
                .ok_or_else(|| bad(path, "metadata `boost_factor` is not a number >= 1".into()))?;
            Some(Boost {
                factor,
                samples: num(key::BOOST_SAMPLES)?.max(1),
            })
        }
    };
    let trainer = TrainerState {
        model,
        layers,
        replay_features,
        replay_labels,
        since_sleep: num(key::SINCE_SLEEP)? as usize,
        samples: num(key::TRAINER_SAMPLES)?,
        // Absent from checkpoints written before the boost existed: counted from the start.
        boost_from: match metadata.get(key::BOOST_FROM) {
            Some(_) => num(key::BOOST_FROM)?,
            None => 0,
        },
        boost,
        rng: RngPosition {
            seed,
            stream: num(key::RNG_STREAM)?,
            word_pos,
        },
        calibration,
        slow,
    };
    Ok(Checkpoint {
        trainer,
        average,
        counters,
    })
}

fn bad(path: &Path, reason: String) -> StoreError {
    StoreError::Format {
        path: path.to_path_buf(),
        reason: format!("checkpoint: {reason}"),
    }
}

fn model_tensors(out: &mut BTreeMap<String, RawTensor>, prefix: &str, model: &Model) {
    layer_tensors(out, prefix, model);
    let h = model.head();
    out.insert(
        format!("{prefix}head.weight"),
        RawTensor::matrix(h.weight()),
    );
    out.insert(format!("{prefix}head.bias"), RawTensor::vector(h.bias()));
}

/// The FF layers' weights and biases alone, under `{prefix}layers.{i}.`.
fn layer_tensors(out: &mut BTreeMap<String, RawTensor>, prefix: &str, model: &Model) {
    for (i, layer) in model.layers().iter().enumerate() {
        out.insert(
            format!("{prefix}layers.{i}.weight"),
            RawTensor::matrix(layer.weight()),
        );
        out.insert(
            format!("{prefix}layers.{i}.bias"),
            RawTensor::vector(layer.bias()),
        );
    }
}

/// Every layer's optimiser state under `{prefix}optimiser.layers.{i}.`; the momentum buffers
/// only when momentum is on (they are empty otherwise).
fn optimiser_tensors(out: &mut BTreeMap<String, RawTensor>, prefix: &str, layers: &[LayerState]) {
    for (i, l) in layers.iter().enumerate() {
        let rows = l.mean_activity.len();
        let p = format!("{prefix}optimiser.layers.{i}");
        if !l.velocity_weight.is_empty() {
            let cols = l.velocity_weight.len() / rows.max(1);
            out.insert(
                format!("{p}.momentum_weight"),
                RawTensor::f32(vec![rows, cols], &l.velocity_weight),
            );
            out.insert(
                format!("{p}.momentum_bias"),
                RawTensor::f32(vec![rows], &l.velocity_bias),
            );
        }
        out.insert(
            format!("{p}.mean_activity"),
            RawTensor::f32(vec![rows], &l.mean_activity),
        );
    }
}

/// What [`optimiser_tensors`] wrote under `prefix`, shapes checked against `network`.
fn read_optimiser(
    tensors: &SafeTensors<'_>,
    prefix: &str,
    network: &NetworkConfig,
    path: &Path,
) -> Result<Vec<LayerState>, StoreError> {
    let widths = network.widths();
    let names = tensors.names();
    let mut layers = Vec::with_capacity(network.hidden.len());
    for (i, w) in widths.windows(2).enumerate() {
        let p = format!("{prefix}optimiser.layers.{i}");
        let (velocity_weight, velocity_bias) = if names.contains(&&*format!("{p}.momentum_weight"))
        {
            (
                read_f32(
                    tensors,
                    &format!("{p}.momentum_weight"),
                    &[w[1], w[0]],
                    path,
                )?,
                read_f32(tensors, &format!("{p}.momentum_bias"), &[w[1]], path)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        layers.push(LayerState {
            velocity_weight,
            velocity_bias,
            mean_activity: read_f32(tensors, &format!("{p}.mean_activity"), &[w[1]], path)?,
        });
    }
    Ok(layers)
}

fn read_model(
    tensors: &SafeTensors<'_>,
    prefix: &str,
    network: &NetworkConfig,
    path: &Path,
) -> Result<Model, StoreError> {
    let params = read_layer_params(tensors, prefix, network, path)?;
    let (c, hi) = (network.classes, network.head_inputs());
    let hw = read_f32(tensors, &format!("{prefix}head.weight"), &[c, hi], path)?;
    let hb = read_f32(tensors, &format!("{prefix}head.bias"), &[c], path)?;
    let head = (matrix(hw, c, hi, path)?, Array1::from_vec(hb));
    Model::from_parts(network.clone(), params, head).map_err(|source| StoreError::Model {
        path: path.to_path_buf(),
        source,
    })
}

/// What [`layer_tensors`] wrote under `prefix`, shapes checked against `network`.
fn read_layer_params(
    tensors: &SafeTensors<'_>,
    prefix: &str,
    network: &NetworkConfig,
    path: &Path,
) -> Result<Vec<LayerParams>, StoreError> {
    let widths = network.widths();
    let mut params = Vec::with_capacity(network.hidden.len());
    for (i, w) in widths.windows(2).enumerate() {
        let weight = read_f32(
            tensors,
            &format!("{prefix}layers.{i}.weight"),
            &[w[1], w[0]],
            path,
        )?;
        let bias = read_f32(tensors, &format!("{prefix}layers.{i}.bias"), &[w[1]], path)?;
        params.push((matrix(weight, w[1], w[0], path)?, Array1::from_vec(bias)));
    }
    Ok(params)
}

/// CRC-32 over every tensor (name, dtype, shape, bytes) in name order, then every metadata
/// entry in key order.
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
    metadata: &BTreeMap<String, String>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (name, dtype, shape, bytes) in tensors {
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    for (k, v) in metadata {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    h.finalize()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}
