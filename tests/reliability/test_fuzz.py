"""Group 3a, bad SMPP input, in-process: fuzzers over the decoder, the sans-IO session state
machine and the trio connection handler of the real server (with the real store).

Promises checked on every input: no exception escapes (the decoder raises only PduError, the
session only hands out events, the connection never ends by an internal error), no hang (a
watchdog per input), and every answer is a valid PDU (it decodes with our codec and with
smpplib's, and nothing but whole PDUs is written).

tests/smpp/test_pdu.py and tests/smpp/test_session.py already hold hypothesis properties over
the same code (hundreds of examples each, shrinking on failure); these loops add volume and
structure-aware mutations (tests/reliability/smpp_fuzz.py), and the connection layer.

Short form: 50,000 decoder inputs, 10,000 session streams, 500 connections (about 10 s).
Full form: 1,000,000 decoder inputs, 1,000,000 session streams and 20,000 connections (13
minutes on the shared 2-core machine at a load average of about 12: decoder 106 s, session
555 s, connections 139 s; the connections run on a simulated clock, so their timers, and the
bind brute-force slow-down, cost no wall time):

    python -m pytest -n 0 -m full tests/reliability -k fuzz -s

Sizes: RELIABILITY_FUZZ_DECODER, RELIABILITY_FUZZ_SESSION, RELIABILITY_FUZZ_CONNECTIONS; the
seed: RELIABILITY_FUZZ_SEED (printed by every run, so a failure can be replayed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import struct
import time

import pytest
import smpplib.exceptions
import smpplib.smpp
import trio
import trio.testing

from bridge.config import load_config_text
from bridge.metrics import Metrics
from bridge.frontends.smpp.connection import Connection
from bridge.frontends.smpp.listener import SmppServer
from bridge.smpp.constants import NO_RESPONSE, RESPONSE_BIT, CommandId, Status
from bridge.smpp.pdu import Pdu, PduError, decode, encode, generic_nack, make_response
from bridge.smpp.session import NEED_DATA, Closed, Rejected, ServerSession
from bridge.store import Store, run_inline
from reliability_support import size
from smpp_fuzz import bind_bytes, decoder_input, split_pdus, stream_input

C = CommandId
SEED = int(os.environ.get("RELIABILITY_FUZZ_SEED") or random.randrange(1 << 30))
BINDS = (C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER)


@contextlib.contextmanager
def watchdog(seconds: float, what: str):  # type: ignore[no-untyped-def]
    """A hang detector: SIGALRM interrupts the main thread if one input takes this long."""

    def on_alarm(signum, frame):  # type: ignore[no-untyped-def]
        raise TimeoutError(f"no answer within {seconds} s: hang on {what}")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def valid_answer(pdu: Pdu) -> bytes:
    """Encode an answer and prove it is a PDU: it decodes back (ours) and smpplib parses it."""
    wire = encode(pdu)
    assert struct.unpack(">I", wire[:4])[0] == len(wire)
    again = decode(wire)
    assert (again.command_id, again.command_status, again.sequence_number) == (
        pdu.command_id, pdu.command_status, pdu.sequence_number)
    return wire


# -- the decoder ---------------------------------------------------------------------------------


def check_decoder_input(data: bytes) -> None:
    try:
        got = decode(data)
    except PduError as e:
        # The answer it deserves is itself a valid PDU.
        assert 0 < e.status <= 0xFFFFFFFF
        if e.command_id is not None and not e.command_id & RESPONSE_BIT:
            if e.nack or e.command_id in NO_RESPONSE or e.command_id not in set(C):
                valid_answer(generic_nack(e.status, e.sequence_number))
            else:
                valid_answer(make_response(Pdu(C(e.command_id), 0, e.sequence_number), e.status))
        return
    # Whatever decodes re-encodes to something that decodes the same way...
    again = decode(encode(got))
    assert again.command_id == got.command_id and again.tlvs == got.tlvs
    assert again.params.items() >= got.params.items()
    # ...and can be answered.
    if not got.command_id & RESPONSE_BIT and got.command_id not in NO_RESPONSE:
        valid_answer(make_response(got, Status.ROK))
        valid_answer(make_response(got, Status.RSYSERR))


@pytest.mark.parametrize(
    "n",
    [pytest.param(size("fuzz_decoder", 50_000), id="short"),
     pytest.param(size("fuzz_decoder", 1_000_000), id="full", marks=pytest.mark.full)],
)
def test_decoder_survives_mutated_and_random_input(n):
    rng = random.Random(SEED)
    started = time.monotonic()
    for i in range(n):
        data = decoder_input(rng)
        try:
            with watchdog(5, f"input {i}"):
                check_decoder_input(data)
        except BaseException as exc:
            raise AssertionError(f"seed {SEED} input {i}: {data.hex()}: {exc!r}") from exc
    print(f"decoder fuzz: {n:,} inputs in {time.monotonic() - started:.1f} s (seed {SEED})")


# -- the session state machine -------------------------------------------------------------------


def drive_session(chunks: list[bytes], eof: bool, rng: random.Random) -> int:
    """Feed a stream to a ServerSession the way the server does; returns the events seen."""
    s = ServerSession()
    events = 0
    for chunk in chunks + ([b""] if eof else []):
        s.receive_data(chunk)
        while True:
            ev = s.next_event()
            if ev is NEED_DATA:
                break
            events += 1
            if ev is Closed:
                assert s.next_event() is Closed
                return events
            if isinstance(ev, Rejected):
                if ev.answer is not None:
                    assert ev.answer.command_id & RESPONSE_BIT and ev.answer.command_status != 0
                    valid_answer(ev.answer)
                    decode(s.send(ev.answer))  # error answers are always sendable
                if ev.pdu is not None and ev.pdu.command_id & RESPONSE_BIT:
                    assert ev.answer is None  # a response is never answered
                continue
            assert isinstance(ev, Pdu)
            if ev.command_id & RESPONSE_BIT or ev.command_id in NO_RESPONSE:
                continue
            # Every request the table lets through may be answered now, OK or not.
            status = Status.ROK if ev.command_id in BINDS or rng.random() < 0.8 else Status.RSYSERR
            decode(s.send(make_response(ev, status)))
    return events


@pytest.mark.parametrize(
    "n",
    [pytest.param(size("fuzz_session", 10_000), id="short"),
     pytest.param(size("fuzz_session", 1_000_000), id="full", marks=pytest.mark.full)],
)
def test_session_state_machine_survives_any_stream(n):
    rng = random.Random(SEED + 1)
    bind = bind_bytes("fuzz", "secret1")
    started = time.monotonic()
    events = 0
    for i in range(n):
        chunks = stream_input(rng, bind)
        eof = rng.random() < 0.5
        try:
            with watchdog(5, f"stream {i}"):
                events += drive_session(chunks, eof, rng)
        except Exception as exc:
            raise AssertionError(f"seed {SEED + 1} stream {i}: {b''.join(chunks).hex()}: {exc!r}") from exc
    print(f"session fuzz: {n:,} streams, {events:,} events in {time.monotonic() - started:.1f} s (seed {SEED + 1})")


# -- the connection handler of the real server ---------------------------------------------------

CONFIG = """
smpp:
  listeners: [{host: 127.0.0.1, port: 0}]
  timers: {session_init: 5, enquire_link: 30, inactivity: 60, response: 2, unbind_grace: 1}
esmes:
  - system_id: fuzz
    password: secret1
    allowed_ips: [127.0.0.0/8]
    max_binds: 1000
store:
  path: %s
limits:
  queue_depth: 10000000
admin:
  port: 0
"""


class _SmpplibClient:
    """What smpplib's parser wants from its client."""

    def next_sequence(self) -> int:
        return 1


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def one_connection(server: SmppServer, chunks: list[bytes], eof: bool, peer: str = "127.0.0.1") -> bytes:
    """Run one Connection of the real server over an in-memory stream: send ``chunks``, then
    EOF (or just stop); return everything the server wrote before it closed."""
    client, server_side = trio.testing.memory_stream_pair()
    conn = Connection(server, server_side, peer, "fuzz")
    out = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)

        async def reader() -> None:
            while True:
                try:
                    data = await client.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                out.extend(data)
                # Answer the server's own requests so that nothing waits for a timer.
                for wire in split_pdus(bytes(out))[0]:
                    cid = struct.unpack(">I", wire[4:8])[0]
                    if cid in (C.ENQUIRE_LINK, C.UNBIND, C.DELIVER_SM):
                        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                            await client.send_all(encode(make_response(decode(wire))))

        nursery.start_soon(reader)
        for chunk in chunks:
            try:
                await client.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break  # the server closed (framing lost, unbind): fine
            await trio.sleep(0)
        if eof:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.send_eof()
        else:
            # No EOF: the client just stops talking; unbind it as the server would at shutdown.
            await trio.sleep(0.01)
            await conn.unbind_and_close(0.2)
    await client.aclose()
    return bytes(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "n",
    [pytest.param(size("fuzz_connections", 500), id="short"),
     pytest.param(size("fuzz_connections", 20_000), id="full", marks=pytest.mark.full)],
)
def test_server_connection_survives_any_stream(tmp_path, n):
    config = load_config_text(CONFIG % (tmp_path / "fuzz.sqlite3"))
    errors = _Errors()
    logging.getLogger("bridge").addHandler(errors)
    rng = random.Random(SEED + 2)
    bind = bind_bytes("fuzz", "secret1")
    answers = 0

    async def main() -> None:
        nonlocal answers
        # Inline commits: the clock never jumps while one is under way.
        store = Store(config.store.path, synchronous="normal", run_sync=run_inline)
        store.open()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(store.run)
                server = SmppServer(config, store, Metrics())
                for i in range(n):
                    chunks = stream_input(rng, bind)
                    eof = rng.random() < 0.7
                    # Each from its own address: failed binds from one address would otherwise
                    # soon be answered one per 2 s (the brute-force slowdown, tested by
                    # test_hostile_clients.py), and this loop would measure that.
                    peer = f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                    with trio.fail_after(30):  # no hang: each connection ends by itself
                        out = await one_connection(server, chunks, eof, peer)
                    pdus, rest = split_pdus(out)
                    context = f"seed {SEED + 2} connection {i}: sent {b''.join(chunks).hex()} got {out.hex()}"
                    assert rest == b"", context  # only whole PDUs written
                    for wire in pdus:
                        decode(wire)  # ours
                        try:  # and a real client's, for the commands it knows
                            smpplib.smpp.parse_pdu(wire, client=_SmpplibClient(), allow_unknown_opt_params=True)
                        except smpplib.exceptions.UnknownCommandError:
                            pass
                        answers += 1
                    assert not errors.records, context + ": " + errors.records[0].getMessage()
                    assert not server.connections and not server.binds, context  # nothing left behind
                nursery.cancel_scope.cancel()
        finally:
            store.close()

    started = time.monotonic()
    try:
        # Simulated time: the waits of a connection (the peer that never closes lingered out,
        # the unbind grace, a bind waiting its turn, a response timer) pass at once, so the run
        # measures the handler, not its timers. The per-connection limit below is in that time:
        # a connection that waits for nothing that can come is a hang all the same.
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logging.getLogger("bridge").removeHandler(errors)
    print(f"connection fuzz: {n:,} connections, {answers:,} answers in {time.monotonic() - started:.1f} s (seed {SEED + 2})")
