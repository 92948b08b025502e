"""GoIP GSM gateway driver, "SMS server" UDP protocol (docs/devices/goip.md, part 2).

Long on purpose (~820 lines, most of it this docstring and the send exchange): the per-line
exchanges (send, retransmit, status, inbound acknowledgements) and their timers share one
state; the sans-IO codec is apart in protocol.py and the UDP listener (socket, passwords,
keepalives) in listener.py.

Here the bridge *is* the GoIP's SMS server: every GoIP line is configured (web UI, "SMS" ->
"SMS Server") with the bridge's address and port, a line id (e.g. ``gw1``) and a password. The
GoIP starts the conversation - keepalives every ~30 s from each line's own UDP source port - so
it works behind NAT: the driver answers, and sends SMS, to the address each line last spoke from.

One driver object serves one GoIP (one or more lines) on one UDP port. ``serve()`` binds the
socket and must run in the app's nursery for the driver to work at all; the scheduler's calls
(``send``, ``status``, ``inbox``, ...) only talk to state that ``serve()`` keeps up to date.
(Two GoIPs need two ports, or one driver whose ``lines`` map holds both GoIPs' line ids.)

The wire format (the ``KIND:N;key:value;...`` datagrams the GoIP pushes, and the
``MSG``/``PASSWORD``/``SEND``/``DONE`` exchange of one send) is parsed and built in
``protocol.py``, sans-IO; the socket, the password check and the keepalive registry are in
``listener.py``; this module is the ``Driver`` interface, the send exchanges and their timers.

Retransmission and double sends
-------------------------------
UDP loses datagrams, so every step is retransmitted every ``retransmit`` seconds until it is
answered. MSG and PASSWORD are safe to repeat: nothing is sent before SEND, and a repeat of
either for the same sendid only makes the device repeat its prompt; they are tried
``step_attempts`` times, then the send ends ERROR (certainly not sent).

SEND is different: once the device may have acted on it, repeating it could send the SMS twice
on firmware that does not de-duplicate by (sendid, telid). By default (``resend_send=False``)
the driver sends ``SEND <sendid> 1 <number>`` exactly ONCE and then only listens: WAIT means
"the device is busy with it, keep waiting"; OK/ERROR ends the exchange; silence until
``send_timeout`` ends it AMBIGUOUS (the scheduler's ambiguity policy decides; ``last_ref`` is
always None in this mode, so it cannot reconcile).

``resend_send=True`` repeats the identical ``SEND <sendid> 1 <number>`` after every
``retransmit`` seconds of silence and after every WAIT - what DBL's own SMS server (goipcron /
its PHP sender) and the public client libraries do, which only works because the firmware
answers a repeated (sendid, telid) with WAIT while sending and with the same OK afterwards,
without sending again. Use it with firmware that only answers a repeated SEND (never pushes the
result after WAIT by itself); the emulator models both behaviours.

Outcomes of ``send``:

* no keepalive for ``keepalive_timeout`` (or never), the last keepalive said LOGOUT, or an
  ``ERROR <sendid> GSM_LOGOUT`` -> CHANNEL_DOWN (for the first two nothing is sent at all);
* ``OK <sendid> 1 <sms_no>`` -> ACCEPTED, ``ref = "<channel>:<sms_no>:<sendid>"`` (sms_no is
  empty when the firmware gave none);
* ``ERROR <sendid> 1 errorstatus:<n>`` -> by ``n`` (read as a GSM 27.005 ``+CMS ERROR`` code,
  which is what the GoIP module reports - inferred): destination/content refusals (1, 21, 28,
  30, 95, 96, 97, 99, 304, 305) -> REJECTED; SIM/line problems (8, 10, 50, 310-317, 330, 331)
  -> CHANNEL_DOWN; everything else (38 network out of order, 41/42/47 congestion, 332, 500, ...)
  -> ERROR (retry later). The device tried and failed, so in every case nothing went out;
* an ERROR to PASSWORD (other than GSM_LOGOUT/SENDID) -> AUTH_FAILED;
* ``ERROR <sendid> SENDID`` -> ERROR (not sent), or AMBIGUOUS if the device had already said
  WAIT for our number (it had taken it before forgetting the sendid);
* no answer before SEND went out -> ERROR (not sent); no OK/ERROR after it -> AMBIGUOUS;
* text longer than 3000 UTF-8 bytes, an empty or malformed number -> REJECTED (nothing sent).

Delivery reports (Capability.DELIVERY_REPORTS)
----------------------------------------------
A ``DELIVER`` for (line, sms_no) is linked to the send whose OK carried that sms_no on that
line. ``status(channel, ref)``: PENDING until the report arrives, then DELIVERED (state 0, a
real handset report) or FAILED (any other state, ``error_code`` = the state). This mode never
returns SENT on its own - SENT ("handed to the network, no handset report") is what the HTTP
mode reports. A handset report may never come (phone off, SMSC without status reports): the
scheduler's ``status_timeout`` then ends the wait. Optionally ``delivery_timeout`` seconds after
the OK the driver reports SENT instead of PENDING. A ref whose OK carried no sms_no cannot be
linked to any report: its status is SENT at once.

Reports arriving before the OK (reordered datagrams) or for sends the driver does not remember
(it restarted) are kept as orphans by (line, sms_no) and claimed by a later OK with that sms_no
(within ``send_timeout``) or by ``status`` of a ref that names them. DELIVER is acknowledged at
once; the report lives in memory until ``status`` reads it (a crash in between loses it: the
message then ends by the scheduler's status timeout).

Inbound SMS (Capability.INBOX + Capability.DELETE_INBOX meaning "acknowledge")
-----------------------------------------------------------------------------
A RECEIVE is NOT acknowledged when it arrives. It waits in memory; ``inbox()`` returns every
received-but-unacknowledged SMS (each time, like the HTTP inbox); ``delete_inbox(items)`` sends
``RECEIVE N OK`` for them - call it only after the SMS is committed to the store (docs/architecture.md
rule 1), and call it for duplicates the store already had too, or the GoIP keeps retransmitting
them. Until acknowledged, the GoIP retransmits the RECEIVE every few seconds; retransmissions
are de-duplicated: ``device_key = "<line id>|<N>|<sha1(srcnum, msg)[:12]>"``, the same for
every retransmission and across bridge restarts (the GoIP retransmits to the new process). A
retransmission of an SMS already acknowledged is acknowledged again at once (our OK was lost).

Security
--------
Every datagram that claims a line id must carry the line's password (compared in constant
time, in listener.py). Refusals are counted (``counters``) and logged at most once a minute per kind and id;
passwords never appear in logs, ``detail`` strings or ``InboundSms.raw`` (``pass``/``password``
fields are masked). An authenticated datagram from a new source address moves the line there
(NAT rebinding, DHCP): the password is what identifies a line, not its address. Replies to
unauthenticated datagrams are never larger than the datagram, so the port cannot amplify.

Out of scope: USSD (``USSD <sendid> <password> <code>``), call records and the remote-control
commands (reboot, IMEI, ...). RECORD/REMAIN pushes are acknowledged and ignored.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import trio

from bridge.devices.goip_udp import CAPABILITIES
from bridge.devices.base import (
    ChannelHealth,
    DeliveryState,
    DeviceError,
    DeviceHealth,
    DriverBase,
    InboundSms,
    Redactor,
    SendOutcome,
    SendResult,
    StatusResult,
)
from bridge.devices.goip_udp.listener import UdpListener
from bridge.devices.goip_udp.protocol import (
    MAX_TEXT_BYTES,
    SEND_NUMBER_RE,
    SEND_TELID,
    AwaitingReport,
    KeyedDatagram,
    LineState,
    PendingInbound,
    Reply,
    bounded_put,
    build_msg,
    classify_errorstatus,
    inbound_device_key,
    make_ref,
    parse_ref,
    printable,
    redact_datagram,
    same_number,
)

__all__ = ["DEFAULT_PORT", "GoipUdpDriver"]

log = logging.getLogger("bridge.devices.goip_udp")

DEFAULT_PORT = 44444
#: How many sends / reports / inbound keys the driver remembers (memory bound).
MAX_TRACKED = 10_000

# ============================================================================================
# Driver state (the exchange of one send, fed by the receive loop)


@attrs.define
class _Exchange:
    sendid: int
    line: LineState
    addr: Any
    send: trio.MemorySendChannel
    receive: trio.MemoryReceiveChannel
    send_sent: bool = False
    answered: bool = False



class GoipUdpDriver(DriverBase):
    kind = "goip_udp"
    capabilities = CAPABILITIES.flags
    declared = CAPABILITIES

    def __init__(
        self,
        name: str,
        *,
        host: str = "0.0.0.0",
        port: int = DEFAULT_PORT,
        lines: Mapping[str, str],
        password: str,
        keepalive_timeout: float = 92.0,
        send_timeout: float = 60.0,
        delivery_timeout: float | None = None,
        retransmit: float = 1.0,
        step_attempts: int = 5,
        done_attempts: int = 3,
        resend_send: bool = False,
        max_tracked: int = MAX_TRACKED,
        now: Callable[[], datetime] | None = None,
    ):
        if not lines:
            raise DeviceError(f"device {name!r}: lines must map at least one channel to a line id")
        channels = tuple(str(ch) for ch in lines)
        ids = [str(v) for v in lines.values()]
        for line_id in ids:
            if not line_id or any(c in line_id for c in ";: \t\r\n"):
                raise DeviceError(
                    f"device {name!r}: line id {line_id!r} must be non-empty, without ';', ':' "
                    "or whitespace"
                )
        if len(set(ids)) != len(ids):
            raise DeviceError(f"device {name!r}: line ids must be unique, got {ids}")
        if len(set(channels)) != len(channels):
            raise DeviceError(f"device {name!r}: channel ids must be unique, got {channels}")
        if not password:
            raise DeviceError(f"device {name!r}: password must not be empty")
        if any(c == ";" or c.isspace() for c in password):
            # ';' ends a field of the GoIP's datagrams; whitespace ends PASSWORD's argument.
            raise DeviceError(
                f"device {name!r}: a GoIP SMS-server password cannot contain ';' or whitespace"
            )
        if not 0 <= port <= 65535:
            raise DeviceError(f"device {name!r}: port must be 0..65535")
        for label, value in (
            ("keepalive_timeout", keepalive_timeout),
            ("send_timeout", send_timeout),
            ("retransmit", retransmit),
        ):
            if value <= 0:
                raise DeviceError(f"device {name!r}: {label} must be > 0")
        if delivery_timeout is not None and delivery_timeout <= 0:
            raise DeviceError(f"device {name!r}: delivery_timeout must be > 0 or None")
        if step_attempts < 1 or done_attempts < 1:
            raise DeviceError(f"device {name!r}: step_attempts and done_attempts must be >= 1")
        self.name = name
        self.host = host
        self.port = port
        self.channels = channels
        self.keepalive_timeout = keepalive_timeout
        self.send_timeout = send_timeout
        self.delivery_timeout = delivery_timeout
        self.retransmit = retransmit
        self.step_attempts = step_attempts
        self.done_attempts = done_attempts
        self.resend_send = resend_send
        self.max_tracked = max_tracked
        self._password = password.encode("utf-8")
        self._redact = Redactor([password])
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._lines: dict[str, LineState] = {
            ch: LineState(channel=ch, line_id=str(lid)) for ch, lid in zip(channels, ids)
        }
        self._closed = False
        # sendids: random 31-bit base, then a counter (unique per process and, with high
        # probability, across restarts).
        self._next_sendid = secrets.randbelow(2**31 - 2**24) + 1
        self._exchanges: dict[int, _Exchange] = {}
        self._finished_sendids: OrderedDict[int, None] = OrderedDict()
        # delivery reports
        self._awaiting: OrderedDict[str, AwaitingReport] = OrderedDict()
        self._by_sms: dict[tuple[str, str], str] = {}
        self._reports: OrderedDict[str, StatusResult] = OrderedDict()
        self._orphans: OrderedDict[tuple[str, str], tuple[StatusResult, float, str]] = (
            OrderedDict()
        )
        # inbound
        self._pending: OrderedDict[str, PendingInbound] = OrderedDict()
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._inbox_changed = trio.Event()
        # health counters
        self._consecutive_errors = 0
        self._last_error = ""
        self.counters: dict[str, int] = {
            "datagrams": 0,
            "refused": 0,
            "refused_keepalive": 0,
            "protocol_errors": 0,
            "keepalives": 0,
            "received": 0,
            "received_duplicates": 0,
            "reports": 0,
            "orphan_reports": 0,
            "retransmits": 0,
            "ambiguous": 0,
        }
        self._listener = UdpListener(
            name,
            host=host,
            port=port,
            lines=self._lines,
            password=self._password,
            counters=self.counters,
            on_receive=self._receive,
            on_deliver=self._deliver,
            on_reply=self._handle_reply,
        )
        self._sendto = self._listener.sendto

    def __repr__(self) -> str:
        return f"<GoipUdpDriver {self.name!r} udp {self.host}:{self.port} lines={len(self._lines)}>"

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"device {self.name!r}: driver is closed")

    def _clock(self) -> float:
        return trio.current_time()

    def _new_sendid(self) -> int:
        sendid = self._next_sendid
        self._next_sendid = self._next_sendid % (2**31 - 1) + 1
        return sendid

    def _ok(self) -> None:
        self._consecutive_errors = 0

    def _failed(self, detail: str) -> None:
        self._consecutive_errors += 1
        self._last_error = detail

    # ---------------------------------------------------------------- serving

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the UDP socket and handle datagrams until cancelled (listener.py).

        ``task_status.started(actual_port)``. Runs in the app's nursery; without it the driver
        hears no keepalive and every send ends CHANNEL_DOWN.
        """
        self._check_open()
        await self._listener.serve(task_status=task_status)

    # ---------------------------------------------------------------- inbound SMS

    async def _receive(self, line: LineState, d: KeyedDatagram, raw: str, addr: Any) -> None:
        sender = (d.get("srcnum") or "").strip()
        text = d.get("msg") or ""
        key = inbound_device_key(line.line_id, d.seq, sender, text)
        if key in self._acked:
            # Our OK was lost: acknowledge again; the bridge already has it.
            self.counters["received_duplicates"] += 1
            await self._sendto(f"RECEIVE {d.seq} OK".encode(), addr)
            return
        pending = self._pending.get(key)
        if pending is not None:
            self.counters["received_duplicates"] += 1
            pending.addr = addr
            return
        self.counters["received"] += 1
        sms = InboundSms(
            channel=line.channel,
            sender=sender,
            text=text,
            received_at=self._now().astimezone(timezone.utc),
            device_key=key,
            raw=redact_datagram(raw),
        )
        self._pending[key] = PendingInbound(sms=sms, line=line, seq=d.seq, addr=addr)
        while len(self._pending) > self.max_tracked:
            # Never silently: the GoIP still has it and retransmits it later.
            dropped, _ = self._pending.popitem(last=False)
            log.warning("goip %s: inbound backlog full; forgot %s (the GoIP resends it)", self.name, dropped)
        self._inbox_changed.set()
        log.debug("goip %s line %s: inbound SMS %s waiting for commit", self.name, line.channel, key)

    async def inbox(self) -> list[InboundSms]:
        """Every received SMS not yet acknowledged with ``delete_inbox`` (oldest first)."""
        self._check_open()
        return [p.sms for p in self._pending.values()]

    async def wait_inbox(self) -> None:
        """Return once ``inbox()`` has something (lets a poller react at once to a push)."""
        while not self._pending:
            await self._inbox_changed.wait()
            self._inbox_changed = trio.Event()

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        """Acknowledge (``RECEIVE N OK``) SMS the bridge has committed; the GoIP then stops
        retransmitting them. Unknown items (already acknowledged, or from before a restart: the
        GoIP will retransmit those and they come back through ``inbox``) are ignored."""
        self._check_open()
        for item in items:
            self.check_channel(item.channel)
            pending = self._pending.pop(item.device_key, None)
            if pending is None:
                continue
            bounded_put(self._acked, item.device_key, None, self.max_tracked)
            await self._sendto(f"RECEIVE {pending.seq} OK".encode(), pending.addr)
            log.debug(
                "goip %s line %s: acknowledged inbound SMS %s",
                self.name,
                item.channel,
                item.device_key,
            )

    # ---------------------------------------------------------------- delivery reports

    def _deliver(self, line: LineState, d: KeyedDatagram) -> None:
        self.counters["reports"] += 1
        sms_no = (d.get("sms_no") or "").strip()
        state = (d.get("state") or "").strip()
        number = (d.get("num") or "").strip()
        if state == "0":
            result = StatusResult(DeliveryState.DELIVERED, detail="handset delivery report")
        else:
            result = StatusResult(
                DeliveryState.FAILED,
                error_code=state or None,
                detail=f"delivery report state {printable(state, 20) or '?'}",
            )
        key = (line.channel, sms_no)
        ref = self._by_sms.get(key)
        awaiting = self._awaiting.get(ref) if ref is not None else None
        if awaiting is not None and number and not same_number(awaiting.destination, number):
            log.warning(
                "goip %s line %s: report for sms_no %s names another number; kept aside",
                self.name,
                line.channel,
                sms_no,
            )
            awaiting = None
        if awaiting is not None and ref is not None:
            if ref not in self._reports:
                bounded_put(self._reports, ref, result, self.max_tracked)
            log.debug("goip %s: report for %s: %s", self.name, ref, result.state.value)
            return
        self.counters["orphan_reports"] += 1
        bounded_put(self._orphans, key, (result, self._clock(), number), self.max_tracked)
        log.debug(
            "goip %s line %s: report for sms_no %s with no known send (kept)",
            self.name,
            line.channel,
            sms_no,
        )

    def _register_sent(self, channel: str, sms_no: str, destination: str, ref: str) -> None:
        now = self._clock()
        bounded_put(
            self._awaiting,
            ref,
            AwaitingReport(channel=channel, sms_no=sms_no, destination=destination, sent_at=now),
            self.max_tracked,
        )
        if not sms_no:
            return
        key = (channel, sms_no)
        self._by_sms[key] = ref
        if len(self._by_sms) > self.max_tracked:
            for old in list(self._by_sms)[: len(self._by_sms) - self.max_tracked]:
                del self._by_sms[old]
        orphan = self._orphans.get(key)
        if orphan is not None:
            result, at, number = orphan
            # A report that overtook its OK (reordering); an older one belongs to an earlier
            # message with the same sms_no (the device restarted its counter).
            if now - at <= self.send_timeout and (not number or same_number(destination, number)):
                del self._orphans[key]
                bounded_put(self._reports, ref, result, self.max_tracked)

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        """PENDING until the handset report for ``ref`` arrives; then DELIVERED or FAILED."""
        self._check_open()
        self.check_channel(channel)
        if ref is None:
            return StatusResult(
                DeliveryState.UNKNOWN, detail="no message reference: no report can be linked"
            )
        ref = ref.strip()
        result = self._reports.get(ref)
        if result is not None:
            return result
        parsed = parse_ref(ref)
        if parsed is None:
            return StatusResult(DeliveryState.UNKNOWN, detail=f"not a goip_udp reference: {ref!r}")
        _ch, sms_no, _sendid = parsed
        if not sms_no:
            return StatusResult(
                DeliveryState.SENT,
                detail="the device gave no sms_no: its delivery report cannot be linked",
            )
        awaiting = self._awaiting.get(ref)
        if awaiting is None:
            # Sent before a restart (or forgotten): claim a report kept for this sms_no.
            key = (channel, sms_no)
            if self._by_sms.get(key) in (None, ref) and key in self._orphans:
                result, _at, _number = self._orphans.pop(key)
                bounded_put(self._reports, ref, result, self.max_tracked)
                return result
            return StatusResult(
                DeliveryState.PENDING,
                detail="waiting for the handset delivery report (send not in memory: restart?)",
            )
        waited = self._clock() - awaiting.sent_at
        if self.delivery_timeout is not None and waited >= self.delivery_timeout:
            return StatusResult(
                DeliveryState.SENT,
                detail=f"no handset delivery report within {self.delivery_timeout:g} s",
            )
        return StatusResult(
            DeliveryState.PENDING, detail=f"waiting for the handset delivery report ({waited:.0f} s)"
        )

    # ---------------------------------------------------------------- replies

    async def _handle_reply(self, reply: Reply, addr: Any) -> None:
        ex = self._exchanges.get(reply.sendid)
        if ex is None:
            if reply.sendid in self._finished_sendids and reply.verb in ("OK", "ERROR"):
                # The device repeats a result we already have (our DONE was lost): end it.
                await self._sendto(f"DONE {reply.sendid}".encode(), addr)
            else:
                log.debug("goip %s: answer for no running send ignored: %s", self.name, reply.verb)
            return
        if ex.addr is not None and addr[0] != ex.addr[0]:
            self.counters["protocol_errors"] += 1
            log.warning(
                "goip %s: answer for send %d from %s, not from line %s at %s; ignored",
                self.name,
                reply.sendid,
                addr,
                ex.line.channel,
                ex.addr,
            )
            return
        try:
            ex.send.send_nowait(reply)
        except trio.WouldBlock:
            log.debug("goip %s: send %d has too many unread answers; dropped one", self.name, reply.sendid)

    # ---------------------------------------------------------------- send

    async def send(self, channel: str, destination: str, text: str) -> SendResult:
        self._check_open()
        self.check_channel(channel)
        line = self._lines[channel]
        now = self._clock()
        destination = destination.strip()
        if not line.alive(now, self.keepalive_timeout):
            if line.last_seen is None:
                detail = f"line {line.line_id} has not registered (no keepalive yet)"
            else:
                detail = (
                    f"line {line.line_id}: no keepalive for {now - line.last_seen:.0f} s "
                    f"(limit {self.keepalive_timeout:g} s)"
                )
            return self._result(channel, SendResult(SendOutcome.CHANNEL_DOWN, detail=detail))
        if line.gsm_status == "LOGOUT":
            return self._result(
                channel,
                SendResult(SendOutcome.CHANNEL_DOWN, detail=f"line {line.line_id}: GSM logout"),
            )
        if not SEND_NUMBER_RE.match(destination):
            return self._result(
                channel,
                SendResult(
                    SendOutcome.REJECTED,
                    detail=f"destination {printable(destination, 40)!r} cannot be sent in a SEND line",
                ),
            )
        if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
            return self._result(
                channel,
                SendResult(
                    SendOutcome.REJECTED,
                    detail=f"text longer than {MAX_TEXT_BYTES} UTF-8 bytes (the GoIP's limit)",
                ),
            )
        if self._listener.sock is None:
            return self._result(
                channel, SendResult(SendOutcome.ERROR, detail="not listening (serve() is not running)")
            )
        sendid = self._new_sendid()
        send_ch, recv_ch = trio.open_memory_channel[Reply](64)
        ex = _Exchange(sendid=sendid, line=line, addr=line.addr, send=send_ch, receive=recv_ch)
        self._exchanges[sendid] = ex
        cancelled = False
        try:
            with trio.move_on_after(self.send_timeout):
                result = await self._exchange(ex, destination, text)
                return self._result(channel, result)
            if ex.send_sent:
                self.counters["ambiguous"] += 1
                result = SendResult(
                    SendOutcome.AMBIGUOUS,
                    detail=(
                        f"send {sendid}: SEND went out, no OK/ERROR within {self.send_timeout:g} s: "
                        "the SMS may or may not have gone out"
                    ),
                )
            else:
                result = SendResult(
                    SendOutcome.ERROR,
                    detail=f"send {sendid}: no answer within {self.send_timeout:g} s (not sent)",
                )
            return self._result(channel, result)
        except trio.Cancelled:
            cancelled = True
            raise
        finally:
            await self._done(ex, brief=cancelled)
            self._exchanges.pop(sendid, None)
            bounded_put(self._finished_sendids, sendid, None, 1000)

    def _result(self, channel: str, result: SendResult) -> SendResult:
        result = attrs.evolve(result, detail=self._redact(result.detail))
        if result.outcome is SendOutcome.ACCEPTED:
            self._ok()
        elif result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS, SendOutcome.AUTH_FAILED):
            self._failed(result.detail)
        log.debug(
            "goip %s line %s send -> %s %s", self.name, channel, result.outcome.value, result.ref or ""
        )
        if result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS, SendOutcome.AUTH_FAILED):
            log.warning(
                "goip %s line %s send: %s: %s", self.name, channel, result.outcome.value, result.detail
            )
        return result

    async def _step(self, ex: _Exchange, data: bytes, expect: str) -> Reply | None:
        """Send ``data`` until the device answers ``expect`` or ERROR; None if it never does."""
        for attempt in range(self.step_attempts):
            if attempt:
                self.counters["retransmits"] += 1
            await self._sendto(data, ex.addr)
            with trio.move_on_after(self.retransmit):
                while True:
                    reply = await ex.receive.receive()
                    if reply.verb == expect or reply.verb == "ERROR":
                        ex.answered = True
                        return reply
                    # Duplicates and late answers to earlier steps: nothing to do.
        return None

    def _error_result(self, ex: _Exchange, reply: Reply, phase: str) -> SendResult:
        words = [a.upper() for a in reply.args]
        detail = f"send {ex.sendid} {phase}: device answered {printable(reply.text, 120)!r}"
        if "GSM_LOGOUT" in words:
            ex.line.gsm_status = "LOGOUT"  # until the next keepalive says otherwise
            return SendResult(SendOutcome.CHANNEL_DOWN, detail=f"line {ex.line.line_id}: GSM logout")
        if "SENDID" in words:
            return SendResult(SendOutcome.ERROR, detail=detail + " (sendid refused; not sent)")
        if phase == "PASSWORD":
            return SendResult(SendOutcome.AUTH_FAILED, detail=detail)
        return SendResult(SendOutcome.ERROR, detail=detail + " (not sent)")

    async def _exchange(self, ex: _Exchange, destination: str, text: str) -> SendResult:
        reply = await self._step(ex, build_msg(ex.sendid, text), "PASSWORD")
        if reply is None:
            return SendResult(
                SendOutcome.ERROR,
                detail=f"send {ex.sendid}: no answer to MSG after {self.step_attempts} tries (not sent)",
            )
        if reply.verb == "ERROR":
            return self._error_result(ex, reply, "MSG")
        password_cmd = b"PASSWORD %d " % ex.sendid + self._password
        reply = await self._step(ex, password_cmd, "SEND")
        if reply is None:
            return SendResult(
                SendOutcome.ERROR,
                detail=f"send {ex.sendid}: no answer to PASSWORD after {self.step_attempts} tries (not sent)",
            )
        if reply.verb == "ERROR":
            return self._error_result(ex, reply, "PASSWORD")
        return await self._submit(ex, destination)

    async def _submit(self, ex: _Exchange, destination: str) -> SendResult:
        data = f"SEND {ex.sendid} {SEND_TELID} {destination}".encode("utf-8")
        await self._sendto(data, ex.addr)
        ex.send_sent = True
        waited = False
        while True:
            with trio.move_on_after(self.retransmit) as scope:
                reply = await ex.receive.receive()
            if scope.cancelled_caught:
                if self.resend_send:
                    self.counters["retransmits"] += 1
                    await self._sendto(data, ex.addr)
                continue
            if reply.verb == "OK" and reply.telid == SEND_TELID:
                sms_no = reply.args[1] if len(reply.args) > 1 else ""
                ref = make_ref(ex.line.channel, sms_no, ex.sendid)
                self._register_sent(ex.line.channel, sms_no, destination, ref)
                detail = f"line {ex.line.line_id} sent, sms_no {sms_no or '?'}"
                if waited:
                    detail += " (after WAIT)"
                return SendResult(SendOutcome.ACCEPTED, ref=ref, detail=detail)
            if reply.verb == "WAIT" and reply.telid == SEND_TELID:
                waited = True
                continue
            if reply.verb == "ERROR":
                words = [a.upper() for a in reply.args]
                status = next(
                    (a.split(":", 1)[1] for a in reply.args if a.lower().startswith("errorstatus:")),
                    None,
                )
                if status is not None:
                    outcome, label = classify_errorstatus(status)
                    if outcome is SendOutcome.CHANNEL_DOWN:
                        return SendResult(
                            outcome, detail=f"line {ex.line.line_id}: {label}; not sent"
                        )
                    return SendResult(outcome, detail=f"device could not send: {label}")
                if "SENDID" in words and (waited or self.resend_send):
                    self.counters["ambiguous"] += 1
                    return SendResult(
                        SendOutcome.AMBIGUOUS,
                        detail=(
                            f"send {ex.sendid}: device forgot the sendid after taking the number: "
                            "the SMS may or may not have gone out"
                        ),
                    )
                return self._error_result(ex, reply, "SEND")
            # "SEND <sendid>" prompt repeated (duplicate datagram), stray answers: ignore.

    async def _done(self, ex: _Exchange, *, brief: bool = False) -> None:
        """End the device's session (``DONE <sendid>``), best effort and briefly: repeated
        until the device answers DONE if it answered anything before, else sent once (also
        when the send was cancelled: shutdown must not wait for the device)."""
        if ex.addr is None or self._listener.sock is None:
            return
        data = f"DONE {ex.sendid}".encode()
        attempts = self.done_attempts if ex.answered and not brief else 1
        with trio.CancelScope(shield=True), trio.move_on_after(
            self.retransmit * (attempts + 1)
        ):
            for _ in range(attempts):
                await self._sendto(data, ex.addr)
                if attempts == 1:
                    return
                with trio.move_on_after(self.retransmit):
                    while True:
                        reply = await ex.receive.receive()
                        if reply.verb == "DONE":
                            return

    # ---------------------------------------------------------------- health & info

    async def last_ref(self, channel: str) -> str | None:
        """Always None: this mode has no per-line status slot to read."""
        self.check_channel(channel)
        return None

    def line_info(self) -> dict[str, dict[str, Any]]:
        """Per channel: line id, address, seconds since the last keepalive, and the last
        keepalive's fields (imei, imsi, iccid, signal, gsm_status, remain_time, cellinfo, ...;
        never the password). For the admin API."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for ch, line in self._lines.items():
            out[ch] = {
                "line_id": line.line_id,
                "address": f"{line.addr[0]}:{line.addr[1]}" if line.addr else None,
                "alive": line.alive(now, self.keepalive_timeout),
                "seconds_since_keepalive": None
                if line.last_seen is None
                else round(now - line.last_seen, 1),
                "gsm_status": line.gsm_status,
                "state": line.state,
                "fields": dict(line.info),
            }
        return out

    async def health(self) -> DeviceHealth:
        """From the lines' keepalives: a line with none for ``keepalive_timeout`` is dead
        (registered False); reachable = any line alive."""
        self._check_open()
        now = self._clock()
        channels: dict[str, ChannelHealth] = {}
        alive, dead, logout, refused = [], [], [], []
        for ch, line in self._lines.items():
            is_alive = line.alive(now, self.keepalive_timeout)
            if is_alive:
                alive.append(ch)
                try:
                    signal = int(line.info.get("signal", ""))
                except ValueError:
                    signal = None
                registered = line.gsm_status != "LOGOUT" if line.gsm_status else None
                if line.gsm_status == "LOGOUT":
                    logout.append(ch)
                channels[ch] = ChannelHealth(
                    registered=registered, signal=signal, operator=line.info.get("pro") or None
                )
            else:
                dead.append(ch)
                channels[ch] = ChannelHealth(registered=False)
                if line.refused_at is not None and now - line.refused_at <= self.keepalive_timeout:
                    refused.append(ch)
        parts = []
        if self._listener.sock is None:
            parts.append("not listening")
        if dead:
            parts.append(f"no keepalive on line(s) {', '.join(dead)}")
        if logout:
            parts.append(f"GSM logout on line(s) {', '.join(logout)}")
        if refused:
            parts.append(f"wrong password from line(s) {', '.join(refused)}")
        if self._consecutive_errors:
            parts.append(
                f"{self._consecutive_errors} failed send(s) in a row, last: {self._last_error}"
            )
        # No line heard from yet, within one keepalive timeout of our start: the GoIP has not
        # had its turn to call us (it starts the talk), so it is not down yet.
        starting = (
            self._listener.listening_since is not None
            and not alive and not refused
            and all(line.last_seen is None for line in self._lines.values())
            and now - self._listener.listening_since <= self.keepalive_timeout
        )
        if starting:
            parts = [f"waiting for the first keepalive (up to {self.keepalive_timeout:g} s after start)"]
        return DeviceHealth(
            reachable=bool(alive),
            detail=self._redact("; ".join(parts) or "ok"),
            channels=channels,
            starting=starting,
            auth_failed=bool(refused),
            protocol_errors=self.counters["protocol_errors"],
            consecutive_errors=self._consecutive_errors,
        )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._listener.close()
