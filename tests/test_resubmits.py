"""The registry of lost submit_sm answers (bridge/frontends/smpp/resubmits.py), against a plain
list model: an id is handed back only for the same ESME and the same message, at most once, and
never after its hold time; the oldest go first beyond the limit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.frontends.smpp.resubmits import UnansweredSubmits, resubmit_key
from bridge.smpp.constants import CommandId

ESMES = st.sampled_from(["acme", "kannel"])
KEYS = st.sampled_from([("a",), ("b",), ("c",)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("remember"), ESMES, KEYS),
        st.tuples(st.just("take"), ESMES, KEYS),
        st.tuples(st.just("wait"), st.floats(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=1000, deadline=None)
@given(OPS)
def test_lost_answers_serve_once_per_same_message_and_expire(ops):
    reg = UnansweredSubmits(hold=60, limit=5)
    model: list[tuple[str, tuple, str, float]] = []  # esme, key, id, expires (oldest first)
    now = 0.0
    n = 0
    for op in ops:
        if op[0] == "wait":
            now += op[1]
            continue
        _, esme, key = op
        model = [m for m in model if m[3] > now]
        if op[0] == "remember":
            n += 1
            reg.remember(esme, key, f"id{n}", now)
            model.append((esme, key, f"id{n}", now + 60))
            mine = [m for m in model if m[0] == esme]
            if len(mine) > 5:
                model.remove(mine[0])  # the oldest remembered (equal hold: the first)
        else:
            expected = next((m for m in model if m[0] == esme and m[1] == key), None)
            got = reg.take(esme, key, now)
            assert got == (expected[2] if expected else None)
            if expected:
                model.remove(expected)


def test_only_whole_submit_sm_are_judged_here():
    base = {"source_addr": "shop", "destination_addr": "+4917012345", "short_message": b"hi"}
    assert resubmit_key(CommandId.SUBMIT_SM, base) == resubmit_key(CommandId.SUBMIT_SM, dict(base))
    assert resubmit_key(CommandId.SUBMIT_SM, base) != resubmit_key(
        CommandId.SUBMIT_SM, {**base, "destination_addr": "+4917012346"}
    )
    assert resubmit_key(CommandId.SUBMIT_SM, {**base, "esm_class": 0x40}) is None  # a part: the store's job
    assert resubmit_key(CommandId.SUBMIT_SM, {**base, "sar_msg_ref_num": 7}) is None
    assert resubmit_key(CommandId.DATA_SM, base) is None
