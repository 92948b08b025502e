"""The acceptance step (bridge/acceptance.py), sans-IO: what an incoming submit becomes, decided
once. Time is a fake clock; no store, no network."""

from __future__ import annotations

import pytest

from bridge import acceptance as acceptance_mod
from bridge.acceptance import DATA_SM, SUBMIT_MULTI, SUBMIT_SM, Acceptance, Refused
from bridge.config import Config, ConfigError, EsmeConfig, SchedulerConfig, load_config_text
from bridge.smpp.constants import Status
from bridge.smpp.text import decode_short_message, split_text

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.wall = NOW
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def make(esme: EsmeConfig | None = None, **sched) -> tuple[Acceptance, EsmeConfig, Clock]:
    esme = esme or EsmeConfig("app")
    clock = Clock()
    cfg = Config(esmes=(esme,), scheduler=SchedulerConfig(**sched))
    acc = Acceptance(cfg, clock=lambda: clock.wall, monotonic=lambda: clock.mono)
    return acc, esme, clock


def submit(acc: Acceptance, esme: EsmeConfig, body: bytes = b"hello", **fields):
    p = {"destination_addr": "+491701234567", "data_coding": 0, **fields}
    return acc.decide(esme, SUBMIT_SM, p, body)


# -- data_coding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dc",
    [
        0x02, 0x04,  # SMPP 8-bit binary
        0x14, 0x15, 0x16, 0x17,  # GSM general group, 8-bit data (with and without class)
        0x24, 0x28, 0x30, 0x3C,  # general group, compressed (bit 5)
        0x44, 0x55,  # automatic-deletion group, 8-bit data
        0x60, 0x68, 0x7F,  # automatic-deletion group, compressed
        0xF4, 0xF5, 0xF6, 0xF7,  # data coding/message class group, 8-bit data
    ],
)  # fmt: skip
def test_binary_and_compressed_codings_are_refused_not_sent_empty(dc):
    acc, esme, _ = make()
    with pytest.raises(Refused) as info:
        submit(acc, esme, b"\x01\x02\x03 payload", data_coding=dc)
    # ESME_RSUBMITFAIL: a permanent refusal every SMPP 3.4 client knows (RINVDCS is 5.0 only).
    assert info.value.status == Status.RSUBMITFAIL
    assert "data_coding" in info.value.reason


@pytest.mark.parametrize(
    "dc,body,text",
    [
        (0x00, b"hello", "hello"),
        (0x10, b"hello", "hello"),  # general group, GSM 7-bit, class 0 (flash)
        (0x11, b"hello", "hello"),
        (0x18, "привет".encode("utf-16-be"), "привет"),  # general group, UCS2
        (0x40, b"hello", "hello"),  # automatic deletion, GSM 7-bit
        (0x48, "привет".encode("utf-16-be"), "привет"),
        (0xF0, b"hello", "hello"),  # message class group, GSM 7-bit
        (0xF3, b"hello", "hello"),
        (0x08, "hé".encode("utf-16-be"), "hé"),
        (0x03, "café".encode("latin-1"), "café"),
    ],
)
def test_text_codings_are_accepted_and_decode_to_the_text(dc, body, text):
    acc, esme, _ = make()
    msg = submit(acc, esme, body, data_coding=dc).messages[0].msg
    assert decode_short_message(msg.data_coding, msg.body) == text


def test_a_non_empty_submit_that_decodes_to_no_text_is_refused():
    acc, esme, _ = make()
    with pytest.raises(Refused) as info:
        submit(acc, esme, b"\x1b")  # a lone escape: nothing to show
    assert info.value.status == Status.RSUBMITFAIL
    # An empty submit stays an (empty) message: what the ESME asked for.
    assert submit(acc, esme, b"").messages[0].msg.body == b""


# -- data_coding 1 per ESME ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,body,text",
    [
        ("auto", b"Sch|n", "Sch|n"),
        ("gsm", b"Sch|n", "Schön"),  # node-smpp: GSM 03.38 octets labelled data_coding 1
        ("ascii", b"pay $5 @ shop_1", "pay $5 @ shop_1"),
        ("auto", b"\x00 home", "@ home"),  # a control octet: auto reads GSM
        ("ascii", b"a\x00b", "a\x00b"),
    ],
)
def test_data_coding_1_is_read_as_the_esme_says(mode, body, text):
    acc, esme, _ = make(EsmeConfig("app", data_coding_1=mode))
    msg = submit(acc, esme, body, data_coding=1).messages[0].msg
    assert decode_short_message(msg.data_coding, msg.body) == text


def test_data_coding_1_is_a_checked_esme_key():
    base = "esmes:\n  - system_id: app1\n    password: pw\n"
    assert load_config_text(base + "    data_coding_1: gsm\n").esme("app1").data_coding_1 == "gsm"
    assert load_config_text(base).esme("app1").data_coding_1 == "auto"
    with pytest.raises(ConfigError) as info:
        load_config_text(base + "    data_coding_1: latin\n")
    assert "esmes[0].data_coding_1" in str(info.value)


# -- segments: the same count the sender uses ----------------------------------------------------


@pytest.mark.parametrize(
    "text,dc",
    [
        ("€" * 153, 0),  # 306 septets; an escape pair is never split: 3 parts, not 2
        ("😀" * 67, 8),  # 134 UTF-16 units; a surrogate pair is never split: 3 parts, not 2
        ("ê" * 100, 3),  # Latin-1 text that is not GSM: sent as UCS2, 2 parts, not 1
        ("a" * 160, 0),
        ("a" * 161, 0),
        ("", 0),
    ],
)
def test_segments_are_the_parts_the_scheduler_sends(text, dc):
    acc, esme, _ = make()
    body = text.encode("utf-16-be") if dc == 8 else text.encode("latin-1") if dc == 3 else text.encode("gsm03.38")
    decision = submit(acc, esme, body, data_coding=dc)
    stored = decode_short_message(decision.messages[0].msg.data_coding, decision.messages[0].msg.body)
    assert decision.segments == len(split_text(stored).parts) == acceptance_mod.segment_count(stored)


# -- validity ------------------------------------------------------------------------------------


def test_default_validity_applies_when_the_esme_gives_none():
    acc, esme, _ = make(default_validity=3600, max_validity=7200)
    msg = submit(acc, esme).messages[0].msg
    assert msg.expire_at == NOW + 3600


def test_validity_is_capped_at_max_validity():
    acc, esme, _ = make(default_validity=3600, max_validity=7200)
    msg = submit(acc, esme, validity_period="000030000000000R").messages[0].msg  # 30 days
    assert msg.expire_at == NOW + 7200
    msg = submit(acc, esme, validity_period="000000010000000R").messages[0].msg  # 1 hour
    assert msg.expire_at == NOW + 3600


def test_validity_of_a_scheduled_message_counts_from_its_schedule():
    acc, esme, _ = make(default_validity=3600, max_validity=7200)
    msg = submit(acc, esme, schedule_delivery_time="000001000000000R").messages[0].msg  # in 1 day
    assert msg.schedule_at == NOW + 86400
    assert msg.expire_at == NOW + 86400 + 3600


# -- throughput ----------------------------------------------------------------------------------


def test_a_message_longer_than_the_throughput_goes_when_the_bucket_is_full_and_is_paid_back():
    acc, esme, clock = make(EsmeConfig("app", throughput=2))
    long_text = b"x" * (153 * 5)  # 5 parts, more than 2 per second
    assert submit(acc, esme, long_text).segments == 5
    # The debt (3 segments beyond the bucket) is paid back at 2/s before anything else goes.
    with pytest.raises(Refused) as info:
        submit(acc, esme)
    assert info.value.status == Status.RTHROTTLED
    clock.advance(1.9)  # 3.8 of the 4 segments needed for one more
    with pytest.raises(Refused):
        submit(acc, esme)
    clock.advance(0.1)
    submit(acc, esme)
    # Over a long run the ESME gets its rate, not more: 10 s -> 20 segments at most.
    clock.advance(10)
    taken = 0
    for _ in range(100):
        try:
            taken += submit(acc, esme).segments
        except Refused:
            pass
    assert taken == 2  # the bucket holds at most `throughput` segments


def test_a_long_message_is_refused_while_the_bucket_is_not_full():
    acc, esme, clock = make(EsmeConfig("app", throughput=2))
    submit(acc, esme)
    with pytest.raises(Refused):
        submit(acc, esme, b"x" * (153 * 5))
    clock.advance(0.5)
    submit(acc, esme, b"x" * (153 * 5))


# -- destinations --------------------------------------------------------------------------------


def test_submit_multi_counts_segments_per_destination_and_lists_the_refused():
    acc, esme, _ = make()
    p = {
        "data_coding": 0,
        "dest_addresses": [
            {"dest_flag": 1, "destination_addr": "+4911"},
            {"dest_flag": 1, "destination_addr": "not a number"},
            {"dest_flag": 2, "dl_name": "friends"},
        ],
    }
    d = acc.decide(esme, SUBMIT_MULTI, p, b"x" * 200)
    assert [s.msg.destination_addr for s in d.messages] == ["+4911"] and d.segments == 2
    assert [u["error_status_code"] for u in d.unsuccess] == [Status.RINVDSTADR, Status.RINVDLNAME]


def test_data_sm_and_a_bad_destination():
    acc, esme, _ = make()
    assert acc.decide(esme, DATA_SM, {"destination_addr": "+4911"}, b"hi").segments == 1
    with pytest.raises(Refused) as info:
        submit(acc, esme, destination_addr="12ab")
    assert info.value.status == Status.RINVDSTADR


async def test_a_message_without_validity_that_no_channel_sends_ends_expired(tmp_path, nursery):
    # Regression: default_validity was never applied, so with every channel down such a message
    # waited forever. Through the store's expiry sweep it now ends, with its receipt.
    from bridge.receipts import policy
    from bridge.lifecycle import State
    from bridge.store import Store

    acc, esme, clock = make(default_validity=3600, max_validity=7200)
    store = Store(tmp_path / "b.sqlite3", clock=lambda: clock.wall)
    store.open()
    await nursery.start(store.run)
    try:
        msg = submit(acc, esme, registered_delivery=1).messages[0].msg
        stored = await store.accept(msg)
        assert await store.expire_waiting(NOW + 3599, lambda r: []) == []
        expired = await store.expire_waiting(
            NOW + 3601, lambda r: policy.receipt_rows(r, policy.Outcome(State.EXPIRED, "EXPIRED"), 600))
        assert expired == [int(stored.message_id)]
        assert (await store.get(stored.message_id)).state is State.EXPIRED
        assert len(await store.pending_outbox("app")) == 1
    finally:
        store.close()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 1€[]{}~|^\\\n") + ["é", "ж", "ê", "😀"]), max_size=400))
def test_the_segment_count_is_always_the_number_of_parts_sent(text):
    assert acceptance_mod.segment_count(text) == len(split_text(text).parts)


# -- a sender the device cannot honour -------------------------------------------------------------

SENDER_CONFIG = """
esmes:
  - system_id: shop
    password: "secret-1"
  - system_id: bank
    password: "secret-2"
devices:
  - name: gw
    kind: goip_http
    url: http://goip.example
    password: "pw"
    lines: 1
routes:
  - name: all
    channels: [gw]
"""


def sender_acceptance(caplog):
    from bridge.metrics import Metrics

    cfg = load_config_text(SENDER_CONFIG)
    metrics = Metrics()
    acc = Acceptance(cfg, clock=lambda: NOW, monotonic=lambda: 100.0, metrics=metrics)
    acc.route_for = lambda esme, dest: "all"
    acc.routes_configured = True
    caplog.set_level("INFO", logger="bridge.acceptance")
    return acc, cfg, metrics


def not_honoured(metrics, esme: str) -> float:
    return metrics.sender_not_honoured.labels(esme)._value.get()


def test_an_alphanumeric_sender_through_a_goip_is_accepted_counted_and_logged_once_per_esme(caplog):
    acc, cfg, metrics = sender_acceptance(caplog)
    shop, bank = cfg.esme("shop"), cfg.esme("bank")
    for _ in range(3):  # accepted: the SMS still goes out, from the SIM's own number
        assert submit(acc, shop, source_addr="MyShop", source_addr_ton=5).messages
    submit(acc, bank, source_addr="Bank")  # alphanumeric even with TON 0
    submit(acc, bank, source_addr="+4917012345", source_addr_ton=1)  # a number: not counted
    submit(acc, bank, source_addr="")  # no sender: not counted
    assert not_honoured(metrics, "shop") == 3
    assert not_honoured(metrics, "bank") == 1
    lines = [r.getMessage() for r in caplog.records if "SIM's own number" in r.getMessage()]
    assert len(lines) == 2, lines  # one per ESME, not one per message
    assert "shop" in lines[0] and "MyShop" in lines[0] and "goip_http" in lines[0]


def test_a_device_kind_that_honours_the_sender_is_not_counted(caplog, monkeypatch):
    from bridge.devices import base, registry

    acc, cfg, metrics = sender_acceptance(caplog)
    able = base.Capabilities(flags=frozenset({base.Capability.CUSTOM_SENDER}))
    monkeypatch.setattr(registry, "capabilities", lambda kind: able)
    submit(acc, cfg.esme("shop"), source_addr="MyShop", source_addr_ton=5)
    assert not_honoured(metrics, "shop") == 0
    assert not any("SIM's own number" in r.getMessage() for r in caplog.records)


# -- what the route's devices cannot send ------------------------------------------------------

ROUTED = """
esmes:
  - {system_id: app, password: secret1}
devices:
  - {name: goip1, kind: goip_http, url: "http://127.0.0.1:1", username: u, password: p, lines: 2}
  - {name: phone, kind: smsgate, url: "http://127.0.0.1:2", username: u, password: p}
routes:
  - {name: goips, prefixes: ["+4917"], channels: [goip1]}
  - {name: mixed, prefixes: ["+4915"], channels: [goip1, phone]}
"""


def test_a_text_no_device_of_its_route_can_start_with_is_refused_at_submit():
    """GoIP HTTP firmware answers HTTP 500 to a text starting with '['. The bridge's splitting
    keeps later parts from starting with one, but a message that starts with it could only be
    acknowledged and then reported undeliverable (found by the lifecycle model's full form):
    refused at once with the reason, unless another device of the route can send it."""
    cfg = load_config_text(ROUTED)
    acc = Acceptance(cfg, clock=lambda: NOW, monotonic=lambda: 100.0)
    acc.route_for = lambda _esme, dest: "goips" if dest.startswith("+4917") else "mixed"
    acc.routes_configured = True
    esme = cfg.esme("app")
    with pytest.raises(Refused) as info:
        acc.decide(esme, SUBMIT_SM, {"destination_addr": "+491701234567", "data_coding": 0}, b"\x1b<")  # "[" in GSM 03.38
    assert info.value.status == Status.RSUBMITFAIL and "'['" in info.value.reason
    with pytest.raises(Refused):
        acc.decide(esme, SUBMIT_SM, {"destination_addr": "+491701234567", "data_coding": 3}, b"[x]")
    # A route with a device that can send it takes it; so does a '[' later in the text.
    assert acc.decide(esme, SUBMIT_SM, {"destination_addr": "+491501234567", "data_coding": 3}, b"[ok]")
    assert acc.decide(esme, SUBMIT_SM, {"destination_addr": "+491701234567", "data_coding": 0}, b"ok \x1b<1\x1b>")
