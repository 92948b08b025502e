"""Routing: which route a message takes, and which channel of it sends the message.

Rules
-----
* A message's route is the first route of the config that matches its ESME and destination
  (``route_for``); none matches: the message is REJECTED, with its receipt when asked for.
* The dispatcher gives the next message of a route to the least-loaded idle channel of that
  route (fewest sends today, then this hour, then at random), preferring another channel than
  the one that just failed it (``choose``).
* Failover: when no channel of a route is healthy, its messages go to the channels of the first
  healthy route along its ``failover`` chain (``failover_channels``), counted in
  ``smpp_bridge_route_failovers_total``.
* A config reload applies new routes at once (``update_routes``); channels themselves change
  with a restart only. Messages waiting on a route that is gone get the route the new config
  picks for them, keeping their turn; those no route fits any more are REJECTED.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..lifecycle import State
from ..receipts.policy import Outcome, ReceiptPolicy
from ..store import QueueEntry
from .queues import RouteQueue

if TYPE_CHECKING:
    from .channel import Channel
    from .facade import Scheduler

log = logging.getLogger(__name__)


def route_for(config: Any, esme: str, destination: str) -> str | None:
    route = config.route_for(esme, destination)
    return route.name if route is not None else None


def dispatch(sched: Scheduler) -> int:
    """Hand queued messages to idle channels; returns how many were handed out."""
    now = sched.clock()
    handed = 0
    for name, q in sched.queues.items():
        chans = sched.route_channels.get(name, ())
        if len(q) and not any(c.healthy for c in chans):
            chans = failover_channels(sched, name)
        while len(q):
            idle = [c for c in chans if c.idle and c.healthy]
            if not idle:
                break
            entry = q.pop()
            if entry is None:
                break
            ch = choose(idle, entry, now)
            ch.give(entry)
            handed += 1
    return handed


def failover_channels(sched: Scheduler, name: str) -> list[Channel]:
    """The channels of the first healthy route along this route's failover chain."""
    seen = {name}
    route = sched.config.route(name)
    while route is not None and route.failover and route.failover not in seen:
        seen.add(route.failover)
        chans = sched.route_channels.get(route.failover, [])
        if any(c.healthy for c in chans):
            sched.metrics.failovers.labels(name, route.failover).inc()
            return chans
        route = sched.config.route(route.failover)
    return []


def choose(idle: list[Channel], entry: QueueEntry, now: float) -> Channel:
    if entry.channel and len(idle) > 1:
        others = [c for c in idle if c.id != entry.channel or c.device_name != entry.device]
        if others:
            idle = others
    return min(idle, key=lambda c: c.load(now))


async def update_routes(sched: Scheduler, config: Any) -> dict[str, Any]:
    """Apply a reloaded config's routes, scheduler policy and receipt table. Channels keep
    running as they are (devices and channels change with a restart only): a route that
    names a channel this bridge does not run gets it after a restart, and the answer lists
    it. Messages waiting on a route that is gone get the route the new config picks for
    them, keeping their turn; those that no route fits any more are REJECTED, with a
    receipt when asked for."""
    sched.config = config
    sched.receipts = ReceiptPolicy(config.receipts)
    not_running: list[str] = []
    route_channels: dict[str, list[Channel]] = {}
    for ch in sched.channels.values():
        ch.routes = []
    for route in config.routes:
        chans: list[Channel] = []
        for d, c in route.channels:
            ch = sched.channels.get(f"{d}:{c}")
            if ch is None:
                not_running.append(f"{d}:{c}")
            elif ch not in chans:
                chans.append(ch)
                ch.routes.append(route.name)
        route_channels[route.name] = chans
        if route.name not in sched.queues:
            # The store may hold messages of a route the config names again.
            sched.queues[route.name] = RouteQueue(route.name)
            sched.queues[route.name].mark_unknown()
    sched.route_channels = route_channels
    for name in [n for n in sched.queues if n not in route_channels]:
        del sched.queues[name]  # its messages are in the store: rerouted just below
    moved = await sched.store.reroute_waiting(set(route_channels), sched.route_for)
    sched.unrouted = []  # their rows were rerouted too
    for route in {r for _mid, _old, r in moved if r is not None}:
        # Moved in the store, perhaps ahead of what the queue holds: found again from there
        # (queues.py).
        sched.queues[route].reset()
    rejected = 0
    for mid, old, route in moved:
        if route is None:
            detail = f"route {old!r} was removed by a config reload and no route matches now"
            try:
                await sched.finish(mid, Outcome(State.REJECTED, "REJECTD", 0, None, detail))
                rejected += 1
            except Exception as exc:  # a channel took it meanwhile: it goes out as it is
                log.info("message %s left as it is after the reload: %s", mid, exc)
    sched.wake()
    return {
        "rerouted": sum(1 for _m, _o, r in moved if r is not None),
        "rejected": rejected,
        "channels_not_running": sorted(set(not_running)),
    }
