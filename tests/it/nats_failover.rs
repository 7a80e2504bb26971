//! Three NATS servers in one JetStream cluster (`replicas = 3`) and three `ffd serve` nodes
//! (the real binary): a sample learned through one node is served by another within 2 s;
//! under load from three clients (each retrying a request with its `Idempotency-Key` until
//! acknowledged, on another node when one does not answer), SIGKILL of the learning node hands
//! the lease to another node within 2 × `lease_seconds`, SIGKILL of a NATS server does not stop
//! ingest, and a learner stopped (SIGSTOP) past its lease steps down when it runs again: its
//! lease writes are refused (fencing) and it serves the new learner's snapshots. After each
//! fault, once the stream is drained, the learner has learned exactly the acknowledged samples:
//! none lost, none twice.
use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::batch_json;
use crate::support::nats::{nats_server, node_env, FfdNode, NatsServer};

/// `cluster.lease_seconds` of the nodes.
const LEASE: f64 = 1.5;
/// Samples per request.
const BATCH: usize = 10;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

struct Cluster {
    nats: Vec<NatsServer>,
    nodes: Vec<Option<FfdNode>>,
    urls: Vec<String>,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn env(&self, i: usize) -> Vec<(String, String)> {
        // Each node lists its "own" server first.
        let urls: Vec<&str> = (0..3).map(|k| self.urls[(i + k) % 3].as_str()).collect();
        node_env(&urls, NODES[i], 3, LEASE)
    }

    fn start_node(&mut self, i: usize) {
        let node = FfdNode::start(NODES[i], &self.env(i));
        self.nodes[i] = Some(node);
    }

    fn node(&self, i: usize) -> &FfdNode {
        self.nodes[i].as_ref().expect("the node runs")
    }

    /// Every log, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in self.nodes.iter().flatten() {
            out.push_str(&format!("===== {} =====\n{}\n", n.name, n.logs()));
        }
        for (i, s) in self.nats.iter().enumerate() {
            out.push_str(&format!("===== nats n{} =====\n{}\n", i + 1, s.logs()));
        }
        out
    }

    async fn models(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for n in &self.nodes {
            out.push(match n {
                Some(n) => n.model(&self.client).await,
                None => serde_json::Value::Null,
            });
        }
        out
    }

    /// Polls every node until `done` holds for their `/v1/model`s; fails after `within`.
    async fn wait(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> (Vec<serde_json::Value>, Duration) {
        let started = Instant::now();
        loop {
            let models = self.models().await;
            if done(&models) {
                return (models, started.elapsed());
            }
            if started.elapsed() > within {
                panic!(
                    "timed out after {within:?} waiting for {what}; /v1/model: {models:#?}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The index of the node that holds the lease and learns.
    async fn learner(&self) -> usize {
        let (models, _) = self
            .wait("a learner", Duration::from_secs(30), |m| {
                m.iter()
                    .filter(|m| m["cluster"]["role"] == "learner")
                    .count()
                    == 1
            })
            .await;
        models
            .iter()
            .position(|m| m["cluster"]["role"] == "learner")
            .expect("one learner")
    }

    /// Waits until the learner has learned exactly `acked` samples and its snapshot is served
    /// by the others, then checks that nothing more arrives.
    async fn drained(&self, acked: u64) {
        self.wait(
            &format!("{acked} acknowledged samples learned"),
            Duration::from_secs(60),
            |m| {
                m.iter().any(|m| {
                    m["cluster"]["role"] == "learner"
                        && m["samples_learned"].as_u64() >= Some(acked)
                })
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let models = self.models().await;
        let learner = models
            .iter()
            .find(|m| m["cluster"]["role"] == "learner")
            .unwrap_or_else(|| panic!("no learner: {models:#?}"));
        assert_eq!(
            learner["samples_learned"].as_u64(),
            Some(acked),
            "exactly the acknowledged samples are learned: {learner}\n{}",
            self.logs()
        );
    }
}

async fn start_cluster() -> Option<Cluster> {
    let bin = nats_server()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::cluster(&bin, dir.path());
    let urls = nats.iter().map(|s| s.url.clone()).collect();
    let mut c = Cluster {
        nats,
        nodes: vec![None, None, None],
        urls,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client"),
        _dir: dir,
    };
    for i in 0..3 {
        c.start_node(i);
    }
    Some(c)
}

/// What the load clients did.
#[derive(Default)]
struct Load {
    /// Samples acknowledged (202).
    acked: AtomicU64,
    /// Set to stop after the current request is acknowledged.
    stop: AtomicBool,
}

/// One client of load phase `phase`: requests of `BATCH` samples, each retried with its key
/// until acknowledged, on the next node when one does not answer. Keys are unique across
/// phases: a key used again within two minutes is a retry, acknowledged with the first
/// sequence and not stored again.
async fn client(phase: usize, id: usize, urls: Vec<String>, load: Arc<Load>) {
    let data = support::mnist_small();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    let mut target = id;
    let mut n = 0usize;
    while !load.stop.load(Ordering::SeqCst) {
        let start = (phase * 300 + id * 1000 + n * BATCH) % (data.train.len() - BATCH);
        let body = batch_json(&data.train, start..start + BATCH);
        let key = format!("phase-{phase}-client-{id}-{n}");
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < give_up, "request {key} never acknowledged");
            let r = http
                .post(format!("{}/learn", urls[target % urls.len()]))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 202 => {
                    load.acked.fetch_add(BATCH as u64, Ordering::SeqCst);
                    break;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    assert!(matches!(status, 429 | 503), "unexpected {status} for {key}");
                }
                // A node that does not answer: the same request, with its key, to the next.
                Err(_) => target += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n += 1;
    }
}

fn start_load(phase: usize, urls: &[String]) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let tasks = (0..3)
        .map(|id| tokio::spawn(client(phase, id, urls.to_vec(), Arc::clone(&load))))
        .collect();
    (load, tasks)
}

async fn stop_load(load: &Load, tasks: Vec<tokio::task::JoinHandle<()>>) -> u64 {
    load.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("a client task does not panic");
    }
    load.acked.load(Ordering::SeqCst)
}

/// Waits until the clients have `more` samples acknowledged beyond now; returns how long.
async fn ingest_goes_on(
    load: &Load,
    more: u64,
    within: Duration,
    what: &str,
    c: &Cluster,
) -> Duration {
    let from = load.acked.load(Ordering::SeqCst);
    let started = Instant::now();
    while load.acked.load(Ordering::SeqCst) < from + more {
        if started.elapsed() > within {
            panic!(
                "ingest stalled {what}: {} of {more} samples acknowledged in {within:?}\n{}",
                load.acked.load(Ordering::SeqCst) - from,
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_learn_once_through_learner_and_nats_failures() {
    let Some(mut c) = start_cluster().await else {
        return;
    };
    let node_urls: Vec<String> = c.nodes.iter().flatten().map(|n| n.url.clone()).collect();
    let learner = c.learner().await;

    // /learn on a replica, /classify on the third node: served within 2 s.
    let (via, reader) = ((learner + 1) % 3, (learner + 2) % 3);
    let data = support::mnist_small();
    let r = c
        .client
        .post(format!("{}/learn", c.node(via).url))
        .json(&batch_json(&data.train, 0..BATCH))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 202, "{}", c.logs());
    let sent = Instant::now();
    let (_, took) = c
        .wait(
            "the reader to serve the sample",
            Duration::from_secs(2),
            |m| m[reader]["snapshot_samples_learned"].as_u64() >= Some(BATCH as u64),
        )
        .await;
    let r = c
        .client
        .post(format!("{}/classify", c.node(reader).url))
        .json(&serde_json::json!({"features": data.test.sample(0).0}))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 200);
    eprintln!(
        "replica staleness after one /learn: {took:?} (sent {:?} ago)",
        sent.elapsed()
    );
    let mut acked_total = BATCH as u64;

    // SIGKILL the learner under load, twice; each time another node holds the lease within
    // 2 × lease_seconds, ingest goes on, and after draining nothing is lost or doubled.
    for cycle in 0..2 {
        let (load, tasks) = start_load(cycle, &node_urls);
        ingest_goes_on(&load, 200, Duration::from_secs(10), "before the kill", &c).await;
        let learner = c.learner().await;
        c.nodes[learner].as_mut().expect("runs").kill_9();
        let killed = Instant::now();
        let (_, took) = c
            .wait(
                "another node to hold the lease",
                Duration::from_secs_f64(2.0 * LEASE),
                |m| {
                    m.iter().enumerate().any(|(i, m)| {
                        i != learner
                            && matches!(m["cluster"]["role"].as_str(), Some("starting" | "learner"))
                    })
                },
            )
            .await;
        eprintln!("cycle {cycle}: lease taken over {took:?} after SIGKILL");
        ingest_goes_on(
            &load,
            200,
            Duration::from_secs(10),
            "after the learner's kill",
            &c,
        )
        .await;
        eprintln!(
            "cycle {cycle}: learning again {:?} after SIGKILL",
            killed.elapsed()
        );
        acked_total += stop_load(&load, tasks).await;
        c.drained(acked_total).await;
        c.start_node(learner);
    }

    // SIGKILL one NATS server under load: ingest goes on through the other two.
    let (load, tasks) = start_load(2, &node_urls);
    ingest_goes_on(
        &load,
        200,
        Duration::from_secs(10),
        "before the NATS kill",
        &c,
    )
    .await;
    c.nats[0].kill();
    let took = ingest_goes_on(
        &load,
        200,
        Duration::from_secs(10),
        "after a NATS server's kill",
        &c,
    )
    .await;
    eprintln!("200 samples acknowledged {took:?} after a NATS server's SIGKILL");
    acked_total += stop_load(&load, tasks).await;
    c.drained(acked_total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_stopped_past_its_lease_steps_down_and_cannot_write() {
    let Some(c) = start_cluster().await else {
        return;
    };
    let node_urls: Vec<String> = c.nodes.iter().flatten().map(|n| n.url.clone()).collect();
    let (load, tasks) = start_load(0, &node_urls);
    ingest_goes_on(&load, 200, Duration::from_secs(10), "at start", &c).await;
    let stopped = c.learner().await;
    c.node(stopped).signal(libc::SIGSTOP);
    c.wait(
        "another learner",
        Duration::from_secs_f64(2.0 * LEASE + 1.0),
        |m| {
            m.iter()
                .enumerate()
                .any(|(i, m)| i != stopped && m["cluster"]["role"] == "learner")
        },
    )
    .await;
    ingest_goes_on(
        &load,
        200,
        Duration::from_secs(10),
        "while the old learner is stopped",
        &c,
    )
    .await;
    tokio::time::sleep(Duration::from_secs_f64(LEASE)).await;
    c.node(stopped).signal(libc::SIGCONT);
    // It runs again: its next lease write is refused, and it serves as a replica.
    let (models, _) = c
        .wait(
            "the old learner to step down",
            Duration::from_secs_f64(2.0 * LEASE),
            |m| m[stopped]["cluster"]["role"] == "replica",
        )
        .await;
    let learner = models
        .iter()
        .position(|m| m["cluster"]["role"] == "learner")
        .expect("one learner");
    assert_ne!(learner, stopped);
    let scrape = c.node(stopped).metrics(&c.client).await;
    let fenced = support::metric(&scrape, "ffd_cluster_fenced_writes_total").unwrap_or(0.0);
    assert!(
        fenced >= 1.0,
        "the deposed learner's writes are refused: {fenced}"
    );
    // It follows the new learner.
    c.wait(
        "the old learner to serve the new one's snapshots",
        Duration::from_secs(5),
        |m| m[stopped]["cluster"]["learner"] == m[learner]["cluster"]["node"],
    )
    .await;
    let acked = stop_load(&load, tasks).await;
    c.drained(acked).await;
    let models = c.models().await;
    assert_eq!(
        models
            .iter()
            .filter(|m| m["cluster"]["role"] == "learner")
            .count(),
        1,
        "{models:#?}"
    );
}
