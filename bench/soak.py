#!/usr/bin/env python3
"""Soak: many ESMEs with many binds submitting at a steady rate for a long time. Is the bridge's
resident memory flat after warm-up, does it keep its file descriptors, is latency stable?

    python bench/soak.py --minutes 10          # the full form: 20 ESMEs x 10 binds, 10 minutes
    python bench/soak.py --seconds 20          # what CI runs (tests/reliability/test_soak.py)
    python bench/soak.py --minutes 10 --lines 0 --rate 400   # store only: no devices

What it does: starts the bridge (``smpp-bridge run``) with ``--esmes`` ESMEs, binds each
``--binds`` times (transceivers), and submits ``--rate`` submit_sm per second in total, spread
evenly over the binds (paced, not as fast as possible: a soak looks for drift, not for the
ceiling; bench/ingest.py measures the ceiling), each bind with at most ``--window`` outstanding.
Every ``--interval`` seconds it prints the bridge's VmRSS, open file descriptors and threads
(from /proc/<pid>; a thread count swinging by the dozen went with a C heap that kept growing:
README, soak figures) and the submit latency p50/p99/max of that interval (submit_sm written ->
its submit_sm_resp read, i.e. including the durable commit).

Where the messages go. By default end to end, as deployed: an emulated GoIP with ``--lines``
(32) fast lines and one route, every submit asking for a receipt, and ``--inbound`` SMS per
second (2) arriving in the GoIP's inboxes, each delivered to an ESME as a deliver_sm (MO) and
deleted from the device after its commit. The rate stays below what the lines can send (about 5
per second per line alone, less on a shared machine: default ``--rate`` 50) so that no backlog
grows: in-memory route queues grow with a backlog, which is memory in use, not a leak. Each
sample prints the backlog (acknowledged, no receipt yet); one that keeps growing makes the
memory verdict meaningless, and the verdict says so. At the end the soak waits (up to a
minute) for every receipt and every MO; the verdict counts them. ``--lines 0`` runs the store-only
variant: no devices, no routes, every message stored and left there.

What "flat" means here (the verdict at the end):

* warm-up is the first ``--warmup`` fraction of the run (20 %): first connections, SQLite's page
  cache, Python's allocator arenas and the metric series all fill up there;
* memory: the largest VmRSS after warm-up is at most 10 % (and at least 4 MiB) above the VmRSS
  at the end of warm-up, and the least-squares slope of VmRSS after warm-up (printed as
  MiB/hour) does not climb: its rise over the measured span is within that same allowance, and
  on a span of 5 minutes or more it is at most ``MAX_SLOPE_MIB_PER_HOUR`` (5). A creep of a few
  MiB a minute (glibc's default arenas) fails both, however flat the band looked;
* file descriptors: at the end (the lowest of the last three samples: SQLite briefly opens a
  temporary file now and then) no more than the most during warm-up (end to end, the HTTP
  client's pool to the device opens its connections as the lines get busy);
* latency: no upward drift. Over the intervals after warm-up, the median p50 of the last third
  is at most 1.5 x (+1 ms) that of the first third, and the median p99 at most 3 x (+5 ms): the
  p99 of one interval swings by a few x with the disk's fsync times on a shared machine, while a
  cost that grows with the number of stored messages would go far past these bounds.

The allocator: the bridge is started with ``MALLOC_ARENA_MAX=2`` (``--malloc-arena-max``; 0
keeps glibc's default of 8 arenas per core). With glibc's default, the store's worker threads
spread their allocations over many malloc arenas and VmRSS creeps up by about 1 MiB a minute for
at least ten minutes while the Python heap stays flat (tracemalloc); with two arenas it stays
within a band of a few MiB. Deployments should set it too (systemd ``Environment=``). The
bridge itself also gives its C heap's free memory back every few seconds (``malloc_trim``,
bridge/heap.py); ``--malloc-trim 0`` turns that off, to compare.

Issue 14's goal is printed for every run: the most VmRSS reached over the last two thirds of the
run, above the sample at one third (the last 20 minutes of a 30-minute run), at most 2 MB. It is
part of the verdict only on runs of 30 minutes or more.

Every submit must be answered ESME_ROK and be in the store at the end (counted rows); end to
end, every submit's receipt and every inbound SMS's MO must have arrived.
Exit status 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sqlite3
import statistics
import struct
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from e2e_support import BridgeProcess, EmulatorProcess, base_config  # noqa: E402

from bridge.heap import ENV as TRIM_ENV, TRIM_SECONDS  # noqa: E402
from bridge.smpp.constants import CommandId  # noqa: E402
from bridge.smpp.pdu import Pdu, encode  # noqa: E402

HEADER = struct.Struct(">IIII")
C = CommandId
MAX_SLOPE_MIB_PER_HOUR = 5.0
SLOPE_SPAN_SECONDS = 300.0
# Issue 14's goal: at most 2 MB (2,000,000 bytes) of growth over the last 20 minutes of a 30-minute
# run: the most VmRSS reached after the sample at a third of the run, minus that sample. Printed
# for every run (over its last two thirds); part of the verdict on runs of 30 minutes or more.
LATE_GROWTH_GOAL_KB = 2_000_000 / 1024
LATE_GOAL_RUN_SECONDS = 1800.0


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))]


def soak_config(esmes: int, binds: int, emulator_url: str | None, lines: int, inbound: bool = False) -> str:
    block = "".join(
        f"""
        - system_id: soak{i:02d}
          password: pw{i:02d}
          allowed_ips: [127.0.0.1]
          max_binds: {binds}
        """
        for i in range(1, esmes + 1)
    )
    extra = "limits:\n  queue_depth: 100000000\n"
    if emulator_url:
        extra += textwrap.dedent(f"""
            devices:
              - name: goip1
                kind: goip_http
                url: {emulator_url}
                username: admin
                password: admin
                lines: {lines}
                timeout: 5
                status_poll_interval: 0.1
                status_timeout: 20
                inbox_poll_interval: {1 if inbound else 10}
                caps: {{per_minute: 0}}
            routes:
              - name: all
                channels: [goip1]
            """)
        if inbound:
            extra += "inbound:\n  default_esme: soak01\n  delete_after_commit: true\n"
    return base_config(esmes=textwrap.dedent(block), extra=extra)


class Bind:
    __slots__ = ("sock", "seq", "outstanding", "inbuf", "out", "esme")

    def __init__(self, sock: socket.socket, esme: str) -> None:
        self.sock = sock
        self.esme = esme
        self.seq = 1
        self.outstanding: dict[int, float] = {}
        self.inbuf = bytearray()
        self.out = bytearray()


def bind(port: int, system_id: str, password: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(encode(Pdu(C.BIND_TRANSCEIVER, 0, 1, {"system_id": system_id, "password": password, "interface_version": 0x34})))
    head = b""
    while len(head) < 16:
        chunk = s.recv(16 - len(head))
        if not chunk:
            raise RuntimeError(f"bind of {system_id} closed")
        head += chunk
    length, cid, status, _seq = HEADER.unpack(head)
    rest = length - 16
    while rest > 0:
        rest -= len(s.recv(rest))
    if cid != C.BIND_TRANSCEIVER_RESP or status != 0:
        raise RuntimeError(f"bind of {system_id} refused: 0x{status:08X}")
    s.setblocking(False)
    return s


def run_soak(
    seconds: float,
    *,
    esmes: int = 20,
    binds: int = 10,
    rate: float = 50.0,
    window: int = 10,
    interval: float = 10.0,
    warmup: float = 0.2,
    lines: int = 32,
    inbound: float = 2.0,
    malloc_arena_max: int = 2,
    malloc_trim: float | None = None,
    workdir: Path | None = None,
    say: Any = print,
) -> dict[str, Any]:
    tmp = None
    saved_env = {k: os.environ.get(k) for k in ("MALLOC_ARENA_MAX", TRIM_ENV)}
    if malloc_arena_max:
        os.environ["MALLOC_ARENA_MAX"] = str(malloc_arena_max)  # read by glibc in the child at start
    else:
        os.environ.pop("MALLOC_ARENA_MAX", None)
    if malloc_trim is None:
        os.environ.pop(TRIM_ENV, None)  # the bridge's own default (bridge/heap.py)
    else:
        os.environ[TRIM_ENV] = f"{malloc_trim:g}"
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="smpp-bridge-soak-")
        workdir = Path(tmp.name)
    inbound = inbound if lines else 0.0
    emulator = EmulatorProcess(lines=lines, send_duration=0.05) if lines else None
    bridge = BridgeProcess(workdir, soak_config(esmes, binds, emulator.url if emulator else None, lines, inbound > 0))
    samples: list[dict[str, Any]] = []
    accepted = errors = receipts = mo = injected = 0
    try:
        bridge.start()
        pid = bridge.proc.pid
        sel = selectors.DefaultSelector()
        all_binds: list[Bind] = []
        for i in range(1, esmes + 1):
            for _ in range(binds):
                b = Bind(bind(bridge.port, f"soak{i:02d}", f"pw{i:02d}"), f"soak{i:02d}")
                all_binds.append(b)
                sel.register(b.sock, selectors.EVENT_READ, b)
        say(f"soak: {esmes} ESMEs x {binds} binds = {len(all_binds)} sessions, {rate:g} submit_sm/s for {seconds:g} s, "
            f"{'end to end through ' + str(lines) + ' GoIP lines with receipts' if lines else 'store only (no routes)'}"
            f"{f', {inbound:g} inbound SMS/s' if inbound else ''}, "
            f"MALLOC_ARENA_MAX={malloc_arena_max or 'unset (glibc default)'}, "
            f"malloc_trim {'off' if malloc_trim == 0 else f'every {TRIM_SECONDS if malloc_trim is None else malloc_trim:g} s'}; "
            f"bridge pid {pid}, RSS {rss_kb(pid) / 1024:.1f} MiB, {fd_count(pid)} fds after the binds")
        say(f"{'t (s)':>6} {'submits':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'RSS MiB':>8} {'fds':>5} {'thr':>4}"
            + (f" {'receipts':>8} {'MO':>5} {'backlog':>7}" if lines else ""))
        registered = 1 if lines else 0
        started = time.monotonic()
        next_sample = started + interval
        sent_total = 0
        rr = 0
        lat: list[float] = []
        int_errors = int_receipts = int_mo = 0
        n_binds = len(all_binds)
        stalled = 0
        while True:
            now = time.monotonic()
            if now - started >= seconds:
                break
            if emulator is not None and inbound and injected < int((now - started) * inbound):
                injected += 1
                emulator.inject(1 + injected % lines, f"+4915{injected:09d}", f"soak inbound {injected}")
            due = int((now - started) * rate) - sent_total
            tries = 0
            while due > 0 and tries < n_binds:
                b = all_binds[rr % n_binds]
                rr += 1
                if len(b.outstanding) >= window:
                    tries += 1
                    continue
                tries = 0
                b.seq += 1
                sent_total += 1
                pdu = Pdu(C.SUBMIT_SM, 0, b.seq, {
                    "source_addr_ton": 5, "source_addr": "soak", "dest_addr_ton": 1, "dest_addr_npi": 1,
                    "destination_addr": f"+49170{sent_total % 10_000_000:07d}", "registered_delivery": registered,
                    "short_message": f"soak {sent_total}".encode()})
                b.out += encode(pdu)
                b.outstanding[b.seq] = now
                due -= 1
            if due > 0:
                stalled += due  # every bind has a full window: the bridge is not keeping up
            for b in all_binds:
                if b.out:
                    try:
                        n = b.sock.send(b.out)
                        del b.out[:n]
                    except BlockingIOError:
                        pass
            for key, _ev in sel.select(timeout=0.005):
                b = key.data
                try:
                    chunk = b.sock.recv(65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    raise RuntimeError(f"the bridge closed a session of {b.esme}")
                b.inbuf += chunk
                t = time.monotonic()
                pos = 0
                buf = b.inbuf
                while len(buf) - pos >= 16:
                    length, cid, status, seq = HEADER.unpack_from(buf, pos)
                    if len(buf) - pos < length:
                        break
                    if cid == C.SUBMIT_SM_RESP:
                        sent_at = b.outstanding.pop(seq, None)
                        if sent_at is not None:
                            if status == 0:
                                accepted += 1
                                lat.append(t - sent_at)
                            else:
                                errors += 1
                                int_errors += 1
                    elif cid == C.DELIVER_SM:
                        if _is_receipt(buf, pos):
                            receipts += 1
                            int_receipts += 1
                        else:
                            mo += 1
                            int_mo += 1
                        b.out += HEADER.pack(17, C.DELIVER_SM_RESP, 0, seq) + b"\0"
                    elif cid == C.ENQUIRE_LINK:
                        b.out += HEADER.pack(16, C.ENQUIRE_LINK_RESP, 0, seq)
                    pos += length
                del buf[:pos]
            if now >= next_sample:
                sample = {
                    "t": round(now - started, 1), "submits": len(lat), "errors": int_errors,
                    "p50_ms": round(percentile(lat, 50) * 1000, 2), "p99_ms": round(percentile(lat, 99) * 1000, 2),
                    "max_ms": round(max(lat, default=0) * 1000, 2), "rss_kb": rss_kb(pid), "fds": fd_count(pid),
                    "threads": thread_count(pid),
                    "receipts": int_receipts, "mo": int_mo, "backlog": accepted - receipts if lines else 0,
                }
                samples.append(sample)
                say(f"{sample['t']:>6.0f} {sample['submits']:>8} {sample['errors']:>6} {sample['p50_ms']:>7.2f} "
                    f"{sample['p99_ms']:>7.2f} {sample['max_ms']:>7.2f} {sample['rss_kb'] / 1024:>8.1f} {sample['fds']:>5} {sample['threads']:>4}"
                    + (f" {int_receipts:>8} {int_mo:>5} {sample['backlog']:>7}" if lines else ""))
                lat = []
                int_errors = int_receipts = int_mo = 0
                next_sample += interval
        # Collect the last answers (and, end to end, the last receipts and MOs), then unbind.
        deadline = time.monotonic() + 10
        drain_until = time.monotonic() + 60

        def waiting() -> bool:
            if any(b.outstanding for b in all_binds) and time.monotonic() < deadline:
                return True
            end_to_end = lines and (receipts < accepted or mo < injected)
            return bool(end_to_end) and time.monotonic() < drain_until

        while waiting():
            for key, _ev in sel.select(timeout=0.05):
                b = key.data
                try:
                    chunk = b.sock.recv(65536)
                except BlockingIOError:
                    continue
                b.inbuf += chunk
                pos = 0
                while len(b.inbuf) - pos >= 16:
                    length, cid, status, seq = HEADER.unpack_from(b.inbuf, pos)
                    if len(b.inbuf) - pos < length:
                        break
                    if cid == C.SUBMIT_SM_RESP and b.outstanding.pop(seq, None) is not None:
                        accepted += status == 0
                        errors += status != 0
                    elif cid == C.DELIVER_SM:
                        if _is_receipt(b.inbuf, pos):
                            receipts += 1
                        else:
                            mo += 1
                        b.sock.setblocking(True)
                        b.sock.sendall(HEADER.pack(17, C.DELIVER_SM_RESP, 0, seq) + b"\0")
                        b.sock.setblocking(False)
                    pos += length
                del b.inbuf[:pos]
        unanswered = sum(len(b.outstanding) for b in all_binds)
        for b in all_binds:
            try:
                b.sock.setblocking(True)
                b.sock.settimeout(2)
                b.sock.sendall(HEADER.pack(16, C.UNBIND, 0, 0x7FFFFFF0))
            except OSError:
                pass
        for b in all_binds:
            b.sock.close()
        final_rss, final_fds = rss_kb(pid), fd_count(pid)
        code = bridge.stop()
        with sqlite3.connect(f"file:{bridge.db_path}?mode=ro", uri=True) as db:
            stored = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        bridge.kill()
        if emulator is not None:
            emulator.stop()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result = verdict(samples, warmup)
    result.update(
        malloc_arena_max=malloc_arena_max, malloc_trim=malloc_trim, esmes=esmes, binds=binds, sessions=esmes * binds, rate=rate, seconds=seconds, lines=lines,
        sent=sent_total, accepted=accepted, errors=errors, unanswered=unanswered, stored=stored,
        receipts=receipts, mo=mo, inbound_injected=injected, inbound_rate=inbound, stalled=stalled, final_rss_kb=final_rss, final_fds=final_fds, stop_exit_code=code,
        samples=samples,
    )
    result["delivered_all"] = not lines or (receipts == accepted and mo == injected)
    result["ok"] = bool(result["ok"] and errors == 0 and unanswered == 0 and stored == accepted == sent_total
                        and result["delivered_all"])
    if tmp is not None:
        tmp.cleanup()
    return result


def _is_receipt(buf: bytes | bytearray, pos: int) -> bool:
    """Whether the deliver_sm at ``pos`` is a delivery receipt (esm_class bit 2) or an MO."""
    i = pos + 16
    i = buf.index(0, i) + 1  # service_type
    i += 2
    i = buf.index(0, i) + 1  # source_addr
    i += 2
    i = buf.index(0, i) + 1  # destination_addr
    return bool(buf[i] & 0x04)


def verdict(samples: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Flat memory, no fd growth, stable latency (see the module docstring)."""
    if len(samples) < 3:
        return {"ok": False, "why": "too few samples (run longer or use a shorter --interval)"}
    w = max(1, round(len(samples) * warmup))
    base, after = samples[w - 1], samples[w:]
    rss0 = base["rss_kb"]
    rss_max = max(s["rss_kb"] for s in after)
    growth_kb = rss_max - rss0
    allowed_kb = max(4096, rss0 * 0.10)
    ts = [s["t"] for s in after]
    ys = [s["rss_kb"] for s in after]
    slope = 0.0
    if len(after) >= 2 and max(ts) > min(ts):
        mt, my = statistics.fmean(ts), statistics.fmean(ys)
        slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / sum((t - mt) ** 2 for t in ts)
    # The most any warm-up sample had: end to end, the HTTP client's pool to the device opens
    # its connections as the lines get busy, not all by the end of warm-up.
    fd0 = max(s["fds"] for s in samples[:w])
    fd_max = max(s["fds"] for s in after)
    # SQLite opens a temporary file now and then (a GROUP BY of the monitor): one sample may
    # catch it. Growth is a count that does not come back down.
    fd_end = min(s["fds"] for s in after[-3:])
    third = max(1, len(after) // 3)
    p50_first = statistics.median(s["p50_ms"] for s in after[:third])
    p50_last = statistics.median(s["p50_ms"] for s in after[-third:])
    p99_first = statistics.median(s["p99_ms"] for s in after[:third])
    p99_last = statistics.median(s["p99_ms"] for s in after[-third:])
    span = (max(ts) - min(ts)) if len(ts) >= 2 else 0.0
    slope_mib_h = slope * 3600 / 1024
    # The trend must not climb either: a steady creep hides in a band for a while.
    slope_ok = slope * span <= allowed_kb and (span < SLOPE_SPAN_SECONDS or slope_mib_h <= MAX_SLOPE_MIB_PER_HOUR)
    memory_flat = growth_kb <= allowed_kb and slope_ok
    # The last two thirds (issue 14: the last 20 minutes of 30).
    t_end = samples[-1]["t"]
    late0 = min(samples, key=lambda s: abs(s["t"] - t_end / 3))
    late = [s for s in samples if s["t"] > late0["t"]] or [late0]
    late_growth_kb = max(s["rss_kb"] for s in late) - late0["rss_kb"]
    late_judged = t_end >= LATE_GOAL_RUN_SECONDS * 0.95
    # Less sensitive to one sample (the C heap is trimmed every few seconds, so VmRSS saws by a
    # MiB or so): the median of the samples of the span's first sixth against its last sixth.
    sixth = [s for s in samples if s["t"] >= late0["t"]]
    k = max(1, len(sixth) // 6)
    late_median_growth_kb = (statistics.median(s["rss_kb"] for s in sixth[-k:])
                             - statistics.median(s["rss_kb"] for s in sixth[:k]))
    late_ok = late_growth_kb <= LATE_GROWTH_GOAL_KB
    # End to end, a backlog that grows (the devices cannot keep up) is memory in use: the memory
    # verdict then says nothing about leaks. Growing: the last third's median above twice the
    # first third's plus a second's worth of sends.
    backlogs = [s.get("backlog", 0) for s in after]
    backlog_first = statistics.median(backlogs[:third]) if backlogs else 0
    backlog_last = statistics.median(backlogs[-third:]) if backlogs else 0
    backlog_steady = backlog_last <= 2 * backlog_first + 100
    fds_flat = fd_end <= fd0
    # p99 of a 20 s interval on a shared machine swings by a few x with the disk's fsync times;
    # a real drift (cost growing with the number of stored messages) would go far past this.
    latency_stable = p50_last <= 1.5 * p50_first + 1 and p99_last <= 3 * p99_first + 5
    return {
        "warmup_samples": w,
        "rss_after_warmup_kb": rss0,
        "rss_max_after_warmup_kb": rss_max,
        "rss_growth_kb": growth_kb,
        "rss_growth_allowed_kb": round(allowed_kb),
        "rss_slope_mib_per_hour": round(slope_mib_h, 2),
        "rss_slope_span_s": round(span),
        "rss_slope_ok": slope_ok,
        "fds_after_warmup": fd0,
        "fds_max_after_warmup": fd_max,
        "fds_at_end": fd_end,
        "p50_ms_first_third": p50_first,
        "p50_ms_last_third": p50_last,
        "p99_ms_first_third": p99_first,
        "p99_ms_last_third": p99_last,
        "p50_ms_median": statistics.median(s["p50_ms"] for s in after),
        "memory_flat": memory_flat,
        "late_from_s": late0["t"],
        "late_rss_start_kb": late0["rss_kb"],
        "late_rss_growth_kb": late_growth_kb,
        "late_rss_end_growth_kb": late[-1]["rss_kb"] - late0["rss_kb"],
        "late_median_growth_kb": late_median_growth_kb,
        "late_growth_ok": late_ok,
        "late_growth_judged": late_judged,
        "backlog_first_third": backlog_first,
        "backlog_last_third": backlog_last,
        "backlog_steady": backlog_steady,
        "fds_flat": fds_flat,
        "latency_stable": latency_stable,
        "ok": memory_flat and fds_flat and latency_stable and backlog_steady and (late_ok or not late_judged),
    }


def format_verdict(r: dict[str, Any]) -> str:
    if "rss_after_warmup_kb" not in r:
        return f"soak: {r.get('why')}"
    return "\n".join([
        f"soak: {r['sessions']} sessions, {r['sent']:,} submits in {r['seconds']:g} s: ESME_ROK {r['accepted']:,}, "
        f"errors {r['errors']}, unanswered {r['unanswered']}, stored {r['stored']:,}"
        + (f", receipts {r['receipts']:,} of {r['accepted']:,}, MO {r['mo']:,} of {r['inbound_injected']:,} inbound"
           if r["lines"] else "")
        + (f"; the bridge fell behind the pace by {r['stalled']} submits" if r["stalled"] else ""),
        f"  memory: VmRSS {r['rss_after_warmup_kb'] / 1024:.1f} MiB after warm-up, at most "
        f"{r['rss_max_after_warmup_kb'] / 1024:.1f} MiB later (+{r['rss_growth_kb'] / 1024:.1f} MiB, allowed "
        f"+{r['rss_growth_allowed_kb'] / 1024:.1f}), slope {r['rss_slope_mib_per_hour']:+.2f} MiB/h over "
        f"{r['rss_slope_span_s']} s ({'ok' if r['rss_slope_ok'] else 'CLIMBING'}; at most {MAX_SLOPE_MIB_PER_HOUR:g} "
        f"MiB/h on a span of {SLOPE_SPAN_SECONDS:g} s or more): "
        f"{'flat' if r['memory_flat'] else 'GROWING'}",
        f"  last two thirds (issue 14: at most {LATE_GROWTH_GOAL_KB / 1024:.2f} MiB = 2 MB over the last 20 of 30 minutes): "
        f"VmRSS {r['late_rss_start_kb'] / 1024:.1f} MiB at {r['late_from_s']:.0f} s, then at most "
        f"+{r['late_rss_growth_kb'] / 1024:.2f} MiB, {r['late_rss_end_growth_kb'] / 1024:+.2f} MiB at the end "
        f"(medians of its first and last sixth: {r['late_median_growth_kb'] / 1024:+.2f} MiB): "
        + ("met" if r["late_growth_ok"] else "MISSED")
        + ("" if r["late_growth_judged"] else f" (judged on runs of {LATE_GOAL_RUN_SECONDS / 60:g} minutes or more)"),
        f"  backlog (acknowledged, no receipt yet; medians, first third -> last third): "
        f"{r['backlog_first_third']:g} -> {r['backlog_last_third']:g}: "
        f"{'steady' if r['backlog_steady'] else 'GROWING (the devices fall behind; lower --rate)'}",
        f"  file descriptors: {r['fds_after_warmup']} after warm-up, {r['fds_at_end']} at the end "
        f"(at most {r['fds_max_after_warmup']} in between): "
        f"{'no growth' if r['fds_flat'] else 'GROWING'}",
        f"  latency (medians of the intervals, first third after warm-up -> last third): p50 "
        f"{r['p50_ms_first_third']:.2f} -> {r['p50_ms_last_third']:.2f} ms, p99 {r['p99_ms_first_third']:.2f} -> "
        f"{r['p99_ms_last_third']:.2f} ms: {'stable' if r['latency_stable'] else 'DRIFTING'}",
        f"  {'OK' if r['ok'] else 'FAILED'}",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Soak the bridge: flat memory, no fd growth, stable latency.")
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="run length in minutes (full form: 10)")
    length.add_argument("--seconds", type=float, help="run length in seconds")
    ap.add_argument("--esmes", type=int, default=20)
    ap.add_argument("--binds", type=int, default=10, help="binds per ESME")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="submit_sm per second over all binds [50; well below what --lines can send]")
    ap.add_argument("--window", type=int, default=10, help="outstanding submit_sm per bind, at most")
    ap.add_argument("--interval", type=float, help="seconds per printed sample (default: run length / 30, 2..30)")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run that is warm-up")
    ap.add_argument("--lines", type=int, default=32,
                    help="end to end through an emulated GoIP with this many lines, with receipts [32]; 0: store only")
    ap.add_argument("--inbound", type=float, default=2.0, help="inbound SMS per second into the GoIP's inboxes [2]")
    ap.add_argument("--malloc-arena-max", type=int, default=2,
                    help="MALLOC_ARENA_MAX for the bridge (default 2, as recommended for deployment; 0: glibc's default)")
    ap.add_argument("--malloc-trim", type=float, metavar="SECONDS",
                    help=f"seconds between the bridge's malloc_trim calls ({TRIM_ENV}; default: the bridge's "
                         f"own, {TRIM_SECONDS:g}; 0: off, to compare)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure and sample to FILE")
    a = ap.parse_args(argv)
    seconds = a.seconds if a.seconds is not None else 60 * (a.minutes if a.minutes is not None else 10)
    interval = a.interval or min(30.0, max(2.0, seconds / 30))
    r = run_soak(seconds, esmes=a.esmes, binds=a.binds, rate=a.rate, window=a.window, interval=interval,
                 warmup=a.warmup, lines=a.lines, inbound=a.inbound, malloc_arena_max=a.malloc_arena_max,
                 malloc_trim=a.malloc_trim)
    print(format_verdict(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
