"""The HTTP port on the wire, with raw sockets: what the hand-made server got wrong (HEAD refused,
chunked bodies answered 501, ``Expect: 100-continue`` stalled, no ``Date``) and TLS."""

from __future__ import annotations

import email.utils
import json
import ssl

import attrs
import httpx
import trio
import trustme

from bridge.app import App
from bridge.config import default_demo_config
from bridge.config.model import TlsConfig
from e2e_support import free_port


def demo_app(tmp_path, tls: TlsConfig | None = None) -> App:
    cfg = default_demo_config(tmp_path, smpp_port=0)
    cfg = attrs.evolve(cfg, admin=attrs.evolve(cfg.admin, port=free_port(), **({"tls": tls} if tls else {})))
    return App(cfg)


async def read_answer(stream: trio.SocketStream, buf: bytearray, *, head: bool = False
                      ) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 answer (status line, headers, Content-Length body unless ``head``) from ``stream``."""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(65536)
        assert data, f"connection closed mid-answer; got {bytes(buf)!r}"
        buf += data
    top = bytes(buf).partition(b"\r\n\r\n")[0]
    status, *lines = top.split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.decode().partition(":") for ln in lines)}
    n = 0 if head else int(headers.get("content-length", "0"))
    del buf[: len(top) + 4]
    while len(buf) < n:
        buf += await stream.receive_some(65536)
    body = bytes(buf[:n])
    del buf[:n]
    return status, headers, body


async def connect(app: App) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", app.admin_port)


async def test_head_answers_headers_only_and_the_connection_goes_on(tmp_path):
    async with trio.open_nursery() as nursery:
        app = await nursery.start(demo_app(tmp_path).run)
        stream = await connect(app)
        buf = bytearray()
        await stream.send_all(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                              b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        with trio.fail_after(10):
            status, headers, _ = await read_answer(stream, buf, head=True)
            assert status.startswith(b"HTTP/1.1 200"), status
            assert int(headers["content-length"]) > 0  # what a GET would carry
            # No body follows: the next bytes are the GET's answer.
            status, _, body = await read_answer(stream, buf)
        assert status.startswith(b"HTTP/1.1 200"), (status, bytes(buf))
        assert json.loads(body)["status"] == "ok"
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_a_chunked_body_is_read(tmp_path):
    async with trio.open_nursery() as nursery:
        app = await nursery.start(demo_app(tmp_path).run)
        stream = await connect(app)
        body = b'{"number": "+4917012345678"}'
        chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
        await stream.send_all(b"POST /api/optouts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        with trio.fail_after(10):
            status, _, answer = await read_answer(stream, bytearray())
        assert status.startswith(b"HTTP/1.1 201"), (status, answer)
        assert await app.store.list_optouts()
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_expect_100_continue_is_answered_before_the_body_is_sent(tmp_path):
    async with trio.open_nursery() as nursery:
        app = await nursery.start(demo_app(tmp_path).run)
        stream = await connect(app)
        body = b'{"number": "+4917012345679"}'
        await stream.send_all(b"POST /api/optouts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                              b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        buf = bytearray()
        with trio.fail_after(10):  # the old server waited for the body: the client stalls here
            status, _, _ = await read_answer(stream, buf)
        assert status.startswith(b"HTTP/1.1 100"), status
        await stream.send_all(body)
        with trio.fail_after(10):
            status, _, _ = await read_answer(stream, buf)
        assert status.startswith(b"HTTP/1.1 201"), status
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_every_answer_has_a_date(tmp_path):
    async with trio.open_nursery() as nursery:
        app = await nursery.start(demo_app(tmp_path).run)
        stream = await connect(app)
        await stream.send_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                              b"GET /no/such/thing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buf = bytearray()
        for expected in (b"200", b"404"):
            with trio.fail_after(10):
                status, headers, _ = await read_answer(stream, buf)
            assert expected in status
            assert email.utils.parsedate_to_datetime(headers["date"]).year >= 2024, headers
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_the_http_port_speaks_tls_when_configured(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    async with trio.open_nursery() as nursery:
        app = await nursery.start(demo_app(tmp_path, TlsConfig(cert=cert_file, key=key_file)).run)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        async with httpx.AsyncClient(verify=ctx) as http:
            r = await http.get(f"https://127.0.0.1:{app.admin_port}/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            # Plain HTTP on the TLS port gets no answer a client could mistake for success.
            try:
                plain = await http.get(f"http://127.0.0.1:{app.admin_port}/healthz")
            except httpx.HTTPError:
                pass
            else:
                assert plain.status_code >= 400
        nursery.cancel_scope.cancel()
