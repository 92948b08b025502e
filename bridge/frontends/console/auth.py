"""Who may use the web console: login with the admin token or the console password, sessions,
CSRF tokens, and the brute-force slowdown.

Rules
-----
* A login is the admin token (``admin.token``) or the console password
  (``admin.console_password_hash``, a PBKDF2 hash from ``smpp-bridge hash-password --console``).
  With neither configured the admin port is loopback only (the config insists), and the console
  lets in whoever reaches it by a loopback name, as the admin API does.
* Failed logins slow an address down exactly as failed SMPP binds do (`BindThrottle`: after 5 in
  a minute each further attempt waits its turn, one per 2 s; one whose turn is too far is refused
  with 429 at once, unchecked).
* A session is a random 256-bit cookie value (``HttpOnly``, ``SameSite=Strict``, ``Secure`` when
  the admin port speaks TLS, ``Path=/console``); the bridge keeps only its SHA-256. It ends at
  logout, after IDLE_SECONDS without a request, or at MAX_AGE_SECONDS whatever happens; at most
  MAX_SESSIONS live at once (the oldest goes). Sessions live in memory: a restart logs everyone out.
* Every change is a form POST carrying the session's CSRF token, compared in constant time, and
  a POST whose ``Origin`` is another site is refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import attrs
import trio

from ...passwords import verify_password
from ..http.asgi import secret_digest
from ..smpp.protocol import BindThrottle

IDLE_SECONDS = 8 * 3600.0
MAX_AGE_SECONDS = 24 * 3600.0
MAX_SESSIONS = 200
LOGIN_QUEUE_SECONDS = 10.0  # a throttled attempt waits at most this long for its turn
COOKIE = "bridge_console"


@attrs.define
class Session:
    who: str  # "token", "password" or "loopback": how it logged in (for the log and the page)
    csrf: str
    created: float
    seen: float


class Sessions:
    """Live console sessions by the SHA-256 of their cookie; ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_digest: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._by_digest)

    def new(self, who: str) -> tuple[str, Session]:
        now = self.clock()
        self._expire(now)
        while len(self._by_digest) >= MAX_SESSIONS:
            self._by_digest.pop(next(iter(self._by_digest)))
        cookie = secrets.token_urlsafe(32)
        session = Session(who=who, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        self._by_digest[_digest(cookie)] = session
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        now = self.clock()
        self._expire(now)
        session = self._by_digest.get(_digest(cookie))
        if session is not None:
            session.seen = now
        return session

    def drop(self, cookie: str | None) -> None:
        if cookie:
            self._by_digest.pop(_digest(cookie), None)

    def _expire(self, now: float) -> None:
        dead = [d for d, s in self._by_digest.items()
                if now - s.seen > IDLE_SECONDS or now - s.created > MAX_AGE_SECONDS]
        for d in dead:
            del self._by_digest[d]


def _digest(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode("utf-8", "surrogatepass")).digest()


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())


class TooManyAttempts(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed logins")
        self.retry_after = retry_after


class Login:
    """Checks a login secret against the token and the console password, with the slowdown."""

    def __init__(self, token: str | None, password_hash: str | None,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self._token_digest = secret_digest(token) if token else None
        self._password_hash = password_hash
        self.throttle = BindThrottle(clock)

    @property
    def configured(self) -> bool:
        """False: no token and no password, so the loopback rule decides alone."""
        return self._token_digest is not None or self._password_hash is not None

    async def check(self, ip: str, secret: str) -> str | None:
        """How the secret logs in ("token" or "password"), or None when it does not.
        Raises TooManyAttempts when this address has failed too often."""
        key = (ip, "console")  # the console's failures count apart from SMPP binds and the send API
        wait = self.throttle.delay(key, LOGIN_QUEUE_SECONDS)
        if wait is None:
            raise TooManyAttempts(LOGIN_QUEUE_SECONDS)
        if wait:
            await trio.sleep(wait)
        who = None
        if self._token_digest is not None and hmac.compare_digest(secret_digest(secret), self._token_digest):
            who = "token"
        elif self._password_hash is not None and secret:
            if await trio.to_thread.run_sync(verify_password, self._password_hash, secret):
                who = "password"
        if who is None:
            self.throttle.note_failure(key)
        elif wait:
            self.throttle.give_back(key)
        return who
