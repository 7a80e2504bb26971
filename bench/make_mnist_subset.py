#!/usr/bin/env python3
"""Cut the committed MNIST subset (tests/data/mnist-small) from the full MNIST set.

Writes the four standard gzipped IDX files with the first N training and the
first M test samples, headers rewritten to the new counts. Output is
byte-for-byte reproducible (gzip mtime 0, no file name in the gzip header).
Standard library only.

Run from the repository root:

    python3 bench/make_mnist_subset.py \
        --src path/to/mnist --out tests/data/mnist-small \
        --train 3000 --test 1000

--src may hold the files gzipped (*.gz) or raw; .gz is preferred if both exist.
"""

import argparse
import gzip
import os
import struct
import sys

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_idx(src_dir, name):
    """Return the decompressed bytes of src_dir/name(.gz), detecting gzip by its magic."""
    for candidate in (name + ".gz", name):
        path = os.path.join(src_dir, candidate)
        if os.path.exists(path):
            with open(path, "rb") as f:
                data = f.read()
            return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    sys.exit(f"error: neither {name} nor {name}.gz exists in {src_dir}")


def cut_images(data, n, name):
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        sys.exit(f"error: {name}: bad magic 0x{magic:08x}")
    if n > count:
        sys.exit(f"error: {name} has {count} images, asked for {n}")
    if len(data) != 16 + count * rows * cols:
        sys.exit(f"error: {name}: size does not match its header")
    body = data[16 : 16 + n * rows * cols]
    return struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols) + body


def cut_labels(data, n, name):
    magic, count = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        sys.exit(f"error: {name}: bad magic 0x{magic:08x}")
    if n > count:
        sys.exit(f"error: {name} has {count} labels, asked for {n}")
    if len(data) != 8 + count:
        sys.exit(f"error: {name}: size does not match its header")
    return struct.pack(">II", LABELS_MAGIC, n) + data[8 : 8 + n]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--src", required=True, help="directory with the four MNIST IDX files (gzipped or raw)"
    )
    parser.add_argument("--out", default="tests/data/mnist-small")
    parser.add_argument("--train", type=int, default=3000, help="training samples to keep")
    parser.add_argument("--test", type=int, default=1000, help="test samples to keep")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    for prefix, n in (("train", args.train), ("t10k", args.test)):
        for kind, cut in (("images-idx3-ubyte", cut_images), ("labels-idx1-ubyte", cut_labels)):
            name = f"{prefix}-{kind}"
            subset = cut(read_idx(args.src, name), n, name)
            out_path = os.path.join(args.out, name + ".gz")
            with open(out_path, "wb") as f:
                f.write(gzip.compress(subset, compresslevel=9, mtime=0))
            print(f"{out_path}: {n} samples, {os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
