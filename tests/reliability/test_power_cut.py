"""Power cuts under load (issue 12): every write not yet synced is dropped, at random points.

bench/powercut.py has the model (a disk that honours flushes: of what was written after a
file's last fsync, any subset of sectors may have landed) and builds each cut from the store's
files as they stood at two neighbouring commits. Short form here; full form:
``python -m pytest -n 0 -m full tests/reliability -k power -s`` or ``python bench/powercut.py``.
"""

from __future__ import annotations

from reliability_support import short_and_full, size

from powercut import format_result, run_powercut  # noqa: E402  (bench/, put on sys.path by reliability_support)


@short_and_full(
    (2, size("powercut_cuts", 30), 5),
    (size("powercut_rounds", 10), size("powercut_cuts", 60), 10),
    "sizes",
)
def test_power_cuts_lose_nothing_acknowledged_and_reuse_no_id(sizes) -> None:
    rounds, cuts, lying = sizes
    t = run_powercut(rounds, cuts, lying, seconds=30.0, seed=size("powercut_seed", 1))
    print(format_result(t))
    honest = t["cuts"]["wal"] + t["cuts"]["checkpoint"]
    assert honest == rounds * cuts, "the load ended before every cut was taken"
    assert t["cuts"]["wal"] > 0 and t["cuts"]["checkpoint"] > 0, "both kinds of cut must be exercised"
    # A disk that honours flushes: the bridge starts, with everything it acknowledged.
    assert t["honest_refused"] == 0, t["examples"]
    assert t["honest_missing"] == 0 and t["honest_state_lost"] == 0, t["examples"]
    assert t["integrity_failed"] == 0, t["examples"]
    assert t["reused"] == 0, "an id acknowledged before the cut was handed out again"
    # A disk that lost synced writes: refused to start, never started without acknowledged messages.
    assert t["lying"] == rounds * lying
    assert t["lying_silent_loss"] == 0 and t["lying_reused"] == 0
    assert t["lying_refused"] > 0
