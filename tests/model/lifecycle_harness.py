"""Support for the model-based lifecycle test: a real bridge (``App``) and a GoIP emulator in
one trio run on a simulated clock, an SMPP ESME over TCP built on our sans-IO codec, and a
model of what every acknowledged message and every inbound SMS must end as.

Time: the trio run uses ``trio.testing.MockClock(rate=1)`` (real speed, so threads, sockets and
SQLite work) and the bridge's wall clock is ``EPOCH + trio.current_time()``; ``clock.jump(s)``
moves validity, schedules, partial timeouts and retention forward without waiting.
"""

from __future__ import annotations

import sqlite3
import struct
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import trio

from bridge.app import App
from bridge.config import load_config_text
from bridge.devices.goip_http.emulator import GoipEmulator
from bridge.lifecycle import FINAL, SMPP_STATE, State
from bridge.smpp.constants import CommandId as C
from bridge.smpp.constants import MessageState, Status, Tag
from bridge.smpp.pdu import Pdu, decode, encode, make_response
from bridge.store import parse_id

EPOCH = 1_750_000_000.0  # 2025-06-15: the simulated wall clock starts here
ESME, PASSWORD = "model", "secret1"
LINES = 2
PARTIAL_TIMEOUT = 120.0
DEFAULT_VALIDITY = 86_400.0
MAX_VALIDITY = 172_800.0
# The session timers run on trio's clock, which the test jumps: a bound ESME sends nothing while
# the clock leaps (up to MAX_VALIDITY and more at the end), so enquire_link and inactivity are set
# beyond every jump of a run; otherwise a jump would end the session the model keeps using.
SESSION_IDLE = 10_000_000
RETENTION = 30 * 86_400.0  # longer than any jump of a test run, so no receipt is dropped
REPLY_TIMEOUT = 5.0  # real seconds for a response to a request of ours

SUCCESS = {State.DELIVERED, State.ACKNOWLEDGED}


def config_yaml(goip_url: str, store: Path) -> str:
    return textwrap.dedent(
        f"""
        smpp:
          listeners:
            - host: 127.0.0.1
              port: 0
          timers: {{session_init: 5, enquire_link: {SESSION_IDLE // 2}, inactivity: {SESSION_IDLE}, response: 5, unbind_grace: 1}}
        store:
          path: {store}
          synchronous: normal
          partial_timeout: {PARTIAL_TIMEOUT}
        admin:
          port: 0
        esmes:
          - system_id: {ESME}
            password: {PASSWORD}
            allowed_ips: [127.0.0.1]
            max_binds: 10
            throughput: 0
        devices:
          - name: goip1
            kind: goip_http
            url: {goip_url}
            username: admin
            password: admin
            lines: {LINES}
            timeout: 1
            status_poll_interval: 0.05
            status_timeout: 10
            inbox_poll_interval: 0.1
            health_interval: 1
            caps: {{per_minute: 0}}
        routes:
          - name: all
            channels: [goip1]
        scheduler:
          default_validity: {DEFAULT_VALIDITY}
          max_validity: {MAX_VALIDITY}
          retry_backoff: 0.2
          retry_backoff_max: 1
          busy_retry: 0.2
          logout_cooldown: 0.5
          quarantine_base: 0.5
          quarantine_max: 2
        receipts:
          retention: {RETENTION}
        inbound:
          default_esme: {ESME}
        """
    )


def rel_time(seconds: int) -> str:
    """An SMPP relative time (``YYMMDDhhmmss000R``)."""
    d, rest = divmod(int(seconds), 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"0000{d:02d}{h:02d}{m:02d}{s:02d}000R"


# ------------------------------------------------------------------------------------- ESME


class Gone(Exception):
    """The connection to the bridge is closed."""


class Esme:
    """One ESME connection over TCP, speaking through bridge/smpp/pdu.py. Every deliver_sm it
    receives is answered ESME_ROK and recorded in ``sink``."""

    def __init__(self, sink: list[Pdu]) -> None:
        self.sink = sink
        self.stream: trio.SocketStream | None = None
        self.seq = 0
        self.waiting: dict[int, tuple[trio.Event, list[Pdu]]] = {}
        self.alive = False
        self.bind_type = ""
        self._send_lock = trio.Lock()

    async def connect(self, nursery: trio.Nursery, port: int, bind: str = "transceiver") -> int:
        self.stream = await trio.open_tcp_stream("127.0.0.1", port)
        self.alive = True
        nursery.start_soon(self._reader, self.stream)
        cid = {"transceiver": C.BIND_TRANSCEIVER, "receiver": C.BIND_RECEIVER, "transmitter": C.BIND_TRANSMITTER}[bind]
        resp = await self.request(
            Pdu(cid, params=dict(system_id=ESME, password=PASSWORD, system_type="", interface_version=0x34,
                                 addr_ton=0, addr_npi=0, address_range=""))
        )
        self.bind_type = bind
        return resp.command_status

    async def _write(self, data: bytes) -> None:
        if self.stream is None or not self.alive or self.stream.socket.fileno() < 0:
            raise Gone()
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.alive = False
                raise Gone() from None

    async def send_eof(self) -> None:
        """Half-close: no more bytes from us; reading goes on."""
        if self.stream is None:
            return
        async with self._send_lock:
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        self.alive = False  # nothing more can be written

    async def send(self, pdu: Pdu) -> int:
        self.seq += 1
        pdu.sequence_number = self.seq
        await self._write(encode(pdu))
        return self.seq

    async def request(self, pdu: Pdu) -> Pdu:
        event, box = trio.Event(), []
        self.seq += 1
        pdu.sequence_number = self.seq
        self.waiting[self.seq] = (event, box)
        await self._write(encode(pdu))
        with trio.move_on_after(REPLY_TIMEOUT):
            await event.wait()
        self.waiting.pop(pdu.sequence_number, None)
        if not box:
            raise Gone() if not self.alive else TimeoutError(f"no answer to {C(pdu.command_id).name}")
        return box[0]

    async def wait_response(self, seq: int) -> Pdu | None:
        event, box = trio.Event(), []
        self.waiting[seq] = (event, box)
        with trio.move_on_after(REPLY_TIMEOUT):
            await event.wait()
        return box[0] if box else None

    async def _reader(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while True:
                while len(buf) >= 4 and len(buf) >= struct.unpack(">I", buf[:4])[0]:
                    n = struct.unpack(">I", buf[:4])[0]
                    pdu = decode(buf[:n])
                    buf = buf[n:]
                    await self._dispatch(pdu)
                data = await stream.receive_some(65536)
                if not data:
                    break
                buf += data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, Gone):
            pass
        finally:
            self.alive = False
            for event, _ in list(self.waiting.values()):
                event.set()

    async def _dispatch(self, pdu: Pdu) -> None:
        if pdu.command_id & 0x80000000:
            waiter = self.waiting.get(pdu.sequence_number)
            if waiter is not None:
                waiter[1].append(pdu)
                waiter[0].set()
            return
        try:
            if pdu.command_id == C.DELIVER_SM:
                await self._write(encode(make_response(pdu, Status.ROK, message_id="")))
                # Counted once answered: one we could not answer (half-closed) comes again.
                self.sink.append(pdu)
            elif pdu.command_id in (C.ENQUIRE_LINK, C.UNBIND):
                await self._write(encode(make_response(pdu, Status.ROK)))
        except Gone:
            pass  # write side closed: keep reading (responses may still come)

    async def unbind(self) -> None:
        try:
            await self.request(Pdu(C.UNBIND))
        except (Gone, TimeoutError):
            pass
        await self.close()

    async def close(self) -> None:
        self.alive = False
        if self.stream is not None:
            await self.stream.aclose()


# ------------------------------------------------------------------------------------- model


@attrs.define
class Expected:
    """One logical message as the ESME sees it: what it asked for and what it was told."""

    label: str  # how the step that made it reads in the shrunk example
    destination: str
    text: str
    registered_delivery: int
    ids: list[str]  # every ESME_ROK message_id that belongs to it (parts, resends)
    submitted_at: float
    schedule_at: float | None = None
    expire_at: float | None = None
    complete: bool = True  # False: a part was never sent (must end by partial_timeout)
    cancelled_at: float | None = None  # cancel_sm answered ESME_ROK at this (wall) time
    opted_out: bool = False  # the destination opted out before the submit
    faulted: bool = False  # a device fault was on while it was alive: any final stat goes
    dc: int = 0  # data_coding: replace_sm's new text is read in it (replace_sm has none)
    # submit_multi: replace_sm by its one id answered ESME_ROK at this time, the text before
    # (a destination whose send had begun keeps the old text: only those waiting are replaced)
    replaced: list[tuple[str, float]] = attrs.field(factory=list)
    schedule_set_at: float | None = None  # when replace_sm gave it its schedule_at


@attrs.define
class Sent:
    at: float
    destination: str
    text: str
    error: str


class Bridge:
    """The App and the GoIP emulator in the current trio run, restartable on one store."""

    def __init__(self, workdir: Path, clock: Any) -> None:
        self.workdir = workdir
        self.mock = clock
        self.wall: Callable[[], float] = lambda: EPOCH + clock.current_time()  # any thread
        self.emulator = GoipEmulator(lines=LINES, send_duration=0.05, clock=clock.current_time, seed=1)
        self.sent: list[Sent] = []
        orig = self.emulator._send

        def send(request: Any) -> Any:
            before = len(self.emulator.sent)
            reply = orig(request)
            for s in self.emulator.sent[before:]:
                self.sent.append(Sent(self.wall(), s.destination, s.text, s.error))
            return reply

        self.emulator._send = send  # type: ignore[method-assign]
        self.app: App | None = None
        self.scope: trio.CancelScope | None = None
        self.port = 0
        self.db_path = workdir / "bridge.sqlite3"

    async def start_emulator(self, nursery: trio.Nursery) -> None:
        port = await nursery.start(self.emulator.serve, "127.0.0.1", 0)
        self.config = load_config_text(config_yaml(f"http://127.0.0.1:{port}", self.db_path))

    async def start(self, nursery: trio.Nursery) -> None:
        self.app = App(self.config, clock=self.wall)
        app = self.app

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as scope:
                self.scope = scope
                await app.run(task_status=task_status)

        await nursery.start(run)
        self.port = app.smpp_ports[0]

    async def stop(self, graceful: bool) -> None:
        """Graceful: App.stop() (unbind ESMEs, then end). Abrupt: cancel the app's run at once
        (the in-process stand-in for kill -9: no unbind, tasks cancelled wherever they are;
        unlike kill -9, committed SQLite transactions and `finally` blocks still run)."""
        assert self.app is not None and self.scope is not None
        if graceful:
            await self.app.stop()
        else:
            self.scope.cancel()
        with trio.fail_after(15):
            await self.app.stopped.wait()
        self.app = None

    def requests_outstanding(self) -> int:
        """deliver_sm (and other requests) the bridge sent to an ESME and has no answer for."""
        if self.app is None:
            return 0
        return sum(c.requests_outstanding for c in self.app.server.connections)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)

    def store_state(self, message_id: str) -> tuple[int, str] | None:
        """(logical message id, state) of the message behind an id, as the store has it."""
        n = parse_id(message_id)
        if n is None:
            return None
        with self.db() as db:
            row = db.execute("SELECT message FROM aliases WHERE alias=?", (n,)).fetchone()
            mid = row[0] if row else n
            row = db.execute("SELECT state FROM messages WHERE id=?", (mid,)).fetchone()
            if row is None:
                part = db.execute("SELECT id FROM partials WHERE id=?", (n,)).fetchone()
                return (n, "partial") if part else None
            return mid, row[0]

    def unfinished(self) -> int:
        with self.db() as db:
            finals = tuple(s.value for s in FINAL)
            q = f"SELECT count(*) FROM messages WHERE state NOT IN ({','.join('?' * len(finals))})"
            n = db.execute(q, finals).fetchone()[0]
            n += db.execute("SELECT count(*) FROM partials").fetchone()[0]
            return int(n)

    def pending_outbox(self) -> int:
        with self.db() as db:
            return int(db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0])


def receipt_of(pdu: Pdu) -> tuple[str, str, str] | None:
    """(receipted id, destination it was for, stat) of a delivery receipt, else None."""
    if not pdu.params.get("esm_class", 0) & 0x04:
        return None
    text = pdu.params.get("short_message", b"").decode("ascii", "replace")
    fields = dict(tok.split(":", 1) for tok in text.split(" ") if ":" in tok)
    rid = pdu.tlvs.get(Tag.RECEIPTED_MESSAGE_ID) or fields.get("id", "")
    return str(rid), pdu.params.get("source_addr", ""), fields.get("stat", "")


def mo_of(pdu: Pdu) -> tuple[str, str] | None:
    """(sender, text) of an MO deliver_sm (not a receipt), else None."""
    if pdu.params.get("esm_class", 0) & 0x3C:
        return None
    body = pdu.params.get("short_message", b"") or pdu.tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    if pdu.params.get("esm_class", 0) & 0x40:
        body = body[body[0] + 1 :]
    dc = pdu.params.get("data_coding", 0)
    text = body.decode("utf-16-be") if dc == 8 else body.decode("latin-1") if dc == 3 else body.decode("gsm03.38")
    return pdu.params.get("source_addr", ""), text


STAT_OF_STATE = {s: {
    MessageState.DELIVERED: "DELIVRD", MessageState.EXPIRED: "EXPIRED", MessageState.DELETED: "DELETED",
    MessageState.UNDELIVERABLE: "UNDELIV", MessageState.ACCEPTED: "ACCEPTD", MessageState.UNKNOWN: "UNKNOWN",
    MessageState.REJECTED: "REJECTD", MessageState.ENROUTE: "ENROUTE"}[SMPP_STATE[s]] for s in State}
