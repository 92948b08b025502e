"""The brevis.one emulator, spoken to with a plain httpx client (HTTP and HTTPS)."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
import trio
import trustme

from bridge.devices.brevis.emulator import BrevisEmulator, BrevisFaults, run_brevis_emulator

API = "/api.php"
CREDS = {"username": "apiuser", "password": "secret"}


@pytest.fixture
async def emu(nursery):
    emulator = BrevisEmulator()
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


@pytest.fixture
async def client(emu):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", trust_env=False
    ) as c:
        yield c


async def test_manual_examples(emu, client):
    # 4.1 / 5.1: plain SMS by GET and POST.
    r = await client.get(API, params={"text": "Test", "to": "00491701234567", **CREDS, "mode": "number"})
    assert (r.status_code, r.text) == (200, "OK")
    r = await client.post(API, data={**CREDS, "to": "01701234567", "text": "Test", "mode": "number"})
    assert r.status_code == 200
    # 4.3: hex mode, the manual's own hex string.
    r = await client.get(
        API,
        params={
            "text": "48616c6c6f2064696573206973742065696e65205465737420534d53",
            "to": "00491701234567",
            **CREDS,
            "hexmode": "true",
        },
    )
    assert r.status_code == 200
    # 4.2: Telegram mode without automatic SMS fallback.
    r = await client.get(
        API, params={"text": "Test", "to": "00491701234567", **CREDS, "mode": "telnumber", "telauto": "false"}
    )
    assert r.status_code == 200
    assert [(s.to, s.text, s.hexmode, s.mode, s.telauto, s.method) for s in emu.sent] == [
        ("00491701234567", "Test", False, "number", None, "GET"),
        ("01701234567", "Test", False, "number", None, "POST"),
        ("00491701234567", "Hallo dies ist eine Test SMS", True, "number", None, "GET"),
        ("00491701234567", "Test", False, "telnumber", "false", "GET"),
    ]


async def test_error_answers_and_their_order(emu, client):
    async def call(**params):
        r = await client.post(API, data=params)
        return r.status_code, r.text

    assert await call(to="+4917", text="x") == (400, "Error: Parameter miss.")
    assert await call(username="apiuser", password="nope", to="+4917", text="x") == (
        401,
        "401 Unauthorized - Username or Password wrong.",
    )
    assert await call(**CREDS) == (400, "Error: Parameter miss.")  # credentials checked first
    assert await call(**CREDS, to="+4917", text="") == (400, "Error: Parameter miss.")
    assert await call(**CREDS, to="not a number", text="x") == (
        400,
        "Error. See Gateway logs for more information.",
    )
    assert (await call(**CREDS, to="+4917", text="zz", hexmode="true"))[0] == 400
    assert (await call(**CREDS, to="+4917", text="ff", hexmode="true"))[0] == 400  # not UTF-8
    assert (await call(**CREDS, to="+4917", text="x", mode="group"))[0] == 400
    emu.api_access = False
    assert await call(**CREDS, to="+4917", text="x") == (
        403,
        "403 Forbidden - Your User has no right to send SMS over API.",
    )
    emu.api_access = True
    emu.fail_next(1, "timeout")
    assert await call(**CREDS, to="+4917", text="x") == (
        408,
        "FAILED - Timeout or see Gateway logs for more information.",
    )
    emu.faults.status_codes = False
    assert await call(**CREDS, to="+4917", text="") == (200, "Error: Parameter miss.")
    assert await call(**CREDS, to="+4917", text="x", mode="bogus") == (200, "OK")  # -> number
    assert [(s.text, s.mode) for s in emu.sent] == [("x", "number")]
    with pytest.raises(ValueError):
        emu.fail_next(1, "nope")
    with pytest.raises(ValueError):
        BrevisFaults(answer="nope")


async def test_flash_ring_and_success_body(emu, client):
    await client.post(API + "?flash", data={**CREDS, "to": "+4917", "text": "pop"})
    await client.get(API, params={**CREDS, "to": "+4917", "text": "ignored", "ring": ""})
    emu.faults.flash_supported = False  # a gateway bought before 2021
    emu.faults.success_body = "Message sent"
    r = await client.post(API, data={**CREDS, "to": "+4917", "text": "old", "flash": "true"})
    assert r.text == "Message sent"
    assert [(s.text, s.flash, s.ring) for s in emu.sent] == [
        ("pop", True, False),
        ("", False, True),
        ("old", False, False),
    ]


async def test_faults(emu, client):
    emu.faults.garbage = True
    r = await client.post(API, data={**CREDS, "to": "+4917", "text": "x"})
    assert r.status_code == 200 and b"\x00" in r.content
    emu.faults.garbage = False
    emu.faults.hang = True
    emu.faults.hang_after_processing = False
    with pytest.raises(httpx.ReadTimeout):
        await client.post(API, data={**CREDS, "to": "+4917", "text": "y"}, timeout=0.2)
    emu.faults.hang_after_processing = True
    with pytest.raises(httpx.ReadTimeout):
        await client.post(API, data={**CREDS, "to": "+4917", "text": "z"}, timeout=0.2)
    emu.faults.hang = False
    emu.faults.raw_garbage = True
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(API)
    emu.faults.raw_garbage = False
    emu.faults.timeout_sends = True
    emu.fail_next(1, "timeout")
    assert (await client.post(API, data={**CREDS, "to": "+4917", "text": "t"})).status_code == 408
    assert [(s.text, s.answer) for s in emu.sent] == [("x", "OK"), ("z", "OK"), ("t", "timeout")]
    assert (await client.get("/index.php")).status_code == 404
    with pytest.raises(TypeError):
        BrevisEmulator(faults=BrevisFaults(), hang=True)


async def test_control_endpoints(emu, client):
    await client.get(API, params={**CREDS, "to": "+4917", "text": "hello"})
    sent = (await client.get("/emulator/sent")).json()
    assert [(s["to"], s["text"], s["flash"]) for s in sent] == [("+4917", "hello", False)]
    state = (
        await client.post(
            "/emulator/faults",
            json={"api_access": False, "status_codes": False, "fail_next": [2, "timeout"]},
        )
    ).json()
    assert state["api_access"] is False and state["faults"]["status_codes"] is False
    assert state["fail_next"] == ["timeout", "timeout"]
    assert (await client.get("/emulator/state")).json()["sent"] == 1
    assert (await client.post("/emulator/faults", json={"nonsense": 1})).status_code == 400
    assert (await client.post("/emulator/faults", json={"answer": "x"})).status_code == 400
    assert (await client.post("/emulator/faults", json=[1])).status_code == 400
    assert (await client.get("/emulator/nothing")).status_code == 404


async def test_run_brevis_emulator_over_https(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_brevis_emulator(
                port, certfile=str(certfile), keyfile=str(keyfile), password="pw"
            )
        )
        async with httpx.AsyncClient(trust_env=False, verify=client_ctx) as c:
            with trio.fail_after(3):
                while True:
                    try:
                        r = await c.post(
                            f"https://127.0.0.1:{port}{API}",
                            data={"username": "apiuser", "password": "pw", "to": "+4917", "text": "x"},
                        )
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.02)
        assert (r.status_code, r.text) == (200, "OK")
        nursery.cancel_scope.cancel()
