//! NATS servers and `ffd serve` nodes of the cluster backend, for the tests of
//! `cluster.backend = "nats"`: [`NatsServer`] starts Debian's `nats-server` with JetStream on
//! free loopback ports and temporary storage (alone, or three in a cluster); [`FfdNode`] starts
//! the real `ffd` binary against them. Both keep their logs, which a failing test prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support;

/// A free loopback port (bound, then released for the caller).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `nats-server`, or `None` after the skip line (see `support::tools::require`).
pub fn nats_server() -> Option<PathBuf> {
    support::tools::require("nats-server", "the Debian package `nats-server`")
}

/// One running `nats-server` with JetStream.
pub struct NatsServer {
    child: Option<Child>,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    monitor: u16,
    log: PathBuf,
    config: PathBuf,
    bin: PathBuf,
}

impl NatsServer {
    /// One server on its own, storing in `dir`.
    pub fn single(bin: &Path, dir: &Path) -> Self {
        let port = free_port();
        let monitor = free_port();
        let store = dir.join("js");
        let config = format!(
            "server_name: solo\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             jetstream {{ store_dir: {store:?} }}\n"
        );
        Self::start(bin, dir, "solo", port, monitor, &config)
    }

    /// Three servers in one JetStream cluster, each storing under `dir`, returned once every
    /// one is ready (a meta leader is elected).
    ///
    /// Ports are picked free and released before the servers bind them, so another test may take
    /// one in between: a server that exits at start is a lost race, and the whole cluster starts
    /// again on new ports (up to three times). Each cluster has its own name, so a server of
    /// another test's cluster that took a route port is refused as a route instead of joining.
    pub fn cluster(bin: &Path, dir: &Path) -> Vec<Self> {
        for attempt in 1..=3 {
            let mut servers = Self::cluster_on_free_ports(bin, &dir.join(format!("try{attempt}")));
            if servers
                .iter_mut()
                .all(|s| s.ready_or_exited() == Ready::Yes)
            {
                return servers;
            }
            if let Some(lost) = servers.iter_mut().position(|s| !s.running()) {
                let lost = &servers[lost];
                eprintln!(
                    "nats-server {} exited at start (retrying on new ports):\n{}",
                    lost.url,
                    lost.log_tail()
                );
                continue;
            }
            panic!(
                "the NATS cluster never became ready:\n{}",
                servers
                    .iter()
                    .map(|s| format!("===== {} =====\n{}", s.url, s.log_tail()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        panic!("three NATS clusters in a row lost a port to another program");
    }

    fn cluster_on_free_ports(bin: &Path, dir: &Path) -> Vec<Self> {
        std::fs::create_dir_all(dir).expect("cluster directory");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let cluster = format!("ffd-test-{}", ports[0].0);
        ports
            .iter()
            .enumerate()
            .map(|(i, &(port, monitor, route))| {
                let name = format!("n{}", i + 1);
                let store = dir.join(&name);
                let config = format!(
                    "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                     jetstream {{ store_dir: {store:?} }}\n\
                     cluster {{ name: {cluster}, listen: \"127.0.0.1:{route}\", routes: [{}] }}\n",
                    routes.join(", ")
                );
                Self::start(bin, dir, &name, port, monitor, &config)
            })
            .collect()
    }

    fn start(bin: &Path, dir: &Path, name: &str, port: u16, monitor: u16, config: &str) -> Self {
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config).expect("config written");
        let mut server = Self {
            child: None,
            url: format!("nats://127.0.0.1:{port}"),
            monitor,
            log: dir.join(format!("{name}.log")),
            config: config_path,
            bin: bin.to_path_buf(),
        };
        server.restart();
        server
    }

    /// Starts the server again (after [`NatsServer::kill`]) with the same ports and storage.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    /// Waits until the server's `/healthz` says JetStream is ready (in a cluster: a meta leader
    /// is elected).
    pub fn wait_ready(&mut self) {
        if self.ready_or_exited() != Ready::Yes {
            panic!(
                "nats-server {} never became ready:\n{}",
                self.url,
                self.log_tail()
            );
        }
    }

    /// Polls `/healthz` for up to a minute (a cluster's election is slow on a loaded machine),
    /// stopping early if the process is gone.
    fn ready_or_exited(&mut self) -> Ready {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if http_status(self.monitor, "/healthz") == Some(200) {
                return Ready::Yes;
            }
            if !self.running() {
                return Ready::Exited;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ready::TimedOut
    }

    /// Whether the process is still alive.
    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the server logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 60 lines of the log: where a failure to start or to elect shows.
    fn log_tail(&self) -> String {
        let logs = self.logs();
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

/// How waiting for a server ended.
#[derive(Debug, PartialEq, Eq)]
enum Ready {
    Yes,
    Exited,
    TimedOut,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status of `GET path` on a loopback port (`None`: no answer).
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A running `ffd serve` of the cluster backend (the real binary).
pub struct FfdNode {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// This node's `cluster.node`.
    pub name: String,
    log: Arc<Mutex<Vec<String>>>,
    reaped: bool,
}

/// The environment of a test node: the cluster backend against `urls`, a small network, a
/// lease of `lease_seconds`, frequent checkpoints and snapshot sharing.
pub fn node_env(
    urls: &[&str],
    name: &str,
    replicas: usize,
    lease_seconds: f64,
) -> Vec<(String, String)> {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    vec![
        ("FFD_CLUSTER__BACKEND".into(), "nats".into()),
        (
            "FFD_CLUSTER__NATS_URLS".into(),
            format!("[{}]", urls.join(", ")),
        ),
        ("FFD_CLUSTER__NODE".into(), name.into()),
        ("FFD_CLUSTER__REPLICAS".into(), replicas.to_string()),
        (
            "FFD_CLUSTER__LEASE_SECONDS".into(),
            lease_seconds.to_string(),
        ),
        ("FFD_CLUSTER__SHARE_EVERY_MS".into(), "100".into()),
        ("FFD_NETWORK__HIDDEN".into(), "[32, 32]".into()),
        // The constant rate of `support::small_config` (what the bounds on the small subset
        // were measured at).
        ("FFD_TRAIN__LR".into(), "3e-4".into()),
        ("FFD_TRAIN__LR_BOOST".into(), "1".into()),
        ("FFD_LEARNER__SNAPSHOT_EVERY_MS".into(), "20".into()),
        ("FFD_LEARNER__DRAIN_TIMEOUT_MS".into(), "5000".into()),
        // Several nodes share the test machine's cores.
        ("FFD_LEARNER__THREADS".into(), "1".into()),
        (
            "FFD_DURABILITY__CHECKPOINT_EVERY_SECONDS".into(),
            "0.5".into(),
        ),
    ]
}

impl FfdNode {
    /// Starts `ffd serve` on a free port with `env`; waits for its `listening` line.
    pub fn start(name: &str, env: &[(String, String)]) -> Self {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut child =
            support::ffd_serve(&["--listen", "127.0.0.1:0", "--log-format", "json"], &env)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("ffd starts");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) {
                    if log["fields"]["message"] == "listening" {
                        let _ = tx.send(log["fields"]["addr"].as_str().map(str::to_owned));
                    }
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(addr)) => addr,
            _ => panic!(
                "ffd node {name} did not start:\n{}",
                log.lock().map(|l| l.join("\n")).unwrap_or_default()
            ),
        };
        Self {
            child,
            url: format!("http://{addr}"),
            name: name.into(),
            log,
            reaped: false,
        }
    }

    /// What the node logged so far.
    pub fn logs(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: a plain syscall on a child this test started and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to {}", self.name);
    }

    /// SIGKILL, and reaps the process.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self, client: &reqwest::Client) -> String {
        client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("the node answers")
            .text()
            .await
            .expect("text")
    }

    /// `GET /v1/model`.
    pub async fn model(&self, client: &reqwest::Client) -> serde_json::Value {
        match client.get(format!("{}/v1/model", self.url)).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }
}

impl Drop for FfdNode {
    fn drop(&mut self) {
        if !self.reaped {
            // A stopped process must run again to die of SIGKILL promptly... it does, but a
            // SIGCONT first keeps its pipes from holding the reader thread.
            // SAFETY: a child this test started and has not reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
