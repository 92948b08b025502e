"""brevis.one SMS Gateway driver, HTTP API (docs/devices/brevis.md).
Config kind ``brevis``.

One driver per gateway; one channel, "1" (the gateway picks its modem itself; its API has no
modem or SIM selection).

Wire facts this driver depends on:

* ``https://<gateway>/api.php`` by GET or POST with ``username``, ``password``, ``to``,
  ``text`` and the optional ``mode`` (``number`` = an SMS to a phone number; invalid modes fall
  back to it), ``hexmode=true`` (``text`` given as hex), ``flash`` (class-0 "flash" SMS, newer
  gateways only), ``telauto`` (Telegram modes only). POST is the default: the credentials then
  never appear in a URL.
* The gateway is usually reached over HTTPS with a self-signed certificate: ``verify_tls``
  takes True (system CAs), the path of the CA file that signed the gateway's certificate, or
  False (no verification; acceptable on a trusted LAN only).
* Errors are text plus the same HTTP status: 400 ``Error. See Gateway logs for more
  information.`` (wrong mode, group or contact not existing, wrong number), 400 ``Error:
  Parameter miss.``, 401 ``401 Unauthorized - Username or Password wrong.``, 403 ``403
  Forbidden - Your User has no right to send SMS over API.``, 408 ``FAILED - Timeout or see
  Gateway logs for more information.``. The success answer is not documented: HTTP 200 with
  readable text that is none of those errors counts as success.
* No message id, no delivery status, no inbox through this API.

Hex mode: the vendor manual's example ``48616c6c6f2064696573206973742065696e65205465737420534d53`` is
"Hallo dies ist eine Test SMS" one byte per character, i.e. the hex of the text's bytes, not of
UCS-2 (which would read ``00480061...``). The driver therefore hex-encodes the UTF-8 bytes
(lower case, as the example). With ``hexmode="auto"`` (default) it does so only when the text
holds anything beyond printable ASCII - non-ASCII letters, emoji, line breaks, control
characters - which is where a gateway's form decoding and charset handling can mangle a text;
plain ASCII goes as readable text (easier to read in the gateway's own logs). ``"always"`` and
``"never"`` force it.

Flash: the manual calls ``flash`` a *query parameter* ("By adding the parameter ... to the query
string" for its sibling ``ring``), so ``flash=true`` goes into the URL's query string - with
POST too (it is no secret) - and into the form body as well.

Outcome decisions (``parse_send_answer``):

* HTTP 200 with a readable success text -> ACCEPTED, ``ref=None``.
* 400 ``Error. See Gateway logs...`` -> ERROR: retried with back-off. Most causes the manual lists
  are permanent for the message (a wrong number), but "wrong mode" is a configuration error
  that would otherwise fail every message, and the gateway's logs may show transient causes;
  retries end in UNDELIV after the scheduler's attempts anyway.
* 400 ``Error: Parameter miss.`` -> REJECTED: the request lacked a field (an empty text, or a
  bug of ours); the same request will fail again.
* 401 -> AUTH_FAILED (check username/password of the gateway's system user).
* 403 -> AUTH_FAILED with the fix: grant the user "Access to the HTTP API".
* 408 ``FAILED - Timeout...`` -> ERROR: the gateway itself declares the send FAILED, and the
  documented meaning (the server's time limit waiting for the request) says the request was
  not processed. The risk - a gateway whose modem sent the SMS after all - is noted in the
  detail so ops can check the gateway logs; the scheduler retries.
* HTTP 504 (a proxy gave up waiting) -> AMBIGUOUS. No answer at all after the request was
  written (timeout, connection dropped) -> AMBIGUOUS; failures before it was written (refused,
  TLS handshake, pool) -> ERROR.
* HTTP 200 with an unreadable (binary) body -> AMBIGUOUS, counted as a protocol error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import httpx

from bridge.devices.brevis import CAPABILITIES
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
    install_httpx_log_redaction,
)
from bridge.devices.http_common import (
    CallCounters,
    HttpAnswer,
    HttpDevice,
    decode_body,
    encode_pairs,
    snippet,
    tls_verify_option,
    validate_base_url,
)

__all__ = ["BrevisDriver", "encode_hex", "needs_hex", "parse_send_answer"]

log = logging.getLogger("bridge.devices.brevis")

API_PATH = "/api.php"
CHANNEL = "1"
HEXMODES = ("auto", "always", "never")

CREDENTIALS_HINT = "check the username/password of the gateway's system user for the API"
API_RIGHT_HINT = (
    "the gateway user lacks the API right: in the gateway's web UI open the system users "
    "(Configuration), edit this user (pencil symbol) and grant \"Access to the HTTP API\""
)


# ============================================================================================
# Pure functions


def needs_hex(text: str) -> bool:
    """True when ``text`` holds anything beyond printable ASCII (see the module docstring)."""
    return any(not (0x20 <= ord(ch) <= 0x7E) for ch in text)


def encode_hex(text: str) -> str:
    """The ``hexmode=true`` form of ``text``: its UTF-8 bytes as lower-case hex."""
    return text.encode("utf-8", "surrogatepass").hex()


def _readable(answer: str) -> bool:
    return all(ch.isprintable() or ch in "\r\n\t" for ch in answer) and "\ufffd" not in answer


def _classify_send(status: int, body: bytes | str) -> tuple[SendResult, bool]:
    """-> (result, the answer was garbage). The gateway's text decides where it is known (the
    status code only mirrors it); else the HTTP status."""
    answer = decode_body(body).strip()
    low = answer.lower()

    def result(outcome: SendOutcome, detail: str) -> tuple[SendResult, bool]:
        return SendResult(outcome, detail=detail, http_status=status), False

    if status == 401 or low.startswith("401 unauthorized") or "username or password wrong" in low:
        return result(
            SendOutcome.AUTH_FAILED,
            f"gateway refused the credentials (HTTP {status}, {snippet(answer, 60)}): "
            f"{CREDENTIALS_HINT}",
        )
    if status == 403 or low.startswith("403 forbidden") or "no right to send sms over api" in low:
        return result(SendOutcome.AUTH_FAILED, f"HTTP {status}: {API_RIGHT_HINT}")
    if status == 408 or low.startswith("failed - timeout"):
        return result(
            SendOutcome.ERROR,
            f"gateway answered FAILED - Timeout (HTTP {status}): it reports the send as failed; "
            "if the recipient got it anyway, the gateway logs will show it",
        )
    if low.startswith("error: parameter miss"):
        return result(
            SendOutcome.REJECTED,
            f"gateway answered 'Error: Parameter miss.' (HTTP {status}): "
            "a required field was empty or missing",
        )
    if low.startswith("error. see gateway logs"):
        return result(
            SendOutcome.ERROR,
            f"gateway answered 'Error. See Gateway logs' (HTTP {status}): wrong number, "
            "mode, group or contact per the gateway docs; see the gateway logs",
        )
    if status == 504:
        return result(
            SendOutcome.AMBIGUOUS,
            "HTTP 504: a gateway or proxy gave up waiting; the SMS may or may not have gone out",
        )
    if status == 404:
        return result(
            SendOutcome.ERROR, f"HTTP 404: no {API_PATH} on this device (wrong base_url?)"
        )
    if status != 200:
        return result(SendOutcome.ERROR, f"HTTP {status}: {snippet(answer)}")
    if low.startswith(("error", "failed")):
        return result(SendOutcome.ERROR, f"gateway error {snippet(answer)}")
    if not _readable(answer):
        return (
            SendResult(
                SendOutcome.AMBIGUOUS,
                detail=f"unrecognised answer {snippet(answer)}",
                http_status=status,
            ),
            True,
        )
    return result(
        SendOutcome.ACCEPTED,
        f"gateway accepted it ({snippet(answer, 60)}); it gives no message id "
        "and no delivery status",
    )


def parse_send_answer(status: int, body: bytes | str) -> SendResult:
    """Turn one api.php answer into a SendResult (the detail may quote it: redact it)."""
    return _classify_send(status, body)[0]


# ============================================================================================
# The driver


class BrevisDriver(DriverBase):
    kind = "brevis"
    capabilities = CAPABILITIES.flags
    declared = CAPABILITIES

    def __init__(
        self,
        name: str,
        base_url: str,
        username: str,
        password: str,
        *,
        method: str = "post",
        timeout: float = 10.0,
        verify_tls: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        mode: str = "number",
        hexmode: str = "auto",
        telauto: bool | None = None,
        max_connections: int = 2,
        keepalive_expiry: float = 5.0,
    ):
        base_url = validate_base_url(name, base_url)
        method = method.lower()
        if method not in ("post", "get"):
            raise DeviceError(f"device {name!r}: method must be 'post' or 'get', got {method!r}")
        if hexmode not in HEXMODES:
            raise DeviceError(
                f"device {name!r}: hexmode must be one of {', '.join(HEXMODES)}, got {hexmode!r}"
            )
        if timeout <= 0:
            raise DeviceError(f"device {name!r}: timeout must be > 0")
        self.name = name
        self.base_url = base_url
        self.username = username
        self._password = password
        self.method = method
        self.mode = mode
        self.hexmode = hexmode
        self.telauto = telauto
        self.timeout = timeout
        self.channels = (CHANNEL,)
        self._redact = Redactor([password])
        install_httpx_log_redaction()
        self._http = HttpDevice(
            timeout=timeout,
            redact=self._redact,
            transport=transport,
            verify=tls_verify_option(name, verify_tls),
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        self._counters = CallCounters()

    def __repr__(self) -> str:
        return f"<BrevisDriver {self.name!r} {self.base_url} method={self.method}>"

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._http.closed:
            raise DeviceError(f"device {self.name!r}: driver is closed")

    async def _call(
        self, params: Iterable[tuple[str, str]], query_only: Iterable[tuple[str, str]] = ()
    ) -> HttpAnswer:
        """api.php with the credentials and ``params``; ``query_only`` pairs (no secrets) also
        go into the URL's query string with POST."""
        self._check_open()
        extra = list(query_only)
        pairs = [("username", self.username), ("password", self._password), *params, *extra]
        url = self.base_url + API_PATH
        if self.method == "post":
            if extra:
                url += "?" + encode_pairs(extra)
            return await self._http.request(
                "POST",
                url,
                content=encode_pairs(pairs).encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return await self._http.request("GET", f"{url}?{encode_pairs(pairs)}")

    # ---------------------------------------------------------------- send

    async def send(
        self, channel: str, destination: str, text: str, *, flash: bool = False
    ) -> SendResult:
        """Send one SMS; ``flash`` makes it a class-0 "flash" SMS (newer gateways only)."""
        self._check_open()
        self.check_channel(channel)
        hexed = self.hexmode == "always" or (self.hexmode == "auto" and needs_hex(text))
        params = [("to", destination), ("text", encode_hex(text) if hexed else text)]
        if self.mode:
            params.append(("mode", self.mode))
        if hexed:
            params.append(("hexmode", "true"))
        if self.telauto is not None:
            params.append(("telauto", "true" if self.telauto else "false"))
        answer = await self._call(params, [("flash", "true")] if flash else [])
        result = self._counters.judge_send(answer, _classify_send, self._redact)
        log.debug(
            "brevis %s send (hexmode=%s, flash=%s) -> %s",
            self.name,
            hexed,
            flash,
            result.outcome.value,
        )
        if result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS, SendOutcome.AUTH_FAILED):
            log.warning("brevis %s send: %s: %s", self.name, result.outcome.value, result.detail)
        return result

    # ---------------------------------------------------------------- status, inbox

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        """Always SENT: the gateway reports nothing after accepting a message."""
        self._check_open()
        self.check_channel(channel)
        return StatusResult(
            DeliveryState.SENT,
            detail="gateway accepted it; its HTTP API reports no delivery status",
        )

    async def status_many(self, refs: Mapping[str, str | None]) -> dict[str, StatusResult]:
        return {channel: await self.status(channel, ref) for channel, ref in refs.items()}

    async def inbox(self) -> list[InboundSms]:
        """The HTTP API has no inbox (the gateway forwards received SMS by its own rules)."""
        self._check_open()
        return []

    # ---------------------------------------------------------------- health

    async def health(self) -> DeviceHealth:
        """Probe api.php with the credentials only (no ``to``/``text``: nothing can be sent).

        401/403 -> auth_failed; ``Error: Parameter miss.`` (HTTP 400) -> reachable and, on
        gateways that check credentials first, the credentials are good. The probe does not
        move ``consecutive_errors`` (that counts sends).
        """
        self._check_open()
        answer = await self._call([])
        c = self._counters
        if answer.error is not None:
            return self._health(reachable=False, detail=f"unreachable: {answer.error}")
        assert answer.status is not None
        result, garbage = _classify_send(answer.status, answer.body)
        if result.outcome is SendOutcome.AUTH_FAILED:
            c.auth_failed = True
            return self._health(reachable=True, detail=result.detail)
        if garbage:
            c.protocol_errors += 1
            return self._health(reachable=True, detail=f"api.php probe: {result.detail}")
        if answer.status not in (200, 400):
            return self._health(reachable=True, detail=f"api.php probe: HTTP {answer.status}")
        c.auth_failed = False
        parts = ["ok"]
        if summary := c.summary():
            parts.append(summary)
        return self._health(reachable=True, detail="; ".join(parts))

    def _health(self, *, reachable: bool, detail: str) -> DeviceHealth:
        return self._counters.health(
            reachable=reachable, detail=detail, channels={CHANNEL: ChannelHealth()}, redact=self._redact
        )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        await self._http.aclose()
