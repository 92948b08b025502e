"""The devices' HTTP client (bridge/devices/lan_http.py) on the wire: what a device receives."""

from __future__ import annotations

import functools

import httpx
import trio

from bridge.devices.http_common import HttpDevice


async def test_a_request_on_the_wire_has_the_callers_headers_once_and_its_body(nursery):
    seen: list[bytes] = []

    async def device(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 7:
            data += await stream.receive_some(65536)
        seen.append(data)
        await stream.send_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    listeners = await nursery.start(functools.partial(trio.serve_tcp, device, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    http = HttpDevice(timeout=2.0, redact=lambda s: s, user_agent="smpp-bridge-test")
    try:
        answer = await http.request(
            "POST", f"http://127.0.0.1:{port}/api/send?x=1", content=b'{"a":1}',
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            auth=httpx.BasicAuth("user", "pw"),
        )  # fmt: skip
    finally:
        await http.aclose()
    assert (answer.status, answer.body, answer.error) == (201, b"ok", None)
    head, body = seen[0].split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/send?x=1 HTTP/1.1"
    headers = [tuple(line.split(b": ", 1)) for line in lines[1:]]
    names = [k.lower() for k, _ in headers]
    assert len(names) == len(set(names)), headers  # each header once: the caller's Accept wins
    got = {k.lower(): v for k, v in headers}
    assert got[b"accept"] == b"application/json"
    assert got[b"host"] == f"127.0.0.1:{port}".encode()
    assert got[b"user-agent"] == b"smpp-bridge-test"
    assert got[b"authorization"] == b"Basic dXNlcjpwdw=="
    assert got[b"content-length"] == b"7" and body == b'{"a":1}'
