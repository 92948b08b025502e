"""Group 1, crash safety: kill -9 the bridge at random points under load and restart it.

The work is done by bench/crash.py (also runnable on its own); this test asserts what it counted.
Short form: 4 kills. Full form (20 kills, each ambiguity policy):

    python -m pytest -n 0 -m full tests/reliability -k crash       # or: python bench/crash.py
"""

from __future__ import annotations

import pytest

from reliability_support import size

from crash import format_result, run_crash  # noqa: E402  (bench/, put on sys.path by reliability_support)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kills", "policy"),
    [
        pytest.param(size("crash_kills", 4), "unknown", id="short"),
        pytest.param(size("crash_kills", 20), "unknown", id="full-unknown", marks=pytest.mark.full),
        pytest.param(size("crash_kills", 20), "resend", id="full-resend", marks=pytest.mark.full),
    ],
)
def test_kill_9_under_load_loses_nothing_and_sends_nothing_twice(tmp_path, kills, policy):
    r = run_crash(kills, policy=policy, workdir=tmp_path)
    print(format_result(r))
    assert r["acknowledged"] > 0 and r["integrity_check"] == "ok"
    # Every ESME_ROK is in the store, in a final state, and its receipt reached the ESME.
    assert r["acknowledged_not_stored"] == 0
    assert r["acknowledged_not_final"] == 0
    assert r["receipts_missing"] == 0
    # Nothing went out twice, except what the resend policy sent again after an ambiguous call
    # (and every such case is one the bridge counted).
    assert r["unexplained_duplicates"] == 0
    if policy == "unknown":
        assert r["duplicate_sends"] == 0
    assert r["duplicate_sends"] <= r["ambiguous"]["decisions"].get("policy_resend", 0)
    assert r["delivrd_never_sent"] == 0
    # What the harness prints about ambiguous sends is checked against what the GoIP did: no
    # decision the device's record contradicts, and the ambiguous sends did happen.
    assert r["decisions_contradicted"] == 0, r["contradictions"]
    assert r["ambiguous"]["parts"] > 0, "no kill or hang landed in a device call: nothing was tested"
    # Every part whose final resolution was a retry has its event in the store. (Decisions can
    # outnumber events: a kill between logging a decision and committing its event makes the
    # restarted bridge decide that part again.)
    retried = sum(r["ambiguous"]["by_final_resolution"].get(k, 0) for k in ("reconciled_not_sent", "policy_resend"))
    assert r["ambiguous_events_in_store"] >= retried
    assert r["ok"]
