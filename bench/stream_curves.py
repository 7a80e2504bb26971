#!/usr/bin/env python3
"""One pass over the MNIST training stream: ffd beside Vowpal Wabbit and River (BENCHMARKS.md).

All three learners see the same stream (the 60,000 training samples in one seeded random order,
pixels scaled to [0, 1]), each sample classified before it is learned (test-then-train). Reports
the prequential accuracy (overall and per window of 1,000), the test error after the pass and
the learning rate in samples per second, and draws the windowed curves.

- ffd: `ffd train --no-shuffle --prequential` on a copy of the data set written in the stream's
  order, with the settings of `ffd serve`'s default configuration (the long sleep with its ramp,
  the fading rate, the softmax read-out on every layer, the weight average); its prequential
  predictions come from the live weights, the test error from the weight average, as the
  service serves it.
- Vowpal Wabbit: `--oaa 10` (one-against-all, its defaults otherwise), Python bindings.
- River: `linear_model.SoftmaxRegression()` (its defaults).

Needs python3 with numpy, matplotlib, vowpalwabbit and river (a virtualenv outside the
repository, e.g. `python3 -m venv /tmp/peers && /tmp/peers/bin/pip install numpy matplotlib
vowpalwabbit river`). Usage:

    bench/stream_curves.py MNIST_DIR [--seed 1] [--png docs/img/stream-curves-mnist.png]
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FFD = os.path.join(ROOT, "target", "release", "ffd")
WINDOW = 1000
# `ffd serve`'s default engine settings, as `ffd train` flags (`ffd serve --print-config`):
# `ffd train`'s own defaults differ where a run with an end allows it (learning-rate decay).
# Left out: the service's time-based sleep (`--sleep-every-seconds 5`), which depends on the
# machine's speed; without it the run is the same every time.
SERVICE_FLAGS = [
    "--schedule", "sleep", "--lr", "1e-4", "--lr-boost", "3", "--lr-boost-samples", "10000",
    "--lr-decay-start", "1", "--average-decay", "0.98", "--average-every-samples", "100",
    "--sleep-method", "consolidate", "--sleep-every-samples", "1000", "--wake-lr-scale", "0",
    "--sleep-ramp", "0.05", "--score-from-layer", "0", "--classifier", "softmax",
    "--train-head", "--label-strength", "5", "--threads", "1",
]


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return data[: 4 + 4 * ndim], np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def windows(hits):
    return [float(np.mean(hits[i : i + WINDOW])) for i in range(0, len(hits) - WINDOW + 1, WINDOW)]


def run_ffd(mnist, order, workdir):
    """Writes the stream in order and runs `ffd train` on it."""
    stream = os.path.join(workdir, "stream")
    os.mkdir(stream)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        header, array = read_idx(os.path.join(mnist, name + ".gz"))
        header = header[:4] + len(order).to_bytes(4, "big") + header[8:]
        with gzip.open(os.path.join(stream, name + ".gz"), "wb", compresslevel=1) as f:
            f.write(header + array[order].tobytes())
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(os.path.join(mnist, name + ".gz"), stream)
    cmd = [FFD, "train", "--mnist", stream, "--epochs", "1", "--no-shuffle", "--prequential"]
    cmd += SERVICE_FLAGS
    print("$", " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    return {
        "curve": summary["prequential_curve"],
        "prequential": summary["prequential_accuracy"],
        "test_error": summary["test_error"],
        "rate": summary["samples_per_second"],
    }


def run_vw(x, y, xt, yt):
    from vowpalwabbit import Workspace

    vw = Workspace("--oaa 10 --quiet")
    # "index:value" of every pixel value at every index, formatted once.
    values = [f"{v / 255.0:.4f}" for v in range(256)]

    def feats(row):
        nz = np.flatnonzero(row)
        return " ".join(f"{i}:{values[v]}" for i, v in zip(nz.tolist(), row[nz].tolist()))

    hits = np.zeros(len(y), dtype=np.int8)
    started = time.perf_counter()
    for t in range(len(y)):
        f = feats(x[t])
        hits[t] = int(vw.predict(f"|p {f}")) - 1 == y[t]
        vw.learn(f"{y[t] + 1} |p {f}")
    rate = len(y) / (time.perf_counter() - started)
    errors = sum(int(vw.predict(f"|p {feats(r)}")) - 1 != l for r, l in zip(xt, yt))
    vw.finish()
    return {"curve": windows(hits), "prequential": float(hits.mean()), "test_error": errors / len(yt), "rate": rate}


def run_river(x, y, xt, yt):
    from river import linear_model

    model = linear_model.SoftmaxRegression()

    def feats(row):
        nz = np.flatnonzero(row)
        return {int(i): row[i] / 255.0 for i in nz}

    hits = np.zeros(len(y), dtype=np.int8)
    started = time.perf_counter()
    for t in range(len(y)):
        f = feats(x[t])
        hits[t] = model.predict_one(f) == int(y[t])
        model.learn_one(f, int(y[t]))
    rate = len(y) / (time.perf_counter() - started)
    errors = sum(model.predict_one(feats(r)) != int(l) for r, l in zip(xt, yt))
    return {"curve": windows(hits), "prequential": float(hits.mean()), "test_error": errors / len(yt), "rate": rate}


def main():
    global FFD
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mnist")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, help="stream only the first N samples (a smoke test)")
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "img", "stream-curves-mnist.png"))
    ap.add_argument("--ffd", default=FFD, help="the ffd binary (default: target/release/ffd)")
    args = ap.parse_args()
    FFD = args.ffd
    if not os.path.exists(FFD):
        sys.exit("build first: cargo build --release")
    _, x = read_idx(os.path.join(args.mnist, "train-images-idx3-ubyte.gz"))
    _, y = read_idx(os.path.join(args.mnist, "train-labels-idx1-ubyte.gz"))
    _, xt = read_idx(os.path.join(args.mnist, "t10k-images-idx3-ubyte.gz"))
    _, yt = read_idx(os.path.join(args.mnist, "t10k-labels-idx1-ubyte.gz"))
    x, xt = x.reshape(len(y), -1), xt.reshape(len(yt), -1)
    order = np.random.default_rng(args.seed).permutation(len(y))[: args.limit]
    x, y = x[order], y[order].astype(int)
    work = tempfile.mkdtemp(prefix="ffd-curves-")
    try:
        results = {"ffd": run_ffd(args.mnist, order, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("ffd done", file=sys.stderr)
    results["Vowpal Wabbit --oaa 10"] = run_vw(x, y, xt, yt)
    print("vw done", file=sys.stderr)
    results["River SoftmaxRegression"] = run_river(x, y, xt, yt)

    print(f"MNIST, one pass, seed {args.seed}, windows of {WINDOW}")
    print("| learner | prequential accuracy | test error | samples/s | first 10 windows |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        first = " ".join(f"{w:.3f}" for w in r["curve"][:10])
        print(f"| {name} | {r['prequential']:.4f} | {100 * r['test_error']:.2f} % | {r['rate']:.0f} | {first} |")
    print()
    print("all windows:")
    for name, r in results.items():
        print(f"{name}: " + " ".join(f"{w:.3f}" for w in r["curve"]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, r in results.items():
        xs = [(i + 1) * WINDOW for i in range(len(r["curve"]))]
        ax.plot(xs, r["curve"], label=f"{name} ({r['prequential']:.3f})")
    ax.set_xlabel("samples learned")
    ax.set_ylabel(f"prequential accuracy, windows of {WINDOW}")
    ax.set_ylim(0.5, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"MNIST stream, one pass (seed {args.seed}): test-then-train accuracy")
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {os.path.relpath(args.png, ROOT)}")


if __name__ == "__main__":
    main()
