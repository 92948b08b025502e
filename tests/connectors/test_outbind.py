"""Outbind (SMPP 3.4 4.1.7): the SMSC connects to the bridge, sends outbind, and the bridge binds
as a receiver on that connection; receipts and MO then come over it as over the connector's own
rx binds (bridge/connectors/outbind.py, docs/connectors.md "Outbind")."""

from __future__ import annotations

import pytest
import trio

from bridge.config import ConfigError, load_config_text
from bridge.connectors.config import build_driver
from bridge.connectors.emulator import SmscEmulator
from bridge.smpp.constants import CommandId as C
from bridge.smpp.constants import Status
from bridge.smpp.pdu import Pdu, encode
from bridge.smpp.session import ClientSession, Rejected, ServerSession, SessionState

from connector_support import connector_device, connector_yaml
from e2e_support import free_port, receive_deliver_sm
from reload_support import Esme, connector, route, start_app, wait_for, write_config

OUTBIND = Pdu(C.OUTBIND, 0, 1, {"system_id": "smsc", "password": "obpw"})


# -- the session (sans-IO) ----------------------------------------------------------------------


def test_the_esme_takes_an_outbind_only_before_binding_and_an_smsc_never():
    esme = ClientSession()
    esme.receive_data(encode(OUTBIND))
    ev = esme.next_event()
    assert isinstance(ev, Pdu) and ev.command_id == C.OUTBIND and ev.params["system_id"] == "smsc"
    assert esme.state is SessionState.OPEN  # it binds next, on this connection
    esme.send(Pdu(C.BIND_RECEIVER, 0, 2, {"system_id": "bridge", "password": "secret", "interface_version": 0x34}))
    esme.receive_data(encode(Pdu(C.BIND_RECEIVER_RESP, 0, 2, {"system_id": "smsc"})))
    assert isinstance(esme.next_event(), Pdu) and esme.state is SessionState.BOUND_RX
    esme.receive_data(encode(OUTBIND))  # once bound: refused
    ev = esme.next_event()
    assert isinstance(ev, Rejected) and ev.answer == Pdu(C.GENERIC_NACK, Status.RINVBNDSTS, 1)
    smsc = ServerSession()  # an outbind goes from the SMSC to the ESME only
    smsc.receive_data(encode(OUTBIND))
    ev = smsc.next_event()
    assert isinstance(ev, Rejected) and ev.answer == Pdu(C.GENERIC_NACK, Status.RINVBNDSTS, 1)
    assert ServerSession().send(OUTBIND)  # the SMSC may send it while not bound


# -- the config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("outbind", "error"), [
    ("{port: 2777, system_id: smsc, password: obpw}", "outbind.host: missing: expected the address to listen on"),
    ("{host: 0.0.0.0, system_id: smsc, password: obpw}", "outbind.port: missing: expected the TCP port"),
    ("{host: 0.0.0.0, port: 2777, password: obpw}", "outbind.system_id: missing"),
    ("{host: 0.0.0.0, port: 2777, system_id: smsc}", "outbind: missing password: expected exactly one of password"),
    ("{host: 0.0.0.0, port: 2777, system_id: smsc, password: toolongpw}", "at most 8 characters"),
    ("{host: 0.0.0.0, port: 2777, system_id: smsc, password: obpw, allowed_ips: [10.0.0.1/8]}", "has host bits set"),
    ("{host: 0.0.0.0, port: 2777, system_id: smsc, password: obpw, listen: x}", "unknown key 'listen'"),
    ("yes", "outbind: expected a mapping like {host: 0.0.0.0, port: 2777"),
])  # fmt: skip
def test_outbind_settings_are_checked_with_clear_errors(outbind, error):
    text = "esmes:\n  - system_id: app\n    password: secret12\n" + connector_yaml(2775, outbind=outbind)
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    lines = [i.format(exc.value.source) for i in exc.value.issues]
    assert any(error in line and "connectors[0]." in line for line in lines), lines


def test_outbind_is_off_unless_configured_and_allows_loopback_by_default():
    assert connector_device(2775).options["outbind"] is None
    ob = connector_device(2775, outbind="{host: 127.0.0.1, port: 2777, system_id: smsc, password: obpw}").options["outbind"]
    assert (ob.host, ob.port, ob.system_id) == ("127.0.0.1", 2777, "smsc")
    assert [str(n) for n in ob.allowed_ips] == ["127.0.0.1/32", "::1/128"]
    assert "obpw" not in repr(ob)


# -- the bridge ---------------------------------------------------------------------------------


async def test_receipts_and_mo_come_over_the_smscs_outbind_end_to_end(tmp_path):
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        port = await n.start(emu.serve)
        listen = free_port()
        outbind = f"{{host: 127.0.0.1, port: {listen}, system_id: smsc, password: obpw}}"
        # A transmitter only: receipts and MO can come back only over the outbind.
        path = write_config(tmp_path / "bridge.yaml", [connector("up1", port, binds="{tx: 1}", outbind=outbind)],
                            [route("all", ["up1"])])  # fmt: skip
        app = await start_app(n, path)
        await wait_for(lambda: emu.bound == 1)
        await n.start(emu.outbind, "127.0.0.1", listen, "smsc", "obpw")
        await wait_for(lambda: emu.bound == 2)  # the bridge bound as a receiver on it
        binds = (await app.status.report())["connectors"]["up1"]["binds"]
        assert binds["up1/outbind1"]["state"] == "bound" and "outbind" in binds["up1/outbind1"]["detail"]
        esme = await Esme(app).bind()
        mid = await esme.submit("+15550001", "receipt over the outbind")
        assert (await esme.receipts(1))[mid]["stat"] == "DELIVRD"
        assert await emu.inject_mo("+15559999", "12345", "MO over the outbind") == 1
        (mo,) = await trio.to_thread.run_sync(lambda: receive_deliver_sm(esme.c, 1, timeout=30))
        assert (mo.source_addr.decode(), mo.short_message.decode()) == ("+15559999", "MO over the outbind")
        # Stopping the connector (here: a reload removes it) unbinds the outbind session too.
        write_config(path, [], [])
        result = await app.reload()
        assert result["connectors"]["removed"] == ["up1"]
        assert emu.unbinds == 2 and emu.connections == 0
        await esme.close()
        n.cancel_scope.cancel()


async def test_an_outbind_with_wrong_credentials_or_from_an_address_not_allowed_is_refused():
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        port = await n.start(emu.serve)
        listen = free_port()
        drv = build_driver(connector_device(
            port, binds="{tx: 1}",
            outbind=f"{{host: 127.0.0.1, port: {listen}, system_id: smsc, password: obpw}}",
        ))  # fmt: skip
        await n.start(drv.serve)
        await wait_for(lambda: drv.binds_up == 1)
        # Wrong password: the bridge closes the connection without binding.
        await emu.outbind("127.0.0.1", listen, "smsc", "nope")
        assert drv.stats.bind_refusals["outbind"] == 1 and emu.bound == 1 and drv.outbinds == []
        # Another system_id: refused too.
        await emu.outbind("127.0.0.1", listen, "other", "obpw")
        assert drv.stats.bind_refusals["outbind"] == 2 and emu.binds_total == 1
        # A first PDU that is not an outbind: the connection is closed, nothing answered.
        stream = await trio.open_tcp_stream("127.0.0.1", listen)
        await stream.send_all(encode(Pdu(C.ENQUIRE_LINK, 0, 1)))
        with trio.fail_after(10):
            assert await stream.receive_some(100) == b""
        await stream.aclose()
        assert drv.stats.bind_refusals["outbind"] == 3
        await drv.aclose()
        # From an address outside allowed_ips (only 10/8 here): closed before anything is read.
        drv = build_driver(connector_device(
            port, binds="{tx: 1}",
            outbind=f"{{host: 127.0.0.1, port: {listen}, system_id: smsc, password: obpw, allowed_ips: [10.0.0.0/8]}}",
        ))  # fmt: skip
        await n.start(drv.serve)
        await emu.outbind("127.0.0.1", listen, "smsc", "obpw")
        assert drv.stats.bind_refusals["outbind"] == 1 and drv.outbinds == []
        await drv.aclose()
        n.cancel_scope.cancel()


async def test_a_reload_that_changes_the_outbind_password_listens_again_with_the_new_one(tmp_path):
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        port = await n.start(emu.serve)
        listen = free_port()

        def config(password: str) -> None:
            outbind = f"{{host: 127.0.0.1, port: {listen}, system_id: smsc, password: {password}}}"
            write_config(tmp_path / "bridge.yaml", [connector("up1", port, binds="{tx: 1}", outbind=outbind)],
                         [route("all", ["up1"])])  # fmt: skip

        config("obpw")
        app = await start_app(n, tmp_path / "bridge.yaml")
        await n.start(emu.outbind, "127.0.0.1", listen, "smsc", "obpw")
        await wait_for(lambda: emu.bound == 2)
        config("obpw2")
        result = await app.reload()
        assert result["connectors"]["rebound"] == ["up1"] and result["connectors"]["failed"] == []
        assert emu.unbinds == 2  # the transmitter and the outbind session, both gracefully
        await emu.outbind("127.0.0.1", listen, "smsc", "obpw")  # the old password: refused
        assert app.drivers["up1"].stats.bind_refusals["outbind"] == 1
        await n.start(emu.outbind, "127.0.0.1", listen, "smsc", "obpw2")  # on the same port
        await wait_for(lambda: emu.bound == 2)
        n.cancel_scope.cancel()


async def test_a_connector_whose_outbind_port_is_taken_is_reported_and_the_reload_goes_on(tmp_path):
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        port = await n.start(emu.serve)
        taken = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]  # another program's port
        busy = taken.socket.getsockname()[1]
        path = write_config(tmp_path / "bridge.yaml", [connector("up1", port)], [route("all", ["up1"])])
        app = await start_app(n, path)
        await wait_for(lambda: emu.bound == 1)
        outbind = f"{{host: 127.0.0.1, port: {busy}, system_id: smsc, password: obpw}}"
        write_config(path, [connector("up1", port), connector("up2", port, outbind=outbind)],
                     [route("uk", ["up2"], ["+44"]), route("all", ["up1"])])  # fmt: skip
        result = await app.reload()
        assert result["ok"] and result["connectors"]["added"] == []
        (failed,) = result["connectors"]["failed"]
        assert failed.startswith("up2: ") and f"cannot listen for outbind on 127.0.0.1:{busy}" in failed
        assert "up2" not in app.drivers and "up2" not in (await app.status.report())["connectors"]
        assert emu.bound == 1 and app.drivers["up1"].binds_up == 1  # the rest runs on
        # The port is free again: the next reload (the same file) starts it.
        await taken.aclose()
        result = await app.reload()
        assert result["connectors"]["added"] == ["up2"] and result["connectors"]["failed"] == []
        assert "connectors" in result["applied"] and emu.bound == 2
        n.cancel_scope.cancel()
