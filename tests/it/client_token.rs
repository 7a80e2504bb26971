//! The client commands send a token read from `--token-file` (never a flag value): `ffd
//! replay` against a server that requires the learn token, `ffd healthcheck` against one whose
//! probes are closed.

use std::path::PathBuf;

use crate::support::{small_config, start_server_with};
use clap::Parser;
use ffd::cli::{Cli, Command};
use ffd::service::AccessTokens;

const LEARN: &str = "replay-learn-token";

fn parse(argv: &[&str]) -> Command {
    Cli::try_parse_from(argv).expect("valid arguments").command
}

fn token_file(dir: &tempfile::TempDir, token: &str) -> PathBuf {
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{token}\n")).expect("write the token file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_the_token_from_its_file() {
    let access = AccessTokens::from_env([("FFD_LEARN_TOKEN", LEARN)]).expect("valid token");
    let s = start_server_with(small_config(), access, Some(LEARN)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mnist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-small");
    let mnist = mnist.to_str().expect("UTF-8 path").to_owned();
    let url = s.url.clone();
    let run = |file: Option<PathBuf>| {
        let (mnist, url) = (mnist.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let mut argv = vec![
                "ffd",
                "replay",
                "--mnist",
                &mnist,
                "--url",
                &url,
                "--limit",
                "20",
                "--test-limit",
                "5",
                "--batch",
                "10",
                "--timeout",
                "20",
            ];
            let file = file.map(|f| f.to_str().expect("UTF-8 path").to_owned());
            if let Some(f) = &file {
                argv.extend(["--token-file", f]);
            }
            match parse(&argv) {
                Command::Replay(args) => ffd::cli::replay::replay(&args),
                other => panic!("parsed {other:?}"),
            }
        })
    };
    let refused = run(None).await.expect("joined").expect_err("no token");
    assert!(format!("{refused:#}").contains("401"), "{refused:#}");
    assert_eq!(s.model().await["samples_learned"], 0);

    let wrong = run(Some(token_file(&dir, "not-it"))).await.expect("joined");
    assert!(format!("{:#}", wrong.expect_err("wrong token")).contains("403"));

    let summary = run(Some(token_file(&dir, LEARN)))
        .await
        .expect("joined")
        .expect("the replay succeeds with the token");
    assert_eq!(summary.samples_sent, 20);
    s.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_sends_the_token_from_its_file() {
    let mut config = small_config();
    config.auth.health_open = false;
    let access = AccessTokens::from_env([("FFD_LEARN_TOKEN", LEARN)]).expect("valid token");
    let s = start_server_with(config, access, Some(LEARN)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = s.url.clone();
    let check = |file: Option<PathBuf>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut argv = vec!["ffd", "healthcheck", "--url", &url];
            let file = file.map(|f| f.to_str().expect("UTF-8 path").to_owned());
            if let Some(f) = &file {
                argv.extend(["--token-file", f]);
            }
            match parse(&argv) {
                Command::Healthcheck(args) => ffd::cli::healthcheck::run(args),
                other => panic!("parsed {other:?}"),
            }
        })
    };
    let refused = check(None)
        .await
        .expect("joined")
        .expect_err("probes are closed");
    assert!(format!("{refused:#}").contains("401"), "{refused:#}");
    check(Some(token_file(&dir, LEARN)))
        .await
        .expect("joined")
        .expect("healthy with the token");
    s.shutdown().await.expect("clean shutdown");
}
