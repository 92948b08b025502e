"""One bind to an upstream SMSC: connect, bind, keep alive, submit, take deliveries, heal.

The protocol is ``bridge.smpp.session.ClientSession`` (the ESME role of the one sans-IO
session) and ``bridge.smpp.pdu``; this file is only its trio I/O.

Rules (docs/connectors.md, Sessions)
------------------------------------
* ``run`` connects (TLS when configured), binds (tx, rx or trx), then reads until the
  connection ends; then it waits and binds again, for ever, with back-off: ``rebind_min``
  doubling to ``rebind_max`` after each failure in a row, reset by a bind that held.
* A bind refused for credentials (ESME_RINVPASWD, ESME_RINVSYSID, ESME_RBINDFAIL) is reported
  as such (``state = "auth_failed"``, a log line that says what to fix) and retried only
  every ``auth_retry`` seconds: a wrong password is not hammered every second.
* Dead peer: an enquire_link goes out after ``enquire_link`` seconds without traffic; no
  answer within ``response_timeout`` closes the connection (and it rebinds).
* ``submit`` sends one submit_sm and waits ``response_timeout`` for its resp. At most
  ``window`` requests are unanswered at once. When the connection ends or the resp does not
  come, the caller cannot know whether the SMSC took the message: ``Ambiguous``. When the
  submit never reached the wire: ``NotSent``.
* ``close`` unbinds (waiting ``response_timeout`` for the unbind_resp) and closes.
* SMPP 5.0 (and 3.4): the bind_resp's ``sc_interface_version`` is kept (``sc_version``); one
  lower than the configured ``interface_version`` is what the session speaks from then on (3.3:
  no TLVs). A ``congestion_state`` TLV in any response goes to the driver (its pacing).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..smpp.constants import CommandId as C
from ..smpp.constants import Status, Tag
from ..smpp.pdu import Pdu, make_response
from ..smpp.session import NEED_DATA, ClientSession, Closed, LocalProtocolError, Rejected, SessionState

log = logging.getLogger(__name__)

AUTH_STATUSES = frozenset({Status.RINVPASWD, Status.RINVSYSID, Status.RBINDFAIL})
BIND_CMD = {"tx": C.BIND_TRANSMITTER, "rx": C.BIND_RECEIVER, "trx": C.BIND_TRANSCEIVER}
VERSIONS = {"3.3": 0x33, "3.4": 0x34, "5.0": 0x50}


class NotSent(Exception):
    """The submit never reached the wire: safe to send again."""


class Ambiguous(Exception):
    """The submit was written but no answer came (timeout, connection lost)."""


Deliver = Callable[["Bind", Pdu], Awaitable[Pdu | None]]


class Bind:
    """One connection to the SMSC with one bind of ``mode`` ("tx", "rx", "trx")."""

    def __init__(self, cfg: Any, mode: str, index: int, on_deliver: Deliver, events: Any) -> None:
        self.cfg = cfg
        self.mode = mode
        self.name = f"{cfg.name}/{mode}{index}"
        self.on_deliver = on_deliver
        self.events = events  # the driver: counts and state changes
        self.state = "down"  # down | binding | bound | auth_failed | closing
        self.detail = "not connected yet"
        self.bound_detail = f"bound to {cfg.host}:{cfg.port}"
        self.sc_version: int | None = None  # the bind_resp's sc_interface_version
        self.session: ClientSession | None = None
        self._stream: Any = None
        self._send_lock = trio.Lock()
        self._pending: dict[int, tuple[trio.Event, list[Pdu]]] = {}
        self._window = trio.Semaphore(cfg.window)
        self._last_rx = 0.0
        self._closing = False
        self._cancel: trio.CancelScope | None = None

    @property
    def can_submit(self) -> bool:
        return self.state == "bound" and self.mode in ("tx", "trx")

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        delay = self.cfg.rebind_min
        while not self._closing:
            held = False
            try:
                held = await self._connect_and_serve()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, trio.TooSlowError) as exc:
                self._set("down", f"connection failed: {_why(exc)}")
            except _BindRefused as exc:
                if exc.status in AUTH_STATUSES:
                    self._set("auth_failed", exc.detail)
                    log.error(
                        "connector %s: the SMSC refused our credentials (%s): check system_id and the "
                        "password (password_env / password_file) with the provider; retrying every %.0f s",
                        self.name, exc.detail, self.cfg.auth_retry,
                    )
                    self.events.bind_refused(self, "auth")
                else:
                    self._set("down", exc.detail)
                    self.events.bind_refused(self, "other")
                self.events.bind_refused(self, "other")
            finally:
                await self._wind_up()
            if self._closing:
                break
            if self.state == "auth_failed":
                # The connection is closed first: a wrong password is not kept connected either.
                await trio.sleep(self.cfg.auth_retry)
                continue
            if held:
                delay = self.cfg.rebind_min
            self._set("down", self.detail)
            log.warning("connector %s: %s; binding again in %.1f s", self.name, self.detail, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, self.cfg.rebind_max)

    async def _wind_up(self) -> None:
        if self.state == "bound" and self._stream is not None:
            # Leaving while bound (shutdown, or the driver closed): unbind politely,
            # bounded, whatever cancelled us.
            with trio.CancelScope(shield=True), trio.move_on_after(self.cfg.response_timeout):
                await self._unbind_now()
        self._fail_pending()
        await self._close_stream()

    async def serve_outbind(self, stream: Any, session: ClientSession) -> None:
        """Bind on a connection the SMSC opened with an outbind (outbind.py) and serve it until
        it ends. No rebind from here: the SMSC outbinds again when it has something for us."""
        try:
            await self._bind_and_serve(stream, session)
            if self.state == "bound":
                self._set("down", self.detail)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError) as exc:
            self._set("down", f"connection failed: {_why(exc)}")
        except _BindRefused as exc:
            self._set("down", exc.detail)
            log.error("connector %s: the SMSC refused our bind_receiver after its outbind (%s): check "
                      "system_id and password with the provider", self.name, exc.detail)
            self.events.bind_refused(self, "auth" if exc.status in AUTH_STATUSES else "other")
        finally:
            await self._wind_up()

    async def _connect_and_serve(self) -> bool:
        self._set("binding", "connecting")
        cfg = self.cfg
        with trio.fail_after(cfg.connect_timeout):
            stream: Any = await trio.open_tcp_stream(cfg.host, cfg.port)
            if cfg.tls:
                ctx = ssl.create_default_context(cafile=cfg.ca_file)
                if not cfg.verify_tls:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                stream = trio.SSLStream(stream, ctx, server_hostname=cfg.server_name or cfg.host)
                await stream.do_handshake()
        return await self._bind_and_serve(stream, ClientSession())

    async def _bind_and_serve(self, stream: Any, session: ClientSession) -> bool:
        """Bind over ``stream`` and serve until the connection ends; True if the bind held."""
        cfg = self.cfg
        self._set("binding", "binding")
        self._stream = stream
        self.session = session
        self._last_rx = trio.current_time()
        refusal: _BindRefused | None = None
        bound = False
        async with trio.open_nursery() as nursery:
            self._cancel = nursery.cancel_scope
            nursery.start_soon(self._reader)
            resp = await self._request(
                Pdu(BIND_CMD[self.mode], 0, 0, {
                    "system_id": cfg.system_id, "password": cfg.password, "system_type": cfg.system_type,
                    "interface_version": VERSIONS[cfg.version], "addr_ton": 0, "addr_npi": 0, "address_range": "",
                }),
                cfg.response_timeout,
            )
            if resp is None:
                refusal = _BindRefused(-1, f"no bind_resp within {cfg.response_timeout:g} s ({self.detail})")
            elif resp.command_status != 0:
                st = resp.command_status
                name = Status(st).name if st in Status._value2member_map_ else f"0x{st:08X}"
                refusal = _BindRefused(st, f"bind refused: ESME_{name}")
            if refusal is not None:
                nursery.cancel_scope.cancel()
            else:
                bound = True
                self._set("bound", self.bound_detail + self._take_sc_version(resp))
                log.info("connector %s: bound (%s)", self.name, self.mode)
                self.events.bound(self)
                nursery.start_soon(self._keepalive)
        self._cancel = None
        if refusal is not None:
            raise refusal
        return bound

    def _take_sc_version(self, resp: Pdu) -> str:
        """sc_interface_version in the bind_resp: the SMPP version the SMSC speaks. One lower
        than ours is what this session speaks from now on (an SMSC on 3.3 gets no TLVs)."""
        sc = resp.tlvs.get(Tag.SC_INTERFACE_VERSION)
        self.sc_version = sc if isinstance(sc, int) else None
        if self.sc_version is None:
            return ""
        asked = VERSIONS[self.cfg.version]
        said = f"{self.sc_version >> 4}.{self.sc_version & 0xF}"
        if self.sc_version < asked and self.session is not None:
            self.session.interface_version = self.sc_version
            log.info("connector %s: the SMSC speaks SMPP %s, lower than interface_version %s: this session "
                     "speaks %s", self.name, said, self.cfg.version, said)
        return f" (the SMSC speaks SMPP {said})"

    async def _reader(self) -> None:
        assert self.session is not None
        session = self.session
        try:
            while True:
                ev = session.next_event()
                if ev is NEED_DATA:
                    data = await self._stream.receive_some(65536)
                    session.receive_data(data or b"")
                    continue
                self._last_rx = trio.current_time()
                if ev is Closed:
                    self.detail = "the SMSC closed the connection"
                    break
                if isinstance(ev, Rejected):
                    log.warning("connector %s: %s", self.name, ev.reason)
                    if ev.answer is not None:
                        await self._write(ev.answer)
                    if ev.close:
                        self.detail = f"protocol error: {ev.reason}"
                        break
                    continue
                await self._on_pdu(ev)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError) as exc:
            self.detail = f"connection lost: {exc}"
        if self._cancel is not None:
            self._cancel.cancel()

    async def _on_pdu(self, pdu: Pdu) -> None:
        cid = pdu.command_id
        if cid & 0x80000000:
            congestion = pdu.tlvs.get(Tag.CONGESTION_STATE)
            if isinstance(congestion, int):  # SMPP 5.0: the SMSC's load, in any response
                self.events.congestion_state(self, congestion)
            waiter = self._pending.pop(pdu.sequence_number, None)
            if waiter is not None:
                waiter[1].append(pdu)
                waiter[0].set()
            return
        if cid == C.ENQUIRE_LINK:
            await self._write(make_response(pdu))
        elif cid == C.UNBIND:
            await self._write(make_response(pdu))
            self.detail = "the SMSC unbound"
            if self._cancel is not None:
                self._cancel.cancel()
        elif cid in (C.DELIVER_SM, C.DATA_SM):
            answer = await self.on_deliver(self, pdu)
            if answer is not None:
                await self._write(answer)

    async def answer(self, pdu: Pdu) -> bool:
        """Send a (late) answer to a deliver_sm on this connection; False when it is gone."""
        try:
            await self._write(pdu)
            return True
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError, AttributeError):
            return False

    async def _keepalive(self) -> None:
        while True:
            idle = trio.current_time() - self._last_rx
            if idle < self.cfg.enquire_link:
                await trio.sleep(self.cfg.enquire_link - idle)
                continue
            resp = await self._request(Pdu(C.ENQUIRE_LINK, 0, 0), self.cfg.response_timeout)
            if resp is None:
                self.detail = f"no enquire_link_resp within {self.cfg.response_timeout:g} s: the SMSC is gone"
                self.events.dead_peer(self)
                assert self._cancel is not None
                self._cancel.cancel()
                return

    # -- requests ------------------------------------------------------------------------------

    async def _write(self, pdu: Pdu) -> None:
        async with self._send_lock:
            if self.session is None or self._stream is None:
                raise trio.ClosedResourceError("not connected")
            data = self.session.send(pdu)
            await self._stream.send_all(data)

    async def _request(self, pdu: Pdu, timeout: float) -> Pdu | None:
        """Send a request, return its answer, or None when none came within ``timeout``."""
        assert self.session is not None
        pdu.sequence_number = self.session.next_sequence()
        done = trio.Event()
        box: list[Pdu] = []
        self._pending[pdu.sequence_number] = (done, box)
        try:
            await self._write(pdu)
            with trio.move_on_after(timeout):
                await done.wait()
        finally:
            self._pending.pop(pdu.sequence_number, None)
        return box[0] if box else None

    async def submit(self, params: dict[str, Any], tlvs: dict[int, Any]) -> Pdu:
        """One submit_sm; its resp (any status). Raises NotSent or Ambiguous."""
        async with self._window:
            if not self.can_submit or self.session is None:
                raise NotSent(f"{self.name} is not bound ({self.detail})")
            pdu = Pdu(C.SUBMIT_SM, 0, 0, dict(params), dict(tlvs))
            pdu.sequence_number = self.session.next_sequence()
            done = trio.Event()
            box: list[Pdu] = []
            self._pending[pdu.sequence_number] = (done, box)
            try:
                try:
                    await self._write(pdu)
                except (LocalProtocolError, trio.ClosedResourceError) as exc:
                    raise NotSent(f"{self.name}: {exc}") from None
                except (trio.BrokenResourceError, OSError) as exc:
                    raise Ambiguous(f"{self.name}: connection lost while writing the submit_sm: {exc}") from None
                with trio.move_on_after(self.cfg.response_timeout):
                    await done.wait()
            finally:
                self._pending.pop(pdu.sequence_number, None)
            if not box:
                raise Ambiguous(
                    f"{self.name}: no submit_sm_resp within {self.cfg.response_timeout:g} s ({self.detail})"
                )
            return box[0]

    def _fail_pending(self) -> None:
        for done, _box in self._pending.values():
            done.set()  # empty box: the waiter sees no answer
        self._pending.clear()

    async def _unbind_now(self) -> None:
        """Send unbind and read until its unbind_resp (or the end): the reader task is gone."""
        session, stream = self.session, self._stream
        assert session is not None and stream is not None
        self._set("closing", "unbinding")
        try:
            await stream.send_all(session.send(Pdu(C.UNBIND, 0, session.next_sequence())))
            while session.state is not SessionState.CLOSED:
                ev = session.next_event()
                if ev is NEED_DATA:
                    data = await stream.receive_some(65536)
                    session.receive_data(data or b"")
                    if not data:
                        return
                elif ev is Closed:
                    return
                # Anything else now (a late receipt) is not answered: the SMSC sends it again.
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError, LocalProtocolError):
            return
        finally:
            log.info("connector %s: unbound", self.name)

    async def close(self) -> None:
        """Stop: unbind if bound (run's cleanup does it), close, and bind no more."""
        self._closing = True
        if self._cancel is not None:
            self._cancel.cancel()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError):
                    pass

    def _set(self, state: str, detail: str) -> None:
        changed = state != self.state
        self.state, self.detail = state, detail
        if changed:
            self.events.state_changed(self)


def _why(exc: BaseException) -> str:
    """A readable reason: trio wraps TLS errors (a certificate refused) in an empty one."""
    cause = exc.__cause__ or exc.__context__
    text = str(exc)
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}" if text else str(cause)
    return text or ("timed out" if isinstance(exc, trio.TooSlowError) else type(exc).__name__)


class _BindRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
