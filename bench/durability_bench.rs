//! Durability measurements against real `ffd serve` processes (results in BENCHMARKS.md):
//!
//! ```text
//! cargo build --release
//! cargo run --release --example durability_bench -- soak       MNIST_DIR [CYCLES]
//! cargo run --release --example durability_bench -- ingest     MNIST_DIR
//! cargo run --release --example durability_bench -- checkpoint MNIST_DIR
//! cargo run --release --example durability_bench -- restart    MNIST_DIR
//! cargo run --release --example durability_bench -- recovery   MNIST_DIR [CYCLES]
//! cargo run --release --example durability_bench -- damage     MNIST_DIR [KIND...]
//! ```
//!
//! MNIST_DIR holds the four standard IDX files (see README.md). The server binary is
//! `target/release/ffd` (or `$BENCH_FFD_BIN`); data directories are fresh temp directories.
//!
//! - `soak`: CYCLES (default 20) × (4 clients stream batches of 100 → `kill -9` at a random
//!   moment → restart). Odd cycles start streaming as soon as the restarted server is ready, so
//!   the next kill lands while it learns the recovered backlog; after every other restart and
//!   the last one, once the backlog is learned: the server started; `samples_learned ==
//!   learned_seq == last_seq` (contiguous: nothing skipped, nothing learned twice); every
//!   acknowledged `last_seq` ≤ `learned_seq`; `learned − acknowledged ≤ samples in flight at
//!   the kills` (cumulative).
//! - `ingest`: accepted samples/s with batches of 100 (4 clients, learner paused so only the
//!   request path and the WAL are measured), `durability.mode` = `fsync` vs `none` vs off.
//! - `checkpoint`: a 784-1000-1000-1000 network: `/admin/checkpoint` write times, and
//!   `/classify` latency with and without checkpoints being written.
//! - `restart`: 100 000 WAL records not yet learned (learner paused, `kill -9`), then the time
//!   from spawn to listening and to the backlog learned (`/readyz` 200): the replay rate.
//! - `recovery`: the default settings (checkpoint cadence, queue), 4 clients streaming as fast
//!   as the server takes for 10–25 s, `kill -9`, restart: the backlog found, `/readyz` as soon
//!   as the server listens (503 while it replays) and the time until it answers 200 (the
//!   backlog learned), with the load average. CYCLES (default 5) times.
//! - `damage`: per kind of file damage (default: every kind, see [`Damage`]): a server with
//!   small WAL segments and frequent checkpoints learns 4 000 samples, takes 1 500 more with the
//!   learner paused (in the WAL only), is killed with `kill -9`; its files are damaged; it
//!   restarts and replays. Compares the acknowledged samples the damage destroyed (those no
//!   intact WAL record or intact checkpoint holds, from the files themselves) with those
//!   recovery lost (acknowledged − learned) and with what `/v1/model`'s `recovery` reports, and
//!   checks that the next sequence number is above every acknowledged one.
//!
//! `soak` and `damage` end with `RESULT ...` lines (`key=value`), which
//! `bench/reliability.py` reads.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffd::data::idx::{load_mnist, Dataset};
use rand::{Rng, SeedableRng};

#[path = "damage.rs"]
mod damage;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Server {
    child: Child,
    url: String,
    started: Instant,
}

/// The learn token of the servers this tool starts (the admin routes always need one).
const LEARN_TOKEN: &str = "durability-bench-token";

/// An HTTP client that sends [`LEARN_TOKEN`] with every request.
fn client() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {LEARN_TOKEN}"))?,
    );
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}
fn ffd_bin() -> String {
    std::env::var("BENCH_FFD_BIN").unwrap_or_else(|_| "target/release/ffd".into())
}

fn spawn(dir: &Path, env: &[(&str, &str)]) -> Result<Server> {
    let started = Instant::now();
    let mut cmd = Command::new(ffd_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("FFD_LEARN_TOKEN", LEARN_TOKEN)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!("server: {line}");
                continue;
            };
            if log["fields"]["message"] == "listening" {
                let _ = tx.send(log["fields"]["addr"].as_str().map(str::to_owned));
            }
            if log["level"] == "ERROR" || log["level"] == "WARN" {
                eprintln!("server: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| "the server did not start")?
        .ok_or("no address logged")?;
    Ok(Server {
        child,
        url: format!("http://{addr}"),
        started,
    })
}

impl Server {
    /// CPU seconds (user + system) the server process has used so far, from
    /// `/proc/PID/stat` (Linux; clock ticks of 1/100 s). On a machine shared with other work
    /// the wall-clock rate of the learner varies with the load; its rate per CPU second is
    /// what it reaches on an idle core.
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which is in parentheses): utime and stime are the
        // 12th and 13th.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    fn kill_9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        self.child.wait()?;
        Ok(())
    }

    async fn get(&self, c: &reqwest::Client, path: &str) -> Result<serde_json::Value> {
        Ok(c.get(format!("{}{path}", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn post(&self, c: &reqwest::Client, path: &str) -> Result<serde_json::Value> {
        Ok(c.post(format!("{}{path}", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Seconds from spawn until `/readyz` answers 200.
    async fn ready(&self, c: &reqwest::Client) -> Result<f64> {
        loop {
            if let Ok(r) = c.get(format!("{}/readyz", self.url)).send().await {
                if r.status() == 200 {
                    return Ok(self.started.elapsed().as_secs_f64());
                }
            }
            if self.started.elapsed() > Duration::from_secs(300) {
                return Err("never ready".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// `/v1/model` once the backlog and queue are learned.
    async fn drained(&self, c: &reqwest::Client) -> Result<serde_json::Value> {
        loop {
            let m = self.get(c, "/v1/model").await?;
            if m["queue_depth"] == 0 && m["learned_seq"] == m["last_seq"] {
                return Ok(m);
            }
            if self.started.elapsed() > Duration::from_secs(1200) {
                return Err(format!("never drained: {m}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Every `/learn` body of 100 training samples, serialised once up front.
fn bodies(train: &Dataset, batch: usize) -> Vec<Bytes> {
    (0..train.len() / batch)
        .map(|b| {
            let samples: Vec<serde_json::Value> = (b * batch..(b + 1) * batch)
                .map(|i| {
                    let (x, y) = train.sample(i);
                    serde_json::json!({ "features": x, "label": y })
                })
                .collect();
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({ "samples": samples })).unwrap_or_default(),
            )
        })
        .collect()
}

/// `clients` concurrent senders; sender `k` sends bodies `k, k + clients, ...` until `count`
/// bodies are sent in all or a request fails. Returns the acknowledged `last_seq`s.
async fn send(
    url: &str,
    bodies: Arc<Vec<Bytes>>,
    clients: usize,
    count: usize,
    in_flight: Arc<AtomicU64>,
    batch: u64,
) -> Vec<u64> {
    let mut tasks = Vec::new();
    // Building a client only fails without a TLS backend or with a bad header: not here.
    let Ok(shared) = client() else {
        return Vec::new();
    };
    for k in 0..clients {
        let (url, bodies, in_flight, client) = (
            url.to_owned(),
            Arc::clone(&bodies),
            Arc::clone(&in_flight),
            shared.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = k;
            while i < count {
                let body = bodies[i % bodies.len()].clone();
                in_flight.fetch_add(batch, Ordering::SeqCst);
                let r = client
                    .post(format!("{url}/learn"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let Ok(r) = r else { break };
                match r.status().as_u16() {
                    202 => {}
                    429 => {
                        in_flight.fetch_sub(batch, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    _ => break,
                }
                let Ok(v) = r.json::<serde_json::Value>().await else {
                    break;
                };
                let Some(seq) = v["last_seq"].as_u64() else {
                    break;
                };
                in_flight.fetch_sub(batch, Ordering::SeqCst);
                acked.push(seq);
                i += clients;
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

async fn soak(mnist: &Path, cycles: usize) -> Result<()> {
    let data = load_mnist(mnist)?;
    let bodies = Arc::new(bodies(&data.train, 100));
    let dir = tempfile::tempdir()?;
    let client = client()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut acked_total, mut highest_acked, mut in_flight_total) = (0u64, 0u64, 0u64);
    let mut acked_seqs: Vec<u64> = Vec::new();
    // Ready while recovering: the odd cycles' kills must land during the replay.
    let env = [
        ("FFD_LEARNER__QUEUE_CAPACITY", "20000"),
        ("FFD_DURABILITY__READY_WHILE_RECOVERING", "true"),
    ];
    let mut server = spawn(dir.path(), &env)?;
    println!("cycle ready_s drained_s samples_learned learned_seq acked_total in_flight_total kill_after_ms");
    for cycle in 1..=cycles {
        let kill_after = Duration::from_millis(rng.gen_range(300..3000));
        let in_flight = Arc::new(AtomicU64::new(0));
        let sender = {
            let (url, bodies, in_flight) = (
                server.url.clone(),
                Arc::clone(&bodies),
                Arc::clone(&in_flight),
            );
            tokio::spawn(async move { send(&url, bodies, 4, usize::MAX, in_flight, 100).await })
        };
        tokio::time::sleep(kill_after).await;
        server.kill_9()?;
        let acked = sender.await?;
        acked_total += 100 * acked.len() as u64;
        acked_seqs.extend(&acked);
        highest_acked = highest_acked.max(acked.iter().copied().max().unwrap_or(0));
        in_flight_total += in_flight.load(Ordering::SeqCst);

        server = spawn(dir.path(), &env)?;
        let ready = server.ready(&client).await?;
        if cycle % 2 == 1 && cycle != cycles {
            // Stream again at once: the next kill lands while the WAL backlog is being learned.
            println!("{cycle} {ready:.3} - - - {acked_total} {in_flight_total} {} (not drained: next kill during recovery)", kill_after.as_millis());
            continue;
        }
        let m = server.drained(&client).await?;
        let drained = server.started.elapsed().as_secs_f64();
        let learned = m["samples_learned"].as_u64().ok_or("no samples_learned")?;
        let learned_seq = m["learned_seq"].as_u64().ok_or("no learned_seq")?;
        println!(
            "{cycle} {ready:.3} {drained:.2} {learned} {learned_seq} {acked_total} {in_flight_total} {}",
            kill_after.as_millis()
        );
        let ok = learned == learned_seq
            && m["last_seq"] == learned_seq
            && highest_acked <= learned_seq
            && learned >= acked_total
            && learned - acked_total <= in_flight_total;
        // Acknowledged samples not learned (numbered above what was learned), and samples
        // learned more often than numbered.
        let lost = acked_seqs
            .iter()
            .map(|&s| s.saturating_sub(learned_seq).min(100))
            .sum::<u64>();
        let duplicated = learned.saturating_sub(learned_seq);
        if !ok || cycle == cycles {
            println!(
                "RESULT soak cycles={cycle} clients=4 acknowledged={acked_total} lost={lost} duplicated={duplicated} in_flight={in_flight_total}"
            );
        }
        if !ok {
            return Err(format!("cycle {cycle} violates the guarantee: {m}").into());
        }
    }
    server.stop()?;
    println!("soak: {cycles} cycles, 0 acknowledged samples lost, 0 learned twice, every restart started");
    Ok(())
}

async fn ingest(mnist: &Path) -> Result<()> {
    let data = load_mnist(mnist)?;
    let bodies = Arc::new(bodies(&data.train, 100));
    let n = bodies.len();
    let client = client()?;
    let mut results: Vec<(&str, Vec<f64>)> =
        vec![("fsync", vec![]), ("none", vec![]), ("off", vec![])];
    for round in 0..3 {
        for (mode, rates) in results.iter_mut() {
            let dir = tempfile::tempdir()?;
            let mut env = vec![("FFD_LEARNER__QUEUE_CAPACITY", "70000")];
            match *mode {
                "off" => env.push(("FFD_DURABILITY__ENABLED", "false")),
                m => env.push(("FFD_DURABILITY__MODE", m)),
            }
            let server = spawn(dir.path(), &env)?;
            server.ready(&client).await?;
            server.post(&client, "/admin/pause").await?;
            let started = Instant::now();
            let acked = send(
                &server.url,
                Arc::clone(&bodies),
                4,
                n,
                Arc::new(AtomicU64::new(0)),
                100,
            )
            .await;
            let secs = started.elapsed().as_secs_f64();
            let rate = (acked.len() * 100) as f64 / secs;
            let scrape = client
                .get(format!("{}/metrics", server.url))
                .send()
                .await?
                .text()
                .await?;
            let metric = |name: &str| {
                scrape
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let syncs = metric("ffd_wal_fsync_duration_seconds_count");
            let sync_ms = 1e3 * metric("ffd_wal_fsync_duration_seconds_sum") / syncs.max(1.0);
            println!(
                "round {round} mode {mode}: {} samples acknowledged in {secs:.2} s = {rate:.0} samples/s ({syncs} WAL syncs, mean {sync_ms:.2} ms)",
                acked.len() * 100
            );
            rates.push(rate);
            server.kill_9()?;
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (fsync, none, off) = (
        median(&results[0].1),
        median(&results[1].1),
        median(&results[2].1),
    );
    println!(
        "median samples/s: fsync {fsync:.0}, none {none:.0}, off {off:.0}; fsync/none = {:.2}",
        fsync / none
    );
    Ok(())
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// `/classify` latencies (ms) of one sequential client for `secs`.
async fn classify_loop(client: reqwest::Client, url: String, body: Bytes, secs: f64) -> Vec<f64> {
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t = Instant::now();
        let ok = client
            .post(format!("{url}/classify"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ok {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    lat
}

async fn checkpoint(mnist: &Path) -> Result<()> {
    let data = load_mnist(mnist)?;
    let bodies = Arc::new(bodies(&data.train, 100));
    let dir = tempfile::tempdir()?;
    let client = client()?;
    let server = spawn(dir.path(), &[("FFD_NETWORK__HIDDEN", "[1000, 1000, 1000]")])?;
    server.ready(&client).await?;
    // Fill the replay buffer (1024) and give the optimiser state something to hold.
    send(
        &server.url,
        Arc::clone(&bodies),
        2,
        20,
        Arc::new(AtomicU64::new(0)),
        100,
    )
    .await;
    server.drained(&client).await?;
    let probe = Bytes::from(serde_json::to_vec(
        &serde_json::json!({ "features": data.test.sample(0).0 }),
    )?);

    let mut quiet = classify_loop(client.clone(), server.url.clone(), probe.clone(), 5.0).await;
    let during = tokio::spawn(classify_loop(
        client.clone(),
        server.url.clone(),
        probe.clone(),
        5.0,
    ));
    let mut writes = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        let r = server.post(&client, "/admin/checkpoint").await?;
        writes.push(r["seconds"].as_f64().ok_or(format!("no seconds: {r}"))? * 1e3);
    }
    let mut busy = during.await?;
    let size = std::fs::read_dir(dir.path())?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .max()
        .unwrap_or(0);
    println!("checkpoint file: {:.1} MB", size as f64 / 1e6);
    println!(
        "checkpoint write (serialise + write + fsync + rename + dir fsync), {} writes: median {:.1} ms, p90 {:.1} ms, max {:.1} ms, {} over 100 ms",
        writes.len(),
        percentile(&mut writes.clone(), 0.5),
        percentile(&mut writes.clone(), 0.9),
        percentile(&mut writes.clone(), 1.0),
        writes.iter().filter(|&&ms| ms > 100.0).count()
    );
    for (name, lat) in [
        ("no checkpoints", &mut quiet),
        ("checkpoints back to back", &mut busy),
    ] {
        println!(
            "/classify ({name}): {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            percentile(lat, 1.0)
        );
    }
    server.stop()?;
    Ok(())
}

async fn restart(mnist: &Path) -> Result<()> {
    let data = load_mnist(mnist)?;
    let bodies = Arc::new(bodies(&data.train, 100));
    let dir = tempfile::tempdir()?;
    let client = client()?;
    let env = [
        ("FFD_LEARNER__QUEUE_CAPACITY", "110000"),
        ("FFD_DURABILITY__CHECKPOINT_EVERY_SAMPLES", "0"),
        ("FFD_DURABILITY__CHECKPOINT_EVERY_SECONDS", "0"),
    ];
    let server = spawn(dir.path(), &env)?;
    server.ready(&client).await?;
    server.post(&client, "/admin/pause").await?;
    let acked = send(
        &server.url,
        bodies,
        4,
        1000,
        Arc::new(AtomicU64::new(0)),
        100,
    )
    .await;
    println!(
        "{} samples acknowledged, none learned; kill -9",
        acked.len() * 100
    );
    server.kill_9()?;
    let wal: u64 = std::fs::read_dir(dir.path())?
        .filter_map(std::result::Result::ok)
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    println!("data dir: {:.0} MB", wal as f64 / 1e6);
    let server = spawn(dir.path(), &env)?;
    let listening = server.started.elapsed().as_secs_f64();
    let cpu_at_listening = server.cpu_seconds().unwrap_or(0.0);
    let m = server.get(&client, "/v1/model").await?;
    println!(
        "listening {listening:.2} s after spawn; recovering {}, backlog {}",
        m["recovery"]["recovering"], m["recovery"]["backlog_at_start"]
    );
    let ready = server.ready(&client).await?;
    let cpu = server.cpu_seconds().unwrap_or(0.0) - cpu_at_listening;
    let m = server.drained(&client).await?;
    let backlog = m["recovery"]["backlog_at_start"].as_f64().unwrap_or(0.0);
    println!(
        "backlog learned, /readyz 200 {ready:.1} s after spawn: samples_learned {}; replay rate {:.0} samples/s wall clock, {:.0} samples per CPU second ({cpu:.1} CPU s)",
        m["samples_learned"],
        backlog / (ready - listening),
        backlog / cpu.max(1e-9)
    );
    server.stop()?;
    Ok(())
}

/// The 1-minute load average (`/proc/loadavg`, Linux), or `?`: on a shared machine the
/// wall-clock figures depend on it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

async fn recovery(mnist: &Path, cycles: usize) -> Result<()> {
    let data = load_mnist(mnist)?;
    let bodies = Arc::new(bodies(&data.train, 100));
    let dir = tempfile::tempdir()?;
    let client = client()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    println!("cycle streamed_s backlog readyz_at_listen ready_s (spawn to /readyz 200) replay_cpu_s wall_rate_per_s cpu_rate_per_s load_1min");
    let (mut worst, mut worst_cpu) = (0.0f64, 0.0f64);
    let mut server = spawn(dir.path(), &[])?;
    server.ready(&client).await?;
    for cycle in 1..=cycles {
        let stream_for = Duration::from_millis(rng.gen_range(10_000..25_000));
        let sender = {
            let (url, bodies) = (server.url.clone(), Arc::clone(&bodies));
            tokio::spawn(async move {
                send(
                    &url,
                    bodies,
                    4,
                    usize::MAX,
                    Arc::new(AtomicU64::new(0)),
                    100,
                )
                .await
            })
        };
        tokio::time::sleep(stream_for).await;
        server.kill_9()?;
        sender.await?;
        server = spawn(dir.path(), &[])?;
        let listening = server.started.elapsed().as_secs_f64();
        let cpu_at_listening = server.cpu_seconds().unwrap_or(0.0);
        // What a load balancer sees as soon as the server listens: 503 while it replays.
        let at_listen = client
            .get(format!("{}/readyz", server.url))
            .send()
            .await?
            .status()
            .as_u16();
        let ready = server.ready(&client).await?;
        let cpu = server.cpu_seconds().unwrap_or(0.0) - cpu_at_listening;
        let m = server.get(&client, "/v1/model").await?;
        let backlog = m["recovery"]["backlog_at_start"].as_u64().unwrap_or(0);
        worst = worst.max(ready);
        worst_cpu = worst_cpu.max(cpu);
        println!(
            "{cycle} {:.1} {backlog} {at_listen} {ready:.2} {cpu:.2} {:.0} {:.0} {}",
            stream_for.as_secs_f64(),
            backlog as f64 / (ready - listening).max(1e-9),
            backlog as f64 / cpu.max(1e-9),
            load_average()
        );
    }
    server.stop()?;
    println!("recovery: {cycles} kills under full load, worst time to ready {worst:.2} s, worst replay {worst_cpu:.2} CPU s");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: durability_bench soak|ingest|checkpoint|restart|recovery|damage MNIST_DIR [CYCLES|KIND...]";
    let (cmd, mnist) = match (args.get(1), args.get(2)) {
        (Some(c), Some(m)) => (c.as_str(), Path::new(m)),
        _ => return Err(usage.into()),
    };
    match cmd {
        "soak" => soak(mnist, args.get(3).map_or(Ok(20), |c| c.parse())?).await,
        "ingest" => ingest(mnist).await,
        "checkpoint" => checkpoint(mnist).await,
        "restart" => restart(mnist).await,
        "recovery" => recovery(mnist, args.get(3).map_or(Ok(5), |c| c.parse())?).await,
        "damage" => damage::run(mnist, &args[3..]).await,
        _ => Err(usage.into()),
    }
}
