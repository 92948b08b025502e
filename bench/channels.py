"""Channel utilisation and receipt latency, on emulated GoIPs.

    python bench/channels.py                # 32 lines over 2 GoIPs, 90 s
    python bench/channels.py --seconds 300 --per-minute 10 --send-duration 2.5
    python bench/channels.py --many             # 512 lines: 16 GoIPs x 32 lines, 3 s a send, no caps
    python bench/channels.py --many --send-jitter 0.1   # the same, each send 3 s +- up to 10%

A fixed send time that the poll interval divides (3 s, 0.25 s) makes every send end just after
a poll tick, so each waits a whole interval to be seen; a real line's send time varies, and
``--send-jitter`` gives the emulated sends that spread (each line's idle time is then measured
against the duration of its own send).

What it does: starts two GoIP emulators (16 lines each, a fixed send time), the bridge (its
real store, scheduler and SMPP server, in this process) with a per-line cap, binds an smpplib
receiver, and queues far more messages than the lines can send in the run. Then it prints:

* utilisation = achieved sends per minute / ideal, where ideal = lines x the rate the caps allow
  (the target is >= 0.95), measured after a warm-up;
* receipt latency = from the moment the emulated device reports the final status (send start
  + send time) to the moment the deliver_sm reaches the ESME; p50/p99 against the target of
  status poll interval + 100 ms;
* that no line ever had two messages in flight (from the emulator's record);
* sends per second, CPU per send (this process's CPU time over the measured window, less the
  CPU time of the benchmark's SMPP receiver thread, divided by the sends in it; the figure with
  that thread is printed too) and the share of one core, and status polls per second (send_status.xml
  requests the emulators answered), per device and per line. The emulators run in a child
  process of their own (``--emulators-inline`` puts them back in this one), so the CPU figures
  are the bridge's; the emulators' CPU is printed apart;
* the event loop's lag (how late a 10 ms sleep wakes: the loop is the bridge's one core);
* without caps, how long a line stood idle between the end of one send and the start of the
  next (the bridge's turnaround: the status poll that sees the end, the commits, the next pick).

``--per-minute 0`` sends without caps: the ideal is then every line busy all the time
(60 / send time sends per minute per line). ``--many`` is the issue-14 goal: 512 channels
(``--goips 16 --lines-per-goip 32 --send-duration 3 --per-minute 0``) kept at least 0.95 busy,
with the bridge at most half of one core; status polling must grow with devices, not lines.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from datetime import timezone
from pathlib import Path

import smpplib.client
import smpplib.exceptions
import trio

from bridge.app import App
from bridge.config import load_config_text
from bridge.devices.goip_http.emulator import GoipEmulator
from bridge.store import NewMessage


def config_text(ports: list[int], lines: int, per_minute: int, poll: float, data: Path) -> str:
    devices = "".join(
        textwrap.dedent(
            f"""
            - name: goip{i + 1}
              kind: goip_http
              url: http://127.0.0.1:{port}
              username: admin
              password: admin
              lines: {lines}
              timeout: 5
              status_poll_interval: {poll}
              status_timeout: 30
              caps: {{per_minute: {per_minute}, jitter: {0.2 if per_minute else 0}}}
            """
        )
        for i, port in enumerate(ports)
    )
    return textwrap.dedent(
        f"""
        smpp:
          listeners: [{{host: 127.0.0.1, port: 0}}]
        store:
          path: {data}/bridge.sqlite3
        admin:
          port: 0
        limits:
          queue_depth: 2000000
        esmes:
          - system_id: bench
            password: bench
        routes:
          - name: all
            channels: [{", ".join(f"goip{i + 1}" for i in range(len(ports)))}]
        devices:
        """
    ) + textwrap.indent(devices, "  ")


class _Emulated:
    """The benchmark's view of the emulated GoIPs: in a child process, or in this one."""

    def __init__(self, sent: list[tuple[int, int, str, float, float]], polls: int, cpu: float) -> None:
        self.sent = sent  # (device index, line, text, send start as a UNIX time, its duration)
        self.polls = polls
        self.cpu = cpu


def _emulators(goips: int, lines: int, send_duration: float, jitter: float) -> list[GoipEmulator]:
    return [GoipEmulator(lines=lines, send_duration=send_duration, send_jitter=jitter, seed=i) for i in range(goips)]


def _emulators_main(conn, goips: int, lines: int, send_duration: float, jitter: float) -> None:  # type: ignore[no-untyped-def]
    """Child process: serve ``goips`` emulators; send their ports, then on request the sends so
    far and the status polls answered (the parent asks twice: at warm-up and at the end)."""
    emulators = _emulators(goips, lines, send_duration, jitter)
    polls = _count_polls(emulators)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports = [await nursery.start(e.serve, "127.0.0.1", 0) for e in emulators]
            conn.send(ports)
            while True:
                ask = await trio.to_thread.run_sync(conn.recv)
                conn.send(_snapshot(emulators, polls, time.process_time()))
                if ask == "stop":
                    nursery.cancel_scope.cancel()
                    return

    trio.run(main)


def _count_polls(emulators: list[GoipEmulator]) -> list[int]:
    polls = [0]
    for e in emulators:
        answer = e._send_status

        def counted(request, answer=answer):  # type: ignore[no-untyped-def]
            polls[0] += 1
            return answer(request)

        e._send_status = counted  # type: ignore[method-assign]
    return polls


def _snapshot(emulators: list[GoipEmulator], polls: list[int], cpu: float) -> _Emulated:
    return _Emulated(
        [(i, s.line, s.text, s.at.replace(tzinfo=timezone.utc).timestamp(), s.duration)
         for i, e in enumerate(emulators) for s in e.sent],
        polls[0], cpu,
    )


def receiver(port: int, arrivals: dict[str, float], stop: threading.Event, cpu: list[float]) -> None:
    """The benchmark's ESME (smpplib, a thread of this process); ``cpu[0]``: its CPU time so far."""
    c = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
    c.connect()
    c.bind_receiver(system_id="bench", password="bench")

    def on_message(pdu) -> None:  # type: ignore[no-untyped-def]
        arrivals[pdu.receipted_message_id.decode()] = time.time()

    c.set_message_received_handler(on_message)
    c._socket.settimeout(0.2)
    while not stop.is_set():
        try:
            c.read_once()
        except socket.timeout:
            pass
        except smpplib.exceptions.ConnectionError:
            return
        finally:
            cpu[0] = time.thread_time()
    c.disconnect()


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> int:
    lines = args.lines_per_goip
    data = Path(tempfile.mkdtemp(prefix="bench-channels-"))
    child = None
    if args.emulators_inline:
        emulators = _emulators(args.goips, lines, args.send_duration, args.send_jitter)
        polls = _count_polls(emulators)

        async def emulated(ask: str) -> _Emulated:
            return _snapshot(emulators, polls, 0.0)
    else:
        conn, child_conn = multiprocessing.Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=_emulators_main, args=(child_conn, args.goips, lines, args.send_duration, args.send_jitter),
            daemon=True,
        )
        child.start()

        async def emulated(ask: str) -> _Emulated:
            conn.send(ask)
            return await trio.to_thread.run_sync(conn.recv)

    lag: list[float] = []

    async def loop_lag() -> None:
        while True:
            t = time.perf_counter()
            await trio.sleep(0.01)
            lag.append(time.perf_counter() - t - 0.01)

    async with trio.open_nursery() as nursery:
        if child is not None:
            ports = await trio.to_thread.run_sync(conn.recv)
        else:
            ports = [await nursery.start(e.serve, "127.0.0.1", 0) for e in emulators]
        config = load_config_text(config_text(ports, lines, args.per_minute, args.poll, data))
        app = App(config)
        await nursery.start(app.run)
        arrivals: dict[str, float] = {}
        stop = threading.Event()
        rx_cpu = [0.0]
        rx = threading.Thread(target=receiver, args=(app.smpp_ports[0], arrivals, stop, rx_cpu), daemon=True)
        rx.start()

        total_lines = args.goips * lines
        per_line = args.per_minute or 60.0 / args.send_duration
        ideal_per_min = total_lines * per_line
        count = int(ideal_per_min * args.seconds / 60 * 1.3) + total_lines
        ids: dict[str, int] = {}
        print(f"queueing {count} messages for {total_lines} lines ...", flush=True)
        # Many at a time, so that they share group commits (one fsync each would take minutes).
        queued = trio.Event()
        left = [count]

        def stored(i: int):  # type: ignore[no-untyped-def]
            def done(acc, error) -> None:  # type: ignore[no-untyped-def]
                assert error is None, error
                ids[acc.message_id] = i
                left[0] -= 1
                if not left[0]:
                    queued.set()
            return done

        for i in range(count):
            app.store.accept_nowait(
                NewMessage(
                    esme="bench", destination_addr=f"+4917{i:08d}", body=f"bench {i}".encode(),
                    registered_delivery=1, route="all",
                ),
                stored(i),
            )
            if i % 500 == 499:
                await trio.sleep(0)
        await queued.wait()
        load_before = os.getloadavg()[0]
        started = time.time()
        warmup = min(15.0, args.seconds / 4)
        cpu_warm = polls_warm = None
        emu_warm = None
        while time.time() - started < args.seconds:
            await trio.sleep(5)
            if cpu_warm is None and time.time() - started >= warmup:
                cpu_warm, warm_at, rx_warm = time.process_time(), time.time(), rx_cpu[0]
                emu_warm = await emulated("count")
                polls_warm = emu_warm.polls
                nursery.start_soon(loop_lag)
                lag.clear()
            print(f"  {time.time() - started:5.0f} s: {len(arrivals)} receipts", flush=True)
        end = time.time()
        cpu = time.process_time() - (cpu_warm or 0.0)
        rx_used = rx_cpu[0] - (rx_warm if cpu_warm is not None else 0.0)
        emu = await emulated("stop")
        polled = emu.polls - (polls_warm or 0)
        emu_cpu = emu.cpu - (emu_warm.cpu if emu_warm is not None else 0.0)
        measured = end - warm_at if cpu_warm is not None else end - started
        stop.set()

        sent = emu.sent
        window = [s for s in sent if started + warmup <= s[3] <= end]
        achieved = len(window) / ((end - started - warmup) / 60)
        utilisation = achieved / ideal_per_min

        # A line never carried two messages at once (send start + send time never overlaps).
        by_line: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for device, line, _text, at, took in sent:
            by_line.setdefault((device, line), []).append((at, took))
        for sends in by_line.values():
            sends.sort()
        overlaps = 0
        for sends in by_line.values():
            overlaps += sum(1 for (a, took), (b, _) in zip(sends, sends[1:]) if b - a < took - 0.01)
        # How long a line stood idle between the end of one send and the start of the next
        # (in the measured window): the bridge's turnaround (status poll, commits, next pick).
        gaps = [
            b - a - took
            for sends in by_line.values()
            for (a, took), (b, _) in zip(sends, sends[1:])
            if a >= started + warmup and b <= end
        ]
        starts_by_line = [[a for a, _took in sends] for sends in by_line.values()]

        # No line ever went over its cap: at most per_minute starts in any 60 s window.
        cap_violations = 0
        for starts in starts_by_line:
            for k in range(len(starts) - args.per_minute if args.per_minute else 0):
                if starts[k + args.per_minute] - starts[k] < 60:
                    cap_violations += 1

        text_to_done = {}
        for _device, _line, text, at, took in sent:
            text_to_done[text] = at + took
        latencies = []
        for mid, arrived in arrivals.items():
            i = ids.get(mid)
            done = text_to_done.get(f"bench {i}")
            if done is not None:
                latencies.append(arrived - done)

        target_latency = args.poll + 0.1
        p50 = percentile(latencies, 0.5) if latencies else float("nan")
        p99 = percentile(latencies, 0.99) if latencies else float("nan")
        print()
        jitter = f" (+-{args.send_jitter:.0%})" if args.send_jitter else ""
        print(f"lines {total_lines}, send time {args.send_duration} s{jitter}, cap {args.per_minute}/min per line, "
              f"status poll every {args.poll} s, run {args.seconds:.0f} s (warm-up {warmup:.0f} s)")
        print(f"utilisation: {achieved:.1f} sends/min of an ideal {ideal_per_min}/min = {utilisation:.3f} "
              f"(target >= 0.95: {'met' if utilisation >= 0.95 else 'MISSED'})")
        print(f"receipt latency (device final -> deliver_sm at ESME), {len(latencies)} receipts: "
              f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, mean {statistics.fmean(latencies) * 1000 if latencies else 0:.0f} ms "
              f"(target p99 <= {target_latency * 1000:.0f} ms: {'met' if p99 <= target_latency else 'MISSED'})")
        sends_per_s = len(window) / (end - started - warmup)
        core = cpu / measured
        bridge_cpu = cpu - rx_used  # less the benchmark's own ESME thread (smpplib)
        bridge_core = bridge_cpu / measured
        who = f"the bridge + {args.goips} emulators" if child is None else "the bridge"
        print(f"sends: {sends_per_s:.1f}/s; CPU per send {bridge_cpu / max(1, len(window)) * 1e3:.2f} ms; "
              f"{bridge_core:.2f} of one core ({who}; target for the bridge <= 0.5: "
              f"{'met' if bridge_core <= 0.5 else 'MISSED'}); with the benchmark's SMPP receiver thread "
              f"{cpu / max(1, len(window)) * 1e3:.2f} ms per send, {core:.2f} of a core")
        if child is not None:
            print(f"emulators (their own process): {emu_cpu / measured:.2f} of one core, "
                  f"{emu_cpu / max(1, len(window)) * 1e3:.2f} ms per send")
        if lag:
            lag.sort()
            print(f"event loop lag (a 10 ms sleep wakes late by): p50 {percentile(lag, 0.5) * 1e3:.1f} ms, "
                  f"p90 {percentile(lag, 0.9) * 1e3:.1f} ms, p99 {percentile(lag, 0.99) * 1e3:.1f} ms")
        print(f"machine load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
              f"({os.cpu_count()} cores; other processes' load stretches the busy figures, less the CPU per send)")
        print(f"status polls: {polled / measured:.1f}/s = {polled / measured / args.goips:.2f}/s per device, "
              f"{polled / measured / total_lines:.3f}/s per line")
        if gaps and not args.per_minute:
            print(f"line idle between sends (end of one to start of the next): p50 {percentile(gaps, 0.5) * 1e3:.0f} ms, "
                  f"p90 {percentile(gaps, 0.9) * 1e3:.0f} ms, mean {statistics.fmean(gaps) * 1e3:.0f} ms")
        print(f"lines with overlapping sends: {overlaps} (must be 0)")
        print(f"cap violations (more than {args.per_minute} starts in 60 s on a line): {cap_violations} (must be 0)")
        rx.join(2)
        nursery.cancel_scope.cancel()
    if child is not None:
        child.join(5)
    return 0 if overlaps == 0 and cap_violations == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--lines-per-goip", type=int, default=16)
    p.add_argument("--goips", type=int, default=2)
    p.add_argument("--per-minute", type=int, default=20, help="cap per line (0: no caps)")
    p.add_argument("--many", action="store_true", help="16 GoIPs x 32 lines, 3 s a send, no caps (issue 14)")
    p.add_argument("--send-duration", type=float, default=0.5, help="seconds a line is busy per SMS")
    p.add_argument("--emulators-inline", action="store_true",
                   help="run the emulated GoIPs in this process (their CPU then counts as the bridge's)")
    p.add_argument("--poll", type=float, default=0.25, help="status poll interval in seconds")
    p.add_argument("--send-jitter", type=float, default=0.0,
                   help="each send takes --send-duration x (1 +- up to this fraction), as a real line's varies "
                        "(0: exactly --send-duration, which a poll interval dividing it turns into a whole "
                        "interval of waiting per send)")
    args = p.parse_args()
    if args.many:
        args.goips, args.lines_per_goip, args.send_duration, args.per_minute = 16, 32, 3.0, 0
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
