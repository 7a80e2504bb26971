//! Slow clients: slowloris (request heads sent one byte at a time), a body that trickles, and one
//! address opening more connections than its share. The server closes them at the head
//! deadline, evicts them when it needs their slots, refuses a peer's excess at once, and keeps
//! answering `/classify` and `/healthz` meanwhile.
//!
//! The attackers connect from other loopback addresses (127.0.0.2, ...), which Linux routes to
//! `lo` without configuration; the normal client and the probes stay on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{metric, small_config, start_server, TestServer};

/// `http.max_connections` of these tests.
const SLOTS: usize = 16;
/// `http.header_timeout_ms` of these tests.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How often a slowloris client sends its next byte.
const TICK: Duration = Duration::from_millis(200);
/// Answer-time bound for a normal request during an attack: far above the milliseconds an
/// answer takes, low enough to show that nobody waited for a slot or a deadline.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Slack over a deadline before a connection counts as not closed by it (a loaded machine).
const SLACK: Duration = Duration::from_millis(2000);

/// The beginning of a request head that never ends.
const HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: ffd\r\nX-Slow: ";

fn slow_config() -> ffd::service::Config {
    let mut config = small_config();
    config.http.max_connections = SLOTS;
    config.http.header_timeout_ms = HEADER_TIMEOUT.as_millis() as u64;
    config
}

fn server_addr(s: &TestServer) -> SocketAddr {
    s.url
        .trim_start_matches("http://")
        .parse()
        .expect("the server's address")
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A connection to `server` from `source` (bound before connecting).
async fn connect_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(server).await
}

/// Whether the server closes `stream` within `within` (end of stream, or a reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// A slowloris client at `source`: one connection at a time, one more byte of a never-ending
/// head every [`TICK`]; when the server closes it, a new one at the next tick, until
/// `attack_ends`. Its last connection keeps trickling until the server closes it too. Returns
/// how long each of its connections stayed open.
async fn slowloris(source: IpAddr, server: SocketAddr, attack_ends: Instant) -> Vec<Duration> {
    let mut lifetimes = Vec::new();
    while Instant::now() < attack_ends {
        let Ok(mut stream) = connect_from(source, server).await else {
            tokio::time::sleep(TICK).await;
            continue;
        };
        let opened = Instant::now();
        let mut sent = 0;
        // A bound so that a server that never closes fails the test instead of hanging it.
        while opened.elapsed() < Duration::from_secs(30) {
            let byte = HEAD.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            if closed_within(&mut stream, TICK).await {
                break;
            }
        }
        lifetimes.push(opened.elapsed());
        tokio::time::sleep(TICK).await;
    }
    lifetimes
}

async fn closed_by(s: &TestServer, reason: &str) -> f64 {
    let series = format!("ffd_http_connections_closed_total{{reason=\"{reason}\"}}");
    metric(&s.metrics().await, &series).unwrap_or_else(|| panic!("{series} is exported"))
}

/// Twice as many slowloris connections as there are slots, from four addresses, for three
/// seconds: a normal client's `/classify` keeps answering, `/healthz` on fresh connections (as
/// an orchestrator probes) answers, and no slow connection outlives the head deadline.
#[tokio::test]
async fn slowloris_with_twice_the_slots_does_not_take_the_service_down() {
    let s = start_server(slow_config()).await;
    let server = server_addr(&s);
    let attack_ends = Instant::now() + Duration::from_secs(3);
    let attackers: Vec<_> = (2..=5)
        .flat_map(|n| (0..2 * SLOTS / 4).map(move |_| loopback(n)))
        .map(|source| tokio::spawn(slowloris(source, server, attack_ends)))
        .collect();
    // Let the attack fill every slot before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    let classify = json!({ "features": vec![0.5; 784] });
    let (mut answers, mut probes) = (0, 0);
    while Instant::now() < attack_ends {
        let started = Instant::now();
        let r = s.post("/classify", &classify).await;
        assert_eq!(r.status(), 200, "/classify during the attack");
        assert!(
            started.elapsed() < ANSWER_WITHIN,
            "/classify took {:?} during the attack",
            started.elapsed()
        );
        answers += 1;
        if answers % 5 == 0 {
            let started = Instant::now();
            let r = probe
                .get(format!("{}/healthz", s.url))
                .send()
                .await
                .expect("/healthz answers during the attack");
            assert_eq!(r.status(), 200);
            assert!(
                started.elapsed() < ANSWER_WITHIN,
                "/healthz took {:?}",
                started.elapsed()
            );
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        answers >= 10 && probes >= 2,
        "{answers} answers, {probes} probes"
    );

    let mut opened = 0;
    for attacker in attackers {
        let lifetimes = attacker.await.expect("the attacker ran");
        opened += lifetimes.len();
        for lifetime in lifetimes {
            assert!(
                lifetime < HEADER_TIMEOUT + SLACK,
                "a slow connection stayed open {lifetime:?}"
            );
        }
    }
    assert!(
        opened > 2 * SLOTS,
        "the attackers reconnected ({opened} connections)"
    );
    // Newcomers took slots from slow connections; the last ones met the head deadline.
    assert!(closed_by(&s, "evicted").await >= 1.0);
    assert!(closed_by(&s, "header_timeout").await >= 1.0);
    let open = metric(&s.metrics().await, "ffd_http_connections").expect("exported");
    assert!(open <= 2.0, "{open} connections still open");
    s.shutdown().await.expect("clean shutdown");
}

/// A head that keeps trickling in is closed at the head deadline, counted from accept: every
/// byte arrives well within the idle timeout, so only the head deadline can close it.
#[tokio::test]
async fn a_trickling_head_is_closed_at_the_head_deadline() {
    let s = start_server(slow_config()).await;
    let mut stream = connect_from(loopback(2), server_addr(&s))
        .await
        .expect("connect");
    let started = Instant::now();
    let mut closed = false;
    for &byte in HEAD.iter().chain(std::iter::repeat(&b'a')).take(100) {
        if stream.write_all(&[byte]).await.is_err() || closed_within(&mut stream, TICK).await {
            closed = true;
            break;
        }
    }
    let lifetime = started.elapsed();
    assert!(closed, "the trickling head was never closed");
    assert!(
        lifetime >= HEADER_TIMEOUT - Duration::from_millis(100)
            && lifetime < HEADER_TIMEOUT + SLACK,
        "closed after {lifetime:?}"
    );
    assert_eq!(closed_by(&s, "header_timeout").await, 1.0);
    s.shutdown().await.expect("clean shutdown");
}

/// On a keep-alive connection the head deadline counts from the end of the previous answer, and
/// a connection on which nothing more arrives is closed at it, counted as idle.
#[tokio::test]
async fn on_keep_alive_the_head_deadline_counts_from_the_previous_answer() {
    let s = start_server(slow_config()).await;
    let mut stream = connect_from(loopback(2), server_addr(&s))
        .await
        .expect("connect");
    // Most of the first deadline passes before the request is sent.
    tokio::time::sleep(HEADER_TIMEOUT * 6 / 10).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ffd\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(ANSWER_WITHIN, stream.read(&mut buf))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answered = Instant::now();
    assert!(
        closed_within(&mut stream, HEADER_TIMEOUT + SLACK).await,
        "never closed"
    );
    let silent = answered.elapsed();
    assert!(
        silent >= HEADER_TIMEOUT - Duration::from_millis(100),
        "closed {silent:?} after the answer"
    );
    assert_eq!(closed_by(&s, "idle").await, 1.0);
    assert_eq!(closed_by(&s, "header_timeout").await, 0.0);
    s.shutdown().await.expect("clean shutdown");
}

/// One address opening more than `http.max_connections_per_peer` connections: the excess is
/// closed at once (not after a deadline), the rest stay, and other addresses still get in.
#[tokio::test]
async fn the_per_peer_cap_refuses_the_excess_at_once() {
    let mut config = slow_config();
    config.http.max_connections_per_peer = 3;
    config.http.header_timeout_ms = 30_000;
    let s = start_server(config).await;
    let server = server_addr(&s);
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = connect_from(loopback(2), server).await.expect("connect");
        stream.write_all(HEAD).await.expect("write");
        held.push(stream);
    }
    let mut refused = 0;
    for (i, stream) in held.iter_mut().enumerate() {
        let closed = closed_within(stream, Duration::from_millis(500)).await;
        assert_eq!(closed, i >= 3, "connection {i} of the peer");
        refused += usize::from(closed);
    }
    assert_eq!(refused, 2);
    assert_eq!(closed_by(&s, "peer_limit").await, 2.0);

    let mut other = connect_from(loopback(3), server).await.expect("connect");
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ffd\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, other.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    s.shutdown().await.expect("clean shutdown");
}

/// A body that trickles below `http.min_body_bytes_per_second` fails after the grace and what
/// its bytes earned, long before `http.request_timeout_ms`, with an answer saying why; the
/// connection is then closed.
#[tokio::test]
async fn a_body_below_the_minimum_rate_is_cut_off() {
    let mut config = slow_config();
    config.http.min_body_bytes_per_second = 1000;
    config.http.body_grace_ms = 300;
    config.http.request_timeout_ms = 30_000;
    let s = start_server(config).await;
    let mut stream = connect_from(loopback(2), server_addr(&s))
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /classify HTTP/1.1\r\nHost: ffd\r\ncontent-type: application/json\r\n\
              content-length: 100000\r\n\r\n",
        )
        .await
        .expect("write the head");
    let started = Instant::now();
    // 10 bytes every 100 ms: 100 bytes per second, a tenth of the minimum.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(10) {
        if stream.write_all(b"[0.5, 0.5,").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        closed_within(&mut stream, ANSWER_WITHIN).await,
        "the connection was closed"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "cut off after {elapsed:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("slower than 1000 bytes per second"),
        "{answer}"
    );
    assert_eq!(closed_by(&s, "slow_body").await, 1.0);

    // The same limits let a body sent at once through.
    let r = s
        .post("/classify", &json!({ "features": vec![0.5; 784] }))
        .await;
    assert_eq!(r.status(), 200);
    s.shutdown().await.expect("clean shutdown");
}
