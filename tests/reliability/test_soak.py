"""Group 4, load and soak: 20 ESMEs x 10 binds submitting at a steady rate (bench/soak.py does
the work and explains what "flat" means).

Short form (20 s): every submit answered ESME_ROK and stored, no file descriptor growth after
warm-up, resident memory growth after warm-up within the bound (10 %, at least 4 MiB). Latency
per interval is printed, not asserted (timing on a shared CI machine is not a property of the
code). Full form, 10 minutes, also latency stable (no upward drift of p99):

    python bench/soak.py --minutes 10         # or: python -m pytest -n 0 -m full tests/reliability -k soak -s
"""

from __future__ import annotations

import pytest

from reliability_support import size

from soak import format_verdict, run_soak  # noqa: E402  (bench/, put on sys.path by reliability_support)


@pytest.mark.slow
@pytest.mark.parametrize(
    "seconds, interval",
    [
        pytest.param(size("soak_seconds", 20.0), 2.0, id="short"),
        pytest.param(size("soak_seconds", 600.0), 20.0, id="full", marks=pytest.mark.full),
    ],
)
def test_soak_200_binds_memory_flat_no_fd_growth(tmp_path, seconds, interval):
    r = run_soak(seconds, esmes=20, binds=10, rate=300.0, interval=interval, workdir=tmp_path)
    print(format_verdict(r))
    assert r["sent"] > 0 and r["errors"] == 0 and r["unanswered"] == 0
    assert r["stored"] == r["accepted"] == r["sent"]  # durable: every ESME_ROK is in the store
    assert r["fds_flat"], f"file descriptors grew: {r['fds_after_warmup']} -> {r['fds_max_after_warmup']}"
    assert r["memory_flat"], (
        f"RSS grew {r['rss_growth_kb']} KiB after warm-up (allowed {r['rss_growth_allowed_kb']} KiB)")
    if seconds >= 300:
        assert r["latency_stable"] and r["ok"]
