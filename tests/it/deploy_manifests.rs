//! `deploy/docker-compose.yml` and `deploy/k8s/*.yaml` parse and agree with what the image and
//! the service really do: the port `ffd serve` listens on in the container (the Dockerfile's
//! config and `FFD_LISTEN`), the data directory the image declares, the image's non-root uid,
//! probe and scrape paths that a real server answers with 200, and references between objects
//! (volumes, claims, secrets, selectors, named ports) that resolve.
use crate::support;

use std::collections::BTreeMap;

use crate::support::deploy::{
    compose_default, compose_env, container_listen_port, repo_path, str_at, yaml, yaml_docs,
    Dockerfile,
};
use crate::support::{small_config, start_server};
use serde_json::Value;

const COMPOSE: &str = "deploy/docker-compose.yml";
const K8S_DIR: &str = "deploy/k8s";
const GRAFANA_DATASOURCES: &str = "deploy/grafana/provisioning/datasources/prometheus.yml";
const GRAFANA_DASHBOARDS: &str = "deploy/grafana/provisioning/dashboards/ffd.yml";

/// `source:target[:mode]` volume entries of a compose service.
fn compose_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            let v = compose_default(v.as_str().expect("short volume syntax"));
            let mut parts = v.split(':');
            let source = parts.next().expect("source").to_owned();
            let target = parts.next().expect("target").to_owned();
            (source, target)
        })
        .collect()
}

/// Seconds of a duration written like `30s` or `2m`.
fn seconds(duration: &str) -> u64 {
    if let Some(s) = duration.strip_suffix('s') {
        s.parse().expect("seconds")
    } else if let Some(m) = duration.strip_suffix('m') {
        m.parse::<u64>().expect("minutes") * 60
    } else {
        panic!("duration {duration}: expected Ns or Nm")
    }
}

/// The service's shutdown budget, in seconds: a grace period must exceed it.
fn drain_seconds() -> u64 {
    ffd::service::Config::default()
        .learner
        .drain_timeout_ms
        .div_ceil(1000)
}

/// The data directory the image uses: its one `VOLUME`, which `FFD_DATA_DIR`, where the image
/// sets it, names as well.
fn image_data_dir() -> String {
    let image = Dockerfile::read();
    assert_eq!(image.volumes.len(), 1, "one VOLUME: the data directory");
    let dir = image.volumes[0].clone();
    if let Some(data_dir) = image.env("FFD_DATA_DIR") {
        assert_eq!(data_dir, dir, "FFD_DATA_DIR and VOLUME disagree");
    }
    dir
}

#[test]
fn compose_ffd_builds_the_image_publishes_its_port_and_keeps_its_data() {
    let compose = yaml(COMPOSE);
    let ffd = &compose["services"]["ffd"];
    let context = repo_path("deploy").join(str_at(ffd, "/build/context"));
    let dockerfile = context.join(str_at(ffd, "/build/dockerfile"));
    assert_eq!(
        std::fs::canonicalize(&dockerfile).expect("the build's Dockerfile exists"),
        std::fs::canonicalize(repo_path("Dockerfile")).expect("Dockerfile"),
    );

    let listen = container_listen_port(&compose_env(ffd));
    assert!(
        Dockerfile::read().expose.contains(&listen),
        "EXPOSE {listen}"
    );
    let published: Vec<u16> = ffd["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            let p = compose_default(p.as_str().expect("short port syntax"));
            let container = p.rsplit(':').next().expect("a container port");
            container.trim_end_matches("/tcp").parse().expect("numeric")
        })
        .collect();
    assert_eq!(published, [listen], "the published container port");

    let data_dir = image_data_dir();
    if let Some((_, dir)) = compose_env(ffd).iter().find(|(k, _)| k == "FFD_DATA_DIR") {
        assert_eq!(*dir, data_dir);
    }
    let (volume, _) = compose_mounts(ffd)
        .into_iter()
        .find(|(_, target)| *target == data_dir)
        .unwrap_or_else(|| panic!("nothing mounted at the data directory {data_dir}"));
    assert!(
        compose["volumes"].get(&volume).is_some(),
        "{volume} is a named volume declared at the top level"
    );
    let grace = seconds(str_at(ffd, "/stop_grace_period"));
    assert!(grace > drain_seconds(), "stop_grace_period {grace}s");
}

#[test]
fn compose_grafana_finds_its_datasource_and_dashboard() {
    let compose = yaml(COMPOSE);
    let grafana = &compose["services"]["grafana"];
    let mounts = compose_mounts(grafana);
    let host_dir_at = |target: &str| {
        let (source, _) = mounts
            .iter()
            .find(|(_, t)| t == target)
            .unwrap_or_else(|| panic!("nothing mounted at {target}"));
        repo_path("deploy").join(source)
    };
    let provisioning = host_dir_at("/etc/grafana/provisioning");
    assert_eq!(
        std::fs::canonicalize(provisioning.join("datasources/prometheus.yml")).expect("mounted"),
        std::fs::canonicalize(repo_path(GRAFANA_DATASOURCES)).expect("exists"),
    );
    assert!(provisioning.join("dashboards/ffd.yml").is_file());

    // The dashboard provider reads a directory that compose mounts, holding the dashboard.
    let provider = &yaml(GRAFANA_DASHBOARDS)["providers"][0];
    let dashboards_dir = str_at(provider, "/options/path");
    let host_dashboards = host_dir_at(dashboards_dir);
    assert!(host_dashboards.join("ffd.json").is_file());
    let env: BTreeMap<String, String> = compose_env(grafana).into_iter().collect();
    let home = &env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    let home_file = home
        .strip_prefix(&format!("{dashboards_dir}/"))
        .expect("the home dashboard is in the mounted directory");
    assert!(host_dashboards.join(home_file).is_file());

    // The datasource points at the compose Prometheus on the port it listens on.
    let datasource = &yaml(GRAFANA_DATASOURCES)["datasources"][0];
    let url = str_at(datasource, "/url");
    let host_port = url.strip_prefix("http://").expect("http URL");
    let (host, port) = host_port.split_once(':').expect("host:port");
    let prometheus = &compose["services"][host];
    assert!(prometheus.is_object(), "{host} is a compose service");
    assert!(
        str_at(prometheus, "/image").starts_with("prom/prometheus:"),
        "{host} runs Prometheus"
    );
    let published = prometheus["ports"][0].as_str().expect("a port");
    assert!(published.ends_with(&format!(":{port}")), "{published}");
}

#[test]
fn compose_replay_sends_the_committed_mnist_to_the_ffd_service() {
    let compose = yaml(COMPOSE);
    let replay = &compose["services"]["replay"];
    let ffd = &compose["services"]["ffd"];
    assert_eq!(replay["image"], ffd["image"], "replay runs the ffd image");
    let script = compose_default(
        replay["command"]
            .as_array()
            .expect("command")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
            .as_str(),
    );
    let listen = container_listen_port(&compose_env(ffd));
    assert!(
        script.contains(&format!(
            "ffd replay --mnist /data/mnist --url http://ffd:{listen} "
        )),
        "{script}"
    );
    let (source, _) = compose_mounts(replay)
        .into_iter()
        .find(|(_, target)| target == "/data/mnist")
        .expect("MNIST mounted at /data/mnist");
    let mnist = repo_path("deploy").join(source);
    ffd::data::idx::load_mnist(&mnist).expect("the default MNIST_DIR holds a loadable MNIST");
    let env: BTreeMap<String, String> = compose_env(replay).into_iter().collect();
    assert_eq!(
        env.get("FFD_LEARN_TOKEN"),
        compose_env(ffd)
            .iter()
            .find(|(k, _)| k == "FFD_LEARN_TOKEN")
            .map(|(_, v)| v),
        "replay sends the token ffd expects"
    );
}

/// Every object of `deploy/k8s`, by kind (one of each).
fn k8s_objects() -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path(K8S_DIR))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for file in files {
        let relative = format!(
            "{K8S_DIR}/{}",
            file.file_name().expect("name").to_string_lossy()
        );
        for doc in yaml_docs(&relative) {
            for field in ["/apiVersion", "/kind", "/metadata/name"] {
                str_at(&doc, field);
            }
            let kind = str_at(&doc, "/kind").to_owned();
            assert!(
                objects.insert(kind.clone(), doc).is_none(),
                "two {kind} objects"
            );
        }
    }
    objects
}

/// The container's environment as `(name, value)` pairs (`value` entries only).
fn container_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                str_at(e, "/name").to_owned(),
                str_at(e, "/value").to_owned(),
            )
        })
        .collect()
}

/// The container port a probe or Service refers to, by name or number.
fn resolve_port(container: &Value, port: &Value) -> u16 {
    let ports = container["ports"].as_array().expect("container ports");
    let found = match port {
        Value::String(name) => ports.iter().find(|p| p["name"] == *name),
        Value::Number(_) => ports.iter().find(|p| p["containerPort"] == *port),
        _ => None,
    };
    let found = found.unwrap_or_else(|| panic!("port {port} is not a container port"));
    found["containerPort"]
        .as_u64()
        .expect("numeric containerPort") as u16
}

#[test]
fn k8s_objects_are_complete_and_their_references_resolve() {
    let objects = k8s_objects();
    let kinds: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "PersistentVolumeClaim",
            "Secret",
            "Service",
            "ServiceMonitor"
        ]
    );
    let deployment = &objects["Deployment"];
    assert_eq!(deployment["apiVersion"], "apps/v1");
    // One learner owns the model and its ReadWriteOnce volume.
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let template = &deployment["spec"]["template"];
    let pod_labels = template["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(pod_labels.get(k), Some(v), "selector {k} matches the pod");
    }
    let pod = &template["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    str_at(container, "/image");

    // The port: what the service listens on with this environment, and what EXPOSE says.
    let listen = container_listen_port(&container_env(container));
    let ports = container["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["containerPort"], listen);
    assert!(Dockerfile::read().expose.contains(&listen));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let port = &container[probe]["httpGet"]["port"];
        assert_eq!(resolve_port(container, port), listen, "{probe} port");
    }
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"], "/healthz",
        "liveness: the process answers"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"], "/readyz",
        "readiness: the learner runs"
    );

    // Resources: requests and limits for CPU and memory.
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            str_at(container, &format!("/resources/{bound}/{resource}"));
        }
    }

    // Non-root, as the image's numeric USER.
    let (uid, gid) = Dockerfile::read().user.expect("a numeric USER");
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], uid);
    assert_eq!(security["runAsGroup"], gid);
    assert_eq!(
        security["fsGroup"], gid,
        "the volume is writable by the group"
    );
    let container_security = &container["securityContext"];
    assert_eq!(container_security["allowPrivilegeEscalation"], false);
    assert_eq!(container_security["capabilities"]["drop"][0], "ALL");
    assert!(
        container_security["runAsUser"].is_null() || container_security["runAsUser"] == uid,
        "the container does not override the uid"
    );

    // The data directory is the PVC.
    let data_dir = image_data_dir();
    if let Some((_, dir)) = container_env(container)
        .iter()
        .find(|(k, _)| k == "FFD_DATA_DIR")
    {
        assert_eq!(*dir, data_dir);
    }
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume_named = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let data_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == data_dir.as_str())
        .unwrap_or_else(|| panic!("nothing mounted at {data_dir}"));
    let data_volume = volume_named(str_at(data_mount, "/name"));
    let pvc = &objects["PersistentVolumeClaim"];
    assert_eq!(
        data_volume["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    assert_eq!(pvc["spec"]["accessModes"][0], "ReadWriteOnce");
    str_at(pvc, "/spec/resources/requests/storage");

    // The learn token is a file from the Secret, not a literal.
    let env = container_env(container);
    assert!(
        !env.iter().any(|(k, _)| k == "FFD_LEARN_TOKEN"),
        "no token in the manifest"
    );
    let token_file = env
        .iter()
        .find(|(k, _)| k == "FFD_LEARN_TOKEN_FILE")
        .map(|(_, v)| v.as_str())
        .expect("FFD_LEARN_TOKEN_FILE");
    let (token_dir, token_key) = token_file.rsplit_once('/').expect("a path");
    let token_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == token_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {token_dir}"));
    assert_eq!(token_mount["readOnly"], true);
    let secret = &objects["Secret"];
    let token_volume = volume_named(str_at(token_mount, "/name"));
    assert_eq!(
        token_volume["secret"]["secretName"],
        secret["metadata"]["name"]
    );
    assert!(
        secret["stringData"].get(token_key).is_some(),
        "the Secret has the key {token_key}"
    );

    // On SIGTERM the server drains within learner.drain_timeout_ms: the grace period is longer.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > drain_seconds(),
        "terminationGracePeriodSeconds {grace}"
    );

    // Scrape annotations name the container port and /metrics.
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], listen.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // The Service selects the pod and forwards to the container port.
    let service = &objects["Service"];
    assert_eq!(service["apiVersion"], "v1");
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k}");
    }
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(
        resolve_port(container, &service_port["targetPort"]),
        listen,
        "Service targetPort"
    );

    // The ServiceMonitor selects the Service and scrapes its port at /metrics.
    let monitor = &objects["ServiceMonitor"];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let service_labels = service["metadata"]["labels"]
        .as_object()
        .expect("Service labels");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "ServiceMonitor selector {k}"
        );
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service_port["name"]);
    assert_eq!(endpoint["path"], "/metrics");
}

/// Every HTTP path the manifests point at — probes, scrape paths — answers 200 on a real
/// server that is up and ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_and_scrape_path_is_served() {
    let objects = k8s_objects();
    let container = &objects["Deployment"]["spec"]["template"]["spec"]["containers"][0];
    let mut paths: Vec<String> = ["livenessProbe", "readinessProbe", "startupProbe"]
        .iter()
        .map(|probe| str_at(container, &format!("/{probe}/httpGet/path")).to_owned())
        .collect();
    paths.push(
        str_at(
            &objects["Deployment"]["spec"]["template"]["metadata"]["annotations"],
            "/prometheus.io~1path",
        )
        .to_owned(),
    );
    paths.push(str_at(&objects["ServiceMonitor"], "/spec/endpoints/0/path").to_owned());
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    for job in prometheus["scrape_configs"].as_array().expect("jobs") {
        paths.push(
            job["metrics_path"]
                .as_str()
                .unwrap_or("/metrics")
                .to_owned(),
        );
    }

    let s = start_server(small_config()).await;
    // A fresh server becomes ready once its learner thread runs.
    let deadline = std::time::Instant::now() + support::WAIT;
    while s
        .client
        .get(format!("{}/readyz", s.url))
        .send()
        .await
        .expect("the server answers")
        .status()
        == 503
    {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for path in &paths {
        let status = s
            .client
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .expect("the server answers")
            .status();
        assert_eq!(status, 200, "GET {path}");
    }
    s.shutdown().await.expect("clean shutdown");
}

/// The Secret example carries a placeholder, never something that looks like a real token, so
/// applying it unchanged is obvious.
#[test]
fn the_example_secret_holds_a_placeholder() {
    let secret = &k8s_objects()["Secret"];
    for (_, value) in secret["stringData"].as_object().expect("stringData") {
        assert!(
            value.as_str().expect("a string").starts_with("REPLACE-"),
            "{value}"
        );
    }
}
