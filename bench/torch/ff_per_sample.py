#!/usr/bin/env python3
"""PyTorch baseline: per-sample (batch size 1) Forward-Forward training throughput.

Gives a number to hold the Rust engine's per-sample FF update rate against, on the
same machine and in the same run. The algorithm follows the repository's
docs/algorithm.md sections 1 and 3: per layer, RMS-normalised input,
h = relu(W x + b), goodness G = sum(h^2), threshold theta = layer width, softplus
losses, label appended to the first layer's input as a one-hot of 10 extra inputs,
every layer trained on its own local loss only, plain SGD with lr 3e-4.

Per sample: one positive (true label) and one negative (wrong label) pass, stacked as
a [2, in] batch: both see the same weights and their gradients are summed into one
step per layer, and each layer's weights are read once for the pair instead of twice.

Variants:
  autograd            loss.backward() per layer, one torch.optim.SGD per layer.
  manual              no autograd: dW = s * 2h (outer) x_hat written by hand, updated
                      in place (a rank-2 addmm_, i.e. addr_ for pos + addr_ for neg).
  autograd+hard       like autograd, but the wrong label is a "hard negative": the net
  manual+hard         is run with all 10 labels (first layer's shared part computed
                      once), labels scored by the goodness summed over layers >= 2,
                      and the wrong label drawn from softmax(scores) with the true
                      label masked out.
  manual+hard-reuse   extra, not in the default set: manual+hard that takes the
                      training forward pass from the scoring pass (it is the same
                      computation with the same weights) instead of redoing it.

Install (tested with Python 3.11 on this machine; from the repository root):

    python3 -m venv bench/.venv
    bench/.venv/bin/pip install --no-deps -r bench/torch/requirements.txt

The PyPI Linux torch wheel is a CUDA build whose libraries link the CUDA runtime
libraries directly, so `pip install torch --no-deps` alone cannot even `import torch`
(libcudart.so.13: cannot open shared object file). requirements.txt therefore pins
torch, its pure-Python deps and only the nvidia-* wheels that the torch libraries
link against (about 2.8 GB of the 4 GB venv); triton, cuda-bindings, cusolver and nvtx,
which the full `pip install torch` also pulls, are left out: nothing here needs them.
No GPU is used; torch.cuda.is_available() is False.

Run (from the repository root; well under a minute for the default set on an idle
machine; see README.md on measuring while other processes use the 2 cores):

    bench/.venv/bin/python bench/torch/ff_per_sample.py
    bench/.venv/bin/python bench/torch/ff_per_sample.py --layers 500,500 \
        --variants autograd,manual --samples 2000 --threads 2

Output on stdout: a header line, one human-readable line per (architecture, variant),
then one JSON line, always the last:
    {"threads": 2, "results": [{"layers": [500, 500], "variant": "autograd",
      "samples_per_second": ..., ...}, ...]}
"""

import argparse
import gzip
import json
import math
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

N_FEATURES = 784
N_CLASSES = 10
LR = 3e-4
EPS = 1e-8

DEFAULT_VARIANTS = ("autograd", "manual", "autograd+hard", "manual+hard")
ALL_VARIANTS = DEFAULT_VARIANTS + ("manual+hard-reuse",)

# Weight count of 784-500-500 (+10 label inputs): the size the default --samples of 2000
# is calibrated for.
REFERENCE_WEIGHTS = (N_FEATURES + N_CLASSES) * 500 + 500 * 500


def rms_normalise(x):
    """Row-wise x / (sqrt(mean(x^2)) + eps): the next layer sees only the direction."""
    return x / (x.pow(2).mean(dim=-1, keepdim=True).sqrt() + EPS)


# Row 0 is the positive, row 1 the negative: the sign of dLoss/dG is p - target.
POS_NEG_TARGET = torch.tensor([1.0, 0.0])


class FFNet:
    """Weights of a stack of FF layers. W ~ N(0, 1/fan_in), b = 0, as in Hinton's code."""

    def __init__(self, sizes, seed, requires_grad):
        gen = torch.Generator().manual_seed(seed)
        self.weights, self.biases, self.thetas = [], [], []
        fan_in = N_FEATURES + N_CLASSES
        for out in sizes:
            w = torch.randn(out, fan_in, generator=gen) / math.sqrt(fan_in)
            self.weights.append(w.requires_grad_(requires_grad))
            self.biases.append(torch.zeros(out).requires_grad_(requires_grad))
            self.thetas.append(float(out))
            fan_in = out
        # The [2, 10] label block of every (positive, negative) label pair, made once so
        # that building a sample's input costs one cat instead of several small writes.
        eye = torch.eye(N_CLASSES)
        self.pair_onehot = [[torch.stack((eye[a], eye[b])) for b in range(N_CLASSES)]
                            for a in range(N_CLASSES)]

    def layers(self):
        return zip(self.weights, self.biases, self.thetas)

    def pos_neg_input(self, x, label, wrong):
        return torch.cat((x.expand(2, -1), self.pair_onehot[label][wrong]), dim=1)


# ----------------------------------------------------------------------------- training


def make_autograd_step(net):
    # One optimiser per layer: each layer learns on its own and steps as soon as its
    # local gradient is there, like the layer-local learner it stands in for.
    optimisers = [torch.optim.SGD([w, b], lr=LR) for w, b in zip(net.weights, net.biases)]

    def step(inp):
        for (w, b, theta), opt in zip(net.layers(), optimisers):
            h = F.relu(F.linear(rms_normalise(inp), w, b))
            g = h.pow(2).sum(dim=1)
            loss = F.softplus(theta - g[0]) + F.softplus(g[1] - theta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # Local learning: nothing flows back into the layer below.
            inp = h.detach()

    return step


def manual_update(w, b, theta, x_hat, h):
    """In-place SGD step on one layer from its (pos, neg) normalised input and activity.

    dLoss/dG = p - target (target 1 for the positive row, 0 for the negative), and
    dG/dz = 2h, which is already 0 wherever relu clipped, so no separate mask.
    """
    p = torch.sigmoid(h.pow(2).sum(dim=1) - theta)
    coef = h * (p - POS_NEG_TARGET).unsqueeze(1)
    # coef.T @ x_hat is the sum of the positive and negative outer products.
    w.addmm_(coef.t(), x_hat, alpha=-2.0 * LR)
    b.add_(coef.sum(dim=0), alpha=-2.0 * LR)


def manual_step(net, inp):
    for w, b, theta in net.layers():
        x_hat = rms_normalise(inp)
        h = torch.addmm(b, x_hat, w.t()).relu_()
        manual_update(w, b, theta, x_hat, h)
        # h was computed before the update, so it is the activity the loss saw.
        inp = h


# ------------------------------------------------------------------------ hard negatives


def score_all_labels(net, x):
    """Run the net once per candidate label; return per-label scores and activations.

    Every one-hot label adds exactly 1 to the input's sum of squares, so all 10
    candidate inputs share one RMS scale c, and the first layer's pre-activation is
    W_x (c x) + b + c W_label[:, k]: one matrix-vector product for all labels plus a
    column each. Scores are the goodness summed over layers >= 2, as in the paper;
    a one-layer net has only layer 1 to score with.
    Returns (scores[10], [(x_hat, h) per layer >= 2, each [10, ...]], h1[10, out]).
    """
    w1, b1 = net.weights[0], net.biases[0]
    c = 1.0 / (torch.sqrt((x.pow(2).sum() + 1.0) / (N_FEATURES + N_CLASSES)) + EPS)
    base = torch.addmv(b1, w1[:, :N_FEATURES], x * c)
    h = (base + c * w1[:, N_FEATURES:].t()).relu_()
    h1 = h
    upper = []
    scores = h.pow(2).sum(dim=1) if len(net.weights) == 1 else torch.zeros(N_CLASSES)
    for w, b, _ in list(net.layers())[1:]:
        x_hat = rms_normalise(h)
        h = torch.addmm(b, x_hat, w.t()).relu_()
        scores += h.pow(2).sum(dim=1)
        upper.append((x_hat, h))
    return scores, upper, h1


def sample_hard_negative(scores, label):
    """Draw a wrong label with probability softmax(scores), true label masked out."""
    scores[label] = -math.inf
    return int(torch.multinomial(torch.softmax(scores, dim=0), 1))


# ---------------------------------------------------------------------------- variants


def make_variant(name, net):
    """Return sample_fn(x, label, random_wrong) running one full FF update."""
    if name == "autograd":
        step = make_autograd_step(net)

        def run(x, label, wrong):
            step(net.pos_neg_input(x, label, wrong))

    elif name == "autograd+hard":
        step = make_autograd_step(net)

        def run(x, label, _wrong):
            with torch.no_grad():
                wrong = sample_hard_negative(score_all_labels(net, x)[0], label)
            step(net.pos_neg_input(x, label, wrong))

    elif name == "manual":

        def run(x, label, wrong):
            manual_step(net, net.pos_neg_input(x, label, wrong))

    elif name == "manual+hard":

        def run(x, label, _wrong):
            wrong = sample_hard_negative(score_all_labels(net, x)[0], label)
            manual_step(net, net.pos_neg_input(x, label, wrong))

    elif name == "manual+hard-reuse":

        def run(x, label, _wrong):
            scores, upper, h1 = score_all_labels(net, x)
            wrong = sample_hard_negative(scores, label)
            rows = [label, wrong]
            # The scoring pass already ran every layer with these weights for every
            # label: pick the two rows instead of running the forward pass again.
            # Updates go bottom-up and never change what a layer's rows were computed
            # from, so this is exactly what manual+hard computes.
            w, b, theta = net.weights[0], net.biases[0], net.thetas[0]
            manual_update(w, b, theta, rms_normalise(net.pos_neg_input(x, label, wrong)),
                          h1[rows])
            for (w, b, theta), (x_hat, h) in zip(list(net.layers())[1:], upper):
                manual_update(w, b, theta, x_hat[rows], h[rows])

    else:
        raise ValueError(f"unknown variant {name!r}")

    if name.startswith("manual"):
        inner = run

        # Inference mode skips autograd bookkeeping on every op; the in-place updates of
        # the (non-grad) weights are allowed in it.
        def run(x, label, wrong):
            with torch.inference_mode():
                inner(x, label, wrong)

    return run


# -------------------------------------------------------------------------------- data


def synthetic_data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.rand(n, N_FEATURES, generator=gen)
    labels = torch.randint(0, N_CLASSES, (n,), generator=gen)
    return xs, labels


def load_mnist(directory):
    """MNIST training set from train-{images-idx3,labels-idx1}-ubyte[.gz], pixels in [0,1]."""

    def read(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(directory, candidate)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
                return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        sys.exit(f"error: neither {name} nor {name}.gz in {directory}")

    images = read("train-images-idx3-ubyte")
    labels = read("train-labels-idx1-ubyte")
    _, count, rows, cols = struct.unpack(">IIII", images[:16])
    if rows * cols != N_FEATURES:
        sys.exit(f"error: MNIST images are {rows}x{cols}, expected 28x28")
    xs = torch.frombuffer(bytearray(images[16:]), dtype=torch.uint8)
    xs = xs.view(count, N_FEATURES).float() / 255.0
    ys = torch.frombuffer(bytearray(labels[8:]), dtype=torch.uint8).long()
    return xs, ys


# ---------------------------------------------------------------------------- measuring


def default_samples(sizes):
    """2000 for 784-500-500, fewer for bigger nets, so each measurement takes ~5-15 s.

    Scaled by the square root of the weight count rather than linearly, because at
    batch size 1 a good part of the per-sample cost is fixed per-op overhead.
    """
    weights = sum(a * b for a, b in zip([N_FEATURES + N_CLASSES] + sizes, sizes))
    return max(100, int(round(2000 * math.sqrt(REFERENCE_WEIGHTS / weights), -2)))


def measure(variant, sizes, xs, labels, wrong_offsets, warmup, samples, seed):
    """(samples/s, seconds, CPU/wall) of `variant` over `samples` updates after `warmup`."""
    requires_grad = variant.startswith("autograd")
    net = FFNet(sizes, seed, requires_grad)
    run = make_variant(variant, net)
    n = xs.shape[0]
    # Python ints, so that picking the labels costs no tensor op inside the timed loop.
    label_list = labels.tolist()
    wrong_list = [(y + o) % N_CLASSES for y, o in zip(label_list, wrong_offsets.tolist())]

    def go(start, count):
        for i in range(start, start + count):
            j = i % n
            run(xs[j], label_list[j], wrong_list[j])

    go(0, warmup)
    t0, cpu0 = time.perf_counter(), time.process_time()
    go(warmup, samples)
    seconds = time.perf_counter() - t0
    # CPU seconds per wall second, to tell a slow run from a run that lost its cores.
    cpu_per_wall = (time.process_time() - cpu0) / seconds
    for w in net.weights:
        if not torch.isfinite(w).all():
            print(f"warning: {variant} {sizes}: weights became non-finite", file=sys.stderr)
    return samples / seconds, seconds, cpu_per_wall


def parse_layers(spec):
    return [int(s) for s in spec.split(",") if s]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", action="append", type=parse_layers,
                    help="hidden layer widths, e.g. 500,500; repeat the flag for several "
                         "architectures (default: 500,500 and 1000,1000,1000)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help=f"comma-separated subset of {','.join(ALL_VARIANTS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=None,
                    help="timed samples per measurement (default: 2000 for 500,500, "
                         "scaled down for bigger nets)")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure each pair this many times and report the median")
    ap.add_argument("--mnist", metavar="DIR",
                    help="use the MNIST training set in DIR instead of random data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    architectures = args.layers or [[500, 500], [1000, 1000, 1000]]
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in ALL_VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {','.join(ALL_VARIANTS)}")

    torch.set_num_threads(args.threads)
    # Unused by the single-process loop, but keeps the process at the stated core count.
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(args.seed)  # torch.multinomial in the hard-negative variants

    if args.mnist:
        xs, labels = load_mnist(args.mnist)
    else:
        most = max(args.samples or default_samples(a) for a in architectures)
        xs, labels = synthetic_data(args.warmup + most, args.seed)
    wrong_offsets = torch.randint(1, N_CLASSES, (xs.shape[0],),
                                  generator=torch.Generator().manual_seed(args.seed + 1))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"data: {'MNIST ' + args.mnist if args.mnist else 'synthetic'}", flush=True)
    results = []
    for sizes in architectures:
        samples = args.samples or default_samples(sizes)
        arch = "-".join(str(s) for s in [N_FEATURES] + sizes)
        for variant in variants:
            load = os.getloadavg()[0]
            runs = [measure(variant, sizes, xs, labels, wrong_offsets, args.warmup,
                            samples, args.seed) for _ in range(args.repeats)]
            rates = [r for r, _, _ in runs]
            rate = statistics.median(rates)
            seconds = statistics.median(s for _, s, _ in runs)
            cpu_per_wall = statistics.median(c for _, _, c in runs)
            # An idle machine gives ~threads CPU seconds per wall second (OpenMP workers
            # spin); less means other processes held the cores during the measurement.
            contended = cpu_per_wall < 0.9 * args.threads
            spread = (f", runs {'/'.join(f'{r:.0f}' for r in rates)}"
                      if args.repeats > 1 else "")
            print(f"{arch:<22} {variant:<18} {rate:8.1f} samples/s  ({samples} samples, "
                  f"{seconds:.1f} s, cpu/wall {cpu_per_wall:.2f}, load {load:.1f}{spread})"
                  f"{'  CONTENDED' if contended else ''}", flush=True)
            results.append({
                "layers": sizes,
                "variant": variant,
                "samples_per_second": round(rate, 1),
                "samples": samples,
                "seconds": round(seconds, 3),
                "runs": [round(r, 1) for r in rates],
                "cpu_per_wall": round(cpu_per_wall, 2),
                "load1_before": round(load, 2),
                "contended": contended,
            })
    print(json.dumps({"threads": args.threads, "torch": torch.__version__,
                      "data": "mnist" if args.mnist else "synthetic",
                      "results": results}))


if __name__ == "__main__":
    main()
