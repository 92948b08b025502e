"""One ESME connection: trio around the sans-IO session in ``bridge/smpp/`` and the sans-IO
decisions in ``protocol.py`` (binds, submits, query/cancel/replace answers, timers). This file
owns the reader, writer and timer tasks of a connection, its window, and its calls to the store.

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
* Binds are decided in protocol.py (its docstring has the order of the checks); the password
  hash is checked here, in a worker thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ...config import EsmeConfig
from ...metrics import command_name, status_name
from ...smpp.constants import IF_VERSION_34, CommandId, Status
from ...smpp.pdu import Pdu, make_response
from ...smpp.session import NEED_DATA, Closed, LocalProtocolError, Rejected, ServerSession
from ...store import StoreError
from . import protocol as proto
from .resubmits import resubmit_key
from .protocol import (
    ASYNC_REQUESTS,
    BIND_TYPES,
    BOUND_STATES,
    RECEIVER_STATES,
    SEND_ENQUIRE_LINK,
    SUBMIT_LIKE,
    CloseSession,
    SessionTimers,
    SubmitRefusal,
)

if TYPE_CHECKING:
    from .listener import SmppServer

log = logging.getLogger(__name__)

C = CommandId
OUTBUF_LIMIT = 1 << 20  # stop reading while this much of our output is unsent
# After our last answer is written (and our side shut), how long we keep reading, and dropping,
# whatever the peer still sends while we wait for it to close. Closing a socket that still has
# unread input makes the kernel send a reset, which can destroy our last answers before the
# peer has read them; a peer that neither closes nor talks is closed when this runs out.
CLOSE_LINGER = 2.0


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
        # session_init, inactivity and enquire_link, on trio's clock (a MockClock drives them).
        self.timers = SessionTimers(trio.current_time())
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
        self._inflight = 0  # submits waiting for their commit
        self._inflight_zero = trio.Event()
        self._inflight_zero.set()
        self._handlers = 0  # request handlers running as tasks (unbind, query_sm ...)
        self._handlers_zero = trio.Event()
        self._handlers_zero.set()
        self._window = trio.Semaphore(server.config.smpp.window)
        self._nursery: trio.Nursery | None = None
        self._cancel: trio.CancelScope | None = None
        self._m_in: dict[int, Any] = {}  # metric children, per command (and status) ...
        self._m_out: dict[tuple[int, int], Any] = {}  # ... cached: labels() is not free
        self._m_accepted: Any = None
        self._registered = False
        self._binding = False  # a bind is being answered (the session_init timer waits for it)
        self._unbinding = False  # the ESME's unbind is being answered
        # submit_sm_resp queued but not yet written: (resubmit key, message id). What is left
        # when the connection ends goes to server.unanswered (resubmits.py says why).
        self._unwritten: list[tuple[Any, str]] = []
        # The socket's descriptor when the stream is plain TCP: while the writer task is idle, an
        # answer is written from the turn that made it (``_flush_now``), not one task switch and
        # a trio ``send_all`` later. TLS (and any other stream) always goes through the writer.
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        self._writer_idle = False

    # -- public --------------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        return self.session.state in BOUND_STATES

    @property
    def can_receive(self) -> bool:
        return self.session.state in RECEIVER_STATES and not self._closing

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

    @property
    def connected_at(self) -> float:
        """When the connection was accepted, in trio's clock (trio.current_time())."""
        return self.timers.connected_at

    @property
    def last_rx(self) -> float:
        return self.timers.last_rx

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.server.unregister_bind(self)

    @property
    def requests_outstanding(self) -> int:
        """Requests to the ESME (deliver_sm, enquire_link, unbind) sent and not yet answered."""
        return len(self._outstanding)

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
            self._hand_over_unwritten()
            for waiter in self._outstanding.values():
                waiter.event.set()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    try:
                        await self.stream.aclose()
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass
            self._ended.set()

    def _hand_over_unwritten(self) -> None:
        """Answers to committed submits that never left: their messages will come again."""
        if not self._unwritten or not self.esme_id:
            return
        now = trio.current_time()
        for key, message_id in self._unwritten:
            self.server.unanswered.remember(self.esme_id, key, message_id, now)
        log.info(
            "SMPP session %s from %s ended with %d submit_sm_resp not written; the same message(s) sent "
            "again by %s within %g s get the first id instead of a second SMS",
            self.esme_id, self.peer, len(self._unwritten), self.esme_id, self.server.unanswered.hold,
        )
        self._unwritten = []

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
            self.timers.received(trio.current_time())
            session.receive_data(data)
            while not self._closing:
                event = session.next_event()
                if event is NEED_DATA:
                    # All read: a lone submit is committed (and answered) now, before this task
                    # waits for the socket, instead of in the store writer's next turn.
                    self.server.store.commit_now()
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
                self._writer_idle = True
                try:
                    await self._out_ready.wait()
                finally:
                    self._writer_idle = False
                continue
            data = bytes(self._out)
            self._out.clear()
            batch, self._unwritten = self._unwritten, []
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._unwritten[:0] = batch  # never written: the ESME will send these again
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
        """Every state of the connection has a timer (SessionTimers in protocol.py says which and
        when); closing itself is bounded step by step in run()."""
        while True:
            t = self.server.config.smpp.timers
            await trio.sleep(SessionTimers.interval(t))
            verdict = self.timers.check(
                trio.current_time(), self.session.state, t, closing=self._closing, binding=self._binding
            )
            if isinstance(verdict, CloseSession):
                self.request_close(verdict.reason)
            elif verdict is SEND_ENQUIRE_LINK:
                pdu = Pdu(C.ENQUIRE_LINK, sequence_number=self.session.next_sequence())
                self.timers.enquire_link_sent(pdu.sequence_number, trio.current_time())
                self._send(pdu)

    # -- output --------------------------------------------------------------------------------

    def _send(self, pdu: Pdu, resubmit: tuple[Any, str] | None = None) -> bool:
        """Queue ``pdu`` (and write it at once when the writer is idle). ``resubmit``: the
        (resubmit key, message id) of a submit_sm_resp, kept in ``_unwritten`` until the answer
        has left. False when nothing was queued (the output is closed, or the session refused)."""
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
        if resubmit is not None:
            self._unwritten.append(resubmit)
        self._flush_now()
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

    def _flush_now(self) -> None:
        """Hand the queued output to the kernel now if the writer task is idle (and the stream
        is plain TCP); whatever is left, or any error, is the writer's: it alone ends the output
        on a failed write."""
        if self._writer_idle and self._fd >= 0 and not self._out_ready.is_set():
            try:
                n = os.write(self._fd, self._out)
            except OSError:  # would block, or the connection broke: the writer finds out
                n = 0
            if n == len(self._out):
                self._out.clear()
                self._unwritten.clear()  # every queued answer has left
                return
            del self._out[:n]
        self._out_ready.set()

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
        self.server.metrics.protocol_errors.labels(proto.rejected_label(event)).inc()
        log.info("SMPP protocol error from %s (%s): %s", self.peer, self.esme_id or "unbound", event.reason)
        if event.answer is not None:
            self._send(event.answer)
        if event.close:
            self.request_close(event.reason)

    def _on_response(self, pdu: Pdu) -> None:
        self._count_in(pdu.command_id)
        seq = pdu.sequence_number
        if self.timers.is_enquire_link_answer(seq):
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
            if self._unbinding:
                # A second unbind read while the first is answered: the session is no longer
                # bound, and an unbind outside a bound session is refused with RINVBNDSTS
                # (session rules 3 and 6: an error answer may always be sent).
                self._respond(pdu, Status.RINVBNDSTS)
            else:
                self._unbinding = True
                self._spawn(self._on_unbind, pdu)
        elif cid in ASYNC_REQUESTS:
            self._spawn(self._on_store_request, pdu)
        else:
            answer = proto.other_request_answer(pdu)
            if answer is not None:
                self._send(answer)

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
        # A bind for credentials with repeated failures (address and system_id: BindThrottle)
        # reserves its turn BEFORE it is checked (no turn left: refused unchecked), so parallel
        # guesses cannot all be checked at once. It is then checked at once: the right
        # credentials bind without waiting and give the turn back; a refusal waits for its turn.
        # Meanwhile the session_init timer holds off: the bind_resp is due first.
        system_id = pdu.params.get("system_id", "")
        esme = server.config.esme(system_id)
        key = proto.bind_key(self.peer, esme)
        self._binding = True
        try:
            delay = server.bind_failure_delay(key)
            refusal = proto.bind_refusal(esme, self.peer, shutting_down=server.shutting_down, delay=delay)
            if refusal is None:
                assert esme is not None
                password_ok = await _check_password(esme, pdu.params.get("password", ""))
                binds_now = len(server.binds.get(esme.system_id, ()))
                refusal = proto.bind_refusal_after_password(esme, password_ok, binds_now)
            if delay:
                if refusal is None:
                    server.bind_throttle.give_back(key)
                else:
                    await trio.sleep(delay)
        finally:
            self._binding = False
        if refusal is not None:
            if refusal.counts_as_guess:
                server.note_bind_failure(key)
            server.metrics.bind_failures.labels(refusal.label).inc()
            log.warning(
                "bind refused: system_id=%r from %s: %s. %s",
                system_id,
                self.peer,
                refusal.reason,
                refusal.hint,
            )
            self._send(proto.bind_answer(pdu, refusal, server.config.smpp.system_id))
            self.request_close(f"bind failed: {refusal.reason}")
            return
        assert esme is not None
        self.esme = esme
        self.esme_id = esme.system_id
        self.bind_type = BIND_TYPES[CommandId(pdu.command_id)]
        self.interface_version = pdu.params.get("interface_version", IF_VERSION_34)
        self._m_in.clear()
        self._m_out.clear()
        self._send(proto.bind_answer(pdu, None, server.config.smpp.system_id))
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
        acceptance = server.acceptance
        key = resubmit_key(pdu.command_id, pdu.params)
        if key is not None:
            first = server.unanswered.take(esme.system_id, key, trio.current_time())
            if first is not None:
                server.metrics.resubmits_recognised.labels(esme.system_id).inc()
                log.info("submit_sm from %s is the message %s whose answer was lost: answered with its id, "
                         "not sent twice", esme.system_id, first)
                self._send(make_response(pdu, message_id=first))
                return
        plan = proto.decide_submit(acceptance, esme, pdu)
        if isinstance(plan, SubmitRefusal):
            self._send(plan.answer)
            return
        n = len(plan.messages)
        acceptance.pending += n
        self._inflight += 1
        self._inflight_zero = trio.Event() if self._inflight == 1 else self._inflight_zero

        def done(result: Any, error: BaseException | None) -> None:
            acceptance.pending -= n
            self._inflight -= 1
            if self._inflight == 0:
                self._inflight_zero.set()
            if error is not None:
                server.metrics.store_errors.inc()
                log.error("submit from %s not stored: %s", esme.system_id, error)
            elif plan.multi or not result.duplicate:  # a resent part is no new segment
                accepted = self._m_accepted
                if accepted is None:
                    accepted = self._m_accepted = server.metrics.accepted.labels(esme.system_id)
                accepted.inc(plan.segments)
            resubmit = (key, result.message_id) if error is None and key is not None and not plan.multi else None
            written = self._send(proto.submit_answer(pdu, plan, result, error), resubmit)
            if resubmit is not None and not written and self.esme_id:
                server.unanswered.remember(self.esme_id, key, result.message_id, trio.current_time())
            if error is None:
                server.metrics.submit_latency.observe(time.perf_counter() - started)

        try:
            if plan.multi:
                server.store.accept_multi_nowait([m.msg for m in plan.messages], plan.unsuccess, done)
            else:
                server.store.accept_nowait(plan.messages[0].msg, done)
        except StoreError as exc:
            done(None, exc)

    # -- query / cancel / replace --------------------------------------------------------------

    async def _on_store_request(self, pdu: Pdu) -> None:
        esme_id = self.esme_id
        store = self.server.store
        p = pdu.params
        cid = pdu.command_id
        try:
            if cid == C.QUERY_SM:
                recs = await store.get_group(p.get("message_id", ""), esme_id or "")
                self._send(proto.query_answer(pdu, recs))
            elif cid == C.CANCEL_SM:
                cancelled: int | None
                try:
                    cancelled = await store.cancel(
                        esme_id,
                        message_id=p.get("message_id", ""),
                        source_addr=p.get("source_addr", ""),
                        destination_addr=p.get("destination_addr", ""),
                        service_type=p.get("service_type", ""),
                    )
                except KeyError:
                    cancelled = None
                self._send(proto.cancel_answer(pdu, cancelled))
            elif cid == C.REPLACE_SM:
                recs = await store.get_group(p.get("message_id", ""), esme_id or "")
                if not recs:
                    self._send(proto.replace_answer(pdu, None))
                    return
                change = proto.decide_replace(self.server.acceptance, pdu, recs[0])
                if isinstance(change, Pdu):
                    self._send(change)
                    return
                replaced: bool | None
                try:
                    replaced = await store.replace(
                        esme_id,
                        p.get("message_id", ""),
                        source_addr=p.get("source_addr", ""),
                        body=change.body,
                        schedule_at=change.schedule_at,
                        expire_at=change.expire_at,
                        registered_delivery=change.registered_delivery,
                    )
                except KeyError:
                    replaced = None
                self._send(proto.replace_answer(pdu, replaced))
        except StoreError as exc:
            log.error("%s from %s failed: %s", command_name(cid), esme_id, exc)
            self._respond(pdu, Status.RSYSERR)


async def _check_password(esme: EsmeConfig, candidate: str) -> bool:
    if esme.password_hash:
        # PBKDF2 takes milliseconds of CPU: keep the event loop free for other sessions.
        return await trio.to_thread.run_sync(esme.check_password, candidate)
    return esme.check_password(candidate)
