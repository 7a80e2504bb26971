//! The cluster backend with one NATS server and one `ffd serve` node (`cluster.backend =
//! "nats"`): `/learn` is acknowledged with the stream's sequence and learned through the
//! stream, and `/classify` then answers exactly what the engine trained in-process on the same
//! samples answers; retries with the same `Idempotency-Key` are acknowledged with the first
//! sequence and learned once; a bad key is refused with nothing learned; a node killed with
//! SIGKILL and started again resumes from its checkpoint with every acknowledged sample learned
//! exactly once; with NATS gone `/learn` answers 503 `cluster_unavailable` with `Retry-After`
//! (never 202) while `/classify` keeps serving and `/readyz` says why; and a node that cannot
//! reach NATS at start exits with an error naming the URL.
use crate::support;

use std::time::{Duration, Instant};

use ffd::ff::{Model, Trainer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::support::batch_json;
use crate::support::nats::{free_port, nats_server, node_env, FfdNode, NatsServer};

const TRAIN: usize = 3_000;
const BATCH: usize = 100;
const TEST: usize = 200;

/// The node's environment: one NATS server, a 1 s lease, live weights served and sleeps by
/// count only (so the served model can be compared bit for bit with the engine's).
fn env(url: &str) -> Vec<(String, String)> {
    let mut env = node_env(&[url], "solo-node", 1, 1.0);
    env.push(("FFD_TRAIN__SLEEP_EVERY_SECONDS".into(), "0".into()));
    env.push(("FFD_AVERAGE__AVERAGE_DECAY".into(), "0".into()));
    env
}

/// The engine trained in-process on samples `0..n` in order, with the node's configuration.
fn in_process(data: &ffd::data::idx::Dataset, n: usize) -> Model {
    let mut config = support::small_config();
    config.train.sleep_every_seconds = 0.0;
    let model = Model::new(
        config.network.clone(),
        &mut StdRng::seed_from_u64(config.seed),
    )
    .expect("valid config");
    let mut trainer = Trainer::new(model, config.train.clone(), config.seed).expect("valid");
    for i in 0..n {
        let (x, y) = data.sample(i);
        if trainer.learn_unchecked(x, y, true).sleep_due {
            trainer.sleep();
        }
    }
    trainer.into_model()
}

async fn wait_for(
    node: &FfdNode,
    client: &reqwest::Client,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + support::WAIT;
    loop {
        let m = node.model(client).await;
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; /v1/model: {m}\nnode log:\n{}",
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn learn(
    client: &reqwest::Client,
    node: &FfdNode,
    body: &serde_json::Value,
    key: Option<&str>,
) -> reqwest::Response {
    let mut request = client.post(format!("{}/learn", node.url)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("the node answers")
}

/// `/classify` of the first `TEST` test samples: each one's label and scores.
async fn classify(
    client: &reqwest::Client,
    node: &FfdNode,
    data: &ffd::data::idx::Dataset,
) -> Vec<(usize, Vec<f32>)> {
    let samples: Vec<serde_json::Value> = (0..TEST)
        .map(|i| json!({ "features": data.sample(i).0 }))
        .collect();
    let r = classify_batch(client, node, samples).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("JSON");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let scores = r["scores"]
                .as_array()
                .expect("scores")
                .iter()
                .map(|v| v.as_f64().expect("a number") as f32)
                .collect();
            (r["label"].as_u64().expect("label") as usize, scores)
        })
        .collect()
}

/// What `reference` answers for the same samples (the batched path `/classify` uses).
fn engine_answers(reference: &Model, data: &ffd::data::idx::Dataset) -> Vec<(usize, Vec<f32>)> {
    let features: Vec<f32> = (0..TEST)
        .flat_map(|i| data.sample(i).0.iter().copied())
        .collect();
    reference
        .classify_batch(&features, support::small_config().train.classifier)
        .expect("valid features")
        .into_iter()
        .map(|s| (s.label, s.scores))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_through_the_stream_and_classifies_like_the_engine() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::single(&bin, dir.path());
    nats.wait_ready();
    let node = FfdNode::start("solo-node", &env(&nats.url));
    let client = reqwest::Client::new();
    let data = support::mnist_small();

    let mut seqs = Vec::new();
    for start in (0..TRAIN).step_by(BATCH) {
        let r = learn(
            &client,
            &node,
            &batch_json(&data.train, start..start + BATCH),
            None,
        )
        .await;
        assert_eq!(r.status(), 202, "node log:\n{}", node.logs());
        let body: serde_json::Value = r.json().await.expect("JSON");
        assert_eq!(body["accepted"], BATCH);
        seqs.push(body["last_seq"].as_u64().expect("last_seq"));
    }
    // One stream message per request: the sequences are the stream's, 1, 2, 3, ...
    let expected: Vec<u64> = (1..=(TRAIN / BATCH) as u64).collect();
    assert_eq!(seqs, expected);

    let m = wait_for(&node, &client, "every sample learned", |m| {
        m["samples_learned"] == TRAIN && m["snapshot_samples_learned"] == TRAIN
    })
    .await;
    assert_eq!(m["cluster"]["role"], "learner", "{m}");
    assert_eq!(m["cluster"]["node"], "solo-node");
    // The status page shows the same.
    let status: serde_json::Value = client
        .get(format!("{}/v1/status", node.url))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["cluster"]["role"], "learner", "{status}");
    assert_eq!(status["cluster"]["learner"], "solo-node");
    assert_eq!(m["cluster"]["learned_seq"], (TRAIN / BATCH) as u64);
    assert_eq!(m["learned_seq"], (TRAIN / BATCH) as u64);

    let served = classify(&client, &node, &data.test).await;
    let engine = engine_answers(&in_process(&data.train, TRAIN), &data.test);
    assert!(
        served == engine,
        "the served model is the engine's on the same stream, bit for bit"
    );
    let correct = (0..TEST)
        .filter(|&i| served[i].0 == data.test.sample(i).1)
        .count();
    assert!(
        correct >= TEST / 5,
        "{correct}/{TEST} right: above chance (10 %) expected"
    );

    let metrics = node.metrics(&client).await;
    assert_eq!(support::metric(&metrics, "ffd_cluster_role"), Some(2.0));
    assert_eq!(
        support::metric(&metrics, "ffd_cluster_publish_ack_seconds_count"),
        Some((TRAIN / BATCH) as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_one_idempotency_key_are_learned_once() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::single(&bin, dir.path());
    nats.wait_ready();
    let node = FfdNode::start("solo-node", &env(&nats.url));
    let client = reqwest::Client::new();
    let data = support::mnist_small();
    let a = batch_json(&data.train, 0..10);
    let b = batch_json(&data.train, 10..20);

    let mut first = None;
    for _ in 0..3 {
        let r = learn(&client, &node, &a, Some("order-17")).await;
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.expect("JSON");
        let seq = body["last_seq"].as_u64().expect("last_seq");
        assert_eq!(
            *first.get_or_insert(seq),
            seq,
            "a retry is acknowledged with the first sequence"
        );
    }
    let r = learn(&client, &node, &b, Some("order-18")).await;
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(body["last_seq"].as_u64(), first.map(|s| s + 1));

    for bad in ["", "has space", &"k".repeat(129)] {
        let r = learn(&client, &node, &b, Some(bad)).await;
        let (status, code, _) = support::error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_idempotency_key"),
            "key {bad:?}"
        );
    }

    wait_for(&node, &client, "both requests learned", |m| {
        m["samples_learned"] == 20
    })
    .await;
    // Nothing else arrives: three retries and three refused requests learned nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = node.model(&client).await;
    assert_eq!(m["samples_learned"], 20, "{m}");
    assert_eq!(m["cluster"]["learned_seq"], 2, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_resumes_from_its_checkpoint_and_learns_each_sample_once() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::single(&bin, dir.path());
    nats.wait_ready();
    let client = reqwest::Client::new();
    let data = support::mnist_small();
    let mut node = FfdNode::start("solo-node", &env(&nats.url));
    for start in (0..500).step_by(BATCH) {
        let r = learn(
            &client,
            &node,
            &batch_json(&data.train, start..start + BATCH),
            None,
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    // A checkpoint (every 0.5 s) covers some of it; the rest is learned again from the stream.
    wait_for(&node, &client, "500 learned", |m| {
        m["samples_learned"] == 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for start in (500..TRAIN).step_by(BATCH) {
        let r = learn(
            &client,
            &node,
            &batch_json(&data.train, start..start + BATCH),
            None,
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    node.kill_9();

    // Same node id: it waits out its own lease like any other node.
    let node = FfdNode::start("solo-node", &env(&nats.url));
    let m = wait_for(
        &node,
        &client,
        "every sample learned after the restart",
        |m| m["samples_learned"] == TRAIN && m["cluster"]["role"] == "learner",
    )
    .await;
    assert_eq!(m["cluster"]["learned_seq"], (TRAIN / BATCH) as u64);
    let served = classify(&client, &node, &data.test).await;
    let engine = engine_answers(&in_process(&data.train, TRAIN), &data.test);
    assert!(
        served == engine,
        "resumed exactly: no sample lost or learned twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_learn_is_refused_and_classify_still_serves() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::single(&bin, dir.path());
    nats.wait_ready();
    let node = FfdNode::start("solo-node", &env(&nats.url));
    let client = reqwest::Client::new();
    let data = support::mnist_small();
    let r = learn(&client, &node, &batch_json(&data.train, 0..100), None).await;
    assert_eq!(r.status(), 202);
    wait_for(&node, &client, "100 learned", |m| {
        m["snapshot_samples_learned"] == 100
    })
    .await;
    let before = classify(&client, &node, &data.test).await;

    nats.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = learn(&client, &node, &batch_json(&data.train, 100..110), None).await;
        let status = r.status().as_u16();
        assert_ne!(status, 202, "a sample acknowledged without NATS");
        if status == 503 {
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let (_, code, message) = support::error_code(r).await;
            assert_eq!(code, "cluster_unavailable", "{message}");
            assert_eq!(retry.as_deref(), Some("1"));
            break;
        }
        assert!(Instant::now() < deadline, "never refused: {status}");
    }
    let ready = client
        .get(format!("{}/readyz", node.url))
        .send()
        .await
        .expect("answers");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NATS")),
        "{body}"
    );
    assert!(
        classify(&client, &node, &data.test).await == before,
        "the last snapshot is served"
    );
    // Features kept for a delayed label live in NATS: without it they cannot be kept or
    // claimed, and both requests say so rather than answer 200 and lose the id.
    let r = client
        .post(format!("{}/classify", node.url))
        .json(&json!({"features": data.test.sample(0).0, "id": "req-1"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 503);
    assert_eq!(support::error_code(r).await.1, "cluster_unavailable");
    let r = learn(&client, &node, &json!({"id": "req-1", "label": 3}), None).await;
    assert_eq!(r.status(), 503);
    assert_eq!(support::error_code(r).await.1, "cluster_unavailable");
    let m = node.model(&client).await;
    assert_eq!(m["samples_learned"], 100, "{m}");
}

/// `/classify {features, id}` on one node, then `/learn {id, label}`.
async fn keep(client: &reqwest::Client, node: &FfdNode, ids: &[(String, &[f32])]) {
    let samples: Vec<serde_json::Value> = ids
        .iter()
        .map(|(id, features)| json!({"features": features, "id": id}))
        .collect();
    let r = classify_batch(client, node, samples).await;
    assert_eq!(r.status(), 200, "node log:\n{}", node.logs());
}

/// `POST /classify {samples}`.
async fn classify_batch(
    client: &reqwest::Client,
    node: &FfdNode,
    samples: Vec<serde_json::Value>,
) -> reqwest::Response {
    client
        .post(format!("{}/classify", node.url))
        .json(&json!({ "samples": samples }))
        .send()
        .await
        .expect("the node answers")
}

fn labels(ids: &[(String, usize)]) -> serde_json::Value {
    let samples: Vec<serde_json::Value> = ids
        .iter()
        .map(|(id, label)| json!({"id": id, "label": label}))
        .collect();
    json!({ "samples": samples })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_label_reaches_any_node_and_is_learned_once() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nats = NatsServer::single(&bin, dir.path());
    nats.wait_ready();
    let with_ttl = |name: &str| {
        let mut env = env(&nats.url);
        env.retain(|(k, _)| k != "FFD_CLUSTER__NODE");
        env.push(("FFD_CLUSTER__NODE".into(), name.into()));
        env.push(("FFD_PENDING__TTL_SECONDS".into(), "2".into()));
        env
    };
    let a = FfdNode::start("node-a", &with_ttl("node-a"));
    let b = FfdNode::start("node-b", &with_ttl("node-b"));
    let client = reqwest::Client::new();
    let data = support::mnist_small();
    let n = 300;
    let id = |i: usize| format!("req-{i}");

    // Features kept on one node, labelled on the other, in three batches alternating the
    // direction: the learner learns exactly the samples, in order, as if sent inline.
    for (start, (keeper, labeller)) in [(0, (&a, &b)), (100, (&b, &a)), (200, (&a, &b))] {
        let kept: Vec<(String, &[f32])> = (start..start + 100)
            .map(|i| (id(i), data.train.sample(i).0))
            .collect();
        keep(&client, keeper, &kept).await;
        let labelled: Vec<(String, usize)> = (start..start + 100)
            .map(|i| (id(i), data.train.sample(i).1))
            .collect();
        let r = learn(&client, labeller, &labels(&labelled), None).await;
        assert_eq!(r.status(), 202, "node log:\n{}", labeller.logs());
    }

    // A label is taken once, whichever node it reaches.
    let r = learn(&client, &a, &json!({"id": id(0), "label": 1}), None).await;
    assert_eq!(r.status(), 409);
    assert_eq!(support::error_code(r).await.1, "unknown_id");

    // A refused batch gives its ids back: the other node can use them.
    keep(&client, &a, &[("back".to_owned(), data.train.sample(n).0)]).await;
    let bad = json!({"samples": [{"id": "back", "label": 1}, {"features": [0.5], "label": 1}]});
    let r = learn(&client, &a, &bad, None).await;
    assert_eq!(r.status(), 422);
    let r = learn(
        &client,
        &b,
        &json!({"id": "back", "label": data.train.sample(n).1}),
        None,
    )
    .await;
    assert_eq!(r.status(), 202, "the refused batch's id was put back");

    // Two nodes labelling one id at once: exactly one of them learns it.
    keep(
        &client,
        &b,
        &[("race".to_owned(), data.train.sample(n + 1).0)],
    )
    .await;
    let body = json!({"id": "race", "label": data.train.sample(n + 1).1});
    let (ra, rb) = tokio::join!(
        learn(&client, &a, &body, None),
        learn(&client, &b, &body, None)
    );
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409], "one claim wins");

    // An id outlives neither its time to live nor the node that kept it: after 2 s it is gone.
    keep(&client, &a, &[("late".to_owned(), data.train.sample(0).0)]).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let r = learn(&client, &b, &json!({"id": "late", "label": 1}), None).await;
    assert_eq!(r.status(), 409, "expired after pending.ttl_seconds");

    // 300, "back" and "race", in that order of acknowledgement: the served model equals the
    // engine's on the same samples.
    let total = n + 2;
    let learner = if a.model(&client).await["cluster"]["role"] == "learner" {
        &a
    } else {
        &b
    };
    wait_for(learner, &client, "every label learned", |m| {
        m["samples_learned"] == total && m["snapshot_samples_learned"] == total
    })
    .await;
    let served = classify(&client, learner, &data.test).await;
    let mut samples = data.train.clone();
    samples.truncate(n + 2);
    let engine = engine_answers(&in_process(&samples, total), &data.test);
    assert!(served == engine, "the labels' features arrived bit for bit");
}

#[test]
fn a_node_that_cannot_reach_nats_at_start_exits_naming_the_url() {
    // No server is needed for this one, but the cluster tests run together: skip alike.
    if nats_server().is_none() {
        return;
    }
    let url = format!("nats://127.0.0.1:{}", free_port());
    let env = env(&url);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let started = Instant::now();
    let out = support::ffd_serve(&["--listen", "127.0.0.1:0"], &env)
        .output()
        .expect("ffd runs");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&url) && stderr.contains("cannot connect to NATS"),
        "{stderr}"
    );
}
