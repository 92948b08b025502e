#!/usr/bin/env python3
"""The HTTP ingest benchmark: accepted POST /api/v1/messages per second, each answered 201 only
after the durable commit, next to the SMPP ingest figure of the same bridge in the same run.

    python bench/http_ingest.py                   # about 30 s on a 2-core machine
    python bench/http_ingest.py --connections 32 --count 20000

What it does:

1. starts the demo bridge as a child process (bench/ingest.py's `Bridge`, fresh data dir) with
   its HTTP port on;
2. warms up both front ends (``--warmup`` each, not reported);
3. HTTP: ``--connections`` keep-alive connections, each sending POSTs one after another (JSON,
   one destination, Basic auth as the demo ESME) until ``--count`` were answered; a small raw
   HTTP/1.1 client on trio, so the client's CPU stays small next to the bridge's. Every answer
   must be 201; latency is from the request's first byte to the answer's last;
4. SMPP: bench/loadgen.py with one bind at window = ``--connections`` (the same number of
   requests in flight) and the same count;
5. stops the bridge and counts the messages in its store: 201s + ESME_ROKs must all be there.

Prints both figures and their ratio. The goal: the HTTP API within reach of SMPP's durable
ingest (an HTTP request carries more bytes and parsing than a submit_sm; the commit is shared).
Exit status 0 when everything acknowledged is in the store.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import Bridge, count_rows, free_port  # noqa: E402
from loadgen import format_result, run_load  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _connection(port: int, request: bytes, n: int, latencies: list[float], statuses: dict[int, int]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buf = bytearray()
    async with stream:
        for _ in range(n):
            t0 = time.perf_counter()
            await stream.send_all(request)
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = bytes(buf[:end]).lower()
                    i = head.find(b"content-length:")
                    length = int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
                    if len(buf) >= end + 4 + length:
                        status = int(buf[9:12])
                        del buf[: end + 4 + length]
                        break
                data = await stream.receive_some(65536)
                if not data:
                    raise ConnectionError("the bridge closed the connection")
                buf += data
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1


def http_load(port: int, connections: int, count: int) -> dict[str, Any]:
    body = json.dumps({"to": "+15550001", "text": "Hello from the smpp-bridge HTTP load generator"}).encode()
    auth = base64.b64encode(b"demo:demo")
    request = (b"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic " + auth +
               b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    per = [count // connections + (1 if i < count % connections else 0) for i in range(connections)]

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for n in per:
                nursery.start_soon(_connection, port, request, n, latencies, statuses)

    t0 = time.perf_counter()
    trio.run(main)
    wall = time.perf_counter() - t0
    return {
        "connections": connections, "count": count, "accepted": statuses.get(201, 0), "statuses": statuses,
        "duration_s": wall, "rate_per_s": statuses.get(201, 0) / wall,
        "latency_ms": {"p50": 1000 * percentile(latencies, 0.5), "p99": 1000 * percentile(latencies, 0.99),
                       "max": 1000 * max(latencies, default=0.0)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--connections", type=int, default=16, help="HTTP connections; also the SMPP window")
    ap.add_argument("--count", type=int, default=10_000, help="messages per front end")
    ap.add_argument("--warmup", type=int, default=500, help="messages per front end before measuring")
    ap.add_argument("--log-level", default="warning", help="the bridge's --log-level")
    a = ap.parse_args(argv)
    tmp_root = Path(tempfile.mkdtemp(prefix="smpp-bridge-http-bench-"))
    bridge = Bridge(tmp_root / "data", a.log_level, admin_port=free_port())
    bridge.start()
    acked = 0
    try:
        print(f"bridge pid {bridge.pid}: SMPP 127.0.0.1:{bridge.port}, HTTP 127.0.0.1:{bridge.admin_port}")
        if a.warmup:
            w = http_load(bridge.admin_port, min(a.connections, a.warmup), a.warmup)
            acked += w["accepted"]
            acked += run_load(port=bridge.port, sessions=1, window=10, count=a.warmup)["accepted"]
        h = http_load(bridge.admin_port, a.connections, a.count)
        acked += h["accepted"]
        lat = h["latency_ms"]
        other = {k: v for k, v in h["statuses"].items() if k != 201}
        print(f"HTTP  POST /api/v1/messages, {a.connections} connections: {h['accepted']}/{a.count} answered 201 "
              f"in {h['duration_s']:.2f} s = {h['rate_per_s']:,.0f}/s; latency ms p50 {lat['p50']:.2f} "
              f"p99 {lat['p99']:.2f} max {lat['max']:.2f}; other answers: {other or 'none'}")
        s = run_load(port=bridge.port, sessions=1, window=a.connections, count=a.count)
        acked += s["accepted"]
        print(f"SMPP  submit_sm, 1 bind at window {a.connections}: {format_result(s)}")
        ratio = h["rate_per_s"] / s["rate_per_s"] if s["rate_per_s"] else 0.0
        print(f"HTTP takes {ratio:.2f}x the SMPP rate (both durable: 201 and ESME_ROK only after the commit)")
    finally:
        rc = bridge.stop("term")
    rows = count_rows(bridge.db_path)
    ok = rows["messages"] == acked and rows["quick_check"] == "ok"
    print(f"durability: {acked} acknowledged (201 + ESME_ROK), {rows['messages']} messages in the store after "
          f"the stop (exit code {rc}), quick_check {rows['quick_check']}: {'OK' if ok else 'MISMATCH'}")
    shutil.rmtree(tmp_root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
