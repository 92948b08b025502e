"""What one SMPP connection decides, without sockets, tasks or timers of its own (sans-IO).

The trio side (``listener.py``) reads bytes, feeds them to the session in ``bridge/smpp/``,
and asks this module what to do with each request: which bind is refused and why, whether a
submit goes to the store or is refused at once, what a query_sm / cancel_sm / replace_sm answers
once the store has spoken, when a timer closes the session or probes it with enquire_link. Every
function here takes what it needs (config, the time, the store's result) and returns data: a
response PDU, a plan, a reason. Nothing here sends, sleeps or awaits, so all of it is tested
with plain function calls (tests/test_smpp_protocol.py).

Rules
-----
* Binds: system_id, then the source IP against the ESME's allow-list (so a brute force from a
  disallowed address learns nothing about passwords), then the password (constant time, checked
  by the caller between ``bind_refusal`` and ``bind_refusal_after_password``), then the bind
  limit. A failed bind gets its resp with the reason's status, and the connection is closed.
  Repeated failures from one IP are slowed down (``BindThrottle``).
* Refusals are immediate and specific: ESME_RTHROTTLED when an ESME is over its throughput (per
  segment), ESME_RMSGQFUL when the queue is at its depth limit, ESME_RSYSERR when the store
  cannot commit.
* Every state of a session has a timer (``SessionTimers``): OPEN session_init; bound ones
  inactivity and enquire_link; UNBINDING and CLOSED the response timer.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ...acceptance import DATA_SM, SUBMIT_MULTI, SUBMIT_SM, Acceptance, Refused, Replacement
from ...config import EsmeConfig, Timers
from ...lifecycle import smpp_state
from ...metrics import status_name
from ...smpp import concat as concat_mod
from ...smpp.constants import IF_VERSION_34, CommandId, Status, Tag
from ...smpp.pdu import Pdu, make_response
from ...smpp.session import Rejected, SessionState
from ...smpp.timefmt import format_smpp_time
from ...store import summarise

C = CommandId
BIND_TYPES = {
    C.BIND_TRANSMITTER: "transmitter",
    C.BIND_RECEIVER: "receiver",
    C.BIND_TRANSCEIVER: "transceiver",
}
SUBMIT_LIKE = frozenset({C.SUBMIT_SM, C.DATA_SM, C.SUBMIT_MULTI})
COMMANDS = {C.SUBMIT_SM: SUBMIT_SM, C.DATA_SM: DATA_SM, C.SUBMIT_MULTI: SUBMIT_MULTI}
ASYNC_REQUESTS = frozenset({C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM})
BOUND_STATES = frozenset({SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX})
RECEIVER_STATES = frozenset({SessionState.BOUND_RX, SessionState.BOUND_TRX})
# Bind brute-force slowdown, per credentials: failures are counted per source address AND
# system_id (all unknown system_ids of an address share one count), so guesses for one ESME
# from a shared host do not slow the other ESMEs on that host. After this many failures within
# the window, each further attempt for that (address, system_id) reserves a turn, one per
# FAIL_DELAY however many connections it opens at once, and is then checked: the right
# credentials bind at once (the turn is given back), a refusal is answered at its turn. An
# attempt whose turn would come after session_init is refused at once, unchecked (see
# BindThrottle.delay). A guess for an ESME's password cannot be told from that ESME without
# checking it, so an ESME whose own system_id is being guessed from its own address shares the
# guesser's turns.
FAIL_LIMIT = 5
FAIL_WINDOW = 60.0
FAIL_DELAY = 2.0
FAIL_IPS = 10_000  # (address, system_id) keys remembered at most: bounded memory under a distributed attack


# -- binds ---------------------------------------------------------------------------------------


TOO_MANY = "too many failed binds for this system_id from this address; not checked"

#: What failed binds are counted under: (source address, system_id), with "" for every
#: system_id that is not configured (guessing system_ids is slowed like guessing a password).
BindKey = tuple[str, str]


def bind_key(ip: str, esme: EsmeConfig | None) -> BindKey:
    return (ip, esme.system_id if esme is not None else "")


class BindThrottle:
    """Remembers failed binds per ``BindKey`` and says how long the next one waits.
    ``clock`` is a monotonic clock in seconds (the listener hands it trio.current_time)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._fails: dict[BindKey, deque[float]] = {}
        self._next_try: dict[BindKey, float] = {}  # key -> earliest time its next bind is looked at

    def delay(self, key: BindKey, session_init: float) -> float | None:
        """Seconds a bind for ``key`` waits before it is checked (0: at once), or None: refuse it
        at once without checking it, because the attempts already waiting their turn for that
        key fill the session_init time. Reserving no turn then keeps the queue, and so any
        lockout of that key, no longer than session_init. (The connection's session_init timer
        does not cut a bind waiting for its turn: SessionTimers.check(binding=True).)"""
        now = self.clock()
        q = self._fails.get(key)
        if not q:
            return 0.0
        while q and now - q[0] > FAIL_WINDOW:
            q.popleft()
        if len(q) < FAIL_LIMIT:
            return 0.0
        # Reserve this attempt's turn: parallel connections queue up instead of each waiting
        # FAIL_DELAY at the same time.
        at = max(now, self._next_try.get(key, 0.0)) + FAIL_DELAY
        if at - now > max(FAIL_DELAY, session_init):
            return None
        self._next_try[key] = at
        return at - now

    def give_back(self, key: BindKey) -> None:
        """A bind that reserved a turn (``delay`` > 0) succeeded: it did not wait, so its turn
        is freed (turns are interchangeable: the last one goes) and the guesses queued for that
        key are not pushed back by the real ESME's binds."""
        at = self._next_try.get(key)
        if at is None:
            return
        at -= FAIL_DELAY
        if at <= self.clock():
            self._next_try.pop(key)
        else:
            self._next_try[key] = at

    def note_failure(self, key: BindKey) -> None:
        q = self._fails.setdefault(key, deque(maxlen=100))
        q.append(self.clock())
        if len(self._fails) > FAIL_IPS:
            oldest = next(iter(self._fails))
            self._fails.pop(oldest)
            self._next_try.pop(oldest, None)


@attrs.frozen
class BindRefusal:
    status: int
    reason: str

    @property
    def counts_as_guess(self) -> bool:
        """A wrong system_id or password: one more failure for the brute-force slowdown."""
        return self.status in (Status.RINVSYSID, Status.RINVPASWD)

    @property
    def label(self) -> str:
        return bind_fail_label(self.reason)

    @property
    def hint(self) -> str:
        return bind_hint(self.reason)


def bind_refusal(
    esme: EsmeConfig | None, peer: str, *, shutting_down: bool, delay: float | None
) -> BindRefusal | None:
    """The checks before the password, in order; None: check the password next."""
    if shutting_down:
        return BindRefusal(Status.RBINDFAIL, "the bridge is shutting down")
    if delay is None:
        return BindRefusal(Status.RBINDFAIL, TOO_MANY)
    if esme is None:
        return BindRefusal(Status.RINVSYSID, "unknown system_id")
    if not esme.enabled:
        return BindRefusal(Status.RBINDFAIL, "ESME disabled in config")
    if not esme.allows(peer):
        return BindRefusal(Status.RBINDFAIL, "source IP not in the ESME's allowed_ips")
    return None


def bind_refusal_after_password(esme: EsmeConfig, password_ok: bool, binds_now: int) -> BindRefusal | None:
    """The checks after the password; None: the bind is accepted."""
    if not password_ok:
        return BindRefusal(Status.RINVPASWD, "wrong password")
    if binds_now >= esme.max_binds:
        return BindRefusal(Status.RBINDFAIL, f"max_binds ({esme.max_binds}) reached")
    return None


def bind_answer(pdu: Pdu, refusal: BindRefusal | None, system_id: str) -> Pdu:
    """The bind's resp: the refusal's status, or ROK with the interface version we speak."""
    if refusal is not None:
        return make_response(pdu, refusal.status, system_id=system_id)
    resp = make_response(pdu, Status.ROK, system_id=system_id)
    resp.tlvs[Tag.SC_INTERFACE_VERSION] = IF_VERSION_34
    return resp


def bind_fail_label(reason: str) -> str:
    if reason in ("unknown system_id", "wrong password"):
        return reason.replace(" ", "_")
    if reason.startswith("source IP"):
        return "ip_not_allowed"
    if reason.startswith("max_binds"):
        return "max_binds"
    if reason.startswith("ESME disabled"):
        return "disabled"
    if reason == "the bridge is shutting down":
        return "shutting_down"
    return "other"


def bind_hint(reason: str) -> str:
    return {
        "unknown system_id": "Check the client's system_id against esmes[].system_id.",
        "wrong password": "Check the client's password; repeated failures from one IP are slowed down.",
        "ESME disabled in config": "Set enabled: true for this ESME and reload.",
        "the bridge is shutting down": "The client should bind again in a moment (to this bridge once it "
        "has restarted, or to another one).",
        TOO_MANY: (
            f"Binds for this system_id from this address are checked one per {FAIL_DELAY:g} s after "
            "repeated failures: fix the client's password and let it retry slowly."
        ),
    }.get(
        reason,
        "Add the client's address to allowed_ips and reload."
        if reason.startswith("source IP")
        else "Raise max_binds or close idle binds."
        if reason.startswith("max_binds")
        else "",
    )


def reload_verdict(before: EsmeConfig | None, esme: EsmeConfig | None, peer: str) -> str | None:
    """Why a config reload closes a bind of this ESME from ``peer``, or None: it stays."""
    if esme is None or not esme.enabled:
        return "ESME removed or disabled by a config reload"
    if before is None or (before.password, before.password_hash) != (esme.password, esme.password_hash):
        return "the ESME's password changed in a config reload: bind again"
    if not esme.allows(peer):
        return "the ESME's allowed_ips no longer include this address (config reload)"
    return None


def other_request_answer(pdu: Pdu) -> Pdu | None:
    """A request the session table let through that we do not serve: ESME_RINVCMDID, except for
    those that have no response (alert_notification, generic_nack; outbind is SMSC->ESME only)."""
    if pdu.command_id in (C.ALERT_NOTIFICATION, C.OUTBIND, C.GENERIC_NACK):
        return None
    return make_response(pdu, Status.RINVCMDID)


def rejected_label(event: Rejected) -> str:
    if event.answer is None:
        return "dropped"
    if event.answer.command_id == C.GENERIC_NACK:
        return "generic_nack"
    return status_name(event.answer.command_status)


# -- submit --------------------------------------------------------------------------------------


@attrs.frozen
class SubmitPlan:
    """A submit that passed every check: commit these messages, then answer with submit_answer."""

    messages: Sequence[Any]  # acceptance's decided messages (.msg is what the store takes)
    unsuccess: Sequence[Any]  # submit_multi destinations refused up front
    segments: int
    multi: bool


@attrs.frozen
class SubmitRefusal:
    answer: Pdu


def decide_submit(acceptance: Acceptance, esme: EsmeConfig, pdu: Pdu) -> SubmitPlan | SubmitRefusal:
    """submit_sm / data_sm / submit_multi: refuse at once (the acceptance step decides, the
    queue depth included), or plan the commit."""
    try:
        body, concat = concat_mod.extract(pdu)
    except concat_mod.ConcatError as exc:
        return SubmitRefusal(make_response(pdu, exc.status))
    try:
        decision = acceptance.decide(esme, COMMANDS[pdu.command_id], pdu.params, body, concat)
    except Refused as r:
        return SubmitRefusal(make_response(pdu, r.status))
    return SubmitPlan(decision.messages, decision.unsuccess, decision.segments, pdu.command_id == C.SUBMIT_MULTI)


def submit_answer(pdu: Pdu, plan: SubmitPlan, result: Any, error: BaseException | None) -> Pdu:
    """The submit's resp once the store has committed (``result``) or failed (``error``)."""
    if error is not None:
        return make_response(pdu, Status.RSYSERR)
    if plan.multi:
        ids, unsuccess = result
        return make_response(pdu, message_id=ids, unsuccess_smes=unsuccess)
    return make_response(pdu, message_id=result.message_id)


# -- query / cancel / replace --------------------------------------------------------------------


def query_answer(pdu: Pdu, recs: Sequence[Any]) -> Pdu:
    """query_sm's resp for the store's records of the id (a submit_multi's id stands for all its
    destinations: store.summarise says what one answer reports for them)."""
    message_id = pdu.params.get("message_id", "")
    if not recs:
        return make_response(pdu, Status.RINVMSGID, message_id=message_id)
    state, final_at = summarise(recs)
    # While not final, the first waiting destination's network stat (an upstream intermediate
    # receipt: ACCEPTD answers ACCEPTED) refines its ENROUTE.
    network = next((r.network_stat for r in recs if r.state is state and r.final_at is None), None)
    final_date = ""
    if final_at is not None:
        final_date = format_smpp_time(dt.datetime.fromtimestamp(final_at, dt.UTC))
    return make_response(
        pdu, message_id=message_id, final_date=final_date, message_state=int(smpp_state(state, network)), error_code=0
    )


def cancel_answer(pdu: Pdu, cancelled: int | None) -> Pdu:
    """cancel_sm's resp: ``cancelled`` messages, or None when the store knows no such id."""
    if cancelled is None:
        return make_response(pdu, Status.RINVMSGID)
    return make_response(pdu, Status.ROK if cancelled else Status.RCANCELFAIL)


def decide_replace(acceptance: Acceptance, pdu: Pdu, current: Any) -> Replacement | Pdu:
    """replace_sm: what to change in the stored message ``current`` (a store record: its
    data_coding, schedule_at, expire_at), decided by the acceptance step, or the resp refusing it."""
    try:
        return acceptance.decide_replace(
            pdu.params,
            data_coding=current.data_coding,
            schedule_at=current.schedule_at,
            expire_at=current.expire_at,
        )
    except Refused as r:
        return make_response(pdu, r.status)


def replace_answer(pdu: Pdu, replaced: bool | None) -> Pdu:
    """replace_sm's resp: replaced or not, or None when the store knows no such id."""
    if replaced is None:
        return make_response(pdu, Status.RINVMSGID)
    return make_response(pdu, Status.ROK if replaced else Status.RREPLACEFAIL)


# -- timers --------------------------------------------------------------------------------------


@attrs.frozen
class CloseSession:
    reason: str


class SendEnquireLink:
    """Timer verdict: the session is idle; probe it (then tell SessionTimers.enquire_link_sent)."""


SEND_ENQUIRE_LINK = SendEnquireLink()


class SessionTimers:
    """The timers of one session as data. The caller feeds it the time (any monotonic clock in
    seconds, the same for every call) and the session's state, and does what ``check`` says."""

    def __init__(self, now: float) -> None:
        self.connected_at = now
        self.last_rx = now
        self.enquire_seq: int | None = None  # our enquire_link waiting for its resp
        self._enquire_sent = 0.0
        # The session state the timers last saw, and since when.
        self._state: SessionState | None = None
        self._since = 0.0

    @staticmethod
    def interval(t: Timers) -> float:
        """How often check() should run."""
        return min(1.0, t.session_init / 4, t.response / 4)

    def received(self, now: float) -> None:
        """Bytes came in from the peer."""
        self.last_rx = now

    def enquire_link_sent(self, seq: int, now: float) -> None:
        self.enquire_seq = seq
        self._enquire_sent = now

    def is_enquire_link_answer(self, seq: int) -> bool:
        """A response came in: True (and forgotten) if it answers our enquire_link."""
        if seq == self.enquire_seq:
            self.enquire_seq = None
            return True
        return False

    def check(
        self, now: float, state: SessionState, t: Timers, *, closing: bool, binding: bool = False
    ) -> CloseSession | SendEnquireLink | None:
        """``binding``: a bind is being answered (its wait is bounded by BindThrottle.delay);
        session_init does not cut it, its bind_resp is due first."""
        if state is not self._state:
            self._state = state
            self._since = now
        if closing:
            return None
        if state not in BOUND_STATES:
            if state == SessionState.OPEN:
                if now - self.connected_at > t.session_init and not binding:
                    return CloseSession(f"no bind within session_init timer ({t.session_init:g} s)")
            elif now - self._since > t.response:
                return CloseSession(f"unbind not completed within the response timer ({t.response:g} s)")
            return None
        idle = now - self.last_rx
        if idle > t.inactivity:
            return CloseSession(f"no traffic for {t.inactivity:g} s (inactivity timer)")
        if self.enquire_seq is not None:
            if now - self._enquire_sent > t.response:
                return CloseSession("peer did not answer enquire_link: dead connection")
            return None
        if idle > t.enquire_link:
            return SEND_ENQUIRE_LINK
        return None


__all__ = [
    "ASYNC_REQUESTS",
    "BIND_TYPES",
    "COMMANDS",
    "FAIL_DELAY",
    "FAIL_LIMIT",
    "FAIL_WINDOW",
    "SEND_ENQUIRE_LINK",
    "SUBMIT_LIKE",
    "BindRefusal",
    "BindKey",
    "BindThrottle",
    "TOO_MANY",
    "CloseSession",
    "SessionTimers",
    "SubmitPlan",
    "SubmitRefusal",
    "bind_answer",
    "bind_key",
    "bind_refusal",
    "bind_refusal_after_password",
    "cancel_answer",
    "decide_submit",
    "query_answer",
    "reload_verdict",
    "replace_answer",
    "decide_replace",
    "submit_answer",
]
