#!/usr/bin/env python3
"""Drift figures of `ffd serve` on MNIST, measured through its HTTP API (BENCHMARKS.md).

1. Label permutation: the MNIST training set in a seeded random order, in batches of 50; after
   `--change` samples every label k becomes (k + 3) mod 10. Each batch is first classified
   through /classify (the served model, i.e. the snapshot of the weight average) and then sent
   to /learn; the client waits until the learner has learned it before the next batch, so
   every prediction comes from the model that has learned exactly the samples before it.
   Reports the served accuracy on windows of 1,000, the detection (its sample index against
   the change) and whether the served model is back to >= 90 % of its pre-drift accuracy
   (the 1,000 samples before the change) over samples 1,000..2,000 after it. Held out as
   well: the served model classifies the first 2,000 test digits at the change (true labels)
   and every 500 samples after it (labels permuted as the stream's are), so "back within
   2,000 samples" is also read off digits it never learned.
2. Stationary streams: one pass over the 60,000 training samples in random order (3 seeds),
   sent in batches of 500 to /learn; counts the detections.

Each run starts a fresh server (`target/release/ffd serve`, default configuration, data
directory of its own). Needs python3 with numpy. Usage:

    bench/drift_bench.py MNIST_DIR [--port 18090] [--after 10000] [--set FFD_KEY=VALUE ...]
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FFD = os.path.join(ROOT, "target", "release", "ffd")


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(mnist, prefix):
    def find(name):
        for suffix in (".gz", ""):
            p = os.path.join(mnist, name + suffix)
            if os.path.exists(p):
                return p
        sys.exit(f"{name}[.gz] not found in {mnist}")

    x = read_idx(find(f"{prefix}-images-idx3-ubyte")).reshape(-1, 784)
    y = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(int)
    return x, y


def load_train(mnist):
    return load_split(mnist, "train")


class Server:
    def __init__(self, port, workdir, name, settings=()):
        self.url = f"http://127.0.0.1:{port}"
        data = os.path.join(workdir, f"data-{name}")
        os.mkdir(data)
        # The default configuration, but for the settings asked for (`--set FFD_KEY=VALUE`).
        env = {k: v for k, v in os.environ.items() if not k.startswith("FFD_")}
        env.update(kv.split("=", 1) for kv in settings)
        self.log = open(os.path.join(workdir, f"server-{name}.log"), "w")
        self.proc = subprocess.Popen(
            [FFD, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for _ in range(200):
            try:
                self.get("/readyz")
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("the server did not become ready")

    def post(self, path, body):
        data = json.dumps(body, separators=(",", ":")).encode()
        while True:
            req = urllib.request.Request(self.url + path, data=data, headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                # A full learn queue: wait as asked and send again.
                if e.code != 429:
                    raise
                time.sleep(float(e.headers.get("Retry-After", "1")))

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def wait_learned(self, seq):
        while True:
            m = self.get("/v1/model")
            if m.get("learned_seq") is not None and m["learned_seq"] >= seq:
                return m
            time.sleep(0.002)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


def samples(x, labels):
    # Pixels scaled to [0, 1], at four decimals (the JSON stays small).
    return [
        {"features": [round(v / 255.0, 4) for v in row.tolist()], "label": int(label)}
        for row, label in zip(x, labels)
    ]


def held_out_accuracy(server, x, labels):
    """The served model's accuracy on held-out digits, classified in batches of 500."""
    hits = 0
    for i in range(0, len(labels), 500):
        body = samples(x[i : i + 500], labels[i : i + 500])
        results = server.post("/classify", {"samples": [{"features": s["features"]} for s in body]})["results"]
        hits += sum(int(r["label"] == int(l)) for r, l in zip(results, labels[i : i + 500]))
    return hits / len(labels)


def permutation_run(server, x, y, order, change, total, batch, shift, test=None):
    hits = []
    detections = []
    held_out = []
    first_seq = None
    seen_detected = 0
    for start in range(0, total, batch):
        # Held out: at the change (true labels) and every 500 samples after it, to 2,000.
        if test is not None and start >= change and (start - change) % 500 == 0 and start - change <= 2000:
            tx, ty = test
            labels = ty if start == change else (ty + shift) % 10
            held_out.append((start - change, held_out_accuracy(server, tx, labels)))
        idx = order[start : start + batch]
        labels = np.where(np.arange(start, start + len(idx)) >= change, (y[idx] + shift) % 10, y[idx])
        body = samples(x[idx], labels)
        results = server.post("/classify", {"samples": [{"features": s["features"]} for s in body]})["results"]
        hits.extend(int(r["label"] == int(l)) for r, l in zip(results, labels))
        answer = server.post("/learn", {"samples": body})
        last_seq = answer["last_seq"]
        if first_seq is None:
            first_seq = last_seq - len(idx) + 1
        model = server.wait_learned(last_seq)
        drift = model["drift"]
        if drift["detected"] > seen_detected:
            seen_detected = drift["detected"]
            detections.append(drift["last"]["seq"] - first_seq)
    return np.array(hits), detections, held_out


def stationary_run(server, x, y, order, batch):
    last_seq = 0
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        last_seq = server.post("/learn", {"samples": samples(x[idx], y[idx])})["last_seq"]
    model = server.wait_learned(last_seq)
    return model["drift"]["detected"], model["samples_learned"]


def permutation(args, x, y, work):
    order = np.random.default_rng(args.seed).permutation(len(y))
    tx, ty = load_split(args.mnist, "t10k")
    test = (tx[:2000], ty[:2000])
    server = Server(args.port, work, "permutation", args.set)
    started = time.time()
    try:
        hits, detections, held_out = permutation_run(
            server, x, y, order, args.change, args.change + args.after, 50, 3, test
        )
    finally:
        server.stop()
    c = args.change
    windows = [hits[i : i + 1000].mean() for i in range(0, len(hits), 1000)]
    before = hits[c - 1000 : c].mean()
    after = [hits[c + i : c + i + 1000].mean() for i in range(0, args.after, 1000)]
    delays = [d - c for d in detections if d >= c]
    false_before = [d for d in detections if d < c]
    print(f"label permutation after {c} samples (seed {args.seed}, batches of 50, {time.time() - started:.0f} s)")
    print("served accuracy, windows of 1000:", " ".join(f"{w:.3f}" for w in windows))
    print(f"pre-drift accuracy (samples {c - 1000}..{c}): {before:.3f}")
    print("after the change, windows of 1000:", " ".join(f"{w:.3f}" for w in after))
    print(f"detections before the change: {false_before}")
    print(f"detection delay (samples after the change): {delays}")
    recovered = after[1] >= 0.9 * before if len(after) > 1 else False
    print(
        f"samples 1000..2000 after the change: {after[1]:.3f} = {after[1] / before:.1%} of pre-drift "
        f"({'met' if recovered else 'not met'}: >= 90 %)"
    )
    # The first batch boundary after which the trailing 500 served predictions reach 90 %.
    rolling = [(i, hits[c + i - 500 : c + i].mean()) for i in range(500, args.after + 1, 50)]
    back = next((i for i, a in rolling if a >= 0.9 * before), None)
    print(f"first point where the trailing 500 predictions reach 90 % of pre-drift: {back} samples after the change")
    if held_out:
        pre = held_out[0][1]
        print(f"held out (first 2000 test digits), served model at the change: {pre:.3f}")
        for at, acc in held_out[1:]:
            print(f"  {at} samples after the change (labels permuted): {acc:.3f} = {acc / pre:.1%} of it")
    sys.stdout.flush()


def main():
    global FFD
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mnist")
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--change", type=int, default=10000, help="samples before the labels are permuted")
    ap.add_argument("--after", type=int, default=10000, help="samples streamed after the change")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stationary-seeds", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--skip-stationary", action="store_true")
    ap.add_argument("--skip-permutation", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="FFD_KEY=VALUE",
                    help="a setting for every server, as an environment variable (repeatable)")
    ap.add_argument("--ffd", default=FFD, help="the ffd binary (default: target/release/ffd)")
    args = ap.parse_args()
    FFD = args.ffd
    if not os.path.exists(FFD):
        sys.exit("build first: cargo build --release")
    x, y = load_train(args.mnist)
    work = tempfile.mkdtemp(prefix="ffd-drift-")
    try:
        if not args.skip_permutation:
            permutation(args, x, y, work)
        if args.skip_stationary:
            return
        for seed in args.stationary_seeds:
            order = np.random.default_rng(seed).permutation(len(y))
            server = Server(args.port, work, f"stationary-{seed}", args.set)
            started = time.time()
            try:
                detected, learned = stationary_run(server, x, y, order, 500)
            finally:
                server.stop()
            print(f"stationary seed {seed}: {learned} samples learned, {detected} detections ({time.time() - started:.0f} s)")
            sys.stdout.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
