//! `deploy/docker-compose.yml` and `deploy/k8s/*.yaml` parse and agree with what the image and
//! the service really do: the port `ffd serve` listens on in the container (the Dockerfile's
//! config and `FFD_LISTEN`), the data directory the image declares, the image's non-root uid,
//! probe and scrape paths that a real server answers with 200, and references between objects
//! (volumes, claims, secrets, selectors, named ports) that resolve. The cluster manifests
//! (`deploy/k8s/cluster/`) and the NATS chart's values (`deploy/helm/nats-values.yaml`) agree
//! with each other and with the service: real settings only, the NATS Service the chart makes,
//! copies JetStream can place, and nodes that start with that environment on a NATS cluster.
use crate::support;

use std::collections::BTreeMap;

use crate::support::deploy::{
    compose_default, compose_env, container_config, container_listen_port, repo_path, str_at, yaml,
    yaml_docs, Dockerfile,
};
use crate::support::{small_config, start_server};
use serde_json::Value;

const COMPOSE: &str = "deploy/docker-compose.yml";
const K8S_DIR: &str = "deploy/k8s";
const K8S_CLUSTER_DIR: &str = "deploy/k8s/cluster";
const NATS_VALUES: &str = "deploy/helm/nats-values.yaml";
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
    k8s_objects_in(K8S_DIR)
}

/// Every object of the YAML files directly in `dir` (what `kubectl apply -f dir` applies), by
/// kind (one of each). Each is a Kubernetes object: a file that is not fails here.
fn k8s_objects_in(dir: &str) -> BTreeMap<String, Value> {
    let mut objects = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_path(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for file in files {
        let relative = format!(
            "{dir}/{}",
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

/// The pod name the cluster tests give a node: what the downward API's `metadata.name` says.
const POD_NAME: &str = "ffd-cluster-5d8f7c9b6-x2k4q";

/// The container's environment as the kubelet sets it in the pod `pod`: `value` entries, and
/// `valueFrom.fieldRef` of `metadata.name`, the one downward-API field these manifests use.
fn pod_env(container: &Value, pod: &str) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = str_at(e, "/name").to_owned();
            let value = match e.get("value") {
                Some(v) => v.as_str().expect("a string value").to_owned(),
                None => {
                    let field = str_at(e, "/valueFrom/fieldRef/fieldPath");
                    assert_eq!(field, "metadata.name", "{name}: an unexpected field");
                    pod.to_owned()
                }
            };
            (name, value)
        })
        .collect()
}

/// Whether a `matchLabels`-style selector selects an object with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .expect("a label selector")
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

/// The release name and values file of `helm install RELEASE nats/nats -f VALUES`, the same in
/// every place that shows the command (the docs and the manifests' comments).
fn documented_helm_install() -> (String, String) {
    let mut found = Vec::new();
    for file in [
        "deploy/README.md",
        "docs/cluster.md",
        NATS_VALUES,
        "deploy/k8s/cluster/deployment.yaml",
    ] {
        let text = std::fs::read_to_string(repo_path(file)).expect("readable");
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words.windows(2).position(|w| w == ["helm", "install"]) else {
                continue;
            };
            assert_eq!(words.get(at + 3), Some(&"nats/nats"), "{file}: {line}");
            let values = words
                .iter()
                .position(|w| *w == "-f" || *w == "--values")
                .and_then(|i| words.get(i + 1))
                .unwrap_or_else(|| panic!("{file}: no values file in `{line}`"));
            found.push((file, words[at + 2].to_owned(), (*values).to_owned()));
        }
    }
    for doc in ["deploy/README.md", "docs/cluster.md"] {
        assert!(
            found.iter().any(|(f, _, _)| *f == doc),
            "{doc} shows no `helm install`"
        );
    }
    let (_, release, values) = found[0].clone();
    for (file, r, v) in &found {
        assert_eq!(
            (r, v),
            (&release, &values),
            "{file} installs another release"
        );
    }
    (release, values)
}

/// What the NATS chart (`nats/nats`) calls its objects for `release` with `values`: its
/// `nats.fullname` helper (`fullnameOverride`; else the release name when it contains the
/// chart's name, `nameOverride` or `nats`; else `RELEASE-NAME`), then the client Service
/// (`service.name`, default the full name), the headless Service (`headlessService.name`,
/// default `FULLNAME-headless`) and the StatefulSet (`statefulSet.name`, default the full name),
/// whose pods are `STATEFULSET-0`, `-1`, ...
struct ChartNames {
    service: String,
    headless: String,
    stateful_set: String,
}

fn chart_names(release: &str, values: &Value) -> ChartNames {
    let fullname = match values["fullnameOverride"].as_str() {
        Some(name) => name.to_owned(),
        None => {
            let name = values["nameOverride"].as_str().unwrap_or("nats");
            if release.contains(name) {
                release.to_owned()
            } else {
                format!("{release}-{name}")
            }
        }
    };
    let named =
        |key: &str, default: String| values[key]["name"].as_str().map_or(default, str::to_owned);
    ChartNames {
        service: named("service", fullname.clone()),
        headless: named("headlessService", format!("{fullname}-headless")),
        stateful_set: named("statefulSet", fullname),
    }
}

/// Every leaf of a YAML mapping as a dotted path.
fn leaf_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(v, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Bytes of a Kubernetes quantity with a binary or decimal suffix (`10Gi`, `500M`).
fn quantity_bytes(q: &str) -> u64 {
    let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let factor: u64 = match &q[digits.len()..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => panic!("{q}: unknown suffix {other}"),
    };
    digits.parse::<u64>().unwrap_or_else(|e| panic!("{q}: {e}")) * factor
}

/// Keys of the NATS chart's values (chart 1.0 to 2.x, `helm/charts/nats/values.yaml` of
/// github.com/nats-io/k8s) that the values file may set; a path ending in `.` admits anything
/// below it. Helm ignores a key the chart does not know, so a misspelt one would silently leave
/// the default (JetStream off, say): this list makes it fail instead.
const CHART_KEYS: [&str; 17] = [
    "nameOverride",
    "fullnameOverride",
    "config.cluster.enabled",
    "config.cluster.replicas",
    "config.cluster.port",
    "config.jetstream.enabled",
    "config.jetstream.fileStore.enabled",
    "config.jetstream.fileStore.dir",
    "config.jetstream.fileStore.maxSize",
    "config.jetstream.fileStore.pvc.enabled",
    "config.jetstream.fileStore.pvc.size",
    "config.jetstream.fileStore.pvc.storageClassName",
    "config.jetstream.memoryStore.enabled",
    "config.jetstream.memoryStore.maxSize",
    "config.nats.port",
    "podTemplate.topologySpreadConstraints.",
    "container.image.",
];

/// `deploy/helm/nats-values.yaml` runs a JetStream cluster with file storage, and sets only keys
/// the chart has.
#[test]
fn nats_values_make_a_jetstream_cluster_with_file_storage() {
    let (_, values_file) = documented_helm_install();
    assert_eq!(values_file, NATS_VALUES, "the documented values file");
    let values = yaml(NATS_VALUES);
    let mut paths = Vec::new();
    leaf_paths(&values, "", &mut paths);
    for path in &paths {
        assert!(
            CHART_KEYS
                .iter()
                .any(|k| path == k || (k.ends_with('.') && path.starts_with(k))),
            "{NATS_VALUES}: `{path}` is not a value of the NATS chart"
        );
    }
    let config = &values["config"];
    assert_eq!(config["cluster"]["enabled"], true, "a cluster of servers");
    // The chart's minimum with JetStream, and a majority that survives one server.
    let servers = config["cluster"]["replicas"]
        .as_u64()
        .expect("config.cluster.replicas");
    assert!(servers >= 3, "{servers} servers");
    let js = &config["jetstream"];
    assert_eq!(js["enabled"], true, "JetStream");
    // ffd's streams and buckets are file-backed (docs/cluster.md): the file store must be on,
    // on a volume of its own (an emptyDir would lose the stream with the pod).
    assert_ne!(js["fileStore"]["enabled"], false, "the file store");
    assert_ne!(
        js["fileStore"]["pvc"]["enabled"], false,
        "a volume per server"
    );
    let size = quantity_bytes(str_at(js, "/fileStore/pvc/size"));
    assert!(size >= 1 << 30, "a file store of {size} bytes");
}

/// `deploy/k8s/cluster/`: ffd nodes of the cluster backend, with settings the service has, the
/// NATS Service the chart makes for the documented release, as many copies as there are NATS
/// servers, the probes and the token Secret of the single-node setup, no data volume, and
/// selectors that keep the two setups apart.
#[test]
fn k8s_cluster_objects_point_at_the_chart_service_and_resolve() {
    let objects = k8s_objects_in(K8S_CLUSTER_DIR);
    let kinds: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["Deployment", "PodDisruptionBudget", "Service"]);
    let deployment = &objects["Deployment"];
    let template = &deployment["spec"]["template"];
    let pod_labels = &template["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let pod = &template["spec"];
    let container = &pod["containers"][0];
    assert_eq!(pod["containers"].as_array().map(Vec::len), Some(1));

    // Every FFD_* variable is a setting (an unknown one fails to load, as it would fail the
    // node's start), and together they make a node of the cluster backend named after its pod.
    let env = pod_env(container, POD_NAME);
    let config = container_config(&env);
    assert_eq!(
        config.cluster.backend,
        ffd::service::config::ClusterBackend::Nats
    );
    assert_eq!(config.cluster.node, POD_NAME, "the node id is the pod name");

    // The NATS URLs reach the Services of the documented Helm release, on the client port.
    let values = yaml(NATS_VALUES);
    let (release, _) = documented_helm_install();
    let names = chart_names(&release, &values);
    let servers = values["config"]["cluster"]["replicas"]
        .as_u64()
        .expect("servers") as usize;
    // The chart's default client port.
    let port = values["config"]["nats"]["port"].as_u64().unwrap_or(4222);
    assert!(!config.cluster.nats_urls.is_empty());
    for url in &config.cluster.nats_urls {
        let host_port = url.strip_prefix("nats://").expect("a nats:// URL");
        let (host, url_port) = host_port.rsplit_once(':').expect("host:port");
        assert_eq!(url_port, port.to_string(), "{url}: the client port");
        // `svc`, `svc.namespace`, `svc.namespace.svc...`; a pod: `pod-N.headless...`.
        let mut labels = host.split('.');
        let first = labels.next().unwrap_or_default();
        let pods: Vec<String> = (0..servers)
            .map(|i| format!("{}-{i}", names.stateful_set))
            .collect();
        let ok = first == names.service
            || first == names.headless
            || (pods.iter().any(|p| p.as_str() == first)
                && labels.next() == Some(names.headless.as_str()));
        assert!(
            ok,
            "{url}: not the Service {} (or {}) of the release `{release}`",
            names.service, names.headless
        );
    }

    // JetStream places each copy on another server: no more copies than servers (the stream
    // could not be created), and one per server as the values file promises.
    assert!(config.cluster.replicas <= servers);
    assert_eq!(config.cluster.replicas, servers, "a copy on every server");
    // Another node to take over, and disruptions that leave one.
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "{replicas} ffd nodes: none to take over");
    let pdb = &objects["PodDisruptionBudget"];
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    let max_unavailable = pdb["spec"]["maxUnavailable"]
        .as_u64()
        .expect("maxUnavailable");
    assert!(max_unavailable < replicas);

    // The port and the probes as in the single-node Deployment.
    let listen = config.listen.port();
    assert!(Dockerfile::read().expose.contains(&listen));
    assert_eq!(container["ports"][0]["containerPort"], listen);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let port = &container[probe]["httpGet"]["port"];
        assert_eq!(resolve_port(container, port), listen, "{probe} port");
    }
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let annotations = &template["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], listen.to_string());
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(
        grace > drain_seconds(),
        "terminationGracePeriodSeconds {grace}"
    );

    // Non-root as the image's USER, read-only root filesystem, nothing at the data directory
    // (the cluster backend writes no file: the live test below runs nodes without one).
    let (uid, gid) = Dockerfile::read().user.expect("a numeric USER");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], uid);
    assert_eq!(pod["securityContext"]["runAsGroup"], gid);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let data_dir = image_data_dir();
    assert!(
        !mounts.iter().any(|m| m["mountPath"] == data_dir.as_str()),
        "a volume at {data_dir}: the cluster backend keeps no state there"
    );

    // The learn token: the single-node setup's Secret, as a file.
    assert!(!env.iter().any(|(k, _)| k == "FFD_LEARN_TOKEN"));
    let token_file = &env
        .iter()
        .find(|(k, _)| k == "FFD_LEARN_TOKEN_FILE")
        .expect("FFD_LEARN_TOKEN_FILE")
        .1;
    let (token_dir, token_key) = token_file.rsplit_once('/').expect("a path");
    let token_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == token_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {token_dir}"));
    assert_eq!(token_mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == token_mount["name"])
        .expect("the token's volume");
    let single = k8s_objects();
    let secret = &single["Secret"];
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    assert!(secret["stringData"].get(token_key).is_some());

    // The cluster's Service reaches its nodes and no single-node pod, and the single-node
    // Service and Deployment never take a cluster pod: two models must not share a Service.
    let service = &objects["Service"];
    let single_pod_labels = &single["Deployment"]["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&service["spec"]["selector"], pod_labels));
    assert!(!selects(&service["spec"]["selector"], single_pod_labels));
    assert!(!selects(&single["Service"]["spec"]["selector"], pod_labels));
    assert!(!selects(
        &single["Deployment"]["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(!selects(
        &deployment["spec"]["selector"]["matchLabels"],
        single_pod_labels
    ));
    assert_eq!(
        resolve_port(container, &service["spec"]["ports"][0]["targetPort"]),
        listen
    );
    // The ServiceMonitor of deploy/k8s scrapes the cluster's Service too, on the same port name.
    let monitor = &single["ServiceMonitor"];
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

/// The cluster Deployment's environment, as the kubelet sets it for three pods, on the image's
/// configuration: three `ffd serve` nodes on a three-server NATS cluster (Debian's
/// `nats-server`) become ready, answer every probe and scrape path with 200, elect one learner,
/// name themselves after their pods, and a sample learned through one node is served by all.
/// Only what a machine without Kubernetes needs is changed: the NATS URLs (the local servers),
/// the token file, and the data directory, which is put where no directory can be created (as
/// on the read-only root filesystem): the nodes never need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_deployment_runs_nodes_on_a_nats_cluster_without_a_data_directory() {
    use crate::support::nats::{nats_server, FfdNode, NatsServer};

    let Some(bin) = nats_server() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nats = NatsServer::cluster(&bin, dir.path());
    let urls: Vec<String> = nats.iter().map(|s| format!("{:?}", s.url)).collect();
    let token_file = dir.path().join("learn-token");
    std::fs::write(&token_file, "cluster-test-token\n").expect("token written");
    // A path below a regular file: not even root can create it.
    let no_data_dir = token_file.join("ffd-data");

    let objects = k8s_objects_in(K8S_CLUSTER_DIR);
    let deployment = &objects["Deployment"];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas") as usize;
    let mut paths: Vec<String> = ["livenessProbe", "readinessProbe", "startupProbe"]
        .iter()
        .map(|probe| str_at(container, &format!("/{probe}/httpGet/path")).to_owned())
        .collect();
    paths.push(
        str_at(
            &deployment["spec"]["template"]["metadata"]["annotations"],
            "/prometheus.io~1path",
        )
        .to_owned(),
    );

    let pods: Vec<String> = (0..replicas)
        .map(|i| format!("ffd-cluster-5d8f7c9b6-pod{i}"))
        .collect();
    let nodes: Vec<FfdNode> = pods
        .iter()
        .map(|pod| {
            let mut env: Vec<(String, String)> = Dockerfile::read().env;
            for (k, v) in pod_env(container, pod) {
                let v = match k.as_str() {
                    "FFD_CLUSTER__NATS_URLS" => format!("[{}]", urls.join(", ")),
                    "FFD_LEARN_TOKEN_FILE" => token_file.display().to_string(),
                    _ => v,
                };
                env.push((k, v));
            }
            env.push(("FFD_DATA_DIR".into(), no_data_dir.display().to_string()));
            FfdNode::start(pod, &env)
        })
        .collect();
    let logs = || {
        nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.name, n.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let client = reqwest::Client::new();
    let status = |url: String| {
        let client = client.clone();
        async move {
            match client.get(url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };

    // Ready, every path served, one learner, each named after its pod.
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let mut ready = true;
        let mut learners = 0;
        for (node, pod) in nodes.iter().zip(&pods) {
            ready &= status(format!("{}/readyz", node.url)).await == 200;
            let model = node.model(&client).await;
            if model["cluster"]["role"] == "learner" {
                learners += 1;
            }
            if !model.is_null() {
                assert_eq!(model["cluster"]["node"], pod.as_str());
            }
        }
        if ready && learners == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready with one learner ({learners} learners):\n{}",
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for node in &nodes {
        for path in &paths {
            assert_eq!(
                status(format!("{}{path}", node.url)).await,
                200,
                "GET {path} on {}",
                node.name
            );
        }
    }

    // A sample learned through one node is served by every node.
    let data = support::mnist_small();
    let accepted = client
        .post(format!("{}/learn", nodes[replicas - 1].url))
        .bearer_auth("cluster-test-token")
        .json(&support::batch_json(&data.train, 0..20))
        .send()
        .await
        .expect("an answer");
    assert_eq!(accepted.status(), 202, "{}", logs());
    for node in &nodes {
        let deadline = std::time::Instant::now() + support::WAIT;
        while node.model(&client).await["snapshot_samples_learned"].as_u64() < Some(20) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never served the 20 samples:\n{}",
                node.name,
                logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert!(!no_data_dir.exists());
}
