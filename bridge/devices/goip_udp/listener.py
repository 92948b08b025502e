"""The GoIP SMS server's UDP listener: socket, authentication and the line registry
(docs/devices/goip.md, part 2).

The GoIP starts every conversation, so the bridge is a server: this module binds the UDP port,
reads datagrams, decodes them with the sans-IO codec (``protocol.py``), checks each one's line
id and password, answers keepalives and keeps what they say about each line (address, GSM
status, signal, ...) in the line registry. Everything that belongs to the ``Driver`` interface -
a send's exchange, delivery reports, the inbound SMS waiting for commit - stays in ``driver.py``;
the listener hands those datagrams over through three callbacks:

* ``on_receive(line, datagram, raw_text, addr)`` for an authenticated ``RECEIVE`` (the callback
  answers it, after commit);
* ``on_deliver(line, datagram)`` for an authenticated ``DELIVER`` (the listener acknowledges it);
* ``on_reply(reply, addr)`` for the device's answers to a send (``PASSWORD``/``SEND``/``OK``/...).

Security: every datagram that claims a line id must carry the line's password (compared in
constant time). Refusals are counted and logged at most once a minute per kind and id; passwords
never appear in logs. An authenticated datagram from a new source address moves the line there
(NAT rebinding, DHCP). Replies to unauthenticated datagrams are never larger than the datagram,
so the port cannot amplify.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from bridge.devices.base import DeviceError
from bridge.devices.goip_udp.protocol import (
    MAX_DATAGRAM,
    KeyedDatagram,
    LineState,
    Reply,
    decode_datagram,
    parse_keyed,
    parse_reply,
    printable,
    redact_datagram,
)

__all__ = ["REFUSAL_LOG_INTERVAL", "UdpListener"]

log = logging.getLogger("bridge.devices.goip_udp")

REFUSAL_LOG_INTERVAL = 60.0


class UdpListener:
    """One UDP socket serving the GoIP lines of one driver.

    ``lines`` maps channel -> line state (the registry, shared with the driver, which reads it
    for sends and health); ``counters`` is the driver's counter dict, updated in place.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        lines: Mapping[str, LineState],
        password: bytes,
        counters: dict[str, int],
        on_receive: Callable[[LineState, KeyedDatagram, str, Any], Awaitable[None]],
        on_deliver: Callable[[LineState, KeyedDatagram], None],
        on_reply: Callable[[Reply, Any], Awaitable[None]],
    ):
        self.name = name
        self.host = host
        self.port = port
        self.lines = lines
        self.by_id: dict[str, LineState] = {line.line_id: line for line in lines.values()}
        self.counters = counters
        self._password = password
        self._on_receive = on_receive
        self._on_deliver = on_deliver
        self._on_reply = on_reply
        self.sock: Any = None
        self.listening_since: float | None = None  # when serve() bound its socket
        self._send_lock = trio.Lock()
        self._closed = False
        self._serving = False
        self._refusal_logged: dict[tuple[str, str], float] = {}

    def _clock(self) -> float:
        return trio.current_time()

    def password_ok(self, given: str | None) -> bool:
        return hmac.compare_digest((given or "").encode("utf-8"), self._password)

    async def sendto(self, data: bytes, addr: Any) -> bool:
        sock = self.sock
        if sock is None or addr is None:
            return False
        try:
            async with self._send_lock:
                await sock.sendto(data, addr)
            return True
        except (OSError, trio.ClosedResourceError) as exc:
            log.warning("goip %s: sending to %s failed: %s", self.name, addr, exc)
            return False

    def close(self) -> None:
        self._closed = True
        if self.sock is not None:
            self.sock.close()

    def _refused(self, kind: str, line_id: str, addr: Any) -> None:
        self.counters["refused"] += 1
        if kind == "req":
            self.counters["refused_keepalive"] += 1
        line = self.by_id.get(line_id)
        if line is not None:
            line.refused_at = self._clock()
        key = (kind.lower(), line_id)
        now = self._clock()
        last = self._refusal_logged.get(key)
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged[key] = now
            if len(self._refusal_logged) > 1000:
                self._refusal_logged.clear()
            log.warning(
                "goip %s: refused %s from %s for line id %r: %s (%d refusals so far)",
                self.name,
                printable(kind, 20),
                addr,
                printable(line_id, 40),
                "unknown line id" if line is None else "wrong password",
                self.counters["refused"],
            )

    # ---------------------------------------------------------------- serving

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the UDP socket and handle datagrams until cancelled.

        ``task_status.started(actual_port)``.
        """
        if self._serving:
            raise DeviceError(f"device {self.name!r}: serve() is already running")
        family = trio.socket.AF_INET6 if ":" in self.host else trio.socket.AF_INET
        sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
        self._serving = True
        try:
            await sock.bind((self.host, self.port))
            self.sock = sock
            self.listening_since = self._clock()
            actual = sock.getsockname()[1]
            log.info(
                "goip %s: SMS server listening on udp %s:%d for line ids %s",
                self.name,
                self.host,
                actual,
                ", ".join(sorted(self.by_id)),
            )
            task_status.started(actual)
            while True:
                try:
                    data, addr = await sock.recvfrom(MAX_DATAGRAM)
                except OSError as exc:  # e.g. ICMP port unreachable reported on some systems
                    log.debug("goip %s: recvfrom: %s", self.name, exc)
                    continue
                try:
                    await self.handle(data, addr)
                except trio.Cancelled:
                    raise
                except Exception:
                    self.counters["protocol_errors"] += 1
                    log.exception(
                        "goip %s: failed to handle a datagram from %s: %s",
                        self.name,
                        addr,
                        printable(redact_datagram(decode_datagram(data)), 200),
                    )
        except trio.ClosedResourceError:
            if not self._closed:
                raise
        finally:
            self.sock = None
            self._serving = False
            sock.close()

    async def handle(self, data: bytes, addr: Any) -> None:
        self.counters["datagrams"] += 1
        text = decode_datagram(data)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "goip %s <- %s: %s", self.name, addr, printable(redact_datagram(text), 300)
            )
        keyed = parse_keyed(text)
        if keyed is not None:
            await self._handle_keyed(keyed, text, addr)
            return
        reply = parse_reply(text)
        if reply is not None:
            await self._on_reply(reply, addr)
            return
        self.counters["protocol_errors"] += 1
        log.debug("goip %s: unrecognised datagram from %s ignored", self.name, addr)

    async def _handle_keyed(self, d: KeyedDatagram, raw: str, addr: Any) -> None:
        kind = d.kind_lower
        line_id = d.get("id") or ""
        password = d.get("pass") if kind == "req" else d.get("password")
        if password is None:  # tolerate either spelling on any kind
            password = d.get("password") if kind == "req" else d.get("pass")
        line = self.by_id.get(line_id)
        # Compare even for unknown ids: the time taken does not tell which ids exist.
        ok = self.password_ok(password) and line is not None
        if not ok:
            self._refused(d.kind, line_id, addr)
            if kind == "req":
                answer = f"reg:{d.seq};status:400;".encode()
            else:
                # The device's wording (RECEIVE), for every kind.
                answer = (
                    f"{d.kind} {d.seq} ERROR not find this id:{printable(line_id, 40)}, "
                    "or password error"
                ).encode("utf-8")
            # Never answer a stranger with more bytes than it sent (no amplification).
            if len(answer) <= len(raw.encode("utf-8")):
                await self.sendto(answer, addr)
            return
        assert line is not None
        now = self._clock()
        if line.addr != addr:
            if line.addr is not None:
                log.info(
                    "goip %s: line %s (%s) now talks from %s (was %s)",
                    self.name,
                    line.channel,
                    line.line_id,
                    addr,
                    line.addr,
                )
            line.addr = addr
        line.last_seen = now
        if kind == "req":
            self._keepalive(line, d)
            await self.sendto(f"reg:{d.seq};status:200;".encode(), addr)
        elif kind == "receive":
            await self._on_receive(line, d, raw, addr)
        elif kind == "deliver":
            self._on_deliver(line, d)
            await self.sendto(f"DELIVER {d.seq} OK".encode(), addr)
        else:
            if kind == "state":
                line.state = d.get("gsm_remain_state")
                status = (line.state or "").upper()
                if status in ("LOGIN", "LOGOUT"):
                    line.gsm_status = status
            await self.sendto(f"{d.kind} {d.seq} OK".encode(), addr)

    def _keepalive(self, line: LineState, d: KeyedDatagram) -> None:
        self.counters["keepalives"] += 1
        line.keepalives += 1
        line.info = {k: v for k, v in d.fields.items() if k not in ("pass", "password")}
        status = (d.get("gsm_status") or "").strip().upper()
        line.gsm_status = status or None
        if line.keepalives == 1:
            log.info(
                "goip %s: line %s (%s) registered from %s (gsm %s, signal %s)",
                self.name,
                line.channel,
                line.line_id,
                line.addr,
                line.gsm_status or "?",
                d.get("signal") or "?",
            )
