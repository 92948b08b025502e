"""The HTTP listener: hypercorn's trio worker serving one ASGI app (bridge/frontends/http/asgi.py).

Why hypercorn: a maintained HTTP/1.1 (and h2) server on trio, built on h11, so HEAD, chunked
request bodies, ``Expect: 100-continue``, ``Date`` and keep-alive behave as clients expect
(tests/frontends/test_http_wire.py checks each with raw sockets). The hand-made server in
bridge/http/server.py stays for the device emulators, whose misbehaviour is the point.

We open the sockets ourselves (hypercorn's ``worker_serve`` takes them) so that port 0 works,
``host`` may name both address families, and a port in use gives the same clear error as before.
TLS is on when ``admin.tls`` names a certificate and key (PEM).
"""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 30.0
GRACEFUL_SECONDS = 2.0


def _open_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening stdlib sockets for host:port (every address host resolves to; with
    port 0 the first one's port is reused for the others)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, type_, proto, _name, addr in infos:
            if socks and port == 0:
                break  # one socket for an ephemeral port (tests): another family may not get it
            sock = socket.socket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(addr)
            sock.listen(256)
            sock.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


class HttpListener:
    """Serves ``asgi_app`` on host:port (optionally TLS) until cancelled.

    ``await nursery.start(listener.serve)`` returns the bound port."""

    def __init__(self, asgi_app: Any, *, host: str, port: int, name: str = "admin HTTP",
                 tls_cert_file: Path | None = None, tls_key_file: Path | None = None,
                 port_help: str = "Set admin.port to a free port, or to 0 to turn the admin HTTP server off",
                 ) -> None:
        self.app = asgi_app
        self.host = host
        self.port = port
        self.name = name
        self.tls = tls_cert_file is not None and tls_key_file is not None
        self.port_help = port_help
        cfg = HyperConfig()
        cfg.keep_alive_timeout = KEEPALIVE_SECONDS
        cfg.graceful_timeout = GRACEFUL_SECONDS
        cfg.include_server_header = False  # no version for scanners
        # hypercorn's own lines ("Running on ... CTRL + C") repeat ours; its warnings and errors stay.
        errorlog = logging.getLogger("bridge.frontends.http.hypercorn")
        errorlog.setLevel(logging.WARNING)
        cfg.errorlog = errorlog
        cfg.accesslog = None  # requests carry tokens and numbers; the app counts them instead
        if self.tls:
            cfg.certfile = str(tls_cert_file)
            cfg.keyfile = str(tls_key_file)
        self.config = cfg
        self.bound_port: int | None = None

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            socks = _open_sockets(self.host, self.port)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                why = "the port is in use by another program"
            raise OSError(exc.errno, f"{self.name} cannot listen on {self.host}:{self.port}: {why}. "
                          f"{self.port_help}") from None
        try:
            ssl_context = self.config.create_ssl_context()
        except (OSError, ValueError) as exc:
            for s in socks:
                s.close()
            raise OSError(errno.EINVAL, f"{self.name}: cannot load the TLS certificate or key "
                          f"({exc}); check admin.tls cert and key") from None
        del ssl_context  # hypercorn builds its own from the same files; this was the check
        self.bound_port = socks[0].getsockname()[1]
        sockets = Sockets(secure_sockets=socks if self.tls else [],
                          insecure_sockets=[] if self.tls else socks, quic_sockets=[])
        log.info("%s on %s://%s:%d", self.name, "https" if self.tls else "http", self.host, self.bound_port)

        async def started(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            await worker_serve(wrap_app(self.app, self.config.wsgi_max_body_size, "asgi"), self.config,
                               sockets=sockets, task_status=task_status)

        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(started)
                task_status.started(self.bound_port)
        finally:
            for s in socks:  # hypercorn does not close what it was handed
                s.close()
