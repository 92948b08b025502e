"""An MO must reach the ESME well-formed: in a form its bind's SMPP version can carry, and with a
destination_addr it can route on (an ESME such as Kannel discards MO with an empty one); and a
config reload reaches inbound (esmes[].mo_long, routes, the destination) at once.

In-process: a real store and Inbound service; reload_config() runs against a small stand-in for
the app; the outbox delivery delivers to a stand-in receiver that encodes what it is sent."""

from __future__ import annotations

from datetime import UTC, datetime

import json
from types import SimpleNamespace

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import ChannelOverride, Config, DeviceConfig, EsmeConfig, InboundConfig, ReceiptsConfig, load_config
from bridge.devices.base import InboundSms
from bridge.receipts.delivery import OutboxDelivery
from bridge.receipts.payload import decode_payload
from bridge.inbound import Inbound, MoPolicy, mo_deliver_sm
from bridge.metrics import Metrics
from bridge.reload import ReloadParts, reload_config
from bridge.smpp.concat import extract, payload_as_udh_parts
from bridge.smpp.constants import CommandId, Tag
from bridge.smpp.pdu import Pdu, decode, encode
from bridge.smpp.text import decode_short_message
from bridge.store import MoMessage, Store


def make_config(number=None, default_destination=None, mo_long="payload"):  # type: ignore[no-untyped-def]
    overrides = {"1": ChannelOverride(number=number)} if number else {}
    return Config(
        esmes=(EsmeConfig("app1", mo_long=mo_long),),
        devices=(DeviceConfig(name="goip1", kind="goip_http", lines=2, channel_overrides=overrides),),
        receipts=ReceiptsConfig(retention=3600),
        inbound=InboundConfig(default_esme="app1", default_destination=default_destination),
    )


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


def sms(text: str, channel: str = "1") -> InboundSms:
    return InboundSms(
        channel=channel, sender="+491701234567", text=text,
        received_at=datetime(2024, 7, 12, 10, 11, 12, tzinfo=UTC),
        device_key=f"{channel}|{text[:10]}", raw=text, slot=0,
    )  # fmt: skip


class FakeConn:
    """A bound receiver: answers every deliver_sm ROK and keeps the octets it was sent."""

    def __init__(self, version: int) -> None:
        self.interface_version = version
        self.wire: list[bytes] = []
        self.server = None

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        self.wire.append(encode(pdu, include_tlvs=self.interface_version >= 0x34))
        return Pdu(CommandId.DELIVER_SM_RESP, 0, pdu.sequence_number, {"message_id": ""})


class FakeServer:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def receivers(self, esme: str) -> list[FakeConn]:
        return [self.conn]

    def next_receiver(self, esme: str) -> FakeConn:
        return self.conn


def text_of(raw: bytes) -> tuple[str, object]:
    pdu = decode(raw)
    body, concat = extract(pdu)
    return decode_short_message(pdu.params["data_coding"], body) or "", concat


async def deliver_all(store: Store, version: int) -> FakeConn:
    conn = FakeConn(version)
    dispatcher = OutboxDelivery(store, FakeServer(conn), Metrics(), make_config())
    for item in await store.pending_outbox("app1"):
        await dispatcher._send_one("app1", item, trio.Semaphore(0))
    await store.write(lambda conn: None)  # the delivered marks are committed after the answers
    return conn


TEXT = "Long inbound text that needs more than one SMS. " * 8  # 384 GSM characters


async def test_smpp33_bind_with_mo_long_payload_gets_udh_parts(store):
    config = make_config(mo_long="payload")
    await store.add_inbound("goip1", [sms(TEXT)], MoPolicy(lambda: config))
    conn = await deliver_all(store, 0x33)
    got = [text_of(raw) for raw in conn.wire]
    assert len(got) == 3  # 153 + 153 + 78 septets
    assert [c.seq for _t, c in got] == [1, 2, 3] and len({c.ref for _t, c in got}) == 1
    assert "".join(t for t, _c in got) == TEXT
    assert await store.pending_outbox("app1") == []


async def test_smpp34_bind_with_mo_long_payload_gets_message_payload(store):
    config = make_config(mo_long="payload")
    await store.add_inbound("goip1", [sms(TEXT)], MoPolicy(lambda: config))
    conn = await deliver_all(store, 0x34)
    ((text, concat),) = [text_of(raw) for raw in conn.wire]
    assert text == TEXT and concat is None


def dest_of(payload: str) -> str:
    return decode_payload(payload).params["destination_addr"]


async def test_mo_without_sim_number_carries_the_default_destination(store):
    config = make_config(default_destination="2323")
    await store.add_inbound("goip1", [sms("hi")], MoPolicy(lambda: config))
    (item,) = await store.pending_outbox("app1")
    assert dest_of(item.payload) == "2323"


async def test_mo_without_any_destination_configured_names_its_channel(store):
    config = make_config()
    await store.add_inbound("goip1", [sms("hi", channel="2")], MoPolicy(lambda: config))
    (item,) = await store.pending_outbox("app1")
    assert dest_of(item.payload) == "goip1:2"


async def test_sim_number_wins(store):
    config = make_config(number="+4915550001", default_destination="2323")
    await store.add_inbound("goip1", [sms("hi")], MoPolicy(lambda: config))
    (item,) = await store.pending_outbox("app1")
    assert dest_of(item.payload) == "+4915550001"


async def test_a_queued_mo_gets_the_sim_number_configured_later(store):
    old = make_config()
    inbound = Inbound(old, store, {}, Metrics())
    await store.add_inbound("goip1", [sms("hi")], inbound.policy)
    await inbound.update_config(make_config(number="+4915550001"))
    (item,) = await store.pending_outbox("app1")
    assert dest_of(item.payload) == "+4915550001"


def test_a_bad_default_destination_is_refused_naming_the_key(tmp_path):
    from bridge.config import ConfigError, load_config

    path = tmp_path / "bridge.yaml"
    path.write_text('inbound:\n  default_destination: "this is far too long for an address"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "inbound.default_destination" in str(err.value)


# -- reload ---------------------------------------------------------------------------------

CONFIG = """
esmes:
  - system_id: app1
    password: secret1
    mo_long: {mo_long}
devices:
  - name: goip1
    kind: goip_http
    url: http://127.0.0.1:1
    password: pw
    lines: 2
inbound:
  default_esme: app1
"""


def app_for(path, store):  # type: ignore[no-untyped-def]
    config = load_config(path)
    metrics = Metrics()
    app = SimpleNamespace(config=config, inbound=Inbound(config, store, {}, metrics))
    app.reload = ReloadParts(
        path=path, current=lambda: app.config, install=lambda c: setattr(app, "config", c), metrics=metrics,
        binds_open=lambda: 0, apply=(app.inbound.update_config,),
    )  # fmt: skip
    return app


def long_mo() -> MoMessage:
    return MoMessage(id=7, device="goip1", channel="1", sender="+491701234567", recipient=None,
                     text="z" * 400, received_at=0.0, esme="app1")  # fmt: skip


async def test_mo_long_changed_by_a_reload_applies_to_the_next_mo(tmp_path, store):
    path = tmp_path / "bridge.yaml"
    path.write_text(CONFIG.format(mo_long="udh"))
    path.chmod(0o600)
    app = app_for(path, store)
    assert len(app.inbound.policy.rows(long_mo())) == 3  # three UDH parts
    path.write_text(CONFIG.format(mo_long="payload"))
    result = await reload_config(app.reload)
    assert result["ok"], result
    rows = app.inbound.policy.rows(long_mo())
    assert len(rows) == 1
    assert str(int(Tag.MESSAGE_PAYLOAD)) in json.loads(rows[0][0])["tlvs"]
    assert "esmes" in result["applied"]


# -- properties of the MO on the wire ----------------------------------------------------------



MO_TEXTS = st.one_of(
    st.text(alphabet="abc XYZ 019 @£€{}[]~\\|^äöüß\n", max_size=900),
    st.text(max_size=400),
    st.text(alphabet="abc €жЯ☺👍", min_size=60, max_size=400),
)


def received(pdus: list[Pdu], version: int) -> str:
    """What an ESME bound with ``version`` reads: each PDU's octets decoded, UDH parts joined in
    seq order."""
    got = []
    for p in pdus:
        body, concat = extract(decode(encode(p, include_tlvs=version >= 0x34)))
        got.append((concat.seq if concat else 0, decode_short_message(p.params["data_coding"], body) or ""))
    return "".join(t for _s, t in sorted(got, key=lambda x: x[0]))


def as_pdu(d: dict) -> Pdu:
    return Pdu(CommandId.DELIVER_SM, params=dict(d["params"]), tlvs=dict(d["tlvs"]))


@settings(max_examples=200, deadline=None)
@given(MO_TEXTS, st.sampled_from(["udh", "payload"]), st.sampled_from([0x33, 0x34]), st.integers(0, 10**6))
def test_any_mo_reads_back_as_its_text_in_every_form_and_version(text, mo_long, version, mo_id):
    text = text.replace("\x1b", " ")  # the ESC control character is not text
    mo = MoMessage(id=mo_id, device="goip1", channel="1", sender="+491701234567", recipient=None,
                   text=text, received_at=0.0, esme="app1")  # fmt: skip
    pdus = [as_pdu(d) for d in mo_deliver_sm(mo, mo_long=mo_long)]
    if version < 0x34:  # what the outbox delivery does for a 3.3 bind
        pdus = [q for p in pdus for q in payload_as_udh_parts(p, ref=mo_id)]
    for p in pdus:
        assert len(p.params["short_message"]) <= 6 + 153
    assert received(pdus, version) == text
