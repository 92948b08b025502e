"""A brevis.one SMS gateway (/api.php; docs/devices/brevis.md).

This folder is the whole kind: ``config.py`` (its YAML keys, loader and driver factory),
``driver.py``, ``emulator.py``, and below, what it can do (bridge/devices/registry.py).
"""

from bridge.devices.base import Capabilities, Capability

CAPABILITIES = Capabilities(
    send_options=frozenset({"flash"}),
)
