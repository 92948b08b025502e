"""The one step that decides about an incoming message (docs/architecture.md, rule 2).

Rules
-----
* Every front end (the SMPP listener today; the HTTP API and upstream connectors later) hands
  the decoded submit fields to ``Acceptance.decide`` and gets back either the message(s) to store
  (``Decision``) or a refusal (``Refused``: the SMPP status to answer, and a short reason for logs
  and metrics). Nothing about a message is decided anywhere else: not in the front end, not in
  the store, not in the scheduler.
* It is sans-IO: no sockets, no trio, no store writes. Its inputs are the fields, the ESME's
  config, the config, a clock, a route lookup, an opt-out lookup and the ESMEs' token buckets.
* The order of the checks is fixed: what the fields say (concatenation, times, priority, coding,
  text), then the destination(s) (address, opt-out, route), then the queue depth
  (``limits.queue_depth``: what the store holds that is not final, ``queued()``, plus the
  commits the front ends have in flight, ``pending``, which they count), then the ESME's
  throughput, counted in SMS parts (segments).
* replace_sm goes through the same step (``decide_replace``): its new times are read and
  bounded like a submit's, its new text must read as text in the message's data_coding.
* An alphanumeric ``source_addr`` ("MyShop") routed to a device kind without the
  CUSTOM_SENDER capability is accepted (the SMS still goes out, from the SIM's own number),
  counted in ``smpp_bridge_sender_not_honoured_total`` and logged once per ESME.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .config import Config, EsmeConfig
from .devices import registry as device_registry
from .devices.base import Capability
from .logs import mask_number
from .smpp.constants import Status
from .smpp.text import decode_short_message, part_count
from .smpp.timefmt import parse_smpp_time
from .store import NewMessage

log = logging.getLogger(__name__)

DEST_RE = re.compile(r"^\+?[0-9]{1,20}$")
NUMERIC_SENDER_RE = re.compile(r"^\+?[0-9]*$")
TON_ALPHANUMERIC = 5

SUBMIT_SM = "submit_sm"
DATA_SM = "data_sm"
SUBMIT_MULTI = "submit_multi"


class TokenBucket:
    """Throughput limit in segments per second, shared by all binds of one ESME.

    It holds at most ``max(rate, 1)`` segments. A message of n segments goes when the bucket
    holds n, or, for a message longer than the bucket could ever hold, when the bucket is full:
    it then goes into debt (negative tokens), which later messages wait out. So a 5-part
    message from an ESME limited to 2/s is not refused forever, and the rate still holds over
    time.
    """

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, now: float | None = None) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic() if now is None else now

    def take(self, n: int, now: float) -> bool:
        if self.rate <= 0:
            return True
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens + 1e-9 >= min(n, self.capacity):
            self.tokens -= n
            return True
        return False


# The SMS parts a text needs: the very function the scheduler's split follows (split_text).
segment_count = part_count


class Submit:
    """One message to store, and the SMS parts it counts for."""

    __slots__ = ("msg", "segments")

    def __init__(self, msg: NewMessage, segments: int) -> None:
        self.msg = msg
        self.segments = segments


class Decision:
    """What to store: the message(s), their segments in all, and for submit_multi the
    destinations refused (unsuccess_sme entries)."""

    __slots__ = ("messages", "segments", "unsuccess")

    def __init__(self, messages: list[Submit], segments: int, unsuccess: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.segments = segments
        self.unsuccess = unsuccess


class Replacement:
    """What a replace_sm sets: the new body, and the times and receipt request it changes
    (None: keep the message's own)."""

    __slots__ = ("body", "schedule_at", "expire_at", "registered_delivery")

    def __init__(
        self, body: bytes, schedule_at: float | None, expire_at: float | None, registered_delivery: int
    ) -> None:
        self.body = body
        self.schedule_at = schedule_at
        self.expire_at = expire_at
        self.registered_delivery = registered_delivery


class Refused(Exception):
    """The submit is refused with ``status``; ``reason`` says why (logs, metrics)."""

    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(reason or f"status 0x{status:08x}")
        self.status = status
        self.reason = reason


@attrs.frozen
class _RouteFacts:
    """What the devices behind a route can send (Acceptance._route_facts)."""

    kinds: frozenset[str]  # device kinds of the route and its failover routes
    refused_starts: frozenset[str]  # first characters that every one of those kinds refuses
    sender_ignored: tuple[str, ...]  # the route's own kinds that send with the SIM's number


class Acceptance:
    """Decides about incoming submits. One instance per bridge, shared by every front end."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        is_opted_out: Callable[[str], bool] = lambda number: False,
        metrics: Any = None,
        queued: Callable[[], int] = lambda: 0,
    ) -> None:
        self.config = config
        # What counts against limits.queue_depth: the store's messages that are not final...
        self.queued = queued
        # ...and the messages front ends have decided to store whose commit is still running
        # (a front end adds them when it hands them to the store, subtracts them when done).
        self.pending = 0
        self.clock = clock
        self.monotonic = monotonic
        self.is_opted_out = is_opted_out
        self.metrics = metrics
        self.buckets: dict[str, TokenBucket] = {}
        # Set by the app: routes a destination (None: store unrouted).
        self.route_for: Callable[[str, str], str | None] | None = None
        self.routes_configured = False
        # ESMEs already told (in the log) that the devices ignore their sender.
        self.sender_warned: set[str] = set()
        self._m_sender: dict[str, Any] = {}  # metric children per ESME: labels() is not free
        # What the devices behind each route can send, worked out once per configuration:
        # every submit asks (_check_start, _sender_check).
        self._facts: dict[str, _RouteFacts] = {}

    def update_config(self, config: Config) -> None:
        self.config = config
        self.buckets.clear()
        self._facts.clear()

    def _route_kinds(self, route_name: str, failovers: bool) -> frozenset[str]:
        """The device kinds of a route's channels, and of its failover routes' with
        ``failovers``."""
        found: set[str] = set()
        seen: set[str] = set()
        route = self.config.route(route_name)
        while route is not None and route.name not in seen:
            seen.add(route.name)
            found |= {d.kind for d in (self.config.device(name) for name, _ in route.channels) if d is not None}
            route = self.config.route(route.failover) if failovers and route.failover else None
        return frozenset(found)

    def _route_facts(self, route_name: str) -> _RouteFacts:
        facts = self._facts.get(route_name)
        if facts is None:
            every = self._route_kinds(route_name, failovers=True)
            refused = [device_registry.capabilities(k).part_start_refused for k in every]
            own = sorted(self._route_kinds(route_name, failovers=False))
            facts = self._facts[route_name] = _RouteFacts(
                kinds=every,
                refused_starts=frozenset.intersection(*refused) if refused else frozenset(),
                sender_ignored=tuple(
                    k for k in own if Capability.CUSTOM_SENDER not in device_registry.capabilities(k).flags
                ),
            )
        return facts

    def bucket(self, esme: EsmeConfig) -> TokenBucket:
        b = self.buckets.get(esme.system_id)
        if b is None:
            b = self.buckets[esme.system_id] = TokenBucket(esme.throughput, self.monotonic())
        return b

    def decide(
        self,
        esme: EsmeConfig,
        command: str,
        p: Mapping[str, Any],
        body: bytes,
        concat: Any = None,
    ) -> Decision:
        """The message(s) a submit asks for, or ``Refused``.

        ``command`` is SUBMIT_SM, DATA_SM or SUBMIT_MULTI; ``p`` the decoded fields under their
        SMPP names; ``body`` the text octets without UDH; ``concat`` the long-message part info
        (``.ref .total .seq .ref_bits``) or None.
        """
        now = self.clock()
        schedule, expire = _times(p, now)
        priority = p.get("priority_flag", 0)
        if priority > 3:
            raise Refused(Status.RINVPRTFLG, "bad priority_flag")
        dc = p.get("data_coding", 0)
        if dc == 1:
            dc = _ia5_coding(esme.data_coding_1, body)
        text = _text(dc, body, Status.RSUBMITFAIL)
        segments = 1 if concat is not None else segment_count(text)
        expire = self._validity(now, schedule, expire)
        common = dict(
            esme=esme.system_id,
            body=body,
            service_type=p.get("service_type", ""),
            source_addr_ton=p.get("source_addr_ton", 0),
            source_addr_npi=p.get("source_addr_npi", 0),
            source_addr=p.get("source_addr", ""),
            esm_class=p.get("esm_class", 0),
            protocol_id=p.get("protocol_id", 0),
            priority=priority,
            data_coding=dc,
            registered_delivery=p.get("registered_delivery", 0),
            schedule_at=schedule,
            expire_at=expire,
            concat=(concat.ref, concat.total, concat.seq, concat.ref_bits) if concat else None,
        )
        if command != SUBMIT_MULTI:
            dest = p.get("destination_addr", "")
            if not DEST_RE.match(dest):
                raise Refused(Status.RINVDSTADR, "bad destination_addr")
            msg = NewMessage(
                destination_addr=dest,
                dest_addr_ton=p.get("dest_addr_ton", 0),
                dest_addr_npi=p.get("dest_addr_npi", 0),
                route=self._route(esme.system_id, dest),
                **common,
            )
            self._check_start(msg.route, text, concat)
            out = [Submit(msg, segments)]
            unsuccess: list[dict[str, Any]] = []
        else:
            out, unsuccess = self._multi(esme, p, common, segments, text)
            if concat is not None:
                raise Refused(Status.RSUBMITFAIL, "long message to many destinations")
        total = segments * len(out)
        if self.queued() + self.pending + len(out) > self.config.limits.queue_depth:
            if self.metrics is not None:
                self.metrics.queue_full.labels(esme.system_id).inc(total)
            raise Refused(Status.RMSGQFUL, "queue full (limits.queue_depth)")
        if not self.bucket(esme).take(total, self.monotonic()):
            if self.metrics is not None:
                self.metrics.throttled.labels(esme.system_id).inc(total)
            raise Refused(Status.RTHROTTLED, "over the ESME's throughput")
        for submit in out:
            self._sender_check(esme.system_id, submit.msg)
        return Decision(out, total, unsuccess)

    def decide_replace(
        self, p: Mapping[str, Any], *, data_coding: int, schedule_at: float | None, expire_at: float | None
    ) -> Replacement:
        """What a replace_sm changes in a stored message (its ``data_coding`` and current
        ``schedule_at`` / ``expire_at`` given), or ``Refused``.

        Empty times keep the message's own (SMPP 3.4 4.10.1: NULL keeps the original; a stored
        message always has a validity, its own or the default); a new validity is cut to
        scheduler.max_validity like a submit's, counted from the (new) schedule. The new text
        must read as text in the message's data_coding (replace_sm cannot change the coding).
        """
        now = self.clock()
        schedule, expire = _times(p, now)
        body = p.get("short_message", b"")
        _text(data_coding, body, Status.RREPLACEFAIL)
        if expire is not None:
            expire = self._validity(now, schedule if schedule is not None else schedule_at, expire)
        return Replacement(body, schedule, expire, p.get("registered_delivery", 0))

    def _validity(self, now: float, schedule: float | None, expire: float | None) -> float:
        """The ESME's validity, else scheduler.default_validity, never more than
        scheduler.max_validity; both count from when the message may first go out."""
        sched = self.config.scheduler
        start = schedule if schedule is not None and schedule > now else now
        if expire is None:
            return start + sched.default_validity
        return min(expire, start + sched.max_validity)

    def _sender_check(self, esme_id: str, msg: NewMessage) -> None:
        """Count (and log once per ESME) an alphanumeric sender that the route's
        devices cannot send with: they send with the SIM's own number."""
        sender = msg.source_addr
        if not sender or (msg.source_addr_ton != TON_ALPHANUMERIC and NUMERIC_SENDER_RE.match(sender)):
            return
        if not msg.route:
            return
        ignored = self._route_facts(msg.route).sender_ignored
        if not ignored:
            return
        route = self.config.route(msg.route)
        assert route is not None
        if self.metrics is not None:
            child = self._m_sender.get(esme_id)
            if child is None:
                child = self._m_sender[esme_id] = self.metrics.sender_not_honoured.labels(esme_id)
            child.inc()
        if esme_id not in self.sender_warned:
            self.sender_warned.add(esme_id)
            log.warning(
                "ESME %s submits with sender %r, but route %s's %s devices send with the SIM's "
                "own number: recipients see that number, not %r. The messages are sent and "
                "counted in smpp_bridge_sender_not_honoured_total; have the ESME submit without "
                "an alphanumeric source_addr (logged once per ESME)",
                esme_id, sender, route.name, "/".join(ignored), sender,
            )

    def _multi(
        self, esme: EsmeConfig, p: Mapping[str, Any], common: dict[str, Any], segments: int, text: str
    ) -> tuple[list[Submit], list[dict[str, Any]]]:
        out: list[Submit] = []
        unsuccess: list[dict[str, Any]] = []
        for d in p.get("dest_addresses", ()):
            if d.get("dest_flag") == 1:
                try:
                    if not DEST_RE.match(d.get("destination_addr", "")):
                        raise Refused(Status.RINVDSTADR, "bad destination_addr")
                    msg = NewMessage(
                        destination_addr=d["destination_addr"],
                        dest_addr_ton=d.get("dest_addr_ton", 0),
                        dest_addr_npi=d.get("dest_addr_npi", 0),
                        route=self._route(esme.system_id, d["destination_addr"]),
                        **common,
                    )
                    self._check_start(msg.route, text, None)
                    out.append(Submit(msg, segments))
                except Refused as r:
                    unsuccess.append(
                        {
                            "dest_addr_ton": d.get("dest_addr_ton", 0),
                            "dest_addr_npi": d.get("dest_addr_npi", 0),
                            "destination_addr": d.get("destination_addr", ""),
                            "error_status_code": int(r.status),
                        }
                    )
            else:
                # Distribution lists live on an operator's SMSC; we have none.
                unsuccess.append(
                    {
                        "dest_addr_ton": 0,
                        "dest_addr_npi": 0,
                        "destination_addr": d.get("dl_name", ""),
                        "error_status_code": int(Status.RINVDLNAME),
                    }
                )
        if not out:
            raise Refused(
                Status.RINVNUMDESTS if not unsuccess else Status.RINVDSTADR, "no valid destination"
            )
        return out, unsuccess

    def _check_start(self, route_name: str | None, text: str, concat: Any) -> None:
        """Refuse a text that no device of its route can send: some firmware refuses a text that
        starts with a given character (GoIP HTTP: '['). The bridge's own splitting keeps later
        parts from starting with one, but the first character is the sender's. Better refused
        now, with the reason, than acknowledged and reported undeliverable later."""
        if not text or (concat is not None and concat.seq != 1) or not route_name:
            return
        facts = self._route_facts(route_name)  # the route and its failovers
        if text[0] in facts.refused_starts:
            route = self.config.route(route_name)
            assert route is not None
            log.info("a text starting with %r to route %s refused: its devices (%s) cannot send it",
                     text[0], route.name, "/".join(sorted(facts.kinds)))
            raise Refused(
                Status.RSUBMITFAIL,
                f"route {route.name}'s devices cannot send a text starting with {text[0]!r}",
            )

    def _route(self, esme_id: str, dest: str) -> str | None:
        """The route for a destination; refuses the submit when routes exist and none fits, or
        (inbound.optout.mt_action reject_submit) when the number opted out."""
        if self.config.inbound.optout.mt_action == "reject_submit" and self.is_opted_out(dest):
            if self.metrics is not None:
                self.metrics.optout_blocked.labels(esme_id, "reject_submit").inc()
            log.info("submit from %s to %s refused: the number opted out", esme_id, mask_number(dest))
            raise Refused(Status.RINVDSTADR, "opted out")  # = inbound.OPTOUT_STATUS
        if not self.routes_configured or self.route_for is None:
            return None  # no devices configured: store only
        route = self.route_for(esme_id, dest)
        if route is None:
            log.info("no route for %s from %s: refused", mask_number(dest), esme_id)
            raise Refused(Status.RINVDSTADR, "no route")
        return route


def _ia5_coding(mode: str, body: bytes) -> int:
    """The data_coding a data_coding 1 body is stored under, so that it reads as the ESME's
    ``data_coding_1`` says (and the same way when the scheduler splits it): 0 (GSM 03.38) for
    "gsm", 3 (Latin-1, which equals ASCII for ASCII octets) for "ascii", else 1 ("auto")."""
    if mode == "gsm":
        return 0
    if mode == "ascii" and body.isascii():
        return 3
    return 1


def _times(p: Mapping[str, Any], now: float) -> tuple[float | None, float | None]:
    """(schedule, expire) from schedule_delivery_time and validity_period, or ``Refused``."""
    try:
        schedule = _parse_time(p.get("schedule_delivery_time", ""), now)
    except ValueError:
        raise Refused(Status.RINVSCHED, "bad schedule_delivery_time") from None
    try:
        expire = _parse_time(p.get("validity_period", ""), now)
    except ValueError:
        raise Refused(Status.RINVEXPIRY, "bad validity_period") from None
    return schedule, expire


def _text(data_coding: int, body: bytes, status: int) -> str:
    """The body as text in its data_coding, or ``Refused`` with ``status``."""
    text = decode_short_message(data_coding, body)
    if text is None:
        # Every supported device sends text: binary or compressed user data would go out
        # as an empty or garbled SMS and be reported delivered. ESME_RSUBMITFAIL is the
        # permanent refusal every 3.4 client knows (ESME_RINVDCS exists only in SMPP 5.0).
        raise Refused(status, f"data_coding 0x{data_coding:02x} is binary or compressed, not text")
    if not text and body:
        raise Refused(status, "the short message decodes to no text")
    return text


def _parse_time(value: str, now: float) -> float | None:
    if not value:
        return None
    when = parse_smpp_time(value, dt.datetime.fromtimestamp(now, dt.UTC))
    return when.timestamp() if when is not None else None


def parse_time(value: str, now: float) -> float | None:
    """An SMPP absolute or relative time as a Unix time (None for empty). ValueError if bad."""
    return _parse_time(value, now)
