"""The C heap's free memory is given back to the system on a timer (bridge/heap.py).

The soak benchmark measures the effect on the whole bridge over minutes; these check that the
trimmer runs on its timer in a running bridge, that malloc_trim really gives back freed heap
memory on this system (a process that fragments its heap the way the bridge did), and that a
bad setting stops the start with a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
import trio.testing

from bridge.heap import ENV, TRIM_SECONDS, HeapSettingError, HeapTrimmer, malloc_trim_function, trim_interval

ROOT = Path(__file__).resolve().parents[1]
GLIBC = malloc_trim_function() is not None
needs_glibc = pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")


async def test_the_trimmer_trims_every_interval_and_never_before(autojump_clock):
    clock_calls: list[float] = []

    def trim(pad: int) -> int:
        assert pad == 0  # everything above the heap's top, not a pad kept back
        clock_calls.append(trio.current_time())
        return 1

    trimmer = HeapTrimmer(10.0, trim)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(trimmer.run)
        await trio.sleep(35)
        nursery.cancel_scope.cancel()
    assert [round(t - start) for t in clock_calls] == [10, 20, 30]
    assert (trimmer.trims, trimmer.released) == (3, 3)


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_the_trimmer_does_nothing_when_off_or_without_glibc(autojump_clock):
    calls: list[int] = []
    for trimmer in (HeapTrimmer(0, calls.append), HeapTrimmer(10.0, None)):
        assert not trimmer.active
        with trio.fail_after(1):  # returns at once: no timer left running for nothing
            await trimmer.run()
    assert calls == []


def test_the_interval_comes_from_the_environment():
    assert trim_interval({}) == TRIM_SECONDS
    assert trim_interval({ENV: ""}) == TRIM_SECONDS
    assert trim_interval({ENV: "0"}) == 0
    assert trim_interval({ENV: " 2.5 "}) == 2.5
    for bad in ("ten", "-1", "nan", "inf"):
        with pytest.raises(HeapSettingError, match=f"{ENV}=.*expected a number of seconds >= 0"):
            trim_interval({ENV: bad})


def test_a_bad_setting_stops_the_start_with_a_clear_error(tmp_path):
    config = tmp_path / "bridge.yaml"
    config.write_text(textwrap.dedent("""
        smpp: {listeners: [{host: 127.0.0.1, port: 0}]}
        store: {path: %s}
        esmes: [{system_id: app, password: secret1}]
        """ % (tmp_path / "b.sqlite3")))
    os.chmod(config, 0o600)
    env = {**os.environ, ENV: "soon", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"{ENV}='soon': expected a number of seconds >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_glibc
async def test_a_running_bridge_trims_on_its_timer(tmp_path, monkeypatch):
    from bridge.app import App
    from bridge.config import load_config_text

    monkeypatch.setenv(ENV, "0.2")
    app = App(load_config_text(textwrap.dedent(f"""
        smpp: {{listeners: [{{host: 127.0.0.1, port: 0}}]}}
        store: {{path: {tmp_path / "b.sqlite3"}}}
        esmes: [{{system_id: app, password: secret1}}]
        """)))
    assert app.heap_trimmer.active and app.heap_trimmer.interval == 0.2
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run)
        with trio.fail_after(30):
            while app.heap_trimmer.trims < 2:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    # About a millisecond on the bridge's heap; the event loop must never wait long for it.
    assert app.heap_trimmer.longest < 0.1


FRAGMENT = textwrap.dedent("""
    import sys
    from bridge.heap import HeapTrimmer, malloc_trim_function

    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    # 40,000 blocks of 1.5 KB from the C heap (above Python's small-object limit, below glibc's
    # mmap threshold), every 16th kept alive: the heap's free part is then about 56 MB in small
    # holes between live blocks, and none of it is at the top, where glibc trims by itself.
    blocks = [bytes(1500) for _ in range(40_000)]
    kept = blocks[::16]
    del blocks
    before = rss_kib()
    again = rss_kib()
    trimmer = HeapTrimmer(1.0, malloc_trim_function())
    trimmer.trim_once()
    after = rss_kib()
    print(before, again, after, trimmer.released, len(kept))
""")


@needs_glibc
def test_malloc_trim_gives_back_freed_memory_a_fragmented_heap_keeps():
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", FRAGMENT], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    before, again, after, released = (int(x) for x in out[:4])
    # Without the trim the freed memory stays resident ...
    assert again >= before - 1024
    # ... with it, most of it goes back to the system.
    assert released == 1
    assert before - after >= 30 * 1024, (before, after)
