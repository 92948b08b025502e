"""The LTE router emulator, spoken to with a plain httpx client and raw sockets."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import httpx
import pytest
import trio

from bridge.devices.router.emulator import (
    RouterEmulator,
    RouterFaults,
    StorageFull,
    run_router_emulator,
)

SEND = "/cgi-bin/sms_send"
LIST = "/cgi-bin/sms_list"
READ = "/cgi-bin/sms_read"
DELETE = "/cgi-bin/sms_delete"
TOTAL = "/cgi-bin/sms_total"
CREDS = {"username": "user1", "password": "user_pass"}
DASHES = "-" * 30


@pytest.fixture
async def emu(nursery):
    emulator = RouterEmulator(storage=5)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


@pytest.fixture
async def client(emu):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", trust_env=False
    ) as c:
        yield c


async def raw_get(port: int, target: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out = b""
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        with trio.move_on_after(2):
            while chunk := await stream.receive_some(65536):
                out += chunk
    return out


# ---------------------------------------------------------------- sms_send


async def test_send_get_and_post_with_percent_n(emu, client):
    # The manual's example URL, byte for byte: %20 spaces and a raw %n line break.
    data = await raw_get(
        emu.test_port,
        f"{SEND}?username=user1&password=user_pass&text=Line%20one%nLine%20two&number=07700900123",
    )
    assert data.startswith(b"HTTP/1.0 200 OK\r\n") or data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nOK\n")
    r = await client.post(SEND, data={**CREDS, "number": "+37060000001", "text": "a%nb 100%"})
    assert r.status_code == 200 and r.text == "OK\n"
    assert [(s.number, s.text, s.method) for s in emu.sent] == [
        ("07700900123", "Line one\nLine two", "GET"),
        ("+37060000001", "a\nb 100%", "POST"),
    ]
    assert emu.requests[-1].target == SEND  # POST: nothing in the URL


async def test_send_answers(emu, client):
    async def send(**params):
        return (await client.get(SEND, params={**CREDS, **params})).text

    assert await send(number="12ab", text="x") == "WRONG_NUMBER\n"
    assert await send(number="", text="x") == "WRONG_NUMBER\n"
    assert await send(number="+4917") == "ERROR\n"  # no text
    emu.faults.wrong_number = r"^\+99"
    assert await send(number="+99123", text="x") == "WRONG_NUMBER\n"
    emu.faults.max_text_length = 5
    assert await send(number="+4917", text="too long") == "ERROR\n"
    emu.faults.max_text_length = None
    emu.fail_next(2, "TIMEOUT")
    emu.fail_next(1, "ERROR")
    assert await send(number="+4917", text="t1") == "TIMEOUT\n"
    emu.faults.timeout_sends = False
    assert await send(number="+4917", text="t2") == "TIMEOUT\n"
    assert await send(number="+4917", text="e") == "ERROR\n"
    emu.faults.answer = "WRONG_NUMBER"
    assert await send(number="+4917", text="w") == "WRONG_NUMBER\n"
    emu.faults.answer = None
    emu.faults.trailing_newline = False
    assert await send(number="+4917", text="ok") == "OK"
    assert [(s.text, s.answer) for s in emu.sent] == [("t1", "TIMEOUT"), ("ok", "OK")]
    with pytest.raises(ValueError):
        emu.fail_next(1, "MAYBE")


async def test_disabled_and_auth_styles(emu, client):
    bad = {"username": "user1", "password": "nope"}
    r = await client.get(SEND, params={**bad, "number": "1", "text": "x"})
    assert (r.status_code, r.text) == (401, "Bad username or password\n")
    emu.faults.auth_style = "body"
    r = await client.get(LIST, params=bad)
    assert (r.status_code, r.text) == (200, "Bad username or password\n")
    emu.enabled = False  # checked before the credentials
    for path in (SEND, LIST, READ, DELETE, TOTAL):
        r = await client.get(path, params=bad)
        assert (r.status_code, r.text) == (200, "Disabled\n")
    with pytest.raises(ValueError):
        RouterFaults(auth_style="418")
    assert emu.sent == []


async def test_modem_serialises_sends(emu, client):
    emu.send_duration = 0.1
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for k in range(3):
            params = {**CREDS, "number": "+4917", "text": f"m{k}"}
            nursery.start_soon(lambda p=params: client.get(SEND, params=p))
    assert trio.current_time() - started >= 0.3
    assert sorted(s.text for s in emu.sent) == ["m0", "m1", "m2"]


# ---------------------------------------------------------------- inbox


async def test_list_read_delete_total_and_index_reuse(emu, client):
    assert (await client.get(LIST, params=CREDS)).text == "NO MESSAGES\n"
    assert (await client.get(TOTAL, params=CREDS)).text == "Used: 0\nTotal: 5\n"
    when = datetime(2024, 10, 26, 19, 4, 11, tzinfo=timezone.utc)
    assert emu.inject_sms("+491775280961", "Test ", when) == 0
    assert emu.inject_sms("+4917", "two\nlines", when.replace(second=12)) == 1
    listing = (await client.get(LIST, params=CREDS)).text
    assert listing == (
        "Index: 0\nDate: Sat Oct 26 19:04:11 2024\nSender: +491775280961\nText: Test \n"
        f"Status: unread\n{DASHES}\n"
        "Index: 1\nDate: Sat Oct 26 19:04:12 2024\nSender: +4917\nText: two\nlines\n"
        f"Status: unread\n{DASHES}\n"
    )
    assert (await client.get(LIST, params=CREDS)).text.count("Status: read") == 2
    assert (await client.get(TOTAL, params=CREDS)).text == "Used: 2\nTotal: 5\n"

    read = (await client.post(READ, data={**CREDS, "number": "1"})).text
    assert read.startswith("Index: 1\n") and read.endswith(f"Status: read\n{DASHES}\n")
    assert (await client.get(READ, params={**CREDS, "number": "4"})).text == "NO MESSAGE\n"
    assert (await client.get(READ, params={**CREDS, "number": "x"})).text == "WRONG_NUMBER\n"

    assert (await client.get(DELETE, params={**CREDS, "number": "0"})).text == "OK\n"
    assert (await client.get(DELETE, params={**CREDS, "number": "0"})).text == "NO MESSAGE\n"
    assert emu.deleted == [0]
    assert emu.inject_sms("+4933", "reuses index 0") == 0  # lowest free index
    for k in range(3):
        emu.inject_sms("+1", f"fill {k}")
    with pytest.raises(StorageFull):
        emu.inject_sms("+1", "no room")
    assert emu.delete_sms(4) and not emu.delete_sms(4)
    emu.empty_answer = ""
    for index in list(emu.inbox_entries()):
        emu.delete_sms(index)
    assert (await client.get(LIST, params=CREDS)).text == "\n"


async def test_part_missing_shape_and_completion(emu, client):
    index = emu.inject_sms("Tarifinfo", "", parts=[None, None, "res Kontingents"])
    text = (await client.get(READ, params={**CREDS, "number": str(index)})).text
    assert "\nText:  <part_missing>  <part_missing> res Kontingents\n" in text
    emu.complete_sms(index, "Erster Teil, ", "zweiter Teil, ")
    assert emu.inbox_entries()[index] == "Erster Teil, zweiter Teil, res Kontingents"
    other = emu.inject_sms("+4917", "half", part_missing=True)
    assert emu.inbox_entries()[other] == "half <part_missing> "
    with pytest.raises(ValueError):
        emu.complete_sms(other, "a", "b")


# ---------------------------------------------------------------- faults and hooks


async def test_faults_per_endpoint(emu, client):
    emu.faults.garbage = True
    emu.faults.endpoints = {"send"}
    r = await client.get(SEND, params={**CREDS, "number": "+4917", "text": "x"})
    assert r.status_code == 200 and b"\x00" in r.content
    assert (await client.get(TOTAL, params=CREDS)).text.startswith("Used:")
    emu.faults.garbage = False

    emu.faults.raw_garbage = True
    data = await raw_get(emu.test_port, f"{SEND}?username=user1")
    assert not data.startswith(b"HTTP/") and b"garbage" in data
    emu.faults.raw_garbage = False

    emu.faults.hang = True
    emu.faults.hang_after_processing = False
    with pytest.raises(httpx.ReadTimeout):
        await client.get(SEND, params={**CREDS, "number": "+4917", "text": "y"}, timeout=0.2)
    assert [s.text for s in emu.sent] == ["x"]
    emu.faults.hang_after_processing = True
    with pytest.raises(httpx.ReadTimeout):
        await client.get(SEND, params={**CREDS, "number": "+4917", "text": "z"}, timeout=0.2)
    assert [s.text for s in emu.sent] == ["x", "z"]
    emu.faults.hang = False

    emu.faults.get_only = True
    r = await client.post(SEND, data={**CREDS, "number": "+4917", "text": "p"})
    assert r.status_code == 405
    emu.faults.get_only = False
    assert (await client.get("/cgi-bin/nothing")).status_code == 404
    with pytest.raises(ValueError):
        RouterFaults(endpoints=["nope"])
    with pytest.raises(TypeError):
        RouterEmulator(faults=RouterFaults(), hang=True)


async def test_control_endpoints(emu, client):
    r = await client.post(
        "/emulator/inject",
        json={"sender": "+4917", "text": "hi", "when": "2025-01-02T03:04:05+00:00"},
    )
    assert r.json() == {"ok": True, "index": 0}
    r = await client.post(
        "/emulator/inject", data={"sender": "+4918", "text": "half", "part_missing": "1"}
    )
    assert r.json()["index"] == 1
    assert "<part_missing>" in emu.inbox_entries()[1]
    assert (await client.post("/emulator/complete", json={"index": 1, "text": "!"})).json()["ok"]
    assert emu.inbox_entries()[1] == "half!"
    assert (await client.post("/emulator/inject", json={"text": "no sender"})).status_code == 400

    await client.get(SEND, params={**CREDS, "number": "+4917", "text": "hello", "modem": "1-1"})
    sent = (await client.get("/emulator/sent")).json()
    assert [(s["number"], s["text"], s["modem"]) for s in sent] == [("+4917", "hello", "1-1")]

    state = (
        await client.post(
            "/emulator/faults",
            json={"enabled": False, "endpoints": ["list"], "fail_next": [2, "TIMEOUT"]},
        )
    ).json()
    assert state["enabled"] is False and state["faults"]["endpoints"] == ["list"]
    assert state["fail_next"] == ["TIMEOUT", "TIMEOUT"] and state["inbox"]["1"] == "half!"
    assert emu.faults.endpoints == frozenset({"list"})
    assert (await client.post("/emulator/faults", json={"nonsense": 1})).status_code == 400
    assert (await client.post("/emulator/faults", json={"answer": "NOPE"})).status_code == 400
    assert (await client.get("/emulator/nothing")).status_code == 404


async def test_run_router_emulator_serves_on_given_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_router_emulator(port, password="pw", auth_style="body"))
        async with httpx.AsyncClient(trust_env=False) as c:
            with trio.fail_after(3):
                while True:
                    try:
                        r = await c.post(
                            f"http://127.0.0.1:{port}{SEND}",
                            data={"username": "user1", "password": "pw", "number": "1234", "text": "x"},
                        )
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.02)
            assert r.text == "OK\n"
            r = await c.get(f"http://127.0.0.1:{port}{LIST}", params={"username": "user1"})
            assert (r.status_code, r.text) == (200, "Bad username or password\n")
        nursery.cancel_scope.cancel()
