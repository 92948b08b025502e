"""The YAML keys of a `smsgateway24` device, their loader, and the driver built from them.

Errors name the key and its line (the `_Map` helpers of bridge/config.py do that).
"""

from __future__ import annotations

from typing import Any

from bridge.config.devices import (
    DEVICE_PASSWORD_KEYS,
    load_http_device as _load_http_device,
    Map as _Map,
    tls_options as _tls_options,
)
from bridge.devices.base import Driver, secret_text

#: Keys a `smsgateway24` device takes besides the common ones (name, kind, timeouts, caps, channels).
KEYS = ("url", "email", *DEVICE_PASSWORD_KEYS, "device_id", "sims", "offline_after", "verify_tls", "ca_file")


def load(m: _Map) -> dict[str, Any]:
    """An Android phone through the SmsGateway24 cloud API (docs/devices/smsgateway24.md)."""
    fields = _load_http_device(m, "SmsGateway24 API", default_url="https://smsgateway24.com",
                               default_username="", username_key="email")
    if isinstance(fields["username"], str) and not fields["username"]:
        fields["username"] = m.missing("email", "the SmsGateway24 account's e-mail address")
    device_id = m.get_int("device_id", 0, lo=1) if m.has("device_id") else m.missing(
        "device_id", "the phone's device id in SmsGateway24")
    sims = m.get_int("sims", 1, lo=1, hi=2)
    options = {
        "device_id": device_id,
        "offline_after": m.get_number("offline_after", 300.0, exclusive=True, what="a number of seconds"),
        **_tls_options(m),
    }
    return {**fields, "lines": sims, "options": options}


def build_driver(device: Any) -> Driver:
    """The driver for one configured `smsgateway24` device (``config.DeviceConfig``)."""
    from .driver import SmsGateway24Driver

    opts = device.options
    return SmsGateway24Driver(
        device.name,
        device.url,
        device.username,
        secret_text(device.password),
        opts["device_id"],
        sims=device.lines,
        timeout=device.timeout,
        offline_after=opts["offline_after"],
        verify_tls=opts["verify_tls"],
    )
