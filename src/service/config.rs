//! `Config`: everything `ffd serve` can be told, in layers — the embedded `config/default.toml`,
//! then an optional file, then `FFD_<SECTION>__<KEY>` environment variables, then flags (applied
//! by the caller). Unknown keys are errors; [`Config::validate`] names the key it refuses.
//!
//! The engine's sections are the engine's own structs (`[network]` = `ff::NetworkConfig`,
//! `[train]` = `ff::TrainConfig`, `[average]` = `ff::AverageConfig`, `[drift]` =
//! `ff::DriftConfig`, which `ffd train` does not read), the same ones `ffd train` reads its flags
//! into: a key, its `FFD_SECTION__KEY` variable and its `--key` flag share one
//! name. Where the service's defaults depart from the engine's, [`Config::default`] says so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ff::{
    AverageConfig, Classifier, DriftConfig, FfError, NetworkConfig, OptimiserConfig, ScheduleMode,
    SleepMethod, TrainConfig,
};

/// The embedded default configuration; [`Config::default`] equals it (a test checks).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "FFD_";

/// Separator of nested keys in an environment variable name (`FFD_TRAIN__SCHEDULE`).
pub const ENV_SEPARATOR: &str = "__";

/// Most points `status.history_points` may keep: a day at one per second, a few MB of JSON.
pub const MAX_HISTORY_POINTS: usize = 86_400;

/// Shortest `status.history_interval_ms`: sampling faster only costs CPU.
pub const MIN_HISTORY_INTERVAL_MS: u64 = 10;

/// Why a configuration could not be loaded. Every variant names the file, variable or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read the config file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A layer is not valid TOML, or does not fit the config's shape.
    #[error("{origin}: {message}")]
    Parse {
        /// The layer: a file, or the merged configuration and the variables that went in.
        origin: String,
        /// What does not parse, with the key.
        message: String,
    },
    /// An environment variable cannot be turned into a key.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with its name.
        reason: String,
    },
    /// A key holds a value outside its range, or keys that do not fit together.
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid {
        /// The key, with its section (`learner.queue_capacity`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Output format of the logs of `ffd serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The service configuration (`config/default.toml` documents every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on (used by `ffd serve`; `run` takes a bound listener).
    pub listen: SocketAddr,
    /// Seed of a fresh model's initialisation and of the learner's negatives.
    pub seed: u64,
    /// Log format of `ffd serve`.
    pub log_format: LogFormat,
    /// Start from this model file (written by `ffd train --save`); its network replaces
    /// `network`, and its read-out (`train.classifier`, `train.train_head`) the configured one
    /// when the file records it. A fresh model when absent.
    pub model_file: Option<PathBuf>,
    /// The network's shape.
    pub network: NetworkConfig,
    /// Optimiser, negatives, classifier and the wake/sleep schedule.
    pub train: TrainConfig,
    /// The weight average `/classify` serves.
    pub average: AverageConfig,
    /// Drift detection on the prequential errors.
    pub drift: DriftConfig,
    /// The learner thread and its queue.
    pub learner: LearnerSection,
    /// Request limits.
    pub http: HttpSection,
    /// Features waiting for a delayed label.
    pub pending: PendingSection,
    /// The status page's history.
    pub status: StatusSection,
    /// Which routes are open without a token (the tokens themselves never live here).
    pub auth: AuthSection,
    /// Directory of checkpoints and the write-ahead log (relative paths are relative to the
    /// working directory).
    pub data_dir: PathBuf,
    /// Checkpoints, write-ahead log and recovery.
    pub durability: DurabilitySection,
    /// One node on its own (`local`), or one of several sharing a NATS JetStream cluster.
    pub cluster: ClusterSection,
}

/// `[learner]`: queue size, snapshot cadence, prequential window, shutdown budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerSection {
    /// Samples the learn queue holds.
    pub queue_capacity: usize,
    /// Publish a snapshot after this many samples ...
    pub snapshot_every_samples: u64,
    /// ... or this many milliseconds, whichever comes first.
    pub snapshot_every_ms: u64,
    /// Samples in the rolling prequential accuracy.
    pub prequential_window: usize,
    /// On shutdown: time for in-flight requests and for learning what is queued.
    pub drain_timeout_ms: u64,
    /// Scheduling priority (Unix nice value, 0..=19) of the learner thread. Learning is
    /// throughput work; `/classify` is latency work: on a busy machine a positive value lets
    /// request threads preempt the learner instead of waiting out its time slice.
    pub nice: i32,
    /// Threads the learner splits each sample's forward passes and updates over, by bands of
    /// units (bit-identical results for every count; the extra threads share `nice`).
    pub threads: usize,
}

/// `[http]`: request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Most samples in one batch.
    pub max_batch_samples: usize,
    /// Longest NDJSON line.
    pub max_line_bytes: usize,
    /// Time limit of a non-streaming request.
    pub request_timeout_ms: u64,
    /// How long an NDJSON stream waits for queue room before answering 429.
    pub stream_wait_ms: u64,
    /// `Retry-After` of a 429 answer.
    pub retry_after_seconds: u64,
    /// Requests handled at once across the whole server (probes and `/metrics` excepted);
    /// beyond it a request is answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Open connections. When all are taken, a new connection closes the one that has waited
    /// longest for a request head (from the peer holding the most), or is refused at once if
    /// every connection is inside a request.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64); beyond it a new connection
    /// is refused at once.
    pub max_connections_per_peer: usize,
    /// A connection that sends nothing for this long is closed (a client that goes silent
    /// mid-body, or stops reading its answer).
    pub idle_timeout_ms: u64,
    /// Time for a whole request head, from accept or from the end of the previous answer;
    /// trickling bytes does not extend it. Also bounds an idle keep-alive connection.
    pub header_timeout_ms: u64,
    /// Slowest average rate a request body may arrive at, over the time the server waits for
    /// it after `body_grace_ms`; 0 turns the check off.
    pub min_body_bytes_per_second: u64,
    /// Waiting time a request body gets before `min_body_bytes_per_second` applies.
    pub body_grace_ms: u64,
}

/// `[auth]`: which routes need no token. `/learn` and `/admin/*` always follow the learn
/// token, `/classify` and `/v1/model` the read token; tokens come from the environment or files
/// (see `service::auth`), never from the configuration, so `--print-config` cannot show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `/metrics` answers without a token (Prometheus scrapers usually carry none).
    pub metrics_open: bool,
    /// `/healthz` and `/readyz` answer without a token (orchestrator probes carry none).
    pub health_open: bool,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            metrics_open: true,
            health_open: true,
        }
    }
}

/// `[pending]`: features kept by `/classify` for a delayed label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PendingSection {
    /// Most entries kept; the oldest is evicted first.
    pub capacity: usize,
    /// Seconds an entry lives.
    pub ttl_seconds: f64,
}

impl Default for Config {
    /// The engine's defaults (which `ffd train` keeps), except for these departures — the only
    /// place where the service and `ffd train` differ by default:
    /// - `train.schedule = sleep` (`ffd train`: interleaved): wake/sleep is the point of a
    ///   streaming learner;
    /// - the long sleep: `train.sleep_method = consolidate` every `sleep_every_samples = 1000`
    ///   wake samples, with `wake_lr_scale = 0` (the wake classifies with the slow weights and
    ///   learns at the sleep) and `sleep_ramp = 0.05` (a wake lasts at most a twentieth of
    ///   the samples since the start or a drift); `ffd train`: `negatives` every 16, rate 1, no
    ///   ramp. One MNIST pass with the service's settings, three seeds: prequential accuracy
    ///   0.886–0.888, test error 3.57–3.72 %, against 0.870–0.872 and 3.59–3.93 % for
    ///   `negatives` every 16; after a label permutation the served model is back to
    ///   93.5–95.4 % of its pre-drift held-out accuracy 2 000 samples after the change, against
    ///   92.8–93.2 % (BENCHMARKS.md §1, "Long sleeps in the service", and §8);
    /// - the read-out: `train.classifier = softmax` with `train.train_head = true`, reading
    ///   every layer (`network.score_from_layer = 0`), and a louder label
    ///   (`network.label_strength = 5`); `ffd train`: goodness from layer 1, label strength 3,
    ///   no head. The head learns from the first samples, when goodness is still near chance,
    ///   and its hard negatives skip the ten-label goodness pass. One MNIST pass, three seeds:
    ///   prequential accuracy 0.931–0.933, test error 2.68–2.94 % (through the service:
    ///   0.931–0.932, 2.70–2.94 %, 1 599–1 870 samples learned per second), against 0.886–0.888 and 3.57–3.72 % for goodness; its
    ///   probabilities calibrate better (ECE 0.003 against 0.014 after 20 000 samples) and a
    ///   drift is recovered sooner (BENCHMARKS.md §8);
    /// - `train.sleep_every_seconds = 5` (`ffd train`: 0): a slow stream still sleeps;
    /// - `average.average_decay = 0.98` (`ffd train`: 0, off): per-sample SGD at a constant rate
    ///   leaves the live weights noisy and the average classifies better (one MNIST epoch:
    ///   4.9 % test error against 10.4 %);
    /// - the learning rate has no end-of-run decay (`ffd train` decays it, `--lr-decay-start`):
    ///   a stream has no end to decay towards; instead it starts at 3e-4 and fades to
    ///   `train.lr = 1e-4` (`train.lr_boost = 3` over `lr_boost_samples = 10000`; `ffd train`:
    ///   a constant 3e-4 before its decay); a detected drift restarts it at 2e-4
    ///   (`drift.drift_lr_boost`, see `ff::DriftConfig`). Three MNIST passes
    ///   with the service's settings: 3.6–3.9 % test error, prequential accuracy 0.870–0.872,
    ///   against 4.8–5.2 % and 0.833–0.839 at a constant 3e-4 (BENCHMARKS.md §8).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            seed: 1,
            log_format: LogFormat::Text,
            model_file: None,
            network: NetworkConfig {
                score_from_layer: 0,
                label_strength: 5.0,
                ..NetworkConfig::default()
            },
            train: TrainConfig {
                classifier: Classifier::Softmax,
                train_head: true,
                schedule: ScheduleMode::Sleep,
                sleep_method: SleepMethod::Consolidate,
                sleep_every_samples: 1000,
                wake_lr_scale: 0.0,
                sleep_ramp: 0.05,
                sleep_every_seconds: 5.0,
                optimiser: OptimiserConfig {
                    lr: 1e-4,
                    lr_boost: 3.0,
                    lr_boost_samples: 10_000,
                    ..OptimiserConfig::default()
                },
                ..TrainConfig::default()
            },
            average: AverageConfig {
                average_decay: 0.98,
                ..AverageConfig::default()
            },
            drift: DriftConfig::default(),
            learner: LearnerSection::default(),
            http: HttpSection::default(),
            pending: PendingSection::default(),
            status: StatusSection::default(),
            auth: AuthSection::default(),
            data_dir: PathBuf::from("ffd-data"),
            durability: DurabilitySection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

impl Default for LearnerSection {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            snapshot_every_samples: 1000,
            snapshot_every_ms: 250,
            prequential_window: 1000,
            drain_timeout_ms: 10_000,
            nice: 10,
            // One: on an idle two-core machine a second learner thread slowed the service down
            // (BENCHMARKS.md §2, "Threads"); results do not depend on it (bit-identical).
            threads: 1,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_batch_samples: 1000,
            max_line_bytes: 64 << 10,
            request_timeout_ms: 30_000,
            stream_wait_ms: 10_000,
            retry_after_seconds: 1,
            max_concurrent_requests: 256,
            max_connections: 1024,
            max_connections_per_peer: 256,
            idle_timeout_ms: 60_000,
            header_timeout_ms: 10_000,
            min_body_bytes_per_second: 256,
            body_grace_ms: 5_000,
        }
    }
}

impl Default for PendingSection {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl_seconds: 300.0,
        }
    }
}

/// `[status]`: the bounded history behind `GET /v1/status` and the page at `GET /`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSection {
    /// Points kept; the oldest is dropped first.
    pub history_points: usize,
    /// Milliseconds between two points.
    pub history_interval_ms: u64,
}

impl Default for StatusSection {
    fn default() -> Self {
        Self {
            history_points: 600,
            history_interval_ms: 1000,
        }
    }
}

impl Config {
    /// Loads the layers: the embedded default, then `file` (if any), then every `FFD_*`
    /// variable of `env` (`FFD_LISTEN`, `FFD_TRAIN__SCHEDULE`, ...: the name after the prefix,
    /// lower-cased, with `__` between nested keys; the value is read as TOML — a number, a
    /// boolean, an array — or taken as a string when it is not TOML). Flags are the caller's:
    /// set the fields, then call [`Config::validate`].
    pub fn load<I, K, V>(file: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table = parse_table(DEFAULT_TOML, "embedded config/default.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let origin = path.display().to_string();
            // Checked on its own first, so a mistake in the file is reported with its line.
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
            merge(&mut table, parse_table(&text, &origin)?);
        }
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| {
                let k = k.as_ref();
                k.starts_with(ENV_PREFIX) && !crate::service::auth::TOKEN_VARIABLES.contains(&k)
            })
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        vars.sort();
        for (var, value) in &vars {
            apply_env(&mut table, var, value)?;
        }
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            ConfigError::Parse {
                origin: if vars.is_empty() {
                    "configuration".into()
                } else {
                    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
                    format!("configuration (with {})", names.join(", "))
                },
                message: format!("`{}`: {}", e.path(), e.inner().message()),
            }
        })
    }

    /// Checks every key's range and that the keys fit together; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        self.network
            .validate()
            .map_err(|e| engine_error("network", e))?;
        self.train
            .validate()
            .map_err(|e| engine_error("train", e))?;
        if self.train.batch_size != 1 {
            return invalid("train.batch_size", "must be 1: a stream learns per sample");
        }
        if !self.train.optimiser.lr_schedule.is_constant() {
            return invalid(
                "train.lr_schedule",
                "must be constant: a stream has no end to decay towards",
            );
        }
        self.average
            .validate()
            .map_err(|e| engine_error("average", e))?;
        self.drift
            .validate()
            .map_err(|e| engine_error("drift", e))?;
        let l = &self.learner;
        if l.queue_capacity == 0 {
            return invalid("learner.queue_capacity", "must be > 0");
        }
        if l.snapshot_every_samples == 0 {
            return invalid("learner.snapshot_every_samples", "must be > 0");
        }
        if l.snapshot_every_ms == 0 {
            return invalid("learner.snapshot_every_ms", "must be > 0");
        }
        if l.prequential_window == 0 {
            return invalid("learner.prequential_window", "must be > 0");
        }
        if !(0..=19).contains(&l.nice) {
            return invalid("learner.nice", "must be in 0..=19");
        }
        if !(1..=256).contains(&l.threads) {
            return invalid("learner.threads", "must be in 1..=256");
        }
        let h = &self.http;
        if h.max_body_bytes == 0 {
            return invalid("http.max_body_bytes", "must be > 0");
        }
        if h.max_batch_samples == 0 {
            return invalid("http.max_batch_samples", "must be > 0");
        }
        if h.max_batch_samples > l.queue_capacity {
            return invalid(
                "http.max_batch_samples",
                "must be <= learner.queue_capacity (a larger batch could never be queued)",
            );
        }
        if h.max_line_bytes == 0 {
            return invalid("http.max_line_bytes", "must be > 0");
        }
        if h.request_timeout_ms == 0 {
            return invalid("http.request_timeout_ms", "must be > 0");
        }
        if self
            .model_file
            .as_ref()
            .is_some_and(|p| p.to_str().is_none())
        {
            return invalid("model_file", "must be a UTF-8 path");
        }
        if h.max_concurrent_requests == 0 {
            return invalid("http.max_concurrent_requests", "must be > 0");
        }
        if h.max_connections == 0 {
            return invalid("http.max_connections", "must be > 0");
        }
        if h.max_connections_per_peer == 0 {
            return invalid("http.max_connections_per_peer", "must be > 0");
        }
        if h.idle_timeout_ms == 0 {
            return invalid("http.idle_timeout_ms", "must be > 0");
        }
        if h.header_timeout_ms == 0 {
            return invalid("http.header_timeout_ms", "must be > 0");
        }
        if h.body_grace_ms == 0 {
            return invalid("http.body_grace_ms", "must be > 0");
        }
        let p = &self.pending;
        if p.capacity == 0 {
            return invalid("pending.capacity", "must be > 0");
        }
        if !(p.ttl_seconds.is_finite() && p.ttl_seconds > 0.0) {
            return invalid("pending.ttl_seconds", "must be a finite number > 0");
        }
        let st = &self.status;
        if !(1..=MAX_HISTORY_POINTS).contains(&st.history_points) {
            return invalid(
                "status.history_points",
                &format!("must be in 1..={MAX_HISTORY_POINTS}"),
            );
        }
        if st.history_interval_ms < MIN_HISTORY_INTERVAL_MS {
            return invalid(
                "status.history_interval_ms",
                &format!("must be >= {MIN_HISTORY_INTERVAL_MS}"),
            );
        }
        self.durability.validate(&self.data_dir)?;
        self.cluster.validate()?;
        if self.cluster.backend == ClusterBackend::Nats
            && h.max_batch_samples > crate::service::cluster::message::MAX_SAMPLES_PER_MESSAGE
        {
            return invalid(
                "http.max_batch_samples",
                &format!(
                    "must be <= {} with cluster.backend = \"nats\" (one message per request)",
                    crate::service::cluster::message::MAX_SAMPLES_PER_MESSAGE
                ),
            );
        }
        Ok(())
    }

    /// The configuration as TOML (what `--print-config` shows). Fails only on a `model_file`
    /// path that is not UTF-8 (which [`Config::validate`] refuses).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// When an accepted sample counts as durable (`durability.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// `/learn` answers once the samples' WAL records are synced to disk (one sync shared by
    /// the concurrent requests): an acknowledged sample survives a crash.
    #[default]
    Fsync,
    /// Answers at once; the WAL is synced every `batch_interval_ms`: a crash loses at most
    /// that window of acknowledged samples.
    Batch,
    /// Answers at once; the WAL is written but synced only at shutdown: a process crash loses
    /// nothing the OS has, a machine crash may lose what was not yet on disk.
    None,
}

/// `[durability]`: checkpoints, write-ahead log and recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilitySection {
    /// Keep checkpoints and a WAL in `data_dir`, and recover from them at start.
    pub enabled: bool,
    /// When a sample is durable: `fsync`, `batch` or `none`.
    pub mode: DurabilityMode,
    /// Sync period of the `batch` mode.
    pub batch_interval_ms: u64,
    /// Checkpoint after this many samples learned since the last checkpoint (0: never by count).
    pub checkpoint_every_samples: u64,
    /// ... or this many seconds with something new to save (0: never by time).
    pub checkpoint_every_seconds: f64,
    /// Checkpoints kept; older ones are deleted after each new one.
    pub keep_checkpoints: usize,
    /// A new WAL segment starts once the current one reaches this size.
    pub wal_segment_bytes: u64,
    /// Checkpoint early once this many WAL bytes were written since the last checkpoint: bounds
    /// the WAL on disk and the replay after a crash.
    pub max_wal_bytes: u64,
    /// Most WAL bytes accepted but not yet written; beyond it `/learn` answers 429.
    pub max_unsynced_bytes: usize,
    /// `/readyz` answers 200 while the WAL backlog is replayed after a restart (`/classify`
    /// then serves a model older than what was acknowledged); by default it answers 503.
    pub ready_while_recovering: bool,
    /// Set the saved state aside and start afresh (`ffd serve --reset`; not a config key).
    #[serde(skip)]
    pub reset: bool,
}

impl Default for DurabilitySection {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: DurabilityMode::Fsync,
            batch_interval_ms: 5,
            checkpoint_every_samples: 2_500,
            checkpoint_every_seconds: 2.5,
            keep_checkpoints: 3,
            wal_segment_bytes: 64 << 20,
            max_wal_bytes: 1 << 30,
            max_unsynced_bytes: 64 << 20,
            ready_while_recovering: false,
            reset: false,
        }
    }
}

impl DurabilitySection {
    fn validate(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.enabled && data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty while durability is enabled");
        }
        if self.mode == DurabilityMode::Batch && self.batch_interval_ms == 0 {
            return invalid("durability.batch_interval_ms", "must be > 0");
        }
        if !(self.checkpoint_every_seconds.is_finite() && self.checkpoint_every_seconds >= 0.0) {
            return invalid(
                "durability.checkpoint_every_seconds",
                "must be a finite number >= 0",
            );
        }
        if self.keep_checkpoints == 0 {
            return invalid("durability.keep_checkpoints", "must be > 0");
        }
        if self.wal_segment_bytes == 0 {
            return invalid("durability.wal_segment_bytes", "must be > 0");
        }
        if self.max_wal_bytes == 0 {
            return invalid("durability.max_wal_bytes", "must be > 0");
        }
        if self.max_unsynced_bytes == 0 {
            return invalid("durability.max_unsynced_bytes", "must be > 0");
        }
        Ok(())
    }
}

/// Where accepted samples go and who learns them (`cluster.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterBackend {
    /// One process: the local write-ahead log, the learner in this process.
    #[default]
    Local,
    /// Several nodes: `/learn` publishes to a NATS JetStream stream, one node (the lease
    /// holder) learns, every node classifies (docs/cluster.md).
    Nats,
}

/// `[cluster]`: scale-out on NATS JetStream (docs/cluster.md). With `backend = "local"` the
/// other keys are not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `local` or `nats`.
    pub backend: ClusterBackend,
    /// NATS servers to connect to (any one is enough; the client fails over between them).
    pub nats_urls: Vec<String>,
    /// Name of the model: the stream, the lease and the object bucket are named after it, so
    /// several models can share one NATS cluster.
    pub model: String,
    /// This node's id in the lease (empty: the host name).
    pub node: String,
    /// Copies JetStream keeps of the stream and the buckets (1, or 3 in a three-server cluster).
    pub replicas: usize,
    /// A learner that has not renewed its lease for this long is replaced.
    pub lease_seconds: f64,
    /// How often the learner shares its newest snapshot with the other nodes.
    pub share_every_ms: u64,
    /// Longest wait for a NATS answer (publish acknowledgement, lease write, connect).
    pub nats_timeout_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            backend: ClusterBackend::Local,
            nats_urls: vec!["nats://127.0.0.1:4222".into()],
            model: "ffd".into(),
            node: String::new(),
            replicas: 1,
            lease_seconds: 5.0,
            share_every_ms: 250,
            nats_timeout_ms: 2000,
        }
    }
}

impl ClusterSection {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if self.backend == ClusterBackend::Local {
            return Ok(());
        }
        if self.nats_urls.is_empty() {
            return invalid("cluster.nats_urls", "must name at least one NATS server");
        }
        if !name_ok(&self.model) {
            return invalid(
                "cluster.model",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-` (it names NATS streams)",
            );
        }
        if !self.node.is_empty() && self.node.len() > 255 {
            return invalid("cluster.node", "must be at most 255 characters");
        }
        if !(1..=5).contains(&self.replicas) {
            return invalid("cluster.replicas", "must be in 1..=5 (JetStream's limit)");
        }
        if !(self.lease_seconds.is_finite() && (0.3..=3600.0).contains(&self.lease_seconds)) {
            return invalid("cluster.lease_seconds", "must be in 0.3..=3600");
        }
        if self.share_every_ms == 0 {
            return invalid("cluster.share_every_ms", "must be > 0");
        }
        if self.nats_timeout_ms == 0 {
            return invalid("cluster.nats_timeout_ms", "must be > 0");
        }
        Ok(())
    }
}

/// An engine config error as the service's: the engine's key is the section's key.
fn engine_error(section: &str, e: FfError) -> ConfigError {
    match e {
        FfError::Config { key, reason } => ConfigError::Invalid {
            key: format!("{section}.{key}"),
            reason,
        },
        other => ConfigError::Invalid {
            key: section.into(),
            reason: other.to_string(),
        },
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.into(),
        message: e.to_string(),
    })
}

/// Deep merge: tables merge key by key; any other value replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Sets the key `var` names (`FFD_A__B` → `a.b`) to `raw`.
fn apply_env(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |reason: &str| ConfigError::Env {
        var: var.into(),
        reason: reason.into(),
    };
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split(ENV_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(err(
            "names no config key (expected FFD_<KEY> or FFD_<SECTION>__<KEY>)",
        ));
    }
    let (last, parents) = path.split_last().expect("split yields at least one part");
    let mut at = table;
    for part in parents {
        let entry = at
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(err(&format!("`{part}` is not a section"))),
        };
    }
    // A string key keeps the raw text; any other key reads it as a TOML value, falling back to
    // a string (the error then names the key and the expected type).
    let value = match at.get(last) {
        Some(toml::Value::String(_)) => toml::Value::String(raw.into()),
        _ => format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.into())),
    };
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn embedded_default_matches_default() {
        let parsed: Config = toml::from_str(DEFAULT_TOML).expect("default.toml parses");
        assert_eq!(parsed, Config::default());
        let loaded = Config::load(None, NO_ENV).expect("loads");
        assert_eq!(loaded, Config::default());
        loaded.validate().expect("the defaults are valid");
        assert!(loaded.train.optimiser.lr_schedule.is_constant());
    }

    #[test]
    fn printed_config_reads_back() {
        let mut c = Config {
            model_file: Some("m.safetensors".into()),
            ..Default::default()
        };
        c.network.hidden = vec![7, 9];
        let back: Config = toml::from_str(&c.to_toml().expect("serialises")).expect("round trip");
        assert_eq!(back, c);
    }

    #[test]
    fn file_then_env_override_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ffd.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\n[train]\nsleep_every_samples = 8\n[network]\nhidden = [64]\n",
        )
        .expect("write");
        let env = [
            ("FFD_TRAIN__SLEEP_EVERY_SAMPLES", "4"),
            ("FFD_TRAIN__SCHEDULE", "interleaved"),
            ("FFD_NETWORK__HIDDEN", "[32, 32]"),
            ("FFD_MODEL_FILE", "/tmp/m.safetensors"),
            ("HOME", "/root"),
        ];
        let c = Config::load(Some(&path), env).expect("loads");
        assert_eq!(c.listen, "0.0.0.0:9000".parse().expect("address"));
        assert_eq!(c.train.sleep_every_samples, 4);
        assert_eq!(c.train.schedule, ScheduleMode::Interleaved);
        assert_eq!(c.network.hidden, vec![32, 32]);
        assert_eq!(c.network.inputs, 784, "untouched keys keep their defaults");
        assert_eq!(c.model_file, Some(PathBuf::from("/tmp/m.safetensors")));
        let env = [("FFD_LISTEN", "0.0.0.0:8081")];
        let c = Config::load(None, env).expect("loads");
        assert_eq!(c.listen.port(), 8081);
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::load(None, [("FFD_TRAIN__SCHEDULE", "nap")]).expect_err("bad variant");
        assert!(err.to_string().contains("train.schedule"), "{err}");
        let err = Config::load(None, [("FFD_LISTN", "x")]).expect_err("unknown key");
        assert!(err.to_string().contains("listn"), "{err}");
        let err = Config::load(None, [("FFD_TRAIN__", "x")]).expect_err("empty key");
        assert!(err.to_string().contains("FFD_TRAIN__"), "{err}");
        let err = Config::load(None, [("FFD_TRAIN__LRR", "1")]).expect_err("unknown key");
        assert!(err.to_string().contains("lrr"), "{err}");

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ffd.toml");
        std::fs::write(&path, "[learner]\nqueue_capacity = \"big\"\n").expect("write");
        let err = Config::load(Some(&path), NO_ENV).expect_err("bad type");
        assert!(err.to_string().contains("queue_capacity"), "{err}");
        assert!(err.to_string().contains("ffd.toml"), "{err}");

        type Breaker = fn(&mut Config);
        let cases: [(Breaker, &str); 9] = [
            (|c| c.train.batch_size = 4, "train.batch_size"),
            (|c| c.average.average_decay = 1.0, "average.average_decay"),
            (|c| c.train.replay_capacity = 0, "train.replay_capacity"),
            (|c| c.learner.queue_capacity = 0, "learner.queue_capacity"),
            (|c| c.train.optimiser.lr = -1.0, "train.lr"),
            (|c| c.network.hidden = vec![], "network.hidden"),
            (
                |c| c.train.sleep_every_samples = 0,
                "train.sleep_every_samples",
            ),
            (
                |c| c.http.max_batch_samples = 1 << 20,
                "http.max_batch_samples",
            ),
            (|c| c.pending.ttl_seconds = f64::NAN, "pending.ttl_seconds"),
        ];
        for (break_it, key) in cases {
            let mut c = Config::default();
            break_it(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
    }

    /// `--print-config` and `/v1/model` show floats as written, not widened to `f64`.
    #[test]
    fn printed_floats_are_short() {
        let toml = Config::default().to_toml().expect("serialises");
        for line in [
            "lr = 0.0001",
            "peer_decay = 0.999",
            "average_decay = 0.98",
            "eps = 0.00000001",
        ] {
            assert!(
                toml.lines().any(|l| l == line),
                "{line} missing from:\n{toml}"
            );
        }
        let json = serde_json::to_value(Config::default()).expect("serialises");
        assert_eq!(json["train"]["lr"].to_string(), "0.0001");
        assert_eq!(json["train"]["weight_decay"].to_string(), "0.001");
    }

    #[test]
    fn status_keys_are_validated() {
        let mut c = Config::default();
        c.status.history_points = 0;
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "status.history_points")
        );
        let mut c = Config::default();
        c.status.history_interval_ms = 1;
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "status.history_interval_ms")
        );
    }
}
