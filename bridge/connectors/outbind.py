"""Outbind: the SMSC connects to us and asks us to bind (SMPP 3.4 2.2.1 and 4.1.7).

Some providers deliver receipts and MO only this way: when they have something for us they
open a connection to the ESME, send ``outbind`` (their system_id and password), and the ESME
answers with a ``bind_receiver`` on that same connection. After that the connection is an
ordinary receiver bind (``bind.Bind.serve_outbind``): receipts and MO are taken exactly as on
the connector's own rx binds.

Rules (docs/connectors.md, Outbind)
-----------------------------------
* Opt-in: a connector's ``outbind: {host, port, system_id, password, allowed_ips}``; the bridge
  listens on ``host:port`` (plain TCP).
* A connection from an address outside ``allowed_ips`` (default: loopback only) is closed at
  once, before a byte is read; so is one whose first PDU is not an outbind within
  ``response_timeout``, and one whose outbind carries another system_id or password. Each is
  logged with what to check and counted in ``..._bind_refusals_total{reason="outbind"}``.
* An accepted outbind is answered by a bind_receiver with the connector's own system_id and
  password; the session is then served until the SMSC unbinds or the connection ends (no
  rebind from our side: the SMSC outbinds again), and unbinds gracefully when the connector
  stops or a reload removes it.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import trio

from ..config.model import ip_allowed
from ..smpp.constants import CommandId as C
from ..smpp.session import NEED_DATA, ClientSession, Closed
from .bind import Bind

log = logging.getLogger(__name__)


class OutbindListener:
    """Waits for the SMSC's outbind connections for one connector (``driver``)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.cfg = driver.settings.outbind
        self.port: int | None = None
        self._listeners: list[Any] = []
        self._n = itertools.count(1)
        driver.stats.bind_refusals.setdefault("outbind", 0)

    async def open(self) -> None:
        """Listen (an OSError that says what to do when the port is taken)."""
        try:
            self._listeners = await trio.open_tcp_listeners(self.cfg.port, host=self.cfg.host)
        except OSError as exc:
            raise OSError(exc.errno, f"connector {self.driver.name}: cannot listen for outbind on "
                          f"{self.cfg.host}:{self.cfg.port}: {exc.strerror or exc}. Is another program "
                          "using that port?") from None
        self.port = self._listeners[0].socket.getsockname()[1]
        log.info("connector %s: waiting for the SMSC's outbind on %s:%d", self.driver.name, self.cfg.host, self.port)

    async def serve(self) -> None:
        """Take outbind connections (after ``open``) until cancelled."""
        listeners = self._listeners
        try:
            await trio.serve_listeners(self._handle, listeners)
        finally:
            # Closed now, not when collected: a reload that rebinds the connector listens again.
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    def _refuse(self, peer: str, why: str) -> None:
        self.driver.stats.bind_refusals["outbind"] += 1
        log.warning("connector %s: outbind from %s refused: %s", self.driver.name, peer, why)

    async def _handle(self, stream: Any) -> None:
        try:
            peer = str(stream.socket.getpeername()[0])
        except OSError:
            peer = "?"
        try:
            if not ip_allowed(peer, self.cfg.allowed_ips):
                self._refuse(peer, "its address is not in outbind.allowed_ips (add the SMSC's address there "
                             "if this is your provider)")
                return
            session = ClientSession()
            first = None
            with trio.move_on_after(self.driver.settings.response_timeout):
                first = await _first_pdu(stream, session)
            if first is None or getattr(first, "command_id", None) != C.OUTBIND:
                got = "nothing" if first is None else getattr(first, "command_id", first)
                self._refuse(peer, f"expected an outbind within {self.driver.settings.response_timeout:g} s, got {got}")
                return
            if not self.cfg.accepts(str(first.params.get("system_id") or ""), str(first.params.get("password") or "")):
                self._refuse(peer, f"wrong system_id ({first.params.get('system_id')!r}) or password: check "
                             "outbind.system_id and the outbind password with the provider")
                return
            # Receipts and MO over it are taken as over the connector's own binds.
            bind = Bind(self.driver.settings, "rx", 1, self.driver._on_deliver, self.driver)
            bind.name = f"{self.driver.name}/outbind{next(self._n)}"
            bind.bound_detail = f"bound on the SMSC's outbind from {peer}"
            log.info("connector %s: outbind from %s accepted; binding as a receiver", self.driver.name, peer)
            self.driver.outbinds.append(bind)
            try:
                await bind.serve_outbind(stream, session)
            finally:
                self.driver.outbinds.remove(bind)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("connector %s: outbind connection from %s ended: %s", self.driver.name, peer, exc)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()


async def _first_pdu(stream: Any, session: ClientSession) -> Any:
    """The first event of the connection: a Pdu, a Rejected, or None when it ended."""
    while True:
        ev = session.next_event()
        if ev is NEED_DATA:
            session.receive_data(await stream.receive_some(65536) or b"")
            continue
        return None if ev is Closed else ev
