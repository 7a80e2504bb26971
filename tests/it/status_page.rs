//! The status page: `GET /` is one self-contained HTML page (no external URL, no `src` or
//! `href` attribute to load anything) that reads `v1/status`, and `GET /v1/status` returns a
//! bounded history with every field the page's script reads, showing the learning it records.
use crate::support;

use std::collections::BTreeSet;

use crate::support::{batch_json, small_config, start_server};

/// Property names the page's script reads from `status.` and from a point (`p.`, `last.`,
/// `pts[i].`), found by scanning its text: the JSON must have each of them.
fn fields_read(html: &str, prefix: &str) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    for (at, _) in html.match_indices(prefix) {
        let before = html[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = html[at + prefix.len()..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            fields.insert(name);
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_self_contained_and_its_data_is_bounded() {
    let mut config = small_config();
    config.status.history_points = 5;
    config.status.history_interval_ms = 20;
    let data = support::mnist_small();
    let s = start_server(config).await;

    let response = s
        .client
        .get(format!("{}/", s.url))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = response.text().await.expect("a text body");
    assert!(html.contains("<canvas"), "the page draws charts");
    assert!(
        html.contains("no data yet"),
        "empty charts say so instead of showing an axis"
    );
    assert!(
        html.contains("\"v1/status\""),
        "the page polls its data endpoint"
    );
    let lower = html.to_ascii_lowercase();
    for external in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(
            !lower.contains(external),
            "the page loads something: {external}"
        );
    }

    assert_eq!(
        s.post("/learn", &batch_json(&data.train, 0..200))
            .await
            .status(),
        202
    );
    s.wait_learned(200).await;
    // Enough intervals for the ring to fill and wrap, and for a point after the learning.
    let deadline = std::time::Instant::now() + support::WAIT;
    let status = loop {
        let status = s.get_json("/v1/status").await;
        let points = status["points"].as_array().expect("points");
        assert!(points.len() <= 5, "{} points, capacity 5", points.len());
        if points.len() == 5 && points.iter().all(|p| p["samples_learned"] == 200) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no full history: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    assert_eq!(status["capacity"], 5);
    assert_eq!(status["interval_ms"], 20);
    assert_eq!(status["layer_sizes"], serde_json::json!([794, 32, 32]));
    assert_eq!(status["samples_learned"], 200);
    let points = status["points"].as_array().expect("points");
    let times: Vec<f64> = points
        .iter()
        .map(|p| p["time"].as_f64().expect("a time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {times:?}"
    );
    for p in points {
        let asleep = p["asleep"].as_f64().expect("time asleep");
        assert!((0.0..=1.0).contains(&asleep), "asleep {asleep}: a fraction");
    }
    let last = points.last().expect("a point");
    let accuracy = last["accuracy_rolling"]
        .as_f64()
        .expect("accuracy after learning");
    assert!((0.0..=1.0).contains(&accuracy), "{accuracy}");
    assert!(last["accuracy_cumulative"].as_f64().is_some());
    for key in ["goodness_positive", "goodness_negative", "goodness_gap"] {
        let per_layer = last[key].as_array().expect(key);
        assert_eq!(per_layer.len(), 2, "{key}: one per hidden layer");
    }
    let positive = last["goodness_positive"][0]
        .as_f64()
        .expect("layer 0 measured");
    let negative = last["goodness_negative"][0]
        .as_f64()
        .expect("layer 0 measured");
    let gap = last["goodness_gap"][0].as_f64().expect("a gap");
    assert!((gap - (positive - negative)).abs() < 1e-9);
    let log_loss = last["log_loss"].as_f64().expect("log-loss after learning");
    assert!(log_loss.is_finite() && log_loss > 0.0, "{log_loss}");
    let temperature = last["temperature"].as_f64().expect("a temperature");
    assert!(temperature > 0.0, "{temperature}");
    assert_eq!(last["drift_detected"], status["drift"]["detected"]);
    assert!(
        status["cluster"].is_null(),
        "a local node has no cluster fact: {}",
        status["cluster"]
    );

    for field in fields_read(&html, "status.") {
        assert!(
            status.get(&field).is_some(),
            "the page reads status.{field}"
        );
    }
    let mut point_fields = fields_read(&html, "p.");
    point_fields.extend(fields_read(&html, "last."));
    point_fields.extend(fields_read(&html, "pts[i]."));
    assert!(
        point_fields.contains("accuracy_rolling"),
        "{point_fields:?}"
    );
    for field in point_fields {
        assert!(last.get(&field).is_some(), "the page reads point.{field}");
    }
    s.shutdown().await.expect("clean shutdown");
}
