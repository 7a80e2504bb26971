#!/usr/bin/env python3
"""The reliability suite: one command, one table, against release `ffd serve` processes.

    bench/reliability.py            # full: 20 SIGKILL cycles, 60 s of slowloris, ...
    bench/reliability.py --quick    # a few minutes: 4 cycles, 20 s of slowloris, ...
    bench/reliability.py --only soak,damage

Rows (each reuses the tool that measures it on its own):
  soak         SIGKILL cycles under 4 concurrent clients: acknowledged / lost / duplicated / in
               flight (`durability_bench soak`).
  damage       one row per kind of file damage (`durability_bench damage`): the acknowledged
               samples the damage destroyed (read from the files), the ones recovery lost
               (acknowledged - learned), the ones `/v1/model`'s `recovery` reports lost (its
               `wal_lost_seqs`, `unretained_seqs`, `torn_seqs`; docs/durability.md), whether
               those sequence numbers are the destroyed ones, and whether the next sequence
               number is above every acknowledged one.
  slowloris    2 x max_connections slow connections (bench/slowloris.sh): /classify p99 on a
               keep-alive connection and /healthz answers while they hold on.
  schemathesis every check against /openapi.json (bench/schemathesis.sh).
  auth         every documented route x {no token, wrong token, read token, learn token, two
               Authorization headers}, with probes and /metrics open and closed: the status
               the access table of docs/http-api.md promises.

Full output of every tool goes to target/reliability/*.log. The exit status is non-zero when
a row misses its target. MNIST_DIR (default: the committed subset tests/data/mnist-small) holds
the IDX files the load comes from.
"""

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "target" / "reliability"
FFD = ROOT / "target" / "release" / "ffd"
BENCH = ROOT / "target" / "release" / "examples" / "durability_bench"


def run(name, cmd, env=None):
    """Runs `cmd` with its output in LOGS/name.log; returns (exit status, output, seconds)."""
    started = time.monotonic()
    log = LOGS / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )
    return proc.returncode, log.read_text(), time.monotonic() - started


def results(output, kind):
    """The `RESULT kind key=value ...` lines of a durability_bench run, as dicts."""
    rows = []
    for line in output.splitlines():
        if line.startswith(f"RESULT {kind} "):
            rows.append(dict(re.findall(r"(\w+)=(\S+)", line)))
    return rows


class Table:
    def __init__(self):
        self.rows = []

    def add(self, check, measured, target, ok, seconds):
        self.rows.append((check, measured, target, "ok" if ok else "MISSED", f"{seconds:.0f}"))

    def print(self):
        head = ("check", "measured", "target", "verdict", "s")
        widths = [max(len(str(r[i])) for r in self.rows + [head]) for i in range(5)]
        line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
        print(line(head))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in self.rows:
            print(line(r))


def soak(table, args):
    status, out, secs = run("soak", [BENCH, "soak", args.mnist, str(args.cycles)])
    r = results(out, "soak")
    if not r:
        table.add("SIGKILL cycles", f"no result (exit {status}, see soak.log)", "lost 0, duplicated 0", False, secs)
        return
    r = r[-1]
    measured = (
        f"{r['cycles']} cycles, {r['clients']} clients: {int(r['acknowledged']):,} acknowledged, "
        f"{r['lost']} lost, {r['duplicated']} duplicated, {int(r['in_flight']):,} in flight at the kills"
    )
    ok = status == 0 and r["lost"] == "0" and r["duplicated"] == "0"
    table.add("SIGKILL cycles", measured, "lost 0, duplicated 0", ok, secs)


def damage(table, args):
    status, out, secs = run("damage", [BENCH, "damage", args.mnist])
    rows = results(out, "damage")
    if not rows:
        table.add("file damage", f"no result (exit {status}, see damage.log)", "lost = destroyed", False, secs)
        return
    for r in rows:
        measured = (
            f"{int(r['acknowledged']):,} acknowledged: {r['destroyed']} destroyed, {r['lost']} lost, "
            f"{r['reported']} reported lost (seq lists match: {r['seqs_match']}); "
            f"next seq {r['next_seq']} > {r['max_acked']}: {r['next_above']}"
        )
        ok = (
            r["lost"] == r["destroyed"]
            and r["reported"] == r["destroyed"]
            and r["seqs_match"] == "yes"
            and r["next_above"] == "yes"
        )
        table.add(
            f"damage: {r['kind']}",
            measured,
            "lost = destroyed = reported, seq lists equal, next seq above",
            ok,
            secs / len(rows),
        )


def slowloris(table, args):
    status, out, secs = run("slowloris", ["bench/slowloris.sh", str(args.slowloris_seconds)])
    keep = re.findall(r"/classify, keep-alive connection: n=(\d+) p50 ([\d.]+) ms p99 ([\d.]+) ms", out)
    probes = re.findall(r"/healthz, fresh connection: n=(\d+)", out)
    failures = re.findall(r"failures: (.*)", out)
    attack = re.search(r"== attack: (\d+) slowloris connections", out)
    if status != 0 or len(keep) < 2 or len(probes) < 2 or len(failures) < 2:
        table.add("slowloris", f"no result (exit {status}, see slowloris.log)", "p99 <= 50 ms", False, secs)
        return
    n, p50, p99 = keep[-1]
    healthz = int(probes[-1])
    ok = float(p99) <= 50 and failures[-1].strip() == "none" and healthz >= args.slowloris_seconds - 2
    measured = (
        f"{attack.group(1) if attack else '?'} slow connections for {args.slowloris_seconds} s: "
        f"/classify p50 {p50} ms, p99 {p99} ms (n={n}); /healthz {healthz} answered; failures: {failures[-1].strip()}"
    )
    table.add("slowloris", measured, "/classify p99 <= 50 ms, every /healthz answered", ok, secs)


def schemathesis(table, args):
    status, out, secs = run("schemathesis", ["bench/schemathesis.sh", str(args.max_examples)])
    cases = re.search(r"Test cases:\s*(\d+) generated, (?:(\d+) passed|\d+ found (\d+) unique failure)", out)
    ops = re.search(r"Tested: (\d+)", out)
    if cases:
        failures = cases.group(3) or "0"
        measured = (
            f"{ops.group(1) if ops else '?'} operations, {int(cases.group(1)):,} test cases, "
            f"{failures} unique failures (--max-examples {args.max_examples})"
        )
    else:
        measured = f"see schemathesis.log (exit {status})"
    table.add("schemathesis --checks all", measured, "0 failures", status == 0, secs)


# The access table of docs/http-api.md: the status class each kind of credentials gets, per
# route group, with probes and /metrics open (the default) and closed.
NEEDS_LEARN = {"none": 401, "wrong": 403, "read": 403, "learn": "2xx", "twice": 400}
NEEDS_READ = {"none": 401, "wrong": 403, "read": "2xx", "learn": "2xx", "twice": 400}
OPEN = {"none": "2xx", "wrong": "2xx", "read": "2xx", "learn": "2xx", "twice": 400}
ALWAYS_OPEN = {k: "2xx" for k in OPEN}


def group(path):
    if path == "/learn" or path.startswith("/admin/"):
        return "learn"
    if path == "/openapi.json":
        return "always open"
    if path in ("/metrics", "/", "/v1/status"):
        return "observe"
    if path in ("/healthz", "/readyz") or path.startswith("/v2/health/"):
        return "health"
    return "read"


def expected(path, closed):
    g = group(path)
    if g == "learn":
        return NEEDS_LEARN
    if g == "read":
        return NEEDS_READ
    if g == "always open":
        return ALWAYS_OPEN
    return NEEDS_READ if closed else OPEN


LEARN_TOKEN, READ_TOKEN = "reliability-learn", "reliability-read"


def start_server(data_dir, closed):
    env = {
        **os.environ,
        "FFD_LEARN_TOKEN": LEARN_TOKEN,
        "FFD_READ_TOKEN": READ_TOKEN,
        "FFD_NETWORK__HIDDEN": "[16]",
    }
    if closed:
        env["FFD_AUTH__METRICS_OPEN"] = "false"
        env["FFD_AUTH__HEALTH_OPEN"] = "false"
    proc = subprocess.Popen(
        [FFD, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    for line in proc.stderr:
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message") == "listening":
            host, port = fields["addr"].rsplit(":", 1)
            return proc, host, int(port)
    raise RuntimeError("the server did not start")


def request(host, port, method, path, credentials, body):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest(method.upper(), path)
        tokens = {
            "none": [],
            "wrong": ["not-a-token"],
            "read": [READ_TOKEN],
            "learn": [LEARN_TOKEN],
            "twice": [LEARN_TOKEN, READ_TOKEN],
        }[credentials]
        for t in tokens:
            conn.putheader("Authorization", f"Bearer {t}")
        data = json.dumps(body).encode() if body is not None else b""
        if body is not None:
            conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def auth(table, args):
    started = time.monotonic()
    total, unexpected, lines, routes = 0, [], [], set()
    for closed in (False, True):
        with tempfile.TemporaryDirectory() as data:
            proc, host, port = start_server(data, closed)
            try:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("GET", "/openapi.json")
                document = json.loads(conn.getresponse().read())
                conn.close()
                for path, item in document["paths"].items():
                    for method, op in item.items():
                        content = op.get("requestBody", {}).get("content", {}).get("application/json", {})
                        examples = list(content.get("examples", {}).values())
                        body = examples[0]["value"] if examples else None
                        target = path.replace("{model_name}", "ffd")
                        row = []
                        for credentials, want in expected(path, closed).items():
                            got = request(host, port, method, target, credentials, body)
                            ok = (200 <= got < 300) if want == "2xx" else got == want
                            total += 1
                            routes.add((method, path))
                            row.append(f"{credentials} {got}{'' if ok else ' (want ' + str(want) + ')'}")
                            if not ok:
                                unexpected.append(f"{method.upper()} {target} {credentials}: {got}, want {want}")
                        lines.append(f"{'closed' if closed else 'open'} probes  {method.upper():5} {target:32} " + ", ".join(row))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    (LOGS / "auth.log").write_text("\n".join(lines + unexpected) + "\n")
    measured = (
        f"{len(routes)} operations x 5 credentials x probes open/closed = {total} requests, "
        f"{len(unexpected)} unexpected" + (f" ({'; '.join(unexpected[:3])})" if unexpected else "")
    )
    table.add("auth matrix", measured, "0 unexpected", not unexpected, time.monotonic() - started)


CHECKS = {"soak": soak, "damage": damage, "slowloris": slowloris, "schemathesis": schemathesis, "auth": auth}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few minutes instead of a quarter of an hour")
    parser.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks: " + ", ".join(CHECKS))
    parser.add_argument("--mnist", default=os.environ.get("MNIST_DIR", str(ROOT / "tests/data/mnist-small")))
    args = parser.parse_args()
    args.cycles = 4 if args.quick else 20
    args.slowloris_seconds = 20 if args.quick else 60
    args.max_examples = 10 if args.quick else 50
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--bin", "ffd", "--example", "durability_bench"],
        cwd=ROOT,
        check=True,
    )
    table = Table()
    for name in args.only.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        CHECKS[name](table, args)
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"
    )
    print(f"reliability suite ({'quick' if args.quick else 'full'}), {os.cpu_count()} x {cpu}, "
          f"{time.monotonic() - started:.0f} s in all")
    table.print()
    sys.exit(0 if all(r[3] == "ok" for r in table.rows) else 1)


if __name__ == "__main__":
    main()
