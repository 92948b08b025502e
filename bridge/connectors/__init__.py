"""Upstream SMSC connectors: the bridge as an ESME of a provider's SMSC (docs/connectors.md).

A connector is configured under ``connectors:`` and becomes a route target like a device
(kind ``smpp``): its channels are the slots of its window. The pieces, one job each:

* ``config.py``   the YAML keys of a connector, their loader, the driver factory
* ``bind.py``     one bind's trio I/O over the sans-IO ``ClientSession`` (bind, keep-alive,
                  submit, rebind with back-off)
* ``submit.py``   the submit_sm bodies of one message (coding, UDH / SAR / payload, TON/NPI)
* ``receipts.py`` receipts parsed and matched to what we submitted, whatever the id format
* ``driver.py``   the connector as a driver: send, status from receipts, MO inbox, health
* ``outbind.py``  the SMSC's outbind: listen, check it, bind as a receiver on its connection
* ``reconfigure.py`` a config reload's connector changes (add, remove, rebind, retune)
* ``emulator.py`` an SMSC for tests and the demo, with the emulators' fault vocabulary
* ``metrics.py``  per-connector metrics
"""

from bridge.devices.base import Capabilities, Capability

KIND = "smpp"

CAPABILITIES = Capabilities(
    # DELIVERY_REPORTS: status() answers from the SMSC's receipts. INBOX + ACK_INBOX: MO from
    # upstream wait in inbox() and are answered (deliver_sm_resp) once stored.
    flags=frozenset(
        {Capability.DELIVERY_REPORTS, Capability.INBOX, Capability.ACK_INBOX, Capability.CUSTOM_SENDER}
    ),
    # The driver splits long text itself (UDH / SAR / payload), so the parts are concatenated.
    whole_text=True,
    send_options=frozenset({"source"}),
    push_listener=True,  # serve(): the binds run in the app's nursery
)
