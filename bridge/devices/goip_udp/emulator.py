"""GoIP emulator, "SMS server" UDP mode: the GoIP as the UDP *client* of the bridge.

Long on purpose (~900 lines): a whole device - keepalives, sends with retransmits, delivery
reports, inbound SMS, every fault switch - as the real GoIP behaves, from the other side of
the wire than the driver.

Wire format: docs/devices/goip.md, part 2. Each emulated line has its own UDP socket (its own
source port, as on the real device) and:

* sends a keepalive ``req:N;id:<id>;pass:<pw>;...;signal:..;gsm_status:LOGIN|LOGOUT;...`` every
  ``keepalive_interval`` seconds and reads the server's ``reg:N;status:200;``;
* pushes ``RECEIVE:N;id;password;srcnum;[smscnum;]msg:<text>`` for ``inject_sms`` and repeats it
  every ``retransmit_interval`` seconds until the server answers ``RECEIVE N OK`` (forever, as
  the device does; ``RECEIVE N ERROR ...`` is recorded and the push goes on);
* after an SMS went out, pushes ``DELIVER:N;id;password;sms_no;state;num`` (state 0 =
  delivered, or a configured failure state, or never: "phone off") after ``delivery_delay``,
  repeated until ``DELIVER N OK`` (at most ``max_report_pushes`` times);
* ``push_state(line, state)`` pushes ``STATE:N;...;gsm_remain_state:<state>`` until acked;
* answers the server's send exchange: ``MSG`` -> ``PASSWORD``, ``PASSWORD`` -> ``SEND``,
  ``SEND <sendid> <telid> <number>`` -> ``OK <sendid> <telid> <sms_no>`` when the SMS has gone
  out (``send_duration`` later; sms_no counts up per line), ``WAIT <sendid> <telid>`` at once
  when the line's GSM module is still busy with an earlier SMS, ``ERROR <sendid> <telid>
  errorstatus:<n>`` (``fail_next``/``set_line_error``), ``ERROR <sendid> GSM_LOGOUT`` (logged
  out), ``ERROR <sendid> SENDID`` (unknown sendid); ``DONE`` -> ``DONE``.

Idempotence, as DBL's own SMS server relies on (it repeats every unanswered step, SEND
included): a repeated MSG or PASSWORD for a known sendid repeats the prompt; a repeated SEND for
a (sendid, telid) already taken never sends again - it gets ``WAIT`` while sending and the same
``OK``/``ERROR`` afterwards.

Where the device's documentation does not say, the emulator picks and marks it [I]:

* [I] ``push_results`` (default True): after answering WAIT, the device sends the OK/ERROR by
  itself when the SMS is done. With False, only a repeated SEND gets the result (the server
  must poll with SEND, as DBL's server does).
* [I] ``repeat_results`` (default True): the device repeats its final OK/ERROR every
  ``retransmit_interval`` until ``DONE <sendid>`` (at most 5 times), like its other pushes.
* [I] a wrong password in ``PASSWORD <sendid> <pw>`` -> ``ERROR <sendid> password error``;
  ``USSD`` -> ``USSDERROR <sendid> not supported``.

Faults (``GoipUdpFaults``, change any time): ``drop`` (fraction of datagrams lost, both
directions), ``duplicate`` (fraction of the device's datagrams sent twice), ``reorder``
(fraction delayed by ``reorder_delay`` so later ones overtake), ``wrong_password`` (the device
sends a wrong password in keepalives and pushes), ``reject_password`` (the device refuses the
server's PASSWORD step), ``forget_sendids`` (every PASSWORD/SEND gets ``ERROR <sendid> SENDID``,
as after a reboot), ``push_results``, ``repeat_results``. Per line: ``logout``/``login`` (GSM),
``silence`` (a dead line: no keepalive, no answers), ``fail_next``, ``set_line_error``,
``set_signal``. Per destination: ``set_delivery(number, state, delay)``.

Every SMS the device took is recorded in ``sent`` (with ``error`` for those that failed), every
datagram it got (passwords masked) in ``received``.

Test hooks over HTTP (not on the real device, which has no such thing; no auth; loopback by
default), served by ``serve_control`` on a port of its own (``smpp-bridge emulate goip_udp
--control-port``), so a test can drive an emulator that runs as its own process:
``GET /emulator/sent``, ``GET /emulator/state``, ``POST /emulator/inject`` (JSON: line, sender,
text[, smscnum]) -> ``{"ok", "seq"}``, ``POST /emulator/keepalive`` (JSON, optional: line) and
``POST /emulator/faults`` (JSON: any ``GoipUdpFaults`` field, plus ``logout`` {line:
seconds|null}, ``login`` [lines], ``silence`` {line: bool}, ``fail_next`` {line: [count,
errorstatus]}, ``line_errors`` {line: errorstatus|null}, ``delivery`` {number: [state|null,
delay|null]}, ``delivery_state`` state|null, ``signal`` {line: n}, ``occupy`` {line: seconds}).
"""

from __future__ import annotations

import hmac
import logging
import random
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import trio

from bridge.emulators.http import HttpServer, Request, Response, json_response

__all__ = ["GoipUdpEmulator", "GoipUdpFaults", "UdpSentSms", "run_goip_udp_emulator"]

log = logging.getLogger("bridge.emulators.goip_udp")

MAX_DATAGRAM = 65535
MAX_RESULT_REPEATS = 5
SESSION_TTL = 300.0

_SECRET_FIELD = re.compile(r"(?i)((?:^|;)\s*(?:pass|password)\s*:)[^;]*")
_PASSWORD_CMD = re.compile(r"(?i)^(\s*PASSWORD\s+\S+\s+).*$", re.DOTALL)
_REG = re.compile(r"^reg:([^;]*);status:([^;]*);?", re.IGNORECASE)
_ACK = re.compile(r"^(RECEIVE|DELIVER|STATE|RECORD|REMAIN) (\S+) (OK|ERROR)\b ?(.*)$", re.DOTALL)
_MSG = re.compile(r"^MSG (\d+) (\d+) ", re.DOTALL)


def _mask(text: str) -> str:
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + "***", text)
    return _PASSWORD_CMD.sub(lambda m: m.group(1) + "***", text)


@attrs.define
class GoipUdpFaults:
    """Misbehaviour switches; change them at any time (``emulator.faults.drop = 0.2``)."""

    #: Probability that a datagram (to or from the device) is lost.
    drop: float = 0.0
    #: Probability that a datagram the device sends is sent twice.
    duplicate: float = 0.0
    #: Probability that a datagram the device sends is held back ``reorder_delay`` seconds.
    reorder: float = 0.0
    reorder_delay: float = 0.05
    #: The device sends a wrong password (keepalives, RECEIVE, DELIVER, STATE).
    wrong_password: bool = False
    #: The device refuses the server's ``PASSWORD <sendid> <password>``.
    reject_password: bool = False
    #: Every PASSWORD/SEND gets ``ERROR <sendid> SENDID``.
    forget_sendids: bool = False
    #: [I] After WAIT, send the result by itself when the SMS is done.
    push_results: bool = True
    #: [I] Repeat the final OK/ERROR until DONE.
    repeat_results: bool = True


@attrs.frozen
class UdpSentSms:
    line: str
    destination: str
    text: str
    sendid: int
    telid: str
    #: The device's number for it (None when it failed).
    sms_no: int | None
    at: datetime
    #: errorstatus it failed with ("" = went out).
    error: str = ""


@attrs.define
class _Job:
    telid: str
    number: str
    sms_no: int | None
    error: str
    done_at: float
    result: str | None = None
    waited: bool = False

    def answer(self, sendid: int) -> str:
        if self.error:
            return f"ERROR {sendid} {self.telid} errorstatus:{self.error}"
        return f"OK {sendid} {self.telid} {self.sms_no}"


@attrs.define
class _Session:
    sendid: int
    text: str
    addr: Any
    created: float
    authed: bool = False
    done: bool = False
    jobs: dict[str, _Job] = attrs.Factory(dict)


@attrs.define
class _Push:
    line: str
    kind: str
    seq: int
    data: bytes
    acked: trio.Event = attrs.Factory(trio.Event)
    attempts: int = 0
    errors: list[str] = attrs.Factory(list)


@attrs.define
class _EmuLine:
    number: str
    line_id: str
    signal: int
    operator: str
    imei: str
    imsi: str
    iccid: str
    sock: Any = None
    send_lock: trio.Lock = attrs.Factory(trio.Lock)
    silent: bool = False
    logout_until: float | None = None
    fail_next: list[str] = attrs.Factory(list)
    line_error: str | None = None
    busy_until: float = 0.0
    next_sms_no: int = 1
    keepalive_seq: int = 0
    keepalives_sent: int = 0
    registered: bool | None = None
    reg_status: str | None = None
    sessions: dict[int, _Session] = attrs.Factory(dict)
    wake: trio.Event = attrs.Factory(trio.Event)

    def logged_out(self, now: float) -> bool:
        if self.logout_until is None:
            return False
        if now < self.logout_until:
            return True
        self.logout_until = None
        return False


class GoipUdpEmulator:
    def __init__(
        self,
        server_host: str,
        server_port: int,
        lines: Mapping[Any, str],
        password: str,
        *,
        keepalive_interval: float = 30.0,
        send_duration: float = 2.5,
        retransmit_interval: float = 3.0,
        delivery_delay: float = 1.0,
        delivery_state: int | None = 0,
        max_report_pushes: int = 20,
        bind_host: str = "127.0.0.1",
        signal: int = 25,
        operator: str = "EMU",
        seed: int | None = None,
        first_seq: int = 400,
        faults: GoipUdpFaults | None = None,
        **fault_options: Any,
    ):
        if not lines:
            raise ValueError("a GoIP has at least one line")
        if faults is not None and fault_options:
            raise TypeError("pass either faults= or fault options, not both")
        self.server = (server_host, int(server_port))
        self.password = password
        self.keepalive_interval = keepalive_interval
        self.send_duration = send_duration
        self.retransmit_interval = retransmit_interval
        self.delivery_delay = delivery_delay
        self.delivery_state = delivery_state
        self.max_report_pushes = max_report_pushes
        self.bind_host = bind_host
        self.faults = faults if faults is not None else GoipUdpFaults(**fault_options)
        self.sent: list[UdpSentSms] = []
        #: Every datagram the device handled (not dropped, line not silent): (line, text with
        #: passwords masked).
        self.received: list[tuple[str, str]] = []
        #: Every datagram that reached a line's socket, even if then dropped or ignored.
        self.arrivals: list[tuple[str, str]] = []
        #: Datagrams lost by the ``drop`` fault, to / from the device.
        self.dropped = {"in": 0, "out": 0}
        self._rng = random.Random(seed)
        self._seq = first_seq
        self._lines: dict[str, _EmuLine] = {}
        for n, (number, line_id) in enumerate(lines.items()):
            key = str(number)
            self._lines[key] = _EmuLine(
                number=key,
                line_id=str(line_id),
                signal=signal,
                operator=operator,
                imei=f"86749502395{8030 + n:04d}",
                imsi=f"26006017209{1324 + n:04d}",
                iccid=f"894806110007209{13242 + n:05d}",
            )
        self._pushes: dict[int, _Push] = {}
        self._deliveries: dict[str, tuple[int | None, float | None]] = {}
        self._nursery: trio.Nursery | None = None

    # ---------------------------------------------------------------- controls

    def _line(self, line: Any) -> _EmuLine:
        try:
            return self._lines[str(line)]
        except KeyError:
            raise ValueError(
                f"the emulated GoIP has lines {', '.join(self._lines)}, not {line!r}"
            ) from None

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def registered(self, line: Any) -> bool | None:
        """What the server said to the line's last keepalive (None: no answer yet)."""
        return self._line(line).registered

    def keepalive_now(self, line: Any | None = None) -> None:
        """Send the next keepalive at once (one line, or all)."""
        for state in [self._line(line)] if line is not None else self._lines.values():
            state.wake.set()

    def logout(self, line: Any, seconds: float | None = None) -> None:
        """GSM logout on ``line`` for ``seconds`` (None: until ``login``)."""
        self._line(line).logout_until = (
            float("inf") if seconds is None else trio.current_time() + float(seconds)
        )

    def login(self, line: Any) -> None:
        self._line(line).logout_until = None

    def silence(self, line: Any, silent: bool = True) -> None:
        """A dead line: no keepalives, no answers, no pushes (GoIP unplugged, line disabled)."""
        self._line(line).silent = silent

    def fail_next(self, line: Any, count: int = 1, errorstatus: Any = 38) -> None:
        """The next ``count`` SMS on ``line`` fail with ``ERROR <sendid> <telid> errorstatus:<n>``."""
        self._line(line).fail_next.extend([str(errorstatus)] * count)

    def set_line_error(self, line: Any, errorstatus: Any | None) -> None:
        """Every SMS on ``line`` fails with ``errorstatus`` (None: stop)."""
        self._line(line).line_error = None if errorstatus is None else str(errorstatus)

    def set_signal(self, line: Any, signal: int, operator: str | None = None) -> None:
        state = self._line(line)
        state.signal = signal
        if operator is not None:
            state.operator = operator

    def set_delivery(self, destination: str, state: int | None, delay: float | None = None) -> None:
        """Reports for SMS to ``destination``: ``state`` (0 delivered, other = failed, None =
        never: phone off) after ``delay`` seconds (None: ``delivery_delay``)."""
        self._deliveries[destination] = (state, delay)

    def busy(self, line: Any) -> bool:
        return trio.current_time() < self._line(line).busy_until

    def occupy(self, line: Any, seconds: float) -> None:
        """The line's GSM module is busy for ``seconds`` (a call, an SMS from elsewhere): a
        SEND meanwhile gets WAIT and goes out after it."""
        state = self._line(line)
        state.busy_until = max(state.busy_until, trio.current_time() + seconds)

    def push_attempts(self, seq: int) -> int:
        """How many times push ``seq`` (RECEIVE/DELIVER/STATE) has been sent."""
        return self._pushes[seq].attempts

    def acked(self, seq: int) -> bool:
        return self._pushes[seq].acked.is_set()

    def push_errors(self, seq: int) -> list[str]:
        return list(self._pushes[seq].errors)

    def pushes(self, kind: str | None = None) -> list[int]:
        return [s for s, p in self._pushes.items() if kind is None or p.kind == kind.upper()]

    def inject_sms(
        self, line: Any, sender: str, text: str, *, smscnum: str | None = None
    ) -> int:
        """An SMS arrives on ``line``: push RECEIVE until the server acks. Returns its N."""
        state = self._line(line)
        seq = self._next_seq()
        head = f"RECEIVE:{seq};id:{state.line_id};password:{self._device_password()};srcnum:{sender};"
        if smscnum is not None:
            head += f"smscnum:{smscnum};"
        self._start_push(state, "RECEIVE", seq, (head + "msg:" + text).encode("utf-8"), None)
        return seq

    def push_state(self, line: Any, remain_state: str) -> int:
        state = self._line(line)
        seq = self._next_seq()
        data = (
            f"STATE:{seq};id:{state.line_id};password:{self._device_password()};"
            f"gsm_remain_state:{remain_state}"
        ).encode("utf-8")
        self._start_push(state, "STATE", seq, data, None)
        return seq

    # ---------------------------------------------------------------- running

    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Open one UDP socket per line and talk to the server until cancelled.

        ``task_status.started({line: local port})``.
        """
        family = trio.socket.AF_INET6 if ":" in self.server[0] else trio.socket.AF_INET
        ports: dict[str, int] = {}
        try:
            async with trio.open_nursery() as nursery:
                for state in self._lines.values():
                    sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
                    state.sock = sock
                    await sock.bind((self.bind_host if family == trio.socket.AF_INET else "::1", 0))
                    ports[state.number] = sock.getsockname()[1]
                self._nursery = nursery
                for state in self._lines.values():
                    nursery.start_soon(self._recv_loop, state)
                    nursery.start_soon(self._keepalive_loop, state)
                task_status.started(ports)
        finally:
            self._nursery = None
            for state in self._lines.values():
                if state.sock is not None:
                    state.sock.close()
                    state.sock = None

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _device_password(self) -> str:
        return self.password + "-wrong" if self.faults.wrong_password else self.password

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("the emulator is not running (start run() first)")
        self._nursery.start_soon(fn, *args)

    async def _raw_send(self, state: _EmuLine, data: bytes, addr: Any) -> None:
        if state.sock is None:
            return
        try:
            async with state.send_lock:
                await state.sock.sendto(data, addr)
        except (OSError, trio.ClosedResourceError) as exc:
            log.debug("emulated GoIP line %s: send failed: %s", state.number, exc)

    async def _emit(self, state: _EmuLine, data: bytes, addr: Any = None) -> None:
        """Send one datagram from ``state``'s socket, through the faults."""
        if state.silent:
            return
        addr = addr or self.server
        faults = self.faults
        if faults.drop and self._rng.random() < faults.drop:
            self.dropped["out"] += 1
            return
        copies = 2 if faults.duplicate and self._rng.random() < faults.duplicate else 1
        if faults.reorder and self._rng.random() < faults.reorder and self._nursery is not None:
            self._nursery.start_soon(self._delayed, state, data, addr, copies, faults.reorder_delay)
            return
        for _ in range(copies):
            await self._raw_send(state, data, addr)

    async def _delayed(self, state: _EmuLine, data: bytes, addr: Any, copies: int, delay: float) -> None:
        await trio.sleep(delay)
        for _ in range(copies):
            await self._raw_send(state, data, addr)

    async def _keepalive_loop(self, state: _EmuLine) -> None:
        while True:
            if not state.silent:
                state.keepalive_seq += 1
                state.keepalives_sent += 1
                await self._emit(state, self._keepalive(state).encode("utf-8"))
            with trio.move_on_after(self.keepalive_interval):
                await state.wake.wait()
            state.wake = trio.Event()

    def _keepalive(self, state: _EmuLine) -> str:
        up = not state.logged_out(trio.current_time())
        return (
            f"req:{state.keepalive_seq};id:{state.line_id};pass:{self._device_password()};num:;"
            f"signal:{state.signal if up else 0};gsm_status:{'LOGIN' if up else 'LOGOUT'};"
            "voip_status:LOGOUT;voip_state:IDLE;remain_time:-1;"
            f"imei:{state.imei};imsi:{state.imsi};iccid:{state.iccid};"
            f"pro:{state.operator if up else ''};idle:{state.keepalives_sent};disable_status:0;"
            "SMS_LOGIN:N;SMB_LOGIN:;CELLINFO:LAC:7E5,CELL ID:5E5B;CGATT:Y;"
        )

    def _start_push(
        self, state: _EmuLine, kind: str, seq: int, data: bytes, limit: int | None
    ) -> None:
        push = _Push(line=state.number, kind=kind, seq=seq, data=data)
        self._pushes[seq] = push
        self._spawn(self._push_loop, state, push, limit)

    async def _push_loop(self, state: _EmuLine, push: _Push, limit: int | None) -> None:
        while not push.acked.is_set() and (limit is None or push.attempts < limit):
            if not state.silent:
                push.attempts += 1
                await self._emit(state, push.data)
            with trio.move_on_after(self.retransmit_interval):
                await push.acked.wait()

    # ---------------------------------------------------------------- incoming

    async def _recv_loop(self, state: _EmuLine) -> None:
        while True:
            try:
                data, addr = await state.sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:
                log.debug("emulated GoIP line %s: recvfrom: %s", state.number, exc)
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
            self.arrivals.append((state.number, _mask(text)))
            if state.silent:
                continue
            if self.faults.drop and self._rng.random() < self.faults.drop:
                self.dropped["in"] += 1
                continue
            self.received.append((state.number, _mask(text)))
            log.debug("emulated GoIP line %s <- %s", state.number, _mask(text)[:200])
            await self._on_datagram(state, text, data, addr)

    async def _on_datagram(self, state: _EmuLine, text: str, data: bytes, addr: Any) -> None:
        if m := _REG.match(text):
            state.reg_status = m.group(2).strip()
            state.registered = state.reg_status == "200"
            return
        if m := _MSG.match(text):
            await self._on_msg(state, int(m.group(1)), int(m.group(2)), data, m.end(), addr)
            return
        if m := _ACK.match(text.strip()):
            kind, seq, verdict, rest = m.groups()
            push = self._pushes.get(int(seq)) if seq.isdigit() else None
            if push is not None and push.kind == kind.upper() and push.line == state.number:
                if verdict == "OK":
                    push.acked.set()
                else:
                    push.errors.append(rest.strip())
            return
        parts = text.strip().split(" ")
        verb = parts[0].upper()
        if len(parts) < 2 or not parts[1].isdigit():
            return
        sendid = int(parts[1])
        if verb == "PASSWORD":
            await self._on_password(state, sendid, text.strip().split(" ", 2)[2:], addr)
        elif verb == "SEND" and len(parts) >= 4:
            await self._on_send(state, sendid, parts[2], parts[3], addr)
        elif verb == "DONE":
            session = state.sessions.get(sendid)
            if session is not None:
                session.done = True
            await self._emit(state, f"DONE {sendid}".encode(), addr)
        elif verb == "USSD":
            await self._emit(state, f"USSDERROR {sendid} not supported".encode(), addr)

    async def _on_msg(
        self, state: _EmuLine, sendid: int, length: int, data: bytes, start: int, addr: Any
    ) -> None:
        now = trio.current_time()
        for sid in [s for s, x in state.sessions.items() if now - x.created > SESSION_TTL]:
            del state.sessions[sid]
        session = state.sessions.get(sendid)
        if session is not None:
            session.addr = addr
            prompt = "SEND" if session.authed else "PASSWORD"
            await self._emit(state, f"{prompt} {sendid}".encode(), addr)
            return
        # ``start`` indexes the decoded text; MSG's header is ASCII, so it indexes the bytes too.
        body = data[start : start + length].decode("utf-8", "replace")
        state.sessions[sendid] = _Session(sendid=sendid, text=body, addr=addr, created=now)
        await self._emit(state, f"PASSWORD {sendid}".encode(), addr)

    async def _on_password(self, state: _EmuLine, sendid: int, rest: list[str], addr: Any) -> None:
        session = state.sessions.get(sendid)
        if session is None or self.faults.forget_sendids:
            await self._emit(state, f"ERROR {sendid} SENDID".encode(), addr)
            return
        given = rest[0].rstrip("\r\n") if rest else ""
        if self.faults.reject_password or not hmac.compare_digest(
            given.encode("utf-8"), self.password.encode("utf-8")
        ):
            del state.sessions[sendid]
            await self._emit(state, f"ERROR {sendid} password error".encode(), addr)
            return
        session.authed = True
        session.addr = addr
        await self._emit(state, f"SEND {sendid}".encode(), addr)

    async def _on_send(self, state: _EmuLine, sendid: int, telid: str, number: str, addr: Any) -> None:
        session = state.sessions.get(sendid)
        if session is None or not session.authed or self.faults.forget_sendids:
            await self._emit(state, f"ERROR {sendid} SENDID".encode(), addr)
            return
        session.addr = addr
        job = session.jobs.get(telid)
        if job is not None:  # a repeated SEND: never a second SMS
            answer = job.result or f"WAIT {sendid} {telid}"
            await self._emit(state, answer.encode(), addr)
            return
        now = trio.current_time()
        if state.logged_out(now):
            await self._emit(state, f"ERROR {sendid} GSM_LOGOUT".encode(), addr)
            return
        if state.fail_next:
            error = state.fail_next.pop(0)
        else:
            error = state.line_error or ""
        sms_no = None
        if not error:
            sms_no = state.next_sms_no
            state.next_sms_no += 1
        start = max(now, state.busy_until)
        done_at = start + self.send_duration
        state.busy_until = done_at
        job = _Job(telid=telid, number=number, sms_no=sms_no, error=error, done_at=done_at)
        session.jobs[telid] = job
        self.sent.append(
            UdpSentSms(
                line=state.number,
                destination=number,
                text=session.text,
                sendid=sendid,
                telid=telid,
                sms_no=sms_no,
                at=datetime.now(timezone.utc),
                error=error,
            )
        )
        log.debug(
            "emulated GoIP line %s: SMS %s to %s (%s)",
            state.number,
            sms_no,
            number,
            f"fails {error}" if error else "ok",
        )
        if start > now:
            job.waited = True
            await self._emit(state, f"WAIT {sendid} {telid}".encode(), addr)
        self._spawn(self._complete, state, session, job)

    async def _complete(self, state: _EmuLine, session: _Session, job: _Job) -> None:
        await trio.sleep_until(job.done_at)
        job.result = job.answer(session.sendid)
        if job.sms_no is not None:
            self._schedule_report(state, job)
        if job.waited and not self.faults.push_results:
            return
        repeats = 0
        while not session.done:
            await self._emit(state, job.result.encode(), session.addr)
            repeats += 1
            if not self.faults.repeat_results or repeats > MAX_RESULT_REPEATS:
                return
            await trio.sleep(self.retransmit_interval)

    def _schedule_report(self, state: _EmuLine, job: _Job) -> None:
        report_state, delay = self._deliveries.get(job.number, (self.delivery_state, None))
        if report_state is None:
            return  # phone off: no report, ever
        self._spawn(
            self._report,
            state,
            job,
            report_state,
            self.delivery_delay if delay is None else delay,
        )

    async def _report(self, state: _EmuLine, job: _Job, report_state: int, delay: float) -> None:
        await trio.sleep(delay)
        seq = self._next_seq()
        data = (
            f"DELIVER:{seq};id:{state.line_id};password:{self._device_password()};"
            f"sms_no:{job.sms_no};state:{report_state};num:{job.number}"
        ).encode("utf-8")
        self._start_push(state, "DELIVER", seq, data, self.max_report_pushes)


    # ---------------------------------------------------------------- test hooks over HTTP

    async def serve_control(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the HTTP test hooks (see the module docstring) until cancelled;
        ``task_status.started(actual_port)``. Run it next to ``run()``."""
        server = HttpServer(self._control, name="goip-udp-emulator control")
        await server.serve(host, port, task_status=task_status)

    async def _control(self, request: Request) -> Response:
        try:
            if request.path == "/emulator/sent" and request.method == "GET":
                return json_response([_sent_json(s) for s in self.sent])
            if request.path == "/emulator/state" and request.method == "GET":
                return json_response(self.state_json())
            if request.path == "/emulator/inject" and request.method == "POST":
                data = _json_object(request)
                smscnum = data.get("smscnum")
                seq = self.inject_sms(
                    data["line"],
                    str(data["sender"]),
                    str(data["text"]),
                    smscnum=None if smscnum is None else str(smscnum),
                )
                return json_response({"ok": True, "seq": seq})
            if request.path == "/emulator/keepalive" and request.method == "POST":
                data = _json_object(request) if request.body else {}
                self.keepalive_now(data.get("line"))
                return json_response({"ok": True})
            if request.path == "/emulator/faults" and request.method == "POST":
                self.apply_faults(_json_object(request))
                return json_response(self.state_json())
        except (KeyError, ValueError, TypeError) as exc:
            return json_response({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, status=400)
        return json_response({"ok": False, "error": "no such emulator endpoint"}, status=404)

    def apply_faults(self, data: Mapping[str, Any]) -> None:
        """The ``POST /emulator/faults`` body: fault fields and per-line controls."""
        fields = {f.name for f in attrs.fields(GoipUdpFaults)}
        for key, value in data.items():
            if key == "logout":
                for line, seconds in value.items():
                    self.logout(line, seconds)
            elif key == "login":
                for line in value:
                    self.login(line)
            elif key == "silence":
                for line, silent in value.items():
                    self.silence(line, bool(silent))
            elif key == "fail_next":
                for line, (count, errorstatus) in value.items():
                    self.fail_next(line, int(count), errorstatus)
            elif key == "line_errors":
                for line, errorstatus in value.items():
                    self.set_line_error(line, errorstatus)
            elif key == "delivery":
                for number, (state, delay) in value.items():
                    self.set_delivery(str(number), state, delay)
            elif key == "delivery_state":
                self.delivery_state = None if value is None else int(value)
            elif key == "signal":
                for line, signal in value.items():
                    self.set_signal(line, int(signal))
            elif key == "occupy":
                for line, seconds in value.items():
                    self.occupy(line, float(seconds))
            elif key in fields:
                setattr(self.faults, key, value)
            else:
                raise KeyError(f"unknown fault {key!r}")

    def state_json(self) -> dict[str, Any]:
        """Lines (registered, logged out, silent, busy), pushes and faults, as JSON."""
        now = trio.current_time()
        return {
            "server": f"{self.server[0]}:{self.server[1]}",
            "sent": len(self.sent),
            "faults": attrs.asdict(self.faults),
            "delivery_state": self.delivery_state,
            "dropped": dict(self.dropped),
            "lines": {
                n: {
                    "line_id": s.line_id,
                    "registered": s.registered,
                    "keepalives_sent": s.keepalives_sent,
                    "logged_out": s.logged_out(now),
                    "silent": s.silent,
                    "busy": now < s.busy_until,
                    "fail_next": list(s.fail_next),
                    "line_error": s.line_error,
                    "signal": s.signal,
                }
                for n, s in self._lines.items()
            },
            "pushes": {
                str(seq): {
                    "line": p.line,
                    "kind": p.kind,
                    "attempts": p.attempts,
                    "acked": p.acked.is_set(),
                    "errors": list(p.errors),
                }
                for seq, p in self._pushes.items()
            },
        }


def _json_object(request: Request) -> Mapping[str, Any]:
    data = request.json()
    if not isinstance(data, Mapping):
        raise TypeError("expected a JSON object")
    return data


def _sent_json(s: UdpSentSms) -> dict[str, Any]:
    return {
        "line": s.line,
        "destination": s.destination,
        "text": s.text,
        "sendid": s.sendid,
        "telid": s.telid,
        "sms_no": s.sms_no,
        "at": s.at.isoformat(),
        "error": s.error,
    }


async def run_goip_udp_emulator(
    server_host: str,
    server_port: int,
    lines: Mapping[Any, str],
    password: str,
    **opts: Any,
) -> None:
    """Run a GoIP (SMS-server mode) emulator until cancelled, pointed at the bridge's UDP port.

    ``lines`` maps line numbers to the line ids configured in the bridge ({"1": "gw1"});
    ``opts`` are ``GoipUdpEmulator`` keyword arguments (keepalive_interval, send_duration,
    delivery_delay, delivery_state, seed, and any ``GoipUdpFaults`` field such as drop=0.1).
    """
    emulator = GoipUdpEmulator(server_host, server_port, lines, password, **opts)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(emulator.run)
        log.info(
            "GoIP SMS-server emulator: %d line(s) (%s) talking to udp %s:%d from ports %s",
            len(ports),
            ", ".join(f"{n}={emulator._lines[n].line_id}" for n in ports),
            server_host,
            server_port,
            ", ".join(str(p) for p in ports.values()),
        )


# ============================================================================================
# `smpp-bridge emulate goip_udp` (bridge/cli.py reads these)

#: None: not an HTTP server (the GoIP calls the bridge over UDP); ``cli_main`` runs it, with
#: its test hooks on ``--control-port``.
DEFAULT_PORT = None


def add_arguments(parser: Any) -> None:
    """This kind's options of ``smpp-bridge emulate`` (an ``argparse`` parser)."""
    parser.add_argument("--password", help="the SMS-server password set in the bridge, required")
    parser.add_argument("--send-duration", type=float, default=0.5,
                        help="seconds a line is busy per SMS [0.5]")
    parser.add_argument("--server-host", default="127.0.0.1", help="the bridge's address [127.0.0.1]")
    parser.add_argument("--server-port", type=int, default=44444, help="the bridge's listen_port [44444]")
    parser.add_argument("--line-ids", default="gw1", help="line ids as set in the bridge's line_ids, "
                        "in channel order: gw1,gw2 (or 1=gw1,2=gw2) [gw1]")
    parser.add_argument("--keepalive-interval", type=float, default=30.0,
                        help="seconds between keepalives [30]")
    parser.add_argument("--retransmit-interval", type=float, default=3.0,
                        help="seconds between repeats of an unacknowledged RECEIVE/DELIVER [3]")
    parser.add_argument("--delivery-delay", type=float, default=1.0,
                        help="seconds until the handset report [1]")
    parser.add_argument("--delivery-state", default="0",
                        help="state of handset reports: 0 delivered, another number failed, none = never [0]")
    parser.add_argument("--control-port", type=int, default=0,
                        help="HTTP port of the test hooks [0 = any free port]")


def _line_ids(spec: str) -> dict[str, str]:
    """``gw1,gw2`` -> {"1": "gw1", "2": "gw2"}; ``1=gw1,3=gw3`` keeps the numbers given."""
    out: dict[str, str] = {}
    for n, item in enumerate(x.strip() for x in spec.split(",") if x.strip()):
        line, sep, line_id = item.partition("=")
        if sep:
            out[line.strip()] = line_id.strip()
        else:
            out[str(n + 1)] = item
    if not out:
        raise ValueError("expected line ids like gw1,gw2 (or 1=gw1,2=gw2)")
    return out


def from_cli(args: Any) -> tuple[GoipUdpEmulator, str]:
    """(emulator, a one-line description) from the parsed options; ValueError for a bad one."""
    if not args.password:
        raise ValueError("--password is required (the SMS-server password set in the bridge)")
    lines = _line_ids(args.line_ids)
    emulator = GoipUdpEmulator(
        args.server_host,
        args.server_port,
        lines,
        args.password,
        keepalive_interval=args.keepalive_interval,
        send_duration=args.send_duration,
        retransmit_interval=args.retransmit_interval,
        delivery_delay=args.delivery_delay,
        delivery_state=None if args.delivery_state.lower() == "none" else int(args.delivery_state),
        bind_host=args.host,
        seed=args.seed,
    )
    ids = ", ".join(f"{n}={i}" for n, i in lines.items())
    return emulator, f"{len(lines)} line(s) ({ids})"


def cli_main(
    emulator: GoipUdpEmulator, args: Any
) -> tuple[Any, list[tuple[int, str, str, str]]]:
    """(the ``trio.run`` main of ``smpp-bridge emulate goip_udp``, the ports it listens on as
    (port, host, what, the option that sets it))."""

    lines = _line_ids(args.line_ids)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports = await nursery.start(emulator.run)
            control = await nursery.start(emulator.serve_control, args.host, args.control_port)
            ids = ", ".join(f"{n}={i}" for n, i in lines.items())
            print(
                f"goip_udp emulator ready: {len(lines)} line(s) ({ids}) talking to "
                f"udp {args.server_host}:{args.server_port} from port(s) "
                f"{', '.join(str(p) for p in ports.values())}; "
                f"test hooks on http://{args.host}:{control}/ (/emulator/...); Ctrl-C stops it",
                flush=True,
            )

    return main, [(args.control_port, args.host, "test hooks HTTP", "--control-port (0 = any free port)")]
