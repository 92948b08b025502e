"""Inbound SMS: device inbox -> store -> MO deliver_sm for the ESMEs; reassembly; opt-out keywords.

Rules
-----
* One poller per device that has ``Capability.INBOX``, every ``inbox_poll_interval`` seconds.
  The inbox returns everything it holds on every poll (a GoIP does), so each entry is known by
  its driver-given ``device_key``: entries already stored (``store.known_inbound``, and an
  in-memory set of what the last poll showed) are duplicates, never delivered again, also
  across restarts.
* Durable before acknowledged: new entries are committed to the store first; only then are
  they deleted on the device (``inbound.delete_after_commit`` and ``Capability.DELETE_INBOX``)
  or, for a push device (``Capability.ACK_INBOX``: GoIP SMS-server mode, SMSGate webhooks),
  acknowledged, always, duplicates included, so that it stops resending them. A crash in
  between leaves them on the device, where the next poll finds them already stored. A push
  driver with ``wait_inbox()`` is polled again as soon as something arrives.
* A complete message (a single SMS, or every part of a long one the device hands over part by
  part, in any order) is turned into deliver_sm rows in the outbox in the same transaction
  (``MoPolicy.rows``), so the dispatcher delivers it at least once, in order per ESME, until the
  ESME answers ESME_ROK, and keeps it for ``receipts.retention`` while the ESME is not bound.
  Parts still missing after ``inbound.reassembly_timeout`` are given up on: what arrived is
  delivered, with ``(...)`` where parts are missing (counted).
* Routing: the first ``inbound.routes`` entry matching the device/channel or the SIM number,
  else ``inbound.default_esme``, else the only ESME when exactly one is configured. An SMS with
  no ESME stays stored (counted, logged with what to configure) and is routed on the next sweep
  after the config names one.
* On the wire (``mo_deliver_sm``): esm_class 0, data_coding 0 (GSM 03.38, unpacked septets)
  when the whole text is GSM-7, else 8 (UCS2, UTF-16BE). A text longer than one SMS (160 GSM
  septets / 70 UCS2 units) goes as UDH parts (esm_class 0x40, 8-bit reference, several outbox
  rows in order) or as one deliver_sm with message_payload (sm_length 0), per ESME ``mo_long``.
  source_addr is the sender as the device gave it; destination_addr is never empty (an ESME may
  discard an MO without one: Kannel answers 0x0B): the channel's configured ``number``
  (devices[].channels."N".number), else ``inbound.default_destination``, else the channel as
  ``device:channel``. It is taken from the config current when the MO is queued, and MO still
  waiting in the outbox with no SIM number of their own follow a reload (and a restart).
* The MO form fits the bind: a ``message_payload`` MO for an ESME bound with SMPP 3.3 (no TLVs
  there) goes as UDH parts instead (``concat.payload_as_udh_parts``, used by the dispatcher).
* A reload applies at once: routes, keywords, timeouts, each ESME's ``mo_long`` and the
  destination are read from the current config for every MO built.
* Opt-out: a complete inbound text that is, trimmed and in any case, exactly one of
  ``inbound.optout.keywords`` puts the sender on the opt-out list, one of ``optin_keywords``
  takes it off, in the transaction that stores the SMS. The SMS is still delivered. An MT to an
  opted-out number is never sent: ``mt_action: receipt`` (default) accepts it and the scheduler
  finishes it REJECTED with a REJECTD receipt; ``reject_submit`` refuses the submit with
  ESME_RINVDSTADR (and a message queued before the STOP arrived is still finished REJECTED).
* Logs at info name numbers masked and never show message text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .config import Config
from .devices.base import Capability, Driver
from .keyed_tasks import KeyedTasks
from .receipts.payload import decode_payload, encode_payload
from .receipts.policy import NET_SMPP
from .smpp.concat import build_concat_udh
from .smpp.constants import ESM_UDHI, Status, Tag
from .smpp.text import gsm7_encode, split_text, ucs2_encode
from .store import InboundResult, MoMessage, Store

log = logging.getLogger(__name__)

SWEEP_SECONDS = 30.0  # at most this long between reassembly-timeout / unrouted sweeps
PRUNE_SECONDS = 3600.0  # forget finished inbound rows (store.prune_inbound) this often
MIN_PUSH_GAP = 0.05  # a push device's poller never polls more often than this
MAX_UDH_PARTS = 255

# What an MT to an opted-out number is told: ESME_RINVDSTADR for reject_submit, and the same
# code (11, and network_error_code "SMPP error 0x000B") in the REJECTD receipt.
OPTOUT_STATUS = Status.RINVDSTADR
OPTOUT_ERR = int(Status.RINVDSTADR)
OPTOUT_NETWORK_ERROR = (NET_SMPP, int(Status.RINVDSTADR))


def mask_number(number: str) -> str:
    """Phone numbers in logs keep their prefix only (as the SMPP server logs them): logs.mask_number."""
    from .logs import mask_number as mask

    return mask(number)


# -- opt-out keywords -------------------------------------------------------------------------


def optout_action(text: str, keywords: tuple[str, ...], optin_keywords: tuple[str, ...]) -> str | None:
    """"optout" when the whole text, trimmed and in any case, is an opt-out keyword; "optin" for
    an opt-in keyword; else None. ("stop" and " Stop\\n" are STOP; "STOP please" is not.)"""
    word = text.strip().upper()
    if not word:
        return None
    if word in keywords:
        return "optout"
    if word in optin_keywords:
        return "optin"
    return None


# -- the MO on the wire -----------------------------------------------------------------------


def address(addr: str | None) -> tuple[int, int, str]:
    """(ton, npi, address) for an address we put in a deliver_sm: "+49..." international/ISDN,
    digits unknown/ISDN, anything with letters alphanumeric, empty unknown. At most 20
    characters (source_addr and destination_addr are C-strings of 21 octets)."""
    a = (addr or "").strip()
    if not a:
        return 0, 0, ""
    if a.startswith("+") and a[1:].isdigit():
        return 1, 1, a[:20]
    if a.isdigit():
        return 0, 1, a[:20]
    return 5, 0, a[:20]


def mo_deliver_sm(mo: MoMessage, *, mo_long: str = "udh", ref: int | None = None) -> list[dict[str, Any]]:
    """The deliver_sm (as outbox payload dicts, in delivery order) that carry ``mo``."""
    split = split_text(mo.text)
    gsm = split.encoding == "gsm7"
    encode = gsm7_encode if gsm else ucs2_encode
    src_ton, src_npi, src = address(mo.sender)
    dst_ton, dst_npi, dst = address(mo.recipient)
    base = {
        "service_type": "",
        "source_addr_ton": src_ton,
        "source_addr_npi": src_npi,
        "source_addr": src,
        "dest_addr_ton": dst_ton,
        "dest_addr_npi": dst_npi,
        "destination_addr": dst,
        "esm_class": 0,
        "protocol_id": 0,
        "priority_flag": 0,
        "registered_delivery": 0,
        "data_coding": 0 if gsm else 8,
    }
    if split.count == 1:
        return [{"params": {**base, "short_message": encode(mo.text)}, "tlvs": {}}]
    if mo_long == "payload" or split.count > MAX_UDH_PARTS:
        return [{"params": {**base, "short_message": b""}, "tlvs": {Tag.MESSAGE_PAYLOAD: encode(mo.text)}}]
    ref8 = (mo.id if ref is None else ref) % 256
    return [
        {
            "params": {
                **base,
                "esm_class": ESM_UDHI,
                "short_message": build_concat_udh(ref8, split.count, seq) + encode(part),
            },
            "tlvs": {},
        }
        for seq, part in enumerate(split.parts, 1)
    ]


class MoPolicy:
    """The store's ``InboundPolicy``: routing, the SIM number, deliver_sm rows, keywords. Reads
    the current config on every call (a reload takes effect for the next SMS)."""

    def __init__(self, config: Callable[[], Config], clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self.clock = clock

    def recipient(self, device: str, channel: str) -> str | None:
        dev = self._config().device(device)
        return dev.channel_number(channel) if dev is not None else None

    def route(self, device: str, channel: str, recipient: str | None) -> str | None:
        return self._config().inbound_esme(device, channel, recipient)

    def destination(self, device: str, channel: str, recipient: str | None = None) -> str:
        """destination_addr of an MO (never empty): the SIM number (configured now, else as
        stored with the SMS), else ``inbound.default_destination``, else "device:channel"."""
        return (
            self.recipient(device, channel)
            or recipient
            or self._config().inbound.default_destination
            or f"{device}:{channel}"
        )

    def rows(self, mo: MoMessage) -> list[tuple[str, float]]:
        config = self._config()
        esme = config.esme(mo.esme or "")
        mo_long = esme.mo_long if esme is not None else "udh"
        expire_at = self.clock() + config.receipts.retention
        mo = attrs.evolve(mo, recipient=self.destination(mo.device, mo.channel, mo.recipient))
        return [(encode_payload(p), expire_at) for p in mo_deliver_sm(mo, mo_long=mo_long)]

    def redirect(self, payload: str, device: str, channel: str, recipient: str | None) -> str | None:
        """A queued MO's payload with the destination the config gives now, or None when it
        keeps its own: one built with a SIM number keeps it; one built without follows."""
        if recipient:
            return None
        pdu = decode_payload(payload)
        ton, npi, dst = address(self.destination(device, channel))
        if pdu.params.get("destination_addr") == dst:
            return None
        pdu.params.update(dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=dst)
        return encode_payload({"params": pdu.params, "tlvs": pdu.tlvs})

    def keyword(self, text: str) -> str | None:
        o = self._config().inbound.optout
        return optout_action(text, o.keywords, o.optin_keywords)


# -- the service ------------------------------------------------------------------------------


class Inbound:
    """Inbox pollers (one per inbox-capable device) and the reassembly/routing sweeper."""

    def __init__(
        self,
        config: Config,
        store: Store,
        drivers: Mapping[str, Driver],
        metrics: Any,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.drivers = dict(drivers)
        self.metrics = metrics
        self.clock = clock
        self.policy = MoPolicy(lambda: self.config, clock)
        self.pollers = {
            name: DevicePoller(self, name, driver)
            for name, driver in self.drivers.items()
            if Capability.INBOX in driver.capabilities
        }
        self._polling = KeyedTasks()  # one poller per device (connectors come and go)
        metrics.optouts.set_function(lambda: store.optout_count)
        self._init_series()
        self._sweep_wake = trio.Event()

    def _init_series(self) -> None:
        """Every labelled series at 0 from the start, so rate() sees the first event."""
        m = self.metrics
        for name in self.pollers:
            self._init_device_series(name)
        for action in ("optout", "optin"):
            m.optout_events.labels(action)
        for esme in self.config.esmes:
            for action in ("receipt", "reject_submit"):
                m.optout_blocked.labels(esme.system_id, action)

    def _init_device_series(self, name: str) -> None:
        m = self.metrics
        for counter in (m.inbound_received, m.inbound_duplicates, m.inbound_incomplete,
                        m.inbound_unrouted, m.inbound_poll_errors):  # fmt: skip
            counter.labels(name)

    async def update_config(self, config: Config) -> None:
        """A reloaded config: routes, keywords, timeouts, mo_long and destinations apply from now
        on; SMS that waited for a route are routed again at once; MO waiting in the outbox that
        had no SIM number get the destination the new config gives."""
        self.config = config
        self._sweep_wake.set()
        await self.refresh_destinations()

    async def refresh_destinations(self) -> int:
        n = await self.store.rewrite_pending_mo(self.policy.redirect)
        if n:
            log.info("%d queued inbound SMS got a new destination_addr from the config", n)
        return n

    def on_optout(self, action: str, number: str) -> None:
        """Store hook: the opt-out list changed (keyword, or the admin API)."""
        self.metrics.optout_events.labels(action).inc()
        log.info("%s %s", mask_number(number), "opted out" if action == "optout" else "opted in again")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._warn_about_config()
        try:
            await self.refresh_destinations()  # the config may have changed while we were down
        except Exception:
            log.exception("could not update the destination of queued inbound SMS; they keep the one they have")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeper)
            self._polling.bind(nursery)
            for name, poller in self.pollers.items():
                self._polling.start(name, poller.run)
            task_status.started()

    def add_device(self, name: str, driver: Driver) -> None:
        """Poll the inbox of ``name`` from now on (a connector added or changed by a reload)."""
        self.remove_device(name)
        self.drivers[name] = driver
        if Capability.INBOX in driver.capabilities:
            self.pollers[name] = DevicePoller(self, name, driver)
            self._init_device_series(name)
            self._polling.start(name, self.pollers[name].run)

    def remove_device(self, name: str) -> None:
        self._polling.cancel(name)
        self.pollers.pop(name, None)
        self.drivers.pop(name, None)

    def _warn_about_config(self) -> None:
        c = self.config
        if self.pollers and c.inbound.default_esme is None and len(c.esmes) > 1:
            log.warning(
                "inbound.default_esme is not set and %d ESMEs are configured: inbound SMS that "
                "match no inbound route are stored but not delivered; set inbound.default_esme",
                len(c.esmes),
            )
        for name, driver in self.drivers.items():
            if c.inbound.delete_after_commit and Capability.DELETE_INBOX not in driver.capabilities:
                log.info("device %s cannot delete inbox entries; inbound.delete_after_commit does not apply to it", name)

    async def sweep(self) -> InboundResult:
        """Give up on long SMS whose parts are overdue; route SMS that waited for a route."""
        now = self.clock()
        res = await self.store.flush_inbound(
            now - self.config.inbound.reassembly_timeout, self.policy,
            unrouted_before=now - self.config.receipts.retention,
        )  # fmt: skip
        self.report(res)
        if res.expired:
            log.warning(
                "%d inbound SMS waited longer than receipts.retention for an ESME route and were "
                "given up on; set inbound.default_esme or add inbound routes", res.expired,
            )  # fmt: skip
        return res

    async def _sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("inbound sweep failed; will retry")
            self._sweep_wake = trio.Event()
            with trio.move_on_after(min(SWEEP_SECONDS, max(0.5, self.config.inbound.reassembly_timeout / 4))):
                await self._sweep_wake.wait()

    def report(self, res: InboundResult, device: str | None = None) -> None:
        """Metrics and logs for what one commit did."""
        m = self.metrics
        if device is not None:
            if res.stored:
                m.inbound_received.labels(device).inc(len(res.stored))
            if res.duplicates:
                m.inbound_duplicates.labels(device).inc(res.duplicates)
        for mo in res.incomplete:
            m.inbound_incomplete.labels(mo.device).inc()
            log.warning(
                "inbound SMS %d from %s on %s:%s: gave up waiting for its missing parts after %g s; "
                "delivering the %d that arrived",
                mo.id, mask_number(mo.sender), mo.device, mo.channel,
                self.config.inbound.reassembly_timeout, mo.parts,
            )  # fmt: skip
        for mo in res.queued:
            log.info(
                "inbound SMS %d from %s on %s:%s (%d part%s) queued for %s",
                mo.id, mask_number(mo.sender), mo.device, mo.channel, mo.parts,
                "" if mo.parts == 1 else "s", mo.esme,
            )  # fmt: skip
        for mo in res.unrouted:
            m.inbound_unrouted.labels(mo.device).inc()
            log.warning(
                "inbound SMS %d from %s on %s:%s has no ESME to go to; it is stored and waits: set "
                "inbound.default_esme or add an inbound route for this device/channel",
                mo.id, mask_number(mo.sender), mo.device, mo.channel,
            )  # fmt: skip
        if res.failed:
            # The error text may quote the message: only its type at error level.
            log.error(
                "%d inbox entr%s from %s could not be stored (%s); %s on the device and "
                "will be tried again on the next poll. This is a bug: please report it with the "
                "debug log",
                len(res.failed), "y" if len(res.failed) == 1 else "ies", device,
                res.failed[0][1].split(":", 1)[0], "it stays" if len(res.failed) == 1 else "they stay",
            )  # fmt: skip
            log.debug("inbox entries not stored: %s", res.failed)


class DevicePoller:
    """Reads one device's inbox on its interval; commits new entries, then (optionally)
    deletes them on the device."""

    def __init__(self, inbound: Inbound, name: str, driver: Driver) -> None:
        self.inbound = inbound
        self.name = name
        self.driver = driver
        # device_keys the last poll showed that are known to be stored: skips a store read for
        # the whole inbox on every poll.
        self.known: set[str] = set()
        self._last_prune = 0.0
        self._settled = False

    @property
    def interval(self) -> float:
        dev = self.inbound.config.device(self.name)
        return dev.inbox_poll_interval if dev is not None else 10.0

    async def run(self) -> None:
        wait_inbox = getattr(self.driver, "wait_inbox", None)
        while True:
            settled = False
            try:
                await self.poll_once()
                settled = self._settled
            except Exception:
                self.inbound.metrics.inbound_poll_errors.labels(self.name).inc()
                log.exception("inbox poll of %s failed; will retry in %g s", self.name, self.interval)
            with trio.move_on_after(self.interval):
                if settled and wait_inbox is not None:
                    # A push device: poll again as soon as something arrives.
                    await trio.sleep(MIN_PUSH_GAP)
                    await wait_inbox()
                else:
                    await trio.sleep_forever()

    async def poll_once(self) -> InboundResult:
        inbound = self.inbound
        store = inbound.store
        items = await self.driver.inbox()
        res = InboundResult()
        unknown = [i for i in items if i.device_key not in self.known]
        if unknown:
            stored = await store.known_inbound(self.name, [i.device_key for i in unknown])
            res.duplicates += sum(1 for i in unknown if i.device_key in stored)
            self.known |= stored
            new = _unique([i for i in unknown if i.device_key not in stored])
            if new:
                added = await store.add_inbound(self.name, new, inbound.policy)
                res.merge(added)
                failed = {key for key, _err in added.failed}
                self.known |= {i.device_key for i in new if i.device_key not in failed}
            inbound.report(res, self.name)
        visible = {i.device_key for i in items}
        if items:
            # Forget what the device no longer shows (a failed poll shows nothing: keep).
            self.known &= visible
        caps = self.driver.capabilities
        committed = [i for i in items if i.device_key in self.known]
        # Nothing is left for wait_inbox to report at once: every entry was acknowledged.
        self._settled = len(committed) == len(items) and Capability.ACK_INBOX in caps
        if Capability.ACK_INBOX in caps or (
            inbound.config.inbound.delete_after_commit and Capability.DELETE_INBOX in caps
        ):
            if committed:
                await self.driver.delete_inbox(committed)
        await self._maybe_prune(items, visible)
        return res

    async def _maybe_prune(self, items: list[Any], visible: set[str]) -> None:
        now = self.inbound.clock()
        if now - self._last_prune < PRUNE_SECONDS:
            return
        if not items:
            # Empty inbox, or a device that could not be read? Only a healthy device says.
            health = await self.driver.health()
            if not health.ok or health.consecutive_errors:
                return
        self._last_prune = now
        n = await self.inbound.store.prune_inbound(self.name, visible, now - self.inbound.config.inbound.keep)
        if n:
            log.info("forgot %d finished inbound SMS of %s older than inbound.keep", n, self.name)


def _unique(items: list[Any]) -> list[Any]:
    """One entry per device_key (an inbox showing the same entry twice stores it once)."""
    seen: set[str] = set()
    out = []
    for i in items:
        if i.device_key not in seen:
            seen.add(i.device_key)
            out.append(i)
    return out


__all__ = [
    "OPTOUT_ERR",
    "OPTOUT_NETWORK_ERROR",
    "OPTOUT_STATUS",
    "DevicePoller",
    "Inbound",
    "MoPolicy",
    "address",
    "mask_number",
    "mo_deliver_sm",
    "optout_action",
]
