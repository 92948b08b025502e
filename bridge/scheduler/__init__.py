"""The scheduler: routing, and one worker per channel.

One module per concern; each states its rules at its top:

* ``facade.py``   ``Scheduler``: wires the pieces, the one object the rest of the bridge calls
                  (intake from the store, finish/retry/requeue, timers, expiry sweep, device
                  health, config reload)
* ``queues.py``   ``RouteQueue`` and ``TimerQueue``: messages waiting for a channel (by
                  priority) or for their due time, a bounded window in memory, paged from
                  the store
* ``caps.py``     ``CapCounter``: a channel's caps per minute/hour/day and its pacing
* ``channel.py``  ``Channel``: one channel's worker (pick, send the parts, poll, ambiguous
                  sends, health and quarantine, lost races and rescues)
* ``routing.py``  which route a message takes, which channel sends it, failover, route reload
* ``tracker.py``  ``ReportTracker``: handset reports followed in the background
* ``recovery.py`` caps and in-flight messages rebuilt after a restart (the queues and
                  timers page the rest from the store)
* ``parts.py``    a device status as a part's stored result
"""

from .. import lifecycle
from .caps import CapCounter
from .channel import MAX_RESCUES, RESCUE_DELAY, Channel
from .facade import Scheduler
from .queues import RouteQueue
from .tracker import TRACK_CONCURRENCY, TRACK_TICK, ReportTracker

WAITING = lifecycle.WAITING  # nothing has gone to a device yet (the lifecycle's definition)

__all__ = [
    "MAX_RESCUES",
    "RESCUE_DELAY",
    "TRACK_CONCURRENCY",
    "TRACK_TICK",
    "WAITING",
    "CapCounter",
    "Channel",
    "ReportTracker",
    "RouteQueue",
    "Scheduler",
]
