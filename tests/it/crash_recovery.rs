//! `kill -9` of a real `ffd serve` process (durability on, `fsync` mode): after a restart on
//! the same data directory, every acknowledged sample is learned exactly once. Cycle 1 kills
//! an idle server after N acknowledged samples: `samples_learned == N`. Cycle 2 kills it while
//! two clients are still sending: every acknowledged sequence number is learned, nothing is
//! learned twice (`samples_learned == learned_seq`, sequence numbers are contiguous), and at
//! most the samples in flight at the kill were learned beyond the acknowledged ones. A restart
//! with a WAL backlog says so until it is learned: `/readyz` 503 with `recovering` and the
//! records left, `/v1/model`'s `recovery` the same, then 200 once all are learned.
use crate::support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::batch_json;

/// Samples per `/learn` request.
const BATCH: usize = 20;

/// A spawned `ffd serve` and its address.
struct Server {
    child: Child,
    url: String,
}

fn spawn(dir: &Path) -> Server {
    spawn_with(dir, &[("FFD_NETWORK__HIDDEN", "[32]")])
}

fn spawn_with(dir: &Path, env: &[(&str, &str)]) -> Server {
    let dir = dir.to_str().expect("a UTF-8 temporary directory");
    let mut child = support::ffd_serve(
        &[
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
            dir,
        ],
        env,
    )
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ffd starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "listening" {
                let _ = tx.send(log["fields"]["addr"].as_str().map(str::to_owned));
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a `listening` log line")
        .expect("with the address");
    Server {
        child,
        url: format!("http://{addr}"),
    }
}

impl Server {
    fn kill_9(mut self) {
        // `Child::kill` is SIGKILL on Unix: no shutdown code runs.
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    async fn model(&self, client: &reqwest::Client) -> serde_json::Value {
        client
            .get(format!("{}/v1/model", self.url))
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON")
    }

    /// Waits for `/readyz`, then for the recovered backlog and queue to be learned.
    async fn recovered(&self, client: &reqwest::Client) -> serde_json::Value {
        let deadline = Instant::now() + support::WAIT;
        loop {
            let ready = client.get(format!("{}/readyz", self.url)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            let m = self.model(client).await;
            if m["queue_depth"] == 0 && m["learned_seq"] == m["last_seq"] {
                return m;
            }
            assert!(Instant::now() < deadline, "backlog never learned: {m}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Sends batches starting at sample `first` until `stop` (or `batches` batches); returns the
/// acknowledged `last_seq`s.
/// Samples sent and requests acknowledged so far by the clients of one cycle.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    acknowledged: AtomicU64,
}

async fn client_loop(
    url: String,
    first: usize,
    batches: usize,
    progress: Arc<Progress>,
) -> Vec<u64> {
    let data = support::mnist_small();
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for b in 0..batches {
        let start = (first + b * BATCH) % (data.train.len() - BATCH);
        progress.sent.fetch_add(BATCH as u64, Ordering::SeqCst);
        let Ok(r) = client
            .post(format!("{url}/learn"))
            .json(&batch_json(&data.train, start..start + BATCH))
            .send()
            .await
        else {
            break;
        };
        if r.status() != 202 {
            break;
        }
        let body: serde_json::Value = r.json().await.expect("JSON");
        acked.push(body["last_seq"].as_u64().expect("last_seq"));
        progress.acknowledged.fetch_add(1, Ordering::SeqCst);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::new();

    // Cycle 1: N acknowledged samples from two concurrent clients, then SIGKILL.
    let server = spawn(dir.path());
    let progress = Arc::new(Progress::default());
    let a = tokio::spawn(client_loop(
        server.url.clone(),
        0,
        10,
        Arc::clone(&progress),
    ));
    let b = tokio::spawn(client_loop(
        server.url.clone(),
        1000,
        10,
        Arc::clone(&progress),
    ));
    let acked = [a.await.expect("client"), b.await.expect("client")].concat();
    let n = (acked.len() * BATCH) as u64;
    assert_eq!(n, 400, "every request acknowledged");
    server.kill_9();

    let server = spawn(dir.path());
    let m = server.recovered(&client).await;
    assert_eq!(m["samples_learned"], n, "{m}");
    assert_eq!(m["learned_seq"], n);
    assert_eq!(m["last_seq"], n, "no sequence number lost or reused");

    // Cycle 2: SIGKILL while both clients are sending.
    let progress = Arc::new(Progress::default());
    let a = tokio::spawn(client_loop(
        server.url.clone(),
        0,
        1000,
        Arc::clone(&progress),
    ));
    let b = tokio::spawn(client_loop(
        server.url.clone(),
        1000,
        1000,
        Arc::clone(&progress),
    ));
    // Kill once the clients are well into their stream (and surely mid-request).
    let deadline = Instant::now() + support::WAIT;
    while progress.acknowledged.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "no request acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_9();
    let acked = [a.await.expect("client"), b.await.expect("client")].concat();
    let acked_count = (acked.len() * BATCH) as u64;
    let highest_acked = acked
        .iter()
        .copied()
        .max()
        .expect("some acknowledged before the kill");
    let in_flight = progress.sent.load(Ordering::SeqCst) - acked_count;

    let server = spawn(dir.path());
    let m = server.recovered(&client).await;
    let learned = m["samples_learned"].as_u64().expect("a count");
    assert_eq!(
        m["learned_seq"], learned,
        "contiguous: nothing skipped or learned twice"
    );
    assert!(
        learned >= highest_acked,
        "acknowledged seq {highest_acked} lost: {m}"
    );
    assert!(learned >= n + acked_count, "{m}");
    assert!(
        learned - (n + acked_count) <= in_flight,
        "learned {learned}, acknowledged {}, in flight {in_flight}",
        n + acked_count
    );
    server.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_not_ready_until_the_backlog_is_learned() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A network wide enough that the replay takes a while (the first `/readyz` comes
    // milliseconds after the server listens); the learn token for `/admin/pause`.
    let env = [
        ("FFD_NETWORK__HIDDEN", "[200, 200]"),
        ("FFD_LEARN_TOKEN", support::LEARN_TOKEN),
    ];
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", support::LEARN_TOKEN)
            .parse()
            .expect("a header"),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client");
    let server = spawn_with(dir.path(), &env);
    let r = client
        .post(format!("{}/admin/pause", server.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    // 3 000 samples acknowledged and not learned (paused), then SIGKILL: all are backlog.
    let data = support::mnist_small();
    for start in (0..3000).step_by(100) {
        let r = client
            .post(format!("{}/learn", server.url))
            .json(&batch_json(&data.train, start..start + 100))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 202);
    }
    server.kill_9();

    let server = spawn_with(dir.path(), &env);
    let r = client
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 503, "not ready while replaying");
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["recovering"], true, "{body}");
    assert!(body["backlog"].as_u64().is_some_and(|b| b > 0), "{body}");
    assert_eq!(body["error"]["code"], "not_ready");
    // Exactly the documented `ReadinessError` (unknown fields refused): /openapi.json says so.
    serde_json::from_value::<ffd::service::http::health::ReadinessError>(body.clone())
        .unwrap_or_else(|e| panic!("not the documented 503 body: {e}: {body}"));
    let m = server.model(&client).await;
    let recovery = &m["recovery"];
    assert_eq!(recovery["recovering"], true, "{m}");
    assert_eq!(recovery["backlog_at_start"], 3000);
    assert!(recovery["backlog"].as_u64().is_some_and(|b| b > 0));

    let deadline = Instant::now() + 3 * support::WAIT;
    let body = loop {
        let r = client
            .get(format!("{}/readyz", server.url))
            .send()
            .await
            .expect("answers");
        if r.status() == 200 {
            break r.json::<serde_json::Value>().await.expect("JSON");
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "recovering": false, "backlog": 0})
    );
    let m = server.model(&client).await;
    assert_eq!(m["samples_learned"], 3000, "{m}");
    assert_eq!(m["recovery"]["recovering"], false);
    assert_eq!(m["recovery"]["replayed"], 3000);
    server.kill_9();
}
