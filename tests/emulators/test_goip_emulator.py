"""The GoIP emulator and the small HTTP server under it, spoken to with raw sockets and httpx."""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest
import trio

from bridge.devices.goip_http.emulator import GoipEmulator, GoipFaults, run_goip_emulator
from bridge.emulators.http import HANG, HttpServer, RawReply, Request, Response, text_response

INBOX_RE = re.compile(
    r"sms=\s*\[(.*?)\];\s*pos=(\d+);\s*sms_row_insert\(l(\d+)_sms_store, sms, pos, (\d+)\)",
    re.DOTALL,
)


async def raw_exchange(
    port: int, data: bytes, *, until: bytes | None = None, limit: float = 2.0
) -> bytes:
    """Send ``data``, read until ``until`` appears or the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(limit):
            while until is None or until not in out:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                out += chunk
    return out


@pytest.fixture
async def emu(nursery):
    # The GoIP's own time moves only when a test says (``emu.advance(s)``), so a send is
    # STARTED until then however slowly this machine runs.
    now = [0.0]
    emulator = GoipEmulator(lines=2, send_duration=0.05, seed=1, first_id=0xE7C, clock=lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += seconds

    emulator.advance = advance
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


@pytest.fixture
async def client(emu):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", trust_env=False
    ) as c:
        yield c


SEND = "/default/en_US/send.html"
STATUS = "/default/en_US/send_status.xml"
INBOX = "/default/en_US/tools.html"
HEALTH = "/default/en_US/status.xml"
CREDS = {"u": "admin", "p": "admin"}


# ---------------------------------------------------------------- GoIP wire format


async def test_send_answers_and_status_slot_lifecycle(emu, client):
    r = await client.get(SEND, params={**CREDS, "l": "1", "n": "999999999", "m": "Hi there"})
    assert r.text == "Sending,L1 Send SMS to:999999999; ID:00000e7c"
    assert (
        await client.get(SEND, params={**CREDS, "l": "1", "n": "1", "m": "x"})
    ).text == "ERROR,L1 busy"
    bad = await client.get(SEND, params={"u": "admin", "p": "nope", "l": "1", "n": "1", "m": "x"})
    assert bad.text == "ERROR,user or password error"
    assert (await client.get(SEND, params={**CREDS, "l": "9", "n": "1", "m": "x"})).text.startswith(
        "ERROR,L9"
    )

    xml = (await client.get(STATUS, params=CREDS)).text
    assert xml.startswith('<?xml version="1.0" encoding="utf-8"?>\n<send-sms-status>')
    assert "<id1>00000e7c</id1><status1>STARTED</status1><error1></error1>" in xml
    assert "<id2></id2><status2></status2><error2></error2>" in xml
    assert "<id8></id8>" in xml and "<id9>" not in xml  # 8 slots even for a 2-line GoIP
    emu.advance(0.07)
    xml = (await client.get(STATUS, params=CREDS)).text
    assert "<id1>00000e7c</id1><status1>DONE</status1><error1></error1>" in xml

    # The next send overwrites the slot.
    r = await client.get(SEND, params={**CREDS, "l": "1", "n": "5", "m": "second"})
    assert r.text.endswith("ID:00000e7d")
    xml = (await client.get(STATUS, params=CREDS)).text
    assert "<id1>00000e7d</id1><status1>STARTED</status1>" in xml and "00000e7c" not in xml
    assert [(s.line, s.destination, s.text, s.id) for s in emu.sent] == [
        (1, "999999999", "Hi there", "00000e7c"),
        (1, "5", "second", "00000e7d"),
    ]


async def test_faults_logout_failures_and_500(emu, client):
    emu.logout(2, 0.1)
    r = await client.get(SEND, params={**CREDS, "l": "2", "n": "1", "m": "x"})
    assert r.text == "ERROR,L2 GSM logout"
    health = (await client.get(HEALTH, auth=("admin", "admin"))).text
    assert (
        "<l2_gsm_status>N</l2_gsm_status>" in health
        and "<l1_gsm_status>Y</l1_gsm_status>" in health
    )
    emu.advance(0.12)
    emu.fail_next(2, 1, "2172")
    r = await client.get(SEND, params={**CREDS, "l": "2", "n": "1", "m": "x"})
    assert r.text.startswith("Sending,L2")
    emu.advance(0.07)
    assert (
        "<status2>DONE</status2><error2>2172</error2>"
        in (await client.get(STATUS, params=CREDS)).text
    )

    r = await client.get(SEND, params={**CREDS, "l": "1", "n": "1", "m": "[tag] x"})
    assert r.status_code == 500
    emu.faults.fail_probability = 1.0
    emu.faults.fail_code = "38"
    await client.get(SEND, params={**CREDS, "l": "1", "n": "1", "m": "prob"})
    assert emu.sent[-1].error == "38"


async def test_faults_at_construction():
    emulator = GoipEmulator(
        lines=1,
        send_duration=0.01,
        logged_out={1: None},
        bare_lf=False,
        wrap_newlines=True,
        endpoints=["send"],
    )
    assert emulator.faults.bare_lf is False and emulator.faults.endpoints == frozenset({"send"})
    assert emulator._lines[1].logged_out(emulator._clock())
    with pytest.raises(ValueError):
        GoipFaults(endpoints=["nope"])
    with pytest.raises(TypeError):
        GoipEmulator(faults=GoipFaults(), hang=True)


async def test_inbox_format_and_delete(emu, client):
    assert emu.inject_sms(1, "+491701234567", "Body, may contain commas") == 0
    emu.inject_sms(1, "+4917", "second")
    assert (await client.get(INBOX, params={"type": "sms_inbox"})).status_code == 401
    page = (await client.get(INBOX, params={"type": "sms_inbox"}, auth=("admin", "admin"))).text
    assert "var sms, pos;\nsms= [" in page
    blocks = INBOX_RE.findall(page)
    assert [(b[1], b[2], b[3]) for b in blocks] == [("2", "1", "1"), ("0", "2", "2")]
    entries = json.loads(f"[{blocks[0][0]}]")
    assert len(entries) == 20 and entries[2:] == [""] * 18
    assert re.fullmatch(
        r"\d\d-\d\d \d\d:\d\d:\d\d,\+491701234567,Body, may contain commas", entries[0]
    )

    await client.get(
        INBOX,
        params={"type": "sms_inbox", "action": "del", "line": "1", "pos": "0"},
        auth=("admin", "admin"),
    )
    assert emu.inbox_entries(1)[0] == "" and emu.inbox_entries(1)[1].endswith(",second")
    emu.inject_sms(2, "+1", "x")
    await client.get(
        INBOX,
        params={"type": "sms_inbox", "action": "del", "line": "-1", "pos": "-1"},
        auth=("admin", "admin"),
    )
    assert emu.inbox_entries(1) == [""] * 20 and emu.inbox_entries(2) == [""] * 20


async def test_inbox_ring_wraps(emu):
    for k in range(22):
        emu.inject_sms(1, "+1", f"m{k}")
    entries = emu.inbox_entries(1)
    assert (
        entries[0].endswith(",m20") and entries[1].endswith(",m21") and entries[2].endswith(",m2")
    )


async def test_control_endpoints(emu, client):
    r = await client.post(
        "/emulator/inject", data={"line": "2", "sender": "+4915", "text": "über", "mojibake": "1"}
    )
    assert r.json() == {"ok": True, "slot": 0}
    assert "Ã¼ber" in emu.inbox_entries(2)[0]
    r = await client.post(
        "/emulator/inject",
        json={"line": 1, "sender": "A", "text": "b", "when": "2025-01-02T03:04:05+00:00"},
    )
    assert r.json()["ok"] and emu.inbox_entries(1)[0] == "01-02 03:04:05,A,b"
    assert (await client.post("/emulator/inject", json={"line": 7})).status_code == 400

    await client.get(SEND, params={**CREDS, "l": "1", "n": "42", "m": "hello"})
    sent = (await client.get("/emulator/sent")).json()
    assert [(s["line"], s["destination"], s["text"]) for s in sent] == [(1, "42", "hello")]

    r = await client.post(
        "/emulator/faults",
        json={
            "bare_lf": False,
            "endpoints": ["status"],
            "logout": {"2": 30},
            "fail_next": {"1": [2, "2172"]},
            "line_errors": {"2": "99"},
        },
    )
    state = r.json()
    assert state["faults"]["bare_lf"] is False and state["faults"]["endpoints"] == ["status"]
    assert state["line_state"]["2"]["logged_out"] and state["line_state"]["1"]["fail_next"] == [
        "2172",
        "2172",
    ]
    assert emu.faults.line_errors == {2: "99"}
    await client.post("/emulator/faults", json={"login": [2]})
    assert not emu._lines[2].logged_out(emu._clock())
    assert (await client.post("/emulator/faults", json={"nonsense": 1})).status_code == 400
    assert (await client.get("/emulator/nothing")).status_code == 404
    assert (await client.get("/default/en_US/nothing.html")).status_code == 404


async def test_bare_lf_default_and_crlf_option(emu):
    request = b"GET /default/en_US/send_status.xml?u=admin&p=admin HTTP/1.1\r\nHost: x\r\n\r\n"
    data = await raw_exchange(emu.test_port, request, until=b"</send-sms-status>\n")
    head = data.split(b"\n\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200 OK\n") and b"\r" not in head
    emu.faults.bare_lf = False
    data = await raw_exchange(emu.test_port, request, until=b"</send-sms-status>\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\n" in data


async def test_keep_alive_pipelining_and_http10(emu):
    one = b"GET /default/en_US/send_status.xml?u=admin&p=admin HTTP/1.1\r\nHost: x\r\n\r\n"
    data = await raw_exchange(emu.test_port, one + b"\r\n" + one, limit=0.5)
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert emu.connections_opened == 1
    # HTTP/1.0 client without keep-alive: the server closes after the answer.
    data = await raw_exchange(emu.test_port, one.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert data.count(b"200 OK") == 1 and data.endswith(b"</send-sms-status>\n")
    # keep_alive=False fault: HTTP/1.0 style answer without Content-Length, then close.
    emu.faults.keep_alive = False
    data = await raw_exchange(emu.test_port, one)
    assert data.startswith(b"HTTP/1.0 200 OK\n") and b"Content-Length" not in data
    assert b"Connection: close" in data and data.endswith(b"</send-sms-status>\n")


async def test_hang_garbage_and_malformed_faults(emu, client):
    emu.faults.garbage = True
    r = await client.get(SEND, params={**CREDS, "l": "1", "n": "1", "m": "x"})
    assert r.status_code == 200 and b"GARBAGE" in r.content
    emu.faults.garbage = False
    emu.faults.malformed_status_xml = True
    assert "<id1>0000<status1>" in (await client.get(STATUS, params=CREDS)).text
    emu.faults.malformed_status_xml = False

    emu.faults.raw_garbage = True
    data = await raw_exchange(emu.test_port, b"GET /default/en_US/status.xml HTTP/1.1\r\n\r\n")
    assert not data.startswith(b"HTTP/") and b"garbage" in data
    emu.faults.raw_garbage = False

    emu.faults.hang = True
    emu.faults.endpoints = {"status"}
    with pytest.raises(httpx.ReadTimeout):
        await client.get(STATUS, params=CREDS, timeout=0.2)
    # Other pages still answer, and so does the hung page once the fault is cleared.
    assert (await client.get(HEALTH, auth=("admin", "admin"))).status_code == 200
    emu.faults.hang = False
    assert (await client.get(STATUS, params=CREDS)).status_code == 200


async def test_run_goip_emulator_serves_on_given_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_goip_emulator(port, 3, password="pw", send_duration=0.01))
        async with httpx.AsyncClient(trust_env=False) as c:
            with trio.fail_after(3):
                while True:
                    try:
                        r = await c.get(
                            f"http://127.0.0.1:{port}{SEND}",
                            params={"u": "admin", "p": "pw", "l": "3", "n": "1", "m": "x"},
                        )
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.02)
        assert r.text.startswith("Sending,L3 ")
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- the HTTP server itself


async def toy_handler(request: Request):
    if request.path == "/boom":
        raise RuntimeError("handler bug")
    if request.path == "/hang":
        return HANG
    if request.path == "/raw":
        return RawReply(b"not http")
    if request.path == "/auth":
        return text_response("yes" if request.check_basic_auth("u", "p:w") else "no")
    if request.path == "/echo":
        return text_response(json.dumps({"m": request.method, "params": request.params}))
    return Response(body=b"ok", eol=b"\n", drip=3)


@pytest.fixture
async def toy(nursery):
    server = HttpServer(toy_handler, name="toy", keepalive_timeout=1.0)
    server.test_port = await nursery.start(server.serve)
    return server


async def test_http_server_survives_bad_requests(toy):
    for junk in [
        b"\x00\x01\x02\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"G" * 20000,
    ]:
        data = await raw_exchange(toy.test_port, junk)
        assert data.startswith(b"HTTP/1.1 4") or data.startswith(b"HTTP/1.1 5"), data[:60]
    data = await raw_exchange(toy.test_port, b"GET /boom HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500")
    # A client that connects and leaves, or leaves mid-request.
    (await trio.open_tcp_stream("127.0.0.1", toy.test_port)).socket.close()
    await raw_exchange(toy.test_port, b"GET / HTT", limit=0.1)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{toy.test_port}", trust_env=False
    ) as c:
        assert (await c.get("/")).content == b"ok"
        r = await c.post("/echo?a=1&a=2", data={"b": "ü x", "a": "form"})
        assert r.json() == {"m": "POST", "params": {"a": "1", "b": "ü x"}}
        assert (await c.get("/auth", auth=("u", "p:w"))).text == "yes"
        assert (await c.get("/auth", auth=("u", "bad"))).text == "no"
        assert (await c.get("/auth", headers={"Authorization": "Basic !!!"})).text == "no"
    assert toy.stats.bad_requests >= 5 and toy.stats.handler_errors == 1


async def test_http_server_bare_lf_requests_and_raw_and_hang(toy):
    data = await raw_exchange(toy.test_port, b"GET / HTTP/1.1\nHost: x\n\n", until=b"ok")
    assert data.startswith(b"HTTP/1.1 200 OK\n") and data.endswith(b"\n\nok")
    assert await raw_exchange(toy.test_port, b"GET /raw HTTP/1.1\r\n\r\n") == b"not http"
    assert await raw_exchange(toy.test_port, b"GET /hang HTTP/1.1\r\n\r\n", limit=0.2) == b""
    assert toy.stats.connections_open <= 1  # the hung one goes when its client leaves
    await trio.sleep(0.05)
    assert toy.stats.connections_open == 0


async def test_http_server_idle_keepalive_timeout(nursery):
    server = HttpServer(toy_handler, keepalive_timeout=0.1)
    port = await nursery.start(server.serve)
    started = trio.current_time()
    data = await raw_exchange(port, b"GET / HTTP/1.1\r\n\r\n", limit=2.0)
    assert data.endswith(b"ok") and trio.current_time() - started < 1.0


async def test_send_jitter_varies_each_send_within_its_bounds_and_the_slot_follows_it(nursery):
    """A real line's send time varies; with send_jitter each send takes send_duration x (1 +-
    up to send_jitter), and the status slot says DONE exactly when that send is over."""
    now = [0.0]
    emu = GoipEmulator(lines=1, send_duration=1.0, send_jitter=0.2, seed=3, clock=lambda: now[0])
    port = await nursery.start(emu.serve)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as c:
        for i in range(20):
            await c.get(SEND, params={**CREDS, "l": "1", "n": "1", "m": f"m{i}"})
            took = emu.sent[-1].duration
            assert 0.8 <= took <= 1.2
            now[0] += took - 0.001
            assert "<status1>STARTED</status1>" in (await c.get(STATUS, params=CREDS)).text
            now[0] += 0.002
            assert "<status1>DONE</status1>" in (await c.get(STATUS, params=CREDS)).text
    durations = {s.duration for s in emu.sent}
    assert len(durations) == 20  # each its own
    with pytest.raises(ValueError, match="send_jitter"):
        GoipEmulator(send_jitter=1.0)
