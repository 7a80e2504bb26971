//! The dashboard's queries and the alert rules, run by a real Prometheus (the `prometheus`
//! binary of the Debian package that `.ci/run` installs for promtool) scraping a real `ffd`
//! that learns from the committed MNIST subset: every query returns series, the alert rules
//! evaluate without error, and the accuracy and goodness-gap panels compute what they claim
//! (equal to the values in `/metrics` once learning has stopped). The Cluster row is checked the
//! same way on three nodes of the cluster backend, on a three-server NATS cluster.
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
    /// must: the targets are `targets` (host:port), scrapes every second, the rule file path is
    /// absolute.
    fn start(binary: &std::path::Path, targets: &[&str]) -> Self {
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
        job["static_configs"] = json!([{ "targets": targets }]);
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
    let prometheus = Prometheus::start(&binary, &[&target]);
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

/// The dashboard's "Cluster" row, by a real Prometheus scraping three `ffd serve` nodes of the
/// cluster backend on a three-server NATS cluster (Debian's `nats-server`): every query of the
/// row returns series; "Learners" is 1 and "Cluster role" shows 2 ("learner") for the node
/// `/v1/model` calls the learner and 0 ("replica") for the others; after learn requests the
/// publish-acknowledgement p50 and p99 are positive and finite; after the learner is killed,
/// "Failovers" counts the take-over on the node that now learns, and "Learners" is 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_shows_the_cluster_row_of_a_nats_cluster() {
    use crate::support::nats::{nats_server, node_env, FfdNode, NatsServer};

    let Some(binary) = support::tools::require("prometheus", "the Debian package `prometheus`")
    else {
        return;
    };
    let Some(nats_bin) = nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nats = NatsServer::cluster(&nats_bin, dir.path());
    let urls: Vec<&str> = nats.iter().map(|s| s.url.as_str()).collect();
    let mut nodes: Vec<FfdNode> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|name| FfdNode::start(name, &node_env(&urls, name, 3, 1.0)))
        .collect();
    let instance = |node: &FfdNode| node.url.trim_start_matches("http://").to_owned();
    let targets: Vec<String> = nodes.iter().map(instance).collect();
    let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let prometheus = Prometheus::start(&binary, &target_refs);
    let client = reqwest::Client::new();

    // The row's panels: those after the "Cluster" row, up to the next row.
    let dashboard = json("deploy/grafana/dashboards/ffd.json");
    let panels = dashboard["panels"].as_array().expect("panels");
    let row = panels
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "Cluster")
        .expect("a Cluster row");
    let row_titles: Vec<String> = panels[row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .map(|p| p["title"].as_str().expect("a title").to_owned())
        .collect();
    let queries: Vec<(String, String)> = dashboard_queries(&dashboard)
        .into_iter()
        .filter(|(title, _)| row_titles.contains(title))
        .collect();
    let query_of = |title: &str| {
        queries
            .iter()
            .find(|(t, _)| t == title)
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("no panel {title} in the Cluster row"))
    };
    let mapping = &panels[row + 1..]
        .iter()
        .find(|p| p["title"] == "Cluster role")
        .expect("the Cluster role panel")["fieldConfig"]["defaults"]["mappings"][0]["options"];

    // Which node learns, by /v1/model.
    let learner_of = |nodes: &[FfdNode]| {
        let nodes: Vec<(String, String)> =
            nodes.iter().map(|n| (n.url.clone(), instance(n))).collect();
        let client = client.clone();
        async move {
            let mut learners = Vec::new();
            for (url, inst) in &nodes {
                let model: Value = match client.get(format!("{url}/v1/model")).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => Value::Null,
                };
                if model["cluster"]["role"] == "learner" {
                    learners.push(inst.clone());
                }
            }
            match learners.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(format!("learners: {learners:?}")),
            }
        }
    };
    let learner = eventually("one learner", || learner_of(&nodes)).await;

    // "Cluster role" and "Learners" agree with /v1/model.
    let roles = query_of("Cluster role");
    eventually("the role panel shows the learner", || async {
        let result = prometheus.query(&roles).await;
        let mut shown = Vec::new();
        for sample in &result {
            let inst = sample["metric"]["instance"].as_str().unwrap_or_default();
            let role = value_of(sample);
            let text = &mapping[format!("{role}")]["text"];
            let want = if inst == learner {
                "learner"
            } else {
                "replica"
            };
            if *text != want {
                return Err(format!("{inst}: {role} ({text}), want {want}"));
            }
            shown.push(inst.to_owned());
        }
        if shown.len() == targets.len() {
            Ok(())
        } else {
            Err(format!("series for {shown:?}"))
        }
    })
    .await;
    let learners = query_of("Learners");
    let one_learner = || async {
        let shown = prometheus.query(&learners).await.first().map(value_of);
        if shown == Some(1.0) {
            Ok(())
        } else {
            Err(format!("Learners = {shown:?}"))
        }
    };
    eventually("Learners shows 1", one_learner).await;

    // Ingest through every node: the acknowledgement latencies.
    let data = support::mnist_small();
    for (i, node) in nodes.iter().enumerate() {
        let response = client
            .post(format!("{}/learn", node.url))
            .json(&batch_json(&data.train, i * 20..i * 20 + 20))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 202, "{}", node.logs());
    }
    for (panel, expr) in &queries {
        eventually(&format!("panel \"{panel}\": `{expr}`"), || async {
            let result = prometheus.query(expr).await;
            if result.is_empty() {
                return Err("no series".to_owned());
            }
            if panel.starts_with("Publish acknowledgement") {
                let v = value_of(&result[0]);
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{v}"));
                }
            }
            Ok(())
        })
        .await;
    }

    // Kill the learner: another node takes over, "Failovers" counts it there.
    let killed = nodes
        .iter()
        .position(|n| instance(n) == learner)
        .expect("the learner's node");
    nodes[killed].kill_9();
    let gone = nodes.remove(killed);
    let successor = eventually("a new learner", || learner_of(&nodes)).await;
    let failovers = query_of("Failovers");
    eventually("Failovers counts the take-over", || async {
        let result = prometheus.query(&failovers).await;
        let counted = result
            .iter()
            .any(|s| s["metric"]["instance"] == successor.as_str() && value_of(s) >= 1.0);
        if counted {
            Ok(())
        } else {
            Err(format!("{result:?}"))
        }
    })
    .await;
    eventually("Learners shows 1 again", one_learner).await;
    drop(gone);
    drop(prometheus);
}
