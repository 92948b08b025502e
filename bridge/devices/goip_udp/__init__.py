"""A GoIP whose SMS server is the bridge: the GoIP calls us over UDP
(docs/devices/goip.md, part 2).

This folder is the whole kind: ``config.py`` (its YAML keys, loader and driver factory),
``driver.py``, ``emulator.py``, and below, what it can do (bridge/devices/registry.py).
"""

from bridge.devices.base import Capabilities, Capability

CAPABILITIES = Capabilities(
    flags=frozenset(
        {Capability.INBOX, Capability.DELETE_INBOX, Capability.ACK_INBOX, Capability.DELIVERY_REPORTS}
    ),
    push_listener=True,
)
