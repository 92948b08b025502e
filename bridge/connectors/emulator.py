"""An SMSC for tests and the demo: takes binds, answers submit_sm, sends receipts and MO.

It speaks through our sans-IO ``ServerSession`` (the SMSC role). Its faults use the words of
the device emulators (bridge/emulators/faults.py, docs/emulators.md) where they mean the same,
and add what only an SMSC does. Set them on ``emulator.faults`` (``apply_faults`` takes a dict):

* ``delay`` - seconds before every submit_sm_resp;
* ``hang`` - never answer a submit_sm; with ``hang_after_processing`` (default on) the message
  is taken first (it is in ``sent`` and gets its receipt), so the answer is lost, not the request;
* ``garbage`` - answer a submit_sm with bytes that are not SMPP, then close;
* ``bind_status`` - refuse every bind with this command_status (e.g. 0x0E ESME_RINVPASWD);
* ``throttle`` - answer the next N submit_sm with ESME_RTHROTTLED (``throttle_status`` to use
  ESME_RMSGQFUL instead);
* ``drop_after`` - close the connection after taking this many more submit_sm, without
  answering the last one (a drop mid-window);
* ``receipts`` - send a receipt for each message (default on), with ``receipt_stat``;
* ``receipt_format`` - "both" (text and TLVs), "text" or "tlv";
* ``receipt_id`` - how the receipt writes the id of the resp: "same", "lower", "upper",
  "padded" (zeros to 20 digits), "decimal" (the hexadecimal id as a decimal number);
* ``receipt_first`` - send the receipt before the submit_sm_resp;
* ``duplicate_receipts`` - send every receipt this many extra times;
* ``refuse_status`` - answer every submit_sm with this error status (0: off);
* ``congestion`` - SMPP 5.0: put this congestion_state (0-100) in every submit_sm_resp and
  enquire_link_resp (None: off);
* ``sc_interface_version`` - put this sc_interface_version (0x50 for 5.0) in the bind_resp
  (0: off).

``inject_mo(source, destination, text)`` sends an MO (deliver_sm) to every receiver bind;
``send_receipt(message_id, stat, err)`` a receipt for a message it took, when a test says so
(``receipts: false`` and this one: ENROUTE, then ACCEPTD, then DELIVRD ..., or one that
comes late). The statuses of the deliver_sm_resp it got back are counted (``deliver_resps``
in ``/emulator/state``).
``outbind(host, port, system_id, password)`` connects to an ESME and asks it to bind as a
receiver on that connection (SMPP 3.4 4.1.7); over HTTP: ``POST /emulator/outbind``.
"""

from __future__ import annotations

import itertools
import logging
from datetime import datetime, timezone
from typing import Any

import attrs
import trio

from ..smpp.concat import extract
from ..smpp.constants import ESM_TYPE_RECEIPT, MessageState, Status, Tag
from ..smpp.constants import CommandId as C
from ..smpp.pdu import Pdu, make_response
from ..smpp.receipt import build_receipt_text, receipt_tlvs
from ..smpp.session import NEED_DATA, Closed, Rejected, ServerSession
from ..smpp.text import encode_for_esme

log = logging.getLogger(__name__)

GARBAGE = b"\x00\x00\x00\x05garbage, not SMPP"
_STAT_STATE = {
    "DELIVRD": MessageState.DELIVERED, "UNDELIV": MessageState.UNDELIVERABLE,
    "REJECTD": MessageState.REJECTED, "EXPIRED": MessageState.EXPIRED,
    "ENROUTE": MessageState.ENROUTE, "ACCEPTD": MessageState.ACCEPTED,
}  # fmt: skip


@attrs.define
class SmscFaults:
    delay: float = 0.0
    hang: bool = False
    hang_after_processing: bool = True
    garbage: bool = False
    bind_status: int = 0
    throttle: int = 0
    throttle_status: int = Status.RTHROTTLED
    drop_after: int | None = None
    receipts: bool = True
    receipt_stat: str = "DELIVRD"
    receipt_err: int = 0
    receipt_format: str = "both"
    receipt_id: str = "same"
    receipt_first: bool = False
    duplicate_receipts: int = 0
    refuse_status: int = 0
    congestion: int | None = None
    sc_interface_version: int = 0


@attrs.define
class Submitted:
    message_id: str
    source: str
    destination: str
    body: bytes
    esm_class: int
    data_coding: int
    tlvs: dict[int, Any]


class _Conn:
    def __init__(self, emu: SmscEmulator, stream: trio.SocketStream) -> None:
        self.emu = emu
        self.stream = stream
        self.session = ServerSession()
        self.lock = trio.Lock()
        self.system_id: str | None = None

    async def write(self, pdu: Pdu) -> None:
        async with self.lock:
            await self.stream.send_all(self.session.send(pdu))

    async def request(self, pdu: Pdu) -> None:
        pdu.sequence_number = self.session.next_sequence()
        await self.write(pdu)


class SmscEmulator:
    """An SMSC on 127.0.0.1 (``port`` once serving)."""

    def __init__(self, system_id: str = "bridge", password: str = "secret", *, ids: str = "hex") -> None:
        self.system_id = system_id
        self.password = password
        self.ids = ids  # "hex" ("0000A1F3") or "decimal"
        self.faults = SmscFaults()
        self.sent: list[Submitted] = []
        self.binds_total = 0
        self.unbinds = 0
        self.outbinds = 0
        self.deliver_resps: dict[int, int] = {}  # deliver_sm_resp command_status -> how many
        self.port: int | None = None
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(0xA1F3)
        self._nursery: trio.Nursery | None = None
        self._ssl: Any = None

    def apply_faults(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if not hasattr(self.faults, key):
                raise ValueError(f"unknown SMSC fault {key!r}; known: {', '.join(attrs.fields_dict(SmscFaults))}")
            setattr(self.faults, key, value)

    @property
    def connections(self) -> int:
        return len(self._conns)

    @property
    def bound(self) -> int:
        return sum(1 for c in self._conns if c.session.bound)

    async def serve(self, port: int = 0, *, ssl_context: Any = None, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (TLS with ``ssl_context``) until cancelled; started(port)."""
        self._ssl = ssl_context
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    def drop_all(self) -> None:
        """Close every connection at once (the SMSC restarts)."""
        for conn in list(self._conns):
            stream = conn.stream
            getattr(stream, "transport_stream", stream).socket.close()

    async def outbind(self, host: str, port: int, system_id: str, password: str, *,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to an ESME and send ``outbind`` (SMPP 3.4 4.1.7); the ESME then binds as a
        receiver on this connection, which is served like any other until it ends."""
        stream = await trio.open_tcp_stream(host, port)
        conn = _Conn(self, stream)
        await conn.request(Pdu(C.OUTBIND, 0, 0, {"system_id": system_id, "password": password}))
        self.outbinds += 1
        task_status.started()
        await self._serve(conn)

    async def _handle(self, stream: Any) -> None:
        if self._ssl is not None:
            stream = trio.SSLStream(stream, self._ssl, server_side=True)
        await self._serve(_Conn(self, stream))

    async def _serve(self, conn: _Conn) -> None:
        stream = conn.stream
        self._conns.add(conn)
        try:
            await self._read(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # includes a TLS handshake the client gave up (ssl.SSLError is an OSError)
        finally:
            self._conns.discard(conn)
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _read(self, conn: _Conn) -> None:
        s = conn.session
        while True:
            ev = s.next_event()
            if ev is NEED_DATA:
                s.receive_data(await conn.stream.receive_some(65536) or b"")
                continue
            if ev is Closed:
                return
            if isinstance(ev, Rejected):
                if ev.answer is not None:
                    await conn.write(ev.answer)
                if ev.close:
                    return
                continue
            if not await self._on_pdu(conn, ev):
                return

    async def _on_pdu(self, conn: _Conn, pdu: Pdu) -> bool:
        cid = pdu.command_id
        f = self.faults
        if cid in (C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER):
            status = f.bind_status
            if not status and (pdu.params.get("system_id") != self.system_id or pdu.params.get("password") != self.password):
                status = Status.RINVPASWD
            sc = {Tag.SC_INTERFACE_VERSION: f.sc_interface_version} if f.sc_interface_version else {}
            await conn.write(make_response(pdu, status, system_id="emu-smsc", tlvs=sc))
            if not status:
                self.binds_total += 1
                conn.system_id = pdu.params.get("system_id")
            return True
        if cid == C.UNBIND:
            self.unbinds += 1
            await conn.write(make_response(pdu))
            return False
        if cid == C.ENQUIRE_LINK:
            if not f.hang:
                await conn.write(self._resp(pdu))
            return True
        if cid == C.SUBMIT_SM:
            return await self._submit(conn, pdu)
        if cid == C.DELIVER_SM_RESP:
            self.deliver_resps[pdu.command_status] = self.deliver_resps.get(pdu.command_status, 0) + 1
        return True  # responses (deliver_sm_resp ...)

    async def _submit(self, conn: _Conn, pdu: Pdu) -> bool:
        f = self.faults
        if f.garbage:
            await conn.stream.send_all(GARBAGE)
            return False
        if f.throttle > 0:
            f.throttle -= 1
            await conn.write(self._resp(pdu, f.throttle_status))
            return True
        if f.refuse_status:
            await conn.write(self._resp(pdu, f.refuse_status))
            return True
        if f.hang and not f.hang_after_processing:
            return True
        n = next(self._ids)
        mid = f"{n:08X}" if self.ids == "hex" else str(n)
        body, _concat = extract(pdu)
        self.sent.append(Submitted(
            mid, str(pdu.params.get("source_addr")), str(pdu.params.get("destination_addr")),
            bytes(pdu.params.get("short_message") or b""), int(pdu.params.get("esm_class") or 0),
            int(pdu.params.get("data_coding") or 0), dict(pdu.tlvs),
        ))  # fmt: skip
        if f.drop_after is not None:
            if f.drop_after <= 0:
                f.drop_after = None
                return False  # taken, never answered, connection gone
            f.drop_after -= 1
        want_receipt = f.receipts and int(pdu.params.get("registered_delivery") or 0) & 0x03
        if want_receipt and f.receipt_first:
            await self._receipts(conn, mid)
        if f.hang:
            if want_receipt and not f.receipt_first:
                await self._receipts(conn, mid)
            return True
        if f.delay:
            await trio.sleep(f.delay)
        await conn.write(self._resp(pdu, message_id=mid))
        if want_receipt and not f.receipt_first:
            await self._receipts(conn, mid)
        return True

    def _resp(self, pdu: Pdu, status: int = 0, **params: Any) -> Pdu:
        """A response, with the congestion_state TLV when the ``congestion`` fault is set."""
        c = self.faults.congestion
        return make_response(pdu, status, tlvs={Tag.CONGESTION_STATE: c} if c is not None else None, **params)

    def receipt_id(self, mid: str) -> str:
        style = self.faults.receipt_id
        if style == "lower":
            return mid.lower()
        if style == "upper":
            return mid.upper()
        if style == "padded":
            return mid.rjust(20, "0")
        if style == "decimal":
            return str(int(mid, 16))
        return mid

    async def send_receipt(self, mid: str, stat: str, err: int = 0) -> int:
        """A receipt for ``mid`` now, to one receiver bind; returns how many got it (0 or 1)."""
        conn = next((c for c in self._conns if c.system_id is not None), None)
        if conn is None or self._receiver(conn) is None:
            return 0
        await self._receipts(conn, mid, stat, err)
        return 1

    async def _receipts(self, conn: _Conn, mid: str, stat: str | None = None, err: int | None = None) -> None:
        f = self.faults
        stat = stat or f.receipt_stat
        err = f.receipt_err if err is None else err
        rid = self.receipt_id(mid)
        target = self._receiver(conn)
        if target is None:
            return
        text, tlvs = b"", {}
        if f.receipt_format in ("both", "text"):
            now = datetime.now(timezone.utc)
            text = build_receipt_text(
                rid, delivered=1 if stat == "DELIVRD" else 0, submit_date=now, done_date=now,
                stat=stat, err=err % 1000, text="",
            ).encode("ascii")
        if f.receipt_format in ("both", "tlv"):
            net = (8, err) if err else None
            tlvs = receipt_tlvs(rid, _STAT_STATE.get(stat, MessageState.UNKNOWN), net)
        log.debug("receipt for %s as %r (%s, %s)", mid, rid, f.receipt_format, stat)
        for _ in range(1 + f.duplicate_receipts):
            pdu = Pdu(C.DELIVER_SM, 0, 0, {
                "source_addr": "", "destination_addr": "", "esm_class": ESM_TYPE_RECEIPT,
                "data_coding": 0, "short_message": text,
            }, dict(tlvs))  # fmt: skip
            await target.request(pdu)

    def _receiver(self, conn: _Conn) -> _Conn | None:
        from ..smpp.session import SessionState as S

        if conn.session.state in (S.BOUND_RX, S.BOUND_TRX):
            return conn
        for other in self._conns:
            if other.session.state in (S.BOUND_RX, S.BOUND_TRX) and other.system_id == conn.system_id:
                return other
        return None

    async def inject_mo(self, source: str, destination: str, text: str) -> int:
        """An MO to one receiver bind; returns how many binds it went to (0 or 1)."""
        from ..smpp.session import SessionState as S

        coding, body = encode_for_esme(text)
        for conn in list(self._conns):
            if conn.session.state in (S.BOUND_RX, S.BOUND_TRX):
                await conn.request(Pdu(C.DELIVER_SM, 0, 0, {
                    "source_addr": source, "destination_addr": destination, "esm_class": 0,
                    "data_coding": coding, "short_message": body,
                }))  # fmt: skip
                return 1
        return 0


# -- test hooks over HTTP and the command line ---------------------------------------------------
# The same hooks as the device emulators (docs/emulators.md): GET /emulator/sent, GET
# /emulator/state, GET|POST /emulator/faults, POST /emulator/inject (an MO: sender, recipient,
# text), plus POST /emulator/drop (close every connection: the SMSC restarts).


def _sent_json(s: Submitted) -> dict[str, Any]:
    return {
        "message_id": s.message_id, "source": s.source, "destination": s.destination,
        "body_hex": s.body.hex(), "esm_class": s.esm_class, "data_coding": s.data_coding,
    }  # fmt: skip


async def control(emu: SmscEmulator, request: Any) -> Any:
    from bridge.emulators.faults import form_or_json
    from bridge.http.server import json_response

    path, method = request.path, request.method
    if path == "/emulator/sent" and method == "GET":
        return json_response([_sent_json(s) for s in emu.sent])
    if path == "/emulator/state" and method == "GET":
        return json_response({"bound": emu.bound, "binds_total": emu.binds_total, "unbinds": emu.unbinds,
                              "outbinds": emu.outbinds,
                              "sent": len(emu.sent), "faults": attrs.asdict(emu.faults),
                              "deliver_resps": {str(k): n for k, n in emu.deliver_resps.items()}})
    if path == "/emulator/receipt" and method == "POST":
        data = form_or_json(request)
        try:
            sent = await emu.send_receipt(str(data["message_id"]), str(data["stat"]), int(data.get("err", 0)))
        except KeyError as exc:
            return json_response({"error": f"missing {exc.args[0]}"}, status=400)
        return json_response({"delivered_to_binds": sent}, status=200 if sent else 409)
    if path == "/emulator/faults":
        if method == "POST":
            try:
                emu.apply_faults(dict(form_or_json(request)))
            except (ValueError, TypeError) as exc:
                return json_response({"error": str(exc)}, status=400)
        return json_response(attrs.asdict(emu.faults))
    if path == "/emulator/inject" and method == "POST":
        data = form_or_json(request)
        try:
            sent = await emu.inject_mo(str(data["sender"]), str(data.get("recipient", "")), str(data["text"]))
        except KeyError as exc:
            return json_response({"error": f"missing {exc.args[0]}"}, status=400)
        return json_response({"delivered_to_binds": sent}, status=200 if sent else 409)
    if path == "/emulator/outbind" and method == "POST":
        data = form_or_json(request)
        try:
            target = (str(data.get("host", "127.0.0.1")), int(data["port"]), str(data["system_id"]), str(data["password"]))
        except (KeyError, ValueError) as exc:
            return json_response({"error": f"expected port, system_id, password (and host): {exc}"}, status=400)
        try:
            assert emu._nursery is not None
            await emu._nursery.start(emu.outbind, *target)
        except OSError as exc:
            return json_response({"error": f"cannot connect to {target[0]}:{target[1]}: {exc}"}, status=502)
        return json_response({"outbind": True})
    if path == "/emulator/drop" and method == "POST":
        emu.drop_all()
        return json_response({"dropped": True})
    return json_response({"error": f"no hook {method} {path}"}, status=404)


CLI_ALIASES = ("smsc",)
DEFAULT_PORT = None


def add_arguments(parser: Any) -> None:
    parser.add_argument("--smpp-port", type=int, default=2776, help="SMPP port [2776; 0 = any free port]")
    parser.add_argument("--control-port", "--port", dest="control_port", type=int, default=0,
                        help="HTTP port of the test hooks [0 = any free]")
    parser.add_argument("--system-id", default="bridge", help="the system_id binds must use [bridge]")
    parser.add_argument("--password", default="secret", help="the password binds must use [secret]")
    parser.add_argument("--ids", choices=["hex", "decimal"], default="hex", help="message id style [hex]")


def from_cli(args: Any) -> tuple[SmscEmulator, str]:
    return SmscEmulator(args.system_id, args.password, ids=args.ids), f"system_id {args.system_id}"


def cli_main(emu: SmscEmulator, args: Any) -> tuple[Any, list[tuple[int, str, str, str]]]:
    from bridge.http.server import HttpServer

    async def main() -> None:
        server = HttpServer(lambda request: control(emu, request), name="smsc-emulator")
        async with trio.open_nursery() as nursery:
            smpp_port = await nursery.start(emu.serve, args.smpp_port)
            http_port = await nursery.start(server.serve, args.host, args.control_port)
            print(
                f"smpp emulator ready on http://{args.host}:{http_port}/ (SMSC on SMPP port {smpp_port}, "
                f"system_id {emu.system_id}); test hooks under /emulator/; Ctrl-C stops it",
                flush=True,
            )

    return main, [(args.smpp_port, "127.0.0.1", "SMSC emulator SMPP", "--smpp-port"),
                  (args.control_port, args.host, "SMSC emulator HTTP", "--control-port")]
