#!/usr/bin/env python3
"""Failover and replica staleness of the cluster backend (BENCHMARKS.md §9), measured on real
processes: three `nats-server` in one JetStream cluster (`replicas = 3`) and three release
`ffd serve` nodes, all on loopback.

Both loads stay below the learner's rate (about 1 600 samples/s on one idle core of the
machine in BENCHMARKS.md), so that what is measured is the cluster's delay, not a backlog.

1. Staleness: under a steady load (3 clients, `--rate` samples/s in all), a probe sends one
   sample to `/learn` on one node every 100 ms and polls another node's `/v1/model` until its `cluster.learned_seq` reaches the probe's `last_seq`: the time
   from the `202` until a replica serves a model that has learned the sample. Target: p99 <= 2 s.
2. Failover: under load from 3 clients (`--failover-rate` samples/s in all; each request
   retried with its `Idempotency-Key` until acknowledged, on the next node when one does not
   answer), SIGKILL the learning node, `--cycles` times. Per cycle: when another node holds the lease, when it is learning again
   (role `learner` with its learned count moving), and when it has learned past where the
   killed learner stopped. Then the load stops, and once the stream is drained the learner's
   `samples_learned` must equal the acknowledged samples exactly (nothing lost, nothing
   twice); the killed node is started again (it rejoins as a replica). Target: learning again
   within 10 s of the SIGKILL.

Needs `nats-server` (Debian package `nats-server`), `target/release/ffd` (`cargo build
--release`) and python3 with numpy. Usage:

    bench/cluster_bench.py [--mnist DIR] [--cycles 20] [--lease 2] [--probes 300]

The nodes run the service's defaults (784-500-500) except the cluster settings and
`--lease`. Exits non-zero when a target is missed. Logs: target/cluster-bench/.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from drift_bench import load_train, samples  # noqa: E402  (shared MNIST reading)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FFD = os.path.join(ROOT, "target", "release", "ffd")
LOGS = os.path.join(ROOT, "target", "cluster-bench")
BATCH = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port, method, path, body=None, headers=None, timeout=2.0):
    """(status, parsed body or None); (None, None) when the node does not answer."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, None
    except (OSError, http.client.HTTPException):
        return None, None


class Nats:
    def __init__(self, work, name, routes, port, monitor, route):
        store = os.path.join(work, name)
        self.config = os.path.join(work, f"{name}.conf")
        self.url = f"nats://127.0.0.1:{port}"
        self.monitor = monitor
        with open(self.config, "w") as f:
            f.write(
                f'server_name: {name}\nlisten: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{monitor}"\n'
                f'jetstream {{ store_dir: "{store}" }}\n'
                f'cluster {{ name: bench, listen: "127.0.0.1:{route}", routes: [{routes}] }}\n'
            )
        self.log = open(os.path.join(LOGS, f"nats-{name}.log"), "a")
        self.proc = subprocess.Popen(
            [shutil.which("nats-server"), "-c", self.config], stdout=self.log, stderr=self.log
        )

    def wait_ready(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if http_json(self.monitor, "GET", "/healthz")[0] == 200:
                return
            time.sleep(0.05)
        sys.exit(f"nats-server {self.url} not ready; see {LOGS}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Node:
    def __init__(self, name, urls, lease):
        self.name = name
        self.port = free_port()
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("FFD_")
        } | {
            "FFD_CLUSTER__BACKEND": "nats",
            "FFD_CLUSTER__NATS_URLS": json.dumps(urls),
            "FFD_CLUSTER__NODE": name,
            "FFD_CLUSTER__REPLICAS": "3",
            "FFD_CLUSTER__LEASE_SECONDS": str(lease),
        }
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(LOGS, f"{self.name}.log"), "a")
        self.proc = subprocess.Popen(
            [FFD, "serve", "--listen", f"127.0.0.1:{self.port}"],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if http_json(self.port, "GET", "/healthz")[0] == 200:
                return
            if self.proc.poll() is not None:
                sys.exit(f"ffd node {self.name} exited; see {LOGS}/{self.name}.log")
            time.sleep(0.05)
        sys.exit(f"ffd node {self.name} did not start; see {LOGS}/{self.name}.log")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def model(self, timeout=2.0):
        status, body = http_json(self.port, "GET", "/v1/model", timeout=timeout)
        return body if status == 200 else None


class Load:
    """`clients` threads sending batches of BATCH samples to /learn, each request retried with
    its Idempotency-Key until acknowledged (on the next node when one does not answer).
    `rate` (samples/s in all) paces them; 0 is as fast as they go."""

    def __init__(self, nodes, bodies, phase, clients=3, rate=0):
        self.nodes, self.bodies, self.phase = nodes, bodies, phase
        self.acked = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failed = None
        self.interval = clients * BATCH / rate if rate else 0
        self.threads = [
            threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)
        ]
        for t in self.threads:
            t.start()

    def client(self, i):
        target, n = i, 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            body = self.bodies[(i * 997 + n) % len(self.bodies)]
            key = f"bench-{self.phase}-{i}-{n}"
            give_up = time.monotonic() + 60
            while True:
                if time.monotonic() > give_up:
                    self.failed = f"request {key} never acknowledged"
                    return
                node = self.nodes[target % len(self.nodes)]
                status, _ = http_json(
                    node.port,
                    "POST",
                    "/learn",
                    body,
                    {"Content-Type": "application/json", "Idempotency-Key": key},
                )
                if status == 202:
                    with self.lock:
                        self.acked += BATCH
                    break
                if status is None:
                    target += 1
                elif status not in (429, 503):
                    self.failed = f"unexpected {status} for {key}"
                    return
                time.sleep(0.02)
            n += 1
            if self.interval:
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def count(self):
        with self.lock:
            return self.acked

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join()
        if self.failed:
            sys.exit(f"load client failed: {self.failed}")
        return self.acked


def models(nodes):
    return [n.model(timeout=1.0) if n.proc.poll() is None else None for n in nodes]


def learner_of(nodes, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ms = models(nodes)
        found = [i for i, m in enumerate(ms) if m and m["cluster"]["role"] == "learner"]
        if len(found) == 1:
            return found[0]
        time.sleep(0.05)
    sys.exit(f"no single learner within {timeout} s: {models(nodes)}")


def drain(nodes, acked, timeout=300):
    """Waits until the learner has learned `acked` samples, then half a second more (anything
    arriving after that would be a duplicate); returns what it learned."""
    deadline = time.monotonic() + timeout
    learned = None
    while time.monotonic() < deadline:
        li = learner_of(nodes)
        m = nodes[li].model()
        learned = m["samples_learned"] if m else learned
        if learned is not None and learned >= acked:
            time.sleep(0.5)
            m = nodes[li].model()
            return m["samples_learned"] if m else learned
        time.sleep(0.05)
    return learned


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def staleness(nodes, bodies, one, probes, rate):
    """Per probe: (seconds until the learner had learned it, seconds until a replica served
    it). Returns those and the samples acknowledged in all."""
    load = Load(nodes, bodies, "steady", rate=rate)
    time.sleep(1.0)
    took = []
    rng = random.Random(7)
    li = learner_of(nodes)
    replicas = [i for i in range(len(nodes)) if i != li]
    for k in range(probes):
        reader = rng.choice(replicas)
        via = rng.choice([i for i in range(len(nodes)) if i != reader])
        status, body = http_json(
            nodes[via].port, "POST", "/learn", one[k % len(one)],
            {"Content-Type": "application/json"},
        )
        sent = time.monotonic()
        if status != 202:
            sys.exit(f"probe {k}: /learn answered {status}")
        seq = body["last_seq"]
        learned = None
        while True:
            if learned is None:
                m = nodes[li].model()
                if m and m["learned_seq"] >= seq:
                    learned = time.monotonic() - sent
            m = nodes[reader].model()
            if m and m["cluster"]["learned_seq"] >= seq:
                served = time.monotonic() - sent
                took.append((learned if learned is not None else served, served))
                break
            if time.monotonic() - sent > 30:
                sys.exit(
                    f"probe {k} (last_seq {seq}): not served by {nodes[reader].name} within "
                    f"30 s; /v1/model of each node: {json.dumps(models(nodes))}"
                )
            time.sleep(0.005)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))
    acked = load.stop()
    return took, acked + probes


def failover(nodes, bodies, cycle, rate):
    load = Load(nodes, bodies, f"cycle{cycle}", rate=rate)
    time.sleep(2.0)
    li = learner_of(nodes)
    before = nodes[li].model()
    stopped_at = before["samples_learned"] if before else 0
    nodes[li].kill()
    killed = time.monotonic()
    lease = learning = caught_up = None
    first = {}
    while time.monotonic() - killed < 60 and caught_up is None:
        now = time.monotonic() - killed
        for i, m in enumerate(models(nodes)):
            if i == li or not m:
                continue
            role = m["cluster"]["role"]
            if role in ("starting", "learner") and lease is None:
                lease = now
            if role == "learner":
                first.setdefault(i, m["samples_learned"])
                if learning is None and m["samples_learned"] > first[i]:
                    learning = now
                if m["samples_learned"] > stopped_at:
                    caught_up = now
        time.sleep(0.02)
    acked = load.stop()
    return li, lease, learning, caught_up, acked


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mnist", default=os.path.join(ROOT, "tests", "data", "mnist-small"))
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--lease", type=float, default=2.0, help="cluster.lease_seconds")
    p.add_argument("--probes", type=int, default=300)
    p.add_argument("--rate", type=float, default=100, help="load while probing, samples/s")
    p.add_argument(
        "--failover-rate", type=float, default=600, help="load while killing, samples/s (0: flat out)"
    )
    args = p.parse_args()
    if not shutil.which("nats-server"):
        sys.exit("needs nats-server (install the Debian package `nats-server`)")
    if not os.path.exists(FFD):
        sys.exit(f"{FFD} missing: run `cargo build --release` first")
    os.makedirs(LOGS, exist_ok=True)
    x, y = load_train(args.mnist)
    rows = samples(x[:2000], y[:2000])
    bodies = [
        json.dumps({"samples": rows[i : i + BATCH]}).encode()
        for i in range(0, len(rows) - BATCH + 1, BATCH)
    ]
    one = [json.dumps(r).encode() for r in rows[:200]]

    work = tempfile.mkdtemp(prefix="ffd-cluster-bench-")
    servers, nodes = [], []
    try:
        ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
        routes = ", ".join(f'"nats-route://127.0.0.1:{r}"' for _, _, r in ports)
        servers = [Nats(work, f"n{i + 1}", routes, *ports[i]) for i in range(3)]
        for s in servers:
            s.wait_ready()
        urls = [s.url for s in servers]
        for i in range(3):
            own_first = urls[i:] + urls[:i]
            nodes.append(Node(f"node-{'abc'[i]}", own_first, args.lease))
        learner_of(nodes)
        print(f"3 NATS servers, 3 ffd nodes (lease {args.lease} s); logs in {LOGS}", flush=True)

        took, total = staleness(nodes, bodies, one, args.probes, args.rate)
        learned = drain(nodes, total)
        ms = lambda values, q: f"{percentile(values, q) * 1e3:.0f}"
        at_learner = [t[0] for t in took]
        served = [t[1] for t in took]
        print(
            f"staleness: {len(took)} probes under {args.rate:.0f} samples/s: served by a "
            f"replica p50 {ms(served, 50)} ms, p99 {ms(served, 99)} ms, max {ms(served, 100)} ms "
            f"(learned by the learner: p50 {ms(at_learner, 50)} ms, p99 {ms(at_learner, 99)} ms, "
            f"max {ms(at_learner, 100)} ms); learned {learned} of {total} acknowledged",
            flush=True,
        )
        ok = percentile(served, 99) <= 2.0 and learned == total

        rows_out = []
        for cycle in range(1, args.cycles + 1):
            li, lease, learning, caught_up, acked = failover(nodes, bodies, cycle, args.failover_rate)
            total += acked
            learned = drain(nodes, total)
            nodes[li].start()
            fmt = lambda t: "never" if t is None else f"{t:.2f} s"
            print(
                f"cycle {cycle:2}: killed {nodes[li].name}; lease moved {fmt(lease)}, "
                f"learning {fmt(learning)}, past the kill {fmt(caught_up)}; "
                f"acknowledged {total}, learned {learned}",
                flush=True,
            )
            rows_out.append((lease, learning, caught_up, learned == total))
            ok = ok and learning is not None and learning <= 10.0 and learned == total
            learner_of(nodes)
        if rows_out:
            valid = [r for r in rows_out if r[1] is not None]
            worst = lambda k: max((r[k] for r in rows_out if r[k] is not None), default=None)
            print(
                f"failover: {len(rows_out)} SIGKILLs of the learner: lease moved within "
                f"{worst(0):.2f} s, learning again within {worst(1):.2f} s (target 10 s), past "
                f"the kill within {worst(2):.2f} s; {len(valid)}/{len(rows_out)} resumed; "
                f"exactly once after every cycle: {all(r[3] for r in rows_out)} "
                f"({total} acknowledged)"
            )
        print("targets met" if ok else "TARGET MISSED")
        return 0 if ok else 1
    finally:
        for n in nodes:
            if n.proc and n.proc.poll() is None:
                n.kill()
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
