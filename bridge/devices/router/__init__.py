"""An LTE router with "send SMS via URL" (Teltonika style; docs/devices/router.md).

This folder is the whole kind: ``config.py`` (its YAML keys, loader and driver factory),
``driver.py``, ``emulator.py``, and below, what it can do (bridge/devices/registry.py).
"""

from bridge.devices.base import Capabilities, Capability

CAPABILITIES = Capabilities(
    flags=frozenset({Capability.INBOX, Capability.DELETE_INBOX}),
    send_options=frozenset({"flash"}),
)
