//! A node's role over time. As a replica it contends for the lease every fifth of
//! `lease_seconds`. Once it holds it: it renews at once and keeps renewing (also while it loads
//! the checkpoint — a learner that stopped renewing while starting up lost the lease it was
//! starting with), loads the checkpoint the pointer names (or the fresh model before the
//! first), restarts the learner from it, and reads the stream from the sample after it. When a
//! write finds the lease taken over, or renewals have failed for `lease_seconds`, it stops
//! reading, drops what is queued (the stream keeps it for the next learner) and is a replica
//! again. At shutdown it stops reading, keeps renewing until the learner's final checkpoint is
//! stored, then releases the lease so another node takes over at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use crate::ff::{Model, Trainer};
use crate::service::cluster::consume::{self, Position, Stopped};
use crate::service::cluster::lease::{Holding, Lease, LeaseError, Observed, Pointer};
use crate::service::cluster::{ClusterState, Role};
use crate::service::config::Config;
use crate::service::learner::LearnerRestart;
use crate::service::metrics::Metrics;
use crate::service::queue::LearnQueue;
use crate::service::sample::SampleShape;
use crate::service::shutdown::ShutdownNotice;
use crate::store::checkpoint::{self, Counters};

/// Everything the coordinator drives.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The node's cluster state.
    pub cluster: Arc<ClusterState>,
    /// The lease.
    pub lease: Lease,
    /// The lease as held now (shared with the checkpoint writer).
    pub holding: Arc<Holding>,
    /// The learner's queue.
    pub queue: Arc<LearnQueue>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The configuration (network, training, seed, threads).
    pub config: Arc<Config>,
    /// The model a learner starts from when no checkpoint exists yet.
    pub fresh: Model,
    /// Notified once the learner has finished at shutdown: the lease may go.
    pub release: Arc<Notify>,
}

/// Runs the node's roles until shutdown (see the module docs).
pub async fn run(p: Parts, mut shutdown: ShutdownNotice) {
    // Contenders look five times per lease: a dead learner is replaced within about 1.4
    // lease durations of its last renewal.
    let period = p.lease.duration() / 5;
    let mut observed = Observed::default();
    loop {
        set_role(&p, Role::Replica);
        let held = loop {
            match p.lease.try_acquire(&mut observed).await {
                Ok(Some(held)) => break held,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot contend for the lease"),
            }
            tokio::select! {
                () = shutdown.triggered() => return,
                () = tokio::time::sleep(period) => {}
            }
        };
        let epoch = held.record.epoch;
        tracing::info!(epoch, node = p.lease.node(), "holding the learner's lease");
        if epoch > 1 {
            p.metrics.cluster.failovers.inc();
        }
        let pointer = held.record.checkpoint.clone();
        p.holding.hold(held).await;
        set_role(&p, Role::Starting);
        p.cluster.set_learner(p.lease.node());
        let renewing = renew(&p, epoch, Instant::now());
        tokio::pin!(renewing);
        let working = work(&p, epoch, pointer, shutdown.clone());
        tokio::pin!(working);
        let shutting_down = tokio::select! {
            () = &mut renewing => false,
            () = &mut working => true,
        };
        if shutting_down {
            // Keep the lease until the learner's final checkpoint is stored, then let it go.
            tokio::select! {
                () = &mut renewing => {}
                () = p.release.notified() => {
                    if let Some(held) = p.holding.drop_lease().await {
                        match p.lease.release(&held).await {
                            Ok(()) => tracing::info!(epoch, "lease released"),
                            Err(e) => tracing::warn!(error = %e, "could not release the lease; it expires"),
                        }
                    }
                }
            }
            set_role(&p, Role::Replica);
            return;
        }
        let dropped = p.queue.clear();
        p.holding.drop_lease().await;
        tracing::warn!(epoch, dropped, "stepped down: another node learns now");
    }
}

fn set_role(p: &Parts, role: Role) {
    p.cluster.set_role(role);
    p.metrics.cluster.role.set(role as i64);
}

/// Renews the lease of `epoch` every third of its duration; returns when it is lost, or when
/// renewals have failed for a whole lease duration (counted from the sending of the last one
/// that succeeded, so this node stops before any contender can take over).
async fn renew(p: &Parts, epoch: u64, mut last_ok: Instant) {
    let lease = p.lease.duration();
    loop {
        tokio::time::sleep(lease / 3).await;
        if last_ok.elapsed() >= lease {
            tracing::warn!(epoch, "the lease could not be renewed in time");
            p.metrics.cluster.fenced_writes.inc();
            return;
        }
        let sent = Instant::now();
        let l = p.lease.clone();
        match p
            .holding
            .write(epoch, |held| async move { l.renew(&held).await })
            .await
        {
            Ok(Some(_)) => last_ok = sent,
            Ok(None) => return,
            Err(LeaseError::Lost(_)) => {
                p.metrics.cluster.fenced_writes.inc();
                tracing::warn!(epoch, "the lease was taken over");
                return;
            }
            Err(e) => tracing::warn!(epoch, error = %e, "renewing the lease failed; retrying"),
        }
    }
}

/// The learner's work in `epoch`: restart from `pointer`, then read the stream, resuming after
/// NATS failures, until shutdown.
async fn work(p: &Parts, epoch: u64, pointer: Option<Pointer>, mut shutdown: ShutdownNotice) {
    let restart = loop {
        match load(p, epoch, pointer.as_ref()).await {
            Ok(restart) => break restart,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the checkpoint to resume from; retrying")
            }
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let mut at = Position::after(restart.counters.last_seq);
    p.queue.restart(restart);
    set_role(p, Role::Learner);
    let shape = SampleShape {
        inputs: p.config.network.inputs,
        classes: p.config.network.classes,
    };
    loop {
        match consume::consume(
            &p.cluster,
            &p.queue,
            shape,
            &p.metrics,
            &mut at,
            &mut shutdown,
        )
        .await
        {
            Stopped::Shutdown => return,
            Stopped::Failed(e) => {
                tracing::warn!(error = %e, next = at.next, "reading the stream failed; resuming")
            }
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// The state to learn on from: the checkpoint `pointer` names, or the fresh model.
async fn load(p: &Parts, epoch: u64, pointer: Option<&Pointer>) -> Result<LearnerRestart, String> {
    let config = &p.config;
    let Some(pointer) = pointer else {
        let mut trainer = Trainer::new(p.fresh.clone(), config.train.clone(), config.seed)
            .map_err(|e| e.to_string())?;
        trainer.set_threads(config.learner.threads);
        return Ok(LearnerRestart {
            trainer,
            average: None,
            counters: Counters::default(),
            epoch,
        });
    };
    let mut object = p
        .cluster
        .bus
        .objects
        .get(&pointer.object)
        .await
        .map_err(|e| format!("checkpoint {}: {e}", pointer.object))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("checkpoint {}: {e}", pointer.object))?;
    let saved = checkpoint::from_bytes(
        &bytes,
        std::path::Path::new(&pointer.object),
        &config.network,
    )
    .map_err(|e| e.to_string())?;
    let since = saved.counters.since_average;
    let mut trainer =
        Trainer::from_state(saved.trainer, config.train.clone()).map_err(|e| e.to_string())?;
    trainer.set_threads(config.learner.threads);
    tracing::info!(object = %pointer.object, last_seq = saved.counters.last_seq, "resuming from a checkpoint");
    Ok(LearnerRestart {
        trainer,
        average: saved.average.map(|a| (a, since)),
        counters: saved.counters,
        epoch,
    })
}
