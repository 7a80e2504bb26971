//! `deploy/docker-compose.cluster.yml` brought up for real: three NATS containers (the stand-in
//! built from Debian's `nats-server` package, since the test machines reach no registry) and
//! three ffd containers on the project's private network. Under load from three clients, each
//! retrying a failed request on the next node with the same `Idempotency-Key`: the learner's
//! container is killed (`docker kill`), then the next learner is cut off the network (`docker
//! network disconnect`) and later reconnected. Another node holds the lease within
//! 2 × `lease_seconds` each time, the reconnected node steps down (fencing), one node learns at
//! the end, and it has learned every acknowledged sample exactly once. Skipped with one line
//! where Docker or Compose is missing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::docker::{
    compose_command, local_base_images, unique_name, wait_for_200, ComposeProject, Docker,
    LEARN_TOKEN,
};
use crate::support::{batch_json, mnist_small};

/// The nodes' lease: short, so that two failovers fit in a test.
const LEASE_SECONDS: f64 = 2.0;
/// Samples per request.
const BATCH: usize = 20;
const NODES: [&str; 3] = ["ffd-1", "ffd-2", "ffd-3"];

/// The cluster's compose project: the repository's cluster file, the override for machines
/// without a registry (the NATS stand-in), and one of this test's (the image it built, a short
/// lease, a small network), on host ports chosen free.
struct Cluster {
    compose: ComposeProject,
    ports: [u16; 3],
}

impl Cluster {
    fn run(&self, args: &[&str]) -> String {
        self.compose.run(args)
    }

    /// The container of `service`.
    fn container(&self, service: &str) -> String {
        self.run(&["ps", "--quiet", service])
    }

    fn url(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[node])
    }

    /// Every node's log, for a failure message.
    fn logs(&self) -> String {
        let out = self.compose.output(&["logs", "--no-color", "--tail", "60"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A loopback port free right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// `/v1/model` of node `i`, or `Null` when it does not answer.
async fn model(client: &reqwest::Client, cluster: &Cluster, i: usize) -> serde_json::Value {
    let url = format!("{}/v1/model", cluster.url(i));
    match client.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// The nodes (among `among`) that say they are the learner.
async fn learners(client: &reqwest::Client, cluster: &Cluster, among: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &i in among {
        if model(client, cluster, i).await["cluster"]["role"] == "learner" {
            out.push(i);
        }
    }
    out
}

/// Waits until exactly one node of `among` is the learner; returns it and how long it took.
async fn wait_one_learner(
    client: &reqwest::Client,
    cluster: &Cluster,
    among: &[usize],
    within: Duration,
) -> (usize, Duration) {
    let started = Instant::now();
    loop {
        let found = learners(client, cluster, among).await;
        if let [one] = found[..] {
            return (one, started.elapsed());
        }
        assert!(
            started.elapsed() < within,
            "no single learner among {among:?} within {within:?} (learners: {found:?})\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One client: requests of `BATCH` samples, each with a key of its own, sent to the nodes in
/// turn; a request that fails (an error, a 503, no answer) is sent again with the same key to
/// the next node until one acknowledges it. Counts each acknowledged request's samples once.
async fn client_loop(id: usize, urls: Vec<String>, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let data = mnist_small();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client");
    let mut node = id;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let start = (id * 1000 + n * BATCH) % (data.train.len() - BATCH);
        let body = batch_json(&data.train, start..start + BATCH);
        let key = format!("client-{id}-request-{n}");
        loop {
            let sent = client
                .post(format!("{}/learn", urls[node % urls.len()]))
                .bearer_auth(LEARN_TOKEN)
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await;
            node += 1;
            match sent {
                Ok(r) if r.status() == 202 => {
                    acked.fetch_add(BATCH as u64, Ordering::SeqCst);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_in_containers_loses_nothing_across_a_kill_and_a_partition() {
    let Some(docker) = Docker::find() else { return };
    let Some(command) = compose_command(&docker) else {
        return;
    };
    let image = docker.image();
    if let Err(e) = local_base_images(&["--nats"]) {
        panic!("{e}");
    }
    let ports = [free_port(), free_port(), free_port()];
    let mut text = String::from("services:\n");
    for name in NODES {
        text.push_str(&format!(
            "  {name}:\n    image: {image}\n    environment:\n      FFD_CLUSTER__LEASE_SECONDS: \"{LEASE_SECONDS}\"\n      FFD_NETWORK__HIDDEN: \"[32, 32]\"\n      FFD_LEARNER__THREADS: \"1\"\n      FFD_DURABILITY__CHECKPOINT_EVERY_SECONDS: \"0.5\"\n"
        ));
    }
    let mut env: Vec<(String, String)> = vec![("FFD_LEARN_TOKEN".into(), LEARN_TOKEN.into())];
    for (i, port) in ports.iter().enumerate() {
        env.push((format!("HOST_PORT_FFD_{}", i + 1), port.to_string()));
    }
    let cluster = Cluster {
        compose: ComposeProject::new(
            command,
            unique_name("cluster").replace('-', ""),
            &[
                "deploy/docker-compose.cluster.yml",
                "deploy/docker/compose.cluster.local-images.yml",
            ],
            &text,
            env,
        ),
        ports,
    };
    cluster.run(&["up", "--detach", "--no-build"]);

    let client = reqwest::Client::new();
    for i in 0..3 {
        wait_for_200(
            &client,
            &format!("{}/readyz", cluster.url(i)),
            Duration::from_secs(90),
        )
        .await;
    }
    let lease = Duration::from_secs_f64(LEASE_SECONDS);
    let (first, _) = wait_one_learner(&client, &cluster, &[0, 1, 2], 10 * lease).await;

    // Three clients, each retrying on the next node.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let urls: Vec<String> = (0..3).map(|i| cluster.url(i)).collect();
    let clients: Vec<_> = (0..3)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                urls.clone(),
                Arc::clone(&stop),
                Arc::clone(&acked),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(acked.load(Ordering::SeqCst) > 0, "nothing acknowledged");

    // 1. The learner's container is killed: another holds the lease within 2 × lease.
    docker.run(&["kill", &cluster.container(NODES[first])]);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let (second, took) = wait_one_learner(&client, &cluster, &survivors, 2 * lease).await;
    eprintln!(
        "learner {} killed: {} learns after {took:?}",
        NODES[first], NODES[second]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 2. The new learner is cut off the network: the last node takes over, and once the cut-off
    // node is back it has stepped down: its lease is gone and it cannot write (fencing).
    let network = format!("{}_default", cluster.compose.project());
    let cut = cluster.container(NODES[second]);
    docker.run(&["network", "disconnect", &network, &cut]);
    let third = survivors[usize::from(survivors[0] == second)];
    let (now, took) = wait_one_learner(&client, &cluster, &[third], 2 * lease).await;
    eprintln!(
        "learner {} cut off: {} learns after {took:?}",
        NODES[second], NODES[now]
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    docker.run(&["network", "connect", &network, &cut]);
    tokio::time::sleep(lease).await;

    // 3. Load stops; one learner; every acknowledged sample learned exactly once.
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("a client finishes");
    }
    let acked = acked.load(Ordering::SeqCst);
    let (learner, _) = wait_one_learner(&client, &cluster, &survivors, 10 * lease).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = model(&client, &cluster, learner).await;
        let learned = m["samples_learned"].as_u64().unwrap_or(0);
        if learned >= acked {
            assert_eq!(
                learned, acked,
                "every acknowledged sample learned exactly once: {m}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{learned} of {acked} acknowledged samples learned: {m}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = model(&client, &cluster, second).await;
    assert_ne!(
        back["cluster"]["role"], "learner",
        "the node cut off while it learned stepped down: {back}"
    );
    eprintln!(
        "{acked} samples acknowledged, {acked} learned by {}",
        NODES[learner]
    );
}
