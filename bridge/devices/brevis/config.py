"""The YAML keys of a `brevis` device, their loader, and the driver built from them.

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

#: Keys a `brevis` device takes besides the common ones (name, kind, timeouts, caps, channels).
KEYS = ("url", "username", *DEVICE_PASSWORD_KEYS, "method", "hexmode", "verify_tls", "ca_file")


def load(m: _Map) -> dict[str, Any]:
    """A brevis.one SMS gateway (/api.php; docs/devices/brevis.md)."""
    fields = _load_http_device(m, "brevis.one gateway")
    options = {
        "method": m.get_choice("method", "post", ("post", "get")),
        "hexmode": m.get_choice("hexmode", "auto", ("auto", "always", "never")),
        **_tls_options(m),
    }
    return {**fields, "lines": 1, "options": options}


def build_driver(device: Any) -> Driver:
    """The driver for one configured `brevis` device (``config.DeviceConfig``)."""
    from .driver import BrevisDriver

    opts = device.options
    return BrevisDriver(
        device.name,
        device.url,
        device.username,
        secret_text(device.password),
        method=opts["method"],
        timeout=device.timeout,
        verify_tls=opts["verify_tls"],
        hexmode=opts["hexmode"],
    )
