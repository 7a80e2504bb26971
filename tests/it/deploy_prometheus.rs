//! `deploy/prometheus/prometheus.yml` is a valid Prometheus configuration (`promtool check
//! config`, which also checks the alert rules it loads) and scrapes the compose stack's `ffd`
//! service on the port it listens on in the container, at `/metrics`.

use std::process::Command;

use crate::support;

use crate::support::deploy::{
    compose_default, compose_env, container_listen_port, repo_path, str_at, yaml,
};
use serde_json::Value;

const PROMETHEUS: &str = "deploy/prometheus/prometheus.yml";
const COMPOSE: &str = "deploy/docker-compose.yml";

#[test]
fn promtool_accepts_the_config_and_its_rules() {
    let Some(promtool) = support::tools::require("promtool", "the Debian package `prometheus`")
    else {
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(repo_path(PROMETHEUS))
        .output()
        .expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check config:\n{report}");
    assert!(
        report.contains("is valid prometheus config file"),
        "{report}"
    );
    // The alert rules file is found and checked, not silently missing.
    assert!(report.contains("SUCCESS: 1 rule files found"), "{report}");
}

#[test]
fn scrapes_the_compose_ffd_service_at_its_container_port_and_metrics_path() {
    let prometheus = yaml(PROMETHEUS);
    let compose = yaml(COMPOSE);
    let jobs = prometheus["scrape_configs"]
        .as_array()
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"] == "ffd")
        .expect("a scrape job named ffd");
    // Absent, Prometheus uses /metrics; written out, it must be that.
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    assert_eq!(job["scheme"].as_str().unwrap_or("http"), "http");

    let targets: Vec<&str> = job["static_configs"]
        .as_array()
        .expect("static_configs")
        .iter()
        .flat_map(|c| c["targets"].as_array().expect("targets"))
        .map(|t| t.as_str().expect("a host:port target"))
        .collect();
    assert!(!targets.is_empty(), "no scrape target");
    for target in targets {
        let (host, port) = target.rsplit_once(':').expect("host:port");
        let service = &compose["services"][host];
        assert!(
            service.is_object(),
            "scrape target host {host} is not a compose service"
        );
        assert_eq!(
            str_at(service, "/build/dockerfile"),
            "Dockerfile",
            "{host} is not the ffd image"
        );
        let listen = container_listen_port(&compose_env(service));
        assert_eq!(
            port.parse::<u16>().expect("numeric port"),
            listen,
            "Prometheus scrapes {target}, ffd listens on {listen} in the container"
        );
    }
}

/// The compose Prometheus reads this very file: the directory is mounted where
/// `--config.file` points, and the rule files it names are in that directory.
#[test]
fn compose_mounts_this_config_where_prometheus_reads_it() {
    let compose = yaml(COMPOSE);
    let service = &compose["services"]["prometheus"];
    let config_file = service["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .find_map(|arg| arg.strip_prefix("--config.file="))
        .expect("--config.file");
    let (config_dir, config_name) = config_file.rsplit_once('/').expect("an absolute path");
    let mount = service["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .map(compose_default)
        .find_map(|v| {
            let mut parts = v.split(':');
            let source = parts.next()?.to_owned();
            (parts.next()? == config_dir).then_some(source)
        })
        .unwrap_or_else(|| panic!("nothing mounted at {config_dir}"));
    let host_dir = repo_path("deploy").join(&mount);
    assert_eq!(
        std::fs::canonicalize(host_dir.join(config_name)).expect("mounted config exists"),
        std::fs::canonicalize(repo_path(PROMETHEUS)).expect("config exists"),
    );
    let prometheus = yaml(PROMETHEUS);
    for rules in prometheus["rule_files"].as_array().into_iter().flatten() {
        let rules = rules.as_str().expect("a path");
        assert!(
            !rules.starts_with('/') && host_dir.join(rules).is_file(),
            "rule file {rules} is not in the mounted directory"
        );
    }
}
