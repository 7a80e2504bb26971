"""The two clients of bench/slowloris.sh (standard library only).

attack PORT SECONDS CONNECTIONS BYTE_EVERY RECONNECT_AFTER
    CONNECTIONS slowloris connections to 127.0.0.1:PORT from 127.0.0.2-17 (round robin): each
    sends the start of a request head, then one more header byte every BYTE_EVERY seconds,
    never finishing it; a connection the server closes is replaced after RECONNECT_AFTER
    seconds. Prints what happened to the connections.
measure PORT SECONDS
    POST /classify (one sample) in a loop on one keep-alive connection; once a second also
    /classify and GET /healthz on fresh connections. Prints latency percentiles and failures.
"""

import asyncio
import collections
import http.client
import json
import sys
import time

SOURCES = [f"127.0.0.{n}" for n in range(2, 18)]
HEAD = b"GET /healthz HTTP/1.1\r\nHost: ffd\r\nX-Slow: "


async def loris(source, port, end, byte_every, reconnect_after, stats, lifetimes):
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        except OSError:
            stats["connect failed"] += 1
            await asyncio.sleep(reconnect_after)
            continue
        stats["opened"] += 1
        opened = time.monotonic()
        closed = False
        try:
            writer.write(HEAD)
            await writer.drain()
            while time.monotonic() < end:
                try:
                    data = await asyncio.wait_for(reader.read(1024), byte_every)
                except asyncio.TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
                    continue
                if not data:
                    closed = True
                    break
                stats["answered"] += 1
        except OSError:
            closed = True
        if closed:
            stats["closed by the server"] += 1
            lifetimes.append(time.monotonic() - opened)
        else:
            stats["still open at the end"] += 1
        writer.close()
        await asyncio.sleep(reconnect_after)


async def attack(port, seconds, connections, byte_every, reconnect_after):
    end = time.monotonic() + seconds
    stats = collections.Counter()
    lifetimes = []
    await asyncio.gather(
        *(
            loris(SOURCES[i % len(SOURCES)], port, end, byte_every, reconnect_after, stats, lifetimes)
            for i in range(connections)
        )
    )
    lifetimes.sort()
    print(f"attack: {dict(stats)}")
    if lifetimes:
        print(
            f"attack: lifetime of server-closed connections: median {pct(lifetimes, 0.5):.2f} s, "
            f"max {lifetimes[-1]:.2f} s"
        )


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * (len(sorted_values) - 1) + 0.5))]


def report(name, latencies):
    if not latencies:
        print(f"{name}: no answer")
        return
    v = sorted(latencies)
    ms = lambda s: f"{1000 * s:.1f} ms"
    print(
        f"{name}: n={len(v)} p50 {ms(pct(v, 0.5))} p99 {ms(pct(v, 0.99))} max {ms(v[-1])}"
    )


def once(port, method, path, body=None):
    """One request on a fresh connection: (status, seconds)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body, {"content-type": "application/json"} if body else {})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def measure(port, seconds):
    body = json.dumps({"features": [0.5] * 784}).encode()
    keep = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    kept, fresh, probes = [], [], []
    failures = collections.Counter()
    end = time.monotonic() + seconds
    next_fresh = time.monotonic()
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            keep.request("POST", "/classify", body, {"content-type": "application/json"})
            response = keep.getresponse()
            response.read()
            if response.status == 200:
                kept.append(time.perf_counter() - started)
            else:
                failures[f"/classify keep-alive: {response.status}"] += 1
        except (OSError, http.client.HTTPException) as e:
            failures[f"/classify keep-alive: {type(e).__name__}"] += 1
            keep.close()
            keep = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        if time.monotonic() >= next_fresh:
            next_fresh += 1.0
            for path, into, request in (
                ("/classify", fresh, ("POST", "/classify", body)),
                ("/healthz", probes, ("GET", "/healthz")),
            ):
                try:
                    status, took = once(port, *request)
                    if status == 200:
                        into.append(took)
                    else:
                        failures[f"{path} fresh: {status}"] += 1
                except (OSError, http.client.HTTPException) as e:
                    failures[f"{path} fresh: {type(e).__name__}"] += 1
        time.sleep(0.02)
    report("/classify, keep-alive connection", kept)
    report("/classify, fresh connection", fresh)
    report("/healthz, fresh connection", probes)
    print(f"failures: {dict(failures) or 'none'}")


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "attack":
        asyncio.run(
            attack(int(args[0]), float(args[1]), int(args[2]), float(args[3]), float(args[4]))
        )
    elif mode == "measure":
        measure(int(args[0]), float(args[1]))
    else:
        sys.exit(__doc__)
