//! Helpers of the `docker_*` tests: finding a Docker Engine and a BuildKit client, building the
//! image once per test process (on the local base images of `deploy/docker/local-base-images.sh`,
//! so that no registry is needed), and containers, volumes and compose projects that
//! remove themselves when dropped, also when a test fails.

use std::path::{Path, PathBuf};

use super::deploy::repo_path;
use super::tools::{self, on_path};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The learn token the tests' containers run with.
pub const LEARN_TOKEN: &str = "docker-test-learn-token";

/// The port `ffd serve` listens on in the container (the image's `FFD_LISTEN`).
pub const CONTAINER_PORT: u16 = 8080;

/// The image size the Dockerfile aims to stay within.
pub const IMAGE_BUDGET_BYTES: u64 = 100 * 1000 * 1000;

/// The tag the tests build the image as.
pub const IMAGE: &str = "ffd-test:latest";

/// How the tests reach Docker: `cli` talks to the engine; `builder` builds with BuildKit, which
/// the Dockerfile's cache mounts need. A client from Docker 23 on builds with BuildKit only
/// through its buildx plugin; an older one has BuildKit built in, enabled by `DOCKER_BUILDKIT=1`.
/// Debian 12's `docker.io` client is such an older one, and a newer client without buildx may
/// come first on `PATH`, so every `docker` on `PATH` is tried.
#[derive(Clone, Debug)]
pub struct Docker {
    pub cli: PathBuf,
    pub builder: PathBuf,
}

impl Docker {
    /// The Docker clients, or `None` after the skip line when there is no client, no engine
    /// answering, no client that builds with BuildKit, or no debootstrap to make the local base
    /// images with.
    pub fn find() -> Option<Docker> {
        let cli = tools::require("docker", "the Debian package docker.io")?;
        tools::require("debootstrap", "the Debian package debootstrap")?;
        let engine = Command::new(&cli)
            .args(["version", "--format", "{{.Server.Version}}"])
            .output();
        if !engine.as_ref().is_ok_and(|o| o.status.success()) {
            tools::skip("needs a running Docker Engine (`docker version` reaches no server)");
            return None;
        }
        let builder = on_path("docker")
            .into_iter()
            .find(|client| builds_with_buildkit(client));
        match builder {
            Some(builder) => Some(Docker { cli, builder }),
            None => {
                tools::skip(
                    "needs a Docker client that builds with BuildKit (the buildx plugin, or a \
                     client older than 23.0 such as Debian's docker.io)",
                );
                None
            }
        }
    }

    /// `docker ARGS`, its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        Command::new(&self.cli)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
    }

    /// `docker ARGS`, which must succeed; its standard output, trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `docker inspect -f FORMAT OBJECT`.
    pub fn inspect(&self, object: &str, format: &str) -> String {
        self.run(&["inspect", "-f", format, object])
    }

    /// The image [`IMAGE`], built once per test process from the repository's Dockerfile on the
    /// local base images. Prints the build time and the image size.
    pub fn image(&self) -> &'static str {
        static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
        match BUILT.get_or_init(|| self.build()) {
            Ok(()) => IMAGE,
            Err(e) => panic!("{e}"),
        }
    }

    fn build(&self) -> Result<(), String> {
        let base_args = local_base_images(&[])?;
        let started = Instant::now();
        let mut build = Command::new(&self.builder);
        build
            .env("DOCKER_BUILDKIT", "1")
            // The build stage fetches crates over the host's network (local-base-images.sh
            // says why).
            .args(["build", "--network", "host", "--tag", IMAGE])
            .args(&base_args)
            .arg(repo_path("."));
        let out = build
            .output()
            .map_err(|e| format!("cannot run docker build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker build failed ({}):\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 60)
            ));
        }
        let size: u64 = self
            .inspect(IMAGE, "{{.Size}}")
            .parse()
            .map_err(|e| format!("image size: {e}"))?;
        eprintln!(
            "docker build {IMAGE}: {:.1} s, image {:.1} MB",
            started.elapsed().as_secs_f64(),
            size as f64 / 1e6
        );
        if size > IMAGE_BUDGET_BYTES {
            return Err(format!(
                "the image is {size} bytes, over the {IMAGE_BUDGET_BYTES}-byte budget"
            ));
        }
        Ok(())
    }

    /// A container started by `docker run --detach --name NAME ARGS` with a unique name, removed
    /// (with its anonymous volumes) when dropped.
    pub fn start(&self, prefix: &str, args: &[&str]) -> Container {
        let container = Container {
            docker: self.clone(),
            name: unique_name(prefix),
        };
        let mut all = vec!["run", "--detach", "--name", container.name.as_str()];
        all.extend_from_slice(args);
        container.docker.run(&all);
        container
    }

    /// A named volume with a unique name, removed when dropped.
    pub fn volume(&self, prefix: &str) -> Volume {
        let name = unique_name(prefix);
        self.run(&["volume", "create", name.as_str()]);
        Volume {
            docker: self.clone(),
            name,
        }
    }
}

/// `docker-compose` (Debian's package) or the `docker compose` plugin, whichever exists.
pub fn compose_command(docker: &Docker) -> Option<Vec<String>> {
    let works = |program: &std::path::Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let standalone = tools::on_path("docker-compose")
        .into_iter()
        .find(|p| works(p, &["version"]));
    if let Some(program) = standalone {
        return Some(vec![program.display().to_string()]);
    }
    if works(&docker.cli, &["compose", "version"]) {
        return Some(vec![docker.cli.display().to_string(), "compose".into()]);
    }
    tools::skip(
        "needs docker-compose (install the Debian package docker-compose) or `docker compose`",
    );
    None
}

/// A test's compose project: `docker-compose` (or `docker compose`) with repository compose
/// files, then an override the test writes (the image it built, its settings), under a unique
/// project name, with `env` (host ports, the token) in the command's environment. `down
/// --volumes` and the override file removed when dropped.
pub struct ComposeProject {
    command: Vec<String>,
    project: String,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
}

impl ComposeProject {
    /// `files` (repository paths), then `override_text` in a temporary file named after
    /// `project`.
    pub fn new(
        command: Vec<String>,
        project: String,
        files: &[&str],
        override_text: &str,
        env: Vec<(String, String)>,
    ) -> Self {
        let override_file = std::env::temp_dir().join(format!("{project}.override.yml"));
        std::fs::write(&override_file, override_text).expect("write the compose override");
        let mut files: Vec<PathBuf> = files.iter().map(|f| repo_path(f)).collect();
        files.push(override_file);
        Self {
            command,
            project,
            files,
            env,
        }
    }

    /// The project name (compose prefixes its networks and containers with it).
    pub fn project(&self) -> &str {
        &self.project
    }

    /// `compose ARGS` on this project, its output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Output {
        let (program, prefix) = self.command.split_first().expect("a compose command");
        let mut command = Command::new(program);
        command
            .args(prefix)
            .arg("--project-name")
            .arg(&self.project);
        for file in &self.files {
            command.arg("--file").arg(file);
        }
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", self.command))
    }

    /// `compose ARGS`, which must succeed; its standard output, trimmed.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.output(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        if let Some(override_file) = self.files.last() {
            let _ = std::fs::remove_file(override_file);
        }
    }
}

/// Whether `client` builds with BuildKit (see [`Docker`]).
fn builds_with_buildkit(client: &Path) -> bool {
    let buildx = Command::new(client).args(["buildx", "version"]).output();
    if buildx.is_ok_and(|o| o.status.success()) {
        return true;
    }
    let version = Command::new(client)
        .args(["version", "--format", "{{.Client.Version}}"])
        .output();
    let Ok(version) = version else { return false };
    let text = String::from_utf8_lossy(&version.stdout);
    let major = text
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    // BuildKit came built into the client in 18.09 and moved to buildx in 23.0.
    matches!(major, Some(18..=22))
}

/// Runs `deploy/docker/local-base-images.sh EXTRA` (idempotent: seconds when the images exist)
/// and returns the build arguments it prints, which select the local base images.
pub fn local_base_images(extra: &[&str]) -> Result<Vec<String>, String> {
    let script = repo_path("deploy/docker/local-base-images.sh");
    let started = Instant::now();
    let out = Command::new("sh")
        .arg(&script)
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 40)
        ));
    }
    eprintln!(
        "local-base-images.sh {extra:?}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `ffd-it-PREFIX-PID-N`: unique on this engine among concurrent test processes.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "ffd-it-{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A container, removed by `docker rm --force --volumes` when dropped.
pub struct Container {
    docker: Docker,
    pub name: String,
}

impl Container {
    /// `http://127.0.0.1:PORT`, where Docker published the container's [`CONTAINER_PORT`] (run
    /// it with `--publish 127.0.0.1::8080`).
    pub fn url(&self) -> String {
        let port = self
            .docker
            .run(&["port", &self.name, &format!("{CONTAINER_PORT}/tcp")]);
        let address = port.lines().next().unwrap_or_default();
        format!("http://{address}")
    }

    /// `docker inspect -f FORMAT` of this container.
    pub fn inspect(&self, format: &str) -> String {
        self.docker.inspect(&self.name, format)
    }

    /// Waits until the container's HEALTHCHECK reports `healthy`; panics with the health log
    /// after `within`.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = self.inspect("{{.State.Health.Status}}");
            if status == "healthy" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy after {within:?}: {status}; {}",
                self.name,
                self.inspect("{{json .State.Health}}")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What the container printed, standard output and error.
    pub fn logs(&self) -> String {
        let out = self.docker.output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .docker
            .output(&["rm", "--force", "--volumes", &self.name]);
    }
}

/// A named volume, removed when dropped (declare it before the containers that mount it, so
/// that they are dropped first).
pub struct Volume {
    docker: Docker,
    pub name: String,
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = self.docker.output(&["volume", "rm", "--force", &self.name]);
    }
}

/// `GET url`, which must answer `200` with JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Polls `GET url` until it answers 200; panics after `within`. Returns how long it took.
pub async fn wait_for_200(client: &reqwest::Client, url: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = client.get(url).send().await.map(|r| r.status().as_u16());
        if status.as_ref().is_ok_and(|s| *s == 200) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "GET {url} not 200 within {within:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GET {base}/v1/model` until `samples_learned` reaches `want` (it must not pass it);
/// panics after `within`.
pub async fn wait_learned(client: &reqwest::Client, base: &str, want: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let model = get_json(client, &format!("{base}/v1/model")).await;
        let learned = model["samples_learned"].as_u64().unwrap_or_else(|| {
            panic!("no samples_learned in {model}");
        });
        assert!(learned <= want, "{learned} samples learned, {want} sent");
        if learned == want {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{learned} of {want} samples learned after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST {base}/learn` with the learn token and training samples `range` of the committed
/// MNIST subset (`tests/data/mnist-small`) as one batch; must answer 202 accepting all of them.
pub async fn learn(client: &reqwest::Client, base: &str, range: std::ops::Range<usize>) {
    static MNIST: OnceLock<ffd::data::idx::Mnist> = OnceLock::new();
    let mnist = MNIST.get_or_init(|| {
        ffd::data::idx::load_mnist(&repo_path("tests/data/mnist-small"))
            .expect("the committed MNIST subset loads")
    });
    let count = range.len();
    let samples: Vec<serde_json::Value> = range
        .map(|i| {
            let (features, label) = mnist.train.sample(i);
            serde_json::json!({ "features": features, "label": label })
        })
        .collect();
    let response = client
        .post(format!("{base}/learn"))
        .bearer_auth(LEARN_TOKEN)
        .json(&serde_json::json!({ "samples": samples }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/learn: {e}"));
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 202, "POST /learn: {body}");
    assert_eq!(body["accepted"].as_u64(), Some(count as u64), "{body}");
}
