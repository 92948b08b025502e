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


# -- every machine ------------------------------------------------------------------------------

MACHINES = [lifecycle.MESSAGE, lifecycle.PART, lifecycle.INBOUND, lifecycle.CHANNEL]


def reachable(machine) -> set:
    seen, todo = set(), list(machine.initial)
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(machine.table[s])
    return seen


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.what)
def test_every_state_is_reachable_from_an_initial_state(machine):
    assert reachable(machine) == set(machine.states)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.what)
def test_final_states_have_no_exits_and_every_other_state_can_end(machine):
    for final, other in itertools.product(machine.final, machine.states):
        with pytest.raises(InvalidTransition):
            machine.check(final, other)
    if machine is lifecycle.CHANNEL:
        assert not machine.final  # a channel lives as long as the bridge
        return
    for start in set(machine.states) - machine.final:
        seen, todo = set(), [start]
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(machine.table[s])
        assert seen & machine.final, start


@pytest.mark.parametrize(
    "machine,current,new",
    [
        (lifecycle.PART, "sent", "submitting"),  # a part the device took is never sent again
        (lifecycle.PART, "delivered", "sent"),
        (lifecycle.PART, "submitting", "delivered"),  # no status before the device took it
        (lifecycle.PART, None, "sent"),  # a part enters as submitting
        (lifecycle.INBOUND, "duplicate", "queued"),  # a duplicate never reaches an ESME
        (lifecycle.INBOUND, "delivered", "queued"),  # delivered once
        (lifecycle.INBOUND, None, "queued"),
        (lifecycle.CHANNEL, "ready", "asleep"),  # not a channel state at all
        (lifecycle.MESSAGE, None, "sent"),
    ],
)
def test_moves_not_in_a_table_raise_naming_the_machine(machine, current, new):
    with pytest.raises((InvalidTransition, ValueError)) as err:
        machine.check(current, new)
    if isinstance(err.value, InvalidTransition):
        assert machine.what in str(err.value) and str(new) in str(err.value)


def test_one_definition_of_waiting_and_of_the_initial_state():
    from bridge import scheduler, store

    assert lifecycle.WAITING == lifecycle.CANCELLABLE == lifecycle.REPLACEABLE
    assert scheduler.WAITING is lifecycle.WAITING
    # Waiting = no device has the message: exactly the states cancel_sm can still end.
    assert lifecycle.WAITING == {s for s in State if State.DELETED in TRANSITIONS[s]}
    assert store.INBOUND_STATES == tuple(s.value for s in lifecycle.InboundState)
    assert lifecycle.initial_state(False, None, 10.0) is State.ACCEPTED
    assert lifecycle.initial_state(True, 20.0, 10.0) is State.SCHEDULED
    assert lifecycle.initial_state(True, 5.0, 10.0) is State.QUEUED
    assert {lifecycle.initial_state(r, t, 10.0) for r in (True, False) for t in (None, 5.0, 20.0)} == set(
        lifecycle.MESSAGE.initial)


def test_smpp_message_state_for_every_state_of_a_message():
    assert set(lifecycle.SMPP_STATE) == set(State)
    assert {lifecycle.smpp_state(s) for s in lifecycle.WAITING} == {MessageState.ENROUTE}
