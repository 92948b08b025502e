"""Group 4, load and soak: 20 ESMEs x 10 binds submitting at a steady rate, end to end through an
emulated GoIP with receipts and inbound SMS, the bridge started with the allocator setting the
unit ships (bench/soak.py does the work and explains what "flat" means).

Short form (45 s, the second half judged): every submit answered ESME_ROK and stored, every receipt and every inbound
SMS's MO delivered, no file descriptor growth after warm-up, resident memory after warm-up within
the bound (10 %, at least 4 MiB) and its trend not climbing past it. Latency per interval is
printed, not asserted (timing on a shared CI machine is not a property of the code). Full form,
10 minutes, also the memory slope at most 5 MiB/h and latency stable (no upward drift of p99):

    python bench/soak.py --minutes 10         # or: python -m pytest -n 0 -m full tests/reliability -k soak -s
"""

from __future__ import annotations

import pytest

from reliability_support import size

from soak import format_verdict, run_soak  # noqa: E402  (bench/, put on sys.path by reliability_support)


@pytest.mark.slow
@pytest.mark.parametrize(
    "seconds, interval, warmup",
    [
        # End to end, the first seconds fill the scheduler's, the receipts' and the HTTP
        # client's caches: the short form judges the second half only.
        pytest.param(size("soak_seconds", 45.0), 3.0, 0.5, id="short"),
        pytest.param(size("soak_seconds", 600.0), 20.0, 0.2, id="full", marks=pytest.mark.full),
    ],
)
def test_soak_200_binds_memory_flat_no_fd_growth(tmp_path, seconds, interval, warmup):
    r = run_soak(seconds, esmes=20, binds=10, interval=interval, warmup=warmup, workdir=tmp_path)
    print(format_verdict(r))
    assert r["lines"] > 0 and r["inbound_rate"] > 0 and r["malloc_arena_max"] == 2  # as shipped
    assert r["malloc_trim"] is None  # the bridge's own malloc_trim timer, as shipped
    assert r["sent"] > 0 and r["errors"] == 0 and r["unanswered"] == 0
    assert r["stored"] == r["accepted"] == r["sent"]  # durable: every ESME_ROK is in the store
    assert r["receipts"] == r["accepted"], "a receipt never arrived"
    assert r["inbound_injected"] > 0 and r["mo"] == r["inbound_injected"], "an inbound SMS never reached the ESME"
    assert r["fds_flat"], f"file descriptors grew: {r['fds_after_warmup']} -> {r['fds_max_after_warmup']}"
    assert r["memory_flat"], (
        f"RSS grew {r['rss_growth_kb']} KiB after warm-up (allowed {r['rss_growth_allowed_kb']} KiB), "
        f"slope {r['rss_slope_mib_per_hour']} MiB/h over {r['rss_slope_span_s']} s")
    assert r["backlog_steady"], "the devices fell behind: the memory figures measure a growing queue"
    if seconds >= 300:
        assert r["rss_slope_span_s"] >= 300 and r["rss_slope_ok"]
        assert r["latency_stable"] and r["ok"]
