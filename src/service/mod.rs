//! The service: everything async lives here. [`run`] wires the parts and serves until its
//! shutdown future completes.
//!
//! ```text
//! POST /learn ─► http::learn: decode ─► ValidatedBatch (all or nothing: 400/413/415/422)
//!             ─► LearnQueue (bounded; full → 429 + Retry-After) ─► 202 {accepted, last_seq}
//! learner thread (sole owner of the Trainer): test-then-train each sample, sleep on schedule
//!             ─► every N samples / T ms: publish Arc<Snapshot>
//! POST /classify ─► current Arc<Snapshot> (no lock, no wait) ─► scores ─► 200
//! /metrics, /v1/model only read; /admin/* send control flags to the learner.
//! ```
//!
//! Parts: `config` (layers and validation), `sample` (`ValidatedBatch`), `queue`
//! (`LearnQueue`), `learner` (the thread), `snapshot` (`Snapshots`), `pending` (delayed
//! labels), `metrics`, `shutdown`, `http` (router, handlers, `ApiError`), `history` (what the
//! status page plots), `auth` (access tokens from the environment, kept as digests).
//!
//! Shutdown, in order: the trigger fires → handlers refuse new samples (503) and NDJSON streams
//! stop → the server stops accepting and finishes in-flight requests → the queue closes and the
//! learner learns what is queued → the learner thread is joined. All of it within
//! `learner.drain_timeout_ms`; samples still queued at the deadline are dropped and logged.

#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod history;
pub mod http;
pub mod learner;
pub mod metrics;
pub mod pending;
pub mod queue;
pub mod sample;
pub mod shutdown;
pub mod snapshot;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;

use crate::ff::{FfError, Model, Trainer};
use crate::store::model_file::{load_model, StoreError};

pub use auth::{AccessTokens, TokenError};
pub use config::{Config, ConfigError, LogFormat};
pub use learner::LearnerStatus;
pub use shutdown::shutdown_signal;

use history::{History, StatusSources};
use http::AppState;
use learner::{LearnerHandle, LearnerSettings};
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
}

/// A started service: the learner runs; [`Service::serve`] answers HTTP.
#[derive(Debug)]
pub struct Service {
    state: Arc<AppState>,
    learner: LearnerHandle,
    trigger: ShutdownTrigger,
    history_sources: StatusSources,
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
        let trainer = Trainer::new(model.clone(), config.train_config(), config.seed)?;

        let metrics = Arc::new(Metrics::new()?);
        let queue = Arc::new(LearnQueue::new(
            config.learner.queue_capacity,
            metrics.queue_depth.clone(),
        ));
        metrics
            .queue_capacity
            .set(config.learner.queue_capacity as i64);
        let snapshots = Arc::new(Snapshots::new(Snapshot {
            model,
            version: 0,
            samples_learned: 0,
        }));
        let pending = Arc::new(PendingLabels::new(
            config.pending.capacity,
            Duration::from_secs_f64(config.pending.ttl_seconds),
            metrics.pending_entries.clone(),
        ));
        let status = Arc::new(LearnerStatus::default());
        let settings = LearnerSettings {
            snapshot_every_samples: config.learner.snapshot_every_samples,
            snapshot_every: Duration::from_millis(config.learner.snapshot_every_ms),
            sleep_every: config.sleep_interval(),
            prequential_window: config.learner.prequential_window,
            nice: config.learner.nice,
            average: (config.learner.average_decay > 0.0).then_some((
                config.learner.average_every_samples,
                config.learner.average_decay,
            )),
        };
        let learner = learner::spawn(
            trainer,
            Arc::clone(&queue),
            Arc::clone(&snapshots),
            Arc::clone(&metrics),
            Arc::clone(&status),
            settings,
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
        });
        Ok(Self {
            state,
            learner,
            trigger,
            history_sources,
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
        let joined = tokio::task::spawn_blocking(move || learner.finish(deadline)).await;
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
