"""A GoIP gateway driven over its HTTP web API (docs/devices/goip.md, part 1).

This folder is the whole kind: ``config.py`` (its YAML keys, loader and driver factory),
``driver.py``, ``emulator.py``, and below, what it can do (bridge/devices/registry.py).
"""

from bridge.devices.base import Capabilities, Capability

CAPABILITIES = Capabilities(
    flags=frozenset({Capability.INBOX, Capability.DELETE_INBOX, Capability.STATUS_BATCH}),
    # The GoIP answers HTTP 500 to a text starting with '['.
    part_start_refused=frozenset("["),
    # The line is busy for seconds after a send: nothing to see before one poll interval.
    first_poll_delay=True,
    network_receipt="goip_done",
)
