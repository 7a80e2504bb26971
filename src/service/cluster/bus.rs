//! The connection to NATS and the JetStream objects one model uses, created on first use:
//! - the stream `ffd-learn-<model>` (subject `ffd.learn.<model>`): every acknowledged `/learn`
//!   request, in order; its sequence numbers are the samples' `last_seq`;
//! - the key-value bucket `ffd-lease-<model>`: one record, the learner's lease and its
//!   checkpoint pointer (see `lease`);
//! - the key-value bucket `ffd-pending-<model>`: features `/classify` keeps for a delayed
//!   label, which any node may receive (see `pending`);
//! - the object bucket `ffd-<model>`: checkpoints;
//! - the stream `ffd-snapshots-<model>`: the learner's newest snapshot in chunks, one message
//!   per subject kept, read by direct gets (no consumer per read: ephemeral consumers go through
//!   the cluster's metadata layer, and creating several a second overloaded it).
//!
//! Debian's `nats-server` is 2.9, whose account-info reply the client cannot parse, so the
//! client's `create_key_value` fails there: the bucket's backing stream is created here with the
//! key-value conventions (`KV_<bucket>`, subjects `$KV.<bucket>.>`, rollup, no deletes, direct
//! gets) and then opened with `get_key_value`, which works on every version.

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use async_nats::{Client, ConnectOptions, ServerAddr};

use crate::service::config::{ClusterSection, PendingSection};

/// How long JetStream remembers a message id (`Idempotency-Key`): retries within it are
/// acknowledged with the first publication's sequence and not stored again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Why the cluster cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A URL of `cluster.nats_urls` does not parse.
    #[error("`cluster.nats_urls`: {url:?} is not a NATS URL: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No server answered.
    #[error("cannot connect to NATS at {urls} (cluster.nats_urls): {reason}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        reason: String,
    },
    /// A stream or bucket could not be created or opened.
    #[error("NATS JetStream at {urls}: cannot set up {what}: {reason}")]
    Setup {
        /// The URLs.
        urls: String,
        /// The stream or bucket.
        what: String,
        /// Why (JetStream disabled on the server, too few servers for `replicas`, ...).
        reason: String,
    },
}

/// The names of one model's JetStream objects.
#[derive(Debug, Clone)]
pub struct Names {
    /// The stream of learn requests.
    pub stream: String,
    /// Its subject.
    pub subject: String,
    /// The lease bucket.
    pub lease_bucket: String,
    /// The pending-label bucket.
    pub pending_bucket: String,
    /// The object bucket (checkpoints).
    pub objects: String,
    /// The stream of the shared snapshot.
    pub snapshots: String,
    /// Its subjects' prefix (`<prefix>.meta`, `<prefix>.chunk.<i>`).
    pub snapshot_subject: String,
}

impl Names {
    /// The names for model `model` (validated by the config: `[A-Za-z0-9_-]+`).
    pub fn new(model: &str) -> Self {
        Self {
            stream: format!("ffd-learn-{model}"),
            subject: format!("ffd.learn.{model}"),
            lease_bucket: format!("ffd-lease-{model}"),
            pending_bucket: format!("ffd-pending-{model}"),
            objects: format!("ffd-{model}"),
            snapshots: format!("ffd-snapshots-{model}"),
            snapshot_subject: format!("ffd.snapshot.{model}"),
        }
    }
}

/// A connected client and the model's JetStream objects.
#[derive(Clone)]
pub struct Bus {
    /// The connection (its state says whether NATS is reachable).
    pub client: Client,
    /// JetStream, with `nats_timeout_ms` as its request timeout.
    pub js: jetstream::Context,
    /// The lease bucket.
    pub lease: kv::Store,
    /// The pending-label bucket.
    pub pending: kv::Store,
    /// The object bucket.
    pub objects: object_store::ObjectStore,
    /// The snapshot stream.
    pub snapshots: stream::Stream,
    /// The names.
    pub names: Names,
    /// `cluster.nats_urls`, joined, for messages.
    pub urls: String,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("urls", &self.urls)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Connects to `cluster.nats_urls` and creates (or opens) the model's stream and buckets.
/// Fails, naming the URLs, when no server answers within `nats_timeout_ms`. `limits` bounds
/// the pending-label bucket.
pub async fn connect(
    cluster: &ClusterSection,
    limits: &PendingSection,
    node: &str,
) -> Result<Bus, BusError> {
    let urls = cluster.nats_urls.join(", ");
    let timeout = Duration::from_millis(cluster.nats_timeout_ms);
    let addrs = cluster
        .nats_urls
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| BusError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = ConnectOptions::new()
        .name(format!("ffd {node}"))
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        // A server that dies is noticed by its closed socket; one that hangs, by pings.
        .ping_interval(Duration::from_secs(2))
        // Another server of the cluster is tried at once, then every 100 ms up to 1 s: the
        // client's default backs off for seconds, which stalls ingest after a server dies.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).min(1000))
        });
    let client = tokio::time::timeout(timeout, options.connect(addrs))
        .await
        .map_err(|_| BusError::Connect {
            urls: urls.clone(),
            reason: format!("no answer within {} ms", timeout.as_millis()),
        })?
        .map_err(|e| BusError::Connect {
            urls: urls.clone(),
            reason: e.to_string(),
        })?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(timeout);
    let names = Names::new(&cluster.model);
    let setup = |what: &str| {
        let urls = urls.clone();
        let what = what.to_owned();
        move |reason: String| BusError::Setup { urls, what, reason }
    };
    let replicas = cluster.replicas;
    js.get_or_create_stream(stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.subject.clone()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        // The learner reads it by direct gets (see `consume`).
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| setup(&format!("the stream {}", names.stream))(e.to_string()))?;
    // The lease never grows, so a full bucket refusing writes (discard new) is the safe
    // reaction to a surprise.
    let lease = kv_bucket(&js, &names.lease_bucket, replicas, |_| {})
        .await
        .map_err(setup(&format!(
            "the key-value bucket {}",
            names.lease_bucket
        )))?;
    // Pending labels are bounded as the local map is: an age, and a count past which the
    // oldest goes. Two values per id at most (its features and, once claimed, the deletion).
    let pending = kv_bucket(&js, &names.pending_bucket, replicas, |config| {
        config.max_age = Duration::from_secs_f64(limits.ttl_seconds);
        config.max_messages = i64::try_from(limits.capacity).unwrap_or(i64::MAX);
        config.discard = stream::DiscardPolicy::Old;
    })
    .await
    .map_err(setup(&format!(
        "the key-value bucket {}",
        names.pending_bucket
    )))?;
    let objects = match js.get_object_store(&names.objects).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: names.objects.clone(),
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| setup(&format!("the object bucket {}", names.objects))(e.to_string()))?,
    };
    let snapshots = js
        .get_or_create_stream(stream::Config {
            name: names.snapshots.clone(),
            subjects: vec![format!("{}.>", names.snapshot_subject)],
            max_messages_per_subject: 1,
            allow_direct: true,
            num_replicas: replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| setup(&format!("the stream {}", names.snapshots))(e.to_string()))?;
    Ok(Bus {
        client,
        js,
        lease,
        pending,
        objects,
        snapshots,
        names,
        urls,
    })
}

/// Opens the key-value bucket `bucket`, creating its backing stream first (see the module
/// docs for why not `create_key_value`); `tune` adjusts the stream's limits.
async fn kv_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    tune: impl FnOnce(&mut stream::Config),
) -> Result<kv::Store, String> {
    let mut config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    tune(&mut config);
    js.get_or_create_stream(config)
        .await
        .map_err(|e| e.to_string())?;
    js.get_key_value(bucket).await.map_err(|e| e.to_string())
}

/// Whether the client is connected to a server now.
pub fn connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}
