"""Power cuts under load: what survives when every write the store had not synced is dropped.

kill -9 keeps the page cache, so it never loses a write; a power cut does. This harness models a
disk that honours flushes (what a good SD card or SSD does, and what SQLite's durability rests
on): after a cut, every byte written before the file's last completed fsync is there, and of the
writes after it any subset of 512-byte sectors may have landed, in any order, with a file that
grew either at its old or its new length (zeros where nothing landed). The one ordering SQLite
adds itself is modelled too: when a commit restarts the WAL, the new WAL header is synced before
any frame is written (``torn_wal``); without that, a cut can leave old frames that replay over a
newer database (the first run of this harness found exactly that corruption when the model
left the header unsynced).

How: the store runs under load (concurrent submits, state changes, a small WAL so that
checkpoints and WAL restarts happen often) with a test seam, ``Engine.sync_barrier``, called on
the writer thread right after each commit and each checkpoint returned, that is, after SQLite's
fsyncs and before the acknowledgements (the writer checkpoints between commits). At each
barrier the harness reads the database, its WAL and the id guard
files. A cut *during* the next commit is then built from two neighbouring barriers:

* ``wal``: the WAL as at barrier N plus a random subset of the sectors commit N+1 wrote (its
  fsync never completed); the database file as at barrier N.
* ``checkpoint``: the WAL complete (synced), the database file as at barrier N plus a random
  subset of the sectors the checkpoint after it wrote (its fsync never completed).

The id guard (written with fsync and rename) is taken as at barrier N+1; the unsynced
last-commit record (``<db>.ids-last``) as at N, N+1 or missing. What was acknowledged by then is
exactly what the submitters were told before barrier N+1. Each cut is then opened as the bridge
would open it at start, and judged: it must start (no false alarm), hold every acknowledged
message and every acknowledged state change, pass ``PRAGMA integrity_check``, and hand out new
ids above every id acknowledged before the cut.

Then the same for a disk that does *not* honour flushes (``lying``): the database and WAL roll
back several commits that were synced, while the id guard and the last-commit record survived.
Judged: the bridge either refuses to start (saying what to run) or has every acknowledged
message; one that starts without them is a silent loss. A rollback that lost only state changes
(no new message) cannot be told from a whole store and is counted apart.

Run: ``python bench/powercut.py`` (full form: 10 rounds x 60 cuts). The test
``tests/reliability/test_power_cut.py`` runs a short form in CI.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from bridge.lifecycle import State  # noqa: E402
from bridge.store import NewMessage, Store, StoreDamaged, StoreError  # noqa: E402

SECTOR = 512


class Barrier:
    """The store's files as they stood right after one commit."""

    __slots__ = ("n", "db", "wal", "ids", "last", "acked", "queued")

    def __init__(self, n: int, path: Path, acked: dict[str, int], queued: dict[str, int]) -> None:
        self.n = n
        self.db = _read(path)
        self.wal = _read(Path(str(path) + "-wal"))
        self.ids = _read(path.with_name(path.name + ".ids"))
        self.last = _read(path.with_name(path.name + ".ids-last"))
        # what the submitters had been told before this barrier (message id -> barrier seen)
        self.acked = dict(acked)
        self.queued = dict(queued)


def _read(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        return None


def torn(old: bytes | None, new: bytes | None, rng: random.Random) -> bytes | None:
    """``old`` with a random subset of the sectors in which ``new`` differs from it, at the old or
    the new length: what a disk that honours flushes may hold after a cut before the fsync."""
    if new is None:
        return old
    old = old or b""
    length = rng.choice((len(old), len(new)))
    out = bytearray(old[:length].ljust(length, b"\0"))
    land = rng.random()  # how much of the unsynced writing landed: anything from none to all
    for off in range(0, length, SECTOR):
        chunk = new[off:off + SECTOR]
        if chunk != old[off:off + SECTOR] and rng.random() < land:
            out[off:off + len(chunk)] = chunk[: length - off]
    return bytes(out)


WAL_HEADER = 32


def torn_wal(old: bytes | None, new: bytes | None, rng: random.Random) -> bytes | None:
    """``torn`` for the WAL: when a commit restarts the log (new salts in its 32-byte header),
    SQLite writes and syncs the new header before the first frame (an out-of-order write after a
    restart would corrupt the database otherwise), so a cut keeps the new header."""
    if old is not None and new is not None and new[:WAL_HEADER] != old[:WAL_HEADER] and len(old) >= WAL_HEADER:
        old = new[:WAL_HEADER] + old[WAL_HEADER:]
    return torn(old, new, rng)


def write_image(d: Path, name: str, db: bytes | None, wal: bytes | None, ids: bytes | None,
                last: bytes | None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    for suffix, data in (("", db), ("-wal", wal), (".ids", ids), (".ids-last", last)):
        if data is not None:
            Path(str(path) + suffix).write_bytes(data)
    return path


async def run_load(path: Path, seconds: float, seed: int, cuts: int, workdir: Path,
                   lying: int) -> tuple[list[tuple[str, Path, Barrier]], dict[str, Any]]:
    """Run the store under load; build ``cuts`` honest cut images and ``lying`` lying ones."""
    rng = random.Random(seed)
    store = Store(path)
    store.checkpoint_after = (4, 40)  # checkpoints and WAL restarts, often
    store.open()
    acked: dict[str, int] = {}
    queued: dict[str, int] = {}
    barriers: list[Barrier] = []  # a window of recent barriers
    images: list[tuple[str, Path, Barrier]] = []
    lock = threading.Lock()
    count = {"n": 0, "submits": 0, "refused": 0}
    # Which barriers to cut at: spread over the run (decided as barriers come, by probability).
    want = {"honest": cuts, "lying": lying}

    def barrier() -> None:
        with lock:
            count["n"] += 1
            b = Barrier(count["n"], path, acked, queued)
            barriers.append(b)
            if len(barriers) > 12:
                barriers.pop(0)
            if len(barriers) >= 2 and want["honest"] and rng.random() < 0.25:
                prev, cur = barriers[-2], barriers[-1]
                kind = "checkpoint" if cur.db != prev.db else "wal"
                if kind == "checkpoint":
                    db, wal = torn(prev.db, cur.db, rng), cur.wal
                else:
                    db, wal = prev.db, torn_wal(prev.wal, cur.wal, rng)
                last = rng.choice((prev.last, cur.last, None))
                want["honest"] -= 1
                d = workdir / f"cut{len(images):04d}"
                images.append((kind, write_image(d, path.name, db, wal, cur.ids, last), cur))
            elif len(barriers) >= 8 and want["lying"] and rng.random() < 0.1:
                old, cur = barriers[rng.randrange(0, len(barriers) - 4)], barriers[-1]
                want["lying"] -= 1
                d = workdir / f"lie{len(images):04d}"
                images.append(("lying", write_image(d, path.name, old.db, old.wal, cur.ids, cur.last), cur))

    store.sync_barrier = barrier
    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        async def submitter(k: int) -> None:
            i = 0
            while time.monotonic() - t0 < seconds and (want["honest"] or want["lying"]):
                i += 1
                msg = NewMessage(esme=f"esme{k}", destination_addr=f"+49170{k:03d}{i:05d}",
                                 body=f"{k}/{i} {'x' * rng.randrange(0, 140)}".encode())
                count["submits"] += 1
                try:
                    a = await store.accept(msg)
                except StoreError:
                    count["refused"] += 1
                    continue
                with lock:
                    acked[a.message_id] = count["n"]
                if rng.random() < 0.5:
                    try:
                        await store.transition(a.message_id, State.QUEUED)
                    except StoreError:
                        continue
                    with lock:
                        queued[a.message_id] = count["n"]

        async with trio.open_nursery() as load:
            for k in range(8):
                load.start_soon(submitter, k)
        nursery.cancel_scope.cancel()
    store.close()
    stats = {"submits": count["submits"], "acknowledged": len(acked), "barriers": count["n"],
             "seconds": time.monotonic() - t0}
    return images, stats


async def judge(kind: str, path: Path, at: Barrier) -> dict[str, Any]:
    """Open a cut image as the bridge would; what it found."""
    # Acknowledged before the cut: what the submitters were told before the barrier that
    # followed the cut (``at`` is that barrier: its acked set was copied before its acks).
    acked = at.acked
    queued = at.queued
    out: dict[str, Any] = {"kind": kind, "refused": None, "missing": 0, "state_lost": 0, "reused": False,
                           "integrity": True}
    s = Store(path)
    try:
        s.open()
    except StoreDamaged as exc:
        out["refused"] = str(exc)
        return out
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        out["integrity"] = db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = dict(db.execute("SELECT id, state FROM messages").fetchall())
        db.close()
        for mid in acked:
            if int(mid) not in rows:
                out["missing"] += 1
        for mid in queued:
            if rows.get(int(mid)) not in (None, State.QUEUED.value):
                out["state_lost"] += 1
            elif rows.get(int(mid)) is None:
                out["state_lost"] += 1
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            new = await s.accept(NewMessage(esme="after", destination_addr="+491", body=b"after the cut"))
            nursery.cancel_scope.cancel()
        out["reused"] = bool(acked) and int(new.message_id) <= max(int(m) for m in acked)
    finally:
        s.close()
    return out


def run_powercut(rounds: int, cuts: int, lying: int, seconds: float, seed: int) -> dict[str, Any]:
    totals: dict[str, Any] = {"rounds": rounds, "submits": 0, "acknowledged": 0, "barriers": 0,
                              "cuts": {"wal": 0, "checkpoint": 0}, "honest_refused": 0, "honest_missing": 0,
                              "honest_state_lost": 0, "reused": 0, "integrity_failed": 0,
                              "lying": 0, "lying_refused": 0, "lying_complete": 0, "lying_silent_loss": 0,
                              "lying_state_lost": 0, "lying_reused": 0,
                              "seconds": 0.0, "examples": []}
    t0 = time.monotonic()
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="powercut-") as tmp:
            work = Path(tmp)
            images, stats = trio.run(run_load, work / "live" / "b.sqlite3", seconds, seed + r, cuts, work / "cuts", lying)
            for key in ("submits", "acknowledged", "barriers"):
                totals[key] += stats[key]
            for kind, path, at in images:
                res = trio.run(judge, kind, path, at)
                if kind == "lying":
                    totals["lying"] += 1
                    totals["lying_reused"] += int(res["reused"])
                    if res["refused"]:
                        totals["lying_refused"] += 1
                    elif res["missing"]:
                        totals["lying_silent_loss"] += 1
                    elif res["state_lost"]:
                        totals["lying_state_lost"] += 1
                    else:
                        totals["lying_complete"] += 1
                    continue
                totals["cuts"][kind] += 1
                if res["refused"]:
                    totals["honest_refused"] += 1
                    totals["examples"].append(f"{kind} cut refused: {res['refused']}")
                totals["honest_missing"] += res["missing"]
                totals["honest_state_lost"] += res["state_lost"]
                totals["reused"] += int(res["reused"])
                totals["integrity_failed"] += int(not res["integrity"])
                if res["missing"] or res["state_lost"] or res["reused"] or not res["integrity"]:
                    totals["examples"].append(f"{kind} cut: {res} (seed {seed + r}, {path})")
                    shutil.copytree(path.parent, Path(tempfile.gettempdir()) / f"powercut-failed-{seed + r}-{path.parent.name}",
                                    dirs_exist_ok=True)
    totals["seconds"] = time.monotonic() - t0
    return totals


def format_result(t: dict[str, Any]) -> str:
    honest = t["cuts"]["wal"] + t["cuts"]["checkpoint"]
    lines = [
        f"power cuts: {t['rounds']} rounds, {t['submits']:,} submits, {t['acknowledged']:,} acknowledged, "
        f"{t['barriers']:,} commits, {t['seconds']:.0f} s",
        f"disk that honours flushes: {honest} cuts ({t['cuts']['wal']} during a commit, "
        f"{t['cuts']['checkpoint']} during a checkpoint): {t['honest_refused']} refused to start, "
        f"{t['honest_missing']} acknowledged messages missing, {t['honest_state_lost']} acknowledged state "
        f"changes lost, {t['reused']} ids handed out again, {t['integrity_failed']} integrity failures "
        f"(goal: 0 each)",
        f"disk that drops synced writes: {t['lying']} cuts: {t['lying_refused']} refused to start (saying "
        f"what to run), {t['lying_complete']} started complete, {t['lying_state_lost']} started with only "
        f"state changes lost, {t['lying_silent_loss']} started with acknowledged messages missing, "
        f"{t['lying_reused']} handed out an acknowledged id again (goal: 0 each)",
    ]
    lines += [f"  {e}" for e in t["examples"][:5]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10, help="store runs, each with its own cuts [10]")
    ap.add_argument("--cuts", type=int, default=60, help="honest power cuts per round [60]")
    ap.add_argument("--lying", type=int, default=10, help="cuts per round on a disk that drops synced writes [10]")
    ap.add_argument("--seconds", type=float, default=20.0, help="longest load per round [20]")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t = run_powercut(a.rounds, a.cuts, a.lying, a.seconds, a.seed)
    print(format_result(t))
    bad = t["honest_refused"] + t["honest_missing"] + t["honest_state_lost"] + t["reused"] + t["integrity_failed"]
    return 1 if bad or t["lying_silent_loss"] else 0


if __name__ == "__main__":
    sys.exit(main())
