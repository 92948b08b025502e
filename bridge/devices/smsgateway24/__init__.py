"""An Android phone through the SmsGateway24 cloud API (docs/devices/smsgateway24.md).

This folder is the whole kind: ``config.py`` (its YAML keys, loader and driver factory),
``driver.py``, ``emulator.py``, and below, what it can do (bridge/devices/registry.py).
"""

from bridge.devices.base import Capabilities, Capability

CAPABILITIES = Capabilities(
    flags=frozenset({Capability.DELIVERY_REPORTS, Capability.INBOX}),
    whole_text=True,
    send_options=frozenset({"urgent"}),
)
