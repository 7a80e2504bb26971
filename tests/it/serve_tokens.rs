//! `ffd serve` reads its tokens from `FFD_*_TOKEN` / `FFD_*_TOKEN_FILE`, refuses ambiguous or
//! empty ones, never prints them, and warns loudly when it listens beyond loopback without a
//! learn token.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support;

const SECRET: &str = "s3cret-learn-token-value";

/// `ffd serve ARGS` with durability off, so that no run leaves a data directory behind.
fn ffd_serve(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = support::ffd_serve(args, env);
    cmd.env("FFD_DURABILITY__ENABLED", "false");
    cmd
}

#[test]
fn token_variables_are_not_config_keys_and_are_never_printed() {
    let out = ffd_serve(&["--print-config"], &[("FFD_LEARN_TOKEN", SECRET)])
        .output()
        .expect("ffd runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(SECRET), "{stdout}");
}

#[test]
fn ambiguous_or_empty_tokens_fail_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write");
    let file = file.to_str().expect("UTF-8 path");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("FFD_LEARN_TOKEN", SECRET), ("FFD_LEARN_TOKEN_FILE", file)],
            "FFD_LEARN_TOKEN_FILE",
        ),
        (&[("FFD_READ_TOKEN", "")], "FFD_READ_TOKEN"),
        (
            &[("FFD_READ_TOKEN_FILE", "/nonexistent/token")],
            "/nonexistent/token",
        ),
    ];
    for (env, named) in cases {
        let out = ffd_serve(&["--listen", "127.0.0.1:0"], env)
            .output()
            .expect("ffd runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} should fail");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
        assert!(!stderr.contains(SECRET), "{env:?}: {stderr}");
    }
}

/// Starts `ffd serve` on `0.0.0.0:0` with `env`, sends a learn request with `token` (if any),
/// stops it with SIGTERM and returns its log lines.
async fn serve_public(env: &[(&str, &str)], token: Option<&str>) -> (Vec<String>, u16) {
    let mut child = ffd_serve(&["--listen", "0.0.0.0:0", "--log-format", "json"], env)
        .env("FFD_NETWORK__HIDDEN", "[8]")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffd starts");
    let stderr = child.stderr.take().expect("piped");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if log["fields"]["message"] == "listening" {
                let port = log["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok());
                let _ = port_tx.send(port);
            }
            lines.push(line);
        }
        lines
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a `listening` log line")
        .expect("with the port");
    let mut req = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/learn"))
        .json(&serde_json::json!({ "features": vec![0.5; 784], "label": 1 }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let status = req.send().await.expect("answer").status().as_u16();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("no panic")
        .expect("ffd exits");
    let lines = reader.join().expect("reader thread");
    assert_eq!(exit.code(), Some(0), "{lines:#?}");
    (lines, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warns_when_listening_publicly_without_a_learn_token() {
    let (logs, status) = serve_public(&[], None).await;
    assert_eq!(status, 202, "open without a token");
    assert!(
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("NO LEARN TOKEN")),
        "{logs:#?}"
    );

    let (logs, status) = serve_public(&[("FFD_LEARN_TOKEN", SECRET)], None).await;
    assert_eq!(status, 401, "the token is required");
    assert!(
        !logs.iter().any(|l| l.contains("NO LEARN TOKEN")),
        "{logs:#?}"
    );
    let (logs, status) = serve_public(&[("FFD_LEARN_TOKEN", SECRET)], Some(SECRET)).await;
    assert_eq!(status, 202);
    assert!(!logs.iter().any(|l| l.contains(SECRET)), "{logs:#?}");
}
