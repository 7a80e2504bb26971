//! The cluster backend (`cluster.backend = "nats"`, docs/cluster.md): several nodes share one
//! model through NATS JetStream. Any node takes `/learn` (`publish`: one stream message per
//! request, answered after JetStream's acknowledgement) and `/classify`; one node at a time
//! holds the lease and learns (`lease`, `consume`: the stream in order from its checkpoint),
//! writes checkpoints to the object bucket and moves the pointer (`checkpoints`) and shares its
//! snapshots, which the other nodes load and serve (`snapshots`). `coordinator` moves a node
//! between the two roles; `bus` connects and creates the stream and buckets; `message` is the
//! wire format; `pending` keeps delayed labels' features where every node finds them.
//!
//! Data still flows one way: request → stream → learner → shared snapshot → classifiers.

pub mod bus;
pub mod checkpoints;
pub mod consume;
pub mod coordinator;
pub mod lease;
pub mod message;
pub mod pending;
pub mod publish;
pub mod snapshots;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;

pub use bus::{Bus, BusError};
pub use pending::{SharedPending, SharedPendingError, Staged};
pub use publish::{PublishError, Publisher};

/// What this node does for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves the learner's snapshots.
    Replica = 0,
    /// Holds the lease and loads the checkpoint it resumes from.
    Starting = 1,
    /// Holds the lease and learns.
    Learner = 2,
}

/// The node's view of the cluster, for `/v1/model`, `/readyz` and the metrics.
#[derive(Debug)]
pub struct ClusterState {
    /// Publishes `/learn` requests.
    pub publisher: Publisher,
    /// The connection.
    pub bus: Bus,
    /// Delayed labels' features, shared by every node.
    pub pending: SharedPending,
    /// This node's id.
    pub node: String,
    role: AtomicU8,
    learner: Mutex<String>,
    /// Highest stream sequence this node has published or consumed.
    last_seq: AtomicU64,
    /// When the served snapshot was taken by the learner (Unix ms; 0: none yet).
    snapshot_unix_ms: AtomicU64,
}

/// `/v1/model`'s `cluster` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterInfo {
    /// This node's id.
    pub node: String,
    /// `replica`, `starting` or `learner`.
    pub role: Role,
    /// The node whose learning this node serves (itself when it learns; empty before any
    /// snapshot).
    pub learner: String,
    /// Whether the connection to NATS is up.
    pub connected: bool,
    /// Stream sequence of the last message learned into the served state.
    pub learned_seq: u64,
    /// Seconds since the learner took the served snapshot (`null` before the first).
    pub snapshot_age_seconds: Option<f64>,
}

impl ClusterState {
    /// The state of a node that has just connected (a replica).
    pub fn new(publisher: Publisher, bus: Bus, node: String) -> Self {
        Self {
            publisher,
            pending: SharedPending::new(bus.pending.clone()),
            bus,
            node,
            role: AtomicU8::new(Role::Replica as u8),
            learner: Mutex::new(String::new()),
            last_seq: AtomicU64::new(0),
            snapshot_unix_ms: AtomicU64::new(0),
        }
    }

    /// This node's role now.
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            2 => Role::Learner,
            1 => Role::Starting,
            _ => Role::Replica,
        }
    }

    pub(crate) fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
    }

    /// The node whose snapshots are served.
    pub fn learner(&self) -> String {
        self.learner.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub(crate) fn set_learner(&self, node: &str) {
        if let Ok(mut l) = self.learner.lock() {
            node.clone_into(&mut l);
        }
    }

    /// Whether NATS is reachable now.
    pub fn connected(&self) -> bool {
        bus::connected(&self.bus.client)
    }

    /// Highest stream sequence this node has published or consumed.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub(crate) fn saw_seq(&self, seq: u64) {
        self.last_seq.fetch_max(seq, Ordering::AcqRel);
    }

    pub(crate) fn set_snapshot_time(&self, unix_ms: u64) {
        self.snapshot_unix_ms.store(unix_ms, Ordering::Release);
    }

    /// Seconds since the learner took the served snapshot.
    pub fn snapshot_age(&self) -> Option<f64> {
        let at = self.snapshot_unix_ms.load(Ordering::Acquire);
        (at > 0).then(|| unix_ms().saturating_sub(at) as f64 / 1e3)
    }

    /// `/v1/model`'s `cluster` object; `learned_seq` is the learner's sample sequence number.
    pub fn info(&self, learned_seq: u64) -> ClusterInfo {
        ClusterInfo {
            node: self.node.clone(),
            role: self.role(),
            learner: self.learner(),
            connected: self.connected(),
            learned_seq: message::stream_seq(learned_seq),
            snapshot_age_seconds: self.snapshot_age(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The host name, for `cluster.node = ""`.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "ffd".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
