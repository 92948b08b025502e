"""An Android phone running SMSGate in local server mode (docs/devices/smsgate.md).

This folder is the whole kind: ``config.py`` (its YAML keys, loader and driver factory),
``driver.py``, ``emulator.py``, and below, what it can do (bridge/devices/registry.py).
"""

from bridge.devices.base import Capabilities, Capability

CAPABILITIES = Capabilities(
    # DELETE_INBOX + ACK_INBOX: delete_inbox answers the phone's held inbound webhook.
    flags=frozenset(
        {Capability.DELIVERY_REPORTS, Capability.INBOX, Capability.DELETE_INBOX, Capability.ACK_INBOX}
    ),
    whole_text=True,
    send_options=frozenset({"urgent"}),
    webhooks=True,
)
