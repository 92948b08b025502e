#!/usr/bin/env python3
"""Crash safety: kill -9 the bridge at random points under load, restart it, count what happened.

    python bench/crash.py                 # the full form: 20 kills (about 2 minutes)
    python bench/crash.py --kills 4       # what CI runs (tests/reliability/test_crash.py)
    python bench/crash.py --policy resend # the other ambiguity policy

What it does:

1. starts an emulated GoIP (``smpp-bridge emulate goip``, ``--lines`` lines, a short send
   duration) and the bridge (``smpp-bridge run``) with one route to it;
2. one smpplib transceiver submits at ``--rate`` per second, every text unique, every submit
   asking for a receipt; it reconnects and rebinds whenever the bridge goes away, and answers
   every receipt (deliver_sm) it gets;
3. ``--kills`` times: waits a random time, ``kill -9``s the bridge, restarts it; on a fraction
   of the restarts (``--blind``) the GoIP's status page answers broken XML for half a second,
   so a part caught in a device call cannot be reconciled and ``scheduler.ambiguous`` decides;
   between kills, a fraction of the gaps (``--never-took``) the GoIP stops taking sends for a
   moment: send.html hangs *before* the SMS is taken, so the bridge's call times out on a send
   the device never took (and a kill may land in it too);
4. stops submitting and waits until every acknowledged message is final in the store and its
   receipt reached the ESME; then stops the bridge and checks the store.

It prints what it counted and exits 0 when the promises held:

* every message that got ESME_ROK reached a final state, and its receipt was delivered
  (receipts are at-least-once: duplicates are counted, not failures);
* no text went out twice through the GoIP (its /emulator/sent record), except under
  ``scheduler.ambiguous: resend`` where a duplicate must belong to a counted ambiguous send;
* every ambiguous send (the bridge died, or timed out, in the middle of a device call) is
  counted from the bridge's logs (the process restarts, so its metric resets) and from the
  store's events, and each decision is checked against what the GoIP actually did (its
  /emulator/sent record): ``reconciled_sent`` only for a text the GoIP sent, a part
  ``reconciled_not_sent`` sent exactly once afterwards (policy ``unknown``), ``policy_unknown``
  ending UNKNOWN; every final state too: DELIVRD only if sent, UNKNOWN counted by what the
  device had really done (sent / never took), the figure issue 12 asks to drive down;
* ``PRAGMA integrity_check`` is ok.

Submits whose submit_sm_resp never came (the bridge died first) were never acknowledged: they
may or may not be stored, and are counted separately.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import random
import re
import select
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import smpplib.client  # noqa: E402
import smpplib.consts  # noqa: E402
import smpplib.exceptions  # noqa: E402
import smpplib.smpp  # noqa: E402

from e2e_support import BridgeProcess, EmulatorProcess, goip_config  # noqa: E402

FINAL_STATES = ("delivered", "acknowledged", "undeliverable", "expired", "rejected", "unknown", "deleted")
RECEIPT_ID = re.compile(rb"id:(\S+)")
RECEIPT_STAT = re.compile(rb"stat:(\S+)")
# Log lines of the scheduler for an ambiguous device call: during a send, or found at recovery.
AMBIGUOUS_LOG = re.compile(
    r"(?:ambiguous send of message (?P<a>\d+) part (?P<ap>\d+) .*?: (?P<ar>\w+)$)"
    r"|(?:recovery: message (?P<r>\d+) part (?P<rp>\d+) was in a device call when the bridge stopped: (?P<rr>\w+))"
)


class Esme:
    """One smpplib transceiver that submits unique texts at a steady rate, survives the bridge
    going away (reconnects, rebinds) and records every answer and receipt."""

    def __init__(self, get_port: Any, rate: float, tag: str, system_id: str = "alice", password: str = "secret1") -> None:
        self.get_port = get_port  # the bridge's current port (None while it is down)
        self.rate = rate
        self.tag = tag
        self.system_id = system_id
        self.password = password
        self.submitting = threading.Event()
        self.submitting.set()
        self.stop = threading.Event()
        self.n = 0
        self.acked: dict[str, str] = {}  # text -> message_id
        self.refused: collections.Counter[int] = collections.Counter()
        self.unanswered: list[str] = []  # sent, but the connection died before the resp
        self.receipts: collections.Counter[str] = collections.Counter()  # message_id -> times
        self.stats: dict[str, str] = {}  # message_id -> stat of the last receipt
        self.reconnects = 0
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="crash-esme", daemon=True)

    def start(self) -> Esme:
        self._thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        self._thread.join(30)

    def _connect(self) -> smpplib.client.Client | None:
        port = self.get_port()
        if port is None:
            return None
        c = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
        c.logger.setLevel(logging.CRITICAL)  # "disconnecting in the bound state" is the point here
        try:
            c.connect()
            c.bind_transceiver(system_id=self.system_id, password=self.password)
        except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as exc:
            try:
                c.disconnect()
            except Exception:
                pass
            if isinstance(exc, smpplib.exceptions.PDUError):
                self.errors.append(f"bind refused: {exc}")
            return None
        self.reconnects += 1
        return c

    def _run(self) -> None:
        pending: dict[int, str] = {}  # sequence -> text
        c: smpplib.client.Client | None = None
        next_at = time.monotonic()
        while not self.stop.is_set():
            if c is None:
                c = self._connect()
                if c is None:
                    time.sleep(0.05)
                    continue
            try:
                now = time.monotonic()
                if self.submitting.is_set() and now >= next_at:
                    self.n += 1
                    text = f"crash {self.tag} {self.n:06d}"
                    pdu = c.send_message(
                        source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
                        source_addr="crashtest",
                        dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
                        destination_addr=f"+49170{self.n:07d}",
                        short_message=text.encode(),
                        registered_delivery=1,
                    )
                    pending[pdu.sequence] = text
                    next_at = max(next_at + 1 / self.rate, now - 1)
                wait = max(0.0, min(0.05, next_at - time.monotonic()))
                readable, _, _ = select.select([c._socket], [], [], wait)
                while readable:
                    self._handle(c, c.read_pdu(), pending)
                    readable, _, _ = select.select([c._socket], [], [], 0)
            except (smpplib.exceptions.ConnectionError, OSError):
                self.unanswered.extend(pending.values())
                pending.clear()
                try:
                    c.disconnect()
                except Exception:
                    pass
                c = None
        if c is not None:
            self.unanswered.extend(pending.values())
            try:
                c.unbind()
                c.disconnect()
            except Exception:
                pass

    def _handle(self, c: smpplib.client.Client, pdu: Any, pending: dict[int, str]) -> None:
        if pdu.command == "submit_sm_resp":
            text = pending.pop(pdu.sequence, None)
            if text is None:
                return
            if pdu.status == 0:
                self.acked[text] = pdu.message_id.decode()
            else:
                self.refused[pdu.status] += 1
        elif pdu.command == "deliver_sm":
            m = RECEIPT_ID.search(pdu.short_message or b"")
            if m:
                mid = m.group(1).decode()
                self.receipts[mid] += 1
                stat = RECEIPT_STAT.search(pdu.short_message)
                self.stats[mid] = stat.group(1).decode() if stat else "?"
            resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=c)
            resp.sequence = pdu.sequence
            c.send_pdu(resp)
        elif pdu.command == "enquire_link":
            resp = smpplib.smpp.make_pdu("enquire_link_resp", client=c)
            resp.sequence = pdu.sequence
            c.send_pdu(resp)


def count_ambiguous(log_text: str) -> dict[str, Any]:
    """Ambiguous device calls in the bridge's logs: (message, part) -> resolutions seen."""
    seen: dict[tuple[str, str], list[str]] = {}
    for line in log_text.splitlines():
        m = AMBIGUOUS_LOG.search(line)
        if m:
            key = (m.group("a") or m.group("r"), m.group("ap") or m.group("rp"))
            seen.setdefault(key, []).append(m.group("ar") or m.group("rr"))
    by_resolution = collections.Counter(r[-1] for r in seen.values())
    # A part can be caught more than once (resent by the policy, then caught again by the next
    # kill): every occurrence is one decision, and each "policy_resend" may cost one duplicate.
    every = collections.Counter(x for r in seen.values() for x in r)
    return {"log_lines": sum(len(v) for v in seen.values()), "parts": len(seen), "by_final_resolution": dict(by_resolution),
            "decisions": dict(every), "messages": sorted({int(k[0]) for k in seen}),
            "per_message": {f"{int(k[0]):010d}": r for k, r in seen.items()}}


def crash_config(emulator_url: str, lines: int, policy: str) -> str:
    return goip_config(
        emulator_url,
        lines=lines,
        esmes="""
        - system_id: alice
          password: secret1
          allowed_ips: [127.0.0.1]
          max_binds: 10
        """,
        scheduler=f"  ambiguous: {policy}\n  max_attempts: 100\n",
    )


def run_crash(
    kills: int = 20,
    *,
    rate: float = 25.0,
    lines: int = 8,
    send_duration: float = 0.05,
    send_delay: float = 0.15,
    gap: tuple[float, float] = (0.3, 2.5),
    policy: str = "unknown",
    blind: float = 0.25,
    never_took: float = 0.3,
    seed: int | None = None,
    workdir: Path | None = None,
    drain_timeout: float = 120.0,
    say: Any = print,
) -> dict[str, Any]:
    """Run the crash test; return the counts (see the module docstring). ``say`` gets progress."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="smpp-bridge-crash-")
        workdir = Path(tmp.name)
    emulator = EmulatorProcess(lines=lines, send_duration=send_duration)
    if send_delay:
        # The GoIP takes each SMS at once but answers send.html late: a kill in that window
        # leaves a part "submitting" that only the device can tell about (an ambiguous send).
        emulator.faults(delay=send_delay, endpoints=["send"])
    bridge = BridgeProcess(workdir, crash_config(emulator.url, lines, policy))
    logs: list[str] = []
    up = {"port": None}
    esme = Esme(lambda: up["port"], rate, tag=f"{seed:x}")
    started = time.monotonic()
    esme_never_took_windows: list[float] = []
    try:
        bridge.start()
        up["port"] = bridge.port
        esme.start()
        say(f"crash: seed {seed}, {kills} kills, {rate:g} submits/s, {lines} GoIP lines, policy {policy}")
        for i in range(kills):
            pause = rng.uniform(*gap)
            if rng.random() < never_took:
                # The GoIP takes no send for a moment: each call hangs before the SMS is taken,
                # until the bridge's timeout; the kill below may land in one of them.
                emulator.faults(hang=True, hang_after_processing=False, endpoints=["send"])
                hung = rng.uniform(0.3, pause)
                time.sleep(hung)
                emulator.faults(hang=False, hang_after_processing=True, delay=send_delay, endpoints=["send"])
                pause -= hung
                esme_never_took_windows.append(hung)
            time.sleep(pause)
            up["port"] = None
            bridge.kill()
            if bridge._reader is not None:
                bridge._reader.join(5)  # every line the killed process wrote
            logs.append(bridge.log_text())
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 0.5))  # sometimes stay down a little
            blinded = rng.random() < blind
            if blinded:
                # The GoIP's status page is unreadable while the bridge recovers: for a part
                # that was in a device call, the device cannot tell; the policy decides.
                emulator.faults(malformed_status_xml=True)
            bridge.start()
            up["port"] = bridge.port
            if blinded:
                time.sleep(0.5)
                emulator.faults(malformed_status_xml=False)
            say(f"  kill {i + 1}/{kills}: {len(esme.acked)} acknowledged so far")
        time.sleep(rng.uniform(*gap))
        esme.submitting.clear()
        # Drain: every acknowledged message final in the store, every receipt at the ESME.
        deadline = time.monotonic() + drain_timeout
        while True:
            time.sleep(0.5)
            acked_ids = set(esme.acked.values())
            with bridge.db() as db:
                not_final = _not_final(db, acked_ids)
            missing = acked_ids - set(esme.receipts)
            if not not_final and not missing:
                break
            if time.monotonic() > deadline:
                say(f"  drain timed out: {len(not_final)} not final, {len(missing)} receipts missing")
                break
        esme.join()
        code = bridge.stop()
        logs.append(bridge.log_text())
        sent = emulator.sent()
    finally:
        up["port"] = None
        esme.stop.set()
        bridge.kill()
        emulator.stop()
    result = _evaluate(bridge, esme, sent, "".join(logs), policy)
    result.update(never_took_windows=len(esme_never_took_windows),
                  never_took_seconds=round(sum(esme_never_took_windows), 1))
    result.update(seed=seed, kills=kills, rate=rate, lines=lines, policy=policy, stop_exit_code=code,
                  duration_s=round(time.monotonic() - started, 1), esme_binds=esme.reconnects)
    if tmp is not None:
        tmp.cleanup()
    return result


def _not_final(db: sqlite3.Connection, ids: set[str]) -> set[str]:
    finals = {f"{r[0]:010d}" for r in db.execute(
        f"SELECT id FROM messages WHERE state IN ({','.join('?' * len(FINAL_STATES))})", FINAL_STATES)}
    aliases = {f"{a:010d}": f"{m:010d}" for a, m in db.execute("SELECT alias, message FROM aliases")}
    return {i for i in ids if aliases.get(i, i) not in finals}


def _evaluate(bridge: BridgeProcess, esme: Esme, sent: list[dict], log_text: str, policy: str) -> dict[str, Any]:
    acked = esme.acked
    acked_ids = set(acked.values())
    with bridge.db() as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        states = dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
        stored_texts = {t for (t,) in db.execute("SELECT text FROM messages")}
        not_final = _not_final(db, acked_ids)
        events = db.execute(
            "SELECT count(*) FROM events WHERE detail LIKE 'recovery:%' OR detail LIKE 'send may have failed%'"
        ).fetchone()[0]
    device = collections.Counter(s["text"] for s in sent)
    duplicates = {t: n for t, n in device.items() if n > 1}
    ambiguous = count_ambiguous(log_text)
    ambiguous_ids = {f"{m:010d}" for m in ambiguous["messages"]}
    text_of = {mid: t for t, mid in acked.items()}
    unexplained_dups = [t for t in duplicates if policy != "resend" or acked.get(t) not in ambiguous_ids]
    stats = collections.Counter(esme.stats.get(mid, "none") for mid in acked_ids)
    # A DELIVRD receipt must match a send on the device (twice only if counted above).
    delivrd_never_sent = [mid for mid in acked_ids if esme.stats.get(mid) == "DELIVRD" and not device.get(text_of[mid])]
    unanswered_stored = sum(1 for t in esme.unanswered if t in stored_texts)
    # Every final state and every ambiguous decision against what the GoIP really did.
    ok_sends = collections.Counter(s["text"] for s in sent if not s.get("error"))
    unknown_truth = collections.Counter()
    wrong: list[str] = []
    for mid in acked_ids:
        text, stat = text_of[mid], esme.stats.get(mid)
        if stat == "UNKNOWN":
            unknown_truth["sent" if ok_sends.get(text) else "never took"] += 1
        decisions = ambiguous["per_message"].get(mid, [])
        for d in decisions:
            if d == "reconciled_sent" and not ok_sends.get(text):
                wrong.append(f"{mid}: reconciled_sent, but the GoIP never sent it")
        if decisions and decisions[-1] == "reconciled_not_sent" and policy == "unknown" and ok_sends.get(text) != 1:
            wrong.append(f"{mid}: reconciled_not_sent, then sent {ok_sends.get(text, 0)} times (expected once)")
        if decisions and decisions[-1] == "policy_unknown" and stat != "UNKNOWN":
            wrong.append(f"{mid}: policy_unknown, but its receipt says {stat}")
    result = {
        "submitted": esme.n,
        "acknowledged": len(acked),
        "refused": {f"0x{k:08X}": v for k, v in esme.refused.items()},
        "unanswered": len(esme.unanswered),
        "unanswered_but_stored": unanswered_stored,
        "acknowledged_not_stored": len({t for t in acked if t not in stored_texts}),
        "acknowledged_not_final": len(not_final),
        "states": states,
        "device_sends": sum(device.values()),
        "duplicate_sends": sum(n - 1 for n in duplicates.values()),
        "unexplained_duplicates": len(unexplained_dups),
        "ambiguous": ambiguous,
        "ambiguous_events_in_store": events,
        "receipts_missing": len(acked_ids - set(esme.receipts)),
        "receipts_duplicated": sum(n - 1 for mid, n in esme.receipts.items() if n > 1),
        "receipt_stats": dict(stats),
        "delivrd_never_sent": len(delivrd_never_sent),
        "unknown_truth": dict(unknown_truth),
        "decisions_contradicted": len(wrong),
        "contradictions": wrong[:5],
        "integrity_check": integrity,
        "esme_errors": esme.errors[:5],
    }
    result["ok"] = (
        result["acknowledged"] > 0
        and result["acknowledged_not_stored"] == 0
        and result["acknowledged_not_final"] == 0
        and result["unexplained_duplicates"] == 0
        and result["receipts_missing"] == 0
        and result["delivrd_never_sent"] == 0
        and result["decisions_contradicted"] == 0
        and integrity == "ok"
    )
    return result


def format_result(r: dict[str, Any]) -> str:
    amb = r["ambiguous"]
    return "\n".join([
        f"crash: {r['kills']} kill -9 in {r['duration_s']} s (seed {r['seed']}, policy {r['policy']}), ESME bound {r['esme_binds']} times",
        f"  submits {r['submitted']}: ESME_ROK {r['acknowledged']}, refused {r['refused'] or 0}, "
        f"unanswered at a crash {r['unanswered']} (of which stored anyway: {r['unanswered_but_stored']})",
        f"  acknowledged but not stored: {r['acknowledged_not_stored']}; not final: {r['acknowledged_not_final']}; states {r['states']}",
        f"  device sends {r['device_sends']}; duplicates {r['duplicate_sends']} (unexplained {r['unexplained_duplicates']}); "
        f"DELIVRD but never sent: {r['delivrd_never_sent']}",
        f"  ambiguous device calls: {amb['parts']} parts, {amb['log_lines']} decisions {amb['decisions'] or '{}'}, "
        f"final resolutions {amb['by_final_resolution'] or '{}'} ({r['ambiguous_events_in_store']} retries recorded in the store's events)",
        f"  checked against the GoIP: {r['decisions_contradicted']} decisions contradicted {r['contradictions'] or ''}; "
        f"UNKNOWN receipts by what the device had done: {r['unknown_truth'] or '{}'}; "
        f"{r.get('never_took_windows', 0)} windows ({r.get('never_took_seconds', 0)} s) in which the GoIP took no send",
        f"  receipts: missing {r['receipts_missing']}, duplicated (at-least-once) {r['receipts_duplicated']}, stats {r['receipt_stats']}",
        f"  PRAGMA integrity_check: {r['integrity_check']}",
        f"  {'OK' if r['ok'] else 'FAILED'}",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--rate", type=float, default=25.0, help="submit_sm per second")
    ap.add_argument("--lines", type=int, default=8, help="emulated GoIP lines")
    ap.add_argument("--send-duration", type=float, default=0.05)
    ap.add_argument("--send-delay", type=float, default=0.15, help="seconds the GoIP takes to answer send.html")
    ap.add_argument("--policy", choices=["unknown", "resend"], default="unknown", help="scheduler.ambiguous")
    ap.add_argument("--blind", type=float, default=0.25,
                    help="fraction of restarts during which the GoIP's status page is unreadable")
    ap.add_argument("--never-took", type=float, default=0.3,
                    help="fraction of the gaps between kills with a moment in which the GoIP takes no send")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--json", metavar="FILE", help="also write the counts to FILE")
    a = ap.parse_args(argv)
    r = run_crash(a.kills, rate=a.rate, lines=a.lines, send_duration=a.send_duration, send_delay=a.send_delay, policy=a.policy, blind=a.blind,
                  never_took=a.never_took, seed=a.seed)
    print(format_result(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=2))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
