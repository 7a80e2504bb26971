//! `BoundedListener`: accepts TCP connections and decides at once which may stay. At most
//! `http.max_connections` are open, at most `http.max_connections_per_peer` from one client
//! address. A new connection never waits: the kernel's backlog is always drained, because a
//! client queued there cannot tell a slow server from a dead one (probes time out, load
//! balancers mark the service down).
//!
//! When every slot is taken, the new connection closes the connection that has waited longest
//! for a request head — idle keep-alive, or a head still trickling in — taken from the client
//! address holding the most connections. Evicting beats refusing: slow clients then cannot shut
//! everyone else out (a refused newcomer would lose to them every time), a newcomer that sends
//! its head at once is served before the attacker's next connection displaces it, and the
//! per-address order spares light clients (a probe, one normal client) while a heavy one holds
//! slots. Only when every connection is inside a request (which `http.max_concurrent_requests`
//! bounds) is the newcomer closed at once. This is also why probes need no reserved slot: a
//! probe is exactly such a newcomer, and a reserve could not be kept for probes anyway, since
//! the path is only known once the head, the very thing slow clients withhold, has arrived.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::service::metrics::ConnectionClose;

/// A listener that admits, evicts or refuses each connection as it arrives.
#[derive(Debug)]
pub struct BoundedListener {
    inner: TcpListener,
    slots: Arc<Mutex<Slots>>,
    open: IntGauge,
    closed: IntCounterVec,
}

/// An admitted connection: its socket, its client and its slot (released when dropped).
#[derive(Debug)]
pub struct Admitted {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The slot; holds the connection's [`ConnectionState`].
    pub slot: Slot,
}

impl BoundedListener {
    /// Wraps `inner`: at most `max_connections` open, at most `max_per_peer` from one client
    /// address; `open` tracks how many are open, `closed` counts refusals and evictions.
    pub fn new(
        inner: TcpListener,
        max_connections: usize,
        max_per_peer: usize,
        open: IntGauge,
        closed: IntCounterVec,
    ) -> Self {
        Self {
            inner,
            slots: Arc::new(Mutex::new(Slots::new(max_connections, max_per_peer))),
            open,
            closed,
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The next admitted connection. Refused connections are closed here, at once.
    pub async fn accept(&mut self) -> Admitted {
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                // The client gave up while in the backlog: nothing to wait for.
                Err(e) if is_connection_error(&e) => continue,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admitted = lock(&self.slots).admit(peer_key(peer.ip()));
            match admitted {
                Ok((id, state)) => {
                    // Small request/response exchanges: do not wait to fill a segment.
                    let _ = stream.set_nodelay(true);
                    self.open.inc();
                    let slot = Slot {
                        id,
                        state,
                        slots: Arc::clone(&self.slots),
                        open: self.open.clone(),
                    };
                    return Admitted { stream, peer, slot };
                }
                Err(reason) => {
                    tracing::debug!(%peer, reason = reason.as_str(), "connection refused");
                    self.closed.with_label_values(&[reason.as_str()]).inc();
                    // Dropping the socket closes it: the client sees the connection end at once.
                }
            }
        }
    }
}

/// Errors that concern one connection in the backlog, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The address a per-peer limit counts: an IPv4 address (also when it reaches a dual-stack
/// socket as `::ffff:a.b.c.d`), or an IPv6 /64 prefix, the smallest block a single client is
/// commonly given (counting single IPv6 addresses would let one client take them all).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    // The critical sections only update maps and cannot leave them half-changed.
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection's slot. Dropping it frees the slot, unless the connection was evicted (its
/// slot then already went to the newcomer).
#[derive(Debug)]
pub struct Slot {
    id: u64,
    state: Arc<ConnectionState>,
    slots: Arc<Mutex<Slots>>,
    open: IntGauge,
}

impl Slot {
    /// What the connection is doing, shared with the code serving it.
    pub fn state(&self) -> &Arc<ConnectionState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots).release(self.id);
        self.open.dec();
    }
}

/// `waiting_since` while a request is being handled.
const BUSY: u64 = u64::MAX;

/// What one connection is doing, written by the code serving it and read by the listener
/// choosing whom to evict. Atomics, because the listener reads every connection's state under
/// its own lock while the connections change theirs.
#[derive(Debug)]
pub struct ConnectionState {
    /// Nanoseconds after `epoch` at which the connection began waiting for a request head
    /// (accept, or the end of the previous answer); [`BUSY`] while a request is handled.
    waiting_since: AtomicU64,
    /// Requests begun so far: a change tells the per-request bookkeeping to start afresh.
    requests: AtomicU64,
    /// Whether any byte has arrived since the connection began waiting: tells a head that
    /// came too slowly from a keep-alive connection that stayed silent.
    head_begun: AtomicBool,
    epoch: Instant,
    evicted: Notify,
    closed_by: OnceLock<ConnectionClose>,
}

impl ConnectionState {
    fn new(epoch: Instant, now: Instant) -> Self {
        let state = Self {
            waiting_since: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            head_begun: AtomicBool::new(false),
            epoch,
            evicted: Notify::new(),
            closed_by: OnceLock::new(),
        };
        state.request_finished(now);
        state
    }

    /// A request head has arrived: the connection cannot be evicted until its answer is sent.
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.waiting_since.store(BUSY, Ordering::Relaxed);
    }

    /// The answer has been sent (or abandoned) at `now`: waiting for the next head.
    pub fn request_finished(&self, now: Instant) {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        let since = u64::try_from(since).unwrap_or(BUSY - 1);
        self.head_begun.store(false, Ordering::Relaxed);
        self.waiting_since.store(since, Ordering::Relaxed);
    }

    /// Bytes were read from the client.
    pub fn bytes_arrived(&self) {
        if !self.is_busy() && !self.head_begun.load(Ordering::Relaxed) {
            self.head_begun.store(true, Ordering::Relaxed);
        }
    }

    /// Whether part of a request head has arrived since the connection began waiting.
    pub fn head_begun(&self) -> bool {
        self.head_begun.load(Ordering::Relaxed)
    }

    /// Whether a request is being handled.
    pub fn is_busy(&self) -> bool {
        self.waiting_since.load(Ordering::Relaxed) == BUSY
    }

    /// How many requests have begun on this connection.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Completes once the listener has given this connection's slot to a newcomer.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Records why the server is closing the connection; the first reason stands.
    pub fn close_because(&self, reason: ConnectionClose) {
        let _ = self.closed_by.set(reason);
    }

    /// Why the server closed the connection, if it did.
    pub fn closed_by(&self) -> Option<ConnectionClose> {
        self.closed_by.get().copied()
    }
}

/// The open connections and how many each client address holds.
#[derive(Debug)]
struct Slots {
    max: usize,
    max_per_peer: usize,
    next_id: u64,
    open: HashMap<u64, Entry>,
    per_peer: HashMap<IpAddr, usize>,
    epoch: Instant,
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    state: Arc<ConnectionState>,
}

impl Slots {
    fn new(max: usize, max_per_peer: usize) -> Self {
        Self {
            max,
            max_per_peer,
            next_id: 0,
            open: HashMap::with_capacity(max),
            per_peer: HashMap::new(),
            epoch: Instant::now(),
        }
    }

    /// Admits a connection from `peer` (evicting one if every slot is taken), or says why not:
    /// [`ConnectionClose::PeerLimit`] or [`ConnectionClose::NoSlot`].
    fn admit(&mut self, peer: IpAddr) -> Result<(u64, Arc<ConnectionState>), ConnectionClose> {
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= self.max_per_peer {
            return Err(ConnectionClose::PeerLimit);
        }
        if self.open.len() >= self.max {
            let victim = self.victim().ok_or(ConnectionClose::NoSlot)?;
            if let Some(entry) = self.remove(victim) {
                entry.state.close_because(ConnectionClose::Evicted);
                // `notify_one` keeps the notice if the connection's task is not listening yet.
                entry.state.evicted.notify_one();
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let state = Arc::new(ConnectionState::new(self.epoch, Instant::now()));
        self.open.insert(
            id,
            Entry {
                peer,
                state: Arc::clone(&state),
            },
        );
        *self.per_peer.entry(peer).or_insert(0) += 1;
        Ok((id, state))
    }

    /// The connection to evict: of those waiting for a request head, one from the address
    /// holding the most connections, the longest-waiting among those; `None` if every
    /// connection is inside a request. A linear scan: it runs only when every slot is taken,
    /// and `max_connections` entries take microseconds.
    fn victim(&self) -> Option<u64> {
        self.open
            .iter()
            .filter_map(|(&id, entry)| {
                let since = entry.state.waiting_since.load(Ordering::Relaxed);
                (since != BUSY).then(|| {
                    let held = self.per_peer.get(&entry.peer).copied().unwrap_or(0);
                    ((held, Reverse(since)), id)
                })
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Frees the slot of connection `id` if it still holds one.
    fn release(&mut self, id: u64) {
        let _ = self.remove(id);
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(held) = self.per_peer.get_mut(&entry.peer) {
            *held -= 1;
            if *held == 0 {
                self.per_peer.remove(&entry.peer);
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test address")
    }

    #[test]
    fn a_peer_beyond_its_cap_is_refused_and_others_still_get_in() {
        let mut slots = Slots::new(10, 2);
        assert!(slots.admit(ip("10.0.0.1")).is_ok());
        assert!(slots.admit(ip("10.0.0.1")).is_ok());
        assert_eq!(
            slots.admit(ip("10.0.0.1")).err(),
            Some(ConnectionClose::PeerLimit)
        );
        assert!(slots.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn a_released_slot_counts_for_its_peer_again() {
        let mut slots = Slots::new(10, 1);
        let (id, _) = slots.admit(ip("10.0.0.1")).expect("admitted");
        slots.release(id);
        assert!(slots.admit(ip("10.0.0.1")).is_ok());
        assert_eq!(slots.open.len(), 1);
    }

    #[test]
    fn a_full_listener_evicts_the_longest_waiting_of_the_heaviest_peer() {
        let mut slots = Slots::new(4, 4);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let (light, light_state) = slots.admit(ip("10.0.0.1")).expect("admitted");
        let (heavy_old, old) = slots.admit(ip("10.0.0.2")).expect("admitted");
        let (_, young) = slots.admit(ip("10.0.0.2")).expect("admitted");
        let (_, busy) = slots.admit(ip("10.0.0.2")).expect("admitted");
        // The light peer has waited longest, but the heavy one holds three slots.
        light_state.request_finished(at(0));
        old.request_finished(at(10));
        young.request_finished(at(20));
        busy.request_started();
        assert!(slots.admit(ip("10.0.0.3")).is_ok());
        assert!(!slots.open.contains_key(&heavy_old));
        assert_eq!(old.closed_by(), Some(ConnectionClose::Evicted));
        assert!(slots.open.contains_key(&light));
        assert_eq!(slots.open.len(), 4);
        assert_eq!(slots.per_peer[&ip("10.0.0.2")], 2);
    }

    #[test]
    fn a_listener_full_of_requests_refuses_newcomers() {
        let mut slots = Slots::new(2, 2);
        for _ in 0..2 {
            let (_, state) = slots.admit(ip("10.0.0.1")).expect("admitted");
            state.request_started();
        }
        assert_eq!(
            slots.admit(ip("10.0.0.2")).err(),
            Some(ConnectionClose::NoSlot)
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_prefix_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            peer_key(ip("2001:db8:1:2:aaaa::1")),
            peer_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            peer_key(ip("2001:db8:1:2::1")),
            peer_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(peer_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(peer_key(ip("10.0.0.1")), ip("10.0.0.1"));
    }
}
