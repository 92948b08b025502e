"""Model-based test: every acknowledged message ends right.

Hypothesis generates a list of steps (submits in every form and coding, resent parts, schedule
and validity, cancel_sm, replace_sm, query_sm, unbind and rebind, half-close, receiver binds,
GoIP faults, opt-out by STOP, inbound SMS, clock jumps, restarts of the App on the same store);
one trio run per example plays them against a real bridge (bridge.app.App) and a GoIP emulator
over loopback, keeping a model of what was acknowledged. At the end the clock is moved past
every schedule, validity and partial timeout, and the invariants are checked:

* every ESME_ROK id reaches exactly one final state; query_sm and the store agree;
* a final receipt iff requested (registered_delivery 1: always, 2: on failure), exactly one,
  with the stat of the final state (DELETED after cancel_sm, REJECTD to an opted-out number,
  DELIVRD when no fault was on);
* what the GoIP sent equals the submitted text (parts joined), at most once; nothing sent after
  a cancel_sm was acknowledged, before the schedule, after the validity, or to an opted-out
  number;
* nothing is left non-final past validity + grace;
* every injected inbound SMS reaches the ESME, with its text, once unless a delivery was
  disrupted (below).

Delivery to the ESME is at least once until its deliver_sm_resp is committed, so a receipt or
an MO may legitimately come twice after a restart, a closed ESME connection, or a clock jump
while a deliver_sm was unanswered (its response timer expires with the answer on its way, as
it would for an ESME that answers late); without one of those, twice is a violation.

CI runs a bounded number of examples (about a minute). The long form:
``MODEL_EXAMPLES=500 MODEL_STEPS=60 python -m pytest -m full tests/model`` (or ``-p
no:cacheprovider``); ``MODEL_SEED=n`` repeats one run.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from lifecycle_harness import (  # noqa: E402
    MAX_VALIDITY,
    PARTIAL_TIMEOUT,
    SUCCESS,
    Bridge,
    Esme,
    Expected,
    Gone,
    STAT_OF_STATE,
    mo_of,
    receipt_of,
    rel_time,
)

from bridge.lifecycle import FINAL, SMPP_STATE, State  # noqa: E402
from bridge.smpp.constants import CommandId as C  # noqa: E402
from bridge.smpp.constants import Status, Tag  # noqa: E402
from bridge.smpp.pdu import Pdu  # noqa: E402

# ----------------------------------------------------------------------------------- steps

GSM = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,!?"
GSM_EXT = "[]€{}"  # two septets each in GSM 03.38
LATIN1 = "abcdefxyz éüßøÆ"
UCS2 = "abcxyz Жяж€漢字"

CODINGS = {0: "gsm03.38", 3: "latin-1", 8: "utf-16-be"}
# characters per part so a part's body stays within 254 octets with its UDH
PART_CHARS = {0: 100, 3: 120, 8: 60}


def alphabet(dc: int) -> st.SearchStrategy[str]:
    if dc == 0:
        return st.sampled_from(GSM + GSM_EXT)
    return st.sampled_from(LATIN1 if dc == 3 else UCS2)


@st.composite
def texts(draw: Any, dc: int, max_chars: int) -> str:
    return draw(st.text(alphabet(dc), min_size=1, max_size=max_chars))


@attrs.frozen
class Submit:
    form: str  # short | udh8 | udh16 | sar | payload | multi | data_sm
    dc: int
    chunks: tuple[str, ...]  # the text as the ESME splits it (one chunk for unsplit forms)
    reg: int  # registered_delivery
    schedule: int  # seconds from now, 0: none
    validity: int  # seconds from now, 0: none
    resend_part: int = -1  # long forms: send this part a second time (same bytes)
    drop_part: int = -1  # long forms: never send this part
    to_optout: bool = False  # to a number that opted out (if there is one)


@attrs.frozen
class Cancel:
    which: int


@attrs.frozen
class Replace:
    which: int
    text: str
    schedule: int


@attrs.frozen
class Query:
    which: int


@attrs.frozen
class Rebind:
    bind: str  # transceiver | receiver (then a transceiver again)


@attrs.frozen
class HalfClose:
    text: str
    reg: int


@attrs.frozen
class Fault:
    kind: str  # logout | http500 | garbage | hang | raw | fail_next | heal


@attrs.frozen
class OptOut:
    pass


@attrs.frozen
class Inbound:
    text: str


@attrs.frozen
class Jump:
    seconds: int


@attrs.frozen
class Restart:
    graceful: bool


@st.composite
def submits(draw: Any) -> Submit:
    form = draw(st.sampled_from(["short", "short", "udh8", "udh16", "sar", "payload", "multi", "data_sm"]))
    dc = draw(st.sampled_from([0, 0, 3, 8]))
    if form in ("udh8", "udh16", "sar"):
        n = draw(st.integers(2, 3))
        chunks = tuple(draw(texts(dc, PART_CHARS[dc])) for _ in range(n))
    elif form in ("payload", "data_sm"):
        chunks = (draw(texts(dc, 250)),)
    else:
        chunks = (draw(texts(dc, 60)),)
    long_form = len(chunks) > 1
    return Submit(
        form=form,
        dc=dc,
        chunks=chunks,
        reg=draw(st.sampled_from([0, 1, 1, 2])),
        schedule=draw(st.sampled_from([0, 0, 0, 30, 600])),
        validity=draw(st.sampled_from([0, 0, 0, 60, 3600])),
        resend_part=draw(st.sampled_from([-1, -1, 0, len(chunks) - 1])) if long_form else -1,
        drop_part=draw(st.sampled_from([-1, -1, -1, 0])) if long_form else -1,
        to_optout=draw(st.booleans()) if form in ("short", "payload") else False,
    )


steps = st.one_of(
    submits(),
    submits(),
    submits(),
    st.builds(Cancel, st.integers(0, 50)),
    st.builds(Replace, st.integers(0, 50), st.text(st.sampled_from(GSM), min_size=1, max_size=40), st.sampled_from([0, 0, 300])),
    st.builds(Query, st.integers(0, 50)),
    st.builds(Rebind, st.sampled_from(["transceiver", "receiver"])),
    st.builds(HalfClose, texts(0, 40), st.sampled_from([0, 1])),
    st.builds(Fault, st.sampled_from(["logout", "http500", "garbage", "hang", "raw", "fail_next", "heal", "heal"])),
    st.just(OptOut()),
    st.builds(Inbound, st.text(st.sampled_from(GSM), min_size=1, max_size=40)),
    st.builds(Jump, st.sampled_from([1, 5, 30, 61, 600, 3600])),
    st.builds(Restart, st.booleans()),
)

# ----------------------------------------------------------------------------------- runner


class Violation(AssertionError):
    pass


class Run:
    def __init__(self, bridge: Bridge, nursery: trio.Nursery) -> None:
        self.b = bridge
        self.nursery = nursery
        self.deliveries: list[Pdu] = []
        self.esme = Esme(self.deliveries)
        self.expected: list[Expected] = []
        self.next_number = 0
        self.optout_free: list[str] = []  # opted-out numbers not yet submitted to
        self.optout_used: set[str] = set()
        self.injected: list[tuple[str, str]] = []  # (sender, text) of MO
        self.fault_on = False
        self.log: list[str] = []
        # Why a receipt or MO may legitimately reach the ESME again (delivery is at least once
        # until the ESME's deliver_sm_resp is committed): a restart, a closed ESME connection,
        # or a clock jump while a deliver_sm was unanswered (its response timer then expires
        # with the answer still on its way, and the bridge offers it again).
        self.disruptions: list[str] = []
        self.ref = 0

    def number(self) -> str:
        self.next_number += 1
        return f"+49155500{self.next_number:04d}"

    def now(self) -> float:
        return self.b.wall()

    async def ensure_bound(self) -> None:
        if self.esme.alive and self.esme.bind_type == "transceiver":
            return
        if self.esme.alive:
            await self.esme.close()
        elif self.esme.stream is not None:
            self.disruptions.append("the ESME's connection was closed")
        self.esme = Esme(self.deliveries)
        status = await self.esme.connect(self.nursery, self.b.port)
        if status != Status.ROK:
            raise Violation(f"bind_transceiver refused with 0x{status:08x}")

    def _active(self, e: Expected) -> None:
        if self.fault_on:
            e.faulted = True

    # ---- submits

    def _sm(self, dest: str, s: Submit, body: bytes, esm_class: int = 0, tlvs: dict | None = None) -> Pdu:
        return Pdu(
            C.SUBMIT_SM,
            params=dict(
                service_type="", source_addr_ton=0, source_addr_npi=0, source_addr="model",
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=dest, esm_class=esm_class,
                protocol_id=0, priority_flag=0,
                schedule_delivery_time=rel_time(s.schedule) if s.schedule else "",
                validity_period=rel_time(s.validity) if s.validity else "",
                registered_delivery=s.reg, replace_if_present_flag=0, data_coding=s.dc,
                sm_default_msg_id=0, short_message=body,
            ),
            tlvs=tlvs or {},
        )

    async def submit(self, s: Submit) -> None:
        await self.ensure_bound()
        codec = CODINGS[s.dc]
        text = "".join(s.chunks)
        dest = self.number()
        opted = False
        if s.to_optout and self.optout_free:
            dest, opted = self.optout_free.pop(0), True
            self.optout_used.add(dest)
        at = self.now()
        label = f"step {len(self.log)}: {s!r}"

        def expect(dest: str, ids: list[str], complete: bool = True) -> None:
            e = Expected(label, dest, text, s.reg, ids, at,
                         schedule_at=at + s.schedule if s.schedule else None,
                         expire_at=at + s.validity if s.validity else None,
                         complete=complete, opted_out=opted, dc=s.dc)
            self._active(e)
            self.expected.append(e)

        if s.form == "short":
            r = await self.esme.request(self._sm(dest, s, text.encode(codec)))
            if r.command_status == Status.ROK:
                expect(dest, [r.params["message_id"]])
            return
        if s.form == "payload":
            r = await self.esme.request(self._sm(dest, s, b"", tlvs={Tag.MESSAGE_PAYLOAD: text.encode(codec)}))
            if r.command_status == Status.ROK:
                expect(dest, [r.params["message_id"]])
            return
        if s.form == "data_sm":
            pdu = Pdu(C.DATA_SM, params=dict(
                service_type="", source_addr_ton=0, source_addr_npi=0, source_addr="model",
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=dest, esm_class=0,
                registered_delivery=s.reg, data_coding=s.dc), tlvs={Tag.MESSAGE_PAYLOAD: text.encode(codec)})
            r = await self.esme.request(pdu)
            if r.command_status == Status.ROK:
                # data_sm has no schedule or validity
                e = Expected(label, dest, text, s.reg, [r.params["message_id"]], at, opted_out=opted, dc=s.dc)
                self._active(e)
                self.expected.append(e)
            return
        if s.form == "multi":
            dests = [dest, self.number()]
            pdu = self._sm(dest, s, text.encode(codec))
            pdu.command_id = C.SUBMIT_MULTI
            del pdu.params["dest_addr_ton"], pdu.params["dest_addr_npi"], pdu.params["destination_addr"]
            pdu.params["dest_addresses"] = [
                {"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": d} for d in dests
            ]
            r = await self.esme.request(pdu)
            if r.command_status == Status.ROK:
                refused = {u["destination_addr"] for u in r.params.get("unsuccess_smes", ())}
                for d in dests:
                    if d not in refused:
                        expect(d, [r.params["message_id"]])
            return
        # long forms: one submit_sm per part
        self.ref = (self.ref + 1) % 250
        ref = self.ref + (0x1200 if s.form == "udh16" else 0)
        total = len(s.chunks)
        order = [i for i in range(total) if i != s.drop_part]
        if s.resend_part >= 0 and s.resend_part != s.drop_part:
            order.append(s.resend_part)
        ids: list[str] = []
        refused = 0
        for i in order:
            body = s.chunks[i].encode(codec)
            if s.form == "udh8":
                pdu = self._sm(dest, s, bytes([5, 0, 3, ref, total, i + 1]) + body, esm_class=0x40)
            elif s.form == "udh16":
                pdu = self._sm(dest, s, bytes([6, 8, 4, ref >> 8, ref & 0xFF, total, i + 1]) + body, esm_class=0x40)
            else:
                pdu = self._sm(dest, s, body, tlvs={Tag.SAR_MSG_REF_NUM: ref, Tag.SAR_TOTAL_SEGMENTS: total,
                                                    Tag.SAR_SEGMENT_SEQNUM: i + 1})
            r = await self.esme.request(pdu)
            if r.command_status == Status.ROK:
                ids.append(r.params["message_id"])
            else:
                refused += 1  # e.g. a first part no device of the route can start with
        if ids:
            # A part never sent, or refused, leaves the message incomplete: it ends by its validity.
            expect(dest, ids, complete=s.drop_part < 0 and not refused)

    # ---- operations on earlier messages

    def pick(self, which: int) -> Expected | None:
        return self.expected[which % len(self.expected)] if self.expected else None

    async def cancel(self, c: Cancel) -> None:
        e = self.pick(c.which)
        if e is None:
            return
        await self.ensure_bound()
        r = await self.esme.request(Pdu(C.CANCEL_SM, params=dict(
            service_type="", message_id=e.ids[0], source_addr_ton=0, source_addr_npi=0, source_addr="model",
            dest_addr_ton=1, dest_addr_npi=1, destination_addr=e.destination)))
        if r.command_status == Status.ROK:
            at = self.now()
            # submit_multi: one message_id names the message to every destination, so
            # cancel_sm by that id cancels them all (SMPP 3.4 4.9).
            for other in self.siblings(e):
                other.cancelled_at = at

    def siblings(self, e: Expected) -> list[Expected]:
        """``e`` and the other messages of its submit_multi (they share its one id)."""
        return [o for o in self.expected if o is e or (len(e.ids) == 1 and o.ids == e.ids)]

    async def replace(self, rp: Replace) -> None:
        e = self.pick(rp.which)
        if e is None:
            return
        await self.ensure_bound()
        at = self.now()
        r = await self.esme.request(Pdu(C.REPLACE_SM, params=dict(
            message_id=e.ids[0], source_addr_ton=0, source_addr_npi=0, source_addr="model",
            schedule_delivery_time=rel_time(rp.schedule) if rp.schedule else "", validity_period="",
            registered_delivery=e.registered_delivery, sm_default_msg_id=0,
            short_message=rp.text.encode(CODINGS[e.dc]))))
        if r.command_status == Status.ROK:
            siblings = self.siblings(e)
            for other in siblings:
                if len(siblings) > 1:
                    other.replaced.append((other.text, self.now()))
                other.text = rp.text  # in the message's own data_coding
                if rp.schedule:
                    other.schedule_at = at + rp.schedule
                    other.schedule_set_at = self.now()

    async def query(self, q: Query) -> None:
        e = self.pick(q.which)
        if e is None:
            return
        await self.ensure_bound()
        r = await self.esme.request(Pdu(C.QUERY_SM, params=dict(
            message_id=e.ids[-1], source_addr_ton=0, source_addr_npi=0, source_addr="model")))
        if r.command_status != Status.ROK:
            raise Violation(f"query_sm({e.ids[-1]}) of {e.label} answered 0x{r.command_status:08x}")

    async def rebind(self, rb: Rebind) -> None:
        if self.esme.alive:
            await self.esme.unbind()
        if rb.bind == "receiver":
            rx = Esme(self.deliveries)
            status = await rx.connect(self.nursery, self.b.port, "receiver")
            if status != Status.ROK:
                raise Violation(f"bind_receiver refused with 0x{status:08x}")
            await trio.sleep(0.1)
            await rx.unbind()
        await self.ensure_bound()

    async def half_close(self, h: HalfClose) -> None:
        """A submit, then the write side shut: the bridge must still answer it; an answered
        ESME_ROK must then end like any other message."""
        await self.ensure_bound()
        dest = self.number()
        s = Submit("short", 0, (h.text,), h.reg, 0, 0)
        at = self.now()
        seq = await self.esme.send(self._sm(dest, s, h.text.encode("gsm03.38")))
        await self.esme.send_eof()
        r = await self.esme.wait_response(seq)
        await self.esme.close()
        if r is None:
            # Not answered: the ESME cannot know; the store decides what it owes (checked below).
            self.halfclosed_unanswered.append((dest, h, at))
            return
        if r.command_status == Status.ROK:
            e = Expected(f"step {len(self.log)}: {h!r}", dest, h.text, h.reg, [r.params["message_id"]], at)
            self._active(e)
            self.expected.append(e)

    halfclosed_unanswered: list[Any]

    async def fault(self, f: Fault) -> None:
        em = self.b.emulator
        if f.kind == "heal":
            em.faults.hang = em.faults.garbage = em.faults.raw_garbage = False
            em.faults.http_error = 0
            em.faults.endpoints = None
            for line in range(1, 3):
                em.login(line)
            self.fault_on = False
            return
        self.fault_on = True
        for e in self.expected:
            e.faulted = True
        if f.kind == "logout":
            em.logout(1, 30)
        elif f.kind == "fail_next":
            em.fail_next(1, 1, "2172")
            em.fail_next(2, 1, "2172")
        else:
            em.faults.endpoints = frozenset({"send", "status"})
            if f.kind == "http500":
                em.faults.http_error = 500
            elif f.kind == "garbage":
                em.faults.garbage = True
            elif f.kind == "hang":
                em.faults.hang = True
            elif f.kind == "raw":
                em.faults.raw_garbage = True

    async def optout(self) -> None:
        await self.ensure_bound()
        number = self.number()
        n_before = len(self.deliveries)
        self.b.emulator.inject_sms(1, number, "STOP")
        self.injected.append((number, "STOP"))
        # The STOP reached the ESME: the opt-out is committed (stored before it is delivered).
        with trio.move_on_after(5):
            while not any(mo_of(p) == (number, "STOP") for p in self.deliveries[n_before:]):
                await trio.sleep(0.02)
            self.optout_free.append(number)

    async def inbound(self, i: Inbound) -> None:
        sender = self.number()
        text = f"{i.text} #{len(self.injected)}"
        self.b.emulator.inject_sms(2, sender, text)
        self.injected.append((sender, text))

    def _jump(self, seconds: float) -> None:
        waiting = self.b.requests_outstanding()
        if waiting and seconds >= self.b.config.smpp.timers.response:
            self.disruptions.append(f"a clock jump of {seconds:.0f} s with {waiting} request(s) to the ESME unanswered")
        self.b.mock.jump(seconds)

    async def jump(self, j: Jump) -> None:
        self._jump(j.seconds)
        await trio.sleep(0.05)

    async def restart(self, r: Restart) -> None:
        if self.esme.alive and r.graceful:
            pass  # App.stop() unbinds it
        await self.b.stop(graceful=r.graceful)
        await self.esme.close()
        await self.b.start(self.nursery)

    def device_trouble(self, e: Any) -> bool:
        """The device failed this message though no fault was injected: a send the GoIP did not
        answer in time (the machine was slow), recorded by the bridge as an ambiguous send or a
        retry. Then any final state is legitimate for the "no fault" rule."""
        ids = [int(i) for i in e.ids]
        marks = ",".join("?" * len(ids))
        with self.b.db() as db:
            (n,) = db.execute(
                f"SELECT count(*) FROM parts WHERE message IN ({marks}) AND (state='unknown' OR error IS NOT NULL)",
                ids,
            ).fetchone()
            (m,) = db.execute(
                f"SELECT count(*) FROM events WHERE message IN ({marks}) AND "
                "(detail LIKE '%may have failed%' OR detail LIKE '%device error%')",
                ids,
            ).fetchone()
        return bool(n or m)

    async def step(self, s: Any) -> None:
        self.log.append(repr(s))
        if isinstance(s, (Restart, Rebind, HalfClose)):
            self.disruptions.append(type(s).__name__)  # a receipt in flight may be delivered again
        handler = {
            Submit: self.submit, Cancel: self.cancel, Replace: self.replace, Query: self.query,
            Rebind: self.rebind, HalfClose: self.half_close, Fault: self.fault, Inbound: self.inbound,
            Jump: self.jump, Restart: self.restart,
        }.get(type(s))
        if isinstance(s, OptOut):
            await self.optout()
        else:
            assert handler is not None
            await handler(s)

    # ---- the end: settle, then check

    async def settle(self, budget: float) -> None:
        """Move the clock past every schedule, partial timeout and validity, then wait (real
        time, bounded) until the store has nothing unfinished and no receipt pending."""
        await self.fault(Fault("heal"))
        await self.ensure_bound()
        for seconds in (700, PARTIAL_TIMEOUT + 60, 3700, MAX_VALIDITY + 600):
            self._jump(seconds)
            with trio.move_on_after(budget):
                while self.b.unfinished():
                    await trio.sleep(0.05)
        with trio.move_on_after(budget):
            while self.b.pending_outbox() or not self._mo_all_in():
                await trio.sleep(0.05)
        await trio.sleep(0.3)  # a duplicate receipt or MO would show up now

    def _mo_all_in(self) -> bool:
        got = [mo_of(p) for p in self.deliveries]
        return all(m in got for m in self.injected)

    # query_sm of a submit_multi id whose destinations ended differently: the worst of them
    WORST_FIRST = (State.UNDELIVERABLE, State.REJECTED, State.EXPIRED, State.UNKNOWN, State.DELETED,
                   State.ACCEPTED, State.DELIVERED)

    def queried_state(self, e: Expected, own: State) -> State:
        """The state query_sm must report for ``e``'s id: its own, or for a submit_multi id the
        destinations' common final state, else the worst of them (README: a submit_multi's id
        stands for all its destinations)."""
        siblings = self.siblings(e)
        if len(siblings) == 1:
            return own
        with self.b.db() as db:
            finals = {State(db.execute("SELECT state FROM messages WHERE destination_addr=?",
                                       (o.destination,)).fetchone()[0]) for o in siblings}
        if len(finals) == 1:
            return finals.pop()
        return next((w for w in self.WORST_FIRST if w in finals), own)

    async def check(self) -> list[str]:
        problems: list[str] = []
        receipts: dict[str, list[tuple[str, str]]] = {}
        for p in self.deliveries:
            r = receipt_of(p)
            if r is not None:
                receipts.setdefault(r[1], []).append((r[0], r[2]))
        sent: dict[str, list[Any]] = {}
        for s in self.b.sent:
            sent.setdefault(s.destination, []).append(s)
        known = {e.destination for e in self.expected}
        for e in self.expected:
            where = f"[{e.label}] to {e.destination}"
            # 1. every id final, one logical message, query_sm and the store agree
            states = set()
            for mid in e.ids:
                st_ = self.b.store_state(mid)
                if st_ is None:
                    problems.append(f"{where}: ESME_ROK id {mid} unknown to the store")
                    continue
                states.add(st_)
                if st_[1] == "partial" or State(st_[1]) not in FINAL:
                    problems.append(f"{where}: id {mid} not final after validity + grace (store: {st_[1]})")
                    continue
                try:
                    r = await self.esme.request(Pdu(C.QUERY_SM, params=dict(
                        message_id=mid, source_addr_ton=0, source_addr_npi=0, source_addr="model")))
                except (Gone, TimeoutError) as exc:
                    problems.append(f"{where}: query_sm({mid}) got no answer ({exc!r})")
                    continue
                if r.command_status != Status.ROK:
                    problems.append(f"{where}: query_sm({mid}) answered 0x{r.command_status:08x}")
                elif r.params["message_state"] != int(SMPP_STATE[self.queried_state(e, State(st_[1]))]):
                    problems.append(f"{where}: query_sm({mid}) says state {r.params['message_state']}, "
                                    f"the store {st_[1]}")
            if len({s[0] for s in states}) > 1:
                problems.append(f"{where}: its ids {e.ids} lead to different stored messages {sorted(states)}")
            if not states or any(s[1] == "partial" or State(s[1]) not in FINAL for s in states):
                continue
            final = State(next(iter(states))[1])
            if len(e.ids) == 1 and any(o is not e and o.ids == e.ids for o in self.expected):
                # submit_multi: one id for several messages; the store row by destination
                with self.b.db() as db:
                    row = db.execute("SELECT state FROM messages WHERE destination_addr=?", (e.destination,)).fetchone()
                if row is None:
                    problems.append(f"{where}: submit_multi destination not in the store")
                    continue
                final = State(row[0])
                if final not in FINAL:
                    problems.append(f"{where}: submit_multi destination not final (store: {final})")
                    continue
            # When each device call began, as the bridge recorded it durably before the call
            # (parts.started_at): the emulator's own time of a send is later, and a clock jump
            # during the HTTP call would make a send that began in time look late.
            multi = len(e.ids) == 1 and any(o is not e and o.ids == e.ids for o in self.expected)
            with self.b.db() as db:
                if multi:  # submit_multi: one id for several rows; the destination's own row
                    starts = [r[0] for r in db.execute(
                        "SELECT p.started_at FROM parts p JOIN messages m ON m.id = p.message "
                        "WHERE m.destination_addr=?", (e.destination,))]
                else:
                    ids = [int(i) for i in e.ids]
                    marks = ",".join("?" * len(ids))
                    starts = [r[0] for r in db.execute(
                        f"SELECT started_at FROM parts WHERE message IN ({marks}) OR message IN "
                        f"(SELECT message FROM aliases WHERE alias IN ({marks}))", ids + ids)]
            # 2. the final state the model expects
            first_send = min(starts, default=None)
            began = False
            if e.cancelled_at is not None:
                # (submit_multi: cancel_sm by its one id cancels each destination still
                # waiting; one whose send had begun goes on.)
                began = multi and first_send is not None and first_send <= e.cancelled_at
                if final != State.DELETED and not began:
                    problems.append(f"{where}: cancel_sm answered ESME_ROK but it ended {final.value}")
            elif e.opted_out and final != State.REJECTED and not (final == State.EXPIRED and e.expire_at is not None):
                # (The opt-out is applied when a line picks the message; a clock jump past its
                # validity before any line picked it ends it EXPIRED, which is also right.)
                problems.append(f"{where}: destination opted out but it ended {final.value}")
            elif (not e.faulted and not self.device_trouble(e) and e.complete and e.cancelled_at is None
                  and not e.opted_out and e.expire_at is None and final not in SUCCESS):
                problems.append(f"{where}: no fault, no validity, yet it ended {final.value}")
            # 3. receipts
            got = receipts.get(e.destination, [])
            want = e.registered_delivery & 3 == 1 or (e.registered_delivery & 3 == 2 and final not in SUCCESS)
            # Receipts are delivered at least once (until the ESME's deliver_sm_resp OK is
            # committed): a connection lost or a restart with a receipt in flight may repeat
            # it. A repeat must be the same receipt; two different ones are a violation.
            if want and len(set(got)) != 1:
                problems.append(f"{where}: ended {final.value}, asked for a receipt (rd={e.registered_delivery}), got {len(got)}: {got}")
            elif len(got) > 1 and not self.disruptions:
                problems.append(f"{where}: the same receipt {len(got)} times without any lost connection, "
                                "restart or clock jump over an unanswered deliver_sm")
            if not want and got:
                problems.append(f"{where}: ended {final.value}, rd={e.registered_delivery}, yet got receipts {got}")
            for rid, stat in got:
                if rid not in e.ids:
                    problems.append(f"{where}: receipt id {rid} is none of its ids {e.ids}")
                if stat != STAT_OF_STATE[final]:
                    problems.append(f"{where}: receipt stat {stat} but the message ended {final.value}")
            # 4. what the device sent
            out = sent.get(e.destination, [])
            ok = [s for s in out if not s.error]
            joined = "".join(s.text for s in ok)
            texts = {e.text} | {old for old, at in e.replaced if first_send is not None and first_send <= at}
            if final == State.DELIVERED and joined not in texts:
                problems.append(f"{where}: DELIVERED but the GoIP sent {[s.text for s in ok]!r}, submitted {e.text!r}")
            elif ok and joined not in texts and not e.text.startswith(joined):
                problems.append(f"{where}: the GoIP sent {[s.text for s in ok]!r}, submitted {e.text!r}")
            if len(joined) > max(len(t) for t in texts):
                problems.append(f"{where}: sent more than once: {[s.text for s in ok]!r}")
            if final in (State.DELETED, State.REJECTED) and out:
                problems.append(f"{where}: ended {final.value} but the GoIP sent {[s.text for s in out]!r}")
            for at in starts:
                if e.cancelled_at is not None and at > e.cancelled_at and not began:
                    problems.append(f"{where}: a send began {at - e.cancelled_at:.1f}s after cancel_sm was acknowledged")
                # (submit_multi: a destination whose send began before replace_sm gave the
                # others a new schedule keeps its course.)
                kept_course = multi and e.schedule_set_at is not None and at <= e.schedule_set_at
                if e.schedule_at is not None and at < e.schedule_at - 1 and not kept_course:
                    problems.append(f"{where}: a send began {e.schedule_at - at:.1f}s before its schedule")
                if e.expire_at is not None and at > e.expire_at + 1:
                    problems.append(f"{where}: a send began {at - e.expire_at:.1f}s after its validity ended")
            if out and not starts:
                problems.append(f"{where}: the GoIP sent it, but the store has no record of a device call")
        for dest in sent:
            if dest not in known and not any(h[0] == dest for h in self.halfclosed_unanswered):
                problems.append(f"the GoIP sent to {dest}, which no acknowledged message was for")
        # 5. inbound SMS once each
        got_mo = [mo_of(p) for p in self.deliveries if mo_of(p) is not None]
        for m in self.injected:
            n = got_mo.count(m)
            if n == 0 or (n > 1 and not self.disruptions):
                problems.append(f"inbound SMS {m} reached the ESME {n} times")
        for m in set(got_mo) - set(self.injected):
            problems.append(f"the ESME got an MO nobody sent: {m}")
        return problems


async def play(steps_: list[Any], workdir: Path, clock: trio.testing.MockClock) -> list[str]:
    bridge = Bridge(workdir, clock)
    async with trio.open_nursery() as nursery:
        await bridge.start_emulator(nursery)
        await bridge.start(nursery)
        run = Run(bridge, nursery)
        run.halfclosed_unanswered = []
        problems: list[str] = []
        try:
            for s in steps_:
                await run.step(s)
        except Violation as exc:
            problems.append(str(exc))
        except (Gone, TimeoutError) as exc:
            problems.append(f"after step {run.log[-1] if run.log else '?'}: the bridge did not answer ({exc!r})")
        if not problems:
            await run.settle(budget=float(os.environ.get("MODEL_SETTLE", "6")))
            problems = await run.check()
        nursery.cancel_scope.cancel()
    return problems


def run_steps(steps_: list[Any]) -> list[str]:
    clock = trio.testing.MockClock(rate=1)
    with tempfile.TemporaryDirectory(prefix="model-") as tmp:
        return trio.run(play, steps_, Path(tmp), clock, clock=clock)


EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "12"))
STEPS = int(os.environ.get("MODEL_STEPS", "12"))


def _lifecycle(steps_: list[Any]) -> None:
    problems = run_steps(steps_)
    assert not problems, "\n".join(problems)


_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="MODEL_SEED" not in os.environ,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.mark.slow
@_settings
@given(st.lists(steps, min_size=1, max_size=STEPS))
def test_every_acknowledged_message_ends_right(steps_: list[Any]) -> None:
    _lifecycle(steps_)


@pytest.mark.full
@settings(_settings, max_examples=max(EXAMPLES, 300))
@given(st.lists(steps, min_size=1, max_size=max(STEPS, 60)))
def test_every_acknowledged_message_ends_right_full(steps_: list[Any]) -> None:
    _lifecycle(steps_)
