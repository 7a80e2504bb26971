"""Checks a running ffd server with the real Triton HTTP client (`tritonclient[http]`): health,
metadata, and inference on test samples in both tensor encodings (binary, the client's default,
and JSON), comparing labels and probabilities with what /classify answers for the same samples.

    python3 -m venv bench/.venv && bench/.venv/bin/pip install 'tritonclient[http]' numpy
    bench/.venv/bin/python bench/tritonclient_check.py --url 127.0.0.1:8080 --mnist tests/data/mnist-small

Exits non-zero on any difference. Learning between the two calls would change the snapshot, so
run it against a server that is not learning (or pause it: POST /admin/pause).
"""

import argparse
import gzip
import json
import pathlib
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def test_images(mnist: pathlib.Path, n: int) -> np.ndarray:
    path = mnist / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path) if path.exists() else open(mnist / "t10k-images-idx3-ubyte", "rb") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    return raw.reshape(-1, 784)[:n].astype(np.float32) / 255.0


def classify(url: str, x: np.ndarray) -> dict:
    body = json.dumps({"samples": [{"features": row.tolist()} for row in x]}).encode()
    request = urllib.request.Request(
        f"http://{url}/classify", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="127.0.0.1:8080", help="host:port of the server")
    parser.add_argument("--mnist", default="tests/data/mnist-small", type=pathlib.Path)
    parser.add_argument("--samples", default=8, type=int)
    args = parser.parse_args()

    client = httpclient.InferenceServerClient(url=args.url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("ffd")
    print("server:", client.get_server_metadata())
    print("model:", client.get_model_metadata("ffd"))

    x = test_images(args.mnist, args.samples)
    expected = classify(args.url, x)["results"]
    want_labels = np.array([r["label"] for r in expected])
    want_probs = np.array([r["probabilities"] for r in expected], dtype=np.float32)

    failures = 0
    for binary in (True, False):
        features = httpclient.InferInput("features", list(x.shape), "FP32")
        features.set_data_from_numpy(x, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer("ffd", [features], outputs=outputs, request_id="check")
        labels, probs = result.as_numpy("label"), result.as_numpy("probabilities")
        same = (
            labels.dtype == np.int64
            and labels.shape == (len(x),)
            and probs.shape == (len(x), 10)
            and np.array_equal(labels, want_labels)
            and np.allclose(probs, want_probs, atol=1e-6)
        )
        failures += not same
        print(
            f"{'binary' if binary else 'JSON'} tensors: labels {labels.tolist()} "
            f"(/classify {want_labels.tolist()}), probabilities {probs.shape} {probs.dtype}, "
            f"model_version {result.get_response()['model_version']}: {'same' if same else 'DIFFERENT'}"
        )

    try:
        client.infer("resnet", [features])
        print("unknown model: no error")
        failures += 1
    except InferenceServerException as e:
        print("unknown model:", e)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
