//! The service: everything async lives here. [`run`] wires the parts and serves until its
//! shutdown future completes.
//!
//! ```text
//! POST /learn ─► http::learn: decode ─► ValidatedBatch (all or nothing: 400/413/415/422)
//!             ─► LearnQueue (bounded; full → 429 + Retry-After) + WAL record (same lock)
//!             ─► WAL synced (fsync mode, group commit) ─► 202 {accepted, last_seq}
//! learner thread (sole owner of the Trainer): test-then-train each sample, sleep on schedule
//!             ─► every N samples / T ms: publish Arc<Snapshot>
//! POST /classify ─► current Arc<Snapshot> (no lock, no wait) ─► scores ─► 200
//! /metrics, /v1/model only read; /admin/* send control flags to the learner.
//! ```
//!
//! Parts: `config` (layers and validation), `sample` (`ValidatedBatch`), `queue`
//! (`LearnQueue`), `learner` (the thread), `snapshot` (`Snapshots`), `pending` (delayed
//! labels), `metrics`, `shutdown`, `http` (router, handlers, `ApiError`), `history` (what the
//! status page plots), `auth` (access tokens from the environment, kept as digests); durability:
//! `journal` (WAL writer thread), `checkpointer` (checkpoint writer thread), `recovery` (load
//! the newest good checkpoint, verify the WAL, hand the backlog to the learner).
//!
//! Shutdown, in order: the trigger fires → handlers refuse new samples (503) and NDJSON streams
//! stop → the server stops accepting and finishes in-flight requests → the queue closes and the
//! learner learns what is queued → a final checkpoint → the learner thread is joined → the WAL
//! is synced and closed. All of it within
//! `learner.drain_timeout_ms`; samples still queued at the deadline are dropped and logged.

#![warn(missing_docs)]

pub mod auth;
pub mod checkpointer;
pub mod config;
pub mod drift;
pub mod history;
pub mod http;
pub mod journal;
pub mod learner;
pub mod metrics;
pub mod pending;
pub mod queue;
pub mod recovery;
pub mod sample;
pub mod shutdown;
pub mod snapshot;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ff::{FfError, Model, Trainer};
use crate::store::model_file::{load_model, StoreError};

pub use auth::{AccessTokens, TokenError};
pub use config::{Config, ConfigError, LogFormat};
pub use learner::LearnerStatus;
pub use shutdown::shutdown_signal;

use checkpointer::CheckpointReport;
use history::{History, StatusSources};
use http::AppState;
use journal::{Journal, JournalHandle, JournalMetrics, JournalSettings};
use learner::{LearnerDurability, LearnerHandle, LearnerSettings};
use metrics::Metrics;
use pending::PendingLabels;
use queue::LearnQueue;
use sample::SampleShape;
use shutdown::ShutdownTrigger;
use snapshot::{Snapshot, Snapshots};

/// Why the service could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model file could not be loaded.
    #[error("cannot load the model")]
    Model(#[from] StoreError),
    /// The engine refused the configuration.
    #[error("the engine refused the configuration")]
    Engine(#[from] FfError),
    /// The metrics could not be registered (a bug).
    #[error("cannot register the metrics")]
    Metrics(#[from] prometheus::Error),
    /// Serving or starting the learner thread failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The learner thread panicked.
    #[error("the learner thread panicked")]
    LearnerPanicked,
    /// The saved state (checkpoints, WAL) cannot be used.
    #[error(transparent)]
    Recovery(#[from] recovery::RecoveryError),
}

/// A started service: the learner runs; [`Service::serve`] answers HTTP.
#[derive(Debug)]
pub struct Service {
    state: Arc<AppState>,
    learner: LearnerHandle,
    trigger: ShutdownTrigger,
    history_sources: StatusSources,
    /// The WAL writer, stopped after the learner.
    journal: Option<JournalHandle>,
}

impl Service {
    /// [`Service::with_access`] with no tokens: `/learn`, `/classify` and `/v1/model` are
    /// open, `/admin/*` is refused.
    pub fn new(config: Config) -> Result<Self, ServiceError> {
        Self::with_access(config, AccessTokens::default())
    }

    /// Validates `config`, loads or creates the model (a model file's network replaces
    /// `config.network`) and starts the learner thread; requests are checked against `access`.
    /// Fails if `[auth]` closes a route while no token is set (nothing could open it).
    pub fn with_access(mut config: Config, access: AccessTokens) -> Result<Self, ServiceError> {
        config.validate()?;
        for (key, open) in [
            ("auth.metrics_open", config.auth.metrics_open),
            ("auth.health_open", config.auth.health_open),
        ] {
            if !open && !access.any() {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    reason: format!(
                        "is false but no token is set ({} or {})",
                        auth::READ_TOKEN_VAR,
                        auth::LEARN_TOKEN_VAR
                    ),
                }
                .into());
            }
        }
        let model = match &config.model_file {
            Some(path) => {
                let loaded = load_model(path)?;
                config.network = loaded.model.config().clone();
                config.validate()?;
                loaded.model
            }
            None => Model::new(
                config.network.clone(),
                &mut StdRng::seed_from_u64(config.seed),
            )?,
        };
        let mut trainer = Trainer::new(model.clone(), config.train.clone(), config.seed)?;

        let metrics = Arc::new(Metrics::new()?);
        let mut queue = LearnQueue::new(config.learner.queue_capacity, metrics.queue_depth.clone());
        metrics
            .queue_capacity
            .set(config.learner.queue_capacity as i64);
        let status = Arc::new(LearnerStatus::default());
        let mut snapshot = Snapshot {
            model,
            version: 0,
            samples_learned: 0,
        };
        let mut durability = None;
        let mut journal_handle = None;
        let (reports, checkpoint_reports) = watch::channel(CheckpointReport::none());
        if config.durability.enabled {
            let recovered = recovery::recover(&config, trainer)?;
            let d = &config.durability;
            let (journal, handle) = Journal::start(
                JournalSettings {
                    dir: config.data_dir.clone(),
                    mode: d.mode,
                    batch_interval: Duration::from_millis(d.batch_interval_ms),
                    segment_bytes: d.wal_segment_bytes,
                    max_unsynced_bytes: d.max_unsynced_bytes,
                },
                recovered.last_seq,
                recovered.wal_bytes,
                JournalMetrics {
                    wal_bytes: metrics.durability.wal_bytes.clone(),
                    fsync_duration: metrics.durability.wal_fsync_duration.clone(),
                },
            )
            .map_err(recovery::RecoveryError::Wal)?;
            queue = queue.with_journal(Arc::clone(&journal), recovered.last_seq);
            // Counted from the start, so `queue_depth` never shows 0 before the learner begins.
            queue.set_backlog(recovered.backlog.remaining);
            trainer = recovered.trainer;
            let c = recovered.counters;
            status.restore(&c);
            metrics
                .durability
                .checkpoint_last_seq
                .set(c.last_seq as i64);
            snapshot = Snapshot {
                model: match &recovered.average {
                    Some((average, _)) => average.clone(),
                    None => trainer.model().clone(),
                },
                version: c.model_version,
                samples_learned: c.samples_learned,
            };
            metrics.model_version.set(c.model_version as i64);
            let checkpointer = checkpointer::spawn(
                config.data_dir.clone(),
                d.keep_checkpoints,
                Arc::clone(&journal),
                metrics.durability.clone(),
                reports,
            )
            .map_err(|source| ServiceError::Io {
                what: "starting the checkpoint thread",
                source,
            })?;
            durability = Some(LearnerDurability {
                checkpointer,
                journal: Arc::clone(&journal),
                every_samples: d.checkpoint_every_samples,
                every: (d.checkpoint_every_seconds > 0.0)
                    .then(|| Duration::from_secs_f64(d.checkpoint_every_seconds)),
                max_wal_bytes: d.max_wal_bytes,
                backlog: recovered.backlog,
                average: recovered.average,
                metrics: metrics.durability.clone(),
            });
            journal_handle = Some((journal, handle));
        }
        let queue = Arc::new(queue);
        let snapshots = Arc::new(Snapshots::new(snapshot));
        let pending = Arc::new(PendingLabels::new(
            config.pending.capacity,
            Duration::from_secs_f64(config.pending.ttl_seconds),
            metrics.pending_entries.clone(),
        ));
        let settings = LearnerSettings {
            snapshot_every_samples: config.learner.snapshot_every_samples,
            snapshot_every: Duration::from_millis(config.learner.snapshot_every_ms),
            sleep_every: config.train.sleep_interval(),
            prequential_window: config.learner.prequential_window,
            nice: config.learner.nice,
            average: config.average.clone(),
            drift: config.drift.clone(),
        };
        let learner = learner::spawn(
            trainer,
            Arc::clone(&queue),
            Arc::clone(&snapshots),
            Arc::clone(&metrics),
            Arc::clone(&status),
            settings,
            durability,
        )
        .map_err(|source| ServiceError::Io {
            what: "starting the learner thread",
            source,
        })?;
        let (trigger, notice) = shutdown::channel();
        let history = Arc::new(History::new(
            config.status.history_points,
            Duration::from_millis(config.status.history_interval_ms),
        ));
        let history_sources = StatusSources {
            status: Arc::clone(&status),
            metrics: Arc::clone(&metrics),
            queue: Arc::clone(&queue),
            snapshots: Arc::clone(&snapshots),
            layers: config.network.hidden.len(),
        };
        let state = Arc::new(AppState {
            shape: SampleShape {
                inputs: config.network.inputs,
                classes: config.network.classes,
            },
            classifier: config.train.classifier,
            config,
            queue,
            snapshots,
            pending,
            metrics,
            status,
            shutdown: notice,
            history,
            access,
            durability: journal_handle
                .as_ref()
                .map(|(journal, _)| http::DurabilityState {
                    journal: Arc::clone(journal),
                    checkpoints: checkpoint_reports,
                }),
        });
        Ok(Self {
            state,
            learner,
            trigger,
            history_sources,
            journal: journal_handle.map(|(_, handle)| handle),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The learner's progress counters (they stay readable after [`Service::serve`] returns).
    pub fn status(&self) -> Arc<LearnerStatus> {
        Arc::clone(&self.state.status)
    }

    /// The router [`Service::serve`] serves (for inspecting its routes).
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.state))
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then shuts down in order (see the
    /// module docs) and returns `Ok` — also when samples had to be dropped at the deadline.
    /// Fails if the server stops on its own or the learner thread panicked.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        let Service {
            state,
            learner,
            trigger,
            history_sources,
            journal,
        } = self;
        tokio::spawn(history::record(
            Arc::clone(&state.history),
            history_sources,
            state.shutdown.clone(),
        ));
        // Polled once before the address is announced, so a signal handler inside `shutdown`
        // is installed before any client (or supervisor) can know the service is up; a signal
        // sent right after the `listening` line then shuts down in order instead of killing.
        let mut shutdown = std::pin::pin!(shutdown);
        let signalled_early = futures_util::poll!(shutdown.as_mut()).is_ready();
        let shutdown = async move {
            if !signalled_early {
                shutdown.await;
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening");
            if !addr.ip().is_loopback() && state.access.learn.is_none() {
                tracing::warn!(
                    %addr,
                    "NO LEARN TOKEN IS SET and the service listens beyond this host: anyone who \
                     can reach {addr} can teach the model. Set {} or {}.",
                    auth::LEARN_TOKEN_VAR,
                    auth::LEARN_TOKEN_FILE_VAR
                );
            }
        }
        let drain = Duration::from_millis(state.config.learner.drain_timeout_ms);
        let mut notice = state.shutdown.clone();
        let http_config = &state.config.http;
        let listener = http::listener::BoundedListener::new(
            listener,
            http_config.max_connections,
            Duration::from_millis(http_config.idle_timeout_ms),
            state.metrics.http_connections.clone(),
        );
        let server = axum::serve(listener, http::router(Arc::clone(&state)))
            .with_graceful_shutdown(async move { notice.triggered().await })
            .into_future();
        let mut server = tokio::spawn(server);

        let stopped_early = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown => None,
        };
        trigger.trigger();
        let deadline = Instant::now() + drain;
        if stopped_early.is_none() {
            match tokio::time::timeout_at(deadline.into(), &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "the server failed while stopping"),
                Ok(Err(e)) => tracing::error!(error = %e, "the server task failed while stopping"),
                Err(_) => {
                    tracing::warn!("in-flight requests outlived the drain timeout; closing them");
                    server.abort();
                }
            }
        }
        tracing::info!(queued = state.queue.len(), "draining the learn queue");
        let joined = tokio::task::spawn_blocking(move || {
            let joined = learner.finish(deadline);
            // After the learner: its final checkpoint may delete segments; then the rest of
            // the buffer is written and synced.
            if let Some(journal) = journal {
                journal.finish();
            }
            joined
        })
        .await;
        if !matches!(joined, Ok(Ok(()))) {
            return Err(ServiceError::LearnerPanicked);
        }
        match stopped_early {
            None => Ok(()),
            Some(result) => Err(ServiceError::Io {
                what: "serving HTTP",
                source: match result {
                    Ok(Ok(())) => std::io::Error::other("the server stopped on its own"),
                    Ok(Err(e)) => e,
                    Err(e) => std::io::Error::other(e.to_string()),
                },
            }),
        }
    }
}

/// Starts the service with `config` and serves on `listener` until `shutdown` completes; then
/// stops accepting, drains the learn queue within `learner.drain_timeout_ms` and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    Service::new(config)?.serve(listener, shutdown).await
}
