//! The dashboard's queries and the alert rules, run by a real Prometheus (the `prometheus`
//! binary of the Debian package that `.ci/run` installs for promtool) scraping a real `ffd`
//! that learns from the committed MNIST subset: every query returns series, the alert rules
//! evaluate without error, and the accuracy and goodness-gap panels compute what they claim
//! (equal to the values in `/metrics` once learning has stopped).
use crate::support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::deploy::{dashboard_queries, json, repo_path, yaml};
use crate::support::{batch_json, durable_config, metric, start_server, WAIT};
use serde_json::{json, Value};

/// A Prometheus child process, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus with `deploy/prometheus/prometheus.yml`, changed only where a test
    /// must: the target is `target` (host:port), scrapes every second, the rule file path is
    /// absolute.
    fn start(binary: &std::path::Path, target: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = yaml("deploy/prometheus/prometheus.yml");
        config["global"]["scrape_interval"] = json!("1s");
        config["global"]["evaluation_interval"] = json!("1s");
        let rules = config["rule_files"][0]
            .as_str()
            .expect("a rule file")
            .to_owned();
        config["rule_files"] = json!([repo_path("deploy/prometheus").join(rules)]);
        let job = config["scrape_configs"]
            .as_array_mut()
            .expect("scrape_configs")
            .iter_mut()
            .find(|j| j["job_name"] == "ffd")
            .expect("job ffd");
        job["static_configs"] = json!([{ "targets": [target] }]);
        let config_path = dir.path().join("prometheus.yml");
        std::fs::File::create(&config_path)
            .and_then(|mut f| f.write_all(config.to_string().as_bytes()))
            .expect("write the config");
        // A free port, released just before Prometheus takes it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// `GET /api/v1/{path}` with `query` parameters; `None` while Prometheus is not up.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        Some(body["data"].clone())
    }

    /// The result vector of an instant query.
    async fn query(&self, expr: &str) -> Vec<Value> {
        self.api("query", &[("query", expr)])
            .await
            .and_then(|data| data["result"].as_array().cloned())
            .unwrap_or_default()
    }
}

/// Polls `check` every 200 ms until it returns `Ok`, failing with its last `Err` after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what}: {last}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a sample value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_answers_every_dashboard_query_and_evaluates_the_alerts() {
    let Some(binary) = support::tools::require("prometheus", "the Debian package `prometheus`")
    else {
        return;
    };
    let data = support::mnist_small();
    // Durable, as deployed: the WAL and checkpoint panels need a server that writes them.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let s = start_server(durable_config(dir.path())).await;
    let target = s.url.strip_prefix("http://").expect("http URL").to_owned();
    let prometheus = Prometheus::start(&binary, &target);
    eventually("the ffd target is scraped", || async {
        let up = prometheus.query("up{job=\"ffd\"}").await;
        match up.first() {
            Some(sample) if value_of(sample) == 1.0 => Ok(()),
            _ => Err(format!("up = {up:?}")),
        }
    })
    .await;

    // Traffic after the first scrape, so that rates see it.
    assert_eq!(
        s.post("/learn", &batch_json(&data.train, 0..300))
            .await
            .status(),
        202
    );
    s.wait_learned(300).await;
    let classify = json!({ "samples": [
        { "features": data.test.sample(0).0 }, { "features": data.test.sample(1).0 }
    ] });
    assert_eq!(s.post("/classify", &classify).await.status(), 200);
    let bad = s
        .post("/learn", &json!({ "features": [0.5], "label": 1 }))
        .await;
    assert_eq!(bad.status(), 422);
    let checkpoint = s.post("/admin/checkpoint", &json!({})).await;
    assert_eq!(checkpoint.status(), 200);

    // Learning has stopped: the counters in /metrics are final.
    let scrape = s.metrics().await;
    let correct = metric(&scrape, "ffd_prequential_correct_total").expect("correct");
    let predictions = metric(&scrape, "ffd_prequential_predictions_total").expect("predictions");
    assert_eq!(predictions, 300.0);

    // Every panel query of the dashboard returns at least one series. An annotation marks events
    // (a drift detection, say) and returns series only when one happened, so for annotations the
    // check is that Prometheus accepts the query (`api` asserts a successful answer).
    let queries = dashboard_queries(&json("deploy/grafana/dashboards/ffd.json"));
    for (panel, expr) in &queries {
        if panel.starts_with("annotation ") {
            assert!(
                prometheus.api("query", &[("query", expr)]).await.is_some(),
                "{panel}: `{expr}` was not answered"
            );
            continue;
        }
        eventually(&format!("panel \"{panel}\": `{expr}`"), || async {
            let result = prometheus.query(expr).await;
            if result.is_empty() {
                Err("no series".to_owned())
            } else {
                Ok(())
            }
        })
        .await;
    }

    // "Prequential accuracy (since start)" is the ratio of the final counters.
    let accuracy = "ffd_prequential_correct_total / ffd_prequential_predictions_total";
    assert!(queries.iter().any(|(_, e)| e == accuracy));
    eventually("the accuracy panel shows correct / predictions", || async {
        let result = prometheus.query(accuracy).await;
        let got = result.first().map(value_of);
        match got {
            Some(v) if (v - correct / predictions).abs() < 1e-12 => Ok(()),
            _ => Err(format!("{got:?}, /metrics says {correct} / {predictions}")),
        }
    })
    .await;

    // "Separation gap per layer" is positive minus negative goodness, one series per layer.
    let (_, gap) = queries
        .iter()
        .find(|(panel, _)| panel == "Separation gap per layer")
        .expect("the gap panel");
    // A timed sleep may still update the gauges: compare with a fresh scrape each time.
    eventually(
        "the gap panel shows positive - negative goodness",
        || async {
            let result = prometheus.query(gap).await;
            let scrape = s.metrics().await;
            let mut layers = Vec::new();
            for sample in &result {
                let layer = sample["metric"]["layer"].as_str().unwrap_or("?").to_owned();
                let goodness = |polarity: &str| {
                    metric(
                        &scrape,
                        &format!("ffd_layer_goodness{{layer=\"{layer}\",polarity=\"{polarity}\"}}"),
                    )
                };
                match (goodness("positive"), goodness("negative")) {
                    (Some(p), Some(n)) if (value_of(sample) - (p - n)).abs() < 1e-9 => {
                        layers.push(layer)
                    }
                    other => return Err(format!("layer {layer}: {other:?} vs {sample}")),
                }
            }
            layers.sort();
            if layers == ["0", "1"] {
                Ok(())
            } else {
                Err(format!("layers {layers:?}"))
            }
        },
    )
    .await;

    // The alert rules load and evaluate without error.
    let rules = eventually("every alert rule evaluated", || async {
        let data = prometheus.api("rules", &[]).await.ok_or("no answer")?;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let unevaluated = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect::<Vec<_>>();
        if rules.is_empty() || !unevaluated.is_empty() {
            Err(format!("{unevaluated:?}"))
        } else {
            Ok(rules)
        }
    })
    .await;
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let defined = alerts["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .len();
    assert_eq!(rules.len(), defined);

    drop(prometheus);
    s.shutdown().await.expect("clean shutdown");
}
