//! `ffd replay`: streams the MNIST training set to a running server's `/learn`, waits until the
//! server has learned all of it, classifies the test set through `/classify` and prints a JSON
//! summary as the last stdout line (progress and notes go to stderr).
//!
//! The training order is `ffd train`'s (same shuffle, same seed), so an HTTP run is comparable
//! with an offline one. With `--concurrency 1` the server receives exactly that order; with more
//! requests in flight, neighbouring batches may be queued out of order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use clap::Args;
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::client::body::{classify_body, learn_body};
use super::client::exposition::metric_sum;
use super::client::retry::RetryPolicy;
use super::client::wire::ModelSummary;
use super::client::ApiClient;
use crate::data::idx::{load_mnist, Dataset};

/// Arguments of `ffd replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Directory with the four MNIST IDX files (gzipped or raw).
    #[arg(long)]
    pub mnist: PathBuf,
    /// Base URL of the ffd server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Send only the first N training samples (before shuffling, like `ffd train --train-limit`).
    #[arg(long, alias = "train-limit")]
    pub limit: Option<usize>,
    /// Classify only the first N test samples (0: skip the test set).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Samples per request, for /learn and /classify.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Requests in flight at once. 1 keeps the training order exact.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Shuffling seed; the same seed gives the same order as `ffd train --seed`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Send the training set in file order, every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Seconds without progress before giving up: no answer to a request, the server still
    /// refusing a batch with 429, or its `samples_learned` not advancing.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// After a 429, wait exactly the server's Retry-After. By default Retry-After only caps a
    /// short backoff (5 ms, doubling), which keeps a fast learner fed.
    #[arg(long)]
    pub strict_retry_after: bool,
    /// A file holding the server's learn token (default: the `FFD_LEARN_TOKEN` variable).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The JSON summary `ffd replay` prints as its last stdout line.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// Fraction of test samples classified wrongly (`null` without test samples).
    pub test_error: Option<f64>,
    /// `1 - test_error`.
    pub test_accuracy: Option<f64>,
    /// Training samples sent and accepted (`epochs * train_samples`).
    pub samples_sent: u64,
    /// From the first request until the server had learned every sample sent.
    pub ingest_seconds: f64,
    /// `samples_sent / ingest_seconds`.
    pub ingest_samples_per_second: f64,
    /// Right test-then-train predictions over all of them during the run, from the difference
    /// of the server's prequential counters before and after (`null` if it exports none).
    pub prequential_accuracy: Option<f64>,
    /// Prequential predictions made during the run.
    pub prequential_predictions: Option<u64>,
    /// Time to classify the test set.
    pub classify_seconds: f64,
    /// Test samples classified.
    pub test_samples: usize,
    /// The server's base URL.
    pub url: String,
    /// From the first request until the last batch was accepted.
    pub send_seconds: f64,
    /// Requests sent again after a 429.
    pub retries: u64,
    /// Highest `last_seq` the server gave for the batches sent.
    pub last_seq: Option<u64>,
    /// Passes over the training set.
    pub epochs: usize,
    /// Training samples per epoch.
    pub train_samples: usize,
    /// Samples per request.
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Shuffling seed (`null` with `--no-shuffle`).
    pub seed: Option<u64>,
    /// Highest `model_version` seen in the classification answers.
    pub model_version: Option<u64>,
    /// Sleep phases the server completed during the ingest.
    pub sleep_cycles: Option<u64>,
}

/// How often `/v1/model` is polled while waiting for the learner; bounds the error of
/// `ingest_seconds`.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// First pause after a 429 (doubling up to `Retry-After`).
const MIN_BACKOFF: Duration = Duration::from_millis(5);
/// Longest pause after a 429 when the server sends no `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Runs `ffd replay` and prints its summary.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let summary = replay(&args)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Runs the replay described by `args` against its server and returns the summary. Builds its
/// own tokio runtime, so it must not be called from inside one.
pub fn replay(args: &ReplayArgs) -> anyhow::Result<ReplaySummary> {
    ensure!(args.epochs > 0, "--epochs must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    ensure!(args.timeout > 0, "--timeout must be at least 1 second");
    let token = super::token::client_token(
        args.token_file.as_deref(),
        &[crate::service::auth::LEARN_TOKEN_VAR],
    )?;
    let client = ApiClient::with_token(
        &args.url,
        Duration::from_secs(args.timeout),
        token.as_deref(),
    )?;
    let mut mnist = load_mnist(&args.mnist)?;
    if let Some(n) = args.limit {
        mnist.train.truncate(n);
    }
    if let Some(n) = args.test_limit {
        mnist.test.truncate(n);
    }
    ensure!(!mnist.train.is_empty(), "the training set is empty");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(replay_async(
        args,
        client,
        Arc::new(mnist.train),
        Arc::new(mnist.test),
    ))
}

/// The order in which `ffd train --seed seed` visits `n` training samples over `epochs`
/// epochs: one permutation reshuffled in place at the start of every epoch, by one `StdRng`
/// seeded with `seed + 0x5eed` (see `cli::train::run`). Without `shuffle`, file order each epoch.
pub fn training_order(n: usize, epochs: usize, seed: u64, shuffle: bool) -> Vec<usize> {
    let mut order = crate::data::order::EpochOrder::new(n, seed, shuffle);
    let mut all = Vec::with_capacity(n.saturating_mul(epochs));
    for _ in 0..epochs {
        all.extend_from_slice(order.next_epoch());
    }
    all
}

async fn replay_async(
    args: &ReplayArgs,
    client: ApiClient,
    train: Arc<Dataset>,
    test: Arc<Dataset>,
) -> anyhow::Result<ReplaySummary> {
    let policy = RetryPolicy {
        min_backoff: MIN_BACKOFF,
        max_backoff: MAX_BACKOFF,
        strict_retry_after: args.strict_retry_after,
        patience: Duration::from_secs(args.timeout),
    };
    let before = client.model().await.with_context(|| {
        format!(
            "cannot read the server's state (is `ffd serve` running at {}?)",
            client.base()
        )
    })?;
    let counters_before = prequential_counters(&client).await;
    let order = training_order(train.len(), args.epochs, args.seed, !args.no_shuffle);
    let samples = order.len() as u64;
    eprintln!(
        "ffd replay: {} train samples x {} epochs ({}) and {} test samples to {}, batches of {}, {} in flight; server at samples_learned {}",
        train.len(),
        args.epochs,
        if args.no_shuffle { "file order".to_owned() } else { format!("shuffled, seed {}", args.seed) },
        test.len(),
        client.base(),
        args.batch,
        args.concurrency,
        before.samples_learned,
    );

    let bar = progress_bar(samples, "sent");
    let started = Instant::now();
    let (retries, last_seq) = send(&client, &train, order, args, &policy, &bar).await?;
    let send_seconds = started.elapsed().as_secs_f64();
    // The same bar now counts what the learner has taken from the queue.
    bar.reset();
    bar.set_message("learned");
    let after = wait_until_learned(&client, &before, samples, args.timeout, &bar).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let counters_after = prequential_counters(&client).await;
    let prequential = prequential_delta(counters_before, counters_after);
    eprintln!(
        "ingest: {samples} samples accepted in {send_seconds:.2} s and learned in {ingest_seconds:.2} s ({:.0} samples/s), {retries} retries after 429, prequential accuracy {}",
        samples as f64 / ingest_seconds,
        prequential.map_or(
            "unknown (no ffd_prequential_*_total counters in /metrics)".to_owned(),
            |(acc, _)| format!("{:.2}%", 100.0 * acc)
        ),
    );

    let (errors, model_version, classify_seconds) =
        classify_test_set(&client, &test, args, &policy).await?;
    let test_error = (!test.is_empty()).then(|| errors as f64 / test.len() as f64);
    if let Some(e) = test_error {
        eprintln!(
            "test: error {:.2}% ({errors}/{}) in {classify_seconds:.2} s",
            100.0 * e,
            test.len()
        );
    }
    Ok(ReplaySummary {
        test_error,
        test_accuracy: test_error.map(|e| 1.0 - e),
        samples_sent: samples,
        ingest_seconds,
        ingest_samples_per_second: samples as f64 / ingest_seconds,
        prequential_accuracy: prequential.map(|(acc, _)| acc),
        prequential_predictions: prequential.map(|(_, n)| n),
        classify_seconds,
        test_samples: test.len(),
        url: client.base().to_owned(),
        send_seconds,
        retries,
        last_seq,
        epochs: args.epochs,
        train_samples: train.len(),
        batch: args.batch,
        concurrency: args.concurrency,
        seed: (!args.no_shuffle).then_some(args.seed),
        model_version,
        sleep_cycles: after
            .sleep_cycles
            .zip(before.sleep_cycles)
            .map(|(a, b)| a.saturating_sub(b)),
    })
}

fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar
}

/// Sends the training samples in `order` to `/learn`, `args.batch` per request with
/// `args.concurrency` requests in flight, each started in order. Returns the number of retries
/// and the highest `last_seq` answered.
async fn send(
    client: &ApiClient,
    train: &Arc<Dataset>,
    order: Vec<usize>,
    args: &ReplayArgs,
    policy: &RetryPolicy,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Option<u64>)> {
    let batches: Vec<Vec<usize>> = order.chunks(args.batch).map(<[usize]>::to_vec).collect();
    // `buffered` takes the next batch only when a slot is free, so at most `concurrency` tasks
    // exist; each serialises its own body on a runtime worker, off this task.
    let mut in_flight = stream::iter(batches.into_iter().map(|batch| {
        let client = client.clone();
        let train = Arc::clone(train);
        let policy = *policy;
        tokio::spawn(async move {
            let body = learn_body(&train, &batch).context("serialising a /learn batch")?;
            let (accepted, retries) = client
                .learn(Bytes::from(body), batch.len(), &policy)
                .await?;
            anyhow::Ok((batch.len(), retries, accepted.last_seq))
        })
    }))
    .buffered(args.concurrency);
    let (mut retries, mut last_seq) = (0u64, None);
    while let Some(joined) = in_flight.next().await {
        let (sent, batch_retries, seq) = joined.context("a /learn task panicked")??;
        retries += u64::from(batch_retries);
        last_seq = last_seq.max(seq);
        bar.inc(sent as u64);
    }
    Ok((retries, last_seq))
}

/// Polls `/v1/model` until `samples_learned` has grown by `samples` since `before`. Fails after
/// `timeout_seconds` without progress, or if the counter goes backwards (a restarted server).
async fn wait_until_learned(
    client: &ApiClient,
    before: &ModelSummary,
    samples: u64,
    timeout_seconds: u64,
    bar: &ProgressBar,
) -> anyhow::Result<ModelSummary> {
    let target = before.samples_learned.saturating_add(samples);
    let timeout = Duration::from_secs(timeout_seconds);
    let mut best = before.samples_learned;
    let mut last_progress = Instant::now();
    loop {
        let info = client.model().await?;
        let learned = info.samples_learned;
        bar.set_position(learned.saturating_sub(before.samples_learned).min(samples));
        if learned >= target {
            return Ok(info);
        }
        if learned < before.samples_learned {
            bail!(
                "samples_learned went down from {} to {learned}: did the server restart?",
                before.samples_learned
            );
        }
        if learned > best {
            best = learned;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= timeout {
            bail!(
                "the server learned nothing for {timeout_seconds} s: samples_learned is {learned}, \
                 expected {target} ({} of the {samples} samples sent still unlearned, queue depth {})",
                target - learned,
                info.queue_depth.map_or("unknown".to_owned(), |d| d.to_string()),
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Classifies every test sample through `/classify`. Returns the number of wrong labels, the
/// highest model version that answered, and the seconds it took.
async fn classify_test_set(
    client: &ApiClient,
    test: &Arc<Dataset>,
    args: &ReplayArgs,
    policy: &RetryPolicy,
) -> anyhow::Result<(usize, Option<u64>, f64)> {
    let indices: Vec<usize> = (0..test.len()).collect();
    let batches: Vec<Vec<usize>> = indices.chunks(args.batch).map(<[usize]>::to_vec).collect();
    let bar = progress_bar(test.len() as u64, "classified");
    let started = Instant::now();
    let mut in_flight = stream::iter(batches.into_iter().map(|batch| {
        let client = client.clone();
        let test = Arc::clone(test);
        let policy = *policy;
        tokio::spawn(async move {
            let body = classify_body(&test, &batch).context("serialising a /classify batch")?;
            let (results, _) = client
                .classify(Bytes::from(body), batch.len(), &policy)
                .await?;
            let wrong = results
                .iter()
                .zip(&batch)
                .filter(|(r, &i)| r.label != test.sample(i).1)
                .count();
            let version = results.iter().filter_map(|r| r.model_version).max();
            anyhow::Ok((batch.len(), wrong, version))
        })
    }))
    .buffered(args.concurrency);
    let (mut errors, mut model_version) = (0, None);
    while let Some(joined) = in_flight.next().await {
        let (n, wrong, version) = joined.context("a /classify task panicked")??;
        errors += wrong;
        model_version = model_version.max(version);
        bar.inc(n as u64);
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((errors, model_version, seconds))
}

/// The server's prequential counters (predictions, correct); `None`, with a note on stderr, if
/// `/metrics` fails or lacks them: they only feed `prequential_accuracy`, so the run goes on.
async fn prequential_counters(client: &ApiClient) -> Option<(f64, f64)> {
    let text = match client.metrics().await {
        Ok(text) => text,
        Err(e) => {
            eprintln!("note: no prequential counters: {e:#}");
            return None;
        }
    };
    metric_sum(&text, "ffd_prequential_predictions_total")
        .zip(metric_sum(&text, "ffd_prequential_correct_total"))
}

/// Accuracy and number of the predictions counted between two scrapes; `None` if a scrape lacks
/// the counters or nothing was predicted.
fn prequential_delta(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<(f64, u64)> {
    let ((p0, c0), (p1, c1)) = before.zip(after)?;
    let predictions = p1 - p0;
    (predictions >= 1.0).then(|| ((c1 - c0) / predictions, predictions.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_without_shuffle_is_file_order_each_epoch() {
        assert_eq!(training_order(3, 2, 7, false), vec![0, 1, 2, 0, 1, 2]);
        assert!(training_order(0, 3, 7, true).is_empty());
    }

    #[test]
    fn shuffled_order_follows_train_and_differs_per_epoch() {
        let order = training_order(50, 3, 1, true);
        assert_eq!(order.len(), 150);
        let epochs: Vec<&[usize]> = order.chunks(50).collect();
        for epoch in &epochs {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        }
        assert_ne!(epochs[0], epochs[1]);
        assert_ne!(epochs[1], epochs[2]);
        // `ffd train`'s loop: one permutation, reshuffled in place by one rng seeded seed + 0x5eed.
        let mut expected: Vec<usize> = (0..50).collect();
        use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};
        let mut rng = StdRng::seed_from_u64(1 + 0x5eed);
        for epoch in &epochs {
            expected.shuffle(&mut rng);
            assert_eq!(*epoch, expected.as_slice());
        }
        assert_eq!(order, training_order(50, 3, 1, true));
        assert_ne!(order, training_order(50, 3, 2, true));
    }

    #[test]
    fn prequential_accuracy_comes_from_counter_deltas() {
        let acc = prequential_delta(Some((100.0, 50.0)), Some((1100.0, 950.0)));
        assert_eq!(acc, Some((0.9, 1000)));
        assert_eq!(prequential_delta(None, Some((1.0, 1.0))), None);
        assert_eq!(prequential_delta(Some((5.0, 1.0)), None), None);
        // Nothing predicted, or a counter reset by a restart.
        assert_eq!(prequential_delta(Some((5.0, 1.0)), Some((5.0, 1.0))), None);
        assert_eq!(prequential_delta(Some((5.0, 1.0)), Some((2.0, 1.0))), None);
    }
}
