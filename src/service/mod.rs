//! The service: everything async lives here. [`run`] starts it and serves until its shutdown
//! future completes; it is [`Service::start`] (every part but HTTP, step by step) followed by
//! [`Service::serve`], which tests call separately to read the learner's progress.
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
//! `wal_writer` (the WAL's buffer and writer thread), `checkpointer` (checkpoint writer thread),
//! `recovery` (load the newest good checkpoint, verify the WAL, stream its backlog to the
//! learner).
//!
//! Shutdown, in order: the trigger fires → handlers refuse new samples (503) and NDJSON streams
//! stop → the server stops accepting and finishes in-flight requests → the queue closes and the
//! learner learns what is queued → a final checkpoint → the learner thread is joined → the WAL
//! is synced and closed. All of it within
//! `learner.drain_timeout_ms`; samples still queued at the deadline are dropped and logged.

#![warn(missing_docs)]

pub mod auth;
pub mod checkpointer;
pub mod cluster;
pub mod config;
pub mod drift;
pub mod history;
pub mod http;
pub mod learner;
pub mod metrics;
pub mod pending;
pub mod queue;
pub mod recovery;
pub mod sample;
pub mod shutdown;
pub mod snapshot;
pub mod wal_writer;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ff::{FfError, Model, Trainer};
use crate::store::model_file;
use crate::store::StoreError;

pub use auth::{AccessTokens, TokenError};
pub use config::{ClusterBackend, Config, ConfigError, LogFormat};
pub use learner::LearnerProgress;
pub use shutdown::shutdown_signal;

use checkpointer::{CheckpointReport, Checkpointer};
use history::{History, HistorySources};
use http::{AppState, DurabilityState};
use learner::{LearnerDurability, LearnerHandle, LearnerSettings};
use metrics::Metrics;
use pending::PendingLabels;
use queue::LearnQueue;
use recovery::Recovered;
use sample::SampleShape;
use shutdown::{ShutdownNotice, ShutdownTrigger};
use snapshot::{Snapshot, Snapshots};
use wal_writer::{WalMetrics, WalSettings, WalWriter, WalWriterHandle};

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
    /// The cluster backend cannot reach NATS or set up its streams.
    #[error(transparent)]
    Cluster(#[from] cluster::BusError),
}

/// A started service: the learner (and, with durability, the WAL writer and the checkpoint
/// writer) runs; [`Service::serve`] answers HTTP and shuts everything down in order.
#[derive(Debug)]
pub struct Service {
    state: Arc<AppState>,
    learner: LearnerHandle,
    trigger: ShutdownTrigger,
    history_sources: HistorySources,
    /// The WAL writer, stopped after the learner.
    wal: Option<WalWriterHandle>,
    /// The cluster coordinator, told after the learner to release the lease.
    cluster: Option<ClusterHandle>,
}

/// The running coordinator of the cluster backend.
#[derive(Debug)]
struct ClusterHandle {
    release: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the service with `config` and serves on `listener` until `shutdown` completes; then
/// shuts down in order (see the module docs) and returns. Requests are checked against
/// `access`. Fails as [`Service::start`] and [`Service::serve`] do.
pub async fn run(
    listener: TcpListener,
    config: Config,
    access: AccessTokens,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let service = match config.cluster.backend {
        ClusterBackend::Local => Service::start(config, access)?,
        ClusterBackend::Nats => Service::start_cluster(config, access).await?,
    };
    service.serve(listener, shutdown).await
}

impl Service {
    /// Starts every part but HTTP: validates `config`, loads or creates the model (a model
    /// file's network replaces `config.network`), recovers the saved state and starts the WAL
    /// and checkpoint writers (durability on), then the learner thread. Requests will be
    /// checked against `access`. Fails on an invalid configuration (including an `[auth]` that
    /// closes a route no token can open), an unreadable model file, saved state that cannot be
    /// used (or a model file given over a checkpoint), or a thread the OS refuses.
    pub fn start(mut config: Config, access: AccessTokens) -> Result<Self, ServiceError> {
        config.validate()?;
        check_closed_routes(&config, &access)?;
        let model = load_model(&mut config)?;
        let trainer = Trainer::new(model.clone(), config.train.clone(), config.seed)?;
        let metrics = Arc::new(Metrics::new()?);
        let progress = Arc::new(LearnerProgress::default());
        let (trainer, snapshot, durability) = if config.durability.enabled {
            let (trainer, snapshot, durability) =
                start_durability(&config, trainer, &metrics, &progress)?;
            (trainer, snapshot, Some(durability))
        } else {
            let snapshot = Snapshot {
                model,
                version: 0,
                samples_learned: 0,
            };
            (trainer, snapshot, None)
        };
        let mut trainer = trainer;
        trainer.set_threads(config.learner.threads);
        let mut queue = LearnQueue::new(config.learner.queue_capacity, metrics.queue_depth.clone());
        metrics
            .queue_capacity
            .set(config.learner.queue_capacity as i64);
        if let Some(d) = &durability {
            queue = queue.with_wal(Arc::clone(&d.http.wal), d.last_seq);
            // Counted from the start, so `queue_depth` never shows 0 before the learner begins.
            queue.set_backlog(d.learner.backlog.remaining);
        }

        let shared = Shared {
            queue: Arc::new(queue),
            snapshots: Arc::new(Snapshots::new(snapshot)),
            metrics,
            progress,
        };
        let (learner_durability, wal_thread, durability_state) = match durability {
            Some(d) => (Some(d.learner), Some(d.wal_thread), Some(d.http)),
            None => (None, None, None),
        };
        let learner = spawn_learner(&config, trainer, &shared, learner_durability)?;
        let (trigger, notice) = shutdown::channel();
        let (state, history_sources) =
            build_app_state(config, access, shared, notice, durability_state, None);
        Ok(Self {
            state,
            learner,
            trigger,
            history_sources,
            wal: wal_thread,
            cluster: None,
        })
    }

    /// Starts a node of the cluster backend (`cluster.backend = "nats"`, docs/cluster.md):
    /// connects to NATS and sets up the model's stream and buckets, starts the learner thread
    /// (idle until this node holds the lease), the checkpoint writer to the object bucket, the
    /// coordinator and the snapshot sharing. The local WAL and `data_dir` are not used. Fails as
    /// [`Service::start`] does, and when no NATS server answers (the error names the URLs).
    pub async fn start_cluster(
        mut config: Config,
        access: AccessTokens,
    ) -> Result<Self, ServiceError> {
        config.validate()?;
        check_closed_routes(&config, &access)?;
        let model = load_model(&mut config)?;
        let node = if config.cluster.node.is_empty() {
            cluster::host_name()
        } else {
            config.cluster.node.clone()
        };
        let bus = cluster::bus::connect(&config.cluster, &config.pending, &node).await?;
        tracing::info!(urls = %bus.urls, node = %node, model = %config.cluster.model, "connected to NATS JetStream");
        let mut trainer = Trainer::new(model.clone(), config.train.clone(), config.seed)?;
        trainer.set_threads(config.learner.threads);
        let metrics = Arc::new(Metrics::new()?);
        let progress = Arc::new(LearnerProgress::default());
        let queue = LearnQueue::new(config.learner.queue_capacity, metrics.queue_depth.clone());
        metrics
            .queue_capacity
            .set(config.learner.queue_capacity as i64);
        let holding = Arc::new(cluster::lease::Holding::default());
        let lease = cluster::lease::Lease::new(
            bus.lease.clone(),
            node.clone(),
            Duration::from_secs_f64(config.cluster.lease_seconds),
        );
        let (reports, _checkpoints) = watch::channel(CheckpointReport::none());
        let checkpointer = cluster::checkpoints::spawn(
            cluster::checkpoints::Sink {
                objects: bus.objects.clone(),
                lease: lease.clone(),
                holding: Arc::clone(&holding),
            },
            tokio::runtime::Handle::current(),
            metrics.durability.clone(),
            metrics.cluster.clone(),
            reports,
        )
        .map_err(|source| ServiceError::Io {
            what: "starting the checkpoint thread",
            source,
        })?;
        let d = &config.durability;
        let durability = LearnerDurability {
            checkpointer,
            wal: None,
            every_samples: d.checkpoint_every_samples,
            every: (d.checkpoint_every_seconds > 0.0)
                .then(|| Duration::from_secs_f64(d.checkpoint_every_seconds)),
            max_wal_bytes: d.max_wal_bytes,
            backlog: recovery::Backlog::default(),
            average: None,
            metrics: metrics.durability.clone(),
        };
        let shared = Shared {
            queue: Arc::new(queue),
            snapshots: Arc::new(Snapshots::new(Snapshot {
                model: model.clone(),
                version: 0,
                samples_learned: 0,
            })),
            metrics,
            progress,
        };
        let learner = spawn_learner(&config, trainer, &shared, Some(durability))?;
        let publisher = cluster::Publisher::new(
            bus.clone(),
            config.network.inputs,
            Duration::from_millis(config.cluster.nats_timeout_ms),
            shared.metrics.cluster.publish_ack.clone(),
        );
        let cluster_state = Arc::new(cluster::ClusterState::new(publisher, bus, node));
        let (trigger, notice) = shutdown::channel();
        let release = Arc::new(tokio::sync::Notify::new());
        let parts = cluster::coordinator::Parts {
            cluster: Arc::clone(&cluster_state),
            lease,
            holding,
            queue: Arc::clone(&shared.queue),
            metrics: Arc::clone(&shared.metrics),
            config: Arc::new(config.clone()),
            fresh: model,
            release: Arc::clone(&release),
        };
        let sharing = cluster::snapshots::Sharing {
            cluster: Arc::clone(&cluster_state),
            snapshots: Arc::clone(&shared.snapshots),
            progress: Arc::clone(&shared.progress),
            metrics: Arc::clone(&shared.metrics),
            network: config.network.clone(),
            every: Duration::from_millis(config.cluster.share_every_ms),
        };
        let task = tokio::spawn(cluster::coordinator::run(parts, notice.clone()));
        tokio::spawn(cluster::snapshots::run(sharing, notice.clone()));
        let (state, history_sources) =
            build_app_state(config, access, shared, notice, None, Some(cluster_state));
        Ok(Self {
            state,
            learner,
            trigger,
            history_sources,
            wal: None,
            cluster: Some(ClusterHandle { release, task }),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        &self.state.config
    }

    /// The learner's progress counters (they stay readable after [`Service::serve`] returns).
    pub fn progress(&self) -> Arc<LearnerProgress> {
        Arc::clone(&self.state.progress)
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
            wal,
            cluster,
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
            http_config.max_connections_per_peer,
            state.metrics.http_connections.clone(),
            state.metrics.http_connections_closed.clone(),
        );
        let server = http::connection::serve(
            listener,
            http::router(Arc::clone(&state)),
            http::connection::ConnectionLimits::new(http_config),
            state.metrics.http_connections_closed.clone(),
            async move { notice.triggered().await },
        );
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
            if let Some(wal) = wal {
                wal.finish();
            }
            joined
        })
        .await;
        if let Some(c) = cluster {
            // The final checkpoint is stored: the lease may go to another node now.
            c.release.notify_one();
            if tokio::time::timeout(Duration::from_secs(5), c.task)
                .await
                .is_err()
            {
                tracing::warn!("the lease was not released in time; it expires");
            }
        }
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

/// The durability machinery once started (durability on), split by who holds each part.
struct Durability {
    /// Highest sequence number used so far; the queue numbers new samples after it.
    last_seq: u64,
    /// What the learner needs: the checkpoint writer, the WAL, the backlog, the triggers.
    learner: LearnerDurability,
    /// The WAL writer thread, finished after the learner.
    wal_thread: WalWriterHandle,
    /// What handlers need: the WAL (to wait for durability) and the checkpoint reports.
    http: DurabilityState,
}

/// The handles the learner, the handlers and the status history share.
struct Shared {
    queue: Arc<LearnQueue>,
    snapshots: Arc<Snapshots>,
    metrics: Arc<Metrics>,
    progress: Arc<LearnerProgress>,
}

/// Refuses an `[auth]` that closes `/metrics` or the health routes while no token is set:
/// nothing could open them again.
fn check_closed_routes(config: &Config, access: &AccessTokens) -> Result<(), ConfigError> {
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
            });
        }
    }
    Ok(())
}

/// The model to start from: the model file's when one is configured, else a fresh one seeded
/// by `config.seed`. A file's network replaces `config.network`, so everything sized from the
/// config fits the file; and when the file records how it was trained, its read-out
/// (`train.classifier`, `train.train_head`) replaces the configured one: a file trained by
/// goodness carries an untrained softmax head, which the service's default read-out would
/// otherwise serve.
fn load_model(config: &mut Config) -> Result<Model, ServiceError> {
    match config.model_file.clone() {
        Some(path) => {
            let loaded = model_file::load_model(&path)?;
            config.network = loaded.model.config().clone();
            if let Some(train) = &loaded.train {
                config.train.classifier = train.classifier;
                config.train.train_head = train.train_head;
            }
            config.validate()?;
            Ok(loaded.model)
        }
        None => Ok(Model::new(
            config.network.clone(),
            &mut StdRng::seed_from_u64(config.seed),
        )?),
    }
}

/// The durable start: recovers the saved state, starts the WAL writer and the checkpoint
/// writer, and returns the trainer to learn with, the snapshot to serve first and the parts.
fn start_durability(
    config: &Config,
    fresh: Trainer,
    metrics: &Metrics,
    progress: &LearnerProgress,
) -> Result<(Trainer, Snapshot, Durability), ServiceError> {
    let mut recovered = recover(config, fresh, metrics, progress)?;
    let (wal, wal_thread) = start_wal_writer(config, &recovered, metrics)?;
    let (checkpointer, checkpoints) = start_checkpointer(config, &wal, metrics)?;
    let snapshot = recovered_snapshot(&mut recovered);
    let d = &config.durability;
    let durability = Durability {
        last_seq: recovered.last_seq,
        learner: LearnerDurability {
            checkpointer,
            wal: Some(Arc::clone(&wal)),
            every_samples: d.checkpoint_every_samples,
            every: (d.checkpoint_every_seconds > 0.0)
                .then(|| Duration::from_secs_f64(d.checkpoint_every_seconds)),
            max_wal_bytes: d.max_wal_bytes,
            backlog: recovered.backlog,
            average: recovered.average,
            metrics: metrics.durability.clone(),
        },
        wal_thread,
        http: DurabilityState {
            wal,
            checkpoints,
            recovery: recovered.report,
        },
    };
    Ok((recovered.trainer, snapshot, durability))
}

/// Recovers the saved state of `config.data_dir` (see [`recovery`]); `fresh` is the trainer
/// used without a checkpoint. The restored counters go into `progress` and the metrics before
/// anything can read them, so `/v1/model` never shows the counters go back to 0.
fn recover(
    config: &Config,
    fresh: Trainer,
    metrics: &Metrics,
    progress: &LearnerProgress,
) -> Result<Recovered, ServiceError> {
    let recovered = recovery::recover(config, fresh)?;
    let c = &recovered.counters;
    progress.restore(c);
    metrics
        .durability
        .checkpoint_last_seq
        .set(c.last_seq as i64);
    metrics.model_version.set(c.model_version as i64);
    metrics
        .durability
        .wal_records_lost
        .inc_by(recovered.report.wal_records_lost);
    Ok(recovered)
}

/// The snapshot served until the learner publishes: the recovered weight average when the
/// checkpoint has one (that is what was served before the restart), else the recovered weights.
fn recovered_snapshot(recovered: &mut Recovered) -> Snapshot {
    let c = &recovered.counters;
    Snapshot {
        model: match &recovered.average {
            Some((average, _)) => average.clone(),
            None => recovered.trainer.model().clone(),
        },
        version: c.model_version,
        samples_learned: c.samples_learned,
    }
}

/// Starts the WAL writer thread; new samples are numbered after everything recovered. The
/// handle is kept to finish the writer after the learner, the `Arc` goes to the queue, the
/// learner, the checkpoint writer and the handlers.
fn start_wal_writer(
    config: &Config,
    recovered: &Recovered,
    metrics: &Metrics,
) -> Result<(Arc<WalWriter>, WalWriterHandle), ServiceError> {
    let d = &config.durability;
    let started = WalWriter::start(
        WalSettings {
            dir: config.data_dir.clone(),
            mode: d.mode,
            batch_interval: Duration::from_millis(d.batch_interval_ms),
            segment_bytes: d.wal_segment_bytes,
            max_unsynced_bytes: d.max_unsynced_bytes,
        },
        recovered.last_seq,
        recovered.wal_bytes,
        WalMetrics {
            wal_bytes: metrics.durability.wal_bytes.clone(),
            fsync_duration: metrics.durability.wal_fsync_duration.clone(),
        },
    )
    .map_err(recovery::RecoveryError::Wal)?;
    Ok(started)
}

/// Starts the checkpoint writer thread; returns its job end (for the learner) and the reports
/// `/admin/checkpoint` waits on.
fn start_checkpointer(
    config: &Config,
    wal: &Arc<WalWriter>,
    metrics: &Metrics,
) -> Result<(Checkpointer, watch::Receiver<CheckpointReport>), ServiceError> {
    let (reports, checkpoints) = watch::channel(CheckpointReport::none());
    let checkpointer = checkpointer::spawn(
        config.data_dir.clone(),
        config.durability.keep_checkpoints,
        Arc::clone(wal),
        metrics.durability.clone(),
        reports,
    )
    .map_err(|source| ServiceError::Io {
        what: "starting the checkpoint thread",
        source,
    })?;
    Ok((checkpointer, checkpoints))
}

/// Starts the learner thread with the timing knobs of `[learner]` and `[schedule]`.
fn spawn_learner(
    config: &Config,
    trainer: Trainer,
    shared: &Shared,
    durability: Option<LearnerDurability>,
) -> Result<LearnerHandle, ServiceError> {
    let settings = LearnerSettings {
        snapshot_every_samples: config.learner.snapshot_every_samples,
        snapshot_every: Duration::from_millis(config.learner.snapshot_every_ms),
        sleep_every: config.train.sleep_interval(),
        prequential_window: config.learner.prequential_window,
        nice: config.learner.nice,
        average: config.average.clone(),
        drift: config.drift.clone(),
    };
    learner::spawn(
        trainer,
        Arc::clone(&shared.queue),
        Arc::clone(&shared.snapshots),
        Arc::clone(&shared.metrics),
        Arc::clone(&shared.progress),
        settings,
        durability,
    )
    .map_err(|source| ServiceError::Io {
        what: "starting the learner thread",
        source,
    })
}

/// What every handler shares, and what the status history reads from.
fn build_app_state(
    config: Config,
    access: AccessTokens,
    shared: Shared,
    shutdown: ShutdownNotice,
    durability: Option<DurabilityState>,
    cluster: Option<Arc<cluster::ClusterState>>,
) -> (Arc<AppState>, HistorySources) {
    let pending = Arc::new(PendingLabels::new(
        config.pending.capacity,
        Duration::from_secs_f64(config.pending.ttl_seconds),
        shared.metrics.pending_entries.clone(),
    ));
    let history = Arc::new(History::new(
        config.status.history_points,
        Duration::from_millis(config.status.history_interval_ms),
    ));
    let history_sources = HistorySources {
        progress: Arc::clone(&shared.progress),
        metrics: Arc::clone(&shared.metrics),
        queue: Arc::clone(&shared.queue),
        snapshots: Arc::clone(&shared.snapshots),
        layers: config.network.hidden.len(),
    };
    let state = Arc::new(AppState {
        shape: SampleShape {
            inputs: config.network.inputs,
            classes: config.network.classes,
        },
        classifier: config.train.classifier,
        config,
        queue: shared.queue,
        snapshots: shared.snapshots,
        pending,
        metrics: shared.metrics,
        progress: shared.progress,
        shutdown,
        history,
        access,
        durability,
        cluster,
    });
    (state, history_sources)
}
