"""Connectors change with a config reload, not only with a restart
(bridge/connectors/reconfigure.py, docs/connectors.md "Connectors change on reload").

A real bridge in this trio run, its config in a file that the test rewrites before each
``app.reload()`` (what SIGHUP and POST /api/reload call), SMSC emulators on loopback, and an
ESME over SMPP (smpplib)."""

from __future__ import annotations

from collections import Counter

import trio
from prometheus_client import generate_latest

from bridge.connectors.emulator import SmscEmulator

from reload_support import Esme, connector, console_page, route, start_app, wait_for, write_config


async def test_an_added_connector_binds_and_takes_the_messages_of_its_route(tmp_path):
    async with trio.open_nursery() as n:
        emu1, emu2 = SmscEmulator(), SmscEmulator()
        p1, p2 = await n.start(emu1.serve), await n.start(emu2.serve)
        path = write_config(tmp_path / "bridge.yaml", [connector("up1", p1)], [route("all", ["up1"])])
        app = await start_app(n, path)
        await wait_for(lambda: emu1.bound == 1)
        assert emu2.connections == 0
        write_config(path, [connector("up1", p1), connector("up2", p2)],
                     [route("uk", ["up2"], ["+44"]), route("all", ["up1"])])  # fmt: skip
        result = await app.reload()
        assert result["ok"], result
        assert result["connectors"] == {"added": ["up2"], "removed": [], "rebound": [], "retuned": [], "bound": ["up2"], "failed": []}
        assert "connectors" in result["applied"] and result["restart_required"] == []
        page = await console_page(app, "/console/config")  # the web console says it too
        assert "added: up2 (up2 bound)" in page[page.index('id="reload-connectors"'):]
        assert emu2.bound == 1 and emu1.binds_total == 1  # up1 kept its session
        esme = await Esme(app).bind()
        mid = await esme.submit("+447700900001", "via the new one")
        receipts = await esme.receipts(1)
        assert receipts[mid]["stat"] == "DELIVRD"
        assert [s.destination for s in emu2.sent] == ["447700900001"] and emu1.sent == []
        status = (await app.status.report())["connectors"]
        assert status["up2"]["binds_up"] == 1 and status["up2"]["receipts"]["matched"] == 1
        await esme.close()
        n.cancel_scope.cancel()


async def test_a_removed_connector_answers_its_submits_unbinds_and_loses_or_doubles_nothing(tmp_path):
    async with trio.open_nursery() as n:
        emu1, emu2 = SmscEmulator(), SmscEmulator()
        p1, p2 = await n.start(emu1.serve), await n.start(emu2.serve)
        path = write_config(tmp_path / "bridge.yaml", [connector("up1", p1), connector("up2", p2, window=3, response_timeout=10)],
                            [route("all", ["up2"])])  # fmt: skip
        app = await start_app(n, path)
        await wait_for(lambda: emu1.bound == 1 and emu2.bound == 1)
        # up2 answers each submit_sm only after a second (one after the other: a window of 3
        # waits up to 3 s, within its response_timeout): submits are in flight and the messages
        # after them wait in the route's queue when the reload removes it.
        emu2.apply_faults({"delay": 1.0})
        esme = await Esme(app).bind()
        ids = [await esme.submit(f"+1555000{i}", f"message {i}") for i in range(8)]
        await wait_for(lambda: len(emu2.sent) == 3)
        write_config(path, [connector("up1", p1)], [route("all", ["up1"])])
        result = await app.reload()
        assert result["ok"], result
        assert result["connectors"]["removed"] == ["up2"]
        # Gracefully: the 3 in flight got their submit_sm_resp before the unbind.
        assert emu2.unbinds == 1 and emu2.connections == 0
        receipts = await esme.receipts(8)
        assert sorted(receipts) == sorted(ids)  # nothing lost: every message has its receipt
        # The 3 the SMSC answered are not ambiguous (that would be UNKNOWN): taken, receipt
        # DELIVRD (or, had it not come before the unbind, handed to the network: ACCEPTD).
        assert all(receipts[i]["stat"] in ("DELIVRD", "ACCEPTD") for i in ids), receipts
        # Nothing sent twice: every destination reached exactly one SMSC exactly once.
        sent = Counter(s.destination for s in [*emu1.sent, *emu2.sent])
        assert sent == Counter(f"1555000{i}" for i in range(8))
        assert len(emu1.sent) == 8 - len(emu2.sent) > 0  # the queued ones went out through up1
        assert "up2" not in (await app.status.report())["connectors"]
        metrics = generate_latest(app.metrics.registry).decode()
        assert 'smpp_bridge_device_up{device="up1"} 1.0' in metrics  # no stale "up" for up2
        assert 'device="up2"' not in metrics.split("smpp_bridge_device_up", 1)[1].split("# HELP", 1)[0]
        await esme.close()
        n.cancel_scope.cancel()


async def test_a_changed_password_rebinds_with_the_new_one(tmp_path):
    async with trio.open_nursery() as n:
        emu = SmscEmulator(password="secret")
        port = await n.start(emu.serve)
        path = write_config(tmp_path / "bridge.yaml", [connector("up1", port)], [route("all", ["up1"])])
        app = await start_app(n, path)
        await wait_for(lambda: emu.bound == 1)
        esme = await Esme(app).bind()
        emu.apply_faults({"receipts": False})  # its receipt comes only after the rebind
        before = await esme.submit("+15550001", "before")
        await wait_for(lambda: len(emu.sent) == 1)
        # The provider changes the password; the config follows.
        emu.password = "newpass"
        write_config(path, [connector("up1", port, password="newpass")], [route("all", ["up1"])])
        result = await app.reload()
        assert result["ok"], result
        assert result["connectors"]["rebound"] == ["up1"] and result["connectors"]["bound"] == ["up1"]
        assert emu.unbinds == 1 and emu.binds_total == 2 and emu.bound == 1  # the old unbound, the new bound
        # The receipt for what went out before the rebind still finds its message.
        assert await emu.send_receipt(emu.sent[0].message_id, "DELIVRD") == 1
        assert (await esme.receipts(1))[before]["stat"] == "DELIVRD"
        emu.apply_faults({"receipts": True})
        after = await esme.submit("+15550002", "after")
        assert (await esme.receipts(1))[after]["stat"] == "DELIVRD"
        # The counters went on (one driver after the other): 2 submits, 2 receipts matched.
        st = (await app.status.report())["connectors"]["up1"]
        assert st["submits"]["ESME_ROK"] == 2 and st["receipts"]["matched"] == 2
        await esme.close()
        n.cancel_scope.cancel()


async def test_a_pacing_change_applies_without_a_rebind(tmp_path):
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        port = await n.start(emu.serve)
        path = write_config(tmp_path / "bridge.yaml", [connector("up1", port)], [route("all", ["up1"])])
        app = await start_app(n, path)
        await wait_for(lambda: emu.bound == 1)
        write_config(path, [connector("up1", port, throughput=5, status_poll_interval=0.2)], [route("all", ["up1"])])
        result = await app.reload()
        assert result["connectors"] == {"added": [], "removed": [], "rebound": [], "retuned": ["up1"], "bound": [], "failed": []}
        assert emu.binds_total == 1 and emu.unbinds == 0 and emu.bound == 1
        assert app.drivers["up1"].settings.throughput == 5
        assert {ch.device.status_poll_interval for ch in app.scheduler.device_channels("up1")} == {0.2}
        n.cancel_scope.cancel()
