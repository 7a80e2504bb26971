//! The Grafana dashboard (`deploy/grafana/dashboards/ffd.json`) and the Prometheus alert rules
//! query only what `ffd` really exports: every metric name, label and label value in their
//! PromQL exists in a live `/metrics` scrape of a server that has learned, slept, classified
//! and refused a request; the PromQL itself passes `promtool check rules`; the dashboard uses
//! the provisioned datasource and shows every signal deploy/README.md describes.
use crate::support;

use std::io::Write;
use std::process::Command;

use crate::support::deploy::{check_query, dashboard_queries, json, promql_refs, yaml, Scrape};
use crate::support::{batch_json, durable_config, start_server, WAIT};
use serde_json::{json, Value};

const DASHBOARD: &str = "deploy/grafana/dashboards/ffd.json";
const ALERTS: &str = "deploy/prometheus/alerts.yml";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";

/// Series Prometheus makes itself for every target.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

/// A scrape of a server that has learned 100 MNIST samples (and so slept and published the
/// per-layer gauges), classified, refused a sample and written a checkpoint.
async fn live_scrape() -> Scrape {
    let data = support::mnist_small();
    // Durable, as deployed: the WAL and checkpoint panels need a server that writes them.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let s = start_server(durable_config(dir.path())).await;
    let accepted = s.post("/learn", &batch_json(&data.train, 0..100)).await;
    assert_eq!(accepted.status(), 202);
    s.wait_learned(100).await;
    let classified = s
        .post("/classify", &json!({ "features": data.test.sample(0).0 }))
        .await;
    assert_eq!(classified.status(), 200);
    let refused = s
        .post("/learn", &json!({ "features": [0.5], "label": 1 }))
        .await;
    assert_eq!(refused.status(), 422);
    let checkpoint = s.post("/admin/checkpoint", &json!({})).await;
    assert_eq!(checkpoint.status(), 200);
    // The layer gauges are set when the learner publishes a snapshot after a sleep.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let text = s.metrics().await;
        if text.contains("ffd_layer_goodness{layer=\"1\",polarity=\"negative\"}") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no negative goodness after a sleep:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    s.shutdown().await.expect("clean shutdown");
    Scrape::parse(&text)
}

fn alert_exprs() -> Vec<(String, String)> {
    let rules = yaml(ALERTS);
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("alert name").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_uses_exported_metrics_and_labels() {
    let scrape = live_scrape().await;
    let queries = dashboard_queries(&json(DASHBOARD));
    assert!(queries.len() >= 15, "only {} queries", queries.len());
    let mut problems = Vec::new();
    for (panel, expr) in &queries {
        for problem in check_query(expr, &scrape, &[]) {
            problems.push(format!("panel \"{panel}\": {problem}"));
        }
    }
    for (alert, expr) in alert_exprs() {
        for problem in check_query(&expr, &scrape, &PROMETHEUS_SERIES) {
            problems.push(format!("alert {alert}: {problem}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker above reports the mistakes it exists for: a misspelled metric, a histogram used
/// without its `_bucket` series, a label the metric does not have, a label value it never takes,
/// and grouping by a label that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_check_reports_wrong_names_labels_and_values() {
    let scrape = live_scrape().await;
    let good = "increase(ffd_prequential_correct_total[5m]) / increase(ffd_prequential_predictions_total[5m])";
    assert_eq!(check_query(good, &scrape, &[]), Vec::<String>::new());
    for bad in [
        "increase(ffd_prequential_corect_total[5m]) / increase(ffd_prequential_predictions_total[5m])",
        "histogram_quantile(0.99, sum by (le) (rate(ffd_sleep_duration_seconds[5m])))",
        "rate(ffd_phase_count[1m])",
        "ffd_layer_goodness{kind=\"positive\"}",
        "ffd_layer_goodness{polarity=\"positve\"}",
        "sum by (route) (rate(ffd_http_requests_total{route=~\"/learn|/clasify\"}[1m]))",
        "sum by (kind) (ffd_layer_goodness)",
        "up",
    ] {
        assert!(
            !check_query(bad, &scrape, &[]).is_empty(),
            "not reported: {bad}"
        );
    }
}

#[test]
fn promql_refs_finds_metrics_not_functions_keywords_or_labels() {
    let refs = promql_refs(
        "histogram_quantile(0.99, sum by (le, route) (rate(ffd_http_request_duration_seconds_bucket{route=~\"/learn|/classify\"}[5m]))) \
         / ignoring(polarity) ffd_layer_goodness{polarity=\"negative\"} offset 5m and on() vector(1) > $threshold",
    );
    let metrics: Vec<&str> = refs.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "ffd_http_request_duration_seconds_bucket",
            "ffd_layer_goodness"
        ]
    );
    assert_eq!(refs.grouping_labels, ["le", "route", "polarity"]);
    assert_eq!(
        refs.selectors[1].matchers,
        [("polarity".into(), "=".into(), "negative".into())]
    );
}

/// Every expression of the dashboard and of the alert rules is valid PromQL for `promtool`
/// (written as recording rules, the one place promtool checks bare expressions).
#[test]
fn promtool_accepts_every_query() {
    let Some(promtool) = support::tools::require("promtool", "the Debian package `prometheus`")
    else {
        return;
    };
    let exprs: Vec<String> = dashboard_queries(&json(DASHBOARD))
        .into_iter()
        .chain(alert_exprs())
        .map(|(_, expr)| expr)
        .collect();
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| json!({ "record": format!("ffd_dashboard:query_{i}"), "expr": expr }))
        .collect();
    let file = json!({ "groups": [{ "name": "ffd_dashboard", "rules": rules }] });
    let mut rules_file = tempfile::Builder::new()
        .suffix(".yml")
        .tempfile()
        .expect("temp file");
    // JSON is YAML: promtool reads it as a rules file.
    rules_file
        .write_all(file.to_string().as_bytes())
        .expect("write rules");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(rules_file.path())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{report}"
    );
}

/// The dashboard is a Grafana 10/11 dashboard whose every panel queries the datasource that
/// `deploy/grafana/provisioning` creates, and it covers each signal deploy/README.md lists.
#[test]
fn dashboard_uses_the_provisioned_datasource_and_shows_every_signal() {
    let dashboard = json(DASHBOARD);
    assert_eq!(dashboard["schemaVersion"], 39);
    assert_eq!(dashboard["uid"], "ffd");
    let datasources = yaml(DATASOURCES);
    let provisioned = &datasources["datasources"][0];
    assert_eq!(provisioned["type"], "prometheus");
    let uid = provisioned["uid"].as_str().expect("datasource uid");

    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    let mut ids = std::collections::BTreeSet::new();
    for panel in &panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], uid, "{}", panel["title"]);
        }
    }

    let all: Vec<String> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|(_, expr)| expr.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let has = |fragment: &str| all.iter().any(|expr| expr.contains(fragment));
    for fragment in [
        // rolling and cumulative prequential accuracy from the counters
        "increase(ffd_prequential_correct_total[5m]) / increase(ffd_prequential_predictions_total[5m])",
        "ffd_prequential_correct_total / ffd_prequential_predictions_total",
        // goodness per layer and polarity, and their gap
        "ffd_layer_goodness{polarity=\"positive\"} - ignoring(polarity) ffd_layer_goodness{polarity=\"negative\"}",
        // wake/sleep phase and sleep duration
        "ffd_phase",
        "histogram_quantile(0.99, sum by (le) (rate(ffd_sleep_duration_seconds_bucket[5m])))",
        // learn and classify rates, queue depth
        "rate(ffd_samples_learned_total[1m])",
        "route=~\"/learn|/classify\"",
        "ffd_learn_queue_depth",
        // HTTP latency p50/p99 by route
        "histogram_quantile(0.5, sum by (le, route) (rate(ffd_http_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.99, sum by (le, route) (rate(ffd_http_request_duration_seconds_bucket[5m])))",
        // rejected samples by reason
        "sum by (reason) (increase(ffd_rejected_samples_total[1m]))",
        // calibration and drift: log-loss, temperature, detections (panel and annotation)
        "ffd_prequential_log_loss",
        "ffd_calibration_temperature",
        "increase(ffd_drift_detected_total[5m])",
        "changes(ffd_drift_detected_total[1m]) > 0",
        // the cluster backend: learners and roles, failovers, lag, publish acknowledgements,
        // snapshot age, skipped messages and fenced writes
        "count(ffd_cluster_role == 2)",
        "ffd_cluster_role",
        "increase(ffd_cluster_failovers_total[5m])",
        "ffd_cluster_consumer_lag",
        "histogram_quantile(0.5, sum by (le) (rate(ffd_cluster_publish_ack_seconds_bucket[5m])))",
        "histogram_quantile(0.99, sum by (le) (rate(ffd_cluster_publish_ack_seconds_bucket[5m])))",
        "ffd_cluster_snapshot_age_seconds",
        "increase(ffd_cluster_bad_messages_total[5m])",
        "increase(ffd_cluster_fenced_writes_total[5m])",
    ] {
        assert!(has(fragment), "no dashboard query contains `{fragment}`");
    }
    let phase = panels
        .iter()
        .find(|p| p["title"] == "Phase")
        .expect("a Phase panel");
    assert_eq!(phase["type"], "state-timeline");
    let mappings = &phase["fieldConfig"]["defaults"]["mappings"][0]["options"];
    assert_eq!(mappings["0"]["text"], "wake");
    assert_eq!(mappings["1"]["text"], "sleep");
    // The roles as /v1/model names them (tests/it/deploy_prometheus_live.rs checks a real
    // cluster's learner shows as "learner").
    let role = panels
        .iter()
        .find(|p| p["title"] == "Cluster role")
        .expect("a Cluster role panel");
    assert_eq!(role["type"], "state-timeline");
    let mappings = &role["fieldConfig"]["defaults"]["mappings"][0]["options"];
    assert_eq!(mappings["0"]["text"], "replica");
    assert_eq!(mappings["1"]["text"], "starting");
    assert_eq!(mappings["2"]["text"], "learner");
}

/// Grafana lays panels out on a 24-column grid as their `gridPos` says: no two panels overlap,
/// none is wider than the grid, and each panel lies below the row it follows in the file and
/// above the next row, so that it shows in its row.
#[test]
fn dashboard_panels_do_not_overlap_and_sit_in_their_rows() {
    let dashboard = json(DASHBOARD);
    let panels = dashboard["panels"].as_array().expect("panels");
    let rect = |p: &Value| {
        let g = &p["gridPos"];
        let n = |k: &str| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{}: gridPos.{k}", p["title"]))
        };
        (n("x"), n("y"), n("w"), n("h"))
    };
    for (i, a) in panels.iter().enumerate() {
        let (ax, ay, aw, ah) = rect(a);
        assert!(ax + aw <= 24, "{} is wider than the grid", a["title"]);
        for b in &panels[i + 1..] {
            let (bx, by, bw, bh) = rect(b);
            let overlap = ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah;
            assert!(!overlap, "{} overlaps {}", a["title"], b["title"]);
        }
    }
    let rows: Vec<(usize, u64)> = panels
        .iter()
        .enumerate()
        .filter(|(_, p)| p["type"] == "row")
        .map(|(i, p)| (i, rect(p).1))
        .collect();
    for (i, panel) in panels.iter().enumerate() {
        if panel["type"] == "row" {
            continue;
        }
        let (_, y, _, h) = rect(panel);
        let above = rows.iter().rev().find(|(at, _)| *at < i);
        let below = rows.iter().find(|(at, _)| *at > i);
        if let Some((_, row_y)) = above {
            assert!(*row_y < y, "{} is above its row", panel["title"]);
        }
        if let Some((_, row_y)) = below {
            assert!(
                y + h <= *row_y,
                "{} reaches into the next row",
                panel["title"]
            );
        }
    }
}

/// `FfdClusterNoLearner`, run by `promtool test rules` on series a cluster and a single node
/// export: it fires once the nodes of a cluster acknowledge samples and none has learned for a
/// minute, and stays silent through a failover shorter than that, for an idle cluster, and for
/// a node in local mode (whose cluster metrics stay at 0).
#[test]
fn the_no_learner_alert_fires_for_a_cluster_that_acknowledges_but_does_not_learn() {
    let Some(promtool) = support::tools::require("promtool", "the Debian package `prometheus`")
    else {
        return;
    };
    let rules = yaml(ALERTS);
    let rule = rules["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["alert"] == "FfdClusterNoLearner")
        .expect("the FfdClusterNoLearner rule")
        .clone();
    // Roles and publish counts every 15 s: `role` values for nodes a, b, c (empty: no such
    // node); acknowledgements counted on node a, growing or not.
    let case = |roles: [&str; 3], published: &str, eval: &str, fires: bool| {
        let mut series: Vec<Value> = ["a", "b", "c"]
            .iter()
            .zip(roles)
            .filter(|(_, values)| !values.is_empty())
            .map(|(node, values)| {
                json!({ "series": format!("ffd_cluster_role{{job=\"ffd\",instance=\"{node}\"}}"), "values": values })
            })
            .collect();
        series.push(json!({
            "series": "ffd_cluster_publish_ack_seconds_count{job=\"ffd\",instance=\"a\"}",
            "values": published
        }));
        let expected = if fires {
            json!([{ "exp_labels": { "job": "ffd" }, "exp_annotations": rule["annotations"] }])
        } else {
            json!([])
        };
        json!({
            "interval": "15s",
            "input_series": series,
            "alert_rule_test": [{ "eval_time": eval, "alertname": "FfdClusterNoLearner", "exp_alerts": expected }]
        })
    };
    let tests = [
        // The learner a dies at 2m15s and nobody takes over: pending, then firing after 1m.
        case(["2x8 0x24", "0x32", "0x32"], "0+10x32", "2m", false),
        case(["2x8 0x24", "0x32", "0x32"], "0+10x32", "3m", false),
        case(["2x8 0x24", "0x32", "0x32"], "0+10x32", "3m30s", true),
        // b takes over 30 s after a died: a failover, no alert.
        case(["2x8 0x24", "0x10 2x22", "0x32"], "0+10x32", "5m", false),
        // No learner, and nothing to learn.
        case(["0x32", "0x32", "0x32"], "0x32", "5m", false),
        // Local mode: every cluster metric at 0 (one node; the other series absent).
        case(["0x32", "", ""], "0x32", "5m", false),
    ];
    let file = json!({
        "rule_files": [support::deploy::repo_path(ALERTS)],
        "evaluation_interval": "15s",
        "tests": tests,
    });
    let mut test_file = tempfile::Builder::new()
        .suffix(".yml")
        .tempfile()
        .expect("temp file");
    test_file
        .write_all(file.to_string().as_bytes())
        .expect("write the test");
    let out = Command::new(promtool)
        .args(["test", "rules"])
        .arg(test_file.path())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
