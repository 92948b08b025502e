"""The YAML keys of a `goip_http` device, their loader, and the driver built from them.

Errors name the key and its line (the `_Map` helpers of bridge/config.py do that).
"""

from __future__ import annotations

from typing import Any

from bridge.config.devices import (
    BAD as _BAD,
    DEVICE_PASSWORD_KEYS,
    device_url_problem as _device_url_problem,
    GOIP_MAX_LINES,
    load_device_password as _load_device_password,
    Map as _Map,
    username_problem as _username_problem,
)
from bridge.devices.base import Driver, secret_text

#: Keys a `goip_http` device takes besides the common ones (name, kind, timeouts, caps, channels).
KEYS = ("url", "username", *DEVICE_PASSWORD_KEYS, "lines")


def load(m: _Map) -> dict[str, Any]:
    """Keys of a GoIP driven over its HTTP API (docs/devices/goip.md, part 1)."""
    url = m.get_str(
        "url", None, what="the GoIP's base URL, like http://192.168.1.50", required=True,
        check=_device_url_problem,
    )
    username = m.get_str("username", "admin", what="a user name", check=_username_problem)
    password = _load_device_password(m)
    if m.has("lines"):
        lines: Any = m.get_int("lines", 0, lo=1, hi=GOIP_MAX_LINES)
        if "lines" in m.bad:
            lines = _BAD
    else:
        lines = m.missing("lines", f"the number of GSM lines (SIM slots) of this GoIP, 1..{GOIP_MAX_LINES}")
    return {
        "url": url.rstrip("/") if isinstance(url, str) else _BAD,
        "username": username,
        "password": password,
        "lines": lines,
    }


def build_driver(device: Any) -> Driver:
    """The driver for one configured `goip_http` device (``config.DeviceConfig``)."""
    from .driver import GoipHttpDriver

    return GoipHttpDriver(
        device.name,
        device.url,
        device.username,
        secret_text(device.password),
        device.lines,
        timeout=device.timeout,
        # Status polls of all lines share one request; a shared answer may be this old.
        # Small next to the poll interval, so a final status is seen within one interval.
        status_max_age=min(0.1, device.status_poll_interval / 4),
    )
