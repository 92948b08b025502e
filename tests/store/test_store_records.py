"""Message ids and what query_sm reports for several messages behind one id."""

import pytest

from bridge.lifecycle import State
from bridge.store import MessageRecord, format_id, parse_id, summarise


def test_ids_are_ten_digits_and_parse_back():
    assert format_id(7) == "0000000007"
    assert parse_id(format_id(123456)) == 123456
    assert parse_id("7") == 7  # an ESME that dropped the zeros still finds its message


@pytest.mark.parametrize("bad", ["", "12a", "-1", " 12", "1" * 21, "1.5"])
def test_what_cannot_be_one_of_our_ids_parses_to_none(bad):
    assert parse_id(bad) is None


@pytest.mark.parametrize("bad", ["\u00b20000000001", "\u0661\u0662", "\uff11\uff12"])
def test_digits_of_other_scripts_are_not_an_id_and_raise_nothing(bad):
    # Found by tests/reliability/test_fuzz.py: query_sm for "²0000000001" ("²".isdigit() is
    # True, int() refuses it) raised ValueError and closed the ESME's connection.
    assert parse_id(bad) is None


def record(mid, state, final_at=None):
    return MessageRecord(
        id=mid, message_id=format_id(mid), esme="app", state=state, created_at=0.0, updated_at=0.0,
        source_addr="", destination_addr="+49", service_type="", data_coding=0,
        registered_delivery=1, priority=0, schedule_at=None, expire_at=None, text="x", body=b"x",
        esme_parts=1, error=None, final_at=final_at, receipt_id=mid,
    )


def test_summary_is_under_way_while_any_destination_is():
    state, final = summarise([record(1, State.DELIVERED, 5.0), record(2, State.SENT)])
    assert state is State.SENT and final is None


def test_summary_of_final_destinations_is_the_worst_with_the_last_date():
    state, final = summarise([record(1, State.DELIVERED, 5.0), record(2, State.UNDELIVERABLE, 9.0),
                              record(3, State.EXPIRED, 7.0)])
    assert state is State.UNDELIVERABLE and final == 9.0
    assert summarise([record(1, State.DELIVERED, 3.0)]) == (State.DELIVERED, 3.0)
