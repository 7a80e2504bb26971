#!/usr/bin/env python3
"""Plots test error against wake/sleep cycle length from bench/sleep_sweep.sh output.

    python3 bench/plot_sleep.py SWEEP.jsonl docs/img/sleep-cycles.png

Needs matplotlib (pip install matplotlib). One line per sleep method (mean over seeds), the
interleaved reference as a horizontal line, and the targets (interleaved + 1.0 pp at 1 000,
+ 2.0 pp at 10 000) as markers.
"""
import json
import statistics
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def main(src, dst):
    errors = defaultdict(list)
    interleaved = []
    for line in open(src):
        line = line.strip()
        if not line:
            continue
        row = json.loads(line)
        s = row["summary"]
        if not s or "test_error" not in s:
            continue
        err = 100.0 * s["test_error"]
        if s["schedule"] == "interleaved":
            interleaved.append(err)
        else:
            errors[(s["sleep_method"], s["sleep_every_samples"])].append(err)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"negatives": "o-", "symmetric": "v-", "pairs": "s-", "consolidate": "D-"}
    for method in styles:
        points = sorted((n, statistics.mean(e)) for (m, n), e in errors.items() if m == method)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], styles[method], label=method)
    if interleaved:
        ref = statistics.mean(interleaved)
        ax.axhline(ref, color="grey", linestyle="--", label=f"interleaved ({ref:.2f} %)")
        ax.plot([1000, 10000], [ref + 1.0, ref + 2.0], "k_", markersize=18, mew=2,
                label="target (+1.0 / +2.0 pp)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.set_xticks([16, 100, 1000, 10000])
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("wake samples per sleep (cycle length)")
    ax.set_ylabel("test error after one epoch (%)")
    ax.set_title("784-500-500, one epoch of MNIST, per sample")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
