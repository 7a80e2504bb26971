//! `/metrics` is valid Prometheus text that `promtool check metrics` (Debian package
//! `prometheus`, installed by `.ci/run`) accepts without a single complaint, scraped live after
//! learning, sleeping, classifying and refusing requests, so every metric family has samples.
use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{batch_json, metric, small_config, start_server};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_live_scrape() {
    let data = support::mnist_small();
    let s = start_server(small_config()).await;
    assert_eq!(
        s.post("/learn", &batch_json(&data.train, 0..100))
            .await
            .status(),
        202
    );
    s.wait_learned(100).await;
    let r = s
        .post(
            "/classify",
            &json!({ "features": data.test.sample(0).0, "id": "q" }),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.post("/learn", &json!({ "features": [1.0], "label": 0 }))
            .await
            .status(),
        422
    );
    assert_eq!(
        s.client
            .get(format!("{}/nope", s.url))
            .send()
            .await
            .expect("answer")
            .status(),
        404
    );

    let response = s
        .client
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let scrape = response.text().await.expect("text");
    assert_eq!(
        metric(&scrape, "ffd_build_info{version=\"0.1.0\"}"),
        Some(1.0)
    );
    assert!(scrape.contains("ffd_http_request_duration_seconds_bucket{route=\"/classify\""));

    let Some(promtool) = support::tools::require("promtool", "the Debian package `prometheus`")
    else {
        return;
    };
    let mut promtool = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(scrape.as_bytes())
        .expect("promtool reads the scrape");
    let out = promtool.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{scrape}"
    );
    s.shutdown().await.expect("clean shutdown");
}
