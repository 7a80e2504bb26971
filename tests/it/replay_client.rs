//! `ffd replay` and `ffd healthcheck` against a scripted fake server (axum on 127.0.0.1:0): the
//! training order reaches the server exactly, refused batches are resent until accepted, the
//! summary's numbers follow from what the server answered, and API errors and a stalled learner
//! end the run with a message that says why. The real server is tested in its own files.
use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::json;

use ffd::cli::replay::{replay, training_order, ReplayArgs, ReplaySummary};
use ffd::cli::{Cli, Command};
use ffd::data::idx::Dataset;

/// How the fake server misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Script {
    /// Answer every n-th `/learn` request with 429 (`Retry-After: 1`) instead of queueing it.
    refuse_every: Option<u64>,
    /// Answer every `/learn` with 422 and an API error body.
    reject: bool,
    /// Never advance `samples_learned`.
    stall: bool,
    /// Answer `/healthz` with 503.
    unhealthy: bool,
}

/// What the fake server has seen.
#[derive(Debug, Default)]
struct Fake {
    script: Script,
    /// `(label, checksum of the features)` of every queued sample, in arrival order.
    queued: Vec<(usize, u32)>,
    learn_requests: u64,
    refused: u64,
    /// Starts at 1000 so the client must use differences, not absolute values.
    learned: u64,
}

type Shared = Arc<Mutex<Fake>>;

const LEARNED_AT_START: u64 = 1000;
/// The fake's prequential counters: 10 predictions and 4 right before the run, then 3 of every 4
/// learned samples right.
fn prequential(learned: u64) -> (u64, u64) {
    let during = learned - LEARNED_AT_START;
    (10 + during, 4 + during / 4 * 3)
}

fn checksum(features: &[f32]) -> u32 {
    features
        .iter()
        .fold(0u32, |h, x| h.wrapping_mul(31).wrapping_add(x.to_bits()))
}

/// The fake's classifier: the number of non-zero features, mod 10.
fn fake_label(features: &[f32]) -> usize {
    features.iter().filter(|&&x| x != 0.0).count() % 10
}

#[derive(Deserialize)]
struct Batch {
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    features: Vec<f32>,
    label: Option<usize>,
}

fn lock(fake: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    fake.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn learn(State(fake): State<Shared>, Json(batch): Json<Batch>) -> Response {
    let mut fake = lock(&fake);
    fake.learn_requests += 1;
    if fake.script.reject {
        let body = json!({"error": {"code": "invalid_sample", "message": "sample 0: label is out of range"}});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
    }
    if let Some(n) = fake.script.refuse_every {
        if fake.learn_requests.is_multiple_of(n) {
            fake.refused += 1;
            let body = json!({"error": {"code": "queue_full", "message": "learner queue full"}});
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                Json(body),
            )
                .into_response();
        }
    }
    for s in &batch.samples {
        let label = s.label.expect("the client sends labels to /learn");
        fake.queued.push((label, checksum(&s.features)));
    }
    let body = json!({"accepted": batch.samples.len(), "last_seq": fake.queued.len()});
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// Each poll "learns" up to 250 more queued samples, so the client has to wait for the learner.
async fn model(State(fake): State<Shared>) -> Json<serde_json::Value> {
    let mut fake = lock(&fake);
    let queued = LEARNED_AT_START + fake.queued.len() as u64;
    if !fake.script.stall {
        fake.learned = queued.min(fake.learned + 250);
    }
    Json(json!({
        "samples_learned": fake.learned,
        "queue_depth": queued - fake.learned,
        "model_version": fake.learned / 100,
        "sleep_cycles": fake.learned / 500,
        "layers": [784, 500, 500],
    }))
}

async fn metrics(State(fake): State<Shared>) -> String {
    let (predictions, correct) = prequential(lock(&fake).learned);
    format!(
        "# HELP ffd_prequential_predictions_total Predictions.\n\
         # TYPE ffd_prequential_predictions_total counter\n\
         ffd_prequential_predictions_total {predictions}\n\
         # TYPE ffd_prequential_correct_total counter\n\
         ffd_prequential_correct_total {correct}\n\
         ffd_prequential_accuracy 0.5\n"
    )
}

async fn classify(Json(batch): Json<Batch>) -> Json<serde_json::Value> {
    let results: Vec<_> = batch
        .samples
        .iter()
        .map(|s| json!({"label": fake_label(&s.features), "scores": [0.0], "model_version": 7}))
        .collect();
    Json(json!({ "results": results }))
}

async fn healthz(State(fake): State<Shared>) -> StatusCode {
    if lock(&fake).script.unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Starts a fake server on its own thread and runtime; returns its address and state.
fn start_fake(script: Script) -> (SocketAddr, Shared) {
    let fake: Shared = Arc::new(Mutex::new(Fake {
        script,
        learned: LEARNED_AT_START,
        ..Fake::default()
    }));
    let app = Router::new()
        .route("/learn", post(learn))
        .route("/classify", post(classify))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::clone(&fake));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("fake server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            axum::serve(listener, app).await.expect("fake server runs");
        });
    });
    (addr, fake)
}

fn mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-small")
}

fn replay_args(addr: SocketAddr, extra: &[&str]) -> ReplayArgs {
    let url = format!("http://{addr}/");
    let mnist = mnist_dir();
    let mut argv = vec![
        "ffd",
        "replay",
        "--mnist",
        mnist.to_str().expect("UTF-8 path"),
        "--url",
        &url,
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("valid arguments").command {
        Command::Replay(args) => args,
        other => panic!("parsed {other:?}"),
    }
}

/// Test error the fake classifier must get on the first `n` test samples.
fn expected_test_error(test: &Dataset, n: usize) -> f64 {
    let wrong = (0..n)
        .filter(|&i| {
            let (x, y) = test.sample(i);
            fake_label(x) != y
        })
        .count();
    wrong as f64 / n as f64
}

fn expected_queue(train: &Dataset, limit: usize, epochs: usize, seed: u64) -> Vec<(usize, u32)> {
    training_order(limit, epochs, seed, true)
        .into_iter()
        .map(|i| {
            let (x, y) = train.sample(i);
            (y, checksum(x))
        })
        .collect()
}

/// With one request in flight the server receives `ffd train`'s order exactly, even though
/// every third request is refused and resent; the summary's numbers follow from the answers.
#[test]
fn replay_sends_train_order_resends_refused_batches_and_summarises() {
    let (addr, fake) = start_fake(Script {
        refuse_every: Some(3),
        ..Script::default()
    });
    let args = replay_args(
        addr,
        &[
            "--limit",
            "300",
            "--test-limit",
            "170",
            "--epochs",
            "2",
            "--batch",
            "32",
            "--concurrency",
            "1",
            "--seed",
            "5",
        ],
    );
    let started = std::time::Instant::now();
    let summary: ReplaySummary = replay(&args).expect("replay succeeds");
    let elapsed = started.elapsed();

    let mnist = support::mnist_small();
    let fake = lock(&fake);
    assert_eq!(fake.queued, expected_queue(&mnist.train, 300, 2, 5));
    // 600 samples in batches of 32: 19 accepted requests, plus one refusal per two accepted.
    assert!(fake.refused >= 9, "refused {}", fake.refused);
    assert_eq!(summary.retries, fake.refused);
    // Retry-After: 1 only caps the backoff: nine refusals did not cost nine seconds.
    assert!(elapsed.as_secs_f64() < 5.0, "{elapsed:?}");

    assert_eq!(summary.samples_sent, 600);
    assert_eq!(summary.train_samples, 300);
    assert_eq!(summary.last_seq, Some(600));
    assert_eq!(summary.test_samples, 170);
    let error = summary.test_error.expect("a test error");
    assert_eq!(error, expected_test_error(&mnist.test, 170));
    assert_eq!(summary.test_accuracy, Some(1.0 - error));
    let (p0, c0) = prequential(LEARNED_AT_START);
    let (p1, c1) = prequential(LEARNED_AT_START + 600);
    assert_eq!(summary.prequential_predictions, Some(p1 - p0));
    assert_eq!(
        summary.prequential_accuracy,
        Some((c1 - c0) as f64 / (p1 - p0) as f64)
    );
    assert_eq!(summary.model_version, Some(7));
    assert_eq!(summary.sleep_cycles, Some(1600 / 500 - 1000 / 500));
    assert!(summary.ingest_seconds >= summary.send_seconds);
    assert!(summary.ingest_samples_per_second > 0.0);
    assert_eq!(summary.url, format!("http://{addr}"));
    assert_eq!(summary.seed, Some(5));

    // The printed form carries the documented keys.
    let printed = serde_json::to_value(&summary).expect("summary serialises");
    for key in [
        "test_error",
        "test_accuracy",
        "samples_sent",
        "ingest_seconds",
        "ingest_samples_per_second",
        "prequential_accuracy",
        "classify_seconds",
        "test_samples",
        "url",
    ] {
        assert!(printed.get(key).is_some(), "missing {key} in {printed}");
    }
}

/// With several requests in flight every sample still arrives exactly once.
#[test]
fn concurrent_replay_sends_every_sample_once() {
    let (addr, fake) = start_fake(Script {
        refuse_every: Some(4),
        ..Script::default()
    });
    let args = replay_args(
        addr,
        &[
            "--limit",
            "500",
            "--test-limit",
            "0",
            "--batch",
            "25",
            "--concurrency",
            "4",
        ],
    );
    let summary = replay(&args).expect("replay succeeds");
    let mnist = support::mnist_small();
    let mut queued = lock(&fake).queued.clone();
    let mut expected = expected_queue(&mnist.train, 500, 1, 1);
    queued.sort_unstable();
    expected.sort_unstable();
    assert_eq!(queued, expected);
    assert_eq!(summary.samples_sent, 500);
    assert_eq!(summary.test_samples, 0);
    assert_eq!(summary.test_error, None);
}

/// A 4xx from `/learn` ends the run at once with the server's code and message.
#[test]
fn api_error_ends_the_run_with_the_servers_message() {
    let (addr, fake) = start_fake(Script {
        reject: true,
        ..Script::default()
    });
    let args = replay_args(addr, &["--limit", "100", "--concurrency", "1"]);
    let message = format!("{:#}", replay(&args).expect_err("the server rejects"));
    assert!(message.contains("422 Unprocessable Entity"), "{message}");
    assert!(
        message.contains("invalid_sample: sample 0: label is out of range"),
        "{message}"
    );
    assert!(message.contains("/learn"), "{message}");
    assert_eq!(lock(&fake).learn_requests, 1);
}

/// A learner that never advances `samples_learned` ends the run after `--timeout`.
#[test]
fn stalled_learner_times_out_with_the_counts() {
    let (addr, _fake) = start_fake(Script {
        stall: true,
        ..Script::default()
    });
    let args = replay_args(addr, &["--limit", "50", "--timeout", "1"]);
    let message = format!("{:#}", replay(&args).expect_err("the learner stalls"));
    assert!(message.contains("learned nothing for 1 s"), "{message}");
    assert!(message.contains("expected 1050"), "{message}");
    assert!(message.contains("queue depth 50"), "{message}");
}

/// No server at the URL: a message that says so, before any data is sent.
#[test]
fn unreachable_server_is_reported() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let args = replay_args(addr, &["--limit", "10"]);
    let message = format!("{:#}", replay(&args).expect_err("nothing listens"));
    assert!(
        message.contains("cannot read the server's state (is `ffd serve` running at"),
        "{message}"
    );
}

fn healthcheck(url: &str) -> anyhow::Result<()> {
    match Cli::try_parse_from(["ffd", "healthcheck", "--url", url])
        .expect("valid arguments")
        .command
    {
        Command::Healthcheck(args) => ffd::cli::healthcheck::run(args),
        other => panic!("parsed {other:?}"),
    }
}

/// `ffd healthcheck` succeeds on 200 only.
#[test]
fn healthcheck_needs_a_200() {
    let (healthy, _) = start_fake(Script::default());
    healthcheck(&format!("http://{healthy}")).expect("healthy server");
    let (unhealthy, _) = start_fake(Script {
        unhealthy: true,
        ..Script::default()
    });
    let message = format!(
        "{:#}",
        healthcheck(&format!("http://{unhealthy}")).expect_err("503")
    );
    assert!(message.contains("503 Service Unavailable"), "{message}");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let message = format!(
        "{:#}",
        healthcheck(&format!("http://127.0.0.1:{port}")).expect_err("nothing listens")
    );
    assert!(message.contains("/healthz: no answer"), "{message}");
}
