"""SmsGateway24 emulator: the service's cloud API plus a simulated phone behind it.

Wire format (docs/devices/smsgateway24.md), GET or form POST to ``/getdata/<method>``:

* ``gettoken(email, pass)`` -> ``{"error":0,"message":"OK","token":"<32 hex>"}`` |
  ``{"error":1,"message":"Login or password incorrect"}``
* ``addsms(token, sendto, body, device_id[, sim, timetosend, customerid, urgent])`` ->
  ``{"error":0,"sms_id":N,"message":"Sms has been saved successfully"}``;
  ``smstosend`` is the same with ``email``/``pass`` instead of a token.
* ``getsmsstatus(token, sms_id)`` -> ``{"error":0,"message":"OK","sms_id":N,"status":S,
  "status_description":"…"}``
* ``getallsms(token[, device_id, status, sim, customerid, begindate, enddate, timezone,
  onlycount])`` -> ``{"error":0,"message":"OK","count":n,"smss":{"<id>":{…}}}``; an empty
  result is ``"smss":[]`` (PHP encodes an empty map as a list).
* ``getdevicestatus(token, device_id)`` -> ``{"error":0,"device_id":…,"title":…,"online":…,
  "lastseen":{"date":…,"timezone_type":3,"timezone":…},"lastseenhumanformat":…,
  "diffseconds":N}``
* Dates are PHP DateTime dumps in the server's zone (``server_tz``, default Europe/Paris).

The simulated phone: an accepted SMS is status 1 (pending on the cloud) until the phone takes
it, then moves 2 (taken) -> 3 (queued) -> 6 (sent) -> 7 (delivered), one ``timeline`` delay
after the other. ``final_status=6`` models a phone that never gets delivery reports; a failure
code (``fail_code`` for all, ``fail_next`` for the next few) ends the SMS with 8 after 6, or
with 9/10/11/12/100/101 instead of 6. While the phone is offline nothing moves and
``lastseen`` stays where it was.

Where the service's documentation does not say, the emulator picks and marks it [I]: a bad or
expired token is ``{"error":1,"message":"Token is wrong or expired"}``; an unknown sms_id is
``{"error":1,"message":"Sms not found"}``; another device id is ``"Device not found"``; a missing
parameter is ``"<name> is required"``; a SIM slot the phone lacks is ``"Wrong sim"``; ``online`` is
true when the phone was seen in the last 120 s; ``timetosend`` is recorded but not honoured; the
rows of ``getallsms`` carry a ``sim`` field; an incoming SMS (status 5) has its sender in
``sendto``.

Faults and test hooks are the shared ones (``bridge/emulators/faults.py``, docs/emulators.md);
endpoints are the method names (``METHODS``). ``POST /emulator/inject`` takes sender, text[, sim
0|1][, when ISO-8601]; ``POST /emulator/faults`` also takes ``online`` bool, ``offline_for``
seconds (phone last seen that long ago), ``expire_tokens`` true, ``fail_next`` [count, code],
``fail_code`` code|null, ``final_status`` and ``timeline``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import trio

from bridge.emulators.faults import HttpDeviceEmulator, HttpFaults
from bridge.emulators.http import HttpServer, Request, Response

__all__ = [
    "METHODS",
    "SentSms",
    "Sg24Faults",
    "SmsGateway24Emulator",
    "run_smsgateway24_emulator",
]

log = logging.getLogger("bridge.emulators.smsgateway24")

METHODS = frozenset(
    {"gettoken", "addsms", "smstosend", "getsmsstatus", "getallsms", "getdevicestatus"}
)
TOKEN_ERROR = "Token is wrong or expired"
LOGIN_ERROR = "Login or password incorrect"
STATUS_TITLE = {
    1: "New",
    2: "sending",
    3: "queued",
    5: "incoming",
    6: "sent",
    7: "delivered",
    8: "not delivered",
    9: "generic failure",
    10: "no service",
    11: "null pdu",
    12: "radio off",
    100: "not allowed",
    101: "not allowed",
}
FAIL_CODES = frozenset({8, 9, 10, 11, 12, 100, 101})
FINAL = frozenset({5, 6, 7} | FAIL_CODES)
ONLINE_WINDOW = 120.0


@attrs.define
class Sg24Faults(HttpFaults):
    """The shared switches (``HttpFaults``; ``hang_after_processing`` applies to addsms and
    smstosend) and the service's own quirks."""

    ENDPOINTS = METHODS
    DEVICE = "SmsGateway24"

    #: Answer every call with ``{"error":1,"message":<this>}`` (without processing it; the
    #: ``endpoints`` switch applies).
    error_message: str | None = None
    #: PHP quirk: every number in an answer as a string ("sms_id":"62807347").
    string_numbers: bool = False


@attrs.frozen
class SentSms:
    sms_id: int
    sendto: str
    body: str
    device_id: str
    sim: int
    urgent: bool
    customerid: str | None
    at: datetime
    #: The status this SMS will end in (7 delivered, 6 no report, or a failure code).
    final_status: int

    def as_json(self) -> dict[str, Any]:
        return {
            "sms_id": self.sms_id,
            "sendto": self.sendto,
            "body": self.body,
            "device_id": self.device_id,
            "sim": self.sim,
            "urgent": self.urgent,
            "customerid": self.customerid,
            "at": self.at.isoformat(),
            "final_status": self.final_status,
        }


@attrs.define
class _Sms:
    id: int
    sendto: str
    body: str
    sim: int
    created: datetime
    status: int
    urgent: bool = False
    customerid: str | None = None
    timetosend: str | None = None
    #: Statuses still to come, each with the delay after the previous one.
    path: list[tuple[int, float]] = attrs.Factory(list)
    next_at: float | None = None
    senttime: datetime | None = None


@attrs.define
class _Token:
    issued_at: float
    calls: int = 0


class SmsGateway24Emulator(HttpDeviceEmulator):
    PROCESSING = frozenset({"addsms", "smstosend"})
    GARBAGE = b"<html><body><h1>502 Bad Gateway</h1>\x00\xff cloudflare</body></html>"

    def __init__(
        self,
        email: str = "user@example.com",
        password: str = "secret",
        device_id: int | str = 260,
        *,
        sims: int = 2,
        step: float = 0.5,
        timeline: Sequence[float] | None = None,
        final_status: int = 7,
        fail_code: int | None = None,
        token_ttl_calls: int | None = None,
        token_ttl_seconds: float | None = None,
        server_tz: str = "Europe/Paris",
        title: str = "Emulated Android phone",
        first_sms_id: int = 62807347,
        seed: int | None = None,
        faults: Sg24Faults | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] | None = None,
        **fault_options: Any,
    ):
        self._init_faults(Sg24Faults, faults, fault_options)
        if sims not in (1, 2):
            raise ValueError("a phone has 1 or 2 SIM slots")
        self.email = email
        self.password = password
        self.device_id = str(device_id)
        self.sims = sims
        self.timeline = self._check_timeline(timeline if timeline is not None else (step,) * 4)
        self.final_status = self._check_final(final_status)
        self.fail_code = self._check_fail(fail_code)
        self.token_ttl_calls = token_ttl_calls
        self.token_ttl_seconds = token_ttl_seconds
        self.server_tz = ZoneInfo(server_tz)
        self.server_tz_name = server_tz
        self.title = title
        self.sent: list[SentSms] = []
        #: Calls per method, for tests ("gettoken" counts token renewals).
        self.calls: Counter[str] = Counter()
        self._clock = clock
        self._wall = wall or (lambda: datetime.now(timezone.utc))
        self._rng = random.Random(seed)
        self._next_id = first_sms_id
        self._sms: dict[int, _Sms] = {}
        self._tokens: dict[str, _Token] = {}
        self._fail_next: list[int] = []
        self.phone_online = True
        self._last_seen: datetime = self._wall()
        self.server = HttpServer(self.handle, name="smsgateway24-emulator")

    # ---------------------------------------------------------------- runtime controls

    @staticmethod
    def _check_timeline(timeline: Sequence[float]) -> tuple[float, float, float, float]:
        values = tuple(float(t) for t in timeline)
        if len(values) != 4 or any(t < 0 for t in values):
            raise ValueError("timeline is 4 delays >= 0: taken, queued, sent, report")
        return values  # type: ignore[return-value]

    @staticmethod
    def _check_final(status: int) -> int:
        if int(status) not in (6, 7, 8):
            raise ValueError("final_status is 7 (delivered), 6 (no delivery report) or 8")
        return int(status)

    @staticmethod
    def _check_fail(code: int | None) -> int | None:
        if code is not None and int(code) not in FAIL_CODES:
            raise ValueError(f"fail codes are {sorted(FAIL_CODES)}")
        return None if code is None else int(code)

    def set_timeline(self, timeline: Sequence[float]) -> None:
        self.timeline = self._check_timeline(timeline)

    def set_final_status(self, status: int) -> None:
        self.final_status = self._check_final(status)

    def set_fail_code(self, code: int | None) -> None:
        self.fail_code = self._check_fail(code)

    def fail_next(self, count: int = 1, code: int = 9) -> None:
        """The next ``count`` accepted SMS end with failure ``code``."""
        self._fail_next.extend([self._check_fail(code)] * count)  # type: ignore[list-item]

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (the next call must get a new one)."""
        self._tokens.clear()

    def set_online(self, online: bool = True, *, seen_ago: float | None = None) -> None:
        """Phone online/offline. Offline: nothing moves, ``lastseen`` freezes (``seen_ago``
        seconds ago, default now)."""
        now = self._clock()
        self._tick(now)
        if online:
            if not self.phone_online:
                for sms in self._sms.values():
                    if sms.path:
                        sms.next_at = now + sms.path[0][1]
            self.phone_online = True
            self._last_seen = self._wall()
        else:
            self.phone_online = False
            self._last_seen = self._wall() - timedelta(seconds=seen_ago or 0.0)

    def inject_sms(
        self, sender: str, text: str, *, sim: int = 0, when: datetime | None = None
    ) -> int:
        """An incoming SMS (status 5) on SIM slot ``sim``; returns its sms id."""
        if not 0 <= int(sim) < self.sims:
            raise ValueError(f"the phone has SIM slots 0..{self.sims - 1}")
        when = when or self._wall()
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.server_tz)
        sms_id = self._new_id()
        self._sms[sms_id] = _Sms(
            id=sms_id, sendto=sender, body=text, sim=int(sim), created=when, status=5
        )
        return sms_id

    def status_of(self, sms_id: int) -> int | None:
        self._tick(self._clock())
        sms = self._sms.get(int(sms_id))
        return None if sms is None else sms.status

    def _new_id(self) -> int:
        sms_id = self._next_id
        self._next_id += self._rng.randint(1, 3)
        return sms_id

    # ---------------------------------------------------------------- the simulated phone

    def _path_for(self, final: int) -> list[tuple[int, float]]:
        taken, queued, sent, report = self.timeline
        if final in (6, 7, 8):
            steps = [(2, taken), (3, queued), (6, sent)]
            if final != 6:
                steps.append((final, report))
            return steps
        return [(2, taken), (3, queued), (final, sent)]

    def _tick(self, now: float) -> None:
        if not self.phone_online:
            return
        wall = self._wall()
        for sms in self._sms.values():
            while sms.path and sms.next_at is not None and sms.next_at <= now:
                status, _ = sms.path.pop(0)
                sms.status = status
                if status == 6:
                    sms.senttime = wall
                sms.next_at = sms.next_at + sms.path[0][1] if sms.path else None
        self._last_seen = wall  # an online phone calls the cloud all the time

    # ---------------------------------------------------------------- serving

    def route(self, request: Request) -> str | None:
        prefix = "/getdata/"
        if not request.path.startswith(prefix):
            return None
        method = request.path[len(prefix) :].strip("/").lower()
        if method not in METHODS:
            return None
        self.calls[method] += 1
        return method

    def early_answer(self, endpoint: str, request: Request) -> Response | None:
        if self.faults.error_message is None:
            return None
        return self._json({"error": 1, "message": self.faults.error_message})

    async def process(self, endpoint: str, request: Request) -> Response:
        self._tick(self._clock())
        return self._json(getattr(self, f"_m_{endpoint}")(request.params))

    def _json(self, obj: Mapping[str, Any]) -> Response:
        if self.faults.string_numbers:
            obj = _stringify_numbers(obj)
        return Response(
            status=200,
            body=json.dumps(obj, ensure_ascii=False),
            content_type="application/json",
            headers=[("Server", "nginx"), ("Cache-Control", "no-cache, private")],
        )

    # -- auth

    def _login_ok(self, params: Mapping[str, str]) -> bool:
        return params.get("email") == self.email and params.get("pass") == self.password

    def _token_ok(self, params: Mapping[str, str]) -> bool:
        token = self._tokens.get(params.get("token", ""))
        if token is None:
            return False
        token.calls += 1
        if self.token_ttl_calls is not None and token.calls > self.token_ttl_calls:
            return False
        if (
            self.token_ttl_seconds is not None
            and self._clock() - token.issued_at > self.token_ttl_seconds
        ):
            return False
        return True

    @staticmethod
    def _error(message: str) -> dict[str, Any]:
        return {"error": 1, "message": message}

    # -- methods

    def _m_gettoken(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not self._login_ok(params):
            return self._error(LOGIN_ERROR)
        token = "%032x" % self._rng.getrandbits(128)
        self._tokens[token] = _Token(issued_at=self._clock())
        return {"error": 0, "message": "OK", "token": token}

    def _m_addsms(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not self._token_ok(params):
            return self._error(TOKEN_ERROR)
        return self._add(params)

    def _m_smstosend(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not self._login_ok(params):
            return self._error(LOGIN_ERROR)
        return self._add(params)

    def _add(self, params: Mapping[str, str]) -> dict[str, Any]:
        for name in ("sendto", "body", "device_id"):
            if not params.get(name):
                return self._error(f"{name} is required")
        if params["device_id"].strip() != self.device_id:
            return self._error("Device not found")
        try:
            sim = int(params.get("sim") or 0)
        except ValueError:
            return self._error("Wrong sim")
        if not 0 <= sim < self.sims:
            return self._error("Wrong sim")
        urgent = params.get("urgent", "0").strip() not in ("", "0")
        if self._fail_next:
            final = self._fail_next.pop(0)
        elif self.fail_code is not None:
            final = self.fail_code
        else:
            final = self.final_status
        now = self._clock()
        sms_id = self._new_id()
        path = self._path_for(final)
        sms = _Sms(
            id=sms_id,
            sendto=params["sendto"],
            body=params["body"],
            sim=sim,
            created=self._wall(),
            status=1,
            urgent=urgent,
            customerid=params.get("customerid") or None,
            timetosend=params.get("timetosend") or None,
            path=path,
            next_at=now + path[0][1] if self.phone_online else None,
        )
        self._sms[sms_id] = sms
        self.sent.append(
            SentSms(
                sms_id=sms_id,
                sendto=sms.sendto,
                body=sms.body,
                device_id=self.device_id,
                sim=sim,
                urgent=urgent,
                customerid=sms.customerid,
                at=sms.created,
                final_status=final,
            )
        )
        return {"error": 0, "sms_id": sms_id, "message": "Sms has been saved successfully"}

    def _m_getsmsstatus(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not self._token_ok(params):
            return self._error(TOKEN_ERROR)
        try:
            sms = self._sms.get(int(params.get("sms_id", "")))
        except ValueError:
            sms = None
        if sms is None:
            return self._error("Sms not found")
        return {
            "error": 0,
            "message": "OK",
            "sms_id": sms.id,
            "status": sms.status,
            "status_description": STATUS_TITLE.get(sms.status, "unknown"),
        }

    def _m_getallsms(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not self._token_ok(params):
            return self._error(TOKEN_ERROR)
        zone = self.server_tz
        if params.get("timezone"):
            try:
                zone = ZoneInfo(params["timezone"])
            except (ValueError, KeyError, OSError):
                return self._error("Wrong timezone")
        try:
            begin = _param_date(params.get("begindate"), zone)
            end = _param_date(params.get("enddate"), zone, end_of_day=True)
        except ValueError:
            return self._error("Wrong date format")
        rows = {}
        for sms in sorted(self._sms.values(), key=lambda s: s.id):
            if params.get("device_id") and params["device_id"].strip() != self.device_id:
                continue
            if params.get("status") and str(sms.status) != params["status"].strip():
                continue
            if params.get("sim") not in (None, "") and str(sms.sim) != params["sim"].strip():
                continue
            if params.get("customerid") and sms.customerid != params["customerid"]:
                continue
            if begin is not None and sms.created < begin:
                continue
            if end is not None and sms.created > end:
                continue
            rows[str(sms.id)] = self._row(sms)
        if params.get("onlycount", "0") not in ("", "0"):
            return {"error": 0, "message": "OK", "count": len(rows)}
        return {"error": 0, "message": "OK", "count": len(rows), "smss": rows or []}

    def _row(self, sms: _Sms) -> dict[str, Any]:
        return {
            "id": sms.id,
            "sendto": sms.sendto,
            "body": sms.body,
            "customerid": sms.customerid,
            "status": sms.status,
            "statustitle": STATUS_TITLE.get(sms.status, "unknown"),
            "deviceid": int(self.device_id) if self.device_id.isdigit() else self.device_id,
            "sim": sms.sim,
            "urgent": 1 if sms.urgent else None,
            "created": self._php_date(sms.created),
            "senttime": self._php_date(sms.senttime) if sms.senttime else None,
            "timetosend": sms.timetosend,
            "paketid": None,
            "pakettitle": None,
            "paketbody": None,
        }

    def _m_getdevicestatus(self, params: Mapping[str, str]) -> dict[str, Any]:
        if not self._token_ok(params):
            return self._error(TOKEN_ERROR)
        if params.get("device_id", "").strip() != self.device_id:
            return self._error("Device not found")
        diff = max(0, int((self._wall() - self._last_seen).total_seconds()))
        local = self._last_seen.astimezone(self.server_tz)
        return {
            "error": 0,
            "message": "OK",
            "device_id": int(self.device_id) if self.device_id.isdigit() else self.device_id,
            "title": self.title,
            "online": self.phone_online and diff < ONLINE_WINDOW,
            "lastseen": self._php_date(self._last_seen),
            "lastseenhumanformat": local.strftime("%d.%m.%Y %H:%M:%S"),
            "diffseconds": diff,
        }

    def _php_date(self, when: datetime) -> dict[str, Any]:
        local = when.astimezone(self.server_tz)
        return {
            "date": local.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "timezone_type": 3,
            "timezone": self.server_tz_name,
        }

    # ---------------------------------------------------------------- test hooks over HTTP

    def inject_from(self, data: Mapping[str, Any]) -> dict[str, Any]:
        when = datetime.fromisoformat(data["when"]) if data.get("when") else None
        sms_id = self.inject_sms(
            str(data["sender"]), str(data["text"]), sim=int(data.get("sim", 0)), when=when
        )
        return {"sms_id": sms_id}

    def apply_control(self, key: str, value: Any) -> bool:
        if key == "online":
            self.set_online(bool(value))
        elif key == "offline_for":
            self.set_online(False, seen_ago=float(value))
        elif key == "expire_tokens":
            if value:
                self.expire_tokens()
        elif key == "fail_code":
            self.set_fail_code(value)
        elif key == "final_status":
            self.set_final_status(int(value))
        elif key == "timeline":
            self.set_timeline(value)
        else:
            return False
        return True

    def device_state(self) -> dict[str, Any]:
        self._tick(self._clock())
        return {
            "device_id": self.device_id,
            "phone_online": self.phone_online,
            "last_seen": self._last_seen.isoformat(),
            "tokens": len(self._tokens),
            "calls": dict(self.calls),
            "timeline": list(self.timeline),
            "final_status": self.final_status,
            "fail_code": self.fail_code,
            "fail_next": list(self._fail_next),
            "sms": {str(s.id): s.status for s in self._sms.values()},
        }


def _param_date(value: str | None, zone: Any, *, end_of_day: bool = False) -> datetime | None:
    if not value:
        return None
    value = value.strip()
    if len(value) == 10:
        day = datetime.strptime(value, "%Y-%m-%d")
        naive = day.replace(hour=23, minute=59, second=59) if end_of_day else day
    else:
        naive = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    return naive.replace(tzinfo=zone)


def _stringify_numbers(obj: Any) -> Any:
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int | float):
        return str(obj)
    if isinstance(obj, Mapping):
        return {k: _stringify_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_stringify_numbers(v) for v in obj]
    return obj


async def run_smsgateway24_emulator(port: int, host: str = "127.0.0.1", **opts: Any) -> None:
    """Run an SmsGateway24 emulator until cancelled.

    ``opts`` are ``SmsGateway24Emulator`` keyword arguments (email, password, device_id, sims,
    step, final_status, fail_code, token_ttl_calls, ...) and any ``Sg24Faults`` field.
    The driver's base_url is ``http://<host>:<port>``.
    """
    emulator = SmsGateway24Emulator(**opts)
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(emulator.serve, host, port)
        log.info(
            "SmsGateway24 emulator on http://%s:%d/getdata/ (device %s, %d SIM(s))",
            host,
            actual,
            emulator.device_id,
            emulator.sims,
        )


# ============================================================================================
# `smpp-bridge emulate smsgateway24` (bridge/cli.py reads these)

DEFAULT_PORT = 8084


def add_arguments(parser: Any) -> None:
    """This kind's options of ``smpp-bridge emulate`` (an ``argparse`` parser)."""
    parser.add_argument("--password", default="secret", help="account password [secret]")
    parser.add_argument("--email", default="user@example.com", help="account login [user@example.com]")
    parser.add_argument("--device-id", type=int, default=260, help="the phone's device id [260]")
    parser.add_argument("--sims", type=int, default=2, help="SIM slots [2]")
    parser.add_argument("--step", type=float, default=0.5,
                        help="seconds between the phone's status steps (taken, queued, sent, report) [0.5]")
    parser.add_argument("--timeline", help="the four step delays, comma-separated (overrides --step)")
    parser.add_argument("--final-status", type=int, default=7, choices=[6, 7, 8],
                        help="7 delivered, 6 no handset report, 8 not delivered [7]")
    parser.add_argument("--token-ttl-calls", type=int, help="a token works for this many calls [forever]")
    parser.add_argument("--token-ttl-seconds", type=float, help="a token works this many seconds [forever]")


def from_cli(args: Any) -> tuple[SmsGateway24Emulator, str]:
    """(emulator, a one-line description) from the parsed options; ValueError for a bad one."""
    timeline = (
        tuple(float(x) for x in args.timeline.split(","))
        if args.timeline
        else (args.step,) * 4
    )
    emu = SmsGateway24Emulator(
        email=args.email,
        password=args.password,
        device_id=args.device_id,
        sims=args.sims,
        timeline=timeline,
        final_status=args.final_status,
        token_ttl_calls=args.token_ttl_calls,
        token_ttl_seconds=args.token_ttl_seconds,
        seed=args.seed,
    )
    return emu, f"cloud API at /getdata/, account {emu.email!r}, device {emu.device_id}"
