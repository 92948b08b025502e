"""Delivery of the outbox's webhook rows: receipts and inbound SMS POSTed as signed JSON.

Rules
-----
* Rows come from the durable outbox (bridge/store/outbox.py, channel ``webhook``), written in the
  transaction that decided them, exactly like the deliver_sm rows; an ESME with a webhook URL
  for a kind gets that kind by webhook (``deliver_via: webhook``) or by webhook and SMPP
  (``both``: one row each, delivered on their own).
* At least once: a row is marked delivered only after a 2xx answer. Anything else (no answer
  within ``TIMEOUT``, a connection refused, any other status) counts an attempt and the row is
  offered again after a back-off that doubles up to ``RETRY_MAX``, as for deliver_sm, until
  ``receipts.retention`` ends it (OutboxDelivery's housekeeping expires every channel's rows).
  A receiver dedupes on the body's ``id`` (the outbox row id: the same on every retry).
* Signed (signing.py): timestamp + HMAC-SHA256 with the ESME's ``webhook_secret``.
* Counted in ``smpp_bridge_webhook_deliveries_total{esme,kind,outcome}`` (delivered, failed)
  and shown in ``/api/status`` (``webhooks``: per ESME and kind, waiting and oldest, and the
  last failure with its reason).
* The body is built from the stored deliver_sm (``webhook_body``, sans-IO): receipts name the
  message id and its outcome; inbound SMS carry sender, recipient and text (a long SMS an ESME
  takes as UDH parts, ``mo_long: udh``, comes as parts with ``part``: set ``mo_long: payload``
  for one webhook with the whole text).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import trio

from ...receipts.payload import decode_payload
from ...smpp.constants import Tag
from ...smpp.text import decode_short_message
from . import signing

log = logging.getLogger(__name__)

RECEIPT_FIELD_RE = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err):(\S*)")
STAT_STATE = {"DELIVRD": "delivered", "EXPIRED": "expired", "DELETED": "deleted", "UNDELIV": "undeliverable",
              "ACCEPTD": "acknowledged", "UNKNOWN": "unknown", "REJECTD": "rejected", "ENROUTE": "enroute"}


def webhook_body(item: Any) -> dict[str, Any]:
    """The JSON a receiver gets for one outbox row (a receipt or an inbound SMS)."""
    pdu = decode_payload(item.payload)
    p = pdu.params
    body = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD) or p.get("short_message", b"")
    out: dict[str, Any] = {"id": item.id, "esme": item.esme, "created_at": item.created_at}
    if item.kind == "receipt":
        text = body.decode("ascii", "replace")
        fields = dict(RECEIPT_FIELD_RE.findall(text))
        rid = pdu.tlvs.get(Tag.RECEIPTED_MESSAGE_ID)
        message_id = rid.decode("ascii", "replace").rstrip("\0") if isinstance(rid, bytes) else fields.get("id")
        stat = fields.get("stat", "UNKNOWN")
        out.update(type="receipt", message_id=message_id, state=STAT_STATE.get(stat, stat.lower()), stat=stat,
                   err=fields.get("err"), to=p.get("source_addr", ""), done_date=fields.get("done date"))
        return out
    part = None
    if p.get("esm_class", 0) & 0x40 and body:
        udh, body = body[1 : 1 + body[0]], body[1 + body[0] :]
        i = 0
        while i + 1 < len(udh):
            iei, n = udh[i], udh[i + 1]
            data = udh[i + 2 : i + 2 + n]
            if iei == 0x00 and n == 3:
                part = {"ref": data[0], "total": data[1], "seq": data[2]}
            elif iei == 0x08 and n == 4:
                part = {"ref": data[0] << 8 | data[1], "total": data[2], "seq": data[3]}
            i += 2 + n
    text = decode_short_message(p.get("data_coding", 0), body)
    out.update(type="inbound", **{"from": p.get("source_addr", "")}, to=p.get("destination_addr", ""),
               text=text if text is not None else body.hex())
    if part is not None:
        out["part"] = part
    return out


@attrs.define
class Failure:
    at: float
    reason: str


class WebhookDelivery:
    """POSTs webhook rows of the outbox to the ESMEs' URLs."""

    TIMEOUT = 10.0
    RESCAN_SECONDS = 5.0
    STATS_SECONDS = 5.0
    RETRY_BASE = 1.0
    RETRY_MAX = 300.0
    PARALLEL = 8

    def __init__(self, store: Any, metrics: Any, config: Callable[[], Any],
                 transport: httpx.AsyncBaseTransport | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self._transport = transport
        self._wake = trio.Event()
        self._busy: set[int] = set()
        self.stats: dict[tuple[str, str], tuple[int, float | None]] = {}
        self.last_failure: dict[str, Failure] = {}

    def wake(self, esme: str) -> None:
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """The ``webhooks`` section of /api/status."""
        now = self.clock()
        out: dict[str, Any] = {}
        for e in self.config().esmes:
            if e.receipt_url is None and e.inbound_url is None:
                continue
            entry: dict[str, Any] = {"receipt_url": e.receipt_url, "inbound_url": e.inbound_url,
                                     "deliver_via": e.deliver_via}
            for kind in ("receipt", "mo"):
                n, created = self.stats.get((e.system_id, kind), (0, None))
                entry[kind] = {"waiting": n, "oldest_seconds": round(now - created, 1) if created else 0.0}
            failure = self.last_failure.get(e.system_id)
            entry["last_failure"] = None if failure is None else {
                "seconds_ago": round(now - failure.at, 1), "reason": failure.reason}
            out[e.system_id] = entry
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(transport=self._transport, timeout=self.TIMEOUT, follow_redirects=False,
                                     headers={"User-Agent": "smpp-bridge webhooks"}) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stats_loop)
                task_status.started()
                limiter = trio.Semaphore(self.PARALLEL)
                while True:
                    items = [i for i in await self._pending() if i.id not in self._busy]
                    for item in items:
                        await limiter.acquire()
                        self._busy.add(item.id)
                        nursery.start_soon(self._post, client, item, limiter)
                    self._wake = trio.Event()
                    with trio.move_on_after(self.RESCAN_SECONDS if not items else 0.05):
                        await self._wake.wait()

    async def _pending(self) -> list[Any]:
        try:
            return await self.store.pending_webhooks(limit=200)
        except Exception:
            log.exception("reading webhooks waiting in the outbox failed; will retry")
            return []

    async def _post(self, client: httpx.AsyncClient, item: Any, limiter: trio.Semaphore) -> None:
        try:
            esme = self.config().esme(item.esme)
            url = None if esme is None else (esme.receipt_url if item.kind == "receipt" else esme.inbound_url)
            if esme is None or url is None or esme.webhook_secret is None:
                reason = "the ESME has no webhook URL for this kind any more (config reload)"
                await self._retry(item, reason)
                return
            body = json.dumps(webhook_body(item), separators=(",", ":")).encode()
            headers = signing.headers(esme.webhook_secret.reveal(), int(self.clock()), body)
            try:
                resp = await client.post(url, content=body, headers=headers)
                ok, reason = 200 <= resp.status_code < 300, f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                ok, reason = False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if ok:
                self.metrics.webhook_deliveries.labels(item.esme, item.kind, "delivered").inc()
                done = trio.Event()
                self.store.outbox_delivered_nowait(item.id, lambda _r, _e: done.set())
                await done.wait()
            else:
                await self._retry(item, reason)
        finally:
            self._busy.discard(item.id)
            limiter.release()

    async def _retry(self, item: Any, reason: str) -> None:
        self.metrics.webhook_deliveries.labels(item.esme, item.kind, "failed").inc()
        self.last_failure[item.esme] = Failure(self.clock(), reason)
        delay = min(self.RETRY_MAX, self.RETRY_BASE * 2 ** min(item.attempts, 20))
        log.info("webhook (%s) for %s not taken (%s); will retry in %.0f s", item.kind, item.esme, reason, delay)
        done = trio.Event()
        self.store.outbox_retry_nowait(item.id, self.clock() + delay, lambda _r, _e: done.set())
        await done.wait()

    async def _stats_loop(self) -> None:
        while True:
            try:
                self.stats = await self.store.outbox_stats("webhook")
            except Exception:
                log.exception("counting waiting webhooks failed; will retry")
            await trio.sleep(self.STATS_SECONDS)
