//! NDJSON streaming on `/learn`: lines are learned as they arrive, while the request is still
//! open. A stream cannot be refused whole: a bad line stops it with the error for that line
//! (naming it), the lines before it stay queued and learned, and the error body reports how
//! many were accepted.
use crate::support;

use crate::support::{error_code, sample_json, small_config, start_server};
use futures_util::stream;

const NDJSON: &str = "application/x-ndjson";

fn line(data: &ffd::data::idx::Dataset, i: usize) -> Vec<u8> {
    let (x, y) = data.sample(i);
    let mut l = serde_json::to_vec(&sample_json(x, y)).expect("JSON");
    l.push(b'\n');
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_learned_while_the_stream_is_open() {
    let data = support::mnist_small();
    let s = start_server(small_config()).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let request = tokio::spawn(
        s.client
            .post(format!("{}/learn", s.url))
            .header("content-type", NDJSON)
            .body(body)
            .send(),
    );
    for i in 0..50 {
        // Each line in two chunks: a line may straddle reads.
        let l = line(&data.train, i);
        let (a, b) = l.split_at(l.len() / 2);
        tx.send(Ok(a.to_vec())).await.expect("request alive");
        tx.send(Ok(b.to_vec())).await.expect("request alive");
    }
    let model = s.wait_learned(50).await;
    assert_eq!(model["last_seq"], 50);
    assert!(!request.is_finished(), "the stream is still open");
    for i in 50..60 {
        tx.send(Ok(line(&data.train, i)))
            .await
            .expect("request alive");
    }
    drop(tx);
    let r = request.await.expect("no panic").expect("an answer");
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.expect("JSON");
    assert_eq!(
        (body["accepted"].as_u64(), body["last_seq"].as_u64()),
        (Some(60), Some(60))
    );
    s.wait_learned(60).await;
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_line_stops_the_stream_and_keeps_what_came_before() {
    let data = support::mnist_small();
    let s = start_server(small_config()).await;
    let mut body = Vec::new();
    for i in 0..2 {
        body.extend(line(&data.train, i));
    }
    body.extend(b"\n"); // line 3: blank, skipped but counted
    for i in 2..5 {
        body.extend(line(&data.train, i));
    }
    body.extend(b"{\"features\": [0.5, 0.5], \"label\": 1}\n"); // line 7
    body.extend(line(&data.train, 5));
    let r = s.post_raw("/learn", NDJSON, body).await;
    assert_eq!(r.status(), 422);
    let err: serde_json::Value = r.json().await.expect("JSON");
    let e = &err["error"];
    assert_eq!(e["code"], "invalid_features");
    let message = e["message"].as_str().expect("message");
    assert!(
        message.contains("line 7") && message.contains("features"),
        "{message}"
    );
    assert_eq!(
        (e["accepted"].as_u64(), e["last_seq"].as_u64()),
        (Some(5), Some(5))
    );
    let model = s.wait_learned(5).await;
    assert_eq!(
        model["last_seq"], 5,
        "nothing after the bad line was queued"
    );

    let mut body = line(&data.train, 0);
    body.extend(b"{\"features\": [0.5,\n");
    let (status, code, message) = error_code(s.post_raw("/learn", NDJSON, body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "malformed_json"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");

    let mut body = line(&data.train, 0);
    body.extend(vec![b' '; 70_000]);
    body.extend(b"\n");
    let (status, code, message) = error_code(s.post_raw("/learn", NDJSON, body).await).await;
    assert_eq!(
        (status, code.as_str()),
        (413, "payload_too_large"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
    s.wait_learned(7).await;
    s.shutdown().await.expect("clean shutdown");
}
