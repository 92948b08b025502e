#!/usr/bin/env python3
"""A windowed SMPP 3.4 load generator: bind, pipeline submit_sm, measure.

Standalone on purpose: plain sockets, ``struct`` and ``selectors``, nothing from the bridge
package, so it measures the server and can be pointed at any SMSC.

Each session binds (transmitter or transceiver), then keeps ``window`` submit_sm outstanding,
matching submit_sm_resp by sequence_number, and records the latency of every submit (from the
moment its bytes were handed to the kernel to the moment its resp was parsed,
``time.perf_counter``). Non-ESME_ROK answers are counted by status. enquire_link and deliver_sm
from the server are answered. At the end each session unbinds, waiting at most 2 s for the
unbind_resp.

Sessions can be spread over several OS processes (``processes``): one Python process may not
generate enough load on its own. The sessions of one process share one selector loop.

Library use::

    from loadgen import run_load
    result = run_load(port=2775, sessions=2, window=10, count=10_000)
    print(format_result(result))

CLI::

    python bench/loadgen.py --port 2775 --sessions 2 --window 50 --count 20000 [--json]

The result dict (JSON-able): accepted, errors (status name -> count), lost (submits that got no
answer), duration_s (first submit sent -> last resp received, over all sessions), rate_per_s
(accepted / duration_s), latency_ms (p50, p90, p99, max, mean), client_cpu_s (user+system CPU
of the load generator's sending/receiving threads during the run) and client_cpu_pct (of one
core, over duration_s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import resource
import selectors
import socket
import struct
import sys
import time
from array import array
from typing import Any

# -- SMPP constants (SMPP 3.4 §5.1.2, §5.1.3) ----------------------------------------------------

GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
SUBMIT_SM_RESP = 0x80000004
DELIVER_SM = 0x00000005
DELIVER_SM_RESP = 0x80000005
UNBIND = 0x00000006
UNBIND_RESP = 0x80000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
ENQUIRE_LINK_RESP = 0x80000015
DATA_SM = 0x00000103
DATA_SM_RESP = 0x80000103
RESPONSE_BIT = 0x80000000

BIND_IDS = {"transmitter": BIND_TRANSMITTER, "transceiver": BIND_TRANSCEIVER}

STATUS_NAMES = {
    0x00: "ESME_ROK",
    0x01: "ESME_RINVMSGLEN",
    0x02: "ESME_RINVCMDLEN",
    0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS",
    0x05: "ESME_RALYBND",
    0x08: "ESME_RSYSERR",
    0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR",
    0x0D: "ESME_RBINDFAIL",
    0x0E: "ESME_RINVPASWD",
    0x0F: "ESME_RINVSYSID",
    0x14: "ESME_RMSGQFUL",
    0x45: "ESME_RSUBMITFAIL",
    0x58: "ESME_RTHROTTLED",
    0xFF: "ESME_RUNKNOWNERR",
}

HEADER = struct.Struct(">IIII")
UNBIND_WAIT = 2.0  # seconds to wait for unbind_resp
RECV_BUF = 1 << 20


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, f"0x{status:08X}")


def _cstr(s: str | bytes) -> bytes:
    if isinstance(s, str):
        s = s.encode("ascii")
    return s + b"\x00"


def _pdu(command_id: int, seq: int, body: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(16 + len(body), command_id, status, seq) + body


def encode_bind(bind_type: str, system_id: str, password: str, seq: int = 1, system_type: str = "") -> bytes:
    body = (
        _cstr(system_id)
        + _cstr(password)
        + _cstr(system_type)
        + bytes([0x34, 0, 0])  # interface_version, addr_ton, addr_npi
        + _cstr("")  # address_range
    )
    return _pdu(BIND_IDS[bind_type], seq, body)


def encode_text(text: str) -> tuple[int, bytes]:
    """(data_coding, short_message) for ``text``: ASCII as data_coding 0, else UCS2."""
    try:
        return 0, text.encode("ascii")
    except UnicodeEncodeError:
        return 8, text.encode("utf-16-be")


class SubmitTemplate:
    """One submit_sm encoded once; each copy gets its sequence number (and, so that the store
    does not see one destination only, a 7-digit counter at the end of destination_addr)
    patched in place."""

    DEST_DIGITS = 7

    def __init__(self, text: str, source_addr: str = "loadgen", dest_prefix: str = "1555") -> None:
        data_coding, sm = encode_text(text)
        if len(sm) > 254:
            raise ValueError("--text is too long for one short_message (254 octets)")
        head = (
            _cstr("")  # service_type
            + bytes([5, 0])  # source_addr_ton (alphanumeric), source_addr_npi
            + _cstr(source_addr)
            + bytes([1, 1])  # dest_addr_ton (international), dest_addr_npi (E.164)
        )
        dest = dest_prefix.encode("ascii") + b"0" * self.DEST_DIGITS
        tail = (
            b"\x00"  # end of destination_addr
            + bytes([0, 0, 0])  # esm_class, protocol_id, priority_flag
            + _cstr("")  # schedule_delivery_time
            + _cstr("")  # validity_period
            + bytes([0, 0, data_coding, 0, len(sm)])  # registered_delivery, replace_if_present,
            # data_coding, sm_default_msg_id, sm_length
            + sm
        )
        body = head + dest + tail
        self.pdu = _pdu(SUBMIT_SM, 0, body)
        self.size = len(self.pdu)
        self.dest_end = 16 + len(head) + len(dest)  # offset just past the counter digits
        self.dest_start = self.dest_end - self.DEST_DIGITS

    def batch(self, first_seq: int, n: int, counter: int) -> bytearray:
        """``n`` submit_sm with sequence numbers first_seq, first_seq+1, ..."""
        size = self.size
        buf = bytearray(self.pdu * n)
        pack_into = struct.pack_into
        ds, de, mod = self.dest_start, self.dest_end, 10**self.DEST_DIGITS
        for i in range(n):
            off = i * size
            pack_into(">I", buf, off + 12, first_seq + i)
            buf[off + ds : off + de] = b"%07d" % ((counter + i) % mod)
        return buf


# -- one session ------------------------------------------------------------------------------


class Session:
    __slots__ = (
        "sock", "count", "window", "next_seq", "first_seq", "last_seq", "sent", "answered",
        "sent_at", "latencies", "errors", "inbuf", "inview", "inlen", "out", "state",
        "unbind_seq", "counter_base", "closed_reason", "last_resp",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, count: int, window: int, counter_base: int) -> None:
        self.sock = sock
        self.count = count
        self.window = window
        self.first_seq = 2  # 1 was the bind
        self.next_seq = 2
        self.last_seq = 2 + count  # exclusive; also the unbind's sequence number
        self.unbind_seq = self.last_seq
        self.sent = 0
        self.answered = 0
        self.sent_at = array("d", bytes(8 * (count + 1)))
        self.latencies = array("d")
        self.errors: dict[int, int] = {}
        self.inbuf = bytearray(RECV_BUF)
        self.inview = memoryview(self.inbuf)
        self.inlen = 0
        self.out = bytearray()
        # run -> finished (all answered, or gave up) -> unbinding -> done; "closing" when the
        # server sent unbind; "done" at once when the connection broke
        self.state = "run"
        self.counter_base = counter_base
        self.closed_reason = ""
        self.last_resp = 0.0

    @property
    def outstanding(self) -> int:
        return self.sent - self.answered


def _connect_and_bind(
    host: str, port: int, bind_type: str, system_id: str, password: str, timeout: float
) -> tuple[socket.socket, bytes]:
    """Blocking connect + bind. Returns the socket (now non-blocking) and any bytes that came
    after the bind_resp. Raises RuntimeError with the reason on failure."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_bind(bind_type, system_id, password, seq=1))
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        while len(buf) >= 16:
            length, cid, status, seq = HEADER.unpack_from(buf)
            if len(buf) < length:
                break
            rest = buf[length:]
            if cid == BIND_IDS[bind_type] | RESPONSE_BIT:
                if status != 0:
                    sock.close()
                    raise RuntimeError(f"bind refused: {status_name(status)}")
                sock.setblocking(False)
                return sock, rest
            if cid == GENERIC_NACK:
                sock.close()
                raise RuntimeError(f"bind answered with generic_nack {status_name(status)}")
            buf = rest  # something else before the bind_resp: ignore
        left = deadline - time.monotonic()
        if left <= 0:
            sock.close()
            raise RuntimeError("no bind_resp within the timeout")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            sock.close()
            raise RuntimeError("connection closed before the bind_resp")
        buf += chunk


def _handle_input(s: Session, now: float) -> None:
    """Parse every complete PDU in s.inbuf."""
    buf = s.inbuf
    end = s.inlen
    pos = 0
    unpack_from = HEADER.unpack_from
    sent_at = s.sent_at
    lat_append = s.latencies.append
    first = s.first_seq
    answered = 0
    while end - pos >= 16:
        length, cid, status, seq = unpack_from(buf, pos)
        if length < 16:
            s.closed_reason = f"bad command_length {length} from server"
            s.state = "done"
            return
        if end - pos < length:
            break
        if cid == SUBMIT_SM_RESP or (cid == GENERIC_NACK and first <= seq < s.last_seq):
            i = seq - first
            if 0 <= i < s.count:
                t = sent_at[i]
                if t > 0.0:
                    sent_at[i] = -1.0
                    answered += 1
                    if status == 0 and cid == SUBMIT_SM_RESP:
                        lat_append(now - t)
                    else:
                        s.errors[status] = s.errors.get(status, 0) + 1
        elif cid == ENQUIRE_LINK:
            s.out += _pdu(ENQUIRE_LINK_RESP, seq)
        elif cid == DELIVER_SM:
            s.out += _pdu(DELIVER_SM_RESP, seq, b"\x00")
        elif cid == DATA_SM:
            s.out += _pdu(DATA_SM_RESP, seq, b"\x00")
        elif cid == UNBIND:
            s.out += _pdu(UNBIND_RESP, seq)
            s.closed_reason = "server sent unbind"
            s.state = "closing"
        elif cid == UNBIND_RESP or (cid == GENERIC_NACK and seq == s.unbind_seq):
            s.state = "done"
        elif not cid & RESPONSE_BIT:
            # A request we do not serve: generic_nack ESME_RINVCMDID (SMPP 3.4 §4.3).
            s.out += _pdu(GENERIC_NACK, seq, status=0x03)
        pos += length
    if answered:
        s.answered += answered
        s.last_resp = now
    if pos:
        rest = end - pos
        if rest:
            buf[:rest] = buf[pos:end]
        s.inlen = rest


def _fill(s: Session, template: SubmitTemplate, now: float) -> None:
    """Queue submits until ``window`` are outstanding (or all are sent), stamping their send
    time; the caller writes them out at once."""
    if s.state != "run":
        return
    n = min(s.window - s.outstanding, s.count - s.sent)
    if n <= 0:
        return
    first = s.next_seq
    s.out += template.batch(first, n, s.counter_base + s.sent)
    sent_at = s.sent_at
    for i in range(first - s.first_seq, first - s.first_seq + n):
        sent_at[i] = now
    s.next_seq += n
    s.sent += n


def _flush(s: Session) -> bool:
    """Write what s.out holds. Returns False if the kernel buffer is full (the caller then
    waits for EVENT_WRITE)."""
    if not s.out:
        return True
    try:
        n = s.sock.send(s.out)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        s.closed_reason = f"send failed: {exc}"
        s.state = "done"
        s.out.clear()
        return True
    del s.out[:n]
    return not s.out


def _run_sessions(
    host: str,
    port: int,
    system_id: str,
    password: str,
    bind_type: str,
    text: str,
    counts: list[int],
    counter_bases: list[int],
    window: int,
    timeout: float,
    stall_timeout: float,
    ready: Any = None,
    go: Any = None,
    abort: Any = None,
) -> dict[str, Any]:
    """Run some sessions in this process/thread. ``ready(ok, reason)`` is called after the
    binds; ``go()`` blocks until every process is ready (multi-process mode)."""
    template = SubmitTemplate(text)
    sessions: list[Session] = []
    leftovers: list[bytes] = []
    bind_error = ""
    for n, base in zip(counts, counter_bases):
        try:
            sock, rest = _connect_and_bind(host, port, bind_type, system_id, password, timeout=10.0)
        except (OSError, RuntimeError) as exc:
            bind_error = f"{exc}"
            break
        sessions.append(Session(sock, n, window, base))
        leftovers.append(rest)
    if ready is not None:
        ready(not bind_error, bind_error)
    if go is not None:
        go()
    if bind_error or (abort is not None and abort.value):
        for s in sessions:
            s.sock.close()
        return _partial_result(sessions, 0.0, 0.0, 0.0, bind_error or "aborted: another process failed to bind")

    for s, rest in zip(sessions, leftovers):
        s.inbuf[: len(rest)] = rest
        s.inlen = len(rest)

    sel = selectors.DefaultSelector()
    for s in sessions:
        sel.register(s.sock, selectors.EVENT_READ, s)
    rusage_who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    ru0 = resource.getrusage(rusage_who)
    perf = time.perf_counter
    t_start_mono = time.monotonic()
    t_start = perf()
    deadline = t_start + timeout

    want_write: set[Session] = set()

    def pump_out(s: Session) -> None:
        ok = _flush(s)
        if not ok and s not in want_write:
            want_write.add(s)
            sel.modify(s.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, s)
        elif ok and s in want_write:
            want_write.discard(s)
            sel.modify(s.sock, selectors.EVENT_READ, s)

    for s in sessions:
        _fill(s, template, perf())
        pump_out(s)

    active = sum(1 for s in sessions if s.state == "run")
    last_progress = perf()
    t_end = t_start
    while active:
        events = sel.select(1.0)
        now = perf()
        for key, mask in events:
            s: Session = key.data
            if mask & selectors.EVENT_READ and s.state != "done":
                try:
                    n = s.sock.recv_into(s.inview[s.inlen :])
                except (BlockingIOError, InterruptedError):
                    n = -1
                except OSError as exc:
                    s.closed_reason = f"recv failed: {exc}"
                    s.state = "done"
                    n = -1
                if n == 0:
                    s.closed_reason = s.closed_reason or "server closed the connection"
                    s.state = "done"
                elif n > 0:
                    s.inlen += n
                    before = s.answered
                    _handle_input(s, now)
                    if s.answered != before:
                        last_progress = now
                        t_end = now
            if s.state == "run":
                _fill(s, template, perf())
            if s.out and s.state != "done":
                pump_out(s)
            if s.state == "done":
                sel.unregister(s.sock)  # an EOF would wake select() again and again
        active = 0
        for s in sessions:
            if s.state == "run" and s.answered >= s.count:
                s.state = "finished"
            if s.state == "run":
                active += 1
        if active and (now > deadline or now - last_progress > stall_timeout):
            for s in sessions:
                if s.state == "run":
                    s.closed_reason = "timeout" if now > deadline else f"no answer for {stall_timeout:g} s"
                    s.state = "finished"
            break
    ru1 = resource.getrusage(rusage_who)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    t_end_mono = t_start_mono + (t_end - t_start)

    # Unbind everything still connected; wait at most UNBIND_WAIT for the answers.
    unbinding = []
    for s in sessions:
        if s.state in ("finished", "closing"):
            if s.state == "finished":
                s.out += _pdu(UNBIND, s.unbind_seq)
            try:
                s.sock.setblocking(True)
                s.sock.settimeout(UNBIND_WAIT)
                s.sock.sendall(s.out)
                s.out.clear()
            except OSError:
                s.state = "done"
                continue
            s.sock.setblocking(False)
            if s.state == "finished":
                s.state = "unbinding"
                unbinding.append(s)
            else:
                s.state = "done"
    unbind_deadline = perf() + UNBIND_WAIT
    while any(s.state == "unbinding" for s in unbinding) and perf() < unbind_deadline:
        for key, _mask in sel.select(max(0.0, unbind_deadline - perf())):
            s = key.data
            if s.state != "unbinding":
                continue
            try:
                n = s.sock.recv_into(s.inview[s.inlen :])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                s.state = "done"
                continue
            if n == 0:
                s.state = "done"
                continue
            s.inlen += n
            _handle_input(s, perf())
            if s.out:
                try:
                    s.sock.send(s.out)
                    s.out.clear()
                except OSError:
                    pass
    unbind_timeouts = sum(1 for s in unbinding if s.state == "unbinding")
    for s in sessions:
        try:
            sel.unregister(s.sock)
        except (KeyError, ValueError):
            pass
        s.sock.close()
    sel.close()
    res = _partial_result(sessions, t_start_mono, t_end_mono, cpu, "")
    res["unbind_timeouts"] = unbind_timeouts
    return res


def _partial_result(
    sessions: list[Session], t_start: float, t_end: float, cpu: float, bind_error: str
) -> dict[str, Any]:
    errors: dict[int, int] = {}
    lat = array("d")
    sent = answered = 0
    reasons = []
    for s in sessions:
        for k, v in s.errors.items():
            errors[k] = errors.get(k, 0) + v
        lat.extend(s.latencies)
        sent += s.sent
        answered += s.answered
        if s.closed_reason:
            reasons.append(s.closed_reason)
    return {
        "t_start": t_start,
        "t_end": t_end,
        "cpu": cpu,
        "sent": sent,
        "answered": answered,
        "errors": errors,
        "latencies": lat.tobytes(),
        "bind_error": bind_error,
        "reasons": reasons,
        "unbind_timeouts": 0,
    }


def _worker(args: tuple[Any, ...], q: Any, go_event: Any, abort: Any) -> None:
    def ready(ok: bool, reason: str) -> None:
        if not ok:
            abort.value = 1
        q.put(("ready", ok, reason))

    try:
        res = _run_sessions(*args, ready=ready, go=go_event.wait, abort=abort)
    except BaseException as exc:  # report, never hang the parent
        q.put(("ready", False, f"{type(exc).__name__}: {exc}"))
        res = _partial_result([], 0.0, 0.0, 0.0, f"{type(exc).__name__}: {exc}")
    q.put(("result", res))


def _percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def run_load(
    host: str = "127.0.0.1",
    port: int = 2775,
    system_id: str = "demo",
    password: str = "demo",
    sessions: int = 1,
    window: int = 10,
    count: int = 10_000,
    processes: int = 1,
    text: str = "Hello from the smpp-bridge load generator",
    bind_type: str = "transmitter",
    timeout: float = 600.0,
    stall_timeout: float = 30.0,
) -> dict[str, Any]:
    """Run the load and return the result dict (see the module docstring).

    ``count`` submits in total, split evenly over ``sessions``; the sessions are spread over
    ``processes`` OS processes (1: everything runs in the calling thread)."""
    if sessions < 1 or window < 1 or count < 1:
        raise ValueError("sessions, window and count must be >= 1")
    if bind_type not in BIND_IDS:
        raise ValueError(f"bind_type must be one of {sorted(BIND_IDS)}")
    processes = max(1, min(processes, sessions))
    counts = [count // sessions + (1 if i < count % sessions else 0) for i in range(sessions)]
    bases = [sum(counts[:i]) for i in range(sessions)]
    groups = [list(range(sessions))[p::processes] for p in range(processes)]

    def args_for(g: list[int]) -> tuple[Any, ...]:
        return (
            host, port, system_id, password, bind_type, text,
            [counts[i] for i in g], [bases[i] for i in g], window, timeout, stall_timeout,
        )  # fmt: skip

    wall0 = time.monotonic()
    if processes == 1:
        parts = [_run_sessions(*args_for(groups[0]))]
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        go = ctx.Event()
        abort = ctx.Value("b", 0)
        procs = [ctx.Process(target=_worker, args=(args_for(g), q, go, abort), daemon=True) for g in groups]
        for p in procs:
            p.start()
        readies = 0
        parts = []
        try:
            while readies < processes:
                msg = q.get(timeout=60)
                if msg[0] == "ready":
                    readies += 1
                else:
                    parts.append(msg[1])
            go.set()
            while len(parts) < processes:
                msg = q.get(timeout=timeout + 60)
                if msg[0] == "result":
                    parts.append(msg[1])
        except queue.Empty:
            abort.value = 1
            go.set()
            dead = [p.exitcode for p in procs if p.exitcode is not None]
            parts.append(_partial_result([], 0.0, 0.0, 0.0, f"a load generator process did not report (exit codes {dead})"))
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    wall1 = time.monotonic()

    errors: dict[str, int] = {}
    lat = array("d")
    sent = answered = unbind_timeouts = 0
    cpu = 0.0
    reasons: list[str] = []
    bind_errors = []
    starts, ends = [], []
    for r in parts:
        for k, v in r["errors"].items():
            name = status_name(k)
            errors[name] = errors.get(name, 0) + v
        part_lat = array("d")
        part_lat.frombytes(r["latencies"])
        lat.extend(part_lat)
        sent += r["sent"]
        answered += r["answered"]
        cpu += r["cpu"]
        unbind_timeouts += r.get("unbind_timeouts", 0)
        reasons.extend(r["reasons"])
        if r["bind_error"]:
            bind_errors.append(r["bind_error"])
        if r["t_end"] > 0:
            starts.append(r["t_start"])
            ends.append(r["t_end"])
    duration = (max(ends) - min(starts)) if starts else 0.0
    accepted = len(lat)
    values = sorted(lat)
    ms = 1000.0
    result: dict[str, Any] = {
        "host": host,
        "port": port,
        "bind_type": bind_type,
        "sessions": sessions,
        "window": window,
        "processes": processes,
        "count": count,
        "sent": sent,
        "accepted": accepted,
        "errors": dict(sorted(errors.items())),
        "error_count": sum(errors.values()),
        "lost": sent - answered,
        "not_sent": count - sent,
        "duration_s": round(duration, 4),
        "wall_s": round(wall1 - wall0, 4),
        "rate_per_s": round(accepted / duration, 1) if duration > 0 else 0.0,
        "latency_ms": {
            "p50": round(_percentile(values, 50) * ms, 3),
            "p90": round(_percentile(values, 90) * ms, 3),
            "p99": round(_percentile(values, 99) * ms, 3),
            "max": round(values[-1] * ms, 3) if values else 0.0,
            "mean": round(sum(values) / len(values) * ms, 3) if values else 0.0,
        },
        "client_cpu_s": round(cpu, 3),
        "client_cpu_pct": round(100.0 * cpu / duration, 1) if duration > 0 else 0.0,
        "unbind_timeouts": unbind_timeouts,
        "problems": sorted(set(bind_errors + reasons)),
    }
    return result


def format_result(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    errs = ", ".join(f"{k}={v}" for k, v in r["errors"].items()) or "none"
    line = (
        f"sessions={r['sessions']} window={r['window']} processes={r['processes']}: "
        f"{r['accepted']}/{r['count']} accepted in {r['duration_s']:.2f} s = {r['rate_per_s']:,.0f}/s; "
        f"latency ms p50 {lat['p50']:.2f} p90 {lat['p90']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.2f}; "
        f"errors: {errs}; client CPU {r['client_cpu_s']:.2f} s ({r['client_cpu_pct']:.0f}% of a core)"
    )
    if r["lost"] or r["not_sent"]:
        line += f"; unanswered {r['lost']}, not sent {r['not_sent']}"
    if r["problems"]:
        line += "; problems: " + "; ".join(r["problems"])
    return line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Windowed SMPP 3.4 submit_sm load generator.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2775)
    ap.add_argument("--system-id", default="demo")
    ap.add_argument("--password", default="demo")
    ap.add_argument("--sessions", type=int, default=1, help="parallel binds (default 1)")
    ap.add_argument("--window", type=int, default=10, help="outstanding submit_sm per session (default 10)")
    ap.add_argument("--count", type=int, default=10_000, help="total submit_sm over all sessions")
    ap.add_argument("--processes", type=int, default=1, help="OS processes to spread the sessions over")
    ap.add_argument("--text", default="Hello from the smpp-bridge load generator")
    ap.add_argument("--bind-type", choices=sorted(BIND_IDS), default="transmitter")
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    ap.add_argument("--json", action="store_true", help="print the result as JSON instead")
    a = ap.parse_args(argv)
    r = run_load(
        host=a.host,
        port=a.port,
        system_id=a.system_id,
        password=a.password,
        sessions=a.sessions,
        window=a.window,
        count=a.count,
        processes=a.processes,
        text=a.text,
        bind_type=a.bind_type,
        timeout=a.timeout,
    )
    print(json.dumps(r, indent=2) if a.json else format_result(r))
    return 0 if r["accepted"] == r["count"] else 1


if __name__ == "__main__":
    sys.exit(main())
