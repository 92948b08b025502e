"""End to end, inbound: an SMS injected into the GoIP emulator's inbox reaches a bound smpplib
ESME as deliver_sm exactly once, also across bridge restarts and while the ESME is offline;
STOP/START keep MT away from / let it reach an opted-out number.

smpplib <-> bridge process <-> GoIP emulator process, all over real sockets."""

from __future__ import annotations

import gsm0338  # noqa: F401  (the "gsm03.38" codec, to read data_coding 0 as an ESME would)
import pytest

from e2e_support import (
    BridgeProcess,
    EmulatorProcess,
    client,
    goip_config,
    receipt_fields,
    receive_deliver_sm,
    submit,
    wait_for,
)

FAST_INBOX = "    inbox_poll_interval: 0.2\n    channels:\n      \"2\": {number: \"+4915550002\"}"


@pytest.fixture
def emulator():
    e = EmulatorProcess(lines=4, send_duration=0.1)
    yield e
    e.stop()


def config(emulator, inbound: str = "", esmes: str | None = None) -> str:
    inbound = inbound or """
inbound:
  default_esme: alice
  routes:
    - {device: goip1, channel: "3", esme: bob}
"""
    return goip_config(emulator.url, device=FAST_INBOX, esmes=esmes, extra=inbound)


def bind(bridge, system_id="alice", password="secret1", kind="transceiver"):  # type: ignore[no-untyped-def]
    c = client(bridge.port)
    getattr(c, f"bind_{kind}")(system_id=system_id, password=password)
    return c


def text_of(pdu) -> str:  # type: ignore[no-untyped-def]
    """The text of one deliver_sm as an ESME reads it (UDH stripped, payload TLV honoured)."""
    body = pdu.short_message or b""
    if pdu.esm_class & 0x40:
        body = body[body[0] + 1 :]
    if not body and getattr(pdu, "message_payload", None):
        body = pdu.message_payload
    return body.decode("gsm03.38") if pdu.data_coding == 0 else body.decode("utf-16-be")


def udh_concat(pdu) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """(ref, total, seq) from an 8-bit concatenation UDH."""
    udh = pdu.short_message[: pdu.short_message[0] + 1]
    assert udh[1:3] == b"\x00\x03", udh
    return udh[3], udh[4], udh[5]


def mo_rows(bridge) -> list[tuple]:  # type: ignore[no-untyped-def]
    with bridge.db() as db:
        return db.execute("SELECT sender, text, esme, state FROM inbound ORDER BY id").fetchall()


def sentinel(emulator, c, line=1):  # type: ignore[no-untyped-def]
    """Exactly-once check without timing: inject one more SMS and read up to it. Any duplicate
    of an earlier SMS would be queued before it (one poller, one ESME, outbox order)."""
    emulator.inject(line, "+4915559999", "sentinel")
    (pdu,) = receive_deliver_sm(c, 1)
    assert text_of(pdu) == "sentinel", f"unexpected extra deliver_sm: {text_of(pdu)!r}"


def test_texts_in_every_alphabet_arrive_once_with_the_right_data_coding(tmp_path, emulator):
    bridge = BridgeProcess(tmp_path, config(emulator)).start()
    try:
        c = bind(bridge)
        cases = [
            ("GSM-7 with extension characters: @ £ € {ok} [x] ~ \\ ^ |", 0),
            ("Latin-1 accents in GSM: é à ü è ù ì ò Ä Ö Ñ ß", 0),
            ("Latin-1 accents outside GSM: ça coûte très cher, señorita", 8),
            ("Кириллица: привет, мир", 8),
            ("Emoji 👍🏽 and 😀", 8),
        ]
        for text, _dc in cases:
            emulator.inject(1, "+491701234567", text)
            (pdu,) = receive_deliver_sm(c, 1)
            assert text_of(pdu) == text
            assert pdu.data_coding == _dc
            assert pdu.esm_class == 0
            assert pdu.source_addr.decode() == "+491701234567"
            assert pdu.source_addr_ton == 1
            # Line 1 has no number configured: the channel, never empty (Kannel drops empty ones).
            assert pdu.destination_addr.decode() == "goip1:1"
        sentinel(emulator, c)
        rows = mo_rows(bridge)
        assert [r[1] for r in rows] == [t for t, _ in cases] + ["sentinel"]
        wait_for(lambda: {r[3] for r in mo_rows(bridge)} == {"delivered"})
        c.unbind()
    finally:
        bridge.stop()


def test_mojibake_from_the_device_is_repaired_and_the_sim_number_is_the_destination(tmp_path, emulator):
    bridge = BridgeProcess(tmp_path, config(emulator)).start()
    try:
        c = bind(bridge)
        emulator.inject(2, "+491709876543", "Grüße aus Köln ✓", mojibake=True)
        (pdu,) = receive_deliver_sm(c, 1)
        assert text_of(pdu) == "Grüße aus Köln ✓"
        assert pdu.destination_addr.decode() == "+4915550002"  # channels."2".number
        c.unbind()
    finally:
        bridge.stop()


def test_long_sms_goes_as_udh_parts_or_one_message_payload_per_esme(tmp_path, emulator):
    esmes = """
      - system_id: alice
        password: secret1
        allowed_ips: [127.0.0.1]
      - system_id: bob
        password: secret2
        allowed_ips: [127.0.0.1]
        mo_long: payload
    """
    bridge = BridgeProcess(tmp_path, config(emulator, esmes=esmes)).start()
    try:
        alice = bind(bridge)
        bob = bind(bridge, "bob", "secret2", "receiver")
        gsm_long = "Long GSM text with € and {braces}, " * 6  # > 160 septets
        ucs2_long = "Длинное сообщение на кириллице. " * 4  # > 70 UCS2 characters
        emulator.inject(1, "+491701111111", gsm_long)
        parts = receive_deliver_sm(alice, 2, timeout=20)
        emulator.inject(1, "+491701111111", ucs2_long)
        parts2 = receive_deliver_sm(alice, 2, timeout=20)
        for pdus, text, dc in ((parts, gsm_long, 0), (parts2, ucs2_long, 8)):
            concat = [udh_concat(p) for p in pdus]
            assert [seq for _r, _t, seq in concat] == [1, 2]
            assert {(r, t) for r, t, _s in concat} == {(concat[0][0], 2)}
            assert all(p.esm_class == 0x40 and p.data_coding == dc for p in pdus)
            assert "".join(text_of(p) for p in pdus) == text
        emulator.inject(3, "+491702222222", ucs2_long)  # line 3 routes to bob
        (pdu,) = receive_deliver_sm(bob, 1)
        assert pdu.esm_class == 0 and pdu.data_coding == 8 and pdu.short_message in (b"", None)
        assert text_of(pdu) == ucs2_long
        alice.unbind()
        bob.unbind()
    finally:
        bridge.stop()


def test_no_duplicate_after_a_bridge_restart(tmp_path, emulator):
    bridge = BridgeProcess(tmp_path, config(emulator)).start()
    try:
        c = bind(bridge)
        emulator.inject(1, "+491701234567", "before the restart")
        (pdu,) = receive_deliver_sm(c, 1)
        assert text_of(pdu) == "before the restart"
        c.unbind()
        bridge.stop()
        # The device still shows the SMS (nothing deleted): the restarted bridge must know it.
        assert emulator.state()["line_state"]["1"]["inbox_used"] == 1
        bridge.start()
        c = bind(bridge)
        emulator.inject(1, "+491701234567", "after the restart")
        (pdu,) = receive_deliver_sm(c, 1)
        assert text_of(pdu) == "after the restart"  # and not "before the restart" again
        sentinel(emulator, c)
        assert [r[1] for r in mo_rows(bridge)] == ["before the restart", "after the restart", "sentinel"]
        c.unbind()
    finally:
        bridge.stop()


def test_esme_offline_gets_its_backlog_in_order_on_bind(tmp_path, emulator):
    bridge = BridgeProcess(tmp_path, config(emulator)).start()
    try:
        texts = [f"while you were away {i}" for i in range(6)]
        for i, text in enumerate(texts):
            emulator.inject(1 + i % 2, f"+49170000000{i}", text)
            # One at a time, so that the order of arrival is the order of injection.
            wait_for(lambda n=i + 1: len(mo_rows(bridge)) == n)
        assert {r[3] for r in mo_rows(bridge)} == {"queued"}  # stored, waiting for alice
        rx = bind(bridge, kind="receiver")
        got = receive_deliver_sm(rx, len(texts))
        assert [text_of(p) for p in got] == texts
        assert [p.source_addr.decode() for p in got] == [f"+49170000000{i}" for i in range(6)]
        wait_for(lambda: {r[3] for r in mo_rows(bridge)} == {"delivered"})
        rx.unbind()
    finally:
        bridge.stop()


def test_delete_after_commit_empties_the_device_inbox(tmp_path, emulator):
    inbound = """
inbound:
  default_esme: alice
  delete_after_commit: true
"""
    bridge = BridgeProcess(tmp_path, config(emulator, inbound)).start()
    try:
        c = bind(bridge)
        emulator.inject(1, "+491701234567", "delete me once stored")
        (pdu,) = receive_deliver_sm(c, 1)
        assert text_of(pdu) == "delete me once stored"
        wait_for(lambda: emulator.state()["line_state"]["1"]["inbox_used"] == 0)
        assert [r[1] for r in mo_rows(bridge)] == ["delete me once stored"]
        c.unbind()
    finally:
        bridge.stop()


def stop_start_cycle(bridge, emulator, refused) -> None:  # type: ignore[no-untyped-def]
    """STOP from a number; an MT to it is not sent (``refused(c, resp)`` checks how);
    START; an MT to it goes out."""
    number = "+491705550000"
    c = bind(bridge)
    emulator.inject(1, number, "  Stop \n")
    (mo,) = receive_deliver_sm(c, 1)
    assert text_of(mo) == "  Stop \n"  # the STOP itself still reaches the ESME
    with bridge.db() as db:
        wait_for(lambda: db.execute("SELECT number, source FROM optouts").fetchall() == [(number, "keyword")])
    # The ESME writes the number without "+" (TON international): still the same number.
    resp = submit(c, b"do you want a pizza?", dest=number.lstrip("+"), dest_addr_ton=1, registered_delivery=1)
    refused(c, resp)
    emulator.inject(1, number, "start")
    (mo,) = receive_deliver_sm(c, 1)
    assert text_of(mo) == "start"
    with bridge.db() as db:
        wait_for(lambda: db.execute("SELECT count(*) FROM optouts").fetchone() == (0,))
    resp = submit(c, b"welcome back", dest=number, registered_delivery=1)
    assert resp.status == 0
    (dlr,) = receive_deliver_sm(c, 1)
    assert receipt_fields(dlr)["stat"] == "DELIVRD"
    assert [(s["destination"], s["text"]) for s in emulator.sent()] == [(number, "welcome back")]
    c.unbind()


def test_stop_rejects_mt_with_a_rejectd_receipt_then_start_allows_it(tmp_path, emulator):
    bridge = BridgeProcess(tmp_path, config(emulator)).start()  # mt_action: receipt (default)

    def refused(c, resp):  # type: ignore[no-untyped-def]
        assert resp.status == 0  # accepted...
        (dlr,) = receive_deliver_sm(c, 1)
        f = receipt_fields(dlr)
        assert (f["id"], f["stat"], f["err"]) == (resp.message_id.decode(), "REJECTD", "011")
        assert dlr.message_state == 8  # REJECTED
        assert bytes(dlr.network_error_code) == bytes([7, 0x00, 0x0B])  # SMPP error ESME_RINVDSTADR
        assert emulator.sent() == []  # ...but never sent

    try:
        stop_start_cycle(bridge, emulator, refused)
    finally:
        bridge.stop()


def test_stop_refuses_the_submit_when_configured_then_start_allows_it(tmp_path, emulator):
    inbound = """
inbound:
  default_esme: alice
  optout:
    mt_action: reject_submit
"""
    bridge = BridgeProcess(tmp_path, config(emulator, inbound)).start()

    def refused(c, resp):  # type: ignore[no-untyped-def]
        assert resp.status == 0x0B  # ESME_RINVDSTADR
        assert emulator.sent() == []

    try:
        stop_start_cycle(bridge, emulator, refused)
        assert "+491705550000" not in bridge.log_text()  # numbers are masked in the log
    finally:
        bridge.stop()
