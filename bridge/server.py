"""The SMPP listener: trio around the sans-IO session in ``bridge/smpp/``.

Rules
-----
* One task tree per TCP connection (reader, writer, timers); an error in one connection closes
  that connection only.
* submit_sm is answered ESME_ROK only from the store's commit callback: durable before
  acknowledged. Responses go out in commit order and are matched by sequence_number.
* The reader never waits for the store: a connection can have many submits in one group commit.
  It stops reading when the peer does not read our answers (bounded output buffer).
* Refusals are immediate and specific: ESME_RTHROTTLED when an ESME is over its throughput (per
  segment), ESME_RMSGQFUL when the queue is at its depth limit, ESME_RSYSERR when the store
  cannot commit.
* Binds: system_id, then the source IP against the ESME's allow-list (so a brute force from a
  disallowed address learns nothing about passwords), then the password (constant time), then
  the bind limit. A failed bind gets its resp with the reason's status, and the connection is
  closed. Repeated failures from one IP are slowed down.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .acceptance import DATA_SM, SUBMIT_MULTI, SUBMIT_SM, Acceptance, Refused, TokenBucket, parse_time
from .config import Config, EsmeConfig, Listener
from .lifecycle import smpp_state
from .metrics import Metrics, command_name, status_name
from .smpp import concat as concat_mod
from .smpp.constants import (
    IF_VERSION_34,
    CommandId,
    Status,
    Tag,
)
from .smpp.pdu import Pdu, make_response
from .smpp.session import NEED_DATA, Closed, LocalProtocolError, Rejected, ServerSession, SessionState
from .smpp.timefmt import format_smpp_time
from .store import Accepted, Store, StoreError, summarise

log = logging.getLogger(__name__)

C = CommandId
BIND_TYPES = {
    C.BIND_TRANSMITTER: "transmitter",
    C.BIND_RECEIVER: "receiver",
    C.BIND_TRANSCEIVER: "transceiver",
}
SUBMIT_LIKE = frozenset({C.SUBMIT_SM, C.DATA_SM, C.SUBMIT_MULTI})
_COMMANDS = {C.SUBMIT_SM: SUBMIT_SM, C.DATA_SM: DATA_SM, C.SUBMIT_MULTI: SUBMIT_MULTI}
ASYNC_REQUESTS = frozenset({C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM})
OUTBUF_LIMIT = 1 << 20  # stop reading while this much of our output is unsent
# After our last answer is written (and our side shut), how long we keep reading, and dropping,
# whatever the peer still sends while we wait for it to close. Closing a socket that still has
# unread input makes the kernel send a reset, which can destroy our last answers before the
# peer has read them; a peer that neither closes nor talks is closed when this runs out.
CLOSE_LINGER = 2.0
# Bind brute-force slowdown: after this many failures from one IP within the window, each
# further attempt waits FAIL_DELAY seconds before it is answered, and attempts from that IP
# take turns: one per FAIL_DELAY, however many connections it opens at once. An attempt whose
# turn would come after session_init is refused at once, unchecked (see bind_failure_delay).
FAIL_LIMIT = 5
FAIL_WINDOW = 60.0
FAIL_DELAY = 2.0


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
            config, clock=clock, is_opted_out=lambda number: store.is_opted_out(number), metrics=metrics
        )
        self.pending_accepts = 0
        self.ports: list[int] = []
        self._fails: dict[str, deque[float]] = {}
        self._next_try: dict[str, float] = {}  # IP -> earliest time its next bind is looked at
        self._cancel: trio.CancelScope | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._accept_scopes: list[trio.CancelScope] = []
        self.shutting_down = False  # set by shutdown(): no new connections, no new binds
        self._rr: dict[str, int] = {}
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
                if esme is None or not esme.enabled:
                    c.request_close("ESME removed or disabled by a config reload")
                elif before is None or (before.password, before.password_hash) != (esme.password, esme.password_hash):
                    c.request_close("the ESME's password changed in a config reload: bind again")
                elif not esme.allows(c.peer):
                    c.request_close("the ESME's allowed_ips no longer include this address (config reload)")
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

    def bind_failure_delay(self, ip: str) -> float | None:
        """Seconds a bind from ``ip`` waits before it is checked (0: at once), or None: refuse it
        at once without checking it, because the attempts already waiting their turn from that
        address fill the session_init time (such a turn would never come: the timer closes the
        connection first). Reserving no turn then keeps the queue, and so any lockout of that
        address, shorter than session_init."""
        now = time.monotonic()
        q = self._fails.get(ip)
        if not q:
            return 0.0
        while q and now - q[0] > FAIL_WINDOW:
            q.popleft()
        if len(q) < FAIL_LIMIT:
            return 0.0
        # Reserve this attempt's turn: parallel connections queue up instead of each waiting
        # FAIL_DELAY at the same time.
        at = max(now, self._next_try.get(ip, 0.0)) + FAIL_DELAY
        if at - now > max(FAIL_DELAY, self.config.smpp.timers.session_init):
            return None
        self._next_try[ip] = at
        return at - now

    def note_bind_failure(self, ip: str) -> None:
        q = self._fails.setdefault(ip, deque(maxlen=100))
        q.append(time.monotonic())
        if len(self._fails) > 10_000:  # bounded memory under a distributed attack
            oldest = next(iter(self._fails))
            self._fails.pop(oldest)
            self._next_try.pop(oldest, None)


class _Outstanding:
    __slots__ = ("event", "response")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: Pdu | None = None


class Connection:
    """One ESME TCP connection (plain or TLS)."""

    def __init__(self, server: SmppServer, stream: trio.abc.Stream, peer: str, listener: str) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.listener = listener
        self.session = ServerSession()
        self.esme: EsmeConfig | None = None
        self.esme_id = ""
        self.bind_type = ""
        self.interface_version = IF_VERSION_34
        self.connected_at = time.monotonic()
        self.last_rx = self.connected_at
        self._out = bytearray()
        self._out_ready = trio.Event()
        self._room = trio.Event()  # set by the writer when the output buffer is below its limit
        self._room.set()
        self._writer_done = trio.Event()  # the writer flushed everything and stopped
        self._output_done = False  # no more output: the writer stops once it has flushed
        self._ended = trio.Event()  # run() is over and the stream closed
        self._read_scope = trio.CancelScope()  # cancelled by request_close: stop reading requests
        self._closing = False
        self._close_reason = ""
        self._outstanding: dict[int, _Outstanding] = {}
        self._enquire_seq: int | None = None
        self._enquire_sent = 0.0
        self._inflight = 0  # submits waiting for their commit
        self._inflight_zero = trio.Event()
        self._inflight_zero.set()
        self._handlers = 0  # request handlers running as tasks (unbind, query_sm ...)
        self._handlers_zero = trio.Event()
        self._handlers_zero.set()
        # The session state the timers last saw, and when (trio time): no state without a timer.
        self._timed_state: SessionState | None = None
        self._timed_since = 0.0
        self._window = trio.Semaphore(server.config.smpp.window)
        self._nursery: trio.Nursery | None = None
        self._cancel: trio.CancelScope | None = None
        self._m_in: dict[int, Any] = {}  # metric children, per command (and status) ...
        self._m_out: dict[tuple[int, int], Any] = {}  # ... cached: labels() is not free
        self._m_accepted: Any = None
        self._registered = False

    # -- public --------------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        return self.session.state in (SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX)

    @property
    def can_receive(self) -> bool:
        return self.session.state in (SessionState.BOUND_RX, SessionState.BOUND_TRX) and not self._closing

    def request_close(self, reason: str) -> None:
        """Close the connection: read no further requests, answer those already read, then
        close (see run() for the steps and the timers that bound each)."""
        if not self._closing:
            log.info("closing SMPP session %s from %s: %s", self.esme_id or "(unbound)", self.peer, reason)
            self._close_reason = reason
        # A closing session no longer counts as a bind (max_binds, receivers).
        self._unregister()
        self._closing = True
        self._read_scope.cancel()
        self._out_ready.set()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.server.unregister_bind(self)

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu | None:
        """Send a request to the ESME (deliver_sm, unbind, enquire_link) within the bind's
        window; return its response, or None on timeout or when the connection goes away."""
        if timeout is None:
            timeout = self.server.config.smpp.timers.response
        async with self._window:
            if self._closing:
                return None
            pdu.sequence_number = self.session.next_sequence()
            waiter = _Outstanding()
            self._outstanding[pdu.sequence_number] = waiter
            try:
                if not self._send(pdu):
                    return None
                with trio.move_on_after(timeout):
                    await waiter.event.wait()
                return waiter.response
            finally:
                self._outstanding.pop(pdu.sequence_number, None)

    async def unbind_and_close(self, grace: float) -> None:
        """Shutdown: answer the submits in flight, unbind, close; all within ``grace`` each."""
        if self.bound and not self._closing:
            with trio.move_on_after(grace):
                await self._inflight_zero.wait()
            await self.request(Pdu(C.UNBIND), timeout=grace)
        self.request_close("shutting down")
        with trio.move_on_after(grace):
            await self._ended.wait()
        if self._cancel is not None:
            self._cancel.cancel()

    # -- task tree -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes.

        Closing, whoever starts it (the peer's EOF or unbind, a timer, a failed bind, a reload,
        shutdown), goes the same way, and every step has a timer:

        1. Read no further requests. (A peer's EOF ends the reading by itself; a close decided
           here cancels the read.)
        2. Wait for the answers still owed for requests already read: submits waiting for their
           commit, unbind, query_sm / cancel_sm / replace_sm. At most the response timer. A
           client that shuts its write side right after submit_sm gets its submit_sm_resp,
           and does not resend a message it believes lost.
        3. Write everything queued; at most the response timer again (a peer that does not read).
        4. If the peer has not closed yet: shut our write side, then read and drop its input
           until it closes, at most CLOSE_LINGER seconds (see there why).
        5. Close the stream.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timers)
                peer_closed = False
                with self._read_scope:
                    peer_closed = await self._reader()
                self.request_close(self._close_reason or "connection ended")
                await self._finish(peer_closed)
                nursery.cancel_scope.cancel()
        finally:
            self._unregister()
            for waiter in self._outstanding.values():
                waiter.event.set()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    try:
                        await self.stream.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
            self._ended.set()

    async def _finish(self, peer_closed: bool) -> None:
        """Steps 2-4 of closing (see run())."""
        t = self.server.config.smpp.timers
        with trio.move_on_after(t.response) as answers:
            await self._inflight_zero.wait()
            await self._handlers_zero.wait()
        if answers.cancelled_caught:
            log.warning(
                "SMPP session %s from %s closes with %d answer(s) not given within the response timer "
                "(%g s); the ESME will resend those messages. Check the store's health (disk, latency)",
                self.esme_id or "(unbound)",
                self.peer,
                self._inflight + self._handlers,
                t.response,
            )
        self._output_done = True
        self._out_ready.set()
        with trio.move_on_after(t.response):
            await self._writer_done.wait()
        if peer_closed or not self._writer_done.is_set():
            return
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
        with trio.move_on_after(CLOSE_LINGER):
            try:
                while await self.stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _reader(self) -> bool:
        """Read and dispatch requests until the peer's EOF (returns True), a lost connection or a
        close decided here (returns False; request_close cancels the read)."""
        session = self.session
        while not self._closing:
            if len(self._out) > OUTBUF_LIMIT:
                # The peer is not reading our answers: stop reading its requests meanwhile.
                self._room = trio.Event()
                await self._room.wait()
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._close_reason = f"connection lost: {exc or type(exc).__name__}"
                return False
            self.last_rx = time.monotonic()
            session.receive_data(data)
            while not self._closing:
                event = session.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Closed):
                    if session.peer_closed:
                        self._close_reason = "peer closed the connection"
                        return True
                    return False  # framing lost: the Rejected before it asked to close
                if isinstance(event, Rejected):
                    self._on_rejected(event)
                    continue
                if self.server.pdu_log is not None:
                    self.server.pdu_log.log_in(self, event)
                if event.command_id & 0x80000000:
                    self._on_response(event)
                    continue
                await self._on_request(event)
        return False

    async def _writer(self) -> None:
        """Writes everything queued, coalescing many answers into one send."""
        while True:
            if not self._out:
                if self._output_done:
                    self._writer_done.set()
                    return
                self._out_ready = trio.Event()
                await self._out_ready.wait()
                continue
            data = bytes(self._out)
            self._out.clear()
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._out.clear()
                self._closing = True
                self._writer_done.set()
                self._room.set()
                if self._cancel is not None:
                    self._cancel.cancel()
                return
            if len(self._out) <= OUTBUF_LIMIT:
                self._room.set()

    async def _timers(self) -> None:
        """Every state of the connection has a timer: OPEN (no bind yet) session_init; bound
        ones inactivity and enquire_link; UNBINDING and CLOSED (an unbind went one way or the
        other, and the close that should follow did not) the response timer; closing itself is
        bounded step by step in run()."""
        t = self.server.config.smpp.timers
        while True:
            await trio.sleep(min(1.0, t.session_init / 4, t.response / 4))
            now = time.monotonic()
            state = self.session.state
            if state is not self._timed_state:
                self._timed_state = state
                self._timed_since = trio.current_time()
            if self._closing:
                continue
            if not self.bound:
                if state == SessionState.OPEN:
                    if now - self.connected_at > t.session_init:
                        self.request_close(f"no bind within session_init timer ({t.session_init:g} s)")
                elif trio.current_time() - self._timed_since > t.response:
                    self.request_close(f"unbind not completed within the response timer ({t.response:g} s)")
                continue
            idle = now - self.last_rx
            if idle > t.inactivity:
                self.request_close(f"no traffic for {t.inactivity:g} s (inactivity timer)")
            elif self._enquire_seq is not None:
                if now - self._enquire_sent > t.response:
                    self.request_close("peer did not answer enquire_link: dead connection")
            elif idle > t.enquire_link:
                pdu = Pdu(C.ENQUIRE_LINK, sequence_number=self.session.next_sequence())
                self._enquire_seq = pdu.sequence_number
                self._enquire_sent = now
                self._send(pdu)

    # -- output --------------------------------------------------------------------------------

    def _send(self, pdu: Pdu) -> bool:
        if self._output_done:
            log.warning(
                "%s to %s (%s) not sent: the connection had already closed its output (the answer came "
                "later than the response timer)",
                command_name(pdu.command_id),
                self.peer,
                self.esme_id or "unbound",
            )
            return False
        try:
            data = self.session.send(pdu)
        except LocalProtocolError as exc:
            log.debug("not sending %s to %s: %s", command_name(pdu.command_id), self.peer, exc)
            return False
        self._out += data
        self._out_ready.set()
        if self.server.pdu_log is not None:
            self.server.pdu_log.log_out(self, pdu)
        key = (pdu.command_id, pdu.command_status)
        child = self._m_out.get(key)
        if child is None:
            child = self._m_out[key] = self.server.metrics.pdus_out.labels(
                self.esme_id or "unbound", command_name(pdu.command_id), status_name(pdu.command_status)
            )
        child.inc()
        return True

    def _respond(self, request: Pdu, status: int = Status.ROK, **params: Any) -> None:
        self._send(make_response(request, status, **params))

    # -- input ---------------------------------------------------------------------------------

    def _count_in(self, command_id: int) -> None:
        child = self._m_in.get(command_id)
        if child is None:
            child = self._m_in[command_id] = self.server.metrics.pdus_in.labels(
                self.esme_id or "unbound", command_name(command_id)
            )
        child.inc()

    def _on_rejected(self, event: Rejected) -> None:
        self.server.metrics.protocol_errors.labels(_reason_label(event)).inc()
        log.info("SMPP protocol error from %s (%s): %s", self.peer, self.esme_id or "unbound", event.reason)
        if event.answer is not None:
            self._send(event.answer)
        if event.close:
            self.request_close(event.reason)

    def _on_response(self, pdu: Pdu) -> None:
        self._count_in(pdu.command_id)
        seq = pdu.sequence_number
        if seq == self._enquire_seq:
            self._enquire_seq = None
            return
        waiter = self._outstanding.get(seq)
        if waiter is not None:
            waiter.response = pdu
            waiter.event.set()
            if pdu.command_id == C.UNBIND_RESP:
                self.request_close("unbind completed")

    async def _on_request(self, pdu: Pdu) -> None:
        cid = pdu.command_id
        self._count_in(cid)
        if cid in SUBMIT_LIKE:
            self._on_submit(pdu)
        elif cid == C.ENQUIRE_LINK:
            self._respond(pdu)
        elif cid in BIND_TYPES:
            await self._on_bind(pdu)
        elif cid == C.UNBIND:
            self._spawn(self._on_unbind, pdu)
        elif cid in ASYNC_REQUESTS:
            self._spawn(self._on_store_request, pdu)
        else:
            # Anything else the session table let through that we do not serve
            # (e.g. alert_notification has no response; outbind is SMSC->ESME only).
            if cid not in (C.ALERT_NOTIFICATION, C.OUTBIND, C.GENERIC_NACK):
                self._respond(pdu, Status.RINVCMDID)

    def _spawn(self, handler: Callable[[Pdu], Any], pdu: Pdu) -> None:
        """Run a request's handler as a task, counted until it has answered (closing waits)."""
        assert self._nursery is not None
        self._handlers += 1
        if self._handlers == 1:
            self._handlers_zero = trio.Event()

        async def run() -> None:
            try:
                await handler(pdu)
            finally:
                self._handlers -= 1
                if self._handlers == 0:
                    self._handlers_zero.set()

        self._nursery.start_soon(run)

    async def _on_unbind(self, pdu: Pdu) -> None:
        """The ESME unbinds: answer its submits in flight, then unbind_resp, then close. The
        ESME should close the connection once it has the unbind_resp; if it does not, run()
        closes it after CLOSE_LINGER."""
        # Answer the submits still waiting for their commit before we say goodbye.
        with trio.move_on_after(self.server.config.smpp.timers.response):
            await self._inflight_zero.wait()
        self._unregister()
        self._respond(pdu)
        self.request_close("unbind requested by the ESME")

    # -- bind ----------------------------------------------------------------------------------

    async def _on_bind(self, pdu: Pdu) -> None:
        server = self.server
        delay = server.bind_failure_delay(self.peer)
        if delay:
            await trio.sleep(delay)
        system_id = pdu.params.get("system_id", "")
        password = pdu.params.get("password", "")
        esme = server.config.esme(system_id)
        status, reason = Status.ROK, ""
        if server.shutting_down:
            status, reason = Status.RBINDFAIL, "the bridge is shutting down"
        elif delay is None:
            status, reason = Status.RBINDFAIL, "too many failed binds from this address; not checked"
        elif esme is None:
            status, reason = Status.RINVSYSID, "unknown system_id"
        elif not esme.enabled:
            status, reason = Status.RBINDFAIL, "ESME disabled in config"
        elif not esme.allows(self.peer):
            status, reason = Status.RBINDFAIL, "source IP not in the ESME's allowed_ips"
        elif not await _check_password(esme, password):
            status, reason = Status.RINVPASWD, "wrong password"
        elif len(server.binds.get(esme.system_id, ())) >= esme.max_binds:
            status, reason = Status.RBINDFAIL, f"max_binds ({esme.max_binds}) reached"
        if status != Status.ROK:
            if status in (Status.RINVSYSID, Status.RINVPASWD):
                server.note_bind_failure(self.peer)
            server.metrics.bind_failures.labels(_bind_fail_label(reason)).inc()
            log.warning(
                "bind refused: system_id=%r from %s: %s. %s",
                system_id,
                self.peer,
                reason,
                _bind_hint(reason),
            )
            self._respond(pdu, status, system_id=server.config.smpp.system_id)
            self.request_close(f"bind failed: {reason}")
            return
        assert esme is not None
        self.esme = esme
        self.esme_id = esme.system_id
        self.bind_type = BIND_TYPES[CommandId(pdu.command_id)]
        self.interface_version = pdu.params.get("interface_version", IF_VERSION_34)
        self._m_in.clear()
        self._m_out.clear()
        resp = make_response(pdu, Status.ROK, system_id=server.config.smpp.system_id)
        resp.tlvs[Tag.SC_INTERFACE_VERSION] = IF_VERSION_34
        self._send(resp)
        server.register_bind(self)
        self._registered = True
        if server.on_bind is not None and self.can_receive:
            server.on_bind(self.esme_id)
        log.info(
            "bound: %s as %s from %s (interface_version 0x%02x)",
            self.esme_id,
            self.bind_type,
            self.peer,
            self.interface_version,
        )

    # -- submit --------------------------------------------------------------------------------

    def _on_submit(self, pdu: Pdu) -> None:
        started = time.perf_counter()
        server = self.server
        esme = self.esme
        assert esme is not None
        try:
            body, concat = concat_mod.extract(pdu)
        except concat_mod.ConcatError as exc:
            self._respond(pdu, exc.status)
            return
        command = _COMMANDS[pdu.command_id]
        try:
            decision = server.acceptance.decide(esme, command, pdu.params, body, concat)
        except Refused as r:
            self._respond(pdu, r.status)
            return
        messages, unsuccess, segments = decision.messages, decision.unsuccess, decision.segments
        depth = server.config.limits.queue_depth
        if server.store.active_count + server.pending_accepts + len(messages) > depth:
            server.metrics.queue_full.labels(esme.system_id).inc(segments)
            self._respond(pdu, Status.RMSGQFUL)
            return
        n = len(messages)
        server.pending_accepts += n
        self._inflight += 1
        self._inflight_zero = trio.Event() if self._inflight == 1 else self._inflight_zero

        def done(result: Any, error: BaseException | None) -> None:
            server.pending_accepts -= n
            self._inflight -= 1
            if self._inflight == 0:
                self._inflight_zero.set()
            if error is not None:
                server.metrics.store_errors.inc()
                log.error("submit from %s not stored: %s", esme.system_id, error)
                self._respond(pdu, Status.RSYSERR)
                return
            accepted = self._m_accepted
            if accepted is None:
                accepted = self._m_accepted = server.metrics.accepted.labels(esme.system_id)
            accepted.inc(segments)
            if pdu.command_id == C.SUBMIT_MULTI:
                ids, unsuccess = result
                self._respond(pdu, message_id=ids, unsuccess_smes=unsuccess)
            else:
                acc: Accepted = result
                self._respond(pdu, message_id=acc.message_id)
            server.metrics.submit_latency.observe(time.perf_counter() - started)

        try:
            if pdu.command_id == C.SUBMIT_MULTI:
                server.store.accept_multi_nowait([m.msg for m in messages], unsuccess, done)
            else:
                server.store.accept_nowait(messages[0].msg, done)
        except StoreError as exc:
            done(None, exc)

    # -- query / cancel / replace --------------------------------------------------------------

    async def _on_store_request(self, pdu: Pdu) -> None:
        esme_id = self.esme_id
        p = pdu.params
        cid = pdu.command_id
        try:
            if cid == C.QUERY_SM:
                # A submit_multi's id stands for all its destinations: store.summarise says
                # what one answer reports for them.
                recs = await self.server.store.get_group(p.get("message_id", ""), esme_id or "")
                if not recs:
                    self._respond(pdu, Status.RINVMSGID, message_id=p.get("message_id", ""))
                    return
                state, final_at = summarise(recs)
                final_date = ""
                if final_at is not None:
                    final_date = format_smpp_time(dt.datetime.fromtimestamp(final_at, dt.UTC))
                self._respond(
                    pdu,
                    message_id=p.get("message_id", ""),
                    final_date=final_date,
                    message_state=int(smpp_state(state)),
                    error_code=0,
                )
            elif cid == C.CANCEL_SM:
                try:
                    n = await self.server.store.cancel(
                        esme_id,
                        message_id=p.get("message_id", ""),
                        source_addr=p.get("source_addr", ""),
                        destination_addr=p.get("destination_addr", ""),
                        service_type=p.get("service_type", ""),
                    )
                except KeyError:
                    self._respond(pdu, Status.RINVMSGID)
                    return
                self._respond(pdu, Status.ROK if n else Status.RCANCELFAIL)
            elif cid == C.REPLACE_SM:
                now = self.server.clock()
                try:
                    schedule = parse_time(p.get("schedule_delivery_time", ""), now)
                except ValueError:
                    self._respond(pdu, Status.RINVSCHED)
                    return
                try:
                    expire = parse_time(p.get("validity_period", ""), now)
                except ValueError:
                    self._respond(pdu, Status.RINVEXPIRY)
                    return
                try:
                    ok = await self.server.store.replace(
                        esme_id,
                        p.get("message_id", ""),
                        source_addr=p.get("source_addr", ""),
                        body=p.get("short_message", b""),
                        schedule_at=schedule,
                        expire_at=expire,
                        registered_delivery=p.get("registered_delivery", 0),
                    )
                except KeyError:
                    self._respond(pdu, Status.RINVMSGID)
                    return
                self._respond(pdu, Status.ROK if ok else Status.RREPLACEFAIL)
        except StoreError as exc:
            log.error("%s from %s failed: %s", command_name(cid), esme_id, exc)
            self._respond(pdu, Status.RSYSERR)


async def _check_password(esme: EsmeConfig, candidate: str) -> bool:
    if esme.password_hash:
        # PBKDF2 takes milliseconds of CPU: keep the event loop free for other sessions.
        return await trio.to_thread.run_sync(esme.check_password, candidate)
    return esme.check_password(candidate)


def _bind_fail_label(reason: str) -> str:
    if reason in ("unknown system_id", "wrong password"):
        return reason.replace(" ", "_")
    if reason.startswith("source IP"):
        return "ip_not_allowed"
    if reason.startswith("max_binds"):
        return "max_binds"
    if reason.startswith("ESME disabled"):
        return "disabled"
    if reason == "the bridge is shutting down":
        return "shutting_down"
    return "other"


def _bind_hint(reason: str) -> str:
    return {
        "unknown system_id": "Check the client's system_id against esmes[].system_id.",
        "wrong password": "Check the client's password; repeated failures from one IP are slowed down.",
        "ESME disabled in config": "Set enabled: true for this ESME and reload.",
        "the bridge is shutting down": "The client should bind again in a moment (to this bridge once it "
        "has restarted, or to another one).",
        "too many failed binds from this address; not checked": (
            f"Binds from this address are checked one per {FAIL_DELAY:g} s after repeated failures: "
            "fix the client's password and let it retry slowly."
        ),
    }.get(
        reason,
        "Add the client's address to allowed_ips and reload."
        if reason.startswith("source IP")
        else "Raise max_binds or close idle binds."
        if reason.startswith("max_binds")
        else "",
    )


def _reason_label(event: Rejected) -> str:
    if event.answer is None:
        return "dropped"
    if event.answer.command_id == C.GENERIC_NACK:
        return "generic_nack"
    return status_name(event.answer.command_status)
