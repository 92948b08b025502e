import itertools

import pytest

from bridge import lifecycle
from bridge.lifecycle import FINAL, State, TRANSITIONS, InvalidTransition, check
from bridge.smpp.constants import MessageState


def test_every_state_has_a_row_and_an_smpp_state():
    assert set(TRANSITIONS) == set(State)
    assert set(lifecycle.SMPP_STATE) == set(State)


def test_final_states_never_move():
    for final, other in itertools.product(FINAL, State):
        with pytest.raises(InvalidTransition):
            check(final, other)


def test_every_non_final_state_can_reach_a_final_state():
    for start in set(State) - FINAL:
        seen, todo = set(), [start]
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            todo.extend(TRANSITIONS[s])
        assert seen & FINAL, start


def test_happy_path_and_multipart_path():
    path = [State.ACCEPTED, State.QUEUED, State.SUBMITTING, State.SENT, State.SUBMITTING,
            State.SENT, State.DELIVERED]
    for a, b in zip(path, path[1:]):
        assert check(a, b) is b


@pytest.mark.parametrize(
    "current,new",
    [
        (State.ACCEPTED, State.SENT),  # never skips the device call
        (State.QUEUED, State.DELIVERED),
        (State.SENT, State.QUEUED),  # a sent message is never queued again (no silent duplicate)
        (State.SENT, State.RETRY_WAIT),
        (State.ACCEPTED, State.ACCEPTED),
        (State.SUBMITTING, State.DELETED),  # cancel_sm cannot recall an in-flight send
    ],
)
def test_forbidden_moves(current, new):
    with pytest.raises(InvalidTransition) as err:
        check(current, new)
    assert current.value in str(err.value) and new.value in str(err.value)


def test_cancellable_states_are_exactly_those_before_any_device_call():
    assert lifecycle.CANCELLABLE == {State.ACCEPTED, State.SCHEDULED, State.QUEUED, State.RETRY_WAIT}
    for s in lifecycle.CANCELLABLE:
        check(s, State.DELETED)


def test_smpp_states():
    assert lifecycle.smpp_state("delivered") is MessageState.DELIVERED
    assert lifecycle.smpp_state(State.ACKNOWLEDGED) is MessageState.ACCEPTED
    assert lifecycle.smpp_state(State.QUEUED) is MessageState.ENROUTE
    assert lifecycle.smpp_state(State.DELETED) is MessageState.DELETED


# -- config values that name a state ------------------------------------------------------------


def test_the_network_may_reject_a_message_the_device_took():
    # receipts.map may turn a device code into REJECTD after the device accepted the SMS.
    check(State.SENT, State.REJECTED)
    check(State.SUBMITTING, State.REJECTED)


def test_receipts_map_refuses_a_stat_no_device_status_can_lead_to():
    from bridge.config import ConfigError, load_config_text

    base = "esmes:\n  - system_id: app1\n    password: pw\nreceipts:\n  map:\n    goip_http:\n"
    cfg = load_config_text(base + '      "2172": {stat: REJECTD, err: 172}\n')
    assert cfg.receipts.map["goip_http"]["2172"].stat == "REJECTD"
    with pytest.raises(ConfigError) as info:
        load_config_text(base + '      "2172": {stat: DELETED, err: 0}\n')
    text = str(info.value)
    assert "receipts.map.goip_http.2172.stat" in text and "DELETED" in text and "cancel_sm" in text


def test_every_stat_a_receipts_map_may_name_is_a_legal_end_after_the_device_took_it():
    from bridge.config import DEVICE_RECEIPT_STATS

    assert "DELETED" not in DEVICE_RECEIPT_STATS
    for stat in DEVICE_RECEIPT_STATS:
        state = lifecycle.STAT_STATE[stat]
        check(State.SENT, state)
        check(State.SUBMITTING, state)
