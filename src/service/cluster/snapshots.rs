//! Sharing the learner's snapshots: the learner puts its newest published snapshot (the model
//! file format, the same bytes `ffd train --save` writes) into the object bucket as `snapshot`
//! every `cluster.share_every_ms` when it changed; every other node polls the object's id and,
//! when it changed, loads it and swaps it in for `/classify`. While NATS is unreachable a node
//! keeps serving the last snapshot it loaded.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectMetadata;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::ff::NetworkConfig;
use crate::service::cluster::{unix_ms, ClusterState, Role};
use crate::service::learner::LearnerProgress;
use crate::service::metrics::Metrics;
use crate::service::shutdown::ShutdownNotice;
use crate::service::snapshot::{Snapshot, Snapshots};
use crate::store::checkpoint::Counters;
use crate::store::model_file;

/// Name of the shared snapshot object.
const OBJECT: &str = "snapshot";

/// What rides with a shared snapshot (the object's description, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    version: u64,
    samples_learned: u64,
    learned_seq: u64,
    sleep_cycles: u64,
    node: String,
    unix_ms: u64,
}

/// What the two loops need.
#[derive(Debug, Clone)]
pub struct Sharing {
    /// The node's cluster state.
    pub cluster: Arc<ClusterState>,
    /// The served snapshots.
    pub snapshots: Arc<Snapshots>,
    /// The learner's counters.
    pub progress: Arc<LearnerProgress>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The network every loaded snapshot must have.
    pub network: NetworkConfig,
    /// `cluster.share_every_ms`.
    pub every: Duration,
}

/// Runs until shutdown: shares snapshots while this node learns, loads them while it does
/// not.
pub async fn run(s: Sharing, mut shutdown: ShutdownNotice) {
    let mut shared_version = None;
    let mut loaded = Loaded::default();
    // Replicas look twice per sharing period: staleness stays within about 1.5 periods.
    let poll = (s.every / 2).max(Duration::from_millis(10));
    loop {
        match s.cluster.role() {
            Role::Learner => {
                let snap = s.snapshots.load();
                if shared_version != Some(snap.version) {
                    match share(&s, &snap).await {
                        Ok(()) => shared_version = Some(snap.version),
                        Err(e) => tracing::warn!(error = %e, "could not share the snapshot"),
                    }
                }
                loaded = Loaded::default();
            }
            Role::Starting => {}
            Role::Replica => {
                shared_version = None;
                if let Err(e) = follow(&s, &mut loaded).await {
                    tracing::debug!(error = %e, "could not load the shared snapshot");
                }
            }
        }
        if let Some(age) = s.cluster.snapshot_age() {
            s.metrics.cluster.snapshot_age.set(age);
        }
        let wait = if s.cluster.role() == Role::Learner {
            s.every
        } else {
            poll
        };
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn share(s: &Sharing, snap: &Snapshot) -> Result<(), String> {
    let now = unix_ms();
    let meta = Meta {
        version: snap.version,
        samples_learned: snap.samples_learned,
        learned_seq: s.progress.learned_seq(),
        sleep_cycles: s.progress.sleep_cycles(),
        node: s.cluster.node.clone(),
        unix_ms: now,
    };
    let bytes = model_file::model_to_bytes(&snap.model, None);
    let object = ObjectMetadata {
        name: OBJECT.into(),
        description: Some(serde_json::to_string(&meta).map_err(|e| e.to_string())?),
        ..Default::default()
    };
    s.cluster
        .bus
        .objects
        .put(object, &mut bytes.as_slice())
        .await
        .map_err(|e| e.to_string())?;
    s.cluster.set_snapshot_time(now);
    Ok(())
}

/// The shared snapshot a replica loaded last: the object's id and the version it served.
#[derive(Debug, Default)]
struct Loaded {
    nuid: String,
    version: u64,
}

/// Loads the shared snapshot if it changed, or if something else (this node's learner thread
/// finishing a chunk after a step-down) published over the one loaded.
async fn follow(s: &Sharing, loaded: &mut Loaded) -> Result<(), String> {
    let objects = &s.cluster.bus.objects;
    let info = match objects.info(OBJECT).await {
        Ok(info) => info,
        // Nothing shared yet.
        Err(e) if e.kind() == async_nats::jetstream::object_store::InfoErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e.to_string()),
    };
    if info.nuid == loaded.nuid && s.snapshots.load().version == loaded.version {
        return Ok(());
    }
    let meta: Meta = serde_json::from_str(info.description.as_deref().unwrap_or_default())
        .map_err(|e| format!("snapshot description: {e}"))?;
    let mut object = objects.get(OBJECT).await.map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(info.size);
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| e.to_string())?;
    let file = model_file::model_from_bytes(&bytes, std::path::Path::new(OBJECT))
        .map_err(|e| e.to_string())?;
    if *file.model.config() != s.network {
        return Err("the shared snapshot is of another network; not served".into());
    }
    // Only the node that still does not learn swaps it in.
    if s.cluster.role() != Role::Replica {
        return Ok(());
    }
    s.snapshots.publish(Snapshot {
        model: file.model,
        version: meta.version,
        samples_learned: meta.samples_learned,
    });
    s.progress.restore(&Counters {
        last_seq: meta.learned_seq,
        samples_learned: meta.samples_learned,
        sleep_cycles: meta.sleep_cycles,
        ..Counters::default()
    });
    s.metrics.model_version.set(meta.version as i64);
    s.cluster.set_learner(&meta.node);
    s.cluster.set_snapshot_time(meta.unix_ms);
    s.cluster
        .saw_seq(crate::service::cluster::message::stream_seq(
            meta.learned_seq,
        ));
    loaded.nuid.clone_from(&info.nuid);
    loaded.version = meta.version;
    Ok(())
}
