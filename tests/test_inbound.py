"""Inbound SMS without a network: reassembly, routing, opt-out matching, MO encoding, and the
inbox poller's commit-before-delete and de-duplication (bridge/inbound.py, bridge/store/inbound.py)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import gsm0338  # noqa: F401  (the "gsm03.38" codec)
import pytest
import trio

from bridge.config import (
    ChannelOverride,
    Config,
    DeviceConfig,
    EsmeConfig,
    InboundConfig,
    InboundRoute,
    OptoutConfig,
    ReceiptsConfig,
)
from bridge.devices.base import Capability, DeviceHealth, InboundSms
from bridge.receipts.payload import decode_payload
from bridge.inbound import DevicePoller, Inbound, MoPolicy, address, mo_deliver_sm, optout_action
from bridge.metrics import Metrics
from bridge.smpp.constants import Tag
from bridge.store import MISSING_PART, MoMessage, Store, StoreError, canonical_number, optout_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_config(**inbound) -> Config:  # type: ignore[no-untyped-def]
    return Config(
        esmes=(EsmeConfig("app1"), EsmeConfig("app2", mo_long="payload")),
        devices=(
            DeviceConfig(
                name="goip1", kind="goip_http", lines=4,
                channel_overrides={"2": ChannelOverride(number="+4915550002")},
            ),
            DeviceConfig(name="goip2", kind="goip_http", lines=2),
        ),
        receipts=ReceiptsConfig(retention=3600),
        inbound=InboundConfig(**{"default_esme": "app1", **inbound}),
    )  # fmt: skip


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3", clock=Clock())
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


def sms(text="hi", sender="+491701234567", channel="1", key=None, ref=None, total=None, seq=None):  # type: ignore[no-untyped-def]
    return InboundSms(
        channel=channel, sender=sender, text=text,
        received_at=datetime(2024, 7, 12, 10, 11, 12, tzinfo=UTC),
        device_key=key or f"{channel}|{sender}|{text}|{seq}", raw=text, slot=0,
        concat_ref=ref, concat_total=total, concat_seq=seq,
    )  # fmt: skip


def db_rows(store, sql, *args):  # type: ignore[no-untyped-def]
    with sqlite3.connect(store.path) as db:
        return db.execute(sql, args).fetchall()


def outbox_texts(store, esme="app1") -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for (payload,) in db_rows(store, "SELECT payload FROM outbox WHERE esme=? AND kind='mo' ORDER BY id", esme):
        pdu = decode_payload(payload)
        out.append(text_of(pdu.params, pdu.tlvs))
    return out


def text_of(params, tlvs) -> str:  # type: ignore[no-untyped-def]
    body = params["short_message"]
    if params["esm_class"] & 0x40:
        body = body[body[0] + 1 :]
    if not body:
        body = tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    return body.decode("gsm03.38") if params["data_coding"] == 0 else body.decode("utf-16-be")


# -- reassembly --------------------------------------------------------------------------------


async def test_parts_in_any_order_become_one_mo(store):
    policy = MoPolicy(make_config)
    r = await store.add_inbound("goip1", [sms("world", ref=7, total=3, seq=3)], policy)
    assert r.stored and not r.queued
    r = await store.add_inbound("goip1", [sms("Hello ", ref=7, total=3, seq=1)], policy)
    assert not r.queued
    assert outbox_texts(store) == []  # nothing before the last part
    r = await store.add_inbound("goip1", [sms("big ", ref=7, total=3, seq=2)], policy)
    (mo,) = r.queued
    assert (mo.text, mo.parts, mo.incomplete, mo.esme) == ("Hello big world", 3, False, "app1")
    assert outbox_texts(store) == ["Hello big world"]
    states = db_rows(store, "SELECT concat_seq, state, mo FROM inbound ORDER BY concat_seq")
    assert [(s, st) for s, st, _mo in states] == [(1, "queued"), (2, "queued"), (3, "queued")]
    assert {m for _s, _st, m in states} == {mo.id}


async def test_parts_of_different_senders_or_refs_do_not_mix(store):
    policy = MoPolicy(make_config)
    await store.add_inbound("goip1", [sms("a1", ref=1, total=2, seq=1)], policy)
    r1 = await store.add_inbound("goip1", [sms("b2", sender="+4917099", ref=1, total=2, seq=2)], policy)
    r2 = await store.add_inbound("goip1", [sms("c2", ref=2, total=2, seq=2)], policy)
    r3 = await store.add_inbound("goip1", [sms("d2", channel="3", ref=1, total=2, seq=2)], policy)
    assert not (r1.queued or r2.queued or r3.queued)
    r = await store.add_inbound("goip1", [sms("a2", ref=1, total=2, seq=2)], policy)
    assert [m.text for m in r.queued] == ["a1a2"]


async def test_a_part_handed_over_twice_counts_once(store):
    policy = MoPolicy(make_config)
    await store.add_inbound("goip1", [sms("one ", ref=3, total=2, seq=1, key="k1")], policy)
    r = await store.add_inbound("goip1", [sms("one ", ref=3, total=2, seq=1, key="k1-again")], policy)
    assert r.duplicates == 1 and not r.queued
    r = await store.add_inbound("goip1", [sms("two", ref=3, total=2, seq=2, key="k2")], policy)
    assert [m.text for m in r.queued] == ["one two"]


async def test_a_part_the_network_resends_after_its_mo_was_built_is_not_delivered_again(store):
    # The network hands over part 2 again (a new inbox entry) after the message was complete:
    # it must neither open a group that is later delivered as a second, incomplete MO, nor join
    # the next message from that sender with the same reference.
    policy = MoPolicy(make_config)
    await store.add_inbound("goip1", [sms("one ", ref=3, total=2, seq=1, key="k1")], policy)
    r = await store.add_inbound("goip1", [sms("two", ref=3, total=2, seq=2, key="k2")], policy)
    assert [m.text for m in r.queued] == ["one two"]
    r = await store.add_inbound("goip1", [sms("two", ref=3, total=2, seq=2, key="k2-again")], policy)
    assert r.duplicates == 1 and not r.queued
    store.clock.now += 301
    r = await store.flush_inbound(store.clock.now - 300, policy)
    assert not r.queued and not r.incomplete
    assert outbox_texts(store) == ["one two"]
    # The same reference with other content is the sender's next message.
    await store.add_inbound("goip1", [sms("three ", ref=3, total=2, seq=1, key="k3")], policy)
    r = await store.add_inbound("goip1", [sms("four", ref=3, total=2, seq=2, key="k4")], policy)
    assert [m.text for m in r.queued] == ["three four"]


async def test_missing_parts_time_out_into_an_incomplete_mo(store):
    policy = MoPolicy(make_config)
    await store.add_inbound("goip1", [sms("first ", ref=9, total=4, seq=1)], policy)
    await store.add_inbound("goip1", [sms(" fourth", ref=9, total=4, seq=4)], policy)
    r = await store.flush_inbound(store.clock.now - 300, policy)  # not overdue yet
    assert not r.queued and not r.incomplete
    store.clock.now += 301
    r = await store.flush_inbound(store.clock.now - 300, policy)
    (mo,) = r.queued
    assert r.incomplete == [mo]
    assert mo.text == f"first {MISSING_PART} fourth" and mo.incomplete and mo.parts == 2
    assert outbox_texts(store) == [f"first {MISSING_PART} fourth"]
    assert db_rows(store, "SELECT DISTINCT incomplete, state FROM inbound") == [(1, "queued")]
    # A straggler after the timeout starts afresh and does not resurrect the old group.
    r = await store.add_inbound("goip1", [sms("second", ref=9, total=4, seq=2)], policy)
    assert not r.queued


async def test_inconsistent_concat_info_is_delivered_as_a_whole_sms(store):
    r = await store.add_inbound("goip1", [sms("odd", ref=1, total=2, seq=5)], MoPolicy(make_config))
    assert [m.text for m in r.queued] == ["odd"]


# -- de-duplication and the outbox link --------------------------------------------------------


async def test_an_entry_seen_again_is_a_duplicate_and_not_queued_twice(store):
    policy = MoPolicy(make_config)
    first = await store.add_inbound("goip1", [sms("once")], policy)
    again = await store.add_inbound("goip1", [sms("once")], policy)
    assert len(first.queued) == 1 and again.duplicates == 1 and not again.stored
    assert await store.known_inbound("goip1", ["1|+491701234567|once|None", "nope"]) == {"1|+491701234567|once|None"}
    assert await store.known_inbound("goip2", ["1|+491701234567|once|None"]) == set()  # per device
    assert outbox_texts(store) == ["once"]


async def test_inbound_state_follows_its_deliver_sm(store):
    policy = MoPolicy(make_config, store.clock)
    (mo,) = (await store.add_inbound("goip1", [sms("x" * 200)], policy)).queued  # 2 UDH parts
    rows = await store.pending_outbox("app1")
    assert len(rows) == 2 and {r.message for r in rows} == {mo.id}

    async def delivered(item_id):  # type: ignore[no-untyped-def]
        done = trio.Event()
        store.outbox_delivered_nowait(item_id, lambda _r, _e: done.set())
        await done.wait()

    await delivered(rows[0].id)
    assert db_rows(store, "SELECT state FROM inbound") == [("queued",)]  # one part still out
    await delivered(rows[1].id)
    assert db_rows(store, "SELECT state FROM inbound") == [("delivered",)]
    (other,) = (await store.add_inbound("goip1", [sms("never picked up")], policy)).queued
    store.clock.now += 3601
    assert await store.expire_outbox() == 1
    assert db_rows(store, "SELECT state FROM inbound WHERE id=?", other.id) == [("expired",)]


async def test_prune_forgets_only_finished_rows_the_device_no_longer_shows(store):
    policy = MoPolicy(make_config)
    await store.add_inbound("goip1", [sms("a", key="ka"), sms("b", key="kb")], policy)
    await store.add_inbound("goip1", [sms("part", key="kp", ref=1, total=2, seq=1)], policy)
    db = sqlite3.connect(store.path)
    db.execute("UPDATE inbound SET state='delivered' WHERE device_key IN ('ka', 'kb')")
    db.commit()
    store.clock.now += 100
    assert await store.prune_inbound("goip1", {"ka"}, before=store.clock.now) == 1  # kb only
    assert {r[0] for r in db_rows(store, "SELECT device_key FROM inbound")} == {"ka", "kp"}


async def test_a_key_stored_without_the_entrys_position_still_counts(store):
    """Rows stored before the GoIP driver added the slot (``#<slot>``) to its keys: the same
    entry read with the new key is known, not delivered again, and its row is not pruned while
    the device shows it."""
    policy = MoPolicy(make_config)
    legacy = "1|07-12 10:11:12|+491701234567|0123456789ab"
    await store.add_inbound("goip1", [sms("old", key=legacy)], policy)
    assert await store.known_inbound("goip1", [legacy + "#4", legacy + "#x", "other#4"]) == {legacy + "#4"}
    db = sqlite3.connect(store.path)
    db.execute("UPDATE inbound SET state='delivered'")
    db.commit()
    store.clock.now += 100
    assert await store.prune_inbound("goip1", {legacy + "#4"}, before=store.clock.now) == 0
    assert await store.prune_inbound("goip1", set(), before=store.clock.now) == 1


# -- routing -----------------------------------------------------------------------------------


def test_routing_by_channel_number_device_and_default():
    c = make_config(routes=(
        InboundRoute(esme="app2", device="goip1", channel="3"),
        InboundRoute(esme="app2", number="+4915550002"),
        InboundRoute(esme="app1", device="goip2"),
    ))  # fmt: skip
    assert c.inbound_esme("goip1", "3", None) == "app2"
    assert c.inbound_esme("goip1", "2", "+4915550002") == "app2"
    assert c.inbound_esme("goip2", "1", None) == "app1"
    assert c.inbound_esme("goip1", "1", None) == "app1"  # default_esme
    assert make_config(default_esme=None).inbound_esme("goip1", "1", None) is None  # 2 ESMEs
    sole = Config(esmes=(EsmeConfig("only"),))
    assert sole.inbound_esme("goip1", "1", None) == "only"
    assert MoPolicy(make_config).recipient("goip1", "2") == "+4915550002"
    assert MoPolicy(make_config).recipient("goip1", "1") is None


async def test_unrouted_sms_waits_stored_until_a_route_exists(store):
    config = make_config(default_esme=None)
    policy = MoPolicy(lambda: config)
    r = await store.add_inbound("goip1", [sms("for nobody yet")], policy)
    assert [m.text for m in r.unrouted] == ["for nobody yet"] and not r.queued
    assert db_rows(store, "SELECT state, esme FROM inbound") == [("pending", None)]
    assert not (await store.flush_inbound(store.clock.now - 300, policy)).queued
    config = make_config(default_esme="app2")
    r = await store.flush_inbound(store.clock.now - 300, policy)
    assert [(m.text, m.esme) for m in r.queued] == [("for nobody yet", "app2")]
    assert outbox_texts(store, "app2") == ["for nobody yet"]


async def test_unrouted_sms_is_given_up_on_after_the_retention(store):
    config = make_config(default_esme=None)
    policy = MoPolicy(lambda: config)
    await store.add_inbound("goip1", [sms("too late")], policy)
    store.clock.now += 10
    r = await store.flush_inbound(store.clock.now, policy, unrouted_before=store.clock.now - 20)
    assert r.expired == 0
    r = await store.flush_inbound(store.clock.now, policy, unrouted_before=store.clock.now - 5)
    assert r.expired == 1 and db_rows(store, "SELECT state FROM inbound") == [("expired",)]
    config = make_config(default_esme="app1")
    assert not (await store.flush_inbound(store.clock.now, policy)).queued


# -- opt-out -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("STOP", "optout"), ("stop", "optout"), ("  Stop\n", "optout"), ("unsubscribe", "optout"),
        ("QUIT", "optout"), ("start", "optin"), ("UNSTOP", "optin"),
        ("STOP please", None), ("stopp", None), ("", None), ("Don't stop", None), ("S T O P", None),
    ],
)  # fmt: skip
def test_optout_keywords_match_the_whole_trimmed_text_in_any_case(text, action):
    o = OptoutConfig()
    assert optout_action(text, o.keywords, o.optin_keywords) == action


def test_numbers_match_in_international_form_with_or_without_plus_or_00():
    assert optout_key("+49 170 1234567") == optout_key("00491701234567") == optout_key("491701234567")
    assert optout_key("01701234567") != optout_key("+491701234567")  # national form: no match
    assert canonical_number("0049-170-1234567") == "+491701234567"


async def test_keywords_change_the_list_in_the_same_commit_and_the_mo_is_still_delivered(store):
    policy = MoPolicy(make_config)
    changes = []
    store.on_optout = lambda action, number: changes.append((action, number))
    r = await store.add_inbound("goip1", [sms("Stop", sender="+491701111111")], policy)
    assert r.optouts == [("optout", "+491701111111")] and len(r.queued) == 1
    assert store.is_opted_out("491701111111") and store.is_opted_out("00491701111111")
    assert not store.is_opted_out("+491702222222")
    assert await store.list_optouts() == [
        {"number": "+491701111111", "keyword": "STOP", "at": store.clock.now, "source": "keyword"}
    ]
    r = await store.add_inbound("goip1", [sms("STOP", sender="+491701111111", key="again")], policy)
    assert r.optouts == []  # already on the list: no change, no event
    await store.add_inbound("goip1", [sms("start", sender="+491701111111")], policy)
    assert not store.is_opted_out("+491701111111")
    assert changes == [("optout", "+491701111111"), ("optin", "+491701111111")]
    assert outbox_texts(store) == ["Stop", "STOP", "start"]


async def test_a_long_stop_counts_only_when_complete(store):
    policy = MoPolicy(make_config)
    await store.add_inbound("goip1", [sms("ST", ref=4, total=2, seq=1)], policy)
    assert not store.is_opted_out("+491701234567")
    await store.add_inbound("goip1", [sms("OP", ref=4, total=2, seq=2)], policy)
    assert store.is_opted_out("+491701234567")


async def test_admin_api_add_remove_list_and_reload(store, tmp_path):
    assert await store.add_optout("+49 170 5550000", "admin") is True
    assert await store.add_optout("00491705550000", "admin") is False  # the same number
    assert store.is_opted_out("491705550000") and store.optout_count == 1
    assert [o["number"] for o in await store.list_optouts()] == ["+491705550000"]
    with pytest.raises(ValueError):
        await store.add_optout(" ", "admin")
    # The in-memory copy comes back from the database after a restart.
    again = Store(tmp_path / "b.sqlite3")
    again.open()
    assert again.is_opted_out("+491705550000")
    again.close()
    assert await store.remove_optout("491705550000") is True
    assert await store.remove_optout("491705550000") is False
    assert await store.list_optouts() == [] and not store.is_opted_out("+491705550000")


# -- MO encoding -------------------------------------------------------------------------------


def mo(text, sender="+491701234567", recipient=None, id=42):  # type: ignore[no-untyped-def]
    return MoMessage(id=id, device="goip1", channel="1", sender=sender, recipient=recipient,
                     text=text, received_at=0.0, esme="app1")  # fmt: skip


def test_gsm_text_is_data_coding_0_unpacked_with_escapes():
    (p,) = mo_deliver_sm(mo("@£€{}"))
    params = p["params"]
    assert params["data_coding"] == 0 and params["esm_class"] == 0
    assert params["short_message"] == bytes([0x00, 0x01, 0x1B, 0x65, 0x1B, 0x28, 0x1B, 0x29])
    assert (params["source_addr_ton"], params["source_addr_npi"], params["source_addr"]) == (1, 1, "+491701234567")
    assert params["destination_addr"] == ""


def test_non_gsm_text_is_ucs2_with_surrogate_pairs():
    (p,) = mo_deliver_sm(mo("Привет 👍"))
    assert p["params"]["data_coding"] == 8
    assert p["params"]["short_message"] == "Привет 👍".encode("utf-16-be")
    (p,) = mo_deliver_sm(mo("façade"))  # ç is not in GSM 03.38 (only Ç is)
    assert p["params"]["data_coding"] == 8


def test_one_sms_worth_stays_one_deliver_sm():
    assert len(mo_deliver_sm(mo("x" * 160))) == 1
    assert len(mo_deliver_sm(mo("€" * 80))) == 1  # 160 septets
    assert len(mo_deliver_sm(mo("я" * 70))) == 1


def test_long_text_as_udh_parts_never_splits_an_escape():
    text = "a" * 152 + "€" + "b" * 10  # the € (2 septets) would straddle part 1's end
    parts = mo_deliver_sm(mo(text, id=300), mo_long="udh")
    assert len(parts) == 2
    for seq, p in enumerate(parts, 1):
        sm = p["params"]["short_message"]
        assert p["params"]["esm_class"] == 0x40
        assert sm[:6] == bytes([0x05, 0x00, 0x03, 300 % 256, 2, seq])
        assert len(sm) - 6 <= 153
    assert parts[0]["params"]["short_message"][6:] == b"a" * 152
    assert "".join(text_of(p["params"], p["tlvs"]) for p in parts) == text


def test_long_ucs2_text_parts_hold_67_units():
    parts = mo_deliver_sm(mo("ж" * 140), mo_long="udh")
    assert [len(p["params"]["short_message"]) - 6 for p in parts] == [134, 134, 12]


def test_long_text_as_message_payload():
    (p,) = mo_deliver_sm(mo("Ω" * 200), mo_long="payload")  # Ω is GSM
    assert p["params"]["short_message"] == b"" and p["params"]["esm_class"] == 0
    assert p["params"]["data_coding"] == 0
    assert p["tlvs"][Tag.MESSAGE_PAYLOAD] == "Ω".encode("gsm03.38") * 200


def test_esme_mo_long_setting_chooses_the_form():
    policy = MoPolicy(make_config)
    rows = policy.rows(attrs_evolve(mo("z" * 400), esme="app2"))  # app2: payload
    assert len(rows) == 1 and Tag.MESSAGE_PAYLOAD.value in {int(k) for k in json.loads(rows[0][0])["tlvs"]}
    assert len(policy.rows(mo("z" * 400))) == 3  # app1: udh


def attrs_evolve(m, **kw):  # type: ignore[no-untyped-def]
    import attrs

    return attrs.evolve(m, **kw)


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("+491701234567", (1, 1, "+491701234567")), ("4917012", (0, 1, "4917012")),
     ("Vodafone", (5, 0, "Vodafone")), ("", (0, 0, "")), (None, (0, 0, "")),
     ("+" + "1" * 30, (1, 1, "+" + "1" * 19))],
)  # fmt: skip
def test_addresses_get_ton_npi_and_fit_the_field(addr, expected):
    assert address(addr) == expected


# -- the poller --------------------------------------------------------------------------------


class FakeDriver:
    kind = "goip_http"

    def __init__(self, name="goip1", capabilities=(Capability.INBOX, Capability.DELETE_INBOX)):  # type: ignore[no-untyped-def]
        self.name = name
        self.channels = ("1", "2", "3", "4")
        self.capabilities = frozenset(capabilities)
        self.entries: list[InboundSms] = []
        self.deleted: list[str] = []
        self.calls: list[str] = []

    async def inbox(self):  # type: ignore[no-untyped-def]
        self.calls.append("inbox")
        return list(self.entries)

    async def delete_inbox(self, items):  # type: ignore[no-untyped-def]
        self.calls.append("delete")
        keys = {i.device_key for i in items}
        self.deleted += sorted(keys)
        self.entries = [e for e in self.entries if e.device_key not in keys]

    async def health(self):  # type: ignore[no-untyped-def]
        return DeviceHealth(reachable=True)


def make_inbound(store, driver, **inbound):  # type: ignore[no-untyped-def]
    metrics = Metrics()
    ib = Inbound(make_config(**inbound), store, {driver.name: driver}, metrics, clock=store.clock)
    store.on_optout = ib.on_optout
    return ib, metrics


async def test_poller_commits_first_then_deletes(store):
    driver = FakeDriver()
    ib, metrics = make_inbound(store, driver, delete_after_commit=True)
    driver.entries = [sms("one", key="k1"), sms("two", key="k2")]
    res = await ib.pollers["goip1"].poll_once()
    assert len(res.stored) == 2
    assert driver.calls == ["inbox", "delete"] and driver.deleted == ["k1", "k2"]
    assert outbox_texts(store) == ["one", "two"]
    assert metrics.registry.get_sample_value("smpp_bridge_inbound_received_total", {"device": "goip1"}) == 2


async def test_nothing_is_deleted_when_the_commit_fails(store, monkeypatch):
    driver = FakeDriver()
    ib, _m = make_inbound(store, driver, delete_after_commit=True)
    driver.entries = [sms("one", key="k1")]

    def disk_full(conn):  # type: ignore[no-untyped-def]
        raise sqlite3.OperationalError("database or disk is full")

    real_write = store.write
    monkeypatch.setattr(store, "write", lambda op: real_write(disk_full))
    with pytest.raises(StoreError):
        await ib.pollers["goip1"].poll_once()
    assert driver.calls == ["inbox"] and driver.deleted == []
    monkeypatch.undo()
    await ib.pollers["goip1"].poll_once()  # the disk has room again: stored, then deleted
    assert driver.deleted == ["k1"] and outbox_texts(store) == ["one"]


async def test_an_entry_that_cannot_be_stored_stays_on_the_device_and_harms_no_other(store, caplog):
    driver = FakeDriver()
    ib, _m = make_inbound(store, driver, delete_after_commit=True)

    class Broken(MoPolicy):
        def rows(self, mo):  # type: ignore[no-untyped-def]
            if mo.text == "poison":
                raise RuntimeError("a bug")
            return super().rows(mo)

    ib.policy = Broken(lambda: ib.config, store.clock)
    driver.entries = [sms("poison", key="bad"), sms("fine", key="good")]
    res = await ib.pollers["goip1"].poll_once()
    assert [k for k, _e in res.failed] == ["bad"] and len(res.stored) == 1
    assert driver.deleted == ["good"] and outbox_texts(store) == ["fine"]
    assert db_rows(store, "SELECT device_key FROM inbound") == [("good",)]
    assert "could not be stored" in caplog.text and "poison" not in caplog.text


async def test_without_delete_after_commit_or_capability_nothing_is_deleted(store):
    for caps, delete in (((Capability.INBOX, Capability.DELETE_INBOX), False), ((Capability.INBOX,), True)):
        driver = FakeDriver(capabilities=caps)
        ib, _m = make_inbound(store, driver, delete_after_commit=delete)
        driver.entries = [sms(f"keep {delete}", key=f"k{delete}")]
        await ib.pollers["goip1"].poll_once()
        assert driver.calls == ["inbox"]


async def test_a_restarted_poller_does_not_deliver_again_and_counts_duplicates(store):
    driver = FakeDriver()
    ib, _m = make_inbound(store, driver)
    driver.entries = [sms("old", key="k1")]
    await ib.pollers["goip1"].poll_once()
    again = await ib.pollers["goip1"].poll_once()  # the same inbox, the same poller: no store read
    assert again.duplicates == 0 and not again.stored
    ib2, metrics2 = make_inbound(store, driver)  # a restart: a fresh poller
    driver.entries.append(sms("new", key="k2"))
    res = await ib2.pollers["goip1"].poll_once()
    assert res.duplicates == 1 and len(res.stored) == 1
    assert metrics2.registry.get_sample_value("smpp_bridge_inbound_duplicates_total", {"device": "goip1"}) == 1
    assert outbox_texts(store) == ["old", "new"]


async def test_metrics_for_optouts(store):
    driver = FakeDriver()
    ib, metrics = make_inbound(store, driver)
    driver.entries = [sms("STOP", sender="+491709999999", key="s")]
    await ib.pollers["goip1"].poll_once()
    await store.add_optout("+491708888888", "admin")
    await store.remove_optout("+491709999999")
    get = metrics.registry.get_sample_value
    assert get("smpp_bridge_optouts") == 1
    assert get("smpp_bridge_optout_events_total", {"action": "optout"}) == 2
    assert get("smpp_bridge_optout_events_total", {"action": "optin"}) == 1


async def test_sweep_reports_incomplete_and_unrouted(store):
    driver = FakeDriver()
    ib, metrics = make_inbound(store, driver, default_esme=None, reassembly_timeout=60)
    driver.entries = [sms("half", key="h", ref=1, total=2, seq=1), sms("lost", key="l")]
    await ib.pollers["goip1"].poll_once()
    get = metrics.registry.get_sample_value
    assert get("smpp_bridge_inbound_unrouted_total", {"device": "goip1"}) == 1
    store.clock.now += 61
    await ib.sweep()
    assert get("smpp_bridge_inbound_incomplete_total", {"device": "goip1"}) == 1
    assert get("smpp_bridge_inbound_unrouted_total", {"device": "goip1"}) == 2  # still no ESME
    await ib.update_config(make_config(default_esme="app1"))
    res = await ib.sweep()
    assert sorted(m.text for m in res.queued) == [f"half{MISSING_PART}", "lost"]


class FakePushDriver(FakeDriver):
    """Like GoIP SMS-server mode: entries wait in memory until acknowledged (delete_inbox)."""

    def __init__(self) -> None:
        super().__init__(capabilities=(Capability.INBOX, Capability.DELETE_INBOX, Capability.ACK_INBOX))
        self.waiting = trio.Event()
        self.acked = trio.Event()
        self._arrived = trio.Event()

    def push(self, entry: InboundSms) -> None:
        self.entries.append(entry)
        self._arrived.set()

    async def wait_inbox(self) -> None:
        self.waiting.set()
        while not self.entries:
            await self._arrived.wait()
            self._arrived = trio.Event()

    async def delete_inbox(self, items):  # type: ignore[no-untyped-def]
        await super().delete_inbox(items)
        self.acked.set()


async def test_push_device_is_acknowledged_once_stored_even_without_delete_after_commit(store):
    driver = FakePushDriver()
    ib, _m = make_inbound(store, driver)  # delete_after_commit: false
    driver.push(sms("pushed", key="p1"))
    await ib.pollers["goip1"].poll_once()
    assert driver.calls == ["inbox", "delete"] and driver.deleted == ["p1"]
    # After a restart the device resends what it had not heard an answer for: the store has it
    # already, and it is acknowledged again (not delivered again).
    ib2, _m2 = make_inbound(store, driver)
    driver.push(sms("pushed", key="p1"))
    res = await ib2.pollers["goip1"].poll_once()
    assert res.duplicates == 1 and driver.deleted == ["p1", "p1"]
    assert outbox_texts(store) == ["pushed"]


async def test_push_device_is_polled_as_soon_as_something_arrives(store, nursery, monkeypatch):
    monkeypatch.setattr(DevicePoller, "interval", property(lambda self: 3600.0))
    driver = FakePushDriver()
    ib, _m = make_inbound(store, driver)
    nursery.start_soon(ib.pollers["goip1"].run)
    with trio.fail_after(60):  # a guard against hanging, far below the hour between polls
        await driver.waiting.wait()  # first poll done, waiting for a push
        driver.push(sms("now", key="n1"))
        await driver.acked.wait()  # stored and acknowledged without waiting for the next poll
    assert outbox_texts(store) == ["now"]
