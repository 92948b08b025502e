"""The YAML keys of a `router` device, their loader, and the driver built from them.

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

#: Keys a `router` device takes besides the common ones (name, kind, timeouts, caps, channels).
KEYS = ("url", "username", *DEVICE_PASSWORD_KEYS, "method", "modem", "verify_tls", "ca_file")


def load(m: _Map) -> dict[str, Any]:
    """An LTE router with "send SMS via URL" (Teltonika style; docs/devices/router.md)."""
    fields = _load_http_device(m, "router")
    options = {"method": m.get_choice("method", "post", ("post", "get")), **_tls_options(m)}
    if m.has("modem"):
        options["modem"] = m.get_str("modem", None, what="the modem id, like 1-1")
    return {**fields, "lines": 1, "options": options}


def build_driver(device: Any) -> Driver:
    """The driver for one configured `router` device (``config.DeviceConfig``)."""
    from .driver import RouterDriver

    opts = device.options
    return RouterDriver(
        device.name,
        device.url,
        device.username,
        secret_text(device.password),
        method=opts["method"],
        timeout=device.timeout,
        modem=opts.get("modem"),
        verify_tls=opts["verify_tls"],
    )
