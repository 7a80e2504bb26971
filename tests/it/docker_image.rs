//! The Docker image, built from the repository's Dockerfile and run for real: ready and healthy
//! in time, non-root on a read-only root filesystem (as `deploy/k8s/deployment.yaml` runs it),
//! a clean `docker stop` with a final checkpoint, and its state kept in the volume across a stop
//! and across a SIGKILL. Skipped with one line where no Docker Engine (or no BuildKit client)
//! is present.

use std::time::{Duration, Instant};

use crate::support::docker::{
    learn, wait_for_200, wait_learned, Container, Docker, Volume, LEARN_TOKEN,
};

/// `/readyz` answers 200 this soon after `docker run`.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// The HEALTHCHECK runs every 10 s, so the first healthy report comes after about 10 s.
const HEALTHY_WITHIN: Duration = Duration::from_secs(40);
/// `docker stop`'s grace period, as compose's `stop_grace_period` and Kubernetes'
/// `terminationGracePeriodSeconds`.
const STOP_TIMEOUT_SECONDS: u64 = 30;
/// How long the learner may take for the tests' samples on a loaded machine.
const LEARN_WITHIN: Duration = Duration::from_secs(120);

/// Starts the image on `volume` as `deploy/k8s/deployment.yaml` runs it: read-only root
/// filesystem (the volume writable), every capability dropped, no privilege escalation, the
/// image's own user; the port published on the loopback interface only.
fn start_ffd(docker: &Docker, image: &str, volume: &Volume) -> Container {
    let mount = format!("{}:/var/lib/ffd", volume.name);
    let token = format!("FFD_LEARN_TOKEN={LEARN_TOKEN}");
    docker.start(
        "ffd",
        &[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            &mount,
            "--publish",
            "127.0.0.1::8080",
            "--env",
            &token,
            "--env",
            "FFD_LOG_FORMAT=json",
            image,
        ],
    )
}

/// The `fields` of the JSON log lines whose message is `message`.
fn log_events(logs: &str, message: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["fields"]["message"] == message)
        .map(|event| event["fields"].clone())
        .collect()
}

/// A user's first run: the server is ready within 10 s and healthy by the image's own
/// HEALTHCHECK, runs as uid/gid 10001 with nothing writable but the volume, learns 1,000 MNIST
/// samples, stops on `docker stop` with exit code 0 well within the grace period after writing a
/// final checkpoint, and a new container on the same volume starts with those 1,000 samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_read_only_as_ffd_and_keeps_its_state_across_docker_stop() {
    let Some(docker) = Docker::find() else {
        return;
    };
    let image = docker.image();
    let client = reqwest::Client::new();
    let volume = docker.volume("data");

    let started = Instant::now();
    let first = start_ffd(&docker, image, &volume);
    let url = first.url();
    wait_for_200(&client, &format!("{url}/readyz"), READY_WITHIN).await;
    let ready = started.elapsed();
    eprintln!("/readyz 200 {:.1} s after docker run", ready.as_secs_f64());
    assert!(ready <= READY_WITHIN, "ready {ready:?} after docker run");
    first.wait_healthy(HEALTHY_WITHIN);

    // The image's user, and the kernel's view of the running process.
    assert_eq!(first.inspect("{{.Config.User}}"), "10001:10001");
    assert_eq!(
        docker.run(&["exec", &first.name, "id", "-u"]),
        "10001",
        "uid"
    );
    assert_eq!(
        docker.run(&["exec", &first.name, "id", "-g"]),
        "10001",
        "gid"
    );
    // /tmp is world-writable in the image: only the read-only root filesystem refuses this.
    let write_root = docker.output(&["exec", &first.name, "touch", "/tmp/written"]);
    assert!(
        !write_root.status.success(),
        "the root filesystem is read-only"
    );

    learn(&client, &url, 0..1000).await;
    wait_learned(&client, &url, 1000, LEARN_WITHIN).await;

    let stopping = Instant::now();
    docker.run(&[
        "stop",
        "--time",
        &STOP_TIMEOUT_SECONDS.to_string(),
        &first.name,
    ]);
    let stop_took = stopping.elapsed();
    eprintln!("docker stop took {:.1} s", stop_took.as_secs_f64());
    assert_eq!(
        first.inspect("{{.State.ExitCode}}"),
        "0",
        "{}",
        first.logs()
    );
    assert!(
        stop_took < Duration::from_secs(STOP_TIMEOUT_SECONDS),
        "docker stop took {stop_took:?}, the whole grace period"
    );
    let checkpoints = log_events(&first.logs(), "checkpoint written");
    let last = checkpoints
        .last()
        .unwrap_or_else(|| panic!("no checkpoint written: {}", first.logs()));
    assert_eq!(last["samples_learned"], 1000, "{last}");
    drop(first);

    let second = start_ffd(&docker, image, &volume);
    let url = second.url();
    wait_for_200(&client, &format!("{url}/readyz"), READY_WITHIN).await;
    let model = crate::support::docker::get_json(&client, &format!("{url}/v1/model")).await;
    assert_eq!(model["samples_learned"], 1000, "after restart: {model}");
}

/// A crash: samples acknowledged with 202 (after their write-ahead-log records are on disk, the
/// default `durability.mode = "fsync"`) and the container killed with SIGKILL before it could
/// learn them all. A new container on the same volume learns every acknowledged sample, and no
/// more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_sample_is_lost_when_the_container_is_killed() {
    let Some(docker) = Docker::find() else {
        return;
    };
    let image = docker.image();
    let client = reqwest::Client::new();
    let volume = docker.volume("data");

    let first = start_ffd(&docker, image, &volume);
    let url = first.url();
    wait_for_200(&client, &format!("{url}/readyz"), READY_WITHIN).await;
    let sent = 3000;
    for batch in 0..3 {
        learn(&client, &url, batch * 1000..(batch + 1) * 1000).await;
    }
    let model = crate::support::docker::get_json(&client, &format!("{url}/v1/model")).await;
    let learned_before_kill = model["samples_learned"].as_u64().unwrap_or_default();
    docker.run(&["kill", "--signal", "KILL", &first.name]);
    assert_eq!(
        first.inspect("{{.State.ExitCode}}"),
        "137",
        "killed by SIGKILL"
    );
    eprintln!("{learned_before_kill} of {sent} samples learned when the container was killed");
    drop(first);

    let second = start_ffd(&docker, image, &volume);
    let url = second.url();
    wait_for_200(&client, &format!("{url}/readyz"), READY_WITHIN).await;
    wait_learned(&client, &url, sent, LEARN_WITHIN).await;
    let model = crate::support::docker::get_json(&client, &format!("{url}/v1/model")).await;
    assert_eq!(
        model["last_seq"], sent,
        "every acknowledged sample, once: {model}"
    );
}
