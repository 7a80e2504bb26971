//! `deploy/docker-compose.yml` brought up for real: `ffd` and Prometheus (a stand-in built from
//! Debian's `prometheus` package, `deploy/docker/prometheus.Dockerfile`, since the test machines
//! reach no registry; Grafana's image has no such stand-in and stays down). Prometheus scrapes
//! `ffd`, the dashboard's queries answer with what `ffd` learned, and `down` then `up` keeps the
//! learned state. Skipped with one line where Docker or Compose is missing.

use std::time::{Duration, Instant};

use crate::support::deploy::repo_path;
use crate::support::docker::{
    compose_command, learn, unique_name, wait_for_200, wait_learned, ComposeProject, Docker,
    LEARN_TOKEN,
};

/// Prometheus scrapes every 5 s; a few scrapes and a restart fit in this.
const PROMETHEUS_WITHIN: Duration = Duration::from_secs(60);

/// The compose project of this test: the repository's compose file, the override for machines
/// without a registry (the Prometheus stand-in), and an override selecting the image this test
/// built, on host ports chosen free.
struct Stack {
    compose: ComposeProject,
    ffd_port: u16,
    prometheus_port: u16,
}

impl Stack {
    fn run(&self, args: &[&str]) {
        self.compose.run(args);
    }

    /// `up --detach` of ffd and Prometheus only, with the images already built.
    fn up(&self) {
        self.run(&["up", "--detach", "--no-build", "ffd", "prometheus"]);
    }

    fn ffd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ffd_port)
    }

    fn prometheus_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.prometheus_port)
    }
}

/// A loopback port free right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}

/// The query of the dashboard panel titled `title` (its first target).
fn dashboard_query(title: &str) -> String {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/dashboards/ffd.json"))
        .expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    fn find(panels: &serde_json::Value, title: &str) -> Option<String> {
        panels.as_array()?.iter().find_map(|panel| {
            if panel["title"] == title {
                panel["targets"][0]["expr"].as_str().map(str::to_owned)
            } else {
                find(&panel["panels"], title)
            }
        })
    }
    find(&dashboard["panels"], title).unwrap_or_else(|| panic!("no panel {title:?}"))
}

/// `GET /api/v1/query?query=EXPR` on Prometheus: the result vector's values.
async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> Vec<f64> {
    query_at(client, prometheus, expr, None).await
}

/// [`query`] evaluated at `time` (Unix seconds), or now.
async fn query_at(
    client: &reqwest::Client,
    prometheus: &str,
    expr: &str,
    time: Option<f64>,
) -> Vec<f64> {
    let mut params = vec![("query", expr.to_owned())];
    if let Some(time) = time {
        params.push(("time", format!("{time:.3}")));
    }
    let response = client
        .get(format!("{prometheus}/api/v1/query"))
        .query(&params)
        .send()
        .await
        .unwrap_or_else(|e| panic!("query {expr}: {e}"));
    let body: serde_json::Value = response.json().await.expect("Prometheus answers JSON");
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the query until its values satisfy `ok`; panics after [`PROMETHEUS_WITHIN`].
async fn wait_query(
    client: &reqwest::Client,
    prometheus: &str,
    expr: &str,
    ok: impl Fn(&[f64]) -> bool,
) -> Vec<f64> {
    let started = Instant::now();
    loop {
        let values = query(client, prometheus, expr).await;
        if ok(&values) {
            return values;
        }
        assert!(
            started.elapsed() < PROMETHEUS_WITHIN,
            "{expr} = {values:?} after {PROMETHEUS_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The health of Prometheus' scrape target of the job `ffd`.
async fn ffd_target_health(client: &reqwest::Client, prometheus: &str) -> Option<String> {
    let body: serde_json::Value = client
        .get(format!("{prometheus}/api/v1/targets"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["activeTargets"]
        .as_array()?
        .iter()
        .find(|t| t["labels"]["job"] == "ffd")
        .and_then(|t| t["health"].as_str().map(str::to_owned))
}

/// `docker compose up` of ffd and Prometheus: Prometheus finds the ffd target up, the
/// dashboard's "Samples learned" and accuracy panels answer with what ffd learned, and after
/// `down` and `up` (volumes kept) ffd starts with the 1,000 samples it had learned and
/// Prometheus still has the series it scraped before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_scrapes_ffd_and_keeps_its_state_across_down_and_up() {
    let Some(docker) = Docker::find() else {
        return;
    };
    let Some(command) = compose_command(&docker) else {
        return;
    };
    let image = docker.image();
    // The Prometheus stand-in that deploy/docker/compose.local-images.yml selects.
    crate::support::docker::local_base_images(&["--prometheus"]).unwrap_or_else(|e| panic!("{e}"));

    let (ffd_port, prometheus_port) = (free_port(), free_port());
    let stack = Stack {
        compose: ComposeProject::new(
            command,
            unique_name("compose"),
            &[
                "deploy/docker-compose.yml",
                "deploy/docker/compose.local-images.yml",
            ],
            &format!("services:\n  ffd:\n    image: {image}\n"),
            vec![
                ("HOST_PORT_FFD".into(), ffd_port.to_string()),
                ("HOST_PORT_PROMETHEUS".into(), prometheus_port.to_string()),
                ("FFD_LEARN_TOKEN".into(), LEARN_TOKEN.into()),
            ],
        ),
        ffd_port,
        prometheus_port,
    };
    let client = reqwest::Client::new();
    let (ffd, prometheus) = (stack.ffd_url(), stack.prometheus_url());

    stack.up();
    wait_for_200(&client, &format!("{ffd}/readyz"), PROMETHEUS_WITHIN).await;
    learn(&client, &ffd, 0..1000).await;
    wait_learned(&client, &ffd, 1000, PROMETHEUS_WITHIN).await;

    let started = Instant::now();
    loop {
        let health = ffd_target_health(&client, &prometheus).await;
        if health.as_deref() == Some("up") {
            break;
        }
        assert!(
            started.elapsed() < PROMETHEUS_WITHIN,
            "the ffd target is {health:?} after {PROMETHEUS_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let learned = dashboard_query("Samples learned");
    wait_query(&client, &prometheus, &learned, |v| v == [1000.0]).await;
    let scraped_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let accuracy = dashboard_query("Prequential accuracy (since start)");
    let values = wait_query(&client, &prometheus, &accuracy, |v| v.len() == 1).await;
    assert!((0.0..=1.0).contains(&values[0]), "{accuracy} = {values:?}");

    stack.run(&["down", "--timeout", "30"]);
    stack.up();
    wait_for_200(&client, &format!("{ffd}/readyz"), PROMETHEUS_WITHIN).await;
    let model = crate::support::docker::get_json(&client, &format!("{ffd}/v1/model")).await;
    assert_eq!(model["samples_learned"], 1000, "after down and up: {model}");
    // Prometheus kept its data in its volume too: the dashboard's history survives.
    wait_for_200(&client, &format!("{prometheus}/-/ready"), PROMETHEUS_WITHIN).await;
    let before_down = query_at(&client, &prometheus, &learned, Some(scraped_at)).await;
    assert_eq!(
        before_down,
        [1000.0],
        "{learned} before `down`, asked after `up`"
    );
}
