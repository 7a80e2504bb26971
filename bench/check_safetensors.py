#!/usr/bin/env python3
"""Checks that an ffd model file reads in Python like a PyTorch state_dict.

Usage: python bench/check_safetensors.py MODEL.safetensors   (pip install safetensors numpy)

Prints every tensor's name, dtype and shape and the metadata, then verifies the layout ffd
promises (src/store/model_file.rs): layers.{i}.weight is 2-D [out, in] float32 and chains
layer to layer, layers.{i}.bias is [out], head.weight is [classes, head_inputs], head.bias is
[classes], all as the `network` config in the metadata says. Exits 1 on the first mismatch.
"""

import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}

    for name in sorted(tensors):
        t = tensors[name]
        print(f"{name:20s} {str(t.dtype):8s} {list(t.shape)}")
    for key in sorted(metadata):
        print(f"metadata {key} = {metadata[key]}")

    if metadata.get("format") != "ffd-model":
        fail(f"metadata format is {metadata.get('format')!r}, expected 'ffd-model'")
    net = json.loads(metadata["network"])
    inputs, classes, hidden = net["inputs"], net["classes"], net["hidden"]
    width = inputs + classes if net["label_placement"] == "append" else inputs

    w0 = tensors.get("layers.0.weight")
    if w0 is None or w0.ndim != 2:
        fail("layers.0.weight is missing or not 2-D")
    if list(w0.shape) != [hidden[0], width]:
        fail(f"layers.0.weight is {list(w0.shape)}, expected [out, in] = [{hidden[0]}, {width}]")

    expected = {}
    widths = [width] + hidden
    for i in range(len(hidden)):
        expected[f"layers.{i}.weight"] = [widths[i + 1], widths[i]]
        expected[f"layers.{i}.bias"] = [widths[i + 1]]
    first_scored = min(net["score_from_layer"], len(hidden) - 1)
    expected["head.weight"] = [classes, sum(hidden[first_scored:])]
    expected["head.bias"] = [classes]
    if set(tensors) != set(expected):
        fail(f"tensor names {sorted(tensors)} != expected {sorted(expected)}")
    for name, shape in expected.items():
        t = tensors[name]
        if t.dtype != np.float32 or list(t.shape) != shape:
            fail(f"{name} is {t.dtype} {list(t.shape)}, expected float32 {shape}")
        if not np.all(np.isfinite(t)):
            fail(f"{name} holds non-finite values")

    # One forward pass of layer 0 in numpy, as PyTorch's nn.Linear would compute it (x @ W.T + b).
    x = np.zeros(width, dtype=np.float32)
    x[0] = 1.0
    h = np.maximum(x @ tensors["layers.0.weight"].T + tensors["layers.0.bias"], 0.0)
    print(f"layer 0 on e_0: {h.shape[0]} units, {int((h > 0).sum())} active")
    print(f"OK: {len(tensors)} tensors, layers.0.weight is [out, in] = {list(w0.shape)}")


if __name__ == "__main__":
    main()
