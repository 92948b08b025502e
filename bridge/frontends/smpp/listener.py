"""The SMPP listener: the listening sockets (plain and TLS), the registry of binds and the
brute-force slowdown, reload and graceful shutdown. Each accepted connection is a ``Connection``
(``connection.py``, trio I/O); what a connection decides is in ``protocol.py`` (sans-IO).

Rules
-----
* One task tree per TCP connection; an error in one connection closes that connection only.
* Receipts and MO go to an ESME's receiver binds in turn (``next_receiver``).
* Shutdown refuses new connections and binds, then unbinds every session within unbind_grace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from ...acceptance import Acceptance, TokenBucket
from ...config import Config, EsmeConfig, Listener
from ...metrics import Metrics
from ...store import Store
from . import protocol as proto
from .connection import Connection
from .protocol import BindKey, BindThrottle
from .resubmits import UnansweredSubmits

log = logging.getLogger(__name__)


class SmppServer:
    """Accepts ESME connections on every configured listener."""

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.connections: set[Connection] = set()
        self.binds: dict[str, list[Connection]] = {}
        # Every decision about a submit (validity, coding, segments, route, opt-out, throughput).
        self.acceptance = Acceptance(
            config,
            clock=clock,
            is_opted_out=lambda number: store.is_opted_out(number),
            metrics=metrics,
            queued=lambda: store.active_count,
        )
        self.ports: list[int] = []
        # Failed binds per source address (brute-force slowdown), on trio's clock.
        self.bind_throttle = BindThrottle(trio.current_time)
        self._cancel: trio.CancelScope | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._accept_scopes: list[trio.CancelScope] = []
        self.shutting_down = False  # set by shutdown(): no new connections, no new binds
        self._rr: dict[str, int] = {}
        # Answers to committed submits that connections could not write (resubmits.py).
        self.unanswered = UnansweredSubmits()
        # Set by the app: hears about binds.
        self.on_bind: Callable[[str], None] | None = None
        # Set by the app when logging.pdu_log is on: log_in(conn, pdu) / log_out(conn, pdu).
        self.pdu_log: Any = None

    # -- config --------------------------------------------------------------------------------

    def update_config(self, config: Config) -> None:
        """Apply a reloaded config: new ESME settings take effect for new requests and for the
        binds that stay. Binds of ESMEs that were removed or disabled, whose password changed,
        or whose address is no longer allowed are closed; every other bind is kept."""
        old = self.config
        self.config = config
        for esme_id, conns in list(self.binds.items()):
            esme = config.esme(esme_id)
            before = old.esme(esme_id)
            for c in list(conns):  # request_close() removes c from conns
                reason = proto.reload_verdict(before, esme, c.peer)
                if reason is not None:
                    c.request_close(reason)
                else:
                    c.esme = esme
        self.acceptance.update_config(config)

    # The route lookup lives in the acceptance step; the app sets it here.
    @property
    def route_for(self) -> Callable[[str, str], str | None] | None:
        return self.acceptance.route_for

    @route_for.setter
    def route_for(self, fn: Callable[[str, str], str | None] | None) -> None:
        self.acceptance.route_for = fn

    @property
    def routes_configured(self) -> bool:
        return self.acceptance.routes_configured

    @routes_configured.setter
    def routes_configured(self, value: bool) -> None:
        self.acceptance.routes_configured = value

    def bucket(self, esme: EsmeConfig) -> TokenBucket:
        return self.acceptance.bucket(esme)

    # -- serving -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[list[int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on every configured listener until cancelled. ``task_status.started`` gets the
        bound ports (useful with port 0)."""
        listeners: list[tuple[Listener, trio.SocketListener]] = []
        for spec in self.config.smpp.listeners:
            for sock in await trio.open_tcp_listeners(spec.port, host=spec.host):
                listeners.append((spec, sock))
        self.ports = [sock.socket.getsockname()[1] for _spec, sock in listeners]
        for spec, sock in listeners:
            log.info(
                "SMPP listening on %s:%d%s",
                spec.host,
                sock.socket.getsockname()[1],
                " (TLS)" if spec.tls else "",
            )
        async with trio.open_nursery() as nursery:
            self._conn_nursery = nursery
            for spec, sock in listeners:
                scope = trio.CancelScope()
                self._accept_scopes.append(scope)
                nursery.start_soon(self._accept_loop, spec, sock, scope)
            task_status.started(self.ports)

    async def _accept_loop(self, spec: Listener, sock: trio.SocketListener, scope: trio.CancelScope) -> None:
        with scope:  # cancelled by shutdown(): the listening socket is closed, new connections refused
            await self._accept_on(spec, sock)

    async def _accept_on(self, spec: Listener, sock: trio.SocketListener) -> None:
        ssl_context = None
        if spec.tls is not None:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(str(spec.tls.cert), str(spec.tls.key))
        name = f"{spec.host}:{spec.port}{'/tls' if spec.tls else ''}"
        assert self._conn_nursery is not None
        async with sock:
            while True:
                try:
                    stream = await sock.accept()
                except OSError as exc:  # EMFILE and friends: back off instead of spinning
                    log.error("accept failed on %s: %s; retrying in 1 s", name, exc)
                    await trio.sleep(1)
                    continue
                if len(self.connections) >= self.config.smpp.max_connections:
                    self.metrics.connections_refused.labels(name).inc()
                    await stream.aclose()
                    continue
                self._conn_nursery.start_soon(self._handle, stream, name, ssl_context)

    async def _handle(self, tcp: trio.SocketStream, name: str, ssl_context: Any) -> None:
        try:
            peer = tcp.socket.getpeername()[0]
        except OSError:
            await tcp.aclose()
            return
        stream: trio.abc.Stream = tcp
        if ssl_context is not None:
            stream = trio.SSLStream(tcp, ssl_context, server_side=True)
        conn = Connection(self, stream, peer, name)
        self.connections.add(conn)
        gauge = self.metrics.connections.labels(name)
        gauge.inc()
        try:
            await conn.run()
        except Exception:
            log.exception("connection from %s ended by an internal error", peer)
        finally:
            self.connections.discard(conn)
            gauge.dec()

    async def shutdown(self) -> None:
        """Graceful stop: stop listening (new connections are refused by the OS), refuse binds on
        the connections already open, unbind every session and wait at most unbind_grace for
        answers. A bind accepted now would only be unbound again a moment later, and the ESME
        could not tell that from a bridge that works: refusing it sends the client to retry."""
        if not self.shutting_down:
            log.info("SMPP: shutting down: no new connections or binds; unbinding %d session(s)", len(self.binds))
        self.shutting_down = True
        for scope in self._accept_scopes:
            scope.cancel()
        grace = self.config.smpp.timers.unbind_grace
        with trio.move_on_after(grace + 1):
            async with trio.open_nursery() as n:
                for conn in list(self.connections):
                    n.start_soon(conn.unbind_and_close, grace)

    # -- binds ---------------------------------------------------------------------------------

    def register_bind(self, conn: Connection) -> None:
        self.binds.setdefault(conn.esme_id, []).append(conn)
        self.metrics.binds.labels(conn.esme_id, conn.bind_type).inc()

    def unregister_bind(self, conn: Connection) -> None:
        conns = self.binds.get(conn.esme_id)
        if conns and conn in conns:
            conns.remove(conn)
            self.metrics.binds.labels(conn.esme_id, conn.bind_type).dec()
            if not conns:
                del self.binds[conn.esme_id]

    def receivers(self, esme_id: str) -> list[Connection]:
        """Bound sessions of an ESME that can take deliver_sm (RX and TRX), in bind order.
        Only a look: it does not move the turn (see next_receiver)."""
        return [c for c in self.binds.get(esme_id, ()) if c.can_receive]

    def next_receiver(self, esme_id: str) -> Connection | None:
        """The receiver bind whose turn it is to take the next deliver_sm of an ESME (receipt or
        MO), or None when it has none. Call it once per item: each call moves the turn on, so
        items go to the ESME's receiver binds in turn and each bind gets an even share."""
        conns = self.receivers(esme_id)
        if not conns:
            self._rr.pop(esme_id, None)
            return None
        turn = self._rr.get(esme_id, 0) % len(conns)
        self._rr[esme_id] = turn + 1
        return conns[turn]

    def bind_failure_delay(self, key: BindKey) -> float | None:
        """See BindThrottle.delay: seconds a bind for ``key`` waits, or None: refuse it unchecked."""
        return self.bind_throttle.delay(key, self.config.smpp.timers.session_init)

    def note_bind_failure(self, key: BindKey) -> None:
        self.bind_throttle.note_failure(key)
