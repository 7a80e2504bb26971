#!/usr/bin/env python3
"""Time to accuracy on MNIST: ffd beside forward-forward-rs, measured in one run (BENCHMARKS.md).

Both learners train at the same time with one thread each, so that whatever else runs on the
machine slows both: pinned to cores of their own (`taskset`; forward-forward-rs on 0 and ffd
on 1 unless `--peer-core`/`--ffd-core` say otherwise), or left to the scheduler
with `--no-pin` (forward-forward-rs hands every parallel step from its main thread to its one
rayon worker; unpinned, under load, those two threads ended up on different cores and its epochs
took about twice as long). Two x axes: wall-clock training seconds (the test-set evaluations
taken out), and the CPU seconds the learner's process used for training (read from /proc at
every epoch line, each interval's share of evaluation removed in proportion to its wall time),
which does not depend on the share of its core the learner got from the scheduler.

- ffd: `ffd train --hidden 500,500 --weight-decay 1e-2 --threads 1` (per sample, goodness
  classifier), test error after every epoch from its JSON summary; an epoch's seconds are
  `train_samples / samples_per_second`, which excludes the evaluation.
- forward-forward-rs (https://github.com/jesper-olsen/forward-forward-rs, `ff` binary, its
  defaults: 784-1000-1000-1000, mini-batches of 100, dropout, one-pixel shifts, softmax head):
  it prints a cost per epoch and, every fifth epoch and after the last, its error on the last
  10 000 samples of the training files, which it holds out. The run gives it training files
  made of the first 50 000 MNIST training digits followed by the 10 000 test digits, so that
  held-out error is the test error, on unchanged code. Its lines are time-stamped as they
  arrive; the time of an epoch that ended with an evaluation loses the evaluation's share,
  measured from its own softmax evaluation after training (70 000 digits). After training it
  also prints the test error of its goodness ("energy") classifier, the end point only.
- ffd gets the same 50 000 training digits (`--train-limit 50000`).

Usage (forward-forward-rs optional; without it only ffd runs):

    bench/time_to_accuracy.py MNIST_DIR [--ffd target/release/ffd] [--peer FFRS_CHECKOUT]
        [--ffd-epochs 20] [--peer-epochs 25] [--no-pin | --ffd-core 1 --peer-core 0]
        [--json FILE] [--csv FILE] [--png FILE]
    bench/time_to_accuracy.py --plot FILE.json --png FILE.png    # redraw only

The plot needs matplotlib; without it the run writes JSON/CSV and says so.
"""
import argparse
import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = 50_000
TICKS = os.sysconf("SC_CLK_TCK")
MARKS = [60, 120, 300, 600]
CPU_MARKS = [100, 200, 300, 600]
TARGETS = [0.05, 0.03, 0.02, 0.015]
PEER_EPOCH = re.compile(
    r"^Epoch\s+(\d+) \| Cost:\s*(\S+)"
    r"(?: \| Err Train: \((\d+)/(\d+)\), Err Val: \((\d+)/(\d+)\))?"
)
PEER_ERRORS = re.compile(r"^Errors - Test: (\d+)/(\d+), Val: (\d+)/(\d+), Train: (\d+)/(\d+)")


def read_idx(path):
    """(header, payload) of a gzipped or raw IDX file."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    head = 4 + 4 * ndim
    return data[:head], data[head:]


def idx_path(mnist, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(mnist, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"{name}(.gz) not found in {mnist}")


def peer_data(mnist, workdir):
    """Raw IDX files for forward-forward-rs: training files = 50 000 train digits + the test set,
    so the 10 000 it holds out (the last) are the test digits."""
    os.makedirs(workdir, exist_ok=True)
    for kind, item in (("images", 784), ("labels", 1)):
        th, tp = read_idx(idx_path(mnist, f"train-{kind}-idx{3 if item > 1 else 1}-ubyte"))
        sh, sp = read_idx(idx_path(mnist, f"t10k-{kind}-idx{3 if item > 1 else 1}-ubyte"))
        test = len(sp) // item
        header = th[:4] + (TRAIN + test).to_bytes(4, "big") + th[8:]
        name = f"idx{3 if item > 1 else 1}-ubyte"
        with open(os.path.join(workdir, f"train-{kind}-{name}"), "wb") as f:
            f.write(header + tp[: TRAIN * item] + sp)
        with open(os.path.join(workdir, f"t10k-{kind}-{name}"), "wb") as f:
            f.write(sh + sp)


class Run:
    """A child process whose output lines are time-stamped as they arrive."""

    def __init__(self, name, cmd, cwd=None, env=None, stderr_apart=False):
        self.name, self.cmd = name, cmd
        self.lines, self.err_lines = [], []
        print(f"[{name}] $ {' '.join(cmd)}", file=sys.stderr, flush=True)
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, text=True, bufsize=1,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT,
        )
        self.readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines))]
        if stderr_apart:
            self.readers.append(
                threading.Thread(target=self._read, args=(self.proc.stderr, self.err_lines))
            )
        for r in self.readers:
            r.start()

    def cpu_seconds(self):
        """User + system CPU seconds of the process so far (all its threads)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, IndexError, ValueError):
            return float("nan")

    def _read(self, stream, sink):
        for line in stream:
            now = time.monotonic() - self.start
            sink.append((now, line.rstrip("\n"), self.cpu_seconds()))
            if not line.startswith("{") and not re.match(r"\s+A\d|Actual|---", line):
                print(f"[{self.name} {now:7.1f}s] {line.rstrip()}", file=sys.stderr, flush=True)

    def wait(self):
        for r in self.readers:
            r.join()
        # The last line arrives when the learner is done; the other may still be running.
        self.wall = max(t for t, _, _ in self.lines + self.err_lines)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu = usage.ru_utime + usage.ru_stime
        if self.proc.returncode != 0:
            sys.exit(f"[{self.name}] exited with {self.proc.returncode}")


def split_cpu(stamps, train_walls):
    """CPU seconds of training per epoch: each interval between two epoch lines (training, and
    any evaluation) contributes its CPU time in proportion to the wall time spent training.
    `stamps` are (wall, cpu) at the start and after each epoch."""
    out = []
    for (t0, c0), (t1, c1), train in zip(stamps, stamps[1:], train_walls):
        out.append((c1 - c0) * train / (t1 - t0) if t1 > t0 else 0.0)
    return out


def curve(epochs, train_walls, cpu_walls, errors):
    """Points (epoch, training seconds, CPU seconds, test error) where an error was measured."""
    points, wall, cpu = [], 0.0, 0.0
    for epoch, train, used, error in zip(epochs, train_walls, cpu_walls, errors):
        wall, cpu = wall + train, cpu + used
        if error is not None:
            points.append({"epoch": epoch, "seconds": wall, "cpu_seconds": cpu,
                           "test_error": error})
    return points


def parse_ffd(run):
    summary = json.loads(run.lines[-1][1])
    start = next((t, c) for t, l, c in run.err_lines if l.startswith("ffd train:"))
    stamps = [start] + [(t, c) for t, l, c in run.err_lines if re.match(r"epoch \d+:", l)]
    rows = summary["curve"]
    train_walls = [summary["train_samples"] / row["samples_per_second"] for row in rows]
    points = curve([row["epoch"] for row in rows], train_walls, split_cpu(stamps, train_walls),
                   [row["test_error"] for row in rows])
    return {
        "points": points,
        "final": {"goodness": summary["test_error"]},
        "train_seconds": summary["train_seconds"],
    }


def parse_peer(run):
    lines = run.lines
    start = next((t, c) for t, l, c in lines if l.startswith("Config {"))
    finals, eval_rate = {}, None
    for i, (t, l, _) in enumerate(lines):
        if l.startswith("TestMode: "):
            mode = l.split()[1]
            t_done, done = next((t2, l2) for t2, l2, _ in lines[i + 1:] if PEER_ERRORS.match(l2))
            m = PEER_ERRORS.match(done)
            finals[mode] = int(m[2]) and int(m[1]) / int(m[2])
            if mode == "Softmax":
                # The same classification as after every fifth epoch: digits per wall second.
                eval_rate = (int(m[2]) + int(m[4]) + int(m[6])) / (t_done - t)
    stamps, epochs, train_walls, errors = [start], [], [], []
    for t, l, c in lines:
        m = PEER_EPOCH.match(l)
        if not m:
            continue
        took = t - stamps[-1][0]
        if m[5] is None:
            errors.append(None)
        else:  # the training digits and the held-out (test) digits were classified
            took -= (int(m[4]) + int(m[6])) / eval_rate
            errors.append(int(m[5]) / int(m[6]))
        stamps.append((t, c))
        epochs.append(int(m[1]) + 1)
        train_walls.append(took)
    points = curve(epochs, train_walls, split_cpu(stamps, train_walls), errors)
    return {
        "points": points,
        "final": {"softmax": finals.get("Softmax"), "goodness": finals.get("Energy")},
        "train_seconds": sum(train_walls),
        "eval_digits_per_second": eval_rate,
        "epoch_wall_seconds": [round(x, 2) for x in train_walls],
    }


def load_sampler(samples, stop):
    while not stop.wait(15):
        with open("/proc/loadavg") as f:
            samples.append(float(f.read().split()[0]))


def error_at(points, seconds, key="seconds"):
    before = [p for p in points if p[key] <= seconds]
    return before[-1]["test_error"] if before else None


def table(results):
    """Markdown: the test error reached by each mark of wall-clock and of CPU training seconds."""
    learners = [k for k in ("ffd", "forward-forward-rs") if k in results["learners"]]
    head = "| training time | " + " | ".join(learners) + " |"
    rows = [head, "|---|" + "---|" * len(learners)]
    fmt = lambda e: "–" if e is None else f"{100 * e:.2f} %"
    for key, marks, unit in (("seconds", MARKS, "s wall"), ("cpu_seconds", CPU_MARKS, "CPU-s")):
        for mark in marks:
            cells = []
            for k in learners:
                points = results["learners"][k]["points"]
                done = " (done)" if points[-1][key] < mark else ""
                cells.append(fmt(error_at(points, mark, key)) + done)
            rows.append(f"| {mark} {unit} | " + " | ".join(cells) + " |")
    for target in TARGETS:
        cells = []
        for k in learners:
            hit = next((p for p in results["learners"][k]["points"] if p["test_error"] <= target),
                       None)
            cells.append("not reached" if hit is None else
                         f"{hit['seconds']:.0f} s ({hit['cpu_seconds']:.0f} CPU-s, epoch {hit['epoch']})")
        rows.append(f"| to ≤ {100 * target:g} % | " + " | ".join(cells) + " |")
    cells = []
    for k in learners:
        end = results["learners"][k]["points"][-1]
        cells.append(f"{fmt(end['test_error'])} at {end['seconds']:.0f} s "
                     f"({end['cpu_seconds']:.0f} CPU-s, epoch {end['epoch']})")
    rows.append("| end | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(results, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (rerun with --plot JSON --png FILE)",
              file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    style = {"ffd": ("tab:blue", "o"), "forward-forward-rs": ("tab:orange", "s")}
    for ax, key, xlabel in (
        (axes[0], "seconds", "training seconds, wall clock (evaluation excluded)"),
        (axes[1], "cpu_seconds", "training CPU seconds (evaluation excluded)"),
    ):
        for name, r in results["learners"].items():
            color, marker = style[name]
            xs = [p[key] for p in r["points"]]
            ys = [100 * p["test_error"] for p in r["points"]]
            ax.plot(xs, ys, marker=marker, color=color, label=f"{name}: {r['label']}")
            goodness = r["final"].get("goodness")
            if name == "forward-forward-rs" and goodness is not None:
                ax.plot([xs[-1]], [100 * goodness], marker="x", color=color, linestyle="none",
                        markersize=9, label="forward-forward-rs, goodness classifier (end)")
        ax.set_yscale("log")
        ax.set_yticks([1, 1.5, 2, 3, 5, 10, 15, 20])
        ax.get_yaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_yaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_xlim(left=0)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MNIST test error (%)")
    axes[0].legend(fontsize=8)
    m = results["machine"]
    where = "pinned to one core each" if m["pinned"] else "one thread each, unpinned"
    fig.suptitle(f"Time to accuracy on MNIST, same run, {where}: {m['cpu']} ×{m['cpus']}, "
                 f"load average {m['load_1min_during']['mean']:.1f}")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", file=sys.stderr)


def shown(cmd, data):
    """A command as the results file records it: program names without their directories, the
    data directory as DIR, so the file names nothing of the machine it was measured on."""
    return " ".join(["DIR" if a == data else a for a in [os.path.basename(cmd[0])] + cmd[1:]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mnist", nargs="?", help="directory with the four MNIST IDX files")
    ap.add_argument("--ffd", default=os.path.join(ROOT, "target", "release", "ffd"))
    ap.add_argument("--peer", help="a forward-forward-rs checkout (built with cargo --release)")
    ap.add_argument("--ffd-epochs", type=int, default=20)
    ap.add_argument("--peer-epochs", type=int, default=25)
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="pin the learners to cores 0 and 1 (--no-pin: leave them to the "
                    "scheduler, which moves forward-forward-rs's two threads apart)")
    ap.add_argument("--ffd-core", type=int, default=1, help="ffd's core when pinned")
    ap.add_argument("--peer-core", type=int, default=0, help="forward-forward-rs's core when pinned")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--csv", help="write learner,epoch,seconds,test_error rows here")
    ap.add_argument("--png", help="draw the curves here (needs matplotlib)")
    ap.add_argument("--plot", metavar="JSON", help="only redraw the PNG from an earlier --json")
    args = ap.parse_args()
    if args.plot:
        with open(args.plot) as f:
            results = json.load(f)
        print(table(results))
        if args.png:
            plot(results, args.png)
        return
    if not args.mnist:
        ap.error("MNIST_DIR is required (or --plot JSON)")

    if not os.path.exists(args.ffd):
        sys.exit(f"{args.ffd} not found: run `cargo build --release` first or pass --ffd")
    peer_bin = None
    if args.peer and os.path.isdir(args.peer):
        peer_bin = os.path.join(args.peer, "target", "release", "ff")
        if not os.path.exists(peer_bin):
            print(f"{peer_bin} is missing: building it", file=sys.stderr)
            subprocess.run(["cargo", "build", "--release", "--bin", "ff"], cwd=args.peer, check=True)
    elif args.peer:
        print(f"no forward-forward-rs checkout at {args.peer}: skipping it", file=sys.stderr)
    else:
        print("no --peer checkout given: skipping forward-forward-rs", file=sys.stderr)

    pin = args.pin and shutil.which("taskset") and (os.cpu_count() or 1) >= 2
    if args.pin and not pin:
        print("taskset or a second core is missing: the learners run unpinned", file=sys.stderr)
    pinned = lambda core: ["taskset", "-c", str(core)] if pin else []
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "unknown CPU")
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=load_sampler, args=(samples, stop), daemon=True)
    sampler.start()

    ffd_cmd = [args.ffd, "train", "--mnist", args.mnist, "--train-limit", str(TRAIN),
               "--hidden", "500,500", "--epochs", str(args.ffd_epochs),
               "--weight-decay", "1e-2", "--seed", "1", "--threads", "1"]
    with tempfile.TemporaryDirectory(prefix="tta-") as work:
        runs = {}
        if peer_bin:
            peer_dir = os.path.join(work, "mnist")
            peer_data(args.mnist, peer_dir)
            env = dict(os.environ, RAYON_NUM_THREADS="1")
            # `ff` writes model_ff.bin into its working directory.
            runs["forward-forward-rs"] = Run(
                "forward-forward-rs",
                pinned(args.peer_core) + [peer_bin, "--dir", peer_dir, "--threads", "1",
                               "--max-epoch", str(args.peer_epochs)],
                cwd=work, env=env)
        runs["ffd"] = Run("ffd", pinned(args.ffd_core) + ffd_cmd, stderr_apart=True)
        for run in runs.values():
            run.wait()
    stop.set()
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]

    learners = {}
    r = runs["ffd"]
    learners["ffd"] = dict(parse_ffd(r), label="784-500-500, per sample, goodness",
                           command=shown(ffd_cmd, args.mnist), wall_seconds=r.wall,
                           cpu_seconds=r.cpu)
    if "forward-forward-rs" in runs:
        r = runs["forward-forward-rs"]
        peer = parse_peer(r)
        learners["forward-forward-rs"] = dict(
            peer, label="784-1000x3, batch 100, dropout + shifts, softmax head",
            command=shown(r.cmd[r.cmd.index(peer_bin):], peer_dir), wall_seconds=r.wall,
            cpu_seconds=r.cpu)
    results = {
        "machine": {
            "cpu": cpu, "cpus": os.cpu_count(), "pinned": bool(pin),
            "cores": {"ffd": args.ffd_core, "forward-forward-rs": args.peer_core} if pin else None,
            "load_before": load_before, "load_after": load_after,
            "load_1min_during": {"min": min(samples, default=None),
                                 "mean": sum(samples) / len(samples) if samples else None,
                                 "max": max(samples, default=None)},
        },
        "train_samples": TRAIN,
        "learners": learners,
    }
    print(json.dumps(results, indent=1))
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["learner", "epoch", "seconds", "test_error"])
            for name, r in learners.items():
                for p in r["points"]:
                    w.writerow([name, p["epoch"], f"{p['seconds']:.2f}", p["test_error"]])
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main()
