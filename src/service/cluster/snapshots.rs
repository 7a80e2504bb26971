//! Sharing the learner's snapshots: every `cluster.share_every_ms`, when it changed, the learner
//! publishes its newest snapshot (the model file format, the bytes `ffd train --save` writes)
//! to the snapshot stream: its chunks (`<prefix>.chunk.<i>`, each tagged with the snapshot's
//! id), then a description (`<prefix>.meta`). The stream keeps one message per subject. Every
//! other node reads the description twice per period by a direct get and, when it names a new
//! snapshot, gets the chunks the same way, checks they all carry its id (a learner may be
//! writing the next one), and swaps the snapshot in for `/classify`. No read creates a
//! consumer. While NATS is unreachable a node keeps serving the last snapshot it loaded.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use async_nats::jetstream::stream::DirectGetErrorKind;

use crate::ff::NetworkConfig;
use crate::service::cluster::{unix_ms, ClusterState, Role};
use crate::service::learner::LearnerProgress;
use crate::service::metrics::Metrics;
use crate::service::shutdown::ShutdownNotice;
use crate::service::snapshot::{Snapshot, Snapshots};
use crate::store::checkpoint::Counters;
use crate::store::model_file;

/// Bytes per chunk message (NATS's default payload limit is 1 MiB).
const CHUNK_BYTES: usize = 512 << 10;

/// The header naming the snapshot a chunk belongs to.
const SNAPSHOT_ID: &str = "Ffd-Snapshot";

/// A shared snapshot's description (the `meta` message, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    chunks: usize,
    bytes: usize,
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
    let bytes = model_file::model_to_bytes(&snap.model, None);
    let id = format!("{}-{}-{now}", s.cluster.node, snap.version);
    let prefix = &s.cluster.bus.names.snapshot_subject;
    let chunks = bytes.chunks(CHUNK_BYTES).count();
    for (i, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
        let mut headers = HeaderMap::new();
        headers.insert(SNAPSHOT_ID, id.as_str());
        publish(s, format!("{prefix}.chunk.{i}"), headers, chunk.to_vec()).await?;
    }
    let meta = Meta {
        id,
        chunks,
        bytes: bytes.len(),
        version: snap.version,
        samples_learned: snap.samples_learned,
        learned_seq: s.progress.learned_seq(),
        sleep_cycles: s.progress.sleep_cycles(),
        node: s.cluster.node.clone(),
        unix_ms: now,
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    publish(s, format!("{prefix}.meta"), HeaderMap::new(), meta).await?;
    s.cluster.set_snapshot_time(now);
    Ok(())
}

/// Publishes one message to the snapshot stream and waits for its acknowledgement.
async fn publish(
    s: &Sharing,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<(), String> {
    s.cluster
        .bus
        .js
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The shared snapshot a replica loaded last: its id and the version it served.
#[derive(Debug, Default)]
struct Loaded {
    id: String,
    version: u64,
}

/// Loads the shared snapshot if it changed, or if something else (this node's learner thread
/// finishing a chunk after a step-down) published over the one loaded.
async fn follow(s: &Sharing, loaded: &mut Loaded) -> Result<(), String> {
    let stream = &s.cluster.bus.snapshots;
    let prefix = &s.cluster.bus.names.snapshot_subject;
    let meta = match stream
        .direct_get_last_for_subject(format!("{prefix}.meta"))
        .await
    {
        Ok(message) => message,
        // Nothing shared yet.
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let meta: Meta =
        serde_json::from_slice(&meta.payload).map_err(|e| format!("snapshot description: {e}"))?;
    if meta.id == loaded.id && s.snapshots.load().version == loaded.version {
        return Ok(());
    }
    let mut bytes = Vec::with_capacity(meta.bytes);
    for i in 0..meta.chunks {
        let chunk = stream
            .direct_get_last_for_subject(format!("{prefix}.chunk.{i}"))
            .await
            .map_err(|e| format!("snapshot chunk {i}: {e}"))?;
        if chunk.headers.get(SNAPSHOT_ID).map(|v| v.as_str()) != Some(meta.id.as_str()) {
            return Err("the snapshot is being replaced; next time".into());
        }
        bytes.extend_from_slice(&chunk.payload);
    }
    let file = model_file::model_from_bytes(&bytes, std::path::Path::new(&meta.id))
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
    loaded.version = meta.version;
    loaded.id = meta.id;
    Ok(())
}
